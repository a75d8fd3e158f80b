// Blocktime that can be checked, on real migrations between two VM processes
// (run alone by npm test: it holds our timing against the kernel's, so it
// must not share the CPUs with other migrations):
// the trace the destination writes is in time order and replays to the live
// report field for field (the same rules and context run on both), it has
// one fault per access (read by the fault thread, or found unread by the
// page's placement: native-shim/waiters.c, never both), and each
// vCPU's blocktime agrees with the kernel's own figure for its thread
// (schedstat: a thread held on a missing page sleeps), sampled over the same
// window. Sweep and random guests, 1 and 4 vCPUs, read-ahead off and on.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBatch } from '../../src/migration/batch.js';
import { replayTrace } from '../../src/blocktime-trace/replay.js';
import { kernelError } from '../../src/blocktime/report.js';
import { requireUffd } from '../helpers/uffd-available.js';

const maybe = requireUffd() ? test : test.skip;
const MiB = 1024 * 1024;

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pc-truth-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

const cases = [
  ['sweep,end=64M', 1, 0], ['sweep,end=64M', 4, 64], ['sweep,end=64M', 4, 0], ['sweep,end=64M', 1, 64],
  ['random', 1, 0], ['random', 4, 64], ['random', 4, 0], ['random', 1, 64],
] as const;

maybe.each(cases)('%s, %i vCPUs, read-ahead %i: replay = live, times in order, one fault per access, within 10 %% of the kernel figure', async (workload, vcpus, readahead) => {
  const trace = join(dir, `${workload.split(',')[0]}-${vcpus}-${readahead}.jsonl`);
  const r = await runBatch({
    ramBytes: 96 * MiB, vcpus, workload, warmS: 0.5, postcopyAfterS: 0.2, transport: 'tcp',
    blocktime: true, trace, timeoutS: 120, json: true, readahead,
  });
  expect(r.destination.status).toBe('completed');
  const live = r.destination;
  const x = live['x-blocktime']!;
  expect(x.faults).toBeGreaterThan(0);

  // the trace: every event line in time order
  const lines = readFileSync(trace, 'utf8').trim().split('\n').slice(1).map((l) => JSON.parse(l) as { t: number; ev: string; tid?: number });
  for (let i = 1; i < lines.length; i++) expect(lines[i].t).toBeGreaterThanOrEqual(lines[i - 1].t);
  // one fault per access: a vCPU's fault is dated by its access's stamp, and
  // the fault thread and a placement that found it asleep never both report it
  const accesses = lines.filter((e) => e.ev === 'fault').map((e) => `${e.tid}@${e.t}`);
  expect(accesses.length - new Set(accesses).size).toBe(0);

  // replay reproduces the live report, field for field
  const replayed = await replayTrace(trace);
  const fields = ['postcopy-blocktime', 'postcopy-vcpu-blocktime', 'postcopy-latency', 'postcopy-vcpu-latency',
    'postcopy-non-vcpu-latency', 'postcopy-latency-dist', 'x-blocktime'] as const;
  // (x-blocktime.feed is what feeding the context cost the live event loop: no trace has it)
  const { feed, ...liveExtra } = live['x-blocktime']!;
  expect(feed?.events).toBeGreaterThan(0);
  for (const f of fields) expect([f, replayed[f]]).toEqual([f, f === 'x-blocktime' ? liveExtra : live[f]]);

  // each vCPU's blocktime is the kernel's figure for its thread (the time it
  // slept), within 10 % for vCPUs it saw blocked 20 ms or more (the bench
  // carries the 5 % target, met in every row: within 3.0 % in all 24 of its
  // runs; 25.6 % before the faults nobody read were counted: docs/blocktime.md)
  for (const v of x.vcpus) {
    // every vCPU has the kernel's figure: one found waiting for a CPU reads its own (native-shim/vcpu_sample.c)
    expect([v.index, v.kernelUnavailable]).toEqual([v.index, undefined]);
    const k = v.kernelBlockedNs as number;
    expect(k).toBeGreaterThan(0);
    const e = kernelError(v) as number;
    const ms = (ns: number | undefined): string => ((ns ?? NaN) / 1e6).toFixed(1);
    if (k >= 20e6) {
      expect(Math.abs(e) <= 0.10 ? 'within 10 %' : `vCPU ${v.index}: ours ${ms(v.kernelWindowBlocktimeNs)} ms, kernel ${ms(k)} ms`)
        .toBe('within 10 %');
    }
  }
}, 120_000);
