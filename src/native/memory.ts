// Native memory that JS can read and write and native threads can keep using:
// anonymous mmap'ed mappings (guest RAM, staging pages) and small koffi.alloc'ed
// control blocks. Never a Buffer: a Buffer handed to native code is valid only
// for one call (REFERENCE.md §4).
import koffi from 'koffi';
import * as libc from './libc.js';
import { MemoryWindows } from './memory-windows.js';

export class NativeMappingError extends Error {
  constructor(message: string, readonly errno?: number) {
    super(message);
    this.name = 'NativeMappingError';
  }
}

/**
 * An anonymous private mapping. Untouched pages stay unpopulated (no memory
 * used, and a userfaultfd MISSING fault fires on first touch when registered).
 */
export class NativeMapping {
  readonly #ptr: bigint;
  readonly address: number;
  readonly bytes: number;
  /** the mapping's bytes, through Buffers over 1 GiB windows (one Buffer stops at 4 GiB).
   *  Touching them populates pages (and faults under userfaultfd). */
  readonly windows: MemoryWindows;
  #disposed = false;

  private constructor(ptr: bigint, bytes: number) {
    this.#ptr = ptr;
    this.address = libc.addressOf(ptr);
    this.bytes = bytes;
    this.windows = new MemoryWindows(ptr, bytes);
  }

  /** maps `bytes` (a multiple of 4096) of zeroed, unpopulated, NORESERVE anonymous memory */
  static create(bytes: number): NativeMapping {
    if (!(Number.isSafeInteger(bytes) && bytes > 0 && bytes % 4096 === 0)) {
      throw new NativeMappingError(`mmap: size ${bytes} is not a positive multiple of 4096`);
    }
    const ptr = libc.mmap(null, bytes, libc.PROT_READ | libc.PROT_WRITE,
      libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE, -1, 0);
    if (ptr === libc.MAP_FAILED || ptr === 0n || ptr === -1n) {
      const e = libc.errno();
      throw new NativeMappingError(`mmap of ${bytes} bytes failed: ${libc.strerror(e)} (${libc.errnoName(e)})`, e);
    }
    return new NativeMapping(ptr, bytes);
  }

  get disposed(): boolean { return this.#disposed; }

  /** gives pages back to the kernel: [offset, offset+len) reads as zero again and is unpopulated */
  discard(offset: number, len: number): void {
    if (this.#disposed) throw new NativeMappingError('the mapping was unmapped');
    if (libc.madvise(this.address + offset, len, libc.MADV_DONTNEED) !== 0) {
      const e = libc.errno();
      throw new NativeMappingError(`madvise(DONTNEED) failed: ${libc.strerror(e)}`, e);
    }
  }

  /**
   * discard() on a koffi worker thread. With a userfaultfd that has
   * EVENT_REMOVE enabled, madvise waits until the uffd reader has read the
   * REMOVE event, so a discard issued on the reader's own thread would wait
   * forever: use this one there.
   */
  discardAsync(offset: number, len: number): Promise<void> {
    if (this.#disposed) return Promise.reject(new NativeMappingError('the mapping was unmapped'));
    return new Promise((resolve, reject) => {
      libc.madvise.async(this.address + offset, len, libc.MADV_DONTNEED, (err, res) => {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else if (res !== 0) reject(new NativeMappingError(`madvise(DONTNEED) failed: ${libc.strerror(libc.errno())}`));
        else resolve();
      });
    });
  }

  /** unmaps; any windows.view() obtained before must not be used afterwards. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.windows.release();
    libc.munmap(this.#ptr, this.bytes);
  }
}

/** a zeroed block of native memory from koffi.alloc, 8-byte aligned, for control blocks shared with threads */
export class NativeBlock {
  readonly ptr: bigint;
  readonly address: number;
  readonly bytes: number;
  readonly buffer: ArrayBuffer;
  #freed = false;

  constructor(bytes: number) {
    const words = Math.max(1, Math.ceil(bytes / 8));
    const p = koffi.alloc('uint64_t', words) as unknown;
    this.ptr = typeof p === 'bigint' ? p : koffi.address(p);
    this.address = libc.addressOf(this.ptr);
    this.bytes = words * 8;
    this.buffer = koffi.view(this.ptr, this.bytes);
    new Uint8Array(this.buffer).fill(0);
  }

  get freed(): boolean { return this.#freed; }

  /** frees the memory; only once no native thread uses it any more. Idempotent. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    koffi.free(this.ptr);
  }
}
