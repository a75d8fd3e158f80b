// Guest RAM on hugetlbfs (-mem-path, memory-backend-file): real 2 MiB huge
// pages reserved for this file (test/helpers/hugepages.ts) and given back at
// the end. A postcopy migration between two VM processes moves whole huge
// pages: every page identical at the end, faults and requests counted in huge
// pages, blocktime keyed by huge-page addresses; precopy dirty tracking
// (both mechanisms) marks whole huge pages; QEMU's errors for a path off
// hugetlbfs, a size that is no multiple of the page, too few huge pages, and a
// destination whose page size differs from the source's.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Lab, setCaps, waitStatus, digest, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { requireHugePages, freeHugePages, mountHugetlbfs, HUGE_PAGE } from '../helpers/hugepages.js';
import { cli, ensureBuilt } from '../helpers/cli.js';
import { GuestRam, VcpuSet, parseWorkload } from '../../src/vm/index.js';
import { Userfaultfd, StagingArea, IOCTL_ZEROPAGE } from '../../src/uffd/index.js';
import { NativeBlock } from '../../src/native/memory.js';
import { PageChannel, FaultThreadStat } from '../../src/native/page-channel.js';
import { writeRecordHeader, RECORD_HEADER_BYTES, REC_ZERO } from '../../src/migration/wire.js';
import { socketPair } from '../helpers/socket-pair.js';
import type { DirtyTrackingMode } from '../../src/migration/dirty-tracker.js';
import { trackedSweep } from '../helpers/tracked-sweep.js';
import type { MemoryBackend } from '../../src/vm/memory-backend.js';

const MiB = 2 ** 20;
/** two 64 MiB guests (32 huge pages each) at once, and small ones beside */
const hp = requireUffd() ? requireHugePages(80) : null;
const run = hp ? describe : describe.skip;
afterAll(() => hp?.release());

const backend = (extra: Partial<MemoryBackend> = {}): MemoryBackend =>
  ({ type: 'memory-backend-file', id: 'pc.ram', memPath: hp!.dir, prealloc: false, share: false, ...extra });


run('guest RAM on hugetlbfs', () => {
  let lab: Lab;
  beforeAll(() => ensureBuilt());
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('postcopy between two processes, 2 vCPUs, destination -S: 2 MiB pages on the wire, every page identical', async () => {
    const common = ['-smp', '2', '-workload', 'random,end=60M,seed=5'];
    const uri = `unix:${lab.path('mig.sock')}`;
    // QEMU's two spellings: the object (shared, preallocated) on one side, -mem-path on the other
    const dst = await lab.vm('dst', [...common, '-object', `memory-backend-file,id=mem0,mem-path=${hp!.dir},size=64M,share=on,prealloc=on`,
      '-machine', 'memory-backend=mem0', '-incoming', uri, '-S']);
    const src = await lab.vm('src', [...common, '-m', '64M', '-mem-path', hp!.dir]);
    await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
    await setCaps(src, ['postcopy-ram']);
    await new Promise((r) => setTimeout(r, 300)); // the workload writes pages
    await src.qmp.execute('migrate', { uri });
    await src.qmp.execute('migrate-start-postcopy');
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
    expect([s.ram!['page-size'], d.ram!['page-size']]).toEqual([HUGE_PAGE, HUGE_PAGE]);
    expect(s.ram!.normal + s.ram!.duplicate).toBeGreaterThanOrEqual(32); // every huge page went once at least
    const [a, b] = await Promise.all([digest(src), digest(dst)]);
    expect(a.length).toBe(32); // one digest per 2 MiB page
    expect(a.filter((h, i) => h !== b[i]).length).toBe(0);
    expect(new Set(a).size).toBeGreaterThan(20); // the workload really wrote them
  });

  test('a running sweep faults once per huge page; blocktime and its trace are keyed by huge pages', async () => {
    const trace = lab.path('trace.jsonl');
    const common = ['-m', '64M', '-mem-path', hp!.dir, '-smp', '1', '-workload', 'sweep,end=48M'];
    const uri = `unix:${lab.path('mig.sock')}`;
    const dst = await lab.vm('dst', [...common, '-incoming', uri]);
    const src = await lab.vm('src', common);
    await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
    await dst.qmp.execute('migrate-set-parameters', { 'x-blocktime-trace': trace });
    await setCaps(src, ['postcopy-ram']);
    await src.qmp.execute('migrate', { uri });
    await src.qmp.execute('migrate-start-postcopy');
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status]).toEqual(['completed', 'completed']);
    const faults = d['x-blocktime']!.faults;
    expect(faults).toBeGreaterThan(0);
    expect(faults).toBeLessThanOrEqual(24); // the sweep covers 24 huge pages (12288 pages of 4 KiB)
    expect(d.ram!['postcopy-requests']).toBeLessThanOrEqual(24);
    const events = readFileSync(trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { ev?: string; addr?: number });
    const addrs = events.filter((e) => e.ev === 'fault').map((e) => e.addr!);
    expect(addrs.length).toBe(faults);
    expect(addrs.every((x) => x % HUGE_PAGE === 0)).toBe(true);
    const hmp = await dst.qmp.execute<string>('human-monitor-command', { 'command-line': 'info postcopy_blocktime' });
    expect(hmp).toMatch(new RegExp(`\\b${faults}\\b`));
    const blocks = await dst.qmp.execute<string>('human-monitor-command', { 'command-line': 'info ramblock' });
    expect(blocks).toMatch(/^\s+Block Name\s+PSize\s+Offset\s+Used\s+Total/m);
    expect(blocks).toMatch(/^\s+pc\.ram\s+2 MiB\s+0x0000000000000000\s+0x0000000004000000\s+0x0000000004000000\s+0x[0-9a-f]{16}\s+rw$/m);
  });

  test.each(['wp-async', 'wp-sync'] as DirtyTrackingMode[])('precopy dirty tracking (%s) marks whole huge pages', async (mode) => {
    const ram = GuestRam.create(16 * MiB, backend());
    try {
      // 4 KiB guest pages from 2 MiB + 4 KiB to 6 MiB: huge pages 1 and 2
      const t = await trackedSweep(ram, mode, 'start=2052K,end=6M');
      expect([t.mode, t.before, t.marked, t.again]).toEqual([mode, 0, 2, 0]);
      expect([...t.flags]).toEqual([0, 1, 1, 0, 0, 0, 0, 0]);
    } finally {
      ram.dispose();
    }
  });

  test('the fault thread places zero huge pages with UFFDIO_COPY (no UFFDIO_ZEROPAGE on hugetlbfs): known zero, and answered ZERO', async () => {
    const ram = GuestRam.create(8 * MiB, backend());
    const uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
    const flags = new NativeBlock(ram.pages);
    const zero = StagingArea.create(1, HUGE_PAGE);
    const [mine, peer] = await socketPair(lab.dir, 'urgent.sock');
    let vcpus: VcpuSet | undefined;
    let ch: PageChannel | undefined;
    try {
      expect(uffd.register(ram.base, ram.bytes, { missing: true }) & IOCTL_ZEROPAGE).toBe(0); // the kernel says so
      new Uint8Array(flags.buffer)[1] = 1; // huge page 1: received as zero in precopy
      const asked: number[] = [];
      peer.on('data', (b: Buffer) => { // the source: every request answered with a ZERO record
        for (let pos = 0; pos + RECORD_HEADER_BYTES <= b.length; pos += RECORD_HEADER_BYTES) {
          const page = b.readUInt32LE(pos + 8) / HUGE_PAGE;
          asked.push(page);
          const r = Buffer.alloc(RECORD_HEADER_BYTES);
          writeRecordHeader(r, 0, REC_ZERO, 0, 1, page * HUGE_PAGE);
          peer.write(r);
        }
      });
      ch = PageChannel.startFaultThread({
        uffd: uffd.fd, sock: mine, ramBase: ram.base, pageSize: HUGE_PAGE, pages: ram.pages, flags: flags.address,
        blocktime: false, readahead: 64, zeroSrc: zero.base,
      });
      // one sweep of the 4 KiB guest pages of huge pages 1 and 2
      vcpus = await VcpuSet.create(ram, 1, parseWorkload('sweep,start=2M,end=6M,sweeps=1', ram.bytes));
      await vcpus.whenDone({ timeoutMs: 20_000 });
      // the vCPU runs on once woken; the fault thread counts the placement just after its ioctl
      for (const t0 = Date.now(); ch.stat(FaultThreadStat.ZeroPlaced) < 1 && Date.now() - t0 < 2000;) await new Promise((r) => setTimeout(r, 5));
      expect(asked).toEqual([2]); // page 1 was known zero; read-ahead is none with one page a run
      expect([ch.stat(FaultThreadStat.LocalZero), ch.stat(FaultThreadStat.ZeroPlaced), ch.stat(FaultThreadStat.Requests)]).toEqual([1, 1, 1]);
      expect(ch.state).toBe('running');
    } finally {
      await vcpus?.stop();
      ch?.dispose();
      peer.destroy();
      uffd.close();
      zero.dispose();
      flags.free();
      ram.dispose();
    }
  });

  test('-mem-prealloc populates every huge page at start; a discard empties pages; unmapping gives them back', () => {
    const before = freeHugePages();
    const ram = GuestRam.create(8 * MiB, backend({ prealloc: true }));
    try {
      expect(ram.pageSize).toBe(HUGE_PAGE);
      expect(before - freeHugePages()).toBe(4);
      ram.windows.copyIn(1, Uint8Array.of(7), 0, 1);
      ram.discard(1, 1); // private: MADV_DONTNEED
      expect(ram.windows.isZero(0, 8 * MiB)).toBe(true);
    } finally {
      ram.dispose();
    }
    expect(freeHugePages()).toBe(before);
  });

  test('share=on: a discard punches the page out of the file (MADV_REMOVE): zero again, its huge page back in the pool', () => {
    const before = freeHugePages();
    const ram = GuestRam.create(8 * MiB, backend({ share: true, prealloc: true }));
    try {
      expect(before - freeHugePages()).toBe(4);
      ram.windows.copyIn(2, Uint8Array.of(9), 0, 1);
      ram.discard(2, 1);
      expect(before - freeHugePages()).toBe(3);
      expect(ram.windows.isZero(2, HUGE_PAGE)).toBe(true);
    } finally {
      ram.dispose();
    }
    expect(freeHugePages()).toBe(before);
  });

  test.each([
    ['a path off hugetlbfs', { memPath: '/tmp' }, 8 * MiB, /^path not on HugeTLBFS: \/tmp \(mem-path must be a directory on a hugetlbfs mount/],
    ['a path that does not exist', { memPath: '/nonexistent-hugetlbfs' }, 8 * MiB, /^failed to get page size of file \/nonexistent-hugetlbfs: No such file or directory/],
    ['less than one page', {}, 1 * MiB, /^memory size 0x100000 must be equal to or larger than page size 0x200000$/],
    ['no page multiple', {}, 3 * MiB, /^backend memory size must be multiple of 0x200000 /],
  ])('QEMU\'s error for %s', (_what, extra, bytes, re) => {
    expect(() => GuestRam.create(bytes, backend(extra as Partial<MemoryBackend>))).toThrow(re);
  });

  test('a mount of 1 GiB pages is refused, saying why', () => {
    const m = mountHugetlbfs('1G');
    try {
      expect(() => GuestRam.create(2 ** 30, backend({ memPath: m.dir })))
        .toThrow(/has huge pages of 1024 MiB: this engine takes pages up to 2 MiB \(mount hugetlbfs with -o pagesize=2M\)$/);
    } finally {
      m.unmount();
    }
  });

  test('too few free huge pages: QEMU\'s mmap error, with what the pool holds', () => {
    const pages = freeHugePages() + 64;
    expect(() => GuestRam.create(pages * HUGE_PAGE, backend()))
      .toThrow(new RegExp(`^unable to map backing store for guest RAM: Cannot allocate memory \\(guest RAM needs ${pages}; \\d+ of \\d+ huge pages of 2048 kB are free and unreserved: raise /proc/sys/vm/nr_hugepages\\)$`));
  });

  test('the command line: a VM that cannot map its RAM says why and exits 1', () => {
    const r = spawnSync(process.execPath, [cli, '-m', '8M', '-object', `memory-backend-file,id=m0,mem-path=/tmp,size=8M`,
      '-machine', 'memory-backend=m0', '-monitor', 'none'], { encoding: 'utf8', timeout: 30000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/path not on HugeTLBFS: \/tmp/);
  });

  test('postcopy run on a path off hugetlbfs: both VMs refuse at start, the run says why and ends at once', () => {
    const r = spawnSync(process.execPath, [cli, 'run', '-m', '64M', '-mem-path', '/tmp', '--warm', '0'], { encoding: 'utf8', timeout: 15000 });
    expect(r.error).toBeUndefined(); // not killed by the timeout: nothing waits for a VM that died
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^postcopy run: the VM process exited \(status 1\) before it was ready: postcopy: path not on HugeTLBFS: \/tmp/);
  });

  test('the lab: `migrate` with no URI starts a destination on the same hugetlbfs backend', () => {
    const r = spawnSync(process.execPath, [cli, '-m', '16M', '-mem-path', hp!.dir, '-smp', '1', '-workload', 'sweep,end=12M',
      '-e', 'migrate_set_capability postcopy-ram on; migrate; migrate_start_postcopy; migrate_wait; info migrate'],
    { encoding: 'utf8', timeout: 60000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Status: \t\tcompleted$/m);
    expect(r.stdout).toMatch(/^ {2}Sizes: \t\tpagesize=2 MiB, total=16 MiB$/m);
  });

  test('a 4 KiB destination refuses a hugepage source: both sides fail naming both page sizes', async () => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const dst = await lab.vm('dst', ['-m', '8M', '-smp', '1', '-incoming', uri]);
    const src = await lab.vm('src', ['-m', '8M', '-mem-path', hp!.dir, '-smp', '1']);
    await src.qmp.execute('migrate', { uri });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status]).toEqual(['failed', 'failed']);
    for (const side of [s, d]) expect(side['error-desc']).toMatch(/page size mismatch: the source uses 2097152, this VM 4096/);
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running' }); // the guest stays where it was
  });
});
