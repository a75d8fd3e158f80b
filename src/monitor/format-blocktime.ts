// Renders a BlocktimeReport for people: QEMU's `info migrate -a` blocktime
// block, text for text (migration/migration-hmp-cmds.c, QEMU 10.1), the
// richer `info postcopy_blocktime` view (per-vCPU table, summary, latency
// distribution bar chart), and the frames of `info postcopy_blocktime -w`
// (bars redrawn in place on a terminal, one plain line elsewhere), coloured
// only when the caller asks for it.

import { Chalk, type ChalkInstance } from 'chalk';
import Table from 'cli-table3';
import type { BlocktimeReport, QemuBlocktimeFields, QemuReported } from '../blocktime/types.js';
import type { MigrationInfo } from '../migration/api.js';
import { kernelError } from '../blocktime/report.js';

const QEMU_TIME_UNITS = ['us', 'ms', 'sec'] as const;

/** QEMU's bucket label: divide by 1000 while >= 1000 (us -> ms -> sec),
 *  whole numbers: 1 us, 512 us, 1 ms, 65 ms, 8 sec. */
export function qemuTimeLabel(us: number): string {
  let v = us;
  let unit = 0;
  while (v >= 1000 && unit + 1 < QEMU_TIME_UNITS.length) {
    v = Math.floor(v / 1000);
    unit++;
  }
  return `${v} ${QEMU_TIME_UNITS[unit]}`;
}

// " [a, b, ...]" with a line break after every 10 values, as QEMU prints it.
function qemuList(values: readonly number[]): string[] {
  const lines: string[] = [];
  let line = ' [';
  values.forEach((v, i) => {
    line += String(v);
    if (i + 1 < values.length) {
      if ((i + 1) % 10 === 0) { lines.push(`${line},`); line = '  '; } else line += ', ';
    }
  });
  lines.push(`${line}]`);
  return lines;
}

/** QEMU's `info migrate -a` blocktime block, one string per line. A field
 *  the report lacks (a QEMU older than 10.1 has only the two blocktime ones)
 *  prints as "no figure", with `why` when given, never as a zero. */
export function formatBlocktimeQemu(report: Partial<QemuBlocktimeFields>, why = 'not reported'): string[] {
  const none = `no figure (${why})`;
  const one = (v: number | undefined): string => (v === undefined ? none : String(v));
  const list = (v: readonly number[] | undefined): string[] => (v === undefined ? [` ${none}`] : qemuList(v));
  const lines = [
    `Postcopy Blocktime (ms): ${one(report['postcopy-blocktime'])}`,
    'Postcopy vCPU Blocktime (ms):',
    ...list(report['postcopy-vcpu-blocktime']),
    `Postcopy Latency (ns): ${one(report['postcopy-latency'])}`,
    `Postcopy non-vCPU Latencies (ns): ${one(report['postcopy-non-vcpu-latency'])}`,
    'Postcopy vCPU Latencies (ns):',
    ...list(report['postcopy-vcpu-latency']),
    'Postcopy Latency Distribution:',
  ];
  if (report['postcopy-latency-dist'] === undefined) lines.push(`  ${none}`);
  report['postcopy-latency-dist']?.forEach((count, n) => {
    const from = qemuTimeLabel(2 ** n).padStart(8);
    const to = qemuTimeLabel(2 ** (n + 1)).padStart(8);
    lines.push(`  [ ${from} - ${to} ]: ${String(count).padStart(10)}`);
  });
  return lines;
}

function sig(v: number): string {
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
}

/** A duration in ns with a unit chosen for reading: 850 ns, 42.1 µs, 3.20 ms, 1.50 s. */
export function formatDurationNs(ns: number): string {
  if (ns < 1000) return `${Math.round(ns)} ns`;
  if (ns < 1e6) return `${sig(ns / 1e3)} µs`;
  if (ns < 1e9) return `${sig(ns / 1e6)} ms`;
  return `${sig(ns / 1e9)} s`;
}

export interface RichFormatOptions {
  /** ANSI colours (the caller decides from TTY / NO_COLOR) */
  color: boolean;
}

const BAR_WIDTH = 40;

/** The kernel column's summary: the largest relative difference of a vCPU's
 *  blocktime from the kernel's figure for its thread, or why there is none. */
function kernelComparison(vcpus: BlocktimeReport['x-blocktime']['vcpus']): string {
  let worst: { v: number; pct: number } | undefined;
  for (const v of vcpus) {
    const e = kernelError(v);
    // a vCPU that never faulted slept for other reasons (a halted guest vCPU): nothing to compare
    if (e === undefined || v.faults === 0) continue;
    const pct = 100 * e;
    if (worst === undefined || Math.abs(pct) > Math.abs(worst.pct)) worst = { v: v.index, pct };
  }
  if (worst !== undefined) {
    return `Kernel (schedstat: time asleep): largest difference vCPU ${worst.v}, ${worst.pct >= 0 ? '+' : ''}${worst.pct.toFixed(1)} % (ours over the same window)`;
  }
  if (vcpus.some((v) => v.kernelBlockedNs !== undefined)) return 'Kernel (schedstat: time asleep): nothing to compare (the vCPUs it saw asleep never faulted)';
  const why = vcpus.find((v) => v.kernelUnavailable !== undefined)?.kernelUnavailable;
  return `Kernel (schedstat): no figure${why !== undefined ? ` (${why})` : ''}`;
}

/** The `info postcopy_blocktime` view. */
export function formatBlocktimeRich(report: BlocktimeReport, opts: RichFormatOptions): string {
  const c: ChalkInstance = new Chalk({ level: opts.color ? 1 : 0 });
  const x = report['x-blocktime'];
  const out: string[] = [];

  const qemu = report['x-qemu'];
  // a QEMU's own figures without ours: no table of zeros in place of ours
  if (qemu !== undefined && x.unavailable !== undefined) {
    return [`${c.bold('Postcopy blocktime')}: no exact figures: ${x.unavailable}`, ...formatQemuReported(qemu, report, false)].join('\n');
  }
  const state = x.state === 'final' ? c.green('final') : c.yellow('live (postcopy running)');
  out.push(`${c.bold('Postcopy blocktime')}: ${state}`);
  if (x.unavailable !== undefined) out.push(c.red(`Unavailable: ${x.unavailable}`));

  const kernel = x.vcpus.some((v) => v.kernelBlockedNs !== undefined || v.kernelUnavailable !== undefined);
  const paused = x.pauses !== undefined && x.pauses > 0;
  const table = new Table({
    head: ['vCPU', 'thread id', 'faults', 'blocktime', ...(paused ? ['in pauses'] : []), 'share', 'avg latency', 'p99 latency', ...(kernel ? ['kernel'] : [])],
    colAligns: ['right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    style: { head: [], border: [] },
  });
  for (const v of x.vcpus) {
    const share = x.postcopyNs > 0 ? (100 * v.blocktimeNs) / x.postcopyNs : 0;
    table.push([
      v.index, v.threadId, v.faults,
      v.blocktimeNs > 0 ? c.bold(formatDurationNs(v.blocktimeNs)) : formatDurationNs(0),
      ...(paused ? [formatDurationNs(v.pausedBlocktimeNs ?? 0)] : []),
      `${share.toFixed(1)} %`,
      v.faults > 0 ? formatDurationNs(v.latencyAvgNs) : '-',
      v.faults > 0 ? formatDurationNs(v.latencyP99Ns) : '-',
      ...(kernel ? [v.kernelBlockedNs !== undefined ? formatDurationNs(v.kernelBlockedNs) : 'n/a'] : []),
    ]);
  }
  out.push(table.toString());
  if (kernel) out.push(kernelComparison(x.vcpus));

  const totalShare = x.postcopyNs > 0 ? ` (${((100 * x.totalBlocktimeNs) / x.postcopyNs).toFixed(1)} % of postcopy)` : '';
  out.push(`Total blocktime (all vCPUs blocked at once): ${c.bold(formatDurationNs(x.totalBlocktimeNs))}${totalShare}`);
  out.push(`All-blocked windows: ${x.allBlockedWindows}, longest ${formatDurationNs(x.longestAllBlockedNs)}`);
  out.push(`Postcopy phase: ${formatDurationNs(x.postcopyNs)}`);
  if (paused) out.push(`Paused (postcopy-paused, link lost): ${formatDurationNs(x.pausedNs ?? 0)} in ${x.pauses} pause${x.pauses === 1 ? '' : 's'}`);
  out.push(`Faults: ${x.faults} (vCPU ${x.faults - x.nonVcpuFaults}, non-vCPU ${x.nonVcpuFaults})`);
  out.push(`Non-vCPU latency: avg ${x.nonVcpuFaults > 0 ? formatDurationNs(report['postcopy-non-vcpu-latency']) : '-'}`);
  if (x.faults > 0) {
    out.push(`Latency: avg ${formatDurationNs(report['postcopy-latency'])}, p50 ${formatDurationNs(x.latencyP50Ns)}, `
      + `p90 ${formatDurationNs(x.latencyP90Ns)}, p99 ${formatDurationNs(x.latencyP99Ns)}, max ${formatDurationNs(x.latencyMaxNs)}`);
  } else {
    out.push('Latency: no faults');
  }

  const dist = report['postcopy-latency-dist'];
  const first = dist.findIndex((n) => n > 0);
  if (first >= 0) {
    let last = dist.length - 1;
    while (dist[last] === 0) last--;
    const peak = Math.max(...dist);
    out.push('Latency distribution:');
    for (let n = first; n <= last; n++) {
      const label = `${qemuTimeLabel(2 ** n).padStart(7)} - ${qemuTimeLabel(2 ** (n + 1)).padStart(7)}`;
      const len = dist[n] > 0 ? Math.max(1, Math.round((dist[n] / peak) * BAR_WIDTH)) : 0;
      out.push(`  ${label} │${c.cyan('█'.repeat(len))}${' '.repeat(BAR_WIDTH - len)} ${dist[n]}`);
    }
  }
  if (qemu !== undefined) out.push(...formatQemuReported(qemu, report, true));
  return out.join('\n');
}

const ms3 = (ns: number): string => (ns / 1e6).toFixed(3);

/** A real QEMU's own figures (attach), beside ours when `ours` (ms with µs). */
function formatQemuReported(q: QemuReported, report: BlocktimeReport, ours: boolean): string[] {
  const x = report['x-blocktime'];
  const out = [`QEMU ${q.version} (the destination) reports:`];
  const f = q.fields;
  if (f === undefined) {
    out.push(`  no figures yet: ${q.why ?? 'QEMU fills them in once the destination is completed'}`);
  } else {
    const exact = (s: string): string => (ours ? ` (exact ${s})` : '');
    const total = f['postcopy-blocktime'];
    const vcpu = f['postcopy-vcpu-blocktime'];
    out.push(`  Postcopy Blocktime (ms): ${total ?? 'no figure'}${exact(ms3(x.totalBlocktimeNs))}`);
    out.push(`  Postcopy vCPU Blocktime (ms): ${vcpu ? `[${vcpu.join(', ')}]` : 'no figure'}${exact(`[${x.vcpus.map((v) => ms3(v.blocktimeNs)).join(', ')}]`)}`);
    const latency = f['postcopy-latency'];
    out.push(`  Postcopy Latency (ns): ${latency ?? `no figure (QEMU ${q.version} reports none; 10.1+ does)`}${latency !== undefined ? exact(String(report['postcopy-latency'])) : ''}`);
  }
  if (q.replayed72 !== undefined) {
    const r = q.replayed72;
    out.push(`  QEMU 7.2's algorithm on the same events: total ${r['postcopy-blocktime']} ms, vCPU [${r['postcopy-vcpu-blocktime'].join(', ')}] ms (docs/blocktime-compare.md: why it differs)`);
  }
  if (q.kernel !== undefined) out.push(`  Kernel column: ${q.kernel}`);
  return out;
}

// ---------------------------------------------------------------- -w frames

/** What one frame of `info postcopy_blocktime -w` shows. */
export interface WatchFigures {
  info: MigrationInfo;
  /** pages counted as received (destination) or sent (source) */
  role: 'source' | 'destination';
  /** since the watch began */
  elapsedMs: number;
  /** the blocktime so far; undefined: none measured here */
  report: BlocktimeReport | undefined;
  /** why there is no report (shown instead of the vCPU bars) */
  noReport: string;
}

/** pages done and in all, from query-migrate's RAM figures */
function pageCounts(f: WatchFigures): { done: number; total: number } | undefined {
  const ram = f.info.ram;
  if (ram === undefined || ram.total <= 0 || ram['page-size'] <= 0) return undefined;
  return { done: Math.round((ram.total - ram.remaining) / ram['page-size']), total: Math.round(ram.total / ram['page-size']) };
}

function bar(share: number, width: number): string {
  const full = Math.round(Math.min(1, Math.max(0, share)) * width);
  return `${'█'.repeat(full)}${'░'.repeat(width - full)}`;
}

const pct = (share: number) => `${(100 * share).toFixed(1).padStart(5)} %`;

/** A terminal frame: status, a bar of the pages received, a bar per vCPU of
 *  its share of the postcopy phase spent blocked, the totals (fits `rows`). */
export function formatWatchFrame(f: WatchFigures, o: { color: boolean; columns: number; rows: number }): string[] {
  const c: ChalkInstance = new Chalk({ level: o.color ? 1 : 0 });
  const width = Math.max(10, Math.min(50, o.columns - 40));
  const label = (s: string) => s.padEnd(16);
  const out = [`${c.bold(`postcopy blocktime -w: ${f.info.status}`)}  ${(f.elapsedMs / 1000).toFixed(1)} s  ${c.dim('(a key stops)')}`];
  const pages = pageCounts(f);
  const what = f.role === 'destination' ? 'pages received' : 'pages sent';
  out.push(pages === undefined ? `${label(what)} (no migration yet)`
    : `${label(what)} ${c.green(bar(pages.done / pages.total, width))} ${pct(pages.done / pages.total)}  ${pages.done}/${pages.total}`);
  const r = f.report;
  if (r === undefined) {
    out.push(f.noReport);
    return out;
  }
  const x = r['x-blocktime'];
  const room = Math.max(1, o.rows - out.length - 2);
  const shown = x.vcpus.length > room ? room - 1 : x.vcpus.length;
  for (const v of x.vcpus.slice(0, shown)) {
    const share = x.postcopyNs > 0 ? v.blocktimeNs / x.postcopyNs : 0;
    out.push(`${label(`vCPU ${v.index}`)} ${c.yellow(bar(share, width))} ${pct(share)}  ${formatDurationNs(v.blocktimeNs)} blocked, ${v.faults} faults`);
  }
  if (shown < x.vcpus.length) out.push(c.dim(`... ${x.vcpus.length - shown} more vCPUs (info postcopy_blocktime lists them all)`));
  const total = x.postcopyNs > 0 ? ` (${pct(x.totalBlocktimeNs / x.postcopyNs).trim()} of ${formatDurationNs(x.postcopyNs)} postcopy)` : '';
  out.push(`${label('total blocktime')} ${c.bold(formatDurationNs(x.totalBlocktimeNs))}${total}, all vCPUs blocked at once`);
  const latency = x.faults > 0 ? `latency avg ${formatDurationNs(r['postcopy-latency'])}, p99 ${formatDurationNs(x.latencyP99Ns)}` : 'no faults yet';
  out.push(`${label('faults')} ${x.faults}, ${latency}${f.info.ram?.['postcopy-requests'] ? `, ${f.info.ram['postcopy-requests']} page requests` : ''}`);
  return out;
}

/** The same as one plain line (no colour, no escape codes), for a pipe or a script. */
export function formatWatchLine(f: WatchFigures): string {
  const parts = [`${(f.elapsedMs / 1000).toFixed(1)} s`, f.info.status];
  const pages = pageCounts(f);
  if (pages !== undefined) parts.push(`${f.role === 'destination' ? 'received' : 'sent'} ${pages.done}/${pages.total} pages (${pct(pages.done / pages.total).trim()})`);
  const r = f.report;
  if (r === undefined) {
    parts.push(f.noReport);
  } else {
    const x = r['x-blocktime'];
    const ms = (ns: number) => (ns / 1e6).toFixed(1);
    parts.push(`blocktime ${ms(x.totalBlocktimeNs)} ms`, `vCPU blocktime [${x.vcpus.map((v) => ms(v.blocktimeNs)).join(', ')}] ms`,
      `${x.faults} faults`);
  }
  return parts.join(' | ');
}
