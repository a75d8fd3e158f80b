// The blocktime trace: what the context hands to an optional recorder, and the
// JSON-lines format recorders write and `postcopy blocktime-replay` reads.
//
//   {"vcpus":[TID0,TID1,...],"t0":NS}        header; position = vCPU index,
//                                              t0 = when the context started
//   {"t":NS,"ev":"fault","addr":N,"tid":N,"kind":K}   a fault on a missing page
//                                              (read, or found unread by the page's
//                                              placement); "kind" (optional) how the
//                                              destination served it: FAULT_KINDS below
//   {"t":NS,"ev":"placed","addr":N}          a page placed that faults waited on
//   {"t":NS,"ev":"push","addr":N}            the source's background push had
//                                              delivered the page at addr (sampled)
//   {"t":NS,"ev":"end","status":"completed"} the migration ended (terminal state)
//   {"t":NS,"ev":"schedstat","tid":N,"run":NS,"wait":NS}   the kernel's times of
//                                              a vCPU thread (or "unavailable":"why")
//
// Times are ns on the context's clock. "t0", "kind", the "push" lines and
// the "end" line are optional for readers (a trace without "end" replays as
// a live report at its last event; without "t0" the postcopy phase starts at
// the first event; traces of older versions and QEMU imports have no "kind"
// and no "push"). No figure depends on "kind" or "push": the report draws them.

import type { KernelTimes } from './types.js';

/** How the destination's fault thread served a fault (native-shim/channel.h
 *  enum pc_fault_cause, same numbers); Unknown when the source of the event
 *  does not say (a replayed trace without "kind", a test). */
export const enum FaultCause {
  Unknown = 0,
  /** it sent the page request: the first fault on the page */
  Requested = 1,
  /** the page was asked for already, as read-ahead of an earlier fault */
  ReadAhead = 2,
  /** the page was asked for already, for an earlier fault (in flight) */
  InFlight = 3,
  /** the page was here already (a known zero page, or pushed by the source since the fault): no request */
  Received = 4,
  /** never read: the page's placement found the vCPU asleep on it before
   *  the fault thread read its fault (native-shim/waiters.c); QEMU never sees these */
  Unread = 5,
}

/** The trace's "kind" of each FaultCause, by number ('' = Unknown: no field). */
export const FAULT_KINDS = ['', 'requested', 'read-ahead', 'in-flight', 'received', 'unread'] as const;

/** Receives every event the context accounts. Implementations must not throw. */
export interface TraceSink {
  /** once, when the context is created */
  header(vcpuThreadIds: readonly number[], t0: number): void;
  fault(t: number, addr: number, tid: number, cause: FaultCause): void;
  placed(t: number, addr: number): void;
  /** the source's background push had delivered the page at `addr` by `t` */
  push(t: number, addr: number): void;
  /** a kernel sample of a vCPU thread's times, or why there is none */
  schedstat(t: number, tid: number, sample: KernelTimes | string): void;
  /** the migration reached a terminal state; the context stops accounting */
  end(t: number, status: string): void;
  /** writes out what is buffered (a live report reads the trace so far) */
  flush(): void;
  /** flush and release; called once, by the context that owns the sink */
  close(): void;
}

/** Event names of trace lines. */
export const TRACE_EVENTS = ['fault', 'placed', 'push', 'end', 'schedstat'] as const;
export type TraceEventName = (typeof TRACE_EVENTS)[number];
