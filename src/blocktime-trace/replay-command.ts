// `postcopy blocktime-replay FILE [--json | --qemu] [--no-color]`: prints the
// report of a recorded blocktime trace. --json: one JSON line in the
// query-migrate BlocktimeReport shape; --qemu: QEMU's `info migrate -a`
// blocktime block; default: the console's `info postcopy_blocktime` view.
// A bad trace prints `postcopy: FILE:LINE: problem` and exits 1.

import { formatBlocktimeQemu, formatBlocktimeRich } from '../monitor/format-blocktime.js';
import { replayTrace } from './replay.js';

const USAGE = 'usage: postcopy blocktime-replay FILE [--json | --qemu] [--no-color]\n';

export async function main(argv: string[]): Promise<number> {
  const files: string[] = [];
  let mode: 'rich' | 'json' | 'qemu' = 'rich';
  let noColor = false;
  for (const a of argv) {
    if (a === '--json') mode = 'json';
    else if (a === '--qemu') mode = 'qemu';
    else if (a === '--no-color') noColor = true;
    else if (a === '-h' || a === '--help') { process.stdout.write(USAGE); return 0; }
    else if (a.startsWith('-') && a !== '-') { process.stderr.write(`postcopy: blocktime-replay: unknown option '${a}'\n${USAGE}`); return 2; }
    else files.push(a);
  }
  if (files.length !== 1) {
    process.stderr.write(`postcopy: blocktime-replay: ${files.length === 0 ? 'no trace file given' : 'give exactly one trace file'}\n${USAGE}`);
    return 2;
  }

  let report;
  try {
    report = await replayTrace(files[0]);
  } catch (e) {
    process.stderr.write(`postcopy: ${(e as Error).message}\n`);
    return 1;
  }

  if (mode === 'json') process.stdout.write(`${JSON.stringify(report)}\n`);
  else if (mode === 'qemu') process.stdout.write(`${formatBlocktimeQemu(report).join('\n')}\n`);
  else {
    const color = !noColor && process.stdout.isTTY === true && process.env.NO_COLOR === undefined;
    process.stdout.write(`${formatBlocktimeRich(report, { color })}\n`);
  }
  return 0;
}
