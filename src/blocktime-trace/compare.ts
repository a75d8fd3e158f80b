// `blocktime-replay --compare`: one replay of a trace, through the postcopy
// rules, into our exact context and into QEMU's two algorithms (10.1 and
// 7.2), so their figures can be put side by side. Each report is in the
// query-migrate shape that version of QEMU gives.

import type { AlgorithmStart } from '../blocktime/algorithm.js';
import { Qemu101Blocktime } from '../blocktime/qemu-v10-1.js';
import { Qemu72Blocktime, type Qemu72Report } from '../blocktime/qemu-v7-2.js';
import type { BlocktimeReport, QemuBlocktimeFields } from '../blocktime/types.js';
import { replayLines, replayTraceWith, type AlgorithmFactory, type ReplayResult } from './replay.js';

/** The same trace as our context and each QEMU reports it (keys in print order). */
export interface BlocktimeComparison {
  exact: BlocktimeReport;
  'qemu-10.1': QemuBlocktimeFields;
  'qemu-7.2': Qemu72Report;
}

/** Replays the trace file at `path` into all three. */
export async function compareTrace(path: string): Promise<BlocktimeComparison> {
  return (await compareTraceWith(path, {})).comparison;
}

/** Replays trace lines (`name` prefixes errors, see replayLines) into all three. */
export async function compareLines(lines: AsyncIterable<string> | Iterable<string>, name: string): Promise<BlocktimeComparison> {
  return (await compareLinesWith(lines, name, {})).comparison;
}

/** The comparison, and the reports of more consumers of the same replay (the HTML report's). */
export interface ComparisonWith {
  comparison: BlocktimeComparison;
  results: ReplayResult;
}

/** compareTrace, with `extra` algorithms fed by the same replay. */
export async function compareTraceWith(path: string, extra: Record<string, AlgorithmFactory>): Promise<ComparisonWith> {
  const q = qemuAlgorithms();
  const results = await replayTraceWith(path, { ...q.factories, ...extra });
  return { comparison: q.reports(results.exact), results };
}

/** compareLines, with `extra` algorithms fed by the same replay. */
export async function compareLinesWith(
  lines: AsyncIterable<string> | Iterable<string>, name: string, extra: Record<string, AlgorithmFactory>,
): Promise<ComparisonWith> {
  const q = qemuAlgorithms();
  const results = await replayLines(lines, name, { ...q.factories, ...extra });
  return { comparison: q.reports(results.exact), results };
}

// The factories for one replay, keeping what they build so that the
// reports come back with their own types.
function qemuAlgorithms() {
  let v10: Qemu101Blocktime | undefined;
  let v7: Qemu72Blocktime | undefined;
  const factories: Record<keyof Omit<BlocktimeComparison, 'exact'>, AlgorithmFactory> = {
    'qemu-10.1': (s: AlgorithmStart) => (v10 = new Qemu101Blocktime(s)),
    'qemu-7.2': (s: AlgorithmStart) => (v7 = new Qemu72Blocktime(s)),
  };
  const reports = (exact: BlocktimeReport): BlocktimeComparison => {
    if (v10 === undefined || v7 === undefined) throw new Error('internal error: the replay built no QEMU algorithm');
    return { exact, 'qemu-10.1': v10.report(), 'qemu-7.2': v7.report() };
  };
  return { factories, reports };
}
