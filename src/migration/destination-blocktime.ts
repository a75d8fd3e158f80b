// The destination's blocktime while postcopy runs (the seed's context, made
// when postcopy starts, on the postcopy-blocktime capability), and what
// feeds it: the time-ordered accounting of both placers' events, the vCPUs'
// access stamps (a fault dated where it is raised), the kernel samples of
// the vCPU threads over the postcopy window, and the trace file. Kept apart
// from the incoming stream (incoming.ts), which only hands it events.

import type { EventEmitter } from 'node:events';
import { BlocktimeContext, emptyReport, monotonicNs, type BlocktimeFeedCost, type BlocktimeReport } from '../blocktime/index.js';
import { threadCpuNs } from '../native/index.js';
import { openTraceFile } from '../blocktime-trace/index.js';
import type { AccessStamps } from '../native/vcpu.js';
import type { FaultCause } from '../blocktime/trace.js';
import type { VcpuControl } from './guest.js';
import { PostcopyAccounting } from './postcopy-accounting.js';
import { VcpuThreads } from '../blocktime/vcpu-threads.js';

/** how long the vCPUs' samples may take to find each thread off a run queue (once at each end of postcopy) */
const SETTLE_NS = 100e6;
/** the background push's position goes into the trace at most this often */
const PUSH_SAMPLE_NS = 2e6;

export interface DestinationBlocktimeOptions {
  vcpus: VcpuControl;
  /** the Machine's emitter: 'migration' ends the context, 'runstate' paused spoils the kernel's figure */
  events: EventEmitter;
  /** the x-blocktime-trace parameter ('' = no trace) */
  tracePath: string;
  /** no placer can place a page nobody has (a postcopy pause): the vCPUs asleep on one hold the accounting back no more */
  quiet(): boolean;
  /** guest RAM: base address, page size, the page flags (bits 8 and 16 are the rules') */
  base: number;
  pageSize: number;
  flags: Uint8Array;
}

export class DestinationBlocktime {
  readonly context: BlocktimeContext;
  readonly accounting: PostcopyAccounting;
  /** the vCPUs' access stamps (null once stopped, or when the vCPUs have none) */
  private stampsNow: AccessStamps | null;
  /** why the trace could not be recorded ('' = it could, or none was asked for) */
  private readonly traceError: string;
  private readonly o: DestinationBlocktimeOptions;
  /** what feeding the context costs the event loop (x-blocktime.feed) */
  private readonly feed: BlocktimeFeedCost = { events: 0, drains: 0, cpuNs: 0, horizonNs: 0 };
  /** when the push's position was last sampled (backgroundPlaced) */
  private pushSampledAt = -Infinity;
  /** per vCPU, the time of its latest fault taken (a reported stamp up to it holds the accounting back no more) */
  private readonly drainedFault: Float64Array;
  private readonly threads: VcpuThreads;
  /** what the stamps' horizon passes over (see AccessStamps.horizon) */
  private readonly asleep: { drained: Float64Array; received: Uint8Array };

  constructor(o: DestinationBlocktimeOptions) {
    this.o = o;
    let trace: ReturnType<typeof openTraceFile>;
    let traceError = '';
    try { // checked when the parameter was set; a file that still cannot be opened costs the trace, never the guest
      trace = openTraceFile(o.tracePath);
    } catch (e) {
      traceError = (e as Error).message;
    }
    this.traceError = traceError;
    this.context = new BlocktimeContext({ vcpuThreadIds: o.vcpus.threadIds(), migrationEvents: o.events, trace });
    this.accounting = new PostcopyAccounting(this.context, o.base, o.pageSize, o.flags);
    this.stampsNow = o.vcpus.accessStamps();
    this.threads = new VcpuThreads(o.vcpus.threadIds());
    this.drainedFault = new Float64Array(o.vcpus.count).fill(-Infinity);
    this.asleep = { drained: this.drainedFault, received: o.flags };
  }

  /** The report of a destination whose kernel cannot name the faulting thread. */
  static unavailable(vcpus: VcpuControl): BlocktimeReport {
    return emptyReport(vcpus.threadIds(), 'the kernel does not report the faulting thread (UFFD_FEATURE_THREAD_ID unsupported): faults cannot be attributed to vCPUs');
  }

  /** the access stamps, for the fault thread */
  get stamps(): AccessStamps | null { return this.stampsNow; }

  /** The fault thread runs (its clock base is the stamps' too): stamps on. */
  stampWith(clockBase: number): void {
    this.stampsNow?.enable(clockBase);
  }

  /** The fault thread read a fault of thread `tid` on `page`, raised at `t`,
   *  and served it as `cause` says. */
  fault(page: number, tid: number, t: number, cause: FaultCause): void {
    this.feed.events++;
    const v = this.threads.indexOf(tid);
    if (v >= 0 && t > this.drainedFault[v]) this.drainedFault[v] = t;
    this.accounting.fault(page, tid, t, cause);
  }

  /** The main stream's background push placed pages [first, first+count)
   *  at `t` (right after the ioctl). Where the push is goes into the trace
   *  too: its last page, at most every PUSH_SAMPLE_NS. */
  backgroundPlaced(first: number, count: number, t: number): void {
    this.accounting.placed(first, count, t);
    if (t - this.pushSampledAt < PUSH_SAMPLE_NS) return;
    this.pushSampledAt = t;
    this.accounting.pushed(first + count - 1, t);
  }

  /** The fault thread placed pages [first, first+count) at `t`. */
  placed(first: number, count: number, t: number): void {
    this.feed.events++;
    this.accounting.placed(first, count, t);
  }

  /** `drain` hands over the threads' events and returns their horizon;
   *  then the events before it, and before the earliest stamp a vCPU held
   *  before the drain, are accounted (Infinity: the threads are stopped).
   *  The stamps are read first: a fault dated by a stamp is pushed while its
   *  vCPU still sleeps on it (holds the stamp), so one not drained yet is
   *  never older than the stamps read before the drain. Its cost on the
   *  event loop's CPU is counted in the feed. */
  drained(drain: () => number): void {
    const cpu0 = threadCpuNs(process.pid) ?? 0;
    const h0 = monotonicNs();
    const stamped = this.stampsNow?.horizon(this.o.quiet() ? this.asleep : undefined) ?? Infinity;
    this.feed.horizonNs += monotonicNs() - h0;
    const horizon = drain();
    this.accounting.releaseBefore(Math.min(horizon, stamped));
    this.feed.drains++;
    this.feed.cpuNs += (threadCpuNs(process.pid) ?? cpu0) - cpu0;
  }

  /** The vCPUs run: the kernel's window opens. `drained` takes the fault
   *  thread's events so far and releases what it can. */
  vcpusStarted(drained: () => void): void {
    this.sampleKernel();
    drained();
    this.o.events.on('runstate', this.onRunState);
  }

  /** The fault thread stopped: stamps off, every event accounted. */
  channelStopped(): void {
    this.stampsNow?.disable();
    this.stampsNow = null;
    this.accounting.releaseBefore(Infinity);
  }

  /** Postcopy ends (after channelStopped, before the vCPUs pause): the
   *  kernel's window closes. */
  end(): void {
    this.o.events.off('runstate', this.onRunState);
    if (this.context.state !== 'live') return;
    this.sampleKernel();
    this.accounting.releaseBefore(Infinity);
  }

  /** The report, live (the kernel's figure sampled up to now, not traced;
   *  the trace flushed, so that what it holds matches) or final. */
  report(): BlocktimeReport | undefined {
    const bt = this.context;
    if (bt.state === 'destroyed') return undefined;
    if (bt.state === 'live') {
      bt.flushTrace();
      const v = this.o.vcpus;
      for (let i = 0; i < v.count; i++) {
        const s = v.kernelSample(i, true);
        if (s.unsettled === undefined) bt.kernelSample(i, s.t, s.sample, false);
      }
    }
    const r = bt.report();
    if (this.traceError) r['x-blocktime'].traceError = this.traceError;
    r['x-blocktime'].feed = { ...this.feed };
    return r;
  }

  /**
   * Every vCPU thread's kernel times (or why they say nothing), in time
   * order with the events. A thread waiting on a run queue has a wait in
   * progress that the kernel counts only once it runs: such a vCPU is
   * sampled again, in rounds with the CPU given away between them, for up to
   * SETTLE_NS; one still waiting then gets no kernel figure, with the reason
   * (better none than a wrong one).
   */
  private sampleKernel(): void {
    const v = this.o.vcpus;
    let pending = Array.from({ length: v.count }, (_, i) => i);
    const until = monotonicNs() + SETTLE_NS;
    for (let round = 0; pending.length > 0; round++) {
      const again: number[] = [];
      for (const i of pending) {
        const s = v.kernelSample(i, round === 0);
        if (s.unsettled === undefined) this.accounting.kernelSample(i, s.t, s.sample);
        else if (monotonicNs() >= until) this.accounting.kernelSample(i, s.t, `vCPU ${i} ${s.unsettled}`);
        else again.push(i);
      }
      pending = again;
      // 0.5-2 ms, never the same twice running: a fixed period can keep meeting one vCPU just preempted
      if (pending.length > 0) v.yieldCpu(500 + ((round * 617) % 1500));
    }
  }

  /** `stop` during postcopy: a paused vCPU sleeps, so the kernel's figure
   *  would count the pause as blocktime. */
  private readonly onRunState = (state: string): void => {
    if (state !== 'paused' || this.context.state !== 'live') return;
    for (let i = 0; i < this.o.vcpus.count; i++) {
      this.accounting.kernelSample(i, monotonicNs(), 'the vCPUs were paused (stop) during postcopy');
    }
  };
}
