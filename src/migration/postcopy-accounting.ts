// The destination's blocktime feed. Two threads resolve faults: the native
// fault thread (requested pages; its FAULT and PLACED events come through its
// ring, stamped by it) and the event loop (the main stream's background
// pages, stamped right after each UFFDIO_COPY/ZEROPAGE). Their events are
// merged here in time order before they reach the postcopy rules, the
// context and the trace, so that a fault read just before the event loop
// placed its page is accounted (it waited), and a trace is written in time
// order and replays to the same report.
//
// The event loop's placements wait in a FIFO until the fault thread's
// horizon (PageChannel.drainOrdered) has passed them; ring events, already
// in time order, release the queued placements older than themselves. The
// queue is a growable ring of doubles: nothing is allocated per placement.

import { PostcopyRules, type PageStates } from '../blocktime/rules.js';
import type { BlocktimeContext } from '../blocktime/context.js';

/** The page flags byte array as the rules' page states (bits 8 and 16 are theirs). */
class FlagPageStates implements PageStates {
  constructor(private readonly flags: Uint8Array, private readonly base: number, private readonly ps: number) {}
  get(addr: number): number { return this.flags[(addr - this.base) / this.ps]; }
  set(addr: number, bits: number): void { this.flags[(addr - this.base) / this.ps] = bits; }
}

export class PostcopyAccounting {
  private readonly rules: PostcopyRules;
  /** queued placements of the event loop: {first page, count, t} per entry */
  private q = new Float64Array(3 * 256);
  private qHead = 0;
  private qLen = 0;

  constructor(
    ctx: BlocktimeContext,
    private readonly base: number,
    private readonly ps: number,
    flags: Uint8Array,
  ) {
    this.rules = new PostcopyRules(new FlagPageStates(flags, base, ps), [ctx]);
  }

  /** The fault thread read a fault of thread `tid` on `page` at `t`. */
  fault(page: number, tid: number, t: number): void {
    this.releaseBefore(t);
    this.rules.fault(t, this.base + page * this.ps, tid);
  }

  /** The fault thread placed pages [first, first+count) at `t`. */
  placedThere(first: number, count: number, t: number): void {
    this.releaseBefore(t);
    this.placed(first, count, t);
  }

  /** The event loop placed pages [first, first+count) at `t` (now, just
   *  after its ioctl): accounted once the fault thread's horizon passes it. */
  placedHere(first: number, count: number, t: number): void {
    if (this.qLen * 3 === this.q.length) this.grow();
    const i = ((this.qHead + this.qLen) % (this.q.length / 3)) * 3;
    this.q[i] = first;
    this.q[i + 1] = count;
    this.q[i + 2] = t;
    this.qLen++;
  }

  /** Accounts the queued placements made before `horizon` (Infinity: all). */
  releaseBefore(horizon: number): void {
    const q = this.q;
    const slots = q.length / 3;
    while (this.qLen > 0) {
      const i = this.qHead * 3;
      if (!(q[i + 2] < horizon)) return;
      this.qHead = (this.qHead + 1) % slots;
      this.qLen--;
      this.placed(q[i], q[i + 1], q[i + 2]);
    }
  }

  private placed(first: number, count: number, t: number): void {
    const ps = this.ps;
    for (let p = first, end = first + count; p < end; p++) this.rules.placed(t, this.base + p * ps);
  }

  private grow(): void {
    const slots = this.q.length / 3;
    const next = new Float64Array(this.q.length * 2);
    for (let k = 0; k < this.qLen; k++) {
      const from = ((this.qHead + k) % slots) * 3;
      next.set(this.q.subarray(from, from + 3), k * 3);
    }
    this.q = next;
    this.qHead = 0;
  }
}
