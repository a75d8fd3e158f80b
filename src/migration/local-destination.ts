// Spawns a destination VM process that matches a source (same RAM size,
// vCPUs, workload, capabilities and parameters) and drives it over QMP: the
// lab behind `migrate local` and the destination half of `postcopy run`.
// Sockets live in a private 0700 temporary directory; the child is killed if
// it does not quit when asked, and ends with its parent whatever kills that
// (`-run-with exit-with-parent=on`), removing the directory it was given.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { CommandError } from '../errors.js';
import { connectWithRetry, type QmpClient, type QmpEvent } from '../qmp/client.js';
import type { CapabilityState, MigrationInfo, MigrationParameters } from './api.js';
import { stallSentence } from './convergence.js';

/** The environment variable that names the private postcopy-* temporary
 *  directory of a spawned VM's sockets; the VM removes it when it exits
 *  (vm-main), so nothing stays behind when its parent was killed. */
export const OWNED_DIR_ENV = 'POSTCOPY_OWNED_DIR';

export interface LocalDestinationOptions {
  ramBytes: number;
  /** the source's memory backend options (memoryBackendArgs): the destination's RAM must match its page size */
  memoryArgs?: string[];
  vcpus: number;
  /** workload text (formatWorkload), must match the source's */
  workload: string;
  capabilities: CapabilityState[];
  parameters: MigrationParameters;
  /** 'unix' (default, in the private temp dir) or 'tcp' (127.0.0.1, a free port) */
  transport?: 'unix' | 'tcp';
  /** -S on the destination */
  startPaused?: boolean;
  /** ms to wait for the child to come up (default 20000) */
  startTimeoutMs?: number;
}

/** dist/src/cli.js, whether we run from dist/ or from the TypeScript sources (jest) */
export function cliPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, '..', 'cli.js'), resolve(here, '..', '..', 'dist', 'src', 'cli.js'), resolve(here, '..', '..', '..', 'dist', 'src', 'cli.js')];
  for (const c of candidates) if (existsSync(c)) return c;
  throw new CommandError(`cannot find the postcopy program (looked for ${candidates.join(', ')}); run 'npm run build'`);
}

export async function freeTcpPort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

/** A VM process (`node cli.js ...`) with a QMP connection to it. */
export class VmProcess {
  private exited = false;
  /** how it exited: 'SIGSEGV', 'status 1' */
  private exitedWith = '';
  private tail = '';
  readonly events: QmpEvent[] = [];

  private constructor(readonly child: ChildProcess, readonly qmp: QmpClient, readonly qmpAddress: string) {
    child.once('exit', (code, sig) => { this.exited = true; this.exitedWith = sig ?? `status ${code}`; });
    child.stderr?.on('data', (b: Buffer) => { this.tail = (this.tail + b.toString()).slice(-4000); });
    qmp.on('event', (e: QmpEvent) => this.events.push(e));
  }

  /** Starts `postcopy VMARGS -monitor none -qmp unix:QMPPATH` and connects to its QMP socket.
   *  `wrapper` runs it under another command (e.g. ['ip', 'netns', 'exec', 'ns1']);
   *  `ownedDir`: a private postcopy-* temporary directory the VM removes when it exits. */
  static async spawn(vmArgs: string[], qmpPath: string, timeoutMs = 20000, wrapper: string[] = [], ownedDir?: string): Promise<VmProcess> {
    const qmpAddress = `unix:${qmpPath}`;
    const argv = [process.execPath, cliPath(), ...vmArgs, '-monitor', 'none', '-qmp', `${qmpAddress},server=on,wait=off`,
      '-run-with', 'exit-with-parent=on'];
    const all = [...wrapper, ...argv];
    const env = ownedDir ? { ...process.env, [OWNED_DIR_ENV]: ownedDir } : process.env;
    // a session of its own: a signal meant for the parent's terminal (the
    // SIGHUP of a closed window, a Ctrl-C) never reaches it, even while it
    // starts; it ends with its parent instead (exit-with-parent)
    const child = spawn(all[0], all.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env, detached: true });
    let tail = '';
    const onErr = (b: Buffer): void => { tail = (tail + b.toString()).slice(-4000); };
    child.stderr?.on('data', onErr);
    const early = new Promise<never>((_, rej) => {
      child.once('exit', (code, sig) => rej(new CommandError(`the VM process exited (${sig ?? `status ${code}`}) before it was ready: ${tail.trim() || 'no message'}`)));
      child.once('error', (e) => rej(new CommandError(`cannot start the VM process: ${e.message}`)));
    });
    early.catch(() => undefined);
    const exited = new AbortController(); // a VM that died stops the QMP retries at once (nothing waits for them)
    child.once('exit', () => exited.abort('the VM process exited'));
    try {
      const qmp = await Promise.race([connectWithRetry(qmpAddress, timeoutMs, { signal: exited.signal }), early]);
      child.stderr?.off('data', onErr);
      const p = new VmProcess(child, qmp, qmpAddress);
      p.tail = tail;
      return p;
    } catch (e) {
      child.kill('SIGKILL');
      throw e instanceof CommandError ? e : new CommandError(`the VM process did not answer on QMP: ${(e as Error).message}`);
    }
  }

  get alive(): boolean { return !this.exited; }
  /** the child's recent stderr (for error messages) */
  get stderr(): string { return this.tail; }

  /** query-migrate; QMP's {} before any migration reads as status 'none' */
  async queryMigrate(): Promise<MigrationInfo> {
    let info: Partial<MigrationInfo>;
    try {
      info = await this.qmp.execute<Partial<MigrationInfo>>('query-migrate', undefined, { timeoutMs: 10000 });
    } catch (e) {
      throw await this.died(e as Error);
    }
    return { ...info, status: info.status ?? 'none' };
  }

  /** A QMP failure because the VM process died says so: how it exited and
   *  its last words, rather than "connection is closed" (its exit may come
   *  a moment after the socket closed). */
  private async died(e: Error): Promise<Error> {
    if (!this.qmp.isClosed) return e;
    if (!this.exited) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1000);
        this.child.once('exit', () => { clearTimeout(t); resolve(); });
      });
    }
    if (!this.exited) return e;
    const last = this.tail.trim().split('\n').slice(-5).join(' / ');
    return new CommandError(`the VM process ${this.child.pid} exited (${this.exitedWith})${last ? `: ${last}` : ', saying nothing'}`);
  }

  async configure(capabilities: CapabilityState[], parameters: Partial<MigrationParameters>): Promise<void> {
    const caps = capabilities.filter((c) => c.state);
    if (caps.length > 0) await this.qmp.execute('migrate-set-capabilities', { capabilities: caps });
    if (Object.keys(parameters).length > 0) await this.qmp.execute('migrate-set-parameters', { ...parameters });
  }

  /** resolves with query-migrate once the status is terminal; `giveUp`
   *  may end the wait sooner with its reason */
  async waitDone(timeoutMs: number, giveUp?: (info: MigrationInfo) => string | undefined): Promise<MigrationInfo> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await this.queryMigrate();
      if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') return info;
      const why = giveUp?.(info);
      if (why) throw new CommandError(why);
      if (Date.now() > deadline) {
        const stall = info['x-convergence'];
        throw new CommandError(`migration did not finish within ${timeoutMs} ms (status ${info.status})${stall ? `: ${stallSentence(stall)}` : ''}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** asks the VM to quit; kills it if it has not exited within 5 s */
  async quit(): Promise<void> {
    if (!this.exited) {
      const gone = new Promise<void>((r) => { if (this.exited) r(); else this.child.once('exit', () => r()); });
      try { await this.qmp.execute('quit', undefined, { timeoutMs: 3000 }); } catch { /* dying anyway */ }
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
    try { await this.qmp.close(); } catch { /* closed */ }
  }
}

/** A destination VM matching a source, listening in a private 0700 directory. */
export class LocalDestination {
  private constructor(readonly vm: VmProcess, readonly uri: string, private readonly dir: string) {}

  static async spawn(o: LocalDestinationOptions): Promise<LocalDestination> {
    const dir = mkdtempSync(join(tmpdir(), 'postcopy-lab-')); // 0700
    try {
      const uri = o.transport === 'tcp' ? `tcp:127.0.0.1:${await freeTcpPort()}` : `unix:${join(dir, 'migrate.sock')}`;
      const args = ['-m', `${o.ramBytes}B`, ...(o.memoryArgs ?? []), '-smp', String(o.vcpus), '-workload', o.workload, '-incoming', uri];
      if (o.startPaused) args.push('-S');
      const vm = await VmProcess.spawn(args, join(dir, 'qmp.sock'), o.startTimeoutMs, [], dir);
      const d = new LocalDestination(vm, uri, dir);
      try {
        await vm.configure(o.capabilities, o.parameters);
      } catch (e) {
        await d.quit();
        throw new CommandError(`configuring the destination failed: ${(e as Error).message}`);
      }
      return d;
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  get qmp(): QmpClient { return this.vm.qmp; }
  get whereabouts(): string { return `process ${this.vm.child.pid ?? '?'}, QMP ${this.vm.qmpAddress}`; }
  queryMigrate(): Promise<MigrationInfo> { return this.vm.queryMigrate(); }
  waitDone(timeoutMs: number): Promise<MigrationInfo> { return this.vm.waitDone(timeoutMs); }

  async quit(): Promise<void> {
    await this.vm.quit();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
