// The report's binning per pixel column (src/report/column-bins.ts) and its
// recorder of blocked intervals behind the postcopy rules
// (src/report/trace-recorder.ts): widening keeps min, max, count and covered
// time; intervals closer than a column merge; the recorder's intervals add
// up to the context's blocktime on the same events.
import { IntervalSeries, MinMaxSeries, TimeGrid } from '../../src/report/column-bins.js';
import { TraceRecorder } from '../../src/report/trace-recorder.js';
import { replayLines } from '../../src/blocktime-trace/replay.js';
import type { AlgorithmStart } from '../../src/blocktime/algorithm.js';
import type { TraceSummary } from '../../src/report/trace-recorder.js';
import { mulberry32 } from '../helpers/prng.js';

describe('TimeGrid', () => {
  test('doubles its width until a time fits, and places times in columns', () => {
    const g = new TimeGrid(1000, 4, 10);
    expect(g.column(1000)).toBe(0);
    expect(g.column(1039)).toBe(3);
    expect(g.width).toBe(10);
    expect(g.column(1040)).toBe(2);
    expect(g.width).toBe(20);
    expect(g.column(1000 + 10 * 4 * 8)).toBe(2);
    expect(g.width).toBe(160);
    expect(g.column(0)).toBe(0);
  });
  test('refuses an odd number of columns', () => {
    expect(() => new TimeGrid(0, 3)).toThrow(/even/);
  });
});

describe('MinMaxSeries', () => {
  test('keeps min, max and count per column across widenings', () => {
    const g = new TimeGrid(0, 4, 10);
    const s = new MinMaxSeries(g);
    s.add(0, 50); s.add(5, 20); s.add(15, 70); s.add(35, 1);
    expect(s.columns()).toEqual([
      { start: 0, end: 10, min: 20, max: 50, count: 2 },
      { start: 10, end: 20, min: 70, max: 70, count: 1 },
      { start: 30, end: 40, min: 1, max: 1, count: 1 },
    ]);
    s.add(45, 9);  // widens to 20 ns columns
    expect(s.columns()).toEqual([
      { start: 0, end: 20, min: 20, max: 70, count: 3 },
      { start: 20, end: 40, min: 1, max: 1, count: 1 },
      { start: 40, end: 60, min: 9, max: 9, count: 1 },
    ]);
  });
  test('a million values over a long time stay within the columns, counts and extremes exact', () => {
    const g = new TimeGrid(0, 1000);
    const s = new MinMaxSeries(g);
    const rnd = mulberry32(7);
    let lo = Infinity; let hi = -Infinity;
    for (let i = 0; i < 1_000_000; i++) {
      const v = Math.floor(rnd() * 1e9);
      lo = Math.min(lo, v); hi = Math.max(hi, v);
      s.add(i * 3000, v);
    }
    const cols = s.columns();
    expect(cols.length).toBeLessThanOrEqual(1000);
    expect(cols.reduce((a, c) => a + c.count, 0)).toBe(1_000_000);
    expect(Math.min(...cols.map((c) => c.min))).toBe(lo);
    expect(Math.max(...cols.map((c) => c.max))).toBe(hi);
    expect(g.end).toBeGreaterThan(999_999 * 3000);
  });
});

describe('IntervalSeries', () => {
  test('keeps intervals a column or more apart as bars, joins closer ones', () => {
    const g = new TimeGrid(0, 100, 10);
    const s = new IntervalSeries(g);
    s.add(0, 3); s.add(14, 20); s.add(25, 30); s.add(100, 110);
    expect(s.bars()).toEqual([
      { start: 0, end: 3, coveredNs: 3, intervals: 1 },
      { start: 14, end: 30, coveredNs: 11, intervals: 2 },
      { start: 100, end: 110, coveredNs: 10, intervals: 1 },
    ]);
    expect(s.coveredNs).toBe(24);
    expect(s.intervals).toBe(4);
  });
  test('re-merges its bars when the grid widens, covered time kept', () => {
    const g = new TimeGrid(0, 4, 10);
    const s = new IntervalSeries(g);
    s.add(0, 5); s.add(17, 20); s.add(33, 38);
    expect(s.bars()).toHaveLength(3);
    s.add(60, 70); // width 20: gaps of 12 and 13 are closer than a column, 22 is not
    expect(s.bars()).toEqual([
      { start: 0, end: 38, coveredNs: 13, intervals: 3 },
      { start: 60, end: 70, coveredNs: 10, intervals: 1 },
    ]);
  });
  test('holds about one bar per column for 10^5 intervals', () => {
    const g = new TimeGrid(0, 1000);
    const s = new IntervalSeries(g);
    let t = 0;
    for (let i = 0; i < 100_000; i++) { s.add(t, t + 700); t += 1500; }
    expect(s.bars().length).toBeLessThanOrEqual(1001);
    expect(s.bars().reduce((a, b) => a + b.intervals, 0)).toBe(100_000);
    expect(s.coveredNs).toBe(100_000 * 700);
  });
});

describe('TraceRecorder behind the rules', () => {
  const header = JSON.stringify({ vcpus: [11, 12], t0: 0 });
  const ev = (t: number, e: string, more: object = {}) => JSON.stringify({ t, ev: e, ...more });
  async function run(lines: string[]) {
    const r = await replayLines(lines, 't', { rep: (s: AlgorithmStart) => new TraceRecorder(s) });
    return { exact: r.exact, sum: r.rep as TraceSummary };
  }

  test('one vCPU with two faults is blocked from the first to the last placement; all-blocked window; latencies', async () => {
    const { exact, sum } = await run([
      header,
      ev(1000, 'fault', { addr: 4096, tid: 11 }),
      ev(2000, 'fault', { addr: 8192, tid: 11 }),
      ev(3000, 'fault', { addr: 4096, tid: 12 }),
      ev(4000, 'placed', { addr: 8192 }),
      ev(5000, 'placed', { addr: 4096 }),
      ev(6000, 'fault', { addr: 4096, tid: 12 }), // placed already: rule 1, nothing
      ev(7000, 'fault', { addr: 12288, tid: 99 }), // no vCPU
      ev(9000, 'placed', { addr: 12288 }),
      ev(9500, 'end', { status: 'completed' }),
    ]);
    expect(sum.blocked[0].bars()).toEqual([{ start: 1000, end: 5000, coveredNs: 4000, intervals: 1 }]);
    expect(sum.blocked[1].bars()).toEqual([{ start: 3000, end: 5000, coveredNs: 2000, intervals: 1 }]);
    expect(sum.allBlocked.bars()).toEqual([{ start: 3000, end: 5000, coveredNs: 2000, intervals: 1 }]);
    expect(sum.blocked[0].coveredNs).toBe(exact['x-blocktime'].vcpus[0].blocktimeNs);
    expect(sum.allBlocked.coveredNs).toBe(exact['x-blocktime'].totalBlocktimeNs);
    expect(sum.resolvedFaults).toBe(4);
    expect(sum.nonVcpuFaults.columns().map((c) => c.count)).toEqual([1]);
    expect(sum.faults[1].columns().reduce((a, c) => a + c.count, 0)).toBe(1);
    expect(sum.final).toBe(true);
    expect(sum.endNs).toBe(9500);
  });

  test('faults outstanding at the end close there; without an end line at the last event', async () => {
    const a = await run([header, ev(1000, 'fault', { addr: 4096, tid: 12 }), ev(4000, 'end', { status: 'failed' })]);
    expect(a.sum.blocked[1].bars()).toEqual([{ start: 1000, end: 4000, coveredNs: 3000, intervals: 1 }]);
    expect(a.sum.resolvedFaults).toBe(0);
    const b = await run([header, ev(1000, 'fault', { addr: 4096, tid: 12 }), ev(2500, 'fault', { addr: 8192, tid: 11 })]);
    expect(b.sum.final).toBe(false);
    expect(b.sum.blocked[1].coveredNs).toBe(1500);
    expect(b.sum.blocked[1].coveredNs).toBe(b.exact['x-blocktime'].vcpus[1].blocktimeNs);
  });

  test('on random traces the intervals add up to the context\'s blocktime, per vCPU and in total', async () => {
    const rnd = mulberry32(42);
    const lines = [JSON.stringify({ vcpus: [1, 2, 3], t0: 0 })];
    let t = 0;
    const pages = 40;
    for (let i = 0; i < 5000; i++) {
      t += Math.floor(rnd() * 3000);
      const addr = 4096 * Math.floor(rnd() * pages);
      if (rnd() < 0.55) lines.push(ev(t, 'fault', { addr, tid: 1 + Math.floor(rnd() * 4) }));
      else lines.push(ev(t, 'placed', { addr }));
    }
    lines.push(ev(t + 10, 'end', { status: 'completed' }));
    const { exact, sum } = await run(lines);
    const x = exact['x-blocktime'];
    x.vcpus.forEach((v, i) => expect(sum.blocked[i].coveredNs).toBe(v.blocktimeNs));
    expect(sum.allBlocked.coveredNs).toBe(x.totalBlocktimeNs);
    expect(sum.allBlocked.intervals).toBe(x.allBlockedWindows);
  });
});
