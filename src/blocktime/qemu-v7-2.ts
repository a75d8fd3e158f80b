// QEMU 7.2's blocktime algorithm (the one Debian 12's QEMU reports), written
// from its semantics (REFERENCE.md §6), so that `blocktime-replay --compare`
// can show what that QEMU would have reported for the same faults. These are
// not our figures: they are wrong in known ways, and kept that way on purpose.
//
// - Time is whole milliseconds since the context started, read as QEMU reads
//   its clock: each reading is floored to ms (the start's too), then the
//   start is subtracted; an offset below 1 counts as 1; u32 throughout (the
//   sums wrap as QEMU's uint32_t do).
// - One slot per vCPU, {fault time, page}. A second outstanding fault of the
//   same vCPU overwrites the first, so placing the first one's page frees
//   nothing, and that vCPU's blocktime starts at its second fault.
// - Faults of threads that are no vCPU are ignored entirely (7.2 has no
//   latency figures).
// - A placement scans every vCPU's slot for its page: O(vCPUs) per
//   placement, as in QEMU (fine for an offline comparison); a fault is O(1).
// - The total grows only when a placement frees a vCPU while every vCPU was
//   down, by now - last_begin, where last_begin is the latest fault of any
//   vCPU.
// - A fault on a page already received: 7.2 fills the slot, sees the page
//   is there, clears the slot and undoes cpus_down. Here the postcopy rules
//   (rules.ts) never pass such a fault on, which is the same thing, except
//   in one race that is not reproduced: when that vCPU's slot already held
//   another outstanding fault, 7.2 loses that fault too. (7.2 also skips
//   slots whose time is 0; only that undo leaves one, so there is no such
//   check here.)
// - The end of the migration closes nothing: an outstanding fault adds
//   nothing to any figure. (QEMU shows the figures only once the destination
//   is completed; report() gives them whatever the status.)

import type { AlgorithmStart, BlocktimeAlgorithm } from './algorithm.js';
import type { QemuBlocktimeFields } from './types.js';
import { VcpuThreads } from './vcpu-threads.js';

/** What QEMU 7.2 reports in query-migrate: two of QEMU's fields, ms. */
export type Qemu72Report = Pick<QemuBlocktimeFields, 'postcopy-blocktime' | 'postcopy-vcpu-blocktime'>;

/** an empty slot (QEMU uses address 0; trace addresses can be 0) */
const EMPTY = -1;
const TOTAL = 0;
/** the latest vCPU fault's time */
const LAST_BEGIN = 1;

export class Qemu72Blocktime implements BlocktimeAlgorithm<Qemu72Report> {
  private readonly tidToVcpu: VcpuThreads;
  private readonly vcpus: number;
  /** the context's start on the ms clock */
  private readonly startMs: number;
  /** page of vCPU i's remembered fault, EMPTY when none */
  private readonly slotAddr: Float64Array;
  /** ms offset of vCPU i's remembered fault */
  private readonly slotTime: Uint32Array;
  /** per-vCPU blocktime, ms (a Uint32Array wraps like uint32_t) */
  private readonly blocktime: Uint32Array;
  /** total blocktime and last_begin (ms, at TOTAL and LAST_BEGIN), uint32_t */
  private readonly g = new Uint32Array(2);
  private cpusDown = 0;
  private done = false;

  constructor(start: AlgorithmStart) {
    this.tidToVcpu = new VcpuThreads(start.vcpuThreadIds);
    this.vcpus = start.vcpuThreadIds.length;
    this.startMs = Math.floor(start.startNs / 1e6);
    this.slotAddr = new Float64Array(this.vcpus).fill(EMPTY);
    this.slotTime = new Uint32Array(this.vcpus);
    this.blocktime = new Uint32Array(this.vcpus);
  }

  begin(addr: number, tid: number, at: number): void {
    if (this.done) return;
    const v = this.tidToVcpu.indexOf(tid);
    if (v < 0) return;
    const now = this.msSinceStart(at);
    if (this.slotAddr[v] === EMPTY) this.cpusDown++;
    this.g[LAST_BEGIN] = now;
    this.slotTime[v] = now;
    this.slotAddr[v] = addr;
  }

  end(addr: number, at: number): void {
    if (this.done) return;
    const now = this.msSinceStart(at);
    let affected = 0;
    const allDown = this.cpusDown === this.vcpus;
    for (let v = 0; v < this.vcpus; v++) {
      if (this.slotAddr[v] !== addr) continue;
      this.slotAddr[v] = EMPTY;
      this.blocktime[v] += now - this.slotTime[v];
      affected++;
    }
    this.cpusDown -= affected;
    if (allDown && affected > 0) this.g[TOTAL] += now - this.g[LAST_BEGIN];
  }

  /** Closes nothing (QEMU doesn't); later events are ignored. */
  finish(): void {
    this.done = true;
  }

  report(): Qemu72Report {
    return { 'postcopy-blocktime': this.g[TOTAL], 'postcopy-vcpu-blocktime': Array.from(this.blocktime) };
  }

  // QEMU's get_low_time_offset(): ms since the start, at least 1, u32.
  private msSinceStart(at: number): number {
    const offset = Math.floor(at / 1e6) - this.startMs;
    return offset < 1 ? 1 : offset >>> 0;
  }
}
