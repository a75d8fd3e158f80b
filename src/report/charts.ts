// The report's charts as Vega-Lite specs: the data comes binned from the
// recorder (trace-recorder.ts), the axes, scales and legends are Vega-Lite's.
// Every chart takes its scale domains from outside, so two traces drawn side
// by side share their axes (`--html OUT FILE_A FILE_B`).

import type { TopLevelSpec } from 'vega-lite';
import { HDR_BUCKETS, hdrBucketLow } from '../blocktime/latency-histogram.js';
import { LATENCY_BUCKETS, type BlocktimeReport } from '../blocktime/types.js';
import { FaultCause } from '../blocktime/trace.js';
import type { TraceSummary } from './trace-recorder.js';

/** One trace, as drawn: its binned events and its exact report. */
export interface DrawnTrace {
  title: string;
  summary: TraceSummary;
  exact: BlocktimeReport;
}

/** Scale domains shared by the traces of one report. */
export interface Domains {
  /** ms since the postcopy phase started */
  timeMs: [number, number];
  /** MiB above the lowest faulted address */
  addrMiB: [number, number];
  /** cumulative blocktime, ms */
  cumulativeMs: [number, number];
  /** latency, µs */
  latencyUs: [number, number];
  /** largest bucket count of the distribution */
  bucketCount: number;
}

const WIDTH = 640;
const MiB = 1024 * 1024;
const TOTAL = 'total (all vCPUs blocked)';

const ms = (t: TraceSummary, ns: number) => (ns - t.startNs) / 1e6;
const vcpuName = (i: number) => `vCPU ${i}`;

/** The domains that fit every trace. */
export function sharedDomains(traces: readonly DrawnTrace[]): Domains {
  let time = 0;
  let addr = 0;
  let cum = 0;
  let latMax = 1;
  let bucket = 0;
  for (const { summary: s, exact } of traces) {
    time = Math.max(time, ms(s, s.endNs));
    if (s.highestAddr >= s.lowestAddr) addr = Math.max(addr, (s.highestAddr - s.lowestAddr) / MiB);
    for (const b of s.blocked) cum = Math.max(cum, b.coveredNs / 1e6);
    latMax = Math.max(latMax, exact['x-blocktime'].latencyMaxNs / 1000);
    bucket = Math.max(bucket, ...exact['postcopy-latency-dist']);
  }
  return {
    timeMs: [0, time || 1], addrMiB: [0, (addr || 1) * 1.01], cumulativeMs: [0, cum || 1],
    latencyUs: [0.5, 2 ** Math.ceil(Math.log2(Math.max(2, latMax * 1.05)))], bucketCount: bucket || 1,
  };
}

const timeAxis = (d: Domains) => ({
  field: 'start', type: 'quantitative' as const, title: 'ms since postcopy started', scale: { domain: d.timeMs, nice: false },
});

/** Each vCPU's blocked intervals on its own row; the all-blocked windows as a band across every row. */
export function timelineSpec(t: DrawnTrace, d: Domains): TopLevelSpec {
  const s = t.summary;
  const rows = s.vcpuThreadIds.map((_, i) => vcpuName(i));
  const bars = s.blocked.flatMap((series, i) => series.bars().map((b) => ({
    vcpu: rows[i], start: ms(s, b.start), end: ms(s, b.end), intervals: b.intervals, share: b.coveredNs / Math.max(1, b.end - b.start),
  })));
  const band = s.allBlocked.bars().map((b) => ({ start: ms(s, b.start), end: ms(s, b.end), intervals: b.intervals }));
  return {
    title: `blocked intervals per vCPU — ${t.title}`,
    width: WIDTH, height: { step: 22 },
    layer: [
      {
        data: { values: band },
        name: 'all-blocked', mark: { type: 'rect', color: '#e45756', opacity: 0.3, aria: false },
        encoding: { x: timeAxis(d), x2: { field: 'end' }, tooltip: [{ field: 'intervals', title: 'all-blocked windows' }] },
      },
      {
        data: { values: bars },
        name: 'blocked', mark: { type: 'rect', color: '#4c78a8', aria: false },
        encoding: {
          x: timeAxis(d), x2: { field: 'end' },
          y: { field: 'vcpu', type: 'nominal', title: null, sort: rows, scale: { domain: rows } },
          opacity: { field: 'share', type: 'quantitative', scale: { domain: [0, 1], range: [0.35, 1] }, legend: null },
          tooltip: [{ field: 'vcpu' }, { field: 'intervals', title: 'intervals' }, { field: 'share', format: '.0%', title: 'blocked' }],
        },
      },
    ],
  } as TopLevelSpec;
}

/** Blocktime so far against time, per vCPU and the total. */
export function cumulativeSpec(t: DrawnTrace, d: Domains): TopLevelSpec {
  const s = t.summary;
  const points: { series: string; t: number; ms: number }[] = [];
  const line = (name: string, bars: ReturnType<TraceSummary['allBlocked']['bars']>) => {
    let cum = 0;
    points.push({ series: name, t: 0, ms: 0 });
    for (const b of bars) {
      points.push({ series: name, t: ms(s, b.start), ms: cum / 1e6 });
      cum += b.coveredNs;
      points.push({ series: name, t: ms(s, b.end), ms: cum / 1e6 });
    }
    points.push({ series: name, t: ms(s, s.endNs), ms: cum / 1e6 });
  };
  s.blocked.forEach((b, i) => line(vcpuName(i), b.bars()));
  line(TOTAL, s.allBlocked.bars());
  return {
    title: `cumulative blocktime — ${t.title}`,
    width: WIDTH, height: 220,
    data: { values: points },
    mark: { type: 'line', interpolate: 'linear' },
    encoding: {
      x: { field: 't', type: 'quantitative', title: 'ms since postcopy started', scale: { domain: d.timeMs, nice: false } },
      y: { field: 'ms', type: 'quantitative', title: 'blocktime (ms)', scale: { domain: d.cumulativeMs } },
      color: { field: 'series', type: 'nominal', title: null, legend: { labelLimit: 260 } },
      strokeDash: { condition: { test: `datum.series === '${TOTAL}'`, value: [4, 2] }, value: [1, 0] },
    },
  } as TopLevelSpec;
}

/** The scatters' colours: vCPUs and threads that are no vCPU (Tableau 10, as Vega's default), the push line. */
const SERIES_COLOURS = ['#4c78a8', '#f58518', '#54a24b', '#b279a2', '#72b7b2', '#ff9da6', '#9d755d', '#eeca3b', '#bab0ac'];
const PUSH = 'background push';
const PUSH_COLOUR = '#222222';
/** how the destination served a fault (trace "kind"), by FaultCause, and its colour */
const CAUSES: readonly (readonly [string, string])[] = [
  ['kind not recorded', '#bab0ac'],
  ['requested', '#e45756'],
  ['read-ahead', '#54a24b'],
  ['in-flight', '#f58518'],
  ['received, no request', '#4c78a8'],
  ['unread (woken by the placement)', '#b279a2'],
];

/** a push line breaks where no sample came for this long, or where the push went back */
const PUSH_GAP_MS = 20;

/** The background push's position as a line: through each column's lowest
 *  sample at its start and highest at its end, one run per stretch without
 *  a gap or a step back (a new pass over RAM). */
function pushLine(s: TraceSummary): { t: number; mib: number; run: number }[] {
  const out: { t: number; mib: number; run: number }[] = [];
  let run = 0;
  let last: { end: number; max: number } | undefined;
  for (const c of s.push.columns()) {
    if (last !== undefined && (ms(s, c.start) - ms(s, last.end) > PUSH_GAP_MS || c.min < last.max)) run++;
    out.push({ t: ms(s, c.start), mib: (c.min - s.lowestAddr) / MiB, run }, { t: ms(s, c.end), mib: (c.max - s.lowestAddr) / MiB, run });
    last = c;
  }
  return out;
}

type Series = readonly [name: string, cols: ReturnType<TraceSummary['nonVcpuFaults']['columns']>];

/** Faulted addresses against time, one rect per pixel column and series from
 *  its lowest to its highest address, with the background push's position
 *  drawn as a line under them when the trace samples it. */
function addressSpec(t: DrawnTrace, d: Domains, title: string, series: readonly Series[], legend: readonly (readonly [string, string])[]): TopLevelSpec {
  const s = t.summary;
  const pad = Math.max(d.addrMiB[1] / 250, 4096 / MiB);
  const mib = (addr: number) => (addr - s.lowestAddr) / MiB;
  const values: object[] = [];
  for (const [who, cols] of series) {
    for (const c of cols) values.push({ who, start: ms(s, c.start), end: ms(s, c.end), lo: mib(c.min), hi: mib(c.max) + pad, faults: c.count });
  }
  const push = pushLine(s);
  const shown = push.length > 0 ? [...legend, [PUSH, PUSH_COLOUR] as const] : legend;
  const color = {
    scale: { domain: shown.map(([name]) => name), range: shown.map(([, colour]) => colour) },
    title: null, legend: { labelLimit: 260, symbolType: 'square' },
  };
  const y = { type: 'quantitative' as const, title: 'MiB above the lowest address drawn', scale: { domain: d.addrMiB, nice: false } };
  return {
    title: `${title} — ${t.title}`,
    width: WIDTH, height: 260,
    layer: [
      ...(push.length > 0 ? [{
        data: { values: push },
        name: 'push', mark: { type: 'line', clip: true, strokeWidth: 1, opacity: 0.7 },
        encoding: {
          x: { field: 't', type: 'quantitative', scale: { domain: d.timeMs, nice: false } }, y: { field: 'mib', ...y },
          detail: { field: 'run', type: 'nominal' },
          color: { datum: PUSH, type: 'nominal', ...color },
        },
      }] : []),
      {
        data: { values },
        name: 'faults', mark: { type: 'rect', opacity: 0.8, clip: true, aria: false },
        encoding: {
          x: timeAxis(d), x2: { field: 'end' }, y: { field: 'lo', ...y }, y2: { field: 'hi' },
          color: { field: 'who', type: 'nominal', ...color },
          tooltip: [{ field: 'who' }, { field: 'faults' }, { field: 'lo', title: 'from MiB', format: '.3f' }],
        },
      },
    ],
  } as TopLevelSpec;
}

/** Faulted addresses against time, coloured by vCPU. */
export function faultScatterSpec(t: DrawnTrace, d: Domains): TopLevelSpec {
  const s = t.summary;
  const series: Series[] = s.faults.map((f, i) => [vcpuName(i), f.columns()] as const);
  series.push(['no vCPU', s.nonVcpuFaults.columns()]);
  return addressSpec(t, d, 'faulted addresses by vCPU', series, series.map(([who], i) => [who, SERIES_COLOURS[i % SERIES_COLOURS.length]] as const));
}

/** Faulted addresses against time, coloured by how the destination served
 *  each fault; null when the trace does not say (older traces, QEMU's). */
export function faultCauseSpec(t: DrawnTrace, d: Domains): TopLevelSpec | null {
  const by = t.summary.faultsByCause;
  const has = (cause: number) => by[cause].some((series) => series !== undefined);
  if (!CAUSES.some((_, cause) => cause !== FaultCause.Unknown && has(cause))) return null;
  // a rect per column, cause and vCPU: one column's faults of two vCPUs far apart are two marks, not one span
  const series = CAUSES.flatMap(([name], cause) => by[cause].flatMap((f) => (f === undefined ? [] : [[name, f.columns()] as const])));
  return addressSpec(t, d, 'faulted addresses by how the fault was served', series,
    CAUSES.filter((_, cause) => cause !== FaultCause.Unknown || has(cause)));
}

/** QEMU's 24 latency buckets on a log axis. */
export function latencyBucketsSpec(t: DrawnTrace, d: Domains): TopLevelSpec {
  const dist = t.exact['postcopy-latency-dist'];
  const values = Array.from({ length: LATENCY_BUCKETS }, (_, n) => ({ lo: 2 ** n, hi: 2 ** (n + 1), faults: dist[n] ?? 0 }))
    .filter((b) => b.faults > 0);
  return {
    title: `latency distribution (QEMU's buckets) — ${t.title}`,
    width: WIDTH, height: 200,
    data: { values },
    name: 'buckets', mark: { type: 'rect', color: '#72b7b2', stroke: 'white' },
    encoding: {
      x: { field: 'lo', type: 'quantitative', title: 'latency (µs, log)', scale: { type: 'log', domain: [1, Math.max(2, d.latencyUs[1])] } },
      x2: { field: 'hi' },
      y: { field: 'faults', type: 'quantitative', title: 'faults', scale: { domain: [0, d.bucketCount] } },
      y2: { datum: 0 },
      tooltip: [{ field: 'lo', title: 'from µs' }, { field: 'faults' }],
    },
  } as TopLevelSpec;
}

/** The share of resolved faults at or below each latency, with p50, p90 and p99 marked. */
export function latencyCdfSpec(t: DrawnTrace, d: Domains): TopLevelSpec {
  const s = t.summary;
  const x = t.exact['x-blocktime'];
  const points: { us: number; share: number }[] = [];
  let seen = 0;
  for (let b = 0; b < HDR_BUCKETS; b++) {
    if (s.latencyHdr[b] === 0) continue;
    seen += s.latencyHdr[b];
    points.push({ us: Math.max(d.latencyUs[0], (b + 1 < HDR_BUCKETS ? hdrBucketLow(b + 1) : hdrBucketLow(b)) / 1000), share: seen / s.resolvedFaults });
  }
  const marks = [['p50', x.latencyP50Ns], ['p90', x.latencyP90Ns], ['p99', x.latencyP99Ns]]
    .filter(([, v]) => (v as number) > 0)
    .map(([name, v]) => ({ name, us: Math.max(d.latencyUs[0], (v as number) / 1000) }));
  const xEnc = { field: 'us', type: 'quantitative' as const, title: 'latency (µs, log)', scale: { type: 'log' as const, domain: d.latencyUs } };
  return {
    title: `latency CDF — ${t.title}`,
    width: WIDTH, height: 200,
    layer: [
      {
        data: { values: points },
        name: 'cdf', mark: { type: 'line', interpolate: 'step-after', color: '#54a24b' },
        encoding: { x: xEnc, y: { field: 'share', type: 'quantitative', title: 'share of resolved faults', axis: { format: '%' }, scale: { domain: [0, 1] } } },
      },
      {
        data: { values: marks },
        name: 'percentiles', mark: { type: 'rule', color: '#b279a2', strokeDash: [3, 3] },
        encoding: { x: xEnc },
      },
      {
        data: { values: marks },
        mark: { type: 'text', align: 'left', dx: 3, dy: -4, color: '#b279a2' },
        encoding: { x: xEnc, y: { datum: 1 }, text: { field: 'name' } },
      },
    ],
  } as TopLevelSpec;
}

/** Every chart of one trace, in report order (a chart whose spec is null has nothing to draw and is left out). */
export const CHARTS: readonly (readonly [string, (t: DrawnTrace, d: Domains) => TopLevelSpec | null])[] = [
  ['timeline', timelineSpec],
  ['cumulative', cumulativeSpec],
  ['faults', faultScatterSpec],
  ['fault-causes', faultCauseSpec],
  ['latency-buckets', latencyBucketsSpec],
  ['latency-cdf', latencyCdfSpec],
];
