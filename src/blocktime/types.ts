// The blocktime report as the rest of the program sees it: QEMU's
// query-migrate fields (REFERENCE.md §2) plus our own figures under an
// `x-` name that no QEMU client reads.

/** Number of latency histogram buckets (QEMU's). */
export const LATENCY_BUCKETS = 24;

/** QEMU's destination-side blocktime fields of query-migrate. */
export interface QemuBlocktimeFields {
  /** total blocktime, ms, rounded down (uint32) */
  'postcopy-blocktime': number;
  /** per-vCPU blocktime, ms, rounded down (uint32 each) */
  'postcopy-vcpu-blocktime': number[];
  /** average latency over all faults, ns, rounded down (0 without faults) */
  'postcopy-latency': number;
  /** per-vCPU average latency, ns */
  'postcopy-vcpu-latency': number[];
  /** average latency of faults from threads that are no vCPU, ns */
  'postcopy-non-vcpu-latency': number;
  /** 24 bucket counts: bucket N = [2^N us, 2^(N+1) us) */
  'postcopy-latency-dist': number[];
}

export interface VcpuBlocktimeStats {
  index: number;
  threadId: number;
  faults: number;
  blocktimeNs: number;
  latencyAvgNs: number;
  latencyP99Ns: number;
  /** the kernel's figure over the same window: elapsed - on CPU - waiting on
   *  a run queue, from /proc/.../schedstat (docs/blocktime.md); absent when
   *  not known, with the reason in kernelUnavailable */
  kernelBlockedNs?: number;
  /** our blocktime of this vCPU over the kernel's window (its samples'
   *  moments): the figure to hold against kernelBlockedNs */
  kernelWindowBlocktimeNs?: number;
  kernelUnavailable?: string;
  /** the part of blocktimeNs that fell inside postcopy pauses (recovery) */
  pausedBlocktimeNs?: number;
}

/** A thread's times from the kernel's schedstat, ns. */
export interface KernelTimes {
  /** time on a CPU */
  runNs: number;
  /** time runnable, waiting on a run queue */
  waitNs: number;
}

/** Our extra figures (query-migrate key `x-blocktime`). */
export interface BlocktimeExtra {
  /** 'live' while postcopy runs, 'final' once the migration ended */
  state: 'live' | 'final';
  /** the kernel could not give thread ids: why the figures are empty, else absent */
  unavailable?: string;
  /** x-blocktime-trace named a file that could not be opened when postcopy started: why (the figures are whole) */
  traceError?: string;
  totalBlocktimeNs: number;
  vcpus: VcpuBlocktimeStats[];
  faults: number;
  nonVcpuFaults: number;
  latencyP50Ns: number;
  latencyP90Ns: number;
  latencyP99Ns: number;
  latencyMaxNs: number;
  /** windows during which every vCPU was blocked at once */
  allBlockedWindows: number;
  longestAllBlockedNs: number;
  /** length of the postcopy phase so far (for "share of postcopy"), ns */
  postcopyNs: number;
  /** time spent postcopy-paused within it, ns, and how many pauses (absent in replays) */
  pausedNs?: number;
  pauses?: number;
  /** what feeding the context cost the destination's event loop (absent in replays) */
  feed?: BlocktimeFeedCost;
}

/** The destination event loop's work on the fault thread's events: draining
 *  the ring, ordering, accounting, and the vCPUs' access horizon. */
export interface BlocktimeFeedCost {
  /** ring entries drained (faults and placements) */
  events: number;
  /** drains (every 2 ms, and on each query) */
  drains: number;
  /** the event loop thread's CPU time spent in them, ns */
  cpuNs: number;
  /** of which reading the vCPUs' access stamps (NativeVcpus.accessHorizon), ns */
  horizonNs: number;
}

/** What a real QEMU destination reports itself (`attach`): the blocktime
 *  fields of its query-migrate, as many as its version has (7.2: the two
 *  blocktime ones; 10.1+: the latency ones too), only once it is completed. */
export interface QemuReported {
  /** "7.2.22" */
  version: string;
  /** absent until QEMU fills them in */
  fields?: Partial<QemuBlocktimeFields>;
  /** why there are none (yet) */
  why?: string;
  /** QEMU 7.2's algorithm replayed on the same events (its figures, ms) */
  replayed72?: Pick<QemuBlocktimeFields, 'postcopy-blocktime' | 'postcopy-vcpu-blocktime'>;
  /** how far the kernel column holds for this QEMU's vCPU threads, when it shows */
  kernel?: string;
}

export interface BlocktimeReport extends QemuBlocktimeFields {
  'x-blocktime': BlocktimeExtra;
  /** beside ours, a real QEMU's own figures (attach) */
  'x-qemu'?: QemuReported;
}
