// The VM command line in QEMU's spelling: -m, -smp, -incoming, -qmp,
// -monitor, -S, plus ours (-workload, -e, --exit-on-error). Every option also
// takes the double-dash spelling (--smp 4), and "-opt=value" as QEMU allows.
// Parsing is pure: it returns the options or throws VmOptionError naming the
// option and what is wrong; vm-main prints that and exits with status 1.
// With no arguments at all the result is the lab of `npm start`: a source VM
// of 256 MiB, 2 vCPUs, the `sweep` workload, the console on stdio.

import { CommandError } from './errors.js';
import { parseMigrationUri } from './migration/uri.js';
import { MAX_VCPUS, parseSize, parseSmp } from './vm/size.js';
import { parseWorkload } from './vm/workload.js';
import {
  emptyMemoryOptions, parseMachineOption, parseNumaNode, resolveMemory, workloadBlocks, type MemoryBackend, type MemoryOptions,
} from './vm/memory-backend.js';

export class VmOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VmOptionError';
  }
}

/** A parsed `-qmp` value; vm-main hands `spec` to startQmpServer, which
 *  checks the transport options in detail. */
export interface QmpOption {
  /** the -qmp argument as given, e.g. "unix:/tmp/q.sock,server=on,wait=off" */
  spec: string;
  transport: 'unix' | 'tcp';
  /** unix: the socket path; tcp: "HOST:PORT" */
  address: string;
}

export interface VmOptions {
  ramBytes: number;
  /** what backs guest RAM (-mem-path, -object memory-backend-*), null = anonymous 4 KiB pages (or several blocks) */
  memoryBackend: MemoryBackend | null;
  /** the backends of guest RAM's blocks, in order (-numa node,memdev=ID repeated: several; [] = anonymous pc.ram) */
  memoryBackends: MemoryBackend[];
  /** the memory options as given (resolved into ramBytes and memoryBackend once all are read) */
  memory: MemoryOptions;
  /** -m was given */
  ramGiven: boolean;
  vcpus: number;
  /** workload spec text, NAME[,key=value...] (parsed by the vm module) */
  workload: string;
  /** -incoming: a URI (tcp:HOST:PORT, unix:PATH) or "defer" */
  incoming?: string;
  qmp: QmpOption[];
  monitor: 'stdio' | 'none';
  /** -S: vCPUs start paused */
  startPaused: boolean;
  /** -e: console commands to run instead of reading stdin */
  execute?: string[];
  /** --exit-on-error: the first failing console command ends the process (status 1) */
  exitOnError: boolean;
  /** -run-with exit-with-parent=on: quit when the parent process ends (PR_SET_PDEATHSIG) */
  exitWithParent: boolean;
  /** -daemonize: run in the background; the command returns once the VM is ready */
  daemonize: boolean;
  help: boolean;
  version: boolean;
}

export const DEFAULT_RAM_BYTES = 256 * 2 ** 20;
export const DEFAULT_VCPUS = 2;
export const DEFAULT_WORKLOAD = 'sweep';
export { MAX_VCPUS };

export const USAGE = `usage: postcopy [options]
       postcopy run [options]             batch source+destination run (see 'postcopy run --help')
       postcopy blocktime-replay FILE     report of a recorded blocktime trace

One VM per process, driven like QEMU. With no options: the local lab, a
source VM (256 MiB, 2 vCPUs, workload 'sweep') with the console on stdio;
'migrate' with no URI starts a matching destination process on loopback.

Options (QEMU spelling; --name works too):
  -m SIZE            guest RAM (default 256M; suffixes K M G T, MiB when none)
  -mem-path DIR      back guest RAM with a file on the hugetlbfs mount DIR
                     (its huge pages: the unit of faults and transfers)
  -mem-prealloc      populate guest RAM at start
  -object memory-backend-file,id=ID,mem-path=DIR,size=SIZE[,prealloc=on][,share=on]
  -object memory-backend-ram,id=ID,size=SIZE[,prealloc=on]
                     a memory backend, used with -machine memory-backend=ID
                     or -numa node,memdev=ID (one RAM block each; repeat
                     -numa for several blocks)
  -smp N             number of vCPUs, 1..512 (default 2; cpus=N and
                     sockets/cores/threads spellings accepted)
  -workload NAME[,key=value...]
                     what the vCPUs run (default sweep): sweep, random,
                     hotset, idle; keys e.g. start=, end=, seed=, fraction=,
                     block=ID (start/end inside that RAM block)
  -incoming URI      wait for an incoming migration: tcp:HOST:PORT, unix:PATH,
                     or defer (start it later with migrate_incoming)
  -qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off
                     QMP server (may be given more than once)
  -monitor stdio|none
                     the HMP console on stdin/stdout (default) or none
  -S                 start with the vCPUs paused ('cont' starts them)
  -daemonize         run in the background (needs -monitor none); returns
                     once the QMP sockets and -incoming listen
  -run-with exit-with-parent=on
                     quit when the process that started this one ends (the
                     lab and 'postcopy run' start their VMs so)
  -e 'CMD; CMD'      run these console commands, then quit
  --exit-on-error    in a script or -e, the first failing command ends the
                     process with status 1 (otherwise errors print and the
                     script goes on)
  -h, --help         this help
  --version          the version
`;

/** QEMU -m, parsed by the vm module (plain number = MiB, K/M/G/T, a
 *  positive page multiple up to 1T). */
export function parseRamSize(text: string): number {
  return asOptionError('-m', text, () => parseSize(text.startsWith('size=') ? text.slice(5) : text));
}

/** QEMU -smp ("4", "cpus=4", "4,sockets=1,cores=2,threads=2"), by the vm module. */
export function parseSmpOption(text: string): number {
  return asOptionError('-smp', text, () => parseSmp(text));
}

function asOptionError<T>(option: string, value: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof CommandError) {
      throw new VmOptionError(option === '' || e.message.startsWith(option) ? e.message : `${option} ${value}: ${e.message}`);
    }
    throw e;
  }
}

/** -incoming: "defer" or a migration URI, checked by the migration code's
 *  parser so that both report a bad address the same way. */
export function parseIncoming(text: string): string {
  if (text === 'defer') return text;
  try {
    parseMigrationUri(text);
  } catch (e) {
    throw new VmOptionError(`-incoming ${text}: ${e instanceof Error ? e.message : String(e)} (or 'defer')`);
  }
  return text;
}

/** Checks the form of -qmp (transport and address); startQmpServer checks
 *  the server=/wait= options with its own messages. */
export function parseQmpOption(text: string): QmpOption {
  const head = text.split(',')[0];
  if (head.startsWith('unix:') && head.length > 5) return { spec: text, transport: 'unix', address: head.slice(5) };
  if (/^tcp:.*:[0-9]+$/.test(head)) return { spec: text, transport: 'tcp', address: head.slice(4) };
  throw new VmOptionError(`-qmp ${text}: expected unix:PATH,server=on,wait=off or tcp:HOST:PORT,server=on,wait=off`);
}

/** QEMU's -run-with; of its keys only exit-with-parent=on|off. */
export function parseRunWith(text: string): boolean {
  let on = false;
  for (const kv of text.split(',')) {
    const [k, v] = kv.split('=');
    if (k !== 'exit-with-parent') throw new VmOptionError(`-run-with ${text}: '${k}' is not supported (only exit-with-parent=on|off)`);
    if (v !== 'on' && v !== 'off') throw new VmOptionError(`-run-with ${text}: exit-with-parent takes on or off`);
    on = v === 'on';
  }
  return on;
}

/** Splits a -e one-liner on ';' outside double quotes. */
export function splitCommands(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '\\' && quoted && i + 1 < text.length) { cur += ch + text[++i]; continue; }
    if (ch === '"') quoted = !quoted;
    if (ch === ';' && !quoted) { out.push(cur); cur = ''; continue; }
    cur += ch;
  }
  out.push(cur);
  return out.map((s) => s.trim()).filter((s) => s !== '');
}

type Handler = (v: string, o: VmOptions) => void;

function machineOption(v: string, o: VmOptions): void {
  o.memory.machineBackend = asOptionError('-machine', v, () => parseMachineOption(v)) ?? o.memory.machineBackend;
}

/** Options that take a value, by name (without dashes). */
const WITH_VALUE: Record<string, Handler> = {
  m: (v, o) => { o.ramBytes = parseRamSize(v); o.ramGiven = true; },
  'mem-path': (v, o) => { o.memory.memPath = v; },
  object: (v, o) => { o.memory.objects.push(v); },
  machine: machineOption,
  M: machineOption,
  numa: (v, o) => { o.memory.numaMemdevs.push(asOptionError('-numa', v, () => parseNumaNode(v))); },
  smp: (v, o) => { o.vcpus = parseSmpOption(v); },
  workload: (v, o) => { o.workload = v; }, // checked against -m once all options are read
  incoming: (v, o) => { o.incoming = parseIncoming(v); },
  qmp: (v, o) => { o.qmp.push(parseQmpOption(v)); },
  'run-with': (v, o) => { o.exitWithParent = parseRunWith(v); },
  monitor: (v, o) => {
    if (v !== 'stdio' && v !== 'none') throw new VmOptionError(`-monitor ${v}: only 'stdio' and 'none' are supported`);
    o.monitor = v;
  },
  e: (v, o) => {
    const cmds = splitCommands(v);
    if (cmds.length === 0) throw new VmOptionError(`-e: no command given`);
    o.execute = [...(o.execute ?? []), ...cmds];
  },
};

/** Options that may be given more than once. */
const REPEATABLE = new Set(['qmp', 'e', 'object', 'numa', 'machine', 'M']);

/** Options without a value. */
const FLAGS: Record<string, (o: VmOptions) => void> = {
  S: (o) => { o.startPaused = true; },
  'mem-prealloc': (o) => { o.memory.memPrealloc = true; },
  'exit-on-error': (o) => { o.exitOnError = true; },
  daemonize: (o) => { o.daemonize = true; },
  h: (o) => { o.help = true; },
  help: (o) => { o.help = true; },
  version: (o) => { o.version = true; },
};

export function defaultVmOptions(): VmOptions {
  return {
    ramBytes: DEFAULT_RAM_BYTES, memoryBackend: null, memoryBackends: [], memory: emptyMemoryOptions(), ramGiven: false, vcpus: DEFAULT_VCPUS, workload: DEFAULT_WORKLOAD, qmp: [],
    monitor: 'stdio', startPaused: false, exitOnError: false, exitWithParent: false, daemonize: false, help: false, version: false,
  };
}

/** Parses the VM command line (argv without node and script). */
export function parseVmOptions(argv: readonly string[]): VmOptions {
  const o = defaultVmOptions();
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('-') || arg === '-' || arg === '--') {
      throw new VmOptionError(`unexpected argument '${arg}' (options start with '-'; see --help)`);
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq > 0 ? body.slice(0, eq) : body;
    const inline = eq > 0 ? body.slice(eq + 1) : undefined;
    if (name in FLAGS) {
      if (inline !== undefined) throw new VmOptionError(`-${name} takes no value`);
      FLAGS[name](o);
      continue;
    }
    const handler = WITH_VALUE[name];
    if (!handler) throw new VmOptionError(`unknown option '${arg}' (see --help)`);
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new VmOptionError(`-${name} needs a value (see --help)`);
      value = argv[++i];
    }
    if (seen.has(name) && !REPEATABLE.has(name)) throw new VmOptionError(`-${name} given twice`);
    seen.add(name);
    handler(value, o);
  }
  const mem = asOptionError('', '', () => resolveMemory(o.memory, o.ramGiven ? o.ramBytes : undefined, DEFAULT_RAM_BYTES));
  o.ramBytes = mem.ramBytes;
  o.memoryBackend = mem.backend;
  o.memoryBackends = mem.backends;
  asOptionError('-workload', o.workload, () => parseWorkload(o.workload, o.ramBytes, workloadBlocks(o.memoryBackends, o.ramBytes)));
  if (o.monitor === 'none' && o.execute) throw new VmOptionError(`-e needs the console: drop '-monitor none'`);
  if (o.daemonize && o.monitor === 'stdio') {
    throw new VmOptionError('-daemonize needs -monitor none: a daemon has no terminal for the console (drive it with -qmp)');
  }
  return o;
}
