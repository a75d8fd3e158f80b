// Issue 10, part 1: every rule, on any trace. Trace replay (the postcopy
// rules of src/blocktime/rules.ts feeding the exact context) is compared with
// a second, naive implementation of the documented rules
// (test/helpers/naive-blocktime.ts, no code shared with src/blocktime/) on
// random traces (test/helpers/random-blocktime-trace.ts): every field of the
// query-migrate shape must be equal. Then each rule on a hand-written trace,
// with figures computed by hand, through both implementations.
//
// BLOCKTIME_SEED (first seed) and BLOCKTIME_TRACES (how many) rerun a case.
// (blocktime-property.test.ts checks the context alone, fed directly.)
import { performance } from 'node:perf_hooks';
import { replayLines } from '../../src/blocktime-trace/replay.js';
import type { BlocktimeReport } from '../../src/blocktime/types.js';
import { naiveBlocktime, type NaiveResult } from '../helpers/naive-blocktime.js';
import { randomBlocktimeTrace, type RandomTrace } from '../helpers/random-blocktime-trace.js';

const FIRST_SEED = Number(process.env.BLOCKTIME_SEED ?? 10_000_001);
const TRACES = Number(process.env.BLOCKTIME_TRACES ?? 10_000);

/** The first path at which two JSON-like values differ, or undefined. */
function firstDifference(got: unknown, want: unknown, path: string): string | undefined {
  const differ = (): string => `${path}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`;
  if (typeof want !== 'object' || want === null) return got === want ? undefined : differ();
  if (typeof got !== 'object' || got === null || Array.isArray(got) !== Array.isArray(want)) return differ();
  const g = got as Record<string, unknown>;
  const w = want as Record<string, unknown>;
  for (const k of new Set([...Object.keys(g), ...Object.keys(w)])) {
    if (!(k in g) || !(k in w)) return `${path}.${k}: got ${JSON.stringify(g[k])}, want ${JSON.stringify(w[k])}`;
    const d = firstDifference(g[k], w[k], `${path}.${k}`);
    if (d !== undefined) return d;
  }
  return undefined;
}

/** Replay and the naive rules on one trace; throws, naming the seed, on any difference. */
async function both(lines: string[], name: string): Promise<{ replay: BlocktimeReport; naive: NaiveResult }> {
  const naive = naiveBlocktime(lines);
  const replay = (await replayLines(lines, name)).exact;
  const diff = firstDifference(replay, naive.report, 'report');
  if (diff !== undefined) {
    throw new Error(`${name}: replay and the naive rules differ at ${diff}${lines.length <= 60 ? `\n${lines.join('\n')}` : ''}`);
  }
  return { replay, naive };
}

/** The documented bound: a percentile is within 0.8 % (1/128) of the exact
 *  nearest-rank value. Checked for latencies below 2^41 ns (see the finding
 *  below for larger ones). */
function percentileErrors(n: NaiveResult, name: string): string[] {
  const x = n.report['x-blocktime'];
  const got = { p50: x.latencyP50Ns, p90: x.latencyP90Ns, p99: x.latencyP99Ns };
  return (['p50', 'p90', 'p99'] as const)
    .filter((p) => Math.abs(got[p] - n.exactPercentiles[p]) > n.exactPercentiles[p] / 128)
    .map((p) => `${name}: ${p} ${got[p]} for ${n.exactPercentiles[p]}`);
}

/** The cases of the rules a random trace shows (names counted over the run). */
function casesOf(tr: RandomTrace, n: NaiveResult): string[] {
  const cases = [`${tr.vcpus === 1 ? '1' : tr.vcpus === 64 ? '64' : 'other'} vCPUs`, tr.hasT0 ? 't0' : 'no t0', `end ${tr.end}`];
  const events = tr.lines.length - 1;
  if (events <= 4) cases.push('short (<= 4 events)');
  if (events >= 1000) cases.push('long (>= 1000 events)');
  if (n.ignoredFaults > 0) cases.push('fault on a page placed earlier');
  if (n.idlePlacements > 0) cases.push('placement nobody waits on');
  const byPlacement = new Map<number, number[]>();
  for (const f of n.faults) if (f.placedAt !== undefined) byPlacement.set(f.placedAt, [...(byPlacement.get(f.placedAt) ?? []), f.vcpu]);
  const groups = [...byPlacement.values()];
  if (groups.some((g) => new Set(g.filter((v) => v >= 0)).size >= 2)) cases.push('several vCPUs on one page');
  if (groups.some((g) => g.some((v, i) => v >= 0 && g.indexOf(v) !== i))) cases.push('one vCPU twice on one page');
  if (groups.some((g) => g.includes(-1) && g.some((v) => v >= 0))) cases.push('vCPU and non-vCPU on one page');
  if (n.faults.some((f) => f.vcpu < 0 && f.placedAt !== undefined)) cases.push('resolved non-vCPU fault');
  if (n.faults.some((f) => f.placedAt === undefined)) cases.push(tr.end === 'live' ? 'outstanding, live' : 'outstanding at end');
  const overlapping = n.vcpuSpans.some((_, v) => {
    let until = -1;
    return n.faults.filter((f) => f.vcpu === v).some((f) => {
      const inside = f.at < until;
      until = Math.max(until, f.placedAt ?? Infinity);
      return inside;
    });
  });
  if (overlapping) cases.push('several outstanding faults of one vCPU');
  const times = n.times;
  if (times.filter((t, i) => i > 0 && t === times[i - 1]).length >= times.length * 0.3 && times.length >= 10) cases.push('many equal timestamps');
  if (n.allBlocked.length > 0 && tr.vcpus >= 2) cases.push('all vCPUs blocked at once (>= 2 vCPUs)');
  if (n.allBlocked.length > 0 && tr.vcpus >= 17) cases.push('all vCPUs blocked at once (>= 17 vCPUs)');
  if (n.allBlocked.some((s, i) => i > 0 && times[s.from] === times[n.allBlocked[i - 1].to])) cases.push('two all-blocked windows at one ns');
  if (n.latencies.includes(0)) cases.push('latency 0');
  if (n.report['postcopy-latency-dist'][23] > 0) cases.push('distribution bucket 23');
  if (n.latencies.some((l) => l >= 2 ** 41)) cases.push('latency >= 2^41 ns');
  if (n.latencies.includes(2 ** 23 * 1000)) cases.push('latency 2^23 us');
  if (n.latencies.some((l) => l > 0 && l <= 2 ** 41 && (l & (l - 1)) === 0)) cases.push('latency 2^k ns');
  return cases;
}

describe('replay against a naive implementation of the rules, on random traces', () => {
  test(`${TRACES} seeded traces from ${FIRST_SEED}: every field of the report agrees`, async () => {
    const started = performance.now();
    const seen = new Map<string, number>();
    const boundErrors: string[] = [];
    let lines = 0;
    for (let i = 0; i < TRACES; i++) {
      const seed = FIRST_SEED + i;
      const tr = randomBlocktimeTrace(seed);
      lines += tr.lines.length;
      const { naive } = await both(tr.lines, `seed ${seed} (rerun: BLOCKTIME_SEED=${seed} BLOCKTIME_TRACES=1)`);
      boundErrors.push(...percentileErrors(naive, `seed ${seed}`));
      for (const c of casesOf(tr, naive)) seen.set(c, (seen.get(c) ?? 0) + 1);
    }
    expect(boundErrors).toEqual([]);
    if (TRACES >= 10_000) {
      // the generator produces every case, and often
      const cases = [
        '1 vCPUs', '64 vCPUs', 'other vCPUs', 't0', 'no t0', 'end live', 'end completed', 'end failed', 'end cancelled', 'end default',
        'short (<= 4 events)', 'long (>= 1000 events)', 'fault on a page placed earlier', 'placement nobody waits on',
        'several vCPUs on one page', 'one vCPU twice on one page', 'vCPU and non-vCPU on one page', 'resolved non-vCPU fault',
        'outstanding, live', 'outstanding at end', 'several outstanding faults of one vCPU', 'many equal timestamps',
        'all vCPUs blocked at once (>= 2 vCPUs)', 'all vCPUs blocked at once (>= 17 vCPUs)', 'two all-blocked windows at one ns',
        'latency 0', 'distribution bucket 23', 'latency >= 2^41 ns', 'latency 2^23 us', 'latency 2^k ns',
      ];
      expect(cases.filter((c) => (seen.get(c) ?? 0) < 20).map((c) => `${c}: ${seen.get(c) ?? 0}`)).toEqual([]);
    }
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`blocktime property replay: ${TRACES} traces, ${lines} lines, ${seconds.toFixed(1)} s\n`);
  }, 120_000);
});

const header = (vcpus: number[], t0?: number): string => JSON.stringify(t0 === undefined ? { vcpus } : { vcpus, t0 });
const fault = (t: number, addr: number, tid: number): string => JSON.stringify({ t, ev: 'fault', addr, tid });
const placed = (t: number, addr: number): string => JSON.stringify({ t, ev: 'placed', addr });
const end = (t: number, status?: string): string => JSON.stringify(status === undefined ? { t, ev: 'end' } : { t, ev: 'end', status });
const A = 0x7f00_0000_0000;
const B = A + 4096;
const C = A + 8192;
const Z = A + 0x10_0000;

/** Both implementations on a hand-written trace (they must agree); the report. */
async function byHand(...lines: string[]): Promise<BlocktimeReport> {
  return (await both(lines, 'hand-written trace')).replay;
}

describe('each rule on a hand-written trace (replay and the naive rules agree; figures by hand)', () => {
  test('a fault on a page placed earlier records nothing (issue 10: vCPU 0 used to get 31 ms)', async () => {
    const r = await byHand(
      '{"vcpus":[1000,1001]}',
      '{"t":2897092,"ev":"placed","addr":139637976727552}',
      '{"t":2898592,"ev":"fault","addr":139637976727552,"tid":1000}',
      '{"t":34150112,"ev":"placed","addr":139637976797184}',
    );
    expect(r['postcopy-vcpu-blocktime']).toEqual([0, 0]);
    expect(r['x-blocktime']).toMatchObject({
      state: 'live', faults: 0, totalBlocktimeNs: 0, postcopyNs: 34150112 - 2897092,
      vcpus: [{ faults: 0, blocktimeNs: 0 }, { faults: 0, blocktimeNs: 0 }],
    });
    // placed earlier at the same nanosecond: earlier in the trace
    const same = await byHand(header([1]), placed(5, A), fault(5, A, 1));
    expect(same['x-blocktime']).toMatchObject({ faults: 0, totalBlocktimeNs: 0, allBlockedWindows: 0 });
  });

  test('a placement nobody waits on records nothing, and the page counts as placed', async () => {
    const r = await byHand(header([1], 0), placed(100, A), fault(200, B, 1), placed(300, B), placed(400, B), fault(500, A, 1));
    expect(r['postcopy-latency-dist'][0]).toBe(1);
    expect(r['postcopy-latency']).toBe(100);
    expect(r['x-blocktime']).toMatchObject({
      faults: 1, totalBlocktimeNs: 100, allBlockedWindows: 1, longestAllBlockedNs: 100, postcopyNs: 500,
      vcpus: [{ faults: 1, blocktimeNs: 100 }],
    });
  });

  test('one placement resolves every waiter on its page (vCPUs, the same vCPU twice, other threads)', async () => {
    const r = await byHand(header([1, 2], 0), fault(0, A, 1), fault(10_000, A, 2), fault(20_000, A, 99), fault(20_000, A, 1), placed(50_000, A));
    // latencies 50, 40, 30 and 30 us
    expect(r['postcopy-latency']).toBe(37_500);
    expect(r['postcopy-vcpu-latency']).toEqual([40_000, 40_000]);
    expect(r['postcopy-non-vcpu-latency']).toBe(30_000);
    expect(r['postcopy-latency-dist'].slice(4, 6)).toEqual([2, 2]);
    expect(r['x-blocktime']).toMatchObject({
      faults: 4, nonVcpuFaults: 1, totalBlocktimeNs: 30_000 + 10_000, allBlockedWindows: 1,
      vcpus: [{ faults: 2, blocktimeNs: 50_000 }, { faults: 1, blocktimeNs: 40_000 }],
    });
  });

  test.each([
    ['the first fault resolved first', [placed(20, A), placed(50, B)]],
    ['the last fault resolved first', [placed(20, B), placed(50, A)]],
  ])('a vCPU with several outstanding faults stays blocked until the last is resolved: %s', async (_, placements) => {
    // upstream QEMU would add only the latency of the fault resolved last (40 or 50)
    const r = await byHand(header([1], 0), fault(0, A, 1), fault(10, B, 1), ...placements, fault(70, C, 1), placed(100, C));
    expect(r['x-blocktime']).toMatchObject({ vcpus: [{ faults: 3, blocktimeNs: 50 + 30 }], allBlockedWindows: 2, longestAllBlockedNs: 50 });
  });

  test('total blocktime is the time during which every vCPU was blocked at once; an idle vCPU keeps it at 0', async () => {
    const faults = [fault(0, A, 1), fault(10, B, 2), placed(30, A), placed(40, B)];
    const two = await byHand(header([1, 2], 0), ...faults);
    expect(two['x-blocktime']).toMatchObject({
      totalBlocktimeNs: 20, allBlockedWindows: 1, longestAllBlockedNs: 20, vcpus: [{ blocktimeNs: 30 }, { blocktimeNs: 30 }],
    });
    const idle = await byHand(header([1, 2, 3], 0), ...faults);
    expect(idle['x-blocktime']).toMatchObject({ totalBlocktimeNs: 0, allBlockedWindows: 0, longestAllBlockedNs: 0 });
  });

  test('faults of threads that are no vCPU count only in the latency figures', async () => {
    const r = await byHand(header([1], 0), fault(0, A, 77), placed(1000, A));
    expect(r['postcopy-vcpu-blocktime']).toEqual([0]);
    expect(r['postcopy-vcpu-latency']).toEqual([0]);
    expect([r['postcopy-latency'], r['postcopy-non-vcpu-latency'], r['postcopy-latency-dist'][0]]).toEqual([1000, 1000, 1]);
    expect(r['x-blocktime']).toMatchObject({
      faults: 1, nonVcpuFaults: 1, totalBlocktimeNs: 0, allBlockedWindows: 0, latencyMaxNs: 1000, vcpus: [{ faults: 0, blocktimeNs: 0 }],
    });
  });

  test('latencies in QEMU\'s buckets: N = [2^N us, 2^(N+1) us), below 1 us in 0, from 2^23 us in 23; averages round down', async () => {
    const latencies = [0, 999, 1000, 1999, 2000, 2 ** 23 * 1000 - 1, 2 ** 23 * 1000, 2 ** 30 * 1000];
    const pages = latencies.map((_, i) => A + i * 4096);
    const r = await byHand(header([1], 0), ...pages.map((p) => fault(0, p, 77)), ...latencies.map((l, i) => placed(l, pages[i])));
    const dist = new Array<number>(24).fill(0);
    [dist[0], dist[1], dist[22], dist[23]] = [4, 1, 1, 2];
    expect(r['postcopy-latency-dist']).toEqual(dist);
    expect(r['postcopy-latency']).toBe(136_314_880_749); // 1_090_519_045_997 / 8, rounded down
  });

  test('equal timestamps are legal, the trace order decides: a fault placed at its own nanosecond, and two windows at one ns', async () => {
    const zero = await byHand(header([1]), fault(5, A, 1), placed(5, A));
    expect(zero['x-blocktime']).toMatchObject({ faults: 1, latencyMaxNs: 0, totalBlocktimeNs: 0, allBlockedWindows: 1, longestAllBlockedNs: 0 });
    // vCPU 0 comes back up at 20 (B placed) and goes down again at 20 (C): it ran in between
    const r = await byHand(header([1, 2], 0), fault(0, A, 2), fault(10, B, 1), placed(20, B), fault(20, C, 1), placed(30, C), placed(40, A));
    expect(r['x-blocktime']).toMatchObject({
      totalBlocktimeNs: 20, allBlockedWindows: 2, longestAllBlockedNs: 10, vcpus: [{ blocktimeNs: 20 }, { blocktimeNs: 40 }],
    });
  });

  const outstanding = [fault(1_000_000, A, 1), fault(2_000_000, B, 2), fault(3_000_000, C, 99)];
  test.each([
    ['completed', 'completed'], ['failed', 'failed'], ['cancelled', 'cancelled'], ['no status', undefined],
  ])('outstanding faults at the end (%s) are closed there, with no latency', async (_, status) => {
    const r = await byHand(header([1, 2], 0), ...outstanding, end(10_000_000, status));
    expect(r['postcopy-vcpu-blocktime']).toEqual([9, 8]);
    expect([r['postcopy-blocktime'], r['postcopy-latency'], r['postcopy-latency-dist'].every((c) => c === 0)]).toEqual([8, 0, true]);
    expect(r['x-blocktime']).toMatchObject({
      state: 'final', faults: 3, nonVcpuFaults: 1, totalBlocktimeNs: 8_000_000, allBlockedWindows: 1, postcopyNs: 10_000_000, latencyMaxNs: 0,
    });
  });

  test('without an end line the report is live at the last event; without t0 postcopy starts at the first event', async () => {
    const r = await byHand(header([1, 2]), ...outstanding, placed(10_000_000, Z));
    expect(r['postcopy-vcpu-blocktime']).toEqual([9, 8]);
    expect(r['x-blocktime']).toMatchObject({ state: 'live', totalBlocktimeNs: 8_000_000, allBlockedWindows: 1, postcopyNs: 9_000_000 });
  });

  test('percentiles: the middle of the histogram bucket of the nearest rank; the last rank is the exact max', async () => {
    const r = await byHand(header([1], 0), fault(0, A, 1), fault(0, B, 1), fault(0, C, 1), placed(100, A), placed(1000, B), placed(5000, C));
    // rank 2 of 3 is 1000 ns, in the bucket [1000, 1008)
    expect(r['x-blocktime']).toMatchObject({ latencyP50Ns: 1003, latencyP90Ns: 5000, latencyP99Ns: 5000, latencyMaxNs: 5000, vcpus: [{ latencyP99Ns: 5000 }] });
  });

  // latencies of 2^41 ns and more (~37 min, e.g. a long postcopy-paused) used
  // to share one top bucket: p50 came out 50 % low for 2 faults of 2^42 ns
  test('the documented 0.8 % percentile bound holds from 2^41 ns too', async () => {
    const r = await byHand(header([1], 0), fault(0, A, 1), fault(0, B, 1), placed(2 ** 42, A), placed(2 ** 42, B));
    expect(Math.abs(r['x-blocktime'].latencyP50Ns - 2 ** 42)).toBeLessThanOrEqual(2 ** 42 / 128);
  });
});
