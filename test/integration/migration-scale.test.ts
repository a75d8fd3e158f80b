// An 8 GiB guest with 64 vCPUs migrates through postcopy, as real VM
// processes over TCP loopback, read-ahead off and on (issue 15, "Scale").
// Each vCPU sweeps its own 4 MiB slice of the first 256 MiB a fixed number of
// times (sweep,split=on,sweeps=N): it goes on where the source's stopped, so
// once every vCPU is done every page of the slices holds N mod 256 in its
// first byte whatever the timing, and the other 2 million pages are zero.
// The destination's pages are checked against that through
// x-query-ram-digest, all of guest RAM, in 1 GiB ranges: 0 differing pages.
// The destination's vCPUs really fault (the switch comes while the source's
// still sweep). Guest RAM is MAP_NORESERVE: only the swept 256 MiB cost memory.
// Needs a fresh `npx tsc -p .` (the VMs run from dist/).
import { Lab, setCaps, waitStatus, digest, firstByteTable, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';
import { freeTcpPort } from '../../src/migration/local-destination.js';
import type { MigrationInfo } from '../../src/migration/api.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PAGE = 4096;
const PAGES = (8 * GiB) / PAGE;
const SWEPT = (256 * MiB) / PAGE;
const SWEEPS = 20000;
const COMMON = ['-m', '8G', '-smp', '64', '-workload', `sweep,end=256M,split=on,sweeps=${SWEEPS}`];
const run = requireUffd() ? describe : describe.skip;

/** how many of pages [first, first+count) differ from what the sweeps leave */
async function differing(vm: Parameters<typeof digest>[0], first: number, count: number): Promise<number> {
  const t = firstByteTable();
  const got = await digest(vm, first, count);
  expect(got.length).toBe(count);
  let bad = 0;
  for (let i = 0; i < count; i++) if (t.get(got[i]) !== (first + i < SWEPT ? SWEEPS & 0xff : 0)) bad++;
  return bad;
}

run('an 8 GiB guest with 64 vCPUs', () => {
  let lab: Lab;
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test.each([0, 64])('postcopy over TCP loopback, read-ahead %i: completed, the vCPUs faulted, all 2097152 pages as the sweeps leave them', async (readahead) => {
    const uri = `tcp:127.0.0.1:${await freeTcpPort()}`;
    const dst = await lab.vm('dst', [...COMMON, '-incoming', uri]);
    const src = await lab.vm('src', COMMON);
    await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
    await setCaps(src, ['postcopy-ram']);
    await dst.qmp.execute('migrate-set-parameters', { 'x-postcopy-readahead': readahead });
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1024 * MiB, 'downtime-limit': 0 });
    await src.qmp.execute('migrate', { uri });
    await waitStatus(src, ['active']);
    await new Promise((r) => setTimeout(r, 300)); // part of the precopy
    await src.qmp.execute('migrate-start-postcopy');
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never, 120_000), waitStatus(dst, TERMINAL as never, 120_000)]);
    expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
    expect(s.ram!.total).toBe(8 * GiB);
    expect(s.ram!.remaining).toBe(0);
    expect(s.ram!['postcopy-bytes']).toBeGreaterThan(0);
    const bt = (d as MigrationInfo)['x-blocktime']!;
    expect(bt.faults).toBeGreaterThan(64); // the destination's vCPUs went on sweeping there
    expect(bt.vcpus.length).toBe(64);
    // what feeding the blocktime context cost (bench scale's per-event figure): every fault came through the ring
    expect(bt.feed!.events).toBeGreaterThanOrEqual(bt.faults);
    expect(bt.feed!.drains).toBeGreaterThan(0);
    expect(bt.feed!.cpuNs).toBeGreaterThan(0);
    // the vCPUs finish their sweeps on the destination: the slices settle on SWEEPS mod 256
    const deadline = Date.now() + 60_000;
    let left = await differing(dst, 0, SWEPT);
    while (left > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      left = await differing(dst, 0, SWEPT);
    }
    expect(left).toBe(0);
    const windowPages = GiB / PAGE;
    for (let first = 0; first < PAGES; first += windowPages) expect(await differing(dst, first, windowPages)).toBe(0);
  }, 240_000);
});
