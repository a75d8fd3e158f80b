// HMP `info postcopy_blocktime -w [SECONDS]`: the blocktime watched while
// postcopy runs, a frame every half second (format-blocktime.ts draws them,
// the console's live area shows them: live-frame.ts). It ends by itself
// when the migration ends (a frame of the final figures last), after
// SECONDS, on a key typed at the console or Ctrl-C. It only ever waits on
// timers and migration events, so the event loop, and with it the QMP
// socket and the migration, goes on while it runs.

import { CommandError } from '../errors.js';
import { TERMINAL_STATUSES, type Machine } from '../migration/api.js';
import type { CommandContext } from './registry.js';
import { waitForMigration } from './commands-migration.js';
import { formatWatchFrame, formatWatchLine, type WatchFigures } from './format-blocktime.js';

/** how often a frame is drawn */
export const WATCH_INTERVAL_MS = 500;

/** The SECONDS of `-w SECONDS` (a positive number, fractions allowed); undefined: no limit. */
export function watchSeconds(word: string | undefined): number | undefined {
  if (word === undefined) return undefined;
  const v = /^[0-9]+(\.[0-9]+)?$/.test(word) ? Number(word) : NaN;
  if (!(v > 0)) throw new CommandError(`-w takes a number of seconds to watch for, not '${word}' (info postcopy_blocktime -w [SECONDS])`);
  return v;
}

async function figures(m: Machine, since: number, noReport: string): Promise<WatchFigures> {
  let report;
  try { report = await m.blocktime(); } catch { report = undefined; } // the figures are out of reach now (a lab destination gone)
  return { info: m.queryMigrate(), role: m.info().role, elapsedMs: performance.now() - since, report, noReport };
}

/** Watches until the migration ends, `seconds` pass or a key; returns the line that says why it stopped. */
export async function watchBlocktime(ctx: CommandContext, seconds: number | undefined): Promise<string> {
  const live = ctx.live;
  if (live === undefined) {
    throw new CommandError('-w redraws on the console; this monitor cannot (use info postcopy_blocktime without -w, or poll query-migrate)');
  }
  const m = ctx.machine;
  const noReport = m.info().role === 'destination'
    ? 'no blocktime figures: the postcopy-blocktime capability is off here, or postcopy has not started'
    : 'no blocktime figures: they are measured on the destination (watch its console)';
  const since = performance.now();
  const until = seconds === undefined ? Infinity : since + seconds * 1000;
  const key = live.untilKey();
  const stop = ctx.signal === undefined ? key : AbortSignal.any([ctx.signal, key]);
  const draw = async (): Promise<WatchFigures> => {
    const f = await figures(m, since, noReport);
    live.frame(live.inPlace ? formatWatchFrame(f, { color: ctx.color, columns: live.columns, rows: live.rows }) : [formatWatchLine(f)]);
    return f;
  };
  for (;;) {
    const f = await draw();
    if (TERMINAL_STATUSES.has(f.info.status)) return `stopped: the migration ${f.info.status === 'completed' ? 'completed' : `ended (${f.info.status})`}`;
    const goesOn = f.info.status === 'none' ? '' : '; the migration goes on';
    const left = until - performance.now();
    if (left <= 0) return `stopped after ${seconds} s${goesOn}`;
    const outcome = await waitForMigration(m, (s) => TERMINAL_STATUSES.has(s), { signal: stop, timeoutMs: Math.min(WATCH_INTERVAL_MS, left) });
    if (outcome === 'interrupted') {
      await draw();
      return `stopped${key.aborted ? ' (key pressed)' : ''}${goesOn}`;
    }
    if (outcome === 'shutdown') return 'stopped: the VM is shutting down';
  }
}
