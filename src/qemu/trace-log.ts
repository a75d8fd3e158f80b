// Reads a QEMU destination's trace log (the `log` trace backend, started with
// `-trace ... -msg timestamp=on -D FILE`, REFERENCE.md §7) into the events of
// our blocktime trace (src/blocktime/trace.ts): a fault is the fault thread's
// `postcopy_ram_fault_thread_request` (its TID@SECONDS.MICROS time, `pid=`
// the faulting thread, HVA the page), a placement `postcopy_place_page` or
// `postcopy_place_page_zero` (`host=`). Both QEMU 7.2's event set and 10.1+'s
// are read. vCPU thread ids come from the caller (--vcpus) or from 10.1+'s
// `postcopy_blocktime_tid_cpu_map` lines; QEMU's own blocktime lines (7.2's
// mark_postcopy_blocktime_begin, 10.1's postcopy_blocktime_begin) name the
// vCPU of each fault and are used to check them.
//
// Log lines are written by several threads, so their times are sorted here
// (stably: equal times keep the log's order). QEMU logs a placement after
// the ioctl that woke the thread, so a thread's next fault can come first
// in the log: such a placement is dated just before that fault
// (placeBeforeNextFault). Times are wall-clock µs, made
// ns relative to the first timestamped line's second so they stay exact.
// Lines that are no trace event (QEMU's error messages) are skipped; a
// known event without a time, with a body that is not its format, or a last
// line cut short, is refused with its line number and the QEMU options that
// fix it.

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { CommandError } from '../errors.js';

/** A log that cannot be imported; the message starts with FILE[:LINE]:. */
export class QemuLogError extends CommandError {}

/** The options a destination's log needs for an import (docs/qemu.md). */
export const TRACE_OPTIONS =
  "-msg timestamp=on -D LOG -trace postcopy_ram_fault_thread_request -trace 'postcopy_place_page*' -trace 'mark_postcopy_blocktime*' (QEMU 10.1+: -trace 'postcopy_blocktime*')";

export interface ImportedEvent {
  t: number;
  ev: 'fault' | 'placed';
  addr: number;
  /** the faulting thread (faults only) */
  tid?: number;
}

export interface ImportedTrace {
  /** vCPU thread ids, position = vCPU index */
  vcpus: number[];
  /** when QEMU's blocktime context started (ns, the events' clock) */
  t0: number;
  events: ImportedEvent[];
  /** the destination's incoming cleanup, if logged: the migration's end */
  end?: { t: number; status: 'completed' | 'failed' };
  /** which event set QEMU's own blocktime lines were in, if any */
  eventSet: '7.2' | '10.1' | 'none';
}

const PREFIX = /^(\d+)@(\d+)\.(\d{6}):([A-Za-z0-9_]+)(?: (.*))?$/;
const BARE = /^([a-z0-9_]+)(?: (.*))?$/;
const HEX = '0x([0-9a-fA-F]+)';
const REQUEST = new RegExp(`^Request for HVA=${HEX} rb=\\S* offset=0x[0-9a-fA-F]+ pid=(\\d+)$`);
const PLACE = /^host=(?:0x([0-9a-fA-F]+)|\(nil\))$/;
const TID_CPU_MAP = /^cpu: (-?\d+), tid: (\d+)$/;
const BEGIN_72 = new RegExp(`^addr: ${HEX}, dd: \\S+, time: \\d+, cpu: (-?\\d+), already_received: \\d+$`);
const BEGIN_101 = new RegExp(`^addr: ${HEX}, time: \\d+, cpu: (-?\\d+), exist: \\d+$`);

/** each event this import reads, with the format of its body (for errors) */
const FORMATS: Record<string, string> = {
  postcopy_ram_fault_thread_request: "'Request for HVA=0x%x rb=%s offset=0x%x pid=%u'",
  postcopy_place_page: "'host=%p'",
  postcopy_place_page_zero: "'host=%p'",
  postcopy_blocktime_tid_cpu_map: "'cpu: %d, tid: %u'",
  mark_postcopy_blocktime_begin: "'addr: 0x%x, dd: %p, time: %u, cpu: %d, already_received: %d'",
  postcopy_blocktime_begin: "'addr: 0x%x, time: %u, cpu: %d, exist: %d'",
};
/** events that mark the start of QEMU's blocktime context */
const START_EVENTS = new Set(['postcopy_blocktime_tid_cpu_map', 'postcopy_ram_enable_notify', 'postcopy_ram_fault_thread_entry']);
/** events of the destination's incoming cleanup */
const CLEANUP = /^postcopy_ram_incoming_cleanup_/;
const KNOWN = new Set([...Object.keys(FORMATS), ...START_EVENTS,
  'mark_postcopy_blocktime_end', 'postcopy_blocktime_end', 'postcopy_blocktime_end_one']);

interface Collected extends ImportedEvent { line: number }

/**
 * Parses log lines (`name` prefixes errors, as a file name does; `complete`
 * false when the last line had no newline) into our trace's events.
 * `vcpus`, when given, are the vCPU thread ids by index.
 */
export async function parseQemuTraceLog(
  lines: AsyncIterable<string> | Iterable<string>, name: string, vcpus?: readonly number[],
): Promise<ImportedTrace> {
  let lineNo = 0;
  const fail = (msg: string, at = lineNo): never => { throw new QemuLogError(`${name}:${at}: ${msg}`); };

  const events: Collected[] = [];
  let baseSec: number | undefined;
  let t0: number | undefined;
  let end: { t: number; line: number } | undefined;
  let faults = 0;
  let placements = 0;
  let eventSet: ImportedTrace['eventSet'] = 'none';
  const cpuMap = new Map<number, { tid: number; line: number }>();
  /** vCPU of a thread as QEMU's own blocktime lines say (-1: no vCPU) */
  const qemuSays = new Map<number, { cpu: number; line: number }>();
  /** the last fault request each logging thread wrote: {addr, pid} */
  const lastRequest = new Map<number, { addr: number; pid: number }>();

  const hex = (s: string): number => {
    const v = parseInt(s, 16);
    if (!Number.isSafeInteger(v)) fail(`address 0x${s} is too large to import exactly`);
    return v;
  };

  for await (const raw of lines) {
    lineNo++;
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (text.trim() === '') continue;
    const m = PREFIX.exec(text);
    if (m === null) {
      const bare = BARE.exec(text);
      if (bare !== null && KNOWN.has(bare[1])) {
        fail(`${bare[1]} has no time: QEMU wrote the log without timestamps; start the destination with -msg timestamp=on`);
      }
      continue; // no trace event (an error message, a banner)
    }
    const [, logTid, secS, usS, event, body = ''] = m;
    const sec = Number(secS);
    if (baseSec === undefined) baseSec = sec;
    const t = (sec - baseSec) * 1e9 + Number(usS) * 1e3;
    const bad = (): never => fail(`malformed ${event} line: expected ${event} ${FORMATS[event]}, got '${body}'`);

    if (START_EVENTS.has(event) && t0 === undefined) t0 = t;
    if (CLEANUP.test(event)) { if (end === undefined) end = { t, line: lineNo }; continue; }
    switch (event) {
      case 'postcopy_ram_fault_thread_request': {
        const r = REQUEST.exec(body) ?? bad();
        const addr = hex(r[1]);
        const pid = Number(r[2]);
        if (pid === 0 || pid > 0xffffffff) {
          fail('the fault names no thread (pid=0): QEMU got no thread ids from the kernel; turn on the postcopy-blocktime capability on the destination (migrate_set_capability postcopy-blocktime on) before the migration');
        }
        events.push({ t, ev: 'fault', addr, tid: pid, line: lineNo });
        lastRequest.set(Number(logTid), { addr, pid });
        faults++;
        break;
      }
      case 'postcopy_place_page':
      case 'postcopy_place_page_zero': {
        const r = PLACE.exec(body) ?? bad();
        if (r[1] === undefined) fail(`${event} of a null host address`);
        events.push({ t, ev: 'placed', addr: hex(r[1]), line: lineNo });
        placements++;
        break;
      }
      case 'postcopy_blocktime_tid_cpu_map': {
        const r = TID_CPU_MAP.exec(body) ?? bad();
        const cpu = Number(r[1]);
        if (cpu < 0) bad();
        cpuMap.set(cpu, { tid: Number(r[2]), line: lineNo });
        break;
      }
      case 'mark_postcopy_blocktime_begin':
      case 'postcopy_blocktime_begin': {
        const r = (event === 'mark_postcopy_blocktime_begin' ? BEGIN_72 : BEGIN_101).exec(body) ?? bad();
        eventSet = event === 'mark_postcopy_blocktime_begin' ? '7.2' : '10.1';
        const req = lastRequest.get(Number(logTid));
        if (req !== undefined && req.addr === hex(r[1])) qemuSays.set(req.pid, { cpu: Number(r[2]), line: lineNo });
        break;
      }
      default:
        break;
    }
  }

  const total = lineNo;
  if (faults === 0) {
    throw new QemuLogError(`${name}: no postcopy_ram_fault_thread_request event in its ${total} lines: start the destination with ${TRACE_OPTIONS}`);
  }
  if (placements === 0) {
    throw new QemuLogError(`${name}: faults but no postcopy_place_page event in its ${total} lines: add -trace 'postcopy_place_page*' to the destination's options`);
  }

  const tids = vcpuThreadIds(name, vcpus, cpuMap, qemuSays);
  events.sort((a, b) => a.t - b.t);
  placeBeforeNextFault(events);
  const start = Math.min(t0 ?? events[0].t, events[0].t);
  const out: ImportedTrace = { vcpus: tids, t0: start, events: events.map(({ line: _l, ...e }) => e), eventSet };
  if (end !== undefined) {
    const last = out.events[out.events.length - 1].t;
    out.end = { t: Math.max(end.t, last), status: allPlaced(out.events) ? 'completed' : 'failed' };
  }
  return out;
}

/** The vCPU thread ids: --vcpus, else the tid_cpu_map lines; checked against
 *  both those lines and QEMU's own per-fault vCPU lines. */
function vcpuThreadIds(
  name: string, given: readonly number[] | undefined,
  cpuMap: Map<number, { tid: number; line: number }>, qemuSays: Map<number, { cpu: number; line: number }>,
): number[] {
  let tids: number[];
  if (given !== undefined) {
    tids = [...given];
    for (const [cpu, { tid, line }] of cpuMap) {
      if (tids[cpu] !== tid) {
        throw new QemuLogError(`${name}:${line}: QEMU maps vCPU ${cpu} to thread ${tid}, but --vcpus gives ${tids[cpu] === undefined ? 'no vCPU ' + cpu : 'thread ' + tids[cpu]}`);
      }
    }
  } else if (cpuMap.size > 0) {
    tids = [];
    for (let cpu = 0; cpu < cpuMap.size; cpu++) {
      const e = cpuMap.get(cpu);
      if (e === undefined) throw new QemuLogError(`${name}: postcopy_blocktime_tid_cpu_map lines skip vCPU ${cpu}: the log is incomplete; give --vcpus TID,TID...`);
      tids.push(e.tid);
    }
  } else {
    const known = [...qemuSays].filter(([, s]) => s.cpu >= 0).sort((a, b) => a[1].cpu - b[1].cpu)
      .map(([tid, s]) => `vCPU ${s.cpu} = ${tid}`);
    throw new QemuLogError(`${name}: no vCPU thread ids: give --vcpus TID,TID... (thread_id= of the destination's 'info cpus', or thread-id of query-cpus-fast, by vCPU index), or use QEMU 10.1+ with -trace 'postcopy_blocktime*'`
      + (known.length > 0 ? ` (the log names the vCPUs that faulted: ${known.join(', ')})` : ''));
  }
  for (const [tid, { cpu, line }] of qemuSays) {
    const ours = tids.indexOf(tid);
    if (ours !== cpu && !(cpu < 0 && ours < 0)) {
      throw new QemuLogError(`${name}:${line}: QEMU counts thread ${tid} as ${cpu < 0 ? 'no vCPU' : `vCPU ${cpu}`}, but the vCPU thread ids make it ${ours < 0 ? 'no vCPU' : `vCPU ${ours}`}`);
    }
  }
  return tids;
}

/**
 * A thread held on a missing page raises no other fault until the kernel
 * wakes it, and UFFDIO_COPY/ZEROPAGE wake it only once the page is in. So
 * when a thread faults on another page while its previous page is not yet
 * placed in the log, that page was placed by then: QEMU logs the placement
 * after the ioctl returns, and the thread can fault again in between. Such a
 * placement is dated at that next fault, just before it (events stay sorted).
 */
function placeBeforeNextFault(events: Collected[]): void {
  const waitingOn = new Map<number, { addr: number; t: number }>();
  const placed = new Set<number>();
  const placedBy = new Map<number, number>();
  for (const e of events) {
    if (e.ev === 'placed') { placed.add(e.addr); continue; }
    if (placed.has(e.addr)) continue;
    const tid = e.tid as number;
    const prev = waitingOn.get(tid);
    if (prev !== undefined && prev.addr !== e.addr && !placed.has(prev.addr)) {
      placed.add(prev.addr);
      placedBy.set(prev.addr, e.t);
    }
    waitingOn.set(tid, { addr: e.addr, t: e.t });
  }
  if (placedBy.size === 0) return;
  const moved = new Set<Collected>();
  for (const e of events) {
    const by = e.ev === 'placed' ? placedBy.get(e.addr) : undefined;
    if (by !== undefined) {
      if (by < e.t) { e.t = by; moved.add(e); }
      placedBy.delete(e.addr); // the first placement only
    }
  }
  // a moved placement goes before the fault it is dated at
  events.sort((a, b) => a.t - b.t || Number(moved.has(b)) - Number(moved.has(a)));
}

function allPlaced(events: readonly ImportedEvent[]): boolean {
  const waiting = new Set<number>();
  const placed = new Set<number>();
  for (const e of events) {
    if (e.ev === 'placed') { placed.add(e.addr); waiting.delete(e.addr); } else if (!placed.has(e.addr)) waiting.add(e.addr);
  }
  return waiting.size === 0;
}

/** Our trace's lines (src/blocktime/trace.ts) for an imported log. */
export function* traceLines(trace: ImportedTrace): Generator<string> {
  yield JSON.stringify({ vcpus: trace.vcpus, t0: trace.t0 });
  for (const e of trace.events) yield JSON.stringify(e);
  if (trace.end !== undefined) yield JSON.stringify({ t: trace.end.t, ev: 'end', status: trace.end.status });
}

/** Reads the log at `path` line by line; a last line without its newline
 *  (a log cut short) is refused with its number. */
export async function readQemuTraceLog(path: string, vcpus?: readonly number[]): Promise<ImportedTrace> {
  try {
    if ((await stat(path)).isDirectory()) throw new QemuLogError(`${path}: is a directory, not a QEMU trace log`);
  } catch (e) {
    if (e instanceof QemuLogError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new QemuLogError(code === 'ENOENT' ? `${path}: no such file` : `${path}: cannot read: ${(e as Error).message}`);
  }
  return parseQemuTraceLog(logLines(path), path, vcpus);
}

async function* logLines(path: string): AsyncGenerator<string> {
  let rest = '';
  let n = 0;
  for await (const chunk of createReadStream(path, { encoding: 'utf8' })) {
    const parts = (rest + (chunk as string)).split('\n');
    rest = parts.pop() as string;
    for (const p of parts) { n++; yield p; }
  }
  if (rest !== '') {
    throw new QemuLogError(`${path}:${n + 1}: truncated line (the log ends without a newline): QEMU was still writing it or was killed; import the log once the destination has quit (or flushed it after completion)`);
  }
}
