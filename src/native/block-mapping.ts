// Guest RAM of several RAM blocks as one mapping: one reservation of
// anonymous NORESERVE memory for all of them (an anonymous block is its
// range of it), aligned to the largest page size, and each file-backed block
// (hugetlbfs) mapped over its range with MAP_FIXED. One base address and one
// run of page numbers for the whole guest, as with one block, so everything
// keyed by a guest page (flags, bitmaps, the native threads' offsets) stays
// a flat array; the blocks are the ranges src/vm/ram-blocks.ts lays out.
// Discards go per block: a shared file's pages are punched out of the file.
import * as libc from './libc.js';
import { MemoryWindows } from './memory-windows.js';
import { NativeMappingError, type FileBacking } from './memory.js';

/** one block's range of the mapping and what backs it */
export interface BlockBacking {
  offset: number;
  bytes: number;
  /** a file mapped over the range (the mapping owns it from here on, and closes it); none = anonymous */
  file?: FileBacking;
}

/** closes the files of blocks that will not be mapped after all */
export function closeBackings(files: ReadonlyArray<FileBacking | undefined>): void {
  for (const f of files) if (f) libc.close(f.fd);
}

export class BlockMapping {
  readonly address: number;
  readonly bytes: number;
  readonly pageSize: number;
  readonly windows: MemoryWindows;
  readonly #reservation: bigint;
  readonly #reservedBytes: number;
  readonly #blocks: readonly BlockBacking[];
  #disposed = false;

  private constructor(reservation: bigint, reservedBytes: number, base: bigint, bytes: number, pageSize: number, blocks: readonly BlockBacking[]) {
    this.#reservation = reservation;
    this.#reservedBytes = reservedBytes;
    this.address = libc.addressOf(base);
    this.bytes = bytes;
    this.pageSize = pageSize;
    this.#blocks = blocks;
    this.windows = new MemoryWindows(base, bytes, pageSize);
  }

  /** maps `bytes` of blocks laid out at `blocks[i].offset` (sorted, inside [0, bytes)), aligned to `align` (the
   *  largest page size); `pageSize` is the unit of its page numbers (the smallest). Closes every file on failure. */
  static create(bytes: number, pageSize: number, align: number, blocks: readonly BlockBacking[]): BlockMapping {
    const closeAll = (): void => closeBackings(blocks.map((b) => b.file));
    const reserved = bytes + align;
    const ptr = libc.mmap(null, reserved, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE, -1, 0);
    if (ptr === libc.MAP_FAILED || ptr === 0n || ptr === -1n) {
      const e = libc.errno();
      closeAll();
      throw new NativeMappingError(`mmap of ${reserved} bytes failed: ${libc.strerror(e)} (${libc.errnoName(e)})`, e);
    }
    const a = BigInt(align);
    const base = (ptr + a - 1n) / a * a;
    for (const b of blocks) {
      if (!b.file) continue;
      const at = base + BigInt(b.offset);
      const got = libc.mmap(at, b.bytes, libc.PROT_READ | libc.PROT_WRITE, (b.file.shared ? libc.MAP_SHARED : libc.MAP_PRIVATE) | libc.MAP_FIXED, b.file.fd, 0);
      if (got !== at) {
        const e = libc.errno();
        libc.munmap(ptr, reserved);
        closeAll();
        throw new NativeMappingError(`unable to map backing store for guest RAM: ${libc.strerror(e)}`, e);
      }
    }
    return new BlockMapping(ptr, reserved, base, bytes, pageSize, blocks);
  }

  get disposed(): boolean { return this.#disposed; }

  /** populates [offset, offset+len) now (QEMU's prealloc of one backend) */
  populate(offset = 0, len = this.bytes): void {
    if (libc.madvise(this.address + offset, len, libc.MADV_POPULATE_WRITE) !== 0) {
      const e = libc.errno();
      throw new NativeMappingError(`qemu_prealloc_mem: preallocating memory failed: ${libc.strerror(e)}`, e);
    }
  }

  /** gives [offset, offset+len) back, block by block: MADV_REMOVE for a shared file, else MADV_DONTNEED */
  discard(offset: number, len: number): void {
    if (this.#disposed) throw new NativeMappingError('the mapping was unmapped');
    this.#perBlock(offset, len, (at, n, advice) => {
      if (libc.madvise(at, n, advice) !== 0) {
        const e = libc.errno();
        throw new NativeMappingError(`madvise(${advice === libc.MADV_REMOVE ? 'REMOVE' : 'DONTNEED'}) failed: ${libc.strerror(e)}`, e);
      }
    });
  }

  /** discard() on koffi worker threads (the main thread may be the uffd reader: see NativeMapping.discardAsync) */
  async discardAsync(offset: number, len: number): Promise<void> {
    if (this.#disposed) throw new NativeMappingError('the mapping was unmapped');
    const parts: Array<[number, number, number]> = [];
    this.#perBlock(offset, len, (at, n, advice) => parts.push([at, n, advice]));
    await Promise.all(parts.map(([at, n, advice]) => new Promise<void>((resolve, reject) => {
      libc.madvise.async(at, n, advice, (err, res) => {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else if (res !== 0) reject(new NativeMappingError(`madvise failed: ${libc.strerror(libc.errno())}`));
        else resolve();
      });
    })));
  }

  #perBlock(offset: number, len: number, f: (at: number, n: number, advice: number) => void): void {
    for (const b of this.#blocks) {
      const from = Math.max(offset, b.offset);
      const to = Math.min(offset + len, b.offset + b.bytes);
      if (from < to) f(this.address + from, to - from, b.file?.shared ? libc.MADV_REMOVE : libc.MADV_DONTNEED);
    }
  }

  /** unmaps all blocks and closes their files. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.windows.release();
    libc.munmap(this.#reservation, this.#reservedBytes);
    for (const b of this.#blocks) if (b.file) libc.close(b.file.fd);
  }
}
