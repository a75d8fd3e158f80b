// QEMU's two tools that make a precopy converge when the guest dirties memory
// faster than the stream sends it, for one outgoing migration: auto-converge
// (the cpu throttle) and dirty-limit (a per-vCPU dirty rate cap). The source
// calls dirtySync() after every round's dirty sync; when the trigger trips
// (cpu-throttle.ts) the enabled tool acts on the vCPU threads. stop() lifts
// both when the migration ends, however it ends.
import type { MigrationParameters } from './api.js';
import type { VcpuThrottle } from './guest.js';
import { ThrottleTrigger, nextThrottle } from './cpu-throttle.js';
import { DirtyLimiter, type VcpuDirtyLimit } from './dirty-limit.js';

/** query-migrate's fields of the tools (QEMU's names) */
export interface ThrottleInfo {
  'cpu-throttle-percentage'?: number;
  /** us, dirty-limit on and limiting */
  'dirty-limit-throttle-time-per-round'?: number;
  /** us */
  'dirty-limit-ring-full-time'?: number;
}

export interface PrecopyThrottleOptions {
  vcpus: VcpuThrottle;
  pageSize: number;
  autoConverge: boolean;
  dirtyLimit: boolean;
  /** the parameters now (read at each use: a change applies at once, as in QEMU) */
  params: () => MigrationParameters;
  clock?: () => number;
}

export class PrecopyThrottle {
  private readonly trigger: ThrottleTrigger;
  private readonly clock: () => number;
  private limiter: DirtyLimiter | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly o: PrecopyThrottleOptions) {
    this.clock = o.clock ?? (() => performance.now());
    this.trigger = new ThrottleTrigger(this.clock, o.pageSize);
  }

  /** After a precopy round's dirty sync: pages newly found dirty, and the
   *  bytes the stream has moved so far. */
  dirtySync(newlyDirtyPages: number, transferredBytes: number): void {
    if (this.stopped) return;
    const p = this.o.params();
    const trip = this.trigger.sync(newlyDirtyPages, transferredBytes, p['throttle-trigger-threshold']);
    if (!trip) return;
    if (this.o.autoConverge) this.o.vcpus.setCpuThrottle(nextThrottle(this.o.vcpus.cpuThrottle, p, trip));
    else if (this.o.dirtyLimit) this.startLimiter(p);
  }

  private startLimiter(p: MigrationParameters): void {
    if (this.limiter) { this.limiter.limit = p['vcpu-dirty-limit']; return; }
    this.o.vcpus.startDirtyLog();
    const limiter = new DirtyLimiter(this.o.vcpus, this.o.pageSize, this.clock, p['vcpu-dirty-limit']);
    this.limiter = limiter;
    const tick = (): void => {
      if (this.limiter !== limiter) return;
      limiter.limit = this.o.params()['vcpu-dirty-limit'];
      limiter.period();
      this.timer = setTimeout(tick, this.o.params()['x-vcpu-dirty-limit-period']);
      this.timer.unref();
    };
    this.timer = setTimeout(tick, p['x-vcpu-dirty-limit-period']);
    this.timer.unref();
  }

  /** the tools lifted: the vCPUs run free again */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.o.autoConverge) this.o.vcpus.setCpuThrottle(0);
    if (this.limiter) {
      this.limiter.release();
      this.limiter = null;
      this.o.vcpus.stopDirtyLog();
    }
  }

  info(): ThrottleInfo {
    const out: ThrottleInfo = {};
    if (this.o.autoConverge) out['cpu-throttle-percentage'] = this.o.vcpus.cpuThrottle;
    if (this.limiter) {
      out['dirty-limit-throttle-time-per-round'] = this.limiter.throttleTimePerRound();
      out['dirty-limit-ring-full-time'] = this.limiter.ringFullTime();
    }
    return out;
  }

  /** query-vcpu-dirty-limit: undefined while no limit is in service */
  vcpuLimits(): VcpuDirtyLimit[] | undefined {
    return this.limiter?.vcpuLimits();
  }
}
