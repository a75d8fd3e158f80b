// Binning per pixel column, as the trace streams by: a trace of 10^6 events
// must become a picture of a few thousand marks without holding the events.
// The length of the postcopy phase is not known until the trace ends, so the
// columns start narrow and double in width (merging pairs) whenever an event
// falls past the last one; every series on the same grid merges with it.
// Two kinds of series: min/max/count of a value per column (the scatter),
// and intervals merged when less than a column apart (the timeline).

/** Something binned on a TimeGrid: merges its columns pairwise when asked. */
interface GridSeries {
  /** the column width doubled: column i becomes old columns 2i and 2i+1 */
  widen(): void;
}

/** `columns` columns of `width` ns from `origin`; the width doubles as needed. */
export class TimeGrid {
  private readonly series: GridSeries[] = [];
  private w: number;

  constructor(readonly origin: number, readonly columns: number, initialWidthNs = 1000) {
    if (!Number.isInteger(columns) || columns < 2 || columns % 2 !== 0) throw new Error('columns must be an even integer >= 2');
    this.w = initialWidthNs;
  }

  /** ns per column */
  get width(): number { return this.w; }

  /** the end of the last column */
  get end(): number { return this.origin + this.columns * this.w; }

  attach(s: GridSeries): void { this.series.push(s); }

  /** Widens the grid until `t` falls in it; the column of `t` (times before the origin fall in column 0). */
  column(t: number): number {
    while (t >= this.end) {
      this.w *= 2;
      for (const s of this.series) s.widen();
    }
    const c = Math.floor((t - this.origin) / this.w);
    return c < 0 ? 0 : c;
  }
}

/** One column of a MinMaxSeries, as drawn. */
export interface MinMaxColumn {
  /** start and end of the column, ns */
  start: number;
  end: number;
  min: number;
  max: number;
  count: number;
}

/** min, max and count of a value per column (e.g. the faulted address). */
export class MinMaxSeries implements GridSeries {
  private readonly min: Float64Array;
  private readonly max: Float64Array;
  private readonly count: Float64Array;

  constructor(private readonly grid: TimeGrid) {
    const n = grid.columns;
    this.min = new Float64Array(n).fill(Infinity);
    this.max = new Float64Array(n).fill(-Infinity);
    this.count = new Float64Array(n);
    grid.attach(this);
  }

  add(t: number, value: number): void {
    const c = this.grid.column(t);
    if (value < this.min[c]) this.min[c] = value;
    if (value > this.max[c]) this.max[c] = value;
    this.count[c]++;
  }

  widen(): void {
    const half = this.grid.columns / 2;
    for (let i = 0; i < half; i++) {
      const a = 2 * i;
      const b = a + 1;
      this.min[i] = Math.min(this.min[a], this.min[b]);
      this.max[i] = Math.max(this.max[a], this.max[b]);
      this.count[i] = this.count[a] + this.count[b];
    }
    this.min.fill(Infinity, half);
    this.max.fill(-Infinity, half);
    this.count.fill(0, half);
  }

  /** the columns that hold a value, in time order */
  columns(): MinMaxColumn[] {
    const out: MinMaxColumn[] = [];
    const { origin, width } = this.grid;
    for (let c = 0; c < this.count.length; c++) {
      if (this.count[c] === 0) continue;
      out.push({ start: origin + c * width, end: origin + (c + 1) * width, min: this.min[c], max: this.max[c], count: this.count[c] });
    }
    return out;
  }
}

/** A bar of an IntervalSeries: one interval, or several less than a column apart. */
export interface Bar {
  start: number;
  end: number;
  /** the time actually covered by its intervals (≤ end − start) */
  coveredNs: number;
  /** how many intervals it holds */
  intervals: number;
}

/**
 * Intervals added in time order (each starts at or after the previous one's
 * end), kept as bars: an interval that starts less than one column width
 * after the last bar's end joins it. So a series holds at most about one bar
 * per column, whatever the number of intervals.
 */
export class IntervalSeries implements GridSeries {
  private readonly list: Bar[] = [];
  private total = 0;
  private n = 0;

  constructor(private readonly grid: TimeGrid) {
    grid.attach(this);
  }

  add(start: number, end: number): void {
    this.grid.column(end);
    this.total += end - start;
    this.n++;
    const last = this.list[this.list.length - 1];
    if (last !== undefined && start - last.end < this.grid.width) {
      if (end > last.end) last.end = end;
      last.coveredNs += end - start;
      last.intervals++;
    } else {
      this.list.push({ start, end, coveredNs: end - start, intervals: 1 });
    }
  }

  widen(): void {
    const w = this.grid.width;
    const l = this.list;
    let k = 0;
    for (let i = 0; i < l.length; i++) {
      const b = l[i];
      if (k > 0 && b.start - l[k - 1].end < w) {
        const p = l[k - 1];
        if (b.end > p.end) p.end = b.end;
        p.coveredNs += b.coveredNs;
        p.intervals += b.intervals;
      } else {
        l[k++] = b;
      }
    }
    l.length = k;
  }

  bars(): readonly Bar[] { return this.list; }
  /** sum of the intervals' lengths, ns */
  get coveredNs(): number { return this.total; }
  /** number of intervals added */
  get intervals(): number { return this.n; }
}
