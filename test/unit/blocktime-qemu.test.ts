// QEMU's blocktime algorithms (7.2 and 10.1) against our exact context, on
// hand-computed traces replayed through the postcopy rules, as
// `blocktime-replay --compare` does. Every case where QEMU's figures differ
// from exact names the difference.
import { compareLines, type BlocktimeComparison } from '../../src/blocktime-trace/compare.js';
import { Qemu101Blocktime } from '../../src/blocktime/qemu-v10-1.js';
import { Qemu72Blocktime } from '../../src/blocktime/qemu-v7-2.js';

const MS = 1_000_000;
/** x ms in whole ns (trace times are integers) */
const ms = (x: number): number => Math.round(x * MS);
const A = 0x7f00_0000_0000;
const B = A + 4096;
const C = A + 2 * 4096;
const IO_THREAD = 99;

const fault = (t: number, addr: number, tid: number): string => JSON.stringify({ t, ev: 'fault', addr, tid });
const placed = (t: number, addr: number): string => JSON.stringify({ t, ev: 'placed', addr });
const end = (t: number, status = 'completed'): string => JSON.stringify({ t, ev: 'end', status });

/** Replays a trace of vCPUs `tids` started at `t0` into all three; checks
 *  what holds in every case: 10.1's histogram is exact's (both bucket every
 *  resolved fault the same way). */
async function compare(tids: number[], t0: number, ...events: string[]): Promise<BlocktimeComparison> {
  const c = await compareLines([JSON.stringify({ vcpus: tids, t0 }), ...events], 'hand');
  expect(c['qemu-10.1']['postcopy-latency-dist']).toEqual(c.exact['postcopy-latency-dist']);
  return c;
}

const exactNs = (c: BlocktimeComparison) => c.exact['x-blocktime'].vcpus.map((v) => v.blocktimeNs);

describe('one vCPU with two outstanding faults (the fault thread read its second fault before the first was accounted)', () => {
  test('placed in fault order: 7.2 kept only the second fault in its slot, 10.1 adds only the last latency, exact counts 1..10 ms', async () => {
    const c = await compare([10], 0, fault(1 * MS, A, 10), fault(3 * MS, B, 10), placed(6 * MS, A), placed(10 * MS, B), end(11 * MS));
    expect(exactNs(c)).toEqual([9 * MS]);
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([9]);
    expect(c.exact['postcopy-blocktime']).toBe(9);
    expect(c.exact['postcopy-vcpu-latency']).toEqual([6 * MS]); // (5 + 7) / 2 resolved faults

    // 10.1: A's placement brings the count 2 -> 1 (nothing added), B's 1 -> 0 adds B's 7 ms
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([7]);
    // its total runs from last_begin (the 0 -> 1 fault, 1 ms) to the freeing placement: the whole 9 ms
    expect(c['qemu-10.1']['postcopy-blocktime']).toBe(9);
    // its averages are blocktime / faults: 7 ms / 2
    expect(c['qemu-10.1']['postcopy-vcpu-latency']).toEqual([ms(3.5)]);
    expect(c['qemu-10.1']['postcopy-latency']).toBe(ms(3.5));

    // 7.2: B overwrote A in the slot; A's placement frees nothing; B's adds 10 - 3; last_begin = 3
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 7, 'postcopy-vcpu-blocktime': [7] });
  });

  test('placed in reverse order: 10.1 is right by luck (the last latency is the whole interval), 7.2 frees the vCPU at the first placement', async () => {
    const c = await compare([10], 0, fault(1 * MS, A, 10), fault(3 * MS, B, 10), placed(6 * MS, B), placed(10 * MS, A), end(11 * MS));
    expect(exactNs(c)).toEqual([9 * MS]);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([9]);
    expect(c['qemu-10.1']['postcopy-blocktime']).toBe(9);
    // 7.2: B's placement matches the slot: 6 - 3 = 3 ms, the vCPU is up; A's placement matches nothing
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 3, 'postcopy-vcpu-blocktime': [3] });
  });
});

describe('a fault on a page already received', () => {
  test("the issue's trace: the rules pass nothing on, so nothing in all three", async () => {
    const c = await compare([1000, 1001], 0,
      placed(2_897_092, 139637976727552), fault(2_898_592, 139637976727552, 1000), placed(34_150_112, 139637976797184));
    expect(c.exact['x-blocktime'].faults).toBe(0);
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([0, 0]);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([0, 0]);
    expect(c['qemu-10.1']['postcopy-vcpu-latency']).toEqual([0, 0]); // not counted as a fault either
    expect(c['qemu-10.1']['postcopy-latency-dist'].every((n) => n === 0)).toBe(true);
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 0, 'postcopy-vcpu-blocktime': [0, 0] });
  });

  test('a second fault on a page placed earlier adds nothing after the first wait', async () => {
    const c = await compare([10], 0, fault(1 * MS, A, 10), placed(2 * MS, A), fault(3 * MS, A, 10), end(10 * MS));
    expect(exactNs(c)).toEqual([1 * MS]);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([1]);
    expect(c['qemu-10.1']['postcopy-vcpu-latency']).toEqual([1 * MS]); // one fault, not two
    expect(c['qemu-7.2']['postcopy-vcpu-blocktime']).toEqual([1]);
  });
});

describe('ms rounding', () => {
  // the context starts at 0.4 ms: 7.2's clock reads whole ms, so its start is ms 0
  const t0 = ms(0.4);

  test('waits of 0.6 ms across a ms boundary: 7.2 counts 1 ms each, exact sums the ns and floors once at the end', async () => {
    const events: string[] = [];
    for (let k = 1; k <= 5; k++) events.push(fault(ms(k + 0.7), A + k * 4096, 10), placed(ms(k + 1.3), A + k * 4096));
    const c = await compare([10], t0, ...events, end(8 * MS));
    expect(exactNs(c)).toEqual([3 * MS]);
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([3]);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([3]); // ns too
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 5, 'postcopy-vcpu-blocktime': [5] });
  });

  test('waits of 0.8 ms inside one ms: 7.2 counts 0 each, exact 4 ms', async () => {
    const events: string[] = [];
    for (let k = 1; k <= 5; k++) events.push(fault(ms(k + 0.1), A + k * 4096, 10), placed(ms(k + 0.9), A + k * 4096));
    const c = await compare([10], t0, ...events, end(8 * MS));
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([4]);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([4]);
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 0, 'postcopy-vcpu-blocktime': [0] });
  });

  test("7.2 clamps times to >= 1 ms: a fault in the context's first ms counts from ms 1", async () => {
    // start 5 ms; fault at 5.2 ms (offset 0 -> 1), placed at 8.5 ms (offset 3): 2 ms; exact 3.3 ms -> 3
    const c = await compare([10], 5 * MS, fault(ms(5.2), A, 10), placed(ms(8.5), A), end(9 * MS));
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([3]);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([3]);
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 2, 'postcopy-vcpu-blocktime': [2] });
  });
});

describe('non-vCPU faults', () => {
  test('7.2 ignores them; 10.1 counts their latency, and divides by the ones still outstanding; exact averages resolved faults only', async () => {
    const c = await compare([10], 0,
      fault(1 * MS, A, IO_THREAD), fault(2 * MS, B, 10), placed(3 * MS, B), placed(5 * MS, A),
      fault(6 * MS, C, IO_THREAD), // never placed
      end(10 * MS));
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([1]);
    expect(c.exact['postcopy-non-vcpu-latency']).toBe(4 * MS);
    expect(c.exact['postcopy-latency']).toBe(ms(2.5)); // (1 + 4) / 2 resolved
    expect(c.exact['postcopy-vcpu-latency']).toEqual([1 * MS]);

    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([1]);
    expect(c['qemu-10.1']['postcopy-vcpu-latency']).toEqual([1 * MS]);
    expect(c['qemu-10.1']['postcopy-non-vcpu-latency']).toBe(2 * MS); // 4 ms / 2 non-vCPU faults
    expect(c['qemu-10.1']['postcopy-latency']).toBe(Math.floor((5 * MS) / 3)); // (1 + 4) / 3 faults

    // 7.2: no latency fields at all, and the vCPU's figure alone
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 1, 'postcopy-vcpu-blocktime': [1] });
  });
});

describe('all-vCPUs-down totals', () => {
  test('two windows when every vCPU is down: all three agree (5 ms); an idle vCPU keeps every total at 0', async () => {
    const events = [
      fault(1 * MS, A, 10), fault(2 * MS, B, 11), placed(5 * MS, A), // all down 2..5
      fault(6 * MS, C, 10), placed(8 * MS, B), placed(9 * MS, C), // all down 6..8
    ];
    const c = await compare([10, 11], 0, ...events, end(10 * MS));
    expect(c.exact['postcopy-blocktime']).toBe(5);
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([7, 6]);
    expect(c['qemu-10.1']['postcopy-blocktime']).toBe(5);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([7, 6]);
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 5, 'postcopy-vcpu-blocktime': [7, 6] });

    const idle = await compare([10, 11, 12], 0, ...events, end(10 * MS));
    expect(idle.exact['postcopy-blocktime']).toBe(0);
    expect(idle['qemu-10.1']['postcopy-blocktime']).toBe(0);
    expect(idle['qemu-7.2']['postcopy-blocktime']).toBe(0);
  });

  test("a down vCPU's second fault: 7.2 moves last_begin to it and shortens the window; 10.1 keeps the window's start", async () => {
    const c = await compare([10, 11], 0,
      fault(1 * MS, A, 10), fault(2 * MS, B, 11), // all down from 2
      fault(3 * MS, C, 10), // vCPU 0's second outstanding fault
      placed(6 * MS, B), placed(7 * MS, A), placed(9 * MS, C), end(10 * MS));
    expect(c.exact['postcopy-blocktime']).toBe(4); // 2..6
    expect(exactNs(c)).toEqual([8 * MS, 4 * MS]);
    expect(c['qemu-10.1']['postcopy-blocktime']).toBe(4);
    expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([6, 4]); // vCPU 0: only C's 9 - 3
    // 7.2: total from last_begin = 3; vCPU 0's slot holds C: 9 - 3
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 3, 'postcopy-vcpu-blocktime': [6, 4] });
  });
});

test('several vCPUs and an I/O thread waiting on one page: one placement frees them all, in all three', async () => {
  const c = await compare([10, 11, 12], 0,
    fault(1 * MS, A, 10), fault(2 * MS, A, 11), fault(3 * MS, A, IO_THREAD), fault(4 * MS, B, 12), // all down from 4
    placed(10 * MS, A), placed(12 * MS, B), end(13 * MS));
  expect(c.exact['postcopy-vcpu-blocktime']).toEqual([9, 8, 8]);
  expect(c.exact['postcopy-blocktime']).toBe(6);
  expect(c.exact['postcopy-latency']).toBe(8 * MS); // (9 + 8 + 7 + 8) / 4
  expect(c.exact['postcopy-non-vcpu-latency']).toBe(7 * MS);
  const { 'x-blocktime': _, ...exactQemuFields } = c.exact;
  expect(c['qemu-10.1']).toEqual(exactQemuFields);
  expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 6, 'postcopy-vcpu-blocktime': [9, 8, 8] });
});

describe('the end of the migration', () => {
  test('QEMU closes nothing: faults outstanding at "end" add nothing, exact closes them there', async () => {
    const c = await compare([10, 11], 0, fault(1 * MS, A, 10), fault(2 * MS, B, 11), end(10 * MS, 'failed'));
    expect(c.exact['postcopy-vcpu-blocktime']).toEqual([9, 8]);
    expect(c.exact['postcopy-blocktime']).toBe(8);
    expect(c['qemu-10.1']).toEqual({
      'postcopy-blocktime': 0, 'postcopy-vcpu-blocktime': [0, 0], 'postcopy-latency': 0, 'postcopy-vcpu-latency': [0, 0],
      'postcopy-non-vcpu-latency': 0, 'postcopy-latency-dist': new Array(24).fill(0),
    });
    expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 0, 'postcopy-vcpu-blocktime': [0, 0] });
  });

  test('after finish() both ignore events, as QEMU gets none once the migration is over', () => {
    const start = { vcpuThreadIds: [10], startNs: 0 };
    for (const algo of [new Qemu72Blocktime(start), new Qemu101Blocktime(start)]) {
      algo.begin(A, 10, 1 * MS);
      algo.finish();
      const before = algo.report();
      algo.end(A, 5 * MS);
      algo.begin(B, 10, 6 * MS);
      expect(algo.report()).toEqual(before);
      expect(before['postcopy-vcpu-blocktime']).toEqual([0]);
    }
  });
});
