// Guest RAM backed by a file on a hugetlbfs mount (QEMU's -mem-path and
// memory-backend-file): the page size is the mount's (statfs f_bsize, 2 MiB
// here), the file is created in the directory and unlinked at once (as QEMU
// does with a directory mem-path), sized with ftruncate and mapped with its
// huge pages reserved. Errors use QEMU's words and say what to change.
import { closeSync, ftruncateSync, openSync, readFileSync, statSync, statfsSync, unlinkSync, constants } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NativeMapping, NativeMappingError, type FileBacking } from './memory.js';
import { E } from './libc.js';

/** statfs f_type of hugetlbfs (linux/magic.h) */
export const HUGETLBFS_MAGIC = 0x958458f6;
/** the largest huge page taken: a page travels as one record, and each side
 *  buffers a few of them (1 GiB pages would need GiBs of buffers) */
export const MAX_HUGE_PAGE = 2 * 1024 * 1024;

export interface HugetlbfsFile {
  /** the directory (on a hugetlbfs mount) that holds the file */
  memPath: string;
  bytes: number;
  /** MAP_SHARED (QEMU's share=on); default private */
  shared?: boolean;
  /** populate every page now (QEMU's prealloc=on / -mem-prealloc) */
  prealloc?: boolean;
}

export class HugetlbfsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HugetlbfsError';
  }
}

/** the huge page size of the hugetlbfs mount holding `path`; throws naming the path when it is none */
export function hugetlbfsPageSize(path: string): number {
  let fs;
  try {
    fs = statfsSync(path);
  } catch (e) {
    throw new HugetlbfsError(`failed to get page size of file ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (e as Error).message}`);
  }
  if (fs.type !== HUGETLBFS_MAGIC) {
    throw new HugetlbfsError(`path not on HugeTLBFS: ${path} (mem-path must be a directory on a hugetlbfs mount: mount -t hugetlbfs none DIR)`);
  }
  return fs.bsize;
}

/** free and total huge pages of `pageSize` bytes (sysfs), or null when the kernel does not say */
export function hugePagePool(pageSize: number): { free: number; total: number; reserved: number } | null {
  const dir = `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB`;
  try {
    const read = (f: string): number => Number(readFileSync(join(dir, f), 'utf8').trim());
    return { free: read('free_hugepages'), total: read('nr_hugepages'), reserved: read('resv_hugepages') };
  } catch {
    return null;
  }
}

/** Maps `bytes` of a new, unlinked file in `memPath` (a hugetlbfs directory). */
export function mapHugetlbfs(f: HugetlbfsFile): NativeMapping {
  const file = openHugetlbfs(f);
  let map: NativeMapping;
  try {
    map = NativeMapping.mapFile(f.bytes, file);
  } catch (e) {
    throw hugetlbfsMapError(e, f.bytes, file.pageSize);
  }
  if (f.prealloc) {
    try {
      map.populate();
    } catch (e) {
      map.dispose();
      throw hugetlbfsMapError(e, f.bytes, file.pageSize);
    }
  }
  return map;
}

/** A new, unlinked file of `bytes` in `memPath` (a hugetlbfs directory), open, for a mapping to take;
 *  throws HugetlbfsError naming what is wrong (QEMU's words) */
export function openHugetlbfs(f: HugetlbfsFile): FileBacking {
  const pageSize = hugetlbfsPageSize(f.memPath);
  if (pageSize > MAX_HUGE_PAGE) {
    throw new HugetlbfsError(`${f.memPath} has huge pages of ${pageSize / 2 ** 20} MiB: this engine takes pages up to 2 MiB (mount hugetlbfs with -o pagesize=2M)`);
  }
  if (!statSync(f.memPath).isDirectory()) {
    throw new HugetlbfsError(`mem-path ${f.memPath} is not a directory (give the hugetlbfs mount or a directory on it)`);
  }
  if (f.bytes < pageSize) {
    throw new HugetlbfsError(`memory size 0x${f.bytes.toString(16)} must be equal to or larger than page size 0x${pageSize.toString(16)}`);
  }
  if (f.bytes % pageSize !== 0) {
    throw new HugetlbfsError(`backend memory size must be multiple of 0x${pageSize.toString(16)} (the huge page size of ${f.memPath}; -m ${f.bytes} bytes is not)`);
  }
  const file = join(f.memPath, `postcopy_back_mem.${randomBytes(6).toString('hex')}`);
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (e) {
    throw new HugetlbfsError(`can't open backing store ${file} for guest RAM: ${(e as Error).message}`);
  }
  try {
    unlinkSync(file); // the mapping keeps it; nothing is left behind
    ftruncateSync(fd, f.bytes);
  } catch (e) {
    closeSync(fd);
    throw new HugetlbfsError(`ftruncate of ${file}: ${(e as Error).message}`);
  }
  return { fd, pageSize, shared: f.shared === true };
}

/** a failed mmap or prealloc of huge pages, with what the pool holds when too few huge pages were the cause */
export function hugetlbfsMapError(e: unknown, bytes: number, pageSize: number): HugetlbfsError {
  return new HugetlbfsError(`${e instanceof Error ? e.message : String(e)}${poolHint(e, bytes, pageSize)}`);
}

/** what the huge page pool holds, when too few huge pages were the cause */
function poolHint(e: unknown, bytes: number, pageSize: number): string {
  if (!(e instanceof NativeMappingError) || (e.errno !== E.ENOMEM && e.errno !== E.EFAULT)) return '';
  const pool = hugePagePool(pageSize);
  const need = bytes / pageSize;
  const have = pool ? `${pool.free - pool.reserved} of ${pool.total} huge pages of ${pageSize / 1024} kB are free and unreserved` : 'too few huge pages are free';
  return ` (guest RAM needs ${need}; ${have}: raise /proc/sys/vm/nr_hugepages)`;
}
