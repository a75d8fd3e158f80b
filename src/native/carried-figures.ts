// A native thread's counters carried over its successors: postcopy recovery
// starts a new sender, receiver or page server on each new connection, and
// query-migrate's totals (bytes, pages) must count every connection's, while
// a thread's position and inputs (its cursor, the bytes acknowledged on its
// own stream) are the live thread's alone. One fixed array, no allocation.

export class CarriedFigures {
  private readonly base = new Float64Array(16);
  private readonly sum = new Float64Array(16);

  /** `carried`: the stats[] indices that are counters (summed over the threads) */
  constructor(private readonly carried: readonly number[]) {}

  /** a thread stopped with these figures: its counters carry over */
  fold(final: Float64Array): void {
    for (const i of this.carried) this.base[i] += final[i];
  }

  /** the live thread's figures with the counters of those before it (a view: read it now) */
  with(live: Float64Array | null): Float64Array {
    if (live === null) return this.base;
    this.sum.set(live);
    for (const i of this.carried) this.sum[i] += this.base[i];
    return this.sum;
  }
}
