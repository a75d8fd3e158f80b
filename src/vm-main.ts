// `postcopy [options]`: one VM with its monitors, as one QEMU process is.
// Parses the command line (vm-options.ts), builds the Machine, starts the
// QMP servers and the HMP console, and owns the one way out: shutdown()
// (from `quit` on either monitor, the end of a script, Ctrl-D, SIGTERM/SIGINT)
// quits the machine, closes the servers and sets the exit status.
// The engine (machine, vm) is loaded only once the options are good, so
// --help, --version and option errors answer without loading native code.

import { readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { CommandError } from './errors.js';
import type { Machine } from './migration/api.js';
import { parseVmOptions, USAGE, VmOptionError, type VmOptions } from './vm-options.js';
import { createRegistry } from './monitor/commands.js';
import { HmpConsole } from './monitor/hmp.js';
import { colorWanted, formatBanner } from './monitor/format.js';
import type { Registry } from './monitor/registry.js';
import { parseWorkload, type WorkloadSpec } from './vm/workload.js';
import { workloadBlocks, type MemoryBackend } from './vm/memory-backend.js';
import { OWNED_DIR_ENV } from './migration/local-destination.js';
import { runDaemonized, signalReady } from './daemonize.js';

/** the parent when this process started: a different one later means it ended */
const parentAtStart = process.ppid;

function removeOwnedDir(env: NodeJS.ProcessEnv): void {
  const dir = env[OWNED_DIR_ENV];
  // only a directory of ours in the temporary directory, whatever the variable says
  if (!dir || dirname(dir) !== tmpdir() || !/^postcopy-[a-z]+-/.test(basename(dir))) return;
  rmSync(dir, { recursive: true, force: true });
}

/** What vm-main needs from the engine (src/machine.ts and src/vm/). */
export interface VmEngine {
  createMachine(opts: VmOptions): Promise<Machine>;
}

/** A started monitor server that can be closed (the QMP server). */
interface Closable { close(): Promise<void> }

export interface VmIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'postcopy' && pkg.version) return pkg.version;
    } catch { /* try the next place */ }
  }
  return 'unknown';
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** The real engine: the Machine factory of src/machine.ts (loaded here, not
 *  imported, so that option errors and --help never load native code). */
async function loadEngine(): Promise<VmEngine> {
  const machineModule = './machine.js';
  let mod: { createMachine?: (o: MachineOptions) => Promise<Machine> };
  try {
    mod = (await import(machineModule)) as typeof mod;
  } catch (e) {
    throw new Error(`this build has no VM engine (${machineModule} does not load: ${message(e)}); run 'npm run build'`);
  }
  const create = mod.createMachine;
  if (typeof create !== 'function') throw new Error(`this build has no VM engine (${machineModule} has no createMachine)`);
  return {
    createMachine: (o) => create({
      ramBytes: o.ramBytes, memoryBackend: o.memoryBackend, memoryBackends: o.memoryBackends, vcpus: o.vcpus,
      workload: parseWorkload(o.workload, o.ramBytes, workloadBlocks(o.memoryBackends, o.ramBytes)),
      incoming: o.incoming, startPaused: o.startPaused,
    }),
  };
}

/** src/machine.ts's options (its MachineOptions). */
interface MachineOptions {
  ramBytes: number;
  memoryBackend: MemoryBackend | null;
  memoryBackends: MemoryBackend[];
  vcpus: number;
  workload: WorkloadSpec;
  incoming?: string;
  startPaused: boolean;
}

type StartQmp = (machine: Machine, spec: string, registry: Registry,
  opts: { requestQuit?: () => void }) => Promise<Closable & { address: string }>;

/** The QMP server's entry point, or undefined when this build has none. */
async function loadQmp(): Promise<{ start: StartQmp; check: (spec: string) => void } | undefined> {
  try {
    const qmpModule = './monitor/qmp.js';
    const mod = (await import(qmpModule)) as { startQmpServer?: StartQmp; parseQmpSpec?: (s: string) => unknown };
    if (typeof mod.startQmpServer !== 'function') return undefined;
    const parse = mod.parseQmpSpec;
    return { start: mod.startQmpServer, check: (s) => { if (typeof parse === 'function') parse(s); } };
  } catch {
    return undefined;
  }
}

const QUIT_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** Runs one VM until it quits; resolves with the exit status. */
export async function runVm(opts: VmOptions, loadEngine: () => Promise<VmEngine>, io: VmIo): Promise<number> {
  const err = (s: string) => io.stderr.write(`postcopy: ${s}\n`);

  // -qmp is checked before the VM exists, so a typo costs nothing
  const qmp = opts.qmp.length > 0 ? await loadQmp() : undefined;
  if (opts.qmp.length > 0) {
    if (!qmp) { err('-qmp: this build has no QMP server'); return 1; }
    for (const q of opts.qmp) {
      try { qmp.check(q.spec); } catch (e) { err(message(e)); return 1; }
    }
  }

  let machine: Machine;
  try {
    const engine = await loadEngine();
    machine = await engine.createMachine(opts);
  } catch (e) {
    err(e instanceof CommandError || e instanceof Error ? message(e) : String(e));
    return 1;
  }

  const registry = createRegistry();
  const servers: Closable[] = [];
  let console: HmpConsole | undefined;
  let exitCode = 0;
  let resolveExit!: (code: number) => void;
  const exited = new Promise<number>((res) => { resolveExit = res; });
  let shuttingDown = false;
  // The VM runs until shutdown(), whatever holds the event loop: with
  // `-monitor none` and no -qmp nothing else would, and Node must not end
  // while vCPU threads still run over guest RAM.
  const keepAlive = setInterval(() => undefined, 1 << 30);

  const shutdown = (code: number): void => {
    if (shuttingDown) return;
    shuttingDown = true;
    exitCode = code;
    void (async () => {
      console?.close();
      for (const s of servers) await s.close().catch(() => undefined);
      await machine.quit().catch((e: unknown) => err(`quit: ${message(e)}`));
      resolveExit(exitCode);
    })();
  };
  // QEMU's termsig_handler: SIGINT, SIGHUP (the terminal closed) and SIGTERM
  // quit cleanly, so a lab destination and its files go with the console
  const onSignal = (sig: NodeJS.Signals) => {
    err(`terminating on signal ${SIGNAL_NUMBERS[sig] ?? sig}`);
    shutdown(0);
  };
  for (const sig of QUIT_SIGNALS) process.on(sig, onSignal);
  // a stderr nobody reads any more (a dead parent's pipe, a closed terminal)
  // must not turn the clean quit into a crash
  io.stderr.on('error', () => undefined);
  machine.events.once('shutdown', () => shutdown(exitCode));
  // a connection on the migration port that is not this migration's (QEMU's error_report)
  machine.events.on('migration-refused', (why: string) => err(why));
  // an I/O failure in postcopy pauses the migration (QEMU's text; the reason shows in info migrate too)
  machine.events.on('migration-paused', (why: string) => err(`Detected IO failure for postcopy. Migration paused. (${why})`));
  // migrate-incoming with exit-on-error (QEMU 9.1's default for QMP): a failed incoming migration ends the process
  machine.events.on('incoming-exit', (why: string) => { err(`load of migration failed: ${why}`); shutdown(1); });
  if (opts.exitWithParent) {
    try {
      (await import('./native/parent-death.js')).exitWithParent();
    } catch (e) {
      err(`-run-with exit-with-parent=on: ${message(e)}`);
      shutdown(1);
    }
    // it may have ended before the kernel was told to say so
    if (process.ppid !== parentAtStart) { err('the parent process has ended; quitting'); shutdown(0); }
    if (shuttingDown) return finish(await exited);
  }

  for (const q of opts.qmp) {
    try {
      const server = await (qmp as { start: StartQmp }).start(machine, q.spec, registry, { requestQuit: () => shutdown(0) });
      servers.push(server);
    } catch (e) {
      err(message(e));
      shutdown(1);
      return finish(await exited);
    }
  }

  // -daemonize: the caller may connect now
  signalReady(io.env);

  if (opts.monitor === 'stdio') {
    // line editing needs a terminal on both sides; otherwise it is a script
    const interactive = io.stdin.isTTY === true && io.stdout.isTTY === true && !opts.execute;
    // a reader that goes away (`postcopy -e help | head -1`) ends the VM, not a crash
    io.stdout.on('error', () => shutdown(exitCode));
    // colour for people at a terminal; scripts get plain text
    const color = interactive && colorWanted(io.stdout, io.env);
    const info = machine.info();
    const listen = opts.incoming;
    console = new HmpConsole({
      machine, registry, input: io.stdin, output: io.stdout, interactive,
      commands: opts.execute, exitOnError: opts.exitOnError, color,
      historyFile: interactive ? (io.env.POSTCOPY_HISTORY || join(homedir(), '.postcopy_history')) : undefined,
      banner: interactive ? formatBanner(info, version(), color, info.role === 'source', listen) : undefined,
      requestQuit: () => shutdown(0),
    });
    console.start();
    void console.done.then((r) => {
      if (r.end === 'error') shutdown(1);
      else if (r.end === 'eof') shutdown(0);
    });
  }

  return finish(await exited);

  function finish(code: number): number {
    clearInterval(keepAlive);
    for (const sig of QUIT_SIGNALS) process.off(sig, onSignal);
    // whatever native thread or socket might still hold the loop, the VM is over
    setTimeout(() => process.exit(code), 3000).unref();
    return code;
  }
}

export async function main(argv: string[]): Promise<number> {
  let opts: VmOptions;
  try {
    opts = parseVmOptions(argv);
  } catch (e) {
    if (!(e instanceof VmOptionError)) throw e;
    process.stderr.write(`postcopy: ${e.message}\n`);
    return 1;
  }
  if (opts.help) { process.stdout.write(USAGE); return 0; }
  if (opts.version) { process.stdout.write(`postcopy ${version()}\n`); return 0; }
  if (opts.daemonize) return runDaemonized(argv);
  try {
    return await runVm(opts, loadEngine, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env });
  } finally {
    removeOwnedDir(process.env);
  }
}
