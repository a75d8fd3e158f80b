// The postcopy pauses a migration went through (postcopy-paused until it is
// postcopy-active again, REFERENCE.md §8), kept so that the blocktime can say
// how much of each vCPU's blocked time fell inside a pause: a vCPU blocked on
// a missing page while the link is down really is blocked, and the operator
// wants to see what the outage cost apart from what postcopy itself costs.
// A few windows per migration; the overlap of an interval is found from the
// newest window back, so a fault after the last pause costs one comparison.

export class PauseWindows {
  /** [start, end) pairs, in time order; end = Infinity while a pause lasts */
  private readonly at: number[] = [];

  /** a pause began at `t` (ignored while one lasts) */
  began(t: number): void {
    if (this.open) return;
    this.at.push(t, Infinity);
  }

  /** the pause that lasts ended at `t` */
  ended(t: number): void {
    if (this.open) this.at[this.at.length - 1] = Math.max(t, this.at[this.at.length - 2]);
  }

  get open(): boolean { return this.at.length > 0 && this.at[this.at.length - 1] === Infinity; }
  get count(): number { return this.at.length / 2; }

  /** time paused in [from, to) */
  overlap(from: number, to: number): number {
    let sum = 0;
    for (let i = this.at.length - 2; i >= 0; i -= 2) {
      const s = this.at[i];
      const e = this.at[i + 1];
      if (e <= from) break;
      const lo = Math.max(s, from);
      const hi = Math.min(e, to);
      if (hi > lo) sum += hi - lo;
    }
    return sum;
  }
}
