// Whole migrations between two real VM processes (node dist/src/cli.js,
// driven over QMP): postcopy over TCP loopback and a unix socket with 1 and 4
// vCPUs, nothing lost (page digests with a paused destination, the sweep's
// own invariant with running vCPUs), failures on both sides, cancel and a
// source killed mid-postcopy, a VM process that crashes, and max-bandwidth
// holding throughput down.
// Needs a fresh `npx tsc -p .` (the VMs run from dist/).
import { Lab, setCaps, waitStatus, digest, stableDigest, sweepInvariant, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';

const MiB = 1 << 20;
const run = requireUffd() ? describe : describe.skip;

run('migration between two VM processes', () => {
  let lab: Lab;
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('postcopy over TCP loopback, 1 vCPU running a sweep: completed on both sides, sweep invariant holds, blocktime reported', async () => {
    const common = ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=48M'];
    const port = 20000 + (process.pid % 20000);
    const dst = await lab.vm('dst', [...common, '-incoming', `tcp:127.0.0.1:${port}`]);
    const src = await lab.vm('src', common);
    await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime', 'events']);
    await setCaps(src, ['postcopy-ram', 'events']);
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * MiB });
    await new Promise((r) => setTimeout(r, 500)); // the workload dirties pages
    await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    await waitStatus(src, ['active']);
    await new Promise((r) => setTimeout(r, 200));
    await src.qmp.execute('migrate-start-postcopy');
    const s = await waitStatus(src, TERMINAL as never);
    const d = await waitStatus(dst, TERMINAL as never);
    expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
    expect(src.events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status)).toEqual(['setup', 'active', 'postcopy-active', 'completed']);
    expect(dst.events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status)).toEqual(['setup', 'active', 'postcopy-active', 'completed']);
    expect(s.ram!.remaining).toBe(0);
    expect(s.ram!['postcopy-bytes']).toBeGreaterThan(0);
    expect(s.downtime).toBeGreaterThanOrEqual(0);
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'postmigrate', running: false });
    expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
    // blocktime: the running sweep faulted on pages it had not got yet
    expect(d['x-blocktime']?.faults).toBeGreaterThan(0);
    expect(d['postcopy-vcpu-blocktime']).toHaveLength(1);
    expect(d['x-blocktime']?.state).toBe('final');
    expect(d['postcopy-latency-dist']!.reduce((a, b) => a + b, 0)).toBe(d['x-blocktime']!.faults);
    // the destination counts what came before and after the switch, and the rounds
    expect(d.ram!['precopy-bytes']).toBeGreaterThan(0);
    expect(d.ram!['postcopy-bytes']).toBeGreaterThan(0);
    expect(d.ram!['precopy-bytes'] + d.ram!['postcopy-bytes']).toBe(d.ram!.transferred);
    // nothing lost: the destination's sweep went on from where the source's stopped
    await dst.qmp.execute('stop');
    const pages = await stableDigest(dst);
    expect(sweepInvariant(pages, (48 * MiB) / 4096)).toBeNull();
  });

  test('postcopy over a unix socket, 4 vCPUs, destination -S: every page identical on both sides', async () => {
    const common = ['-m', '48M', '-smp', '4', '-workload', 'random,end=40M,seed=9'];
    const uri = `unix:${lab.path('mig.sock')}`;
    const dst = await lab.vm('dst', [...common, '-incoming', uri, '-S']);
    const src = await lab.vm('src', common);
    await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
    await setCaps(src, ['postcopy-ram']);
    await new Promise((r) => setTimeout(r, 300));
    await src.qmp.execute('migrate', { uri });
    await src.qmp.execute('migrate-start-postcopy');
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status]).toEqual(['completed', 'completed']);
    expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'paused', running: false });
    const [a, b] = await Promise.all([digest(src), digest(dst)]);
    expect(a.length).toBe((48 * MiB) / 4096);
    const differing = a.filter((h, i) => h !== b[i]).length;
    expect(differing).toBe(0);
    expect(a.filter((h) => h !== a[a.length - 1]).length).toBeGreaterThan(100); // the workload really wrote pages
    const cpus = await dst.qmp.execute<Array<{ 'thread-id': number }>>('query-cpus-fast');
    expect(cpus).toHaveLength(4);
    expect(d['postcopy-vcpu-blocktime']).toEqual([0, 0, 0, 0]); // paused vCPUs never faulted
  });

  test('precopy only (no postcopy-ram) converges and completes; 4 vCPUs over TCP', async () => {
    const common = ['-m', '32M', '-smp', '4', '-workload', 'hotset,end=16M,fraction=0.05'];
    const port = 20001 + (process.pid % 20000);
    const dst = await lab.vm('dst', [...common, '-incoming', `tcp:127.0.0.1:${port}`]);
    const src = await lab.vm('src', common);
    await src.qmp.execute('migrate-set-parameters', { 'downtime-limit': 2000 });
    await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status]).toEqual(['completed', 'completed']);
    expect(s.ram!['postcopy-bytes']).toBe(0);
    expect(s.ram!['dirty-sync-count']).toBeGreaterThanOrEqual(1);
    expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'running' });
  });

  test('RAM size and vCPU count mismatches: failed on both sides with the reason in error-desc', async () => {
    const uri = `unix:${lab.path('mm.sock')}`;
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '2', '-incoming', uri]);
    const src = await lab.vm('src', ['-m', '32M', '-smp', '2']);
    await src.qmp.execute('migrate', { uri });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status]).toEqual(['failed', 'failed']);
    expect(d['error-desc']).toMatch(/RAM size mismatch: the source has 33554432 bytes, this VM 67108864/);
    expect(s['error-desc']).toMatch(/RAM size mismatch/);
    // both still answer, and the source runs on
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running' });
    expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'inmigrate' });

    const uri2 = `unix:${lab.path('mm2.sock')}`;
    const dst2 = await lab.vm('dst2', ['-m', '32M', '-smp', '3', '-incoming', uri2]);
    await src.qmp.execute('migrate', { uri: uri2 });
    const [s2, d2] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst2, TERMINAL as never)]);
    expect([s2.status, d2.status]).toEqual(['failed', 'failed']);
    expect(d2['error-desc']).toMatch(/vCPU count mismatch: the source has 2, this VM 3/);
  });

  test('monitor rules: postcopy before migrate, without the capability; capabilities frozen while migrating', async () => {
    const uri = `unix:${lab.path('r.sock')}`;
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-incoming', uri]);
    const src = await lab.vm('src', ['-m', '64M', '-smp', '1']);
    // a trace file that could not be written is refused when set, not when postcopy starts
    await expect(dst.qmp.execute('migrate-set-parameters', { 'x-blocktime-trace': lab.path('no-such-dir/t.jsonl') }))
      .rejects.toThrow(/x-blocktime-trace: cannot write '.*no-such-dir\/t\.jsonl': directory .*no-such-dir does not exist/);
    await expect(src.qmp.execute('migrate-start-postcopy')).rejects.toThrow('Postcopy must be started after migration has been started');
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
    await src.qmp.execute('migrate', { uri });
    await expect(src.qmp.execute('migrate-start-postcopy')).rejects.toThrow('Enable postcopy with migrate_set_capability before the start of migration');
    await expect(setCaps(src, ['postcopy-ram'])).rejects.toThrow("There's a migration process in progress");
    await expect(src.qmp.execute('migrate', { uri })).rejects.toThrow("There's a migration process in progress");
    await src.qmp.execute('migrate_cancel');
    const s = await waitStatus(src, TERMINAL as never);
    const d = await waitStatus(dst, TERMINAL as never);
    expect([s.status, d.status]).toEqual(['cancelled', 'failed']);
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running' });
  });

  test('max-bandwidth limits the precopy throughput', async () => {
    const uri = `unix:${lab.path('bw.sock')}`;
    const common = ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=32M,sweeps=1'];
    const dst = await lab.vm('dst', [...common, '-incoming', uri]);
    const src = await lab.vm('src', common);
    await new Promise((r) => setTimeout(r, 300)); // the sweep fills 32M with data (one pass)
    const limit = 16 * MiB;
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': limit });
    await src.qmp.execute('migrate', { uri });
    const s = await waitStatus(src, TERMINAL as never);
    expect(s.status).toBe('completed');
    const bytesPerS = s.ram!.transferred / (s['total-time']! / 1000);
    expect(s.ram!.transferred).toBeGreaterThan(32 * MiB);
    // the token bucket allows one burst (<= 1 MiB) above the rate
    expect(bytesPerS).toBeLessThanOrEqual(limit * 1.1 + MiB / (s['total-time']! / 1000));
  });

  test('a VM process that crashes is reported as such, with its signal, not as a closed QMP connection', async () => {
    const vm = await lab.vm('crash', ['-m', '16M', '-smp', '1']);
    expect((await vm.queryMigrate()).status).toBe('none');
    process.kill(vm.child.pid!, 'SIGSEGV');
    await expect(vm.queryMigrate()).rejects.toThrow(new RegExp(`^the VM process ${vm.child.pid} exited \\(SIGSEGV\\)`));
  });

  test('migrate_cancel mid-postcopy: source cancelled (and stays stopped), destination failed', async () => {
    const common = ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=60M'];
    const uri = `unix:${lab.path('cx.sock')}`;
    const dst = await lab.vm('dst', [...common, '-incoming', uri]);
    const src = await lab.vm('src', common);
    await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
    await setCaps(src, ['postcopy-ram']);
    await src.qmp.execute('migrate-set-parameters', { 'max-postcopy-bandwidth': 4 * MiB });
    await src.qmp.execute('migrate', { uri });
    await src.qmp.execute('migrate-start-postcopy');
    await waitStatus(src, ['postcopy-active']);
    await new Promise((r) => setTimeout(r, 300));
    await src.qmp.execute('migrate_cancel');
    const s = await waitStatus(src, TERMINAL as never);
    const d = await waitStatus(dst, TERMINAL as never, 5000);
    expect([s.status, d.status]).toEqual(['cancelled', 'failed']);
    expect(d['error-desc']).toMatch(/cancelled by the source/);
    expect(await src.qmp.execute('query-status')).toMatchObject({ running: false });
    await expect(src.qmp.execute('cont')).rejects.toThrow(/migrated away/);
  });
});
