// The report as one self-contained HTML page: the charts as pre-rendered SVG
// and the console's comparison table as text, with no script, no font and no
// stylesheet from anywhere else, so it opens without a network. Two traces
// go side by side, one column each, chart for chart.

import type { BlocktimeComparison } from '../blocktime-trace/compare.js';
import { formatBlocktimeCompare } from '../monitor/format-blocktime-compare.js';
import type { DrawnTrace } from './charts.js';

/** One trace's part of the page: its charts (name, SVG) and its figures. */
export interface TraceSection {
  trace: DrawnTrace;
  comparison: BlocktimeComparison;
  /** the trace lines drawn (a live trace grows on) */
  lines: number;
  charts: (readonly [name: string, svg: string])[];
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

const STYLE = `
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
.traces { display: grid; grid-template-columns: repeat(var(--traces), max-content); gap: 2em; }
figure { margin: 0 0 1.2em; }
pre { font-size: 12px; background: #f6f6f6; padding: .8em; overflow-x: auto; }
.note { color: #555; font-size: .9em; max-width: 60em; }
`;

export function htmlPage(sections: readonly TraceSection[]): string {
  const col = (s: TraceSection, i: number) => {
    const x = s.trace.exact['x-blocktime'];
    const head = `<h2 data-trace="${i}">${escapeHtml(s.trace.title)}</h2>`
      + `<p class="note">${x.state === 'final' ? 'final' : 'live (the trace has no end line)'}; `
      + `${s.trace.summary.vcpuThreadIds.length} vCPUs; ${x.faults} faults; ${s.lines} trace lines; one column = `
      + `${(s.trace.summary.grid.width / 1e6).toPrecision(3)} ms (intervals closer than that are drawn as one bar)</p>`;
    const charts = s.charts.map(([name, svg]) => `<figure data-chart="${name}" data-trace="${i}">${svg}</figure>`).join('\n');
    const table = `<figure data-chart="summary" data-trace="${i}"><pre>${escapeHtml(formatBlocktimeCompare(s.comparison, { color: false }))}</pre></figure>`;
    return `<section class="trace" data-vcpus="${s.trace.summary.vcpuThreadIds.length}" data-trace-lines="${s.lines}">${head}\n${table}\n${charts}</section>`;
  };
  const title = sections.map((s) => s.trace.title).join(' vs ');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>postcopy blocktime: ${escapeHtml(title)}</title>
<style>${STYLE}</style></head>
<body><h1>postcopy blocktime: ${escapeHtml(title)}</h1>
<div class="traces" style="--traces: ${sections.length}">
${sections.map(col).join('\n')}
</div></body></html>
`;
}
