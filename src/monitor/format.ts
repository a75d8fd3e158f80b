// Text rendering for the HMP console (everything but the blocktime views,
// which live in format-blocktime.ts). The `info` outputs keep QEMU's exact
// line formats (QEMU 10.x migration-hmp-cmds.c, machine-hmp-cmds.c,
// runstate-hmp-cmds.c) so scripts written against QEMU keep working; colour
// and tables (chalk, cli-table3) are only for what is ours: the banner, the
// live progress line and error highlighting, and only when colour is on.

import { Chalk, type ChalkInstance } from 'chalk';
import Table from 'cli-table3';
import type {
  CapabilityState, CpuInfo, MachineInfo, MigrationInfo, MigrationParameters, RamBlockInfo, RunState,
} from '../migration/api.js';

/** A chalk whose colours are on or off as asked (never guessed from the
 *  environment: the monitor decides from the TTY and NO_COLOR). */
export function painter(color: boolean): ChalkInstance {
  return new Chalk({ level: color ? 1 : 0 });
}

/** Colour is on when the stream is a TTY and NO_COLOR is unset or empty
 *  (https://no-color.org). */
export function colorWanted(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && (env.NO_COLOR === undefined || env.NO_COLOR === '');
}

/** Cuts a line with ANSI colours to `width` visible characters. */
export function fitWidth(text: string, width: number): string {
  // eslint-disable-next-line no-control-regex
  const visible = text.replace(/\x1b\[[0-9;]*m/g, '');
  if (visible.length <= width) return text;
  return `${visible.slice(0, width - 3)}...`;
}

// ---------------------------------------------------------------- numbers

/** C's printf("%0.3g", x) for the non-negative values sizes produce. */
export function formatG3(x: number): string {
  if (x === 0) return '0';
  const exp = Math.floor(Math.log10(Math.abs(x)));
  let s = x.toPrecision(3);
  // toPrecision may round up into the next decade (999.7 -> "1.00e+3")
  const roundedExp = s.includes('e') ? Number(s.split('e')[1]) : exp;
  if (roundedExp < -4 || roundedExp >= 3) {
    const [mant, e] = x.toExponential(2).split('e');
    const m = mant.includes('.') ? mant.replace(/0+$/, '').replace(/\.$/, '') : mant;
    const n = Number(e);
    return `${m}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  if (s.includes('.')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s;
}

const IEC = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/** QEMU's size_to_str: "4 KiB", "256 MiB", "1.5 GiB", "0 B" (switches unit
 *  once the integer part would reach 1000). */
export function sizeToStr(bytes: number): string {
  const v = Math.max(0, bytes);
  // frexp(v / (1000/1024)) exponent, minus one, floored to a multiple of 10
  const scaled = v / (1000 / 1024);
  const e = scaled === 0 ? 0 : Math.floor(Math.log2(scaled)) + 1;
  const i = Math.min(Math.trunc((e - 1) / 10), IEC.length - 1) * 10;
  const shown = i <= 0 ? v : v / 2 ** i;
  return `${formatG3(shown)} ${IEC[Math.max(i, 0) / 10]}B`;
}

const u = (n: number | undefined): string => String(Math.max(0, Math.trunc(n ?? 0)));
// a real QEMU's reply may lack a field its version does not have: say so, never a 0
const NO_FIGURE = 'no figure';
const size = (n: number | undefined): string => (typeof n === 'number' ? sizeToStr(n) : NO_FIGURE);
const count = (n: number | undefined): string => (typeof n === 'number' ? u(n) : NO_FIGURE);

// ---------------------------------------------------------------- info migrate

/** QEMU 10.x `info migrate` (hmp_info_migrate), the part printed without -a.
 *  Nothing at all when no migration ever happened (status 'none'), as QEMU. */
export function formatInfoMigrate(info: MigrationInfo): string[] {
  const out: string[] = [];
  if (info.status === 'none') return out;
  const err = (info.status === 'failed' || info.status === 'postcopy-paused') && info['error-desc']
    ? ` (${info['error-desc']})` : '';
  out.push(`Status: \t\t${info.status}${err}`);
  if (info['total-time']) {
    let t = `Time (ms): \t\ttotal=${u(info['total-time'])}`;
    if (info['setup-time'] !== undefined) t += `, setup=${u(info['setup-time'])}`;
    if (info['expected-downtime'] !== undefined) t += `, exp_down=${u(info['expected-downtime'])}`;
    if (info.downtime !== undefined) t += `, down=${u(info.downtime)}`;
    out.push(t);
  }
  const ram = info.ram;
  if (ram) {
    out.push('RAM info:');
    out.push(`  Throughput (Mbps): \t${typeof ram.mbps === 'number' ? ram.mbps.toFixed(2) : NO_FIGURE}`);
    out.push(`  Sizes: \t\tpagesize=${size(ram['page-size'])}, total=${size(ram.total)}`);
    out.push(`  Transfers: \t\ttransferred=${size(ram.transferred)}, remain=${size(ram.remaining)}`);
    out.push(`    Channels: \t\tprecopy=${size(ram['precopy-bytes'])}, multifd=${sizeToStr(0)}, postcopy=${size(ram['postcopy-bytes'])}`);
    out.push(`    Page Types: \tnormal=${count(ram.normal)}, zero=${count(ram.duplicate)}`);
    let rates = `  Page Rates (pps): \ttransfer=${count(ram['pages-per-second'])}`;
    if (ram['dirty-pages-rate']) rates += `, dirty=${u(ram['dirty-pages-rate'])}`;
    out.push(rates);
    let others = `  Others: \t\tdirty_syncs=${count(ram['dirty-sync-count'])}`;
    if (ram['postcopy-requests']) others += `, postcopy_req=${u(ram['postcopy-requests'])}`;
    if (ram['downtime-bytes']) others += `, downtime_bytes=${u(ram['downtime-bytes'])}`;
    out.push(others);
  }
  const stall = info['x-convergence'];
  if (stall) {
    out.push(`Convergence: \t\tnot converging: ${stall.summary}`);
    out.push(`  Ways out: \t\t${stall['ways-out']}`);
  }
  return out;
}

/** The convergence tools' lines of `info migrate -a` (QEMU 10.x prints them
 *  only with -a, after the RAM block). */
export function formatThrottle(info: MigrationInfo): string[] {
  const out: string[] = [];
  if (info['cpu-throttle-percentage'] !== undefined) out.push(`CPU Throttle (%): ${u(info['cpu-throttle-percentage'])}`);
  if (info['dirty-limit-throttle-time-per-round'] !== undefined) {
    out.push(`Dirty-limit Throttle (us): ${u(info['dirty-limit-throttle-time-per-round'])}`);
  }
  if (info['dirty-limit-ring-full-time'] !== undefined) out.push(`Dirty-limit Ring Full (us): ${u(info['dirty-limit-ring-full-time'])}`);
  return out;
}

// ---------------------------------------------------------------- other info

/** `info migrate_capabilities`: "name: on|off" per capability. */
export function formatCapabilities(caps: readonly CapabilityState[]): string[] {
  return caps.map((c) => `${c.capability}: ${c.state ? 'on' : 'off'}`);
}

/** `info migrate_parameters`: QEMU's "name: value unit" lines for the
 *  parameters the machine has, in QEMU's order, then ours (a QEMU has none
 *  of ours: they are left out). */
export function formatParameters(p: Partial<MigrationParameters>): string[] {
  const lines: [keyof MigrationParameters, (v: string | number | boolean) => string][] = [
    ['throttle-trigger-threshold', (v) => u(Number(v))],
    ['cpu-throttle-initial', (v) => u(Number(v))],
    ['cpu-throttle-increment', (v) => u(Number(v))],
    ['cpu-throttle-tailslow', (v) => (v ? 'on' : 'off')],
    ['max-cpu-throttle', (v) => u(Number(v))],
    ['max-bandwidth', (v) => `${u(Number(v))} bytes/second`],
    ['max-postcopy-bandwidth', (v) => `${u(Number(v))} bytes/second`],
    ['downtime-limit', (v) => `${u(Number(v))} ms`],
    ['x-vcpu-dirty-limit-period', (v) => `${u(Number(v))} ms`],
    ['vcpu-dirty-limit', (v) => `${u(Number(v))} MB/s`],
    ['x-blocktime-trace', (v) => `'${v}'`],
    ['x-postcopy-readahead', (v) => `${v} pages`],
    ['x-postcopy-heartbeat-ms', (v) => `${u(Number(v))} ms`],
    ['x-migration-psk', (v) => `'${v}'`],
  ];
  return lines.filter(([name]) => p[name] !== undefined).map(([name, show]) => `${name}: ${show(p[name] as string | number | boolean)}`);
}

/** `info cpus` (hmp_info_cpus): "* CPU #0: thread_id=N" for the monitor's
 *  current CPU, " " instead of "*" for the others. */
export function formatCpus(cpus: readonly CpuInfo[], current = 0): string[] {
  return cpus.map((c) => `${c.index === current ? '*' : ' '} CPU #${c.index}: thread_id=${c.threadId}`);
}

/** `info status` (hmp_info_status): "VM status: running", "VM status:
 *  paused", or "VM status: paused (inmigrate)" for other stopped states. */
export function formatStatus(state: RunState): string {
  if (state === 'running') return 'VM status: running';
  return state === 'paused' ? 'VM status: paused' : `VM status: paused (${state})`;
}

// ---------------------------------------------------------------- ours

/** The live one-line summary of a running migration shown under the prompt
 *  on a TTY: status, percent of RAM sent, throughput, blocktime so far. */
export function formatProgress(info: MigrationInfo, blocktimeMs: number | undefined, color: boolean): string {
  const c = painter(color);
  const parts: string[] = [c.bold(`migration ${info.status}`)];
  const ram = info.ram;
  if (ram && ram.total > 0) {
    const sent = Math.min(100, Math.max(0, ((ram.total - ram.remaining) / ram.total) * 100));
    parts.push(`${sent.toFixed(0).padStart(3)}% of ${sizeToStr(ram.total)}`);
    if (typeof ram.mbps === 'number') parts.push(`${ram.mbps.toFixed(1)} Mbps`);
    if (ram['postcopy-requests']) parts.push(`${ram['postcopy-requests']} page requests`);
  }
  if (blocktimeMs !== undefined) parts.push(c.yellow(`blocktime ${blocktimeMs} ms`));
  return parts.join(c.dim(' | '));
}

/** QEMU's `info ramblock` table (ram_block_format): one line per RAM block. */
export function formatRamBlocks(blocks: readonly RamBlockInfo[]): string {
  const hex = (n: number): string => `0x${n.toString(16).padStart(16, '0')}`;
  const lines = [`${'Block Name'.padStart(24)} ${'PSize'.padStart(8)}  ${'Offset'.padStart(18)} ${'Used'.padStart(18)} ${'Total'.padStart(18)} ${'HVA'.padStart(18)} ${'RO'.padStart(3)}`];
  for (const b of blocks) {
    lines.push(`${b.name.padStart(24)} ${sizeToStr(b.pageSize).padStart(8)}  ${hex(b.offset)} ${hex(b.used)} ${hex(b.total)} ${hex(b.hva)} ${'rw'.padStart(3)}`);
  }
  return lines.join('\n');
}

/** The banner printed when an interactive console opens. */
export function formatBanner(m: MachineInfo, version: string, color: boolean, lab: boolean, listen?: string): string {
  const c = painter(color);
  const t = new Table({
    style: { head: [], border: [], compact: true, 'padding-left': 1, 'padding-right': 1 },
    chars: color ? {} : { top: '-', 'top-mid': '+', 'top-left': '+', 'top-right': '+', bottom: '-', 'bottom-mid': '+',
      'bottom-left': '+', 'bottom-right': '+', left: '|', 'left-mid': '+', mid: '-', 'mid-mid': '+', right: '|',
      'right-mid': '+', middle: '|' },
  });
  t.push(['role', m.role === 'source' ? 'source' : `destination${listen ? ` (incoming ${listen})` : ''}`]);
  t.push(['guest RAM', `${sizeToStr(m.ramBytes)} (${sizeToStr(m.pageSize)} pages)`]);
  t.push(['vCPUs', String(m.vcpus)]);
  t.push(['workload', m.workload]);
  const lines = [c.bold(`postcopy ${version}`) + ' -- QEMU-style monitor; type \'help\' for commands', t.toString()];
  if (lab) {
    lines.push(
      'This is the local lab: \'migrate\' with no URI (or \'migrate local\') starts a matching',
      'destination process on loopback with the same capabilities. Try:',
      c.cyan('  migrate_set_capability postcopy-ram on'),
      c.cyan('  migrate_set_capability postcopy-blocktime on'),
      c.cyan('  migrate'),
      c.cyan('  migrate_start_postcopy'),
      c.cyan('  info postcopy_blocktime'),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** A QMP event of a real QEMU (attach), one line as it arrives:
 *  "[source] MIGRATION status=active", QEMU's time of day (UTC) first. */
export function formatQmpEvent(side: string, e: { event: string; data?: Record<string, unknown>; timestamp?: { seconds: number; microseconds: number } }): string {
  const data = Object.entries(e.data ?? {}).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  const ts = e.timestamp ? `${new Date(e.timestamp.seconds * 1000 + Math.floor(e.timestamp.microseconds / 1000)).toISOString().slice(11, 23)} ` : '';
  return `${ts}[${side}] ${e.event}${data.length > 0 ? ` ${data.join(' ')}` : ''}`;
}
