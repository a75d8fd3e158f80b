// The postcopy rules that need to know which pages are already placed
// (docs/blocktime.md, "The rules"), in one place for the live destination and
// for trace replay: a fault on a page placed earlier records nothing; a
// placement nobody waits on records nothing; one placement resolves every
// waiter on its page. The rest (several faults of one vCPU, non-vCPU threads,
// closing at the end) is the algorithms' own business.
//
// Page state is kept by the caller, behind PageStates: the destination keeps
// it in its page flags (one byte per page, no allocation), replay in a hash.
// Events must arrive in time order (the destination merges its sources
// first: event-order.ts); what passes the rules goes to every consumer.

import type { MigrationStatus } from '../migration/api.js';
import type { BlocktimeAlgorithm } from './algorithm.js';
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

/** PageStates in a Map, for replay (traces name pages by address). */
export class PageStateMap implements PageStates {
  private readonly bits = new Map<number, number>();
  get(addr: number): number { return this.bits.get(addr) ?? 0; }
  set(addr: number, bits: number): void { this.bits.set(addr, bits); }
}
