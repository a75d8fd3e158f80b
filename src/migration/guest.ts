// What the migration engine needs from the VM, as two small interfaces: guest
// RAM (native memory, its bytes copied in and out by page, and a way to drop
// pages; never one Buffer over all of it, which Node caps at 4 GiB) and the vCPU
// set (pause/resume, thread ids, workload state in wire form). The Machine
// adapts src/vm's GuestRam and VcpuSet to them; the engine knows nothing else
// about the VM, which keeps source and destination testable on their own.

import type { ThreadSample } from '../vm/schedstat.js';
import type { RamBlocks } from '../vm/ram-blocks.js';
import type { AccessStamps } from '../native/vcpu.js';

/** Copies and zero tests on guest RAM, split internally at the windows one
 *  Buffer can cover (src/native/memory-windows.ts); none allocates. Positions
 *  are page numbers (pageSize, 4 KiB), lengths bytes. */
export interface GuestBytes {
  /** copies src[srcPos, srcPos+len) into guest RAM from the start of page `page` on */
  copyIn(page: number, src: Uint8Array, srcPos: number, len: number): void;
  /** copies len bytes of guest RAM, from the start of page `page` on, to dst[dstPos, dstPos+len) */
  copyOut(page: number, dst: Uint8Array, dstPos: number, len: number): void;
  /** whether the len bytes from the start of page `page` on are all zero */
  isZero(page: number, len: number): boolean;
}

export interface GuestMemory {
  /** native address of guest RAM offset 0 (page aligned) */
  readonly base: number;
  readonly bytes: number;
  readonly pageSize: number;
  /** its RAM blocks (QEMU's RAMBlocks) in its one mapping: the stream's HEADER lists them, page records name them */
  readonly blocks: RamBlocks;
  /** the block table the native page-path threads take (src/native/ram-block-table.ts), or null: one block */
  readonly blockTable: NativeBlockTable | null;
  /** guest RAM's bytes (src/native's MemoryWindows); touching them populates pages */
  readonly contents: GuestBytes;
  /** MADV_DONTNEED: [offset, offset+len) becomes unpopulated (reads as zero, faults again under userfaultfd) */
  discard(offset: number, len: number): void;
}

/** native memory holding the RAM block table, `count` entries */
export interface NativeBlockTable {
  readonly address: number;
  readonly count: number;
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
  /** the kernel's times of vCPU i's thread now (with the moment, the
   *  blocktime clock), or why they say nothing of its blocktime (no
   *  schedstat; the vCPU is not running its workload) */
  kernelSample(i: number, fresh?: boolean): ThreadSample;
  /** gives the CPU away for `us` microseconds (so a vCPU waiting for one runs) */
  yieldCpu(us: number): void;
  /** the vCPUs' access stamps, or null when they have none */
  accessStamps(): AccessStamps | null;
  /** the knobs of the convergence tools (auto-converge, dirty-limit, dirty rate), when the vCPUs have them */
  readonly throttle?: VcpuThrottle;
}

/** What QEMU's convergence tools turn on the vCPU threads (src/vm/vcpu-throttle.ts). */
export interface VcpuThrottle {
  readonly count: number;
  /** pages a vCPU dirties between two dirty-limit sleeps */
  readonly ringPages: number;
  /** the cpu throttle percentage now (0 = off) */
  readonly cpuThrottle: number;
  /** QEMU's cpu throttle: every vCPU sleeps pct % of its time (0 = off) */
  setCpuThrottle(pct: number): void;
  /** the dirty log on (counted: each user starts and stops it once): every
   *  vCPU counts the pages it writes first since the last reap */
  startDirtyLog(): void;
  stopDirtyLog(): void;
  /** every page clean again in the log (the next write to it counts again) */
  reapDirtyLog(): void;
  /** pages vCPU i dirtied in the log so far */
  dirtyPages(i: number): number;
  /** vCPU i sleeps `us` microseconds every ringPages pages it dirties (0 = never) */
  setRingSleep(i: number, us: number): void;
  /** time vCPU i slept for the cpu throttle and for the dirty limit so far */
  sleptNs(i: number): { throttle: number; limit: number };
}
