// Cost of the blocktime context per event as the vCPU count grows: the same
// realistic event mix (faults then placements, ~8 pages in flight, 10 % of
// faults joining a page another thread already waits on, 5 % of faults from a
// thread that is no vCPU) fed to contexts of 1, 64 and 512 vCPUs. Events are
// generated into typed arrays before timing; the clock is a counter, so what
// is measured is the accounting alone. Warm-up run first, best of N runs,
// sizes interleaved so machine load hits them alike.
//   npm run bench -- blocktime [--json] [--events N] [--runs N]

import { BlocktimeContext } from '../src/blocktime/context.js';

const VCPU_COUNTS = [1, 64, 512] as const;
const NON_VCPU_TID = 1;
const IN_FLIGHT = 8;

interface EventMix { kind: Uint8Array; addr: Float64Array; tid: Int32Array; tids: number[] }

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generate(vcpus: number, events: number, seed: number): EventMix {
  const rnd = mulberry32(seed);
  const tids = Array.from({ length: vcpus }, (_, i) => 10_000 + i);
  const kind = new Uint8Array(events);
  const addr = new Float64Array(events);
  const tid = new Int32Array(events);
  const pending: number[] = [];
  const base = 0x7f3a_0000_0000;
  for (let i = 0; i < events; i++) {
    if (pending.length < IN_FLIGHT || (pending.length < 4 * IN_FLIGHT && rnd() < 0.5)) {
      kind[i] = 0;
      tid[i] = rnd() < 0.05 ? NON_VCPU_TID : tids[Math.floor(rnd() * vcpus)];
      if (pending.length > 0 && rnd() < 0.1) addr[i] = pending[Math.floor(rnd() * pending.length)];
      else {
        addr[i] = base + Math.floor(rnd() * (1 << 20)) * 4096;
        pending.push(addr[i]);
      }
    } else {
      const k = Math.floor(rnd() * pending.length);
      kind[i] = 1;
      addr[i] = pending[k];
      pending[k] = pending[pending.length - 1];
      pending.pop();
    }
  }
  return { kind, addr, tid, tids };
}

/** One pass over the mix with a fresh context; returns ns per event. */
function pass(mix: EventMix): number {
  let now = 0;
  const ctx = new BlocktimeContext({ vcpuThreadIds: mix.tids, clock: () => (now += 1500), exitEvents: null });
  const { kind, addr, tid } = mix;
  const n = kind.length;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    if (kind[i] === 0) ctx.begin(addr[i], tid[i]);
    else ctx.end(addr[i]);
  }
  const ns = Number(process.hrtime.bigint() - t0);
  if (ctx.report()['x-blocktime'].faults === 0) throw new Error('bench: no fault was accounted');
  ctx.destroy();
  return ns / n;
}

function option(argv: string[], name: string, dflt: number): number {
  const i = argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} needs a positive integer, got '${argv[i + 1] ?? ''}'`);
  return v;
}

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const events = option(argv, '--events', 1_000_000);
  const runs = option(argv, '--runs', 7);
  const mixes = VCPU_COUNTS.map((v, i) => generate(v, events, 42 + i));
  for (const mix of mixes) pass(mix); // warm-up
  const best = VCPU_COUNTS.map(() => Infinity);
  for (let r = 0; r < runs; r++) {
    mixes.forEach((mix, i) => { best[i] = Math.min(best[i], pass(mix)); });
  }
  const results = VCPU_COUNTS.map((vcpus, i) => ({
    vcpus, events_per_s: Math.round(1e9 / best[i]), ns_per_event: Number(best[i].toFixed(1)),
  }));
  return {
    bench: 'blocktime',
    results,
    ratio_512_to_1: Number((best[2] / best[0]).toFixed(3)),
    events,
    runs,
  };
}
