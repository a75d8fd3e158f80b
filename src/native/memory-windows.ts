// Reads and writes of a native mapping too large for one Buffer. Node 20's
// Buffers (and the ArrayBuffers koffi.view makes) stop at
// buffer.constants.MAX_LENGTH, 4 GiB; guest RAM goes up to 1 TiB, and one view
// over a 5 GiB mapping aborts the process inside koffi.view. So the mapping is
// seen through fixed windows of WINDOW_BYTES, each a Buffer made on first use
// and kept, and every copy or comparison is split where it crosses a window
// boundary. The page paths of the migration (a page copied onto the stream,
// the zero-page test, a run written into guest RAM) allocate nothing: a
// division, an array read and a memcpy/memcmp per window touched.
import koffi from 'koffi';

/** bytes of guest memory one window Buffer covers (1 GiB: a power of two, a page multiple, far below 4 GiB) */
export const WINDOW_BYTES = 2 ** 30;

/** all-zero bytes that zero tests compare against, shared (never written) */
const ZEROS = Buffer.alloc(64 * 1024);

export class MemoryWindowsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MemoryWindowsError';
  }
}

export class MemoryWindows {
  readonly bytes: number;
  readonly #ptr: bigint;
  readonly #windows: Array<Buffer | undefined>;
  #released = false;

  /** windows over the `bytes` of native memory at `ptr` (which must stay mapped until release()) */
  constructor(ptr: bigint, bytes: number) {
    this.#ptr = ptr;
    this.bytes = bytes;
    this.#windows = new Array<Buffer | undefined>(Math.ceil(bytes / WINDOW_BYTES)).fill(undefined);
  }

  /** copies src[srcPos, srcPos+len) to [offset, offset+len) */
  copyIn(offset: number, src: Uint8Array, srcPos: number, len: number): void {
    this.#check(offset, len, src, srcPos);
    while (len > 0) {
      const i = Math.floor(offset / WINDOW_BYTES);
      const pos = offset - i * WINDOW_BYTES;
      const n = Math.min(len, WINDOW_BYTES - pos);
      Buffer.prototype.copy.call(src, this.#windows[i] ?? this.#open(i), pos, srcPos, srcPos + n);
      offset += n; srcPos += n; len -= n;
    }
  }

  /** copies [offset, offset+len) to dst[dstPos, dstPos+len) */
  copyOut(offset: number, dst: Uint8Array, dstPos: number, len: number): void {
    this.#check(offset, len, dst, dstPos);
    while (len > 0) {
      const i = Math.floor(offset / WINDOW_BYTES);
      const pos = offset - i * WINDOW_BYTES;
      const n = Math.min(len, WINDOW_BYTES - pos);
      (this.#windows[i] ?? this.#open(i)).copy(dst, dstPos, pos, pos + n);
      offset += n; dstPos += n; len -= n;
    }
  }

  /** whether every byte of [offset, offset+len) is zero (reading populates the pages) */
  isZero(offset: number, len: number): boolean {
    this.#check(offset, len);
    while (len > 0) {
      const i = Math.floor(offset / WINDOW_BYTES);
      const pos = offset - i * WINDOW_BYTES;
      const n = Math.min(len, WINDOW_BYTES - pos, ZEROS.length);
      if ((this.#windows[i] ?? this.#open(i)).compare(ZEROS, 0, n, pos, pos + n) !== 0) return false;
      offset += n; len -= n;
    }
    return true;
  }

  /** A Buffer over [offset, offset+len), which must lie inside one window
   *  (any range up to WINDOW_BYTES that does not cross a multiple of it).
   *  Allocates a view: for set-up and tests, not for per-page paths. */
  view(offset: number, len: number): Buffer {
    this.#check(offset, len);
    const i = Math.floor(offset / WINDOW_BYTES);
    const pos = offset - i * WINDOW_BYTES;
    if (pos + len > WINDOW_BYTES) {
      throw new MemoryWindowsError(`[${offset}, ${offset + len}) crosses a ${WINDOW_BYTES}-byte window boundary: copy it with copyIn/copyOut instead`);
    }
    return (this.#windows[i] ?? this.#open(i)).subarray(pos, pos + len);
  }

  /** drops the windows (the memory is about to be unmapped); later calls throw. Idempotent. */
  release(): void {
    this.#released = true;
    this.#windows.fill(undefined);
  }

  #check(offset: number, len: number, other?: Uint8Array, otherPos = 0): void {
    if (this.#released) throw new MemoryWindowsError('the mapping was unmapped');
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(len) && offset >= 0 && len >= 0 && offset + len <= this.bytes)) {
      throw new RangeError(`[${offset}, ${offset + len}) is outside the mapping's ${this.bytes} bytes`);
    }
    if (other !== undefined && !(Number.isSafeInteger(otherPos) && otherPos >= 0 && otherPos + len <= other.length)) {
      throw new RangeError(`[${otherPos}, ${otherPos + len}) is outside the ${other.length}-byte buffer`);
    }
  }

  #open(i: number): Buffer {
    const start = i * WINDOW_BYTES;
    const w = Buffer.from(koffi.view(this.#ptr + BigInt(start), Math.min(WINDOW_BYTES, this.bytes - start)));
    this.#windows[i] = w;
    return w;
  }
}
