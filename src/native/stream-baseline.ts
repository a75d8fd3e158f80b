// The C baseline of the migrate benchmark: how fast plain C moves bytes from
// one thread to another over a loopback TCP connection or a unix socketpair
// into fresh memory on this host (native-shim/stream_baseline.c). Runs on a
// koffi worker thread so the event loop stays free.
import * as libc from './libc.js';
import { loadShim } from './shim.js';

/** Moves `bytes` through the socket kind given; resolves with bits per second / 1e6 (Mbps). */
export function streamBaselineMbps(bytes: number, transport: 'tcp' | 'unix'): Promise<number> {
  const shim = loadShim();
  return new Promise((resolve, reject) => {
    shim.streamBaseline.async(bytes, transport === 'tcp' ? 1 : 0, (err, res) => {
      const ns = Number(res);
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else if (ns < 0) reject(new Error(`C stream baseline failed: ${libc.strerror(-ns)} (${libc.errnoName(-ns)})`));
      else resolve((bytes * 8) / 1e6 / (ns / 1e9));
    });
  });
}

/** Sweeps `pages` pages whose every fault is served over the socket kind
 *  given, in plain C with nothing else running (native-shim/
 *  remote_fault_baseline.c); resolves with the average fault latency in us. */
export function remoteFaultBaselineUs(pages: number, transport: 'tcp' | 'unix'): Promise<number> {
  const shim = loadShim();
  return new Promise((resolve, reject) => {
    shim.remoteFaultBaseline.async(pages, transport === 'tcp' ? 1 : 0, (err, res) => {
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else if (res < 0) reject(new Error(`C remote-fault baseline failed: ${libc.strerror(-res)} (${libc.errnoName(-res)})`));
      else resolve(res / 1000);
    });
  });
}
