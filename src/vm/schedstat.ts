// The kernel's own account of a thread's time (REFERENCE.md §9): time on a
// CPU and time waiting on a run queue, in ns. A vCPU thread that runs its
// workload sleeps only while the kernel holds it on a missing page, so
// elapsed - both is its blocktime as the kernel saw it: the ground truth the
// blocktime figures are checked against. Read at a few moments per
// migration, never per fault.
//
// Taken with care, since a sample is only as good as its moment:
//  - the time on a CPU comes from the thread's CPU clock, exact to now
//    (/proc/.../schedstat's lags by up to a tick for a running thread);
//  - a thread that waits on a run queue when sampled has a wait in progress
//    that the kernel adds only once it runs: such a sample is not settled,
//    and is taken again after yielding the CPU (here, and by the caller);
//  - the moment is the middle of a read that took at most SAMPLE_TIGHT_NS:
//    on a busy host a read of /proc can be preempted for milliseconds.

import { readFileSync } from 'node:fs';
import { monotonicNs } from '../blocktime/clock.js';
import type { KernelTimes } from '../blocktime/types.js';
import { threadCpuNs } from '../native/index.js';

/** A sample, its moment (the blocktime clock), or why there is none;
 *  `settled`: the thread was not waiting on a run queue when it was taken. */
export interface ThreadSample {
  t: number;
  sample: KernelTimes | string;
  settled: boolean;
}

const SAMPLE_TIGHT_NS = 100_000;
const TRIES = 3;
const YIELD_US = 50;
const pause = new Int32Array(new SharedArrayBuffer(4));

/** Gives the CPU away for `us` microseconds (the event loop waits). */
export function yieldCpu(us: number): void {
  Atomics.wait(pause, 0, 0, us / 1000);
}

/** The times of thread `tid` of this process now, with their moment: the
 *  best of a few reads (settled, then short). */
export function sampleThread(tid: number, root = '/proc/self/task'): ThreadSample {
  let best: (ThreadSample & { took: number }) | undefined;
  for (let i = 0; i < TRIES; i++) {
    const t1 = monotonicNs();
    const cpu1 = threadCpuNs(tid);
    const state = readState(`${root}/${tid}/stat`);
    const st = readSchedstat(`${root}/${tid}/schedstat`, tid);
    const cpu2 = threadCpuNs(tid);
    const t2 = monotonicNs();
    if (typeof st === 'string') return { t: t2, sample: st, settled: true };
    // runnable but not running: its run-queue wait so far is not counted yet
    const settled = !(state === 'R' && cpu1 !== undefined && cpu1 === cpu2);
    const runNs = cpu1 !== undefined && cpu2 !== undefined ? (cpu1 + cpu2) / 2 : st.runNs;
    const took = t2 - t1;
    if (best === undefined || (settled && !best.settled) || (settled === best.settled && took < best.took)) {
      best = { t: Math.round((t1 + t2) / 2), sample: { runNs: Math.round(runNs), waitNs: st.waitNs }, took, settled };
    }
    if (best.settled && best.took <= SAMPLE_TIGHT_NS) break;
    yieldCpu(YIELD_US); // give a waiting thread the CPU
  }
  const b = best as ThreadSample;
  return { t: b.t, sample: b.sample, settled: b.settled };
}

function readState(path: string): string {
  try {
    const s = readFileSync(path, 'latin1');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return '?';
  }
}

/** /proc/.../schedstat: on CPU (lagging) and run-queue wait, or why not. */
function readSchedstat(path: string, tid: number): KernelTimes | string {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT'
      ? `no schedstat for thread ${tid} (thread gone, or a kernel without CONFIG_SCHED_INFO)`
      : `cannot read schedstat of thread ${tid}: ${(e as Error).message}`;
  }
  const f = text.trim().split(/\s+/);
  const runNs = Number(f[0]);
  const waitNs = Number(f[1]);
  if (f.length < 2 || !Number.isSafeInteger(runNs) || !Number.isSafeInteger(waitNs)) {
    return `schedstat of thread ${tid} is not "RUN WAIT SLICES": ${JSON.stringify(text.slice(0, 80))}`;
  }
  return { runNs, waitNs };
}
