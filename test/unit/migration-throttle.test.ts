// QEMU's convergence tools as pure decisions on an injected clock: when the
// throttle trigger trips (periods of >= 1 s whose dirtied bytes exceed
// throttle-trigger-threshold % of the stream's, twice), how auto-converge
// moves the cpu throttle (initial, increment, tailslow, max, QEMU's 1..99),
// how dirty-limit sets each vCPU's sleep per dirty ring from its measured
// pace, and that the precopy throttle lifts both when the migration ends.
import { ThrottleTrigger, nextThrottle, type ThrottleParameters } from '../../src/migration/cpu-throttle.js';
import { DirtyLimiter, MiB } from '../../src/migration/dirty-limit.js';
import { PrecopyThrottle } from '../../src/migration/precopy-throttle.js';
import { DEFAULT_PARAMETERS } from '../../src/migration/parameters.js';
import type { MigrationParameters } from '../../src/migration/api.js';
import { FakeVcpuThrottle } from '../helpers/fake-vcpu-throttle.js';

const PS = 4096;
const P: ThrottleParameters = { ...DEFAULT_PARAMETERS };

describe('ThrottleTrigger (migration_trigger_throttle)', () => {
  function trigger() {
    let now = 0;
    const t = new ThrottleTrigger(() => now, PS);
    let xfer = 0;
    /** a sync `ms` after the last, having sent `sentMiB` and found `dirtyMiB` newly dirty */
    const sync = (ms: number, sentMiB: number, dirtyMiB: number) => {
      now += ms;
      xfer += sentMiB * MiB;
      return t.sync((dirtyMiB * MiB) / PS, xfer, 50);
    };
    return { sync };
  }

  it('judges only periods longer than a second, summing the syncs inside', () => {
    const { sync } = trigger();
    expect(sync(600, 30, 30)).toBeUndefined(); // the period began when the migration did
    expect(sync(600, 30, 30)).toBeUndefined(); // 1.2 s, 60 MiB dirty > 50% of 60 MiB: high once
    expect(sync(600, 30, 30)).toBeUndefined();
    expect(sync(600, 30, 30)).toEqual({ bytesDirty: 60 * MiB, bytesThreshold: 30 * MiB }); // high twice
  });

  it('a low period does not reset the count: the second high period trips, not necessarily the next one', () => {
    const { sync } = trigger();
    expect(sync(1100, 50, 40)).toBeUndefined(); // high (40 > 25)
    expect(sync(1100, 50, 10)).toBeUndefined(); // low (10 < 25)
    expect(sync(1100, 50, 26)).toBeDefined(); // high again: trips
    expect(sync(1100, 50, 26)).toBeUndefined(); // count restarted
    expect(sync(1100, 50, 26)).toBeDefined();
  });

  it('dirtying exactly the threshold is not too fast', () => {
    const { sync } = trigger();
    for (let i = 0; i < 5; i++) expect(sync(1100, 50, 25)).toBeUndefined();
  });
});

describe('nextThrottle (mig_throttle_guest_down)', () => {
  const trip = { bytesDirty: 100 * MiB, bytesThreshold: 25 * MiB };
  it('starts at cpu-throttle-initial, then adds cpu-throttle-increment up to max-cpu-throttle', () => {
    let pct = 0;
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) { pct = nextThrottle(pct, P, trip); seen.push(pct); }
    expect(seen).toEqual([20, 30, 40, 50, 60, 70, 80, 90, 99, 99]);
    expect(nextThrottle(60, { ...P, 'max-cpu-throttle': 65 }, trip)).toBe(65);
  });
  it('tailslow: no more than what would bring the dirty rate down to the threshold', () => {
    const tail = { ...P, 'cpu-throttle-tailslow': true };
    // at 80 % the guest has 20 % of the CPU; dirtying 1.1x the threshold it needs 20/1.1 = 18.18 -> 18: +2
    expect(nextThrottle(80, tail, { bytesDirty: 110, bytesThreshold: 100 })).toBe(82);
    // far above the threshold the increment still caps it
    expect(nextThrottle(40, tail, trip)).toBe(50);
  });
  it('stays within QEMU\'s 1..99', () => {
    expect(nextThrottle(0, { ...P, 'cpu-throttle-initial': 99 }, trip)).toBe(99);
    expect(nextThrottle(99, { ...P, 'max-cpu-throttle': 99 }, trip)).toBe(99);
  });
});

describe('DirtyLimiter', () => {
  it('sets each vCPU\'s sleep per ring from its running pace, so a ring takes what the limit allows', () => {
    let now = 0;
    const v = new FakeVcpuThrottle(2);
    const lim = new DirtyLimiter(v, PS, () => now, 1); // 1 MB/s: a 64-page ring (256 KiB) may take 250 ms
    // vCPU 0 dirties 25600 pages (100 MiB) in a second, never sleeping; vCPU 1 nothing
    v.dirty(0, 25600);
    now += 1000;
    lim.period();
    // pace: 1 s / 25600 pages -> 2.5 ms per ring; sleep 250 - 2.5 ms
    expect(v.ringSleepUs[0]).toBeCloseTo(247500, 0);
    expect(v.ringSleepUs[1]).toBe(0);
    expect(v.reaps).toBe(1);
    expect(lim.vcpuLimits()).toEqual([
      { 'cpu-index': 0, 'limit-rate': 1, 'current-rate': 100 }, { 'cpu-index': 1, 'limit-rate': 1, 'current-rate': 0 }]);
    // next period: the vCPU kept that pace while running but slept 990 ms: 4 rings, the limit held
    v.dirty(0, 256);
    v.sleep(0, 990e6);
    now += 1000;
    lim.period();
    expect(lim.vcpuLimits()[0]['current-rate']).toBe(1);
    // running 10 ms for 256 pages: 2.5 ms per ring again, the same sleep
    expect(v.ringSleepUs[0]).toBeCloseTo(247500, 0);
    expect(lim.throttleTimePerRound()).toBe(Math.round(247500 / 2));
    // a ring at the vCPUs' mean rate (0.5 MB/s) takes 500 ms
    expect(lim.ringFullTime()).toBe(500000);
    lim.release();
    expect(v.ringSleepUs).toEqual([0, 0]);
  });
  it('a vCPU slower than the limit does not sleep; a new limit applies at the next period', () => {
    let now = 0;
    const v = new FakeVcpuThrottle(1);
    const lim = new DirtyLimiter(v, PS, () => now, 10);
    v.dirty(0, 256); // 1 MB/s < 10
    now += 1000;
    lim.period();
    expect(v.ringSleepUs[0]).toBe(0);
    lim.limit = 0.5;
    v.dirty(0, 256);
    now += 1000;
    lim.period();
    // a ring may take 0.5 s now; it takes 0.25 s running
    expect(v.ringSleepUs[0]).toBeCloseTo(250000, 0);
  });
});

describe('PrecopyThrottle', () => {
  function setup(caps: { autoConverge?: boolean; dirtyLimit?: boolean }, params: Partial<MigrationParameters> = {}) {
    let now = 0;
    const v = new FakeVcpuThrottle(2);
    const t = new PrecopyThrottle({
      vcpus: v, pageSize: PS, autoConverge: caps.autoConverge ?? false, dirtyLimit: caps.dirtyLimit ?? false,
      params: () => ({ ...DEFAULT_PARAMETERS, ...params }), clock: () => now,
    });
    let xfer = 0;
    /** rounds of 1.1 s that send 50 MiB while the guest dirties 50 MiB */
    const rounds = (n: number) => { for (let i = 0; i < n; i++) { now += 1100; xfer += 50 * MiB; t.dirtySync((50 * MiB) / PS, xfer); } };
    return { v, t, rounds };
  }

  it('auto-converge: the throttle rises every second high period, shows in query-migrate, and is lifted by stop()', () => {
    const { v, t, rounds } = setup({ autoConverge: true }, { 'cpu-throttle-initial': 30, 'cpu-throttle-increment': 20 });
    expect(t.info()).toEqual({ 'cpu-throttle-percentage': 0 });
    rounds(1);
    expect(v.cpuThrottle).toBe(0); // one high period
    rounds(1);
    expect(v.cpuThrottle).toBe(30);
    rounds(4);
    expect(t.info()).toEqual({ 'cpu-throttle-percentage': 70 });
    t.stop();
    expect(v.cpuThrottle).toBe(0);
    rounds(4);
    expect(v.cpuThrottle).toBe(0); // nothing after the end
  });

  it('dirty-limit: the limiter starts at the trip (dirty log on), shows its figures, and stop() frees the vCPUs', () => {
    const { v, t, rounds } = setup({ dirtyLimit: true });
    rounds(1);
    expect(v.logUsers).toBe(0);
    expect(t.vcpuLimits()).toBeUndefined();
    rounds(1);
    expect(v.logUsers).toBe(1);
    expect(t.vcpuLimits()).toHaveLength(2);
    expect(t.info()).toEqual({ 'dirty-limit-throttle-time-per-round': 0, 'dirty-limit-ring-full-time': 0 });
    expect(v.cpuThrottle).toBe(0); // dirty-limit never touches the cpu throttle
    t.stop();
    expect(v.logUsers).toBe(0);
    expect(t.info()).toEqual({});
  });

  it('neither tool: the trigger trips but nothing acts', () => {
    const { v, t, rounds } = setup({});
    rounds(10);
    expect([v.cpuThrottle, v.logUsers, t.info()]).toEqual([0, 0, {}]);
  });
});
