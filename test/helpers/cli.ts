// The compiled program the end-to-end tests run (`node dist/src/cli.js`, or
// the file named by POSTCOPY_CLI), rebuilt first when dist/ is older than
// the sources, and a console process fed on a pipe whose output a test can
// wait for.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cli = process.env.POSTCOPY_CLI ?? join(root, 'dist', 'src', 'cli.js');

/** the newest mtime of the .ts files below d */
export function newestSource(d: string = join(root, 'src')): number {
  let t = 0;
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) t = Math.max(t, newestSource(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

/** Compiles dist/ when it is missing or older than src/ (for beforeAll). */
export function ensureBuilt(): void {
  if (process.env.POSTCOPY_CLI === undefined && (!existsSync(cli) || statSync(cli).mtimeMs < newestSource())) {
    // tsc emits even when another module has a type error; only a missing output is fatal
    spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { cwd: root, stdio: 'ignore' });
  }
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build with npx tsc -p .`);
}

/** A console process (`node cli.js ARGS`) on pipes, stdout and stderr in one text. */
export interface ConsoleProc {
  p: ChildProcessWithoutNullStreams;
  out: () => string;
  exit: Promise<number | null>;
}

const procs: ConsoleProc[] = [];

/** Starts `node cli.js ARGS` with NO_COLOR; killConsoles() ends what is left. */
export function startConsole(args: string[], env: NodeJS.ProcessEnv = {}): ConsoleProc {
  const p = spawn(process.execPath, [cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } });
  let out = '';
  p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  p.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  p.stdin.on('error', () => { /* the program may end before reading everything */ });
  const v = { p, out: () => out, exit: new Promise<number | null>((r) => p.on('exit', (c) => r(c))) };
  procs.push(v);
  return v;
}

/** SIGKILLs the consoles started here that still run (for afterAll). */
export function killConsoles(): void {
  for (const v of procs) if (v.p.exitCode === null && v.p.signalCode === null) v.p.kill('SIGKILL');
}

/** Resolves with the first match of `re` in the output; fails with the output
 *  when the time passes or the process exits without it. */
export async function waitOut(v: ConsoleProc, re: RegExp, what: string, timeoutMs = 60_000): Promise<RegExpMatchArray> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const m = re.exec(v.out());
    if (m) return m;
    if (v.p.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = re.exec(v.out());
  if (m) return m;
  throw new Error(`no ${what}; output:\n${v.out()}`);
}
