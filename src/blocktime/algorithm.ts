// What every blocktime algorithm consumes: one stream of events in time
// order, already filtered by the postcopy rules (rules.ts). Our exact context
// and QEMU's algorithms (7.2, 10.1) are all consumers of the same stream, so
// `blocktime-replay --compare` can put their figures side by side.

import type { MigrationStatus } from '../migration/api.js';
import type { FaultCause } from './trace.js';

export interface BlocktimeAlgorithm<R> {
  /** a fault on a page not yet placed, raised by thread `tid`, at `at` ns;
   *  `cause`: how the destination served it (no figure depends on it) */
  begin(addr: number, tid: number, at: number, cause?: FaultCause): void;
  /** the page at `addr` was placed at `at` ns: every fault waiting on it is resolved */
  end(addr: number, at: number): void;
  /** the migration reached a terminal status at `at` ns: outstanding faults close there */
  finish(status: MigrationStatus, at: number): void;
  /** the figures so far (final after finish) */
  report(): R;
  /** the source's background push had delivered the page at `addr` by `at`
   *  (samples, in time order with the events; for the pictures and the trace) */
  pushed?(addr: number, at: number): void;
}

/** What a consumer is built from: the trace header. */
export interface AlgorithmStart {
  /** kernel thread id of each vCPU; position = vCPU index */
  vcpuThreadIds: readonly number[];
  /** when the blocktime context was created (ns, the events' clock) */
  startNs: number;
}
