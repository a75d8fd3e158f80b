// Pure parts of the userfaultfd binding: feature negotiation, the open
// fallbacks and their error messages (with simulated system calls), and the
// decoding of raw uffd_msg records.
import {
  FEATURES, negotiateFeatures, openUffdFd, decodeEvent, UffdError, featureNames,
  EVENT_PAGEFAULT, EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP,
  PAGEFAULT_FLAG_WRITE, PAGEFAULT_FLAG_WP, type OpenSyscalls,
} from '../../src/uffd/index.js';

const ALL = 0x1ffff;
const EPERM = 1, ENOENT = 2, EACCES = 13, EINVAL = 22, ENOSYS = 38;

function caught(fn: () => unknown): UffdError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UffdError);
    return e as UffdError;
  }
  throw new Error('expected a UffdError');
}

describe('negotiateFeatures', () => {
  it('requests required and supported optional features only', () => {
    const supported = ALL & ~FEATURES.MOVE;
    const mask = negotiateFeatures(supported, { features: ['EVENT_FORK'], optionalFeatures: ['THREAD_ID', 'MOVE'] });
    expect(featureNames(mask)).toEqual(['EVENT_FORK', 'THREAD_ID']);
  });

  it('refuses a required feature the kernel lacks, by name', () => {
    const supported = ALL & ~FEATURES.THREAD_ID & ~FEATURES.WP_ASYNC;
    const e = caught(() => negotiateFeatures(supported, { features: ['THREAD_ID', 'EVENT_FORK', 'WP_ASYNC'] }));
    expect(e.code).toBe('UNSUPPORTED_FEATURE');
    expect(e.message).toContain('does not support THREAD_ID, WP_ASYNC');
    expect(e.message).not.toContain('support EVENT_FORK');
  });

  it('refuses unknown feature names', () => {
    const e = caught(() => negotiateFeatures(ALL, { optionalFeatures: ['NOPE' as never] }));
    expect(e.message).toContain('unknown userfaultfd feature in optionalFeatures: NOPE');
  });

  it('requests nothing when nothing is asked (the seed still does UFFDIO_API)', () => {
    expect(negotiateFeatures(ALL, {})).toBe(0);
  });
});

/** simulated syscalls: each entry is the result (fd >= 0) or an errno to fail with */
function fakeSys(script: { uffd: number[]; dev?: number; ioc?: number }): OpenSyscalls & { calls: string[] } {
  let errno = 0;
  const calls: string[] = [];
  const result = (r: number): number => { if (r < 0) { errno = -r; return -1; } return r; };
  return {
    calls,
    userfaultfd: (flags) => { calls.push(`userfaultfd(${flags})`); return result(script.uffd.shift() ?? -EINVAL); },
    openDevice: () => { calls.push('open'); return result(script.dev ?? -ENOENT); },
    iocNew: (_fd, flags) => { calls.push(`ioc(${flags})`); return result(script.ioc ?? -EINVAL); },
    close: (fd) => { calls.push(`close(${fd})`); },
    errno: () => errno,
  };
}

describe('openUffdFd', () => {
  it('uses the syscall when it works', () => {
    const sys = fakeSys({ uffd: [7] });
    expect(openUffdFd(0o4000, sys)).toEqual({ fd: 7, userModeOnly: false, via: 'syscall' });
  });

  it('retries with UFFD_USER_MODE_ONLY on EPERM', () => {
    const sys = fakeSys({ uffd: [-EPERM, 8] });
    expect(openUffdFd(0o4000, sys)).toEqual({ fd: 8, userModeOnly: true, via: 'syscall' });
    expect(sys.calls).toEqual([`userfaultfd(${0o4000})`, `userfaultfd(${0o4000 | 1})`]);
  });

  it('falls back to /dev/userfaultfd and closes the device fd', () => {
    const sys = fakeSys({ uffd: [-ENOSYS], dev: 5, ioc: 9 });
    expect(openUffdFd(0, sys)).toEqual({ fd: 9, userModeOnly: false, via: '/dev/userfaultfd' });
    expect(sys.calls).toContain('close(5)');
  });

  it('EPERM everywhere: names the sysctl, the capability and the device', () => {
    const e = caught(() => openUffdFd(0, fakeSys({ uffd: [-EPERM, -EPERM], dev: -EACCES })));
    expect(e.code).toBe('EPERM');
    expect(e.message).toContain('vm.unprivileged_userfaultfd');
    expect(e.message).toContain('CAP_SYS_PTRACE');
    expect(e.message).toContain('/dev/userfaultfd');
  });

  it('a kernel without userfaultfd is named as such', () => {
    const e = caught(() => openUffdFd(0, fakeSys({ uffd: [-ENOSYS], dev: -ENOENT })));
    expect(e.code).toBe('ENOSYS');
    expect(e.message).toContain('CONFIG_USERFAULTFD');
  });
});

describe('decodeEvent', () => {
  const msg = (event: number, words: Array<[number, number]>): Uint8Array => {
    const b = new Uint8Array(64); // message at offset 32
    const dv = new DataView(b.buffer);
    dv.setUint8(32, event);
    for (const [off, v] of words) dv.setBigUint64(32 + off, BigInt(v), true);
    return b;
  };

  it('page faults: address, flags and thread id', () => {
    const b = msg(EVENT_PAGEFAULT, [[8, PAGEFAULT_FLAG_WRITE | PAGEFAULT_FLAG_WP], [16, 0x7f0012345000]]);
    new DataView(b.buffer).setUint32(32 + 24, 4242, true);
    expect(decodeEvent(b, 32)).toEqual({
      kind: 'pagefault', address: 0x7f0012345000, flags: 3, write: true, wp: true, minor: false, threadId: 4242,
    });
  });

  it('fork, remap, remove, unmap and unknown events', () => {
    expect(decodeEvent(msg(EVENT_FORK, [[8, 12]]), 32)).toEqual({ kind: 'fork', ufd: 12 });
    expect(decodeEvent(msg(EVENT_REMAP, [[8, 0x1000], [16, 0x9000], [24, 0x2000]]), 32))
      .toEqual({ kind: 'remap', from: 0x1000, to: 0x9000, len: 0x2000 });
    expect(decodeEvent(msg(EVENT_REMOVE, [[8, 0x4000], [16, 0x6000]]), 32)).toEqual({ kind: 'remove', start: 0x4000, end: 0x6000 });
    expect(decodeEvent(msg(EVENT_UNMAP, [[8, 0x4000], [16, 0x6000]]), 32)).toEqual({ kind: 'unmap', start: 0x4000, end: 0x6000 });
    expect(decodeEvent(msg(0x42, []), 32)).toEqual({ kind: 'unknown', event: 0x42 });
  });
});
