// The QMP commands, registered into the one command registry (registry.ts)
// with QEMU's names, argument schemas and return shapes. Each is a thin
// adapter from QMP's JSON to the Machine (src/migration/api.ts); nested
// arguments are checked with QEMU's texts (qmp-args.ts). Session-level
// behaviour (negotiation, ids, events) lives in qmp.ts.

import { CommandError } from '../errors.js';
import { ALL_CAPABILITIES, type CapabilityState, type MigrationParameters } from '../migration/api.js';
import type { CommandContext, QmpCommand, Registry } from './registry.js';
import { checkQapi, type QapiType } from './qmp-args.js';

/** The version we announce (greeting, query-version): QEMU-like numbers, our package name. */
export const QMP_VERSION = { qemu: { micro: 0, minor: 1, major: 10 }, package: 'postcopy 0.1.0' } as const;

/** QMP capabilities we could offer in the greeting; we implement none (no 'oob'). */
export const QMP_CAPABILITIES_OFFERED: readonly string[] = [];
/** QEMU's QMPCapability enum (what qmp_capabilities' "enable" may name). */
export const QMP_CAPABILITY_NAMES = ['oob'] as const;

const capabilitiesType: QapiType = {
  list: { struct: { capability: { enum: ALL_CAPABILITIES }, state: 'bool' } },
};

/** Checks qmp_capabilities' "enable" list; throws QEMU's error for what we do not offer. */
export function checkQmpCapabilitiesEnable(enable: unknown): void {
  if (enable === undefined) return;
  checkQapi({ list: { enum: QMP_CAPABILITY_NAMES } }, enable, 'enable');
  for (const cap of enable as string[]) {
    if (!QMP_CAPABILITIES_OFFERED.includes(cap)) throw new CommandError(`Capability '${cap}' not available`);
  }
}

function qomPath(index: number): string {
  return `/machine/unattached/device[${index}]`;
}

function target(): string {
  return process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : process.arch;
}

/** Every QMP command this program implements. `qmp_capabilities` is here for
 *  query-commands and for the error after negotiation; before negotiation the
 *  server handles it itself. */
export function qmpCommands(): QmpCommand[] {
  const empty = {};
  return [
    {
      name: 'qmp_capabilities',
      args: [{ name: 'enable', type: 'array', optional: true }],
      help: 'leave capabilities negotiation mode',
      handler: async () => {
        throw new CommandError('Capabilities negotiation is already complete, command ignored', 'CommandNotFound');
      },
    },
    {
      name: 'query-commands',
      args: [],
      help: 'list the QMP commands',
      handler: async (ctx) => ctx.registry.qmpCommands().map((c) => ({ name: c.name })),
    },
    {
      name: 'query-version',
      args: [],
      help: 'the version of this program',
      handler: async () => ({ qemu: { ...QMP_VERSION.qemu }, package: QMP_VERSION.package }),
    },
    {
      name: 'query-status',
      args: [],
      help: 'the run state of the VM',
      handler: async (ctx) => {
        const status = ctx.machine.runState();
        return { running: status === 'running', status };
      },
    },
    {
      name: 'query-cpus-fast',
      args: [],
      help: 'vCPUs with their thread ids',
      handler: async (ctx) => ctx.machine.cpus().map((c) => ({
        'cpu-index': c.index,
        'qom-path': qomPath(c.index),
        'thread-id': c.threadId,
        props: { 'socket-id': c.index, 'core-id': 0, 'thread-id': 0 },
        target: target(),
      })),
    },
    {
      name: 'stop',
      args: [],
      help: 'stop all vCPUs',
      handler: async (ctx) => { await ctx.machine.stop(); return empty; },
    },
    {
      name: 'cont',
      args: [],
      help: 'resume all vCPUs',
      handler: async (ctx) => { await ctx.machine.cont(); return empty; },
    },
    {
      name: 'quit',
      args: [],
      help: 'quit the VM process (after this reply)',
      handler: async (ctx) => { ctx.requestQuit(); return empty; },
    },
    {
      name: 'human-monitor-command',
      args: [{ name: 'command-line', type: 'str' }, { name: 'cpu-index', type: 'int', optional: true }],
      help: 'run an HMP console command and return its text',
      handler: async (ctx, args) => {
        const cpu = args['cpu-index'];
        if (cpu !== undefined && !ctx.machine.cpus().some((c) => c.index === cpu)) {
          throw new CommandError("Parameter 'cpu-index' expects a CPU number");
        }
        const hmpCtx: CommandContext = { ...ctx, canWait: false, color: false, progress: undefined };
        const r = await ctx.registry.runHmp(hmpCtx, args['command-line'] as string);
        return r.text;
      },
    },
    {
      name: 'query-migrate',
      args: [],
      help: 'migration status and statistics (destination: blocktime)',
      // before any migration QEMU answers {} (no "status"), and so do we
      handler: async (ctx) => {
        const info = ctx.machine.queryMigrate();
        return info.status === 'none' ? {} : info;
      },
    },
    {
      name: 'query-migrate-capabilities',
      args: [],
      help: 'migration capabilities and their state',
      handler: async (ctx) => ctx.machine.capabilities(),
    },
    {
      name: 'migrate-set-capabilities',
      args: [{ name: 'capabilities', type: 'array' }],
      help: 'turn migration capabilities on or off',
      handler: async (ctx, args) => {
        checkQapi(capabilitiesType, args.capabilities, 'capabilities');
        await ctx.machine.setCapabilities(args.capabilities as CapabilityState[]);
        return empty;
      },
    },
    {
      name: 'query-migrate-parameters',
      args: [],
      help: 'migration parameters',
      handler: async (ctx) => ctx.machine.parameters(),
    },
    {
      name: 'migrate-set-parameters',
      args: [
        { name: 'throttle-trigger-threshold', type: 'int', optional: true },
        { name: 'cpu-throttle-initial', type: 'int', optional: true },
        { name: 'cpu-throttle-increment', type: 'int', optional: true },
        { name: 'cpu-throttle-tailslow', type: 'bool', optional: true },
        { name: 'max-cpu-throttle', type: 'int', optional: true },
        { name: 'x-vcpu-dirty-limit-period', type: 'int', optional: true },
        { name: 'vcpu-dirty-limit', type: 'int', optional: true },
        { name: 'max-bandwidth', type: 'int', optional: true },
        { name: 'downtime-limit', type: 'int', optional: true },
        { name: 'max-postcopy-bandwidth', type: 'int', optional: true },
        { name: 'x-blocktime-trace', type: 'str', optional: true },
        { name: 'x-postcopy-readahead', type: 'int', optional: true },
        { name: 'x-postcopy-heartbeat-ms', type: 'int', optional: true },
        { name: 'x-migration-psk', type: 'str', optional: true },
      ],
      help: 'set migration parameters',
      handler: async (ctx, args) => {
        await ctx.machine.setParameters(args as Partial<MigrationParameters>);
        return empty;
      },
    },
    {
      name: 'migrate',
      args: [
        { name: 'uri', type: 'str' },
        { name: 'detach', type: 'bool', optional: true },
        { name: 'resume', type: 'bool', optional: true },
      ],
      help: 'start an outgoing migration (returns at once; watch MIGRATION events or query-migrate)',
      handler: async (ctx, args) => {
        await ctx.machine.migrate(args.uri as string, args.resume === true);
        return empty;
      },
    },
    {
      name: 'migrate-pause',
      args: [],
      help: 'pause a postcopy migration (postcopy-active or postcopy-recover): both sides drop the channels and wait in postcopy-paused',
      handler: async (ctx) => { await ctx.machine.migratePause(); return empty; },
    },
    {
      name: 'migrate-recover',
      args: [{ name: 'uri', type: 'str' }],
      help: "on a postcopy-paused destination: listen on uri for the source's recovery (migrate with resume)",
      handler: async (ctx, args) => { await ctx.machine.migrateRecover(args.uri as string); return empty; },
    },
    {
      name: 'migrate-incoming',
      args: [{ name: 'uri', type: 'str' }, { name: 'exit-on-error', type: 'bool', optional: true }],
      help: 'start listening for an incoming migration (-incoming defer, or again after a failed attempt); exit-on-error (default true, as QEMU 9.1): a failure ends the process',
      handler: async (ctx, args) => { await ctx.machine.migrateIncoming(args.uri as string, args['exit-on-error'] !== false); return empty; },
    },
    {
      name: 'migrate-start-postcopy',
      args: [],
      help: 'switch a running migration to postcopy',
      handler: async (ctx) => { await ctx.machine.startPostcopy(); return empty; },
    },
    {
      name: 'migrate_cancel',
      args: [],
      help: 'cancel the current migration',
      handler: async (ctx) => { await ctx.machine.cancel(); return empty; },
    },
    {
      name: 'x-query-blocktime',
      args: [],
      help: "the destination's blocktime report (also fetched from a 'local' lab destination)",
      handler: async (ctx) => {
        const r = await ctx.machine.blocktime();
        if (!r) throw new CommandError('No blocktime report: this VM was no postcopy destination with the postcopy-blocktime capability on');
        return r;
      },
    },
    {
      name: 'x-query-ram-digest',
      args: [{ name: 'first-page', type: 'int', optional: true }, { name: 'page-count', type: 'int', optional: true }],
      help: 'per-page digests of guest RAM (16 hex digits per page, lowest first; default all pages, else page-count from first-page)',
      handler: async (ctx, args) => {
        const info = ctx.machine.info();
        const digest = ctx.machine.ramDigest(args['first-page'] as number | undefined, args['page-count'] as number | undefined);
        return { 'page-size': info.pageSize, pages: Math.floor(info.ramBytes / info.pageSize), digest };
      },
    },
  ];
}

/** Adds the QMP commands to the registry; an entry someone else registered
 *  under the same name is kept. */
export function registerQmpCommands(registry: Registry): Registry {
  for (const cmd of qmpCommands()) {
    if (!registry.qmp(cmd.name)) registry.addQmp(cmd);
  }
  return registry;
}
