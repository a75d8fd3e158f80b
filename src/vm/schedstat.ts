// The kernel's own account of a thread's time (REFERENCE.md §9), read from
// /proc/self/task/TID/schedstat: time on a CPU and time waiting on a run
// queue, in ns. A vCPU thread that runs its workload sleeps only while the
// kernel holds it on a missing page, so elapsed - both is its blocktime as
// the kernel saw it: the ground truth the blocktime figures are checked
// against. Read at a few moments per migration, never per fault.

import { readFileSync } from 'node:fs';
import type { KernelTimes } from '../blocktime/types.js';

/** The times of thread `tid` of this process, or why they cannot be read. */
export function readSchedstat(tid: number, root = '/proc/self/task'): KernelTimes | string {
  let text: string;
  try {
    text = readFileSync(`${root}/${tid}/schedstat`, 'latin1');
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
