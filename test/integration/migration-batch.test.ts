// `postcopy run` as a user runs it: the compiled CLI starts a destination and
// a source process, migrates with postcopy, and prints one JSON line with both
// sides' query-migrate (also for an 8 GiB guest); bad options get a clear
// message and exit status 2.
// Needs a fresh `npx tsc -p .`.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { requireUffd } from '../helpers/uffd-available.js';
import { parseBatchArgs, USAGE } from '../../src/migration/batch.js';

const cli = join(process.cwd(), 'dist', 'src', 'cli.js');
const run = (args: string[]): ReturnType<typeof spawnSync> => spawnSync(process.execPath, [cli, 'run', ...args], { encoding: 'utf8', timeout: 120000 });
const maybe = requireUffd() ? test : test.skip;

maybe('postcopy run --json: one JSON line, both sides completed, blocktime on the destination, trace recorded', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pc-batch-'));
  try {
    const trace = join(dir, 'trace.jsonl');
    const r = run(['-m', '64M', '-smp', '2', '-workload', 'sweep,end=48M', '--warm', '0.5', '--postcopy-after', '0.1', '--trace', trace, '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = String(r.stdout).trim().split('\n');
    expect(lines).toHaveLength(1);
    const out = JSON.parse(lines[0]) as { wall_s: number; source: Record<string, any>; destination: Record<string, any> };
    expect(out.wall_s).toBeGreaterThan(0);
    expect(out.source.status).toBe('completed');
    expect(out.destination.status).toBe('completed');
    expect(out.source.ram.total).toBe(64 << 20);
    expect(out.source.ram['postcopy-bytes']).toBeGreaterThan(0);
    expect(out.destination['postcopy-vcpu-blocktime']).toHaveLength(2);
    expect(out.destination['x-blocktime'].faults).toBeGreaterThan(0);
    const traceLines = readFileSync(trace, 'utf8').trim().split('\n');
    expect(JSON.parse(traceLines[0]).vcpus).toHaveLength(2);
    expect(traceLines.filter((l) => l.includes('"fault"')).length).toBe(out.destination['x-blocktime'].faults);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

maybe('postcopy run -m 8G (more than one Buffer can span), a sweep above 4 GiB: completed, the vCPU faulted there', () => {
  const r = run(['-m', '8G', '-workload', 'sweep,start=4G,end=4160M', '--warm', '0.5', '--postcopy-after', '0.1', '--json']);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const out = JSON.parse(String(r.stdout)) as { source: Record<string, any>; destination: Record<string, any> };
  expect([out.source.status, out.destination.status]).toEqual(['completed', 'completed']);
  expect(out.source.ram.total).toBe(8 * 2 ** 30);
  expect(out.source.ram.remaining).toBe(0);
  expect(out.destination['x-blocktime'].faults).toBeGreaterThan(0); // every page it can touch is above 4 GiB
});

maybe('postcopy run without --json prints a readable summary; --no-blocktime leaves the figures out', () => {
  const r = run(['-m', '32M', '-smp', '1', '-workload', 'sweep,end=16M', '--warm', '0.2', '--postcopy-after', '0', '--no-blocktime']);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/^migration: source completed, destination completed$/m);
  expect(r.stdout).toMatch(/wall time \(migrate -> completed\): [\d.]+ s/);
  expect(r.stdout).not.toMatch(/blocktime/);
});

test('postcopy run migrates over a unix socket in a private directory unless --uri tcp is given', () => {
  expect(parseBatchArgs([]).transport).toBe('unix');
  expect(parseBatchArgs(['--uri', 'tcp']).transport).toBe('tcp');
  expect(USAGE).toMatch(/--uri unix\|tcp .*private 0700/s);
});

test.each([
  [['--warm', 'abc'], /--warm 'abc' is not a number of seconds/],
  [['--uri', 'rdma'], /--uri 'rdma': expected tcp or unix/],
  [['-m', '0'], /-m|size|RAM/i],
  [['-smp', 'x'], /smp|vCPU/i],
  [['-m', '64M', '-workload', 'sweep,end=100M'], /with -m 64M/],
  [['--bogus'], /unknown option '--bogus'/],
  [['--trace', '/nonexistent-dir/t.jsonl'], /nonexistent-dir/],
])('postcopy run %j: clear error, exit 2', (args, re) => {
  const r = run(args as string[]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/^postcopy run: /);
  expect(r.stderr).toMatch(re);
  expect(r.stdout).toBe('');
});

test.each([[['run', '--help']], [['run', '-h']], [['--help']], [['blocktime-replay', '--help']]])(
  'postcopy %j: the usage on stdout, nothing on stderr, exit 0 (every --help alike)', (args) => {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: postcopy /);
  });

maybe('postcopy run --postcopy-after never on a guest dirtying faster than the limit: fails saying precopy does not converge, with the figures and the ways out', () => {
  const r = run(['-m', '32M', '-smp', '1', '--warm', '0.3', '--postcopy-after', 'never', '--max-bandwidth', String(32 << 20), '--timeout', '60']);
  expect(r.status).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(/^postcopy run: precopy is not converging: \d+ rounds have not shrunk the dirty set \([\d.]+ MiB still to send after \d+ rounds\): the guest dirties [\d.]+ MiB\/s and the stream moves [\d.]+ MiB\/s \(max-bandwidth 32\.0 MiB\/s\)\. Ways out: postcopy \(--postcopy-after SECONDS\); a higher --max-bandwidth \(0: no limit\); throttling the guest/);
});
