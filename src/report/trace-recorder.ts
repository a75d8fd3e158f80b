// The report's consumer of a replayed trace: one more BlocktimeAlgorithm
// behind the postcopy rules (src/blocktime/rules.ts), so the pictures show
// the intervals the rules give and not a second reading of them. It keeps
// what the charts need, binned per pixel column as the events stream by
// (column-bins.ts): each vCPU's blocked intervals (from its first
// outstanding fault to the placement that resolves its last one), the
// windows in which every vCPU was blocked, the faulted addresses (per vCPU,
// and per way the destination served the fault where the trace says it),
// the background push's position where the trace samples it, and the
// latency of every resolved fault in the same log-linear histogram the
// context reads its percentiles from.

import type { MigrationStatus } from '../migration/api.js';
import type { AlgorithmStart, BlocktimeAlgorithm } from '../blocktime/algorithm.js';
import { HDR_BUCKETS, hdrBucket } from '../blocktime/latency-histogram.js';
import { PageWaiters } from '../blocktime/page-waiters.js';
import { VcpuThreads } from '../blocktime/vcpu-threads.js';
import { FAULT_KINDS, FaultCause } from '../blocktime/trace.js';
import { IntervalSeries, MinMaxSeries, TimeGrid } from './column-bins.js';

/** Pixel columns of the time axis. */
export const REPORT_COLUMNS = 1000;

/** What a trace looks like, binned: the recorder's report. */
export interface TraceSummary {
  vcpuThreadIds: readonly number[];
  startNs: number;
  /** the last event's time */
  endNs: number;
  grid: TimeGrid;
  /** per vCPU index: blocked intervals */
  blocked: IntervalSeries[];
  /** every vCPU blocked at once */
  allBlocked: IntervalSeries;
  /** per vCPU index: faulted addresses (faults of threads that are no vCPU: `nonVcpuFaults`) */
  faults: MinMaxSeries[];
  nonVcpuFaults: MinMaxSeries;
  /** per FaultCause, per vCPU index + 1 (0: no vCPU): faulted addresses,
   *  made when the first such fault comes (FaultCause.Unknown: the trace has no "kind") */
  faultsByCause: (MinMaxSeries | undefined)[][];
  /** the background push's page addresses, where the trace samples them ("push" lines) */
  push: MinMaxSeries;
  pushSamples: number;
  /** the lowest and highest address drawn (faulted or pushed) */
  lowestAddr: number;
  highestAddr: number;
  /** latencies of resolved faults: counts per HDR bucket (latency-histogram.ts) */
  latencyHdr: Float64Array;
  resolvedFaults: number;
  /** the trace ended with an end line (else: open intervals closed at the last fault or placement) */
  final: boolean;
}

export class TraceRecorder implements BlocktimeAlgorithm<TraceSummary> {
  private readonly tids: readonly number[];
  private readonly vcpuOf: VcpuThreads;
  /** the faults waiting per page (pooled records, as the context keeps them: nothing allocated per event) */
  private readonly waiting: PageWaiters;
  /** outstanding faults per vCPU, and since when it is blocked */
  private readonly outstanding: Int32Array;
  private readonly blockedSince: Float64Array;
  private blockedVcpus = 0;
  private allSince = 0;
  private readonly s: TraceSummary;
  private finished = false;

  constructor(start: AlgorithmStart, columns = REPORT_COLUMNS) {
    this.tids = start.vcpuThreadIds;
    this.vcpuOf = new VcpuThreads(this.tids);
    const n = this.tids.length;
    this.waiting = new PageWaiters(Math.max(64, 2 * n));
    this.outstanding = new Int32Array(n);
    this.blockedSince = new Float64Array(n);
    const grid = new TimeGrid(start.startNs, columns);
    this.s = {
      vcpuThreadIds: this.tids, startNs: start.startNs, endNs: start.startNs, grid,
      blocked: this.tids.map(() => new IntervalSeries(grid)), allBlocked: new IntervalSeries(grid),
      faults: this.tids.map(() => new MinMaxSeries(grid)), nonVcpuFaults: new MinMaxSeries(grid),
      faultsByCause: FAULT_KINDS.map(() => new Array<MinMaxSeries | undefined>(n + 1).fill(undefined)), push: new MinMaxSeries(grid), pushSamples: 0,
      lowestAddr: Infinity, highestAddr: -Infinity,
      latencyHdr: new Float64Array(HDR_BUCKETS), resolvedFaults: 0, final: false,
    };
  }

  begin(addr: number, tid: number, at: number, cause: FaultCause = FaultCause.Unknown): void {
    if (this.finished) return;
    this.touch(at);
    const s = this.s;
    this.range(addr);
    const vcpu = this.vcpuOf.indexOf(tid);
    (vcpu < 0 ? s.nonVcpuFaults : s.faults[vcpu]).add(at, addr);
    const byVcpu = s.faultsByCause[cause] ?? s.faultsByCause[FaultCause.Unknown];
    (byVcpu[vcpu + 1] ??= new MinMaxSeries(s.grid)).add(at, addr);
    this.waiting.add(addr, at, vcpu);
    if (vcpu >= 0 && this.outstanding[vcpu]++ === 0) {
      this.blockedSince[vcpu] = at;
      if (++this.blockedVcpus === this.tids.length) this.allSince = at;
    }
  }

  end(addr: number, at: number): void {
    if (this.finished) return;
    this.touch(at);
    const w = this.waiting;
    let rec = w.take(addr);
    while (rec >= 0) {
      const t = w.faultTime[rec];
      const vcpu = w.faultVcpu[rec];
      const following = w.nextRecord[rec];
      w.release(rec);
      rec = following;
      this.s.latencyHdr[hdrBucket(at - t)]++;
      this.s.resolvedFaults++;
      if (vcpu >= 0 && --this.outstanding[vcpu] === 0) this.unblock(vcpu, at);
    }
  }

  pushed(addr: number, at: number): void {
    if (this.finished) return;
    this.touch(at);
    this.range(addr);
    this.s.push.add(at, addr);
    this.s.pushSamples++;
  }

  finish(_status: MigrationStatus, at: number): void {
    if (this.finished) return;
    this.touch(at);
    this.closeAll(at);
    this.s.final = true;
    this.finished = true;
  }

  /** The summary; a trace without an end line has its open intervals closed at its last fault or placement. */
  report(): TraceSummary {
    if (!this.finished) {
      this.closeAll(this.s.endNs);
      this.finished = true;
    }
    return this.s;
  }

  private range(addr: number): void {
    if (addr < this.s.lowestAddr) this.s.lowestAddr = addr;
    if (addr > this.s.highestAddr) this.s.highestAddr = addr;
  }

  private touch(at: number): void {
    if (at > this.s.endNs) this.s.endNs = at;
  }

  private unblock(vcpu: number, at: number): void {
    if (this.blockedVcpus-- === this.tids.length) this.s.allBlocked.add(this.allSince, at);
    this.s.blocked[vcpu].add(this.blockedSince[vcpu], at);
  }

  private closeAll(at: number): void {
    for (let v = 0; v < this.tids.length; v++) {
      if (this.outstanding[v] > 0) {
        this.outstanding[v] = 0;
        this.unblock(v, at);
      }
    }
    this.waiting.clear();
  }
}
