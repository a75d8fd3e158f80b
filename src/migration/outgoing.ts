// The source side of a migration (QEMU's migration.c outgoing path + ram.c):
// connect, send the header, precopy rounds over pages that are new or dirty,
// converge (stop-and-copy) or switch to postcopy (discard, vCPU state, then
// serve page requests before the background push), and finish when the
// destination says every page is in place.
//
// Send path: pages are copied from guest RAM into pooled chunk buffers
// (no allocation per page) as PAGES runs and ZERO runs; a chunk goes to the
// socket only while the socket's write backlog is small. In postcopy, page
// requests never reach this event loop: the native page server
// (native-shim/page_server.c) answers them on the urgent channel straight
// from guest RAM, and reports what it sent through its ring; drained here, a
// sent page is skipped by the background push, which goes on just after the
// requested page (its neighbours are the likeliest next faults).

import net from 'node:net';
import type { EventEmitter } from 'node:events';
import type { MigrationRamStats } from './api.js';
import { ramStatsOf } from './ram-stats.js';
import type { GuestBytes, GuestMemory, VcpuControl } from './guest.js';
import type { MigrationStatusMachine } from './status.js';
import type { Parameters } from './parameters.js';
import { RateLimiter } from './rate-limit.js';
import { ConvergenceWatch, describeStall, type ConvergenceInfo } from './convergence.js';
import type { PrecopyThrottle } from './precopy-throttle.js';
import { systemErrorText } from '../errors.js';
import { startDirtyTracking, type DirtyTracker, type DirtyTrackingMode } from './dirty-tracker.js';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import { PageChannel, PageServerStat, type ChannelEventSink } from '../native/page-channel.js';
import {
  ReturnDecoder, encodeHeader, encodeBare, encodeSwitchover, encodeText, writeRecordHeader, WireError,
  RECORD_HEADER_BYTES, REC_PAGES, REC_ZERO, REC_DISCARD, REC_END_ROUND, REC_END, REC_ERROR,
  VCPU_STATE_BYTES, maxRunPages, type ReturnHandler,
} from './wire.js';

/** page data per background chunk (64 pages of 4 KiB; at least one page: one huge page) */
const CHUNK_BYTES = 256 * 1024;
/** pages a chunk may scan (zero runs cost no room) */
const CHUNK_SCAN = 4096;
const POOL_CHUNKS = 8;
/** background data queued in the socket beyond which we wait for 'drain' */
const PRECOPY_BACKLOG = 1 << 20;
const POSTCOPY_BACKLOG = 64 * 1024;
/** main-stream bytes the destination has not yet consumed, at most, in
 *  postcopy (a requested page never waits for these: it goes again on the
 *  urgent channel; the window only keeps the destination's queue short) */
const POSTCOPY_WINDOW = 2 * 1024 * 1024;
const CONNECT_TIMEOUT_MS = 10000;
/** longest wait of a throttled send loop before it reads the rate limit again */
const THROTTLE_RECHECK_MS = 100;
/** longest stretch the send loop runs before yielding to the event loop */
const PUMP_SLICE_MS = 4;
/** a round shorter than this says little about bandwidth */
const MIN_MEASURE_BYTES = 1 << 20;
/** how often the page server's ring is drained and its state looked at */
const DRAIN_EVERY_MS = 2;

// page flags
const NEED = 1; // must be sent (never sent, or dirtied since)
const HAS = 2;  // the destination holds a copy (sent since the last discard)

export interface OutgoingOptions {
  ram: GuestMemory;
  vcpus: VcpuControl;
  workload: string;
  status: MigrationStatusMachine;
  params: Parameters;
  /** postcopy-ram capability at start */
  postcopy: boolean;
  /** run state changes the Machine must make visible */
  setRunState(state: 'running' | 'finish-migrate' | 'postmigrate' | 'paused'): void;
  /** were the vCPUs running when the migration started (resume them on failure) */
  wasRunning: boolean;
  /** force a dirty-tracking mechanism (benchmarks/tests) */
  trackingMode?: DirtyTrackingMode;
  events?: EventEmitter;
  /** auto-converge / dirty-limit, told of every round's dirty sync */
  throttle?: PrecopyThrottle;
}

type Phase = 'connecting' | 'precopy' | 'switching' | 'postcopy' | 'finishing' | 'done';

export class OutgoingMigration implements ReturnHandler {
  private readonly ram: GuestMemory;
  private readonly contents: GuestBytes;
  private readonly ps: number;
  private readonly pages: number;
  /** data pages per background chunk */
  private readonly chunkPages: number;
  /** pages per PAGES record at most */
  private readonly maxRun: number;
  private readonly flags: Uint8Array;
  private socket: net.Socket | null = null;
  /** second connection for requested pages (see wire.ts) */
  private urgentSocket: net.Socket | null = null;
  /** resolves once the urgent channel's HEADER is written (rejects if it failed) */
  private urgentReady: Promise<void> | null = null;
  /** the native page server, in postcopy */
  private pageServer: PageChannel | null = null;
  /** the page server's counters once it stopped (PageServerStat indices) */
  private serverStats: Float64Array = new Float64Array(16);
  private decoder: ReturnDecoder;
  private tracker: DirtyTracker | null = null;
  private phase: Phase = 'connecting';
  private readonly limiter: RateLimiter;
  private readonly pool: Buffer[] = [];
  private timer: NodeJS.Timeout | null = null;
  private pumping = false;
  private yielded = false;
  private starved = false;
  private postcopyRequested = false;
  private cursor = 0;
  private round = 0;
  private needCount: number;
  private vcpusStopped = false;
  /** the postcopy SWITCHOVER (the vCPU state) went out: the guest may run on
   *  the destination now, so it never runs here again */
  private postcopyStatesSent = false;
  private destRunning = false;
  private roundStartMs = 0;
  private roundBytes = 0;
  private bandwidth = 0; // bytes/s measured over the last round
  private lastSyncMs = 0;
  private dirtyRate = 0;
  /** whether precopy rounds still shrink the dirty set */
  private readonly convergenceWatch = new ConvergenceWatch(() => performance.now());
  // counters (query-migrate ram)
  private transferred = 0;
  private normal = 0;
  private duplicate = 0;
  private syncs = 0;
  private mainSent = 0;
  private mainAcked = 0;
  /** requested pages that were already sent (in flight on the main stream) */
  private inflightHits = 0;
  private precopyBytes = 0;
  private postcopyBytes = 0;
  private downtimeBytes = 0;
  private startMs = 0;
  private endMs = -1;

  constructor(private readonly o: OutgoingOptions) {
    this.ram = o.ram;
    this.contents = o.ram.contents;
    this.ps = o.ram.pageSize;
    this.pages = o.ram.bytes / this.ps;
    this.flags = new Uint8Array(this.pages).fill(NEED);
    this.needCount = this.pages;
    this.limiter = new RateLimiter(() => performance.now());
    this.decoder = new ReturnDecoder(this, o.ram.bytes, this.ps);
    this.chunkPages = Math.max(1, Math.floor(CHUNK_BYTES / this.ps));
    this.maxRun = maxRunPages(this.ps);
    for (let i = 0; i < POOL_CHUNKS; i++) this.pool.push(this.newChunk());
  }

  /** a chunk buffer: its data pages and a record header for each run around them */
  private newChunk(): Buffer {
    return Buffer.allocUnsafe(this.chunkPages * this.ps + RECORD_HEADER_BYTES * (2 * this.chunkPages + 4));
  }

  get trackingMode(): DirtyTrackingMode | undefined { return this.tracker?.mode; }
  get postcopyActive(): boolean { return this.phase === 'postcopy' || (this.phase === 'finishing' && this.postcopyRequested); }

  /** Connects and starts sending; failures end in status 'failed'. */
  start(addr: MigrationAddress): void {
    const st = this.o.status;
    st.moveTo('setup');
    this.startMs = performance.now();
    const sock = addr.transport === 'tcp' ? net.connect({ host: addr.host, port: addr.port }) : net.connect({ path: addr.path });
    this.socket = sock;
    const timer = setTimeout(() => sock.destroy(new Error(`timed out after ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
    sock.once('connect', () => {
      clearTimeout(timer);
      if (this.phase === 'done') return;
      sock.setNoDelay(true);
      try {
        this.tracker = startDirtyTracking(this.ram, this.o.trackingMode);
      } catch (e) {
        this.fail(`cannot track dirty pages: ${(e as Error).message}`);
        return;
      }
      this.write(encodeHeader({
        pageSize: this.ps, vcpus: this.o.vcpus.count, ramBytes: this.ram.bytes, workload: this.o.workload, postcopy: this.o.postcopy,
      }));
      this.connectUrgent(addr);
      this.phase = 'precopy';
      this.roundStartMs = performance.now();
      this.lastSyncMs = this.roundStartMs;
      st.moveTo('active');
      this.pump();
    });
    sock.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk);
      } catch (e) {
        this.fail(`return path: ${(e as Error).message}`);
      }
    });
    sock.on('drain', () => this.pump());
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (this.phase === 'connecting') this.fail(`Failed to connect to '${formatMigrationUri(addr)}': ${systemErrorText(e)}`);
      else this.fail(`migration connection error: ${e.message}`);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (this.phase === 'done') return;
      try {
        this.decoder.finish();
        this.fail('the destination closed the connection');
      } catch (e) {
        this.fail(e instanceof WireError ? `${e.message} (the destination closed the connection)` : String(e));
      }
    });
  }

  /** The urgent channel: this side writes its HEADER, then the page server
   *  takes it over at the postcopy switchover (nothing comes back on it
   *  before: the destination's fault thread starts after the switchover). */
  private connectUrgent(addr: MigrationAddress): void {
    const u = addr.transport === 'tcp' ? net.connect({ host: addr.host, port: addr.port }) : net.connect({ path: addr.path });
    this.urgentSocket = u;
    const timer = setTimeout(() => u.destroy(new Error(`connecting timed out after ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
    timer.unref();
    this.urgentReady = new Promise<void>((resolve, reject) => {
      u.once('connect', () => {
        clearTimeout(timer);
        u.setNoDelay(true);
        u.write(encodeHeader({ pageSize: this.ps, vcpus: this.o.vcpus.count, ramBytes: this.ram.bytes, workload: this.o.workload, urgent: true }),
          (e) => { if (e) reject(new Error(`urgent channel: ${e.message}`)); else resolve(); });
      });
      u.once('close', () => reject(new Error('the destination closed the urgent channel')));
    });
    this.urgentReady.catch(() => undefined); // failures are reported by the listeners below
    u.on('data', () => { /* nothing comes back on this channel before the page server takes it */ });
    u.on('error', (e) => this.failLater(`urgent channel error: ${e.message}`));
    u.on('close', () => { if (this.phase !== 'done') this.failLater('the destination closed the urgent channel'); });
  }

  /** the main connection usually says why (RP_ERROR, close) or that all went
   *  well (RP_COMPLETE, sent just before the destination closes both): give it
   *  a moment to win. Timers run before the loop reads sockets, so after a
   *  loop held up longer than the moment (64 busy vCPUs on 2 cores) the
   *  timer would beat data already waiting: fail only after one more poll. */
  private failLater(why: string): void {
    setTimeout(() => setImmediate(() => this.fail(why)), 500).unref();
  }

  /** The page server's sends so far: pages it sent need no background copy,
   *  and the push goes on just after a page it had not reached yet. */
  private readonly onServed: ChannelEventSink = (_kind, page, count) => {
    const flags = this.flags;
    let unsent = false;
    for (let p = page, end = page + count; p < end; p++) {
      if ((flags[p] & NEED) === 0) { this.inflightHits++; continue; }
      flags[p] = HAS;
      this.needCount--;
      unsent = true;
    }
    if (unsent) this.cursor = page + count < this.pages ? page + count : 0;
  };

  private readonly drainServer = (): void => {
    const ps = this.pageServer;
    if (ps === null) return;
    if (ps.drain(this.onServed) > 0) this.pump();
    const st = ps.state;
    if (st === 'running') return;
    ps.stopTicking(); // said once
    // every page sent: the destination closes the urgent channel as it
    // completes, and says so on the main connection only once it has released
    // guest RAM (longer than failLater's moment at 8 GiB); that connection
    // decides (RP_COMPLETE, RP_ERROR, or closing early)
    if (st === 'closed' && this.phase !== 'done' && this.needCount > 0) this.failLater('the destination closed the urgent channel');
    else if (st === 'failed') this.fail(ps.error);
  };

  /** Stops the page server and keeps its figures. */
  private stopPageServer(): void {
    if (this.pageServer === null) return;
    this.serverStats = this.pageServer.close(this.onServed);
    this.pageServer = null;
  }

  /** migrate_start_postcopy: switch at the next opportunity. */
  requestPostcopy(): void {
    this.postcopyRequested = true;
    if (this.phase === 'precopy') setImmediate(() => this.pump());
  }

  get postcopyPending(): boolean { return this.postcopyRequested; }
  /** the postcopy switchover (vCPU state) went out: the guest left this VM */
  get postcopySwitched(): boolean { return this.postcopyStatesSent; }
  /** postcopy-ram was on when this migration started */
  get postcopyEnabled(): boolean { return this.o.postcopy; }

  /** Quit: drop the connection and release the dirty tracker. */
  async close(): Promise<void> {
    if (this.phase !== 'done') await this.finishUp(this.o.status.status === 'cancelling' ? 'cancelled' : 'failed');
    this.socket?.destroy();
    this.urgentSocket?.destroy();
    try { await this.tracker?.stop(); } catch { /* released */ }
  }

  /** migrate_cancel */
  cancel(): void {
    const st = this.o.status;
    if (!st.active || this.phase === 'done') return;
    st.moveTo('cancelling');
    if (this.socket && !this.socket.destroyed && this.phase !== 'connecting') {
      this.socket.end(encodeText(REC_ERROR, 'migration cancelled by the source'));
    }
    void this.finishUp('cancelled');
  }

  // ---------------------------------------------------------------- return path

  requestPages(): void {
    this.fail('return path: a page request on the main connection (requests come on the urgent channel)');
  }

  error(reason: string): void {
    this.fail(`destination: ${reason}`);
  }

  ack(consumed: number): void {
    if (consumed > this.mainAcked) this.mainAcked = consumed;
    if (this.phase === 'postcopy') this.pump();
  }

  running(): void {
    this.destRunning = true;
    this.o.status.markDowntimeEnd();
  }

  complete(): void {
    if (this.phase !== 'finishing') {
      this.fail('destination reported completion before the end of the stream');
      return;
    }
    void this.finishUp('completed');
  }

  // ---------------------------------------------------------------- sending

  private write(buf: Buffer, cb?: () => void, sock: net.Socket = this.socket!): void {
    const n = buf.length;
    this.transferred += n;
    this.roundBytes += n;
    if (this.phase === 'postcopy' || this.phase === 'finishing' && this.postcopyRequested) this.postcopyBytes += n;
    else this.precopyBytes += n;
    if (this.vcpusStopped && !this.destRunning) this.downtimeBytes += n;
    if (sock === this.socket) this.mainSent += n;
    sock.write(buf, cb);
  }

  /** The send loop: runs until the socket is backed up, the rate limit
   *  says wait, or there is nothing to send. Re-entered from 'drain',
   *  timers and page requests. */
  private pump(): void {
    if (this.pumping || !this.socket || this.socket.destroyed) return;
    this.pumping = true;
    try {
      this.pumpInner();
    } catch (e) {
      this.fail(`sending: ${(e as Error).message}`);
    } finally {
      this.pumping = false;
    }
  }

  private pumpInner(): void {
    const sock = this.socket!;
    const budgetEnd = performance.now() + PUMP_SLICE_MS;
    for (;;) {
      if (performance.now() > budgetEnd) { // let the event loop breathe (monitors, return path)
        if (!this.yielded) { this.yielded = true; setImmediate(() => { this.yielded = false; this.pump(); }); }
        return;
      }
      if (this.phase === 'postcopy') this.pageServer?.drain(this.onServed);
      if (this.phase === 'precopy') {
        if (this.postcopyRequested) { void this.switchToPostcopy(); return; }
        if (sock.writableLength > PRECOPY_BACKLOG) return; // 'drain' resumes
        if (this.pool.length === 0) { this.starved = true; return; } // a chunk's write callback resumes
        if (this.cursor >= this.pages) { if (!this.endOfRound()) return; continue; }
        const limit = this.o.params.value('max-bandwidth');
        if (this.throttled(limit)) return;
        this.sendChunk(limit);
        continue;
      }
      if (this.phase === 'postcopy') {
        if (sock.writableLength > POSTCOPY_BACKLOG) return;
        if (this.mainSent - this.mainAcked > POSTCOPY_WINDOW) return; // an ACK resumes
        if (this.pool.length === 0) { this.starved = true; return; }
        if (this.needCount === 0) {
          this.phase = 'finishing';
          this.write(encodeBare(REC_END));
          return;
        }
        const limit = this.o.params.value('max-postcopy-bandwidth');
        if (this.throttled(limit)) return;
        if (this.cursor >= this.pages) this.cursor = 0;
        this.sendChunk(limit);
        // one chunk per turn of the event loop: a page request waits at most one chunk
        if (!this.yielded) { this.yielded = true; setImmediate(() => { this.yielded = false; this.pump(); }); }
        return;
      }
      return;
    }
  }

  private throttled(limit: number): boolean {
    const d = this.limiter.delayFor(this.chunkPages * this.ps, limit);
    if (d <= 0) return false;
    // look again at least every THROTTLE_RECHECK_MS: a new max-bandwidth /
    // max-postcopy-bandwidth set meanwhile applies within that time
    if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.pump(); }, Math.min(d, THROTTLE_RECHECK_MS));
    return true;
  }

  /** Sends one chunk of background pages from the cursor on. */
  private sendChunk(limit: number): void {
    const buf = this.pool.pop()!;
    const used = this.fillChunk(buf);
    if (used === 0) { this.pool.push(buf); return; }
    this.limiter.consume(used, limit);
    this.write(buf.subarray(0, used), () => this.release(buf));
  }

  private release(buf: Buffer): void {
    if (this.pool.length < POOL_CHUNKS) this.pool.push(buf);
    if (this.starved) {
      this.starved = false;
      setImmediate(() => this.pump());
    }
  }

  /**
   * Fills `buf` with PAGES and ZERO records for pages that need sending,
   * from the background cursor on; clears their NEED flag. Returns the bytes
   * used (0 when nothing was left).
   */
  private fillChunk(buf: Buffer): number {
    const ps = this.ps;
    const flags = this.flags;
    let pos = 0;
    let data = 0;
    let scanned = 0;
    // the open run: kind 0 none, 1 pages, 2 zero
    let kind = 0;
    let runHdr = 0;
    let runStart = 0;
    let runLen = 0;
    const close = (): void => {
      if (kind === 0) return;
      writeRecordHeader(buf, runHdr, kind === 1 ? REC_PAGES : REC_ZERO, 0, runLen, runStart * ps);
      kind = 0;
    };
    while (data < this.chunkPages && scanned < CHUNK_SCAN) {
      if (this.cursor >= this.pages) break;
      const p = this.cursor++;
      scanned++;
      if ((flags[p] & NEED) === 0) continue;
      flags[p] = HAS;
      this.needCount--;
      const isZero = this.contents.isZero(p, ps);
      const k = isZero ? 2 : 1;
      if (kind !== k || p !== runStart + runLen || (k === 1 && runLen >= this.maxRun)) {
        close();
        kind = k;
        runHdr = pos;
        pos += RECORD_HEADER_BYTES;
        runStart = p;
        runLen = 0;
      }
      runLen++;
      if (isZero) {
        this.duplicate++;
      } else {
        this.contents.copyOut(p, buf, pos, ps);
        pos += ps;
        data++;
        this.normal++;
      }
    }
    close();
    return pos;
  }

  /** End of a precopy pass: sync the dirty set, then converge or go round again.
   *  Returns false when the loop must stop (switching). */
  private endOfRound(): boolean {
    const now = performance.now();
    const roundMs = Math.max(1, now - this.roundStartMs);
    if (this.roundBytes >= MIN_MEASURE_BYTES || this.bandwidth === 0) this.bandwidth = (this.roundBytes * 1000) / roundMs;
    this.round++;
    this.write(encodeBare(REC_END_ROUND, this.round));
    const dirtied = this.tracker!.collect(this.flags);
    this.syncs++;
    this.needCount += dirtied;
    this.dirtyRate = (dirtied * 1000) / Math.max(1, now - this.lastSyncMs);
    this.lastSyncMs = now;
    this.convergenceWatch.round({ remainingBytes: this.needCount * this.ps, dirtyRate: this.dirtyRate * this.ps, bandwidth: this.bandwidth });
    this.o.throttle?.dirtySync(dirtied, this.transferred); // convergence tools (precopy-throttle.ts): QEMU acts after the sync
    this.cursor = 0;
    this.roundStartMs = now;
    this.roundBytes = 0;
    const expectedMs = this.needCount === 0 ? 0 : this.bandwidth > 0 ? (this.needCount * this.ps * 1000) / this.bandwidth : Infinity;
    if (!this.postcopyRequested && expectedMs <= this.o.params.value('downtime-limit')) {
      void this.completePrecopy();
      return false;
    }
    return true;
  }

  private async stopVcpus(): Promise<void> {
    this.o.status.markDowntimeStart();
    this.vcpusStopped = true;
    this.o.setRunState('finish-migrate');
    await this.o.vcpus.pause();
  }

  private statesRecord(postcopy: boolean): Buffer {
    const states = Buffer.alloc(this.o.vcpus.count * VCPU_STATE_BYTES);
    this.o.vcpus.saveStates(states, 0);
    return encodeSwitchover(postcopy, states);
  }

  /** Converged: stop the vCPUs, send what is left and the vCPU state. */
  private async completePrecopy(): Promise<void> {
    this.phase = 'switching';
    await this.stopVcpus();
    if (this.isOver()) return;
    try {
      this.needCount += this.tracker!.collect(this.flags);
      this.syncs++;
      await this.tracker!.stop();
      this.o.status.moveTo('device');
      // every remaining page, unthrottled (downtime)
      this.cursor = 0;
      while (this.needCount > 0) {
        const buf = this.pool.pop() ?? this.newChunk();
        const used = this.fillChunk(buf);
        if (used > 0) this.write(buf.subarray(0, used), () => { if (this.pool.length < POOL_CHUNKS) this.pool.push(buf); });
        else if (this.pool.length < POOL_CHUNKS) this.pool.push(buf);
        if (this.socket!.writableLength > PRECOPY_BACKLOG) await this.drained();
        if (this.isOver()) return;
      }
      this.write(this.statesRecord(false));
      this.phase = 'finishing';
      this.write(encodeBare(REC_END));
    } catch (e) {
      this.fail(`switchover: ${(e as Error).message}`);
    }
  }

  /** migrate_start_postcopy took effect: discard, vCPU state, then postcopy. */
  private async switchToPostcopy(): Promise<void> {
    this.phase = 'switching';
    await this.stopVcpus();
    if (this.isOver()) return;
    try {
      this.o.status.moveTo('postcopy-active');
      this.needCount += this.tracker!.collect(this.flags);
      this.syncs++;
      await this.tracker!.stop();
      // pages dirtied since the destination got them: it must drop its copy
      const flags = this.flags;
      const disc = Buffer.allocUnsafe(RECORD_HEADER_BYTES * 256);
      let dpos = 0;
      for (let p = 0; p < this.pages; p++) {
        if (flags[p] !== (NEED | HAS)) continue;
        let q = p;
        while (q < this.pages && flags[q] === (NEED | HAS)) { flags[q] = NEED; q++; }
        writeRecordHeader(disc, dpos, REC_DISCARD, 0, q - p, p * this.ps);
        dpos += RECORD_HEADER_BYTES;
        if (dpos === disc.length) { this.write(Buffer.from(disc)); dpos = 0; }
        p = q;
      }
      if (dpos > 0) this.write(Buffer.from(disc.subarray(0, dpos)));
      // the page server must be serving before the destination's vCPUs run
      await this.urgentReady;
      if (this.isOver()) return;
      if (this.urgentSocket!.destroyed) throw new Error('the destination closed the urgent channel');
      this.pageServer = PageChannel.startPageServer({ sock: this.urgentSocket!, ramBase: this.ram.base, pageSize: this.ps, pages: this.pages });
      this.pageServer.tickEvery(DRAIN_EVERY_MS, this.drainServer);
      this.postcopyStatesSent = true;
      this.write(this.statesRecord(true));
      this.phase = 'postcopy';
      this.cursor = 0;
      this.pump();
    } catch (e) {
      this.fail(`postcopy switchover: ${(e as Error).message}`);
    }
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const s = this.socket!;
      if (s.destroyed || s.writableLength === 0) { resolve(); return; }
      const done = (): void => { s.off('drain', done); s.off('close', done); resolve(); };
      s.once('drain', done);
      s.once('close', done);
    });
  }

  private isOver(): boolean {
    return this.phase === 'done' || !this.o.status.active;
  }

  // ---------------------------------------------------------------- ending

  private fail(reason: string): void {
    if (this.phase === 'done') return;
    if (this.o.status.fail(reason) || this.o.status.status === 'failed') {
      void this.finishUp('failed');
    }
  }

  private async finishUp(how: 'completed' | 'failed' | 'cancelled'): Promise<void> {
    if (this.phase === 'done') return;
    const switched = this.vcpusStopped && (this.postcopyRequested || this.phase === 'finishing' || how === 'completed');
    this.phase = 'done';
    this.endMs = performance.now();
    this.stopPageServer();
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const st = this.o.status;
    if (how === 'completed') st.moveTo('completed');
    else if (how === 'cancelled' && st.status === 'cancelling') st.moveTo('cancelled');
    const urgent = this.urgentSocket;
    if (urgent) {
      if (how === 'failed') urgent.destroy(); else urgent.end();
    }
    const sock = this.socket;
    if (sock) {
      // a failure says why on the stream (ERROR) while the connection still
      // takes it, so the destination fails with the same reason
      if (how === 'failed' && sock.writable && !sock.connecting) sock.end(encodeText(REC_ERROR, st.errorDesc ?? 'the source failed'));
      else if (how === 'failed') sock.destroy();
      else sock.end();
      setTimeout(() => sock.destroy(), 2000).unref();
    }
    try { await this.tracker?.stop(); } catch { /* already released */ }
    if (how === 'completed' || (switched && this.destRunning) || this.postcopyStatesSent) {
      // the guest now lives on the destination: never run it here again
      this.o.setRunState('postmigrate');
    } else if (this.vcpusStopped || !this.o.wasRunning) {
      if (this.o.wasRunning) { this.o.vcpus.resume(); this.o.setRunState('running'); } else this.o.setRunState('paused');
    }
  }

  // ---------------------------------------------------------------- stats

  /** precopy that does not converge, said with its figures; undefined otherwise */
  convergence(): ConvergenceInfo | undefined {
    const s = this.phase === 'precopy' ? this.convergenceWatch.stall : undefined;
    return s && describeStall(s, { maxBandwidth: this.o.params.value('max-bandwidth'), postcopyRam: this.o.postcopy });
  }

  /** requested pages already sent in the background when asked for (sent again, urgently) */
  get requestsInFlight(): number { return this.inflightHits; }

  ramStats(): MigrationRamStats {
    const f = this.pageServer?.figures(this.onServed) ?? this.serverStats;
    const urgentBytes = f[PageServerStat.BytesOut];
    return ramStatsOf({
      transferred: this.transferred + urgentBytes,
      remaining: this.needCount * this.ps,
      total: this.ram.bytes,
      normal: this.normal + f[PageServerStat.Normal],
      duplicate: this.duplicate + f[PageServerStat.Zero],
      pageSize: this.ps,
      elapsedMs: (this.endMs >= 0 ? this.endMs : performance.now()) - this.startMs,
      syncs: this.syncs,
      requests: f[PageServerStat.Requests],
      postcopyBytes: this.postcopyBytes + urgentBytes,
      precopyBytes: this.precopyBytes,
      downtimeBytes: this.downtimeBytes,
      dirtyPagesRate: this.dirtyRate,
    });
  }
}
