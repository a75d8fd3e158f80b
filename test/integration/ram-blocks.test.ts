// Several RAM blocks (-object memory-backend-*,id=ID,size=... with -numa
// node,memdev=ID repeated) between two real VM processes: a postcopy
// migration whose guest writes every block, and one whose workload targets
// one block (the block key), end with every page identical on both sides
// (0 differing digests); `info ramblock` prints QEMU's table of all blocks;
// a destination whose blocks differ refuses with QEMU's text naming the
// block, on both sides, and the guest stays on the source; `postcopy run`
// passes the blocks to both of its processes. The same with two
// blocks of 2 MiB huge pages on hugetlbfs (pages reserved for this file,
// test/helpers/hugepages.ts), and with a hugetlbfs block beside a 4 KiB one
// (mixed page sizes: 4 KiB pages are the unit, a huge page moves whole).
import { Lab, setCaps, waitStatus, digest, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { requireHugePages, HUGE_PAGE } from '../helpers/hugepages.js';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cli, ensureBuilt } from '../helpers/cli.js';
import type { VmProcess } from '../../src/migration/local-destination.js';
import type { MigrationInfo } from '../../src/migration/api.js';

const uffd = requireUffd();
const run = uffd ? describe : describe.skip;
/** a source's and a destination's two blocks of 8 MiB (16 huge pages), with room */
const hp = uffd ? requireHugePages(24) : null;
const testHuge = hp ? test : test.skip;
afterAll(() => hp?.release());

/** -object/-numa options of the blocks `id=size[:mem-path]` */
function blocks(...specs: string[]): string[] {
  return specs.flatMap((s) => {
    const [id, rest] = s.split('=');
    const [size, path] = rest.split(':');
    const obj = path ? `memory-backend-file,id=${id},mem-path=${path},size=${size}` : `memory-backend-ram,id=${id},size=${size}`;
    return ['-object', obj, '-numa', `node,memdev=${id}`];
  });
}

/** a postcopy migration from `src` to `dst` (listening at `uri`), to its end on both sides; with `push`
 *  (max-postcopy-bandwidth) at once, while the workload runs, so that the destination's vCPUs fault */
async function postcopy(src: VmProcess, dst: VmProcess, uri: string, o: { push?: number; readahead?: number } = {}): Promise<MigrationInfo> {
  await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
  await setCaps(src, ['postcopy-ram']);
  if (o.readahead !== undefined) await dst.qmp.execute('migrate-set-parameters', { 'x-postcopy-readahead': o.readahead });
  if (o.push !== undefined) await src.qmp.execute('migrate-set-parameters', { 'max-postcopy-bandwidth': o.push });
  else await new Promise((r) => setTimeout(r, 300)); // the workload writes pages
  await src.qmp.execute('migrate', { uri });
  await src.qmp.execute('migrate-start-postcopy');
  const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never, 60000), waitStatus(dst, TERMINAL as never, 60000)]);
  expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
  return d;
}

/** the digests of both VMs (the guest settled: destination vCPUs done or paused), the pages that differ,
 *  and the pages the guest wrote (a digest other than the most common one, an untouched page's) */
async function compare(src: VmProcess, dst: VmProcess): Promise<{ pages: number; differ: number; written: number[] }> {
  const [a, b] = await Promise.all([digest(src), digest(dst)]);
  const count = new Map<string, number>();
  for (const h of a) count.set(h, (count.get(h) ?? 0) + 1);
  const untouched = [...count.entries()].sort((x, y) => y[1] - x[1])[0][0];
  return { pages: a.length, differ: a.filter((h, i) => h !== b[i]).length, written: a.map((h, i) => (h !== untouched ? i : -1)).filter((i) => i >= 0) };
}

/** a bounded sweep ends with every page of its range holding the same byte (the sweep count), wherever
 *  the switchover came: waits until the destination's pages in [first, first+count) are all alike */
async function sweptAlike(vm: VmProcess, first: number, count: number, timeoutMs = 30000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const d = await digest(vm, first, count);
    if (new Set(d).size === 1) return d[0];
    if (Date.now() > deadline) throw new Error(`pages still differ after ${timeoutMs} ms: ${new Set(d).size} digests`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

run('several RAM blocks', () => {
  let lab: Lab;
  beforeAll(() => ensureBuilt());
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('postcopy of two blocks, the guest writing both: every page identical; info ramblock lists both', async () => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const common = [...blocks('m0=16M', 'm1=8M'), '-smp', '2', '-workload', 'random,seed=5,accesses=2000'];
    const dst = await lab.vm('dst', [...common, '-incoming', uri, '-S']);
    const src = await lab.vm('src', common);
    await postcopy(src, dst, uri);
    const r = await compare(src, dst);
    expect(r).toMatchObject({ pages: 6144, differ: 0 });
    // the workload wrote pages of both blocks (m0: pages 0..4095, m1: 4096..6143)
    expect(r.written.filter((p) => p < 4096).length).toBeGreaterThan(500);
    expect(r.written.filter((p) => p >= 4096).length).toBeGreaterThan(250);
    const table = await dst.qmp.execute<string>('human-monitor-command', { 'command-line': 'info ramblock' });
    expect(table).toMatch(/^\s+Block Name\s+PSize\s+Offset\s+Used\s+Total\s+HVA\s+RO$/m);
    expect(table).toMatch(/^\s+m0\s+4 KiB\s+0x0000000000000000\s+0x0000000001000000\s+0x0000000001000000\s+0x[0-9a-f]{16}\s+rw$/m);
    expect(table).toMatch(/^\s+m1\s+4 KiB\s+0x0000000001000000\s+0x0000000000800000\s+0x0000000000800000\s+0x[0-9a-f]{16}\s+rw$/m);
  });

  test('the workload key block=ID writes only that block, and it migrates whole', async () => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const common = [...blocks('m0=8M', 'm1=8M', 'm2=4M'), '-smp', '1', '-workload', 'sweep,block=m1,start=1M,end=7M,sweeps=2'];
    const dst = await lab.vm('dst', [...common, '-incoming', uri]);
    const src = await lab.vm('src', common);
    await postcopy(src, dst, uri);
    const { differ, written } = await compare(src, dst);
    expect(differ).toBe(0);
    expect(written.length).toBe(6 * 256); // pages [1M, 7M) of m1: guest pages 2304..3839
    expect([written[0], written[written.length - 1]]).toEqual([2048 + 256, 2048 + 7 * 256 - 1]);
  });

  test('a sweep across three blocks migrates while it runs (read-ahead on): it faults in every block, and ends with every page alike', async () => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const common = [...blocks('m0=4M', 'm1=2M', 'm2=4M'), '-smp', '1', '-workload', 'sweep,sweeps=100000'];
    const dst = await lab.vm('dst', [...common, '-incoming', uri]);
    const src = await lab.vm('src', common);
    const d = await postcopy(src, dst, uri, { push: 4 * 2 ** 20, readahead: 16 });
    expect(d['x-blocktime']!.faults).toBeGreaterThan(0);
    // 100000 sweeps: every page's first byte 100000 % 256 in the end, in every block (a page lost or
    // placed twice on the way would count from another value)
    await sweptAlike(dst, 0, 2560);
  }, 120000);

  test('postcopy run gives both of its processes the same blocks; the sweep in one block faults there', () => {
    const r = spawnSync(process.execPath, [cli, 'run', ...blocks('m0=16M', 'm1=16M'), '-smp', '1', '-workload', 'sweep,block=m1,end=12M',
      '--warm', '0.3', '--postcopy-after', '0.1', '--max-postcopy-bandwidth', '8388608', '--json'], { encoding: 'utf8', timeout: 60000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { source: Record<string, any>; destination: Record<string, any> };
    expect([out.source.status, out.destination.status]).toEqual(['completed', 'completed']);
    expect(out.source.ram.total).toBe(32 * 2 ** 20);
    expect(out.destination['x-blocktime'].faults).toBeGreaterThan(0);
  });

  test('a destination whose blocks differ refuses, on both sides, naming the block in QEMU\'s words', async () => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const dst = await lab.vm('dst', [...blocks('m0=8M', 'm1=4M'), '-smp', '1', '-incoming', uri]);
    const src = await lab.vm('src', [...blocks('m0=8M', 'm1=8M'), '-smp', '1']);
    await src.qmp.execute('migrate', { uri });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status]).toEqual(['failed', 'failed']);
    for (const side of [s, d]) expect(side['error-desc']).toMatch(/Length mismatch: m1: 0x800000 in != 0x400000: Invalid argument/);
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running' });

    const uri2 = `unix:${lab.path('mig2.sock')}`;
    const other = await lab.vm('dst2', [...blocks('m0=8M', 'mX=8M'), '-smp', '1', '-incoming', uri2]);
    await src.qmp.execute('migrate', { uri: uri2 });
    const [s2, d2] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(other, TERMINAL as never)]);
    expect([s2.status, d2.status]).toEqual(['failed', 'failed']);
    expect(d2['error-desc']).toMatch(/Unknown ramblock "m1", cannot accept migration/);
  });

  // on hugetlbfs
  testHuge('postcopy of two blocks of 2 MiB pages: every page identical', async () => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const common = [...blocks(`h0=8M:${hp!.dir}`, `h1=8M:${hp!.dir}`), '-smp', '2', '-workload', 'random,seed=9,accesses=4000'];
    const dst = await lab.vm('dst', [...common, '-incoming', uri]);
    const src = await lab.vm('src', common);
    await postcopy(src, dst, uri);
    const r = await compare(src, dst);
    expect(r).toMatchObject({ pages: 8, differ: 0 }); // one digest per 2 MiB page
    const info = await dst.queryMigrate();
    expect(info.ram!['page-size']).toBe(HUGE_PAGE);
  });

  testHuge.each([['before', 'h0', 'm1'], ['after', 'm0', 'h1']])('a hugetlbfs block %s a 4 KiB block: postcopy, every page identical, huge pages moved whole', async (_, first, second) => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const spec = (id: string): string => (id.startsWith('h') ? `${id}=8M:${hp!.dir}` : `${id}=8M`);
    const common = [...blocks(spec(first), spec(second)), '-smp', '2', '-workload', 'random,seed=3,accesses=3000'];
    const dst = await lab.vm('dst', [...common, '-incoming', uri, '-S']);
    const src = await lab.vm('src', common);
    await postcopy(src, dst, uri);
    const r = await compare(src, dst);
    expect(r).toMatchObject({ pages: 4096, differ: 0 }); // 16 MiB of 4 KiB pages: the smallest page is the unit
    const huge = first.startsWith('h') ? [0, 2048] : [2048, 4096];
    expect(r.written.filter((p) => p >= huge[0] && p < huge[1]).length).toBeGreaterThan(100); // the guest wrote both blocks
    expect(r.written.filter((p) => p < huge[0] || p >= huge[1]).length).toBeGreaterThan(100);
    const table = await dst.qmp.execute<string>('human-monitor-command', { 'command-line': 'info ramblock' });
    expect(table).toMatch(new RegExp(`^\\s+h[01]\\s+2 MiB\\s+0x0000000000${first.startsWith('h') ? '0' : '8'}00000\\s+0x0000000000800000`, 'm'));
    expect(table).toMatch(new RegExp(`^\\s+m[01]\\s+4 KiB\\s+0x0000000000${first.startsWith('h') ? '8' : '0'}00000\\s+0x0000000000800000`, 'm'));
    const d = await dst.queryMigrate();
    expect(d.ram!['page-size']).toBe(4096);
  });

  testHuge('a sweep across a hugetlbfs block and a 4 KiB block migrates while it runs: faults in both, every page alike at the end', async () => {
    const uri = `unix:${lab.path('mig.sock')}`;
    const common = [...blocks(`h0=8M:${hp!.dir}`, 'm1=8M'), '-smp', '1', '-workload', 'sweep,sweeps=100000'];
    const dst = await lab.vm('dst', [...common, '-incoming', uri]);
    const src = await lab.vm('src', common);
    const trace = lab.path('trace.jsonl');
    await dst.qmp.execute('migrate-set-parameters', { 'x-blocktime-trace': trace });
    const d = await postcopy(src, dst, uri, { push: 4 * 2 ** 20 });
    expect(d['x-blocktime']!.faults).toBeGreaterThan(0);
    await sweptAlike(dst, 0, 4096, 60000);
    // the vCPU faulted in both blocks (guest RAM starts at h0's HVA: h0 is its first 8 MiB)
    const table = await dst.qmp.execute<string>('human-monitor-command', { 'command-line': 'info ramblock' });
    const base = Number(/^\s+h0\s.*\s(0x[0-9a-f]{16})\s+rw$/m.exec(table)![1]);
    const faults = readFileSync(trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { ev?: string; addr?: number })
      .filter((e) => e.ev === 'fault').map((e) => e.addr! - base);
    expect(faults.filter((a) => a >= 0 && a < 8 * 2 ** 20).length).toBeGreaterThan(0);
    expect(faults.filter((a) => a >= 8 * 2 ** 20 && a < 16 * 2 ** 20).length).toBeGreaterThan(0);
  }, 150000);

  testHuge('a hugetlbfs block after a 4 KiB block whose size is no multiple of 2 MiB: refused at start, saying what to change', () => {
    const r = spawnSync(process.execPath, [cli, ...blocks('m0=3M', `h1=8M:${hp!.dir}`), '-monitor', 'none'], { encoding: 'utf8', timeout: 30000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/RAM block h1 has pages of 2097152 bytes, and the blocks before it add up to 0x300000 bytes, no multiple of that: give them sizes that are multiples of 2M, or give this block first/);
  });
});
