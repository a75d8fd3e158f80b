// `npm run bench -- migrate [--json] [--reps N (5)] [--warm S (4)] [--rss-mib N]`:
// whole postcopy migrations between two real VM processes on loopback, the
// batch mode's job (`postcopy run -m 150M -smp N -workload sweep,end=100M
// --warm 4 --postcopy-after 0.3`), with 1 and 4 vCPUs. Per vCPU count it runs
// --reps migrations with postcopy-blocktime on and --reps with it off,
// alternating (machine load hits both alike), and reports the median run with
// blocktime on plus the wall-time change that blocktime costs (medians).
// Then one 1 GiB migration whose destination is inspected through
// /proc/PID/smaps at completion: resident memory beyond the guest RAM mapping
// (rss_overhead_mib), and whose postcopy phase is long enough to measure the
// background push (postcopy_mbps_1g).
//
// Background throughput: a 1 GiB precopy-only migration without a bandwidth
// limit (the guest wrote every page, then stopped writing), over TCP and over
// a unix socket, median of --reps; against the C baseline in the same run
// (native-shim/stream_baseline.c: the same bytes through the same kind of
// socket into fresh memory, two threads, no per-page work): `ratio`.
//
// Remote-fault latency: 1-vCPU postcopy migrations over TCP and over a unix
// socket, median of --reps (at most 3) average latencies, against the C
// baseline in the same run (native-shim/remote_fault_baseline.c: one thread
// sweeps memory registered with userfaultfd, every fault is requested over
// the same kind of socket from a server thread and placed with UFFDIO_COPY;
// nothing else runs). Two rows per transport, so that the comparison is like
// for like: `urgent` holds the background push back (max-postcopy-bandwidth
// 1 B/s, the guest sweeps all its RAM), so every fault is a request answered
// on the urgent channel, as every fault of the C baseline is: `ratio` = C /
// ours; `overall` is the default run, whose average also counts faults met by
// a page already in flight on the main stream (no C counterpart: no ratio).
//
// Read-ahead: the same runs with x-postcopy-readahead 64 on the destination
// (each fault also asks for the 64 pages after it), medians against the
// default's (0, QEMU's behaviour): wall time, total blocktime, faults.
//
// Huge pages (bench/_hugepages.ts; alone with `--only hugepages`): the same
// migration on 4 KiB pages and on 2 MiB pages of a hugetlbfs mount, fault
// latency and total blocktime with their ranges.
//
// Fields per row: wall_s (migrate -> completed), postcopy_requests, blocktime
// (total, ms), latency_avg_us / latency_p99_us (remote-fault latency as the
// destination's blocktime context measured it), mbps (the source's
// query-migrate figure over the whole migration; precopy runs at the batch
// default of 128 MiB/s) and postcopy_mbps (background + requested pages over
// the postcopy phase, which is not rate-limited).

import { runBatch, type BatchOptions, type BatchResult } from '../src/migration/batch.js';
import { streamBaselineMbps, remoteFaultBaselineUs } from '../src/native/index.js';
import { numberOption } from './_options.js';
import { median, checkCompleted, round, residentBeyondGuestRam } from './_migrations.js';
import { hugePageRows } from './_hugepages.js';

interface Options { reps: number; warmS: number; rssMib: number }

function options(argv: string[]): Options {
  return {
    reps: Math.floor(numberOption(argv, 'reps', 5, 1)),
    warmS: numberOption(argv, 'warm', 4, 0),
    rssMib: Math.floor(numberOption(argv, 'rss-mib', 1024, 64)),
  };
}

const MiB = 1024 * 1024;

function batch(vcpus: number, ramMib: number, blocktime: boolean, warmS: number, readahead = 0): BatchOptions {
  return {
    ramBytes: ramMib * MiB, vcpus, workload: `sweep,end=${Math.floor((ramMib * 2) / 3)}M`, warmS, postcopyAfterS: 0.3,
    transport: 'tcp', blocktime, trace: '', timeoutS: 300, json: true, readahead,
  };
}

/** x-postcopy-readahead tried against the default (0) */
const READAHEAD = 64;

interface ReadaheadRow {
  vcpus: number; readahead: number; wall_s: number; blocktime_ms: number; faults: number; latency_avg_us: number;
  /** the same medians with readahead 0 (the main rows' runs) */
  wall_s_no_readahead: number; blocktime_ms_no_readahead: number; faults_no_readahead: number;
}

function medianOf(rs: BatchResult[], f: (r: BatchResult) => number): number {
  return median(rs.map(f));
}

const blocktimeMs = (r: BatchResult): number => r.destination['postcopy-blocktime'] ?? 0;
const faultCount = (r: BatchResult): number => r.destination['x-blocktime']?.faults ?? 0;

function readaheadRow(vcpus: number, ra: BatchResult[], base: BatchResult[]): ReadaheadRow {
  return {
    vcpus, readahead: READAHEAD,
    wall_s: medianOf(ra, (r) => r.wall_s), blocktime_ms: medianOf(ra, blocktimeMs), faults: medianOf(ra, faultCount),
    latency_avg_us: round(medianOf(ra, (r) => r.destination['postcopy-latency'] ?? 0) / 1000, 1),
    wall_s_no_readahead: medianOf(base, (r) => r.wall_s), blocktime_ms_no_readahead: medianOf(base, blocktimeMs),
    faults_no_readahead: medianOf(base, faultCount),
  };
}




interface Row {
  vcpus: number; wall_s: number; postcopy_requests: number; blocktime_ms: number;
  latency_avg_us: number; latency_p99_us: number; mbps: number; postcopy_mbps: number;
  wall_s_blocktime_off: number; blocktime_wall_change_pct: number;
}

function row(vcpus: number, on: BatchResult[], off: BatchResult[]): Row {
  const onWall = median(on.map((r) => r.wall_s));
  const offWall = median(off.map((r) => r.wall_s));
  // the run whose wall time is the median stands for the figures
  const r = [...on].sort((a, b) => a.wall_s - b.wall_s)[on.length >> 1];
  const s = r.source.ram!;
  const bt = r.destination['x-blocktime'];
  return {
    vcpus,
    wall_s: r.wall_s,
    postcopy_requests: s['postcopy-requests'],
    blocktime_ms: r.destination['postcopy-blocktime'] ?? 0,
    latency_avg_us: round((r.destination['postcopy-latency'] ?? 0) / 1000, 1),
    latency_p99_us: round((bt?.latencyP99Ns ?? 0) / 1000, 1),
    mbps: s.mbps,
    postcopy_mbps: postcopyMbps(r),
    wall_s_blocktime_off: offWall,
    blocktime_wall_change_pct: round(((onWall - offWall) / offWall) * 100, 1),
  };
}


function postcopyMbps(r: BatchResult): number {
  const postcopyS = (r.destination['x-blocktime']?.postcopyNs ?? 0) / 1e9;
  return postcopyS > 0 ? round((r.source.ram!['postcopy-bytes'] * 8) / 1e6 / postcopyS, 1) : 0;
}

interface Background { transport: 'tcp' | 'unix'; mbps: number; c_mbps: number; ratio: number }

/** precopy-only 1 GiB migrations without a rate limit, and the C baseline, alternating */
async function background(transport: 'tcp' | 'unix', reps: number): Promise<Background> {
  const ours: number[] = [];
  const c: number[] = [];
  for (let i = 0; i < reps; i++) {
    const r = await runBatch({
      ramBytes: 1024 * MiB, vcpus: 1, workload: 'sweep,end=1000M,sweeps=1', warmS: 2, postcopyAfterS: null,
      transport, blocktime: false, trace: '', timeoutS: 300, json: true, maxBandwidth: 2 ** 50,
    });
    checkCompleted(r, `1 GiB precopy over ${transport}`);
    ours.push(r.source.ram!.mbps);
    c.push(await streamBaselineMbps(1024 * MiB, transport));
  }
  const mbps = median(ours);
  const cMbps = median(c);
  return { transport, mbps: round(mbps, 1), c_mbps: round(cMbps, 1), ratio: round(mbps / cMbps, 3) };
}

interface RemoteFault {
  transport: 'tcp' | 'unix';
  /** every fault a request on the urgent channel (the push held back), like the C baseline's */
  urgent: { latency_avg_us: number; latency_p50_us: number; faults: number; c_latency_us: number; ratio: number };
  /** the default run: faults met by pages in flight on the main stream count too */
  overall: { latency_avg_us: number; latency_p50_us: number; faults: number };
}

const latencyUs = (r: BatchResult): number => (r.destination['postcopy-latency'] ?? 0) / 1000;
const p50Us = (r: BatchResult): number => (r.destination['x-blocktime']?.latencyP50Ns ?? 0) / 1000;

/** 1-vCPU postcopy migrations over `transport`, with the push held back and
 *  with the defaults, and the C remote-fault baseline, alternating */
async function remoteFault(transport: 'tcp' | 'unix', reps: number, warmS: number): Promise<RemoteFault> {
  const urgent: BatchResult[] = [];
  const overall: BatchResult[] = [];
  const c: number[] = [];
  for (let i = 0; i < reps; i++) {
    const u = await runBatch({ ...batch(1, 150, true, warmS), workload: 'sweep', transport, maxPostcopyBandwidth: 1 });
    checkCompleted(u, `1 vCPU over ${transport}, push held back`);
    urgent.push(u);
    const r = await runBatch({ ...batch(1, 150, true, warmS), transport });
    checkCompleted(r, `1 vCPU over ${transport}`);
    overall.push(r);
    c.push(await remoteFaultBaselineUs(20000, transport));
  }
  const cAvg = median(c);
  const avg = medianOf(urgent, latencyUs);
  return {
    transport,
    urgent: {
      latency_avg_us: round(avg, 1), latency_p50_us: round(medianOf(urgent, p50Us), 1), faults: medianOf(urgent, faultCount),
      c_latency_us: round(cAvg, 1), ratio: round(cAvg / avg, 3),
    },
    overall: { latency_avg_us: round(medianOf(overall, latencyUs), 1), latency_p50_us: round(medianOf(overall, p50Us), 1), faults: medianOf(overall, faultCount) },
  };
}

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const o = options(argv);
  const only = argv.indexOf('--only') >= 0 ? argv[argv.indexOf('--only') + 1] : undefined;
  if (only !== undefined && only !== 'hugepages') throw new Error(`--only ${only}: only 'hugepages' can run alone`);
  if (only === 'hugepages') return { bench: 'migrate', hugepages: await hugePageRows(o.reps, o.warmS), reps: o.reps };
  const results: Row[] = [];
  const readahead: ReadaheadRow[] = [];
  for (const vcpus of [1, 4]) {
    const on: BatchResult[] = [];
    const off: BatchResult[] = [];
    const ra: BatchResult[] = [];
    for (let i = 0; i < o.reps; i++) {
      for (const blocktime of i % 2 === 0 ? [true, false] : [false, true]) {
        const r = await runBatch(batch(vcpus, 150, blocktime, o.warmS));
        checkCompleted(r, `${vcpus} vCPU(s), blocktime ${blocktime ? 'on' : 'off'}`);
        (blocktime ? on : off).push(r);
      }
      const r = await runBatch(batch(vcpus, 150, true, o.warmS, READAHEAD));
      checkCompleted(r, `${vcpus} vCPU(s), read-ahead ${READAHEAD}`);
      ra.push(r);
    }
    results.push(row(vcpus, on, off));
    readahead.push(readaheadRow(vcpus, ra, on));
  }
  let overhead = 0;
  const big = await runBatch(batch(1, o.rssMib, true, Math.min(o.warmS, 2)), (p) => {
    overhead = residentBeyondGuestRam(p.destinationPid, o.rssMib * MiB);
  });
  checkCompleted(big, `${o.rssMib} MiB guest`);
  const bgReps = Math.max(1, Math.min(o.reps, 3));
  return {
    bench: 'migrate',
    results,
    readahead,
    rss_overhead_mib: round(overhead / MiB, 1),
    rss_guest_mib: o.rssMib,
    postcopy_mbps_1g: postcopyMbps(big),
    background: [await background('tcp', bgReps), await background('unix', bgReps)],
    remote_fault: [await remoteFault('tcp', bgReps, Math.min(o.warmS, 2)), await remoteFault('unix', bgReps, Math.min(o.warmS, 2))],
    hugepages: await hugePageRows(o.reps, o.warmS),
    reps: o.reps,
  };
}
