// The real `postcopy blocktime-replay` process (node dist/src/cli.js): a good
// trace prints the report and exits 0; a bad one prints FILE:LINE: problem on
// stderr, nothing on stdout, and exits non-zero; --compare puts QEMU's
// algorithms beside ours; conflicting output modes exit 2. Compiles dist/
// first when it is older than the sources it runs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareTrace } from '../../src/blocktime-trace/compare.js';
import { replayTrace } from '../../src/blocktime-trace/replay.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = join(root, 'dist', 'src', 'cli.js');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'blocktime-cli-'));
  // what `npm test` does first: compile dist/ when a source is newer than it
  spawnSync(process.execPath, [join(root, 'scripts', 'build.mjs'), '--if-stale'], { cwd: root, stdio: 'ignore' });
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build with node scripts/build.mjs`);
}, 180_000);
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

const USAGE = 'usage: postcopy blocktime-replay FILE [--json | --qemu | --compare [--json]] [--no-color]\n'
  + '       postcopy blocktime-replay --html OUT.html FILE [FILE_B]\n';

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, 'blocktime-replay', ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('a good trace: --json prints the same report replayTrace() computes; the default view prints it for people', async () => {
  const path = join(dir, 'good.jsonl');
  const lines = ['{"vcpus":[201,202],"t0":0}'];
  let t = 0;
  for (let i = 0; i < 200; i++) {
    const addr = 0x7f00_0000_0000 + i * 4096;
    lines.push(JSON.stringify({ t: (t += 1000), ev: 'fault', addr, tid: i % 3 === 2 ? 999 : 201 + (i % 3) }));
    if (i % 3 === 0) lines.push(JSON.stringify({ t: (t += 1000), ev: 'fault', addr, tid: 202 }));
    lines.push(JSON.stringify({ t: (t += 150_000), ev: 'placed', addr }));
  }
  lines.push(JSON.stringify({ t: (t += 1), ev: 'end', status: 'completed' }));
  writeFileSync(path, `${lines.join('\n')}\n`);

  const json = run(path, '--json');
  expect(json.err).toBe('');
  expect(json.code).toBe(0);
  const report = JSON.parse(json.out);
  expect(report).toEqual(await replayTrace(path));
  expect(report['x-blocktime'].faults).toBe(267);
  expect(report['x-blocktime'].nonVcpuFaults).toBe(66);

  const rich = run(path);
  expect(rich.code).toBe(0);
  expect(rich.out).toContain('Postcopy blocktime: final');
  expect(rich.out).toContain('Faults: 267 (vCPU 201, non-vCPU 66)');
  expect(rich.out).not.toContain('\x1b[');

  const qemu = run('--qemu', path);
  expect(qemu.code).toBe(0);
  expect(qemu.out).toMatch(/^Postcopy Blocktime \(ms\): \d+\nPostcopy vCPU Blocktime \(ms\):\n \[\d+, \d+\]\n/);
});

test('a malformed line: its line number on stderr, no report on stdout, exit 1', () => {
  const path = join(dir, 'trace.jsonl');
  const lines = ['{"vcpus":[201]}'];
  for (let i = 1; i <= 15; i++) lines.push(JSON.stringify({ t: i, ev: 'fault', addr: 4096 * i, tid: 201 }));
  lines.push('{"t": 16, "ev": "placed", "addr": -4096}');
  writeFileSync(path, `${lines.join('\n')}\n`);
  const r = run(path, '--json');
  expect(r.code).toBe(1);
  expect(r.out).toBe('');
  expect(r.err).toBe(`postcopy: ${path}:17: "addr" must be a non-negative integer\n`);
});

test('a missing file and a missing argument', () => {
  const r = run(join(dir, 'absent.jsonl'));
  expect(r.code).toBe(1);
  expect(r.err).toContain('absent.jsonl: no such file');
  const u = run();
  expect(u.code).toBe(2);
  expect(u.err).toContain('usage: postcopy blocktime-replay FILE');
});

describe('--compare', () => {
  // docs/blocktime-compare.md's example (hand-computed there)
  const trace = (): string => join(root, 'docs', 'examples', 'blocktime-compare.jsonl');

  test('prints one table (exact, QEMU 10.1, QEMU 7.2, kernel) and one difference line per QEMU', () => {
    const r = run(trace(), '--compare');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/│ +│ exact \(ours\) │ QEMU 10\.1 │ QEMU 7\.2 │ kernel │/);
    expect(r.out).toMatch(/│ vCPU 0 blocktime \(ms\) +│ +8 \(8\.000\) │ +6 │ +6 │ +n\/a │/);
    expect(r.out).toMatch(/│ vCPU 1 blocktime \(ms\) +│ +5 \(5\.200\) │ +5 │ +6 │ +n\/a │/);
    expect(r.out).toMatch(/│ total blocktime \(ms\) +│ +4 \(4\.000\) │ +4 │ +3 │ +n\/a │/);
    expect(r.out).toMatch(/^QEMU 10\.1: largest difference from exact: /m);
    expect(r.out).toMatch(/^QEMU 7\.2: largest difference from exact: vCPU 0 blocktime .* 6 ms against 8 ms \(-2 ms\)$/m);
    expect(r.out).not.toContain('\x1b[');
  });

  test('--compare --json: one line {"exact","qemu-10.1","qemu-7.2"}, each in the query-migrate shape', async () => {
    const path = trace();
    for (const args of [[path, '--compare', '--json'], ['--json', path, '--compare']]) {
      const r = run(...args);
      expect(r.code).toBe(0);
      expect(r.out.trimEnd().split('\n')).toHaveLength(1);
      const c = JSON.parse(r.out);
      expect(Object.keys(c)).toEqual(['exact', 'qemu-10.1', 'qemu-7.2']);
      expect(c).toEqual(await compareTrace(path));
      expect(c.exact).toEqual(await replayTrace(path));
      expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 3, 'postcopy-vcpu-blocktime': [6, 6] });
      expect(Object.keys(c['qemu-10.1'])).toEqual(['postcopy-blocktime', 'postcopy-vcpu-blocktime', 'postcopy-latency',
        'postcopy-vcpu-latency', 'postcopy-non-vcpu-latency', 'postcopy-latency-dist']);
    }
  });

  test('a bad trace exits 1 with FILE:LINE, as without --compare', () => {
    const path = join(dir, 'bad-compare.jsonl');
    writeFileSync(path, '{"vcpus":[201]}\n{"t":5,"ev":"fault","addr":4096,"tid":201}\n{"t":4,"ev":"placed","addr":4096}\n');
    const r = run(path, '--compare');
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toBe(`postcopy: ${path}:3: "t" goes backwards (4 after 5)\n`);
  });
});

test('conflicting output modes: a clear error, the usage, exit 2, nothing on stdout', () => {
  const path = join(dir, 'modes.jsonl');
  writeFileSync(path, '{"vcpus":[201]}\n');
  for (const [args, message] of [
    [['--json', '--qemu'], '--qemu and --json are two output modes: give one'],
    [['--qemu', '--compare'], '--qemu and --compare are two output modes: give one'],
  ] as const) {
    const r = run(path, ...args);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toBe(`postcopy: blocktime-replay: ${message}\n${USAGE}`);
  }
  expect(run('--help').out).toBe(USAGE);
});

test("docs/blocktime-compare.md: each command prints what the doc shows below it", () => {
  const doc = readFileSync(join(root, 'docs', 'blocktime-compare.md'), 'utf8');
  const blocks = [...doc.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], body: m[2] }));
  const runs = blocks.flatMap((b, i) => (b.lang === 'sh' ? [{ command: b.body.trim(), shown: blocks[i + 1]?.body }] : []));
  expect(runs.length).toBeGreaterThanOrEqual(2);
  for (const { command, shown } of runs) {
    const r = spawnSync('bash', ['-c', command], { cwd: root, encoding: 'utf8', timeout: 30_000, env: { ...process.env, NO_COLOR: '1' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(shown);
  }
});
