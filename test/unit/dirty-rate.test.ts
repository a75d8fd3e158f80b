// calc-dirty-rate / query-dirty-rate on an injected clock and a guest the
// test writes by hand (test/helpers/qmp-fake-machine.ts): QEMU's status
// values and errors, page-sampling's estimate, dirty-bitmap's exact count,
// calc-time units; and the HMP/QMP entries with QEMU's texts.
import { createRegistry } from '../../src/monitor/commands.js';
import type { CommandContext } from '../../src/monitor/registry.js';
import { FakeMachine, fakeDirtyRateMeter } from '../helpers/qmp-fake-machine.js';
import { DirtyRateMeter } from '../../src/migration/dirty-rate.js';

describe('DirtyRateMeter', () => {
  it('unstarted -> measuring -> measured; a second calc while measuring is refused', async () => {
    const f = fakeDirtyRateMeter();
    expect(f.meter.query()).toEqual({
      status: 'unstarted', 'start-time': 0, 'calc-time': 0, 'calc-time-unit': 'second', 'sample-pages': 0, mode: 'page-sampling',
    });
    f.meter.calc({ 'calc-time': 2 });
    expect(f.meter.query()).toMatchObject({ status: 'measuring', 'calc-time': 2, 'sample-pages': 512, 'start-time': 1700000000 });
    expect(() => f.meter.calc({ 'calc-time': 1 })).toThrow('the dirty rate is already being measured.');
    await f.advance(1999);
    expect(f.meter.query().status).toBe('measuring');
    await f.advance(1);
    expect(f.meter.query()).toMatchObject({ status: 'measured', 'dirty-rate': 0, 'calc-time': 2 });
  });

  it('page-sampling: the share of sampled pages that changed, times guest RAM, over the period', async () => {
    const f = fakeDirtyRateMeter();
    f.meter.calc({ 'calc-time': 1 });
    for (let p = 0; p < f.pages.length / 4; p++) f.write(p); // a quarter of 1 GiB
    await f.advance(1000);
    const r = f.meter.query()['dirty-rate']!;
    // 512 samples: 256 MB/s, give or take the sampling (4 standard deviations ~ 78 MB/s)
    expect(r).toBeGreaterThan(256 - 80);
    expect(r).toBeLessThan(256 + 80);
  });

  it('dirty-bitmap: exact, in whole MiB per second; sample-pages reads 0 once measured', async () => {
    const f = fakeDirtyRateMeter();
    f.meter.calc({ 'calc-time': 500, 'calc-time-unit': 'millisecond', mode: 'dirty-bitmap' });
    for (let p = 0; p < 2560; p++) f.write(p); // 10 MiB in 0.5 s
    await f.advance(500);
    expect(f.meter.query('millisecond')).toMatchObject({
      status: 'measured', mode: 'dirty-bitmap', 'dirty-rate': 20, 'calc-time': 500, 'calc-time-unit': 'millisecond', 'sample-pages': 0,
    });
    expect(f.meter.query()['calc-time']).toBe(0); // 500 ms in whole seconds
  });

  it.each([
    [{ 'calc-time': 0 }, 'Calculation time is out of range [50ms, 60000ms].'],
    [{ 'calc-time': 61 }, 'Calculation time is out of range [50ms, 60000ms].'],
    [{ 'calc-time': 49, 'calc-time-unit': 'millisecond' as const }, 'Calculation time is out of range [50ms, 60000ms].'],
    [{ 'calc-time': 1, 'sample-pages': 100 }, 'sample-pages is out of range[128, 4096].'],
    [{ 'calc-time': 1, 'sample-pages': 256, mode: 'dirty-bitmap' as const }, 'sample-pages is used only in page-sampling mode'],
    [{ 'calc-time': 1, mode: 'dirty-ring' as const }, /^mode dirty-ring is not enabled, use other method instead\. \(these vCPUs keep no dirty log\)$/],
  ])('%j is refused: %s', (args, text) => {
    const f = fakeDirtyRateMeter();
    expect(() => f.meter.calc(args)).toThrow(text);
    expect(f.meter.query().status).toBe('unstarted');
  });

  it('a mode that cannot run now says why, and nothing starts', () => {
    const busy = new DirtyRateMeter({
      ramBytes: 2 ** 30, pageSize: 4096, pageDigest: () => 0n,
      startTracking: () => 'a migration is running and tracks guest RAM itself', unreadable: () => 'guest RAM is being filled by the incoming migration',
    });
    expect(() => busy.calc({ 'calc-time': 1, mode: 'dirty-bitmap' }))
      .toThrow('mode dirty-bitmap is not enabled, use other method instead. (a migration is running and tracks guest RAM itself)');
    expect(() => busy.calc({ 'calc-time': 1 }))
      .toThrow('mode page-sampling is not enabled, use other method instead. (guest RAM is being filled by the incoming migration)');
    expect(busy.query().status).toBe('unstarted');
  });
});

describe('monitor entries', () => {
  async function hmp(m: FakeMachine, line: string): Promise<string> {
    const registry = createRegistry();
    const ctx: CommandContext = { machine: m, registry, canWait: false, color: false, requestQuit: () => undefined };
    return (await registry.runHmp(ctx, line)).text;
  }
  async function qmp(m: FakeMachine, name: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const registry = createRegistry();
    const ctx: CommandContext = { machine: m, registry, canWait: false, color: false, requestQuit: () => undefined };
    const cmd = registry.qmp(name)!;
    return cmd.handler(ctx, args);
  }

  it('HMP calc_dirty_rate and info dirty_rate print QEMU\'s lines', async () => {
    const m = new FakeMachine();
    expect(await hmp(m, 'info dirty_rate')).toBe('Status: unstarted\nStart Time: 0 (ms)\nSample Pages: 0 (per GB)\nPeriod: 0 (sec)\n'
      + 'Mode: page-sampling\nDirty rate: (not ready)\n');
    expect(await hmp(m, 'calc_dirty_rate 0')).toBe('Incorrect period length specified!\n');
    expect(await hmp(m, 'calc_dirty_rate -r -b 1')).toBe('Either dirty ring or dirty bitmap can be specified!\n');
    expect(await hmp(m, 'calc_dirty_rate -b 1')).toBe("Starting dirty rate measurement with period 1 seconds\n[Please use 'info dirty_rate' to check results]\n");
    expect(await hmp(m, 'calc_dirty_rate 1')).toBe('Error: the dirty rate is already being measured.\n');
    for (let p = 0; p < 256; p++) m.dirty.write(p);
    await m.dirty.advance(1000);
    expect(await hmp(m, 'info dirty_rate')).toBe('Status: measured\nStart Time: 1700000000 (ms)\nPeriod: 1 (sec)\nMode: dirty-bitmap\n'
      + 'Dirty rate: 1 (MB/s)\n');
    expect(await hmp(m, 'calc_dirty_rate 1 64')).toBe('Error: sample-pages is out of range[128, 4096].\n');
    expect(await hmp(m, 'info vcpu_dirty_limit')).toBe('Dirty page limit not enabled!\n');
  });

  it('QMP calc-dirty-rate checks its enums with QEMU\'s texts; query-vcpu-dirty-limit is [] with no limit', async () => {
    const m = new FakeMachine();
    await expect(qmp(m, 'calc-dirty-rate', { 'calc-time': 1, mode: 'ring' })).rejects.toThrow("Parameter 'mode' does not accept value 'ring'");
    await expect(qmp(m, 'calc-dirty-rate', { 'calc-time': 1, 'calc-time-unit': 'minute' }))
      .rejects.toThrow("Parameter 'calc-time-unit' does not accept value 'minute'");
    expect(await qmp(m, 'calc-dirty-rate', { 'calc-time': 100, 'calc-time-unit': 'millisecond', mode: 'dirty-bitmap' })).toEqual({});
    expect(await qmp(m, 'query-dirty-rate', { 'calc-time-unit': 'millisecond' })).toMatchObject({ status: 'measuring', 'calc-time': 100 });
    expect(await qmp(m, 'query-vcpu-dirty-limit')).toEqual([]);
  });
});
