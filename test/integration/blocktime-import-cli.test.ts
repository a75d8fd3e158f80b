// The real `postcopy blocktime-import` process: a QEMU 7.2 log with --vcpus
// and -o, then `blocktime-replay OUT --compare --json` on what it wrote; a
// 10.1 log to stdout; a log cut mid-line refused with its line number (exit
// 1); usage errors (exit 2).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, ensureBuilt } from '../helpers/cli.js';
import { SCENARIO, VCPU_TIDS, qemuLog } from '../helpers/qemu-trace-log.js';

let dir: string;
beforeAll(() => { ensureBuilt(); dir = mkdtempSync(join(tmpdir(), 'blocktime-import-')); }, 180_000);
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('7.2 log -> -o trace -> blocktime-replay --compare: exact beside QEMU 7.2', () => {
  const log = join(dir, 'dest72.log');
  const out = join(dir, 'dest72.jsonl');
  writeFileSync(log, `${qemuLog(SCENARIO, '7.2').join('\n')}\n`);
  const imp = run('blocktime-import', log, '--vcpus', VCPU_TIDS.join(','), '-o', out);
  expect(imp.err).toBe('');
  expect(imp.code).toBe(0);
  expect(imp.out).toBe('');
  expect(JSON.parse(readFileSync(out, 'utf8').split('\n')[0])).toEqual({ vcpus: VCPU_TIDS, t0: 100_000_000 });
  const cmp = run('blocktime-replay', out, '--compare', '--json');
  expect(cmp.code).toBe(0);
  const c = JSON.parse(cmp.out);
  expect(c.exact['postcopy-vcpu-blocktime']).toEqual([13, 4]);
  expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 2, 'postcopy-vcpu-blocktime': [13, 4] });
  const table = run('blocktime-replay', out, '--compare');
  expect(table.code).toBe(0);
  expect(table.out).toContain('7.2');
});

test('10.1 log to stdout: the vCPUs from its tid_cpu_map lines', () => {
  const log = join(dir, 'dest101.log');
  writeFileSync(log, `${qemuLog(SCENARIO, '10.1').join('\n')}\n`);
  const imp = run('blocktime-import', log);
  expect(imp.code).toBe(0);
  const lines = imp.out.trim().split('\n').map((l) => JSON.parse(l));
  expect(lines[0]).toEqual({ vcpus: VCPU_TIDS, t0: 100_000_000 });
  expect(lines[lines.length - 1]).toEqual({ t: 1_100_000_000, ev: 'end', status: 'completed' });
});

test('a log cut mid-line, a 7.2 log without --vcpus, a missing file: exit 1 with the line and the fix', () => {
  const log = join(dir, 'cut.log');
  const lines = qemuLog(SCENARIO, '7.2');
  writeFileSync(log, `${lines.join('\n')}\n14789@1796110089.10`);
  const r = run('blocktime-import', log, '--vcpus', VCPU_TIDS.join(','));
  expect(r.code).toBe(1);
  expect(r.out).toBe('');
  expect(r.err).toMatch(new RegExp(`^postcopy: ${log}:${lines.length + 1}: truncated line .*import the log once the destination has quit`));
  const full = join(dir, 'full.log');
  writeFileSync(full, `${lines.join('\n')}\n`);
  const n = run('blocktime-import', full);
  expect(n.code).toBe(1);
  expect(n.err).toContain('no vCPU thread ids: give --vcpus');
  const m = run('blocktime-import', join(dir, 'absent.log'));
  expect(m.code).toBe(1);
  expect(m.err).toContain('absent.log: no such file');
});

test('usage errors exit 2', () => {
  for (const args of [[], ['a.log', 'b.log'], ['a.log', '--vcpus'], ['a.log', '--vcpus', '1,x'], ['a.log', '--vcpus', '5,5'], ['a.log', '--json']]) {
    const r = run('blocktime-import', ...args);
    expect({ args, code: r.code }).toEqual({ args, code: 2 });
    expect(r.err).toContain('usage: postcopy blocktime-import FILE');
  }
});
