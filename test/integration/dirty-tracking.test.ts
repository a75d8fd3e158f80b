// Precopy dirty tracking (src/migration/dirty-tracker.ts) of a 5 GiB guest,
// with both mechanisms: a vCPU's writes to pages above 4 GiB are the pages
// collect() marks, and a second collect() finds nothing new. (The wp-sync
// tracker reads guest RAM through its windows when the kernel lacks
// WP_UNPOPULATED; this kernel has it, so that loop is covered by the
// MemoryWindows unit tests.) MAP_NORESERVE: only the written pages cost memory.
import { startDirtyTracking, type DirtyTrackingMode } from '../../src/migration/dirty-tracker.js';
import type { GuestMemory } from '../../src/migration/guest.js';
import { GuestRam, VcpuSet, PAGE_SIZE, parseWorkload } from '../../src/vm/index.js';
import { requireUffd } from '../helpers/uffd-available.js';

const GiB = 2 ** 30;
const maybe = requireUffd() ? test.each : test.skip.each;

maybe(['wp-async', 'wp-sync'] as DirtyTrackingMode[])('%s: a 5 GiB guest, writes above 4 GiB are the pages marked', async (mode) => {
  const ram = GuestRam.create(5 * GiB);
  const memory: GuestMemory = {
    base: ram.base, bytes: ram.bytes, pageSize: PAGE_SIZE, contents: ram.windows,
    discard: (offset, len) => ram.discard(offset / PAGE_SIZE, len / PAGE_SIZE),
  };
  const tracker = startDirtyTracking(memory, mode);
  let vcpus: VcpuSet | undefined;
  try {
    expect(tracker.mode).toBe(mode);
    const flags = new Uint8Array(ram.pages);
    expect(tracker.collect(flags)).toBe(0);
    // one sweep over 8 MiB from 4 GiB + 4 KiB on, then the vCPU parks
    vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep,start=4194308K,end=4104M,sweeps=1', ram.bytes));
    await vcpus.whenDone({ timeoutMs: 30_000 });
    const first = (4 * GiB) / PAGE_SIZE + 1;
    const end = (4 * GiB + 8 * 2 ** 20) / PAGE_SIZE;
    expect(tracker.collect(flags)).toBe(end - first);
    expect(flags.subarray(first, end).every((f) => f === 1)).toBe(true);
    expect(flags[first - 1]).toBe(0);
    expect(flags.reduce((n, f) => n + f, 0)).toBe(end - first);
    expect(tracker.collect(flags)).toBe(0); // nothing written since
  } finally {
    await vcpus?.stop();
    await tracker.stop();
    ram.dispose();
  }
});
