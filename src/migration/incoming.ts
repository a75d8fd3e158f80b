// The destination side of a migration (QEMU's incoming path): listen, check
// the header against this VM, act on the stream's control records, and at the
// postcopy switchover start the vCPUs with the native fault thread serving
// their faults (incoming-postcopy.ts). The main stream is read by a native
// thread (native-shim/stream_receiver.c) that places PAGES and ZERO runs
// itself, with no event loop on the way, and hands every other record back
// here, whole, for wire.ts to decode; it resumes once they are acted on.
// The connection is accepted paused: Node never reads it, and still writes
// the return path on it.

import net from 'node:net';
import { chmodSync, unlinkSync, lstatSync } from 'node:fs';
import type { EventEmitter } from 'node:events';
import type { MigrationRamStats } from './api.js';
import { ramStatsOf } from './ram-stats.js';
import type { GuestMemory, VcpuControl } from './guest.js';
import type { MigrationStatusMachine } from './status.js';
import type { Parameters } from './parameters.js';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import {
  StreamDecoder, encodeBare, encodeText, WireError, RP_RUNNING, RP_COMPLETE, RP_ERROR,
  type StreamHandler, type StreamHeader,
} from './wire.js';
import { Userfaultfd } from '../uffd/index.js';
import { NativeBlock } from '../native/memory.js';
import {
  PageChannel, FaultThreadStat, ReceiverStat, ReceiverMode, RECEIVER_CONTROL_BYTES,
} from '../native/page-channel.js';
import type { BlocktimeReport } from '../blocktime/index.js';
import { IncomingPostcopy, DRAIN_EVERY_MS } from './incoming-postcopy.js';
import { CommandError } from '../errors.js';

// page flags (native-shim/channel.h; bits 8 and 16 are the blocktime rules')
const RECEIVED = 1;  // the page's content is here (or it is known to be zero)
/** how long the postcopy switchover waits for the urgent channel's HEADER */
const URGENT_WAIT_MS = 5000;
/** how long a closed urgent channel waits for the reason on the main stream */
const URGENT_CLOSE_GRACE_MS = 200;

export interface IncomingOptions {
  ram: GuestMemory;
  vcpus: VcpuControl;
  workload: string;
  status: MigrationStatusMachine;
  params: Parameters;
  /** postcopy-blocktime capability (read when postcopy starts) */
  blocktimeEnabled(): boolean;
  /** start the vCPUs when the guest arrives (false with -S, or after `stop`) */
  autostart(): boolean;
  setRunState(state: 'running' | 'paused'): void;
  /** the Machine's emitter: the blocktime context listens to its 'migration' events */
  events: EventEmitter;
}

export class IncomingMigration implements StreamHandler {
  private readonly ram: GuestMemory;
  private readonly base: number;
  private readonly ps: number;
  private readonly pageCount: number;
  /** page flags, in native memory the native threads read (the receiver writes them in precopy) */
  private readonly flagsBlock: NativeBlock;
  private readonly flags: Uint8Array;
  /** pages marked received here; the receiver counts those it marked in precopy (ReceiverStat.Received) */
  private receivedHere = 0;
  private server: net.Server | null = null;
  private socket: net.Socket | null = null;
  private urgentSocket: net.Socket | null = null;
  /** the main stream's native reader, and where it hands records back */
  private receiver: PageChannel | null = null;
  private readonly control = new NativeBlock(RECEIVER_CONTROL_BYTES);
  private receiverStats: Float64Array = new Float64Array(16);
  /** precopy rounds the source finished (its dirty syncs) */
  private rounds = 0;
  /** bytes received (both channels) when the switchover record came */
  private bytesAtSwitch = 0;
  private readonly urgentDecoder: StreamDecoder;
  /** the urgent channel closed; the failure waits URGENT_CLOSE_GRACE_MS for the main stream's reason */
  private urgentClosing = false;
  /** the urgent channel's HEADER arrived (the fault thread can take the channel) */
  private urgentReady = false;
  /** END arrived while requested pages were still in flight on the urgent channel */
  private endPending = false;
  private unixPath: string | null = null;
  private readonly decoder: StreamDecoder;
  private uffd: Userfaultfd | null = null;
  private readonly pc: IncomingPostcopy;
  private postcopy = false;
  private over = false;
  /** bytes Node read (the urgent channel up to its header) */
  private bytesIn = 0;
  private discarded = 0;
  private startMs = 0;
  private endMs = -1;

  constructor(private readonly o: IncomingOptions) {
    this.ram = o.ram;
    this.base = o.ram.base;
    this.ps = o.ram.pageSize;
    this.pageCount = o.ram.bytes / this.ps;
    this.flagsBlock = new NativeBlock(this.pageCount);
    this.flags = new Uint8Array(this.flagsBlock.buffer, 0, this.pageCount);
    this.decoder = new StreamDecoder(this, Math.max(65536, this.ps));
    this.urgentDecoder = new StreamDecoder(this.urgentHandler, Math.max(65536, this.ps), true);
    this.pc = new IncomingPostcopy({
      vcpus: o.vcpus, params: o.params, events: o.events, base: this.base, pageSize: this.ps, pages: this.pageCount,
      flags: this.flags, flagsAddress: this.flagsBlock.address, receiver: () => this.receiver,
      received: (first, count) => this.received(first, count),
    });
  }

  /** Listens on `addr`; resolves once listening. The status stays 'none'
   *  (capabilities can still be set) until the source connects. */
  listen(addr: MigrationAddress): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const server = net.createServer({ pauseOnConnect: true }, (s) => this.accept(s));
      this.server = server;
      server.once('error', (e: NodeJS.ErrnoException) => {
        this.server = null;
        reject(new CommandError(`Failed to listen on '${formatMigrationUri(addr)}': ${e.code === 'EADDRINUSE' ? 'Address already in use' : e.message}`));
      });
      if (addr.transport === 'tcp') {
        server.listen({ host: addr.host, port: addr.port }, () => resolve());
      } else {
        if (socketFileExists(addr.path)) {
          reject(new CommandError(`Failed to listen on '${formatMigrationUri(addr)}': Address already in use (remove ${addr.path} if no VM uses it)`));
          return;
        }
        const old = process.umask(0o177); // the socket file is born 0600
        try {
          server.listen({ path: addr.path }, () => {
            this.unixPath = addr.path;
            try { chmodSync(addr.path, 0o600); } catch { /* umask did it */ }
            resolve();
          });
        } finally {
          process.umask(old);
        }
      }
    });
  }

  /** the bound address (tcp port when 0 was asked) */
  address(): string | null {
    const a = this.server?.address();
    if (!a) return null;
    return typeof a === 'string' ? `unix:${a}` : `tcp:${a.address}:${a.port}`;
  }

  /** The first connection is the main stream: the native receiver reads it. */
  private accept(s: net.Socket): void {
    if (this.over || (this.socket && this.urgentSocket)) { s.destroy(); return; } // one migration per listen
    if (this.socket) { this.acceptUrgent(s); return; }
    this.socket = s;
    this.startMs = performance.now();
    this.o.status.moveTo('setup');
    s.setNoDelay(true);
    s.on('error', (e) => this.failWith(`migration connection error: ${e.message}`, false));
    try {
      this.receiver = PageChannel.startStreamReceiver({
        sock: s, ramBase: this.base, pageSize: this.ps, pages: this.pageCount, flags: this.flagsBlock.address, control: this.control,
      });
    } catch (e) {
      this.failWith(`migration: ${(e as Error).message}`, true);
      return;
    }
    this.receiver.tickEvery(DRAIN_EVERY_MS, this.pollReceiver);
  }

  /** The receiver's events, the records it handed back, its failure. */
  private readonly pollReceiver = (): void => {
    const rc = this.receiver;
    if (rc === null || this.over) return;
    this.pc.drain();
    if (rc.handedBack) this.takeControl(rc);
    if (this.over) return;
    const st = rc.state;
    if (st === 'closed') this.mainClosed(rc);
    else if (st === 'failed') this.failWith(`migration stream: ${rc.error}`, true);
  };

  /** wire.ts decodes the handed-back records (and acts on them); then the receiver goes on. */
  private takeControl(rc: PageChannel): void {
    const len = rc.stat(ReceiverStat.CtlLen);
    try {
      this.decoder.push(Buffer.from(this.control.buffer, 0, len), rc.stat(ReceiverStat.CtlAt));
      if (this.decoder.midRecord) throw new WireError('the native receiver refused a record wire.ts accepts (a bug)');
    } catch (e) {
      this.failWith(e instanceof WireError ? `migration stream: ${e.message}` : `migration: ${(e as Error).message}`, true);
      return;
    }
    if (this.over || this.decoder.finished) return;
    rc.resume(ReceiverMode.Pages | (this.postcopy ? ReceiverMode.Postcopy : 0), this.uffd?.fd ?? -1);
  }

  /** The source closed the main stream before its end. */
  private mainClosed(rc: PageChannel): void {
    if (rc.stat(ReceiverStat.Truncated) === 1) {
      this.failWith(`migration stream: ${rc.error} (the source closed the connection)`, false);
      return;
    }
    try {
      this.decoder.finish();
      this.failWith('the source closed the connection before the migration completed', false);
    } catch (e) {
      this.failWith(`migration stream: ${(e as Error).message} (the source closed the connection)`, false);
    }
  }

  /** The second connection: page requests and requested pages. Read here
   *  up to its HEADER; the fault thread takes it over at the switchover
   *  (nothing else comes on it before the thread's first request). */
  private acceptUrgent(s: net.Socket): void {
    this.urgentSocket = s;
    s.setNoDelay(true);
    this.server?.close(); // both connections are in
    this.removeSocketFile();
    s.on('data', (chunk: Buffer) => {
      if (this.over) return;
      this.bytesIn += chunk.length;
      try {
        this.urgentDecoder.push(chunk);
      } catch (e) {
        this.failWith(e instanceof WireError ? `urgent channel: ${e.message}` : `migration: ${(e as Error).message}`, true);
      }
    });
    s.on('error', (e) => this.failWith(`urgent channel error: ${e.message}`, false));
    s.on('close', () => this.urgentClosed());
    s.resume();
  }

  private readonly urgentHandler: StreamHandler = {
    header: (h) => {
      this.checkHeader(h);
      this.urgentReady = true;
      this.maybeStartPostcopy();
    },
    pages: () => { throw new WireError('pages arrived before the postcopy switchover'); },
    zero: () => { throw new WireError('pages arrived before the postcopy switchover'); },
    discard: () => { throw new WireError('DISCARD on the urgent channel'); },
    endRound: () => { throw new WireError('END_ROUND on the urgent channel'); },
    switchover: () => { throw new WireError('SWITCHOVER on the urgent channel'); },
    end: () => { throw new WireError('END on the urgent channel'); },
    error: (reason) => { this.error(reason); },
  };

  // ---------------------------------------------------------------- stream records

  header(h: StreamHeader): void {
    this.checkHeader(h);
    this.registerRam(h.postcopy);
    this.o.status.moveTo('active');
  }

  /**
   * Registers guest RAM with userfaultfd (MISSING) as the migration starts,
   * for two reasons:
   *  - postcopy advise (QEMU's): when the source may switch to postcopy, a
   *    destination that cannot do it fails now, while the guest still runs on
   *    the source (`required`);
   *  - speed: a page arriving for the first time is placed with UFFDIO_COPY,
   *    which costs ~2 us here where a first-touch write into fresh memory
   *    costs 4-10 us (a page fault in nested virtualisation); it was the
   *    precopy throughput's bottleneck.
   * Without userfaultfd and without postcopy, pages are written directly.
   */
  private registerRam(required: boolean): void {
    let uffd: Userfaultfd | null = null;
    try {
      uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
      uffd.register(this.base, this.ram.bytes, { missing: true });
    } catch (e) {
      if (uffd && !uffd.closed) uffd.close();
      if (required) throw new WireError(`this destination cannot do postcopy: ${(e as Error).message}`);
      return;
    }
    this.uffd = uffd;
  }

  private checkHeader(h: StreamHeader): void {
    const problems: string[] = [];
    if (h.ramBytes !== this.ram.bytes) problems.push(`RAM size mismatch: the source has ${h.ramBytes} bytes, this VM ${this.ram.bytes} (-m)`);
    if (h.vcpus !== this.o.vcpus.count) problems.push(`vCPU count mismatch: the source has ${h.vcpus}, this VM ${this.o.vcpus.count} (-smp)`);
    if (h.pageSize !== this.ps) problems.push(`page size mismatch: the source uses ${h.pageSize}, this VM ${this.ps}`);
    if (h.workload !== this.o.workload) problems.push(`workload mismatch: the source runs '${h.workload}', this VM was started with '${this.o.workload}' (-workload)`);
    if (problems.length > 0) throw new WireError(problems.join('; '));
  }

  /** page records are the receiver's: one handed back is one it refused, and wire.ts names the problem */
  pages(): void { throw new WireError('the native receiver refused a PAGES record wire.ts accepts (a bug)'); }
  zero(): void { throw new WireError('the native receiver refused a ZERO record wire.ts accepts (a bug)'); }

  discard(offset: number, count: number): void {
    this.ram.discard(offset, count * this.ps);
    this.discarded += count;
    const first = offset / this.ps;
    for (let p = first; p < first + count; p++) {
      if (this.flags[p] & RECEIVED) this.receivedHere--;
      this.flags[p] = 0;
    }
  }

  endRound(round: number): void { this.rounds = round; }

  switchover(postcopy: boolean, states: Buffer, pos: number, _len: number): void {
    this.bytesAtSwitch = this.bytesTotal();
    this.o.vcpus.loadStates(states, pos);
    if (!postcopy) return; // precopy: the vCPUs start at the end of the stream
    // registered since the header advised postcopy
    if (this.uffd === null) throw new WireError('postcopy switchover, but the stream header did not advise postcopy');
    this.postcopy = true; // pages from here on are placed atomically (the receiver resumes in postcopy mode)
    this.maybeStartPostcopy();
    if (!this.urgentReady) {
      setTimeout(() => {
        if (!this.urgentReady) this.failWith(`postcopy switchover, but the urgent channel did not come within ${URGENT_WAIT_MS / 1000} s`, true);
      }, URGENT_WAIT_MS).unref();
    }
  }

  /** Starts the vCPUs with the fault thread once both the switchover and
   *  the urgent channel's HEADER are here (the two connections race). */
  private maybeStartPostcopy(): void {
    if (!this.postcopy || !this.urgentReady || this.pc.started || this.over) return;
    this.pc.start(this.uffd!, this.urgentSocket!, this.o.blocktimeEnabled(), this.drainChannel);
    this.o.status.moveTo('postcopy-active');
    this.startVcpus();
  }

  /** The fault thread's events so far; its failure fails the migration;
   *  completes when END waited for requested pages. */
  private readonly drainChannel = (): void => {
    if (!this.pc.started) return;
    this.pc.drain();
    const st = this.pc.state;
    if (st === 'closed') this.urgentClosed();
    else if (st === 'failed') this.failWith(this.pc.error, true);
    else if (this.endPending) this.maybeComplete();
  };

  /** The source closed the urgent channel: the migration fails, after a
   *  moment in which the main stream may still bring the source's reason (a
   *  cancel closes both connections at once, and the main one's last record
   *  says why). */
  private urgentClosed(): void {
    if (this.over || this.urgentClosing) return;
    this.urgentClosing = true;
    setTimeout(() => {
      if (!this.over) this.failWith('the source closed the urgent channel before the migration completed', false);
    }, URGENT_CLOSE_GRACE_MS).unref();
  }

  private startVcpus(): void {
    if (this.o.autostart()) {
      this.o.vcpus.resume();
      this.o.setRunState('running');
    } else {
      this.o.setRunState('paused');
    }
    if (this.postcopy) this.pc.vcpusStarted();
    this.reply(encodeBare(RP_RUNNING));
  }

  end(): void {
    this.pc.drain();
    const missing = this.pageCount - this.receivedCount();
    if (missing !== 0) {
      if (this.pc.running) { // the rest is on the urgent channel
        this.endPending = true;
        return;
      }
      throw new WireError(`the stream ended with ${missing} of ${this.pageCount} pages never received`);
    }
    this.complete();
  }

  private maybeComplete(): void {
    if (this.receivedCount() === this.pageCount) {
      this.endPending = false;
      this.complete();
    }
  }

  private complete(): void {
    this.server?.close();
    this.server = null;
    this.removeSocketFile();
    this.stopThreads();
    this.pc.end();
    this.over = true;
    this.endMs = performance.now();
    // un-register first: once 'completed' is visible, guest RAM is plain memory
    // again (the threads are stopped already; after precopy the vCPUs start
    // on plain memory)
    const released = this.releaseUffd();
    if (!this.postcopy) this.startVcpus();
    released.then(() => {
      this.o.status.moveTo('completed');
      this.reply(encodeBare(RP_COMPLETE));
      this.socket?.end();
      this.urgentSocket?.end();
    }, (e: unknown) => {
      this.over = false;
      this.failWith(`releasing userfaultfd: ${(e as Error).message}`, true);
    });
  }

  /** Guest RAM can be read by this thread without blocking on a missing page. */
  get ramReadable(): boolean {
    return this.uffd === null;
  }

  error(reason: string): void {
    this.failWith(`the source stopped the migration: ${reason}`, false);
  }

  // ---------------------------------------------------------------- pages

  /** Pages [first, first+count) are in place (placed by a native thread in postcopy): counted once. */
  private received(first: number, count: number): void {
    const flags = this.flags;
    for (let p = first, end = first + count; p < end; p++) {
      const f = flags[p];
      if ((f & RECEIVED) === 0) {
        this.receivedHere++;
        flags[p] = f | RECEIVED;
      }
    }
  }

  private receivedCount(): number {
    return this.receivedHere + this.receiverFigures()[ReceiverStat.Received];
  }

  private receiverFigures(): Float64Array {
    return this.receiver?.figures(this.pc.onEvent) ?? this.receiverStats;
  }

  private bytesTotal(): number {
    return this.bytesIn + this.receiverFigures()[ReceiverStat.BytesIn] + this.pc.stat(FaultThreadStat.BytesIn);
  }

  /** Stops the receiver, then the fault thread (both joined at once), and takes their last events and figures. */
  private stopThreads(): void {
    if (this.receiver !== null) {
      this.receiverStats = this.receiver.close(this.pc.onEvent);
      this.receiver = null;
    }
    this.pc.stop();
  }

  // ---------------------------------------------------------------- ending

  private reply(buf: Buffer): void {
    const s = this.socket;
    if (s && !s.destroyed && s.writable) s.write(buf);
  }

  private failWith(reason: string, tellSource: boolean): void {
    if (this.over) return;
    this.endPending = false;
    this.stopThreads(); // no more placements or requests; the blocktime keeps what was placed
    this.pc.end();
    this.over = true;
    this.urgentSocket?.destroy();
    this.endMs = performance.now();
    const s = this.socket;
    if (s && !s.destroyed) {
      if (tellSource && s.writable) s.end(encodeText(RP_ERROR, reason));
      else s.destroy();
      setTimeout(() => s.destroy(), 2000).unref();
    }
    this.o.status.fail(reason);
    // before postcopy nothing can fill the pages still missing: plain memory
    // again (a read of guest RAM must not block forever)
    if (!this.postcopy) {
      void this.releaseUffd();
    } else {
      // vCPUs that touch a page that never came stay blocked in their fault
      // (the uffd stays registered); the others are paused. Nothing runs on
      // stale memory. quit() releases them.
      void this.o.vcpus.pause().catch(() => undefined);
      this.o.setRunState('paused');
    }
  }

  /** After completion (or a failure before postcopy): stop the threads
   *  (joined at once), un-register guest RAM; untouched zero pages fault
   *  normally from now on. All done when this returns. */
  private async releaseUffd(): Promise<void> {
    this.stopThreads();
    const u = this.uffd;
    if (u && !u.closed) {
      try { u.unregister(this.base, this.ram.bytes); } catch { /* RAM gone */ }
      u.close();
    }
    this.uffd = null;
  }

  /** migrate_cancel on the destination: the incoming migration fails. */
  cancel(): void {
    if (!this.over) this.failWith('migration cancelled on the destination', true);
  }

  /** Quit: stop listening, drop the connection, release everything. */
  async close(): Promise<void> {
    if (!this.over) this.failWith('the destination VM is quitting', true);
    this.server?.close();
    this.server = null;
    this.removeSocketFile();
    this.socket?.destroy();
    this.urgentSocket?.destroy();
    await this.releaseUffd();
    this.flagsBlock.free();
    this.control.free();
  }

  private removeSocketFile(): void {
    if (this.unixPath) {
      try { unlinkSync(this.unixPath); } catch { /* gone */ }
      this.unixPath = null;
    }
  }

  // ---------------------------------------------------------------- queries

  get listening(): boolean { return this.server !== null && this.socket === null; }

  blocktimeReport(): BlocktimeReport | undefined {
    return this.pc.report();
  }

  ramStats(): MigrationRamStats {
    const f = this.pc.figures();
    const r = this.receiverFigures();
    const bytesIn = this.bytesTotal();
    const end = this.endMs >= 0 ? this.endMs : performance.now();
    return ramStatsOf({
      transferred: bytesIn,
      remaining: (this.pageCount - this.receivedCount()) * this.ps,
      total: this.ram.bytes,
      normal: r[ReceiverStat.Normal] + f[FaultThreadStat.Placed],
      duplicate: r[ReceiverStat.Zero] + f[FaultThreadStat.ZeroPlaced],
      pageSize: this.ps,
      elapsedMs: end - (this.startMs || end),
      syncs: this.rounds,
      requests: f[FaultThreadStat.Requests],
      postcopyBytes: this.postcopy ? bytesIn - this.bytesAtSwitch : 0,
      precopyBytes: this.postcopy ? this.bytesAtSwitch : bytesIn,
      downtimeBytes: 0,
      dirtyPagesRate: 0,
    });
  }

  /** pages dropped on the source's DISCARD (dirtied after they were sent) */
  get discardedPages(): number { return this.discarded; }

  /** UFFDIO_COPY/ZEROPAGE calls of the main stream (a run of pages is one call) */
  get placements(): number { return this.receiverFigures()[ReceiverStat.PlaceCalls]; }
}

function socketFileExists(path: string): boolean {
  try {
    return lstatSync(path) !== undefined;
  } catch {
    return false;
  }
}
