// The source side of a migration (QEMU's migration.c outgoing path): connect,
// send the header, precopy rounds over pages that are new or dirty, converge
// (stop-and-copy) or switch to postcopy (discard, vCPU state, then the
// background push while the page server answers requests), and finish when
// the destination says every page is in place.
//
// The data plane is native (outgoing-stream.ts, outgoing-postcopy.ts); this
// event loop keeps the control plane: every few milliseconds it looks at
// what the sender finished, syncs the dirty bitmap between passes, decides
// to go round again, converge or switch, and it reads the return path.

import type net from 'node:net';
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { MigrationRamStats } from './api.js';
import { ramStatsOf } from './ram-stats.js';
import type { GuestMemory, VcpuControl } from './guest.js';
import type { MigrationStatusMachine } from './status.js';
import type { Parameters } from './parameters.js';
import { describeStall, type ConvergenceInfo } from './convergence.js';
import type { PrecopyThrottle } from './precopy-throttle.js';
import { startDirtyTracking, type DirtyTracker, type DirtyTrackingMode } from './dirty-tracker.js';
import type { MigrationAddress } from './uri.js';
import { SenderStat } from '../native/page-channel.js';
import {
  encodeHeader, encodeBare, encodeSwitchover, encodeText, REC_END_ROUND, REC_END, REC_ERROR, VCPU_STATE_BYTES, TOKEN_BYTES,
} from './wire.js';
import { type ReturnHandler } from './return-decoder.js';
import { connectMain } from './outgoing-connect.js';
import { SourceRam } from './outgoing-ram.js';
import { SourcePostcopy, type UrgentHeader } from './outgoing-postcopy.js';
import { SourceRecovery } from './outgoing-recovery.js';
import { PrecopyRounds } from './outgoing-precopy.js';
import { SourceStream } from './outgoing-stream.js';

/** main-stream bytes the destination has not yet consumed, at most, in
 *  postcopy (a requested page never waits for these: it goes again on the
 *  urgent channel; the window only keeps the destination's queue short).
 *  The acknowledgements come back through the event loop, so the window
 *  must cover its latency at wire speed: 2 MiB held the push to half of it
 *  (QEMU's workload, 150 MiB, sweep over 100 MiB: postcopy 192-232 ms and
 *  132-181 ms of blocktime, against 105-283 ms and 46-96 ms with 8 MiB;
 *  32 MiB gained nothing more) */
const POSTCOPY_WINDOW = 8 * 1024 * 1024;
/** how long the destination may take to say it completed once END is out */
const COMPLETE_TIMEOUT_MS = 5000;
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
  /** auto-converge / dirty-limit, told of every round's dirty sync */
  throttle?: PrecopyThrottle;
  /** x-migration-psk's key, read when the migration started: every connection proves it (channel-auth.ts) */
  psk?: Buffer | null;
}

/** paused: postcopy-paused (the link lost, or migrate_pause); recovering: migrate -r's handshake */
type Phase = 'connecting' | 'precopy' | 'switching' | 'postcopy' | 'finishing' | 'paused' | 'recovering' | 'done';

export class OutgoingMigration implements ReturnHandler {
  private readonly ram: GuestMemory;
  private readonly ps: number;
  private readonly state: SourceRam;
  private socket: net.Socket | null = null;
  private readonly urgent: SourcePostcopy;
  /** the native main-stream writer, from the connection on */
  private readonly stream = new SourceStream();
  private ticker: NodeJS.Timeout | null = null;
  private tracker: DirtyTracker | null = null;
  private phase: Phase = 'connecting';
  private postcopyRequested = false;
  private readonly rounds: PrecopyRounds;
  private vcpusStopped = false;
  /** the postcopy SWITCHOVER (the vCPU state) went out: the guest may run on
   *  the destination now, so it never runs here again */
  private postcopyStatesSent = false;
  private destRunning = false;
  /** END went out and the destination never said it completed (sendEnd) */
  private unanswered = false;
  /** the last RP_ACK taken (main-stream bytes the destination consumed) */
  private acked = 0;
  private startMs = 0;
  private endMs = -1;
  /** the header fields and token of the first connection (a recovery's carry the same) */
  private header: UrgentHeader | null = null;
  /** postcopy recovery (migrate -r) */
  private readonly recovery: SourceRecovery;
  /** connections made so far: a late event of one replaced by a recovery is ignored */
  private link = 0;
  /** watchMainStream's second look is due */
  private stallCheck = false;

  constructor(private readonly o: OutgoingOptions) {
    this.ram = o.ram;
    this.ps = o.ram.pageSize;
    this.state = new SourceRam(o.ram, { sender: () => this.stream.figures(), server: () => this.urgent.figures() });
    this.urgent = new SourcePostcopy({
      failLater: (why, linkLost) => this.failLater(why, linkLost), fail: (why) => this.fail(why),
      heartbeatMs: () => o.params.value('x-postcopy-heartbeat-ms'), done: () => this.phase === 'done', needed: () => this.state.needed,
    });
    this.rounds = new PrecopyRounds(() => performance.now(), this.ps, o.throttle);
    this.recovery = new SourceRecovery({
      ramBase: o.ram.base, ramBytes: o.ram.bytes, pageSize: this.ps, blocks: o.ram.blocks, blockTable: o.ram.blockTable, status: o.status, stream: this.stream, urgent: this.urgent, state: this.state,
      header: () => this.header!,
      psk: o.psk ?? null,
      returnPath: this, setSocket: (s) => { this.socket = s; }, lost: (why) => this.lost(why), fail: (why) => this.fail(why),
      done: () => this.phase === 'done', resumed: () => this.resumed(),
    });
  }

  get trackingMode(): DirtyTrackingMode | undefined { return this.tracker?.mode; }
  get postcopyActive(): boolean { return this.phase === 'postcopy' || (this.phase === 'finishing' && this.postcopyRequested); }

  /** Connects and starts sending; failures end in status 'failed'. */
  start(addr: MigrationAddress): void {
    const st = this.o.status;
    st.moveTo('setup');
    this.startMs = performance.now();
    const first = this.link;
    const mine = (f: () => void): void => { if (this.link === first) f(); };
    this.socket = connectMain(addr, this, this.ram.bytes, this.ps, {
      connected: (sock) => mine(() => this.connected(sock, addr)), fail: (why) => mine(() => this.fail(why)),
      lost: (why) => mine(() => this.lost(why)), connecting: () => this.phase === 'connecting', done: () => this.phase === 'done', psk: this.o.psk,
      blocks: this.ram.blocks,
    });
  }

  private connected(sock: net.Socket, addr: MigrationAddress): void {
    try {
      this.tracker = startDirtyTracking(this.ram, this.o.trackingMode);
      this.stream.start({ sock, ramBase: this.ram.base, pageSize: this.ps, pages: this.state.pages, flags: this.state.address, blocks: this.ram.blockTable });
    } catch (e) {
      this.fail(`cannot ${this.tracker ? 'start the stream sender' : 'track dirty pages'}: ${(e as Error).message}`);
      return;
    }
    // the urgent channel carries the main stream's random token: the destination refuses any other
    const h = {
      pageSize: this.ps, vcpus: this.o.vcpus.count, ramBytes: this.ram.bytes, workload: this.o.workload, token: randomBytes(TOKEN_BYTES),
      blocks: this.ram.blocks.list,
    };
    this.header = h;
    sock.setKeepAlive(true, Math.max(1000, this.o.params.value('x-postcopy-heartbeat-ms')));
    this.stream.send(encodeHeader({ ...h, postcopy: this.o.postcopy }));
    this.urgent.connect(addr, h, this.o.psk);
    this.phase = 'precopy';
    this.rounds.begin(0);
    this.o.status.moveTo('active');
    this.ticker = setInterval(this.tick, TICK_MS);
    this.setLimit();
    this.stream.pass(false);
  }

  /** the main connection usually says why (RP_ERROR, close) or that all went
   *  well (RP_COMPLETE, sent just before the destination closes both): give it
   *  a moment to win. Timers run before the loop reads sockets, so after a
   *  loop held up longer than the moment (64 busy vCPUs on 2 cores) the
   *  timer would beat data already waiting: fail only after one more poll.
   *  `linkLost`: the link went (in postcopy that pauses), not a refusal. */
  private failLater(why: string, linkLost = true): void {
    const link = this.link;
    setTimeout(() => setImmediate(() => {
      if (link !== this.link) return; // a connection a recovery replaced
      if (this.postcopyStatesSent && linkLost) this.lost(why); else this.fail(why);
    }), 500).unref();
  }

  /** migrate_start_postcopy: switch at the next opportunity (the round in progress ends after its batch). */
  requestPostcopy(): void {
    this.postcopyRequested = true;
    if (this.phase === 'precopy') this.stream.interrupt();
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

  requestPages(): void { this.fail('return path: a page request on the main connection (requests come on the urgent channel)'); }
  /** RP_ERROR: the destination failed; or, in a recovery's handshake, refused it (it stays paused, and so does this side) */
  error(reason: string): void {
    if (this.phase === 'recovering') this.lost(`destination: ${reason}`);
    else this.fail(`destination: ${reason}`);
  }
  recvBitmap(bitmap: Buffer): void { this.recovery.bitmap(bitmap); }
  resumeAck(): void { this.recovery.resumeAck(); }
  /** RP_ACK: main-stream bytes the destination consumed, only in postcopy (its receiver acknowledges
   *  from the switchover on), never beyond what was sent, never backwards: else a protocol error */
  ack(consumed: number): void {
    if (this.phase === 'done') return;
    if (!this.postcopyStatesSent) {
      this.fail(`return path: RP_ACK of ${consumed} bytes before the postcopy switchover (the destination acknowledges only in postcopy)`);
    } else if (consumed < this.acked) {
      this.fail(`return path: RP_ACK of ${consumed} bytes goes backwards (${this.acked} were acknowledged before)`);
    } else if (consumed > this.stream.bytesWritten) {
      this.fail(`return path: RP_ACK of ${consumed} bytes, beyond the ${this.stream.bytesWritten} bytes sent on the main stream`);
    } else {
      this.acked = consumed;
      this.stream.set(SenderStat.Acked, consumed);
    }
  }

  running(): void {
    this.destRunning = true;
    this.stream.mark('running');
    this.o.status.markDowntimeEnd();
  }

  complete(): void {
    if (this.phase !== 'finishing') this.fail('destination reported completion before the end of the stream');
    else void this.finishUp('completed');
  }

  // ---------------------------------------------------------------- the sender

  /** Every TICK_MS: the sender's rate limit for the phase, its failure, and what follows a finished pass. */
  private readonly tick = (): void => {
    const s = this.stream;
    if (this.phase === 'done' || this.phase === 'connecting' || this.phase === 'paused' || this.phase === 'recovering') return;
    this.setLimit();
    if (s.state === 'failed') { this.fail(`sending: ${s.error}`); return; }
    // a lost link in precopy: the return path says why (RP_ERROR, or its close)
    if (s.state === 'closed' && this.postcopyStatesSent) { this.lost(s.error); return; }
    if (this.postcopyStatesSent) this.watchMainStream();
    // the round ends for a postcopy request; the push ends once every page
    // is sent (the page server may send the last ones), even while it waits
    // on its rate limit or window (said again each tick: an interrupt applies
    // to the pass in progress only)
    if ((this.phase === 'precopy' && this.postcopyRequested) || (this.phase === 'postcopy' && this.state.needed === 0)) s.interrupt();
    if (!s.poll()) return;
    try {
      if (this.phase === 'precopy') {
        if (this.postcopyRequested) void this.switchToPostcopy();
        else this.endOfRound();
      } else if (this.phase === 'postcopy' && this.state.needed === 0) {
        this.sendEnd();
      }
    } catch (e) {
      this.fail(`sending: ${(e as Error).message}`);
    }
  };

  /** Postcopy: the main stream alone gone silent (the urgent channel's heartbeat still comes, so
   *  neither side notices that way) holds the push back for good: a sender held up, its socket or
   *  its window full, for x-postcopy-heartbeat-ms loses the link. Said again after the loop read
   *  its sockets (an acknowledgement read late is no silence). */
  private watchMainStream(): void {
    const hb = this.o.params.value('x-postcopy-heartbeat-ms');
    if (hb === 0 || this.stallCheck || this.stream.stalledFor(performance.now()) <= hb) return;
    this.stallCheck = true;
    const link = this.link;
    setImmediate(() => {
      this.stallCheck = false;
      if (link !== this.link || this.phase === 'done') return;
      const ms = this.stream.stalledFor(performance.now());
      if (ms > hb) this.lost(`main stream: not one byte went out for ${Math.round(ms)} ms, the socket or the window of unacknowledged bytes full (x-postcopy-heartbeat-ms)`);
    });
  }

  /** the rate limit for the phase (a parameter set meanwhile applies within a tick) */
  private setLimit(): void {
    const p = this.o.params;
    this.stream.set(SenderStat.Limit, this.phase === 'precopy' ? p.value('max-bandwidth') : this.phase === 'postcopy' ? p.value('max-postcopy-bandwidth') : 0);
  }

  /** End of a precopy pass: sync the dirty set, then converge or go round again. */
  private endOfRound(): void {
    this.stream.send(encodeBare(REC_END_ROUND, this.rounds.passEnded(this.stream.bytesOut)));
    const dirtied = this.state.sync(this.tracker!);
    if (this.rounds.synced(dirtied, this.state.needed, this.stream.bytesOut, this.o.params.value('downtime-limit'))) void this.completePrecopy();
    else this.stream.pass(false);
  }

  /** The switchover begins: the vCPUs stop, the last dirty sync, tracking
   *  off (`status` meanwhile); false when the migration ended meanwhile. */
  private async stopForSwitch(status: 'device' | 'postcopy-active'): Promise<boolean> {
    this.phase = 'switching';
    this.o.status.markDowntimeStart();
    this.vcpusStopped = true;
    this.stream.mark('stopped');
    this.o.setRunState('finish-migrate');
    await this.o.vcpus.pause();
    if (this.isOver()) return false;
    if (status === 'postcopy-active') this.o.status.moveTo(status);
    this.state.sync(this.tracker!);
    this.rounds.finalSync();
    await this.tracker!.stop();
    if (this.isOver()) return false;
    if (status === 'device') this.o.status.moveTo(status);
    return true;
  }

  private statesRecord(postcopy: boolean): Buffer {
    const states = Buffer.alloc(this.o.vcpus.count * VCPU_STATE_BYTES);
    this.o.vcpus.saveStates(states, 0);
    return encodeSwitchover(postcopy, states);
  }

  /** Converged: stop the vCPUs, send what is left (unthrottled: downtime) and the vCPU state. */
  private async completePrecopy(): Promise<void> {
    try {
      if (!await this.stopForSwitch('device')) return;
      this.setLimit(); // none: downtime
      this.stream.pass(false);
      await this.stream.idle();
      if (this.isOver()) return;
      this.stream.send(this.statesRecord(false));
      this.sendEnd();
    } catch (e) {
      this.fail(`switchover: ${(e as Error).message}`);
    }
  }

  /** migrate_start_postcopy took effect (the sender is idle): discard, vCPU state, then postcopy. */
  private async switchToPostcopy(): Promise<void> {
    try {
      if (!await this.stopForSwitch('postcopy-active')) return;
      const discards = this.state.discards(); // pages dirtied since the destination got them
      if (discards.length > 0) this.stream.send(discards);
      // the page server must be serving before the destination's vCPUs run
      await this.urgent.start({
        ramBase: this.ram.base, pageSize: this.ps, pages: this.state.pages, flags: this.state.address, sender: this.stream.channel!, blocks: this.ram.blockTable,
      });
      if (this.isOver()) return;
      this.postcopyStatesSent = true;
      const states = this.statesRecord(true);
      this.stream.send(states);
      await this.stream.idle();
      if (this.isOver()) return;
      this.stream.mark('postcopy');
      this.phase = 'postcopy';
      this.stream.set(SenderStat.Window, POSTCOPY_WINDOW);
      this.setLimit();
      this.stream.pass(true);
    } catch (e) {
      this.fail(`postcopy switchover: ${(e as Error).message}`);
    }
  }

  /** Every page is sent: END, then the destination's RP_COMPLETE within COMPLETE_TIMEOUT_MS (one that
   *  waits inside a record whose length was garbled on the way never sends it; nor would any byte more
   *  come to end its wait: without the bound both sides waited for ever) */
  private sendEnd(): void {
    this.phase = 'finishing';
    this.stream.send(encodeBare(REC_END));
    const link = this.link;
    setTimeout(() => {
      if (this.phase !== 'finishing' || link !== this.link) return;
      const why = `the destination did not complete within ${COMPLETE_TIMEOUT_MS / 1000} s of the end of the stream`;
      // in postcopy the guest is split between the two: paused, a recovery can still bring it whole
      if (this.postcopyStatesSent) { this.lost(why); return; }
      this.unanswered = true; // it may hold the whole guest and run it: this one stays paused (`cont` it if not)
      this.fail(`${why} (the guest stays paused here)`);
    }, COMPLETE_TIMEOUT_MS).unref();
  }

  /** the migration ended, or paused (the switchover's steps stop there; a recovery resumes the push) */
  private isOver(): boolean {
    return this.phase === 'done' || this.phase === 'paused' || this.phase === 'recovering' || !this.o.status.active;
  }

  // ---------------------------------------------------------------- pause and recovery

  /** The link is lost (an I/O error, EOF, heartbeat silence): in postcopy the
   *  migration pauses (the guest lives on the destination), else it fails. */
  private lost(why: string): void {
    if (this.phase === 'done' || this.phase === 'paused') return;
    if (this.postcopyStatesSent) this.pause(why, false);
    else this.fail(why);
  }

  /** migrate_pause (on the source: QEMU's "Postcopy migration is paused by the user") */
  pauseByUser(): void {
    this.pause('Postcopy migration is paused by the user', true);
  }

  /** postcopy-paused: the threads stop at once, both channels are dropped (the destination notices on its own) */
  private pause(why: string, byUser: boolean): void {
    if (this.phase === 'done' || this.phase === 'paused') return;
    this.link++;
    this.recovery.invalidate();
    this.stream.abort();
    this.urgent.pause();
    this.socket?.destroy();
    this.socket = null;
    this.phase = 'paused';
    this.o.status.pause(why);
    if (!byUser) this.o.events?.emit('migration-paused', why);
  }

  /** migrate -r URI / migrate {"resume": true} (postcopy-paused) */
  resume(addr: MigrationAddress): void {
    if (this.phase !== 'paused') throw new Error('no paused migration to resume');
    this.phase = 'recovering';
    this.recovery.start(addr);
  }

  /** The destination took RESUME: the push goes on from the pages it lacks. */
  private resumed(): void {
    this.phase = 'postcopy';
    this.acked = 0; // the new connection's bytes
    this.o.status.moveTo('postcopy-active');
    this.stream.set(SenderStat.Window, POSTCOPY_WINDOW);
    this.setLimit();
    this.stream.pass(true);
  }

  /** pages sent again after recoveries (the destination lacked them), recoveries done */
  get recoveryFigures(): { recoveries: number; 'pages-resent': number } {
    return { recoveries: this.recovery.recoveries, 'pages-resent': this.recovery.resent };
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
    const connected = this.phase !== 'connecting';
    this.phase = 'done';
    this.recovery.invalidate();
    this.endMs = performance.now();
    if (this.ticker) { clearInterval(this.ticker); this.ticker = null; }
    const st = this.o.status;
    // a failure or a cancel says why on the stream (ERROR, after the records
    // in progress) while the connection still takes it, so the destination
    // fails with the same reason
    const why = how === 'completed' ? null : encodeText(REC_ERROR, how === 'cancelled' ? 'migration cancelled by the source' : st.errorDesc ?? 'the source failed');
    const told = this.stream.stop(why ?? Buffer.alloc(0));
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
    } else if (this.unanswered) {
      this.o.setRunState('paused');
    } else if (this.vcpusStopped || !this.o.wasRunning) {
      if (this.o.wasRunning) { this.o.vcpus.resume(); this.o.setRunState('running'); } else this.o.setRunState('paused');
    }
  }

  // ---------------------------------------------------------------- stats

  /** precopy that does not converge, said with its figures; undefined otherwise */
  convergence(): ConvergenceInfo | undefined {
    const s = this.phase === 'precopy' ? this.rounds.stall : undefined;
    return s && describeStall(s, { maxBandwidth: this.o.params.value('max-bandwidth'), postcopyRam: this.o.postcopy });
  }

  /** requested pages already sent in the background when asked for (sent again, urgently) */
  get requestsInFlight(): number { return this.urgent.inflightHits; }

  ramStats(): MigrationRamStats {
    return ramStatsOf({
      ...this.stream.counters(this.urgent.figures()),
      remaining: this.state.needed * this.ps,
      total: this.ram.bytes,
      pageSize: this.ps,
      elapsedMs: (this.endMs >= 0 ? this.endMs : performance.now()) - this.startMs,
      syncs: this.rounds.syncs,
      dirtyPagesRate: this.rounds.dirtyRate,
    });
  }
}
