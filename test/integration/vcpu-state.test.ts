// vCPU threads as the migration uses them: pause is acknowledged and stable,
// the workload state read on a paused "source" and set on a fresh
// "destination" continues the work exactly (QEMU's sweep invariant, and the
// same final memory as an uninterrupted run for the random workload), and
// the threads carry names (CPU N/postcopy).
import { CommandError } from '../../src/errors.js';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { GuestRam, VcpuSet, PAGE_SIZE, parseWorkload, type VcpuState } from '../../src/vm/index.js';
import { vcpuNice } from '../../src/vm/vcpus.js';

const MiB = 2 ** 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** one Buffer over all of a small guest's RAM (it fits one MemoryWindows window) */
const all = (ram: GuestRam): Buffer => ram.windows.view(0, ram.bytes);

/** first byte of every page */
function firstBytes(ram: GuestRam): number[] {
  const v = all(ram);
  return Array.from({ length: ram.pages }, (_, p) => v[p * PAGE_SIZE]);
}

describe('vCPU threads', () => {
  it('the threads carry QEMU-style names (CPU N/postcopy), as top and perf show them', async () => {
    const ram = GuestRam.create(1 * MiB);
    const vcpus = await VcpuSet.create(ram, 2, parseWorkload('idle', ram.bytes));
    try {
      const names = vcpus.threadIds().map((tid) => readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim());
      expect(names).toEqual(['CPU 0/postcopy', 'CPU 1/postcopy']);
    } finally {
      await vcpus.stop();
      ram.dispose();
    }
  });

  it('sweep: pause is acknowledged with memory matching the state, and a destination continues exactly', async () => {
    const src = GuestRam.create(4 * MiB);
    const vcpus = await VcpuSet.create(src, 2, parseWorkload('sweep,split=on', src.bytes));
    expect(vcpus.running).toBe(true);
    await sleep(30);
    await vcpus.pause();
    expect(vcpus.running).toBe(false);
    const states: VcpuState[] = [0, 1].map((i) => vcpus.state(i));
    const before = [0, 1].map((i) => vcpus.progress(i));
    await sleep(20);
    expect([0, 1].map((i) => vcpus.progress(i))).toEqual(before); // really paused
    expect(states[0].sweeps).toBeGreaterThan(0);
    // the invariant: in each vCPU's slice, pages before `position` were swept once more
    const bytes = firstBytes(src);
    for (const i of [0, 1]) {
      const [lo, hi] = vcpus.range(i);
      const s = states[i];
      for (let p = lo; p < hi; p++) expect(bytes[p]).toBe(((p < s.position ? s.sweeps + 1 : s.sweeps)) & 0xff);
      expect(s.accesses).toBe(s.sweeps * (hi - lo) + (s.position - lo));
    }
    vcpus.resume();
    await sleep(10);
    await vcpus.pause();
    expect(vcpus.progress(0).accesses).toBeGreaterThan(before[0].accesses);
    const moved = [0, 1].map((i) => vcpus.state(i));
    await vcpus.stop();

    // destination: same memory, state set while paused, bounded to 3 more sweeps
    const dst = GuestRam.create(4 * MiB);
    all(dst).set(all(src));
    const target = Math.max(moved[0].sweeps, moved[1].sweeps) + 3;
    const next = await VcpuSet.create(dst, 2, parseWorkload(`sweep,split=on,sweeps=${target}`, dst.bytes), { paused: true });
    next.setState(0, moved[0]);
    next.setState(1, moved[1]);
    next.resume();
    await next.whenDone({ timeoutMs: 30_000 });
    expect(next.status(0)).toBe('done');
    expect(new Set(firstBytes(dst))).toEqual(new Set([target & 0xff]));
    for (const i of [0, 1]) {
      const [lo, hi] = next.range(i);
      expect(next.progress(i)).toEqual({ sweeps: target, accesses: target * (hi - lo) });
    }
    await next.stop();
    src.dispose();
    dst.dispose();
  });

  it('random: interrupted and resumed elsewhere gives the same memory as one uninterrupted run', async () => {
    const N = 3_000_000;
    const spec = (ram: GuestRam) => parseWorkload(`random,seed=42,accesses=${N}`, ram.bytes);
    const whole = GuestRam.create(2 * MiB);
    const a = await VcpuSet.create(whole, 1, spec(whole));
    await a.whenDone({ timeoutMs: 30_000 });
    expect(a.progress(0).accesses).toBe(N);
    await a.stop();

    // the "source" stops part-way (a bound is a deterministic place to stop), its state goes to a new set
    const first = GuestRam.create(2 * MiB);
    const b = await VcpuSet.create(first, 1, parseWorkload('random,seed=42,accesses=1234567', first.bytes));
    await b.whenDone({ timeoutMs: 30_000 });
    await b.pause();
    const mid = b.state(0);
    await b.stop();
    expect(mid.accesses).toBe(1234567);
    const second = GuestRam.create(2 * MiB);
    all(second).set(all(first));
    const c = await VcpuSet.create(second, 1, spec(second), { paused: true });
    c.setState(0, mid);
    c.resume();
    await c.whenDone({ timeoutMs: 30_000 });
    await c.stop();
    expect(c.progress(0).accesses).toBe(N);
    expect(second.digestHex()).toBe(whole.digestHex());
    expect(Buffer.compare(all(second), all(whole))).toBe(0);
    for (const r of [whole, first, second]) r.dispose();
  });

  it('hotset: the hot fraction of pages gets its share of the accesses', async () => {
    const ram = GuestRam.create(40 * MiB); // 10240 pages, 1024 hot
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload('hotset,fraction=0.1,share=0.8,seed=5,accesses=20000', ram.bytes));
    await vcpus.whenDone({ timeoutMs: 30_000 });
    await vcpus.stop();
    const b = firstBytes(ram);
    const hot = b.slice(0, 1024).reduce((x, y) => x + y, 0);
    const cold = b.slice(1024).reduce((x, y) => x + y, 0);
    expect(hot + cold).toBe(20000); // no page reached 256 increments
    expect(hot / 20000).toBeGreaterThan(0.78);
    expect(hot / 20000).toBeLessThan(0.82);
    ram.dispose();
  });

  it('idle never touches memory; pause, resume and stop still work', async () => {
    const ram = GuestRam.create(1 * MiB);
    const vcpus = await VcpuSet.create(ram, 3, parseWorkload('idle', ram.bytes));
    expect(new Set(vcpus.threadIds()).size).toBe(3);
    await sleep(10);
    await vcpus.pause();
    expect(vcpus.status(2)).toBe('paused');
    vcpus.resume();
    await vcpus.stop();
    expect(vcpus.progress(0)).toEqual({ accesses: 0, sweeps: 0 });
    expect(vcpus.status(0)).toBe('stopped');
    expect(ram.pageDigests().every((d) => d === ram.pageDigests(0, 1)[0])).toBe(true);
    ram.dispose();
  });

  it('refuses bad counts and state changes at the wrong time, clearly', async () => {
    const ram = GuestRam.create(1 * MiB);
    await expect(VcpuSet.create(ram, 0, parseWorkload('idle', ram.bytes))).rejects.toThrow('out of range (1..512)');
    await expect(VcpuSet.create(ram, 513, parseWorkload('idle', ram.bytes))).rejects.toThrow(CommandError);
    await expect(VcpuSet.create(ram, 300, parseWorkload('sweep,split=on,end=1M', ram.bytes))).rejects.toThrow('need at least 300 pages');
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep,start=8K,end=64K', ram.bytes));
    expect(() => vcpus.state(0)).toThrow('pause the vCPUs before reading');
    expect(() => vcpus.setState(0, { position: 2, sweeps: 0, accesses: 0, rng: 1n })).toThrow('running');
    await vcpus.pause();
    expect(() => vcpus.setState(0, { position: 1, sweeps: 0, accesses: 0, rng: 1n })).toThrow('outside its workload range [2, 16)');
    expect(() => vcpus.setState(0, { position: 2, sweeps: -1, accesses: 0, rng: 1n })).toThrow('sweeps');
    expect(() => vcpus.setState(0, { position: 2, sweeps: 0, accesses: 0, rng: 0n })).toThrow('rng');
    expect(() => vcpus.progress(1)).toThrow('out of range (0..0)');
    await vcpus.stop();
    await vcpus.stop(); // idempotent
    expect(() => vcpus.resume()).toThrow('stopped');
    await expect(vcpus.pause()).rejects.toThrow('stopped');
    ram.dispose();
  });

  it('vCPUs beyond 4 per host CPU run niced, together about one thread per CPU; up to 4 per CPU they are not', async () => {
    expect([1, 8, 9, 16, 64, 512].map((n) => vcpuNice(n, 2))).toEqual([0, 0, 7, 10, 16, 19]);
    expect(vcpuNice(64, 16)).toBe(0);
    const ram = GuestRam.create(4 * MiB);
    const niceOf = (tid: number): number => Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')[16]);
    const mine = niceOf(process.pid);
    for (const count of [4 * availableParallelism(), 16 * availableParallelism()]) {
      const vcpus = await VcpuSet.create(ram, count, parseWorkload('idle', ram.bytes));
      const want = Math.min(19, mine + vcpuNice(count, availableParallelism())); // inherited, plus the vCPUs' share
      expect(vcpus.threadIds().map(niceOf)).toEqual(Array.from({ length: count }, () => want));
      await vcpus.stop();
    }
    expect(niceOf(process.pid)).toBe(mine); // the VM's own threads keep theirs
    ram.dispose();
  });
});
