// Guests over 4 GiB, as real VM processes (node dist/src/cli.js over QMP):
// one Buffer cannot span their RAM (Node caps it at 4 GiB), and a 5 GiB
// destination used to abort in its constructor. 5 GiB destinations and
// sources start and answer their monitors, and migrations of a 5 GiB guest
// whose workload writes pages on both sides of the 4 GiB boundary complete
// over TCP loopback with the pages identical on both sides: postcopy after
// two precopy rounds (pages re-sent into a registered destination; every
// page compared), and precopy only (an unregistered destination written in
// place; the pages around each 1 GiB window boundary compared). Guest RAM is
// MAP_NORESERVE: only the 64 MiB the workload touches cost memory.
// Needs a fresh `npx tsc -p .` (the VMs run from dist/).
import { Lab, setCaps, waitStatus, digest, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { freeTcpPort, type VmProcess } from '../../src/migration/local-destination.js';
import type { MigrationInfo } from '../../src/migration/api.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PAGE = 4096;
const PAGES = (5 * GiB) / PAGE;
/** the workload's range, [4 GiB - 32 MiB, 4 GiB + 32 MiB), in pages */
const FIRST = (4 * GiB - 32 * MiB) / PAGE;
const END = (4 * GiB + 32 * MiB) / PAGE;
const COMMON = ['-m', '5G', '-smp', '1', '-workload', 'random,start=4064M,end=4128M,seed=7'];
/** [first page, page count]: the written range and 256 pages either side, 256 pages either side
 *  of every 1 GiB window boundary, and the first and last 256 pages */
const AROUND_BOUNDARIES: Array<[number, number]> = [
  [0, 256], [FIRST - 256, END - FIRST + 512], [PAGES - 256, 256],
  ...[1, 2, 3].map((g): [number, number] => [(g * GiB) / PAGE - 256, 512]),
];
const run = requireUffd() ? describe : describe.skip;

/** a 5 GiB destination (paused after the migration, -S) and source, both answering */
async function startPair(lab: Lab, uri: string): Promise<[VmProcess, VmProcess]> {
  const dst = await lab.vm('dst', [...COMMON, '-incoming', uri, '-S']);
  expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'inmigrate', running: false });
  const src = await lab.vm('src', COMMON);
  expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
  return [dst, src];
}

async function bothDone(src: VmProcess, dst: VmProcess): Promise<MigrationInfo> {
  const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never, 120_000), waitStatus(dst, TERMINAL as never, 120_000)]);
  expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
  expect(s.ram!.total).toBe(5 * GiB);
  expect(s.ram!.remaining).toBe(0);
  expect(s.ram!.normal + s.ram!.duplicate).toBeGreaterThanOrEqual(PAGES);
  return s;
}

/** Nothing lost (the source stopped at the switchover, the destination stays
 *  paused): the destination's pages in `ranges` against the source's written
 *  range and its untouched pages (all zero, like its last one); and the
 *  workload really wrote on both sides of 4 GiB (a page's byte wraps to 0 one
 *  time in 256). */
async function expectSameRam(src: VmProcess, dst: VmProcess, ranges: Array<[number, number]>): Promise<void> {
  const [written, [zero]] = await Promise.all([digest(src, FIRST, END - FIRST), digest(src, PAGES - 1)]);
  const expected = (p: number): string => (p >= FIRST && p < END ? written[p - FIRST] : zero);
  for (const [first, count] of ranges) {
    const got = await digest(dst, first, count);
    expect(got.length).toBe(count);
    expect(got.filter((h, i) => h !== expected(first + i)).length).toBe(0);
  }
  const half = (END - FIRST) / 2;
  const nonZero = (from: number, to: number): number => written.slice(from, to).filter((h) => h !== zero).length;
  expect(nonZero(0, half)).toBeGreaterThan(half * 0.9);
  expect(nonZero(half, 2 * half)).toBeGreaterThan(half * 0.9);
}

run('a 5 GiB guest', () => {
  let lab: Lab;
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('postcopy after two precopy rounds over TCP loopback: both start and answer, completed, all 1310720 pages identical', async () => {
    const uri = `tcp:127.0.0.1:${await freeTcpPort()}`;
    const [dst, src] = await startPair(lab, uri);
    await setCaps(dst, ['postcopy-ram']);
    await setCaps(src, ['postcopy-ram']);
    // downtime-limit 0: the precopy never converges on its own
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1024 * MiB, 'downtime-limit': 0 });
    await new Promise((r) => setTimeout(r, 300)); // the workload writes its pages
    await src.qmp.execute('migrate', { uri });
    // the second round re-sends the pages written since the first: written in place on the destination
    for (let info = await waitStatus(src, ['active']); (info.ram?.['dirty-sync-count'] ?? 0) < 2; info = await src.queryMigrate()) {
      if (info.status !== 'active') throw new Error(`the precopy ended early: ${JSON.stringify(info)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await src.qmp.execute('migrate-start-postcopy');
    const s = await bothDone(src, dst);
    expect(s.ram!['precopy-bytes']).toBeGreaterThan(1.5 * 64 * MiB); // the range went twice
    expect(s.ram!['postcopy-bytes']).toBeGreaterThan(32 * MiB); // the pages written since the last round
    await expectSameRam(src, dst, [[0, PAGES]]);
  }, 180_000);

  test('precopy only over TCP loopback (the destination is not registered with userfaultfd): completed, pages around every window boundary identical', async () => {
    const uri = `tcp:127.0.0.1:${await freeTcpPort()}`;
    const [dst, src] = await startPair(lab, uri);
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1024 * MiB, 'downtime-limit': 2000 });
    await new Promise((r) => setTimeout(r, 300));
    await src.qmp.execute('migrate', { uri });
    const s = await bothDone(src, dst);
    expect(s.ram!['postcopy-bytes']).toBe(0);
    expect(s.ram!.normal).toBeGreaterThan(0);
    await expectSameRam(src, dst, AROUND_BOUNDARIES);
    await expect(dst.qmp.execute('x-query-ram-digest', { 'first-page': PAGES })).rejects.toThrow(/first page 1310720 is outside guest RAM/);
    await expect(dst.qmp.execute('x-query-ram-digest', { 'first-page': PAGES - 1, 'page-count': 2 })).rejects.toThrow(/go beyond guest RAM/);
  }, 180_000);
});
