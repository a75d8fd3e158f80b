// The blocktime trace's file I/O, kept out of src/blocktime/ (pure accounting):
// the recorder behind the `x-blocktime-trace` parameter and the replay of a
// recorded trace (`postcopy blocktime-replay`).

export { TraceFileSink, openTraceFile, checkTracePath } from './trace-file.js';
export { replayTrace, TraceError } from './replay.js';
