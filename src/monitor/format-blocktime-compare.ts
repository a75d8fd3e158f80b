// Renders `blocktime-replay --compare` for people: one table with the
// figures of one trace as our exact context, QEMU 10.1 and QEMU 7.2 report
// them, and the kernel's figure where the trace carries it; below it, one
// line per QEMU version naming the field where it is furthest from exact.
// A figure that an algorithm (or the trace) does not have prints as "n/a",
// never as 0.

import { Chalk, type ChalkInstance } from 'chalk';
import Table from 'cli-table3';
import type { BlocktimeComparison } from '../blocktime-trace/compare.js';
import type { QemuBlocktimeFields, VcpuBlocktimeStats } from '../blocktime/types.js';
import type { RichFormatOptions } from './format-blocktime.js';

const NA = 'n/a';

/** The QEMU columns: report key, heading. */
const QEMU_COLUMNS = [['qemu-10.1', 'QEMU 10.1'], ['qemu-7.2', 'QEMU 7.2']] as const;

/** What every column's report has in common: some of QEMU's fields. */
type Fields = Partial<QemuBlocktimeFields>;

interface Row {
  /** what the row holds (the table adds the unit) */
  name: string;
  /** the query-migrate field, as an operator would look it up */
  field: string;
  unit: 'ms' | 'ns';
  value(r: Fields): number | undefined;
  /** the exact column's cell */
  exact: string;
  /** the kernel column's cell */
  kernel: string;
}

/** ns as ms with µs precision: 12.346 */
function preciseMs(ns: number): string {
  return (ns / 1e6).toFixed(3);
}

/** The kernel's blocked time of a vCPU, when the trace carried its samples. */
function kernelBlockedNs(v: VcpuBlocktimeStats): number | undefined {
  const k = 'kernelBlockedNs' in v ? v.kernelBlockedNs : undefined;
  return typeof k === 'number' ? k : undefined;
}

function rows(c: BlocktimeComparison): Row[] {
  const e = c.exact;
  const x = e['x-blocktime'];
  const out: Row[] = [];
  x.vcpus.forEach((v, i) => {
    const k = kernelBlockedNs(v);
    out.push({
      name: `vCPU ${i} blocktime`, field: `postcopy-vcpu-blocktime[${i}]`, unit: 'ms',
      value: (r) => r['postcopy-vcpu-blocktime']?.[i],
      exact: `${e['postcopy-vcpu-blocktime'][i]} (${preciseMs(v.blocktimeNs)})`,
      kernel: k === undefined ? NA
        : v.kernelWindowBlocktimeNs === undefined ? preciseMs(k) : `${preciseMs(k)} (ours ${preciseMs(v.kernelWindowBlocktimeNs)})`,
    });
  });
  out.push({
    name: 'total blocktime', field: 'postcopy-blocktime', unit: 'ms',
    value: (r) => r['postcopy-blocktime'],
    exact: `${e['postcopy-blocktime']} (${preciseMs(x.totalBlocktimeNs)})`, kernel: NA,
  });
  const ns = (name: string, field: string, value: (r: Fields) => number | undefined): Row => ({
    name, field, unit: 'ns', value, exact: String(value(e)), kernel: NA,
  });
  out.push(ns('latency avg', 'postcopy-latency', (r) => r['postcopy-latency']));
  x.vcpus.forEach((_, i) => {
    out.push(ns(`vCPU ${i} latency avg`, `postcopy-vcpu-latency[${i}]`, (r) => r['postcopy-vcpu-latency']?.[i]));
  });
  out.push(ns('non-vCPU latency avg', 'postcopy-non-vcpu-latency', (r) => r['postcopy-non-vcpu-latency']));
  return out;
}

/** The histogram row: exact's fault count; for the others, whether theirs is the same. */
function distCells(c: BlocktimeComparison, paint: ChalkInstance): string[] {
  const want = c.exact['postcopy-latency-dist'];
  const cells = [`${want.reduce((a, b) => a + b, 0)} faults`];
  for (const [key] of QEMU_COLUMNS) {
    const got: Fields = c[key];
    const dist = got['postcopy-latency-dist'];
    if (dist === undefined) { cells.push(NA); continue; }
    const differ = dist.filter((n, b) => n !== want[b]).length;
    cells.push(differ === 0 ? 'same' : paint.yellow(`${differ} buckets differ`));
  }
  cells.push(NA);
  return cells;
}

/** "QEMU 7.2: largest difference from exact: ..." (differences compared in ns, so a ms of blocktime outweighs a µs of latency) */
function largestDifference(name: string, got: Fields, exact: Fields, all: readonly Row[]): string {
  let best: { row: Row; value: number; want: number; ns: number } | undefined;
  for (const row of all) {
    const value = row.value(got);
    const want = row.value(exact);
    if (value === undefined || want === undefined) continue;
    const ns = Math.abs(value - want) * (row.unit === 'ms' ? 1e6 : 1);
    if (ns > (best?.ns ?? 0)) best = { row, value, want, ns };
  }
  if (best === undefined) return `${name}: the same as exact in every field it reports`;
  const { row, value, want } = best;
  const d = value - want;
  return `${name}: largest difference from exact: ${row.name} (${row.field}) `
    + `${value} ${row.unit} against ${want} ${row.unit} (${d > 0 ? '+' : ''}${d} ${row.unit})`;
}

/** The `blocktime-replay --compare` view. */
export function formatBlocktimeCompare(c: BlocktimeComparison, opts: RichFormatOptions): string {
  const paint: ChalkInstance = new Chalk({ level: opts.color ? 1 : 0 });
  const all = rows(c);
  const table = new Table({
    head: ['', 'exact (ours)', ...QEMU_COLUMNS.map(([, heading]) => heading), 'kernel'],
    colAligns: ['left', 'right', 'right', 'right', 'right'],
    style: { head: [], border: [] },
  });
  for (const row of all) {
    const want = row.value(c.exact);
    const qemu = QEMU_COLUMNS.map(([key]) => {
      const v = row.value(c[key]);
      if (v === undefined) return NA;
      return v === want ? String(v) : paint.yellow(String(v));
    });
    table.push([`${row.name} (${row.unit})`, row.exact, ...qemu, row.kernel]);
  }
  table.push(['latency distribution', ...distCells(c, paint)]);

  const state = c.exact['x-blocktime'].state === 'final' ? 'final' : 'live (the trace has no "end" line)';
  return [
    `${paint.bold('Blocktime compared')}: the same events through our exact accounting and QEMU's algorithms (${state})`,
    table.toString(),
    'exact: the query-migrate figure (and, for ms, the ns figure in ms); n/a: not reported by that algorithm, or not in the trace',
    ...QEMU_COLUMNS.map(([key, heading]) => largestDifference(heading, c[key], c.exact, all)),
  ].join('\n');
}
