// The file-backed TraceSink behind the `x-blocktime-trace` parameter: writes
// the JSON-lines trace (see trace.ts) into a preallocated buffer, digit by
// digit, so recording an event allocates nothing; the buffer goes to the file
// with a synchronous write when it fills up and on close.

import { closeSync, writeSync } from 'node:fs';
import { CommandError } from '../errors.js';
import { openPrivateFile, privateFileProblem } from '../private-file.js';
import { FAULT_KINDS, type FaultCause, type TraceSink } from '../blocktime/trace.js';
import type { KernelTimes } from '../blocktime/types.js';

const CHUNK = 64 * 1024;
/** room for the longest event line: 4 numbers of <= 16 digits + text */
const MAX_LINE = 160;

// The bytes of the event lines, also what the replay reads them by (event-line.ts).
const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
export const T_OPEN = ascii('{"t":');
export const FAULT_ADDR = ascii(',"ev":"fault","addr":');
export const FAULT_TID = ascii(',"tid":');
export const PLACED_ADDR = ascii(',"ev":"placed","addr":');
export const PUSH_ADDR = ascii(',"ev":"push","addr":');
/** `,"kind":"..."` by FaultCause ('' for Unknown: no field) */
export const FAULT_KIND = FAULT_KINDS.map((k) => ascii(k === '' ? '' : `,"kind":"${k}"`));
const LINE_END = ascii('}\n');

export class TraceFileSink implements TraceSink {
  private fd: number;
  private readonly buf = new Uint8Array(CHUNK);
  private pos = 0;
  private failure: string | undefined;

  /** Opens `path` (created 0600, or a regular file of ours truncated; see
   *  private-file.ts). Throws CommandError naming the path
   *  when it cannot be opened. */
  constructor(readonly path: string) {
    try {
      this.fd = openPrivateFile(path);
    } catch (e) {
      throw new CommandError(`x-blocktime-trace: ${(e as Error).message}`);
    }
  }

  /** Why the trace stopped being written (a write failed), else undefined. */
  get error(): string | undefined { return this.failure; }

  header(vcpuThreadIds: readonly number[], t0: number): void {
    this.text(`${JSON.stringify({ vcpus: vcpuThreadIds, t0 })}\n`);
  }

  fault(t: number, addr: number, tid: number, cause: FaultCause): void {
    if (this.pos > CHUNK - MAX_LINE) this.flush();
    this.bytes(T_OPEN);
    this.uint(t);
    this.bytes(FAULT_ADDR);
    this.uint(addr);
    this.bytes(FAULT_TID);
    this.uint(tid);
    this.bytes(FAULT_KIND[cause] ?? FAULT_KIND[0]);
    this.bytes(LINE_END);
  }

  placed(t: number, addr: number): void { this.addrLine(t, PLACED_ADDR, addr); }

  push(t: number, addr: number): void { this.addrLine(t, PUSH_ADDR, addr); }

  private addrLine(t: number, ev: Uint8Array, addr: number): void {
    if (this.pos > CHUNK - MAX_LINE) this.flush();
    this.bytes(T_OPEN);
    this.uint(t);
    this.bytes(ev);
    this.uint(addr);
    this.bytes(LINE_END);
  }

  schedstat(t: number, tid: number, sample: KernelTimes | string): void {
    const s = typeof sample === 'string' ? { unavailable: sample } : { run: sample.runNs, wait: sample.waitNs };
    this.text(`${JSON.stringify({ t, ev: 'schedstat', tid, ...s })}\n`);
  }

  end(t: number, status: string): void {
    this.text(`${JSON.stringify({ t, ev: 'end', status })}\n`);
  }

  close(): void {
    if (this.fd < 0) return;
    this.flush();
    try { closeSync(this.fd); } catch { /* nothing left to lose */ }
    this.fd = -1;
  }

  private text(s: string): void {
    const b = Buffer.from(s, 'utf8');
    if (this.pos + b.length > CHUNK) this.flush();
    if (b.length > CHUNK) { this.write(b, b.length); return; }
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  private bytes(b: Uint8Array): void {
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < b.length; i++) buf[p++] = b[i];
    this.pos = p;
  }

  // Non-negative integer in decimal (fractions are floored).
  private uint(n: number): void {
    const buf = this.buf;
    let v = n > 0 ? Math.floor(n) : 0;
    let digits = 1;
    for (let x = v; x >= 10; x = Math.floor(x / 10)) digits++;
    let p = this.pos + digits;
    this.pos = p;
    if (v < 2147483648) {
      let i = v | 0;
      do { buf[--p] = 48 + (i % 10); i = (i / 10) | 0; } while (i > 0);
    } else {
      do { buf[--p] = 48 + (v % 10); v = Math.floor(v / 10); } while (v > 0);
    }
  }

  flush(): void {
    if (this.pos > 0) this.write(this.buf, this.pos);
    this.pos = 0;
  }

  private write(b: Uint8Array, len: number): void {
    if (this.fd < 0 || this.failure !== undefined) return;
    try {
      let off = 0;
      while (off < len) off += writeSync(this.fd, b, off, len - off);
    } catch (e) {
      this.failure = `writing '${this.path}' failed: ${(e as Error).message}`;
    }
  }
}

/** Checks, without creating or touching anything, that `path` can be
 *  written as a trace when postcopy starts: its directory exists and is
 *  writable, and the file, if it exists, is a writable regular file. Throws
 *  a CommandError that names the problem. */
export function checkTracePath(path: string): void {
  const why = path === '' ? null : privateFileProblem(path);
  if (why !== null) throw new CommandError(`x-blocktime-trace: cannot write '${path}': ${why}`);
}

/** The sink for the `x-blocktime-trace` parameter ('' = no trace). */
export function openTraceFile(path: string): TraceSink | undefined {
  return path === '' ? undefined : new TraceFileSink(path);
}
