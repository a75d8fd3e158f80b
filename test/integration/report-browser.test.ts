// The HTML report in a real browser (headless chromium, test/helpers/
// chromium.ts), made from a real migration's trace: the page loads without
// a console error, the timeline has one row per vCPU and as many bars as the
// trace's blocked intervals give after binning (replayed here through the
// same recorder), and a screenshot of it is a picture, not a blank page.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { replayTraceWith } from '../../src/blocktime-trace/replay.js';
import type { AlgorithmStart } from '../../src/blocktime/algorithm.js';
import { TraceRecorder, type TraceSummary } from '../../src/report/trace-recorder.js';
import { haveChromium, openBrowser } from '../helpers/chromium.js';
import { cli, ensureBuilt } from '../helpers/cli.js';
import { requireUffd } from '../helpers/uffd-available.js';

const maybe = requireUffd() && haveChromium() ? test : test.skip;
let dir: string;
beforeAll(() => { ensureBuilt(); dir = mkdtempSync(join(tmpdir(), 'report-browser-')); }, 180_000);
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

maybe('a real run\'s report opens cleanly, one timeline row per vCPU, its bars, and a screenshot that is not blank', async () => {
  const trace = join(dir, 'bt.jsonl');
  const html = join(dir, 'report.html');
  const png = join(dir, 'report.png');
  const run = spawnSync(process.execPath, [cli, 'run', '-m', '64M', '-smp', '2', '-workload', 'sweep,end=48M', '--warm', '0.5',
    '--postcopy-after', '0.2', '--trace', trace], { encoding: 'utf8', timeout: 120_000 });
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  const replay = spawnSync(process.execPath, [cli, 'blocktime-replay', trace, '--html', html], { encoding: 'utf8', timeout: 60_000 });
  expect(replay.status).toBe(0);

  const vcpus = (JSON.parse(readFileSync(trace, 'utf8').split('\n')[0]) as { vcpus: number[] }).vcpus.length;
  const summary = (await replayTraceWith(trace, { r: (s: AlgorithmStart) => new TraceRecorder(s) })).r as TraceSummary;
  const expectedBars = summary.blocked.reduce((n, s) => n + s.bars().length, 0);
  expect(expectedBars).toBeGreaterThan(0);

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
  } finally {
    await browser.close();
  }
}, 240_000);
