// The knobs QEMU's convergence tools turn on the vCPU threads, over their
// native control blocks (native-shim/vcpu.h): the cpu throttle percentage
// (auto-converge) and a dirty log, a byte per guest page that the vCPUs
// themselves mark on their first write to a clean page, counting per vCPU
// (QEMU's dirty ring: calc-dirty-rate's dirty-ring mode, dirty-limit) and,
// with a sleep per DIRTY_RING pages, capping each vCPU's dirty rate. Both cost
// the vCPUs nothing while off (one hook word they read anyway).
import { NativeBlock, vcpuLayout as L, type NativeVcpus } from '../native/index.js';
import type { VcpuThrottle } from '../migration/guest.js';

export class NativeVcpuThrottle implements VcpuThrottle {
  readonly count: number;
  readonly ringPages = L.DIRTY_RING;
  #log: NativeBlock | null = null;
  #logView: Uint8Array | null = null;
  #logUsers = 0;
  #pct = 0;

  constructor(private readonly native: NativeVcpus, private readonly pages: number, private readonly live: () => boolean) {
    this.count = native.count;
  }

  get cpuThrottle(): number { return this.#pct; }

  setCpuThrottle(pct: number): void {
    if (!(Number.isInteger(pct) && pct >= 0 && pct <= 99)) throw new RangeError(`cpu throttle ${pct} is not an integer in 0..99`);
    this.#pct = pct;
    if (!this.live()) return;
    for (let i = 0; i < this.count; i++) this.native.set32(i, L.VCPU_OFF_THROTTLE_PCT, pct);
    this.native.setHook(L.HOOK_THROTTLE, pct > 0);
  }

  startDirtyLog(): void {
    if (this.#logUsers++ > 0 || !this.live()) return;
    // kept until the threads are joined (free()): a vCPU may still hold the address
    this.#log ??= new NativeBlock(this.pages);
    this.#logView ??= new Uint8Array(this.#log.buffer, 0, this.pages);
    this.#logView.fill(0);
    for (let i = 0; i < this.count; i++) this.native.set64(i, L.VCPU_OFF_DIRTY_LOG, this.#log.address);
    this.native.setHook(L.HOOK_DIRTY, true);
  }

  stopDirtyLog(): void {
    if (this.#logUsers === 0 || --this.#logUsers > 0 || !this.live()) return;
    this.native.setHook(L.HOOK_DIRTY, false);
    for (let i = 0; i < this.count; i++) {
      this.native.set64(i, L.VCPU_OFF_DIRTY_LOG, 0);
      this.native.set32(i, L.VCPU_OFF_RING_SLEEP_US, 0);
    }
  }

  // once the threads are stopped their blocks are freed: nothing is read or written any more
  reapDirtyLog(): void { if (this.live()) this.#logView?.fill(0); }

  dirtyPages(i: number): number { return this.live() ? this.native.get64(i, L.VCPU_OFF_DIRTY_PAGES) : 0; }

  setRingSleep(i: number, us: number): void { if (this.live()) this.native.set32(i, L.VCPU_OFF_RING_SLEEP_US, Math.max(0, Math.min(0x7fffffff, Math.round(us)))); }

  sleptNs(i: number): { throttle: number; limit: number } {
    if (!this.live()) return { throttle: 0, limit: 0 };
    return { throttle: this.native.get64(i, L.VCPU_OFF_THROTTLE_NS), limit: this.native.get64(i, L.VCPU_OFF_LIMIT_NS) };
  }

  /** the dirty log's memory, once the threads were joined */
  free(): void {
    this.#log?.free();
    this.#log = null;
    this.#logView = null;
  }
}
