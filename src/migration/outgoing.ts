// The source side of a migration (QEMU's migration.c outgoing path): connect,
// send the header, precopy rounds over pages that are new or dirty, converge
// (stop-and-copy) or switch to postcopy (discard, vCPU state, then the
// background push while the page server answers requests), and finish when
// the destination says every page is in place.
//
// The data plane is native: the stream sender (native-shim/stream_sender.c,
// QEMU's migration thread) writes every byte of the main stream, control
// records queued from here (encoded by wire.ts) and passes over guest RAM,
// which it walks itself (page flags in native memory: outgoing-ram.ts). This
// event loop keeps the control plane: it looks every few milliseconds at
// what the sender finished, syncs the dirty bitmap between passes, decides
// to go round again, converge or switch, and reads the return path.

import net from 'node:net';
import type { EventEmitter } from 'node:events';
import type { MigrationRamStats } from './api.js';
import { ramStatsOf } from './ram-stats.js';
import type { GuestMemory, VcpuControl } from './guest.js';
import type { MigrationStatusMachine } from './status.js';
import type { Parameters } from './parameters.js';
import { ConvergenceWatch, describeStall, type ConvergenceInfo } from './convergence.js';
import { systemErrorText } from '../errors.js';
import { startDirtyTracking, type DirtyTracker, type DirtyTrackingMode } from './dirty-tracker.js';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import { PageChannel, SenderStat, PageServerStat } from '../native/page-channel.js';
import {
  ReturnDecoder, encodeHeader, encodeBare, encodeSwitchover, encodeText, WireError,
  REC_END_ROUND, REC_END, REC_ERROR, VCPU_STATE_BYTES, type ReturnHandler,
} from './wire.js';
import { SourceRam } from './outgoing-ram.js';
import { SourcePostcopy } from './outgoing-postcopy.js';

/** main-stream bytes the destination has not yet consumed, at most, in
 *  postcopy (a requested page never waits for these: it goes again on the
 *  urgent channel; the window only keeps the destination's queue short) */
const POSTCOPY_WINDOW = 2 * 1024 * 1024;
const CONNECT_TIMEOUT_MS = 10000;
/** a round shorter than this says little about bandwidth */
const MIN_MEASURE_BYTES = 1 << 20;
/** how often the sender's progress is looked at (and its rate limit set) */
const TICK_MS = 2;

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
}

type Phase = 'connecting' | 'precopy' | 'switching' | 'postcopy' | 'finishing' | 'done';

export class OutgoingMigration implements ReturnHandler {
  private readonly ram: GuestMemory;
  private readonly ps: number;
  private readonly state: SourceRam;
  private socket: net.Socket | null = null;
  private readonly urgent: SourcePostcopy;
  /** the native main-stream writer, from the connection on */
  private sender: PageChannel | null = null;
  private senderStats: Float64Array = new Float64Array(16);
  private ticker: NodeJS.Timeout | null = null;
  /** passes queued on the sender; it is idle when SenderStat.Passes reaches this */
  private passes = 0;
  /** resolved when the sender finished every queued pass */
  private idleWaiters: (() => void)[] = [];
  private decoder: ReturnDecoder;
  private tracker: DirtyTracker | null = null;
  private phase: Phase = 'connecting';
  private postcopyRequested = false;
  private round = 0;
  private vcpusStopped = false;
  /** the postcopy SWITCHOVER (the vCPU state) went out: the guest may run on
   *  the destination now, so it never runs here again */
  private postcopyStatesSent = false;
  private destRunning = false;
  private roundStartMs = 0;
  private roundStartBytes = 0;
  private bandwidth = 0; // bytes/s measured over the last round
  private lastSyncMs = 0;
  private dirtyRate = 0;
  /** whether precopy rounds still shrink the dirty set */
  private readonly convergenceWatch = new ConvergenceWatch(() => performance.now());
  private syncs = 0;
  /** main-stream bytes when the postcopy phase began / the vCPUs stopped / the destination ran */
  private bytesAtPostcopy = -1;
  private bytesAtStop = -1;
  private bytesAtRunning = -1;
  private startMs = 0;
  private endMs = -1;

  constructor(private readonly o: OutgoingOptions) {
    this.ram = o.ram;
    this.ps = o.ram.pageSize;
    this.state = new SourceRam(o.ram, { sender: () => this.senderFigures(), server: () => this.urgent.figures() });
    this.urgent = new SourcePostcopy((why) => this.failLater(why), () => this.phase === 'done');
    this.decoder = new ReturnDecoder(this, o.ram.bytes, this.ps);
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
        this.sender = PageChannel.startStreamSender({ sock, ramBase: this.ram.base, pageSize: this.ps, pages: this.state.pages, flags: this.state.address });
      } catch (e) {
        this.fail(`cannot ${this.tracker ? 'start the stream sender' : 'track dirty pages'}: ${(e as Error).message}`);
        return;
      }
      const h = { pageSize: this.ps, vcpus: this.o.vcpus.count, ramBytes: this.ram.bytes, workload: this.o.workload };
      this.sender.send(encodeHeader({ ...h, postcopy: this.o.postcopy }));
      this.urgent.connect(addr, h);
      this.phase = 'precopy';
      this.roundStartMs = performance.now();
      this.lastSyncMs = this.roundStartMs;
      st.moveTo('active');
      this.ticker = setInterval(this.tick, TICK_MS);
      this.startPass(false);
    });
    sock.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk);
      } catch (e) {
        this.fail(`return path: ${(e as Error).message}`);
      }
    });
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

  /** the main connection usually says why (RP_ERROR, close) or that all went
   *  well (RP_COMPLETE, sent just before the destination closes both): give it
   *  a moment to win. Timers run before the loop reads sockets, so after a
   *  loop held up longer than the moment (64 busy vCPUs on 2 cores) the
   *  timer would beat data already waiting: fail only after one more poll. */
  private failLater(why: string): void {
    setTimeout(() => setImmediate(() => this.fail(why)), 500).unref();
  }

  /** migrate_start_postcopy: switch at the next opportunity (the round in progress ends after its batch). */
  requestPostcopy(): void {
    this.postcopyRequested = true;
    if (this.phase === 'precopy') this.sender?.interrupt();
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
    this.urgent.destroy();
    try { await this.tracker?.stop(); } catch { /* released */ }
  }

  /** migrate_cancel */
  cancel(): void {
    const st = this.o.status;
    if (!st.active || this.phase === 'done') return;
    st.moveTo('cancelling');
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
    this.sender?.setInput(SenderStat.Acked, consumed);
  }

  running(): void {
    this.destRunning = true;
    this.bytesAtRunning = this.bytesOut();
    this.o.status.markDowntimeEnd();
  }

  complete(): void {
    if (this.phase !== 'finishing') {
      this.fail('destination reported completion before the end of the stream');
      return;
    }
    void this.finishUp('completed');
  }

  // ---------------------------------------------------------------- the sender

  private senderFigures(): Float64Array {
    return this.sender?.figures(noEvents) ?? this.senderStats;
  }

  private bytesOut(): number { return this.senderFigures()[SenderStat.BytesOut]; }

  private startPass(wrap: boolean): void {
    this.passes++;
    this.sender!.pass(wrap);
  }

  /** resolves once the sender has finished every pass queued */
  private idle(): Promise<void> {
    return new Promise((resolve) => {
      if (this.senderFigures()[SenderStat.Passes] >= this.passes) resolve();
      else this.idleWaiters.push(resolve);
    });
  }

  /** Every TICK_MS: the sender's rate limit for the phase, its failure, and what follows a finished pass. */
  private readonly tick = (): void => {
    const s = this.sender;
    if (s === null || this.phase === 'done') return;
    const p = this.o.params;
    s.setInput(SenderStat.Limit, this.phase === 'precopy' ? p.value('max-bandwidth') : this.phase === 'postcopy' ? p.value('max-postcopy-bandwidth') : 0);
    if (s.state === 'failed') { this.fail(`sending: ${s.error}`); return; }
    if (s.stat(SenderStat.Passes) < this.passes) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
    try {
      if (this.phase === 'precopy') {
        if (this.postcopyRequested) void this.switchToPostcopy();
        else this.endOfRound();
      } else if (this.phase === 'postcopy' && this.state.needed === 0) {
        this.phase = 'finishing';
        s.send(encodeBare(REC_END));
      }
    } catch (e) {
      this.fail(`sending: ${(e as Error).message}`);
    }
  };

  /** End of a precopy pass: sync the dirty set, then converge or go round again. */
  private endOfRound(): void {
    const now = performance.now();
    const roundMs = Math.max(1, now - this.roundStartMs);
    const roundBytes = this.bytesOut() - this.roundStartBytes;
    if (roundBytes >= MIN_MEASURE_BYTES || this.bandwidth === 0) this.bandwidth = (roundBytes * 1000) / roundMs;
    this.round++;
    this.sender!.send(encodeBare(REC_END_ROUND, this.round));
    const dirtied = this.state.sync(this.tracker!);
    this.syncs++;
    this.dirtyRate = (dirtied * 1000) / Math.max(1, now - this.lastSyncMs);
    this.lastSyncMs = now;
    const needed = this.state.needed;
    this.convergenceWatch.round({ remainingBytes: needed * this.ps, dirtyRate: this.dirtyRate * this.ps, bandwidth: this.bandwidth });
    this.roundStartMs = now;
    this.roundStartBytes = this.bytesOut();
    const expectedMs = needed === 0 ? 0 : this.bandwidth > 0 ? (needed * this.ps * 1000) / this.bandwidth : Infinity;
    if (expectedMs <= this.o.params.value('downtime-limit')) void this.completePrecopy();
    else this.startPass(false);
  }

  private async stopVcpus(): Promise<void> {
    this.o.status.markDowntimeStart();
    this.vcpusStopped = true;
    this.bytesAtStop = this.bytesOut();
    this.o.setRunState('finish-migrate');
    await this.o.vcpus.pause();
  }

  private statesRecord(postcopy: boolean): Buffer {
    const states = Buffer.alloc(this.o.vcpus.count * VCPU_STATE_BYTES);
    this.o.vcpus.saveStates(states, 0);
    return encodeSwitchover(postcopy, states);
  }

  /** Converged: stop the vCPUs, send what is left (unthrottled: downtime) and the vCPU state. */
  private async completePrecopy(): Promise<void> {
    this.phase = 'switching';
    await this.stopVcpus();
    if (this.isOver()) return;
    try {
      this.state.sync(this.tracker!);
      this.syncs++;
      await this.tracker!.stop();
      if (this.isOver()) return;
      this.o.status.moveTo('device');
      this.startPass(false);
      await this.idle();
      if (this.isOver()) return;
      this.sender!.send(this.statesRecord(false));
      this.phase = 'finishing';
      this.sender!.send(encodeBare(REC_END));
    } catch (e) {
      this.fail(`switchover: ${(e as Error).message}`);
    }
  }

  /** migrate_start_postcopy took effect (the sender is idle): discard, vCPU state, then postcopy. */
  private async switchToPostcopy(): Promise<void> {
    this.phase = 'switching';
    await this.stopVcpus();
    if (this.isOver()) return;
    try {
      this.o.status.moveTo('postcopy-active');
      this.state.sync(this.tracker!);
      this.syncs++;
      await this.tracker!.stop();
      if (this.isOver()) return;
      const discards = this.state.discards(); // pages dirtied since the destination got them
      if (discards.length > 0) this.sender!.send(discards);
      // the page server must be serving before the destination's vCPUs run
      await this.urgent.start({ ramBase: this.ram.base, pageSize: this.ps, pages: this.state.pages, flags: this.state.address, sender: this.sender! },
        (st, error) => {
          // every page sent: the destination closes the urgent channel as it
          // completes, and says so on the main connection only once it has
          // released guest RAM; that connection decides (RP_COMPLETE,
          // RP_ERROR, or closing early)
          if (st === 'failed') this.fail(error);
          else if (this.phase !== 'done' && this.state.needed > 0) this.failLater('the destination closed the urgent channel');
        });
      if (this.isOver()) return;
      this.postcopyStatesSent = true;
      const states = this.statesRecord(true);
      this.sender!.send(states);
      await this.idle();
      this.bytesAtPostcopy = this.bytesOut() + states.length;
      this.phase = 'postcopy';
      this.sender!.setInput(SenderStat.Window, POSTCOPY_WINDOW);
      this.startPass(true);
    } catch (e) {
      this.fail(`postcopy switchover: ${(e as Error).message}`);
    }
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

  /** Stops the sender (joined at once: the batch in progress goes out whole, then `last`); whether `last` went out. */
  private stopSender(last: Buffer): boolean {
    const s = this.sender;
    if (s === null) return false;
    const sent = s.stopWith(last);
    this.senderStats = s.figures(noEvents).slice();
    s.dispose();
    this.sender = null;
    return sent;
  }

  private async finishUp(how: 'completed' | 'failed' | 'cancelled'): Promise<void> {
    if (this.phase === 'done') return;
    const switched = this.vcpusStopped && (this.postcopyRequested || this.phase === 'finishing' || how === 'completed');
    const connected = this.phase !== 'connecting';
    this.phase = 'done';
    this.endMs = performance.now();
    if (this.ticker) { clearInterval(this.ticker); this.ticker = null; }
    for (const w of this.idleWaiters.splice(0)) w();
    const st = this.o.status;
    // a failure or a cancel says why on the stream (ERROR, after the records
    // in progress) while the connection still takes it, so the destination
    // fails with the same reason
    const why = how === 'completed' ? null : encodeText(REC_ERROR, how === 'cancelled' ? 'migration cancelled by the source' : st.errorDesc ?? 'the source failed');
    const told = this.stopSender(why ?? Buffer.alloc(0));
    this.urgent.close(how === 'failed');
    this.state.free();
    if (how === 'completed') st.moveTo('completed');
    else if (how === 'cancelled' && st.status === 'cancelling') st.moveTo('cancelled');
    const sock = this.socket;
    if (sock) {
      if (why !== null && !told && connected && sock.writable && !sock.connecting) sock.end(why); // no sender ran
      else if (how === 'failed' && !told) sock.destroy();
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
  get requestsInFlight(): number { return this.urgent.inflightHits; }

  ramStats(): MigrationRamStats {
    const f = this.urgent.figures();
    const s = this.senderFigures();
    const urgentBytes = f[PageServerStat.BytesOut];
    const main = s[SenderStat.BytesOut];
    const postcopyMain = this.bytesAtPostcopy >= 0 ? main - this.bytesAtPostcopy : 0;
    const downtimeEnd = this.bytesAtRunning >= 0 ? this.bytesAtRunning : main;
    return ramStatsOf({
      transferred: main + urgentBytes,
      remaining: this.state.needed * this.ps,
      total: this.ram.bytes,
      normal: s[SenderStat.Normal] + f[PageServerStat.Normal],
      duplicate: s[SenderStat.Zero] + f[PageServerStat.Zero],
      pageSize: this.ps,
      elapsedMs: (this.endMs >= 0 ? this.endMs : performance.now()) - this.startMs,
      syncs: this.syncs,
      requests: f[PageServerStat.Requests],
      postcopyBytes: postcopyMain + urgentBytes,
      precopyBytes: main - postcopyMain,
      downtimeBytes: this.bytesAtStop >= 0 ? downtimeEnd - this.bytesAtStop : 0,
      dirtyPagesRate: this.dirtyRate,
    });
  }
}

/** the sender pushes no events */
const noEvents = (): void => undefined;
