// The userfaultfd handle: open + API handshake, register/unregister, reading
// fault messages in batches, and resolving them (copy, zeropage, wake,
// writeprotect). Like the Rust crate's Uffd. The per-fault calls (readEvents,
// the fault accessors, copy, zeropage, wake) reuse preallocated argument
// buffers and never allocate or decode structs.
import * as libc from '../native/libc.js';
import { ioctlAt, readAt } from '../native/libc.js';
import * as abi from './abi.js';
import type { FeatureName } from './abi.js';
import { UffdError, badArgument, closedError, sysError } from './errors.js';
import { featureSet, negotiateFeatures, type FeatureRequest } from './features.js';
import { openUffdFd } from './open.js';
import { decodeEvent, type UffdEvent } from './events.js';
import { NativeBlock } from '../native/memory.js';

export type PlaceResult = 'placed' | 'exists' | 'again';

export interface PlaceOptions {
  /** do not wake the threads waiting there */
  dontWake?: boolean;
  /** place write-protected (copy only) */
  wp?: boolean;
  /** the range's page size (a hugetlbfs range's huge page), the step past a
   *  page that is already there; default 4096 */
  pageSize?: number;
}

export interface OpenOptions extends FeatureRequest {}

export interface RegisterMode {
  /** deliver faults on missing pages (resolved with copy/zeropage) */
  missing?: boolean;
  /** deliver faults on writes to write-protected pages (resolved with writeProtect(..., false)) */
  wp?: boolean;
}

const PAGE = abi.UFFD_PAGE_SIZE;
const TWO32 = 4294967296;
/** user addresses on x86_64/aarch64 are below 2^47 (2^48 with 5-level paging/LVA) */
const ADDRESS_LIMIT = 2 ** 52;
const INITIAL_MSGS = 1024;

let supportedCache: number | undefined;

/** the features this kernel's userfaultfd supports (UFFDIO_API with features 0 on a throw-away fd) */
export function probeSupportedFeatures(): number {
  if (supportedCache !== undefined) return supportedCache;
  const { fd } = openUffdFd(libc.O_CLOEXEC | libc.O_NONBLOCK);
  try {
    const arg = new Uint32Array(abi.API_SIZE / 4);
    arg[0] = abi.UFFD_API;
    if (libc.ioctl(fd, abi.UFFDIO_API, new Uint8Array(arg.buffer)) !== 0) {
      throw sysError('UFFDIO_API (feature probe)', libc.errno(), 'the kernel refused the userfaultfd API handshake');
    }
    supportedCache = arg[2]; // features, low 32 bits (all defined bits fit)
    return supportedCache;
  } finally {
    libc.close(fd);
  }
}

function checkRange(op: string, start: number, len: number): void {
  if (!(start >= 0) || start % PAGE !== 0 || start >= ADDRESS_LIMIT) {
    throw badArgument(`${op}: start ${fmt(start)} is not a page-aligned (${PAGE}) user address`);
  }
  if (!(len > 0) || len % PAGE !== 0 || start + len > ADDRESS_LIMIT) {
    throw badArgument(`${op}: length ${fmt(len)} is not a positive multiple of the page size (${PAGE})`);
  }
}

function fmt(n: number): string {
  return Number.isSafeInteger(n) && n >= 0 ? `0x${n.toString(16)}` : String(n);
}

function rangeText(start: number, len: number): string {
  return `[${fmt(start)}, ${fmt(start + len)})`;
}

export class Userfaultfd {
  #fd: number;
  readonly supported: ReadonlySet<FeatureName>;
  readonly enabled: ReadonlySet<FeatureName>;
  /** the fd was opened with UFFD_USER_MODE_ONLY (kernel-mode faults, e.g. read(2) into the range, fail with EFAULT) */
  readonly userModeOnly: boolean;
  readonly supportedMask: number;
  readonly enabledMask: number;

  // reusable ioctl argument blocks (u32 views so 64-bit fields are written as two halves, no BigInt)
  readonly #rangeArg = new Uint32Array(abi.RANGE_SIZE / 4);
  readonly #rangeBytes = new Uint8Array(this.#rangeArg.buffer);
  // the per-fault blocks live in native memory and are passed to the kernel by address (cheapest koffi call)
  readonly #copyBlock = new NativeBlock(abi.COPY_SIZE);
  readonly #copyAddr = this.#copyBlock.address;
  #copyArg = new Uint32Array(this.#copyBlock.buffer, 0, abi.COPY_SIZE / 4);
  readonly #zeroArg = new Uint32Array(abi.ZEROPAGE_SIZE / 4);
  readonly #zeroBytes = new Uint8Array(this.#zeroArg.buffer);
  readonly #wpArg = new Uint32Array(abi.WRITEPROTECT_SIZE / 4);
  readonly #wpBytes = new Uint8Array(this.#wpArg.buffer);
  // message buffer of the last readEvents()
  #msgBlock = new NativeBlock(INITIAL_MSGS * abi.UFFD_MSG_SIZE);
  #msgAddr = this.#msgBlock.address;
  #msgCap = this.#msgBlock.bytes;
  #msgBytes = new Uint8Array(this.#msgBlock.buffer);
  #msgU32 = new Uint32Array(this.#msgBlock.buffer);
  #count = 0;

  private constructor(fd: number, userModeOnly: boolean, supportedMask: number, enabledMask: number) {
    this.#fd = fd;
    this.userModeOnly = userModeOnly;
    this.supportedMask = supportedMask;
    this.enabledMask = enabledMask;
    this.supported = featureSet(supportedMask);
    this.enabled = featureSet(enabledMask);
  }

  /**
   * Opens a userfaultfd (O_CLOEXEC|O_NONBLOCK) and does the API handshake:
   * `features` are required (refused by name when the kernel lacks one),
   * `optionalFeatures` are requested only if supported.
   */
  static open(opts: OpenOptions = {}): Userfaultfd {
    const supported = probeSupportedFeatures();
    const mask = negotiateFeatures(supported, opts);
    const opened = openUffdFd(libc.O_CLOEXEC | libc.O_NONBLOCK);
    const arg = new Uint32Array(abi.API_SIZE / 4);
    arg[0] = abi.UFFD_API;
    arg[2] = mask;
    if (libc.ioctl(opened.fd, abi.UFFDIO_API, new Uint8Array(arg.buffer)) !== 0) {
      const e = libc.errno();
      libc.close(opened.fd);
      throw sysError(`UFFDIO_API with features ${abi.featureNames(mask).join('|') || 'none'}`, e,
        'the kernel refused this feature combination');
    }
    return new Userfaultfd(opened.fd, opened.userModeOnly, supported, mask);
  }

  /** the file descriptor (-1 once closed) */
  get fd(): number { return this.#fd; }
  get closed(): boolean { return this.#fd < 0; }

  #live(op: string): number {
    if (this.#fd < 0) throw closedError(op);
    return this.#fd;
  }

  /** Registers [start, start+len); returns the kernel's uffdio_register.ioctls bits
   *  (IOCTL_ZEROPAGE, IOCTL_COPY, ...): what it allows there. */
  register(start: number, len: number, mode: RegisterMode): number {
    const fd = this.#live('register');
    checkRange('register', start, len);
    const bits = (mode.missing ? abi.UFFDIO_REGISTER_MODE_MISSING : 0) | (mode.wp ? abi.UFFDIO_REGISTER_MODE_WP : 0);
    if (bits === 0) throw badArgument('register: choose a mode: { missing: true } and/or { wp: true }');
    if (mode.wp && !this.supported.has('PAGEFAULT_FLAG_WP')) {
      throw new UffdError('register: write-protect mode needs PAGEFAULT_FLAG_WP, which this kernel lacks',
        'UNSUPPORTED_FEATURE');
    }
    const arg = new Uint32Array(abi.REGISTER_SIZE / 4);
    put64(arg, 0, start);
    put64(arg, 2, len);
    arg[4] = bits;
    if (libc.ioctl(fd, abi.UFFDIO_REGISTER, new Uint8Array(arg.buffer)) !== 0) {
      const e = libc.errno();
      const hints: Record<number, string> = {
        [libc.E.ENOMEM]: 'the range is not (entirely) mapped in this process',
        [libc.E.EBUSY]: 'the range is already registered with another userfaultfd',
        [libc.E.EINVAL]: 'the kernel refused the range or mode: memory must be private anonymous, shmem or hugetlbfs, ' +
          'and the mode supported for it',
        [libc.E.EPERM]: 'the range is not writable or not registrable by this process',
      };
      throw sysError(`UFFDIO_REGISTER ${rangeText(start, len)}`, e, hints[e]);
    }
    return arg[6]; // ioctls, low 32 bits (every _UFFDIO_* bit is below 32)
  }

  unregister(start: number, len: number): void {
    const fd = this.#live('unregister');
    checkRange('unregister', start, len);
    put64(this.#rangeArg, 0, start);
    put64(this.#rangeArg, 2, len);
    if (libc.ioctl(fd, abi.UFFDIO_UNREGISTER, this.#rangeBytes) !== 0) {
      const e = libc.errno();
      throw sysError(`UFFDIO_UNREGISTER ${rangeText(start, len)}`, e,
        e === libc.E.ENOMEM ? 'the range is not (entirely) mapped in this process' : undefined);
    }
  }

  /**
   * Reads every pending message (non-blocking) into the internal buffer and
   * returns how many there are (0 when none). The accessors below read
   * message i of this batch; the next readEvents() overwrites them.
   */
  readEvents(): number {
    const fd = this.#fd;
    if (fd < 0) throw closedError('readEvents');
    let bytes = readAt(fd, this.#msgAddr, this.#msgCap);
    if (bytes < 0) {
      const e = libc.errno();
      this.#count = 0;
      if (e === libc.E.EAGAIN || e === libc.E.EINTR) return 0;
      throw sysError('reading userfaultfd events', e);
    }
    while (bytes === this.#msgCap) {
      // the buffer was full: there may be more; grow (rare, the buffer keeps its size) and read the rest
      const bigger = new NativeBlock(this.#msgCap * 2);
      const bytesView = new Uint8Array(bigger.buffer);
      bytesView.set(this.#msgBytes);
      this.#msgBlock.free();
      this.#msgBlock = bigger;
      this.#msgAddr = bigger.address;
      this.#msgCap = bigger.bytes;
      this.#msgBytes = bytesView;
      this.#msgU32 = new Uint32Array(bigger.buffer);
      const more = readAt(fd, this.#msgAddr + bytes, this.#msgCap - bytes);
      if (more <= 0) break;
      bytes += more;
    }
    this.#count = (bytes / abi.UFFD_MSG_SIZE) | 0;
    return this.#count;
  }

  /** number of messages read by the last readEvents() */
  get eventCount(): number { return this.#count; }
  /** EVENT_PAGEFAULT, EVENT_FORK, ... of message i */
  eventKind(i: number): number { return this.#msgBytes[i * abi.UFFD_MSG_SIZE]; }
  /** faulting address (as the kernel reports it; page-aligned unless EXACT_ADDRESS) */
  faultAddress(i: number): number {
    const w = (i * abi.UFFD_MSG_SIZE + abi.MSG_PF_ADDRESS) >> 2;
    return this.#msgU32[w] + this.#msgU32[w + 1] * TWO32;
  }
  /** PAGEFAULT_FLAG_WRITE | _WP | _MINOR */
  faultFlags(i: number): number { return this.#msgU32[(i * abi.UFFD_MSG_SIZE + abi.MSG_PF_FLAGS) >> 2]; }
  /** kernel thread id of the faulting thread (0 without THREAD_ID) */
  faultThreadId(i: number): number { return this.#msgU32[(i * abi.UFFD_MSG_SIZE + abi.MSG_PF_PTID) >> 2]; }
  /** message i decoded into a tagged union (allocates: not for the hot path) */
  event(i: number): UffdEvent {
    if (!(i >= 0 && i < this.#count)) throw badArgument(`event: index ${i} is outside the last batch (0..${this.#count - 1})`);
    return decodeEvent(this.#msgBytes, i * abi.UFFD_MSG_SIZE);
  }

  /**
   * UFFDIO_COPY len bytes from native address src to dst (both page-aligned)
   * and wake the threads waiting there. 'exists' when the page(s) were
   * already present (waiters woken all the same), 'again' when the kernel
   * asks for a retry (the address space is changing), ESRCH thrown as
   * UffdError when the faulting process is gone. A multi-page copy that meets
   * present pages skips them and returns 'placed' if it placed any page.
   */
  copy(dst: number, src: number, len: number, opts?: PlaceOptions): PlaceResult {
    const fd = this.#fd;
    if (fd < 0) throw closedError('copy');
    // fast path: one page, default mode, valid addresses (the fault handler's case)
    if (len === PAGE && opts === undefined && dst > 0 && dst % PAGE === 0 && dst < ADDRESS_LIMIT &&
        src > 0 && src % PAGE === 0 && src < ADDRESS_LIMIT) {
      const a = this.#copyArg;
      a[0] = dst >>> 0; a[1] = (dst / TWO32) >>> 0;
      a[2] = src >>> 0; a[3] = (src / TWO32) >>> 0;
      a[4] = PAGE; a[5] = 0; a[6] = 0; a[7] = 0;
      if (ioctlAt(fd, abi.UFFDIO_COPY, this.#copyAddr) === 0) return 'placed';
    }
    checkRange('copy', dst, len);
    if (!(src > 0) || src % PAGE !== 0 || src >= ADDRESS_LIMIT) {
      throw badArgument(`copy: source ${fmt(src)} is not a page-aligned native address`);
    }
    const dontWake = opts?.dontWake === true;
    const mode = (dontWake ? abi.UFFDIO_COPY_MODE_DONTWAKE : 0) | (opts?.wp ? abi.UFFDIO_COPY_MODE_WP : 0);
    const step = opts?.pageSize ?? PAGE;
    const a = this.#copyArg;
    let placed = false;
    let existed = false;
    while (len > 0) {
      put64(a, 0, dst);
      put64(a, 2, src);
      put64(a, 4, len);
      a[6] = mode; a[7] = 0;
      if (ioctlAt(fd, abi.UFFDIO_COPY, this.#copyAddr) === 0) return 'placed';
      const e = libc.errno();
      const done = a[8] + (a[9] | 0) * TWO32;
      if (done > 0) { // partial copy: those pages are in (and woken); go on with the rest
        placed = true;
        dst += done; src += done; len -= done;
        continue;
      }
      if (e === libc.E.EEXIST) {
        existed = true;
        if (!dontWake) this.wake(dst, step);
        dst += step; src += step; len -= step;
        continue;
      }
      if (e === libc.E.EAGAIN) return 'again';
      throw this.#placeError('UFFDIO_COPY', dst, len, e);
    }
    return placed || !existed ? 'placed' : 'exists';
  }

  /** UFFDIO_ZEROPAGE: map zero pages at [start, start+len); results as copy() */
  zeropage(start: number, len: number, opts?: { dontWake?: boolean }): PlaceResult {
    const fd = this.#live('zeropage');
    checkRange('zeropage', start, len);
    const dontWake = opts?.dontWake === true;
    const a = this.#zeroArg;
    let placed = false;
    let existed = false;
    while (len > 0) {
      put64(a, 0, start);
      put64(a, 2, len);
      a[4] = dontWake ? abi.UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0; a[5] = 0;
      if (libc.ioctl(fd, abi.UFFDIO_ZEROPAGE, this.#zeroBytes) === 0) return 'placed';
      const e = libc.errno();
      const done = a[6] + (a[7] | 0) * TWO32;
      if (done > 0) {
        placed = true;
        start += done; len -= done;
        continue;
      }
      if (e === libc.E.EEXIST) {
        existed = true;
        if (!dontWake) this.wake(start, PAGE);
        start += PAGE; len -= PAGE;
        continue;
      }
      if (e === libc.E.EAGAIN) return 'again';
      throw this.#placeError('UFFDIO_ZEROPAGE', start, len, e);
    }
    return placed || !existed ? 'placed' : 'exists';
  }

  /** UFFDIO_WAKE: wake the threads waiting on faults in [start, start+len) */
  wake(start: number, len: number): void {
    const fd = this.#live('wake');
    checkRange('wake', start, len);
    put64(this.#rangeArg, 0, start);
    put64(this.#rangeArg, 2, len);
    if (libc.ioctl(fd, abi.UFFDIO_WAKE, this.#rangeBytes) !== 0) {
      throw sysError(`UFFDIO_WAKE ${rangeText(start, len)}`, libc.errno());
    }
  }

  /**
   * UFFDIO_WRITEPROTECT: protect (true) or un-protect (false) [start,
   * start+len) of a range registered with { wp: true }. Un-protecting wakes
   * the threads waiting on WP faults there unless dontWake.
   */
  writeProtect(start: number, len: number, protect: boolean, opts?: { dontWake?: boolean }): void {
    const fd = this.#live('writeProtect');
    checkRange('writeProtect', start, len);
    const a = this.#wpArg;
    for (let attempt = 0; ; attempt++) {
      put64(a, 0, start);
      put64(a, 2, len);
      a[4] = (protect ? abi.UFFDIO_WRITEPROTECT_MODE_WP : 0) | (opts?.dontWake ? abi.UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0);
      a[5] = 0;
      if (libc.ioctl(fd, abi.UFFDIO_WRITEPROTECT, this.#wpBytes) === 0) return;
      const e = libc.errno();
      if (e === libc.E.EAGAIN && attempt < 1000) continue;
      const hint = e === libc.E.ENOENT || e === libc.E.EINVAL
        ? 'the range must lie inside a range registered with { wp: true } on this userfaultfd'
        : undefined;
      throw sysError(`UFFDIO_WRITEPROTECT ${rangeText(start, len)} ${protect ? 'on' : 'off'}`, e, hint);
    }
  }

  #placeError(op: string, dst: number, len: number, e: number): UffdError {
    let hint: string | undefined;
    if (e === libc.E.ESRCH) hint = 'the process that owns the faulting memory has exited';
    else if (e === libc.E.ENOENT || e === libc.E.EINVAL) {
      hint = 'the destination must lie inside a range registered (MISSING mode) with this userfaultfd' +
        (op === 'UFFDIO_ZEROPAGE' ? ', and not on hugetlbfs (no zero huge page: copy a zeroed page instead)' : ', aligned to its page size');
    } else if (e === libc.E.EFAULT) hint = 'the source address is not readable memory';
    return sysError(`${op} ${rangeText(dst, len)}`, e, hint);
  }

  /** closes the fd; threads blocked on its faults are woken and retry without it. A second close() throws CLOSED. */
  close(): void {
    const fd = this.#live('close');
    this.#fd = -1;
    this.#count = 0;
    libc.close(fd);
    // drop the views before freeing the native blocks they look at
    this.#msgBytes = new Uint8Array(0);
    this.#msgU32 = new Uint32Array(0);
    this.#copyArg = new Uint32Array(0);
    this.#msgBlock.free();
    this.#copyBlock.free();
  }
}

/** writes a non-negative integer < 2^53 as a little-endian u64 at u32 index w */
function put64(a: Uint32Array, w: number, v: number): void {
  a[w] = v >>> 0;
  a[w + 1] = Math.floor(v / TWO32);
}
