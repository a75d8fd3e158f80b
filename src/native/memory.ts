// Native memory that JS can read and write and native threads can keep using:
// mmap'ed mappings (guest RAM: anonymous or a hugetlbfs file; staging pages)
// and small koffi.alloc'ed control blocks. Never a Buffer: a Buffer handed to
// native code is valid only for one call (REFERENCE.md §4).
import koffi from 'koffi';
import * as libc from './libc.js';
import { MemoryWindows } from './memory-windows.js';

export class NativeMappingError extends Error {
  constructor(message: string, readonly errno?: number) {
    super(message);
    this.name = 'NativeMappingError';
  }
}

/** what a file mapping is (src/native/hugetlbfs.ts opens the file) */
export interface FileBacking {
  /** the open file; the mapping owns it from here on and closes it on dispose() */
  fd: number;
  /** the file system's page size (a hugetlbfs mount's huge page size) */
  pageSize: number;
  /** MAP_SHARED (QEMU's share=on) rather than MAP_PRIVATE */
  shared: boolean;
}

/**
 * A private anonymous mapping (4 KiB pages), or a mapping of a hugetlbfs file
 * (huge pages). Untouched pages stay unpopulated (a userfaultfd MISSING fault
 * fires on first touch when registered).
 */
export class NativeMapping {
  readonly #ptr: bigint;
  readonly address: number;
  readonly bytes: number;
  /** the unit the kernel maps, faults and places in: 4096, or the huge page size */
  readonly pageSize: number;
  /** the file mapped, or -1 (anonymous) */
  readonly #fd: number;
  /** discarding with MADV_REMOVE (a shared file's pages live in the file) rather than MADV_DONTNEED */
  readonly #discardAdvice: number;
  /** the mapping's bytes, through Buffers over 1 GiB windows (one Buffer stops at 4 GiB).
   *  Touching them populates pages (and faults under userfaultfd). */
  readonly windows: MemoryWindows;
  #disposed = false;

  private constructor(ptr: bigint, bytes: number, pageSize = 4096, fd = -1, shared = false) {
    this.#ptr = ptr;
    this.address = libc.addressOf(ptr);
    this.bytes = bytes;
    this.pageSize = pageSize;
    this.#fd = fd;
    this.#discardAdvice = shared ? libc.MADV_REMOVE : libc.MADV_DONTNEED;
    this.windows = new MemoryWindows(ptr, bytes, pageSize);
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

  /** maps `bytes` (a multiple of its page size) of an open file, reserving its
   *  huge pages now (no MAP_NORESERVE: too few free huge pages fail here, as
   *  QEMU's mmap does, not with a SIGBUS later). Closes the file on failure. */
  static mapFile(bytes: number, file: FileBacking): NativeMapping {
    const ptr = libc.mmap(null, bytes, libc.PROT_READ | libc.PROT_WRITE, file.shared ? libc.MAP_SHARED : libc.MAP_PRIVATE, file.fd, 0);
    if (ptr === libc.MAP_FAILED || ptr === 0n || ptr === -1n) {
      const e = libc.errno();
      libc.close(file.fd);
      throw new NativeMappingError(`unable to map backing store for guest RAM: ${libc.strerror(e)}`, e);
    }
    return new NativeMapping(ptr, bytes, file.pageSize, file.fd, file.shared);
  }

  get disposed(): boolean { return this.#disposed; }

  /** populates every page now (QEMU's prealloc, MADV_POPULATE_WRITE); throws with errno when the kernel cannot */
  populate(): void {
    if (libc.madvise(this.address, this.bytes, libc.MADV_POPULATE_WRITE) !== 0) {
      const e = libc.errno();
      throw new NativeMappingError(`qemu_prealloc_mem: preallocating memory failed: ${libc.strerror(e)}`, e);
    }
  }

  /** gives pages back to the kernel: [offset, offset+len) (page aligned) reads as zero again and is unpopulated */
  discard(offset: number, len: number): void {
    if (this.#disposed) throw new NativeMappingError('the mapping was unmapped');
    if (libc.madvise(this.address + offset, len, this.#discardAdvice) !== 0) {
      const e = libc.errno();
      throw new NativeMappingError(`madvise(${this.#adviceName()}) failed: ${libc.strerror(e)}`, e);
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
      libc.madvise.async(this.address + offset, len, this.#discardAdvice, (err, res) => {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else if (res !== 0) reject(new NativeMappingError(`madvise(${this.#adviceName()}) failed: ${libc.strerror(libc.errno())}`));
        else resolve();
      });
    });
  }

  #adviceName(): string { return this.#discardAdvice === libc.MADV_REMOVE ? 'REMOVE' : 'DONTNEED'; }

  /** unmaps (and closes the file); any windows.view() obtained before must not be used afterwards. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.windows.release();
    libc.munmap(this.#ptr, this.bytes);
    if (this.#fd >= 0) libc.close(this.#fd);
  }
}

/** a zeroed block of native memory from koffi.alloc, 8-byte aligned, for control blocks shared with threads */
export class NativeBlock {
  readonly ptr: bigint;
  readonly address: number;
  readonly bytes: number;
  readonly buffer: ArrayBuffer;
  #freed = false;
  /** blocks allocated and not freed yet, in this process (tests look for leaks with it) */
  static live = 0;

  constructor(bytes: number) {
    const words = Math.max(1, Math.ceil(bytes / 8));
    const p = koffi.alloc('uint64_t', words) as unknown;
    this.ptr = typeof p === 'bigint' ? p : koffi.address(p);
    this.address = libc.addressOf(this.ptr);
    this.bytes = words * 8;
    this.buffer = koffi.view(this.ptr, this.bytes);
    new Uint8Array(this.buffer).fill(0);
    NativeBlock.live++;
  }

  get freed(): boolean { return this.#freed; }

  /** frees the memory; only once no native thread uses it any more. Idempotent. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    NativeBlock.live--;
    koffi.free(this.ptr);
  }
}
