// The real `postcopy blocktime-replay` process (node dist/src/cli.js): a good
// trace prints the report and exits 0; a bad one prints FILE:LINE: problem on
// stderr, nothing on stdout, and exits non-zero. Compiles dist/ first when it
// is older than the sources it runs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { replayTrace } from '../../src/blocktime-trace/replay.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = join(root, 'dist', 'src', 'cli.js');
let dir: string;

function newestSource(): number {
  const dirs = [join(root, 'src', 'blocktime')];
  const files = dirs.flatMap((d) => readdirSync(d).map((f) => join(d, f)));
  files.push(join(root, 'src', 'monitor', 'format-blocktime.ts'), join(root, 'src', 'cli.ts'));
  return Math.max(...files.filter((f) => f.endsWith('.ts')).map((f) => statSync(f).mtimeMs));
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'blocktime-cli-'));
  const built = join(root, 'dist', 'src', 'blocktime-trace', 'replay-command.js');
  if (!existsSync(cli) || !existsSync(built) || statSync(built).mtimeMs < newestSource()) {
    // tsc emits even when another module has a type error; only a missing output is fatal
    spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { cwd: root, stdio: 'ignore' });
  }
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build with npx tsc -p .`);
}, 180_000);
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

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
