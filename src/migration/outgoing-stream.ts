// The source's main stream (QEMU's migration thread and its QEMUFile), written
// by a native thread (native-shim/stream_sender.c): every byte goes out
// through it in the order queued here, control records encoded by wire.ts
// and passes over guest RAM that the thread walks itself. This side keeps
// count of the passes queued, hands the thread its rate limit, the postcopy
// window and the destination's acknowledgements, and knows when it is idle.

import type net from 'node:net';
import { PageChannel, SenderStat, PageServerStat, type ChannelBlocks } from '../native/page-channel.js';
import type { RamCounters } from './ram-stats.js';
import { CarriedFigures } from '../native/carried-figures.js';

/** the sender pushes no events */
const noEvents = (): void => undefined;

export class SourceStream {
  private sender: PageChannel | null = null;
  /** the counters of the senders before this one (a recovery starts one per connection) */
  private readonly carried = new CarriedFigures([SenderStat.Normal, SenderStat.Zero, SenderStat.BytesOut, SenderStat.BytesIn, SenderStat.Sent, SenderStat.Writes]);
  /** since when the sender has been held up at `bytes` out (stalledFor) */
  private readonly stall: { sender: PageChannel | null; bytes: number; since: number } = { sender: null, bytes: -1, since: 0 };
  /** passes queued to this sender; it is idle when SenderStat.Passes reaches this */
  private passes = 0;
  /** resolved when the sender finished every queued pass */
  private waiters: (() => void)[] = [];
  /** bytes out when the postcopy phase began / the vCPUs stopped / the destination ran (-1: not yet) */
  private readonly at = { postcopy: -1, stopped: -1, running: -1 };

  /** Starts the sender on the main connection (Node still reads the return path on it). */
  start(o: { sock: net.Socket; ramBase: number; pageSize: number; pages: number; flags: number; blocks: ChannelBlocks | null }): void {
    if (this.sender !== null) throw new Error('the stream sender runs already');
    this.passes = 0;
    this.sender = PageChannel.startStreamSender(o);
  }

  /** the thread, while it runs (the page server tells it where to go on) */
  get channel(): PageChannel | null { return this.sender; }

  /** queues records (wire.ts) */
  send(bytes: Buffer): void {
    this.live().send(bytes);
  }

  /** queues a pass over guest RAM (wrap: round and round until no page needs sending, postcopy) */
  pass(wrap: boolean): void {
    this.passes++;
    this.live().pass(wrap);
  }

  /** ends the pass in progress after its batch */
  interrupt(): void {
    this.sender?.interrupt();
  }

  /** an input of the thread's (SenderStat.Limit, Acked, Window) */
  set(i: SenderStat, value: number): void {
    this.sender?.setInput(i, value);
  }

  /** whether every queued pass is done (then the waiters of idle() are told) */
  poll(): boolean {
    if (this.figures()[SenderStat.Passes] < this.passes) return false;
    for (const w of this.waiters.splice(0)) w();
    return true;
  }

  /** resolves once the sender has finished every pass queued (or stopped) */
  idle(): Promise<void> {
    return new Promise((resolve) => {
      if (this.sender === null || this.figures()[SenderStat.Passes] >= this.passes) resolve();
      else this.waiters.push(resolve);
    });
  }

  get state(): string { return this.sender?.state ?? 'stopped'; }
  get error(): string { return this.sender?.error ?? ''; }

  /** How long this connection's sender has been held up with not one byte going out: its socket
   *  full (a writev waiting), or its postcopy window of unacknowledged bytes full (ms; 0 when it is
   *  not held up). A rate limit holds it up too, but not with its socket or window full. */
  stalledFor(nowMs: number): number {
    const s = this.sender;
    if (s === null) return 0;
    const out = s.stat(SenderStat.BytesOut);
    const window = s.stat(SenderStat.Window);
    const held = s.stat(SenderStat.Writing) > out || (window > 0 && out - s.stat(SenderStat.Acked) > window);
    if (!held || out !== this.stall.bytes || s !== this.stall.sender) {
      this.stall.bytes = out;
      this.stall.sender = s;
      this.stall.since = nowMs;
      return 0;
    }
    return nowMs - this.stall.since;
  }

  /** the senders' counters (this connection's and those before), the live one's other figures */
  figures(): Float64Array {
    return this.carried.with(this.sender?.figures(noEvents) ?? null);
  }

  get bytesOut(): number { return this.figures()[SenderStat.BytesOut]; }
  /** this connection's bytes out, and those of the write in progress (the peer may have read them already): no RP_ACK goes beyond */
  get bytesWritten(): number {
    const s = this.sender;
    return s === null ? 0 : Math.max(s.stat(SenderStat.BytesOut), s.stat(SenderStat.Writing));
  }

  /** the moment `what` happened, for split() */
  mark(what: 'postcopy' | 'stopped' | 'running'): void {
    this.at[what] = this.bytesOut;
  }

  /** the stream's bytes: all, since postcopy began, while the guest ran nowhere (downtime) */
  split(): { main: number; postcopy: number; downtime: number } {
    const main = this.bytesOut;
    const { postcopy, stopped, running } = this.at;
    return {
      main,
      postcopy: postcopy >= 0 ? main - postcopy : 0,
      downtime: stopped >= 0 ? (running >= 0 ? running : main) - stopped : 0,
    };
  }

  /** query-migrate's byte and page counters of this stream and the page server (its figures) */
  counters(server: Float64Array): Pick<RamCounters, 'transferred' | 'normal' | 'duplicate' | 'requests' | 'postcopyBytes' | 'precopyBytes' | 'downtimeBytes'> {
    const s = this.figures();
    const urgent = server[PageServerStat.BytesOut];
    const b = this.split();
    return {
      transferred: b.main + urgent,
      normal: s[SenderStat.Normal] + server[PageServerStat.Normal],
      duplicate: s[SenderStat.Zero] + server[PageServerStat.Zero],
      requests: server[PageServerStat.Requests],
      postcopyBytes: b.postcopy + urgent,
      precopyBytes: b.main - b.postcopy,
      downtimeBytes: b.downtime,
    };
  }

  /** Stops the sender (joined at once: the batch in progress goes out whole,
   *  then `last`); whether `last` went out. */
  stop(last: Buffer): boolean {
    const s = this.sender;
    for (const w of this.waiters.splice(0)) w();
    if (s === null) return false;
    const sent = s.stopWith(last);
    this.release(s);
    return sent;
  }

  /** Stops the sender at once, records whole or not (postcopy paused: the link is lost). */
  abort(): void {
    const s = this.sender;
    for (const w of this.waiters.splice(0)) w();
    if (s === null) return;
    s.abort();
    this.release(s);
  }

  private release(s: PageChannel): void {
    this.carried.fold(s.figures(noEvents));
    s.dispose();
    this.sender = null;
  }

  private live(): PageChannel {
    if (this.sender === null) throw new Error('the stream sender is not running');
    return this.sender;
  }
}
