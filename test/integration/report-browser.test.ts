// The HTML report in a real browser (headless chromium, test/helpers/
// chromium.ts), made from real migrations' traces: the page loads without
// a console error, the timeline has one row per vCPU and as many bars as the
// trace's blocked intervals give after binning (replayed here through the
// same recorder, over the lines the page says it drew), the scatters carry
// how faults were served and the background push, and a screenshot of it is
// a picture, not a blank page. Two ways to a report: `blocktime-replay
// --html` of a `postcopy run` trace, and HMP `info postcopy_blocktime -o` on
// a real destination, in the middle of postcopy and after it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { replayLines } from '../../src/blocktime-trace/replay.js';
import type { AlgorithmStart } from '../../src/blocktime/algorithm.js';
import type { MigrationInfo } from '../../src/migration/api.js';
import { freeTcpPort } from '../../src/migration/local-destination.js';
import { connectWithRetry } from '../../src/qmp/client.js';
import { TraceRecorder, type TraceSummary } from '../../src/report/trace-recorder.js';
import { haveChromium, openBrowser } from '../helpers/chromium.js';
import { cli, ensureBuilt, killConsoles, startConsole, waitOut } from '../helpers/cli.js';
import { requireUffd } from '../helpers/uffd-available.js';

const maybe = requireUffd() && haveChromium() ? test : test.skip;
let dir: string;
beforeAll(() => { ensureBuilt(); dir = mkdtempSync(join(tmpdir(), 'report-browser-')); }, 180_000);
afterAll(() => { killConsoles(); rmSync(dir, { recursive: true, force: true }); });

/**
 * Opens the report `html` of the trace file `trace` in chromium and checks
 * what a reader sees: no console error, one timeline row per vCPU, the
 * bars of the trace lines the page drew (a live trace grows on after it),
 * the faults by how they were served with the push line where the trace has
 * them, and a screenshot (saved as `png`) that is not blank. Returns the page's text.
 */
async function expectReportAccepted(html: string, trace: string, png: string): Promise<string> {
  const page0 = readFileSync(html, 'utf8');
  const drawn = Number(/data-trace-lines="(\d+)"/.exec(page0)?.[1]);
  const lines = readFileSync(trace, 'utf8').split('\n').slice(0, drawn);
  expect(lines.length).toBe(drawn);
  const vcpus = (JSON.parse(lines[0]) as { vcpus: number[] }).vcpus.length;
  const summary = (await replayLines(lines, trace, { r: (s: AlgorithmStart) => new TraceRecorder(s) })).r as TraceSummary;
  const expectedBars = summary.blocked.reduce((n, s) => n + s.bars().length, 0);
  expect(expectedBars).toBeGreaterThan(0);
  const kinds = lines.some((l) => l.includes('"kind":'));
  const pushes = lines.some((l) => l.includes('"ev":"push"'));

  const browser = await openBrowser();
  try {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));
    await page.goto(pathToFileURL(html).href, { waitUntil: 'load' });

    const timeline = page.locator('figure[data-chart="timeline"]');
    const rows = await timeline.locator('text').evaluateAll((ts) => ts.map((t) => t.textContent ?? '').filter((s) => /^vCPU \d+$/.test(s)));
    expect(rows).toEqual(Array.from({ length: vcpus }, (_, i) => `vCPU ${i}`));
    expect(await timeline.locator('g.blocked_marks > path').count()).toBe(expectedBars);
    const box = await timeline.locator('svg').boundingBox();
    expect(box?.width ?? 0).toBeGreaterThan(300);

    const causes = page.locator('figure[data-chart="fault-causes"]');
    expect(await causes.count()).toBe(kinds ? 1 : 0);
    if (kinds) expect(await causes.locator('text').evaluateAll((ts) => ts.map((t) => t.textContent))).toContain('requested');
    expect(await page.locator('figure[data-chart="faults"] g.push_marks > path').count() > 0).toBe(pushes);

    const shot = await page.screenshot({ path: png, fullPage: true });
    expect(shot.subarray(1, 4).toString('latin1')).toBe('PNG');
    // decode it in the browser: a blank page has one colour
    const colours = await page.evaluate(`(async () => {
      const img = new Image();
      img.src = 'data:image/png;base64,${shot.toString('base64')}';
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width; c.height = img.height;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      let notWhite = 0;
      for (let i = 0; i < d.length; i += 4) {
        seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) notWhite++;
      }
      return { distinct: seen.size, notWhiteShare: notWhite / (d.length / 4) };
    })()`) as { distinct: number; notWhiteShare: number };
    expect(colours.distinct).toBeGreaterThan(20);
    expect(colours.notWhiteShare).toBeGreaterThan(0.02);
    expect(errors).toEqual([]);
    return await page.locator('body').innerText();
  } finally {
    await browser.close();
  }
}

maybe('a real run\'s report opens cleanly, one timeline row per vCPU, its bars, and a screenshot that is not blank', async () => {
  const trace = join(dir, 'bt.jsonl');
  const html = join(dir, 'report.html');
  const run = spawnSync(process.execPath, [cli, 'run', '-m', '64M', '-smp', '2', '-workload', 'sweep,end=48M', '--warm', '0.5',
    '--postcopy-after', '0.2', '--trace', trace], { encoding: 'utf8', timeout: 120_000 });
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  const replay = spawnSync(process.execPath, [cli, 'blocktime-replay', trace, '--html', html], { encoding: 'utf8', timeout: 60_000 });
  expect(replay.status).toBe(0);
  const text = await expectReportAccepted(html, trace, join(dir, 'report.png'));
  expect(text).toContain('final; 2 vCPUs');
}, 240_000);

maybe('info postcopy_blocktime -o on a real destination, in the middle of postcopy and after it, writes reports that pass the same checks', async () => {
  const trace = join(dir, 'dst.jsonl');
  const qmpPath = join(dir, 'dst.qmp');
  const port = await freeTcpPort();
  // the source first (its vCPUs write all of guest RAM meanwhile); after the switch they sweep on ahead of a
  // push held to 8 MiB/s, faulting page after page: seconds of postcopy
  const src = startConsole(['-m', '512M', '-smp', '2', '--exit-on-error']);
  const dst = startConsole(['-m', '512M', '-smp', '2', '-incoming', `tcp:127.0.0.1:${port}`, '-qmp', `unix:${qmpPath},server=on,wait=off`]);
  dst.p.stdin.write(`migrate_set_capability postcopy-blocktime on\nmigrate_set_parameter x-blocktime-trace ${trace}\ninfo status\n`);
  await waitOut(dst, /VM status: paused \(inmigrate\)\n/, 'the destination ready');
  const qmp = await connectWithRetry(`unix:${qmpPath}`, 10_000);
  try {
    src.p.stdin.end(['migrate_set_capability postcopy-ram on', 'migrate_set_parameter max-bandwidth 16',
      'migrate_set_parameter max-postcopy-bandwidth 8M', `migrate -d tcp:127.0.0.1:${port}`, 'migrate_start_postcopy',
      'migrate_wait 120', ''].join('\n'));
    for (;;) { // postcopy under way, with faults accounted
      const info = await qmp.execute<MigrationInfo>('query-migrate');
      if (info.status === 'postcopy-active' && (info.ram?.['postcopy-requests'] ?? 0) > 500) break;
      if (info.status === 'completed' || info.status === 'failed') throw new Error(`the migration ended (${info.status}) before the test could look at it mid-postcopy`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const mid = join(dir, 'mid.html');
    dst.p.stdin.write(`info postcopy_blocktime -o ${mid}\n`);
    await waitOut(dst, /wrote .*mid\.html \(\d+ KiB\) from .*dst\.jsonl \(live: the events accounted so far\)\n/, 'the live report written');
  } finally {
    await qmp.close();
  }
  const final = join(dir, 'final.html');
  dst.p.stdin.end(`migrate_wait 120\ninfo postcopy_blocktime -o ${final}\n`);
  expect(await src.exit).toBe(0);
  expect(await dst.exit).toBe(0);
  expect(dst.out()).toMatch(/wrote .*final\.html \(\d+ KiB\) from .*dst\.jsonl\n/);

  const midText = await expectReportAccepted(join(dir, 'mid.html'), trace, join(dir, 'mid.png'));
  expect(midText).toContain('live (the trace has no end line)');
  const finalText = await expectReportAccepted(final, trace, join(dir, 'final.png'));
  expect(finalText).toContain('final; 2 vCPUs');
  const all = readFileSync(trace, 'utf8').trimEnd().split('\n').length;
  expect(readFileSync(final, 'utf8')).toContain(`data-trace-lines="${all}"`); // after the end: the whole trace
}, 240_000);
