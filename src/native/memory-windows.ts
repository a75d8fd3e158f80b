// Reads and writes of a native mapping too large for one Buffer. Node 20's
// Buffers (and the ArrayBuffers koffi.view makes) stop at
// buffer.constants.MAX_LENGTH, 4 GiB; guest RAM goes up to 1 TiB, and one view
// over a 5 GiB mapping aborts the process inside koffi.view. So the mapping is
// seen through fixed windows of WINDOW_BYTES, each a Buffer made on first use
// and kept, and every copy or comparison is split where it crosses a window
// boundary.
//
// The page paths of the migration (a page copied onto the stream, the
// zero-page test, a run written into guest RAM) allocate nothing:
//  - positions are page numbers (the mapping's page: 4 KiB, or the huge page
//    of a hugetlbfs mapping), not byte offsets: a page number stays a
//    small integer up to 1 TiB (2^28 pages), where a byte offset past 2 GiB is
//    a double that V8 boxes, i.e. allocates, when a caller hands it to two
//    calls (measured: about one per page at 4 GiB);
//  - copies go through native-shim's pc_copy_bytes, since Node 20's
//    Buffer.copy makes a Uint8Array per call whose source does not start at 0.
import koffi from 'koffi';
import { loadShim, type Shim } from './shim.js';

/** the default unit of positions: a 4 KiB page (NativeMapping sizes are multiples of it) */
export const PAGE_BYTES = 4096;
/** bytes one window Buffer covers (1 GiB: a multiple of every page size up to 1 GiB, far below Node's 4 GiB) */
export const WINDOW_BYTES = 2 ** 30;

/** all-zero bytes that zero tests compare against, shared (never written) */
const ZEROS = Buffer.alloc(64 * 1024);

/** the shim's copy, loaded on the first copy (a mapping used only through view() needs no shim) */
let copyBytes: Shim['copyBytes'] | undefined;

export class MemoryWindowsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MemoryWindowsError';
  }
}

export class MemoryWindows {
  readonly bytes: number;
  /** the unit of positions */
  readonly pageBytes: number;
  readonly #windowPages: number;
  readonly #ptr: bigint;
  readonly #windows: Array<Buffer | undefined>;
  #released = false;

  /** windows over the `bytes` (a multiple of pageBytes, a power of two up to
   *  WINDOW_BYTES) of native memory at `ptr`, which must stay mapped until release() */
  constructor(ptr: bigint, bytes: number, pageBytes = PAGE_BYTES) {
    if (!(pageBytes >= 1 && pageBytes <= WINDOW_BYTES && (pageBytes & (pageBytes - 1)) === 0)) {
      throw new MemoryWindowsError(`page size ${pageBytes} is not a power of two up to ${WINDOW_BYTES}`);
    }
    this.#ptr = ptr;
    this.bytes = bytes;
    this.pageBytes = pageBytes;
    this.#windowPages = WINDOW_BYTES / pageBytes;
    this.#windows = new Array<Buffer | undefined>(Math.ceil(bytes / WINDOW_BYTES)).fill(undefined);
  }

  /** copies src[srcPos, srcPos+len) into the mapping from the start of page `page` on */
  copyIn(page: number, src: Uint8Array, srcPos: number, len: number): void {
    this.#check(page, len, src, srcPos);
    const wp = this.#windowPages;
    for (let i = Math.floor(page / wp), pos = (page - i * wp) * this.pageBytes; len > 0; i++, pos = 0) {
      const n = Math.min(len, WINDOW_BYTES - pos);
      (copyBytes ??= loadShim().copyBytes)(this.#windows[i] ?? this.#open(i), pos, src, srcPos, n);
      srcPos += n; len -= n;
    }
  }

  /** copies len bytes of the mapping, from the start of page `page` on, to dst[dstPos, dstPos+len) */
  copyOut(page: number, dst: Uint8Array, dstPos: number, len: number): void {
    this.#check(page, len, dst, dstPos);
    const wp = this.#windowPages;
    for (let i = Math.floor(page / wp), pos = (page - i * wp) * this.pageBytes; len > 0; i++, pos = 0) {
      const n = Math.min(len, WINDOW_BYTES - pos);
      (copyBytes ??= loadShim().copyBytes)(dst, dstPos, this.#windows[i] ?? this.#open(i), pos, n);
      dstPos += n; len -= n;
    }
  }

  /** whether the len bytes from the start of page `page` on are all zero (reading populates the pages) */
  isZero(page: number, len: number): boolean {
    this.#check(page, len);
    let i = Math.floor(page / this.#windowPages);
    let pos = (page - i * this.#windowPages) * this.pageBytes;
    while (len > 0) {
      const n = Math.min(len, WINDOW_BYTES - pos, ZEROS.length);
      if ((this.#windows[i] ?? this.#open(i)).compare(ZEROS, 0, n, pos, pos + n) !== 0) return false;
      len -= n; pos += n;
      if (pos === WINDOW_BYTES) { i++; pos = 0; }
    }
    return true;
  }

  /** A Buffer over the len bytes from the start of page `page` on, which must
   *  lie inside one window (not cross a multiple of WINDOW_BYTES). Makes a
   *  view object: for set-up and tests, not for per-page paths. */
  view(page: number, len: number): Buffer {
    this.#check(page, len);
    const i = Math.floor(page / this.#windowPages);
    const pos = (page - i * this.#windowPages) * this.pageBytes;
    if (pos + len > WINDOW_BYTES) {
      throw new MemoryWindowsError(`${len} bytes from page ${page} cross a ${WINDOW_BYTES}-byte window boundary: use copyIn/copyOut`);
    }
    return (this.#windows[i] ?? this.#open(i)).subarray(pos, pos + len);
  }

  /** drops the windows (the memory is about to be unmapped); later calls throw. Idempotent. */
  release(): void {
    this.#released = true;
    this.#windows.fill(undefined);
  }

  #check(page: number, len: number, other?: Uint8Array, otherPos = 0): void {
    if (this.#released) throw new MemoryWindowsError('the mapping was unmapped');
    if (!(Number.isInteger(page) && Number.isSafeInteger(len) && page >= 0 && len >= 0 && page * this.pageBytes + len <= this.bytes)) {
      throw new RangeError(`${len} bytes from page ${page} are outside the mapping's ${this.bytes} bytes`);
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
