// `postcopy attach` on real QEMUs (test/helpers/qemu.ts's sweeping boot
// sector): a piped console script runs a whole postcopy migration between
// two QEMUs with postcopy-blocktime on, and shows the exact blocktime from
// the destination's trace log live, before completion, then QEMU 7.2's own
// figures beside ours; and the ways attaching goes wrong: a socket that is
// missing, refuses, is not QMP, or is held by another client (QEMU greets
// only one), and a QEMU that quits under the console.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, ensureBuilt, killConsoles, startConsole, waitOut } from '../helpers/cli.js';
import { Tmux, haveTmux } from '../helpers/tmux.js';
import {
  attachSocket, buildSweepGuest, freePort, guestOptions, qemuAccel, requireQemu, startQemu, stopQemus, traceOptions, waitForSweep,
} from '../helpers/qemu.js';

const haveQemu = requireQemu();
const maybe = haveQemu ? test : test.skip;
const maybeTty = haveQemu && haveTmux() ? test : test.skip;
let dir: string;

beforeAll(() => { ensureBuilt(); dir = mkdtempSync(join(tmpdir(), 'qemu-attach-')); }, 180_000);
afterAll(async () => {
  killConsoles();
  await stopQemus();
  if (process.env.POSTCOPY_KEEP_TMP === undefined) rmSync(dir, { recursive: true, force: true });
});

/** "848 ms", "3.24 s", "12.1 µs", "0 ns" in ms */
function durationMs(s: string): number {
  const m = /^([\d.]+) (ns|µs|ms|s)$/.exec(s.trim());
  if (m === null) throw new Error(`not a duration: '${s}'`);
  return Number(m[1]) * { ns: 1e-6, µs: 1e-3, ms: 1, s: 1e3 }[m[2] as 'ns'];
}

/** vCPU `v`'s row of an `info postcopy_blocktime` table: faults, blocktime, kernel (ms) */
function row(report: string, v: number): { faults: number; ms: number; kernelMs?: number } {
  const m = new RegExp(`│\\s+${v} │\\s+\\d+ │\\s+(\\d+) │\\s+([^│]+?) │[^│]+│[^│]+│[^│]+│(?:\\s+([^│]+?) │)?`).exec(report);
  if (m === null) throw new Error(`no vCPU ${v} row in:\n${report}`);
  return { faults: Number(m[1]), ms: durationMs(m[2]), kernelMs: m[3] !== undefined && m[3] !== 'n/a' ? durationMs(m[3]) : undefined };
}

maybe(`a piped attach script migrates one QEMU to another with postcopy (${qemuAccel()}): exact blocktime live before completion, QEMU's figures after`, async () => {
  const img = buildSweepGuest(dir, 64 << 20);
  const guest = guestOptions(img, 256, 2);
  const log = join(dir, 'dest.log');
  const port = await freePort();
  const src = await startQemu(dir, 'src', guest, { attach: true });
  await startQemu(dir, 'dst', [...guest, '-incoming', `tcp:127.0.0.1:${port}`, ...traceOptions(log)], { attach: true });
  await waitForSweep(src);

  const script = [
    'migrate_set_capability postcopy-ram on',
    'migrate_set_capability postcopy-blocktime on',
    'info migrate_capabilities',
    // precopy slow enough that postcopy starts with most of the sweep to send, postcopy slow enough to watch
    'migrate_set_parameter max-bandwidth 50M',
    'migrate_set_parameter max-postcopy-bandwidth 25M',
    `migrate tcp:127.0.0.1:${port}`,
    'migrate_wait 1',
    'migrate_start_postcopy',
    'migrate_wait 1',
    'info postcopy_blocktime',
    'migrate_wait',
    'info migrate -a',
    'info postcopy_blocktime',
  ];
  const c = startConsole(['attach', attachSocket(dir, 'src'), '--destination', attachSocket(dir, 'dst'), '--destination-trace', log]);
  c.p.stdin.end(`${script.join('\n')}\n`);
  expect(await c.exit).toBe(0);
  const out = c.out();
  process.stderr.write(`qemu-attach: console output:\n${out}\n`);

  expect(out).toMatch(/source: QEMU \d+\.\d+\.\d+ at unix:/);
  expect(out).toMatch(/kernel figures: schedstat of process \d+'s vCPU threads/);
  // (the destination got them too: its postcopy-blocktime figures below say so)
  expect(out).toMatch(/^postcopy-ram: on$/m);
  expect(out).toContain('[source] MIGRATION status=active');
  expect(out).toContain('[source] MIGRATION status=postcopy-active');
  expect(out).toContain('[destination] MIGRATION status=postcopy-active');
  expect(out).not.toMatch(/Error: (?!migration still (active|postcopy-active) after 1 s)/);

  // live: the exact figures while the destination is still in postcopy
  const live = out.indexOf('Postcopy blocktime: live (postcopy running)');
  const completed = out.indexOf('[destination] MIGRATION status=completed');
  expect(live).toBeGreaterThan(0);
  expect(completed).toBeGreaterThan(live);
  const liveReport = out.slice(live, completed);
  expect(row(liveReport, 0).faults).toBeGreaterThan(0);
  expect(row(liveReport, 0).ms).toBeGreaterThan(0);
  expect(liveReport).toContain('no figures yet: QEMU fills them in once the destination is completed (it is postcopy-active)');

  // after completion: QEMU's own figures beside ours
  const final = out.slice(out.lastIndexOf('Postcopy blocktime: final'));
  const q = /Postcopy vCPU Blocktime \(ms\): \[(\d+), (\d+)\] \(exact \[([\d.]+), ([\d.]+)\]\)/.exec(final);
  expect(q).not.toBeNull();
  const [qemu0, qemu1, exact0, exact1] = (q as RegExpExecArray).slice(1).map(Number);
  const f = row(final, 0);
  expect(f.faults).toBeGreaterThanOrEqual(row(liveReport, 0).faults);
  expect(exact0).toBeGreaterThan(0);
  // QEMU 7.2 counts stretches of what we count, each floored to whole ms (docs/qemu.md)
  expect(qemu0).toBeLessThanOrEqual(exact0 + f.faults);
  // vCPU 1 halts in the BIOS: never blocked on a page
  expect(qemu1).toBe(0);
  expect(exact1).toBe(0);
  expect(final).toMatch(/Postcopy Blocktime \(ms\): 0 \(exact 0\.000\)/);
  expect(final).toMatch(/Postcopy Latency \(ns\): no figure \(QEMU 7\.2\.\d+ reports none; 10\.1\+ does\)/);
  expect(final).toMatch(/QEMU 7\.2's algorithm on the same events: total 0 ms, vCPU \[\d+, 0\] ms/);
  // info migrate -a: QEMU's own fields, "no figure" where 7.2 has none
  expect(out).toMatch(/Postcopy vCPU Blocktime \(ms\):\n \[\d+, 0\]\nPostcopy Latency \(ns\): no figure/);
  expect(out).toMatch(/Others: \t\tdirty_syncs=\d+, postcopy_req=[1-9]/);

  // the kernel's figure: for vCPU 0, which sweeps without halting, it is the truth
  // (within a scheduler tick at each end of the window, and the sampling delays);
  // vCPU 1 halts, so the kernel counts its sleep (an upper bound, docs/qemu.md)
  expect(f.kernelMs).toBeDefined();
  expect(Math.abs((f.kernelMs as number) - f.ms)).toBeLessThanOrEqual(0.25 * f.ms + 50);
  expect(row(final, 1).kernelMs).toBeGreaterThan(0);
  expect(final).toContain('Kernel column: the kernel counts every sleep');
}, 150_000);

maybe('attach errors: a missing, refusing, non-QMP or busy socket, QEMU errors, and a QEMU that quits under the console', async () => {
  const img = buildSweepGuest(dir, 4 << 20);
  const lone = await startQemu(dir, 'lone', guestOptions(img, 64, 1), { attach: true });
  const run = async (args: string[], input = ''): Promise<{ code: number | null; out: string }> => {
    const c = startConsole(args);
    c.p.stdin.end(input);
    return { code: await c.exit, out: c.out() };
  };

  // the harness holds lone.qmp: QEMU takes a second connection but never greets it
  const t0 = Date.now();
  const busy = await run(['attach', join(dir, 'lone.qmp')]);
  expect(busy.code).toBe(1);
  expect(busy.out).toMatch(/the source QEMU: QMP unix:.*lone\.qmp: connected, but no greeting within 3000 ms: a QEMU QMP socket serves one client at a time/);
  expect(busy.out).toMatch(/-qmp unix:.*lone\.qmp\.2,server=on,wait=off, or -chardev socket,id=mon2,path=.*-mon chardev=mon2,mode=control/);
  expect(Date.now() - t0).toBeLessThan(15_000);

  const missing = await run(['attach', `unix:${join(dir, 'none.qmp')}`]);
  expect(missing.code).toBe(1);
  expect(missing.out).toMatch(/postcopy: attach: the source QEMU: QMP socket .*none\.qmp does not exist/);

  const refused = await run(['attach', 'unix:/dev/null', '--destination', `tcp:127.0.0.1:${await freePort()}`]);
  expect(refused.code).toBe(1);
  expect(refused.out).toMatch(/the source QEMU: QMP unix:\/dev\/null: (connection refused|not a socket)/);
  const refusedDst = await run(['attach', attachSocket(dir, 'lone'), '--destination', `tcp:127.0.0.1:${await freePort()}`]);
  expect(refusedDst.code).toBe(1);
  expect(refusedDst.out).toMatch(/the destination QEMU: QMP tcp:127\.0\.0\.1:\d+: connection refused/);

  const notQmp: Server = createServer((s) => s.end('SSH-2.0-OpenSSH_9.2\r\n'));
  const sshPath = join(dir, 'ssh.sock');
  await new Promise<void>((r) => notQmp.listen(sshPath, r));
  const ssh = await run(['attach', sshPath]);
  notQmp.close();
  expect(ssh.code).toBe(1);
  expect(ssh.out).toMatch(/the source QEMU: QMP unix:.*ssh\.sock: the greeting is not JSON: SSH-2\.0/);

  expect((await run(['attach'])).code).toBe(2);
  const usage = await run(['attach', 'x.qmp', '--destination-trace', 'dest.log']);
  expect(usage.code).toBe(2);
  expect(usage.out).toContain('--destination-trace needs --destination DEST_QMP');

  // a session on the QEMUs' free sockets; QEMU's own errors print as Error: <desc>
  // no disk: lone holds the image's lock (the BIOS of a QEMU without one waits for ever)
  const noDisk = guestOptions(img, 64, 1).filter((a, i, all) => a !== '-drive' && all[i - 1] !== '-drive');
  const other = await startQemu(dir, 'other', noDisk, { attach: true });
  const c = startConsole(['attach', attachSocket(dir, 'lone'), '--destination', attachSocket(dir, 'other')]);
  c.p.stdin.write('info status\nmigrate_start_postcopy\nmigrate\nhelp\n');
  await waitOut(c, /VM status: running[\s\S]*Error: Enable postcopy with migrate_set_capability before the start of migration\nError: a QEMU migrates to another QEMU[\s\S]*migrate_wait \[seconds\]/, 'the first commands', 20_000);
  expect(c.out()).not.toContain("Lab: 'migrate'");
  // the destination quits under the console: it says so, and the source's commands still work
  const otherExited = new Promise((r) => other.proc.once('exit', r));
  await other.qmp.execute('quit').catch(() => undefined);
  await otherExited;
  await waitOut(c, /the destination QEMU \(unix:.*other-attach\.qmp\) is gone: its QMP connection closed \(QEMU quit or was killed\)\. Commands for the destination fail; the source's still work; 'quit' ends this console\./, 'the destination notice', 10_000);
  c.p.stdin.write('info postcopy_blocktime\ninfo status\n');
  await waitOut(c, /QEMU 7\.2\.\d+ \(the destination\) reports:\n  no figures yet: the destination QEMU \(.*\) is gone[^\n]*\nVM status: running\n/, 'the source still answering', 10_000);
  // the source quits too: the console says so and stays
  const exited = new Promise((r) => lone.proc.once('exit', r));
  await lone.qmp.execute('quit').catch(() => undefined);
  await exited;
  await waitOut(c, /the source QEMU \(unix:.*lone-attach\.qmp\) is gone: its QMP connection closed \(QEMU quit or was killed\)\. No QEMU is left; 'quit' ends this console\./, 'the notice', 10_000);
  c.p.stdin.end('info status\nmigrate tcp:127.0.0.1:1\nhelp info\n');
  expect(await c.exit).toBe(0);
  const after = c.out().slice(c.out().indexOf('is gone'));
  expect(after).toMatch(/Error: the source QEMU \(unix:.*\) is gone/);
  expect(after).toContain('info postcopy_blocktime');
}, 90_000);

maybeTty('attach at a terminal: prompt, Tab completion from the same table, and quit detaches (the QEMU keeps running)', async () => {
  const img = buildSweepGuest(dir, 4 << 20);
  const q = await startQemu(dir, 'tty', guestOptions(img, 64, 1), { attach: true });
  const term = new Tmux(`postcopy-attach-tty-${process.pid}`);
  term.open();
  try {
    term.start('a', `NO_COLOR=1 POSTCOPY_HISTORY=${join(dir, 'history')} ${process.execPath} ${cli} attach ${attachSocket(dir, 'tty')}; echo "attach ended: $?"; sleep 600`);
    await term.waitScreen('a', (s) => /type 'help' for commands[\s\S]*\(qemu\)\s*$/.test(s), 'the banner and the prompt');
    await term.type('a', 'info sta');
    await term.key('a', 'Tab');
    await term.waitScreen('a', (s) => s.includes('(qemu) info status'), 'info status completed');
    await term.key('a', 'Enter');
    await term.waitScreen('a', (s) => /VM status: running\n\(qemu\)\s*$/.test(s), 'the status');
    await term.type('a', 'quit');
    await term.key('a', 'Enter');
    await term.waitScreen('a', (s) => s.includes('attach ended: 0'), 'the console to end');
    expect((await q.qmp.execute<{ status: string }>('query-status')).status).toBe('running');
  } finally {
    term.close();
  }
}, 60_000);
