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
//    that the kernel adds only once it runs. A read is settled only when the
//    thread slept through it (its counters did not move), or ran both before
//    and after the schedstat read (a wait begun between is at most the read
//    long). Otherwise it is taken again after yielding the CPU (here, and by
//    the caller), and our own vCPUs are asked to read themselves
//    (src/vm/vcpus.ts). A thread that waited long and got the CPU just after
//    the read looked settled before (a CPU clock that moved across the read):
//    its vCPU 6 % under the kernel, where perf's sched_switch trace agreed
//    with ours to 0.1 %;
//  - the moment is the middle of a read that took at most SAMPLE_TIGHT_NS:
//    on a busy host a read of /proc can be preempted for milliseconds. A
//    read that took more than SAMPLE_LOOSE_NS is not settled either: its
//    run-queue wait may be from any moment of it (a 43 ms read put a vCPU's
//    figure 22 % off, where perf agreed with ours).

import { readFileSync } from 'node:fs';
import { monotonicNs } from '../blocktime/clock.js';
import type { KernelTimes } from '../blocktime/types.js';
import { threadCpuNs } from '../native/index.js';

/** A sample, its moment (the blocktime clock), or why there is none;
 *  `unsettled`: why its times are not to be used (sample again later):
 *  the thread waited on a run queue, or the read was too long a moment. */
export interface ThreadSample {
  t: number;
  sample: KernelTimes | string;
  unsettled?: string;
}

const SAMPLE_TIGHT_NS = 100_000;
const SAMPLE_LOOSE_NS = 1_000_000;
const WAITING = 'kept waiting for a CPU while it was sampled (its run-queue wait in progress is not counted yet)';
const ASLEEP = new Set(['S', 'D']);
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
    const cpu0 = threadCpuNs(tid);
    const state = readState(`${root}/${tid}/stat`);
    const cpu1 = threadCpuNs(tid);
    const st = readSchedstat(`${root}/${tid}/schedstat`, tid);
    const cpu2 = threadCpuNs(tid);
    const t2 = monotonicNs();
    if (typeof st === 'string') return { t: t2, sample: st };
    const took = t2 - t1;
    // slept through the read, or ran on both sides of it (no CPU clock, a thread of another
    // process the kernel does not let us clock: taken as it is)
    const still = cpu0 === undefined || cpu1 === undefined || cpu2 === undefined
      || (ASLEEP.has(state) && cpu0 === cpu2) || (cpu0 < cpu1 && cpu1 < cpu2);
    const unsettled = !still ? WAITING
      : took > SAMPLE_LOOSE_NS ? `was sampled by a read that took ${(took / 1e6).toFixed(1)} ms (the sampler was preempted: its times may be from any moment of it)`
        : undefined;
    const runNs = cpu1 !== undefined && cpu2 !== undefined ? (cpu1 + cpu2) / 2 : st.runNs;
    if (best === undefined || (unsettled === undefined && best.unsettled !== undefined)
      || ((unsettled === undefined) === (best.unsettled === undefined) && took < best.took)) {
      best = { t: Math.round((t1 + t2) / 2), sample: { runNs: Math.round(runNs), waitNs: st.waitNs }, took, unsettled };
    }
    if (best.unsettled === undefined && best.took <= SAMPLE_TIGHT_NS) break;
    yieldCpu(YIELD_US); // give a waiting thread the CPU
  }
  const { t, sample, unsettled } = best as ThreadSample;
  return { t, sample, unsettled };
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
