// The seed's PostcopyBlocktimeContext: accounts how long each vCPU is blocked
// on missing pages during postcopy, from the faults the uffd reader sees
// (begin) and the pages the stream reader places (end). Pure accounting: the
// clock is injected, events come from EventEmitters, output is a report
// object, and an optional TraceSink receives every accounted event.
//
// Per event the cost is O(1) whatever the number of vCPUs (typed-array hash
// lookups by thread id and by page address) and, once warmed up, its own
// structures allocate nothing per event (pooled wait records, preallocated
// per-vCPU state, totals and histograms; see docs/blocktime.md for the
// short-lived number boxing V8 may still do at call boundaries).
// A vCPU's figures share one cache line (8 doubles), so a fault touches the
// same amount of memory with 1 vCPU or 512.
//
// Rules (REFERENCE.md §1, without upstream's multi-fault quirk):
//  - a vCPU is blocked from its first outstanding fault until its last one is
//    resolved; its blocktime is the sum of those intervals;
//  - total blocktime is the time during which every vCPU was blocked at once;
//  - every resolved fault (vCPU or not) has a latency = placed - seen;
//  - when the migration ends (completed/failed/cancelled) while faults are
//    still outstanding, their blocked intervals are closed at that moment and
//    kept in the blocktime; they get no latency (their page never came).
// Beside them, the kernel's figure (REFERENCE.md §9): samples of each vCPU
// thread's schedstat times, first and last kept; blocked = elapsed - on CPU
// - waiting on a run queue between them.

import type { EventEmitter } from 'node:events';
import { TERMINAL_STATUSES, type MigrationStatus } from '../migration/api.js';
import { monotonicNs, type Clock } from './clock.js';
import { HdrRows, hdrBucket, qemuLatencyBucket } from './latency-histogram.js';
import { PageWaiters } from './page-waiters.js';
import { VcpuThreads } from './vcpu-threads.js';
import { floorAverage, nsToMs } from './report.js';
import { FaultCause, type TraceSink } from './trace.js';
import type { BlocktimeAlgorithm } from './algorithm.js';
import { PauseWindows } from './pause-windows.js';
import { LATENCY_BUCKETS, type BlocktimeReport, type KernelTimes, type VcpuBlocktimeStats } from './types.js';

export interface BlocktimeContextOptions {
  /** kernel thread id of each vCPU thread; position = vCPU index */
  vcpuThreadIds: readonly number[];
  /** monotonic ns; default: monotonicNs (performance.now-based) */
  clock?: Clock;
  /** emits 'migration' (MigrationStatus) on every status change, like
   *  Machine.events; a terminal status ends the per-fault accounting */
  migrationEvents?: EventEmitter | null;
  /** emits 'exit' when the process exits; default `process`, null for none */
  exitEvents?: EventEmitter | null;
  /** receives every accounted event; owned (closed) by the context */
  trace?: TraceSink;
  /** wait records to preallocate (the pool doubles when exceeded) */
  expectedFaults?: number;
}

export type BlocktimeContextState = 'live' | 'final' | 'destroyed';

// Per-vCPU fields, one cache line (8 doubles) per vCPU.
const STRIDE = 8;
/** faults seen and not yet resolved */
const OUTSTANDING = 0;
/** when the current blocked interval began */
const DOWN_SINCE = 1;
/** sum of closed blocked intervals */
const BLOCKED = 2;
const FAULTS = 3;
const RESOLVED = 4;
const LATENCY_SUM = 5;
const LATENCY_MAX = 6;
/** the part of BLOCKED that fell inside postcopy pauses */
const IN_PAUSE = 7;

// Running totals (offsets into BlocktimeContext.g).
/** vCPUs with an outstanding fault */
const G_CPUS_DOWN = 0;
/** when the current all-vCPUs-blocked window began */
const G_ALL_DOWN_SINCE = 1;
/** sum of closed all-blocked windows */
const G_TOTAL = 2;
const G_WINDOWS = 3;
const G_LONGEST = 4;
const G_NON_VCPU_FAULTS = 5;
const G_NON_VCPU_RESOLVED = 6;
const G_NON_VCPU_LATENCY_SUM = 7;
const G_FAULTS = 8;
const G_RESOLVED = 9;
const G_LATENCY_SUM = 10;
const G_LATENCY_MAX = 11;
const G_FIELDS = 12;

/** kernel samples per vCPU: first (t, run, wait, ours), last (t, run, wait,
 *  ours); ours = the vCPU's blocktime so far at the sample's moment */
const K_STRIDE = 8;

/** Percentiles read from the histograms, in whole percent. */
const PERCENTILES = [50, 90, 99] as const;

export class BlocktimeContext implements BlocktimeAlgorithm<BlocktimeReport> {
  readonly vcpus: number;
  private readonly threadIds: readonly number[];
  private readonly tidToVcpu: VcpuThreads;
  private readonly clock: Clock;
  private trace: TraceSink | undefined;
  private waiters: PageWaiters;
  private stateNow: BlocktimeContextState = 'live';
  /** postcopy-paused windows (recovery): the blocktime inside them is said apart */
  readonly pauses = new PauseWindows();
  private readonly startNs: number;
  private endNs = 0;

  /** per vCPU v, at v*STRIDE + one of the field offsets below */
  private readonly vs: Float64Array;

  /** the running totals, at the G_* offsets below: kept in a typed array
   *  rather than in number fields, whose stores V8 may box (allocate) */
  private readonly g = new Float64Array(G_FIELDS);
  private readonly dist = new Float64Array(LATENCY_BUCKETS);
  /** row 0: every fault; row 1+i: vCPU i */
  private hdr: HdrRows | undefined;
  /** per vCPU v at v*K_STRIDE: first and last kernel sample (t, run, wait, ours) */
  private readonly kernel: Float64Array;
  private readonly kernelSamples: Int32Array;
  /** why vCPU v has no kernel figure (undefined: it has, or has no samples yet) */
  private readonly kernelWhy: (string | undefined)[];

  private readonly migrationEvents: EventEmitter | null;
  private readonly exitEvents: EventEmitter | null;
  private readonly onMigration = (status: MigrationStatus): void => {
    if (TERMINAL_STATUSES.has(status)) this.finish(status);
  };
  private readonly onExit = (): void => { this.destroy(); };

  constructor(opts: BlocktimeContextOptions) {
    const tids = opts.vcpuThreadIds;
    this.tidToVcpu = new VcpuThreads(tids);
    const n = tids.length;
    this.vcpus = n;
    this.threadIds = [...tids];
    this.clock = opts.clock ?? monotonicNs;
    this.vs = new Float64Array(n * STRIDE);
    this.kernel = new Float64Array(n * K_STRIDE);
    this.kernelSamples = new Int32Array(n);
    this.kernelWhy = new Array<string | undefined>(n).fill(undefined);
    this.hdr = new HdrRows(n + 1);
    this.waiters = new PageWaiters(opts.expectedFaults ?? Math.max(64, 2 * n));

    this.startNs = this.clock();
    this.trace = opts.trace;
    this.trace?.header(this.threadIds, this.startNs);

    this.migrationEvents = opts.migrationEvents ?? null;
    this.exitEvents = opts.exitEvents === undefined ? process : opts.exitEvents;
    this.migrationEvents?.on('migration', this.onMigration);
    this.exitEvents?.on('exit', this.onExit);
  }

  /** 'live' while accounting, 'final' after the migration ended (totals
   *  kept), 'destroyed' after destroy() or process exit. */
  get state(): BlocktimeContextState { return this.stateNow; }

  /** faults seen and not yet resolved */
  get pending(): number { return this.waiters.records; }

  /** Whether a fault is waiting on the page at `addr`. */
  isTracked(addr: number): boolean {
    return this.stateNow === 'live' && this.waiters.has(addr);
  }

  /** A fault was read for the missing page at `addr`, raised by thread `tid`,
   *  at time `at` (the clock's scale; default now: a reader on another thread
   *  passes the time it read the fault). */
  begin(addr: number, tid: number, at?: number, cause: FaultCause = FaultCause.Unknown): void {
    if (this.stateNow !== 'live') return;
    const t = at ?? this.clock();
    if (this.trace !== undefined) this.trace.fault(t, addr, tid, cause);
    const v = this.tidToVcpu.indexOf(tid);
    this.waiters.add(addr, t, v);
    this.g[G_FAULTS]++;
    if (v < 0) {
      this.g[G_NON_VCPU_FAULTS]++;
      return;
    }
    const vs = this.vs;
    const o = v * STRIDE;
    vs[o + FAULTS]++;
    if (vs[o + OUTSTANDING]++ === 0) {
      vs[o + DOWN_SINCE] = t;
      if (++this.g[G_CPUS_DOWN] === this.vcpus) {
        this.g[G_ALL_DOWN_SINCE] = t;
        this.g[G_WINDOWS]++;
      }
    }
  }

  /** Writes out the trace's buffered lines (for a live look at the trace). */
  flushTrace(): void {
    this.trace?.flush();
  }

  /** The source's background push had delivered the page at `addr` by
   *  `at`: recorded in the trace (no figure depends on it). */
  pushed(addr: number, at: number): void {
    if (this.stateNow === 'live' && this.trace !== undefined) this.trace.push(at, addr);
  }

  /** The page at `addr` was placed (at time `at`, default now): every fault
   *  waiting on it is resolved. A page nobody waited on records nothing. */
  end(addr: number, at?: number): void {
    if (this.stateNow !== 'live') return;
    const waiters = this.waiters;
    let rec = waiters.take(addr);
    if (rec < 0) return;
    const t = at ?? this.clock();
    if (this.trace !== undefined) this.trace.placed(t, addr);
    const hdr = this.hdr as HdrRows;
    const time = waiters.faultTime;
    const vcpuOf = waiters.faultVcpu;
    const next = waiters.nextRecord;
    const vs = this.vs;
    while (rec >= 0) {
      const lat = Math.max(0, t - time[rec]);
      const v = vcpuOf[rec];
      const following = next[rec];
      waiters.release(rec);
      rec = following;

      this.g[G_RESOLVED]++;
      this.g[G_LATENCY_SUM] += lat;
      if (lat > this.g[G_LATENCY_MAX]) this.g[G_LATENCY_MAX] = lat;
      this.dist[qemuLatencyBucket(lat)]++;
      const b = hdrBucket(lat);
      hdr.add(0, b);
      if (v < 0) {
        this.g[G_NON_VCPU_RESOLVED]++;
        this.g[G_NON_VCPU_LATENCY_SUM] += lat;
        continue;
      }
      hdr.add(v + 1, b);
      const o = v * STRIDE;
      vs[o + RESOLVED]++;
      vs[o + LATENCY_SUM] += lat;
      if (lat > vs[o + LATENCY_MAX]) vs[o + LATENCY_MAX] = lat;
      if (--vs[o + OUTSTANDING] === 0) this.vcpuUp(o, t);
    }
  }

  /**
   * A kernel sample of vCPU `vcpu`'s thread at `at` (its schedstat times),
   * or why there is none: one reason makes the vCPU's kernel figure
   * unavailable for good. The first sample opens the window, the latest
   * closes it. `trace`: false for a sample taken only for a live report.
   */
  kernelSample(vcpu: number, at: number, sample: KernelTimes | string, trace = true): void {
    if (this.stateNow !== 'live' || !(vcpu >= 0 && vcpu < this.vcpus)) return;
    if (!trace && this.kernelSamples[vcpu] === 0) return; // a live report's sample only moves the window's end
    if (trace && this.trace !== undefined) this.trace.schedstat(at, this.threadIds[vcpu], sample);
    if (typeof sample === 'string') {
      this.kernelWhy[vcpu] ??= sample;
      return;
    }
    const o = vcpu * K_STRIDE + (this.kernelSamples[vcpu] === 0 ? 0 : 4);
    const vo = vcpu * STRIDE;
    this.kernel[o] = at;
    this.kernel[o + 1] = sample.runNs;
    this.kernel[o + 2] = sample.waitNs;
    this.kernel[o + 3] = this.vs[vo + BLOCKED] + (this.vs[vo + OUTSTANDING] > 0 ? Math.max(0, at - this.vs[vo + DOWN_SINCE]) : 0);
    if (this.kernelSamples[vcpu] < 2) this.kernelSamples[vcpu]++;
  }

  /**
   * The migration ended: close the blocked intervals still open at this
   * moment, drop the per-fault tracking, keep the totals. Later begin/end
   * calls are ignored. Called by the 'migration' listener on a terminal
   * status (at its own time; `at` = when it ended, for replay); idempotent.
   */
  finish(status: MigrationStatus = 'completed', at?: number): void {
    if (this.stateNow !== 'live') return;
    const t = at ?? this.clock();
    for (let o = 0; o < this.vcpus * STRIDE; o += STRIDE) {
      if (this.vs[o + OUTSTANDING] > 0) {
        this.vs[o + OUTSTANDING] = 0;
        this.vcpuUp(o, t);
      }
    }
    this.endNs = t;
    this.stateNow = 'final';
    this.waiters.clear();
    this.migrationEvents?.off('migration', this.onMigration);
    if (this.trace !== undefined) {
      this.trace.end(t, status);
      this.trace.close();
      this.trace = undefined;
    }
  }

  /** Removes both listeners and releases everything (also on process exit).
   *  An unfinished trace is flushed without an "end" line. */
  destroy(): void {
    if (this.stateNow === 'destroyed') return;
    this.migrationEvents?.off('migration', this.onMigration);
    this.exitEvents?.off('exit', this.onExit);
    this.trace?.close();
    this.trace = undefined;
    this.waiters.clear();
    this.hdr = undefined;
    this.stateNow = 'destroyed';
  }

  /** The report: final figures once the migration ended, else live ones with
   *  the open blocked intervals counted up to now. */
  report(): BlocktimeReport {
    if (this.stateNow === 'destroyed' || this.hdr === undefined) {
      throw new Error('blocktime context already destroyed');
    }
    const live = this.stateNow === 'live';
    const now = live ? this.clock() : this.endNs;
    const hdr = this.hdr;
    const pct = [0, 0, 0];
    const vcpus: VcpuBlocktimeStats[] = [];
    const vs = this.vs;
    for (let v = 0; v < this.vcpus; v++) {
      const o = v * STRIDE;
      const down = vs[o + OUTSTANDING] > 0;
      const open = down ? Math.max(0, now - vs[o + DOWN_SINCE]) : 0;
      hdr.percentiles(v + 1, [99], vs[o + LATENCY_MAX], pct);
      vcpus.push({
        index: v,
        threadId: this.threadIds[v],
        faults: vs[o + FAULTS],
        blocktimeNs: vs[o + BLOCKED] + open,
        latencyAvgNs: floorAverage(vs[o + LATENCY_SUM], vs[o + RESOLVED]),
        latencyP99Ns: pct[0],
        ...(this.pauses.count > 0 ? { pausedBlocktimeNs: vs[o + IN_PAUSE] + (down ? this.pauses.overlap(vs[o + DOWN_SINCE], now) : 0) } : {}),
        ...this.kernelFigure(v),
      });
    }
    const openAll = live && this.g[G_CPUS_DOWN] === this.vcpus ? Math.max(0, now - this.g[G_ALL_DOWN_SINCE]) : 0;
    const total = this.g[G_TOTAL] + openAll;
    hdr.percentiles(0, PERCENTILES, this.g[G_LATENCY_MAX], pct);
    return {
      'postcopy-blocktime': nsToMs(total),
      'postcopy-vcpu-blocktime': vcpus.map((s) => nsToMs(s.blocktimeNs)),
      'postcopy-latency': floorAverage(this.g[G_LATENCY_SUM], this.g[G_RESOLVED]),
      'postcopy-vcpu-latency': vcpus.map((s) => s.latencyAvgNs),
      'postcopy-non-vcpu-latency': floorAverage(this.g[G_NON_VCPU_LATENCY_SUM], this.g[G_NON_VCPU_RESOLVED]),
      'postcopy-latency-dist': Array.from(this.dist),
      'x-blocktime': {
        state: live ? 'live' : 'final',
        totalBlocktimeNs: total,
        vcpus,
        faults: this.g[G_FAULTS],
        nonVcpuFaults: this.g[G_NON_VCPU_FAULTS],
        latencyP50Ns: pct[0],
        latencyP90Ns: pct[1],
        latencyP99Ns: pct[2],
        latencyMaxNs: this.g[G_LATENCY_MAX],
        allBlockedWindows: this.g[G_WINDOWS],
        longestAllBlockedNs: Math.max(this.g[G_LONGEST], openAll),
        postcopyNs: Math.max(0, now - this.startNs),
        ...(this.pauses.count > 0 ? { pausedNs: this.pauses.overlap(this.startNs, now), pauses: this.pauses.count } : {}),
      },
    };
  }

  private kernelFigure(v: number): Pick<VcpuBlocktimeStats, 'kernelBlockedNs' | 'kernelWindowBlocktimeNs' | 'kernelUnavailable'> {
    if (this.kernelSamples[v] === 0 && this.kernelWhy[v] === undefined) return {};
    if (this.kernelWhy[v] !== undefined) return { kernelUnavailable: this.kernelWhy[v] };
    if (this.kernelSamples[v] < 2) return { kernelUnavailable: 'one kernel sample only (the window never closed)' };
    const k = this.kernel;
    const o = v * K_STRIDE;
    return {
      kernelBlockedNs: Math.max(0, (k[o + 4] - k[o]) - (k[o + 5] - k[o + 1]) - (k[o + 6] - k[o + 2])),
      kernelWindowBlocktimeNs: Math.max(0, k[o + 7] - k[o + 3]),
    };
  }

  // The vCPU whose state starts at vs[o] has no outstanding fault any more (at time t).
  private vcpuUp(o: number, t: number): void {
    // times from two threads (the fault thread's, ours) may be out of order
    // by a few microseconds: an interval never counts negative
    this.vs[o + BLOCKED] += Math.max(0, t - this.vs[o + DOWN_SINCE]);
    if (this.pauses.count > 0) this.vs[o + IN_PAUSE] += this.pauses.overlap(this.vs[o + DOWN_SINCE], t);
    if (this.g[G_CPUS_DOWN] === this.vcpus) {
      const len = Math.max(0, t - this.g[G_ALL_DOWN_SINCE]);
      this.g[G_TOTAL] += len;
      if (len > this.g[G_LONGEST]) this.g[G_LONGEST] = len;
    }
    this.g[G_CPUS_DOWN]--;
  }
}
