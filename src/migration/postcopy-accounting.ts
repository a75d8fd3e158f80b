// The destination's blocktime feed. Two threads resolve faults: the native
// fault thread (requested pages; its FAULT and PLACED events come through its
// ring, stamped by it) and the event loop (the main stream's background
// pages, stamped right after each UFFDIO_COPY/ZEROPAGE; the kernel samples of
// the vCPU threads). Their events are merged here in time order before they
// reach the postcopy rules, the context and the trace, so that a fault read
// just before the event loop placed its page is accounted (it waited), and a
// trace is written in time order and replays to the same report.
//
// The event loop's events wait in a FIFO until the fault thread's horizon
// (PageChannel.drainOrdered) has passed them; ring events, already in time
// order, release the queued events older than themselves. The queue is a
// growable ring of doubles: nothing is allocated per placement.

import { PostcopyRules, type PageStates } from '../blocktime/rules.js';
import type { BlocktimeContext } from '../blocktime/context.js';
import type { KernelTimes } from '../blocktime/types.js';

/** The page flags byte array as the rules' page states (bits 8 and 16 are theirs). */
class FlagPageStates implements PageStates {
  constructor(private readonly flags: Uint8Array, private readonly base: number, private readonly ps: number) {}
  get(addr: number): number { return this.flags[(addr - this.base) / this.ps]; }
  set(addr: number, bits: number): void { this.flags[(addr - this.base) / this.ps] = bits; }
}

// queue entries: {kind, a, b, c, t}
const STRIDE = 5;
const PLACED = 0;      // a = first page, b = count
const SAMPLE = 1;      // a = vCPU, b = on-CPU ns, c = run-queue ns
const UNAVAILABLE = 2; // a = vCPU, b = index into reasons

export class PostcopyAccounting {
  private readonly rules: PostcopyRules;
  private q = new Float64Array(STRIDE * 256);
  private qHead = 0;
  private qLen = 0;
  private reasons: string[] = [];

  constructor(
    private readonly ctx: BlocktimeContext,
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
    this.enqueue(PLACED, first, count, 0, t);
  }

  /** The kernel's times of vCPU `vcpu`'s thread read at `t` (or why not), in
   *  the same order as the events. */
  kernelSample(vcpu: number, t: number, sample: KernelTimes | string): void {
    if (typeof sample === 'string') {
      this.reasons.push(sample);
      this.enqueue(UNAVAILABLE, vcpu, this.reasons.length - 1, 0, t);
    } else {
      this.enqueue(SAMPLE, vcpu, sample.runNs, sample.waitNs, t);
    }
  }

  /** Accounts the queued events of before `horizon` (Infinity: all). */
  releaseBefore(horizon: number): void {
    const q = this.q;
    const slots = q.length / STRIDE;
    while (this.qLen > 0) {
      const i = this.qHead * STRIDE;
      const t = q[i + 4];
      if (!(t < horizon)) return;
      this.qHead = (this.qHead + 1) % slots;
      this.qLen--;
      const kind = q[i];
      if (kind === PLACED) this.placed(q[i + 1], q[i + 2], t);
      else if (kind === SAMPLE) this.ctx.kernelSample(q[i + 1], t, { runNs: q[i + 2], waitNs: q[i + 3] });
      else this.ctx.kernelSample(q[i + 1], t, this.reasons[q[i + 2]]);
    }
    if (this.reasons.length > 0) this.reasons = [];
  }

  private placed(first: number, count: number, t: number): void {
    const ps = this.ps;
    for (let p = first, end = first + count; p < end; p++) this.rules.placed(t, this.base + p * ps);
  }

  private enqueue(kind: number, a: number, b: number, c: number, t: number): void {
    if (this.qLen * STRIDE === this.q.length) this.grow();
    const i = ((this.qHead + this.qLen) % (this.q.length / STRIDE)) * STRIDE;
    const q = this.q;
    q[i] = kind;
    q[i + 1] = a;
    q[i + 2] = b;
    q[i + 3] = c;
    q[i + 4] = t;
    this.qLen++;
  }

  private grow(): void {
    const slots = this.q.length / STRIDE;
    const next = new Float64Array(this.q.length * 2);
    for (let k = 0; k < this.qLen; k++) {
      const from = ((this.qHead + k) % slots) * STRIDE;
      next.set(this.q.subarray(from, from + STRIDE), k * STRIDE);
    }
    this.q = next;
    this.qHead = 0;
  }
}
