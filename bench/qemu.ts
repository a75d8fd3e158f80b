// `npm run bench -- qemu [--json] [--reps N (3)] [--ram-mib N (256)]
// [--sweep-mib N (64)] [--warm S (2)] [--postcopy-after S (0.5)]
// [--readahead N (64)]`: the same
// workload, whole postcopy migrations on loopback TCP, on Debian's QEMU and
// on our engine, alternating, in one run. The workload: a guest of --ram-mib
// with one vCPU that increments a word of every 4 KiB page of
// [1 MiB, --sweep-mib) forever (QEMU: the tests' boot sector,
// test/helpers/qemu.ts; ours: -workload sweep,start=1M,end=...), warmed up
// for --warm s, switched to postcopy --postcopy-after s after migrate, precopy
// at both engines' default 128 MiB/s, postcopy unlimited.
//
// Per engine (median run by wall time, and the [min, max] of each figure over
// --reps): wall_s (migrate -> both sides completed), total_time_ms (the
// source's own total-time), postcopy_requests, blocktime_exact_ms (vCPU 0:
// ours as our destination measured it; QEMU's from its trace log, imported
// and replayed), blocktime_qemu_ms (vCPU 0 as QEMU 7.2 reports it: QEMU's own
// query-migrate; for ours, 7.2's algorithm replayed on our trace), mbps (the
// source's query-migrate). `ratios`: ours / QEMU of the medians. Ours runs
// twice per rep: with QEMU's policy (a fault asks for its page only) and
// with x-postcopy-readahead --readahead (`ours_readahead`,
// `ratios_readahead`; 0 leaves it out).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBatch } from '../src/migration/batch.js';
import { compareLines, compareTrace } from '../src/blocktime-trace/compare.js';
import { QemuLogError, readQemuTraceLog, traceLines } from '../src/qemu/trace-log.js';
import { numberOption } from './_options.js';
import { checkCompleted, median, round } from './_migrations.js';
import {
  QEMU, buildSweepGuest, freePort, guestOptions, qemuAccel, requireQemu, startQemu, stopQemus, traceOptions, waitForSweep, waitStatus,
} from '../test/helpers/qemu.js';

const MiB = 1024 * 1024;

interface Options { reps: number; ramMib: number; sweepMib: number; warmS: number; postcopyAfterS: number; readahead: number }

interface Run {
  wall_s: number; total_time_ms: number; postcopy_requests: number;
  blocktime_exact_ms: number; blocktime_qemu_ms: number; mbps: number;
}
type Figure = keyof Run;
const FIGURES: readonly Figure[] = ['wall_s', 'total_time_ms', 'postcopy_requests', 'blocktime_exact_ms', 'blocktime_qemu_ms', 'mbps'];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** vCPU 0's exact blocktime in the destination's log, ns: 0 when the
 *  guest never faulted (on a loaded host its vCPU may hardly run in postcopy) */
async function exactFromLog(log: string, vcpus: number[]): Promise<number> {
  try {
    return (await compareLines(traceLines(await readQemuTraceLog(log, vcpus)), log)).exact['x-blocktime'].vcpus[0].blocktimeNs;
  } catch (e) {
    if (e instanceof QemuLogError && /no postcopy_ram_fault_thread_request event/.test(e.message)) return 0;
    throw e;
  }
}

async function qemuOnce(o: Options, dir: string, image: string, n: number): Promise<Run> {
  const log = join(dir, `dest-${n}.log`);
  const port = await freePort();
  const guest = guestOptions(image, o.ramMib, 1);
  const src = await startQemu(dir, `src-${n}`, guest);
  const dst = await startQemu(dir, `dst-${n}`, [...guest, '-incoming', `tcp:127.0.0.1:${port}`, ...traceOptions(log)]);
  try {
    await waitForSweep(src, 120_000); // the BIOS takes seconds on a loaded host
    for (const q of [src, dst]) await q.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-ram', state: true }] });
    await dst.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-blocktime', state: true }] });
    const cpus = await dst.qmp.execute<{ 'thread-id': number }[]>('query-cpus-fast');
    await sleep(o.warmS * 1000);
    const t0 = performance.now();
    await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    await sleep(o.postcopyAfterS * 1000);
    await src.qmp.execute('migrate-start-postcopy');
    const done = (s: string) => s === 'completed' || s === 'failed';
    const [s, d] = await Promise.all([waitStatus(src, done, 120_000, 10), waitStatus(dst, done, 120_000, 10)]);
    const wall = (performance.now() - t0) / 1000;
    if (s.status !== 'completed' || d.status !== 'completed') throw new Error(`QEMU: source ${s.status}, destination ${d.status}`);
    if (!(s.ram?.['postcopy-bytes'] ?? 0)) {
      throw new Error(`QEMU completed in precopy, before migrate-start-postcopy took (after ${o.postcopyAfterS} s): its guest hardly ran (a loaded host?); try a larger --sweep-mib or a smaller --postcopy-after`);
    }
    const exited = new Promise((r) => dst.proc.once('exit', r));
    await dst.qmp.execute('quit').catch(() => undefined);
    await exited;
    return {
      wall_s: round(wall, 3), total_time_ms: s['total-time'] ?? 0, postcopy_requests: s.ram?.['postcopy-requests'] ?? 0,
      blocktime_exact_ms: round((await exactFromLog(log, cpus.map((x) => x['thread-id']))) / 1e6, 1),
      blocktime_qemu_ms: (d['postcopy-vcpu-blocktime'] ?? [])[0] ?? 0, mbps: round(s.ram?.mbps ?? 0, 1),
    };
  } finally {
    await stopQemus();
  }
}

async function oursOnce(o: Options, dir: string, n: number, readahead = 0): Promise<Run> {
  const trace = join(dir, `ours-${n}-${readahead}.jsonl`);
  const r = await runBatch({
    ramBytes: o.ramMib * MiB, vcpus: 1, workload: `sweep,start=1M,end=${o.sweepMib}M`, warmS: o.warmS,
    postcopyAfterS: o.postcopyAfterS, transport: 'tcp', blocktime: true, trace, timeoutS: 120, json: true, readahead,
  });
  checkCompleted(r, 'our engine');
  const x = r.destination['x-blocktime'];
  const c = await compareTrace(trace);
  return {
    wall_s: r.wall_s, total_time_ms: r.source['total-time'] ?? 0, postcopy_requests: r.source.ram?.['postcopy-requests'] ?? 0,
    blocktime_exact_ms: round((x?.vcpus[0]?.blocktimeNs ?? 0) / 1e6, 1),
    blocktime_qemu_ms: c['qemu-7.2']['postcopy-vcpu-blocktime'][0] ?? 0, mbps: round(r.source.ram?.mbps ?? 0, 1),
  };
}

/** The median run (by wall time) and every figure's [min, max]. */
function summary(runs: Run[]): Run & { ranges: Record<Figure, [number, number]> } {
  const mid = [...runs].sort((a, b) => a.wall_s - b.wall_s)[runs.length >> 1];
  const ranges = Object.fromEntries(FIGURES.map((f) => [f, [Math.min(...runs.map((r) => r[f])), Math.max(...runs.map((r) => r[f]))]])) as Record<Figure, [number, number]>;
  return { ...mid, ranges };
}

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const o: Options = {
    reps: Math.floor(numberOption(argv, 'reps', 3, 1)),
    ramMib: Math.floor(numberOption(argv, 'ram-mib', 256, 16)),
    sweepMib: Math.floor(numberOption(argv, 'sweep-mib', 64, 2)),
    warmS: numberOption(argv, 'warm', 2, 0),
    postcopyAfterS: numberOption(argv, 'postcopy-after', 0.5, 0),
    readahead: Math.floor(numberOption(argv, 'readahead', 64, 0)),
  };
  if (o.sweepMib >= o.ramMib) throw new Error(`--sweep-mib ${o.sweepMib} must be below --ram-mib ${o.ramMib}`);
  if (!requireQemu()) throw new Error(`the qemu bench needs ${QEMU}`);
  const dir = mkdtempSync(join(tmpdir(), 'bench-qemu-'));
  const image = buildSweepGuest(dir, o.sweepMib * MiB);
  const qemu: Run[] = [];
  const ours: Run[] = [];
  const oursAhead: Run[] = [];
  try {
    for (let i = 0; i < o.reps; i++) { // alternating: load on the host hits both alike
      qemu.push(await qemuOnce(o, dir, image, i));
      ours.push(await oursOnce(o, dir, i));
      if (o.readahead > 0) oursAhead.push(await oursOnce(o, dir, i, o.readahead));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const q = summary(qemu);
  const w = summary(ours);
  const med = (rs: Run[], f: Figure) => median(rs.map((r) => r[f]));
  const ratiosOf = (rs: Run[]) => Object.fromEntries(FIGURES.map((f) => [f, med(qemu, f) > 0 ? round(med(rs, f) / med(qemu, f), 3) : null]));
  const ahead = o.readahead > 0 ? {
    readahead: o.readahead, ours_readahead: summary(oursAhead), ratios_readahead: ratiosOf(oursAhead),
    medians_readahead: Object.fromEntries(FIGURES.map((f) => [f, med(oursAhead, f)])),
  } : {};
  return {
    bench: 'qemu', accel: qemuAccel(), reps: o.reps, ram_mib: o.ramMib, sweep: `[1 MiB, ${o.sweepMib} MiB)`, vcpus: 1,
    warm_s: o.warmS, postcopy_after_s: o.postcopyAfterS, qemu: q, ours: w, medians: {
      qemu: Object.fromEntries(FIGURES.map((f) => [f, med(qemu, f)])), ours: Object.fromEntries(FIGURES.map((f) => [f, med(ours, f)])),
    }, ratios: ratiosOf(ours), ...ahead,
  };
}
