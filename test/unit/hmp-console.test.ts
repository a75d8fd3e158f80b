// The console in script mode against a fake Machine: commands run in order,
// output is printed plainly, errors use QEMU's texts, --exit-on-error stops
// at the first failure, bad input never stops the console, and a
// synchronous `migrate` waits for the migration as QEMU's does.
import { PassThrough } from 'node:stream';
import { HmpConsole, MAX_LINE, type ConsoleResult } from '../../src/monitor/hmp.js';
import { createRegistry } from '../../src/monitor/commands.js';
import { EventEmitter } from 'node:events';
import { CommandError } from '../../src/errors.js';
import {
  IMPLEMENTED_CAPABILITIES, TERMINAL_STATUSES,
  type CapabilityState, type CpuInfo, type Machine, type MachineInfo, type MigrationInfo,
  type MigrationParameters, type MigrationStatus, type RunState,
} from '../../src/migration/api.js';
import type { BlocktimeReport } from '../../src/blocktime/types.js';
import { DEFAULT_PARAMETERS } from '../../src/migration/parameters.js';
import { fakeDirtyRateMeter } from '../helpers/qmp-fake-machine.js';
import type { CalcDirtyRateArgs, DirtyRateInfo, TimeUnit } from '../../src/migration/dirty-rate.js';
import type { VcpuDirtyLimit } from '../../src/migration/dirty-limit.js';

// A Machine for console tests that need no guest: it keeps capabilities,
// parameters and run state like the real one, and the test drives the
// migration status by hand (setStatus), which emits the same events.
class FakeMachine implements Machine {
  readonly events = new EventEmitter();
  status: MigrationStatus = 'none';
  errorDesc: string | undefined;
  state: RunState = 'running';
  caps = new Map<string, boolean>(IMPLEMENTED_CAPABILITIES.map((c) => [c, false]));
  params: MigrationParameters = { ...DEFAULT_PARAMETERS };
  readonly dirty = fakeDirtyRateMeter();
  report: BlocktimeReport | undefined;
  migrateCalls: string[] = [];
  quitCalls = 0;

  constructor(private readonly role: 'source' | 'destination' = 'source') {}

  setStatus(s: MigrationStatus, error?: string): void {
    this.status = s;
    this.errorDesc = error;
    this.events.emit('migration', s);
  }

  info(): MachineInfo { return { role: this.role, ramBytes: 256 * 2 ** 20, pageSize: 4096, vcpus: 2, workload: 'sweep' }; }
  runState(): RunState { return this.state; }
  async stop(): Promise<void> { this.state = 'paused'; }
  async cont(): Promise<void> { this.state = 'running'; }
  cpus(): CpuInfo[] { return [{ index: 0, threadId: 4242 }, { index: 1, threadId: 4243 }]; }
  async quit(): Promise<void> { this.quitCalls++; this.events.emit('shutdown'); }
  queryMigrate(): MigrationInfo {
    const info: MigrationInfo = { status: this.status };
    if (this.status !== 'none') info['total-time'] = 10;
    if (this.errorDesc) info['error-desc'] = this.errorDesc;
    return info;
  }
  capabilities(): CapabilityState[] {
    return [...this.caps].map(([capability, state]) => ({ capability, state }) as CapabilityState);
  }
  async setCapabilities(caps: CapabilityState[]): Promise<void> {
    if (this.status !== 'none' && !TERMINAL_STATUSES.has(this.status)) throw new CommandError("There's a migration process in progress");
    for (const c of caps) {
      if (!this.caps.has(c.capability)) throw new CommandError(`Capability '${c.capability}' is not supported by this migration engine`);
      this.caps.set(c.capability, c.state);
    }
  }
  parameters(): MigrationParameters { return { ...this.params }; }
  async setParameters(p: Partial<MigrationParameters>): Promise<void> { this.params = { ...this.params, ...p }; }
  async migrate(uri: string): Promise<void> {
    if (uri !== 'local' && !/^(tcp|unix):/.test(uri)) throw new CommandError(`Invalid migration URI '${uri}'`);
    this.migrateCalls.push(uri);
    this.setStatus('setup');
  }
  async migrateIncoming(_uri: string): Promise<void> { throw new CommandError("'-incoming' was not specified on the command line"); }
  async startPostcopy(): Promise<void> {
    if (this.status === 'none') throw new CommandError('Postcopy must be started after migration has been started');
    this.setStatus('postcopy-active');
  }
  async cancel(): Promise<void> { if (this.status !== 'none' && !TERMINAL_STATUSES.has(this.status)) this.setStatus('cancelled'); }
  async migratePause(): Promise<void> { this.setStatus('postcopy-paused'); }
  async migrateRecover(): Promise<void> { /* listens */ }
  calcDirtyRate(a: CalcDirtyRateArgs): void { this.dirty.meter.calc(a); }
  queryDirtyRate(unit?: TimeUnit): DirtyRateInfo { return this.dirty.meter.query(unit); }
  vcpuDirtyLimits(): VcpuDirtyLimit[] | undefined { return undefined; }
  async blocktime(): Promise<BlocktimeReport | undefined> { return this.report; }
  ramDigest(): string { return ''; }
}

/** A small but complete blocktime report. */
function sampleReport(): BlocktimeReport {
  const dist = new Array(24).fill(0);
  dist[5] = 10;
  dist[6] = 3;
  return {
    'postcopy-blocktime': 3,
    'postcopy-vcpu-blocktime': [12, 7],
    'postcopy-latency': 45000,
    'postcopy-vcpu-latency': [50000, 40000],
    'postcopy-non-vcpu-latency': 0,
    'postcopy-latency-dist': dist,
    'x-blocktime': {
      state: 'final', totalBlocktimeNs: 3e6, faults: 13, nonVcpuFaults: 0,
      vcpus: [
        { index: 0, threadId: 4242, faults: 7, blocktimeNs: 12e6, latencyAvgNs: 50000, latencyP99Ns: 90000 },
        { index: 1, threadId: 4243, faults: 6, blocktimeNs: 7e6, latencyAvgNs: 40000, latencyP99Ns: 80000 },
      ],
      latencyP50Ns: 40000, latencyP90Ns: 70000, latencyP99Ns: 90000, latencyMaxNs: 95000,
      allBlockedWindows: 2, longestAllBlockedNs: 2e6, postcopyNs: 500e6,
    },
  };
}


interface Session {
  machine: FakeMachine;
  input: PassThrough;
  output: () => string;
  result: Promise<ConsoleResult>;
  quits: () => number;
  console: HmpConsole;
}

function open(opts: { exitOnError?: boolean; commands?: string[]; machine?: FakeMachine } = {}): Session {
  const machine = opts.machine ?? new FakeMachine();
  const input = new PassThrough();
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => { text += d.toString(); });
  let quits = 0;
  const c = new HmpConsole({
    machine, registry: createRegistry(), input, output: out, interactive: false,
    commands: opts.commands, exitOnError: opts.exitOnError ?? false, color: false,
    requestQuit: () => { quits++; },
  });
  c.start();
  return { machine, input, output: () => text, result: c.done, quits: () => quits, console: c };
}

async function script(lines: string, opts: { exitOnError?: boolean; machine?: FakeMachine } = {}) {
  const s = open(opts);
  s.input.end(lines);
  const r = await s.result;
  return { ...s, r, text: s.output() };
}

/** resolves once the output contains `needle` */
async function waitOutput(s: Session, needle: string): Promise<void> {
  for (let i = 0; i < 200 && !s.output().includes(needle); i++) await new Promise((r) => setTimeout(r, 5));
  expect(s.output()).toContain(needle);
}

describe('HMP console, scripts', () => {
  it('runs commands in order and prints their output plainly', async () => {
    const { text, r } = await script('info status\nstop\ninfo status\ninfo cpus\r\n');
    expect(text).toBe('VM status: running\nVM status: paused\n* CPU #0: thread_id=4242\n  CPU #1: thread_id=4243\n');
    expect(r).toEqual({ end: 'eof', failures: 0 });
  });

  it('help migrate_start_postcopy says what this engine needs: postcopy-ram on the source only', async () => {
    const { text } = await script('help migrate_start_postcopy\n');
    expect(text).toContain('must be set on the source before the original migration command');
    expect(text).not.toMatch(/both source and destination/);
  });

  it('prints errors and goes on without --exit-on-error', async () => {
    const { text, r } = await script('frob\nmigrate_set_capability postcopy-ram maybe\nmigrate_set_capability bogus on\ninfo status\n');
    expect(text).toBe([
      "unknown command: 'frob'",
      "Expected 'on' or 'off'",
      'Try "help migrate_set_capability" for more information',
      'Error: invalid parameter value: bogus (supported: auto-converge, events, postcopy-ram, return-path, postcopy-blocktime, dirty-limit)',
      'VM status: running',
      '',
    ].join('\n'));
    expect(r).toEqual({ end: 'eof', failures: 3 });
  });

  it('--exit-on-error ends at the first failing command', async () => {
    const { text, r, machine } = await script('stop\nmigrate_set_parameter downtime-limit soon\ncont\n', { exitOnError: true });
    expect(text).toBe("Error: Parameter 'downtime-limit' expects size\n");
    expect(r).toEqual({ end: 'error', failures: 1 });
    expect(machine.state).toBe('paused'); // cont never ran
  });

  it('-e commands run without reading input', async () => {
    const s = open({ commands: ['info status', 'info migrate_parameters'] });
    const r = await s.result;
    expect(s.output().split('\n').slice(0, 2)).toEqual(['VM status: running', 'throttle-trigger-threshold: 50']);
    expect(r.end).toBe('eof');
  });

  it('quit ends the console and asks the program to quit; later lines do not run', async () => {
    const { text, r, quits, machine } = await script('quit\nstop\n');
    expect(text).toBe('');
    expect(r.end).toBe('quit');
    expect(quits()).toBe(1);
    expect(machine.state).toBe('running');
  });

  it('survives a 1 MB line and binary garbage', async () => {
    const garbage = Buffer.from([0x00, 0xff, 0x1b, 0x5b, 0x32, 0x4a, 0x07, 0x80, 0x0a]).toString('latin1');
    const { text, r } = await script(`${'x'.repeat(1 << 20)}\n${garbage}info status\n`);
    const lines = text.split('\n');
    expect(lines[0]).toBe(`Error: line too long (${1 << 20} characters; the monitor takes at most ${MAX_LINE})`);
    expect(lines[1]).toMatch(/^unknown command: '\\x00.*\\x1b\[2J\\x07/);
    expect(lines[2]).toBe('VM status: running');
    expect(r.failures).toBe(2);
  });

  it('sets capabilities and parameters with QEMU units', async () => {
    const { text, machine } = await script([
      'migrate_set_capability postcopy-ram on',
      'migrate_set_parameter max-bandwidth 64',
      'migrate_set_parameter downtime-limit 500',
      'migrate_set_parameter max-postcopy-bandwidth 1M',
      'migrate_set_parameter x-postcopy-readahead 32',
      'migrate_set_parameter x-postcopy-readahead 1M',
      'migrate_set_parameter nonsense 1',
      'migrate_set_parameter cpu-throttle-initial 30',
      'migrate_set_parameter cpu-throttle-increment 300',
      'migrate_set_parameter cpu-throttle-tailslow on',
      'migrate_set_parameter cpu-throttle-tailslow yes',
      'migrate_set_parameter vcpu-dirty-limit 8',
      'migrate_set_parameter multifd-channels 4',
      'info migrate_capabilities',
    ].join('\n'));
    expect(machine.caps.get('postcopy-ram')).toBe(true);
    expect(machine.params['max-bandwidth']).toBe(64 * 2 ** 20);
    expect(machine.params['downtime-limit']).toBe(500);
    expect(machine.params['max-postcopy-bandwidth']).toBe(2 ** 20);
    expect(machine.params['x-postcopy-readahead']).toBe(32);
    expect(text).toContain("Error: Parameter 'x-postcopy-readahead' expects a number of pages\n");
    expect(text).toContain('Error: invalid parameter value: nonsense (supported: throttle-trigger-threshold, cpu-throttle-initial, '
      + 'cpu-throttle-increment, cpu-throttle-tailslow, max-cpu-throttle, max-bandwidth, max-postcopy-bandwidth, downtime-limit, '
      + 'x-vcpu-dirty-limit-period, vcpu-dirty-limit, x-blocktime-trace, x-postcopy-readahead, x-postcopy-heartbeat-ms, x-migration-psk)\n');
    expect(machine.params['cpu-throttle-initial']).toBe(30);
    expect(machine.params['cpu-throttle-tailslow']).toBe(true);
    expect(machine.params['vcpu-dirty-limit']).toBe(8);
    expect(text).toContain("Error: Parameter 'cpu-throttle-increment' expects uint8_t\n");
    expect(text).toContain("Error: Parameter 'cpu-throttle-tailslow' expects 'on' or 'off'\n");
    // QEMU has it, this engine does not: said so, with what it has
    expect(text).toContain("Error: Parameter 'multifd-channels' is not supported by this migration engine (supported: throttle-trigger-threshold, ");
    expect(text).toContain('postcopy-ram: on\n');
  });

  it('help lists the table and says how the lab works', async () => {
    const { text } = await script('help\nhelp migrate\nhelp nothing\n');
    expect(text).toContain('migrate [-d] [-r] [uri] -- migrate to URI');
    expect(text).toContain("Lab: 'migrate' with no URI (or 'migrate local') starts a matching destination process");
    expect(text).toContain("unknown command: 'nothing'");
    expect(text).toContain('info [subcommand] -- show various information');
  });
});

describe('HMP console, migration', () => {
  it('migrate without -d waits for the end; the next command runs after it', async () => {
    const s = open();
    s.input.write('migrate\ninfo status\n');
    await new Promise((r) => setTimeout(r, 30));
    expect(s.machine.migrateCalls).toEqual(['local']);
    expect(s.output()).toBe(''); // still waiting, info status not run yet
    s.machine.setStatus('active');
    await new Promise((r) => setTimeout(r, 10));
    expect(s.output()).toBe('');
    s.machine.setStatus('completed');
    await waitOutput(s, 'VM status: running');
    s.input.end();
    expect((await s.result).failures).toBe(0);
  });

  it('migrate -d returns at once', async () => {
    const { text, machine } = await script('migrate -d tcp:127.0.0.1:4444\ninfo status\n');
    expect(machine.migrateCalls).toEqual(['tcp:127.0.0.1:4444']);
    expect(text.split('\n')[0]).toBe('VM status: running');
  });

  it('a failed synchronous migrate prints the reason and counts as a failure', async () => {
    const s = open({ exitOnError: true });
    s.input.write('migrate unix:/nonexistent/sock\ninfo status\n');
    await new Promise((r) => setTimeout(r, 20));
    s.machine.setStatus('failed', 'Failed to connect to unix:/nonexistent/sock: No such file or directory');
    const r = await s.result;
    expect(s.output()).toBe('Error: Failed to connect to unix:/nonexistent/sock: No such file or directory\n');
    expect(r).toEqual({ end: 'error', failures: 1 });
  });

  it('with postcopy-ram on, migrate returns once precopy runs so migrate_start_postcopy can follow', async () => {
    const s = open();
    s.input.write('migrate_set_capability postcopy-ram on\nmigrate\nmigrate_start_postcopy\ninfo migrate\n');
    await new Promise((r) => setTimeout(r, 20));
    s.machine.setStatus('active');
    await waitOutput(s, 'Status: \t\tpostcopy-active');
    expect(s.output()).toContain("postcopy-ram is on and precopy is running: 'migrate_start_postcopy' switches to postcopy");
    s.input.end();
    await s.result;
  });

  it('migrate_wait waits for the end, with a timeout', async () => {
    const s = open();
    s.input.write('migrate -d\nmigrate_wait 1\nmigrate_wait\ninfo status\n');
    await waitOutput(s, 'Error: migration still setup after 1 s');
    s.machine.setStatus('completed');
    await waitOutput(s, 'VM status: running');
    s.input.end();
    expect((await s.result).failures).toBe(1);
  });

  it('migrate_wait ends when postcopy pauses, with the reason and how to resume (a script does not hang on it)', async () => {
    const s = open();
    s.input.write('migrate -d\nmigrate_wait\ninfo status\n');
    await new Promise((r) => setTimeout(r, 20));
    s.machine.setStatus('postcopy-active');
    s.machine.setStatus('postcopy-paused', 'return path closed by the destination');
    await waitOutput(s, 'VM status: running');
    expect(s.output()).toContain("Error: migration paused in postcopy (return path closed by the destination): "
      + "'migrate_recover URI' on the destination, then 'migrate -r URI' here resumes it");
    s.input.end();
    expect((await s.result).failures).toBe(1);
  });

  it('migrate_cancel in postcopy: a script cancels at once (as QEMU) and gets a warning line', async () => {
    const m = new FakeMachine();
    m.status = 'postcopy-active';
    const { text } = await script('migrate_cancel\n', { machine: m });
    expect(m.status).toBe('cancelled');
    expect(text).toMatch(/^Warning: cancelled in postcopy: the guest runs on the destination with part of its RAM still here, so cancelling loses it on both sides/);
  });

  it('the end of a script with a migration running says it cancels the migration', async () => {
    const m = new FakeMachine();
    const { text } = await script('migrate -d\n', { machine: m });
    expect(text).toBe("end of input: the VM quits and the migration (setup) is cancelled; end the input with 'migrate_wait' to let it finish\n");
    const done = await script('info status\n');
    expect(done.text).toBe('VM status: running\n'); // nothing running: nothing said
  });

  it('errors from the machine print as "Error: ..."', async () => {
    const { text } = await script('migrate_start_postcopy\nmigrate_incoming tcp:127.0.0.1:1\nmigrate -d bogus:1\n');
    expect(text).toBe([
      'Error: Postcopy must be started after migration has been started',
      "Error: '-incoming' was not specified on the command line",
      "Error: Invalid migration URI 'bogus:1'",
      '',
    ].join('\n'));
  });

  it('info postcopy_blocktime before postcopy started says so, in precopy with and without postcopy-ram', async () => {
    const m = new FakeMachine();
    m.status = 'active';
    m.caps.set('postcopy-ram', true);
    expect((await script('info postcopy_blocktime\n', { machine: m })).text.split('\n')[0])
      .toBe('No blocktime figures yet: postcopy has not started (they start with it: migrate_start_postcopy)');
    m.caps.set('postcopy-ram', false);
    expect((await script('info postcopy_blocktime\n', { machine: m })).text).toMatch(/^No blocktime figures: this migration runs without postcopy-ram/);
  });

  it('info postcopy_blocktime and info migrate -a show the report', async () => {
    const m = new FakeMachine('destination');
    const empty = await script('info postcopy_blocktime\n', { machine: m });
    expect(empty.text).toMatch(/^No blocktime figures: turn on the postcopy-blocktime capability here/);
    m.report = sampleReport();
    m.status = 'completed';
    const { text } = await script('info postcopy_blocktime\ninfo migrate -a\n', { machine: m });
    expect(text).toContain('Postcopy blocktime: final');
    expect(text).toContain('Total blocktime (all vCPUs blocked at once): 3');
    expect(text).toContain('Status: \t\tcompleted\n');
    expect(text).toContain('Postcopy Blocktime (ms): 3\n');
    expect(text).toContain('Postcopy vCPU Blocktime (ms):\n [12, 7]\n');
    expect(text).not.toContain('\x1b['); // no colour in scripts
  });
});
