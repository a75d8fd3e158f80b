// The destination's RAM state (QEMU's ram_load side, apart from the
// migration's status): the page flags in native memory that the native
// threads read (and the main-stream receiver writes in precopy), guest RAM's
// userfaultfd registration, and the count of pages received, kept exact
// without a scan: those marked here plus those the receiver marked.

import type { GuestMemory, NativeBlockTable } from './guest.js';
import { Userfaultfd, StagingArea, IOCTL_ZEROPAGE } from '../uffd/index.js';
import { NativeBlock } from '../native/memory.js';
import { WireError } from './wire.js';

// page flags (native-shim/channel.h PC_PAGE_*; bits 8 and 16 are the blocktime rules')
const RECEIVED = 1; // the page's content is here (or it is known to be zero)

export class DestinationRam {
  readonly base: number;
  readonly pageSize: number;
  readonly pages: number;
  /** the RAM block table the native threads take (null: one block) */
  readonly blockTable: NativeBlockTable | null;
  private readonly block: NativeBlock;
  readonly flags: Uint8Array;
  /** pages marked received here (the receiver counts those it marked in precopy) */
  private receivedHere = 0;
  /** guest RAM registered (MISSING) from the header on, or null */
  uffd: Userfaultfd | null = null;
  /** a page of zeros (mmap'ed, never written) that the native threads place
   *  zero pages from with UFFDIO_COPY where the kernel has no UFFDIO_ZEROPAGE
   *  (hugetlbfs: no zero huge page); null: UFFDIO_ZEROPAGE */
  private zeroPage: StagingArea | null = null;

  constructor(private readonly ram: GuestMemory) {
    this.base = ram.base;
    this.pageSize = ram.pageSize;
    this.pages = ram.bytes / ram.pageSize;
    this.blockTable = ram.blockTable;
    this.block = new NativeBlock(this.pages);
    this.flags = new Uint8Array(this.block.buffer, 0, this.pages);
  }

  /** the flags' address, for the native threads */
  get address(): number { return this.block.address; }

  /**
   * Registers guest RAM with userfaultfd (MISSING) as the migration starts,
   * for two reasons:
   *  - postcopy advise (QEMU's): when the source may switch to postcopy, a
   *    destination that cannot do it fails now, while the guest still runs on
   *    the source (`required`);
   *  - speed: a page arriving for the first time is placed with UFFDIO_COPY,
   *    which costs ~2 us here where a first-touch write into fresh memory
   *    costs 4-10 us (a page fault in nested virtualisation).
   * Without userfaultfd and without postcopy, pages are written directly.
   */
  register(required: boolean): void {
    let uffd: Userfaultfd | null = null;
    let ioctls = 0;
    try {
      // every page missing, as QEMU's postcopy init makes it: a page already
      // there (-mem-prealloc) would take no UFFDIO_COPY (EEXIST) and keep its old bytes
      this.ram.discard(0, this.ram.bytes);
      uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
      ioctls = uffd.register(this.base, this.ram.bytes, { missing: true });
    } catch (e) {
      if (uffd && !uffd.closed) uffd.close();
      if (required) throw new WireError(`this destination cannot do postcopy: ${(e as Error).message}`);
      return;
    }
    this.uffd = uffd;
    // never written: zeros, a page of the largest page size (a huge-page block beside 4 KiB ones has no UFFDIO_ZEROPAGE either)
    if ((ioctls & IOCTL_ZEROPAGE) === 0) this.zeroPage = StagingArea.create(1, this.ram.blocks.maxPageSize);
  }

  /** the zero page's address for the native threads (0: they use UFFDIO_ZEROPAGE) */
  get zeroSrc(): number { return this.zeroPage?.base ?? 0; }

  /** Un-registers guest RAM (the native threads are stopped): untouched zero pages fault normally from now on. */
  release(): void {
    const u = this.uffd;
    if (u && !u.closed) {
      try { u.unregister(this.base, this.ram.bytes); } catch { /* RAM gone */ }
      u.close();
    }
    this.uffd = null;
    this.zeroPage?.dispose();
    this.zeroPage = null;
  }

  /** DISCARD (the receiver paused): the pages are dropped, to come again */
  discard(offset: number, count: number): void {
    this.ram.discard(offset, count * this.pageSize);
    const first = offset / this.pageSize;
    for (let p = first; p < first + count; p++) {
      if (this.flags[p] & RECEIVED) this.receivedHere--;
      this.flags[p] = 0;
    }
  }

  /** Pages [first, first+count) are in place (placed by a native thread in postcopy): counted once. */
  received(first: number, count: number): void {
    const flags = this.flags;
    for (let p = first, end = first + count; p < end; p++) {
      const f = flags[p];
      if ((f & RECEIVED) === 0) {
        this.receivedHere++;
        flags[p] = f | RECEIVED;
      }
    }
  }

  /** pages received, given those the receiver marked */
  receivedCount(byReceiver: number): number {
    return this.receivedHere + byReceiver;
  }

  /** once no thread uses the flags any more */
  free(): void {
    this.block.free();
  }
}
