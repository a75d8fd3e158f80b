// Thread id -> vCPU index, the lookup done for every fault: a small
// open-addressing table in typed arrays (no Map, no allocation, one or two
// cache lines touched whatever the number of vCPUs). Built once from the vCPU
// thread ids, which it checks.

import { CommandError } from '../errors.js';

const NONE = -1;

export class VcpuThreads {
  private readonly keys: Int32Array;
  private readonly vcpu: Int32Array;
  private readonly mask: number;
  private readonly shift: number;

  /** `tids[i]` is the kernel thread id of vCPU i. */
  constructor(tids: readonly number[]) {
    if (!Array.isArray(tids) || tids.length === 0) {
      throw new CommandError('blocktime: the VM must have at least one vCPU thread id');
    }
    let cap = 8;
    while (cap < tids.length * 4) cap *= 2;
    this.keys = new Int32Array(cap);
    this.vcpu = new Int32Array(cap).fill(NONE);
    this.mask = cap - 1;
    this.shift = 32 - Math.log2(cap);
    tids.forEach((tid, i) => {
      if (!Number.isSafeInteger(tid) || tid < 0 || tid > 0xffffffff) {
        throw new CommandError(`blocktime: vCPU ${i} thread id must be a non-negative 32-bit integer, got ${String(tid)}`);
      }
      const other = this.indexOf(tid);
      if (other !== NONE) throw new CommandError(`blocktime: thread id ${tid} is given for vCPU ${other} and vCPU ${i}`);
      let s = this.slotOf(tid | 0);
      while (this.vcpu[s] !== NONE) s = (s + 1) & this.mask;
      this.keys[s] = tid | 0;
      this.vcpu[s] = i;
    });
  }

  /** vCPU index of thread `tid` (a 32-bit thread id), -1 when it is no vCPU. */
  indexOf(tid: number): number {
    const k = tid | 0;
    let s = this.slotOf(k);
    const vcpu = this.vcpu;
    while (vcpu[s] !== NONE) {
      if (this.keys[s] === k) return vcpu[s];
      s = (s + 1) & this.mask;
    }
    return NONE;
  }

  private slotOf(k: number): number {
    return Math.imul(k, 0x9e3779b1) >>> this.shift;
  }
}
