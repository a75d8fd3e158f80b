// The latency histograms and the page-address table, checked directly: QEMU's
// bucket edges, the HDR histogram's bounded relative error and percentile
// ranks, and the hash table's behaviour under collisions, deletion and growth.
import { HDR_BUCKETS, HdrRows, hdrBucket, hdrBucketLow, hdrBucketValue, qemuLatencyBucket } from '../../src/blocktime/latency-histogram.js';
import { PageWaiters } from '../../src/blocktime/page-waiters.js';
import { mulberry32 } from '../helpers/prng.js';

describe('QEMU latency buckets', () => {
  test.each([
    [0, 0], [999, 0], [1000, 0], [1999, 0], [2000, 1], [3000, 1], [3999, 1], [4000, 2],
    [1023_999, 9], [1024_000, 10], [2 ** 23 * 1000 - 1, 22], [2 ** 23 * 1000, 23], [2 ** 40 * 1000, 23],
  ])('%d ns -> bucket %d', (ns, bucket) => {
    expect(qemuLatencyBucket(ns)).toBe(bucket);
  });
});

describe('HDR histogram', () => {
  test('small values are exact, every value lies in its bucket, relative error of the reported value <= 1/128', () => {
    for (let v = 0; v < 64; v++) expect(hdrBucketValue(hdrBucket(v))).toBe(v);
    const rnd = mulberry32(7);
    const bad: string[] = [];
    for (let i = 0; i < 20000; i++) {
      const v = Math.floor(2 ** (rnd() * 41));
      const b = hdrBucket(v);
      const inRange = b >= 0 && b < HDR_BUCKETS && hdrBucketLow(b) <= v && (b + 1 === HDR_BUCKETS || hdrBucketLow(b + 1) > v);
      if (!inRange || Math.abs(hdrBucketValue(b) - v) > v / 128) bad.push(`${v} -> bucket ${b}`);
    }
    expect(bad).toEqual([]);
  });

  test('bucket indexes are monotonic across powers of two, every safe integer has its own power', () => {
    const values = [...new Set(Array.from({ length: 53 }, (_, e) => [2 ** e - 1, 2 ** e, 2 ** e + 1]).flat())]
      .filter((v) => v <= Number.MAX_SAFE_INTEGER).sort((a, b) => a - b);
    const buckets = values.map(hdrBucket);
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
    expect(hdrBucket(2 ** 52)).toBeLessThan(hdrBucket(Number.MAX_SAFE_INTEGER));
    expect(hdrBucket(Number.MAX_SAFE_INTEGER)).toBe(HDR_BUCKETS - 1);
    expect(hdrBucket(2 ** 60)).toBe(HDR_BUCKETS - 1);
    expect(hdrBucket(-5)).toBe(0);
  });

  test('nearest-rank percentiles within 1 % of the exact ones; the last rank is the exact max', () => {
    const rnd = mulberry32(11);
    const h = new HdrRows(1);
    const values: number[] = [];
    for (let i = 0; i < 5000; i++) {
      const v = Math.floor(20_000 + rnd() * rnd() * 5_000_000);
      values.push(v);
      h.add(0, hdrBucket(v));
    }
    values.sort((a, b) => a - b);
    const max = values[values.length - 1];
    const out = [0, 0, 0, 0];
    h.percentiles(0, [50, 90, 99, 100], max, out);
    [50, 90, 99].forEach((p, i) => {
      const exact = values[Math.ceil((p * values.length) / 100) - 1];
      expect(Math.abs(out[i] - exact)).toBeLessThanOrEqual(exact * 0.01);
    });
    expect(out[3]).toBe(max);
    const empty = [1, 1];
    new HdrRows(2).percentiles(1, [50, 99], 0, empty);
    expect(empty).toEqual([0, 0]);
  });
});

describe('PageWaiters (page address -> wait records)', () => {
  test('matches a Map under random adds and takes, across growth and colliding addresses', () => {
    const rnd = mulberry32(3);
    const w = new PageWaiters(4);
    const model = new Map<number, Array<{ time: number; vcpu: number }>>();
    // addresses above 2^32, page-aligned, plus some that differ only in high bits
    const addrOf = (k: number): number => 0x7f00_0000_0000 + (k % 64) * 4096 + Math.floor(k / 64) * 2 ** 33;
    for (let step = 0; step < 20000; step++) {
      const addr = addrOf(Math.floor(rnd() * 300));
      if (rnd() < 0.55) {
        const rec = { time: step, vcpu: Math.floor(rnd() * 5) - 1 };
        w.add(addr, rec.time, rec.vcpu);
        const list = model.get(addr) ?? [];
        list.push(rec);
        model.set(addr, list);
      } else {
        let r = w.take(addr);
        const got: Array<{ time: number; vcpu: number }> = [];
        while (r >= 0) {
          got.push({ time: w.faultTime[r], vcpu: w.faultVcpu[r] });
          const next = w.nextRecord[r];
          w.release(r);
          r = next;
        }
        const want = model.get(addr) ?? [];
        model.delete(addr);
        expect(got.sort((a, b) => a.time - b.time)).toEqual(want);
      }
      if (step % 997 === 0) {
        for (let k = 0; k < 300; k++) expect(w.has(addrOf(k))).toBe(model.has(addrOf(k)));
        expect(w.pages).toBe(model.size);
        expect(w.records).toBe([...model.values()].reduce((a, l) => a + l.length, 0));
      }
    }
    w.clear();
    expect(w.records).toBe(0);
    expect(w.pages).toBe(0);
    expect(w.take(addrOf(1))).toBe(-1);
  });
});

describe('VcpuThreads (thread id -> vCPU index)', () => {
  test('every vCPU found, every other thread id is -1, also for 32-bit ids above 2^31', async () => {
    const { VcpuThreads } = await import('../../src/blocktime/vcpu-threads.js');
    const rnd = mulberry32(5);
    const tids = new Set<number>();
    while (tids.size < 512) tids.add(Math.floor(rnd() * 2 ** 32));
    tids.add(0);
    const list = [...tids];
    const map = new VcpuThreads(list);
    const wrong = list.filter((tid, i) => map.indexOf(tid) !== i);
    expect(wrong).toEqual([]);
    let strays = 0;
    for (let i = 0; i < 20000; i++) {
      const tid = Math.floor(rnd() * 2 ** 32);
      if (!tids.has(tid) && map.indexOf(tid) !== -1) strays++;
    }
    expect(strays).toBe(0);
    expect(() => new VcpuThreads([1, 2 ** 32])).toThrow(/vCPU 1 thread id must be a non-negative 32-bit integer/);
  });
});
