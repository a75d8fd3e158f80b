// The seed's PostcopyBlocktimeContext: accounts how long each vCPU is blocked
// on missing pages during postcopy, from the faults the uffd reader sees
// (begin) and the pages the stream reader places (end). Pure accounting: the
// clock is injected, events come from EventEmitters, output is a report
// object, and an optional TraceSink receives every accounted event.
//
// Per event the cost is O(1) whatever the number of vCPUs (a Map lookup by
// thread id, a typed-array hash lookup by page address) and steady state
// allocates nothing (pooled wait records, preallocated per-vCPU arrays and
// histograms).
//
// Rules (REFERENCE.md §1, without upstream's multi-fault quirk):
//  - a vCPU is blocked from its first outstanding fault until its last one is
//    resolved; its blocktime is the sum of those intervals;
//  - total blocktime is the time during which every vCPU was blocked at once;
//  - every resolved fault (vCPU or not) has a latency = placed - seen;
//  - when the migration ends (completed/failed/cancelled) while faults are
//    still outstanding, their blocked intervals are closed at that moment and
//    kept in the blocktime; they get no latency (their page never came).

import type { EventEmitter } from 'node:events';
import { CommandError } from '../errors.js';
import { TERMINAL_STATUSES, type MigrationStatus } from '../migration/api.js';
import { monotonicNs, type Clock } from './clock.js';
import { HdrRows, hdrBucket, qemuLatencyBucket } from './latency-histogram.js';
import { PageWaiters } from './page-waiters.js';
import { floorAverage, nsToMs } from './report.js';
import type { TraceSink } from './trace.js';
import { LATENCY_BUCKETS, type BlocktimeReport, type VcpuBlocktimeStats } from './types.js';

export interface BlocktimeContextOptions {
  /** kernel thread id of each vCPU thread; position = vCPU index */
  vcpuThreadIds: readonly number[];
  /** monotonic ns; default: process.hrtime-based */
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

/** Percentiles read from the histograms, in whole percent. */
const PERCENTILES = [50, 90, 99] as const;

export class BlocktimeContext {
  readonly vcpus: number;
  private readonly threadIds: readonly number[];
  private readonly tidToVcpu: Map<number, number>;
  private readonly clock: Clock;
  private trace: TraceSink | undefined;
  private waiters: PageWaiters;
  private stateNow: BlocktimeContextState = 'live';
  private readonly startNs: number;
  private endNs = 0;

  // per vCPU
  private readonly outstanding: Int32Array;
  private readonly downSince: Float64Array;
  private readonly blockedNs: Float64Array;
  private readonly vcpuFaults: Float64Array;
  private readonly vcpuResolved: Float64Array;
  private readonly vcpuLatencySum: Float64Array;
  private readonly vcpuLatencyMax: Float64Array;

  // all vCPUs blocked at once
  private cpusDown = 0;
  private allDownSince = 0;
  private totalNs = 0;
  private windows = 0;
  private longestNs = 0;

  // threads that are no vCPU
  private nonVcpuFaults = 0;
  private nonVcpuResolved = 0;
  private nonVcpuLatencySum = 0;

  // every fault
  private faults = 0;
  private resolved = 0;
  private latencySum = 0;
  private latencyMax = 0;
  private readonly dist = new Float64Array(LATENCY_BUCKETS);
  /** row 0: every fault; row 1+i: vCPU i */
  private hdr: HdrRows | undefined;

  private readonly migrationEvents: EventEmitter | null;
  private readonly exitEvents: EventEmitter | null;
  private readonly onMigration = (status: MigrationStatus): void => {
    if (TERMINAL_STATUSES.has(status)) this.finish(status);
  };
  private readonly onExit = (): void => { this.destroy(); };

  constructor(opts: BlocktimeContextOptions) {
    const tids = opts.vcpuThreadIds;
    if (!Array.isArray(tids) || tids.length === 0) {
      throw new CommandError('blocktime: the VM must have at least one vCPU thread id');
    }
    this.tidToVcpu = new Map();
    tids.forEach((tid, i) => {
      if (!Number.isSafeInteger(tid) || tid < 0) {
        throw new CommandError(`blocktime: vCPU ${i} thread id must be a non-negative integer, got ${String(tid)}`);
      }
      if (this.tidToVcpu.has(tid)) {
        throw new CommandError(`blocktime: thread id ${tid} is given for vCPU ${this.tidToVcpu.get(tid)} and vCPU ${i}`);
      }
      this.tidToVcpu.set(tid, i);
    });
    const n = tids.length;
    this.vcpus = n;
    this.threadIds = [...tids];
    this.clock = opts.clock ?? monotonicNs;
    this.outstanding = new Int32Array(n);
    this.downSince = new Float64Array(n);
    this.blockedNs = new Float64Array(n);
    this.vcpuFaults = new Float64Array(n);
    this.vcpuResolved = new Float64Array(n);
    this.vcpuLatencySum = new Float64Array(n);
    this.vcpuLatencyMax = new Float64Array(n);
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

  /** A fault was read for the missing page at `addr`, raised by thread `tid`. */
  begin(addr: number, tid: number): void {
    if (this.stateNow !== 'live') return;
    const t = this.clock();
    if (this.trace !== undefined) this.trace.fault(t, addr, tid);
    const found = this.tidToVcpu.get(tid);
    const v = found === undefined ? -1 : found;
    this.waiters.add(addr, t, v);
    this.faults++;
    if (v < 0) {
      this.nonVcpuFaults++;
      return;
    }
    this.vcpuFaults[v]++;
    if (this.outstanding[v]++ === 0) {
      this.downSince[v] = t;
      if (++this.cpusDown === this.vcpus) {
        this.allDownSince = t;
        this.windows++;
      }
    }
  }

  /** The page at `addr` was placed: every fault waiting on it is resolved.
   *  A page nobody waited on records nothing. */
  end(addr: number): void {
    if (this.stateNow !== 'live') return;
    const waiters = this.waiters;
    let rec = waiters.take(addr);
    if (rec < 0) return;
    const t = this.clock();
    if (this.trace !== undefined) this.trace.placed(t, addr);
    const hdr = this.hdr as HdrRows;
    const time = waiters.faultTime;
    const vcpuOf = waiters.faultVcpu;
    const next = waiters.nextRecord;
    while (rec >= 0) {
      const lat = t > time[rec] ? t - time[rec] : 0;
      const v = vcpuOf[rec];
      const following = next[rec];
      waiters.release(rec);
      rec = following;

      this.resolved++;
      this.latencySum += lat;
      if (lat > this.latencyMax) this.latencyMax = lat;
      this.dist[qemuLatencyBucket(lat)]++;
      const b = hdrBucket(lat);
      hdr.add(0, b);
      if (v < 0) {
        this.nonVcpuResolved++;
        this.nonVcpuLatencySum += lat;
        continue;
      }
      hdr.add(v + 1, b);
      this.vcpuResolved[v]++;
      this.vcpuLatencySum[v] += lat;
      if (lat > this.vcpuLatencyMax[v]) this.vcpuLatencyMax[v] = lat;
      if (--this.outstanding[v] === 0) this.vcpuUp(v, t);
    }
  }

  /**
   * The migration ended: close the blocked intervals still open at this
   * moment, drop the per-fault tracking, keep the totals. Later begin/end
   * calls are ignored. Called by the 'migration' listener on a terminal
   * status; idempotent.
   */
  finish(status: MigrationStatus = 'completed'): void {
    if (this.stateNow !== 'live') return;
    const t = this.clock();
    for (let v = 0; v < this.vcpus; v++) {
      if (this.outstanding[v] > 0) {
        this.outstanding[v] = 0;
        this.vcpuUp(v, t);
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
    for (let v = 0; v < this.vcpus; v++) {
      const open = this.outstanding[v] > 0 ? Math.max(0, now - this.downSince[v]) : 0;
      hdr.percentiles(v + 1, [99], this.vcpuLatencyMax[v], pct);
      vcpus.push({
        index: v,
        threadId: this.threadIds[v],
        faults: this.vcpuFaults[v],
        blocktimeNs: this.blockedNs[v] + open,
        latencyAvgNs: floorAverage(this.vcpuLatencySum[v], this.vcpuResolved[v]),
        latencyP99Ns: pct[0],
      });
    }
    const openAll = live && this.cpusDown === this.vcpus ? Math.max(0, now - this.allDownSince) : 0;
    const total = this.totalNs + openAll;
    hdr.percentiles(0, PERCENTILES, this.latencyMax, pct);
    return {
      'postcopy-blocktime': nsToMs(total),
      'postcopy-vcpu-blocktime': vcpus.map((s) => nsToMs(s.blocktimeNs)),
      'postcopy-latency': floorAverage(this.latencySum, this.resolved),
      'postcopy-vcpu-latency': vcpus.map((s) => s.latencyAvgNs),
      'postcopy-non-vcpu-latency': floorAverage(this.nonVcpuLatencySum, this.nonVcpuResolved),
      'postcopy-latency-dist': Array.from(this.dist),
      'x-blocktime': {
        state: live ? 'live' : 'final',
        totalBlocktimeNs: total,
        vcpus,
        faults: this.faults,
        nonVcpuFaults: this.nonVcpuFaults,
        latencyP50Ns: pct[0],
        latencyP90Ns: pct[1],
        latencyP99Ns: pct[2],
        latencyMaxNs: this.latencyMax,
        allBlockedWindows: this.windows,
        longestAllBlockedNs: Math.max(this.longestNs, openAll),
        postcopyNs: Math.max(0, now - this.startNs),
      },
    };
  }

  // vCPU v has no outstanding fault any more (at time t).
  private vcpuUp(v: number, t: number): void {
    this.blockedNs[v] += t - this.downSince[v];
    if (this.cpusDown === this.vcpus) {
      const len = t - this.allDownSince;
      this.totalNs += len;
      if (len > this.longestNs) this.longestNs = len;
    }
    this.cpusDown--;
  }
}
