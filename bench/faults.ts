// `npm run bench -- faults [--json] [--mib N] [--reps N] [--spin-us N]`:
// userfaultfd fault-handling throughput of the TypeScript handler (UffdPoller
// + Userfaultfd.readEvents/copy on the main thread) against the plain C
// handler of native-shim, on the same job: N MiB of guest RAM registered
// MISSING, 1 and 4 vCPU threads sweeping their slice once, so every page
// faults exactly once and is resolved with UFFDIO_COPY. Best of --reps runs
// of each, TS and C alternating.
//
// Two placements: `results` with every thread of the process confined to one
// CPU (the handlers' own cost: the comparison that says whether TS keeps up
// with C), and `results_all_cpus` with the scheduler free to place threads,
// where cross-core wake-ups dominate on this nested-virtualisation machine
// and swing both handlers by 10x from run to run (docs/foundation.md).
// --placement one|all|both (default both). --spin-us N: the poller's hot
// window (default 40); the same job parking at once (spin 0) is reported
// too, under results_park_at_once.
import { currentCpu, pinProcessToCpu, startCFaultHandler } from '../src/native/index.js';
import { DEFAULT_SPIN_MICROS, StagingArea, UffdPoller, Userfaultfd } from '../src/uffd/index.js';
import { GuestRam, PAGE_SIZE, VcpuSet, parseWorkload } from '../src/vm/index.js';
import { numberOption } from './_options.js';

interface Options { mib: number; reps: number; spinUs: number; vcpus: number[]; placement: string }

/** The TS handler as a dedicated fault loop runs it (as the C handler's
 *  thread does): a 40 us hot window in ppoll(2) after each batch, then park.
 *  The rows measured parking at once (the library default, what the
 *  migration destination uses to keep its sockets served) follow under
 *  results_park_at_once. */
const BENCH_SPIN_MICROS = 40;

function options(argv: string[]): Options {
  const get = (name: string, def: number): number => numberOption(argv, name, def, 0);
  const pi = argv.indexOf('--placement');
  const placement = pi < 0 ? 'both' : argv[pi + 1];
  if (!['one', 'all', 'both'].includes(placement)) throw new Error(`--placement is one, all or both, not '${placement}'`);
  return { placement, mib: get('mib', 64), reps: Math.max(1, get('reps', 5)), spinUs: get('spin-us', BENCH_SPIN_MICROS), vcpus: [1, 4] };
}

/** one run: returns faults per second */
async function runOnce(handler: 'ts' | 'c', vcpus: number, o: Options, source: StagingArea): Promise<number> {
  const ram = GuestRam.create(o.mib * 2 ** 20);
  const uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
  let poller: UffdPoller | undefined;
  let cHandler: ReturnType<typeof startCFaultHandler> | undefined;
  let set: VcpuSet | undefined;
  try {
    uffd.register(ram.base, ram.bytes, { missing: true });
    let faults = 0;
    const src = source.base;
    if (handler === 'ts') {
      poller = new UffdPoller(uffd, () => {
        const n = uffd.readEvents();
        for (let i = 0; i < n; i++) {
          const a = uffd.faultAddress(i);
          uffd.copy(a - (a % PAGE_SIZE), src, PAGE_SIZE);
        }
        faults += n;
        return n;
      }, { spinMicros: o.spinUs });
      poller.start();
    } else {
      cHandler = startCFaultHandler(uffd.fd, src, PAGE_SIZE, ram.pages);
    }
    set = await VcpuSet.create(ram, vcpus, parseWorkload('sweep,sweeps=1,split=on', ram.bytes), { paused: true });
    const t0 = performance.now();
    set.resume();
    await set.whenDone({ timeoutMs: 120_000 });
    const t1 = performance.now();
    if (cHandler) faults = await cHandler.done;
    if (faults !== ram.pages) throw new Error(`${handler} handler resolved ${faults} faults, expected ${ram.pages}`);
    return ram.pages / ((t1 - t0) / 1000);
  } finally {
    cHandler?.stop();
    await set?.stop();
    await poller?.stop();
    uffd.close();
    ram.dispose();
  }
}

async function measure(o: Options, source: StagingArea): Promise<Array<Record<string, number>>> {
  const results: Array<Record<string, number>> = [];
  for (const vcpus of o.vcpus) {
    let ts = 0;
    let c = 0;
    for (let r = 0; r < o.reps; r++) {
      ts = Math.max(ts, await runOnce('ts', vcpus, o, source));
      c = Math.max(c, await runOnce('c', vcpus, o, source));
    }
    results.push({ vcpus, ts_faults_per_s: Math.round(ts), c_faults_per_s: Math.round(c), ratio: Math.round((ts / c) * 100) / 100 });
  }
  return results;
}

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const o = options(argv);
  const source = StagingArea.create(1);
  source.slot(0).fill(0x5a);
  const out: Record<string, unknown> = { bench: 'faults', mib: o.mib, reps: o.reps, spin_us: o.spinUs };
  /** the placements asked for, with one spin setting, into `into` */
  const placements = async (opts: Options, into: Record<string, unknown>): Promise<void> => {
    if (opts.placement !== 'all') {
      const unpin = pinProcessToCpu(currentCpu());
      try {
        into.results = await measure(opts, source);
      } finally {
        unpin();
      }
    }
    if (opts.placement !== 'one') into[opts.placement === 'all' ? 'results' : 'results_all_cpus'] = await measure(opts, source);
  };
  try {
    await placements(o, out);
    if (o.spinUs !== DEFAULT_SPIN_MICROS) {
      const park: Record<string, unknown> = { spin_us: DEFAULT_SPIN_MICROS };
      await placements({ ...o, spinUs: DEFAULT_SPIN_MICROS }, park);
      out.results_park_at_once = park;
    }
  } finally {
    source.dispose();
  }
  return out;
}
