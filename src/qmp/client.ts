// A small QMP client: connects to a QMP socket (ours or QEMU's), reads the
// greeting, negotiates capabilities and runs commands, matching replies to
// requests by "id". Tests, the batch mode and the lab drive child VM
// processes with it, so it fails fast and clearly when the socket is absent
// and offers a retry-until-deadline connect for freshly spawned processes.
// It sits below its users (the lab's local destination, the tests, a real
// QEMU's session) and depends on none of them.

import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';

/** An error reply from the server: QEMU's {"error": {"class", "desc"}}. */
export class QmpError extends Error {
  constructor(readonly errorClass: string, readonly desc: string, readonly command: string) {
    super(`${command}: ${desc} (${errorClass})`);
    this.name = 'QmpError';
  }
}

/** An asynchronous event as QEMU sends it. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** The server's greeting: {"QMP": {"version": ..., "capabilities": [...]}}. */
export interface QmpGreeting {
  QMP: {
    version: { qemu: { micro: number; minor: number; major: number }; package: string };
    capabilities: string[];
  };
}

export interface QmpConnectOptions {
  /** bound on connect + greeting + qmp_capabilities, ms (default 10000) */
  timeoutMs?: number;
  /** send qmp_capabilities after the greeting (default true) */
  negotiate?: boolean;
}

export interface QmpExecuteOptions {
  /** reject if no reply came within this many ms (default: wait for ever, or until the connection closes) */
  timeoutMs?: number;
}

export type QmpAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** 'unix:PATH' | 'tcp:HOST:PORT' | a bare path. A trailing QEMU option list
 *  (",server=on,wait=off") is accepted and ignored, so a -qmp spec works too. */
export function parseQmpClientAddress(address: string): QmpAddress {
  const a = address.replace(/(,(server|wait|nowait|nodelay|ipv4|ipv6)(=[^,]*)?)+$/, '');
  if (a.startsWith('unix:')) {
    const path = a.slice(5);
    if (path === '') throw new Error(`QMP address '${address}': empty socket path`);
    return { kind: 'unix', path };
  }
  if (a.startsWith('tcp:')) {
    const rest = a.slice(4);
    const colon = rest.lastIndexOf(':');
    if (colon < 0) throw new Error(`QMP address '${address}': expected tcp:HOST:PORT`);
    let host = rest.slice(0, colon);
    if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
    const portText = rest.slice(colon + 1);
    const port = Number(portText);
    if (!/^\d+$/.test(portText) || port < 1 || port > 65535) {
      throw new Error(`QMP address '${address}': port '${portText}' is not a number in 1..65535`);
    }
    return { kind: 'tcp', host: host === '' ? '127.0.0.1' : host, port };
  }
  if (a === '') throw new Error('QMP address is empty');
  if (/^[a-z]+:/.test(a) && !a.includes('/')) throw new Error(`QMP address '${address}': unknown transport (use unix:PATH or tcp:HOST:PORT)`);
  return { kind: 'unix', path: a };
}

function describe(addr: QmpAddress): string {
  return addr.kind === 'unix' ? `unix:${addr.path}` : `tcp:${addr.host}:${addr.port}`;
}

/** Replies are at most this long; a longer line means the peer is not a QMP server. */
const MAX_LINE = 64 << 20;
/** Events kept for waitForEvent(). */
const MAX_EVENT_LOG = 10000;

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

export class QmpClient extends EventEmitter {
  /** every event received so far (the last MAX_EVENT_LOG), oldest first */
  readonly events: QmpEvent[] = [];
  /** in request order (a Map iterates in insertion order): the first is the oldest */
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private chunks: Buffer[] = [];
  private chunkBytes = 0;
  private closed = false;
  private closeError: Error | undefined;
  private closedPromise: Promise<void>;

  private constructor(private readonly socket: Socket, readonly address: string, readonly greeting: QmpGreeting) {
    super();
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Connects, reads the greeting and (unless told not to) sends qmp_capabilities. */
  static async connect(address: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const addr = parseQmpClientAddress(address);
    const timeoutMs = opts.timeoutMs ?? 10000;
    const where = describe(addr);
    const socket = addr.kind === 'unix' ? createConnection(addr.path) : createConnection(addr.port, addr.host);
    const greeting = await new Promise<{ greeting: QmpGreeting; rest: Buffer }>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => {
        // REFERENCE.md §7: a QEMU chardev socket takes a second client's
        // connection but greets it only once the first client has gone
        const fix = addr.kind === 'unix'
          ? `-qmp unix:${addr.path}.2,server=on,wait=off, or -chardev socket,id=mon2,path=${addr.path}.2,server=on,wait=off -mon chardev=mon2,mode=control`
          : '-qmp tcp:HOST:PORT2,server=on,wait=off, or -chardev socket,id=mon2,host=HOST,port=PORT2,server=on,wait=off -mon chardev=mon2,mode=control';
        finish(new Error(`QMP ${where}: connected, but no greeting within ${timeoutMs} ms: a QEMU QMP socket serves one client at a time,`
          + ` so another client most likely holds this one; give QEMU a socket of its own for this client (${fix}), or close the other client`));
      }, timeoutMs);
      const finish = (err: Error | null, value?: { greeting: QmpGreeting; rest: Buffer }): void => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', onError);
        socket.off('close', onClose);
        if (err) { socket.destroy(); reject(err); } else resolve(value!);
      };
      const onError = (e: NodeJS.ErrnoException): void => finish(connectError(where, addr, e));
      const onClose = (): void => finish(new Error(`QMP ${where}: connection closed before the greeting`));
      const onData = (d: Buffer): void => {
        buf = Buffer.concat([buf, d]);
        const nl = buf.indexOf(10);
        if (nl < 0) {
          if (buf.length > MAX_LINE) finish(new Error(`QMP ${where}: greeting too long; is this a QMP socket?`));
          return;
        }
        const line = buf.subarray(0, nl).toString('utf8').trim();
        let parsed: unknown;
        try { parsed = JSON.parse(line); } catch {
          finish(new Error(`QMP ${where}: the greeting is not JSON: ${line.slice(0, 200)}`));
          return;
        }
        if (!isObject(parsed) || !isObject(parsed.QMP)) {
          finish(new Error(`QMP ${where}: expected a {"QMP": ...} greeting, got ${line.slice(0, 200)}`));
          return;
        }
        finish(null, { greeting: parsed as unknown as QmpGreeting, rest: buf.subarray(nl + 1) });
      };
      socket.on('data', onData);
      socket.on('error', onError);
      socket.on('close', onClose);
    });
    const client = new QmpClient(socket, where, greeting.greeting);
    client.attach();
    if (greeting.rest.length > 0) client.onData(greeting.rest);
    if (opts.negotiate !== false) {
      try {
        await client.execute('qmp_capabilities', undefined, { timeoutMs });
      } catch (e) {
        await client.close();
        throw e;
      }
    }
    return client;
  }

  /** Runs a command; resolves with its "return" value, rejects with QmpError on an error reply. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: QmpExecuteOptions = {}): Promise<T> {
    if (this.closed) {
      return Promise.reject(new Error(`QMP ${this.address}: connection is closed${this.closeError ? ` (${this.closeError.message})` : ''}`));
    }
    const id = this.nextId++;
    const req: Record<string, unknown> = { execute: command };
    if (args !== undefined) req.arguments = args;
    req.id = id;
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { command, resolve: resolve as (v: unknown) => void, reject };
      if (opts.timeoutMs !== undefined) {
        p.timer = setTimeout(() => {
          if (this.pending.delete(id)) {
            reject(new Error(`QMP ${this.address}: no reply to '${command}' within ${opts.timeoutMs} ms`));
          }
        }, opts.timeoutMs);
      }
      this.pending.set(id, p);
      this.socket.write(`${JSON.stringify(req)}\r\n`);
    });
  }

  /** Resolves with the first event named `event` (and matching `match`) at or
   *  after index `since` of the event log, already received or still to come. */
  waitForEvent(event: string, opts: { match?: (e: QmpEvent) => boolean; timeoutMs?: number; since?: number } = {}): Promise<QmpEvent> {
    const ok = (e: QmpEvent): boolean => e.event === event && (opts.match ? opts.match(e) : true);
    for (let i = opts.since ?? 0; i < this.events.length; i++) if (ok(this.events[i])) return Promise.resolve(this.events[i]);
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const onEvent = (e: QmpEvent): void => { if (ok(e)) { cleanup(); resolve(e); } };
      const onClose = (): void => { cleanup(); reject(new Error(`QMP ${this.address}: closed while waiting for event ${event}`)); };
      const timer = opts.timeoutMs !== undefined
        ? setTimeout(() => { cleanup(); reject(new Error(`QMP ${this.address}: no ${event} event within ${opts.timeoutMs} ms`)); }, opts.timeoutMs)
        : undefined;
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** True once the connection is gone. */
  get isClosed(): boolean { return this.closed; }

  /** Closes the connection; pending commands are rejected. */
  async close(): Promise<void> {
    if (!this.closed) this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 1000);
    await this.closedPromise;
    clearTimeout(t);
  }

  private attach(): void {
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', (e: Error) => { this.closeError = e; });
    this.socket.on('close', () => {
      this.closed = true;
      const err = new Error(`QMP ${this.address}: connection closed${this.closeError ? ` (${this.closeError.message})` : ''}`);
      for (const p of this.pending.values()) {
        if (p.timer) clearTimeout(p.timer);
        p.reject(err);
      }
      this.pending.clear();
      this.emit('close');
    });
  }

  private onData(d: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = d.indexOf(10, start);
      if (nl < 0) break;
      let line: Buffer = d.subarray(start, nl);
      if (this.chunks.length > 0) {
        line = Buffer.concat([...this.chunks, line]);
        this.chunks = [];
        this.chunkBytes = 0;
      }
      start = nl + 1;
      this.onLine(line.toString('utf8'));
    }
    if (start < d.length) {
      this.chunks.push(d.subarray(start));
      this.chunkBytes += d.length - start;
      if (this.chunkBytes > MAX_LINE) {
        this.closeError = new Error(`a reply longer than ${MAX_LINE} bytes`);
        this.socket.destroy();
      }
    }
  }

  private onLine(text: string): void {
    const line = text.trim();
    if (line === '') return;
    let msg: unknown;
    try { msg = JSON.parse(line); } catch {
      this.emit('protocol-error', new Error(`QMP ${this.address}: unparsable line from server: ${line.slice(0, 200)}`));
      return;
    }
    if (!isObject(msg)) return;
    if (typeof msg.event === 'string') {
      const ev = msg as unknown as QmpEvent;
      this.events.push(ev);
      if (this.events.length > MAX_EVENT_LOG) this.events.splice(0, this.events.length - MAX_EVENT_LOG);
      this.emit('event', ev);
      return;
    }
    if (!('return' in msg) && !('error' in msg)) return;
    // replies come in request order; one without an id (a parse error) answers the oldest request
    const id = typeof msg.id === 'number' && this.pending.has(msg.id) ? msg.id : this.pending.keys().next().value;
    if (id === undefined) return;
    const p = this.pending.get(id);
    this.pending.delete(id);
    if (!p) return;
    if (p.timer) clearTimeout(p.timer);
    if ('error' in msg) {
      const err = isObject(msg.error) ? msg.error : {};
      p.reject(new QmpError(String(err.class ?? 'GenericError'), String(err.desc ?? 'unknown error'), p.command));
    } else {
      p.resolve(msg.return);
    }
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function connectError(where: string, addr: QmpAddress, e: NodeJS.ErrnoException): Error {
  let msg: string;
  switch (e.code) {
    case 'ENOENT':
      msg = `QMP socket ${addr.kind === 'unix' ? addr.path : where} does not exist (is the VM running with -qmp ${where},server=on,wait=off?)`;
      break;
    case 'ECONNREFUSED':
      msg = `QMP ${where}: connection refused (nothing is listening there)`;
      break;
    case 'EACCES':
      msg = `QMP ${where}: permission denied`;
      break;
    case 'ENOTSOCK':
      msg = `QMP ${where}: not a socket`;
      break;
    default:
      msg = `QMP ${where}: ${e.message}`;
  }
  const err = new Error(msg) as NodeJS.ErrnoException;
  err.code = e.code;
  return err;
}

/** connect(), retried while the socket is absent or refuses, until `timeoutMs`
 *  has passed: for a process that was just spawned and may not listen yet. */
export async function connectWithRetry(address: string, timeoutMs: number, opts: QmpConnectOptions & {
  /** stop retrying (the server's process is gone) */
  signal?: AbortSignal;
} = {}): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  let last: Error | undefined;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    if (opts.signal?.aborted) throw new Error(`QMP ${address}: gave up (${String(opts.signal.reason)})`);
    try {
      return await QmpClient.connect(address, { ...opts, timeoutMs: Math.min(opts.timeoutMs ?? left, left) });
    } catch (e) {
      last = e as Error;
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw e;
    }
    await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
  }
  throw new Error(`${last ? last.message : `QMP ${address}: not reachable`}; gave up after ${timeoutMs} ms`);
}
