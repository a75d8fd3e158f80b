// A real pseudo-terminal for console tests: a private tmux server (its own
// socket name) with one window per program, what is on its screen, and keys
// typed one at a time so readline sees typing, not a paste.
import { spawnSync } from 'node:child_process';

/** true when tmux runs; false (reason printed) when not; throws in CI (.ci/run installs it) */
export function haveTmux(): boolean {
  const r = spawnSync('tmux', ['-V'], { stdio: 'ignore' });
  if (r.status === 0) return true;
  if (process.env.CI === 'true') throw new Error('tmux is required in CI (.ci/run installs it) but is missing');
  process.stderr.write('skipping: tmux is not installed (apt-get install tmux)\n');
  return false;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** the last non-empty line of a screen */
export const lastLine = (s: string): string => s.split('\n').filter((l) => l.trim() !== '').pop() ?? '';

export class Tmux {
  /** `name`: the tmux socket name (-L), unique per test file and process */
  constructor(readonly name: string) {}

  run(...args: string[]): string {
    const r = spawnSync('tmux', ['-L', this.name, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  /** Starts the server with a session that outlives the others, so it stays
   *  up between them. */
  open(): void { this.run('new-session', '-d', '-s', 'keeper', 'sleep 600'); }

  /** Ends the server and every program in it. */
  close(): void { spawnSync('tmux', ['-L', this.name, 'kill-server'], { stdio: 'ignore' }); }

  /** Runs a shell command line in a new 200x50 session (in `cwd` when given). */
  start(session: string, cmd: string, cwd?: string): void {
    this.run('new-session', '-d', '-s', session, '-x', '200', '-y', '50', ...(cwd ? ['-c', cwd] : []), cmd);
  }

  /** The whole pane, scrollback included, wrapped lines joined. */
  history(session: string): string { return this.run('capture-pane', '-p', '-J', '-S', '-', '-t', session); }

  kill(session: string): void { this.run('kill-session', '-t', session); }

  /** the pid of the program running in the session's pane */
  panePid(session: string): number {
    return Number(this.run('display-message', '-p', '-t', session, '#{pane_pid}').trim());
  }

  screen(session: string): string { return this.run('capture-pane', '-p', '-t', session); }

  async waitScreen(session: string, pred: (s: string) => boolean, what: string, timeoutMs = 30_000): Promise<string> {
    const end = Date.now() + timeoutMs;
    let s = '';
    while (Date.now() < end) {
      s = this.screen(session);
      if (pred(s)) return s;
      await sleep(50);
    }
    throw new Error(`timed out waiting for ${what}; screen:\n${s}`);
  }

  /** types text one key at a time */
  async type(session: string, text: string): Promise<void> {
    for (const ch of text) {
      this.run('send-keys', '-t', session, '-l', ch);
      await sleep(5);
    }
    await sleep(50);
  }

  async key(session: string, name: string): Promise<void> {
    this.run('send-keys', '-t', session, name);
    await sleep(150);
  }
}
