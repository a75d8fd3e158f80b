// A thread's CPU time exact to now (native-shim/thread_time.c): schedstat's
// own figure lags by up to a scheduler tick for a running thread.
import { loadShim } from './shim.js';

/** CPU time of thread `tid` of this process, ns; undefined when it is gone. */
export function threadCpuNs(tid: number): number | undefined {
  const ns = loadShim().threadCpuNs(tid);
  return ns >= 0 ? ns : undefined;
}
