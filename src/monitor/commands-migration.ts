// HMP entries for migration: migrate, migrate_incoming, migrate_cancel,
// migrate_start_postcopy, migrate_set_capability, migrate_set_parameter,
// migrate_wait (ours), info migrate [-a], info migrate_capabilities,
// info migrate_parameters, info postcopy_blocktime [-o FILE | -w] (ours; -w
// in watch-blocktime.ts).
// The argument conversions (HMP words -> typed values) and the wait logic are
// exported so QMP entries and tests use the same operations.

import { CommandError } from '../errors.js';
import {
  ALL_CAPABILITIES, IMPLEMENTED_CAPABILITIES, QEMU_PARAMETERS, TERMINAL_STATUSES,
  type CapabilityName, type Machine, type MigrationParameters, type MigrationStatus, type ParameterName,
} from '../migration/api.js';
import type { HmpCommand, Registry } from './registry.js';
import { parseSizeMiB } from './hmp-args.js';
import { formatCapabilities, formatInfoMigrate, formatParameters, formatThrottle } from './format.js';
import { formatBlocktimeQemu, formatBlocktimeRich } from './format-blocktime.js';
import { resumeMigration } from './commands-recovery.js';

// ---------------------------------------------------------------- operations

/** The parameters this engine has, in `info migrate_parameters` order. */
export const PARAMETER_NAMES: readonly ParameterName[] = [
  'throttle-trigger-threshold', 'cpu-throttle-initial', 'cpu-throttle-increment', 'cpu-throttle-tailslow', 'max-cpu-throttle',
  'max-bandwidth', 'max-postcopy-bandwidth', 'downtime-limit', 'x-vcpu-dirty-limit-period', 'vcpu-dirty-limit',
  'x-blocktime-trace', 'x-postcopy-readahead', 'x-postcopy-heartbeat-ms', 'x-migration-psk',
];

/** HMP's string input visitor: the integer parameters and their QAPI types */
const INTEGER_PARAMETERS: Record<string, string> = {
  'throttle-trigger-threshold': 'uint8_t', 'cpu-throttle-initial': 'uint8_t', 'cpu-throttle-increment': 'uint8_t',
  'max-cpu-throttle': 'uint8_t', 'x-vcpu-dirty-limit-period': 'uint64', 'vcpu-dirty-limit': 'uint64',
  'x-postcopy-heartbeat-ms': 'uint64',
};

/** QEMU's text for a name it does not know, with the names this engine has
 *  (as the refusal of a known but unsupported one lists them). */
function unknownName(word: string, supported: readonly string[]): CommandError {
  return new CommandError(`invalid parameter value: ${word} (supported: ${supported.join(', ')})`);
}

/** HMP's capability name check (qapi_enum_parse): unknown names get QEMU's
 *  "invalid parameter value: NAME"; the Machine refuses known ones it does
 *  not implement. */
export function capabilityName(word: string): CapabilityName {
  if (!(ALL_CAPABILITIES as readonly string[]).includes(word)) throw unknownName(word, IMPLEMENTED_CAPABILITIES);
  return word as CapabilityName;
}

/** Size with QEMU's qemu_strtosz (bytes when no suffix). */
function parseSizeBytes(word: string): number | undefined {
  if (/^[0-9]+$/.test(word)) return Number(word);
  const mib = parseSizeMiB(word);
  return /[bBkKmMgGtTpPeE]$/.test(word) ? mib : undefined;
}

/** HMP's migrate_set_parameter value conversion (hmp_migrate_set_parameter):
 *  max-bandwidth is a size in MiB unless suffixed ("Invalid size X"), the
 *  other sizes default to bytes ("Parameter 'X' expects size"). */
export function parameterFromHmp(name: string, value: string): Partial<MigrationParameters> {
  switch (name) {
    case 'max-bandwidth': {
      const v = parseSizeMiB(value);
      if (v === undefined) throw new CommandError(`Invalid size ${value}`);
      return { 'max-bandwidth': v };
    }
    case 'max-postcopy-bandwidth':
    case 'downtime-limit': {
      const v = parseSizeBytes(value);
      if (v === undefined || !Number.isSafeInteger(v)) throw new CommandError(`Parameter '${name}' expects size`);
      return { [name]: v };
    }
    case 'cpu-throttle-tailslow':
      if (value !== 'on' && value !== 'off') throw new CommandError(`Parameter '${name}' expects 'on' or 'off'`);
      return { 'cpu-throttle-tailslow': value === 'on' };
    case 'x-blocktime-trace':
    case 'x-migration-psk':
      return { [name]: value };
    case 'x-postcopy-readahead': {
      if (!/^[0-9]+$/.test(value)) throw new CommandError(`Parameter '${name}' expects a number of pages`);
      return { 'x-postcopy-readahead': Number(value) };
    }
    default:
      if (INTEGER_PARAMETERS[name] !== undefined) {
        const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
        if (!Number.isSafeInteger(n) || (INTEGER_PARAMETERS[name] === 'uint8_t' && n > 255)) {
          throw new CommandError(`Parameter '${name}' expects ${INTEGER_PARAMETERS[name]}`);
        }
        return { [name]: n };
      }
      if (QEMU_PARAMETERS.includes(name)) {
        throw new CommandError(`Parameter '${name}' is not supported by this migration engine (supported: ${PARAMETER_NAMES.join(', ')})`);
      }
      throw unknownName(name, PARAMETER_NAMES);
  }
}

export type WaitOutcome = MigrationStatus | 'interrupted' | 'timeout' | 'shutdown';

/** Resolves when `until(status)` holds for the machine's migration status
 *  (checked at once, then on every 'migration' event), or when the signal
 *  aborts, the timeout passes or the machine shuts down. */
export function waitForMigration(
  machine: Machine, until: (s: MigrationStatus) => boolean,
  opts: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<WaitOutcome> {
  const now = machine.queryMigrate().status;
  if (until(now)) return Promise.resolve(now);
  if (opts.signal?.aborted) return Promise.resolve('interrupted');
  return new Promise((resolve) => {
    const done = (o: WaitOutcome) => {
      machine.events.off('migration', onStatus);
      machine.events.off('shutdown', onShutdown);
      opts.signal?.removeEventListener('abort', onAbort);
      if (timer) clearTimeout(timer);
      resolve(o);
    };
    const onStatus = (s: MigrationStatus) => { if (until(s)) done(s); };
    const onShutdown = () => done('shutdown');
    const onAbort = () => done('interrupted');
    const timer = opts.timeoutMs !== undefined ? setTimeout(() => done('timeout'), opts.timeoutMs) : undefined;
    machine.events.on('migration', onStatus);
    machine.events.on('shutdown', onShutdown);
    opts.signal?.addEventListener('abort', onAbort);
  });
}

const isTerminal = (s: MigrationStatus) => TERMINAL_STATUSES.has(s);

function capabilityOn(machine: Machine, name: CapabilityName): boolean {
  return machine.capabilities().some((c) => c.capability === name && c.state);
}

// ---------------------------------------------------------------- completion

const onOff = ['on', 'off'];

// ---------------------------------------------------------------- entries

const migrate: HmpCommand = {
  name: 'migrate',
  argsType: 'detach:-d,resume:-r,uri:s?',
  params: '[-d] [-r] [uri]',
  help: 'migrate to URI (tcp:HOST:PORT, unix:PATH; none or "local" = the lab: a new destination process on loopback).'
    + ' -d returns at once; without it the command waits for the end of the migration'
    + ' (with postcopy-ram on: until precopy runs, so that migrate_start_postcopy can follow).'
    + ' -r resumes a postcopy-paused migration over URI (the destination ran migrate_recover URI)',
  handler: async (ctx, args) => {
    const m = ctx.machine;
    if (args.flag('resume')) {
      const to = args.optStr('uri');
      if (to === undefined) throw new CommandError("migrate -r needs the URI the destination's migrate_recover listens on");
      return resumeMigration(ctx, to, args.flag('detach'));
    }
    const uri = args.optStr('uri') ?? 'local';
    await m.migrate(uri);
    if (args.flag('detach')) return { text: '' };
    if (!ctx.canWait) return { text: 'terminal does not allow synchronous migration, continuing detached' };
    const postcopy = capabilityOn(m, 'postcopy-ram');
    const outcome = await waitForMigration(m, postcopy ? (s) => s !== 'setup' : isTerminal, { signal: ctx.signal });
    if (outcome === 'interrupted') return { text: "migration continues in the background ('migrate_cancel' stops it)" };
    const info = m.queryMigrate();
    if (info.status === 'failed') throw new CommandError(info['error-desc'] ?? 'migration failed');
    if (postcopy && !isTerminal(info.status) && info.status !== 'postcopy-active') {
      return { text: "postcopy-ram is on and precopy is running: 'migrate_start_postcopy' switches to postcopy, 'migrate_wait' waits for the end" };
    }
    return { text: '', data: info };
  },
  complete: (i) => (i === 0 ? ['-d', 'local', 'tcp:', 'unix:'] : i === 1 ? ['local', 'tcp:', 'unix:'] : []),
};

const migrateWait: HmpCommand = {
  name: 'migrate_wait',
  argsType: 'seconds:i?',
  params: '[seconds]',
  help: "wait until the migration (outgoing, or incoming on a destination) ends; fails when it failed, paused in postcopy or the timeout passed (ours, not QEMU's)",
  handler: async (ctx, args) => {
    const m = ctx.machine;
    const seconds = args.optInt('seconds');
    if (seconds !== undefined && seconds <= 0) throw new CommandError(`Parameter 'seconds' expects a positive number of seconds`);
    const status = m.queryMigrate().status;
    const incoming = m.info().role === 'destination';
    if (status === 'none' && !incoming) return { text: 'no migration to wait for' };
    if (!ctx.canWait) throw new CommandError('this monitor cannot wait; poll query-migrate instead');
    // A finished migration counts only when it is not the one we still expect
    // (a destination at 'none' has not received its migration yet).
    // a postcopy pause ends the wait too: nothing goes on until someone recovers it
    const outcome = await waitForMigration(m, (s) => isTerminal(s) || s === 'postcopy-paused', {
      signal: ctx.signal, timeoutMs: seconds !== undefined ? seconds * 1000 : undefined,
    });
    if (outcome === 'interrupted') return { text: 'stopped waiting; the migration goes on' };
    if (outcome === 'timeout') throw new CommandError(`migration still ${m.queryMigrate().status} after ${seconds} s`);
    if (outcome === 'shutdown') throw new CommandError('the VM is shutting down');
    const info = m.queryMigrate();
    if (info.status === 'failed') throw new CommandError(info['error-desc'] ?? 'migration failed');
    if (info.status === 'postcopy-paused') {
      const how = incoming ? "'migrate_recover URI' here, then 'migrate -r URI' on the source" : "'migrate_recover URI' on the destination, then 'migrate -r URI' here";
      throw new CommandError(`migration paused in postcopy (${info['error-desc'] ?? 'no reason given'}): ${how} resumes it`);
    }
    return { text: '', data: info };
  },
};

const migrateIncoming: HmpCommand = {
  name: 'migrate_incoming',
  argsType: 'uri:s',
  params: 'uri',
  help: 'Continue an incoming migration from an -incoming defer (or again after a failed attempt)',
  // as QEMU's HMP: exit-on-error off (the VM stays up in failed state)
  handler: async (ctx, args) => { await ctx.machine.migrateIncoming(args.str('uri'), false); return { text: '' }; },
  complete: (i) => (i === 0 ? ['tcp:', 'unix:'] : []),
};

const migrateCancel: HmpCommand = {
  name: 'migrate_cancel',
  argsType: '',
  params: '',
  help: 'cancel the current VM migration (in postcopy the guest is lost on both sides: the console asks first)',
  handler: async (ctx) => {
    const m = ctx.machine;
    if (m.queryMigrate().status !== 'postcopy-active') { await m.cancel(); return { text: '' }; }
    const loss = 'the guest runs on the destination with part of its RAM still here, so cancelling loses it on both sides'
      + ' (the destination fails, this VM stays stopped)';
    if (!ctx.confirm) {
      await m.cancel();
      return { text: `Warning: cancelled in postcopy: ${loss}` };
    }
    if (!await ctx.confirm(`Warning: the migration is in postcopy: ${loss}\nCancel it anyway? (y/N) `)) return { text: 'not cancelled' };
    await m.cancel();
    return { text: '' };
  },
};

const migrateStartPostcopy: HmpCommand = {
  name: 'migrate_start_postcopy',
  argsType: '',
  params: '',
  help: 'Followup to a migration command to switch the migration to postcopy mode.'
    + ' The postcopy-ram capability must be set on the source before the original migration command;'
    + ' the destination needs none (the stream tells it postcopy may come), only userfaultfd.',
  handler: async (ctx) => { await ctx.machine.startPostcopy(); return { text: '' }; },
};

const migrateSetCapability: HmpCommand = {
  name: 'migrate_set_capability',
  argsType: 'capability:s,state:b',
  params: 'capability state',
  help: `Enable/Disable the usage of a capability for migration (implemented: ${IMPLEMENTED_CAPABILITIES.join(', ')})`,
  handler: async (ctx, args) => {
    const capability = capabilityName(args.str('capability'));
    await ctx.machine.setCapabilities([{ capability, state: args.bool('state') }]);
    return { text: '' };
  },
  complete: (i) => (i === 0 ? IMPLEMENTED_CAPABILITIES : i === 1 ? onOff : []),
};

const migrateSetParameter: HmpCommand = {
  name: 'migrate_set_parameter',
  argsType: 'parameter:s,value:s',
  params: 'parameter value',
  help: `Set the parameter for migration (${PARAMETER_NAMES.join(', ')}; max-bandwidth in MiB/s unless suffixed, downtime-limit in ms)`,
  handler: async (ctx, args) => {
    await ctx.machine.setParameters(parameterFromHmp(args.str('parameter'), args.str('value')));
    return { text: '' };
  },
  complete: (i) => (i === 0 ? PARAMETER_NAMES : []),
};

const infoMigrate: HmpCommand = {
  name: 'migrate',
  argsType: 'all:-a',
  params: '[-a]',
  help: 'show migration status (-a: all details: the cpu throttle and dirty limit, the postcopy blocktime block)',
  handler: async (ctx, args) => {
    const info = ctx.machine.queryMigrate();
    const lines = formatInfoMigrate(info);
    if (args.flag('all')) {
      lines.push(...formatThrottle(info));
      const report = await ctx.machine.blocktime();
      // a real QEMU's `info migrate -a` shows its own figures, as many as it has
      const qemu = report?.['x-qemu'];
      if (qemu) lines.push(...formatBlocktimeQemu(qemu.fields ?? {}, qemu.fields ? `QEMU ${qemu.version} reports none` : qemu.why));
      else if (report) lines.push(...formatBlocktimeQemu(report));
    }
    return { text: lines.join('\n'), data: info };
  },
  complete: (i) => (i === 0 ? ['-a'] : []),
};

const infoMigrateCapabilities: HmpCommand = {
  name: 'migrate_capabilities',
  argsType: '',
  params: '',
  help: 'show current migration capabilities',
  handler: async (ctx) => {
    const caps = ctx.machine.capabilities();
    return { text: formatCapabilities(caps).join('\n'), data: caps };
  },
};

const infoMigrateParameters: HmpCommand = {
  name: 'migrate_parameters',
  argsType: '',
  params: '',
  help: 'show current migration parameters',
  handler: async (ctx) => {
    const params = ctx.machine.parameters();
    return { text: formatParameters(params).join('\n'), data: params };
  },
};

/** `info postcopy_blocktime -o FILE.html`: the HTML report (src/report/) of
 *  this destination's trace so far; the events are in the x-blocktime-trace
 *  file, so without one there is nothing to draw. */
export async function blocktimeHtml(m: Machine, out: string | undefined): Promise<string> {
  if (out === undefined || out === '') throw new CommandError('-o needs a file name: info postcopy_blocktime -o FILE.html');
  const trace = m.parameters()['x-blocktime-trace'];
  if (trace === undefined || trace === '') {
    throw new CommandError('-o draws the events of the x-blocktime-trace file, and none is set: '
      + 'migrate_set_parameter x-blocktime-trace PATH here before postcopy starts');
  }
  const { writeHtmlReport } = await import('../report/build-report.js');
  const status = m.queryMigrate().status;
  if (!isTerminal(status)) await m.blocktime(); // a live report flushes the trace: it holds what is accounted so far
  const bytes = await writeHtmlReport([{ path: trace }], out);
  const live = isTerminal(status) ? '' : ' (live: the events accounted so far)';
  return `wrote ${out} (${Math.ceil(bytes / 1024)} KiB) from ${trace}${live}`;
}

const infoPostcopyBlocktime: HmpCommand = {
  name: 'postcopy_blocktime',
  argsType: 'html:-o,watch:-w,file:s?',
  params: '[-o FILE.html | -w [SECONDS]]',
  help: "show the vCPU blocktime measured on the destination during postcopy (live or final; ours, not QEMU's);"
    + ' -o FILE.html: write the pictures of the x-blocktime-trace file so far to FILE.html;'
    + ' -w [SECONDS]: redraw every half second while postcopy runs, until it ends, SECONDS pass or a key is pressed',
  handler: async (ctx, args) => {
    if (args.flag('watch')) {
      if (args.flag('html')) throw new CommandError('-o and -w are two outputs: give one of them');
      const { watchBlocktime, watchSeconds } = await import('./watch-blocktime.js');
      return { text: await watchBlocktime(ctx, watchSeconds(args.optStr('file'))) };
    }
    if (args.flag('html') || args.optStr('file') !== undefined) {
      if (!args.flag('html')) throw new CommandError(`unexpected argument '${args.optStr('file') as string}' (to write the report: -o FILE.html; to watch: -w [SECONDS])`);
      return { text: await blocktimeHtml(ctx.machine, args.optStr('file')) };
    }
    const report = await ctx.machine.blocktime();
    if (!report) {
      const role = ctx.machine.info().role;
      const info = ctx.machine.queryMigrate();
      if (info.status !== 'none' && info.status !== 'postcopy-active' && !info.ram?.['postcopy-bytes']) {
        const how = 'blocktime is measured only in postcopy: migrate_set_capability postcopy-ram on before migrate, then migrate_start_postcopy';
        if (isTerminal(info.status)) {
          return { text: `No blocktime figures: the migration ${info.status === 'completed' ? 'completed' : `ended (${info.status})`} without entering postcopy (${how})` };
        }
        return {
          text: role === 'destination' || capabilityOn(ctx.machine, 'postcopy-ram')
            ? 'No blocktime figures yet: postcopy has not started (they start with it: migrate_start_postcopy)'
            : `No blocktime figures: this migration runs without postcopy-ram (${how})`,
        };
      }
      return {
        text: role === 'destination'
          ? 'No blocktime figures: turn on the postcopy-blocktime capability here before the migration starts, then migrate with postcopy.'
          : 'No blocktime figures: blocktime is measured on the destination. Ask the destination\'s monitor, or migrate'
            + ' to the lab (migrate with no URI) with postcopy-ram and postcopy-blocktime on and it is fetched from there.',
      };
    }
    return { text: formatBlocktimeRich(report, { color: ctx.color }), data: report };
  },
  complete: (i) => (i === 0 ? ['-o', '-w'] : []),
};

/** Adds the migration entries to a registry. */
export function addMigrationCommands(r: Registry): Registry {
  r.addHmp(migrate).addHmp(migrateIncoming).addHmp(migrateCancel).addHmp(migrateStartPostcopy)
    .addHmp(migrateSetCapability).addHmp(migrateSetParameter).addHmp(migrateWait);
  r.addInfo(infoMigrate).addInfo(infoMigrateCapabilities).addInfo(infoMigrateParameters).addInfo(infoPostcopyBlocktime);
  return r;
}
