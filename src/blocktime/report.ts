// Turning nanosecond figures into QEMU's query-migrate units, and the report
// of a destination that cannot attribute faults to vCPUs (the kernel lacks
// UFFD_FEATURE_THREAD_ID): all zeros, with the reason in `unavailable`.

import { LATENCY_BUCKETS, type BlocktimeReport, type VcpuBlocktimeStats } from './types.js';

/** How far a vCPU's blocktime is from the kernel's figure for its thread,
 *  over the same window (the kernel samples' moments): ours / kernel - 1;
 *  undefined without a kernel figure, or when the kernel saw no blocking. */
export function kernelError(v: VcpuBlocktimeStats): number | undefined {
  const k = v.kernelBlockedNs;
  if (k === undefined || k <= 0) return undefined;
  return (v.kernelWindowBlocktimeNs ?? v.blocktimeNs) / k - 1;
}

/** ns -> whole ms, rounded down (QEMU's ns / SCALE_MS). */
export function nsToMs(ns: number): number {
  return Math.floor(ns / 1e6);
}

/** Average rounded down, 0 without samples. */
export function floorAverage(sum: number, count: number): number {
  return count > 0 ? Math.floor(sum / count) : 0;
}

/**
 * An empty report that says why there are no figures. `vcpus` is the vCPU
 * count or the vCPUs' thread ids (position = vCPU index). State is 'final':
 * nothing will ever be added to it.
 */
export function emptyReport(vcpus: number | readonly number[], reason: string): BlocktimeReport {
  const tids = typeof vcpus === 'number' ? new Array<number>(vcpus).fill(0) : [...vcpus];
  const zeros = (): number[] => tids.map(() => 0);
  return {
    'postcopy-blocktime': 0,
    'postcopy-vcpu-blocktime': zeros(),
    'postcopy-latency': 0,
    'postcopy-vcpu-latency': zeros(),
    'postcopy-non-vcpu-latency': 0,
    'postcopy-latency-dist': new Array<number>(LATENCY_BUCKETS).fill(0),
    'x-blocktime': {
      state: 'final',
      unavailable: reason,
      totalBlocktimeNs: 0,
      vcpus: tids.map((threadId, index) => ({
        index, threadId, faults: 0, blocktimeNs: 0, latencyAvgNs: 0, latencyP99Ns: 0,
      })),
      faults: 0,
      nonVcpuFaults: 0,
      latencyP50Ns: 0,
      latencyP90Ns: 0,
      latencyP99Ns: 0,
      latencyMaxNs: 0,
      allBlockedWindows: 0,
      longestAllBlockedNs: 0,
      postcopyNs: 0,
    },
  };
}
