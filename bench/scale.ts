// `npm run bench -- scale [--json] [--reps N (3)] [--vcpus N (64)] [--readahead N (0)]`: an
// 8 GiB guest migrated through postcopy between two real VM processes on
// loopback (`postcopy run -m 8G -smp N -workload random,end=256M,split=on
// --warm 1 --postcopy-after 0.5`, x-postcopy-readahead N), with 1 vCPU and with --vcpus vCPUs,
// alternating, --reps runs each; medians with [min, max].
//
// - rss_overhead_pct: the destination's resident memory beyond its guest RAM
//   mapping at completion (/proc/PID/smaps, as bench migrate's 1 GiB row),
//   in % of guest RAM, with N vCPUs (target <= 5).
// - ns_per_event: what feeding the blocktime context cost the destination's
//   event loop per fault-thread event (a fault or a placement), measured
//   inside the migration: the event loop thread's CPU time in its drains
//   (ring, time ordering, accounting, the vCPUs' access horizon) over the
//   entries drained (x-blocktime.feed). CPU time, so the 2-core machine's
//   preemption does not count. per_event_ratio = N vCPUs over 1 (target <= 1.2).
// - horizon_us_per_drain: of that, reading every vCPU's access stamps, per drain.

import { runBatch, type BatchOptions, type BatchResult } from '../src/migration/batch.js';
import { numberOption } from './_options.js';
import { median, checkCompleted, round, residentBeyondGuestRam } from './_migrations.js';

const GiB = 2 ** 30;
const RAM = 8 * GiB;

function batch(vcpus: number, readahead: number): BatchOptions {
  return {
    ramBytes: RAM, vcpus, workload: 'random,end=256M,split=on,seed=3', warmS: 1, postcopyAfterS: 0.5,
    transport: 'tcp', blocktime: true, trace: '', timeoutS: 300, json: true, readahead,
  };
}

interface Run { rssPct: number; nsPerEvent: number; horizonUs: number; events: number; faults: number; wallS: number; latencyP50Us: number }

async function once(vcpus: number, readahead: number): Promise<Run> {
  let rss = 0;
  const r: BatchResult = await runBatch(batch(vcpus, readahead), (p) => { rss = residentBeyondGuestRam(p.destinationPid, RAM); });
  checkCompleted(r, `8 GiB, ${vcpus} vCPUs`);
  const bt = r.destination['x-blocktime'];
  const feed = bt?.feed;
  if (!bt || !feed || feed.events === 0) throw new Error(`8 GiB, ${vcpus} vCPUs: the destination reports no blocktime feed`);
  return {
    rssPct: (rss / RAM) * 100, nsPerEvent: feed.cpuNs / feed.events, horizonUs: feed.horizonNs / feed.drains / 1000,
    events: feed.events, faults: bt.faults, wallS: r.wall_s, latencyP50Us: bt.latencyP50Ns / 1000,
  };
}

function stat(runs: Run[], f: (r: Run) => number, digits: number): { median: number; range: [number, number] } {
  const xs = runs.map(f);
  return { median: round(median(xs), digits), range: [round(Math.min(...xs), digits), round(Math.max(...xs), digits)] };
}

function summary(runs: Run[]): Record<string, unknown> {
  return {
    rss_overhead_pct: stat(runs, (r) => r.rssPct, 2),
    ns_per_event: stat(runs, (r) => r.nsPerEvent, 0),
    horizon_us_per_drain: stat(runs, (r) => r.horizonUs, 2),
    events: stat(runs, (r) => r.events, 0),
    faults: stat(runs, (r) => r.faults, 0),
    latency_p50_us: stat(runs, (r) => r.latencyP50Us, 1),
    wall_s: stat(runs, (r) => r.wallS, 2),
  };
}

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const reps = Math.floor(numberOption(argv, 'reps', 3, 1));
  const many = Math.floor(numberOption(argv, 'vcpus', 64, 2));
  const readahead = Math.floor(numberOption(argv, 'readahead', 0, 0));
  const one: Run[] = [];
  const lots: Run[] = [];
  for (let i = 0; i < reps; i++) { // alternating: machine load hits both alike
    one.push(await once(1, readahead));
    lots.push(await once(many, readahead));
  }
  const ratios = lots.map((r, i) => r.nsPerEvent / one[i].nsPerEvent);
  return {
    bench: 'scale',
    guest_gib: RAM / GiB,
    reps,
    readahead,
    rss_overhead_pct: round(median(lots.map((r) => r.rssPct)), 2),
    per_event_ratio: round(median(lots.map((r) => r.nsPerEvent)) / median(one.map((r) => r.nsPerEvent)), 2),
    per_event_ratio_range: [round(Math.min(...ratios), 2), round(Math.max(...ratios), 2)],
    vcpus_1: summary(one),
    [`vcpus_${many}`]: summary(lots),
  };
}
