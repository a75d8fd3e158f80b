// The userfaultfd kernel ABI as numbers and byte offsets (linux/userfaultfd.h,
// x86_64/aarch64), like the Rust crate's raw.rs. Every other uffd module reads
// and writes the kernel's structs at these offsets instead of decoding them.

/** userfaultfd(2) syscall number by architecture */
export const SYS_userfaultfd: Readonly<Record<string, number>> = { x64: 323, arm64: 282 };

/** open flag: handle only faults from user mode (allowed without CAP_SYS_PTRACE) */
export const UFFD_USER_MODE_ONLY = 1;
/** /dev/userfaultfd ioctl that returns a new userfaultfd (Linux 6.1+) */
export const USERFAULTFD_IOC_NEW = 0xaa00;
export const UFFD_API = 0xaa;

// ioctl request numbers
export const UFFDIO_API = 0xc018aa3f;
export const UFFDIO_REGISTER = 0xc020aa00;
export const UFFDIO_UNREGISTER = 0x8010aa01;
export const UFFDIO_WAKE = 0x8010aa02;
export const UFFDIO_COPY = 0xc028aa03;
export const UFFDIO_ZEROPAGE = 0xc020aa04;
export const UFFDIO_WRITEPROTECT = 0xc018aa06;
export const UFFDIO_CONTINUE = 0xc020aa07;

/** UFFD_FEATURE_* bits, by the kernel's name without the prefix */
export const FEATURES = {
  PAGEFAULT_FLAG_WP: 1 << 0,
  EVENT_FORK: 1 << 1,
  EVENT_REMAP: 1 << 2,
  EVENT_REMOVE: 1 << 3,
  MISSING_HUGETLBFS: 1 << 4,
  MISSING_SHMEM: 1 << 5,
  EVENT_UNMAP: 1 << 6,
  SIGBUS: 1 << 7,
  THREAD_ID: 1 << 8,
  MINOR_HUGETLBFS: 1 << 9,
  MINOR_SHMEM: 1 << 10,
  EXACT_ADDRESS: 1 << 11,
  WP_HUGETLBFS_SHMEM: 1 << 12,
  WP_UNPOPULATED: 1 << 13,
  POISON: 1 << 14,
  WP_ASYNC: 1 << 15,
  MOVE: 1 << 16,
} as const;
export type FeatureName = keyof typeof FEATURES;
export const FEATURE_NAMES = Object.keys(FEATURES) as FeatureName[];

// register modes
export const UFFDIO_REGISTER_MODE_MISSING = 1;
export const UFFDIO_REGISTER_MODE_WP = 2;
export const UFFDIO_REGISTER_MODE_MINOR = 4;
// copy / zeropage / writeprotect modes
export const UFFDIO_COPY_MODE_DONTWAKE = 1;
export const UFFDIO_COPY_MODE_WP = 2;
export const UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1;
export const UFFDIO_WRITEPROTECT_MODE_WP = 1;
export const UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 2;
/** bits of uffdio_register.ioctls (1 << _UFFDIO_*): what the kernel allows on the range registered;
 *  hugetlbfs ranges lack ZEROPAGE (there is no zero huge page) */
export const IOCTL_COPY = 1 << 0x03;
export const IOCTL_ZEROPAGE = 1 << 0x04;

// uffd_msg: 32 bytes, event u8 at 0, payload union at 8
export const UFFD_MSG_SIZE = 32;
export const MSG_EVENT = 0;
export const EVENT_PAGEFAULT = 0x12;
export const EVENT_FORK = 0x13;
export const EVENT_REMAP = 0x14;
export const EVENT_REMOVE = 0x15;
export const EVENT_UNMAP = 0x16;
// pagefault payload
export const MSG_PF_FLAGS = 8;
export const MSG_PF_ADDRESS = 16;
export const MSG_PF_PTID = 24;
export const PAGEFAULT_FLAG_WRITE = 1;
export const PAGEFAULT_FLAG_WP = 2;
export const PAGEFAULT_FLAG_MINOR = 4;
// fork payload: ufd u32 at 8
export const MSG_FORK_UFD = 8;
// remap payload: from, to, len u64
export const MSG_REMAP_FROM = 8;
export const MSG_REMAP_TO = 16;
export const MSG_REMAP_LEN = 24;
// remove / unmap payload: start, end u64
export const MSG_REMOVE_START = 8;
export const MSG_REMOVE_END = 16;

// struct uffdio_api { u64 api, features, ioctls }
export const API_SIZE = 24;
// struct uffdio_register { u64 start, len, mode, ioctls }
export const REGISTER_SIZE = 32;
// struct uffdio_range { u64 start, len }
export const RANGE_SIZE = 16;
// struct uffdio_copy { u64 dst, src, len, mode; s64 copy }
export const COPY_SIZE = 40;
export const COPY_RESULT = 32;
// struct uffdio_zeropage { range; u64 mode; s64 zeropage }
export const ZEROPAGE_SIZE = 32;
export const ZEROPAGE_RESULT = 24;
// struct uffdio_writeprotect { range; u64 mode }
export const WRITEPROTECT_SIZE = 24;

/** the page size userfaultfd ranges are aligned to (4 KiB on the supported architectures) */
export const UFFD_PAGE_SIZE = 4096;

/** the names of the feature bits set in mask, in bit order */
export function featureNames(mask: number): FeatureName[] {
  return FEATURE_NAMES.filter((n) => (mask & FEATURES[n]) !== 0);
}
