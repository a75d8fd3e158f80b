// Precopy dirty-page tracking on the source with userfaultfd write-protect
// (soft-dirty is not built into this kernel). Two mechanisms, best first:
//
//  - 'wp-async': UFFD_FEATURE_WP_ASYNC + WP_UNPOPULATED. A guest write to a
//    protected page is resolved by the kernel itself (no fault message, no
//    thread switch) and clears the page's uffd-wp bit. collect() reads the
//    bits from /proc/self/pagemap (PM_UFFD_WP, bit 57, one pread of 8 bytes per
//    page) and re-protects the written runs. Cost: nothing per guest write,
//    ~8 bytes read per page per sync.
//  - 'wp-sync': plain WP faults. The first write to a protected page blocks
//    the vCPU; our handler marks the page dirty and un-protects it (wakes the
//    vCPU). Cost: one fault round trip (~30 us) per page per round.
//
// Both are exact for anonymous memory and for hugetlbfs (whose huge page is
// the unit: the kernel write-protects and reports whole huge pages; pagemap
// still has one entry per 4 KiB, so a huge page is read at its first entry;
// a huge-page block beside 4 KiB blocks is read at each of its 4 KiB pages,
// which report their huge page);
// collect() marks a page dirty when it was written since the previous
// collect() (or since start()).

import { openSync, readSync, closeSync } from 'node:fs';
import { Userfaultfd, UffdPoller, EVENT_PAGEFAULT, PAGEFAULT_FLAG_WP } from '../uffd/index.js';
import type { GuestMemory } from './guest.js';

export type DirtyTrackingMode = 'wp-async' | 'wp-sync';

export interface DirtyTracker {
  readonly mode: DirtyTrackingMode;
  /** Sets bit 0 of into[p] for every page written since the last collect and
   *  write-protects those pages again; returns how many pages it marked. */
  collect(into: Uint8Array): number;
  /** Un-protects everything and releases the userfaultfd. Idempotent. */
  stop(): Promise<void>;
}

/** pagemap entry bit 57 (PM_UFFD_WP), as bit 25 of the entry's high 32 bits */
const PM_UFFD_WP_HI = 1 << 25;
/** pagemap entries per read (512 KiB of them) */
const SCAN_PAGES = 65536;
/** the unit of /proc/self/pagemap: one entry per base page */
const PAGEMAP_PAGE = 4096;

/** Starts tracking with the best mechanism available; throws (with the
 *  kernel's reason) when neither works. `prefer` forces one (benchmarks). */
export function startDirtyTracking(ram: GuestMemory, prefer?: DirtyTrackingMode): DirtyTracker {
  if (prefer !== 'wp-sync') {
    try {
      return new AsyncWpTracker(ram);
    } catch (e) {
      if (prefer === 'wp-async') throw e;
    }
  }
  return new SyncWpTracker(ram);
}

class AsyncWpTracker implements DirtyTracker {
  readonly mode = 'wp-async' as const;
  private readonly uffd: Userfaultfd;
  private readonly pagemapFd: number;
  private readonly entries = Buffer.allocUnsafe(SCAN_PAGES * 8);
  private readonly hi = new Uint32Array(this.entries.buffer, this.entries.byteOffset, SCAN_PAGES * 2);
  private stopped = false;

  constructor(private readonly ram: GuestMemory) {
    this.uffd = Userfaultfd.open({ features: ['WP_ASYNC', 'WP_UNPOPULATED'], optionalFeatures: ['PAGEFAULT_FLAG_WP'] });
    try {
      this.pagemapFd = openSync('/proc/self/pagemap', 'r');
      try {
        this.uffd.register(ram.base, ram.bytes, { wp: true });
        this.uffd.writeProtect(ram.base, ram.bytes, true);
      } catch (e) {
        closeSync(this.pagemapFd);
        throw e;
      }
    } catch (e) {
      this.uffd.close();
      throw e;
    }
  }

  collect(into: Uint8Array): number {
    if (this.stopped) return 0;
    const ps = this.ram.pageSize;
    const pages = this.ram.bytes / ps;
    let marked = 0;
    for (let start = 0; start < pages; start += SCAN_PAGES) {
      const n = Math.min(SCAN_PAGES, pages - start);
      this.readEntries(start, n);
      let runStart = -1;
      for (let i = 0; i < n; i++) {
        const written = (this.hi[i * 2 + 1] & PM_UFFD_WP_HI) === 0;
        if (written) {
          if ((into[start + i] & 1) === 0) { into[start + i] |= 1; marked++; }
          if (runStart < 0) runStart = i;
        } else if (runStart >= 0) {
          this.uffd.writeProtect(this.ram.base + (start + runStart) * ps, (i - runStart) * ps, true);
          runStart = -1;
        }
      }
      if (runStart >= 0) this.uffd.writeProtect(this.ram.base + (start + runStart) * ps, (n - runStart) * ps, true);
    }
    return marked;
  }

  /** the pagemap entries of pages [start, start+n) into entries[0..n): one read
   *  for 4 KiB pages; for huge pages, the first entry of each (its others are alike) */
  private readEntries(start: number, n: number): void {
    const sub = this.ram.pageSize / PAGEMAP_PAGE;
    const first = (this.ram.base / PAGEMAP_PAGE) * 8;
    const read = (pos: number, len: number, at: number): void => {
      for (let got = 0; got < len;) {
        const r = readSync(this.pagemapFd, this.entries, pos + got, len - got, at + got);
        if (r <= 0) throw new Error(`reading /proc/self/pagemap returned ${r}`);
        got += r;
      }
    };
    if (sub === 1) read(0, n * 8, first + start * 8);
    else for (let i = 0; i < n; i++) read(i * 8, 8, first + (start + i) * sub * 8);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    closeSync(this.pagemapFd);
    try { this.uffd.unregister(this.ram.base, this.ram.bytes); } catch { /* RAM already gone */ }
    this.uffd.close();
  }
}

class SyncWpTracker implements DirtyTracker {
  readonly mode = 'wp-sync' as const;
  private readonly uffd: Userfaultfd;
  private readonly poller: UffdPoller;
  private readonly dirty: Uint8Array;
  private stopped = false;
  private failure: Error | null = null;

  constructor(private readonly ram: GuestMemory) {
    this.uffd = Userfaultfd.open({ features: ['PAGEFAULT_FLAG_WP'], optionalFeatures: ['WP_UNPOPULATED'] });
    this.dirty = new Uint8Array(ram.bytes / ram.pageSize);
    try {
      if (!this.uffd.enabled.has('WP_UNPOPULATED')) {
        // without markers a write to a never-touched page would go unseen: populate every page (read maps the zero page)
        const one = new Uint8Array(1);
        const pages = ram.bytes / ram.pageSize;
        for (let p = 0; p < pages; p++) ram.contents.copyOut(p, one, 0, 1);
      }
      this.uffd.register(ram.base, ram.bytes, { wp: true });
      this.uffd.writeProtect(ram.base, ram.bytes, true);
    } catch (e) {
      this.uffd.close();
      throw e;
    }
    this.poller = new UffdPoller(this.uffd, this.onFaults, { onError: (e) => { this.failure = e; } });
    this.poller.start();
  }

  private readonly onFaults = (): number => {
    const n = this.uffd.readEvents();
    const ps = this.ram.pageSize;
    for (let i = 0; i < n; i++) {
      if (this.uffd.eventKind(i) !== EVENT_PAGEFAULT || (this.uffd.faultFlags(i) & PAGEFAULT_FLAG_WP) === 0) continue;
      const addr = this.uffd.faultAddress(i);
      let page = Math.floor((addr - this.ram.base) / ps);
      let n = 1;
      const blocks = this.ram.blocks;
      if (blocks.count > 1) { // a huge-page block beside smaller pages: its whole host page
        const b = blocks.list[blocks.indexAtPage(page)];
        page -= (page - b.firstPage) % b.hostPages;
        n = b.hostPages;
      }
      this.dirty.fill(1, page, page + n);
      this.uffd.writeProtect(this.ram.base + page * ps, n * ps, false); // wakes the writer
    }
    return n;
  };

  collect(into: Uint8Array): number {
    if (this.failure) throw this.failure;
    if (this.stopped) return 0;
    const ps = this.ram.pageSize;
    let marked = 0;
    const d = this.dirty;
    for (let p = 0; p < d.length; p++) {
      if (d[p] === 0) continue;
      let q = p;
      while (q < d.length && d[q] !== 0) { d[q] = 0; if ((into[q] & 1) === 0) { into[q] |= 1; marked++; } q++; }
      this.uffd.writeProtect(this.ram.base + p * ps, (q - p) * ps, true); // the kernel refuses DONTWAKE with WP (EINVAL)
      p = q;
    }
    return marked;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try { this.uffd.writeProtect(this.ram.base, this.ram.bytes, false); } catch { /* RAM gone */ }
    await this.poller.stop();
    try { this.uffd.unregister(this.ram.base, this.ram.bytes); } catch { /* RAM gone */ }
    this.uffd.close();
  }
}
