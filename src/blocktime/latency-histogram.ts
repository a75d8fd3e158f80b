// Latency bookkeeping without storing latencies: QEMU's 24 power-of-two
// buckets (in microseconds), and a log-linear histogram (HDR-style: 64 linear
// sub-buckets per power of two of nanoseconds) from which percentiles are read
// with a relative error of at most 1/128 (< 0.8 %). Everything lives in typed
// arrays sized once, so recording a latency never allocates.

import { LATENCY_BUCKETS } from './types.js';

/** Sub-buckets per power of two: 2^SUB_BITS. */
const SUB_BITS = 6;
const SUB = 1 << SUB_BITS;
/** Values below 2^(MAX_EXP+1) ns get their own bucket: every latency a trace
 *  can carry (times are safe integers, < 2^53 ns, ~104 days), so the 0.8 %
 *  bound holds for any of them (a long postcopy-paused included). */
const MAX_EXP = 52;
/** Buckets per histogram row. */
export const HDR_BUCKETS = SUB * (MAX_EXP - SUB_BITS + 2);

const TWO32 = 4294967296;
/** 2^k for k = 0..63, to divide by powers of two without Math.pow. */
const POW2: Float64Array = (() => {
  const a = new Float64Array(64);
  for (let k = 0; k < 64; k++) a[k] = 2 ** k;
  return a;
})();

/** floor(log2(v)) for an integer 1 <= v < 2^53. */
function log2floor(v: number): number {
  if (v < TWO32) return 31 - Math.clz32(v >>> 0);
  return 63 - Math.clz32(Math.floor(v / TWO32) >>> 0);
}

/** HDR bucket of a latency in ns (negative or fractional values are floored at 0). */
export function hdrBucket(ns: number): number {
  const v = ns > 0 ? Math.floor(ns) : 0;
  if (v < SUB) return v;
  const e = log2floor(v);
  if (e > MAX_EXP) return HDR_BUCKETS - 1;
  const sub = v < TWO32 ? (v >>> (e - SUB_BITS)) : Math.floor(v / POW2[e - SUB_BITS]);
  return SUB * (e - SUB_BITS + 1) + (sub - SUB);
}

/** Lowest value (ns) that falls in an HDR bucket. */
export function hdrBucketLow(bucket: number): number {
  if (bucket < SUB) return bucket;
  const e = (bucket >>> SUB_BITS) + SUB_BITS - 1;
  return (SUB + (bucket & (SUB - 1))) * POW2[e - SUB_BITS];
}

/** The value reported for an HDR bucket: its middle, floored to whole ns. */
export function hdrBucketValue(bucket: number): number {
  if (bucket < SUB) return bucket;
  const e = (bucket >>> SUB_BITS) + SUB_BITS - 1;
  const width = POW2[e - SUB_BITS];
  return hdrBucketLow(bucket) + Math.floor((width - 1) / 2);
}

/** QEMU's distribution bucket of a latency in ns: N for [2^N us, 2^(N+1) us);
 *  bucket 0 also takes < 1 us, the last one everything from 2^23 us up. */
export function qemuLatencyBucket(ns: number): number {
  const us = ns >= 1000 ? Math.floor(ns / 1000) : 0;
  if (us < 1) return 0;
  if (us >= 1 << (LATENCY_BUCKETS - 1)) return LATENCY_BUCKETS - 1;
  return 31 - Math.clz32(us);
}

/**
 * A set of HDR histogram rows in one Uint32Array, laid out bucket-major
 * (count of row r in bucket b at b*rows + r): latencies cluster in a few
 * buckets, so the counters that are hot for every row sit on the same few
 * pages whatever the number of rows. The caller computes the bucket once with
 * hdrBucket() and adds it to as many rows as it wants.
 */
export class HdrRows {
  readonly counts: Uint32Array;
  readonly totals: Float64Array;

  constructor(readonly rows: number) {
    this.counts = new Uint32Array(rows * HDR_BUCKETS);
    this.totals = new Float64Array(rows);
  }

  add(row: number, bucket: number): void {
    this.counts[bucket * this.rows + row]++;
    this.totals[row]++;
  }

  /**
   * Nearest-rank percentiles of one row: for each whole percent p in `ps`
   * (ascending, 0 < p <= 100), the value of the bucket that holds the
   * ceil(p*count/100)-th smallest latency, capped at `max` (the exact
   * maximum, which is also the answer when the rank is the last sample).
   * Writes into `out`; zeros when the row is empty.
   */
  percentiles(row: number, ps: readonly number[], max: number, out: number[]): void {
    const total = this.totals[row];
    for (let i = 0; i < ps.length; i++) out[i] = 0;
    if (total === 0) return;
    const rows = this.rows;
    let seen = 0;
    let k = 0;
    for (let b = 0; b < HDR_BUCKETS && k < ps.length; b++) {
      const c = this.counts[b * rows + row];
      if (c === 0) continue;
      seen += c;
      while (k < ps.length) {
        const rank = Math.max(1, Math.ceil((ps[k] * total) / 100));
        if (seen < rank) break;
        // the largest sample is known exactly
        out[k] = rank >= total ? max : Math.min(hdrBucketValue(b), max);
        k++;
      }
    }
    for (; k < ps.length; k++) out[k] = max;
  }
}
