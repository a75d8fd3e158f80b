// The C fault handler of native-shim (benchmark baseline only): resolves
// every page fault of a userfaultfd with UFFDIO_COPY from one source page, on
// a koffi worker thread, until it has handled `expected` faults or is stopped.
import * as libc from './libc.js';
import { loadShim } from './shim.js';

export interface CFaultHandler {
  /** resolves with the number of faults handled */
  readonly done: Promise<number>;
  /** ends the handler early (it finishes the batch in hand) */
  stop(): void;
}

export function startCFaultHandler(uffdFd: number, srcAddress: number, pageSize: number, expected: number): CFaultHandler {
  const shim = loadShim();
  const efd = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
  if (efd < 0) throw new Error(`eventfd failed: ${libc.strerror(libc.errno())}`);
  let closed = false;
  const done = new Promise<number>((resolve, reject) => {
    shim.faultHandlerRun.async(uffdFd, srcAddress, pageSize, expected, efd, (err, res) => {
      closed = true;
      libc.close(efd);
      const n = Number(res);
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else if (n < 0) reject(new Error(`C fault handler failed: ${libc.strerror(-n)} (${libc.errnoName(-n)})`));
      else resolve(n);
    });
  });
  return {
    done,
    stop: () => {
      if (closed) return;
      const one = new Uint8Array(8); one[0] = 1;
      libc.write(efd, one, 8);
    },
  };
}
