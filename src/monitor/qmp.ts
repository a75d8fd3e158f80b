// The QMP server: `-qmp unix:PATH,server=on,wait=off` or `-qmp
// tcp:HOST:PORT,server=on,wait=off`. Speaks QEMU's protocol (REFERENCE.md
// §2): greeting, capabilities negotiation, one reply per request in order
// with the request's id echoed, QEMU's error classes and texts, and events
// (MIGRATION when the `events` migration capability is on; STOP, RESUME and
// SHUTDOWN always). Commands dispatch through the one command registry.
// A unix socket appears at its path already mode 0600 (bound in a private
// directory, then renamed into place) and is removed when the server closes.

import { createServer, type Server, type Socket } from 'node:net';
import { CommandError } from '../errors.js';
import { listenOn, listenUnixPrivate, removeUnixSocket, type BoundUnixSocket } from '../unix-listen.js';
import type { Machine, MigrationStatus, RunState } from '../migration/api.js';
import type { CommandContext, Registry } from './registry.js';
import { checkQmpCapabilitiesEnable, QMP_CAPABILITIES_OFFERED, QMP_VERSION, registerQmpCommands } from './qmp-commands.js';
import { formatQmpSpec, parseQmpSpec, type QmpSpec } from './qmp-spec.js';
import { DEFAULT_MAX_MESSAGE_BYTES, QmpStreamSplitter, toQmpJson, type SplitResult } from './qmp-framing.js';

// vm-main checks a -qmp spec through this module, as it starts the server
export { parseQmpSpec };

export interface QmpServerOptions {
  /** called once the reply to a `quit` has been written; default: machine.quit() */
  requestQuit?: () => void;
  /** largest request accepted, bytes (default 1 MiB) */
  maxMessageBytes?: number;
  /** a client whose unread output exceeds this is disconnected (default 64 MiB) */
  maxPendingOutputBytes?: number;
}

/** requests parsed but not yet answered, per client, before reading pauses */
const MAX_QUEUED_REQUESTS = 64;

function timestamp(): { seconds: number; microseconds: number } {
  const t = performance.timeOrigin + performance.now();
  const seconds = Math.floor(t / 1000);
  return { seconds, microseconds: Math.min(999999, Math.floor((t - seconds * 1000) * 1000)) };
}

function errorReply(errorClass: string, desc: string, id?: { value: unknown }): string {
  const r: Record<string, unknown> = { error: { class: errorClass, desc } };
  if (id) r.id = id.value;
  return toQmpJson(r);
}

class QmpSession {
  negotiated = false;
  /** the client half-closed: answer what it sent, then close our side */
  private inputEnded = false;
  private queue: SplitResult[] = [];
  private pumping = false;
  private readonly splitter: QmpStreamSplitter;

  constructor(readonly socket: Socket, private readonly server: QmpServer) {
    this.splitter = new QmpStreamSplitter((r) => this.enqueue(r), server.maxMessageBytes);
    socket.on('data', (d: Buffer) => this.splitter.feed(d));
    socket.on('end', () => {
      this.splitter.end();
      this.inputEnded = true;
      if (!this.pumping) this.socket.end();
    });
  }

  private enqueue(r: SplitResult): void {
    this.queue.push(r);
    if (this.queue.length >= MAX_QUEUED_REQUESTS) this.socket.pause();
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.socket.destroyed) {
        const r = this.queue.shift()!;
        if (this.queue.length < MAX_QUEUED_REQUESTS / 2 && this.socket.isPaused()) this.socket.resume();
        const { line, after } = await this.handle(r);
        this.write(line);
        if (after) after();
        if (this.socket.writableNeedDrain) {
          await new Promise<void>((res) => {
            const done = (): void => { this.socket.off('drain', done); this.socket.off('close', done); res(); };
            this.socket.on('drain', done);
            this.socket.on('close', done);
          });
        }
      }
    } finally {
      this.pumping = false;
    }
    if (this.inputEnded) { this.socket.end(); return; }
    if (this.socket.isPaused() && !this.socket.destroyed) this.socket.resume();
  }

  write(line: string): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    if (this.socket.writableLength > this.server.maxPendingOutputBytes) {
      // a client that never reads: drop it rather than buffer without bound
      this.socket.destroy();
      return;
    }
    this.socket.write(`${line}\r\n`);
  }

  /** One request -> its reply line; `after` runs once the reply is written. */
  private async handle(r: SplitResult): Promise<{ line: string; after?: () => void }> {
    if ('error' in r) return { line: errorReply('GenericError', r.error) };
    const req = r.value;
    if (typeof req !== 'object' || req === null || Array.isArray(req)) {
      return { line: errorReply('GenericError', 'QMP input must be a JSON object') };
    }
    const dict = req as Record<string, unknown>;
    const id = 'id' in dict ? { value: dict.id } : undefined;
    let command: string | undefined;
    for (const [k, v] of Object.entries(dict)) {
      if (k === 'execute') {
        if (typeof v !== 'string') return { line: errorReply('GenericError', "QMP input member 'execute' must be a string", id) };
        command = v;
      } else if (k === 'arguments') {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) {
          return { line: errorReply('GenericError', "QMP input member 'arguments' must be an object", id) };
        }
      } else if (k !== 'id') {
        return { line: errorReply('GenericError', `QMP input member '${k}' is unexpected`, id) };
      }
    }
    if (command === undefined) return { line: errorReply('GenericError', "QMP input lacks member 'execute'", id) };

    if (!this.negotiated) {
      if (command !== 'qmp_capabilities') {
        return { line: errorReply('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'", id) };
      }
      try {
        const args = (dict.arguments ?? {}) as Record<string, unknown>;
        for (const k of Object.keys(args)) {
          if (k !== 'enable') throw new CommandError(`Parameter '${k}' is unexpected`);
        }
        checkQmpCapabilitiesEnable(args.enable);
      } catch (e) {
        return { line: this.failure(e, id) };
      }
      this.negotiated = true;
      return { line: this.success({}, id) };
    }

    const cmd = this.server.registry.qmp(command);
    if (!cmd) return { line: errorReply('CommandNotFound', `The command ${command} has not been found`, id) };
    let quitRequested = false;
    const ctx: CommandContext = {
      machine: this.server.machine,
      registry: this.server.registry,
      canWait: false,
      color: false,
      requestQuit: () => { quitRequested = true; },
    };
    try {
      const args = this.server.registry.checkQmpArgs(cmd, dict.arguments);
      const ret = await cmd.handler(ctx, args);
      return { line: this.success(ret ?? {}, id), after: quitRequested ? () => this.server.quit() : undefined };
    } catch (e) {
      return { line: this.failure(e, id), after: quitRequested ? () => this.server.quit() : undefined };
    }
  }

  private success(ret: unknown, id?: { value: unknown }): string {
    const r: Record<string, unknown> = { return: ret };
    if (id) r.id = id.value;
    return toQmpJson(r);
  }

  private failure(e: unknown, id?: { value: unknown }): string {
    if (e instanceof CommandError) return errorReply(e.errorClass, e.message, id);
    // not the user's fault: report it and keep serving
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`qmp: internal error: ${e instanceof Error ? e.stack ?? msg : msg}\n`);
    return errorReply('GenericError', msg, id);
  }
}

/** A listening QMP server. */
export class QmpServer {
  /** where it listens, e.g. "unix:/run/vm.qmp" or "tcp:127.0.0.1:4444" (the real port when 0 was asked) */
  address = '';
  readonly maxMessageBytes: number;
  readonly maxPendingOutputBytes: number;
  private readonly sessions = new Set<QmpSession>();
  private readonly net: Server;
  private socket: BoundUnixSocket | undefined;
  private closed = false;
  private quitting = false;
  private shutdownSent = false;
  private lastRunState: RunState;
  private readonly onMigration = (status: MigrationStatus): void => {
    const events = this.machine.capabilities().find((c) => c.capability === 'events');
    if (events?.state) this.broadcast('MIGRATION', { status });
  };
  private readonly onRunState = (state: RunState): void => {
    const prev = this.lastRunState;
    this.lastRunState = state;
    if (state === 'running' && prev !== 'running') this.broadcast('RESUME');
    else if (prev === 'running' && state !== 'running' && state !== 'shutdown') this.broadcast('STOP');
  };
  private readonly onShutdown = (): void => this.sendShutdown('host-qmp-quit');
  private readonly onExit = (): void => this.removeSocketFile();

  constructor(readonly machine: Machine, readonly registry: Registry, private readonly opts: QmpServerOptions = {}) {
    this.maxMessageBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxPendingOutputBytes = opts.maxPendingOutputBytes ?? 64 << 20;
    this.lastRunState = machine.runState();
    // half-open: a client that shuts down its side after sending (nc -N,
    // socat at the end of its input) still gets every reply
    this.net = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.net.on('error', (e) => process.stderr.write(`qmp: server error: ${e.message}\n`));
  }

  /** number of connected clients */
  get clientCount(): number { return this.sessions.size; }

  async listen(spec: QmpSpec): Promise<void> {
    if (spec.transport === 'tcp') {
      await listenOn(this.net, { port: spec.port, host: spec.host }, formatQmpSpec(spec));
      const a = this.net.address();
      const port = typeof a === 'object' && a ? a.port : spec.port;
      this.address = formatQmpSpec({ ...spec, port });
    } else {
      await this.listenUnix(spec.path);
      this.address = `unix:${spec.path}`;
    }
    const ev = this.machine.events;
    ev.on('migration', this.onMigration);
    ev.on('runstate', this.onRunState);
    ev.on('shutdown', this.onShutdown);
  }

  private async listenUnix(path: string): Promise<void> {
    this.socket = await listenUnixPrivate(this.net, path, `-qmp unix:${path}`);
    process.on('exit', this.onExit);
  }

  private accept(socket: Socket): void {
    if (this.closed) { socket.destroy(); return; }
    socket.setNoDelay(true);
    const session = new QmpSession(socket, this);
    this.sessions.add(session);
    socket.on('error', () => { /* the peer went away; 'close' follows */ });
    socket.on('close', () => this.sessions.delete(session));
    session.write(toQmpJson({ QMP: { version: { qemu: { ...QMP_VERSION.qemu }, package: QMP_VERSION.package }, capabilities: [...QMP_CAPABILITIES_OFFERED] } }));
  }

  /** Sends an event to every client past capabilities negotiation. */
  broadcast(event: string, data?: Record<string, unknown>): void {
    const msg: Record<string, unknown> = { timestamp: timestamp(), event };
    if (data !== undefined) msg.data = data;
    const line = toQmpJson(msg);
    for (const s of this.sessions) if (s.negotiated) s.write(line);
  }

  /** QEMU's SHUTDOWN event, once: before the connections close, whichever
   *  way the process is going down (QMP or HMP quit, the machine quitting,
   *  the program closing this server). */
  private sendShutdown(reason: string): void {
    if (this.shutdownSent) return;
    this.shutdownSent = true;
    this.broadcast('SHUTDOWN', { guest: false, reason });
  }

  /** `quit` over QMP: the reply is out; now end the machine (once). */
  quit(): void {
    if (this.quitting) return;
    this.quitting = true;
    this.sendShutdown('host-qmp-quit');
    if (this.opts.requestQuit) { this.opts.requestQuit(); return; }
    this.machine.quit().catch((e: unknown) => process.stderr.write(`qmp: quit failed: ${e instanceof Error ? e.message : String(e)}\n`));
  }

  /** Stops listening, sends SHUTDOWN (QEMU's reason names: 'host-qmp-quit',
   *  'host-signal', ...) unless it went out already, flushes and closes
   *  every client, removes the socket file. */
  async close(opts: { shutdownReason?: string } = {}): Promise<void> {
    if (this.closed) return;
    this.sendShutdown(opts.shutdownReason ?? 'host-qmp-quit');
    this.closed = true;
    const ev = this.machine.events;
    ev.off('migration', this.onMigration);
    ev.off('runstate', this.onRunState);
    ev.off('shutdown', this.onShutdown);
    const closing = new Promise<void>((res) => this.net.close(() => res()));
    this.removeSocketFile();
    process.off('exit', this.onExit);
    const ends = [...this.sessions].map((s) => new Promise<void>((res) => {
      if (s.socket.destroyed) { res(); return; }
      const t = setTimeout(() => s.socket.destroy(), 1000);
      s.socket.once('close', () => { clearTimeout(t); res(); });
      s.socket.end();
    }));
    await Promise.all([closing, ...ends]);
  }

  private removeSocketFile(): void {
    if (this.socket) removeUnixSocket(this.socket);
    this.socket = undefined;
  }
}

/**
 * Starts a QMP server for `machine` on `spec` (a -qmp argument or a parsed
 * spec). The registry gets the QMP commands (registerQmpCommands) unless it
 * has them. Resolves once it listens; throws CommandError with a clear
 * message when it cannot.
 */
export async function startQmpServer(machine: Machine, spec: string | QmpSpec, registry: Registry,
                                     opts: QmpServerOptions = {}): Promise<QmpServer> {
  const parsed = typeof spec === 'string' ? parseQmpSpec(spec) : spec;
  registerQmpCommands(registry);
  const server = new QmpServer(machine, registry, opts);
  await server.listen(parsed);
  return server;
}
