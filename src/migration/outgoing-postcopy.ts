// The source's postcopy side (QEMU's postcopy-ram.c, outgoing, with the
// preempt channel): the urgent connection, opened with the migration and
// handed at the switchover to the native page server
// (native-shim/page_server.c), which answers the destination's page requests
// straight from guest RAM. It takes the pages it sends off the page flags
// itself, and tells the native sender where to go on (just after them: their
// neighbours are the likeliest next faults); nothing of it goes through this
// event loop but its figures and its state.

import type { RamBlockSpec } from '../vm/ram-blocks.js';
import net from 'node:net';
import { PageChannel, PageServerStat, type ChannelBlocks, type ChannelEventSink } from '../native/page-channel.js';
import { encodeHeader, printable, RECORD_HEADER_BYTES, RP_ERROR, MAX_TEXT_BYTES } from './wire.js';
import type { MigrationAddress } from './uri.js';
import { CarriedFigures } from '../native/carried-figures.js';
import { authenticateConnector } from './channel-auth.js';

const CONNECT_TIMEOUT_MS = 10000;
/** how often the page server's ring is drained and its state looked at */
const DRAIN_EVERY_MS = 2;

export interface UrgentHeader {
  pageSize: number;
  vcpus: number;
  ramBytes: number;
  workload: string;
  /** guest RAM's blocks (the HEADER lists them) */
  blocks: readonly RamBlockSpec[];
  /** the migration's token, as in the main stream's HEADER */
  token: Buffer;
}

/** the page server's events carry nothing the push needs any more (the thread updates the flags) */
const ignore: ChannelEventSink = () => undefined;

export class SourcePostcopy {
  private socket: net.Socket | null = null;
  /** resolves once the urgent channel's HEADER is written (rejects if it failed) */
  private ready: Promise<void> | null = null;
  private server: PageChannel | null = null;
  /** the counters of the page servers before this one (a recovery starts one per connection) */
  private readonly carried = new CarriedFigures([0, 1, 2, 3, 4, 5, 6, 7]);
  /** why the urgent channel closed: the destination's words when it refused the channel */
  private closed = 'the destination closed the urgent channel';
  /** the destination refused the channel (RP_ERROR): a failure, not a lost link */
  private refused = false;

  constructor(private readonly o: {
    /** the urgent channel went wrong (the main connection may say why first) */
    failLater(why: string, linkLost?: boolean): void;
    fail(why: string): void;
    /** x-postcopy-heartbeat-ms */
    heartbeatMs(): number;
    done(): boolean;
    /** pages still to send */
    needed(): number;
  }) {}

  /** The urgent channel: this side writes its HEADER, then the page server
   *  takes it over at the postcopy switchover (nothing comes back on it
   *  before: the destination's fault thread starts after the switchover). */
  connect(addr: MigrationAddress, h: UrgentHeader, psk: Buffer | null = null): void {
    const u = addr.transport === 'tcp' ? net.connect({ host: addr.host, port: addr.port }) : net.connect({ path: addr.path });
    this.socket = u;
    this.closed = 'the destination closed the urgent channel';
    this.refused = false;
    const mine = (): boolean => this.socket === u; // a recovery's new channel replaces this one
    const timer = setTimeout(() => u.destroy(new Error(`connecting timed out after ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
    timer.unref();
    this.ready = new Promise<void>((resolve, reject) => {
      u.once('connect', () => {
        clearTimeout(timer);
        u.setNoDelay(true);
        authenticateConnector(u, psk).then(() => u.write(encodeHeader({ ...h, urgent: true }), (e) => { if (e) reject(new Error(`urgent channel: ${e.message}`)); else resolve(); }),
          (e: Error) => { reject(e); this.o.fail(`urgent channel: ${e.message}`); });
      });
      u.once('close', () => reject(new Error(this.closed)));
    });
    this.ready.catch(() => undefined); // failures are reported by the listeners below
    u.on('data', (b: Buffer) => { // nothing comes back on this channel before the page server takes it but a refusal
      const n = b.length >= RECORD_HEADER_BYTES && b[0] === RP_ERROR ? Math.min(b.readUInt32LE(4), MAX_TEXT_BYTES) : -1;
      if (n < 0) return;
      this.closed = `urgent channel: the destination says: ${printable(b.toString('utf8', RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + n))}`;
      this.refused = true;
    });
    u.on('error', (e) => { if (mine()) this.o.failLater(`urgent channel error: ${e.message}`); });
    u.on('close', () => {
      if (!mine() || this.o.done()) return;
      this.o.failLater(this.closed, !this.refused); // a refusal fails, even in postcopy; a close loses the link
    });
    u.setKeepAlive(true, Math.max(1000, this.o.heartbeatMs()));
  }

  /** Starts the page server once the urgent channel is up (before the
   *  destination's vCPUs can run). `flags`: the page flags' address. */
  async start(o: { ramBase: number; pageSize: number; pages: number; flags: number; sender: PageChannel; blocks: ChannelBlocks | null }): Promise<void> {
    await this.ready;
    const u = this.socket;
    if (u === null || u.destroyed) throw new Error(this.closed);
    const server = PageChannel.startPageServer({ sock: u, ...o, heartbeatMs: this.o.heartbeatMs() });
    this.server = server;
    server.tickEvery(DRAIN_EVERY_MS, () => {
      server.drain(ignore);
      const st = server.state;
      if (st === 'running') return;
      server.stopTicking(); // said once
      // every page sent: the destination closes the urgent channel as it
      // completes, and says so on the main connection only once it has
      // released guest RAM; that connection decides (RP_COMPLETE, RP_ERROR,
      // or closing early)
      if (st === 'failed') this.o.fail(server.error);
      // the main connection may bring the reason first (RP_ERROR: the destination failed), else the link is lost
      else if (!this.o.done() && this.o.needed() > 0) this.o.failLater(server.error || 'the destination closed the urgent channel');
    });
  }

  /** Postcopy paused: the page server stops (joined at once), the channel is dropped; connect() and start() again to recover. */
  pause(): void {
    this.stopServer();
    this.socket?.destroy();
    this.socket = null;
    this.ready = null;
  }

  private stopServer(): void {
    if (this.server === null) return;
    this.carried.fold(this.server.close(ignore));
    this.server = null;
  }

  /** the page servers' counters (this connection's and those before) */
  figures(): Float64Array {
    return this.carried.with(this.server?.figures(ignore) ?? null);
  }

  /** Stops the page server (joined at once) and closes the urgent channel (`abrupt`: destroyed, not ended). */
  close(abrupt: boolean): void {
    this.stopServer();
    const u = this.socket;
    if (u) { if (abrupt) u.destroy(); else u.end(); }
  }

  destroy(): void {
    this.socket?.destroy();
  }

  /** requested pages already sent in the background when asked for (sent again, urgently) */
  get inflightHits(): number { return this.figures()[PageServerStat.Inflight]; }
}
