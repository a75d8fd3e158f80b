// What the rest of the program uses of src/blocktime/: the context, its clock,
// the empty report and the trace sink interface. Pure logic, no I/O; the
// trace's file recorder and replay live in src/blocktime-trace/.

export { BlocktimeContext, type BlocktimeContextOptions, type BlocktimeContextState } from './context.js';
export { monotonicNs, monotonicBaseNs, type Clock } from './clock.js';
export { emptyReport, kernelError } from './report.js';
export type { TraceSink } from './trace.js';
export * from './types.js';
