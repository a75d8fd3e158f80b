// Every way a userfaultfd operation can fail, as one error class whose `code`
// names the failure (an errno name, or CLOSED / BAD_ARGUMENT / UNSUPPORTED_FEATURE)
// and whose message says what went wrong and, where there is one, the fix.
// Modelled on the Rust userfaultfd crate's error.rs.
import { errnoName, strerror } from '../native/libc.js';

export type UffdErrorCode =
  | 'CLOSED' | 'BAD_ARGUMENT' | 'UNSUPPORTED_FEATURE' | 'UNAVAILABLE'
  | 'EPERM' | 'ENOENT' | 'ESRCH' | 'EEXIST' | 'EAGAIN' | 'EINVAL' | 'EFAULT' | 'ENOMEM' | 'EBUSY'
  | 'ENOSYS' | 'ENODEV' | 'EBADF' | 'ENOTTY' | 'EOPNOTSUPP' | string;

export class UffdError extends Error {
  constructor(message: string, readonly code: UffdErrorCode, readonly errno?: number) {
    super(message);
    this.name = 'UffdError';
  }
}

/** an error for a failed system call: "<what>: <strerror> (<ENAME>)[; <hint>]" */
export function sysError(what: string, err: number, hint?: string): UffdError {
  const name = errnoName(err);
  const text = `${what}: ${strerror(err)} (${name})${hint ? `; ${hint}` : ''}`;
  return new UffdError(text, name, err);
}

export function badArgument(message: string): UffdError {
  return new UffdError(message, 'BAD_ARGUMENT');
}

export function closedError(op: string): UffdError {
  return new UffdError(`userfaultfd ${op}: the userfaultfd is closed`, 'CLOSED');
}

/** what to do about EPERM when opening a userfaultfd */
export const EPERM_FIX =
  'this process lacks CAP_SYS_PTRACE and the sysctl vm.unprivileged_userfaultfd is 0, and /dev/userfaultfd ' +
  'is not accessible: run as root, grant the capability (setcap cap_sys_ptrace+ep "$(command -v node)"), ' +
  'set `sysctl -w vm.unprivileged_userfaultfd=1`, or give this user read/write access to /dev/userfaultfd';

/** what to do about a kernel without userfaultfd */
export const ENOSYS_FIX =
  'this kernel has no userfaultfd: use a Linux kernel built with CONFIG_USERFAULTFD=y ' +
  '(4.14 or newer for THREAD_ID, 6.1 or newer for /dev/userfaultfd)';
