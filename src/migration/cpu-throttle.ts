// When QEMU's convergence tools act, and by how much (migration/ram.c and
// cpu-throttle.c, as facts, not code): after a dirty sync that ends a period
// of at least a second, the guest counts as dirtying too fast when the bytes
// it dirtied in the period exceed throttle-trigger-threshold % of the bytes
// the stream moved; twice so (not necessarily in a row) and the tool acts:
// auto-converge raises the cpu throttle (cpu-throttle-initial first, then by
// cpu-throttle-increment, or with cpu-throttle-tailslow by no more than what
// would bring the dirty rate to the threshold, never past max-cpu-throttle);
// dirty-limit turns its per-vCPU limit on. Pure: injected clock (ms).

/** the throttle percentages QEMU's cpu_throttle_set accepts */
export const CPU_THROTTLE_MIN = 1;
export const CPU_THROTTLE_MAX = 99;
/** shortest period the trigger judges (QEMU: a sync more than 1 s after the period began) */
export const TRIGGER_PERIOD_MS = 1000;

export interface ThrottleParameters {
  'throttle-trigger-threshold': number;
  'cpu-throttle-initial': number;
  'cpu-throttle-increment': number;
  'cpu-throttle-tailslow': boolean;
  'max-cpu-throttle': number;
}

/** A period that tripped the trigger: what the guest dirtied against what it may. */
export interface Trip {
  /** bytes dirtied in the period */
  bytesDirty: number;
  /** threshold % of the bytes the stream moved in the period */
  bytesThreshold: number;
}

export class ThrottleTrigger {
  private periodStart: number;
  private dirtyPages = 0;
  private xferStart = 0;
  private highCount = 0;

  /** made when the migration starts: the first period begins then (QEMU's
   *  setup resets the period counters), so the first round is judged too */
  constructor(private readonly clock: () => number, private readonly pageSize: number) {
    this.periodStart = clock();
  }

  /** One dirty sync: pages newly found dirty, and the stream's bytes so far.
   *  Returns the trip when the tool must act now. */
  sync(newlyDirtyPages: number, transferredBytes: number, thresholdPct: number): Trip | undefined {
    const now = this.clock();
    this.dirtyPages += newlyDirtyPages;
    if (now <= this.periodStart + TRIGGER_PERIOD_MS) return undefined;
    const bytesDirty = this.dirtyPages * this.pageSize;
    const bytesThreshold = ((transferredBytes - this.xferStart) * thresholdPct) / 100;
    this.periodStart = now;
    this.dirtyPages = 0;
    this.xferStart = transferredBytes;
    if (bytesDirty > bytesThreshold && ++this.highCount >= 2) {
      this.highCount = 0;
      return { bytesDirty, bytesThreshold };
    }
    return undefined;
  }
}

/** The next cpu throttle percentage after a trip (QEMU's mig_throttle_guest_down). */
export function nextThrottle(now: number, p: ThrottleParameters, trip: Trip): number {
  const clamp = (v: number): number => Math.max(CPU_THROTTLE_MIN, Math.min(CPU_THROTTLE_MAX, v));
  if (now === 0) return clamp(p['cpu-throttle-initial']);
  let inc = p['cpu-throttle-increment'];
  if (p['cpu-throttle-tailslow'] && trip.bytesDirty > 0) {
    // the share of the CPU the guest would need to dirty just the threshold
    const cpuNow = 100 - now;
    const cpuIdeal = cpuNow * (trip.bytesThreshold / trip.bytesDirty);
    inc = Math.min(cpuNow - Math.floor(cpuIdeal), inc);
  }
  return clamp(Math.min(now + inc, p['max-cpu-throttle']));
}
