// The destination's postcopy (QEMU's postcopy-ram.c, incoming side): from the
// switchover on, the native fault thread (native-shim/fault_thread.c) serves
// the vCPUs' faults on the urgent channel, while the main-stream receiver
// (native-shim/stream_receiver.c) places the background pages. Both push
// PLACED events (the fault thread FAULT events too) to their rings, stamped
// by the thread whose ioctl resolved them; drained here, they mark pages
// received and feed the blocktime (destination-blocktime.ts) in time order:
// the horizon is the earlier of the two threads'.

import type { EventEmitter } from 'node:events';
import type net from 'node:net';
import type { VcpuControl } from './guest.js';
import type { Parameters } from './parameters.js';
import { PageChannel, ChannelEvent, FaultThreadStat, type ChannelEventSink } from '../native/page-channel.js';
import { monotonicNs, type BlocktimeReport } from '../blocktime/index.js';
import { DestinationBlocktime } from './destination-blocktime.js';
import type { Userfaultfd } from '../uffd/index.js';

/** how often the threads' events are drained and their state looked at */
export const DRAIN_EVERY_MS = 2;

export interface IncomingPostcopyOptions {
  vcpus: VcpuControl;
  params: Parameters;
  events: EventEmitter;
  base: number;
  pageSize: number;
  pages: number;
  /** the page flags (native memory the threads read) and their address */
  flags: Uint8Array;
  flagsAddress: number;
  /** the main-stream receiver (its PLACED events, in postcopy) */
  receiver: () => PageChannel | null;
  /** pages [first, first+count) were placed by one of the threads */
  received(first: number, count: number): void;
}

export class IncomingPostcopy {
  /** the native fault thread, from its start until the end */
  private channel: PageChannel | null = null;
  /** the blocktime, from the start on (capability postcopy-blocktime) */
  private blocktime: DestinationBlocktime | null = null;
  private fallback: BlocktimeReport | null = null;
  /** the fault thread's counters once it stopped (FaultThreadStat indices) */
  private finalStats: Float64Array = new Float64Array(16);

  constructor(private readonly o: IncomingPostcopyOptions) {}

  get started(): boolean { return this.channel !== null; }
  get running(): boolean { return this.channel?.state === 'running'; }

  /** Starts the fault thread on the urgent channel (taken over from Node). */
  start(uffd: Userfaultfd, urgent: net.Socket, blocktime: boolean, tick: () => void): void {
    const o = this.o;
    if (blocktime) {
      if (uffd.enabled.has('THREAD_ID')) {
        this.blocktime = new DestinationBlocktime({
          vcpus: o.vcpus, events: o.events, tracePath: o.params.value('x-blocktime-trace'),
          base: o.base, pageSize: o.pageSize, flags: o.flags,
        });
      } else {
        this.fallback = DestinationBlocktime.unavailable(o.vcpus);
      }
    }
    this.channel = PageChannel.startFaultThread({
      uffd: uffd.fd, sock: urgent, ramBase: o.base, pageSize: o.pageSize, pages: o.pages,
      flags: o.flagsAddress, blocktime: this.blocktime !== null,
      readahead: o.params.value('x-postcopy-readahead'),
      stamps: this.blocktime?.stamps,
    });
    this.blocktime?.stampWith(this.channel.clockBase);
    this.channel.tickEvery(DRAIN_EVERY_MS, tick);
  }

  /** the fault thread's state ('' before it started) and why it stopped */
  get state(): string { return this.channel?.state ?? ''; }
  get error(): string { return this.channel?.error ?? ''; }

  /** one event from a thread's ring */
  readonly onEvent: ChannelEventSink = (kind, page, arg, t) => {
    if (kind === ChannelEvent.Fault) {
      this.blocktime?.fault(page, arg, t);
      return;
    }
    this.o.received(page, arg);
    this.blocktime?.placed(page, arg, t);
  };

  /** Both threads' events so far, then the blocktime's events that no
   *  event still to come can precede any more. */
  drain(): void {
    const ch = this.channel;
    const rc = this.o.receiver();
    const bt = this.blocktime;
    if (bt === null) {
      ch?.drain(this.onEvent);
      rc?.drain(this.onEvent);
      return;
    }
    bt.drained(() => {
      const now = monotonicNs();
      const a = ch === null ? Infinity : ch.drainOrdered(this.onEvent, now);
      const b = rc === null ? Infinity : rc.drainOrdered(this.onEvent, now);
      return Math.min(a, b);
    });
  }

  /** The vCPUs were started (or left paused): the kernel's window opens. */
  vcpusStarted(): void {
    this.blocktime?.vcpusStarted(() => this.drain());
  }

  /** Stops the fault thread (joined at once) and takes its last events and figures. */
  stop(): void {
    if (this.channel === null) return;
    this.finalStats = this.channel.close(this.onEvent);
    this.channel = null;
    this.blocktime?.channelStopped();
  }

  /** Postcopy ends: the blocktime context closes its window. */
  end(): void {
    this.blocktime?.end();
  }

  /** the fault thread's counters (live, or final) */
  figures(): Float64Array {
    return this.channel?.figures(this.onEvent) ?? this.finalStats;
  }

  stat(i: FaultThreadStat): number { return this.figures()[i]; }

  report(): BlocktimeReport | undefined {
    this.drain();
    return this.blocktime?.report() ?? this.fallback ?? undefined;
  }
}
