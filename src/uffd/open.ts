// Getting a userfaultfd file descriptor from the kernel, the ways Linux offers:
// the userfaultfd(2) syscall; on EPERM again with UFFD_USER_MODE_ONLY (allowed
// without CAP_SYS_PTRACE since 5.11); then /dev/userfaultfd + USERFAULTFD_IOC_NEW
// (6.1+, governed by the device file's permissions). When all fail, the error
// names the cause and the fix. The system calls are injectable for tests.
import * as libc from '../native/libc.js';
import { SYS_userfaultfd, UFFD_USER_MODE_ONLY, USERFAULTFD_IOC_NEW } from './abi.js';
import { EPERM_FIX, ENOSYS_FIX, UffdError } from './errors.js';

export interface OpenSyscalls {
  /** userfaultfd(flags): fd, or -1 with errno() set */
  userfaultfd(flags: number): number;
  /** open("/dev/userfaultfd", O_RDWR|O_CLOEXEC): fd or -1 */
  openDevice(): number;
  /** ioctl(devFd, USERFAULTFD_IOC_NEW, flags): fd or -1 */
  iocNew(devFd: number, flags: number): number;
  close(fd: number): void;
  errno(): number;
}

export interface OpenedFd {
  fd: number;
  /** opened with UFFD_USER_MODE_ONLY: faults raised inside the kernel (e.g. read(2) into the range) are not delivered */
  userModeOnly: boolean;
  via: 'syscall' | '/dev/userfaultfd';
}

export const DEVICE_PATH = '/dev/userfaultfd';

const sysNr = SYS_userfaultfd[process.arch];

export const libcOpenSyscalls: OpenSyscalls = {
  userfaultfd: (flags) => {
    if (sysNr === undefined) { libc.errno(); return -2; }
    return libc.syscall(sysNr, 'int', flags);
  },
  openDevice: () => libc.open(DEVICE_PATH, libc.O_RDWR | libc.O_CLOEXEC, 0),
  iocNew: (devFd, flags) => libc.ioctl(devFd, USERFAULTFD_IOC_NEW, flags),
  close: (fd) => { libc.close(fd); },
  errno: () => libc.errno(),
};

/** opens a userfaultfd with `flags` (O_CLOEXEC|O_NONBLOCK...), trying every way the kernel offers */
export function openUffdFd(flags: number, sys: OpenSyscalls = libcOpenSyscalls): OpenedFd {
  if (sysNr === undefined && sys === libcOpenSyscalls) {
    throw new UffdError(`userfaultfd: architecture ${process.arch} is not supported (x64 and arm64 are)`, 'ENOSYS');
  }
  let fd = sys.userfaultfd(flags);
  if (fd >= 0) return { fd, userModeOnly: false, via: 'syscall' };
  const sysErr = sys.errno();
  let retryErr = 0;
  if (sysErr === libc.E.EPERM) {
    fd = sys.userfaultfd(flags | UFFD_USER_MODE_ONLY);
    if (fd >= 0) return { fd, userModeOnly: true, via: 'syscall' };
    retryErr = sys.errno();
  }
  let devErr = 0;
  const dev = sys.openDevice();
  if (dev >= 0) {
    fd = sys.iocNew(dev, flags);
    devErr = fd >= 0 ? 0 : sys.errno();
    sys.close(dev);
    if (fd >= 0) return { fd, userModeOnly: false, via: '/dev/userfaultfd' };
  } else {
    devErr = sys.errno();
  }
  throw openFailure(sysErr, retryErr, devErr);
}

function openFailure(sysErr: number, retryErr: number, devErr: number): UffdError {
  const name = libc.errnoName;
  const tried = `userfaultfd(2) failed with ${name(sysErr)}` +
    (retryErr ? `, again with UFFD_USER_MODE_ONLY: ${name(retryErr)}` : '') +
    `, ${DEVICE_PATH}: ${devErr === libc.E.ENOENT ? 'absent' : name(devErr)}`;
  if (sysErr === libc.E.ENOSYS && (devErr === libc.E.ENOENT || devErr === libc.E.ENODEV || devErr === libc.E.ENOTTY)) {
    return new UffdError(`cannot open a userfaultfd (${tried}): ${ENOSYS_FIX}`, 'ENOSYS', sysErr);
  }
  if (sysErr === libc.E.EPERM || retryErr === libc.E.EPERM ||
    (sysErr === libc.E.ENOSYS && (devErr === libc.E.EACCES || devErr === libc.E.EPERM))) {
    return new UffdError(`cannot open a userfaultfd (${tried}): ${EPERM_FIX}`, 'EPERM', libc.E.EPERM);
  }
  if (sysErr === libc.E.EINVAL) {
    return new UffdError(`cannot open a userfaultfd (${tried}): the kernel refused the open flags; ` +
      'it may be too old for O_NONBLOCK/O_CLOEXEC or UFFD_USER_MODE_ONLY (5.11+)', 'EINVAL', sysErr);
  }
  return new UffdError(`cannot open a userfaultfd (${tried}): ${libc.strerror(sysErr)}; ` +
    'check the process limits on open files (EMFILE/ENFILE) and memory', name(sysErr), sysErr);
}
