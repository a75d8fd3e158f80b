// `npm run bench -- push [--json] [--reps N (3)] [--ram-mib N (1024)]`: the
// postcopy background push, and where the CPU goes while it runs. Postcopy
// migrations of a guest of --ram-mib whose one vCPU sweeps two thirds of its
// RAM (bench migrate's 1 GiB row: `postcopy run -m 1G -workload
// sweep,end=682M --warm 2 --postcopy-after 0.3`), blocktime on and off
// alternating; against the C stream baseline in the same run (the same bytes
// through the same kind of socket, two threads, nothing else running:
// native-shim/stream_baseline.c). Per run: the push's throughput over the
// postcopy phase (background and requested pages; the phase as long as the
// destination's fault thread lived), and each thread's share
// of a CPU over that phase (bench/_threads.ts), medians of the runs.
import { runBatch, type BatchResult } from '../src/migration/batch.js';
import { streamBaselineMbps } from '../src/native/index.js';
import { numberOption } from './_options.js';
import { median, checkCompleted, round } from './_migrations.js';
import { PostcopyCpuSampler, type PostcopyCpu } from './_threads.js';

const MiB = 1024 * 1024;

/** over the postcopy phase as the sampler saw it (the fault thread's life): with blocktime off too */
function pushMbps(r: BatchResult, cpu: PostcopyCpu): number {
  return cpu.window_ms > 0 ? (r.source.ram!['postcopy-bytes'] * 8) / 1e3 / cpu.window_ms : 0;
}

interface Run { mbps: number; cpu: PostcopyCpu }

async function once(ramMib: number, blocktime: boolean): Promise<Run> {
  const sampler = new PostcopyCpuSampler();
  let r: BatchResult;
  try {
    r = await runBatch({
      ramBytes: ramMib * MiB, vcpus: 1, workload: `sweep,end=${Math.floor((ramMib * 2) / 3)}M`, warmS: 2, postcopyAfterS: 0.3,
      transport: 'tcp', blocktime, trace: '', timeoutS: 300, json: true,
    });
  } catch (e) {
    sampler.stop();
    throw e;
  }
  const cpu = sampler.stop();
  checkCompleted(r, `${ramMib} MiB postcopy, blocktime ${blocktime ? 'on' : 'off'}`);
  return { mbps: pushMbps(r, cpu), cpu };
}

/** per thread, the median share over the runs (0 where a run did not see it) */
function medianShares(runs: Run[]): Record<string, number> {
  const names = new Set(runs.flatMap((r) => Object.keys(r.cpu.threads)));
  const out: Record<string, number> = {};
  for (const n of [...names].sort()) out[n] = round(median(runs.map((r) => r.cpu.threads[n] ?? 0)), 2);
  return out;
}

const range = (xs: number[]): [number, number] => [round(Math.min(...xs), 1), round(Math.max(...xs), 1)];

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const reps = Math.floor(numberOption(argv, 'reps', 3, 1));
  const ramMib = Math.floor(numberOption(argv, 'ram-mib', 1024, 64));
  const on: Run[] = [];
  const off: Run[] = [];
  const c: number[] = [];
  for (let i = 0; i < reps; i++) {
    on.push(await once(ramMib, true));
    off.push(await once(ramMib, false));
    c.push(await streamBaselineMbps(ramMib * MiB, 'tcp'));
  }
  const mbps = (rs: Run[]) => round(median(rs.map((r) => r.mbps)), 1);
  return {
    bench: 'push',
    ram_mib: ramMib,
    reps,
    push_mbps: mbps(on), push_mbps_range: range(on.map((r) => r.mbps)),
    push_mbps_blocktime_off: mbps(off), push_mbps_blocktime_off_range: range(off.map((r) => r.mbps)),
    c_mbps: round(median(c), 1), c_mbps_range: range(c),
    ratio: round(median(on.map((r) => r.mbps)) / median(c), 3),
    postcopy_ms: round(median(on.map((r) => r.cpu.window_ms)), 0),
    cpu_share: medianShares(on),
    cpu_share_blocktime_off: medianShares(off),
  };
}
