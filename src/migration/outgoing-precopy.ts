// The source's precopy rounds (QEMU's migration_iteration_run and its
// bandwidth/downtime estimate): after each pass over RAM and its dirty sync,
// how fast the stream went, how fast the guest dirtied pages, whether rounds
// still shrink the dirty set (convergence.ts), and whether what is left fits
// in the downtime limit: then the source stops the guest and sends the rest.
// Pure: injected clock, the figures handed in.

import { ConvergenceWatch, type Stall } from './convergence.js';
import type { Clock } from './status.js';
import type { PrecopyThrottle } from './precopy-throttle.js';

/** a round shorter than this says little about bandwidth */
const MIN_MEASURE_BYTES = 1 << 20;

export class PrecopyRounds {
  /** passes over RAM finished */
  round = 0;
  /** dirty syncs made (query-migrate's dirty-sync-count) */
  syncs = 0;
  /** pages/s the guest dirtied between the last two syncs */
  dirtyRate = 0;
  /** bytes/s measured over the last round long enough to say */
  private bandwidth = 0;
  private roundStartMs: number;
  private roundStartBytes = 0;
  private lastSyncMs: number;
  private readonly watch: ConvergenceWatch;

  /** `throttle`: auto-converge / dirty-limit, told of every round's dirty sync */
  constructor(private readonly clock: Clock, private readonly pageSize: number, private readonly throttle?: PrecopyThrottle) {
    this.roundStartMs = clock();
    this.lastSyncMs = this.roundStartMs;
    this.watch = new ConvergenceWatch(clock);
  }

  /** The first round begins (the stream's bytes so far). */
  begin(bytesOut: number): void {
    this.roundStartMs = this.clock();
    this.lastSyncMs = this.roundStartMs;
    this.roundStartBytes = bytesOut;
  }

  /** A pass ended (`bytesOut` = the stream's bytes so far): the round's bandwidth; returns the round's number. */
  passEnded(bytesOut: number): number {
    const roundMs = Math.max(1, this.clock() - this.roundStartMs);
    const roundBytes = bytesOut - this.roundStartBytes;
    if (roundBytes >= MIN_MEASURE_BYTES || this.bandwidth === 0) this.bandwidth = (roundBytes * 1000) / roundMs;
    return ++this.round;
  }

  /** The round's dirty sync marked `dirtied` pages, `needed` are left to send:
   *  true when they fit in `downtimeLimitMs` at the measured bandwidth (converge now). */
  synced(dirtied: number, needed: number, bytesOut: number, downtimeLimitMs: number): boolean {
    const now = this.clock();
    this.syncs++;
    this.dirtyRate = (dirtied * 1000) / Math.max(1, now - this.lastSyncMs);
    this.lastSyncMs = now;
    this.watch.round({ remainingBytes: needed * this.pageSize, dirtyRate: this.dirtyRate * this.pageSize, bandwidth: this.bandwidth });
    this.throttle?.dirtySync(dirtied, bytesOut); // convergence tools (precopy-throttle.ts): QEMU acts after the sync
    this.roundStartMs = now;
    this.roundStartBytes = bytesOut;
    const expectedMs = needed === 0 ? 0 : this.bandwidth > 0 ? (needed * this.pageSize * 1000) / this.bandwidth : Infinity;
    return expectedMs <= downtimeLimitMs;
  }

  /** the last sync before the switchover (no round decision) */
  finalSync(): void {
    this.syncs++;
  }

  /** rounds that stopped shrinking the dirty set, or undefined */
  get stall(): Stall | undefined { return this.watch.stall; }
}
