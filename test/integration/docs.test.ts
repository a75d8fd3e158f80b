// The docs test themselves: every shell block of README.md and docs/*.md is
// extracted from the Markdown and run as a user would run it, or the doc says
// why it cannot run on one machine (test/helpers/doc-blocks.ts has the
// conventions). A script runs in a fresh bash in the checkout (stdin empty,
// `set -e -o pipefail`), calling the program the README's way (`npx
// postcopy`), with a fresh HOME shared by all blocks as on a new machine; it
// must end with the status the doc says (0 unless marked) and print what the
// doc shows. A console session is typed into a real terminal (tmux), one line
// at a time once the prompt is back, each command's output compared with
// what the doc shows (the live migration line left out), and must end back
// at the shell with status 0. Processes a block leaves behind (daemons) are
// found by a variable in their environment and ended.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { root, ensureBuilt } from '../helpers/cli.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { Tmux, haveTmux, lastLine } from '../helpers/tmux.js';
import { matchOutput, parseBlocks, sessionSteps, type DocBlock } from '../helpers/doc-blocks.js';

const files = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
const blocks = files.flatMap((f) => parseBlocks(f, readFileSync(join(root, f), 'utf8'))).filter((b) => b.kind !== 'other');

const uffd = requireUffd();
const tmuxOk = haveTmux();
/** netcat-openbsd, which the QMP examples pipe into (.ci/run installs it) */
const ncOk = ((): boolean => {
  if (spawnSync('sh', ['-c', 'command -v nc'], { stdio: 'ignore' }).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('nc (netcat-openbsd) is required in CI (.ci/run installs it) but is missing');
  return false;
})();
let home: string;
const term = new Tmux(`postcopy-docs-${process.pid}`);

beforeAll(() => {
  ensureBuilt();
  home = mkdtempSync(join(tmpdir(), 'postcopy-docs-home-'));
  if (tmuxOk) {
    term.open();
    term.run('set-option', '-g', 'history-limit', '20000');
  }
}, 180_000);

afterAll(() => {
  if (tmuxOk) term.close();
  rmSync(home, { recursive: true, force: true });
});

/** A fresh user's environment; `marker` finds what the block leaves running. */
function userEnv(marker: string): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LANG: 'C.UTF-8', TERM: 'xterm-256color',
    // npm's own once-a-day "new npm version" notice (a registry query): not this program's output
    NPM_CONFIG_UPDATE_NOTIFIER: 'false', POSTCOPY_DOC_TEST: marker,
  };
  if (process.env.CI) env.CI = process.env.CI;
  return env;
}

/** Ends every process whose environment carries the marker (daemons a block started). */
async function endLeftovers(marker: string): Promise<number[]> {
  const find = (): number[] => readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try { return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`POSTCOPY_DOC_TEST=${marker}`); } catch { return false; }
  }).filter((pid) => {
    try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
  });
  const settle = async (ms: number): Promise<number[]> => {
    for (let t = 0; t < ms && find().length > 0; t += 50) await new Promise((r) => setTimeout(r, 50));
    return find();
  };
  const left = await settle(3000); // a VM told to quit may still be on its way out
  for (const pid of left) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
  for (const pid of await settle(5000)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  return left;
}

function runScript(body: string, marker: string, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('bash', ['--noprofile', '--norc', '-e', '-o', 'pipefail', '-c', `exec 2>&1\n${body}`], {
      cwd: root, env: userEnv(marker), stdio: ['ignore', 'pipe', 'ignore'], detached: true,
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const t = setTimeout(() => { out += `\n[doc test: killed after ${timeoutMs} ms]`; try { process.kill(-p.pid!, 'SIGKILL'); } catch { /* gone */ } }, timeoutMs);
    p.on('close', (code) => { clearTimeout(t); resolve({ code, out }); });
  });
}

/** the live migration line and its final form: not a command's output */
const LIVE = /^migration (setup|active|postcopy-active|device|cancelling|completed|failed|cancelled)\b/;
const PROMPT = /^(\$|\(qemu\))( |$)/;

async function runSession(b: DocBlock, marker: string): Promise<void> {
  const steps = sessionSteps(b.body);
  expect(steps[0]?.prompt).toBe('$'); // a session starts in the shell
  const s = `doc${b.line}`;
  const env = Object.entries({ ...userEnv(marker), PS1: '$ ' }).map(([k, v]) => `${k}='${v}'`).join(' ');
  term.start(s, `env -i ${env} bash --noprofile --norc`, root);
  try {
    const lines = (): string[] => term.history(s).split('\n').filter((l) => l.trim() !== '');
    await term.waitScreen(s, (x) => lastLine(x) === '$', 'the shell prompt');
    for (const step of steps) {
      const before = lines().filter((l) => PROMPT.test(l)).length;
      await term.type(s, step.input);
      await term.key(s, 'Enter');
      await term.waitScreen(s, (x) => /^(\$|\(qemu\))$/.test(lastLine(x)) && lines().filter((l) => PROMPT.test(l)).length > before,
        `the prompt after '${step.input}'`, 90_000);
      const all = lines();
      const echoed = all.map((l) => l.trimEnd()).lastIndexOf(`${step.prompt} ${step.input}`);
      const printed = all.slice(echoed + 1, all.length - 1).filter((l) => !LIVE.test(l)).join('\n');
      if (step.output.length > 0) {
        const why = matchOutput(step.output.join('\n'), printed);
        if (why) throw new Error(`${b.file}:${b.line}: '${step.input}': ${why}`);
      } else if (step.prompt === '(qemu)') {
        expect(printed.split('\n').filter((l) => /^(Error:|unknown command)/.test(l))).toEqual([]);
      }
    }
    expect(lastLine(term.screen(s))).toBe('$'); // the session ends back in the shell
    await term.type(s, 'echo "doc-exit-$?"');
    await term.key(s, 'Enter');
    await term.waitScreen(s, (x) => /^doc-exit-\d+$/m.test(x), 'the exit status');
    expect(/^doc-exit-(\d+)$/m.exec(term.screen(s))?.[1]).toBe('0');
  } finally {
    term.kill(s);
  }
}

async function runBlock(b: DocBlock): Promise<void> {
  expect(b.badMarker).toBeUndefined();
  const marker = randomUUID();
  try {
    if (b.kind === 'session') {
      await runSession(b, marker);
      return;
    }
    const r = await runScript(b.body, marker, 150_000);
    if (r.code !== b.exit) throw new Error(`${b.file}:${b.line}: exit status ${r.code}, the doc says ${b.exit}; it printed:\n${r.out}`);
    if (b.output !== undefined) {
      const why = matchOutput(b.output, r.out);
      if (why) throw new Error(`${b.file}:${b.line}: ${why}`);
    }
  } finally {
    const left = await endLeftovers(marker);
    if (left.length > 0) process.stderr.write(`${b.file}:${b.line}: ended what the block left running: ${left.join(', ')}\n`);
  }
}

describe('the docs, run as written', () => {
  it('finds the blocks of README.md and every doc', () => {
    expect(files).toContain('README.md');
    expect(blocks.filter((b) => b.file === 'README.md' && !b.skip).length).toBeGreaterThan(0);
  });

  it('the blocks that cannot run on one machine say why', () => {
    const marked = blocks.filter((b) => b.skip !== undefined);
    for (const b of marked) expect([`${b.file}:${b.line}`, (b.skip ?? '').length > 10]).toEqual([`${b.file}:${b.line}`, true]);
    process.stderr.write(`doc blocks not run here:\n${marked.map((b) => `  ${b.file}:${b.line}: ${b.skip}`).join('\n')}\n`);
  });

  for (const b of blocks.filter((x) => x.skip === undefined)) {
    const name = `${b.file}:${b.line} ${b.body.split('\n')[0].slice(0, 70)}`;
    // every runnable block starts a VM (requireUffd said why it cannot; in CI it fails)
    const cannot = !uffd ? 'userfaultfd is unavailable'
      : b.kind === 'session' && !tmuxOk ? 'tmux is not installed'
        : /\bnc -N\b/.test(b.body) && !ncOk ? 'nc (netcat-openbsd) is not installed' : undefined;
    if (cannot) process.stderr.write(`skipping ${name}: ${cannot}\n`);
    const maybe = cannot === undefined ? it : it.skip;
    maybe(name, () => runBlock(b), 180_000);
  }
});
