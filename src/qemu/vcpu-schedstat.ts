// The kernel's ground truth for a real QEMU's vCPUs (REFERENCE.md §9), when
// that QEMU runs on this host: the schedstat times of its vCPU threads,
// read from /proc like our own VM's (src/vm/schedstat.ts). A thread id from
// query-cpus-fast is taken for a QEMU vCPU only when /proc names it so
// ("CPU 0/KVM", "CPU 1/TCG"): a QEMU on another host has other threads, or
// none, under those numbers here.
//
// How far it holds: the kernel counts a thread as blocked whenever it
// sleeps. A TCG or KVM vCPU held on a missing page sleeps, and so does a
// KVM vCPU whose guest halted (HLT: the thread waits in the kernel for an
// interrupt) or one waiting for QEMU's big lock. So for a vCPU that kept
// running guest code the figure is the truth; for one that halts it is an
// upper bound (docs/qemu.md).

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { sampleThread } from '../vm/schedstat.js';
import type { FollowedSample } from './trace-follower.js';

/** What the kernel column says about KVM vCPU threads, wherever it shows. */
export const KERNEL_TRUST = 'the kernel counts every sleep: a vCPU whose guest halts (HLT) or waits for QEMU\'s lock sleeps too, so for such a vCPU its figure is an upper bound';

const VCPU_THREAD = /^CPU (\d+)\/[A-Z]+$/;

function processName(pid: number): string {
  try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return '?'; }
}

export class QemuVcpuSampler {
  private constructor(private readonly pid: number, private readonly tids: readonly number[]) {}

  /** A sampler of the vCPU threads `tids` (by vCPU index), or why there is none. */
  static find(tids: readonly number[]): QemuVcpuSampler | string {
    let pid: number | undefined;
    for (let i = 0; i < tids.length; i++) {
      let comm: string;
      let status: string;
      try {
        comm = readFileSync(`/proc/${tids[i]}/comm`, 'utf8').trim();
        status = readFileSync(`/proc/${tids[i]}/status`, 'utf8');
      } catch {
        return `no thread ${tids[i]} on this host: the destination QEMU runs elsewhere (or in another PID namespace)`;
      }
      const tgid = Number(/^Tgid:\s*(\d+)$/m.exec(status)?.[1]);
      // QEMU names its vCPU threads only with -name debug-threads=on; else they bear the process's name
      const m = VCPU_THREAD.exec(comm);
      if (m !== null ? Number(m[1]) !== i : !/^qemu/.test(processName(tgid))) {
        return `thread ${tids[i]} here is '${comm}' of '${processName(tgid)}', not QEMU's vCPU ${i}: the destination QEMU runs elsewhere`;
      }
      if (pid !== undefined && tgid !== pid) return `the vCPU threads belong to different processes (${pid}, ${tgid})`;
      pid = tgid;
    }
    if (pid === undefined) return 'the destination has no vCPUs';
    return new QemuVcpuSampler(pid, tids);
  }

  /** The QEMU's process id. */
  get processId(): number { return this.pid; }

  /** Every vCPU thread's times now, on the wall clock QEMU's log uses. */
  sampleAll(): FollowedSample[] {
    // sampleThread's moments are monotonic ns since this process started
    const origin = performance.timeOrigin * 1e6;
    return this.tids.map((tid, vcpu) => {
      const s = sampleThread(tid, `/proc/${this.pid}/task`);
      const sample = s.unsettled === undefined ? s.sample : `vCPU ${vcpu} ${s.unsettled}`;
      return { vcpu, realtimeNs: origin + s.t, sample };
    });
  }
}
