// A second, deliberately naive implementation of the blocktime rules
// (docs/blocktime.md, issue 10), for checking the replay: it shares no code
// with src/blocktime/ (types only) and favours the obvious over the fast.
//
// It reads a trace (JSON lines, assumed valid) and:
//  1. applies the page rules with a set of placed pages and a flat list of
//     recorded faults: a fault on a page placed earlier in the trace records
//     nothing; a placement resolves every recorded fault still waiting on its
//     page, and records nothing when there is none;
//  2. gives each vCPU the list of its faults' [fault, resolved) intervals
//     (resolved = the placement, else the `end` line, else the last event)
//     and merges them into a sorted union (a vCPU with several outstanding
//     faults stays down until the last one is resolved);
//  3. intersects the vCPUs' unions (two sorted lists at a time): the time
//     during which every vCPU was down at once, and its windows;
//  4. lists every resolved fault's latency (placed - fault time) and derives
//     averages, QEMU's 24 buckets and percentiles from that list.
//
// Interval ends are positions in the trace (line order), not times: equal
// timestamps are legal, and a vCPU that comes back up and goes down again at
// the same nanosecond (it ran, for less than the clock shows) ends one
// all-blocked window and starts another. An interval's length is the
// difference of the times at its two ends.
import type { BlocktimeReport, VcpuBlocktimeStats } from '../../src/blocktime/types.js';

// Read once: under jest every lookup of a global from the test's vm context
// is slow (~0.4 us), and this runs millions of times per test.
const { floor, max, min } = Math;
const parse = JSON.parse;
const big = BigInt;

interface TraceLine {
  vcpus?: number[];
  t0?: number;
  t: number;
  ev?: 'fault' | 'placed' | 'end';
  addr?: number;
  tid?: number;
  status?: string;
}

/** A fault that passed the page rules. */
export interface NaiveFault {
  /** position of its line among the events */
  at: number;
  t: number;
  addr: number;
  /** vCPU index, -1 for a thread that is no vCPU */
  vcpu: number;
  /** position of the placement that resolved it, if one did */
  placedAt?: number;
  placedT?: number;
}

/** [from, to): positions among the events, from < to */
export interface Span { from: number; to: number }

export interface NaiveResult {
  report: BlocktimeReport;
  /** what the rules recorded, for coverage counts */
  faults: NaiveFault[];
  /** faults on a page placed earlier: recorded nothing */
  ignoredFaults: number;
  /** placements with no fault waiting: recorded nothing */
  idlePlacements: number;
  /** each vCPU's blocked intervals (the union) and the all-blocked ones */
  vcpuSpans: Span[][];
  allBlocked: Span[];
  /** each event's time, by position */
  times: number[];
  /** resolved latencies, ascending, and each one's exact percentile value */
  latencies: number[];
  exactPercentiles: { p50: number; p90: number; p99: number };
}

/** QEMU's distribution: bucket N = [2^N us, 2^(N+1) us), bucket 0 also
 *  below 1 us, bucket 23 everything from 2^23 us. */
export function naiveQemuBucket(ns: number): number {
  for (let n = 23; n >= 1; n--) if (ns >= 2 ** n * 1000) return n;
  return 0;
}

/** The HDR-style histogram's bucket of a latency (the bucketing is taken
 *  from src/blocktime/latency-histogram.ts, re-derived here): below 64 ns one
 *  bucket per ns; from 2^e ns (e >= 6) 64 equal sub-buckets up to 2^(e+1);
 *  up to 2^53 ns, the largest time a trace can carry. */
export function naiveHdrBucket(ns: number): { low: number; width: number } {
  if (ns < 64) return { low: ns, width: 1 };
  let e = 6;
  while (e < 52 && ns >= 2 ** (e + 1)) e++;
  const width = 2 ** (e - 6);
  return { low: floor(ns / width) * width, width };
}

/** The value a percentile reads from a bucket: its middle, floored. */
export function naiveHdrValue(ns: number): number {
  const { low, width } = naiveHdrBucket(ns);
  return low + floor((width - 1) / 2);
}

/** Nearest rank (1-based) of percentile p among n samples: ceil(p*n/100), at least 1. */
function rank(p: number, n: number): number {
  return max(1, floor((p * n + 99) / 100));
}

/** Percentile p of ascending `sorted`: exactly, and as the histogram reports
 *  it (the bucket's value, capped at the max; the last rank is the max). */
function percentile(sorted: readonly number[], p: number): { exact: number; reported: number } {
  if (sorted.length === 0) return { exact: 0, reported: 0 };
  const r = rank(p, sorted.length);
  const exact = sorted[r - 1];
  const largest = sorted[sorted.length - 1];
  return { exact, reported: r === sorted.length ? largest : min(naiveHdrValue(exact), largest) };
}

function floorAverageOf(values: readonly number[]): number {
  if (values.length === 0) return 0;
  let sum = 0n;
  for (const v of values) sum += big(v);
  return Number(sum / big(values.length));
}

function toMs(ns: number): number {
  return Number(big(ns) / 1_000_000n);
}

/** Sorted, disjoint union of spans. */
function union(spans: readonly Span[]): Span[] {
  const sorted = [...spans].sort((a, b) => a.from - b.from);
  const out: Span[] = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && s.from <= last.to) last.to = max(last.to, s.to);
    else out.push({ ...s });
  }
  return out;
}

/** Intersection of two sorted, disjoint span lists. */
function intersect(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const from = max(a[i].from, b[j].from);
    const to = min(a[i].to, b[j].to);
    if (from < to) out.push({ from, to });
    if (a[i].to < b[j].to) i++;
    else j++;
  }
  return out;
}

/** The report (query-migrate shape) of a trace, the naive way. */
export function naiveBlocktime(lines: readonly string[]): NaiveResult {
  const parsed = lines.filter((l) => l.trim() !== '').map((l) => parse(l) as TraceLine);
  const header = parsed[0];
  const events = parsed.slice(1);
  const tids = header.vcpus as number[];

  // 1. the page rules
  const placedPages = new Set<number>();
  const faults: NaiveFault[] = [];
  let ignoredFaults = 0;
  let idlePlacements = 0;
  let endAt: number | undefined;
  events.forEach((e, at) => {
    if (e.ev === 'fault') {
      if (placedPages.has(e.addr as number)) { ignoredFaults++; return; }
      faults.push({ at, t: e.t, addr: e.addr as number, vcpu: tids.indexOf(e.tid as number) });
    } else if (e.ev === 'placed') {
      placedPages.add(e.addr as number);
      const waiting = faults.filter((f) => f.addr === e.addr && f.placedAt === undefined);
      for (const f of waiting) { f.placedAt = at; f.placedT = e.t; }
      if (waiting.length === 0) idlePlacements++;
    } else {
      endAt = at;
    }
  });

  // the report's moment: the end line, else the last event (live)
  const startT = header.t0 ?? (events.length > 0 ? events[0].t : 0);
  const nowT = events.length > 0 ? events[events.length - 1].t : startT;
  const closeAt = endAt ?? events.length;
  const timeAt = (pos: number): number => (pos < events.length ? events[pos].t : nowT);
  const length = (s: Span): number => timeAt(s.to) - timeAt(s.from);
  const sum = (spans: readonly Span[]): number => spans.reduce((acc, s) => acc + length(s), 0);

  // 2. per vCPU: the union of its faults' intervals
  const vcpuSpans = tids.map((_, v) => union(
    faults.filter((f) => f.vcpu === v).map((f) => ({ from: f.at, to: f.placedAt ?? closeAt })),
  ));
  // 3. every vCPU at once
  const allBlocked = vcpuSpans.reduce(intersect);
  const total = sum(allBlocked);

  // 4. latencies of resolved faults
  const resolved = faults.filter((f) => f.placedT !== undefined);
  const latencyOf = (f: NaiveFault): number => (f.placedT as number) - f.t;
  const latencies = resolved.map(latencyOf).sort((a, b) => a - b);
  const vcpuLatencies = tids.map((_, v) => resolved.filter((f) => f.vcpu === v).map(latencyOf).sort((a, b) => a - b));
  const nonVcpuLatencies = resolved.filter((f) => f.vcpu < 0).map(latencyOf);
  const dist = new Array<number>(24).fill(0);
  for (const l of latencies) dist[naiveQemuBucket(l)]++;
  const p50 = percentile(latencies, 50);
  const p90 = percentile(latencies, 90);
  const p99 = percentile(latencies, 99);

  const vcpus: VcpuBlocktimeStats[] = tids.map((threadId, index) => ({
    index,
    threadId,
    faults: faults.filter((f) => f.vcpu === index).length,
    blocktimeNs: sum(vcpuSpans[index]),
    latencyAvgNs: floorAverageOf(vcpuLatencies[index]),
    latencyP99Ns: percentile(vcpuLatencies[index], 99).reported,
  }));
  const report: BlocktimeReport = {
    'postcopy-blocktime': toMs(total),
    'postcopy-vcpu-blocktime': vcpus.map((s) => toMs(s.blocktimeNs)),
    'postcopy-latency': floorAverageOf(latencies),
    'postcopy-vcpu-latency': vcpus.map((s) => s.latencyAvgNs),
    'postcopy-non-vcpu-latency': floorAverageOf(nonVcpuLatencies),
    'postcopy-latency-dist': dist,
    'x-blocktime': {
      state: endAt === undefined ? 'live' : 'final',
      totalBlocktimeNs: total,
      vcpus,
      faults: faults.length,
      nonVcpuFaults: faults.filter((f) => f.vcpu < 0).length,
      latencyP50Ns: p50.reported,
      latencyP90Ns: p90.reported,
      latencyP99Ns: p99.reported,
      latencyMaxNs: latencies.length > 0 ? latencies[latencies.length - 1] : 0,
      allBlockedWindows: allBlocked.length,
      longestAllBlockedNs: allBlocked.reduce((m, s) => max(m, length(s)), 0),
      postcopyNs: nowT - startT,
    },
  };
  return {
    report, faults, ignoredFaults, times: events.map((e) => e.t), idlePlacements, vcpuSpans, allBlocked, latencies,
    exactPercentiles: { p50: p50.exact, p90: p90.exact, p99: p99.exact },
  };
}
