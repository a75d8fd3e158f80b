// `npm run bench -- report [--json] [--events N (1e6)] [--reps N (3)]`: the
// HTML report (`blocktime-replay --html`) of a synthetic trace of N events
// (bench/_report-trace.ts) written to a file: its size (target < 5 MiB) and
// the time to write it from the trace file (target < 3 s), median of --reps,
// and the CPU time that took (all threads: the main one and the chart
// renderer; against the wall time it shows how much the machine's load took);
// and, where /usr/bin/chromium is installed, the time headless chromium takes
// to open it up to its load event (target < 2 s), median of --reps.
import { mkdtempSync, rmSync, statSync, createWriteStream, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { CHROMIUM, openBrowser } from '../test/helpers/chromium.js';
import { writeHtmlReport } from '../src/report/build-report.js';
import { numberOption } from './_options.js';
import { syntheticTrace } from './_report-trace.js';

async function writeTrace(path: string, events: number): Promise<void> {
  const out = createWriteStream(path);
  let chunk = '';
  for (const line of syntheticTrace(events)) {
    chunk += `${line}\n`;
    if (chunk.length > 1 << 16) { if (!out.write(chunk)) await once(out, 'drain'); chunk = ''; }
  }
  out.end(chunk);
  await once(out, 'finish');
}

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const events = numberOption(argv, 'events', 1e6, 1);
  const reps = numberOption(argv, 'reps', 3, 1);
  const dir = mkdtempSync(join(tmpdir(), 'bench-report-'));
  try {
    const trace = join(dir, 'trace.jsonl');
    await writeTrace(trace, events);
    const times: number[] = [];
    const cpu: number[] = [];
    let bytes = 0;
    for (let i = 0; i < reps; i++) {
      const out = join(dir, 'report.html');
      const t = performance.now();
      const c = process.cpuUsage();
      bytes = await writeHtmlReport([{ path: trace }], out);
      times.push(performance.now() - t);
      const used = process.cpuUsage(c);
      cpu.push((used.user + used.system) / 1000);
      if (statSync(out).size !== bytes) throw new Error('the report on disk is not the size written');
    }
    times.sort((a, b) => a - b);
    cpu.sort((a, b) => a - b);
    const open = existsSync(CHROMIUM) ? await openTimes(join(dir, 'report.html'), reps) : undefined;
    return {
      bench: 'report', events, trace_mib: +(statSync(trace).size / 2 ** 20).toFixed(1),
      html_mib: +(bytes / 2 ** 20).toFixed(3), write_ms_median: Math.round(times[Math.floor(times.length / 2)]),
      write_ms: times.map(Math.round),
      write_cpu_ms_median: Math.round(cpu[Math.floor(cpu.length / 2)]), write_cpu_ms: cpu.map(Math.round),
      open_ms_median: open === undefined ? null : Math.round(open[Math.floor(open.length / 2)]),
      open_ms: open === undefined ? `no ${CHROMIUM}` : open.map(Math.round),
      target: { html_mib_below: 5, write_ms_below: 3000, open_ms_below: 2000 },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** ms from navigation to the load event of the page at `path`, `reps` times, sorted. */
async function openTimes(path: string, reps: number): Promise<number[]> {
  const browser = await openBrowser();
  try {
    const out: number[] = [];
    for (let i = 0; i < reps; i++) {
      const page = await browser.context.newPage();
      const t = performance.now();
      await page.goto(pathToFileURL(path).href, { waitUntil: 'load' });
      out.push(performance.now() - t);
      await page.close();
    }
    return out.sort((a, b) => a - b);
  } finally {
    await browser.close();
  }
}
