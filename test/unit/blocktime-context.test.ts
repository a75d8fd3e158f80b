// Hand-computed scenarios for every accounting rule of the blocktime context
// (REFERENCE.md §1), driven by an injected clock.
import { BlocktimeContext } from '../../src/blocktime/context.js';
import type { BlocktimeReport } from '../../src/blocktime/types.js';

const PAGE = 4096;
const A = 0x7f12_3456_0000;
const B = A + PAGE;
const C = A + 2 * PAGE;

/** A context over `tids` with a clock the test sets. */
function make(tids: number[]) {
  const clock = { now: 0 };
  const ctx = new BlocktimeContext({ vcpuThreadIds: tids, clock: () => clock.now, exitEvents: null });
  const at = (t: number, f: () => void): void => { clock.now = t; f(); };
  const report = (t?: number): BlocktimeReport => {
    if (t !== undefined) clock.now = t;
    return ctx.report();
  };
  return { ctx, at, report, clock };
}

const x = (r: BlocktimeReport) => r['x-blocktime'];

describe('blocktime context: hand-computed scenarios', () => {
  test('1 vCPU: one fault of 3.5 ms', () => {
    const { ctx, at, report } = make([10]);
    at(1000, () => ctx.begin(A, 10));
    expect(ctx.pending).toBe(1);
    expect(ctx.isTracked(A)).toBe(true);
    at(3_501_000, () => ctx.end(A));
    expect(ctx.pending).toBe(0);
    expect(ctx.isTracked(A)).toBe(false);
    const r = report(4_000_000);
    expect(r['postcopy-blocktime']).toBe(3);
    expect(r['postcopy-vcpu-blocktime']).toEqual([3]);
    expect(r['postcopy-latency']).toBe(3_500_000);
    expect(r['postcopy-vcpu-latency']).toEqual([3_500_000]);
    expect(r['postcopy-non-vcpu-latency']).toBe(0);
    const dist = new Array(24).fill(0);
    dist[11] = 1; // 3500 us is in [2048 us, 4096 us)
    expect(r['postcopy-latency-dist']).toEqual(dist);
    expect(x(r).totalBlocktimeNs).toBe(3_500_000);
    expect(x(r).vcpus).toEqual([{ index: 0, threadId: 10, faults: 1, blocktimeNs: 3_500_000, latencyAvgNs: 3_500_000, latencyP99Ns: 3_500_000 }]);
    expect(x(r).allBlockedWindows).toBe(1);
    expect(x(r).longestAllBlockedNs).toBe(3_500_000);
    expect(x(r).latencyMaxNs).toBe(3_500_000);
    expect(x(r).faults).toBe(1);
    expect(x(r).postcopyNs).toBe(4_000_000);
    expect(x(r).state).toBe('live');
  });

  test('2 vCPUs overlapping: total is the overlap only', () => {
    const { ctx, at, report } = make([10, 11]);
    at(0, () => ctx.begin(A, 10));
    at(1000, () => ctx.begin(B, 11));
    at(5000, () => ctx.end(A));
    at(8000, () => ctx.end(B));
    const r = report(9000);
    expect(x(r).vcpus.map((v) => v.blocktimeNs)).toEqual([5000, 7000]);
    expect(x(r).totalBlocktimeNs).toBe(4000);
    expect(x(r).allBlockedWindows).toBe(1);
    expect(x(r).longestAllBlockedNs).toBe(4000);
    expect(r['postcopy-latency']).toBe(6000);
    expect(r['postcopy-vcpu-latency']).toEqual([5000, 7000]);
  });

  test('2 vCPUs not overlapping: total stays 0', () => {
    const { ctx, at, report } = make([10, 11]);
    at(0, () => ctx.begin(A, 10));
    at(2000, () => ctx.end(A));
    at(3000, () => ctx.begin(B, 11));
    at(6000, () => ctx.end(B));
    const r = report(7000);
    expect(x(r).vcpus.map((v) => v.blocktimeNs)).toEqual([2000, 3000]);
    expect(x(r).totalBlocktimeNs).toBe(0);
    expect(x(r).allBlockedWindows).toBe(0);
    expect(x(r).longestAllBlockedNs).toBe(0);
  });

  test('3 vCPUs waiting on one page: one placement resolves all three', () => {
    const { ctx, at, report } = make([10, 11, 12]);
    at(100, () => ctx.begin(A, 10));
    at(200, () => ctx.begin(A, 11));
    at(300, () => ctx.begin(A, 12));
    expect(ctx.pending).toBe(3);
    at(1100, () => ctx.end(A));
    expect(ctx.pending).toBe(0);
    const r = report(2000);
    expect(x(r).vcpus.map((v) => v.blocktimeNs)).toEqual([1000, 900, 800]);
    expect(r['postcopy-vcpu-latency']).toEqual([1000, 900, 800]);
    expect(r['postcopy-latency']).toBe(900);
    expect(x(r).totalBlocktimeNs).toBe(800);
    expect(x(r).allBlockedWindows).toBe(1);
    expect(r['postcopy-latency-dist'][0]).toBe(3);
    // percentiles within the histogram's 1 % bound; max exact
    expect(Math.abs(x(r).latencyP50Ns - 900)).toBeLessThanOrEqual(9);
    expect(Math.abs(x(r).latencyP99Ns - 1000)).toBeLessThanOrEqual(10);
    expect(x(r).latencyMaxNs).toBe(1000);
  });

  test('one vCPU, two outstanding faults, the later fault resolved first: blocked from first fault to last placement', () => {
    const { ctx, at, report } = make([10]);
    at(0, () => ctx.begin(A, 10));
    at(1000, () => ctx.begin(B, 10));
    at(3000, () => ctx.end(B));
    expect(x(report()).vcpus[0].blocktimeNs).toBe(3000); // still blocked on A: live interval
    at(5000, () => ctx.end(A));
    const r = report(6000);
    expect(x(r).vcpus[0].blocktimeNs).toBe(5000);
    expect(x(r).vcpus[0].faults).toBe(2);
    expect(r['postcopy-vcpu-latency']).toEqual([3500]); // (2000 + 5000) / 2
    expect(x(r).totalBlocktimeNs).toBe(5000);
    expect(x(r).allBlockedWindows).toBe(1);
  });

  test('one vCPU, two outstanding faults, the earlier fault resolved first: the whole interval, not the last latency (upstream quirk)', () => {
    const { ctx, at, report } = make([10]);
    at(0, () => ctx.begin(A, 10));
    at(1000, () => ctx.begin(B, 10));
    at(3000, () => ctx.end(A));
    at(6000, () => ctx.end(B));
    const r = report(7000);
    // upstream would add only B's latency (5000); the vCPU was blocked 0..6000
    expect(x(r).vcpus[0].blocktimeNs).toBe(6000);
    expect(r['postcopy-vcpu-latency']).toEqual([4000]); // (3000 + 5000) / 2
    expect(x(r).totalBlocktimeNs).toBe(6000);
    expect(x(r).allBlockedWindows).toBe(1);
  });

  test('faults from threads that are no vCPU count in latency only', () => {
    const { ctx, at, report } = make([10]);
    at(0, () => ctx.begin(A, 999));
    at(4000, () => ctx.end(A));
    at(5000, () => ctx.begin(B, 10));
    at(5000, () => ctx.begin(B, 998));
    at(7000, () => ctx.end(B));
    const r = report(8000);
    expect(r['postcopy-non-vcpu-latency']).toBe(3000); // (4000 + 2000) / 2
    expect(r['postcopy-vcpu-latency']).toEqual([2000]);
    expect(r['postcopy-latency']).toBe(2666); // 8000 / 3, rounded down
    expect(x(r).nonVcpuFaults).toBe(2);
    expect(x(r).faults).toBe(3);
    expect(x(r).vcpus[0].faults).toBe(1);
    expect(x(r).vcpus[0].blocktimeNs).toBe(2000);
    expect(x(r).totalBlocktimeNs).toBe(2000); // only the vCPU's own interval
    expect(r['postcopy-latency-dist'][1]).toBe(2); // 2 us, 2 us
    expect(r['postcopy-latency-dist'][2]).toBe(1); // 4 us
  });

  test('an idle vCPU keeps the total at 0', () => {
    const { ctx, at, report } = make([10, 11]);
    for (let i = 0; i < 5; i++) {
      at(i * 10_000, () => ctx.begin(A + i * PAGE, 10));
      at(i * 10_000 + 7000, () => ctx.end(A + i * PAGE));
    }
    const r = report(100_000);
    expect(x(r).vcpus[0].blocktimeNs).toBe(35_000);
    expect(x(r).vcpus[1]).toEqual({ index: 1, threadId: 11, faults: 0, blocktimeNs: 0, latencyAvgNs: 0, latencyP99Ns: 0 });
    expect(r['postcopy-blocktime']).toBe(0);
    expect(x(r).totalBlocktimeNs).toBe(0);
    expect(x(r).allBlockedWindows).toBe(0);
    expect(r['postcopy-vcpu-latency']).toEqual([7000, 0]);
  });

  test('latency distribution bucket edges (0, 1, 2, 3 us, 2^23 us and above)', () => {
    const { ctx, at, report } = make([10]);
    const lat = [0, 999, 1000, 1999, 2000, 3000, 3999, 4000, 2 ** 23 * 1000 - 1, 2 ** 23 * 1000, 2 ** 30 * 1000];
    let t = 0;
    lat.forEach((l, i) => {
      at(t, () => ctx.begin(A + i * PAGE, 10));
      at(t + l, () => ctx.end(A + i * PAGE));
      t += l + 1;
    });
    const dist = report()['postcopy-latency-dist'];
    const want = new Array(24).fill(0);
    want[0] = 4; // 0, 999 ns, 1 us, 1.999 us
    want[1] = 3; // 2 us, 3 us, 3.999 us
    want[2] = 1; // 4 us
    want[22] = 1; // just under 2^23 us
    want[23] = 2; // 2^23 us and 2^30 us
    expect(dist).toEqual(want);
    expect(x(report()).latencyMaxNs).toBe(2 ** 30 * 1000);
  });

  test('a page placed before its fault is read records nothing', () => {
    const { ctx, at, report } = make([10]);
    at(1000, () => ctx.end(A));
    expect(ctx.pending).toBe(0);
    const r = report(2000);
    expect(x(r).faults).toBe(0);
    expect(r['postcopy-latency-dist'].every((n) => n === 0)).toBe(true);
    expect(x(r).vcpus[0].blocktimeNs).toBe(0);
    expect(x(r).totalBlocktimeNs).toBe(0);
    // a later fault on another page is unaffected
    at(3000, () => ctx.begin(B, 10));
    at(4000, () => ctx.end(B));
    expect(x(report()).vcpus[0].blocktimeNs).toBe(1000);
  });

  test('ms figures are rounded down', () => {
    const { ctx, at, report } = make([10, 11]);
    at(0, () => ctx.begin(A, 10));
    at(0, () => ctx.begin(B, 11));
    at(999_999, () => ctx.end(B));
    at(1_999_999, () => ctx.end(A));
    const r = report(3_000_000);
    expect(r['postcopy-vcpu-blocktime']).toEqual([1, 0]);
    expect(r['postcopy-blocktime']).toBe(0); // 999_999 ns
    expect(x(r).totalBlocktimeNs).toBe(999_999);
    expect(r['postcopy-latency']).toBe(1_499_999);
  });

  test('a report while faults are outstanding counts the open intervals up to now', () => {
    const { ctx, at, report } = make([10, 11]);
    at(1000, () => ctx.begin(A, 10));
    at(2000, () => ctx.begin(B, 11));
    let r = report(5000);
    expect(x(r).state).toBe('live');
    expect(x(r).vcpus.map((v) => v.blocktimeNs)).toEqual([4000, 3000]);
    expect(x(r).totalBlocktimeNs).toBe(3000);
    expect(x(r).allBlockedWindows).toBe(1);
    expect(x(r).longestAllBlockedNs).toBe(3000);
    expect(r['postcopy-latency']).toBe(0); // nothing resolved yet
    expect(x(r).faults).toBe(2);
    r = report(9000); // later, still blocked: grows with time
    expect(x(r).vcpus.map((v) => v.blocktimeNs)).toEqual([8000, 7000]);
    expect(x(r).totalBlocktimeNs).toBe(7000);
    at(10_000, () => ctx.end(A));
    r = report(12_000);
    expect(x(r).vcpus.map((v) => v.blocktimeNs)).toEqual([9000, 10_000]);
    expect(x(r).totalBlocktimeNs).toBe(8000);
    expect(r['postcopy-vcpu-latency']).toEqual([9000, 0]);
  });

  test('all-blocked windows: counted each time every vCPU is down, longest kept', () => {
    const { ctx, at, report } = make([10, 11]);
    at(0, () => ctx.begin(A, 10));
    at(100, () => ctx.begin(B, 11));
    at(600, () => ctx.end(A)); // window 1: 500
    at(700, () => ctx.begin(C, 10));
    at(2700, () => ctx.end(B)); // window 2: 2000
    at(2800, () => ctx.end(C));
    const r = report(3000);
    expect(x(r).allBlockedWindows).toBe(2);
    expect(x(r).longestAllBlockedNs).toBe(2000);
    expect(x(r).totalBlocktimeNs).toBe(2500);
  });

  test('pages with many waiters and many pages: the pool and table grow without losing records', () => {
    const tids = Array.from({ length: 8 }, (_, i) => 100 + i);
    const { ctx, at, report } = make(tids);
    const pages = 5000;
    for (let p = 0; p < pages; p++) at(p, () => ctx.begin(A + p * PAGE, tids[p % 8]));
    expect(ctx.pending).toBe(pages);
    for (let p = pages - 1; p >= 0; p--) expect(ctx.isTracked(A + p * PAGE)).toBe(true);
    for (let p = 0; p < pages; p += 2) at(10_000 + p, () => ctx.end(A + p * PAGE));
    for (let p = 1; p < pages; p += 2) at(20_000 + p, () => ctx.end(A + p * PAGE));
    expect(ctx.pending).toBe(0);
    const r = report(30_000);
    expect(x(r).faults).toBe(pages);
    expect(r['postcopy-latency-dist'].reduce((a, b) => a + b, 0)).toBe(pages);
    // vCPU i faults on pages p = i, i+8, ... (times p); its pages all have p's
    // parity, so even vCPUs are freed in the first pass (last at 10_000 +
    // 4992 + i), odd ones in the second (20_000 + 4992 + i)
    for (let i = 0; i < 8; i++) {
      expect(x(r).vcpus[i].blocktimeNs).toBe(i % 2 === 0 ? 14_992 : 24_992);
      expect(x(r).vcpus[i].faults).toBe(625);
    }
  });

  test('bad thread id lists are refused with a clear error', () => {
    expect(() => new BlocktimeContext({ vcpuThreadIds: [], exitEvents: null })).toThrow(/at least one vCPU/);
    expect(() => new BlocktimeContext({ vcpuThreadIds: [5, 5], exitEvents: null })).toThrow(/thread id 5 is given for vCPU 0 and vCPU 1/);
    expect(() => new BlocktimeContext({ vcpuThreadIds: [-1], exitEvents: null })).toThrow(/vCPU 0 thread id must be a non-negative 32-bit integer/);
  });
});
