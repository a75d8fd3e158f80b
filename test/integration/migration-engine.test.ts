// The engine core in one process: an OutgoingMigration and an
// IncomingMigration over a real unix socket / TCP loopback, guest RAM in real
// mmap'ed memory, the destination placing postcopy pages with userfaultfd.
// vCPUs here are a paused set (no guest code runs), so RAM must arrive
// bit-exact; running vCPUs are covered by the process-level tests.
import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { NativeMapping } from '../../src/native/memory.js';
import { OutgoingMigration } from '../../src/migration/outgoing.js';
import { IncomingMigration } from '../../src/migration/incoming.js';
import { MigrationStatusMachine } from '../../src/migration/status.js';
import { Parameters } from '../../src/migration/parameters.js';
import { parseMigrationUri } from '../../src/migration/uri.js';
import { VCPU_STATE_BYTES } from '../../src/migration/wire.js';
import { RamBlocks } from '../../src/vm/ram-blocks.js';
import type { GuestMemory, VcpuControl } from '../../src/migration/guest.js';
import type { MigrationStatus } from '../../src/migration/api.js';
import { requireUffd } from '../helpers/uffd-available.js';
import koffi from 'koffi';

const memchr = koffi.load('libc.so.6').func('uintptr_t memchr(uintptr_t s, int c, size_t n)') as unknown as {
  async(s: number, c: number, n: number, cb: (err: unknown, res: number | bigint) => void): void;
};
/** memchr on a koffi worker thread: the address of the first byte `c` in the page at `addr`, or 0 */
function scan(addr: number, c: number): Promise<number> {
  return new Promise((resolve, reject) => memchr.async(addr, c, PS, (e, r) => (e ? reject(e) : resolve(Number(r)))));
}

const PS = 4096;

/** guest RAM for the engine; whole() is one Buffer over all of it, which these
 *  small guests allow (they fit one MemoryWindows window) */
function guest(bytes: number): GuestMemory & { map: NativeMapping; whole(): Buffer } {
  const map = NativeMapping.create(bytes);
  return {
    map, base: map.address, bytes, pageSize: PS, blocks: RamBlocks.single('pc.ram', bytes, PS), blockTable: null, contents: map.windows,
    whole: () => map.windows.view(0, bytes), discard: (o, l) => map.discard(o, l),
  };
}

/** vCPUs that never run: state is a byte pattern per vCPU */
class PausedVcpus implements VcpuControl {
  state: Buffer;
  resumed = 0;
  constructor(readonly count: number, fill: number) { this.state = Buffer.alloc(count * VCPU_STATE_BYTES, fill); }
  threadIds(): number[] { return Array.from({ length: this.count }, (_, i) => 100000 + i); }
  async pause(): Promise<void> { /* never running */ }
  resume(): void { this.resumed++; }
  saveStates(out: Buffer, pos: number): void { this.state.copy(out, pos); }
  loadStates(buf: Buffer, pos: number): void { buf.copy(this.state, 0, pos, pos + this.state.length); }
  kernelSample(i: number): { t: number; sample: string } { return { t: 0, sample: `vCPU ${i} of this test never runs` }; }
  yieldCpu(): void { /* nothing runs */ }
  accessStamps(): null { return null; }
}

function digest(b: Buffer): string { return createHash('sha256').update(b).digest('hex'); }

function fillPattern(b: Buffer, seed: number): void {
  // some pages zero, some data, some data with zeros at the start
  for (let p = 0; p < b.length / PS; p++) {
    if ((p * 7 + seed) % 5 === 0) continue; // zero page
    b.fill((p + seed) & 0xff, p * PS + ((p % 3) * 100), (p + 1) * PS);
    b[p * PS + 4095] = 1;
  }
}

function waitStatus(ev: EventEmitter, want: MigrationStatus[], timeoutMs = 30000): Promise<MigrationStatus> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${want.join('/')}`)), timeoutMs);
    const on = (s: MigrationStatus): void => { if (want.includes(s)) { clearTimeout(t); ev.off('migration', on); resolve(s); } };
    ev.on('migration', on);
  });
}

interface Pair {
  src: OutgoingMigration; dst: IncomingMigration; srcEv: EventEmitter; dstEv: EventEmitter;
  srcStatus: MigrationStatusMachine; dstStatus: MigrationStatusMachine; srcRam: ReturnType<typeof guest>; dstRam: ReturnType<typeof guest>;
  srcCpus: PausedVcpus; dstCpus: PausedVcpus; srcParams: Parameters; dstParams: Parameters; runStates: string[];
}

function pair(bytes: number, vcpus: number, opts: { dstBytes?: number; dstVcpus?: number; postcopy?: boolean } = {}): Pair {
  const srcEv = new EventEmitter(); const dstEv = new EventEmitter();
  const srcStatus = new MigrationStatusMachine(srcEv); const dstStatus = new MigrationStatusMachine(dstEv);
  const srcRam = guest(bytes); const dstRam = guest(opts.dstBytes ?? bytes);
  const srcCpus = new PausedVcpus(vcpus, 0x5a); const dstCpus = new PausedVcpus(opts.dstVcpus ?? vcpus, 0);
  const srcParams = new Parameters();
  const dstParams = new Parameters();
  const runStates: string[] = [];
  const src = new OutgoingMigration({
    ram: srcRam, vcpus: srcCpus, workload: 'idle', status: srcStatus, params: srcParams, postcopy: opts.postcopy ?? false,
    setRunState: (s) => runStates.push(`src:${s}`), wasRunning: false,
  });
  const dst = new IncomingMigration({
    ram: dstRam, vcpus: dstCpus, workload: 'idle', status: dstStatus, params: dstParams, blocktimeEnabled: () => true,
    autostart: () => false, setRunState: (s) => runStates.push(`dst:${s}`), events: dstEv,
  });
  return { src, dst, srcEv, dstEv, srcStatus, dstStatus, srcRam, dstRam, srcCpus, dstCpus, srcParams, dstParams, runStates };
}

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pc-engine-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

const maybe = requireUffd() ? describe : describe.skip;

maybe('migration engine, one process', () => {
  test('precopy over a unix socket: converges, RAM and vCPU state arrive exactly; socket file is 0600', async () => {
    const P = pair(16 << 20, 2);
    fillPattern(P.srcRam.whole(), 1);
    const addr = parseMigrationUri(`unix:${join(dir, 'a.sock')}`);
    await P.dst.listen(addr);
    expect(statSync(join(dir, 'a.sock')).mode & 0o777).toBe(0o600);
    const done = Promise.all([waitStatus(P.srcEv, ['completed', 'failed']), waitStatus(P.dstEv, ['completed', 'failed'])]);
    P.src.start(addr);
    expect(await done).toEqual(['completed', 'completed']);
    expect(digest(P.dstRam.whole())).toBe(digest(P.srcRam.whole()));
    expect(P.dstCpus.state.equals(P.srcCpus.state)).toBe(true);
    const st = P.src.ramStats();
    expect(st.normal + st.duplicate).toBeGreaterThanOrEqual(4096);
    expect(st.duplicate).toBeGreaterThan(0);
    expect(st.remaining).toBe(0);
    expect(P.srcStatus.times().downtime).toBeGreaterThanOrEqual(0);
    expect(P.runStates).toContain('src:postmigrate');
    expect(P.runStates).toContain('dst:paused'); // -S
    await P.dst.close();
    P.srcRam.map.dispose(); P.dstRam.map.dispose();
  });

  test('postcopy over TCP loopback: discards pages written after they were sent, background push completes', async () => {
    const P = pair(32 << 20, 1, { postcopy: true });
    const sb = P.srcRam.whole();
    fillPattern(sb, 3);
    P.srcParams.set({ 'max-bandwidth': 16 << 20 }); // slow precopy so the switch lands mid-round
    await P.dst.listen(parseMigrationUri('tcp:127.0.0.1:0'));
    const addr = parseMigrationUri(P.dst.address()!);
    const seen: string[] = [];
    P.srcEv.on('migration', (s) => seen.push(s));
    const done = Promise.all([waitStatus(P.srcEv, ['completed', 'failed']), waitStatus(P.dstEv, ['completed', 'failed'])]);
    P.src.start(addr);
    await new Promise((r) => setTimeout(r, 600));
    // rewrite pages already sent (the first ones) and some not yet sent; the tracker sees these writes
    for (let p = 0; p < 64; p++) sb.fill(0xee, p * PS, p * PS + 10);
    sb.fill(0, 5 * PS, 6 * PS); // a data page that became zero
    sb.fill(0xdd, 8000 * PS, 8000 * PS + 1);
    P.srcParams.set({ 'max-bandwidth': 0 });
    P.src.requestPostcopy();
    expect(await done).toEqual(['completed', 'completed']);
    expect(seen).toEqual(['setup', 'active', 'postcopy-active', 'completed']);
    expect(digest(P.dstRam.whole())).toBe(digest(sb));
    expect(P.dstCpus.state.equals(P.srcCpus.state)).toBe(true);
    expect(P.src.ramStats()['postcopy-bytes']).toBeGreaterThan(0);
    expect(P.dst.discardedPages).toBeGreaterThan(0);
    await P.dst.close();
    P.srcRam.map.dispose(); P.dstRam.map.dispose();
  });

  test.each([0, 8])('a fault on a page not yet sent is served by the native threads while the background push stands still (read-ahead %i)', async (readahead) => {
    const P = pair(16 << 20, 1, { postcopy: true });
    P.dstParams.set({ 'x-postcopy-readahead': readahead });
    const sb = P.srcRam.whole();
    fillPattern(sb, 5);
    P.srcParams.set({ 'max-postcopy-bandwidth': 1 }); // after its first burst the background push stands still
    await P.dst.listen(parseMigrationUri('tcp:127.0.0.1:0'));
    const addr = parseMigrationUri(P.dst.address()!);
    const done = Promise.all([waitStatus(P.srcEv, ['completed', 'failed']), waitStatus(P.dstEv, ['completed', 'failed'])]);
    const switched = waitStatus(P.dstEv, ['postcopy-active']);
    P.src.start(addr);
    await waitStatus(P.srcEv, ['active']);
    while (P.src.ramStats().normal < 1) await new Promise((r) => setTimeout(r, 5));
    P.src.requestPostcopy();
    await switched;
    await new Promise((r) => setTimeout(r, 100)); // the burst is out
    const before = P.src.ramStats();
    expect(before.remaining).toBeGreaterThan(0);
    // a thread other than the event loop's reads pages near the end of RAM,
    // which the push has not reached: each read faults, and only the native
    // fault thread and page server can bring the page (this loop could not)
    const data = 4001; // filled with (4001 + 5) & 0xff from byte 200 on
    const zero = 4005; // a zero page
    expect(await scan(P.dstRam.base + data * PS, 166)).toBe(P.dstRam.base + data * PS + 200);
    // with read-ahead, 4002..4009 came with 4001: the zero page 4005 is in place, no fault asks for it
    expect(await scan(P.dstRam.base + zero * PS, 1)).toBe(0);
    const faulted = readahead === 0 ? 2 : 1;
    const after = P.src.ramStats();
    expect(after['postcopy-requests'] - before['postcopy-requests']).toBe(faulted);
    expect(after.normal + after.duplicate - before.normal - before.duplicate).toBe(readahead === 0 ? 2 : 1 + readahead);
    expect(after.duplicate - before.duplicate).toBeGreaterThanOrEqual(1); // 4005 went as ZERO
    expect(P.dst.ramStats()['postcopy-requests']).toBe(faulted);
    expect(P.src.requestsInFlight).toBe(0); // none had been sent
    P.srcParams.set({ 'max-postcopy-bandwidth': 0 }); // applies within 100 ms, though the limiter had asked for days
    expect(await done).toEqual(['completed', 'completed']);
    expect(digest(P.dstRam.whole())).toBe(digest(sb));
    const bt = P.dst.blocktimeReport()!;
    expect(bt['x-blocktime'].nonVcpuFaults).toBe(faulted); // the koffi worker thread is no vCPU
    await P.dst.close();
    P.srcRam.map.dispose(); P.dstRam.map.dispose();
  });

  test('with the background push held back, the page server sends every page: the push sees none left and the migration completes', async () => {
    const P = pair(4 << 20, 1, { postcopy: true });
    const sb = P.srcRam.whole();
    fillPattern(sb, 9);
    P.srcParams.set({ 'max-postcopy-bandwidth': 1 }); // the push never gets past its first burst
    await P.dst.listen(parseMigrationUri('tcp:127.0.0.1:0'));
    const done = Promise.all([waitStatus(P.srcEv, ['completed', 'failed']), waitStatus(P.dstEv, ['completed', 'failed'])]);
    const switched = waitStatus(P.dstEv, ['postcopy-active']);
    P.src.start(parseMigrationUri(P.dst.address()!));
    await waitStatus(P.srcEv, ['active']);
    P.src.requestPostcopy();
    await switched;
    // every page read on the destination: each missing one is requested and served
    for (let p = 0; p < (4 << 20) / PS; p++) await scan(P.dstRam.base + p * PS, 1);
    expect(await done).toEqual(['completed', 'completed']);
    expect(P.src.ramStats().remaining).toBe(0);
    expect(P.src.ramStats()['postcopy-requests']).toBeGreaterThan(0);
    expect(digest(P.dstRam.whole())).toBe(digest(sb));
    await P.dst.close();
    P.srcRam.map.dispose(); P.dstRam.map.dispose();
  });

  test('RAM size and vCPU count mismatches fail on both sides with a clear error', async () => {
    for (const o of [{ dstBytes: 8 << 20 }, { dstVcpus: 3 }]) {
      const P = pair(4 << 20, 2, o);
      const addr = parseMigrationUri(`unix:${join(dir, 'm.sock')}`);
      await P.dst.listen(addr);
      const done = Promise.all([waitStatus(P.srcEv, ['completed', 'failed']), waitStatus(P.dstEv, ['completed', 'failed'])]);
      P.src.start(addr);
      expect(await done).toEqual(['failed', 'failed']);
      const re = o.dstBytes ? /RAM size mismatch: the source has 4194304 bytes, this VM 8388608/ : /vCPU count mismatch: the source has 2, this VM 3/;
      expect(P.dstStatus.errorDesc).toMatch(re);
      expect(P.srcStatus.errorDesc).toMatch(re);
      await P.dst.close();
      P.srcRam.map.dispose(); P.dstRam.map.dispose();
    }
  });

  test('connecting to nothing fails with the address in the error', async () => {
    const P = pair(1 << 20, 1);
    const done = waitStatus(P.srcEv, ['failed']);
    P.src.start(parseMigrationUri(`unix:${join(dir, 'nobody.sock')}`));
    await done;
    expect(P.srcStatus.errorDesc).toMatch(/^Failed to connect to 'unix:.*nobody.sock': No such file or directory$/);
    P.srcRam.map.dispose(); P.dstRam.map.dispose();
  });

  test('cancel during precopy: source cancelled, destination failed, source vCPU state untouched', async () => {
    const P = pair(32 << 20, 1);
    fillPattern(P.srcRam.whole(), 2);
    P.srcParams.set({ 'max-bandwidth': 4 << 20 });
    const addr = parseMigrationUri(`unix:${join(dir, 'c.sock')}`);
    await P.dst.listen(addr);
    const done = Promise.all([waitStatus(P.srcEv, ['cancelled', 'failed', 'completed']), waitStatus(P.dstEv, ['failed', 'completed'])]);
    P.src.start(addr);
    await waitStatus(P.srcEv, ['active']);
    await new Promise((r) => setTimeout(r, 200));
    P.src.cancel();
    expect(await done).toEqual(['cancelled', 'failed']);
    expect(P.dstStatus.errorDesc).toMatch(/cancelled by the source/);
    await P.dst.close();
    P.srcRam.map.dispose(); P.dstRam.map.dispose();
  });

  test('closing the destination removes its own socket file, not one bound at the same path since', async () => {
    const P = pair(1 << 20, 1);
    const path = join(dir, 'own.sock');
    await P.dst.listen(parseMigrationUri(`unix:${path}`));
    rmSync(path);
    const other = createServer();
    await new Promise<void>((r) => other.listen(path, r));
    await P.dst.close();
    expect(existsSync(path)).toBe(true);
    await new Promise((r) => other.close(r));
    P.srcRam.map.dispose(); P.dstRam.map.dispose();
  });
});
