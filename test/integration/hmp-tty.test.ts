// The interactive console in a real pseudo-terminal (tmux): the `(qemu) `
// prompt, Tab completion of commands, info items, capability names and
// on/off, Ctrl-C dropping the typed line, Ctrl-D quitting, and the history
// kept across two runs (Up arrow in the second run finds the first run's
// commands). Runs the real program, `node dist/src/cli.js`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireUffd } from '../helpers/uffd-available.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = process.env.POSTCOPY_CLI ?? join(root, 'dist', 'src', 'cli.js');
const socket = `postcopy-hmp-tty-${process.pid}`;

function haveTmux(): boolean {
  const r = spawnSync('tmux', ['-V'], { stdio: 'ignore' });
  if (r.status === 0) return true;
  if (process.env.CI === 'true') throw new Error('tmux is required in CI (.ci/run installs it) but is missing');
  process.stderr.write('skipping: tmux is not installed (apt-get install tmux)\n');
  return false;
}
const tmuxOk = haveTmux();
const maybe = tmuxOk ? describe : describe.skip;

function newest(d: string): number {
  let t = 0;
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

let dir: string;
let historyFile: string;

function tmux(...args: string[]): string {
  const r = spawnSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const screen = (): string => tmux('capture-pane', '-p', '-t', 'vm');

async function waitScreen(pred: (s: string) => boolean, what: string, timeoutMs = 30_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  let s = '';
  while (Date.now() < end) {
    s = screen();
    if (pred(s)) return s;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}; screen:\n${s}`);
}

/** the last non-empty line on the screen */
const lastLine = (s: string): string => s.split('\n').filter((l) => l.trim() !== '').pop() ?? '';

/** types text one key at a time (so readline sees typing, not a paste) */
async function type(text: string): Promise<void> {
  for (const ch of text) {
    tmux('send-keys', '-t', 'vm', '-l', ch);
    await sleep(5);
  }
  await sleep(50);
}
async function key(name: string): Promise<void> {
  tmux('send-keys', '-t', 'vm', name);
  await sleep(150);
}

/** starts the console in tmux; mem null: no options at all (what `npm start` runs) */
function startVm(mem: string | null = '64M', extra = ''): void {
  const args = mem === null ? '' : `-m ${mem} ${extra}`;
  const cmd = `env POSTCOPY_HISTORY='${historyFile}' '${process.execPath}' '${cli}' ${args}; echo EXITED-$?; sleep 60`;
  tmux('new-session', '-d', '-s', 'vm', '-x', '200', '-y', '50', cmd);
}

beforeAll(() => {
  if (!tmuxOk) return;
  dir = mkdtempSync(join(tmpdir(), 'hmp-tty-'));
  historyFile = join(dir, 'history');
  if (process.env.POSTCOPY_CLI === undefined && (!existsSync(cli) || statSync(cli).mtimeMs < newest(join(root, 'src')))) {
    spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { cwd: root, stdio: 'ignore' });
  }
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build with npx tsc -p .`);
  // a session that outlives the VM sessions, so the tmux server stays up between them
  tmux('new-session', '-d', '-s', 'keeper', 'sleep 600');
}, 180_000);

afterAll(() => {
  if (!tmuxOk) return;
  spawnSync('tmux', ['-L', socket, 'kill-server'], { stdio: 'ignore' });
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

    await type('info migrate_capabilities');
    await key('Enter');
    s = await waitScreen((x) => x.includes('postcopy-blocktime: off'), 'capabilities (the Ctrl-C line did not run)');
    await type('info cpus');
    await key('Enter');
    await waitScreen((x) => /\* CPU #0: thread_id=\d+/.test(x), 'info cpus');

    // Ctrl-D on an empty line quits cleanly
    await key('C-d');
    await waitScreen((x) => x.includes('EXITED-0'), 'exit after Ctrl-D');
    tmux('kill-session', '-t', 'vm');

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
    await type('quit');
    await key('Enter');
    await waitScreen((x) => x.includes('EXITED-0'), 'exit after quit');
    tmux('kill-session', '-t', 'vm');
  }, 120_000);

  it('a live progress line above the prompt while a migration runs; the typed line stays intact', async () => {
    if (!requireUffd()) return;
    // one pass of the sweep, then the guest stops dirtying: precopy converges
    startVm('128M', '-workload sweep,end=128M,sweeps=1');
    await waitScreen((x) => lastLine(x) === '(qemu)', 'the prompt');
    await type('migrate_set_parameter max-bandwidth 24'); // ~5 s for 128 MiB
    await key('Enter');
    await type('migrate -d');
    await key('Enter');
    await type('info sta');
    const progress = /^migration (setup|active) \| +(\d+)% of 128 MiB/;
    const lineAbove = (x: string): string => {
      const rows = x.split('\n').filter((l) => l.trim() !== '');
      return rows[rows.length - 2] ?? '';
    };
    let s = await waitScreen((x) => lastLine(x) === '(qemu) info sta' && progress.test(lineAbove(x)), 'a progress line above the typed line');
    const first = Number(progress.exec(lineAbove(s))?.[2]);
    s = await waitScreen((x) => {
      const m = progress.exec(lineAbove(x));
      return lastLine(x) === '(qemu) info sta' && m !== null && Number(m[2]) > first;
    }, 'the progress line redrawn in place with more sent');
    expect(s.split('\n').filter((l) => progress.test(l))).toHaveLength(1); // redrawn, not scrolled
    await key('Tab');
    await waitScreen((x) => lastLine(x) === '(qemu) info status', 'completion still works under the progress line');
    await key('Enter');
    await waitScreen((x) => x.includes('VM status: running'), 'the command ran');
    await waitScreen((x) => /migration completed in \d+ ms/.test(x), 'the final status line', 90_000);
    await type('quit');
    await key('Enter');
    await waitScreen((x) => x.includes('EXITED-0'), 'exit after quit');
    tmux('kill-session', '-t', 'vm');
  }, 150_000);
  it("npm start's lab, as the banner teaches it: five commands, real blocktime figures from the destination", async () => {
    if (!requireUffd()) return;
    startVm(null);
    await waitScreen((x) => x.includes('This is the local lab') && lastLine(x) === '(qemu)', 'the banner and the prompt');
    for (const cmd of ['migrate_set_capability postcopy-ram on', 'migrate_set_capability postcopy-blocktime on', 'migrate']) {
      await type(cmd);
      await key('Enter');
    }
    await waitScreen((x) => x.includes("'migrate_start_postcopy' switches to postcopy"), 'migrate says how to go on');
    await type('migrate_start_postcopy');
    await key('Enter');
    await waitScreen((x) => /migration completed in \d+ ms/.test(x), 'the migration completed', 60_000);
    await type('info postcopy_blocktime');
    await key('Enter');
    const s = await waitScreen((x) => /Latency distribution:/.test(x) && lastLine(x) === '(qemu)', 'the blocktime view');
    expect(s).toContain('Postcopy blocktime: final');
    const rows = [...s.matchAll(/│ +(\d) │ +(\d+) │ +(\d+) │/g)];
    expect(rows.map((r) => Number(r[1]))).toEqual([0, 1]); // both vCPUs of the lab VM
    expect(rows.reduce((n, r) => n + Number(r[3]), 0)).toBeGreaterThan(0); // they really faulted
    await type('quit');
    await key('Enter');
    await waitScreen((x) => x.includes('EXITED-0'), 'exit after quit');
    tmux('kill-session', '-t', 'vm');
  }, 120_000);
});
