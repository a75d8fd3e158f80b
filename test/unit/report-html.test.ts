// The HTML report (src/report/): self-contained (no script, nothing fetched),
// one timeline row per vCPU and one bar per blocked interval when they are
// a column apart, the summary table of the console, two traces side by side
// on the same axes, the faults coloured by how they were served and the
// background push drawn as a line where the trace carries them, the CLI's
// usage errors, a 10^6-event trace that stays under 5 MiB, and charts that
// are the same whether the worker thread or the main thread drew them.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { buildHtmlReport } from '../../src/report/build-report.js';
import { main } from '../../src/blocktime-trace/replay-command.js';
import { SvgRenderers } from '../../src/report/svg-renderers.js';
import type { TopLevelSpec } from 'vega-lite';
import { syntheticTrace } from '../../bench/_report-trace.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'report-html-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

const ev = (t: number, e: string, more: object = {}) => JSON.stringify({ t, ev: e, ...more });
/** 3 vCPUs; vCPU 0 blocked twice, vCPU 1 once, vCPU 2 never; ms apart. */
const small = [
  JSON.stringify({ vcpus: [11, 12, 13], t0: 0 }),
  ev(1e6, 'fault', { addr: 4096, tid: 11 }),
  ev(2e6, 'placed', { addr: 4096 }),
  ev(5e6, 'fault', { addr: 8192, tid: 11 }),
  ev(5.5e6, 'fault', { addr: 8192, tid: 12 }),
  ev(7e6, 'placed', { addr: 8192 }),
  ev(9e6, 'end', { status: 'completed' }),
];

/** The SVG marks of a named Vega-Lite layer in one chart of the page. */
function marks(html: string, chart: string, layer: string, trace = 0): number {
  const fig = html.match(new RegExp(`<figure data-chart="${chart}" data-trace="${trace}">([\\s\\S]*?)</figure>`));
  if (fig === null) throw new Error(`no chart ${chart}`);
  const g = fig[1].match(new RegExp(`<g class="mark-[a-z]+ role-mark ${layer}_marks"[^>]*?(/>|>([\\s\\S]*?)</g>)`));
  return g === null ? 0 : ((g[2] ?? '').match(/<(path|line) /g) ?? []).length;
}

/** The lines (one path each) of a chart's line layers. */
function linePaths(html: string, chart: string): number {
  const fig = html.match(new RegExp(`<figure data-chart="${chart}" data-trace="0">([\\s\\S]*?)</figure>`))?.[1] ?? '';
  return (fig.match(/aria-roledescription="line mark"/g) ?? []).length;
}

describe('the HTML report', () => {
  test('a chart is the same SVG from the worker or from the main thread, and no id appears twice in a page', async () => {
    const spec = (n: number) => ({
      width: 100, height: 50, data: { values: Array.from({ length: n }, (_, i) => ({ x: i, y: i * i })) },
      mark: { type: 'rect', clip: true }, encoding: { x: { field: 'x', type: 'quantitative' }, y: { field: 'y', type: 'quantitative' } },
    }) as TopLevelSpec;
    const specs = [3, 40, 5, 60, 7, 80].map(spec);
    const prefixes = specs.map((_, i) => `c${i}-`);
    const two = new SvgRenderers();
    const one = new SvgRenderers({ worker: false });
    try {
      expect(two.parallel).toBe(true); // this machine has 2 CPUs, and dist/ is built before the tests
      expect(one.parallel).toBe(false);
      const [a, b] = [await two.render(specs, prefixes), await one.render(specs, prefixes)];
      expect(a).toEqual(b);
      expect(a[1]).toContain('clip-path="url(#c1-clip1)"');
    } finally {
      two.close();
      one.close();
    }
    const html = await buildHtmlReport([{ lines: small, title: 'a' }, { lines: small, title: 'b' }]);
    const ids = [...html.matchAll(/ id="([^"]+)"/g)].map((m) => m[1]);
    expect(ids.length).toBeGreaterThan(0);
    expect(new Set(ids).size).toBe(ids.length);
    expect(await buildHtmlReport([{ lines: small, title: 'a' }, { lines: small, title: 'b' }])).toBe(html);
  });

  test('is self-contained and draws each blocked interval, one row per vCPU', async () => {
    const html = await buildHtmlReport([{ lines: small, title: 'small' }]);
    expect(html).not.toMatch(/<script|<link|<img|@import|url\((?!#)/i); // url(#clip1): a clip path in the page
    expect(html.replace(/xmlns(:xlink)?="http:\/\/www\.w3\.org\/[^"]*"/g, '')).not.toMatch(/https?:\/\//);
    for (const c of ['timeline', 'cumulative', 'faults', 'latency-buckets', 'latency-cdf', 'summary']) {
      expect(html).toContain(`data-chart="${c}"`);
    }
    expect(marks(html, 'timeline', 'blocked')).toBe(3);
    expect(marks(html, 'timeline', 'all_blocked')).toBe(0);
    const timeline = html.match(/data-chart="timeline"[\s\S]*?<\/figure>/)?.[0] ?? '';
    for (const row of ['vCPU 0', 'vCPU 1', 'vCPU 2']) expect(timeline).toContain(`>${row}</text>`);
    expect(timeline).not.toContain('>vCPU 3<');
    // the console's comparison table, exact beside QEMU's
    expect(html).toMatch(/QEMU 10\.1/);
    expect(html).toMatch(/QEMU 7\.2/);
    expect(marks(html, 'latency-buckets', 'buckets')).toBe(2); // 1 ms in [512 µs, 1024 µs); 1.5 ms and 2 ms in [1024 µs, 2048 µs)
    expect(marks(html, 'latency-cdf', 'percentiles')).toBe(3);
  });

  test('marks the windows when every vCPU was blocked', async () => {
    const lines = [JSON.stringify({ vcpus: [11, 12] }), ev(1e6, 'fault', { addr: 4096, tid: 11 }),
      ev(2e6, 'fault', { addr: 8192, tid: 12 }), ev(3e6, 'placed', { addr: 4096 }), ev(4e6, 'placed', { addr: 8192 })];
    const html = await buildHtmlReport([{ lines, title: 'both' }]);
    expect(marks(html, 'timeline', 'all_blocked')).toBe(1);
    expect(html).toContain('live (the trace has no end line)');
  });

  test('colours the faults by how they were served and draws the background push as a line, where the trace says so', async () => {
    const lines = [
      JSON.stringify({ vcpus: [11, 12], t0: 0 }),
      ev(1e6, 'push', { addr: 0 }), ev(2e6, 'push', { addr: 64 * 4096 }),
      ev(3e6, 'fault', { addr: 4096 * 100, tid: 11, kind: 'requested' }),
      ev(3.2e6, 'fault', { addr: 4096 * 100, tid: 12, kind: 'in-flight' }),
      ev(3.4e6, 'fault', { addr: 4096 * 101, tid: 12, kind: 'read-ahead' }),
      ev(4e6, 'placed', { addr: 4096 * 100 }), ev(4.5e6, 'placed', { addr: 4096 * 101 }),
      ev(5e6, 'push', { addr: 128 * 4096 }),
      ev(6e6, 'push', { addr: 16 * 4096 }), // a step back: a new pass, a new stretch of line
      ev(7e6, 'push', { addr: 32 * 4096 }),
      ev(8e6, 'end', { status: 'completed' }),
    ];
    const html = await buildHtmlReport([{ lines, title: 'kinds' }]);
    const causes = html.match(/data-chart="fault-causes"[\s\S]*?<\/figure>/)?.[0] ?? '';
    for (const label of ['requested', 'read-ahead', 'in-flight', 'received, no request', 'background push']) expect(causes).toContain(`>${label}</text>`);
    expect(causes).not.toContain('kind not recorded');
    expect(marks(html, 'fault-causes', 'faults')).toBe(3); // one rect per cause and vCPU in its column
    expect(linePaths(html, 'fault-causes')).toBe(2); // two stretches of line
    expect(linePaths(html, 'faults')).toBe(2); // the same line under the faults by vCPU
    // a trace that says neither (older traces, QEMU's): no such chart, no line
    const plain = await buildHtmlReport([{ lines: small, title: 'small' }]);
    expect(plain).not.toContain('data-chart="fault-causes"');
    expect(linePaths(plain, 'faults')).toBe(0);
    expect(plain).not.toContain('background push');
  });

  test('draws two traces side by side on the same axes', async () => {
    const longer = [...small.slice(0, -1), ev(30e6, 'end', { status: 'completed' })];
    const html = await buildHtmlReport([{ lines: small, title: 'A' }, { lines: longer, title: 'B' }]);
    expect(html).toContain('--traces: 2');
    const axisEnd = (trace: number) => {
      const fig = html.match(new RegExp(`<figure data-chart="timeline" data-trace="${trace}">([\\s\\S]*?)</figure>`))?.[1] ?? '';
      const labels = [...fig.matchAll(/>(\d+)<\/text>/g)].map((m) => Number(m[1]));
      return Math.max(...labels);
    };
    expect(axisEnd(0)).toBe(axisEnd(1));
    expect(axisEnd(0)).toBeGreaterThanOrEqual(25);
  });

  test('a 10^6-event trace gives a file under 5 MiB', async () => {
    const html = await buildHtmlReport([{ lines: syntheticTrace(1_000_000), title: 'big' }]);
    const bytes = Buffer.byteLength(html);
    expect(bytes).toBeLessThan(5 * 1024 * 1024);
    expect(bytes).toBeGreaterThan(50 * 1024);
    // binned: the pauses show as gaps between bars, no more than a bar per column and vCPU
    const bars = marks(html, 'timeline', 'blocked');
    expect(bars).toBeGreaterThan(4 * 100);
    expect(bars).toBeLessThanOrEqual(4 * 1001);
    expect(marks(html, 'faults', 'faults')).toBeLessThanOrEqual(5 * 1000);
  }, 180_000);
});

describe('blocktime-replay --html', () => {
  function capture() {
    const out: string[] = [];
    const err: string[] = [];
    jest.spyOn(process.stdout, 'write').mockImplementation((s) => { out.push(String(s)); return true; });
    jest.spyOn(process.stderr, 'write').mockImplementation((s) => { err.push(String(s)); return true; });
    return { out, err };
  }
  afterEach(() => { jest.restoreAllMocks(); });

  test('writes the file, one trace or two', async () => {
    const a = join(dir, 'a.jsonl');
    writeFileSync(a, `${small.join('\n')}\n`);
    const io = capture();
    expect(await main([a, '--html', join(dir, 'a.html')])).toBe(0);
    expect(await main(['--html', join(dir, 'ab.html'), a, a])).toBe(0);
    jest.restoreAllMocks();
    expect(io.out.join('')).toMatch(/wrote .*a\.html/);
    expect(readFileSync(join(dir, 'ab.html'), 'utf8')).toContain('--traces: 2');
  });

  test('usage errors exit 2, a bad trace 1', async () => {
    const a = join(dir, 'a.jsonl');
    writeFileSync(a, `${small.join('\n')}\n`);
    const io = capture();
    expect(await main([a, '--html'])).toBe(2);
    expect(await main([a, '--html', join(dir, 'x.html'), '--json'])).toBe(2);
    expect(await main(['--html', join(dir, 'x.html'), a, a, a])).toBe(2);
    expect(await main(['--html', join(dir, 'x.html'), join(dir, 'missing.jsonl')])).toBe(1);
    jest.restoreAllMocks();
    const err = io.err.join('');
    expect(err).toContain('--html needs an output file');
    expect(err).toContain('--html and --json are two output modes');
    expect(err).toContain('give one trace file, or two');
    expect(err).toContain('missing.jsonl: no such file');
  });
});
