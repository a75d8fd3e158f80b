// Guest RAM: one mapping, page-granular, zero-filled and unpopulated until
// touched, so that a destination registered with userfaultfd sees a MISSING
// fault on every page's first touch. Anonymous 4 KiB pages by default, or a
// file on a hugetlbfs mount (QEMU's -mem-path / memory-backend-file), whose
// huge page is then the unit of everything the migration does. JavaScript
// reaches its bytes through MemoryWindows (src/native/memory-windows.ts).
import { CommandError } from '../errors.js';
import { NativeMapping, pageDigests, type MemoryWindows } from '../native/index.js';
import { mapHugetlbfs } from '../native/hugetlbfs.js';
import { MAX_RAM_BYTES, PAGE_SIZE, formatSize } from './size.js';
import type { MemoryBackend } from './memory-backend.js';

export class GuestRam {
  readonly #map: NativeMapping;
  /** native address of guest page 0 */
  readonly base: number;
  readonly bytes: number;
  /** the host page size of the backing (4096, or the hugetlbfs mount's): the unit of pages, faults and placement */
  readonly pageSize: number;
  /** bytes / pageSize */
  readonly pages: number;
  /** what backs it (QEMU's memory backend: none given = anonymous RAM) */
  readonly backend: MemoryBackend | null;

  private constructor(map: NativeMapping, backend: MemoryBackend | null) {
    this.#map = map;
    this.base = map.address;
    this.bytes = map.bytes;
    this.pageSize = map.pageSize;
    this.pages = map.bytes / map.pageSize;
    this.backend = backend;
  }

  /** maps `bytes` of guest RAM (a positive page multiple, at most 1T): anonymous,
   *  or a file on the hugetlbfs mount of `backend.memPath` */
  static create(bytes: number, backend: MemoryBackend | null = null): GuestRam {
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE_SIZE !== 0 || bytes > MAX_RAM_BYTES) {
      throw new CommandError(`guest RAM size ${bytes} must be a positive multiple of ${PAGE_SIZE} up to ${formatSize(MAX_RAM_BYTES)}`);
    }
    if (backend?.memPath !== undefined) {
      try {
        return new GuestRam(mapHugetlbfs({ memPath: backend.memPath, bytes, shared: backend.share, prealloc: backend.prealloc }), backend);
      } catch (e) {
        throw new CommandError(e instanceof Error ? e.message : String(e));
      }
    }
    try {
      const map = NativeMapping.create(bytes);
      if (backend?.prealloc) map.populate();
      return new GuestRam(map, backend);
    } catch (e) {
      throw new CommandError(`cannot map ${formatSize(bytes)} of guest RAM: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  get disposed(): boolean { return this.#map.disposed; }

  /** the RAM's bytes by page number, through 1 GiB windows (no Buffer spans all of a guest
   *  over 4 GiB). Reading a page populates it (and faults under userfaultfd). */
  get windows(): MemoryWindows {
    return this.#map.windows;
  }

  /** address of guest page `page` */
  pageAddress(page: number): number {
    return this.base + page * this.pageSize;
  }

  /** 64-bit digests of pages [first, first+count) (default: all) */
  pageDigests(first = 0, count = this.pages - first): BigUint64Array {
    if (this.#map.disposed) throw new Error('guest RAM was disposed');
    if (!(first >= 0 && count >= 0 && first + count <= this.pages)) {
      throw new RangeError(`pages [${first}, ${first + count}) are outside guest RAM (${this.pages} pages)`);
    }
    return pageDigests(this.base, this.pageSize, first, count);
  }

  /** the digests of pages [first, first+count) (default: all) as 16 hex digits
   *  per page, lowest page first (Machine.ramDigest()) */
  digestHex(first = 0, count = this.pages - first): string {
    const d = this.pageDigests(first, count);
    // each digest's bytes most significant first, as toString(16) writes them
    return Buffer.from(d.buffer, d.byteOffset, d.byteLength).swap64().toString('hex');
  }

  /** gives pages back: they read as zero again and are unpopulated (huge pages go back to the pool) */
  discard(firstPage: number, count: number): void {
    this.#map.discard(firstPage * this.pageSize, count * this.pageSize);
  }

  /** discard() off the main thread (needed when the main thread reads a uffd with EVENT_REMOVE) */
  discardAsync(firstPage: number, count: number): Promise<void> {
    return this.#map.discardAsync(firstPage * this.pageSize, count * this.pageSize);
  }

  /** unmaps (stop the vCPUs first). Idempotent. */
  dispose(): void {
    this.#map.dispose();
  }
}
