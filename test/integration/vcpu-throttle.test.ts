// The convergence knobs on real vCPU threads (native-shim/vcpu.c): the cpu
// throttle makes a vCPU sleep its percentage of the time (QEMU's 10 ms
// timeslice) and nothing once lifted; a pause is answered at once even in a
// throttle sleep; the dirty log counts each page a vCPU dirties once per
// reap; a sleep per ring holds its dirty rate down. Times come from the
// threads' own counters (CLOCK_MONOTONIC); load stretches the running part of
// a timeslice, never the sleep, so the bounds allow less sleep, not more.
import { GuestRam, VcpuSet, parseWorkload } from '../../src/vm/index.js';

const MiB = 2 ** 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** share of a window vCPU 0 spent in throttle sleeps, and its accesses per second */
async function measure(v: VcpuSet, ms: number): Promise<{ slept: number; rate: number }> {
  const a0 = v.progress(0).accesses, s0 = v.throttle.sleptNs(0).throttle, t0 = performance.now();
  await sleep(ms);
  const a1 = v.progress(0).accesses, s1 = v.throttle.sleptNs(0).throttle, t1 = performance.now();
  return { slept: (s1 - s0) / 1e6 / (t1 - t0), rate: ((a1 - a0) * 1000) / (t1 - t0) };
}

describe('vCPU throttle and dirty log', () => {
  let ram: GuestRam;
  let v: VcpuSet;
  beforeEach(async () => {
    ram = GuestRam.create(64 * MiB);
    v = await VcpuSet.create(ram, 1, parseWorkload('sweep,end=32M', ram.bytes));
  });
  afterEach(async () => { await v.stop(); ram.dispose(); });

  it('sleeps the throttle percentage of its time, and runs free once it is lifted', async () => {
    const free = await measure(v, 500);
    expect(free.slept).toBe(0);
    v.throttle.setCpuThrottle(50);
    await sleep(100);
    // a timeslice is 10 ms of wall time with the vCPU runnable: on a loaded
    // host it runs for less of it, so the share slept can only fall short
    const half = await measure(v, 1500);
    expect(half.slept).toBeGreaterThan(0.3);
    expect(half.slept).toBeLessThan(0.55);
    v.throttle.setCpuThrottle(90);
    await sleep(300);
    const most = await measure(v, 2000);
    expect(most.slept).toBeGreaterThan(0.7);
    expect(most.slept).toBeLessThan(0.93);
    expect(most.rate).toBeLessThan(half.rate);
    v.throttle.setCpuThrottle(0);
    await sleep(1000); // a 90 % sleep is at most 90 ms
    expect((await measure(v, 500)).slept).toBe(0);
    expect(() => v.throttle.setCpuThrottle(100)).toThrow(RangeError);
  });

  it('a pause ends a throttle sleep at once', async () => {
    v.throttle.setCpuThrottle(99); // sleeps of 990 ms
    await sleep(300);
    const t0 = performance.now();
    await v.pause();
    expect(performance.now() - t0).toBeLessThan(200);
    v.resume();
  });

  it('the dirty log counts each page once per reap; a sleep per ring caps the dirty rate', async () => {
    const pages = (32 * MiB) / 4096;
    v.throttle.startDirtyLog();
    await sleep(300); // many sweeps of 8192 pages
    expect(v.throttle.dirtyPages(0)).toBe(pages);
    v.throttle.reapDirtyLog();
    await sleep(300);
    expect(v.throttle.dirtyPages(0)).toBe(2 * pages);
    // 10 ms per 64-page ring: at most 6400 pages/s (25 MiB/s)
    v.throttle.setRingSleep(0, 10_000);
    const d0 = v.throttle.dirtyPages(0), t0 = performance.now();
    for (let i = 0; i < 10; i++) { await sleep(100); v.throttle.reapDirtyLog(); }
    const rate = ((v.throttle.dirtyPages(0) - d0) * 1000) / (performance.now() - t0);
    expect(rate).toBeLessThan(6400 * 1.05);
    expect(rate).toBeGreaterThan(1000);
    expect(v.throttle.sleptNs(0).limit).toBeGreaterThan(0);
    v.throttle.stopDirtyLog();
    const d1 = v.throttle.dirtyPages(0);
    await sleep(100);
    expect(v.throttle.dirtyPages(0)).toBe(d1); // off: nothing counted
  });
});
