// The interactive console in a real pseudo-terminal (tmux): the `(qemu) `
// prompt, Tab completion of commands, info items, capability names and
// on/off, Ctrl-C dropping the typed line, Ctrl-D quitting, and the history
// kept across two runs (Up arrow in the second run finds the first run's
// commands), and `info postcopy_blocktime -w` on a destination in postcopy
// (one frame redrawn in place, stopped by a key, then by the end of the
// migration). Runs the real program, `node dist/src/cli.js`.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireUffd } from '../helpers/uffd-available.js';
import { cli, ensureBuilt, killConsoles, startConsole } from '../helpers/cli.js';
import { Tmux, haveTmux, lastLine } from '../helpers/tmux.js';
import { freeTcpPort } from '../../src/migration/local-destination.js';

const tmuxOk = haveTmux();
const maybe = tmuxOk ? describe : describe.skip;
const term = new Tmux(`postcopy-hmp-tty-${process.pid}`);

let dir: string;
let historyFile: string;

const waitScreen = (pred: (s: string) => boolean, what: string, timeoutMs?: number): Promise<string> =>
  term.waitScreen('vm', pred, what, timeoutMs);
const type = (text: string): Promise<void> => term.type('vm', text);
const key = (name: string): Promise<void> => term.key('vm', name);

/** types a line and Enter */
async function enter(text: string): Promise<void> {
  await type(text);
  await key('Enter');
}

/** `quit`, then the shell says the console's exit status was 0 */
async function quitVm(): Promise<void> {
  await enter('quit');
  await waitScreen((x) => x.includes('EXITED-0'), 'exit after quit');
  term.kill('vm');
}

/** the non-empty line above the last one */
function lineAbove(x: string): string {
  const rows = x.split('\n').filter((l) => l.trim() !== '');
  return rows[rows.length - 2] ?? '';
}

/** Waits until `typed` is the last line with a progress line (`progress`,
 *  percent in group 2) above it, then until that line is redrawn in place
 *  with more sent, the typed line intact; returns the screen. */
async function progressAbove(typed: string, progress: RegExp): Promise<string> {
  const s = await waitScreen((x) => lastLine(x) === typed && progress.test(lineAbove(x)), 'a progress line above the typed line');
  const first = Number(progress.exec(lineAbove(s))?.[2]);
  return waitScreen((x) => lastLine(x) === typed && Number(progress.exec(lineAbove(x))?.[2]) > first,
    'the progress line redrawn in place with more sent');
}

/** startVm, then waits for its first prompt */
async function openVm(mem?: string, extra?: string): Promise<void> {
  startVm(mem, extra);
  await waitScreen((x) => lastLine(x) === '(qemu)', 'the prompt');
}

/** starts the console in tmux; mem null: no options at all (what `npm start` runs) */
function startVm(mem: string | null = '64M', extra = ''): void {
  const args = mem === null ? '' : `-m ${mem} ${extra}`;
  const cmd = `env POSTCOPY_HISTORY='${historyFile}' '${process.execPath}' '${cli}' ${args}; echo EXITED-$?; sleep 60`;
  term.start('vm', cmd);
}

beforeAll(() => {
  if (!tmuxOk) return;
  dir = mkdtempSync(join(tmpdir(), 'hmp-tty-'));
  historyFile = join(dir, 'history');
  ensureBuilt();
  term.open();
}, 180_000);

afterAll(() => {
  killConsoles();
  if (!tmuxOk) return;
  term.close();
  rmSync(dir, { recursive: true, force: true });
});

maybe('interactive console (tmux)', () => {
  it('prompt, completion, Ctrl-C, Ctrl-D; history across two runs', async () => {
    startVm();
    let s = await waitScreen((x) => lastLine(x) === '(qemu)', 'the first prompt');
    expect(s).toContain("type 'help' for commands");
    expect(s).toContain("'migrate' with no URI (or 'migrate local') starts a matching");

    // a command name and an info item complete with Tab
    await type('info sta');
    await key('Tab');
    await waitScreen((x) => lastLine(x) === '(qemu) info status', 'info status completed');
    await key('Enter');
    await waitScreen((x) => x.includes('VM status: running'), 'the info status output');

    // capability names, then on/off (two candidates: Tab twice lists them)
    await type('migrate_set_capability postcopy-b');
    await key('Tab');
    await waitScreen((x) => lastLine(x).trimEnd() === '(qemu) migrate_set_capability postcopy-blocktime', 'capability completed');
    await type('o');
    // a single match completes with the space after it, as QEMU's readline does
    await waitScreen((x) => lastLine(x) === '(qemu) migrate_set_capability postcopy-blocktime o', 'the space came with the completion');
    await key('Tab');
    await key('Tab');
    s = await waitScreen((x) => /off\s+on/.test(x), 'on/off listed');

    // Ctrl-C drops the typed line and gives a fresh prompt; nothing ran
    await key('C-c');
    s = await waitScreen((x) => lastLine(x) === '(qemu)', 'a fresh prompt after Ctrl-C');
    expect(s).toContain('migrate_set_capability postcopy-blocktime o^C');

    await enter('info migrate_capabilities');
    s = await waitScreen((x) => x.includes('postcopy-blocktime: off'), 'capabilities (the Ctrl-C line did not run)');
    await enter('info cpus');
    await waitScreen((x) => /\* CPU #0: thread_id=\d+/.test(x), 'info cpus');

    // Ctrl-D on an empty line quits cleanly
    await key('C-d');
    await waitScreen((x) => x.includes('EXITED-0'), 'exit after Ctrl-D');
    term.kill('vm');

    const saved = readFileSync(historyFile, 'utf8').split('\n').filter((l) => l !== '');
    expect(saved).toEqual(['info status', 'info migrate_capabilities', 'info cpus']);

    // second run: Up walks back through the first run's commands
    startVm();
    await waitScreen((x) => lastLine(x) === '(qemu)', 'the second run\'s prompt');
    await key('Up');
    await waitScreen((x) => lastLine(x) === '(qemu) info cpus', 'Up: last command of the first run');
    await key('Up');
    await waitScreen((x) => lastLine(x) === '(qemu) info migrate_capabilities', 'Up again');
    await key('Up');
    await waitScreen((x) => lastLine(x) === '(qemu) info status', 'Up a third time');
    await key('Enter');
    await waitScreen((x) => x.includes('VM status: running'), 'the recalled command ran');
    await quitVm();
  }, 120_000);

  it('a live progress line above the prompt while a migration runs; the typed line stays intact', async () => {
    if (!requireUffd()) return;
    // one pass of the sweep, then the guest stops dirtying: precopy converges
    await openVm('128M', '-workload sweep,end=128M,sweeps=1');
    await enter('migrate_set_parameter max-bandwidth 24'); // ~5 s for 128 MiB
    await enter('migrate -d');
    await type('info sta');
    const progress = /^migration (setup|active) \| +(\d+)% of 128 MiB/;
    const s = await progressAbove('(qemu) info sta', progress);
    expect(s.split('\n').filter((l) => progress.test(l))).toHaveLength(1); // redrawn, not scrolled
    await key('Tab');
    await waitScreen((x) => lastLine(x) === '(qemu) info status', 'completion still works under the progress line');
    await key('Enter');
    await waitScreen((x) => x.includes('VM status: running'), 'the command ran');
    await waitScreen((x) => /migration completed in \d+ ms/.test(x), 'the final status line', 90_000);
    await quitVm();
  }, 150_000);
  it("npm start's lab, as the banner teaches it: five commands, real blocktime figures from the destination", async () => {
    if (!requireUffd()) return;
    startVm(null);
    await waitScreen((x) => x.includes('This is the local lab') && lastLine(x) === '(qemu)', 'the banner and the prompt');
    for (const cmd of ['migrate_set_capability postcopy-ram on', 'migrate_set_capability postcopy-blocktime on', 'migrate']) {
      await enter(cmd);
    }
    await waitScreen((x) => x.includes("'migrate_start_postcopy' switches to postcopy"), 'migrate says how to go on');
    await enter('migrate_start_postcopy');
    await waitScreen((x) => /migration completed in \d+ ms/.test(x), 'the migration completed', 60_000);
    await enter('info postcopy_blocktime');
    const s = await waitScreen((x) => /Latency distribution:/.test(x) && lastLine(x) === '(qemu)', 'the blocktime view');
    expect(s).toContain('Postcopy blocktime: final');
    const rows = [...s.matchAll(/│ +(\d) │ +(\d+) │ +(\d+) │/g)];
    expect(rows.map((r) => Number(r[1]))).toEqual([0, 1]); // both vCPUs of the lab VM
    expect(rows.reduce((n, r) => n + Number(r[3]), 0)).toBeGreaterThan(0); // they really faulted
    await quitVm();
  }, 120_000);

  it('text typed while a synchronous migrate waits shows on its own line under the live line, and runs afterwards', async () => {
    if (!requireUffd()) return;
    await openVm('64M', '-workload sweep,end=64M,sweeps=1');
    await enter('migrate_set_parameter max-bandwidth 16'); // ~4 s for 64 MiB
    await enter('migrate');
    const progress = /^migration (setup|active) \| +(\d+)% of 64 MiB/;
    await waitScreen((x) => progress.test(lastLine(x)), 'the live line while migrate waits');
    await type('info sta');
    await progressAbove('info sta', progress); // no prompt while migrate waits
    await key('Tab');
    await waitScreen((x) => lastLine(x) === 'info status', 'completion while migrate waits');
    await key('Enter');
    const done = await waitScreen((x) => x.includes('VM status: paused (postmigrate)') && lastLine(x) === '(qemu)', 'the typed command ran after the migration', 60_000);
    expect(done).toMatch(/\nmigration completed in \d+ ms/);
    expect(done).not.toMatch(/Mbps\S/); // nothing glued onto the live line
    await quitVm();
  }, 120_000);

  it('a refused connection prints one line, as QEMU', async () => {
    await openVm();
    const port = await freeTcpPort(); // nobody listens there
    await enter(`migrate tcp:127.0.0.1:${port}`);
    const s = await waitScreen((x) => x.includes('Connection refused') && lastLine(x) === '(qemu)', 'the error and a prompt');
    expect(s.split('\n').filter((l) => l.includes('Connection refused'))).toEqual([`Error: Failed to connect to 'tcp:127.0.0.1:${port}': Connection refused`]);
    await quitVm();
  }, 60_000);

  it('migrate_cancel in postcopy asks first: n keeps the migration, y cancels it', async () => {
    if (!requireUffd()) return;
    // the guest is written once, then postcopy pushes the rest at 1 MiB/s: it stays in postcopy
    await openVm('64M', '-workload sweep,sweeps=1');
    for (const cmd of ['migrate_set_capability postcopy-ram on', 'migrate_set_parameter max-bandwidth 1',
      'migrate_set_parameter max-postcopy-bandwidth 1M', 'migrate', 'migrate_start_postcopy']) {
      await enter(cmd);
    }
    await waitScreen((x) => /migration postcopy-active/.test(x) && lastLine(x) === '(qemu)', 'postcopy running');
    await enter('migrate_cancel');
    let s = await waitScreen((x) => lastLine(x) === 'Cancel it anyway? (y/N)', 'the question');
    expect(s).toContain('Warning: the migration is in postcopy: the guest runs on the destination with part of its RAM still here,'
      + ' so cancelling loses it on both sides');
    await enter('n');
    await waitScreen((x) => x.includes('not cancelled') && lastLine(x) === '(qemu)', 'not cancelled');
    await enter('info status');
    await waitScreen((x) => x.includes('VM status: paused (finish-migrate)') || x.includes('VM status: paused (postmigrate)'), 'the migration goes on');
    await enter('migrate_cancel');
    await waitScreen((x) => lastLine(x) === 'Cancel it anyway? (y/N)', 'the question again');
    await enter('y');
    s = await waitScreen((x) => x.includes('migration cancelled') && lastLine(x) === '(qemu)', 'cancelled');
    await quitVm();
  }, 120_000);

  it('info postcopy_blocktime -w on a destination in postcopy: one frame redrawn in place, stopped by a key, then by the end of the migration', async () => {
    if (!requireUffd()) return;
    const port = await freeTcpPort();
    // the source on a pipe, started first: its vCPUs write all of guest RAM while the destination starts; after
    // the switch they sweep on ahead of a push held to 8 MiB/s, page after page: seconds of postcopy
    const src = startConsole(['-m', '512M', '-smp', '2', '--exit-on-error']);
    await openVm('512M', `-smp 2 -incoming tcp:127.0.0.1:${port}`);
    await enter('migrate_set_capability postcopy-blocktime on');
    src.p.stdin.end(['migrate_set_capability postcopy-ram on', 'migrate_set_parameter max-bandwidth 16',
      'migrate_set_parameter max-postcopy-bandwidth 8M', `migrate -d tcp:127.0.0.1:${port}`, 'migrate_start_postcopy',
      'migrate_wait 120', ''].join('\n'));
    await waitScreen((x) => /migration postcopy-active/.test(x), 'postcopy running on the destination');

    await enter('info postcopy_blocktime -w');
    const pages = /^pages received +\S+ +([\d.]+) % {2}(\d+)\/131072$/m;
    const headers = (x: string) => (x.match(/^postcopy blocktime -w: /gm) ?? []).length;
    let s = await waitScreen((x) => pages.test(x), 'the first frame');
    const first = Number(pages.exec(s)?.[2]);
    s = await waitScreen((x) => Number(pages.exec(x)?.[2]) > first, 'the frame redrawn with more pages received');
    expect(headers(s)).toBe(1); // redrawn in place, not one frame under the other
    expect(s).toMatch(/^postcopy blocktime -w: postcopy-active +[\d.]+ s +\(a key stops\)$/m);
    for (const v of [0, 1]) expect(s).toMatch(new RegExp(`^vCPU ${v} +\\S+ +[\\d.]+ % {2}[\\d.]+ [nµm]?s blocked, \\d+ faults$`, 'm'));
    expect(s).toMatch(/^total blocktime +[\d.]+ [nµm]?s /m);
    // the console's own live line made way for the frame (the one above the command is from before it)
    expect(s.slice(s.indexOf('(qemu) info postcopy_blocktime -w'))).not.toMatch(/^migration postcopy-active \|/m);

    await type('q');
    s = await waitScreen((x) => x.includes('stopped (key pressed); the migration goes on') && lastLine(x) === '(qemu)', 'stopped by the key');
    expect(headers(s)).toBe(1);

    // again: now it runs until the migration completes, and stops by itself
    await enter('info postcopy_blocktime -w');
    s = await waitScreen((x) => x.includes('stopped: the migration completed') && lastLine(x) === '(qemu)', 'stopped by the end of the migration', 90_000);
    expect(s).toMatch(/^postcopy blocktime -w: completed/m);
    expect(s).toMatch(/^pages received +\S+ +100\.0 % {2}131072\/131072$/m);
    expect(headers(term.history('vm'))).toBe(2); // one frame per -w in the whole scrollback
    expect(await src.exit).toBe(0);
    await quitVm();
  }, 180_000);
});
