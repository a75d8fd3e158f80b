// The postcopy rules that need to know which pages are already placed
// (docs/blocktime.md, "The rules"), in one place for the live destination and
// for trace replay: a fault on a page placed earlier records nothing; a
// placement nobody waits on records nothing; one placement resolves every
// waiter on its page. The rest (several faults of one vCPU, non-vCPU threads,
// closing at the end) is the algorithms' own business.
//
// Page state is kept by the caller, behind PageStates: the destination keeps
// it in its page flags (one byte per page, no allocation), replay in a
// typed-array hash (PageStateMap).
// Events must arrive in time order (the destination merges its sources
// first: event-order.ts); what passes the rules goes to every consumer.

import type { MigrationStatus } from '../migration/api.js';
import type { BlocktimeAlgorithm } from './algorithm.js';
import { addrSlot } from './page-waiters.js';
import { FaultCause } from './trace.js';

/** a fault is waiting on the page (set by fault(), cleared by placed()) */
export const PAGE_WAITED = 8;
/** the page was placed, in the merged time order of events */
export const PAGE_PLACED = 16;

/** Per-page bits PAGE_WAITED | PAGE_PLACED (other bits are the caller's). */
export interface PageStates {
  get(addr: number): number;
  set(addr: number, bits: number): void;
}

export class PostcopyRules {
  constructor(
    private readonly pages: PageStates,
    private readonly consumers: readonly BlocktimeAlgorithm<unknown>[],
  ) {}

  /** A fault of thread `tid` on the page at `addr`, at `t` (served as
   *  `cause` says); returns whether it was passed on (false: the page was
   *  placed already). */
  fault(t: number, addr: number, tid: number, cause: FaultCause = FaultCause.Unknown): boolean {
    const bits = this.pages.get(addr);
    if ((bits & PAGE_PLACED) !== 0) return false;
    this.pages.set(addr, bits | PAGE_WAITED);
    const c = this.consumers;
    for (let i = 0; i < c.length; i++) c[i].begin(addr, tid, t, cause);
    return true;
  }

  /** The source's background push had delivered the page at `addr` by `t`:
   *  to the consumers that draw it or trace it. */
  pushed(t: number, addr: number): void {
    const c = this.consumers;
    for (let i = 0; i < c.length; i++) c[i].pushed?.(addr, t);
  }

  /** The page at `addr` was placed at `t`; returns whether faults waited on it. */
  placed(t: number, addr: number): boolean {
    const bits = this.pages.get(addr);
    this.pages.set(addr, (bits & ~PAGE_WAITED) | PAGE_PLACED);
    if ((bits & PAGE_WAITED) === 0) return false;
    const c = this.consumers;
    for (let i = 0; i < c.length; i++) c[i].end(addr, t);
    return true;
  }

  /** The migration ended at `t`. */
  finish(status: MigrationStatus, t: number): void {
    const c = this.consumers;
    for (let i = 0; i < c.length; i++) c[i].finish(status, t);
  }
}

/** PageStates for replay (traces name pages by address): an open-addressing
 *  hash in typed arrays (linear probing, no deletion: a page once seen stays),
 *  doubled when half full. A Map of 10^6 addresses above 2^31 boxes every
 *  key and was a sixth of a large trace's replay. */
export class PageStateMap implements PageStates {
  private keys = new Float64Array(1024);
  /** the page's bits, -1: empty slot */
  private vals = new Int32Array(1024).fill(-1);
  private shift = 32 - 10;
  private used = 0;

  get(addr: number): number {
    const i = this.slot(addr);
    return i < 0 ? 0 : this.vals[i];
  }

  set(addr: number, bits: number): void {
    let i = this.slot(addr);
    if (i < 0) {
      if ((this.used + 1) * 2 > this.keys.length) this.grow();
      i = ~this.slot(addr);
      this.keys[i] = addr;
      this.used++;
    }
    this.vals[i] = bits;
  }

  /** the slot holding `addr`, or ~(the empty slot where it would go) */
  private slot(addr: number): number {
    const keys = this.keys;
    const vals = this.vals;
    const mask = keys.length - 1;
    let i = addrSlot(addr, this.shift);
    while (vals[i] !== -1) {
      if (keys[i] === addr) return i;
      i = (i + 1) & mask;
    }
    return ~i;
  }

  private grow(): void {
    const { keys, vals } = this;
    this.keys = new Float64Array(keys.length * 2);
    this.vals = new Int32Array(keys.length * 2).fill(-1);
    this.shift--;
    for (let s = 0; s < keys.length; s++) {
      if (vals[s] === -1) continue;
      const i = ~this.slot(keys[s]);
      this.keys[i] = keys[s];
      this.vals[i] = vals[s];
    }
  }
}
