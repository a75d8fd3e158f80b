// The destination side of a migration (QEMU's incoming path + postcopy-ram.c):
// listen, check the header against this VM, place precopy pages into guest RAM
// (registered with userfaultfd, MISSING, from the start), drop discarded
// pages, and at the postcopy switchover start the vCPUs with the native fault
// thread (native-shim/fault_thread.c) serving their faults: it requests each
// missing page on the urgent channel and places it when it comes back, with
// no event loop on the way. The main stream's background pages are placed
// here, a whole run per UFFDIO_COPY, or with UFFDIO_ZEROPAGE.
//
// The blocktime (destination-blocktime.ts) is fed from both, in time order:
// FAULT and PLACED events the fault thread pushes to its ring, drained here
// every few milliseconds and before each main-stream chunk, and the
// placements made here, stamped right after their ioctl. Hot paths use
// typed-array flags per page (in native memory, which the fault thread reads)
// and preallocated buffers: nothing is allocated per fault or per page in
// steady state.

import net from 'node:net';
import { listenUnixPrivate, removeUnixSocket, type BoundUnixSocket } from '../unix-listen.js';
import type { EventEmitter } from 'node:events';
import type { MigrationRamStats } from './api.js';
import { ramStatsOf } from './ram-stats.js';
import type { GuestMemory, VcpuControl } from './guest.js';
import type { MigrationStatusMachine } from './status.js';
import type { Parameters } from './parameters.js';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import {
  StreamDecoder, encodeBare, encodeText, writeRecordHeader, WireError,
  RECORD_HEADER_BYTES, RP_RUNNING, RP_COMPLETE, RP_ERROR, RP_ACK, maxRunPages,
  type StreamHandler, type StreamHeader,
} from './wire.js';
import { Userfaultfd, StagingArea, IOCTL_ZEROPAGE, UFFD_PAGE_SIZE, type PlaceOptions } from '../uffd/index.js';
import { NativeBlock } from '../native/memory.js';
import {
  PageChannel, ChannelEvent, FaultThreadStat, CHANNEL_EVENT_MASK, FAULT_CAUSE_SHIFT, type ChannelEventSink,
} from '../native/page-channel.js';
import { monotonicNs, type BlocktimeReport } from '../blocktime/index.js';
import { PAGE_PLACED, PAGE_WAITED } from '../blocktime/rules.js';
import { DestinationBlocktime } from './destination-blocktime.js';
import { CommandError } from '../errors.js';

// page flags (bit RECEIVED is read by the fault thread: native-shim/channel.h)
const RECEIVED = 1;  // the page's content is here (or it is known to be zero)
const POPULATED = 2; // the page holds data written by us (precopy)
/** the blocktime rules' bits (waited on, placed in the merged time order) */
const ACCOUNTING = PAGE_WAITED | PAGE_PLACED;

const PLACE_RETRIES = 1000;
/** acknowledge the main stream every this many bytes (the source's postcopy window is larger) */
const ACK_EVERY = 64 * 1024;
/** how often the fault thread's events are drained and its state looked at */
const DRAIN_EVERY_MS = 2;
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
  /** page flags, in native memory the fault thread reads */
  private readonly flagsBlock: NativeBlock;
  private readonly flags: Uint8Array;
  private receivedCount = 0;
  private server: net.Server | null = null;
  private socket: net.Socket | null = null;
  private urgentSocket: net.Socket | null = null;
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
  private unixSocket: BoundUnixSocket | null = null;
  private readonly decoder: StreamDecoder;
  private uffd: Userfaultfd | null = null;
  /** the native fault thread, from the postcopy switchover until the end */
  private channel: PageChannel | null = null;
  private staging: StagingArea | null = null;
  private stagingBuf: Buffer | null = null;
  /** a page of zeros to place zero pages with UFFDIO_COPY where the kernel has no
   *  UFFDIO_ZEROPAGE (hugetlbfs: no zero huge page); null: UFFDIO_ZEROPAGE */
  private zeroPage: StagingArea | null = null;
  /** UFFDIO_COPY's step past a page already there, for huge pages (4 KiB: the default, and copy()'s fast path) */
  private readonly placeOpts: PlaceOptions | undefined;
  /** the blocktime, from the postcopy switchover on (capability postcopy-blocktime) */
  private blocktime: DestinationBlocktime | null = null;
  private blocktimeFallback: BlocktimeReport | null = null;
  private postcopy = false;
  private switched = false;
  private over = false;
  // counters
  private bytesIn = 0;
  private mainIn = 0;
  private mainAcked = 0;
  private normal = 0;
  private duplicate = 0;
  private discarded = 0;
  private placeCalls = 0;
  /** the fault thread's counters once it stopped (FaultThreadStat indices) */
  private channelStats: Float64Array = new Float64Array(16);
  private startMs = 0;
  private endMs = -1;

  constructor(private readonly o: IncomingOptions) {
    this.ram = o.ram;
    this.base = o.ram.base;
    this.ps = o.ram.pageSize;
    this.pageCount = o.ram.bytes / this.ps;
    this.placeOpts = this.ps === UFFD_PAGE_SIZE ? undefined : { pageSize: this.ps };
    this.flagsBlock = new NativeBlock(this.pageCount);
    this.flags = new Uint8Array(this.flagsBlock.buffer, 0, this.pageCount);
    this.decoder = new StreamDecoder(this, Math.max(65536, this.ps));
    this.urgentDecoder = new StreamDecoder(this.urgentHandler, Math.max(65536, this.ps), true);
  }

  /** Listens on `addr`; resolves once listening. The status stays 'none'
   *  (capabilities can still be set) until the source connects. */
  async listen(addr: MigrationAddress): Promise<void> {
    const server = net.createServer((s) => this.accept(s));
    this.server = server;
    const where = `Failed to listen on '${formatMigrationUri(addr)}'`;
    try {
      if (addr.transport === 'tcp') {
        await new Promise<void>((resolve, reject) => {
          server.once('error', (e: NodeJS.ErrnoException) =>
            reject(new CommandError(`${where}: ${e.code === 'EADDRINUSE' ? 'Address already in use' : e.message}`)));
          server.listen({ host: addr.host, port: addr.port }, () => resolve());
        });
      } else {
        this.unixSocket = await listenUnixPrivate(server, addr.path, where);
      }
    } catch (e) {
      this.server = null;
      throw e;
    }
  }

  /** the bound address (tcp port when 0 was asked) */
  address(): string | null {
    const a = this.server?.address();
    if (!a) return null;
    // a unix socket was bound under a temporary name, then renamed
    if (this.unixSocket) return `unix:${this.unixSocket.path}`;
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
        // keeps the fault thread's ring short while chunks keep the event
        // loop busy (the 2 ms ticker may lag); their order is the blocktime's
        this.channel?.drain(this.onChannelEvent);
        this.decoder.push(chunk);
        if (this.postcopy && this.mainIn - this.mainAcked >= ACK_EVERY) this.sendAck();
      } catch (e) {
        this.failWith(e instanceof WireError ? `migration stream: ${e.message}` : `migration: ${(e as Error).message}`, true);
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
    let ioctls = 0;
    try {
      // every page missing, as QEMU's postcopy init makes it: a page already
      // there (-mem-prealloc) would take no UFFDIO_COPY (EEXIST) and keep its old bytes
      this.ram.discard(0, this.ram.bytes);
      uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
      ioctls = uffd.register(this.base, this.ram.bytes, { missing: true });
    } catch (e) {
      if (uffd && !uffd.closed) uffd.close();
      if (required) throw new WireError(`this destination cannot do postcopy: ${(e as Error).message}`);
      return;
    }
    this.uffd = uffd;
    this.staging = StagingArea.create(1, maxRunPages(this.ps) * this.ps);
    this.stagingBuf = this.staging.slot(0);
    if ((ioctls & IOCTL_ZEROPAGE) === 0) this.zeroPage = StagingArea.create(1, this.ps); // never written: zeros
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
      this.ram.contents.copyIn(first, buf, pos, count * ps);
    } else {
      for (let p = first; p < end;) { // runs of pages alike: already written, or not yet
        const populated = (flags[p] & POPULATED) !== 0;
        let q = p + 1;
        while (q < end && ((flags[q] & POPULATED) !== 0) === populated) q++;
        const from = pos + (p - first) * ps;
        const to = pos + (q - first) * ps;
        if (populated) {
          this.ram.contents.copyIn(p, buf, from, to - from);
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
    // registered since the header advised postcopy
    if (this.uffd === null) throw new WireError('postcopy switchover, but the stream header did not advise postcopy');
    this.postcopy = true; // pages from here on are placed atomically
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
    if (!this.postcopy || !this.urgentReady || this.channel !== null || this.over) return;
    const uffd = this.uffd!;
    if (this.o.blocktimeEnabled()) {
      if (uffd.enabled.has('THREAD_ID')) {
        this.blocktime = new DestinationBlocktime({
          vcpus: this.o.vcpus, events: this.o.events, tracePath: this.o.params.value('x-blocktime-trace'),
          base: this.base, pageSize: this.ps, flags: this.flags,
        });
      } else {
        this.blocktimeFallback = DestinationBlocktime.unavailable(this.o.vcpus);
      }
    }
    this.channel = PageChannel.startFaultThread({
      uffd: uffd.fd, sock: this.urgentSocket!, ramBase: this.base, pageSize: this.ps, pages: this.pageCount,
      flags: this.flagsBlock.address, blocktime: this.blocktime !== null, zeroSrc: this.zeroPage?.base ?? 0,
      readahead: this.o.params.value('x-postcopy-readahead'),
      stamps: this.blocktime?.stamps,
    });
    this.blocktime?.stampWith(this.channel.clockBase);
    this.channel.tickEvery(DRAIN_EVERY_MS, this.drainChannel);
    this.o.status.moveTo('postcopy-active');
    this.startVcpus();
  }

  /** The fault thread's events so far; its failure fails the migration;
   *  completes when END waited for requested pages. */
  private readonly drainChannel = (): void => {
    const ch = this.channel;
    if (ch === null) return;
    this.drainEvents();
    const st = ch.state;
    if (st === 'closed') this.urgentClosed();
    else if (st === 'failed') this.failWith(ch.error, true);
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

  /** one event from the fault thread's ring */
  private readonly onChannelEvent: ChannelEventSink = (kind, page, arg, t) => {
    if ((kind & CHANNEL_EVENT_MASK) === ChannelEvent.Fault) {
      this.blocktime?.fault(page, arg, t, kind >> FAULT_CAUSE_SHIFT);
      return;
    }
    this.received(page, arg);
    this.blocktime?.placed(page, arg, t);
  };

  /** The fault thread's events so far, then the blocktime's events that no
   *  event still to come can precede any more. */
  private drainEvents(): void {
    const ch = this.channel;
    if (ch === null) return;
    const bt = this.blocktime;
    if (bt === null) ch.drain(this.onChannelEvent);
    else bt.drained(() => ch.drainOrdered(this.onChannelEvent, monotonicNs()));
  }

  /** Stops the fault thread and takes its last events and figures. */
  private stopChannel(): void {
    if (this.channel === null) return;
    this.channelStats = this.channel.close(this.onChannelEvent);
    this.channel = null;
    this.blocktime?.channelStopped();
  }

  private startVcpus(): void {
    if (this.o.autostart()) {
      this.o.vcpus.resume();
      this.o.setRunState('running');
    } else {
      this.o.setRunState('paused');
    }
    this.blocktime?.vcpusStarted(() => this.drainEvents());
    this.reply(encodeBare(RP_RUNNING));
  }

  end(): void {
    this.drainEvents();
    if (this.receivedCount !== this.pageCount) {
      if (this.channel !== null && this.channel.state === 'running') { // the rest is on the urgent channel
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
    this.stopChannel();
    this.blocktime?.end();
    this.over = true;
    this.endMs = performance.now();
    // un-register first: once 'completed' is visible, guest RAM is plain memory
    // again (the fault thread is stopped already; after precopy there is none
    // and the vCPUs start on plain memory)
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
    this.flags[p] = (this.flags[p] & ACCOUNTING) | RECEIVED | extra;
  }

  /** Postcopy placement of a run, stamped right after the ioctl (its
   *  waiters are woken at its end); the faults it ends are accounted in
   *  time order with the fault thread's events. */
  private place(offset: number, count: number, copy: boolean): void {
    this.placeRun(offset, count, copy);
    const first = offset / this.ps;
    this.blocktime?.backgroundPlaced(first, count, monotonicNs());
    this.received(first, count);
  }

  /** Pages [first, first+count) are in place (here, or by the fault thread): counted once. */
  private received(first: number, count: number): void {
    const flags = this.flags;
    for (let p = first, end = first + count; p < end; p++) {
      const f = flags[p];
      if ((f & RECEIVED) === 0) {
        this.receivedCount++;
        flags[p] = f | RECEIVED;
      }
    }
  }

  /** UFFDIO_COPY (from staging) or UFFDIO_ZEROPAGE of a run (on hugetlbfs:
   *  UFFDIO_COPY of the zero page, page by page), retried while the kernel
   *  answers EAGAIN (the address space is changing) */
  private placeRun(offset: number, count: number, copy: boolean): void {
    const zero = this.zeroPage;
    if (!copy && zero !== null) {
      for (let i = 0; i < count; i++) this.placeOne(offset + i * this.ps, 1, zero.base);
      return;
    }
    this.placeOne(offset, count, copy ? this.staging!.base : -1);
  }

  /** one ioctl (and its EAGAIN retries): UFFDIO_COPY from `src`, or UFFDIO_ZEROPAGE when src is -1 */
  private placeOne(offset: number, count: number, src: number): void {
    const uffd = this.uffd!;
    const addr = this.base + offset;
    const len = count * this.ps;
    for (let attempt = 0; ; attempt++) {
      const r = src >= 0 ? uffd.copy(addr, src, len, this.placeOpts) : uffd.zeropage(addr, len);
      this.placeCalls++;
      if (r !== 'again') return;
      if (attempt >= PLACE_RETRIES) throw new Error(`placing ${count} pages at offset ${offset}: the kernel kept answering EAGAIN`);
    }
  }

  private sendAck(): void {
    this.mainAcked = this.mainIn;
    const ack = Buffer.allocUnsafe(RECORD_HEADER_BYTES); // one per ACK_EVERY bytes
    writeRecordHeader(ack, 0, RP_ACK, 0, 0, this.mainIn);
    this.reply(ack);
  }

  // ---------------------------------------------------------------- ending

  private reply(buf: Buffer): void {
    const s = this.socket;
    if (s && !s.destroyed && s.writable) s.write(buf);
  }

  private failWith(reason: string, tellSource: boolean): void {
    if (this.over) return;
    this.endPending = false;
    this.stopChannel(); // no more requests; the blocktime keeps what was placed
    this.blocktime?.end();
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

  /** After completion (or a failure before postcopy): stop the fault thread
   *  (joined at once), un-register guest RAM; untouched zero pages fault
   *  normally from now on. All done when this returns. */
  private async releaseUffd(): Promise<void> {
    this.stopChannel();
    const u = this.uffd;
    if (u && !u.closed) {
      try { u.unregister(this.base, this.ram.bytes); } catch { /* RAM gone */ }
      u.close();
    }
    this.uffd = null;
    this.staging?.dispose();
    this.staging = null;
    this.stagingBuf = null;
    this.zeroPage?.dispose();
    this.zeroPage = null;
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
  }

  private removeSocketFile(): void {
    if (this.unixSocket) removeUnixSocket(this.unixSocket);
    this.unixSocket = null;
  }

  // ---------------------------------------------------------------- queries

  get listening(): boolean { return this.server !== null && this.socket === null; }

  blocktimeReport(): BlocktimeReport | undefined {
    this.drainEvents();
    return this.blocktime?.report() ?? this.blocktimeFallback ?? undefined;
  }

  ramStats(): MigrationRamStats {
    const f = this.channel?.figures(this.onChannelEvent) ?? this.channelStats;
    const bytesIn = this.bytesIn + f[FaultThreadStat.BytesIn];
    const end = this.endMs >= 0 ? this.endMs : performance.now();
    return ramStatsOf({
      transferred: bytesIn,
      remaining: (this.pageCount - this.receivedCount) * this.ps,
      total: this.ram.bytes,
      normal: this.normal + f[FaultThreadStat.Placed],
      duplicate: this.duplicate + f[FaultThreadStat.ZeroPlaced],
      pageSize: this.ps,
      elapsedMs: end - (this.startMs || end),
      syncs: this.rounds,
      requests: f[FaultThreadStat.Requests],
      postcopyBytes: this.postcopy ? bytesIn - this.bytesAtSwitch : 0,
      precopyBytes: this.postcopy ? this.bytesAtSwitch : this.bytesIn,
      downtimeBytes: 0,
      dirtyPagesRate: 0,
    });
  }

  /** pages dropped on the source's DISCARD (dirtied after they were sent) */
  get discardedPages(): number { return this.discarded; }

  /** UFFDIO_COPY/ZEROPAGE calls made (a run of pages is one call) */
  get placements(): number { return this.placeCalls; }
}
