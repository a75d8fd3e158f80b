// The destination side of a migration (QEMU's incoming path): listen, check
// the header against this VM, act on the stream's control records, and at the
// postcopy switchover start the vCPUs with the native fault thread serving
// their faults (incoming-postcopy.ts). The main stream is read by a native
// thread (native-shim/stream_receiver.c) that places PAGES and ZERO runs
// itself, with no event loop on the way, and hands every other record back
// here, whole, for stream-decoder.ts to decode; it resumes once they are acted on.
// The connection is accepted paused: Node never reads it, and still writes
// the return path on it.

import type net from 'node:net';
import type { EventEmitter } from 'node:events';
import type { MigrationRamStats } from './api.js';
import { ramStatsOf } from './ram-stats.js';
import type { GuestMemory, VcpuControl } from './guest.js';
import type { MigrationStatusMachine } from './status.js';
import type { Parameters } from './parameters.js';
import type { MigrationAddress } from './uri.js';
import {
  encodeBare, encodeText, printable, WireError, RP_RUNNING, RP_COMPLETE, RP_ERROR, RP_RESUME_ACK, type StreamHeader,
} from './wire.js';
import { StreamDecoder, type StreamHandler } from './stream-decoder.js';
import { IncomingRecovery } from './incoming-recovery.js';
import { FaultThreadStat, ReceiverStat } from '../native/page-channel.js';
import { ramBlocksMismatch } from './wire-blocks.js';
import type { BlocktimeReport } from '../blocktime/index.js';
import { IncomingPostcopy } from './incoming-postcopy.js';
import { IncomingStream } from './incoming-stream.js';
import { DestinationRam } from './incoming-ram.js';
import { listenForMigration } from './incoming-listen.js';
import { authenticatedConnections } from './channel-auth.js';
import { HANDSHAKE_TIMEOUT_MS } from './incoming-urgent.js';
import { removeUnixSocket, type BoundUnixSocket } from '../unix-listen.js';

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
  /** the Machine's emitter: the blocktime context listens to its 'migration' events; a connection
   *  refused (not this migration's) is emitted as 'migration-refused' with the reason */
  events: EventEmitter;
}

export class IncomingMigration implements StreamHandler {
  private readonly ram: DestinationRam;
  private readonly ps: number;
  private readonly pageCount: number;
  private server: net.Server | null = null;
  private socket: net.Socket | null = null;
  private urgentSocket: net.Socket | null = null;
  /** the main stream, read by the native receiver */
  private readonly stream: IncomingStream;
  /** precopy rounds the source finished (its dirty syncs) */
  private rounds = 0;
  /** bytes received (both channels) when the switchover record came */
  private bytesAtSwitch = 0;
  /** END arrived while requested pages were still in flight on the urgent channel */
  private endPending = false;
  /** the unix socket this destination bound (its public path, renamed from a temporary name), or null */
  private unixSocket: BoundUnixSocket | null = null;
  /** the decoder of the main connection being read (a recovery's connection gets a new one) */
  private decoder: StreamDecoder;
  private readonly pc: IncomingPostcopy;
  /** postcopy-paused and recovery (migrate_recover) */
  private readonly recovery: IncomingRecovery;
  private postcopy = false;
  private over = false;
  private discarded = 0;
  private startMs = 0;
  private endMs = -1;
  /** the main connection must send its HEADER before this fires */
  private handshake: NodeJS.Timeout | null = null;

  constructor(private readonly o: IncomingOptions) {
    this.ram = new DestinationRam(o.ram);
    this.ps = o.ram.pageSize;
    this.pageCount = this.ram.pages;
    this.decoder = this.newDecoder();
    this.recovery = new IncomingRecovery(this.ps);
    this.pc = new IncomingPostcopy({
      vcpus: o.vcpus, params: o.params, events: o.events, base: this.ram.base, pageSize: this.ps, pages: this.pageCount, blockTable: this.ram.blockTable,
      flags: this.ram.flags, flagsAddress: this.ram.address, receiver: () => this.stream.channel,
      received: (first, count) => this.ram.received(first, count),
      checkHeader: (h) => this.checkHeader(h), urgentReady: (s) => this.urgentAdmitted(s),
      mainToken: () => this.decoder.streamHeader?.token ?? null,
      refused: (why) => o.events.emit('migration-refused', why),
      fail: (why, tell) => this.failWith(why, tell), lost: (why) => this.lost(why), over: () => this.over, sourceError: (why) => this.error(why),
    });
    this.stream = new IncomingStream({
      ram: this.ram, decoder: () => this.decoder, sink: this.pc.onStreamEvent, drain: () => this.pc.drain(), stamps: () => this.pc.stamps,
      postcopy: () => this.postcopy, over: () => this.over, fail: (why, tell) => this.streamFailed(why, tell), lost: (why) => this.lost(why),
    });
  }

  private newDecoder(): StreamDecoder {
    return new StreamDecoder(this, Math.max(65536, this.ps));
  }

  /** Listens on `addr`; resolves once listening. The status stays 'none'
   *  (capabilities can still be set) until the source connects. */
  async listen(addr: MigrationAddress): Promise<void> {
    const l = await listenForMigration(addr, this.admission());
    this.server = l.server;
    this.unixSocket = l.unix;
  }

  /** each connection to a listener: it proves x-migration-psk's key first, if one is set (channel-auth.ts) */
  private admission(): (s: net.Socket) => void {
    return authenticatedConnections(() => this.o.params.value('x-migration-psk'), (s) => this.accept(s), (s, why) => this.pc.refuse(s, why));
  }

  /** the bound address (tcp port when 0 was asked) */
  address(): string | null {
    const a = this.server?.address();
    if (!a) return null;
    // a unix socket was bound under a temporary name, then renamed
    if (this.unixSocket) return `unix:${this.unixSocket.path}`;
    return typeof a === 'string' ? `unix:${a}` : `tcp:${a.address}:${a.port}`;
  }

  /** The first connection is the main stream: the native receiver reads
   *  it, and it must bring its HEADER within HANDSHAKE_TIMEOUT_MS. Every
   *  later one is a candidate for the urgent channel until its HEADER
   *  carries the main stream's token (incoming-urgent.ts). */
  private accept(s: net.Socket): void {
    if (this.over) { s.destroy(); return; } // one migration per listen
    if (this.socket) { this.pc.offerUrgent(s); return; }
    if (!this.recovery.listening) { // a recovery's connection continues the paused migration
      this.startMs = performance.now();
      this.o.status.moveTo('setup');
    }
    this.startMain(s);
  }

  private startMain(s: net.Socket): void {
    this.socket = s;
    s.setNoDelay(true);
    s.setKeepAlive(true, Math.max(1000, this.o.params.value('x-postcopy-heartbeat-ms')));
    s.on('error', (e) => { if (this.socket === s) this.lost(`migration connection error: ${e.message}`); });
    this.handshake = setTimeout(() => this.handshakeTimedOut(s), HANDSHAKE_TIMEOUT_MS);
    this.handshake.unref();
    this.stream.start(s);
  }

  /** No HEADER on the main connection in time: a connection that sent
   *  nothing gives way to the oldest one that came after it, not read yet
   *  (a stranger that connected first does not hold the source off); else
   *  the migration fails. */
  private handshakeTimedOut(s: net.Socket): void {
    this.handshake = null;
    if (this.over || this.decoder.streamHeader !== null || this.socket !== s) return;
    const silent = this.stream.bytesIn === 0;
    const next = silent ? this.pc.takeUnread() : null;
    if (next === null && this.recovery.listening) {
      this.refuseRecoveryMain(`it sent no header within ${HANDSHAKE_TIMEOUT_MS / 1000} s`);
      return;
    }
    if (next === null) {
      this.failWith(`the migration connection sent no header within ${HANDSHAKE_TIMEOUT_MS / 1000} s (not a migration source?): dropped`, true);
      return;
    }
    this.stream.stop();
    s.removeAllListeners('error');
    this.pc.refuse(s, `it sent nothing within ${HANDSHAKE_TIMEOUT_MS / 1000} s (the next connection is taken as the main stream)`);
    this.startMain(next);
  }

  /** The urgent channel proved itself: no more connections are taken. */
  private urgentAdmitted(s: net.Socket): void {
    this.urgentSocket = s;
    this.server?.close();
    this.server = null;
    this.removeSocketFile();
    if (this.recovery.listening) this.maybeRecovered(); // the fault thread takes it after RESUME
    else this.maybeStartPostcopy();
  }

  private endHandshake(): void {
    if (this.handshake) clearTimeout(this.handshake);
    this.handshake = null;
  }

  // ---------------------------------------------------------------- stream records

  header(h: StreamHeader): void {
    this.endHandshake();
    if (this.recovery.listening) {
      this.recovery.check(h); // a refusal leaves the migration paused, waiting for the right source
      this.checkHeader(h);
      this.recovery.accept((why) => this.lost(why)); // paused again if the handshake does not end in time
      this.o.status.moveTo('postcopy-recover');
      this.pc.drain(); // every placement so far is in the flags
      this.reply(this.recovery.bitmap(this.ram.flags, this.pageCount));
      this.pc.mainHeaderArrived();
      return;
    }
    if (h.resume) throw new WireError('a postcopy recovery\'s stream, but no migration is paused here (migrate_recover)');
    this.recovery.token = h.token;
    this.checkHeader(h);
    this.ram.register(h.postcopy);
    this.o.status.moveTo('active');
    this.pc.mainHeaderArrived(); // an urgent channel that came first is judged by its token now
  }

  private checkHeader(h: StreamHeader): void {
    const problems: string[] = [];
    if (h.ramBytes !== this.o.ram.bytes) problems.push(`RAM size mismatch: the source has ${h.ramBytes} bytes, this VM ${this.o.ram.bytes} (-m)`);
    if (h.vcpus !== this.o.vcpus.count) problems.push(`vCPU count mismatch: the source has ${h.vcpus}, this VM ${this.o.vcpus.count} (-smp)`);
    if (h.pageSize !== this.ps) problems.push(`page size mismatch: the source uses ${h.pageSize}, this VM ${this.ps}`);
    // several blocks: QEMU's block checks, naming the block. One block on each side is guest RAM whatever its
    // name (-mem-path's pc.ram takes -machine memory-backend=ID's, as before several blocks were known)
    const blocks = h.blocks.count > 1 || this.o.ram.blocks.count > 1 ? ramBlocksMismatch(h.blocks, this.o.ram.blocks) : null;
    if (blocks !== null) problems.unshift(blocks);
    if (h.workload !== this.o.workload) problems.push(`workload mismatch: the source runs '${printable(h.workload)}', this VM was started with '${this.o.workload}' (-workload)`);
    if (problems.length > 0) throw new WireError(problems.join('; '));
  }

  /** page records are the receiver's: one handed back is one it refused, and wire.ts names the problem */
  pages(): void { throw new WireError('the native receiver refused a PAGES record wire.ts accepts (a bug)'); }
  zero(): void { throw new WireError('the native receiver refused a ZERO record wire.ts accepts (a bug)'); }

  discard(offset: number, count: number): void {
    this.ram.discard(offset, count);
    this.discarded += count;
  }

  endRound(round: number): void { this.rounds = round; }

  /** RESUME: the source took the bitmap; postcopy-active again once the urgent channel is in too */
  resume(): void {
    this.reply(encodeBare(RP_RESUME_ACK));
    this.recovery.resumed = true;
    this.maybeRecovered();
  }

  private maybeRecovered(): void {
    if (!this.recovery.resumed || !this.pc.urgentReady || this.over) return;
    // the fault thread takes the new urgent channel and asks again for what is outstanding: only
    // after RESUME, so the source (whose page server is up already) has applied the bitmap first
    this.pc.attach(this.urgentSocket!);
    this.recovery.done();
    this.o.status.moveTo('postcopy-active');
    this.pc.resumed();
  }

  // ---------------------------------------------------------------- pause and recovery

  /** The main stream failed: a recovery's connection not accepted yet is refused (the migration
   *  stays paused); otherwise the migration fails. */
  private streamFailed(reason: string, tellSource: boolean): void {
    if (this.recovery.listening && !this.recovery.accepted) this.refuseRecoveryMain(reason);
    else this.failWith(reason, tellSource);
  }

  /** The link is lost (EOF, a socket error, heartbeat silence): in postcopy the migration pauses,
   *  else it fails. A recovery's connection not accepted yet is only refused. */
  private lost(reason: string): void {
    if (this.over) return;
    if (this.recovery.listening && !this.recovery.accepted) { this.refuseRecoveryMain(reason); return; }
    const st = this.o.status.status;
    if (st === 'postcopy-paused') return;
    if (st === 'postcopy-active' || st === 'postcopy-recover') this.pause(reason, false);
    else this.failWith(reason, false);
  }

  /** migrate_pause on the destination */
  pauseByUser(): void {
    this.pause('Postcopy migration is paused by the user', true);
  }

  /** postcopy-paused: the receiver stops, the fault thread drops its link (it goes on reading faults:
   *  a fault raised now is dated now), both connections close (the source notices on its own). The
   *  vCPUs run on; those that touch a missing page stay blocked until its page comes after recovery. */
  private pause(reason: string, byUser: boolean): void {
    this.endHandshake();
    this.endPending = false;
    this.server?.close();
    this.server = null;
    this.removeSocketFile();
    this.stream.stop();
    this.pc.pause();
    this.socket?.destroy();
    this.socket = null;
    this.urgentSocket?.destroy();
    this.urgentSocket = null;
    this.decoder = this.newDecoder();
    this.recovery.paused();
    this.o.status.pause(reason);
    if (!byUser) this.o.events.emit('migration-paused', reason);
  }

  /** migrate_recover URI: listen for the source's recovery (migrate -r) */
  async recover(addr: MigrationAddress): Promise<void> {
    if (this.o.status.status !== 'postcopy-paused') throw new Error('not paused');
    const l = await listenForMigration(addr, this.admission());
    this.server = l.server;
    this.unixSocket = l.unix;
    this.recovery.listen();
  }

  /** A recovery's main connection that is not the source's (a bad or missing header): refused; the
   *  oldest connection that came after it, not read yet, is the next candidate (the source's main
   *  connection, when a stranger came first); the listener goes on. */
  private refuseRecoveryMain(reason: string): void {
    const s = this.socket;
    this.endHandshake();
    this.stream.stop();
    this.socket = null;
    this.decoder = this.newDecoder();
    if (s) this.pc.refuse(s, reason);
    const next = this.pc.takeUnread();
    if (next) this.startMain(next);
  }

  switchover(postcopy: boolean, states: Buffer, pos: number, _len: number): void {
    this.bytesAtSwitch = this.bytesTotal();
    this.o.vcpus.loadStates(states, pos);
    if (!postcopy) return; // precopy: the vCPUs start at the end of the stream
    // registered since the header advised postcopy
    if (this.ram.uffd === null) throw new WireError('postcopy switchover, but the stream header did not advise postcopy');
    this.postcopy = true; // pages from here on are placed atomically (the receiver resumes in postcopy mode)
    this.maybeStartPostcopy();
    this.pc.expectUrgent();
  }

  /** Starts the vCPUs with the fault thread once both the switchover and
   *  the urgent channel's HEADER are here (the two connections race). */
  private maybeStartPostcopy(): void {
    if (!this.postcopy || !this.pc.urgentReady || this.pc.started || this.over) return;
    this.pc.start(this.ram.uffd!, this.ram.zeroSrc, this.o.blocktimeEnabled(), this.drainChannel);
    this.o.status.moveTo('postcopy-active');
    this.startVcpus();
  }

  /** The fault thread's events so far; its failure fails the migration;
   *  completes when END waited for requested pages. */
  private readonly drainChannel = (): void => {
    if (!this.pc.started) return;
    this.pc.drain();
    const st = this.pc.state;
    const lost = this.pc.linkLost;
    if (st === 'failed') this.failWith(this.pc.error, true);
    else if (lost !== null) this.pc.urgentLost(lost);
    else if (this.endPending) this.maybeComplete();
  };

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
      const lost = this.pc.linkLost;
      if (lost !== null) { // the rest was on the urgent channel, whose link is lost: a recovery brings it
        this.lost(`${lost} (${missing} pages still to come on it at the end of the stream)`);
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
    const postcopyRan = this.pc.started; // before the threads stop
    this.pc.closeGate();
    this.server?.close();
    this.server = null;
    this.removeSocketFile();
    this.stopThreads();
    this.pc.end();
    this.over = true;
    this.endMs = performance.now();
    // un-register first: once 'completed' is visible, guest RAM is plain
    // memory again (after precopy the vCPUs start on plain memory)
    this.release();
    // precopy, or a postcopy whose urgent channel never came (the push brought every page): they start now
    if (!this.postcopy || !postcopyRan) this.startVcpus();
    this.o.status.moveTo('completed');
    this.reply(encodeBare(RP_COMPLETE));
    this.socket?.end();
    this.urgentSocket?.end();
  }

  /** Guest RAM can be read by this thread without blocking on a missing page. */
  get ramReadable(): boolean {
    return this.ram.uffd === null;
  }

  error(reason: string): void {
    this.failWith(`the source stopped the migration: ${reason}`, false);
  }

  private receivedCount(): number {
    return this.ram.receivedCount(this.stream.figures()[ReceiverStat.Received]);
  }

  private bytesTotal(): number {
    return this.pc.urgentBytes + this.stream.figures()[ReceiverStat.BytesIn] + this.pc.stat(FaultThreadStat.BytesIn);
  }

  /** Stops the receiver, then the fault thread (both joined at once), and takes their last events and figures. */
  private stopThreads(): void {
    this.stream.stop();
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
    this.endHandshake();
    this.pc.closeGate();
    // the port is given up (migrate_incoming may bind it again after this failure)
    this.server?.close();
    this.server = null;
    this.removeSocketFile();
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
      this.release();
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
   *  normally from now on. */
  private release(): void {
    this.stopThreads();
    this.ram.release();
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
    this.release();
    this.stream.free();
    this.ram.free();
  }

  private removeSocketFile(): void {
    if (this.unixSocket) removeUnixSocket(this.unixSocket);
    this.unixSocket = null;
  }

  // ---------------------------------------------------------------- queries

  get listening(): boolean { return this.server !== null && this.socket === null; }
  /** migrate_recover is listening, or its handshake runs */
  get recovering(): boolean { return this.recovery.listening; }
  /** recoveries done, pages the fault thread asked for again on a new link */
  get recoveryFigures(): { recoveries: number; 'pages-requested-again': number } {
    return { recoveries: this.recovery.recoveries, 'pages-requested-again': this.pc.stat(FaultThreadStat.Rerequests) };
  }
  /** pages dropped on the source's DISCARD (dirtied after they were sent) */
  get discardedPages(): number { return this.discarded; }

  blocktimeReport(): BlocktimeReport | undefined {
    return this.pc.report();
  }

  ramStats(): MigrationRamStats {
    const f = this.pc.figures();
    const r = this.stream.figures();
    const bytesIn = this.bytesTotal();
    const end = this.endMs >= 0 ? this.endMs : performance.now();
    return ramStatsOf({
      transferred: bytesIn,
      remaining: (this.pageCount - this.receivedCount()) * this.ps,
      total: this.o.ram.bytes,
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
}
