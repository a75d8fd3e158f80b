// `postcopy blocktime-replay FILE [--json | --qemu | --compare [--json]] [--no-color]`:
// prints the report of a recorded blocktime trace. --json: one JSON line in
// the query-migrate BlocktimeReport shape; --qemu: QEMU's `info migrate -a`
// blocktime block; --compare: our exact figures beside QEMU 10.1's and 7.2's
// algorithms on the same events (with --json: one line
// {"exact":...,"qemu-10.1":...,"qemu-7.2":...}); default: the console's
// `info postcopy_blocktime` view. --html OUT.html: writes the pictures
// (src/report/) to OUT.html, for one trace or two side by side on the same
// axes, and prints where. Conflicting output modes exit 2; a bad trace
// prints `postcopy: FILE:LINE: problem` and exits 1.

import { formatBlocktimeQemu, formatBlocktimeRich } from '../monitor/format-blocktime.js';
import { formatBlocktimeCompare } from '../monitor/format-blocktime-compare.js';
import { compareTrace } from './compare.js';
import { replayTrace } from './replay.js';
import { writeHtmlReport } from '../report/build-report.js';

const USAGE = 'usage: postcopy blocktime-replay FILE [--json | --qemu | --compare [--json]] [--no-color]\n'
  + '       postcopy blocktime-replay --html OUT.html FILE [FILE_B]\n';

type Mode = 'rich' | 'json' | 'qemu' | 'compare' | 'compare-json';

export async function main(argv: string[]): Promise<number> {
  const files: string[] = [];
  let json = false;
  let qemu = false;
  let compare = false;
  let noColor = false;
  let html: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--html') {
      html = argv[++i];
      if (html === undefined || html === '') { process.stderr.write(`postcopy: blocktime-replay: --html needs an output file\n${USAGE}`); return 2; }
    } else if (a === '--json') json = true;
    else if (a === '--qemu') qemu = true;
    else if (a === '--compare') compare = true;
    else if (a === '--no-color') noColor = true;
    else if (a === '-h' || a === '--help') { process.stdout.write(USAGE); return 0; }
    else if (a.startsWith('-') && a !== '-') { process.stderr.write(`postcopy: blocktime-replay: unknown option '${a}'\n${USAGE}`); return 2; }
    else files.push(a);
  }
  const other = json ? '--json' : qemu ? '--qemu' : compare ? '--compare' : undefined;
  const conflict = html !== undefined && other !== undefined ? `--html and ${other} are two output modes: give one`
    : qemu && (json || compare) ? `--qemu and ${json ? '--json' : '--compare'} are two output modes: give one` : undefined;
  const maxFiles = html !== undefined ? 2 : 1;
  const usageError = conflict
    ?? (files.length === 0 ? 'no trace file given'
      : files.length > maxFiles ? (html !== undefined ? 'give one trace file, or two to draw side by side' : 'give exactly one trace file') : undefined);
  if (usageError !== undefined) {
    process.stderr.write(`postcopy: blocktime-replay: ${usageError}\n${USAGE}`);
    return 2;
  }
  if (html !== undefined) {
    try {
      const bytes = await writeHtmlReport(files.map((path) => ({ path })), html);
      process.stdout.write(`wrote ${html} (${(bytes / 1024).toFixed(0)} KiB)\n`);
      return 0;
    } catch (e) {
      process.stderr.write(`postcopy: ${(e as Error).message}\n`);
      return 1;
    }
  }
  const mode: Mode = compare ? (json ? 'compare-json' : 'compare') : json ? 'json' : qemu ? 'qemu' : 'rich';
  const color = !noColor && process.stdout.isTTY === true && process.env.NO_COLOR === undefined;

  let out: string;
  try {
    if (mode === 'compare' || mode === 'compare-json') {
      const c = await compareTrace(files[0]);
      out = mode === 'compare' ? formatBlocktimeCompare(c, { color }) : JSON.stringify(c);
    } else {
      const report = await replayTrace(files[0]);
      if (mode === 'json') out = JSON.stringify(report);
      else if (mode === 'qemu') out = formatBlocktimeQemu(report).join('\n');
      else out = formatBlocktimeRich(report, { color });
    }
  } catch (e) {
    process.stderr.write(`postcopy: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`${out}\n`);
  return 0;
}
