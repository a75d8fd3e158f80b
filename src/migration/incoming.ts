// The destination side of a migration (QEMU's incoming path + postcopy-ram.c):
// listen, check the header against this VM, write precopy pages straight into
// guest RAM, drop discarded pages, and at the postcopy switchover register
// guest RAM with userfaultfd (MISSING), start the vCPUs and turn their faults
// into page requests on the return path. Pages arriving in postcopy are placed
// atomically with UFFDIO_COPY (a whole run per ioctl) or UFFDIO_ZEROPAGE, and
// each placed page ends the blocktime accounting of the faults waiting on it.
//
// Hot paths (fault read -> request, page run -> copy -> blocktime end) use
// typed-array flags per page and preallocated buffers; nothing is allocated
// per fault or per page in steady state.

import net from 'node:net';
import { chmodSync, unlinkSync, lstatSync } from 'node:fs';
import type { EventEmitter } from 'node:events';
import type { MigrationRamStats } from './api.js';
import type { GuestMemory, VcpuControl } from './guest.js';
import type { MigrationStatusMachine } from './status.js';
import type { Parameters } from './parameters.js';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import {
  StreamDecoder, encodeBare, encodeText, writeRecordHeader, WireError,
  RECORD_HEADER_BYTES, RP_REQ_PAGES, RP_RUNNING, RP_COMPLETE, RP_ERROR, RP_ACK, MAX_RUN_PAGES,
  type StreamHandler, type StreamHeader,
} from './wire.js';
import { Userfaultfd, UffdPoller, StagingArea, EVENT_PAGEFAULT } from '../uffd/index.js';
import { BlocktimeContext, emptyReport, type BlocktimeReport } from '../blocktime/index.js';
import { openTraceFile } from '../blocktime-trace/index.js';
import { CommandError } from '../errors.js';

// page flags
const RECEIVED = 1;  // the page's content is here (or it is known to be zero)
const POPULATED = 2; // the page holds data written by us (precopy)
const REQUESTED = 4; // asked for on the return path
const WAITED = 8;    // a fault is accounted in blocktime for it

/** request records per return-path write */
const REQ_BATCH = 32;
const REQ_POOL = 16;
const PLACE_RETRIES = 1000;
/** acknowledge the main stream every this many bytes (the source's postcopy window is larger) */
const ACK_EVERY = 64 * 1024;
/** main-stream bytes handled per turn of the event loop in postcopy: libuv
 *  would otherwise read up to 2 MiB from one socket in one go, and a
 *  requested page on the urgent channel or a fault would wait behind it */
const POSTCOPY_MAIN_SLICE = 128 * 1024;

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

interface ReqSlot { buf: Buffer; views: Buffer[]; release: () => void }

export class IncomingMigration implements StreamHandler {
  private readonly ram: GuestMemory;
  private readonly ramBuf: Buffer;
  private readonly base: number;
  private readonly ps: number;
  private readonly pageCount: number;
  private readonly flags: Uint8Array;
  private receivedCount = 0;
  private server: net.Server | null = null;
  private socket: net.Socket | null = null;
  private urgentSocket: net.Socket | null = null;
  /** precopy rounds the source finished (its dirty syncs) */
  private rounds = 0;
  /** bytes received (both channels) when the switchover record came */
  private bytesAtSwitch = 0;
  /** why the blocktime trace could not be recorded ('' = it could, or none was asked for) */
  private traceError = '';
  /** pages requested and not yet placed */
  private awaited = 0;
  /** main-stream bytes handled in this turn of the event loop (postcopy) */
  private sliceBytes = 0;
  private readonly urgentDecoder: StreamDecoder;
  /** END arrived while requested pages were still in flight on the urgent channel */
  private endPending = false;
  private unixPath: string | null = null;
  private readonly decoder: StreamDecoder;
  private uffd: Userfaultfd | null = null;
  private poller: UffdPoller | null = null;
  private staging: StagingArea | null = null;
  private stagingBuf: Buffer | null = null;
  private blocktime: BlocktimeContext | null = null;
  private blocktimeFallback: BlocktimeReport | null = null;
  private postcopy = false;
  private switched = false;
  private over = false;
  private readonly reqPool: ReqSlot[] = [];
  // counters
  private bytesIn = 0;
  private mainIn = 0;
  private mainAcked = 0;
  private normal = 0;
  private duplicate = 0;
  private requestsSent = 0;
  private discarded = 0;
  private placeCalls = 0;
  private startMs = 0;
  private endMs = -1;

  constructor(private readonly o: IncomingOptions) {
    this.ram = o.ram;
    this.ramBuf = o.ram.buffer();
    this.base = o.ram.base;
    this.ps = o.ram.pageSize;
    this.pageCount = o.ram.bytes / this.ps;
    this.flags = new Uint8Array(this.pageCount);
    this.decoder = new StreamDecoder(this, Math.max(65536, this.ps));
    this.urgentDecoder = new StreamDecoder(this.urgentHandler, Math.max(65536, this.ps), true);
    for (let i = 0; i < REQ_POOL; i++) this.reqPool.push(this.newReqSlot());
  }

  /** Listens on `addr`; resolves once listening. The status stays 'none'
   *  (capabilities can still be set) until the source connects. */
  listen(addr: MigrationAddress): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const server = net.createServer((s) => this.accept(s));
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

  private accept(s: net.Socket): void {
    if (this.over || (this.socket && this.urgentSocket)) { s.destroy(); return; } // one migration per listen
    if (this.socket) { this.acceptUrgent(s); return; }
    this.socket = s;
    this.startMs = performance.now();
    this.o.status.moveTo('setup');
    s.setNoDelay(true);
    s.on('data', (chunk: Buffer) => {
      if (this.over) return;
      this.bytesIn += chunk.length;
      this.mainIn += chunk.length;
      try {
        this.decoder.push(chunk);
        if (this.postcopy && this.mainIn - this.mainAcked >= ACK_EVERY) this.sendAck();
      } catch (e) {
        this.failWith(e instanceof WireError ? `migration stream: ${e.message}` : `migration: ${(e as Error).message}`, true);
        return;
      }
      // while requested pages are awaited, one read of the main stream per
      // turn: the urgent channel is looked at between any two
      const slice = this.awaited > 0 ? 1 : POSTCOPY_MAIN_SLICE;
      if (this.postcopy && (this.sliceBytes += chunk.length) >= slice && !s.isPaused()) {
        s.pause();
        setImmediate(this.resumeMain);
      }
    });
    s.on('error', (e) => this.failWith(`migration connection error: ${e.message}`, false));
    s.on('close', () => {
      if (this.over) return;
      try {
        this.decoder.finish();
        if (!this.over) this.failWith('the source closed the connection before the migration completed', false);
      } catch (e) {
        this.failWith(`migration stream: ${(e as Error).message} (the source closed the connection)`, false);
      }
    });
  }

  /** the main stream's next slice, after the other I/O of this turn */
  private readonly resumeMain = (): void => {
    this.sliceBytes = 0;
    const s = this.socket;
    if (s && !s.destroyed) s.resume();
  };

  /** the second connection: requested pages only */
  private acceptUrgent(s: net.Socket): void {
    this.urgentSocket = s;
    s.setNoDelay(true);
    this.server?.close(); // both connections are in
    this.removeSocketFile();
    s.on('data', (chunk: Buffer) => {
      if (this.over && !this.endPending) return;
      this.bytesIn += chunk.length;
      try {
        this.urgentDecoder.push(chunk);
      } catch (e) {
        this.failWith(e instanceof WireError ? `urgent channel: ${e.message}` : `migration: ${(e as Error).message}`, true);
      }
    });
    s.on('error', (e) => this.failWith(`urgent channel error: ${e.message}`, false));
    s.on('close', () => {
      if (this.over && !this.endPending) return;
      this.failWith('the source closed the urgent channel before the migration completed', false);
    });
  }

  private readonly urgentHandler: StreamHandler = {
    header: (h) => { this.checkHeader(h); },
    pages: (offset, count, buf, pos) => {
      if (!this.postcopy) throw new WireError('requested pages arrived before the postcopy switchover');
      if (this.over) return; // a second copy of a requested page, after the last page was placed
      this.pages(offset, count, buf, pos);
      if (this.endPending) this.maybeComplete();
    },
    zero: (offset, count) => {
      if (!this.postcopy) throw new WireError('requested pages arrived before the postcopy switchover');
      if (this.over) return;
      this.zero(offset, count);
      if (this.endPending) this.maybeComplete();
    },
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
    this.staging = StagingArea.create(1, MAX_RUN_PAGES * this.ps);
    this.stagingBuf = this.staging.slot(0);
  }

  private checkHeader(h: StreamHeader): void {
    const problems: string[] = [];
    if (h.ramBytes !== this.ram.bytes) problems.push(`RAM size mismatch: the source has ${h.ramBytes} bytes, this VM ${this.ram.bytes} (-m)`);
    if (h.vcpus !== this.o.vcpus.count) problems.push(`vCPU count mismatch: the source has ${h.vcpus}, this VM ${this.o.vcpus.count} (-smp)`);
    if (h.pageSize !== this.ps) problems.push(`page size mismatch: the source uses ${h.pageSize}, this VM ${this.ps}`);
    if (h.workload !== this.o.workload) problems.push(`workload mismatch: the source runs '${h.workload}', this VM was started with '${this.o.workload}' (-workload)`);
    if (problems.length > 0) throw new WireError(problems.join('; '));
  }

  pages(offset: number, count: number, buf: Buffer, pos: number): void {
    const first = offset / this.ps;
    if (!this.postcopy) {
      this.precopyPages(first, count, buf, pos);
      this.normal += count;
      return;
    }
    const stage = this.stagingBuf!;
    buf.copy(stage, 0, pos, pos + count * this.ps);
    this.place(offset, count, true);
    this.normal += count;
  }

  /** Precopy: pages never written yet are placed with UFFDIO_COPY when guest
   *  RAM is registered; pages sent again (dirtied) are overwritten in place. */
  private precopyPages(first: number, count: number, buf: Buffer, pos: number): void {
    const ps = this.ps;
    const flags = this.flags;
    const end = first + count;
    if (this.uffd === null) { // not registered: plain writes
      buf.copy(this.ramBuf, first * ps, pos, pos + count * ps);
    } else {
      for (let p = first; p < end;) { // runs of pages alike: already written, or not yet
        const populated = (flags[p] & POPULATED) !== 0;
        let q = p + 1;
        while (q < end && ((flags[q] & POPULATED) !== 0) === populated) q++;
        const from = pos + (p - first) * ps;
        const to = pos + (q - first) * ps;
        if (populated) {
          buf.copy(this.ramBuf, p * ps, from, to);
        } else {
          buf.copy(this.stagingBuf!, 0, from, to);
          this.placeRun(p * ps, q - p, true);
        }
        p = q;
      }
    }
    for (let p = first; p < end; p++) this.markReceived(p, POPULATED);
  }

  zero(offset: number, count: number): void {
    const first = offset / this.ps;
    this.duplicate += count;
    if (!this.postcopy) {
      let populated = false;
      for (let p = first; p < first + count; p++) if (this.flags[p] & POPULATED) populated = true;
      if (populated) this.ram.discard(offset, count * this.ps); // it held data that is now zero
      for (let p = first; p < first + count; p++) this.markReceived(p, 0);
      return;
    }
    this.place(offset, count, false);
  }

  discard(offset: number, count: number): void {
    this.ram.discard(offset, count * this.ps);
    this.discarded += count;
    const first = offset / this.ps;
    for (let p = first; p < first + count; p++) {
      if (this.flags[p] & RECEIVED) this.receivedCount--;
      this.flags[p] = 0;
    }
  }

  endRound(round: number): void { this.rounds = round; }

  switchover(postcopy: boolean, states: Buffer, pos: number, _len: number): void {
    this.bytesAtSwitch = this.bytesIn;
    this.o.vcpus.loadStates(states, pos);
    this.switched = true;
    if (!postcopy) return; // precopy: the vCPUs start at the end of the stream
    this.startPostcopy();
  }

  private startPostcopy(): void {
    // registered since the header advised postcopy
    const uffd = this.uffd;
    if (uffd === null) throw new WireError('postcopy switchover, but the stream header did not advise postcopy');
    const tids = this.o.vcpus.threadIds();
    if (this.o.blocktimeEnabled()) {
      if (uffd.enabled.has('THREAD_ID')) {
        this.blocktime = new BlocktimeContext({
          vcpuThreadIds: tids,
          migrationEvents: this.o.events,
          trace: this.openTrace(),
        });
      } else {
        this.blocktimeFallback = emptyReport(tids, 'the kernel does not report the faulting thread (UFFD_FEATURE_THREAD_ID unsupported): faults cannot be attributed to vCPUs');
      }
    }
    this.postcopy = true;
    this.poller = new UffdPoller(uffd, this.onFaults, { spinMicros: 0, onError: (e) => this.failWith(`userfaultfd: ${e.message}`, true) });
    this.poller.start();
    this.o.status.moveTo('postcopy-active');
    this.startVcpus();
  }

  /** The trace file, when x-blocktime-trace names one. A file that cannot be
   *  opened now (it was checked when the parameter was set) costs the trace,
   *  never the guest: the vCPUs on the source are already stopped. */
  private openTrace(): ReturnType<typeof openTraceFile> {
    try {
      return openTraceFile(this.o.params.value('x-blocktime-trace'));
    } catch (e) {
      this.traceError = (e as Error).message;
      return undefined;
    }
  }

  private startVcpus(): void {
    if (this.o.autostart()) {
      this.o.vcpus.resume();
      this.o.setRunState('running');
    } else {
      this.o.setRunState('paused');
    }
    this.reply(encodeBare(RP_RUNNING));
  }

  end(): void {
    if (this.receivedCount !== this.pageCount) {
      const u = this.urgentSocket;
      if (this.postcopy && u && !u.destroyed) { // the rest is on the urgent channel
        this.endPending = true;
        return;
      }
      throw new WireError(`the stream ended with ${this.pageCount - this.receivedCount} of ${this.pageCount} pages never received`);
    }
    this.complete();
  }

  private maybeComplete(): void {
    if (this.receivedCount === this.pageCount) {
      this.endPending = false;
      this.complete();
    }
  }

  private complete(): void {
    this.server?.close();
    this.server = null;
    this.removeSocketFile();
    this.over = true;
    this.endMs = performance.now();
    // un-register first: once 'completed' is visible, guest RAM is plain memory
    // again (after precopy that happens at once, there is no poller to stop:
    // the vCPUs start on plain memory)
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

  // ---------------------------------------------------------------- postcopy placement

  private markReceived(p: number, extra: number): void {
    if ((this.flags[p] & RECEIVED) === 0) this.receivedCount++;
    this.flags[p] = (this.flags[p] & (REQUESTED | WAITED)) | RECEIVED | extra;
  }

  /** Postcopy placement of a run, then the accounting of the faults it ends. */
  private place(offset: number, count: number, copy: boolean): void {
    this.placeRun(offset, count, copy);
    const first = offset / this.ps;
    const bt = this.blocktime;
    const flags = this.flags;
    for (let p = first; p < first + count; p++) {
      const f = flags[p];
      if ((f & RECEIVED) === 0) {
        this.receivedCount++;
        if ((f & REQUESTED) !== 0) this.awaited--;
      }
      flags[p] = (f & ~WAITED) | RECEIVED;
      if ((f & WAITED) !== 0 && bt !== null) bt.end(this.base + p * this.ps);
    }
  }

  /** UFFDIO_COPY (from staging) or UFFDIO_ZEROPAGE of a run, retried while
   *  the kernel answers EAGAIN (the address space is changing) */
  private placeRun(offset: number, count: number, copy: boolean): void {
    const uffd = this.uffd!;
    const addr = this.base + offset;
    const len = count * this.ps;
    for (let attempt = 0; ; attempt++) {
      const r = copy ? uffd.copy(addr, this.staging!.base, len) : uffd.zeropage(addr, len);
      this.placeCalls++;
      if (r !== 'again') return;
      if (attempt >= PLACE_RETRIES) throw new Error(`placing ${count} pages at offset ${offset}: the kernel kept answering EAGAIN`);
    }
  }

  /** Fault reader: every fault either resolves at once (page already here)
   *  or becomes a page request; returns the number of messages handled. */
  private readonly onFaults = (): number => {
    const uffd = this.uffd;
    if (!uffd || uffd.closed) return 0;
    const n = uffd.readEvents();
    if (n === 0) return 0;
    const base = this.base;
    const ps = this.ps;
    const flags = this.flags;
    const bt = this.blocktime;
    let slot: ReqSlot | null = null;
    let k = 0;
    for (let i = 0; i < n; i++) {
      if (uffd.eventKind(i) !== EVENT_PAGEFAULT) continue;
      const page = Math.floor((uffd.faultAddress(i) - base) / ps);
      if (page < 0 || page >= this.pageCount) continue;
      const addr = base + page * ps;
      const f = flags[page];
      if ((f & RECEIVED) !== 0) { // here already (a zero page left untouched, or placed meanwhile)
        if (uffd.zeropage(addr, ps) === 'again') uffd.wake(addr, ps);
        continue;
      }
      if (this.over) continue; // failed: no more requests; the thread stays blocked
      if (bt !== null) {
        bt.begin(addr, uffd.faultThreadId(i));
        flags[page] = f | WAITED;
      }
      if ((f & REQUESTED) !== 0) continue;
      flags[page] |= REQUESTED;
      this.awaited++;
      this.requestsSent++;
      if (slot === null) slot = this.reqPool.pop() ?? this.newReqSlot();
      writeRecordHeader(slot.buf, k * RECORD_HEADER_BYTES, RP_REQ_PAGES, 0, ps, page * ps);
      if (++k === REQ_BATCH) { this.sendRequests(slot, k); slot = null; k = 0; }
    }
    if (slot !== null) {
      if (k > 0) this.sendRequests(slot, k); else this.reqPool.push(slot);
    }
    return n;
  };

  private sendAck(): void {
    this.mainAcked = this.mainIn;
    const slot = this.reqPool.pop() ?? this.newReqSlot();
    writeRecordHeader(slot.buf, 0, RP_ACK, 0, 0, this.mainIn);
    this.sendRequests(slot, 1);
  }

  private sendRequests(slot: ReqSlot, k: number): void {
    const s = this.socket;
    if (!s || s.destroyed) { slot.release(); return; }
    s.write(slot.views[k - 1], slot.release);
  }

  private newReqSlot(): ReqSlot {
    const buf = Buffer.allocUnsafe(REQ_BATCH * RECORD_HEADER_BYTES);
    const views: Buffer[] = [];
    for (let j = 1; j <= REQ_BATCH; j++) views.push(buf.subarray(0, j * RECORD_HEADER_BYTES));
    const slot: ReqSlot = { buf, views, release: () => { if (this.reqPool.length < REQ_POOL) this.reqPool.push(slot); } };
    return slot;
  }

  // ---------------------------------------------------------------- ending

  private reply(buf: Buffer): void {
    const s = this.socket;
    if (s && !s.destroyed && s.writable) s.write(buf);
  }

  private failWith(reason: string, tellSource: boolean): void {
    if (this.over && !this.endPending) return;
    this.endPending = false;
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

  /** After completion (or a failure before postcopy): un-register guest RAM;
   *  untouched zero pages fault normally from now on. Without a poller to
   *  stop, the un-registering is done when this returns. */
  private async releaseUffd(): Promise<void> {
    const poller = this.poller;
    this.poller = null;
    if (poller) await poller.stop();
    const u = this.uffd;
    if (u && !u.closed) {
      try { u.unregister(this.base, this.ram.bytes); } catch { /* RAM gone */ }
      u.close();
    }
    this.uffd = null;
    this.staging?.dispose();
    this.staging = null;
    this.stagingBuf = null;
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
    if (this.blocktime && this.blocktime.state !== 'destroyed') {
      const r = this.blocktime.report();
      if (this.traceError) r['x-blocktime'].traceError = this.traceError;
      return r;
    }
    return this.blocktimeFallback ?? undefined;
  }

  ramStats(): MigrationRamStats {
    const end = this.endMs >= 0 ? this.endMs : performance.now();
    const secs = Math.max(0.001, (end - (this.startMs || end)) / 1000);
    return {
      transferred: this.bytesIn,
      remaining: (this.pageCount - this.receivedCount) * this.ps,
      total: this.ram.bytes,
      duplicate: this.duplicate,
      normal: this.normal,
      'normal-bytes': this.normal * this.ps,
      mbps: Math.round(((this.bytesIn * 8) / 1e6 / secs) * 100) / 100,
      'pages-per-second': Math.round((this.normal + this.duplicate) / secs),
      'dirty-sync-count': this.rounds,
      'postcopy-requests': this.requestsSent,
      'postcopy-bytes': this.postcopy ? this.bytesIn - this.bytesAtSwitch : 0,
      'precopy-bytes': this.postcopy ? this.bytesAtSwitch : this.bytesIn,
      'downtime-bytes': 0,
      'page-size': this.ps,
      'dirty-pages-rate': 0,
    };
  }

  /** pages dropped on the source's DISCARD (dirtied after they were sent) */
  get discardedPages(): number { return this.discarded; }

  /** UFFDIO_COPY/ZEROPAGE calls made (a run of pages is one call) */
  get placements(): number { return this.placeCalls; }
}

function socketFileExists(path: string): boolean {
  try {
    return lstatSync(path) !== undefined;
  } catch {
    return false;
  }
}
