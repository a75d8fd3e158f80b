// Property test: on thousands of random traces (seeded, the seed printed on a
// mismatch) the context's report equals what a brute-force computation over
// explicit fault intervals gives: per-vCPU blocktime as the measure of the
// union of that vCPU's fault intervals, total blocktime as the measure of the
// time covered for every vCPU at once, latencies from a plain list.
import { EventEmitter } from 'node:events';
import { BlocktimeContext } from '../../src/blocktime/context.js';
import type { BlocktimeReport } from '../../src/blocktime/types.js';
import { mulberry32 } from '../helpers/prng.js';

type Ev = { t: number; ev: 'fault'; addr: number; tid: number } | { t: number; ev: 'placed'; addr: number };
interface Trace { tids: number[]; t0: number; events: Ev[]; endT: number; terminal: boolean }

function generate(seed: number): Trace {
  const rnd = mulberry32(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
  const nV = 1 + Math.floor(rnd() * 5);
  const tids: number[] = [];
  while (tids.length < nV) {
    const tid = 1000 + Math.floor(rnd() * 5000);
    if (!tids.includes(tid)) tids.push(tid);
  }
  const others = [7, 8];
  const pool = Array.from({ length: 1 + Math.floor(rnd() * 12) }, (_, i) => 0x7f00_0000_0000 + i * 4096 * (1 + Math.floor(rnd() * 3)));
  const t0 = Math.floor(rnd() * 1000);
  let t = t0;
  const pending = new Set<number>();
  const events: Ev[] = [];
  const steps = 10 + Math.floor(rnd() * 150);
  for (let s = 0; s < steps; s++) {
    t += 1 + Math.floor(rnd() ** 3 * 5_000_000);
    const r = rnd();
    if (r < 0.5) {
      const addr = pick(pool);
      events.push({ t, ev: 'fault', addr, tid: rnd() < 0.15 ? pick(others) : pick(tids) });
      pending.add(addr);
    } else {
      const addr = r < 0.93 && pending.size > 0 ? pick([...pending]) : pick(pool);
      events.push({ t, ev: 'placed', addr });
      pending.delete(addr);
    }
  }
  return { tids, t0, events, endT: t + 1 + Math.floor(rnd() * 3_000_000), terminal: rnd() < 0.5 };
}

/** The figures computed the slow, obvious way. */
function bruteForce(tr: Trace) {
  const vcpuOf = (tid: number): number => tr.tids.indexOf(tid);
  const faults: Array<{ seen: number; vcpu: number; done: number | null; addr: number }> = [];
  for (const e of tr.events) {
    if (e.ev === 'fault') faults.push({ seen: e.t, vcpu: vcpuOf(e.tid), done: null, addr: e.addr });
    else for (const f of faults) if (f.addr === e.addr && f.done === null) f.done = e.t;
  }
  const n = tr.tids.length;
  const intervals = (v: number) => faults.filter((f) => f.vcpu === v).map((f) => [f.seen, f.done ?? tr.endT] as const);
  const union = (iv: ReadonlyArray<readonly [number, number]>): number => {
    const s = [...iv].sort((a, b) => a[0] - b[0]);
    let sum = 0;
    let cs = -1;
    let ce = -1;
    for (const [a, b] of s) {
      if (a > ce) { if (ce > cs) sum += ce - cs; cs = a; ce = b; } else if (b > ce) ce = b;
    }
    if (ce > cs) sum += ce - cs;
    return sum;
  };
  const perVcpu = Array.from({ length: n }, (_, v) => intervals(v));
  const blocked = perVcpu.map(union);
  const points = [...new Set(faults.flatMap((f) => [f.seen, f.done ?? tr.endT]))].sort((a, b) => a - b);
  let total = 0;
  let windows = 0;
  let longest = 0;
  let run = 0;
  let inRun = false;
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i], points[i + 1]];
    const all = perVcpu.every((iv) => iv.some(([s, e]) => s <= a && e >= b));
    if (all) {
      total += b - a;
      if (!inRun) { windows++; run = 0; inRun = true; }
      run += b - a;
      longest = Math.max(longest, run);
    } else inRun = false;
  }
  const resolved = faults.filter((f) => f.done !== null).map((f) => ({ vcpu: f.vcpu, lat: (f.done as number) - f.seen }));
  const avg = (l: number[]): number => (l.length ? Math.floor(l.reduce((a, b) => a + b, 0) / l.length) : 0);
  const bucket = (ns: number): number => {
    const us = Math.floor(ns / 1000);
    let b = 0;
    while (b < 23 && 2 ** (b + 1) <= us) b++;
    return b;
  };
  const dist = new Array(24).fill(0);
  for (const r of resolved) dist[bucket(r.lat)]++;
  const lats = resolved.map((r) => r.lat).sort((a, b) => a - b);
  const rank = (l: number[], p: number): number => (l.length ? l[Math.ceil((p * l.length) / 100) - 1] : 0);
  return {
    blocked, total, windows, longest, dist, lats, rank,
    latency: avg(lats),
    vcpuLatency: Array.from({ length: n }, (_, v) => avg(resolved.filter((r) => r.vcpu === v).map((r) => r.lat))),
    vcpuLats: Array.from({ length: n }, (_, v) => resolved.filter((r) => r.vcpu === v).map((r) => r.lat).sort((a, b) => a - b)),
    nonVcpuLatency: avg(resolved.filter((r) => r.vcpu < 0).map((r) => r.lat)),
    vcpuFaults: Array.from({ length: n }, (_, v) => faults.filter((f) => f.vcpu === v).length),
    nonVcpuFaults: faults.filter((f) => f.vcpu < 0).length,
    faults: faults.length,
  };
}

function runContext(tr: Trace): BlocktimeReport {
  let now = tr.t0;
  const events = new EventEmitter();
  const ctx = new BlocktimeContext({ vcpuThreadIds: tr.tids, clock: () => now, migrationEvents: events, exitEvents: null });
  for (const e of tr.events) {
    now = e.t;
    if (e.ev === 'fault') ctx.begin(e.addr, e.tid);
    else ctx.end(e.addr);
  }
  now = tr.endT;
  if (tr.terminal) events.emit('migration', 'failed');
  const r = ctx.report();
  ctx.destroy();
  return r;
}

function near(got: number, want: number): boolean {
  return Math.abs(got - want) <= want * 0.01;
}

function check(seed: number): void {
  const tr = generate(seed);
  const r = runContext(tr);
  const b = bruteForce(tr);
  const x = r['x-blocktime'];
  const fail = (what: string, got: unknown, want: unknown): never => {
    throw new Error(`seed ${seed}: ${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  };
  const eq = (what: string, got: unknown, want: unknown): void => {
    if (JSON.stringify(got) !== JSON.stringify(want)) fail(what, got, want);
  };
  eq('state', x.state, tr.terminal ? 'final' : 'live');
  eq('per-vCPU blocktime ns', x.vcpus.map((v) => v.blocktimeNs), b.blocked);
  eq('postcopy-vcpu-blocktime', r['postcopy-vcpu-blocktime'], b.blocked.map((ns) => Math.floor(ns / 1e6)));
  eq('total blocktime ns', x.totalBlocktimeNs, b.total);
  eq('postcopy-blocktime', r['postcopy-blocktime'], Math.floor(b.total / 1e6));
  eq('all-blocked windows', x.allBlockedWindows, b.windows);
  eq('longest all-blocked', x.longestAllBlockedNs, b.longest);
  eq('postcopy-latency', r['postcopy-latency'], b.latency);
  eq('postcopy-vcpu-latency', r['postcopy-vcpu-latency'], b.vcpuLatency);
  eq('postcopy-non-vcpu-latency', r['postcopy-non-vcpu-latency'], b.nonVcpuLatency);
  eq('postcopy-latency-dist', r['postcopy-latency-dist'], b.dist);
  eq('faults per vCPU', x.vcpus.map((v) => v.faults), b.vcpuFaults);
  eq('non-vCPU faults', x.nonVcpuFaults, b.nonVcpuFaults);
  eq('faults', x.faults, b.faults);
  eq('max latency', x.latencyMaxNs, b.lats.length ? b.lats[b.lats.length - 1] : 0);
  eq('postcopy ns', x.postcopyNs, tr.endT - tr.t0);
  const pcts: Array<[string, number, number]> = [
    ['p50', x.latencyP50Ns, b.rank(b.lats, 50)], ['p90', x.latencyP90Ns, b.rank(b.lats, 90)], ['p99', x.latencyP99Ns, b.rank(b.lats, 99)],
    ...x.vcpus.map((v, i): [string, number, number] => [`vCPU ${i} p99`, v.latencyP99Ns, b.rank(b.vcpuLats[i], 99)]),
  ];
  for (const [what, got, want] of pcts) if (!near(got, want)) fail(what, got, want);
}

describe('blocktime context vs brute force on random traces', () => {
  test('3000 seeded traces agree', () => {
    const base = Number(process.env.BLOCKTIME_SEED ?? 20240611);
    for (let i = 0; i < 3000; i++) check(base + i);
  });
});
