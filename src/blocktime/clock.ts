// The blocktime context never reads the time itself: it is handed a clock, so
// tests and trace replay can drive it with their own times. This module holds
// the clock type and the production clock (monotonic, ns since process start).

/** A monotonic clock in nanoseconds (a plain Number: ns since process start
 *  stays far below 2^53). */
export type Clock = () => number;

import { performance } from 'node:perf_hooks';

/** Production clock: CLOCK_MONOTONIC (libuv's hrtime behind
 *  performance.now()), ns since process start. A double, not a BigInt, so
 *  reading it allocates nothing on the fault path; resolution ~30 ns here. */
export const monotonicNs: Clock = () => Math.round(performance.now() * 1e6);

/** one for the process: the two clocks are read apart, so each reading differs by up to a
 *  microsecond, and the threads whose events are merged in time order must agree */
let processBase: number | undefined;

/** CLOCK_MONOTONIC ns minus this = monotonicNs: what native threads take off
 *  their own clock reads (whole ns: event times stay integers, as traces write them). */
export function monotonicBaseNs(): number {
  processBase ??= Math.round(Number(process.hrtime.bigint()) - performance.now() * 1e6);
  return processBase;
}
