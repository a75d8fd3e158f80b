// Whether precopy is getting anywhere. After each round's dirty sync the
// source reports what is still dirty; when rounds stop shrinking the dirty
// set (a guest that dirties memory about as fast as the stream sends it),
// the watch says so, with what an operator needs to act: the guest's dirty
// rate, the stream's bandwidth and its limit, and the ways out. QEMU keeps
// going silently in that case; `info migrate`, query-migrate's
// `x-convergence` and `postcopy run` say it. Pure: injected clock, no I/O.

import { IMPLEMENTED_CAPABILITIES, type CapabilityName } from './api.js';

/** What the source knows after a round's dirty sync. */
export interface RoundFigures {
  /** bytes still to send (dirty or never sent) */
  remainingBytes: number;
  /** bytes/s the guest dirtied since the previous sync */
  dirtyRate: number;
  /** bytes/s the stream moved over the last round */
  bandwidth: number;
}

export interface Stall extends RoundFigures {
  /** rounds so far */
  rounds: number;
  /** rounds since the dirty set last shrank */
  stalledRounds: number;
}

/** query-migrate's `x-convergence` (ours), present while precopy does not converge. */
export interface ConvergenceInfo {
  converging: false;
  rounds: number;
  'stalled-rounds': number;
  /** bytes still to send */
  remaining: number;
  /** bytes/s */
  'dirty-rate': number;
  /** bytes/s */
  bandwidth: number;
  /** bytes/s, 0 = none */
  'max-bandwidth': number;
  /** what is wrong, with the figures */
  summary: string;
  /** what to do about it */
  'ways-out': string;
}

export interface ConvergenceOptions {
  /** rounds without a shrink before it counts as a stall */
  rounds: number;
  /** ms without a shrink before it counts as a stall (tiny rounds say little) */
  minMs: number;
  /** a round shrinks the set when it leaves at most this fraction of the smallest set so far */
  shrink: number;
}

export const DEFAULT_CONVERGENCE: ConvergenceOptions = { rounds: 3, minMs: 2000, shrink: 0.9 };

export class ConvergenceWatch {
  private rounds = 0;
  private best = Infinity;
  private bestRound = 0;
  private bestAt = 0;
  private last: RoundFigures | undefined;

  constructor(private readonly clock: () => number, private readonly opts: ConvergenceOptions = DEFAULT_CONVERGENCE) {}

  /** One round's dirty sync. */
  round(f: RoundFigures): void {
    this.rounds++;
    this.last = f;
    if (f.remainingBytes <= this.best * this.opts.shrink) {
      this.best = f.remainingBytes;
      this.bestRound = this.rounds;
      this.bestAt = this.clock();
    }
  }

  /** The stall, or undefined while rounds still shrink the dirty set. */
  get stall(): Stall | undefined {
    const stalledRounds = this.rounds - this.bestRound;
    if (!this.last || stalledRounds < this.opts.rounds || this.clock() - this.bestAt < this.opts.minMs) return undefined;
    return { ...this.last, rounds: this.rounds, stalledRounds };
  }
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

export interface StallContext {
  /** max-bandwidth now, bytes/s (0 = none) */
  maxBandwidth: number;
  /** postcopy-ram was on when the migration started */
  postcopyRam: boolean;
  /** the ways out in the monitors' commands (default) or in `postcopy run`'s options */
  spelling?: 'monitor' | 'batch';
  implemented?: readonly CapabilityName[];
}

/** The stall in words: the figures, then the ways out this engine offers. */
export function describeStall(s: Stall, o: StallContext): ConvergenceInfo {
  const implemented = o.implemented ?? IMPLEMENTED_CAPABILITIES;
  const batch = o.spelling === 'batch';
  const limit = o.maxBandwidth > 0 ? `max-bandwidth ${mib(o.maxBandwidth)}/s` : 'no max-bandwidth limit';
  const summary = `${s.stalledRounds} rounds have not shrunk the dirty set (${mib(s.remainingBytes)} still to send after ${s.rounds} rounds):`
    + ` the guest dirties ${mib(s.dirtyRate)}/s and the stream moves ${mib(s.bandwidth)}/s (${limit})`;
  const ways = batch
    ? ['postcopy (--postcopy-after SECONDS)', o.maxBandwidth > 0 ? 'a higher --max-bandwidth (0: no limit)' : 'a faster link']
    : [
      o.postcopyRam ? 'migrate_start_postcopy' : 'postcopy (migrate_set_capability postcopy-ram on before migrate, then migrate_start_postcopy)',
      o.maxBandwidth > 0 ? 'a higher max-bandwidth (migrate_set_parameter max-bandwidth 0: no limit)' : 'a faster link',
    ];
  const throttles = (['auto-converge', 'dirty-limit'] as const).filter((c) => implemented.includes(c));
  ways.push(throttles.length > 0
    ? `throttling the guest (${batch ? 'from a monitor: ' : ''}migrate_set_capability ${throttles.join(' or ')} on, before migrate)`
    : "throttling the guest (QEMU's auto-converge or dirty-limit; not in this engine yet)");
  return {
    converging: false, rounds: s.rounds, 'stalled-rounds': s.stalledRounds, remaining: s.remainingBytes,
    'dirty-rate': s.dirtyRate, bandwidth: s.bandwidth, 'max-bandwidth': o.maxBandwidth,
    summary, 'ways-out': ways.join('; '),
  };
}

/** One sentence for an error message; `batch`: with the ways out in
 *  `postcopy run`'s options. */
export function stallSentence(c: ConvergenceInfo, spelling: 'monitor' | 'batch' = 'monitor'): string {
  const d = spelling === 'monitor' ? c : describeStall({
    remainingBytes: c.remaining, dirtyRate: c['dirty-rate'], bandwidth: c.bandwidth, rounds: c.rounds, stalledRounds: c['stalled-rounds'],
  }, { maxBandwidth: c['max-bandwidth'], postcopyRam: false, spelling });
  return `precopy is not converging: ${d.summary}. Ways out: ${d['ways-out']}`;
}
