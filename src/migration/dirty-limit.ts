// dirty-limit's controller (QEMU 8.1's capability, on our vCPUs): every
// x-vcpu-dirty-limit-period each vCPU's dirty rate is measured from the
// pages it dirtied in its dirty log, and the sleep it takes each time it has
// dirtied a "ring" of pages is set so that, at the pace it dirtied pages
// while running, a ring takes exactly as long as vcpu-dirty-limit allows.
// QEMU adjusts a KVM dirty-ring sleep the same way, in steps; here one step
// suffices because the vCPU's running pace is measured (period minus the
// time it slept). Pure: the clock (ms) and the vCPUs are injected.
import type { VcpuThrottle } from './guest.js';

export const MiB = 1 << 20;
/** longest sleep per ring (a vCPU that dirties nothing keeps its last one) */
const MAX_RING_SLEEP_US = 10_000_000;

/** query-vcpu-dirty-limit's entries (MB/s) */
export interface VcpuDirtyLimit {
  'cpu-index': number;
  'limit-rate': number;
  'current-rate': number;
}

export class DirtyLimiter {
  private readonly pagesAt: number[];
  private readonly sleptAt: number[];
  private readonly sleepUs: number[];
  private readonly rates: number[];
  private lastMs: number;

  constructor(private readonly vcpus: VcpuThrottle, private readonly pageSize: number, private readonly clock: () => number,
    private limitMBps: number) {
    const n = vcpus.count;
    this.pagesAt = Array.from({ length: n }, (_, i) => vcpus.dirtyPages(i));
    this.sleptAt = Array.from({ length: n }, (_, i) => this.slept(i));
    this.sleepUs = new Array<number>(n).fill(0);
    this.rates = new Array<number>(n).fill(0);
    this.lastMs = clock();
  }

  private slept(i: number): number {
    const s = this.vcpus.sleptNs(i);
    return s.throttle + s.limit;
  }

  get limit(): number { return this.limitMBps; }
  set limit(mbps: number) { this.limitMBps = mbps; }

  /** One period: measure every vCPU, set its sleep per ring, reap the log. */
  period(): void {
    const now = this.clock();
    const ms = now - this.lastMs;
    if (ms <= 0) return;
    this.lastMs = now;
    const ring = this.vcpus.ringPages;
    const ringSecs = (ring * this.pageSize) / (this.limitMBps * MiB); // what a ring may take
    for (let i = 0; i < this.vcpus.count; i++) {
      const pages = this.vcpus.dirtyPages(i);
      const slept = this.slept(i);
      const dirtied = pages - this.pagesAt[i];
      const runSecs = Math.max(0, ms / 1000 - (slept - this.sleptAt[i]) / 1e9);
      this.pagesAt[i] = pages;
      this.sleptAt[i] = slept;
      this.rates[i] = (dirtied * this.pageSize) / MiB / (ms / 1000);
      if (dirtied === 0) continue; // nothing to measure a pace by
      const runPerRing = (runSecs / dirtied) * ring;
      const us = Math.min(MAX_RING_SLEEP_US, Math.max(0, (ringSecs - runPerRing) * 1e6));
      this.sleepUs[i] = us;
      this.vcpus.setRingSleep(i, us);
    }
    this.vcpus.reapDirtyLog();
  }

  /** query-migrate's dirty-limit-throttle-time-per-round: the vCPUs' mean sleep per ring (us) */
  throttleTimePerRound(): number {
    return Math.round(this.sleepUs.reduce((a, b) => a + b, 0) / Math.max(1, this.sleepUs.length));
  }

  /** query-migrate's dirty-limit-ring-full-time: a ring's time at the vCPUs' mean dirty rate (us), 0 when they dirty nothing */
  ringFullTime(): number {
    const mean = this.rates.reduce((a, b) => a + b, 0) / Math.max(1, this.rates.length);
    return mean > 0 ? Math.round(((this.vcpus.ringPages * this.pageSize) / (mean * MiB)) * 1e6) : 0;
  }

  /** query-vcpu-dirty-limit */
  vcpuLimits(): VcpuDirtyLimit[] {
    return this.rates.map((r, i) => ({ 'cpu-index': i, 'limit-rate': this.limitMBps, 'current-rate': Math.round(r) }));
  }

  /** every vCPU free again */
  release(): void {
    for (let i = 0; i < this.vcpus.count; i++) this.vcpus.setRingSleep(i, 0);
    this.sleepUs.fill(0);
  }
}
