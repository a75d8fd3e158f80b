// The blocktime context never reads the time itself: it is handed a clock, so
// tests and trace replay can drive it with their own times. This module holds
// the clock type and the production clock (monotonic, ns since process start).

/** A monotonic clock in nanoseconds (a plain Number: ns since process start
 *  stays far below 2^53). */
export type Clock = () => number;

const origin = process.hrtime.bigint();

/** Production clock: CLOCK_MONOTONIC through process.hrtime, ns since this
 *  module was loaded. */
export const monotonicNs: Clock = () => Number(process.hrtime.bigint() - origin);
