// The koffi binding of the native page path (native-shim/channel.h): the
// destination's fault thread and the source's page server. A thread is
// started on a socket this module takes over from Node (a dup of its fd; the
// Node socket is destroyed, so no event loop reads or writes it any more),
// reports through a status block and an event ring in koffi.alloc'ed memory,
// and is stopped (joined) synchronously: it never blocks outside poll(2).
//
// Draining the ring reads four doubles per event straight from native
// memory; nothing is allocated or decoded per event.
import type net from 'node:net';
import * as libc from './libc.js';
import { monotonicBaseNs } from '../blocktime/clock.js';
import { NativeBlock } from './memory.js';
import { loadShim } from './shim.js';
import { handOverSocket, dupSocket } from './socket-handover.js';
import type { AccessStamps } from './vcpu.js';

// struct pc_channel_status
const ST_TAIL = 0; // u32 index
const ST_HEAD = 1;
const ST_STATE = 2;
const ST_STATS_BYTES = 16;
const ST_STATS = 16;
const ST_ERROR_BYTES = 144;
const ST_ERROR_LEN = 256;
const ST_WATERMARK = 400 / 8; // double index
const ST_IDLE = 408 / 4;      // i32 index
const ST_HANDBACK = 412 / 4;  // i32 index
const STATUS_BYTES = 416; // checked against the library by loadShim()

export const enum ChannelEvent { Fault = 1, Placed = 2, Served = 3 }
/** A Fault entry's kind is Fault | cause << FAULT_CAUSE_SHIFT: how the fault
 *  thread served it (channel.h enum pc_fault_cause = FaultCause) */
export const FAULT_CAUSE_SHIFT = 4;
/** the ChannelEvent of an entry's kind */
export const CHANNEL_EVENT_MASK = (1 << FAULT_CAUSE_SHIFT) - 1;
/** stats[] of the destination's fault thread */
export const enum FaultThreadStat { Faults = 0, Requests, Placed, ZeroPlaced, LocalZero, Existed, BytesIn, BytesOut, Readahead, Rerequests, Links }
/** stats[] of the source's page server */
export const enum PageServerStat { Requests = 0, Normal, Zero, BytesOut, BytesIn, Readahead, Cleared, Inflight }
/** stats[] of the source's main-stream sender (native-shim/stream_sender.c): its counters, then inputs (Limit, Acked, Window, Hint),
 *  then Writing: the stream's bytes up to the end of the writev in progress (no RP_ACK may go beyond) */
export const enum SenderStat { Normal = 0, Zero, BytesOut, BytesIn, Sent, Passes, Writes, Cursor, LastSent, Limit, Acked, Window, Hint, Writing }
/** stats[] of the destination's main-stream receiver (native-shim/stream_receiver.c) */
export const enum ReceiverStat { Normal = 0, Zero, Received, PlaceCalls, BytesIn, BytesOut, CtlLen, CtlAt, Existed, Truncated }
/** the receiver's mode bits, given on each resume */
export const enum ReceiverMode { Pages = 1, Postcopy = 2 }
/** bytes of the receiver's control buffer (a whole control record fits: wire.ts MAX_VAR_PAYLOAD + header, and DISCARDs) */
export const RECEIVER_CONTROL_BYTES = 512 * 1024;

/** closed: the link is lost (EOF, a socket error, heartbeat silence); failed: anything else (protocol, kernel);
 *  paused: the fault thread lost its link and reads faults until attach() */
export type ChannelState = 'running' | 'stopped' | 'closed' | 'failed' | 'paused';
const STATES: readonly ChannelState[] = ['running', 'stopped', 'closed', 'failed', 'paused'];

/** receives drained events: kind, first page, fault thread id or page count, time (monotonicNs clock) */
export type ChannelEventSink = (kind: number, page: number, arg: number, tNs: number) => void;

/** ring entries (a power of two): ~160 ms of the fastest fault rate seen here (~100 k/s); drained every 2 ms.
 *  A full ring makes the thread wait, never drop an event. */
const RING_ENTRIES = 1 << 14;


/** the RAM block table a thread takes (src/native/ram-block-table.ts), copied at its start; none = one block */
export interface ChannelBlocks {
  readonly address: number;
  readonly count: number;
}

/** One native page-path thread: its status block, its ring, its handle. */
export class PageChannel {
  readonly #status = new NativeBlock(STATUS_BYTES);
  readonly #ring = new NativeBlock(RING_ENTRIES * 32);
  readonly #u32 = new Uint32Array(this.#status.buffer, 0, 2);
  readonly #i32 = new Int32Array(this.#status.buffer, 0, STATUS_BYTES / 4);
  readonly #f64 = new Float64Array(this.#status.buffer, 0, STATUS_BYTES / 8);
  readonly #stats = new Float64Array(this.#status.buffer, ST_STATS_BYTES, ST_STATS);
  readonly #events = new Float64Array(this.#ring.buffer);
  #handle = 0n;
  /** CLOCK_MONOTONIC ns minus this = the blocktime clock (monotonicNs), as the thread computes its times */
  readonly clockBase = monotonicBaseNs();
  #stopped = false;
  #ticker: NodeJS.Timeout | null = null;

  private constructor() {}

  /** The destination's fault thread (see native-shim/fault_thread.c); takes `sock` over. */
  static startFaultThread(o: {
    uffd: number; sock: net.Socket; ramBase: number; pageSize: number; pages: number;
    /** address of the page flags (bit 0 = received) */
    flags: number; blocktime: boolean;
    /** address of a zeroed page that zero pages are copied from (hugetlbfs has no UFFDIO_ZEROPAGE), 0 = UFFDIO_ZEROPAGE */
    zeroSrc?: number;
    /** pages after a faulted one asked for with it, when neither here nor asked for (at most 255) */
    readahead: number;
    /** the vCPUs' access stamps: a fault is dated by the stamp of the access that raised it */
    stamps?: AccessStamps | null;
    /** silence on the urgent channel that loses the link (ms, 0: none) */
    heartbeatMs?: number;
    blocks?: ChannelBlocks | null;
  }): PageChannel {
    const fd = handOverSocket(o.sock); // before the native memory: a refused hand-over leaks nothing
    const ch = new PageChannel();
    const s = o.stamps ?? null;
    ch.#start(loadShim().faultThreadStart(o.uffd, fd, o.ramBase, o.pageSize, o.pages, o.flags, o.readahead, ch.#status.ptr, ch.#ring.ptr,
      RING_ENTRIES, o.blocktime ? 1 : 0, ch.clockBase, s?.blocks ?? null, s?.count ?? 0, o.zeroSrc ?? 0, o.heartbeatMs ?? 0,
      o.blocks?.address ?? 0, o.blocks?.count ?? 0), 'fault thread');
    return ch;
  }

  /** fault thread, postcopy recovery: takes `sock` (a new urgent channel) over as its link and asks again for
   *  every page still outstanding; state 'running' again */
  attach(sock: net.Socket, heartbeatMs: number): void {
    if (this.#handle === 0n) throw new Error('the fault thread is stopped');
    const fd = handOverSocket(sock);
    if (loadShim().faultThreadAttach(this.#handle, fd, heartbeatMs) !== 0) { libc.close(fd); throw new Error('the fault thread refused the new link'); }
  }

  /** fault thread: drop the link (state 'paused'; faults are still read) */
  detach(): void {
    if (this.#handle !== 0n) loadShim().faultThreadDetach(this.#handle);
  }

  /** The source's page server (see native-shim/page_server.c); takes `sock` over. With `sender`, the
   *  pages it sends are taken off the page flags (at `flags`) and the sender goes on just after them. */
  static startPageServer(o: {
    sock: net.Socket; ramBase: number; pageSize: number; pages: number; flags?: number; sender?: PageChannel;
    /** silence on the urgent channel that loses the link (ms, 0: none), once the destination spoke */
    heartbeatMs?: number;
    blocks?: ChannelBlocks | null;
  }): PageChannel {
    const fd = handOverSocket(o.sock); // before the native memory: a refused hand-over leaks nothing
    const ch = new PageChannel();
    const hint = o.sender ? o.sender.#status.ptr + BigInt(ST_STATS_BYTES + 8 * SenderStat.Hint) : null;
    ch.#start(loadShim().pageServerStart(fd, o.ramBase, o.pageSize, o.pages, o.flags ?? 0, hint, ch.#status.ptr, ch.#ring.ptr,
      RING_ENTRIES, ch.clockBase, o.heartbeatMs ?? 0, o.blocks?.address ?? 0, o.blocks?.count ?? 0), 'page server');
    return ch;
  }

  /**
   * The source's main-stream sender (native-shim/stream_sender.c) on `sock`:
   * every byte of the main stream goes out through it, in the order queued
   * (send(), pass()); Node still reads the return path on the socket.
   * `flags` = the page flags' address (NEED 1, HAS 2).
   */
  static startStreamSender(o: { sock: net.Socket; ramBase: number; pageSize: number; pages: number; flags: number; blocks?: ChannelBlocks | null }): PageChannel {
    const fd = dupSocket(o.sock);
    const ch = new PageChannel();
    ch.#start(loadShim().streamSenderStart(fd, o.ramBase, o.pageSize, o.pages, o.flags, ch.#status.ptr, ch.#ring.ptr, RING_ENTRIES,
      ch.clockBase, o.blocks?.address ?? 0, o.blocks?.count ?? 0), 'stream sender');
    return ch;
  }

  /** sender: queues `bytes` (records encoded by wire.ts), copied now */
  send(bytes: Buffer): void {
    if (this.#handle === 0n) throw new Error('the stream sender is stopped');
    if (loadShim().streamSenderBytes(this.#handle, bytes, bytes.length) !== 0) throw new Error('the stream sender is out of memory');
  }

  /** sender: queues a pass over guest RAM (wrap: round and round until no page needs sending); SenderStat.Passes counts those done */
  pass(wrap: boolean): void {
    if (this.#handle === 0n) throw new Error('the stream sender is stopped');
    if (loadShim().streamSenderPass(this.#handle, wrap ? 1 : 0) !== 0) throw new Error('the stream sender is out of memory');
  }

  /** sender: ends the pass in progress after its batch */
  interrupt(): void {
    if (this.#handle !== 0n) loadShim().streamSenderInterrupt(this.#handle);
  }

  /** sender: an input the thread reads (SenderStat.Limit, Acked, Window) */
  setInput(i: number, value: number): void { this.#stats[i] = value; }

  /** sender: stop() after the batch in progress, and `last` (an ERROR record) written; whether `last` went out */
  stopWith(last: Buffer): boolean {
    if (this.#stopped) return false;
    this.#stopped = true;
    if (this.#handle !== 0n) loadShim().streamSenderStop(this.#handle, last, last.length);
    this.#handle = 0n;
    return this.#stats[SenderStat.LastSent] === 1;
  }

  /** sender: stop at once, records whole or not (the link is lost) */
  abort(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#handle !== 0n) loadShim().streamSenderAbort(this.#handle);
    this.#handle = 0n;
  }

  /**
   * The destination's main-stream receiver (native-shim/stream_receiver.c)
   * on `sock`, a connection Node never reads (accepted with pauseOnConnect):
   * the thread reads it, Node still writes the return path on it. `flags` =
   * the page flags' address, `control` = RECEIVER_CONTROL_BYTES of native
   * memory where the thread hands back the records it does not place.
   */
  static startStreamReceiver(o: {
    sock: net.Socket; ramBase: number; pageSize: number; pages: number; flags: number; control: NativeBlock; blocks?: ChannelBlocks | null;
  }): PageChannel {
    const fd = dupSocket(o.sock);
    const ch = new PageChannel();
    ch.#start(loadShim().streamReceiverStart(fd, o.ramBase, o.pageSize, o.pages, o.flags, o.control.ptr, o.control.bytes,
      ch.#status.ptr, ch.#ring.ptr, RING_ENTRIES, ch.clockBase, o.blocks?.address ?? 0, o.blocks?.count ?? 0), 'stream receiver');
    return ch;
  }

  /** receiver: records wait in its control buffer (stat CtlLen bytes, from stream offset CtlAt) */
  get handedBack(): boolean { return Atomics.load(this.#i32, ST_HANDBACK) === 1; }

  /** receiver: the handed-back records are taken; go on in `mode` (ReceiverMode bits), placing into `uffd` (-1: none),
   *  zero pages copied from `zeroSrc` (a zeroed page, where there is no UFFDIO_ZEROPAGE: hugetlbfs) or 0 (UFFDIO_ZEROPAGE);
   *  with `stamps` (postcopy, blocktime), the faults of vCPUs asleep on the pages it places that the
   *  fault thread did not read yet come on its ring too (native-shim/waiters.c) */
  resume(mode: number, uffd: number, zeroSrc = 0, stamps: AccessStamps | null = null): void {
    if (this.#handle === 0n) return;
    if (loadShim().streamReceiverResume(this.#handle, mode, uffd, zeroSrc, stamps?.blocks ?? null, stamps?.count ?? 0) !== 0) {
      throw new Error('the native receiver could not take the vCPUs (out of memory)');
    }
  }

  #start(handle: number | bigint, what: string): void {
    if (BigInt(handle) === 0n) {
      this.#dispose();
      throw new Error(`the native ${what} could not start (out of memory or threads)`);
    }
    this.#handle = BigInt(handle);
  }

  get state(): ChannelState { return STATES[Atomics.load(this.#i32, ST_STATE)] ?? 'failed'; }
  /** why the thread stopped on its own ('' while running) */
  get error(): string {
    const b = Buffer.from(this.#status.buffer, ST_ERROR_BYTES, ST_ERROR_LEN);
    const end = b.indexOf(0);
    return b.toString('utf8', 0, end < 0 ? ST_ERROR_LEN : end);
  }
  stat(i: number): number { return this.#stats[i]; }
  /** the errno of the thread's failure (0: none, or a protocol error or end) */
  get err(): number { return Atomics.load(this.#i32, 3); }

  /** The events so far to `sink`, then the counters (a live view: read it now). */
  figures(sink: ChannelEventSink): Float64Array {
    this.drain(sink);
    return this.#stats;
  }

  /** Calls `tick` every `ms` (to drain the ring and look at the state)
   *  until stopTicking() or close(). */
  tickEvery(ms: number, tick: () => void): void {
    this.stopTicking();
    this.#ticker = setInterval(tick, ms);
  }

  stopTicking(): void {
    if (this.#ticker) clearInterval(this.#ticker);
    this.#ticker = null;
  }

  /** Stops the ticking and the thread, hands its last events to `sink`,
   *  frees the native memory; returns a copy of the final counters. */
  close(sink: ChannelEventSink): Float64Array {
    this.stopTicking();
    this.stop();
    const last = this.figures(sink).slice();
    this.dispose();
    return last;
  }

  /** Hands every event pushed so far to `sink`, in order; returns how many. */
  drain(sink: ChannelEventSink): number {
    const u32 = this.#u32;
    const tail = Atomics.load(u32, ST_TAIL);
    let head = u32[ST_HEAD];
    const n = (tail - head) >>> 0;
    if (n === 0) return 0;
    const ev = this.#events;
    const mask = RING_ENTRIES - 1;
    for (let i = 0; i < n; i++, head = (head + 1) >>> 0) {
      const o = (head & mask) * 4;
      sink(ev[o], ev[o + 1], ev[o + 2], ev[o + 3]);
    }
    Atomics.store(u32, ST_HEAD, head);
    return n;
  }

  /**
   * drain(), for a reader that merges these events with events of its own in
   * time order: returns the horizon, read before the drain, the time
   * (monotonicNs clock) before which the thread will push no more events of
   * its own dating: `now` when it sat idle in poll, else its watermark
   * (native-shim/channel.h); Infinity once the thread is stopped. (A fault it
   * dates by a vCPU's access stamp is bounded by the stamps, not by this.)
   */
  drainOrdered(sink: ChannelEventSink, now: number): number {
    let horizon = Infinity;
    if (!this.#stopped) {
      const idle = Atomics.load(this.#i32, ST_IDLE) === 1;
      horizon = idle ? now : Math.min(now, this.#f64[ST_WATERMARK]);
    }
    this.drain(sink);
    return horizon;
  }

  /** Stops and joins the thread (closes its socket); the ring and the
   *  figures stay readable until dispose(). Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#handle !== 0n) loadShim().channelStop(this.#handle);
    this.#handle = 0n;
  }

  /** stop(), then frees the native memory */
  dispose(): void {
    this.stop();
    this.#dispose();
  }

  #dispose(): void {
    this.#stopped = true;
    this.#status.free();
    this.#ring.free();
  }
}
