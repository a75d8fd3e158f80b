// calc-dirty-rate / query-dirty-rate (QEMU's migration/dirtyrate.c, as
// facts): measures how fast the guest dirties memory, in MB/s (MiB), over a
// period, without migrating. Three ways, QEMU's names:
//  - page-sampling (QEMU's default): digest `sample-pages` random pages per
//    GiB, digest them again at the end; the share that changed, times guest
//    RAM, over the period. Cheap, but a guess from few pages.
//  - dirty-bitmap: exact; the source's precopy dirty tracking (userfaultfd
//    WP_ASYNC + PAGEMAP_SCAN, dirty-tracker.ts) over the period, so only
//    while no migration holds guest RAM.
//  - dirty-ring: exact and per vCPU: the vCPUs' own dirty log
//    (src/vm/vcpu-throttle.ts), the first write to each clean page counted.
// One measurement at a time; the clocks and the timer are injected.
import { CommandError } from '../errors.js';
import type { VcpuThrottle } from './guest.js';

export const DIRTY_RATE_STATUSES = ['unstarted', 'measuring', 'measured'] as const;
export type DirtyRateStatus = (typeof DIRTY_RATE_STATUSES)[number];
export const DIRTY_RATE_MODES = ['page-sampling', 'dirty-ring', 'dirty-bitmap'] as const;
export type DirtyRateMode = (typeof DIRTY_RATE_MODES)[number];
export const TIME_UNITS = ['second', 'millisecond'] as const;
export type TimeUnit = (typeof TIME_UNITS)[number];

/** QEMU's limits (dirtyrate.h) */
export const MIN_CALC_TIME_MS = 50;
export const MAX_CALC_TIME_MS = 60000;
export const MIN_SAMPLE_PAGES = 128;
export const MAX_SAMPLE_PAGES = 4096;
export const DEFAULT_SAMPLE_PAGES = 512;

/** query-dirty-rate's reply (QEMU's DirtyRateInfo) */
export interface DirtyRateInfo {
  /** MB/s, once measured */
  'dirty-rate'?: number;
  status: DirtyRateStatus;
  /** seconds (realtime clock) */
  'start-time': number;
  'calc-time': number;
  'calc-time-unit': TimeUnit;
  /** per GiB; 0 outside page-sampling once measured */
  'sample-pages': number;
  mode: DirtyRateMode;
  /** dirty-ring mode */
  'vcpu-dirty-rate'?: Array<{ id: number; 'dirty-rate': number }>;
}

export interface CalcDirtyRateArgs {
  'calc-time': number;
  'calc-time-unit'?: TimeUnit;
  'sample-pages'?: number;
  mode?: DirtyRateMode;
}

/** exact tracking of written pages (dirty-tracker.ts) */
export interface PageTracking {
  /** pages written since the start */
  finish(): Promise<number>;
}

/** What a measurement reads the guest through. */
export interface DirtyRateSources {
  ramBytes: number;
  pageSize: number;
  /** a 64-bit digest of one guest page */
  pageDigest(page: number): bigint;
  /** the vCPUs' dirty log, when they have one */
  vcpus?: VcpuThrottle;
  /** starts exact tracking, or says why it cannot now */
  startTracking(): PageTracking | string;
  /** why guest RAM cannot be read now (a destination filling it), or undefined */
  unreadable(): string | undefined;
}

export interface MeterClocks {
  /** ms, monotonic */
  now(): number;
  /** s since the epoch (start-time) */
  wallSeconds(): number;
  /** runs fn after ms */
  after(ms: number, fn: () => void): void;
  /** uniform integer in [0, n) */
  random(n: number): number;
}

export const realClocks: MeterClocks = {
  now: () => performance.now(),
  wallSeconds: () => Math.floor(Date.now() / 1000),
  after: (ms, fn) => { setTimeout(fn, ms).unref(); },
  random: (n) => Math.floor(Math.random() * n),
};

const MB = 1 << 20;

export class DirtyRateMeter {
  private status: DirtyRateStatus = 'unstarted';
  private mode: DirtyRateMode = 'page-sampling';
  private startTime = 0;
  private calcMs = 0;
  private samplePages = 0;
  private rate = -1;
  private vcpuRates: number[] | undefined;

  constructor(private readonly src: DirtyRateSources, private readonly clocks: MeterClocks = realClocks) {}

  /** a dirty-bitmap measurement runs: it holds guest RAM's write-protect tracking until it ends */
  get tracking(): boolean { return this.status === 'measuring' && this.mode === 'dirty-bitmap'; }

  /** calc-dirty-rate: starts a measurement (returns at once); QEMU's errors */
  calc(a: CalcDirtyRateArgs): void {
    if (this.status === 'measuring') throw new CommandError('the dirty rate is already being measured.');
    const ms = a['calc-time-unit'] === 'millisecond' ? a['calc-time'] : a['calc-time'] * 1000;
    if (!(Number.isInteger(ms) && ms >= MIN_CALC_TIME_MS && ms <= MAX_CALC_TIME_MS)) {
      throw new CommandError(`Calculation time is out of range [${MIN_CALC_TIME_MS}ms, ${MAX_CALC_TIME_MS}ms].`);
    }
    const mode = a.mode ?? 'page-sampling';
    if (a['sample-pages'] !== undefined && mode !== 'page-sampling') throw new CommandError('sample-pages is used only in page-sampling mode');
    const samples = a['sample-pages'] ?? DEFAULT_SAMPLE_PAGES;
    if (!(Number.isInteger(samples) && samples >= MIN_SAMPLE_PAGES && samples <= MAX_SAMPLE_PAGES)) {
      throw new CommandError(`sample-pages is out of range[${MIN_SAMPLE_PAGES}, ${MAX_SAMPLE_PAGES}].`);
    }
    const finish = this.starter(mode)(samples); // may refuse: before anything changes
    this.status = 'measuring';
    this.mode = mode;
    this.startTime = this.clocks.wallSeconds();
    this.calcMs = ms;
    this.samplePages = samples;
    this.rate = -1;
    this.vcpuRates = undefined;
    const t0 = this.clocks.now();
    this.clocks.after(ms, () => {
      const took = Math.max(1, this.clocks.now() - t0); // the period, not the time to read its result
      void finish().then((r) => {
        // calc-time stays the period asked for (a timer may fire a fraction
        // of a ms early: 1999.6 ms of a 2 s period read "Period: 1 (sec)");
        // the rate is over the period measured
        this.rate = r.rate(took);
        this.vcpuRates = r.vcpus?.(took);
      }, () => { this.rate = -1; }).finally(() => { this.status = 'measured'; });
    });
  }

  /** How a mode starts; throws QEMU's error for a mode that cannot run now. */
  private starter(mode: DirtyRateMode): (samples: number) => () => Promise<Outcome> {
    const refuse = (why: string): never => { throw new CommandError(`mode ${mode} is not enabled, use other method instead. (${why})`); };
    const s = this.src;
    if (mode === 'dirty-ring') {
      const v = s.vcpus ?? refuse('these vCPUs keep no dirty log');
      return () => this.startRing(v);
    }
    if (mode === 'dirty-bitmap') {
      return () => {
        const t = s.startTracking();
        if (typeof t === 'string') refuse(t);
        const tracking = t as PageTracking;
        return async () => { const pages = await tracking.finish(); return { rate: (ms) => mbps(pages, s.pageSize, ms) }; };
      };
    }
    const why = s.unreadable();
    if (why !== undefined) refuse(why);
    return (samples) => this.startSampling(samples);
  }

  private startRing(v: VcpuThrottle): () => Promise<Outcome> {
    v.startDirtyLog();
    const at = Array.from({ length: v.count }, (_, i) => v.dirtyPages(i));
    return async () => {
      const pages = at.map((p, i) => v.dirtyPages(i) - p);
      v.stopDirtyLog();
      const per = (ms: number): number[] => pages.map((p) => mbps(p, this.src.pageSize, ms));
      return { rate: (ms) => per(ms).reduce((a, b) => a + b, 0), vcpus: per };
    };
  }

  private startSampling(perGiB: number): () => Promise<Outcome> {
    const s = this.src;
    const pages = Math.floor(s.ramBytes / s.pageSize);
    const count = Math.floor((s.ramBytes * perGiB) / 2 ** 30);
    const sampled = Array.from({ length: count }, () => this.clocks.random(Math.max(1, pages - 1)));
    const before = sampled.map((p) => s.pageDigest(p));
    return async () => {
      if (count === 0) return { rate: () => -1 }; // QEMU: nothing sampled, no rate
      let dirty = 0;
      for (let k = 0; k < count; k++) if (s.pageDigest(sampled[k]) !== before[k]) dirty++;
      const totalMB = Math.floor(s.ramBytes / MB);
      return { rate: (ms) => Math.floor((dirty * totalMB * 1000) / (count * ms)) };
    };
  }

  /** query-dirty-rate */
  query(unit: TimeUnit = 'second'): DirtyRateInfo {
    const info: DirtyRateInfo = {
      status: this.status,
      'start-time': this.startTime,
      'calc-time': unit === 'millisecond' ? this.calcMs : Math.floor(this.calcMs / 1000),
      'calc-time-unit': unit,
      'sample-pages': this.samplePages,
      mode: this.mode,
    };
    if (this.status !== 'measured') return info;
    info['dirty-rate'] = this.rate;
    if (this.mode !== 'page-sampling') info['sample-pages'] = 0;
    if (this.vcpuRates) info['vcpu-dirty-rate'] = this.vcpuRates.map((r, id) => ({ id, 'dirty-rate': r }));
    return info;
  }
}

interface Outcome {
  rate(ms: number): number;
  vcpus?(ms: number): number[];
}

/** QEMU's arithmetic: whole MiB dirtied, per second */
function mbps(pages: number, pageSize: number, ms: number): number {
  return Math.floor((Math.floor((pages * pageSize) / MB) * 1000) / ms);
}
