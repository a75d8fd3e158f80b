// One vCPU sweeps a range of guest RAM once while a precopy dirty tracker
// (src/migration/dirty-tracker.ts) watches it: what collect() says before the
// sweep, after it and once more. Shared by the dirty-tracking tests of
// anonymous RAM and of hugetlbfs RAM; the caller disposes of `ram`.
import { startDirtyTracking, type DirtyTrackingMode } from '../../src/migration/dirty-tracker.js';
import { guestMemoryOf } from '../../src/machine.js';
import { VcpuSet, parseWorkload, type GuestRam } from '../../src/vm/index.js';

export interface TrackedSweep {
  mode: DirtyTrackingMode;
  /** collect() before the sweep, after it, and again */
  before: number; marked: number; again: number;
  /** the flags collect() marked (bit 0 = dirty), one per page of ram.pageSize */
  flags: Uint8Array;
}

export async function trackedSweep(ram: GuestRam, mode: DirtyTrackingMode, sweep: string): Promise<TrackedSweep> {
  const tracker = startDirtyTracking(guestMemoryOf(ram), mode);
  let vcpus: VcpuSet | undefined;
  try {
    const flags = new Uint8Array(ram.pages);
    const before = tracker.collect(flags);
    vcpus = await VcpuSet.create(ram, 1, parseWorkload(`sweep,${sweep},sweeps=1`, ram.bytes));
    await vcpus.whenDone({ timeoutMs: 30_000 });
    const marked = tracker.collect(flags);
    return { mode: tracker.mode, before, marked, again: tracker.collect(flags), flags };
  } finally {
    await vcpus?.stop();
    await tracker.stop();
  }
}
