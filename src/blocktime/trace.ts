// The blocktime trace: what the context hands to an optional recorder, and the
// JSON-lines format recorders write and `postcopy blocktime-replay` reads.
//
//   {"vcpus":[TID0,TID1,...],"t0":NS}        header; position = vCPU index,
//                                              t0 = when the context started
//   {"t":NS,"ev":"fault","addr":N,"tid":N}   a fault read for a missing page
//   {"t":NS,"ev":"placed","addr":N}          a page placed that faults waited on
//   {"t":NS,"ev":"end","status":"completed"} the migration ended (terminal state)
//   {"t":NS,"ev":"schedstat","tid":N,"run":NS,"wait":NS}   the kernel's times of
//                                              a vCPU thread (or "unavailable":"why")
//
// Times are ns on the context's clock. "t0" and the "end" line are optional
// for readers (a trace without "end" replays as a live report at its last
// event; without "t0" the postcopy phase starts at the first event).

import type { KernelTimes } from './types.js';

/** Receives every event the context accounts. Implementations must not throw. */
export interface TraceSink {
  /** once, when the context is created */
  header(vcpuThreadIds: readonly number[], t0: number): void;
  fault(t: number, addr: number, tid: number): void;
  placed(t: number, addr: number): void;
  /** a kernel sample of a vCPU thread's times, or why there is none */
  schedstat(t: number, tid: number, sample: KernelTimes | string): void;
  /** the migration reached a terminal state; the context stops accounting */
  end(t: number, status: string): void;
  /** flush and release; called once, by the context that owns the sink */
  close(): void;
}

/** Event names of trace lines. */
export const TRACE_EVENTS = ['fault', 'placed', 'end', 'schedstat'] as const;
export type TraceEventName = (typeof TRACE_EVENTS)[number];
