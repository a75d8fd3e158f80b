// The console end to end, fed scripts on a pipe: the real program
// (`node dist/src/cli.js`) with a real VM behind it. Checks the lines it
// prints, QEMU's error texts, that bad input (unknown commands, missing or
// extra arguments, wrong types, a 1 MB line, binary garbage) never stops it,
// --exit-on-error, -e, start-up option errors and exit codes.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, ensureBuilt } from '../helpers/cli.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { QmpClient } from '../../src/qmp/client.js';

beforeAll(ensureBuilt, 180_000);

interface Run { code: number | null; out: string; err: string }

/** Runs the program with `args`, writes `input` to its stdin and closes it. */
function run(args: string[], input: string | Buffer = '', timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`timed out; output so far:\n${out}\n${err}`)); }, timeoutMs);
    p.on('exit', (code) => { clearTimeout(t); resolve({ code, out, err }); });
    p.stdin.on('error', () => { /* the program may end before reading everything (exit-on-error) */ });
    p.stdin.end(input);
  });
}

const SMALL = ['-m', '64M'];

describe('piped scripts', () => {
  it('runs commands in order, prints their output plainly and quits at the end of input', async () => {
    const r = await run([...SMALL, '-smp', '3'], [
      'info status',
      'info cpus',
      'stop',
      'info status',
      'cont',
      'info status',
      'info migrate_capabilities',
      'info migrate_parameters',
      'info migrate',
    ].join('\n'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines[0]).toBe('VM status: running');
    expect(lines[1]).toMatch(/^\* CPU #0: thread_id=\d+$/);
    expect(lines[2]).toMatch(/^ {2}CPU #1: thread_id=\d+$/);
    expect(lines[3]).toMatch(/^ {2}CPU #2: thread_id=\d+$/);
    const tids = lines.slice(1, 4).map((l) => Number(l.split('=')[1]));
    expect(new Set(tids).size).toBe(3); // real, distinct vCPU threads
    expect(tids.every((t) => t > 0 && t !== process.pid)).toBe(true);
    expect(lines.slice(4, 6)).toEqual(['VM status: paused', 'VM status: running']);
    expect(lines).toContain('postcopy-ram: off');
    expect(lines).toContain('postcopy-blocktime: off');
    expect(lines).toContain('max-bandwidth: 134217728 bytes/second');
    expect(lines).toContain('downtime-limit: 300 ms');
    // no migration yet: QEMU's info migrate prints nothing
    expect(lines[lines.length - 1]).toBe('');
    expect(lines[lines.length - 5]).toMatch(/^x-blocktime-trace: /);
    expect(lines[lines.length - 4]).toBe('x-postcopy-readahead: 0 pages');
    expect(lines[lines.length - 3]).toBe('x-postcopy-heartbeat-ms: 2000 ms');
    expect(lines[lines.length - 2]).toBe("x-migration-psk: ''");
  });

  it('prints QEMU error texts for bad input and goes on', async () => {
    const garbage = Buffer.concat([Buffer.from([0x00, 0xff, 0xfe, 0x1b, 0x5b, 0x48, 0x07, 0x0a]), Buffer.from('\x01\x02junk\n')]);
    const input = Buffer.concat([
      Buffer.from([
        'frobnicate now',
        'info nothing',
        'migrate_set_capability',
        'migrate_set_capability postcopy-ram',
        'migrate_set_capability postcopy-ram yes',
        'migrate_set_capability postcopy-ram on extra',
        'migrate_set_capability no-such-cap on',
        'migrate_set_capability xbzrle on',
        'migrate_set_parameter downtime-limit soon',
        'migrate_set_parameter max-bandwidth lots',
        'migrate_wait abc',
        'migrate -x',
        'info status extra',
        `${'y'.repeat(1 << 20)}`,
        '',
      ].join('\n')),
      garbage,
      Buffer.from('info status\n'),
    ]);
    const r = await run(SMALL, input);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    const expected = [
      "unknown command: 'frobnicate'",
      "unknown command: 'info nothing'",
      'migrate_set_capability: string expected',
      'Try "help migrate_set_capability" for more information',
      "Expected 'on' or 'off'",
      'Try "help migrate_set_capability" for more information',
      "Expected 'on' or 'off'",
      'Try "help migrate_set_capability" for more information',
      'migrate_set_capability: extraneous characters at the end of line',
      'Try "help migrate_set_capability" for more information',
      'Error: invalid parameter value: no-such-cap (supported: auto-converge, events, postcopy-ram, return-path, postcopy-blocktime, dirty-limit)',
    ];
    expect(lines.slice(0, expected.length)).toEqual(expected);
    let i = expected.length;
    expect(lines[i++]).toMatch(/^Error: .*xbzrle.*not supported/);
    expect(lines[i++]).toBe("Error: Parameter 'downtime-limit' expects size");
    expect(lines[i++]).toBe('Error: Invalid size lots');
    expect(lines.slice(i, i + 2)).toEqual(["invalid char 'a' in expression", 'Try "help migrate_wait" for more information']);
    i += 2;
    expect(lines.slice(i, i + 2)).toEqual(['migrate: unsupported option -x', 'Try "help migrate" for more information']);
    i += 2;
    expect(lines.slice(i, i + 2)).toEqual(['status: extraneous characters at the end of line', 'Try "help info status" for more information']);
    i += 2;
    expect(lines[i++]).toBe(`Error: line too long (${1 << 20} characters; the monitor takes at most 4096)`);
    expect(lines[i++]).toMatch(/^unknown command: '\\x00/);
    expect(lines[i++]).toBe("unknown command: '\\x01\\x02junk'");
    expect(lines[i++]).toBe('VM status: running');
    expect(lines[i]).toBe('');
    expect(r.out).not.toContain('\x1b'); // nothing the terminal would interpret
  });

  it('info migrate says when precopy does not converge: the figures and the ways out', async () => {
    if (!requireUffd()) return;
    const r = await run(['-m', '32M', '-smp', '1'], 'migrate_set_parameter max-bandwidth 64\nmigrate -d\nmigrate_wait 5\ninfo migrate\nmigrate_cancel\n');
    expect(r.out).toMatch(/\nConvergence: \t\tnot converging: \d+ rounds have not shrunk the dirty set .*: the guest dirties [\d.]+ MiB\/s and the stream moves [\d.]+ MiB\/s \(max-bandwidth 64\.0 MiB\/s\)\n/);
    expect(r.out).toContain('\n  Ways out: \t\tpostcopy (migrate_set_capability postcopy-ram on before migrate, then migrate_start_postcopy);'
      + ' a higher max-bandwidth (migrate_set_parameter max-bandwidth 0: no limit); throttling the guest');
  });

  it('--exit-on-error ends at the first failing command with status 1', async () => {
    const r = await run([...SMALL, '--exit-on-error'], 'stop\ninfo status\nmigrate_set_capability postcopy-ram perhaps\ncont\ninfo status\n');
    expect(r.code).toBe(1);
    expect(r.out).toBe("VM status: paused\nExpected 'on' or 'off'\nTry \"help migrate_set_capability\" for more information\n");
  });

  it('without --exit-on-error a failing script still ends with status 0', async () => {
    const r = await run(SMALL, 'nonsense\n');
    expect(r.code).toBe(0);
    expect(r.out).toBe("unknown command: 'nonsense'\n");
  });

  it('-e runs a one-liner and quits; -S starts paused', async () => {
    const r = await run([...SMALL, '-S', '-e', 'info status; cont; info status; help migrate_start_postcopy']);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines.slice(0, 2)).toEqual(['VM status: paused', 'VM status: running']);
    expect(lines[2]).toMatch(/^migrate_start_postcopy {2}-- Followup to a migration command/);
  });

  it('echoes no control character back: escape sequences and bells in arguments print escaped', async () => {
    const r = await run([...SMALL, '-incoming', 'defer'], Buffer.from(
      'migrate_set_capability \x1b[2J\x1b[31mX on\nmigrate_set_parameter max-bandwidth \x1b]0;pwned\x07\nmigrate_incoming \x07bell\nbogus\xff\n', 'latin1'));
    expect(r.code).toBe(0);
    expect(r.out).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f]/); // nothing a terminal would act on
    expect(r.out.split('\n')).toEqual([
      'Error: invalid parameter value: \\x1b[2J\\x1b[31mX (supported: auto-converge, events, postcopy-ram, return-path, postcopy-blocktime, dirty-limit)',
      'Error: Invalid size \\x1b]0;pwned\\x07',
      expect.stringMatching(/^Error: .*\\x07bell/),
      "unknown command: 'bogus\\ufffd'",
      '',
    ]);
  });

  it('-monitor none: the VM runs without a console until a signal ends it cleanly', async () => {
    const p = spawn(process.execPath, [cli, ...SMALL, '-monitor', 'none'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const ended = new Promise<[number | null, string | null]>((r) => p.on('exit', (code, sig) => r([code, sig])));
    const early = await Promise.race([ended, new Promise<null>((r) => setTimeout(() => r(null), 1500))]);
    expect(early).toBeNull(); // still running after 1.5 s
    p.kill('SIGTERM');
    expect(await ended).toEqual([0, null]);
    expect(err).toBe('postcopy: terminating on signal 15\n');
  });

  it('-qmp unix socket: created 0600 at start, removed when a signal ends the VM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hmp-qmp-'));
    const sock = join(dir, 'vm.qmp');
    try {
      const p = spawn(process.execPath, [cli, ...SMALL, '-monitor', 'none', '-qmp', `unix:${sock},server=on,wait=off`],
        { stdio: ['ignore', 'pipe', 'pipe'] });
      const ended = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
      const deadline = Date.now() + 20_000;
      while (!existsSync(sock) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(statSync(sock).mode & 0o777).toBe(0o600);
      p.kill('SIGTERM');
      expect(await ended).toBe(0);
      expect(existsSync(sock)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('-daemonize returns once the QMP socket listens (the next line connects without retrying); a VM that cannot start fails the command', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hmp-daemon-'));
    const sock = join(dir, 'vm.qmp');
    try {
      const r = await run([...SMALL, '-daemonize', '-monitor', 'none', '-qmp', `unix:${sock},server=on,wait=off`, '-incoming', 'defer']);
      expect(r).toEqual({ code: 0, out: '', err: '' });
      const qmp = await QmpClient.connect(`unix:${sock}`, { timeoutMs: 5000 }); // no retry: it is there
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'inmigrate' });
      await qmp.execute('quit');
      await qmp.close();
      const bad = await run([...SMALL, '-daemonize', '-monitor', 'none', '-qmp', `unix:${join(dir, 'no', 'vm.qmp')},server=on,wait=off`]);
      expect(bad.code).toBe(1);
      expect(bad.err).toMatch(/^postcopy: -qmp unix:.*\/no\/vm\.qmp: directory .* does not exist/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('-e with --exit-on-error: the first failing command ends the process with status 1', async () => {
    const r = await run([...SMALL, '--exit-on-error', '-e', 'info status; migrate_set_capability postcopy-ram maybe; info status']);
    expect(r.code).toBe(1);
    expect(r.out).toBe("VM status: running\nExpected 'on' or 'off'\nTry \"help migrate_set_capability\" for more information\n");
  });

  it('quit ends the process at once; the rest of the script does not run', async () => {
    const r = await run(SMALL, 'info status\nquit\ninfo status\n');
    expect(r.code).toBe(0);
    expect(r.out).toBe('VM status: running\n');
  });

  it('an incoming VM reports its run state and refuses outgoing commands with QEMU texts', async () => {
    const r = await run([...SMALL, '-incoming', 'defer'], 'info status\nmigrate_start_postcopy\ninfo postcopy_blocktime\n');
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines[0]).toBe('VM status: paused (inmigrate)');
    expect(lines[1]).toMatch(/^Error: /);
    expect(lines[2]).toMatch(/^No blocktime figures/);
  });
});

describe('start-up errors', () => {
  it.each([
    [['--frobnicate'], "postcopy: unknown option '--frobnicate' (see --help)"],
    [['-m'], 'postcopy: -m needs a value (see --help)'],
    [['-m', 'lots'], "postcopy: -m lots: RAM size 'lots' is not a size"],
    [['--smp', 'zero'], "postcopy: -smp zero: vCPU count 'zero' is not a whole number"],
    [['-workload', 'juggle'], "postcopy: -workload juggle: unknown workload 'juggle'"],
    [['-monitor', 'vc'], "postcopy: -monitor vc: only 'stdio' and 'none' are supported"],
    [['-qmp', 'unix:/tmp/x.sock,server=on,wait=on'], 'postcopy: -qmp unix:/tmp/x.sock,server=on,wait=on: wait=on is not supported'],
  ])('%j', async (args, message) => {
    const r = await run(args as string[]);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err.startsWith(message)).toBe(true);
  });

  it('--help and --version', async () => {
    const h = await run(['--help']);
    expect(h.code).toBe(0);
    expect(h.out).toMatch(/^usage: postcopy \[options\]/);
    expect(h.out).toContain('--exit-on-error');
    const v = await run(['--version']);
    expect(v).toEqual({ code: 0, out: 'postcopy 0.1.0\n', err: '' });
  });
});
