// What the rest of the program uses of src/blocktime/: the context, its clock,
// the empty report, the trace sink and replay.

export { BlocktimeContext, type BlocktimeContextOptions, type BlocktimeContextState } from './context.js';
export { monotonicNs, type Clock } from './clock.js';
export { emptyReport } from './report.js';
export type { TraceSink } from './trace.js';
export { TraceFileSink, openTraceFile } from './trace-file.js';
export { replayTrace, TraceError } from './replay.js';
export * from './types.js';
