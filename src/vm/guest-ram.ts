// Guest RAM: one mapping, page-granular, zero-filled and unpopulated until
// touched, so that a destination registered with userfaultfd sees a MISSING
// fault on every page's first touch. Anonymous 4 KiB pages by default, or a
// file on a hugetlbfs mount (QEMU's -mem-path / memory-backend-file), whose
// huge page is then the unit of everything the migration does. Several
// memory backends (-numa node,memdev=ID) are several RAM blocks in that one
// mapping, back to back (src/vm/ram-blocks.ts). JavaScript reaches its bytes
// through MemoryWindows (src/native/memory-windows.ts).
import { CommandError } from '../errors.js';
import { NativeMapping, pageDigests, type MemoryWindows } from '../native/index.js';
import { hugetlbfsMapError, mapHugetlbfs, openHugetlbfs } from '../native/hugetlbfs.js';
import { BlockMapping, closeBackings, type BlockBacking } from '../native/block-mapping.js';
import { RamBlockTable } from '../native/ram-block-table.js';
import { MAX_RAM_BYTES, PAGE_SIZE, formatSize } from './size.js';
import { DEFAULT_RAM_ID, type MemoryBackend } from './memory-backend.js';
import { RamBlocks } from './ram-blocks.js';

/** what GuestRam needs of its mapping (NativeMapping for one block, BlockMapping for several) */
interface RamMapping {
  readonly address: number;
  readonly bytes: number;
  readonly pageSize: number;
  readonly windows: MemoryWindows;
  readonly disposed: boolean;
  discard(offset: number, len: number): void;
  discardAsync(offset: number, len: number): Promise<void>;
  dispose(): void;
}

export class GuestRam {
  readonly #map: RamMapping;
  /** native address of guest page 0 */
  readonly base: number;
  readonly bytes: number;
  /** the host page size of the backing (4096, or the hugetlbfs mount's): the unit of pages, faults and placement */
  readonly pageSize: number;
  /** bytes / pageSize */
  readonly pages: number;
  /** what backs it, with one RAM block (QEMU's memory backend: none given = anonymous RAM); null with several */
  readonly backend: MemoryBackend | null;
  /** the backends of its RAM blocks, in order ([] = anonymous pc.ram) */
  readonly backends: readonly MemoryBackend[];
  /** its RAM blocks (QEMU's RAMBlocks): one (pc.ram, or the backend's id), or one per backend */
  readonly blocks: RamBlocks;
  /** the block table the native threads take, with several blocks (one block: none, the threads' default) */
  readonly blockTable: RamBlockTable | null;

  private constructor(map: RamMapping, backends: readonly MemoryBackend[], blocks?: RamBlocks) {
    this.#map = map;
    this.base = map.address;
    this.bytes = map.bytes;
    this.pageSize = map.pageSize;
    this.pages = map.bytes / map.pageSize;
    this.backends = backends;
    this.backend = backends.length === 1 ? backends[0] : null;
    this.blocks = blocks ?? RamBlocks.single(backends[0]?.id ?? DEFAULT_RAM_ID, map.bytes, map.pageSize);
    this.blockTable = this.blocks.count > 1 ? new RamBlockTable(this.blocks.list) : null;
  }

  /** maps `bytes` of guest RAM (a positive page multiple, at most 1T): anonymous,
   *  or a file on the hugetlbfs mount of `backend.memPath` */
  static create(bytes: number, backend: MemoryBackend | null = null): GuestRam {
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE_SIZE !== 0 || bytes > MAX_RAM_BYTES) {
      throw new CommandError(`guest RAM size ${bytes} must be a positive multiple of ${PAGE_SIZE} up to ${formatSize(MAX_RAM_BYTES)}`);
    }
    if (backend?.memPath !== undefined) {
      try {
        return new GuestRam(mapHugetlbfs({ memPath: backend.memPath, bytes, shared: backend.share, prealloc: backend.prealloc }), [backend]);
      } catch (e) {
        throw new CommandError(e instanceof Error ? e.message : String(e));
      }
    }
    try {
      const map = NativeMapping.create(bytes);
      if (backend?.prealloc) map.populate();
      return new GuestRam(map, backend ? [backend] : []);
    } catch (e) {
      throw new CommandError(`cannot map ${formatSize(bytes)} of guest RAM: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** maps the RAM blocks of `backends` (memory-backend-ram or -file, each with its size), one block each, in
   *  order, back to back in one mapping. With blocks of different page sizes (hugetlbfs beside 4 KiB), guest
   *  RAM's pages are the smallest (QEMU's target page) and a huge page is several of them (RamBlocks.unit). */
  static createBlocks(backends: readonly MemoryBackend[]): GuestRam {
    if (backends.length < 2) return GuestRam.create(backends[0]?.size ?? 0, backends[0] ?? null);
    const files: BlockBacking['file'][] = [];
    const closeFiles = (): void => closeBackings(files);
    let blocks: RamBlocks;
    try {
      for (const b of backends) {
        files.push(b.memPath !== undefined ? openHugetlbfs({ memPath: b.memPath, bytes: b.size!, shared: b.share }) : undefined);
      }
      blocks = RamBlocks.layout(backends.map((b, i) => ({ idstr: b.id, usedLength: b.size!, pageSize: files[i]?.pageSize ?? PAGE_SIZE })));
    } catch (e) {
      closeFiles();
      throw new CommandError(e instanceof Error ? e.message : String(e));
    }
    if (blocks.bytes > MAX_RAM_BYTES) {
      closeFiles();
      throw new CommandError(`guest RAM of ${formatSize(blocks.bytes)} is more than ${formatSize(MAX_RAM_BYTES)}`);
    }
    // on hugetlbfs a failure says what the huge page pool holds
    const failed = (e: unknown): CommandError => (files.some((f) => f) ? new CommandError(hugetlbfsMapError(e, blocks.bytes, blocks.maxPageSize).message)
      : new CommandError(`cannot map ${formatSize(blocks.bytes)} of guest RAM: ${e instanceof Error ? e.message : String(e)}`));
    let map: BlockMapping;
    try {
      map = BlockMapping.create(blocks.bytes, blocks.unit, blocks.maxPageSize,
        blocks.list.map((b, i) => ({ offset: b.offset, bytes: b.usedLength, file: files[i] })));
    } catch (e) {
      throw failed(e);
    }
    try {
      for (const [i, b] of backends.entries()) if (b.prealloc) map.populate(blocks.list[i].offset, blocks.list[i].usedLength);
    } catch (e) {
      map.dispose();
      throw failed(e);
    }
    return new GuestRam(map, backends, blocks);
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
    this.blockTable?.free();
  }
}
