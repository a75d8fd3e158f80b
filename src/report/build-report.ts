// `blocktime-replay --html`: replays one or two traces, each once, into our
// context, QEMU's algorithms (compare.ts) and the report's recorder
// (trace-recorder.ts), draws the charts on shared axes (rendered on two
// threads: svg-renderers.ts) and writes the page.
// The traces stream through: what is kept is binned per pixel column.

import { writePrivateFile } from '../private-file.js';
import { basename } from 'node:path';
import { compareLinesWith, compareTraceWith, type ComparisonWith } from '../blocktime-trace/compare.js';
import type { AlgorithmStart } from '../blocktime/algorithm.js';
import type { TopLevelSpec } from 'vega-lite';
import { CHARTS, sharedDomains, type DrawnTrace } from './charts.js';
import { htmlPage, type TraceSection } from './html-page.js';
import { SvgRenderers } from './svg-renderers.js';
import { TraceRecorder, type TraceSummary } from './trace-recorder.js';

const RECORDER = 'x-report';

/** A trace to draw: a file, or lines (tests, benchmarks, a live destination). */
export type ReportInput = { path: string; title?: string } | { lines: AsyncIterable<string> | Iterable<string>; title: string };

async function replay(input: ReportInput): Promise<{ cmp: ComparisonWith; title: string }> {
  const extra = { [RECORDER]: (s: AlgorithmStart) => new TraceRecorder(s) };
  if ('path' in input) return { cmp: await compareTraceWith(input.path, extra), title: input.title ?? basename(input.path) };
  return { cmp: await compareLinesWith(input.lines, input.title, extra), title: input.title };
}

/** The report's HTML for one trace, or several drawn side by side on the same axes. */
export async function buildHtmlReport(inputs: readonly ReportInput[]): Promise<string> {
  const renderers = new SvgRenderers(); // its worker loads Vega while we replay
  try {
    const replayed: Awaited<ReturnType<typeof replay>>[] = [];
    for (const input of inputs) replayed.push(await replay(input));
    const traces: DrawnTrace[] = replayed.map(({ cmp, title }) => ({
      title, exact: cmp.comparison.exact, summary: cmp.results[RECORDER] as TraceSummary,
    }));
    const domains = sharedDomains(traces);
    const drawn: { trace: number; name: string; spec: TopLevelSpec }[] = [];
    traces.forEach((t, trace) => {
      for (const [name, make] of CHARTS) {
        const spec = make(t, domains);
        if (spec !== null) drawn.push({ trace, name, spec });
      }
    });
    const svgs = await renderers.render(drawn.map((d) => d.spec), drawn.map((d) => `t${d.trace}-${d.name}-`));
    const sections: TraceSection[] = traces.map((trace, i) => ({
      trace, comparison: replayed[i].cmp.comparison, lines: replayed[i].cmp.results.lines,
      charts: drawn.flatMap((d, k) => (d.trace === i ? [[d.name, svgs[k]] as const] : [])),
    }));
    return htmlPage(sections);
  } finally {
    renderers.close();
  }
}

/** Writes the report of `inputs` to `out`; its size in bytes. */
export async function writeHtmlReport(inputs: readonly ReportInput[], out: string): Promise<number> {
  const html = await buildHtmlReport(inputs);
  writePrivateFile(out, html);
  return Buffer.byteLength(html);
}
