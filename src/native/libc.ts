// The libc functions this program calls through koffi, declared once so that
// every module (uffd/, native/) shares one loaded libc and one set of
// prototypes. ioctl is declared with a fixed `void *` argument: faster than
// the variadic form and valid on x86_64/aarch64 Linux (REFERENCE.md §4).
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

/** syscall(2); variadic: pass ('long', value) pairs after the number */
export const syscall = libc.func('long syscall(long nr, ...)') as (nr: number, ...args: unknown[]) => number;
export const open = libc.func('int open(const char *path, int flags, int mode)') as
  (path: string, flags: number, mode: number) => number;
export const close = libc.func('int close(int fd)') as (fd: number) => number;
/** ioctl with a pointer argument (a Buffer/TypedArray valid during the call, or a native address);
 *  a plain number passes through as an integer argument (USERFAULTFD_IOC_NEW takes its flags by value) */
export const ioctl = libc.func('int ioctl(int fd, unsigned long request, void *arg)') as
  (fd: number, request: number, arg: Uint8Array | bigint | number | null) => number;
export const read = libc.func('long read(int fd, void *buf, size_t count)') as
  (fd: number, buf: Uint8Array | bigint | number, count: number) => number;
/** read(2)/ioctl(2) into native memory given by address as a plain number: the cheapest koffi call (hot paths) */
export const readAt = libc.func('long read(int fd, uintptr_t buf, size_t count)') as
  (fd: number, buf: number, count: number) => number;
export const ioctlAt = libc.func('int ioctl(int fd, unsigned long request, uintptr_t arg)') as
  (fd: number, request: number, arg: number) => number;
export const write = libc.func('long write(int fd, void *buf, size_t count)') as
  (fd: number, buf: Uint8Array | bigint | number, count: number) => number;
/** poll(2) over a pollfd array in native memory (koffi.alloc), so it can run with .async */
export const poll = libc.func('int poll(void *fds, unsigned long nfds, int timeout)') as unknown as
  KoffiFunc<[fds: bigint | number, nfds: number, timeout: number], number>;
/** ppoll(2) with a timespec timeout (us resolution) and no signal mask change; called synchronously */
export const ppoll = libc.func('int ppoll(void *fds, unsigned long nfds, void *tmo, void *sigmask)') as
  (fds: bigint | number, nfds: number, tmo: Uint8Array, sigmask: null) => number;
/** fcntl(2) with an int argument (F_DUPFD_CLOEXEC) */
export const fcntl = libc.func('int fcntl(int fd, int cmd, int arg)') as (fd: number, cmd: number, arg: number) => number;
export const F_DUPFD_CLOEXEC = 1030;
export const eventfd = libc.func('int eventfd(unsigned int initval, int flags)') as (init: number, flags: number) => number;
export const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)') as
  (addr: bigint | number | null, length: number, prot: number, flags: number, fd: number, offset: number) => bigint;
export const munmap = libc.func('int munmap(void *addr, size_t length)') as (addr: bigint | number, length: number) => number;
export const madvise = libc.func('int madvise(void *addr, size_t length, int advice)') as unknown as
  KoffiFunc<[addr: bigint | number, length: number, advice: number], number>;
export const sched_getcpu = libc.func('int sched_getcpu(void)') as () => number;
export const sched_getaffinity = libc.func('int sched_getaffinity(int pid, size_t size, void *mask)') as
  (pid: number, size: number, mask: Uint8Array) => number;
export const sched_setaffinity = libc.func('int sched_setaffinity(int pid, size_t size, void *mask)') as
  (pid: number, size: number, mask: Uint8Array) => number;
export const strerror = libc.func('const char *strerror(int errnum)') as (errnum: number) => string;
export const prctl = libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)') as
  (option: number, arg2: number, arg3: number, arg4: number, arg5: number) => number;

/** a koffi function with its .async form */
export interface KoffiFunc<A extends unknown[], R> {
  (...args: A): R;
  async(...args: [...A, (err: unknown, res: R) => void]): void;
}

/** errno of the last call made through koffi on this thread */
export function errno(): number {
  return koffi.errno();
}

/** errno values used by this program (Linux, all architectures we support) */
export const E = {
  EPERM: 1, ENOENT: 2, ESRCH: 3, EINTR: 4, EBADF: 9, EAGAIN: 11, ENOMEM: 12, EACCES: 13, EFAULT: 14, EBUSY: 16,
  EEXIST: 17, ENODEV: 19, EINVAL: 22, ENFILE: 23, EMFILE: 24, ENOTTY: 25, ENOSPC: 28, ERANGE: 34, ENOSYS: 38, EOPNOTSUPP: 95,
} as const;

const errnoNames = new Map<number, string>(Object.entries(E).map(([k, v]) => [v, k]));
/** "EEXIST" for 17, "errno 123" when unknown */
export function errnoName(n: number): string {
  return errnoNames.get(n) ?? `errno ${n}`;
}

export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2;
export const MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
export const MAP_FAILED = 0xffffffffffffffffn;
/** MADV_REMOVE on a shared hugetlbfs mapping punches a hole in the file (its pages go back to the pool) */
export const MADV_DONTNEED = 4, MADV_REMOVE = 9, MADV_POPULATE_WRITE = 23;
export const POLLIN = 0x1, POLLERR = 0x8, POLLHUP = 0x10, POLLNVAL = 0x20;

/** the address of native memory (a koffi pointer) as a JS number; user addresses are < 2^47, exact in a double */
export function addressOf(ptr: bigint): number {
  return Number(ptr);
}
