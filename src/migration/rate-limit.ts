// A token bucket for max-bandwidth / max-postcopy-bandwidth. The sender asks
// how long to wait before it may put the next chunk on the wire; the limit is
// read on every call so a parameter change applies at once. Clock injected
// (ms) for unit tests.

import type { Clock } from './status.js';

/** bytes the bucket may hold: ~100 ms of traffic at the limit, at least 1 MiB */
const BURST_MS = 100;
const MIN_BURST = 1 << 20;

export class RateLimiter {
  private tokens = 0;
  private last: number;
  private lastLimit = 0;

  constructor(private readonly clock: Clock) {
    this.last = clock();
  }

  /** ms to wait before `bytes` may be sent under `limit` bytes/s (0 = unlimited). */
  delayFor(bytes: number, limit: number): number {
    if (limit <= 0) return 0;
    this.refill(limit);
    if (this.tokens >= bytes || this.tokens >= this.burst(limit)) return 0;
    return Math.max(1, Math.ceil(((bytes - this.tokens) / limit) * 1000));
  }

  /** Accounts `bytes` sent. */
  consume(bytes: number, limit: number): void {
    if (limit <= 0) return;
    this.refill(limit);
    this.tokens -= bytes;
  }

  private burst(limit: number): number {
    return Math.max(MIN_BURST, (limit * BURST_MS) / 1000);
  }

  private refill(limit: number): void {
    const now = this.clock();
    if (limit !== this.lastLimit) { // a new limit starts with a fresh, empty bucket
      this.lastLimit = limit;
      this.tokens = Math.min(this.tokens, 0);
      this.last = now;
      return;
    }
    this.tokens = Math.min(this.burst(limit), this.tokens + ((now - this.last) * limit) / 1000);
    this.last = now;
  }
}
