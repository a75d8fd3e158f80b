// Replays a recorded blocktime trace (format in trace.ts) through a fresh
// context whose clock is the events' own times, and returns its report.
// Every line is checked; the first bad one stops the replay with an error
// that names the file and line, so no partial report is ever returned.

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { CommandError } from '../errors.js';
import { TERMINAL_STATUSES, type MigrationStatus } from '../migration/api.js';
import { BlocktimeContext } from '../blocktime/context.js';
import { TRACE_EVENTS, type TraceEventName } from '../blocktime/trace.js';
import type { BlocktimeReport } from '../blocktime/types.js';

/** A trace that cannot be replayed; the message starts with FILE[:LINE]:. */
export class TraceError extends CommandError {}

const MAX_TID = 0xffffffff;

type Fields = Record<string, unknown>;

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export async function replayTrace(path: string): Promise<BlocktimeReport> {
  try {
    const st = await stat(path);
    if (st.isDirectory()) throw new TraceError(`${path}: is a directory, not a trace file`);
  } catch (e) {
    if (e instanceof TraceError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new TraceError(code === 'ENOENT' ? `${path}: no such file` : `${path}: cannot read: ${(e as Error).message}`);
  }

  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let lineNo = 0;
  const fail = (msg: string): never => { throw new TraceError(`${path}:${lineNo}: ${msg}`); };

  let header: { vcpus: number[]; t0: number | undefined } | undefined;
  let ctx: BlocktimeContext | undefined;
  let now = 0;
  let lastT = -1;
  let ended = false;
  const start = (t0: number): BlocktimeContext => {
    now = t0;
    return new BlocktimeContext({
      vcpuThreadIds: (header as { vcpus: number[] }).vcpus,
      clock: () => now,
      migrationEvents: null,
      exitEvents: null,
    });
  };

  try {
    for await (const raw of lines) {
      lineNo++;
      if (raw.trim() === '') continue;
      let obj: unknown;
      try {
        obj = JSON.parse(raw);
      } catch (e) {
        fail(`not valid JSON (${(e as Error).message})`);
      }
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) fail('expected a JSON object');
      const o = obj as Fields;

      if (header === undefined) {
        header = parseHeader(o, fail);
        if (header.t0 !== undefined) { ctx = start(header.t0); lastT = header.t0; }
        continue;
      }
      if (ended) fail('event after the "end" line');

      const ev = o.ev;
      if (typeof ev !== 'string' || !(TRACE_EVENTS as readonly string[]).includes(ev)) {
        const what = ev === undefined ? '"ev" is missing' : `unknown "ev" ${JSON.stringify(ev)}`;
        fail(`${what} (expected "fault", "placed" or "end")`);
      }
      const t = o.t;
      if (!isUint(t)) fail('"t" must be a non-negative integer');
      const tn = t as number;
      if (tn < lastT) fail(`"t" goes backwards (${tn} after ${lastT})`);
      lastT = tn;
      if (ctx === undefined) ctx = start(tn);
      now = tn;

      switch (ev as TraceEventName) {
        case 'fault': {
          if (!isUint(o.addr)) fail('"addr" must be a non-negative integer');
          if (!isUint(o.tid) || (o.tid as number) > MAX_TID) fail('"tid" must be a non-negative 32-bit integer');
          ctx.begin(o.addr as number, o.tid as number);
          break;
        }
        case 'placed': {
          if (!isUint(o.addr)) fail('"addr" must be a non-negative integer');
          ctx.end(o.addr as number);
          break;
        }
        case 'end': {
          const status = o.status === undefined ? 'completed' : o.status;
          if (typeof status !== 'string' || !TERMINAL_STATUSES.has(status as MigrationStatus)) {
            fail(`"status" must be "completed", "failed" or "cancelled", got ${JSON.stringify(status)}`);
          }
          ctx.finish(status as MigrationStatus);
          ended = true;
          break;
        }
      }
    }
  } catch (e) {
    lines.close();
    if (e instanceof TraceError) throw e;
    throw new TraceError(`${path}${lineNo > 0 ? `:${lineNo}` : ''}: ${(e as Error).message}`);
  }

  if (header === undefined) throw new TraceError(`${path}: empty trace (the first line must be the header {"vcpus": [...]})`);
  if (ctx === undefined) ctx = start(0);
  const report = ctx.report();
  ctx.destroy();
  return report;
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
