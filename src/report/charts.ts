// The report's charts as Vega-Lite specs: the data comes binned from the
// recorder (trace-recorder.ts), the axes, scales and legends are Vega-Lite's.
// Every chart takes its scale domains from outside, so two traces drawn side
// by side share their axes (`--html OUT FILE_A FILE_B`).

import type { TopLevelSpec } from 'vega-lite';
import { HDR_BUCKETS, hdrBucketLow } from '../blocktime/latency-histogram.js';
import { LATENCY_BUCKETS, type BlocktimeReport } from '../blocktime/types.js';
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
        name: 'all-blocked', mark: { type: 'rect', color: '#e45756', opacity: 0.3 },
        encoding: { x: timeAxis(d), x2: { field: 'end' }, tooltip: [{ field: 'intervals', title: 'all-blocked windows' }] },
      },
      {
        data: { values: bars },
        name: 'blocked', mark: { type: 'rect', color: '#4c78a8' },
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

/** Faulted addresses against time, one mark per pixel column and vCPU from the lowest to the highest address. */
export function faultScatterSpec(t: DrawnTrace, d: Domains): TopLevelSpec {
  const s = t.summary;
  const pad = Math.max(d.addrMiB[1] / 250, 4096 / MiB);
  const values: object[] = [];
  const add = (who: string, cols: ReturnType<TraceSummary['nonVcpuFaults']['columns']>) => {
    for (const c of cols) {
      const lo = (c.min - s.lowestAddr) / MiB;
      values.push({ who, start: ms(s, c.start), end: ms(s, c.end), lo, hi: (c.max - s.lowestAddr) / MiB + pad, faults: c.count });
    }
  };
  s.faults.forEach((f, i) => add(vcpuName(i), f.columns()));
  add('no vCPU', s.nonVcpuFaults.columns());
  return {
    title: `faulted addresses — ${t.title}`,
    width: WIDTH, height: 260,
    data: { values },
    name: 'faults', mark: { type: 'rect', opacity: 0.8, clip: true },
    encoding: {
      x: timeAxis(d), x2: { field: 'end' },
      y: { field: 'lo', type: 'quantitative', title: 'MiB above the lowest faulted address', scale: { domain: d.addrMiB, nice: false } },
      y2: { field: 'hi' },
      color: { field: 'who', type: 'nominal', title: null },
      tooltip: [{ field: 'who' }, { field: 'faults' }, { field: 'lo', title: 'from MiB', format: '.3f' }],
    },
  } as TopLevelSpec;
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

/** Every chart of one trace, in report order. */
export const CHARTS = [
  ['timeline', timelineSpec],
  ['cumulative', cumulativeSpec],
  ['faults', faultScatterSpec],
  ['latency-buckets', latencyBucketsSpec],
  ['latency-cdf', latencyCdfSpec],
] as const;
