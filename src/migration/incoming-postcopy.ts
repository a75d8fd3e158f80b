// The destination's postcopy (QEMU's postcopy-ram.c, incoming side): from the
// switchover on, the native fault thread (native-shim/fault_thread.c) serves
// the vCPUs' faults on the urgent channel, while the main-stream receiver
// (native-shim/stream_receiver.c) places the background pages. Both push
// PLACED events to their rings, stamped by the thread whose ioctl resolved
// them, and FAULT events: the fault thread those it reads, either thread
// those of vCPUs it finds asleep on its pages unread (native-shim/waiters.c);
// drained here, they mark pages
// received and feed the blocktime (destination-blocktime.ts) in time order:
// the horizon is the earlier of the two threads'.

import type { EventEmitter } from 'node:events';
import type net from 'node:net';
import type { StreamHeader } from './wire.js';
import { UrgentGate } from './incoming-urgent.js';
import type { VcpuControl } from './guest.js';
import type { Parameters } from './parameters.js';
import {
  PageChannel, ChannelEvent, FaultThreadStat, CHANNEL_EVENT_MASK, FAULT_CAUSE_SHIFT, type ChannelBlocks, type ChannelEventSink,
} from '../native/page-channel.js';
import { monotonicNs, monotonicBaseNs, type BlocktimeReport } from '../blocktime/index.js';
import { DestinationBlocktime } from './destination-blocktime.js';
import type { Userfaultfd } from '../uffd/index.js';
import type { AccessStamps } from '../native/vcpu.js';

/** how often the threads' events are drained and their state looked at */
export const DRAIN_EVERY_MS = 2;
/** how long the postcopy switchover waits for the urgent channel's HEADER */
const URGENT_WAIT_MS = 5000;
/** how long a closed urgent channel waits for the reason on the main stream */
const URGENT_CLOSE_GRACE_MS = 200;

export interface IncomingPostcopyOptions {
  vcpus: VcpuControl;
  params: Parameters;
  events: EventEmitter;
  base: number;
  pageSize: number;
  pages: number;
  /** the RAM block table the fault thread takes (null: one block) */
  blockTable: ChannelBlocks | null;
  /** the page flags (native memory the threads read) and their address */
  flags: Uint8Array;
  flagsAddress: number;
  /** the main-stream receiver (its PLACED events, in postcopy) */
  receiver: () => PageChannel | null;
  /** pages [first, first+count) were placed by one of the threads */
  received(first: number, count: number): void;
  /** the urgent channel's HEADER (checked like the main stream's), then: it is ready (and is `s`) */
  checkHeader(h: StreamHeader): void;
  urgentReady(s: net.Socket): void;
  /** the main stream's token, once its HEADER came (the urgent channel must carry it) */
  mainToken(): Buffer | null;
  /** a connection that is not this migration's urgent channel was refused (the migration goes on) */
  refused(why: string): void;
  fail(reason: string, tellSource: boolean): void;
  /** the urgent channel's link is lost in postcopy (the migration pauses) */
  lost(reason: string): void;
  over(): boolean;
  /** the source's ERROR record */
  sourceError(reason: string): void;
}

export class IncomingPostcopy {
  /** the native fault thread, from its start until the end */
  private channel: PageChannel | null = null;
  /** the blocktime, from the start on (capability postcopy-blocktime) */
  private blocktime: DestinationBlocktime | null = null;
  private fallback: BlocktimeReport | null = null;
  /** the fault thread's counters once it stopped (FaultThreadStat indices) */
  private finalStats: Float64Array = new Float64Array(16);
  private urgent: net.Socket | null = null;
  /** the connections after the main one, until one proves it is the urgent channel (a recovery opens a new gate) */
  private gate: UrgentGate;
  /** paused, and no placer runs any more: the receiver stopped, the fault thread without a link
   *  (it places only pages that are here already) until attach(); and so at the drain before, whose
   *  events took the last placements (a vCPU they woke is not taken for asleep) */
  private get quiet(): boolean {
    return this.quietBefore && this.placersStopped();
  }
  private placersStopped(): boolean {
    return this.pausedLink && this.channel?.state === 'paused' && this.o.receiver() === null;
  }
  /** placersStopped() held at the end of the last drain */
  private quietBefore = false;
  /** pause() was called, attach() not yet */
  private pausedLink = false;
  /** links given to the fault thread (its first, and one per recovery): it has lost the last one when
   *  it is paused (or closed) with as many taken (FaultThreadStat.Links) */
  private links = 0;
  /** the urgent channel's HEADER arrived (the fault thread can take the channel) */
  urgentReady = false;
  /** the urgent channel closed; the failure waits URGENT_CLOSE_GRACE_MS for the main stream's reason */
  private urgentClosing = false;
  /** bumped by each pause and each attach: a loss reported for one link is never acted on after them
   *  (a grace timer of the link a pause dropped would refuse, or pause again, the recovery that follows) */
  private epoch = 0;
  /** the epoch whose link loss is reported already (or, paused, has no link to lose) */
  private lostEpoch = -1;

  constructor(private readonly o: IncomingPostcopyOptions) {
    this.gate = this.newGate();
  }

  private newGate(): UrgentGate {
    const o = this.o;
    return new UrgentGate({
      pageSize: o.pageSize, mainToken: o.mainToken, refused: o.refused, fail: o.fail, over: o.over, sourceError: o.sourceError,
      closed: () => this.urgentClosed(),
      admitted: (s, h) => {
        this.urgent = s;
        o.checkHeader(h);
        this.urgentReady = true;
        o.urgentReady(s);
      },
    });
  }

  /** Postcopy paused: the fault thread drops its link (it goes on reading, and dating, faults), the
   *  candidates for the urgent channel are closed, and a recovery will admit a new one. */
  pause(): void {
    this.pausedLink = true;
    this.channel?.detach();
    this.gate.close();
    this.gate = this.newGate();
    this.urgent = null;
    this.urgentReady = false;
    this.urgentClosing = false;
    this.lostEpoch = ++this.epoch; // paused: no link to lose until the next attach
    this.blocktime?.context.pauses.began(monotonicNs());
  }

  /** Recovery: the fault thread takes the new urgent channel and asks again for every page still outstanding. */
  attach(s: net.Socket): void {
    this.pausedLink = false; // before the thread can place again
    this.links++;
    this.epoch++;
    this.channel!.attach(s, this.o.params.value('x-postcopy-heartbeat-ms'));
  }

  /** Recovery done: postcopy-active again. */
  resumed(): void {
    this.blocktime?.context.pauses.ended(monotonicNs());
  }

  /** the fault thread lost its link (EOF, a socket error, heartbeat silence): why, or null */
  get linkLost(): string | null {
    const ch = this.channel;
    if (ch === null) return null;
    const taken = ch.stat(FaultThreadStat.Links); // before the state: the thread stores them the other way round
    const st = ch.state;
    if ((st !== 'paused' && st !== 'closed') || taken !== this.links) return null;
    // the thread's texts mostly name the channel already ('urgent channel: recv: ...', 'the peer closed the urgent channel')
    const why = ch.error || 'the urgent channel closed';
    return /urgent channel/.test(why) ? why : `urgent channel: ${why}`;
  }

  /** bytes Node read on the urgent channel (up to its header) */
  get urgentBytes(): number { return this.gate.bytes; }

  /** A connection after the main one: the urgent channel (page requests
   *  and requested pages) once its HEADER carries the main stream's token
   *  (incoming-urgent.ts). Read up to its HEADER; the fault thread takes it
   *  over at the switchover (nothing else comes on it before the thread's
   *  first request). */
  offerUrgent(s: net.Socket): void { this.gate.offer(s); }

  /** a connection that came after the main one and was not read yet (the main one sent nothing), or null */
  takeUnread(): net.Socket | null { return this.gate.takeUnread(); }

  /** refuses `s` with `why` (RP_ERROR, closed, reported) */
  refuse(s: net.Socket, why: string): void { this.gate.refuse(s, why); }

  /** The main stream's HEADER came (its token): judge the candidates waiting for it. */
  mainHeaderArrived(): void { this.gate.mainHeaderArrived(); }

  /** The migration ended: connections still waiting to prove themselves are closed. */
  closeGate(): void { this.gate.close(); }

  /** The fault thread lost its link: the migration pauses, after a moment in which the main stream
   *  may still bring the source's reason to end instead (its ERROR record: a cancel, a failure). */
  urgentLost(why: string): void {
    if (this.o.over() || this.lostEpoch === this.epoch) return;
    const epoch = this.lostEpoch = this.epoch;
    setTimeout(() => {
      if (!this.o.over() && this.epoch === epoch && this.linkLost !== null) this.o.lost(why);
    }, URGENT_CLOSE_GRACE_MS).unref();
  }

  /** The postcopy switchover came: the urgent channel must follow soon. */
  expectUrgent(): void {
    if (this.urgentReady) return;
    setTimeout(() => {
      if (!this.urgentReady) this.o.fail(`postcopy switchover, but the urgent channel did not come within ${URGENT_WAIT_MS / 1000} s`, true);
    }, URGENT_WAIT_MS).unref();
  }

  /** The source closed the urgent channel: the migration fails, after a
   *  moment in which the main stream may still bring the source's reason (a
   *  cancel closes both connections at once, and the main one's last record
   *  says why); in a recovery's handshake it pauses again. */
  urgentClosed(): void {
    if (this.o.over() || this.urgentClosing) return;
    this.urgentClosing = true;
    const recovering = this.pausedLink; // a recovery's channel, admitted and not yet taken by the fault thread
    const epoch = this.epoch;
    setTimeout(() => {
      if (this.o.over()) return;
      if (!recovering) this.o.fail('the source closed the urgent channel before the migration completed', false);
      else if (this.epoch === epoch) this.o.lost('urgent channel: the source closed it during the recovery');
    }, URGENT_CLOSE_GRACE_MS).unref();
  }

  get started(): boolean { return this.channel !== null; }
  /** the vCPUs' access stamps while the blocktime runs with the fault thread, else null */
  get stamps(): AccessStamps | null { return this.channel === null ? null : this.blocktime?.stamps ?? null; }
  get running(): boolean { return this.channel?.state === 'running'; }

  /** Starts the fault thread on the urgent channel (taken over from Node). */
  start(uffd: Userfaultfd, zeroSrc: number, blocktime: boolean, tick: () => void): void {
    const o = this.o;
    if (blocktime) {
      if (uffd.enabled.has('THREAD_ID')) {
        this.blocktime = new DestinationBlocktime({
          vcpus: o.vcpus, events: o.events, tracePath: o.params.value('x-blocktime-trace'), quiet: () => this.quiet,
          base: o.base, pageSize: o.pageSize, flags: o.flags,
        });
      } else {
        this.fallback = DestinationBlocktime.unavailable(o.vcpus);
      }
    }
    // stamps on first: the fault thread takes the vCPUs' waiting map as it starts (native-shim/waiters.c)
    this.blocktime?.stampWith(monotonicBaseNs());
    this.channel = PageChannel.startFaultThread({
      uffd: uffd.fd, sock: this.urgent!, ramBase: o.base, pageSize: o.pageSize, pages: o.pages,
      flags: o.flagsAddress, blocktime: this.blocktime !== null, zeroSrc,
      readahead: o.params.value('x-postcopy-readahead'),
      stamps: this.blocktime?.stamps,
      heartbeatMs: o.params.value('x-postcopy-heartbeat-ms'),
      blocks: o.blockTable,
    });
    this.links = 1;
    this.channel.tickEvery(DRAIN_EVERY_MS, tick);
  }

  /** the fault thread's state ('' before it started) and why it stopped */
  get state(): string { return this.channel?.state ?? ''; }
  get error(): string { return this.channel?.error ?? ''; }

  /** one event from the fault thread's ring: a fault (with how it was served), or requested pages placed */
  readonly onEvent: ChannelEventSink = (kind, page, arg, t) => {
    if ((kind & CHANNEL_EVENT_MASK) === ChannelEvent.Fault) {
      this.blocktime?.fault(page, arg, t, kind >> FAULT_CAUSE_SHIFT);
      return;
    }
    this.o.received(page, arg);
    this.blocktime?.placed(page, arg, t);
  };

  /** one event from the main-stream receiver's ring: the background push placed pages (the trace's
   *  push line), or a vCPU was asleep on one of them with its fault unread (native-shim/waiters.c) */
  readonly onStreamEvent: ChannelEventSink = (kind, page, arg, t) => {
    if ((kind & CHANNEL_EVENT_MASK) === ChannelEvent.Fault) {
      this.onEvent(kind, page, arg, t); // a fault is a fault, whichever ring it came on
      return;
    }
    this.o.received(page, arg);
    this.blocktime?.backgroundPlaced(page, arg, t);
  };

  /** Both threads' events so far, then the blocktime's events that no
   *  event still to come can precede any more. */
  drain(): void {
    const ch = this.channel;
    const rc = this.o.receiver();
    const bt = this.blocktime;
    if (bt === null) {
      ch?.drain(this.onEvent);
      rc?.drain(this.onStreamEvent);
      return;
    }
    const stopped = this.placersStopped(); // before the drain: its events are then the last placements
    bt.drained(() => {
      const now = monotonicNs();
      const a = ch === null ? Infinity : ch.drainOrdered(this.onEvent, now);
      const b = rc === null ? Infinity : rc.drainOrdered(this.onStreamEvent, now);
      return Math.min(a, b);
    });
    this.quietBefore = stopped && this.placersStopped();
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
