// The migration status machine (QEMU's migration.c states, kept apart from
// RAM transfer): which transitions are legal, when each phase began, and the
// error that ended a failed migration. Every change is emitted as a
// 'migration' event on the Machine's emitter. Times come from an injected
// millisecond clock so the rules are unit-testable.

import type { EventEmitter } from 'node:events';
import { TERMINAL_STATUSES, type MigrationStatus } from './api.js';

const NEXT: Record<MigrationStatus, readonly MigrationStatus[]> = {
  'none': ['setup'],
  'setup': ['active', 'failed', 'cancelling'],
  'active': ['postcopy-active', 'completed', 'failed', 'cancelling', 'device'],
  'device': ['completed', 'failed', 'cancelling'],
  'postcopy-active': ['completed', 'failed', 'cancelling', 'postcopy-paused'],
  'cancelling': ['cancelled', 'failed'],
  'completed': ['setup'],
  'failed': ['setup'],
  'cancelled': ['setup'],
  'pre-switchover': [],
  // postcopy recovery (REFERENCE.md §8): the source connects (recover-setup)
  // then hands over (recover); the destination goes to recover once the new
  // main connection is in. A failure in recovery pauses again. A cancel (or
  // quit) is taken in each of them, as QEMU's migrate_fd_cancel does.
  'postcopy-paused': ['postcopy-recover-setup', 'postcopy-recover', 'failed', 'cancelling'],
  'postcopy-recover-setup': ['postcopy-recover', 'postcopy-paused', 'failed', 'cancelling'],
  'postcopy-recover': ['postcopy-active', 'postcopy-paused', 'failed', 'cancelling'],
};

export type Clock = () => number;
export const wallClockMs: Clock = () => performance.now();

export class MigrationStatusMachine {
  private current: MigrationStatus = 'none';
  private startedAt = 0;
  private setupDoneAt = -1;
  private endedAt = -1;
  private downStart = -1;
  private downEnd = -1;
  private error: string | undefined;

  constructor(private readonly events: EventEmitter, private readonly clock: Clock = wallClockMs) {}

  get status(): MigrationStatus { return this.current; }
  get errorDesc(): string | undefined { return this.error; }
  /** a migration is under way (not none and not terminal) */
  get active(): boolean { return this.current !== 'none' && !TERMINAL_STATUSES.has(this.current); }
  get terminal(): boolean { return TERMINAL_STATUSES.has(this.current); }

  canMoveTo(to: MigrationStatus): boolean {
    return NEXT[this.current].includes(to);
  }

  /** Moves to `to`; an illegal move throws (a bug, not a user error). */
  moveTo(to: MigrationStatus): void {
    if (!this.canMoveTo(to)) throw new Error(`illegal migration status change ${this.current} -> ${to}`);
    const now = this.clock();
    if (to === 'setup') {
      this.startedAt = now;
      this.setupDoneAt = -1;
      this.endedAt = -1;
      this.downStart = -1;
      this.downEnd = -1;
      this.error = undefined;
    }
    if (this.current === 'setup' && to !== 'setup') this.setupDoneAt = now;
    if (TERMINAL_STATUSES.has(to)) {
      this.endedAt = now;
      if (this.downStart >= 0 && this.downEnd < 0) this.downEnd = now;
    }
    this.current = to;
    this.events.emit('migration', to);
  }

  /** Moves to 'failed' with a reason unless already over; returns whether it moved. */
  fail(reason: string): boolean {
    if (!this.canMoveTo('failed')) return false;
    this.error = reason;
    this.moveTo('failed');
    return true;
  }

  /** Moves to 'postcopy-paused' with the reason (shown after the status); returns whether it moved. */
  pause(reason: string): boolean {
    if (!this.canMoveTo('postcopy-paused')) return false;
    this.error = reason;
    this.moveTo('postcopy-paused');
    return true;
  }

  /** The vCPUs stopped for the switchover (start of downtime). */
  markDowntimeStart(): void { if (this.downStart < 0) this.downStart = this.clock(); }
  /** The vCPUs run again on the destination (end of downtime). */
  markDowntimeEnd(): void { if (this.downStart >= 0 && this.downEnd < 0) this.downEnd = this.clock(); }

  /** QEMU's top-level query-migrate times in ms (absent before a migration). */
  times(): { 'total-time'?: number; 'setup-time'?: number; downtime?: number } {
    if (this.current === 'none') return {};
    const now = this.clock();
    const out: { 'total-time'?: number; 'setup-time'?: number; downtime?: number } = {};
    out['total-time'] = Math.floor((this.endedAt >= 0 ? this.endedAt : now) - this.startedAt);
    if (this.setupDoneAt >= 0) out['setup-time'] = Math.floor(this.setupDoneAt - this.startedAt);
    if (this.downStart >= 0 && this.downEnd >= 0) out.downtime = Math.floor(this.downEnd - this.downStart);
    return out;
  }

  /** ms since the migration started (0 before). */
  elapsedMs(): number {
    if (this.current === 'none') return 0;
    return (this.endedAt >= 0 ? this.endedAt : this.clock()) - this.startedAt;
  }
}
