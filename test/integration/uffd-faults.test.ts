// Real userfaultfd faults from real vCPU threads, resolved by the TypeScript
// handler: every page arrives exactly once with the pattern, the thread ids
// are the vCPUs', write-protect faults work, bad calls fail clearly, and the
// event loop keeps running while a vCPU waits on a missing page.
import net from 'node:net';
import { requireUffd } from '../helpers/uffd-available.js';
import {
  Userfaultfd, UffdPoller, StagingArea, UffdError, EVENT_PAGEFAULT, PAGEFAULT_FLAG_WP, PAGEFAULT_FLAG_WRITE,
  FEATURE_NAMES, probeSupportedFeatures, FEATURES,
} from '../../src/uffd/index.js';
import { GuestRam, VcpuSet, PAGE_SIZE, parseWorkload } from '../../src/vm/index.js';

const haveUffd = requireUffd();
const maybe = haveUffd ? describe : describe.skip;
const MiB = 2 ** 20;
const PATTERN = 0x40;

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UffdError);
    return `${(e as UffdError).code}: ${(e as Error).message}`;
  }
  throw new Error('expected a UffdError');
}

/** a TS fault handler that resolves every missing-page fault with the staging page */
function missingHandler(uffd: Userfaultfd, src: number) {
  const tids = new Set<number>();
  const stats = { faults: 0, other: 0 };
  const poller = new UffdPoller(uffd, () => {
    const n = uffd.readEvents();
    for (let i = 0; i < n; i++) {
      if (uffd.eventKind(i) !== EVENT_PAGEFAULT) { stats.other++; continue; }
      tids.add(uffd.faultThreadId(i));
      const a = uffd.faultAddress(i);
      uffd.copy(a - (a % PAGE_SIZE), src, PAGE_SIZE);
      stats.faults++;
    }
    return n;
  });
  poller.start();
  return { poller, tids, stats };
}

maybe('userfaultfd with vCPU threads', () => {
  let staging: StagingArea;
  beforeAll(() => {
    staging = StagingArea.create(1);
    staging.slot(0).fill(PATTERN);
  });
  afterAll(() => staging.dispose());

  it('the kernel reports THREAD_ID, and it is enabled when asked for', () => {
    const uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
    try {
      expect(uffd.supported.has('THREAD_ID')).toBe(true);
      expect([...uffd.enabled]).toEqual(['THREAD_ID']);
      expect(uffd.fd).toBeGreaterThan(2);
    } finally {
      uffd.close();
    }
  });

  it('a required feature the kernel lacks is refused by name', () => {
    const supported = probeSupportedFeatures();
    const missing = FEATURE_NAMES.find((n) => (supported & FEATURES[n]) === 0);
    if (missing) {
      expect(codeOf(() => Userfaultfd.open({ features: [missing] }))).toContain(`does not support ${missing}`);
    }
    // whatever the kernel has: an optional feature it lacks is silently dropped, a bogus one is refused
    expect(codeOf(() => Userfaultfd.open({ features: ['THREAD_ID', 'NO_SUCH_FEATURE' as never] })))
      .toContain('UNSUPPORTED_FEATURE: unknown userfaultfd feature in features: NO_SUCH_FEATURE');
  });

  it.each([1, 4])('%i vCPU(s) sweeping once: every page faults once, arrives with the pattern, then +1', async (count) => {
    const ram = GuestRam.create(8 * MiB);
    const uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
    uffd.register(ram.base, ram.bytes, { missing: true });
    const h = missingHandler(uffd, staging.base);
    const vcpus = await VcpuSet.create(ram, count, parseWorkload('sweep,sweeps=1,split=on', ram.bytes), { paused: true });
    try {
      vcpus.resume();
      await vcpus.whenDone({ timeoutMs: 30_000 });
      expect(h.stats.faults).toBe(ram.pages);
      expect(h.stats.other).toBe(0);
      const tids = new Set(vcpus.threadIds());
      expect(tids.size).toBe(count);
      expect([...h.tids].every((t) => tids.has(t))).toBe(true);
      expect(h.tids.size).toBe(count);
      // every byte of every page: the pattern, and the sweep's +1 on the first byte
      const mem = ram.windows.view(0, ram.bytes);
      const expected = Buffer.alloc(PAGE_SIZE, PATTERN);
      expected[0] = PATTERN + 1;
      const wrong: number[] = [];
      for (let p = 0; p < ram.pages; p++) {
        if (!mem.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE).equals(expected)) wrong.push(p);
      }
      expect(wrong).toEqual([]);
      let total = 0;
      for (let i = 0; i < count; i++) total += vcpus.progress(i).accesses;
      expect(total).toBe(ram.pages);
    } finally {
      await vcpus.stop();
      await h.poller.stop();
      uffd.close();
      ram.dispose();
    }
  });

  it('write-protect: a writing vCPU gets a WP fault, un-protecting lets it go on', async () => {
    const ram = GuestRam.create(1 * MiB);
    ram.windows.view(0, ram.bytes).fill(7); // populate: WP applies to present pages
    const uffd = Userfaultfd.open({ features: ['PAGEFAULT_FLAG_WP'], optionalFeatures: ['THREAD_ID'] });
    uffd.register(ram.base, ram.bytes, { wp: true });
    uffd.writeProtect(ram.base, ram.bytes, true);
    const seen: number[] = [];
    let flagsOk = true;
    const poller = new UffdPoller(uffd, () => {
      const n = uffd.readEvents();
      for (let i = 0; i < n; i++) {
        const f = uffd.faultFlags(i);
        if ((f & PAGEFAULT_FLAG_WP) === 0 || (f & PAGEFAULT_FLAG_WRITE) === 0) flagsOk = false;
        const a = uffd.faultAddress(i);
        const page = a - (a % PAGE_SIZE);
        seen.push((page - ram.base) / PAGE_SIZE);
        uffd.writeProtect(page, PAGE_SIZE, false);
      }
      return n;
    });
    poller.start();
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep,sweeps=1', ram.bytes));
    try {
      await vcpus.whenDone({ timeoutMs: 30_000 });
      expect(flagsOk).toBe(true);
      expect(seen).toEqual(Array.from({ length: ram.pages }, (_, p) => p));
      expect(ram.windows.view(0, 1)[0]).toBe(8);
    } finally {
      await vcpus.stop();
      await poller.stop();
      uffd.close();
      ram.dispose();
    }
  });

  it('the event loop keeps running while a vCPU is blocked on a missing page', async () => {
    const ram = GuestRam.create(1 * MiB);
    const uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
    uffd.register(ram.base, ram.bytes, { missing: true });
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep,sweeps=1', ram.bytes));
    try {
      // nothing resolves faults yet: a timer must still fire
      const fired = await new Promise<number>((resolve) => setTimeout(() => resolve(Date.now()), 30));
      expect(fired).toBeGreaterThan(0);
      expect(vcpus.progress(0).accesses).toBe(0);
      expect(uffd.readEvents()).toBe(1);
      expect(uffd.event(0)).toMatchObject({ kind: 'pagefault', address: ram.base, threadId: vcpus.threadIds()[0] });
      // a pause cannot be acknowledged by a vCPU inside a fault: it says which one
      await expect(vcpus.pause({ timeoutMs: 50 })).rejects.toThrow('vCPU 0 did not acknowledge the pause within 50 ms');
      vcpus.resume();
      const h = missingHandler(uffd, staging.base);
      uffd.copy(ram.base, staging.base, PAGE_SIZE); // the pending fault (already read) is resolved by hand
      await vcpus.whenDone({ timeoutMs: 30_000 });
      expect(h.stats.faults).toBe(ram.pages - 1);
      await h.poller.stop();
    } finally {
      await vcpus.stop();
      uffd.close();
      ram.dispose();
    }
  });

  it('a parked poller leaves the event loop free: timers and a socket echo run while a vCPU waits', async () => {
    const ram = GuestRam.create(1 * MiB);
    const uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
    uffd.register(ram.base, ram.bytes, { missing: true });
    let release = false;
    const held: number[] = [];
    const poller = new UffdPoller(uffd, () => {
      const n = uffd.readEvents();
      for (let i = 0; i < n; i++) held.push(uffd.faultAddress(i));
      if (release) for (const a of held.splice(0)) uffd.copy(a - (a % PAGE_SIZE), staging.base, PAGE_SIZE);
      return n;
    });
    poller.start();
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep,sweeps=1', ram.bytes));
    const server = net.createServer((c) => c.pipe(c));
    try {
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const waitFor = async (cond: () => boolean): Promise<void> => {
        while (!cond()) await new Promise((r) => setTimeout(r, 5));
      };
      await waitFor(() => held.length === 1 && poller.parks > 0); // the vCPU is stuck, the poller parked
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 20));
      expect(performance.now() - t0).toBeLessThan(1000);
      const echoed = await new Promise<string>((resolve, reject) => {
        const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1', () => c.write('ping'));
        c.on('data', (d) => { resolve(d.toString()); c.destroy(); });
        c.on('error', reject);
      });
      expect(echoed).toBe('ping');
      expect(vcpus.progress(0).accesses).toBe(0); // still blocked all along
      expect(poller.running).toBe(true);
      release = true; // the held fault is resolved on the next event; resolve it now by hand too
      for (const a of held.splice(0)) uffd.copy(a - (a % PAGE_SIZE), staging.base, PAGE_SIZE);
      await vcpus.whenDone({ timeoutMs: 30_000 });
      expect(vcpus.progress(0).accesses).toBe(ram.pages);
    } finally {
      server.close();
      await vcpus.stop();
      await poller.stop();
      uffd.close();
      ram.dispose();
    }
  });

  it('closing the userfaultfd releases a vCPU blocked in a fault (stop does not hang)', async () => {
    const ram = GuestRam.create(1 * MiB);
    const uffd = Userfaultfd.open();
    uffd.register(ram.base, ram.bytes, { missing: true });
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep', ram.bytes));
    await new Promise((r) => setTimeout(r, 20));
    expect(vcpus.progress(0).accesses).toBe(0);
    uffd.close();
    await vcpus.stop();
    expect(vcpus.progress(0).accesses).toBeGreaterThan(0);
    ram.dispose();
  });

  it('copy/zeropage results: placed, exists (waiters woken), and zero pages read as zero', () => {
    const ram = GuestRam.create(1 * MiB);
    const uffd = Userfaultfd.open();
    try {
      uffd.register(ram.base, ram.bytes, { missing: true });
      expect(uffd.copy(ram.base, staging.base, PAGE_SIZE)).toBe('placed');
      expect(uffd.copy(ram.base, staging.base, PAGE_SIZE)).toBe('exists');
      expect(uffd.zeropage(ram.base + PAGE_SIZE, PAGE_SIZE)).toBe('placed');
      expect(uffd.zeropage(ram.base, PAGE_SIZE)).toBe('exists');
      // a multi-page copy over present pages places the others
      const four = StagingArea.create(4);
      four.slot(0).fill(1); four.slot(1).fill(2); four.slot(2).fill(3); four.slot(3).fill(4);
      expect(uffd.copy(ram.base, four.base, PAGE_SIZE * 4, { dontWake: true })).toBe('placed');
      four.dispose();
      expect(uffd.zeropage(ram.base, PAGE_SIZE * 2)).toBe('exists');
      uffd.wake(ram.base, ram.bytes);
      const mem = ram.windows.view(0, ram.bytes);
      expect([mem[0], mem[PAGE_SIZE], mem[2 * PAGE_SIZE], mem[3 * PAGE_SIZE + 5]]).toEqual([PATTERN, 0, 3, 4]);
      uffd.unregister(ram.base, ram.bytes);
    } finally {
      uffd.close();
      ram.dispose();
    }
  });

  it('bad calls fail with clear errors and nothing crashes', () => {
    const ram = GuestRam.create(1 * MiB);
    const other = GuestRam.create(1 * MiB);
    const uffd = Userfaultfd.open();
    uffd.register(ram.base, ram.bytes, { missing: true });
    expect(codeOf(() => uffd.register(ram.base + 1, PAGE_SIZE, { missing: true }))).toMatch(/^BAD_ARGUMENT: register: start .* is not a page-aligned/);
    expect(codeOf(() => uffd.register(ram.base, 0, { missing: true }))).toContain('length 0x0 is not a positive multiple');
    expect(codeOf(() => uffd.register(ram.base, 100, { missing: true }))).toContain('length 0x64');
    expect(codeOf(() => uffd.register(ram.base, PAGE_SIZE, {}))).toContain('choose a mode');
    expect(codeOf(() => uffd.copy(other.base, staging.base, PAGE_SIZE))).toMatch(/^ENOENT: UFFDIO_COPY .*registered/);
    expect(codeOf(() => uffd.copy(ram.base, staging.base + 8, PAGE_SIZE))).toContain('source');
    expect(codeOf(() => uffd.copy(ram.base, staging.base, -4096))).toContain('BAD_ARGUMENT');
    expect(codeOf(() => uffd.zeropage(NaN, PAGE_SIZE))).toContain('BAD_ARGUMENT');
    expect(codeOf(() => uffd.writeProtect(ram.base, PAGE_SIZE, true))).toContain('UFFDIO_WRITEPROTECT');
    expect(codeOf(() => uffd.event(3))).toContain('outside the last batch');
    uffd.close();
    expect(uffd.closed).toBe(true);
    expect(codeOf(() => uffd.readEvents())).toBe('CLOSED: userfaultfd readEvents: the userfaultfd is closed');
    expect(codeOf(() => uffd.copy(ram.base, staging.base, PAGE_SIZE))).toContain('CLOSED');
    expect(codeOf(() => uffd.wake(ram.base, PAGE_SIZE))).toContain('CLOSED');
    expect(codeOf(() => uffd.close())).toBe('CLOSED: userfaultfd close: the userfaultfd is closed');
    expect(() => new UffdPoller(uffd, () => 0).start()).toThrow('closed');
    ram.dispose();
    other.dispose();
  });

  it('non-cooperative events: a REMOVE (madvise DONTNEED) is read and decoded', async () => {
    const ram = GuestRam.create(1 * MiB);
    const uffd = Userfaultfd.open({ features: ['EVENT_REMOVE'] });
    uffd.register(ram.base, ram.bytes, { missing: true });
    const events: unknown[] = [];
    const poller = new UffdPoller(uffd, () => {
      const n = uffd.readEvents();
      for (let i = 0; i < n; i++) events.push(uffd.event(i));
      return n;
    });
    poller.start();
    try {
      await ram.discardAsync(2, 3); // blocks its worker until the event is read
      expect(events).toEqual([{ kind: 'remove', start: ram.base + 2 * PAGE_SIZE, end: ram.base + 5 * PAGE_SIZE }]);
    } finally {
      await poller.stop();
      uffd.close();
      ram.dispose();
    }
  });

  it('the poller reports a throwing handler and stops', async () => {
    const ram = GuestRam.create(1 * MiB);
    const uffd = Userfaultfd.open();
    uffd.register(ram.base, ram.bytes, { missing: true });
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep,sweeps=1', ram.bytes));
    const err = await new Promise<Error>((resolve) => {
      new UffdPoller(uffd, () => { uffd.readEvents(); throw new Error('handler bug'); }, { onError: resolve }).start();
    });
    expect(err.message).toBe('handler bug');
    uffd.close(); // releases the vCPU
    await vcpus.stop();
    ram.dispose();
  });
});
