// The destination's main stream (QEMU's ram_load loop), read by a native
// thread (native-shim/stream_receiver.c) that places PAGES and ZERO runs
// itself, with no event loop on the way. Every other record, and any page
// record it cannot prove valid, it hands back here whole, in a control buffer
// of native memory; stream-decoder.ts decodes those (one codec, one definition of each
// record) and calls the migration's handlers, then the thread resumes, in
// postcopy mode once the switchover came. Looked at every few milliseconds.

import type net from 'node:net';
import { WireError } from './wire.js';
import { StreamDecoder } from './stream-decoder.js';
import { NativeBlock } from '../native/memory.js';
import {
  PageChannel, ReceiverStat, ReceiverMode, RECEIVER_CONTROL_BYTES, type ChannelEventSink,
} from '../native/page-channel.js';
import { DRAIN_EVERY_MS } from './incoming-postcopy.js';
import { CarriedFigures } from '../native/carried-figures.js';
import type { DestinationRam } from './incoming-ram.js';
import type { AccessStamps } from '../native/vcpu.js';

export interface IncomingStreamOptions {
  ram: DestinationRam;
  /** the decoder of the connection being read (a recovery's connection has its own) */
  decoder(): StreamDecoder;
  /** the receiver's events (postcopy): PLACED, and with the blocktime the faults it found unread */
  sink: ChannelEventSink;
  /** the vCPUs' access stamps while the blocktime runs (postcopy), else null */
  stamps(): AccessStamps | null;
  /** each tick, before the handed-back records: the threads' events */
  drain(): void;
  postcopy(): boolean;
  over(): boolean;
  fail(reason: string, tellSource: boolean): void;
  /** the source closed the stream, or its link failed, before the end (in postcopy this pauses) */
  lost(reason: string): void;
}

export class IncomingStream {
  private receiver: PageChannel | null = null;
  private readonly control = new NativeBlock(RECEIVER_CONTROL_BYTES);
  /** the counters of the receivers before this one (a recovery starts one per connection) */
  private readonly carried = new CarriedFigures([ReceiverStat.Normal, ReceiverStat.Zero, ReceiverStat.Received, ReceiverStat.PlaceCalls,
    ReceiverStat.BytesIn, ReceiverStat.BytesOut, ReceiverStat.Existed]);

  constructor(private readonly o: IncomingStreamOptions) {}

  /** the thread, while it runs (its ring is drained with the fault thread's) */
  get channel(): PageChannel | null { return this.receiver; }

  /** Starts the receiver on the main connection (accepted paused: Node never reads it). */
  start(sock: net.Socket): void {
    const r = this.o.ram;
    if (this.receiver !== null) throw new Error('the stream receiver runs already');
    try {
      this.receiver = PageChannel.startStreamReceiver({
        sock, ramBase: r.base, pageSize: r.pageSize, pages: r.pages, flags: r.address, control: this.control, blocks: r.blockTable,
      });
    } catch (e) {
      this.o.fail(`migration: ${(e as Error).message}`, true);
      return;
    }
    this.receiver.tickEvery(DRAIN_EVERY_MS, this.poll);
  }

  /** The threads' events, the records handed back, the receiver's failure. */
  private readonly poll = (): void => {
    const rc = this.receiver;
    if (rc === null || this.o.over()) return;
    this.o.drain();
    // after END the receiver stays paused on its hand-back (nothing follows
    // END): taken once (END waiting on the urgent channel's last pages would
    // otherwise be pushed to wire.ts again at the next tick: "unexpected data
    // after the end of the stream")
    if (rc.handedBack && !this.o.decoder().finished) this.takeControl(rc);
    if (this.receiver !== rc) return; // the records paused the migration, or refused the connection
    if (this.o.over()) return;
    const st = rc.state;
    if (st === 'closed') this.closed(rc);
    else if (st === 'failed') this.o.fail(`migration stream: ${rc.error}`, true);
  };

  /** stream-decoder.ts decodes the handed-back records (and the handlers act); then the receiver goes on. */
  private takeControl(rc: PageChannel): void {
    const d = this.o.decoder();
    try {
      d.push(Buffer.from(this.control.buffer, 0, rc.stat(ReceiverStat.CtlLen)), rc.stat(ReceiverStat.CtlAt));
      if (d.midRecord) throw new WireError('the native receiver refused a record wire.ts accepts (a bug)');
    } catch (e) {
      this.o.fail(e instanceof WireError ? `migration stream: ${e.message}` : `migration: ${(e as Error).message}`, true);
      return;
    }
    if (this.o.over() || d.finished || this.receiver !== rc) return;
    const r = this.o.ram;
    const postcopy = this.o.postcopy();
    try {
      rc.resume(ReceiverMode.Pages | (postcopy ? ReceiverMode.Postcopy : 0), r.uffd?.fd ?? -1, r.zeroSrc, postcopy ? this.o.stamps() : null);
    } catch (e) {
      this.o.fail(`migration: ${(e as Error).message}`, true);
    }
  }

  /** The source closed the main stream before its end, or the link failed. */
  private closed(rc: PageChannel): void {
    if (rc.stat(ReceiverStat.Truncated) === 1) {
      this.o.lost(`migration stream: ${rc.error} (the source closed the connection)`);
      return;
    }
    if (rc.err !== 0) { // a socket error, not an end
      this.o.lost(rc.error);
      return;
    }
    try {
      this.o.decoder().finish();
      this.o.lost('the source closed the connection before the migration completed');
    } catch (e) {
      this.o.lost(`migration stream: ${(e as Error).message} (the source closed the connection)`);
    }
  }

  /** this connection's bytes read (0: it sent nothing yet) */
  get bytesIn(): number { return this.receiver?.stat(ReceiverStat.BytesIn) ?? 0; }

  /** the receivers' counters (this connection's and those before), the live one's other figures */
  figures(): Float64Array {
    return this.carried.with(this.receiver?.figures(this.o.sink) ?? null);
  }

  /** Stops the receiver (joined at once) and takes its last events and figures. */
  stop(): void {
    if (this.receiver === null) return;
    this.carried.fold(this.receiver.close(this.o.sink));
    this.receiver = null;
  }

  free(): void {
    this.stop();
    this.control.free();
  }
}
