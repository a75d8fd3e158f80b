// The VM's machinery below the migration: guest RAM, vCPU threads and their
// workloads, QEMU-style size and -smp parsing. Re-exports only.
export { PAGE_SIZE, MAX_RAM_BYTES, MAX_VCPUS, parseSize, parseSizeText, formatSize, parseSmp, checkVcpuCount } from './size.js';
export { GuestRam } from './guest-ram.js';
export { RamBlocks, MAX_RAM_BLOCKS } from './ram-blocks.js';
export type { RamBlock, RamBlockSpec } from './ram-blocks.js';
export { parseWorkload, formatWorkload, WORKLOAD_NAMES, DEFAULT_SEED, DEFAULT_FRACTION, DEFAULT_SHARE } from './workload.js';
export type { WorkloadSpec, WorkloadName, WorkloadBlock } from './workload.js';
export { VCPU_STATE_BYTES, encodeVcpuState, decodeVcpuState } from './vcpu-state.js';
export type { VcpuState } from './vcpu-state.js';
export { VcpuSet, vcpuRange, vcpuRngSeed } from './vcpus.js';
export type { VcpuStatus, VcpuProgress } from './vcpus.js';
