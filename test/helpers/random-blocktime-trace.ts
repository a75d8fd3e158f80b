// Random blocktime traces (the JSON-lines format of docs/blocktime.md) for
// property tests: reproducible from a seed, and drawn so that every case of
// the rules shows up often: faults on pages placed earlier, several
// outstanding faults of one vCPU, several vCPUs (and threads that are no vCPU)
// waiting on one page, placements nobody waits on or of pages placed already,
// every vCPU blocked at once, many equal timestamps, latencies on the
// distribution's and the histogram's bucket edges and far beyond them; 1 to
// 64 vCPUs; short and long traces, with and without "t0", live or ended
// (each terminal status, or none given).
import { mulberry32 } from './prng.js';

// Read once: under jest every lookup of a global from the test's vm context
// is slow (~0.4 us), and this runs millions of times per test.
const { floor, min } = Math;
const stringify = JSON.stringify;

export interface RandomTrace {
  lines: string[];
  vcpus: number;
  hasT0: boolean;
  /** the end line's status ('default': an end line without one), or 'live' */
  end: 'completed' | 'failed' | 'cancelled' | 'default' | 'live';
}

const MAX_TID = 2 ** 32 - 1;

/** Steps that land latencies on bucket edges (QEMU's in us, the histogram's in ns). */
const EDGES = [
  1, 63, 64, 65, 127, 128, 129, 999, 1000, 1001, 1999, 2000, 2001,
  ...[3, 9, 10, 15, 22, 23].flatMap((n) => [2 ** n * 1000 - 1, 2 ** n * 1000]),
  ...[12, 20, 32, 40, 41].flatMap((e) => [2 ** e - 1, 2 ** e]),
];

export function randomBlocktimeTrace(seed: number): RandomTrace {
  const rnd = mulberry32(seed);
  const int = (lo: number, hi: number): number => lo + floor(rnd() * (hi - lo + 1));
  const pick = <T>(a: readonly T[]): T => a[floor(rnd() * a.length)];
  const chance = (p: number): boolean => rnd() < p;

  const r = rnd();
  const vcpus = r < 0.25 ? 1 : r < 0.5 ? int(2, 4) : r < 0.8 ? int(5, 16) : r < 0.92 ? int(17, 63) : 64;
  const tidStyle = pick(['small', 'large', 'mixed'] as const);
  const drawTid = (): number => {
    const large = tidStyle === 'large' || (tidStyle === 'mixed' && chance(0.5));
    return large ? int(2 ** 31, MAX_TID) : chance(0.02) ? 0 : int(1, 70_000);
  };
  const tidSet = new Set<number>();
  while (tidSet.size < vcpus) tidSet.add(drawTid());
  const tids = [...tidSet];
  const others = [...new Set([tids[0] + 1, 0, MAX_TID, drawTid()])].filter((t) => t <= MAX_TID && !tidSet.has(t));

  // pages: fresh ones in sequence from a base (0, a typical mmap area, near 2^53)
  const pageBase = pick([0, 0x7f12_3456_0000, 2 ** 53 - 2 ** 32]);
  const stride = pick([4096, 4096, 1, 2 ** 21]);
  let nextPage = 0;
  const freshPage = (): number => pageBase + stride * nextPage++;

  // times: per trace, how often two events share a timestamp and the usual step
  const equalP = pick([0, 0.1, 0.3, 0.6, 0.9]);
  const scale = pick([50, 2000, 1e5, 1e7, 1e9]);
  const hugeP = chance(0.1) ? 0.01 : 0;
  const step = (): number => {
    if (chance(equalP)) return 0;
    if (chance(0.05)) return pick(EDGES);
    if (chance(hugeP)) return int(2 ** 33, 2 ** 42);
    return 1 + floor(scale * 2 * rnd() * rnd());
  };
  const hasT0 = chance(0.6);
  const t0 = pick([0, int(0, 1e9), int(1e12, 1e15), 2 ** 52 + int(0, 1e6)]);
  let t = t0 + (chance(0.3) ? 0 : step());
  const advance = (): number => {
    t = min(Number.MAX_SAFE_INTEGER, t + step());
    return t;
  };

  // per trace, the mix of events
  const pFault = pick([0.35, 0.5, 0.65]);
  const pNonVcpu = pick([0, 0.05, 0.2, 0.5]);
  const pAfterPlaced = pick([0, 0.05, 0.2]);
  const pJoin = pick([0.05, 0.2, 0.5]);
  const pIdlePlacement = pick([0, 0.05, 0.2]);
  const pStorm = vcpus > 1 ? pick([0, 0.02, 0.1]) : 0;
  const pEdge = pick([0, 0.05, 0.2]);

  const rl = rnd();
  const length = rl < 0.1 ? int(0, 4) : rl < 0.75 ? int(5, 120) : rl < 0.97 ? int(120, 500) : int(1000, 3000);

  const lines: string[] = [stringify(hasT0 ? { vcpus: tids, t0 } : { vcpus: tids })];
  const placed: number[] = [];
  const placedSet = new Set<number>();
  /** pages with faults waiting, oldest first, and who waits */
  const waiting: number[] = [];
  const waiters = new Map<number, number[]>();
  let events = 0;

  const fault = (tid: number, addr: number): void => {
    lines.push(stringify({ t, ev: 'fault', addr, tid }));
    events++;
    if (placedSet.has(addr)) return;
    const w = waiters.get(addr);
    if (w === undefined) { waiters.set(addr, [tid]); waiting.push(addr); } else w.push(tid);
  };
  const place = (addr: number): void => {
    lines.push(stringify({ t, ev: 'placed', addr }));
    events++;
    if (!placedSet.has(addr)) { placedSet.add(addr); placed.push(addr); }
    if (waiters.delete(addr)) waiting.splice(waiting.indexOf(addr), 1);
  };
  const faultPage = (): number => {
    if (chance(pAfterPlaced) && placed.length > 0) return pick(placed);
    if (chance(pJoin) && waiting.length > 0) return pick(waiting);
    return freshPage();
  };

  while (events < length) {
    advance();
    if (chance(pStorm)) {
      // every vCPU without an outstanding fault (or every vCPU) faults
      const down = new Set([...waiters.values()].flat());
      const all = chance(0.3);
      for (const tid of tids) {
        if (!all && down.has(tid)) continue;
        if (chance(0.7)) t = min(Number.MAX_SAFE_INTEGER, t + (chance(0.5) ? 0 : int(1, 1000)));
        fault(tid, chance(pJoin) && waiting.length > 0 ? pick(waiting) : freshPage());
      }
    } else if (chance(pEdge)) {
      // a fault placed after a latency on a bucket edge
      const addr = freshPage();
      fault(chance(pNonVcpu) && others.length > 0 ? pick(others) : pick(tids), addr);
      t = min(Number.MAX_SAFE_INTEGER, t + pick(EDGES));
      place(addr);
    } else if (chance(pFault) || (waiting.length === 0 && !chance(pIdlePlacement))) {
      fault(chance(pNonVcpu) && others.length > 0 ? pick(others) : pick(tids), faultPage());
    } else if (chance(pIdlePlacement) || waiting.length === 0) {
      place(chance(0.3) && placed.length > 0 ? pick(placed) : freshPage());
    } else {
      place(chance(0.5) ? waiting[0] : pick(waiting));
    }
  }

  let end: RandomTrace['end'] = 'live';
  if (chance(0.7)) {
    const status = pick(['completed', 'failed', 'cancelled', undefined] as const);
    advance();
    lines.push(stringify(status === undefined ? { t, ev: 'end' } : { t, ev: 'end', status }));
    end = status ?? 'default';
  }
  return { lines, vcpus, hasT0, end };
}
