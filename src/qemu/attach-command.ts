// `postcopy attach SOURCE_QMP [--destination DEST_QMP] [--destination-trace FILE]`:
// the HMP console (the one command registry, src/monitor/) on a real QEMU
// through its QMP socket, interactive on a terminal, a script on a pipe, as
// on our own VMs. The commands that make sense for a QEMU are the registry's
// own entries (Registry.subset), run against a QemuMachine; those that go to
// the destination say so in their help. QEMU's events print as they arrive;
// a QEMU that goes away is reported and the console stays.

import { homedir } from 'node:os';
import { join } from 'node:path';
import { CommandError } from '../errors.js';
import { QmpClient } from '../qmp/client.js';
import { createRegistry } from '../monitor/commands.js';
import { HmpConsole } from '../monitor/hmp.js';
import { colorWanted, formatQmpEvent } from '../monitor/format.js';
import type { Registry } from '../monitor/registry.js';
import { QemuMachine } from './qemu-machine.js';

const USAGE = `usage: postcopy attach SOURCE_QMP [--destination DEST_QMP] [--destination-trace FILE]
  SOURCE_QMP, DEST_QMP: unix:PATH, tcp:HOST:PORT or a socket path (a QEMU's -qmp)
  --destination-trace FILE: the destination's trace log (-D FILE, docs/qemu.md): exact blocktime, live
`;

/** How long a QMP socket may take to greet before the console says why. */
export const GREETING_MS = 3000;

/** The registry's commands that drive a QEMU, and where attach sends them. */
export function attachRegistry(full: Registry = createRegistry()): Registry {
  return full.subset({
    hmp: ['help', 'info', 'stop', 'cont', 'quit', 'migrate', 'migrate_incoming', 'migrate_cancel', 'migrate_start_postcopy',
      'migrate_set_capability', 'migrate_set_parameter', 'migrate_wait'],
    info: ['status', 'cpus', 'migrate', 'migrate_capabilities', 'migrate_parameters', 'postcopy_blocktime'],
  }, {
    'migrate': "attach: to the URI the destination QEMU listens on (its -incoming); there is no lab",
    'migrate_set_capability': 'attach: set on the source and on --destination (a QEMU destination needs postcopy-ram too)',
    'migrate_incoming': 'attach: goes to --destination',
    'migrate_start_postcopy': 'attach: a QEMU destination needs postcopy-ram on as well',
    'migrate_wait': 'attach: until both QEMUs are done',
    'quit': 'attach: detaches; the QEMUs keep running',
    'info postcopy_blocktime': "attach: the destination's; exact and live with --destination-trace, QEMU's own once it completed",
    'info migrate': "attach: the source's; -a adds the destination's own blocktime fields",
  });
}

interface AttachArgs { source: string; destination?: string; trace?: string }

function parseArgs(argv: string[]): AttachArgs | string {
  const pos: string[] = [];
  let destination: string | undefined;
  let trace: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--destination' || a === '--destination-trace') {
      const v = argv[++i];
      if (v === undefined || v === '') return `${a} needs a value`;
      if (a === '--destination') destination = v; else trace = v;
    } else if (a.startsWith('-')) {
      return `unknown option '${a}'`;
    } else {
      pos.push(a);
    }
  }
  if (pos.length !== 1) return pos.length === 0 ? 'no SOURCE_QMP given' : `one SOURCE_QMP only (got ${pos.join(' ')})`;
  if (trace !== undefined && destination === undefined) return '--destination-trace needs --destination DEST_QMP (the vCPU thread ids come from its query-cpus-fast)';
  return { source: pos[0], destination, trace };
}

async function connect(side: string, address: string): Promise<QmpClient> {
  try {
    return await QmpClient.connect(address, { timeoutMs: GREETING_MS });
  } catch (e) {
    throw new CommandError(`the ${side} QEMU: ${(e as Error).message}`);
  }
}

export async function main(argv: string[], io = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) { io.stdout.write(USAGE); return 0; }
  const args = parseArgs(argv);
  if (typeof args === 'string') { io.stderr.write(`postcopy: attach: ${args}\n${USAGE}`); return 2; }

  let machine: QemuMachine;
  try {
    const source = await connect('source', args.source);
    let destination: QmpClient | undefined;
    try {
      destination = args.destination !== undefined ? await connect('destination', args.destination) : undefined;
      machine = await QemuMachine.attach({ source, destination, destinationTrace: args.trace });
    } catch (e) {
      await source.close();
      await destination?.close();
      throw e;
    }
  } catch (e) {
    io.stderr.write(`postcopy: attach: ${(e as Error).message}\n`);
    return 1;
  }

  const interactive = io.stdin.isTTY === true && io.stdout.isTTY === true;
  const color = interactive && colorWanted(io.stdout, io.env);
  io.stdout.on('error', () => undefined);
  const banner = `postcopy attach -- QEMU's migration from the HMP console; type 'help' for commands\n${machine.describe().map((l) => `  ${l}\n`).join('')}`;
  const console = new HmpConsole({
    machine, registry: attachRegistry(), input: io.stdin, output: io.stdout, interactive,
    exitOnError: false, color,
    historyFile: interactive ? (io.env.POSTCOPY_HISTORY || join(homedir(), '.postcopy_history')) : undefined,
    banner: interactive ? banner : undefined,
    requestQuit: () => undefined, // the console ends itself; what follows is the detach
  });
  if (!interactive) io.stdout.write(banner);
  machine.events.on('qemu-event', (side: string, e: Parameters<typeof formatQmpEvent>[1]) => console.notice(formatQmpEvent(side, e)));
  machine.events.on('qemu-gone', (_side: string, message: string) => console.notice(message));
  console.start();
  const r = await console.done;
  await machine.quit();
  return r.end === 'error' ? 1 : 0;
}
