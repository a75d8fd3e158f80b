// Several RAM blocks (-object memory-backend-*,id=ID,size=... with -numa
// node,memdev=ID repeated) between two real VM processes: a postcopy
// migration whose guest writes every block, and one whose workload targets
// one block (the block key), end with every page identical on both sides
// (0 differing digests); `info ramblock` prints QEMU's table of all blocks;
// a destination whose blocks differ refuses with QEMU's text naming the
// block, on both sides, and the guest stays on the source; `postcopy run`
// passes the blocks to both of its processes. The same with two
// blocks of 2 MiB huge pages on hugetlbfs (pages reserved for this file,
// test/helpers/hugepages.ts); a hugetlbfs block beside a 4 KiB one is refused
// at start (mixed page sizes are not supported yet).
import { Lab, setCaps, waitStatus, digest, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { requireHugePages, HUGE_PAGE } from '../helpers/hugepages.js';
import { spawnSync } from 'node:child_process';
import { cli, ensureBuilt } from '../helpers/cli.js';
import type { VmProcess } from '../../src/migration/local-destination.js';

const uffd = requireUffd();
const run = uffd ? describe : describe.skip;

/** -object/-numa options of the blocks `id=size[:mem-path]` */
function blocks(...specs: string[]): string[] {
  return specs.flatMap((s) => {
    const [id, rest] = s.split('=');
    const [size, path] = rest.split(':');
    const obj = path ? `memory-backend-file,id=${id},mem-path=${path},size=${size}` : `memory-backend-ram,id=${id},size=${size}`;
    return ['-object', obj, '-numa', `node,memdev=${id}`];
  });
}

/** a postcopy migration from `src` to `dst` (listening at `uri`), to its end on both sides */
async function postcopy(src: VmProcess, dst: VmProcess, uri: string): Promise<void> {
  await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
  await setCaps(src, ['postcopy-ram']);
  await new Promise((r) => setTimeout(r, 300)); // the workload writes pages
  await src.qmp.execute('migrate', { uri });
  await src.qmp.execute('migrate-start-postcopy');
  const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
  expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
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

  test('postcopy run gives both of its processes the same blocks; the sweep in one block faults there', () => {
    const r = spawnSync(process.execPath, [cli, 'run', ...blocks('m0=16M', 'm1=16M'), '-smp', '1', '-workload', 'sweep,block=m1,end=12M',
      '--warm', '0.3', '--postcopy-after', '0.1', '--json'], { encoding: 'utf8', timeout: 60000 });
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
});

/** a source's and a destination's two blocks of 8 MiB (16 huge pages), with room */
const hp = uffd ? requireHugePages(24) : null;
const runHuge = hp ? describe : describe.skip;
afterAll(() => hp?.release());

runHuge('several RAM blocks on hugetlbfs', () => {
  let lab: Lab;
  beforeAll(() => ensureBuilt());
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('postcopy of two blocks of 2 MiB pages: every page identical', async () => {
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

  test('a hugetlbfs block beside a 4 KiB block: the VM refuses at start, naming both page sizes (not supported yet)', () => {
    const r = spawnSync(process.execPath, [cli, ...blocks(`h0=8M:${hp!.dir}`, 'm1=8M'), '-monitor', 'none'], { encoding: 'utf8', timeout: 30000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/RAM blocks of different page sizes \(h0: 2M, m1: 4K\): this engine migrates several RAM blocks of one page size/);
  });
});
