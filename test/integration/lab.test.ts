// The lab (`migrate` with no URI) over its whole life, the real program on
// pipes: a lab destination never outlives its console, whatever ends the
// console (SIGKILL, SIGHUP), and takes its temporary directory with it; a
// precopy migrate_cancel releases it at once; after a completed migration the
// guest runs there, so a second `migrate` is refused with where it runs, and
// `info postcopy_blocktime` says the migration never entered postcopy.
import { existsSync, readFileSync } from 'node:fs';
import { requireUffd } from '../helpers/uffd-available.js';
import { cli, ensureBuilt, killConsoles, startConsole, waitOut, type ConsoleProc } from '../helpers/cli.js';
import { Tmux, haveTmux, lastLine } from '../helpers/tmux.js';

const maybe = requireUffd() ? describe : describe.skip;

const tmuxOk = haveTmux();
const term = new Tmux(`postcopy-lab-${process.pid}`);

beforeAll(() => {
  ensureBuilt();
  if (tmuxOk) term.open();
}, 180_000);
afterAll(() => {
  killConsoles();
  if (tmuxOk) term.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** ended: no such process, or a zombie nobody reaped */
function ended(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The console's lab destination: its pid and the private directory its QMP socket is in. */
async function labOf(c: ConsoleProc | number): Promise<{ pid: number; dir: string }> {
  const consolePid = typeof c === 'number' ? c : c.p.pid!;
  let pid = 0;
  await waitFor('the lab destination process', () => {
    pid = children(consolePid).find((p) => {
      try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('-incoming'); } catch { return false; }
    }) ?? 0;
    return pid !== 0;
  });
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const qmp = argv[argv.indexOf('-qmp') + 1];
  const dir = /^unix:(.*)\/qmp\.sock,/.exec(qmp)?.[1] ?? '';
  expect(dir).toMatch(/\/postcopy-lab-[^/]+$/);
  expect(existsSync(dir)).toBe(true);
  return { pid, dir };
}

/** A console whose lab migration runs slowly (1 MiB/s), stdin left open. */
async function slowLab(): Promise<{ c: ConsoleProc; lab: { pid: number; dir: string } }> {
  const c = startConsole(['-m', '64M', '-smp', '1']);
  c.p.stdin.write('migrate_set_parameter max-bandwidth 1\nmigrate -d\ninfo status\n');
  await waitOut(c, /VM status: running\n/, 'the console running the migration');
  return { c, lab: await labOf(c) };
}

maybe('the lab', () => {
  it.each([['SIGKILL'], ['SIGHUP']] as const)('a console ended by %s takes its lab destination and its directory with it', async (sig) => {
    const { c, lab } = await slowLab();
    c.p.kill(sig);
    const code = await c.exit;
    if (sig === 'SIGHUP') {
      expect(c.out()).toContain('postcopy: terminating on signal 1\n');
      expect(code).toBe(0);
    }
    await waitFor(`the lab destination ${lab.pid} to end`, () => ended(lab.pid));
    await waitFor(`${lab.dir} to go`, () => !existsSync(lab.dir));
  }, 60_000);

  (tmuxOk ? it : it.skip)('closing the terminal of an interactive console takes its lab destination and its directory with it', async () => {
    term.start('vm', `exec '${process.execPath}' '${cli}' -m 64M -smp 1`);
    await term.waitScreen('vm', (x) => lastLine(x) === '(qemu)', 'the prompt');
    const consolePid = term.panePid('vm');
    for (const line of ['migrate_set_parameter max-bandwidth 1', 'migrate -d']) {
      await term.type('vm', line);
      await term.key('vm', 'Enter');
    }
    const lab = await labOf(consolePid);
    term.kill('vm'); // the terminal goes away: SIGHUP
    await waitFor(`the console ${consolePid} to end`, () => ended(consolePid));
    await waitFor(`the lab destination ${lab.pid} to end`, () => ended(lab.pid));
    await waitFor(`${lab.dir} to go`, () => !existsSync(lab.dir));
  }, 60_000);

  it('migrate_cancel in precopy releases the lab destination at once; the console goes on', async () => {
    const { c, lab } = await slowLab();
    c.p.stdin.write('migrate_cancel\n');
    await waitFor(`the lab destination ${lab.pid} to end`, () => ended(lab.pid));
    await waitFor(`${lab.dir} to go`, () => !existsSync(lab.dir));
    c.p.stdin.end('info migrate\ninfo status\n');
    expect(await c.exit).toBe(0);
    expect(c.out()).toContain('Status: \t\tcancelled\n');
    expect(c.out()).toContain('VM status: running\n');
  }, 60_000);

  it('after a completed migration the guest runs in the lab: a second migrate is refused, saying where', async () => {
    const c = startConsole(['-m', '64M', '-smp', '1', '-workload', 'sweep,sweeps=1']);
    c.p.stdin.write('migrate_set_capability postcopy-blocktime on\nmigrate\ninfo postcopy_blocktime\nmigrate\ninfo status\n');
    await waitOut(c, /VM status: paused \(postmigrate\)\n/, 'the end of the script');
    const lab = await labOf(c);
    const lines = c.out().split('\n');
    expect(lines[0]).toBe('No blocktime figures: the migration completed without entering postcopy (blocktime is measured only in postcopy:'
      + ' migrate_set_capability postcopy-ram on before migrate, then migrate_start_postcopy)');
    expect(lines[1]).toBe(`Error: The guest has migrated: it runs in the lab destination (process ${lab.pid}, QMP unix:${lab.dir}/qmp.sock);`
      + ' this VM keeps a stale copy (run state postmigrate). Start a new VM to migrate again');
    expect(ended(lab.pid)).toBe(false); // the refused migrate left it alone
    c.p.stdin.end();
    expect(await c.exit).toBe(0);
    await waitFor(`the lab destination ${lab.pid} to end with the console`, () => ended(lab.pid));
  }, 60_000);
});
