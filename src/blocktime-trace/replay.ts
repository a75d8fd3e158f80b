// Replays a recorded blocktime trace (format in trace.ts) through the
// postcopy rules (rules.ts, the same code the live destination runs) into a
// fresh context whose clock is the events' own times, and optionally into
// more algorithms (QEMU's), and returns their reports. Every line is checked;
// the first bad one stops the replay with an error that names the file and
// line, so no partial report is ever returned.

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { CommandError } from '../errors.js';
import { TERMINAL_STATUSES, type MigrationStatus } from '../migration/api.js';
import { BlocktimeContext } from '../blocktime/context.js';
import type { AlgorithmStart, BlocktimeAlgorithm } from '../blocktime/algorithm.js';
import { PageStateMap, PostcopyRules } from '../blocktime/rules.js';
import { FAULT_KINDS, FaultCause, TRACE_EVENTS, type TraceEventName } from '../blocktime/trace.js';
import type { BlocktimeReport } from '../blocktime/types.js';
import { ADDR, CAUSE, EVENT_FIELDS, FAULT_LINE, MAX_TID, NOT_CANONICAL, PLACED_LINE, readEventLine, T, TID } from './event-line.js';

/** A trace that cannot be replayed; the message starts with FILE[:LINE]:. */
export class TraceError extends CommandError {}


type Fields = Record<string, unknown>;

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Builds one more consumer of a replayed trace (QEMU's algorithms). */
export type AlgorithmFactory = (start: AlgorithmStart) => BlocktimeAlgorithm<unknown>;

/** The exact report, and one report per extra algorithm, by its name. */
export interface ReplayResult {
  exact: BlocktimeReport;
  /** the lines replayed (of a file still being written: those it had when the replay began) */
  lines: number;
  [algorithm: string]: unknown;
}

/** Replays the trace file at `path`; the exact report. */
export async function replayTrace(path: string): Promise<BlocktimeReport> {
  return (await replayTraceWith(path, {})).exact;
}

/** Replays the trace file at `path` through our context and `algorithms`:
 *  the bytes it holds when called (a live destination goes on appending
 *  whole lines to it; what comes meanwhile is left for the next replay). */
export async function replayTraceWith(path: string, algorithms: Record<string, AlgorithmFactory>): Promise<ReplayResult> {
  let size: number;
  try {
    const st = await stat(path);
    if (st.isDirectory()) throw new TraceError(`${path}: is a directory, not a trace file`);
    size = st.size;
  } catch (e) {
    if (e instanceof TraceError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new TraceError(code === 'ENOENT' ? `${path}: no such file` : `${path}: cannot read: ${(e as Error).message}`);
  }
  if (size === 0) return replayLines([], path, algorithms);
  // Chunks of bytes split into lines here, each replayed synchronously (not
  // readline's per-line events and promises), the event lines in place
  // (event-line.ts), only the others decoded.
  const r = new LineReplay(path, algorithms);
  const input = createReadStream(path, { end: size - 1, highWaterMark: 1 << 20 });
  let rest: Buffer | undefined;
  try {
    for await (const chunk of input) {
      const buf = rest === undefined ? (chunk as Buffer) : Buffer.concat([rest, chunk as Buffer]);
      let from = 0;
      for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10, from)) {
        r.lineBytes(buf, from, nl);
        from = nl + 1;
      }
      rest = from < buf.length ? buf.subarray(from) : undefined;
    }
    if (rest !== undefined) r.lineBytes(rest, 0, rest.length);
  } catch (e) {
    throw r.error(e);
  } finally {
    input.destroy();
  }
  return r.result();
}

/**
 * Replays trace lines (one JSON object each; `name` prefixes errors, as a
 * file name does) through the postcopy rules into our context and into each
 * of `algorithms`. The first bad line stops the replay with a TraceError
 * naming NAME:LINE, so no partial report is ever returned.
 */
export async function replayLines(
  lines: AsyncIterable<string> | Iterable<string>, name: string, algorithms: Record<string, AlgorithmFactory> = {},
): Promise<ReplayResult> {
  const r = new LineReplay(name, algorithms);
  try {
    for await (const raw of lines) r.line(raw);
  } catch (e) {
    throw r.error(e);
  }
  return r.result();
}

/** One replay, a line at a time (synchronous: the callers feed it). */
class LineReplay {
  private lineNo = 0;
  private header: { vcpus: number[]; t0: number | undefined } | undefined;
  private run: Replaying | undefined;
  private now = 0;
  private lastT = -1;
  private ended = false;
  /** the fields of an event line read without JSON.parse (event-line.ts) */
  private readonly ev = new Float64Array(EVENT_FIELDS);
  private readonly fail = (msg: string): never => { throw new TraceError(`${this.name}:${this.lineNo}: ${msg}`); };

  constructor(private readonly name: string, private readonly algorithms: Record<string, AlgorithmFactory>) {}

  private start(t0: number): Replaying {
    this.now = t0;
    const vcpuThreadIds = (this.header as { vcpus: number[] }).vcpus;
    const exact = new BlocktimeContext({ vcpuThreadIds, clock: () => this.now, migrationEvents: null, exitEvents: null });
    const others = Object.entries(this.algorithms).map(([k, make]) => [k, make({ vcpuThreadIds, startNs: t0 })] as const);
    return { exact, others, rules: new PostcopyRules(new PageStateMap(), [exact, ...others.map(([, a]) => a)]) };
  }

  /** What a file holds between two '\n': one line, or several split by a lone
   *  '\r' (as readline splits them); a '\r' before the '\n' ends the line. */
  lineOrLines(text: string): void {
    if (text.indexOf('\r') < 0) { this.line(text); return; }
    const parts = text.split('\r');
    if (text.endsWith('\r')) parts.pop();
    for (const p of parts) this.line(p);
  }

  /** The error to throw for `e`, thrown while replaying: a TraceError naming the file and line. */
  error(e: unknown): TraceError {
    if (e instanceof TraceError) return e;
    return new TraceError(`${this.name}${this.lineNo > 0 ? `:${this.lineNo}` : ''}: ${(e as Error).message}`);
  }

  /** A line of a file, b[from, to) without its '\n': an event line in the
   *  trace file's own form is read in place, any other decoded (UTF-8) and
   *  read as JSON (lineOrLines). */
  lineBytes(b: Buffer, from: number, to: number): void {
    const ev = this.header !== undefined && !this.ended ? readEventLine(b, from, to, this.ev) : NOT_CANONICAL;
    if (ev === NOT_CANONICAL) { this.lineOrLines(b.toString('utf8', from, to)); return; }
    this.lineNo++;
    const e = this.ev;
    const run = this.at(e[T]);
    if (ev === FAULT_LINE) run.rules.fault(e[T], e[ADDR], e[TID], e[CAUSE] as FaultCause);
    else if (ev === PLACED_LINE) run.rules.placed(e[T], e[ADDR]);
    else run.rules.pushed(e[T], e[ADDR]);
  }

  line(raw: string): void {
    const fail = this.fail;
    this.lineNo++;
    if (raw.trim() === '') return;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch (e) {
      fail(`not valid JSON (${(e as Error).message})`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) fail('expected a JSON object');
    const o = obj as Fields;

    if (this.header === undefined) {
      this.header = parseHeader(o, fail);
      if (this.header.t0 !== undefined) { this.run = this.start(this.header.t0); this.lastT = this.header.t0; }
      return;
    }
    if (this.ended) fail('event after the "end" line');

    const ev = o.ev;
    if (typeof ev !== 'string' || !(TRACE_EVENTS as readonly string[]).includes(ev)) {
      const what = ev === undefined ? '"ev" is missing' : `unknown "ev" ${JSON.stringify(ev)}`;
      fail(`${what} (expected ${orList(TRACE_EVENTS.map((e) => `"${e}"`))})`);
    }
    const t = o.t;
    if (!isUint(t)) fail('"t" must be a non-negative integer');
    const tn = t as number;
    const run = this.at(tn);

    switch (ev as TraceEventName) {
      case 'fault': {
        if (!isUint(o.addr)) fail('"addr" must be a non-negative integer');
        if (!isUint(o.tid) || (o.tid as number) > MAX_TID) fail('"tid" must be a non-negative 32-bit integer');
        run.rules.fault(tn, o.addr as number, o.tid as number, faultCause(o.kind, fail));
        break;
      }
      case 'push': {
        if (!isUint(o.addr)) fail('"addr" must be a non-negative integer');
        run.rules.pushed(tn, o.addr as number);
        break;
      }
      case 'placed': {
        if (!isUint(o.addr)) fail('"addr" must be a non-negative integer');
        run.rules.placed(tn, o.addr as number);
        break;
      }
      case 'schedstat': {
        const v = (this.header as { vcpus: number[] }).vcpus.indexOf(o.tid as number);
        if (v < 0) fail(`"tid" ${JSON.stringify(o.tid)} is no vCPU of the header (schedstat samples are of vCPU threads)`);
        if (typeof o.unavailable === 'string') {
          run.exact.kernelSample(v, tn, o.unavailable);
        } else {
          if (!isUint(o.run) || !isUint(o.wait)) fail('"run" and "wait" must be non-negative integers (ns), or "unavailable" a reason');
          run.exact.kernelSample(v, tn, { runNs: o.run as number, waitNs: o.wait as number });
        }
        break;
      }
      case 'end': {
        const status = o.status === undefined ? 'completed' : o.status;
        if (typeof status !== 'string' || !TERMINAL_STATUSES.has(status as MigrationStatus)) {
          fail(`"status" must be "completed", "failed" or "cancelled", got ${JSON.stringify(status)}`);
        }
        run.rules.finish(status as MigrationStatus, tn);
        this.ended = true;
        break;
      }
    }
  }

  /** An event at `tn`: it must not go back in time; the first one starts the replay when the header had no t0. */
  private at(tn: number): Replaying {
    if (tn < this.lastT) this.fail(`"t" goes backwards (${tn} after ${this.lastT})`);
    this.lastT = tn;
    this.now = tn;
    return (this.run ??= this.start(tn));
  }

  /** The reports, once every line is in. */
  result(): ReplayResult {
    if (this.header === undefined) throw new TraceError(`${this.name}: empty trace (the first line must be the header {"vcpus": [...]})`);
    const run = this.run ?? this.start(0);
    const result: ReplayResult = { exact: run.exact.report(), lines: this.lineNo };
    for (const [k, a] of run.others) result[k] = a.report();
    run.exact.destroy();
    return result;
  }
}

interface Replaying {
  exact: BlocktimeContext;
  others: (readonly [string, BlocktimeAlgorithm<unknown>])[];
  rules: PostcopyRules;
}

function parseHeader(o: Fields, fail: (msg: string) => never): { vcpus: number[]; t0: number | undefined } {
  if (!('vcpus' in o)) {
    fail('the first line must be the header {"vcpus": [thread ids...]}' + ('ev' in o ? ', not an event' : ''));
  }
  const vcpus = o.vcpus;
  if (!Array.isArray(vcpus) || vcpus.length === 0) fail('"vcpus" must be a non-empty array of thread ids');
  const list = vcpus as unknown[];
  const seen = new Set<number>();
  list.forEach((tid, i) => {
    if (!isUint(tid) || tid > MAX_TID) fail(`"vcpus"[${i}] must be a non-negative 32-bit integer thread id`);
    if (seen.has(tid as number)) fail(`"vcpus"[${i}]: thread id ${tid as number} appears twice`);
    seen.add(tid as number);
  });
  if (o.t0 !== undefined && !isUint(o.t0)) fail('"t0" must be a non-negative integer');
  return { vcpus: list as number[], t0: o.t0 as number | undefined };
}

const KINDS = FAULT_KINDS.filter((k) => k !== '');

/** A fault line's optional "kind" (how the destination served it). */
function faultCause(kind: unknown, fail: (msg: string) => never): FaultCause {
  if (kind === undefined) return FaultCause.Unknown;
  const i = typeof kind === 'string' && kind !== '' ? (FAULT_KINDS as readonly string[]).indexOf(kind) : -1;
  if (i < 0) fail(`"kind" must be ${orList(KINDS.map((k) => `"${k}"`))}, got ${JSON.stringify(kind)}`);
  return i as FaultCause;
}

/** "a", "b" or "c" */
function orList(items: readonly string[]): string {
  return items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}
