// A whole postcopy migration driven only over QMP, as a management tool
// would: two real VM processes (`node dist/src/cli.js -monitor none -qmp
// unix:...`), the destination started with `-incoming defer`, capabilities,
// migrate-incoming, migrate, migrate-start-postcopy, the MIGRATION events of
// both sides in order, the destination's blocktime at the end, then quit.
// Compiles dist/ first when it is older than the sources.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectWithRetry, type QmpClient, type QmpEvent } from '../../src/qmp/client.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { cli, ensureBuilt, root } from '../helpers/cli.js';
const haveUffd = requireUffd();

/** The VM engine (src/machine.ts, the migration engineer's) may not have
 *  landed in a partial checkout; say so rather than fail obscurely. */
function haveEngine(): boolean {
  if (existsSync(join(root, 'src', 'machine.ts'))) return true;
  const why = 'src/machine.ts (createMachine) is not in this tree yet';
  if (process.env.CI === 'true') throw new Error(`CI: ${why}`);
  process.stdout.write(`skipping the QMP postcopy run: ${why}\n`);
  return false;
}
const runnable = haveUffd && haveEngine();

let dir: string;
const procs: { name: string; p: ChildProcess; out: string; exit: Promise<number | null> }[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-e2e-'));
  ensureBuilt();
}, 180_000);

afterAll(async () => {
  for (const { p } of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function vm(name: string, args: string[]): (typeof procs)[number] {
  const p = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  const rec = { name, p, out: '', exit: new Promise<number | null>((r) => p.on('exit', (code) => r(code))) };
  p.stdout!.on('data', (d: Buffer) => { rec.out += d.toString(); });
  p.stderr!.on('data', (d: Buffer) => { rec.out += d.toString(); });
  procs.push(rec);
  return rec;
}

const statuses = (c: QmpClient): unknown[] => c.events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status);

async function waitStatus(c: QmpClient, status: string, who: string, timeoutMs = 60_000): Promise<QmpEvent> {
  return c.waitForEvent('MIGRATION', { match: (e) => e.data?.status === status || e.data?.status === 'failed', timeoutMs })
    .then(async (e) => {
      if (e.data?.status === 'failed' && status !== 'failed') {
        const info = await c.execute<Record<string, unknown>>('query-migrate');
        throw new Error(`${who}: migration failed: ${String(info['error-desc'])}`);
      }
      return e;
    });
}

(runnable ? test : test.skip)('postcopy over QMP only: events in order on both sides, blocktime on the destination, clean quit', async () => {
  const srcSock = join(dir, 'src.qmp');
  const dstSock = join(dir, 'dst.qmp');
  const migSock = join(dir, 'mig.sock');
  const common = ['-m', '64M', '-smp', '2', '-monitor', 'none'];
  const dst = vm('destination', [...common, '-qmp', `unix:${dstSock},server=on,wait=off`, '-incoming', 'defer']);
  const src = vm('source', [...common, '-qmp', `unix:${srcSock},server=on,wait=off`]);
  let s: QmpClient | undefined;
  let d: QmpClient | undefined;
  try {
    [s, d] = await Promise.all([connectWithRetry(srcSock, 20_000), connectWithRetry(dstSock, 20_000)]);
    expect(statSync(srcSock).mode & 0o777).toBe(0o600);

    // capabilities as a management tool sets them: postcopy-ram on both, blocktime on the destination
    await d.execute('migrate-set-capabilities', { capabilities: [
      { capability: 'events', state: true }, { capability: 'postcopy-ram', state: true }, { capability: 'postcopy-blocktime', state: true },
    ] });
    await s.execute('migrate-set-capabilities', { capabilities: [
      { capability: 'events', state: true }, { capability: 'postcopy-ram', state: true },
    ] });
    // slow precopy down so postcopy surely starts before precopy could finish
    await s.execute('migrate-set-parameters', { 'max-bandwidth': 8 << 20 });
    expect(await d.execute('query-status')).toEqual({ running: false, status: 'inmigrate' });

    expect(await d.execute('migrate-incoming', { uri: `unix:${migSock}` })).toEqual({});
    expect(await s.execute('migrate', { uri: `unix:${migSock}` })).toEqual({});
    await waitStatus(s, 'active', 'source');
    expect(await s.execute('migrate-start-postcopy')).toEqual({});
    await Promise.all([waitStatus(s, 'completed', 'source', 120_000), waitStatus(d, 'completed', 'destination', 120_000)]);

    expect(statuses(s)).toEqual(['setup', 'active', 'postcopy-active', 'completed']);
    const dstSeq = statuses(d);
    expect(dstSeq[dstSeq.length - 1]).toBe('completed');
    expect(dstSeq.filter((x) => x === 'active' || x === 'postcopy-active' || x === 'completed'))
      .toEqual(['active', 'postcopy-active', 'completed']);
    // the source's vCPUs stopped for the switchover; the destination's started
    await s.waitForEvent('STOP', { timeoutMs: 10_000 });
    await d.waitForEvent('RESUME', { timeoutMs: 10_000 });
    expect(await d.execute('query-status')).toEqual({ running: true, status: 'running' });
    expect(await s.execute('query-status')).toMatchObject({ running: false });

    const info = await d.execute<Record<string, unknown>>('query-migrate');
    expect(info.status).toBe('completed');
    expect(typeof info['postcopy-blocktime']).toBe('number');
    expect(info['postcopy-vcpu-blocktime']).toHaveLength(2);
    expect(info['postcopy-vcpu-latency']).toHaveLength(2);
    expect(info['postcopy-latency-dist']).toHaveLength(24);
    const extra = info['x-blocktime'] as Record<string, unknown>;
    expect(extra.state).toBe('final');
    if (extra.unavailable === undefined) {
      // the vCPUs ran on the destination during postcopy and touched missing pages
      expect(extra.faults as number).toBeGreaterThan(0);
      const dist = info['postcopy-latency-dist'] as number[];
      expect(dist.reduce((a, b) => a + b, 0)).toBe(extra.faults);
    }
    const cpus = await d.execute<{ 'thread-id': number }[]>('query-cpus-fast');
    expect(cpus).toHaveLength(2);
    expect((extra.vcpus as { threadId: number }[]).map((v) => v.threadId)).toEqual(cpus.map((c) => c['thread-id']));
    const srcInfo = await s.execute<Record<string, unknown>>('query-migrate');
    expect(srcInfo.status).toBe('completed');
    expect((srcInfo.ram as Record<string, number>)['postcopy-requests']).toBeGreaterThanOrEqual(0);

    // quit over QMP: the reply, the SHUTDOWN event, the process exits 0 and its socket file goes
    for (const [c, rec, sock] of [[s, src, srcSock], [d, dst, dstSock]] as const) {
      expect(await c.execute('quit')).toEqual({});
      expect((await c.waitForEvent('SHUTDOWN', { timeoutMs: 10_000 })).data).toEqual({ guest: false, reason: 'host-qmp-quit' });
      expect(await rec.exit).toBe(0);
      expect(existsSync(sock)).toBe(false);
    }
  } catch (e) {
    for (const r of procs) process.stdout.write(`--- ${r.name} output:\n${r.out}\n`);
    throw e;
  } finally {
    await s?.close();
    await d?.close();
  }
}, 240_000);
