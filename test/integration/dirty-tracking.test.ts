// Precopy dirty tracking (src/migration/dirty-tracker.ts) of a 5 GiB guest,
// with both mechanisms: a vCPU's writes to pages above 4 GiB are the pages
// collect() marks, and a second collect() finds nothing new. (The wp-sync
// tracker reads guest RAM through its windows when the kernel lacks
// WP_UNPOPULATED; this kernel has it, so that loop is covered by the
// MemoryWindows unit tests.) MAP_NORESERVE: only the written pages cost memory.
import type { DirtyTrackingMode } from '../../src/migration/dirty-tracker.js';
import { GuestRam, PAGE_SIZE } from '../../src/vm/index.js';
import { trackedSweep } from '../helpers/tracked-sweep.js';
import { requireUffd } from '../helpers/uffd-available.js';

const GiB = 2 ** 30;
const maybe = requireUffd() ? test.each : test.skip.each;

maybe(['wp-async', 'wp-sync'] as DirtyTrackingMode[])('%s: a 5 GiB guest, writes above 4 GiB are the pages marked', async (mode) => {
  const ram = GuestRam.create(5 * GiB);
  try {
    // one sweep over 8 MiB from 4 GiB + 4 KiB on, then the vCPU parks
    const t = await trackedSweep(ram, mode, 'start=4194308K,end=4104M');
    const first = (4 * GiB) / PAGE_SIZE + 1;
    const end = (4 * GiB + 8 * 2 ** 20) / PAGE_SIZE;
    expect([t.mode, t.before, t.marked, t.again]).toEqual([mode, 0, end - first, 0]); // nothing written since
    expect(t.flags.subarray(first, end).every((f) => f === 1)).toBe(true);
    expect(t.flags[first - 1]).toBe(0);
    expect(t.flags.reduce((n, f) => n + f, 0)).toBe(end - first);
  } finally {
    ram.dispose();
  }
});
