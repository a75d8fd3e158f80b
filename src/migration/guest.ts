// What the migration engine needs from the VM, as two small interfaces: guest
// RAM (native memory with a Buffer view and a way to drop pages) and the vCPU
// set (pause/resume, thread ids, workload state in wire form). The Machine
// adapts src/vm's GuestRam and VcpuSet to them; the engine knows nothing else
// about the VM, which keeps source and destination testable on their own.

import type { KernelTimes } from '../blocktime/types.js';

export interface GuestMemory {
  /** native address of guest RAM offset 0 (page aligned) */
  readonly base: number;
  readonly bytes: number;
  readonly pageSize: number;
  /** a Buffer over the whole mapping (no copy); touching it populates pages */
  buffer(): Buffer;
  /** MADV_DONTNEED: [offset, offset+len) becomes unpopulated (reads as zero, faults again under userfaultfd) */
  discard(offset: number, len: number): void;
}

export interface VcpuControl {
  readonly count: number;
  /** kernel thread ids, index = vCPU index */
  threadIds(): number[];
  /** resolves when every vCPU has stopped touching memory */
  pause(): Promise<void>;
  resume(): void;
  /** writes every vCPU's workload state, VCPU_STATE_BYTES each, at out[pos..] (vCPUs paused) */
  saveStates(out: Buffer, pos: number): void;
  /** loads every vCPU's workload state from buf[pos..] (before resume) */
  loadStates(buf: Buffer, pos: number): void;
  /** the kernel's times of vCPU i's thread now, or why they say nothing of
   *  its blocktime (no schedstat; the vCPU is not running its workload) */
  kernelTimes(i: number): KernelTimes | string;
}
