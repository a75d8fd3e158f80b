// QEMU's convergence tools on real VM processes (node dist/src/cli.js over
// QMP): calc-dirty-rate measures a sweeping guest's dirty rate in all three
// modes; then the workload of issue 12 (sweep on 2 vCPUs, 64 MiB, 50 MiB/s
// of bandwidth) does not converge without a tool, and does with
// auto-converge (cpu-throttle-percentage rising in query-migrate) or with
// dirty-limit (each vCPU's dirty rate held near vcpu-dirty-limit).
// Run alone (`*.alone.test.ts`, scripts/test.mjs): the dirty rates, the
// throttle's effect and the rounds depend on the vCPUs getting the CPU.
// Needs a fresh `npx tsc -p .` (the VMs run from dist/).
import { Lab, setCaps, waitStatus, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';
import type { VmProcess } from '../../src/migration/local-destination.js';
import { freeTcpPort } from '../../src/migration/local-destination.js';
import type { MigrationInfo } from '../../src/migration/api.js';
import type { DirtyRateInfo } from '../../src/migration/dirty-rate.js';
import type { VcpuDirtyLimit } from '../../src/migration/dirty-limit.js';

const MiB = 1 << 20;
const run = requireUffd() ? describe : describe.skip;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(vm: VmProcess, args: Record<string, unknown>): Promise<DirtyRateInfo> {
  await vm.qmp.execute('calc-dirty-rate', args);
  for (;;) {
    await sleep(100);
    const r = await vm.qmp.execute<DirtyRateInfo>('query-dirty-rate');
    if (r.status === 'measured') return r;
  }
}

const hmp = (vm: VmProcess, line: string) => vm.qmp.execute<string>('human-monitor-command', { 'command-line': line });

run('convergence tools', () => {
  let lab: Lab;
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('calc-dirty-rate: a sweep over 100 MiB dirties 100 MiB per period, in every mode; a stopped guest dirties nothing', async () => {
    // 2 vCPUs, each sweeping its own 50 MiB many times a second: the pages
    // dirtied in a period are the whole range, whatever its length
    const vm = await lab.vm('g', ['-m', '256M', '-smp', '2', '-workload', 'sweep,end=100M,split=on']);
    const bitmap = await measure(vm, { 'calc-time': 1, mode: 'dirty-bitmap' });
    expect(bitmap).toMatchObject({ status: 'measured', mode: 'dirty-bitmap', 'calc-time': 1, 'sample-pages': 0 });
    // at most the 100 MiB swept; at least most of it (a vCPU starved by a loaded machine sweeps less in 1 s)
    expect(bitmap['dirty-rate']).toBeGreaterThanOrEqual(60);
    expect(bitmap['dirty-rate']).toBeLessThanOrEqual(100);
    const ring = await measure(vm, { 'calc-time': 1, mode: 'dirty-ring' });
    expect(ring['dirty-rate']).toBeGreaterThanOrEqual(60);
    expect(ring['dirty-rate']).toBeLessThanOrEqual(100);
    // each vCPU its own 50 MiB at most; one of the two shares a CPU with the VM's event loop and the test's
    // processes (seen: 29-32 MB/s for one of them in 3 runs of 4 on an idle machine, the other 45-49)
    for (const v of ring['vcpu-dirty-rate']!) expect([v.id, v['dirty-rate'] >= 20 && v['dirty-rate'] <= 50]).toEqual([v.id, true]);
    // 128 sampled pages of 256 MiB, 39 % of them in the sweep: +-40 MB/s is 3.5 standard deviations
    const sampled = await measure(vm, { 'calc-time': 1 });
    expect(sampled).toMatchObject({ mode: 'page-sampling', 'sample-pages': 512 });
    expect(Math.abs(sampled['dirty-rate']! - 100)).toBeLessThan(40);
    // twice the period, the same pages: half the rate (dirtying a page is a one-time event)
    const two = await measure(vm, { 'calc-time': 2000, 'calc-time-unit': 'millisecond', mode: 'dirty-bitmap' });
    expect(two['dirty-rate']).toBeGreaterThanOrEqual(45);
    expect(two['dirty-rate']).toBeLessThanOrEqual(50);
    expect(await hmp(vm, 'info dirty_rate')).toMatch(/^Status: measured\nStart Time: \d+ \(ms\)\nPeriod: 2 \(sec\)\nMode: dirty-bitmap\nDirty rate: \d+ \(MB\/s\)\n$/);
    // a measurement with the dirty tracking holds guest RAM: a migration waits for it
    await vm.qmp.execute('calc-dirty-rate', { 'calc-time': 1, mode: 'dirty-bitmap' });
    await expect(vm.qmp.execute('migrate', { uri: 'tcp:127.0.0.1:1' }))
      .rejects.toThrow('A dirty-bitmap dirty rate measurement tracks guest RAM until it ends (query-dirty-rate): migrate after it');
    await sleep(1200);
    await vm.qmp.execute('stop');
    for (const mode of ['dirty-bitmap', 'dirty-ring', 'page-sampling']) {
      expect((await measure(vm, { 'calc-time': 100, 'calc-time-unit': 'millisecond', mode }))['dirty-rate']).toBe(0);
    }
  }, 60_000);

  /** the workload: source and destination, 50 MiB/s, migrating */
  async function migrating(caps: string[], params: Record<string, unknown> = {}): Promise<{ src: VmProcess; dst: VmProcess }> {
    const common = ['-m', '128M', '-smp', '2', '-workload', 'sweep,end=64M'];
    const port = await freeTcpPort();
    const dst = await lab.vm('dst', [...common, '-incoming', `tcp:127.0.0.1:${port}`]);
    const src = await lab.vm('src', common);
    if (caps.length > 0) await setCaps(src, caps);
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 50 * MiB, ...params });
    await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    return { src, dst };
  }

  /** query-migrate every 250 ms until the migration ends or `ms` pass */
  async function watch(src: VmProcess, ms: number, each: (i: MigrationInfo) => Promise<void> | void = () => undefined): Promise<MigrationInfo> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = await src.queryMigrate();
      if (TERMINAL.includes(i.status) || Date.now() > deadline) return i;
      await each(i);
      await sleep(250);
    }
  }

  test('without a tool the sweep never converges: 12 s of rounds that resend the whole range', async () => {
    const { src } = await migrating([]);
    const end = await watch(src, 12_000);
    expect(end.status).toBe('active');
    expect(end.ram!['dirty-sync-count']).toBeGreaterThanOrEqual(5);
    expect(end['x-convergence']?.['ways-out']).toContain('migrate_set_capability auto-converge or dirty-limit on, before migrate');
    expect(end['cpu-throttle-percentage']).toBeUndefined();
    // the migration tracks guest RAM itself: the exact dirty-rate mode must wait, the vCPUs' log need not
    await expect(src.qmp.execute('calc-dirty-rate', { 'calc-time': 1, mode: 'dirty-bitmap' }))
      .rejects.toThrow('mode dirty-bitmap is not enabled, use other method instead. (a migration is running and tracks guest RAM itself)');
    expect((await measure(src, { 'calc-time': 500, 'calc-time-unit': 'millisecond', mode: 'dirty-ring' }))['dirty-rate']).toBeGreaterThan(50);
    expect((await measure(src, { 'calc-time': 500, 'calc-time-unit': 'millisecond' }))['dirty-rate']).toBeGreaterThan(0);
    await src.qmp.execute('migrate_cancel');
    expect((await waitStatus(src, ['cancelled'])).status).toBe('cancelled');
  }, 60_000);

  test('auto-converge: the throttle rises until the rounds shrink, the migration completes, and the throttle is lifted', async () => {
    // downtime-limit 1.2 s: at 99 % the two vCPUs still dirty 20-40 MiB a second
    // (a write-protect fault per page, 2-4 us), against 15 MiB that 300 ms
    // would allow at 50 MiB/s; whether a round then ends small enough was the
    // phase of the throttle's 10 ms slices against the syncs (seen: still
    // active after 90 s, and with 1 s in 1 run of 3). Without the throttle it
    // cannot converge within 1.2 s either: the sweep rewrites all 64 MiB
    // (1.3 s at 50 MiB/s) every round.
    const { src, dst } = await migrating(['auto-converge', 'events'],
      { 'cpu-throttle-initial': 60, 'cpu-throttle-increment': 20, 'downtime-limit': 1200 });
    const seen: number[] = [];
    const end = await watch(src, 90_000, (i) => { if (i.status === 'active') seen.push(i['cpu-throttle-percentage']!); });
    expect(end.status).toBe('completed');
    expect((await waitStatus(dst, TERMINAL as never)).status).toBe('completed');
    // QEMU's steps: 0 until the trigger trips, then 60, 80, 99 (never down while the migration runs)
    expect(seen.every((p, k) => [0, 60, 80, 99].includes(p) && (k === 0 || p >= seen[k - 1]))).toBe(true);
    expect(Math.max(...seen)).toBeGreaterThanOrEqual(80);
    expect(end['cpu-throttle-percentage']).toBe(0);
    expect(await hmp(src, 'info migrate -a')).toContain('\nCPU Throttle (%): 0\n');
  }, 120_000);

  test('dirty-limit: each vCPU is held near vcpu-dirty-limit and the migration completes', async () => {
    const { src, dst } = await migrating(['dirty-limit'], { 'vcpu-dirty-limit': 4, 'x-vcpu-dirty-limit-period': 200 });
    const held: VcpuDirtyLimit[][] = [];
    let throttled = 0;
    const end = await watch(src, 60_000, async (i) => {
      if (i['dirty-limit-throttle-time-per-round'] === undefined) return;
      throttled = Math.max(throttled, i['dirty-limit-throttle-time-per-round']);
      held.push(await src.qmp.execute<VcpuDirtyLimit[]>('query-vcpu-dirty-limit'));
    });
    expect(end.status).toBe('completed');
    expect((await waitStatus(dst, TERMINAL as never)).status).toBe('completed');
    expect(throttled).toBeGreaterThan(0); // the vCPUs slept between rings
    // the first period measured (the samples before it read 0) is of the vCPUs before any sleep; after it,
    // near the limit (seen: a first period that ended only at the third sample, 320 MB/s)
    const first = held.findIndex((h) => h.some((v) => v['current-rate'] > 0));
    const later = held.slice(first + 1).flat();
    expect(later.length).toBeGreaterThan(0);
    for (const v of later) expect(v['limit-rate']).toBe(4);
    // held near the limit: the median sample within 2x of it, none near the free-running rate (a
    // period in which a starved vCPU caught up can overshoot on a loaded machine)
    const rates = later.map((v) => v['current-rate']).sort((a, b) => a - b);
    expect(rates[Math.floor(rates.length / 2)]).toBeLessThanOrEqual(8);
    expect(rates[rates.length - 1]).toBeLessThan(20);
    expect(await src.qmp.execute('query-vcpu-dirty-limit')).toEqual([]); // lifted at the end
  }, 90_000);
});
