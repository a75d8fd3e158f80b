// The destination's blocktime feed. Two threads resolve faults: the native
// fault thread (requested pages; its FAULT and PLACED events come through its
// ring, stamped by it) and the event loop (the main stream's background
// pages, stamped right after each UFFDIO_COPY/ZEROPAGE; the kernel samples of
// the vCPU threads). Their events are merged here in time order before they
// reach the postcopy rules, the context and the trace, so that a fault read
// just before the event loop placed its page is accounted (it waited), and a
// trace is written in time order and replays to the same report.
//
// Every event waits in a buffer kept sorted by time until the horizon has
// passed it: the time before which no event can still come, from the fault
// thread (PageChannel.drainOrdered: its watermark, or now when it is idle)
// and from the vCPUs' access stamps (a fault is dated by the stamp of the
// access that raised it, so it can be read after later events). The buffer
// is a growable array of doubles: nothing is allocated per event.

import { PostcopyRules, type PageStates } from '../blocktime/rules.js';
import type { BlocktimeContext } from '../blocktime/context.js';
import type { KernelTimes } from '../blocktime/types.js';
import { FaultCause } from '../blocktime/trace.js';

/** The page flags byte array as the rules' page states (bits 8 and 16 are theirs). */
class FlagPageStates implements PageStates {
  constructor(private readonly flags: Uint8Array, private readonly base: number, private readonly ps: number) {}
  get(addr: number): number { return this.flags[(addr - this.base) / this.ps]; }
  set(addr: number, bits: number): void { this.flags[(addr - this.base) / this.ps] = bits; }
}

// pending events: {kind, a, b, c, t}, kept sorted by t (stable)
const STRIDE = 5;
const PLACED = 0;      // a = first page, b = count
const SAMPLE = 1;      // a = vCPU, b = on-CPU ns, c = run-queue ns
const UNAVAILABLE = 2; // a = vCPU, b = index into reasons
const FAULT = 3;       // a = page, b = thread id, c = FaultCause
const PUSHED = 4;      // a = page

export class PostcopyAccounting {
  private readonly rules: PostcopyRules;
  private q = new Float64Array(STRIDE * 1024);
  /** pending events are q[head*STRIDE, (head+len)*STRIDE) */
  private head = 0;
  private len = 0;
  private reasons: string[] = [];

  constructor(
    private readonly ctx: BlocktimeContext,
    private readonly base: number,
    private readonly ps: number,
    flags: Uint8Array,
  ) {
    this.rules = new PostcopyRules(new FlagPageStates(flags, base, ps), [ctx]);
  }

  /** The fault thread read a fault of thread `tid` on `page`, raised at `t`
   *  (and served it as `cause` says). */
  fault(page: number, tid: number, t: number, cause: FaultCause = FaultCause.Unknown): void {
    this.insert(FAULT, page, tid, cause, t);
  }

  /** The source's background push had delivered `page` by `t` (a sample for the trace). */
  pushed(page: number, t: number): void {
    this.insert(PUSHED, page, 0, 0, t);
  }

  /** Pages [first, first+count) were placed at `t` (by the fault thread, or
   *  by the event loop just after its ioctl). */
  placed(first: number, count: number, t: number): void {
    this.insert(PLACED, first, count, 0, t);
  }

  /** The kernel's times of vCPU `vcpu`'s thread read at `t` (or why not). */
  kernelSample(vcpu: number, t: number, sample: KernelTimes | string): void {
    if (typeof sample === 'string') {
      this.reasons.push(sample);
      this.insert(UNAVAILABLE, vcpu, this.reasons.length - 1, 0, t);
    } else {
      this.insert(SAMPLE, vcpu, sample.runNs, sample.waitNs, t);
    }
  }

  /** Accounts, in time order, the pending events of before `horizon`
   *  (Infinity: all): no event still to come can be dated earlier. */
  releaseBefore(horizon: number): void {
    const q = this.q;
    while (this.len > 0) {
      const i = this.head * STRIDE;
      const t = q[i + 4];
      if (!(t < horizon)) break;
      this.head++;
      this.len--;
      const kind = q[i];
      if (kind === FAULT) this.rules.fault(t, this.base + q[i + 1] * this.ps, q[i + 2], q[i + 3] as FaultCause);
      else if (kind === PLACED) this.account(q[i + 1], q[i + 2], t);
      else if (kind === PUSHED) this.rules.pushed(t, this.base + q[i + 1] * this.ps);
      else if (kind === SAMPLE) this.ctx.kernelSample(q[i + 1], t, { runNs: q[i + 2], waitNs: q[i + 3] });
      else this.ctx.kernelSample(q[i + 1], t, this.reasons[q[i + 2]]);
    }
    if (this.len === 0) {
      this.head = 0;
      if (this.reasons.length > 0) this.reasons = [];
    }
  }

  private account(first: number, count: number, t: number): void {
    const ps = this.ps;
    for (let p = first, end = first + count; p < end; p++) this.rules.placed(t, this.base + p * ps);
  }

  // Appends, then moves the entry back past later ones: events come nearly
  // in order (a vCPU-stamped fault can be read after later placements), so
  // this moves few entries.
  private insert(kind: number, a: number, b: number, c: number, t: number): void {
    if ((this.head + this.len + 1) * STRIDE > this.q.length) this.makeRoom();
    const q = this.q;
    let i = (this.head + this.len) * STRIDE;
    const first = this.head * STRIDE;
    while (i > first && q[i - 1] > t) { // q[i - 1] is the previous entry's t
      q.copyWithin(i, i - STRIDE, i);
      i -= STRIDE;
    }
    q[i] = kind;
    q[i + 1] = a;
    q[i + 2] = b;
    q[i + 3] = c;
    q[i + 4] = t;
    this.len++;
  }

  private makeRoom(): void {
    const q = this.q;
    if (this.head * 2 >= q.length / STRIDE) { // mostly consumed: slide back
      q.copyWithin(0, this.head * STRIDE, (this.head + this.len) * STRIDE);
    } else {
      const next = new Float64Array(q.length * 2);
      next.set(q.subarray(this.head * STRIDE, (this.head + this.len) * STRIDE));
      this.q = next;
    }
    this.head = 0;
  }
}
