#!/usr/bin/env node
// Makes docs/report.png, the README's picture of the HTML report, from a
// real run: a migration with a trace (`postcopy run ... --trace`), its report
// (`blocktime-replay --html`), and a screenshot by headless Chromium driven
// with playwright-core. Usage: node scripts/report-screenshot.mjs [OUT.png]
// (needs `npm run build`, which also builds the browser helper
// test/helpers/chromium.ts, and /usr/bin/chromium, or CHROMIUM=path).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = process.argv[2] ?? join(root, 'docs', 'report.png');
const dir = mkdtempSync(join(tmpdir(), 'report-screenshot-'));
const cli = join(root, 'dist', 'src', 'cli.js');
const { openBrowser } = await import(pathToFileURL(join(root, 'dist', 'test', 'helpers', 'chromium.js')).href);
try {
  const trace = join(dir, 'bt.jsonl');
  const html = join(dir, 'report.html');
  execFileSync(process.execPath, [cli, 'run', '-m', '64M', '-smp', '2', '-workload', 'sweep,end=48M', '--warm', '0.5',
    '--postcopy-after', '0.2', '--trace', trace], { stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync(process.execPath, [cli, 'blocktime-replay', trace, '--html', html], { stdio: 'inherit' });
  const browser = await openBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(pathToFileURL(html).href);
    await page.screenshot({ path: out, fullPage: true });
  } finally {
    await browser.close();
  }
  process.stdout.write(`wrote ${out}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
