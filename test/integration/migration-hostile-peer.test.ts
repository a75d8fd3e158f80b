// A real VM process facing a peer that is no migration engine: garbage, a
// wrong version or a truncated stream sent to a destination, a garbage return
// path answered to a source, bad page records after a good header (which the
// destination's native receiver must refuse), and in postcopy garbage on the urgent channel,
// which the native threads read (the destination's fault thread, the source's
// page server). Each time the migration fails with a message that says what
// was wrong, and the process stays up and usable (its monitor answers; a
// source's guest runs again when it had not moved yet).
import net from 'node:net';
import { Lab, setCaps, waitStatus, sendTo, expectFailedAndUsable, TERMINAL } from './migration-procs.js';
import type { MigrationInfo } from '../../src/migration/api.js';
import {
  encodeHeader, encodeSwitchover, encodeBare, encodeText, writeRecordHeader, RECORD_HEADER_BYTES, REC_PAGES, REC_ZERO, REC_END, RP_REQ_PAGES, RP_RUNNING, RP_ERROR, VCPU_STATE_BYTES,
} from '../../src/migration/wire.js';
import { encodeVcpuState } from '../../src/vm/vcpu-state.js';
import { requireUffd } from '../helpers/uffd-available.js';

const MiB = 1 << 20;
const run = requireUffd() ? describe : describe.skip;

/** one vCPU's SWITCHOVER state: about to sweep from page 0 */
function sweepFromStart(): Buffer {
  const st = Buffer.alloc(VCPU_STATE_BYTES);
  encodeVcpuState({ position: 0, sweeps: 0, accesses: 0, rng: 1n }, st);
  return st;
}

run('a migration peer that is no migration engine', () => {
  let lab: Lab;
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  const header = (version?: number): Buffer => encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: 'sweep,end=64M', version });

  // found by the stream fuzzer (bytes inserted in the HEADER's workload): the peer's text went into error-desc as
  // it came, and its line break cut HMP's `info migrate` in two
  test('destination fed a header whose workload holds a line break and a terminal escape: the error quotes them as \\xNN', async () => {
    const uri = `unix:${lab.path('in.sock')}`;
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=64M', '-incoming', uri]);
    const evil = encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: 'sweep\nStatus: completed\u001b[2J' });
    const s = await sendTo(lab.path('in.sock'), evil, true);
    const d = await waitStatus(dst, TERMINAL as never, 10000);
    s.destroy();
    const why = "workload mismatch: the source runs 'sweep\\x0aStatus: completed\\x1b[2J', this VM was started with 'sweep,end=64M' (-workload)";
    expect(d['error-desc']).toBe(`migration stream: ${why}`);
    const hmp = await dst.qmp.execute<string>('human-monitor-command', { 'command-line': 'info migrate' });
    expect(hmp.split('\n')[0]).toBe(`Status: \t\tfailed (migration stream: ${why})`);
  });

  test.each([
    ['random bytes', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), true, /not a postcopy migration stream/],
    ['a wrong stream version', header(7), true, /unsupported stream version 7/],
    ['a stream cut inside a page record', (() => {
      const rec = Buffer.alloc(RECORD_HEADER_BYTES + 100);
      writeRecordHeader(rec, 0, REC_PAGES, 0, 1, 0);
      return Buffer.concat([header(), rec]);
    })(), true, /truncated|closed the connection/],
  ])('destination fed %s: failed with the reason, monitor still answers', async (_what, bytes, close, reason) => {
    const uri = `unix:${lab.path('in.sock')}`;
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-incoming', uri]);
    const s = await sendTo(lab.path('in.sock'), bytes, close);
    const d = await waitStatus(dst, TERMINAL as never, 10000);
    s.destroy();
    await expectFailedAndUsable(dst, d, reason, { status: 'inmigrate' });
  });

  /** a record header at the start of `payload` bytes (zeroed) */
  const rec = (type: number, flags: number, count: number, offset: number, payload = 0): Buffer => {
    const r = Buffer.alloc(RECORD_HEADER_BYTES + payload);
    writeRecordHeader(r, 0, type, flags, count, offset);
    return r;
  };
  // what the native receiver reads after a good header: it places only page
  // records it can prove valid, and wire.ts names what is wrong with the rest
  test.each([
    ['pages outside guest RAM', rec(REC_PAGES, 0, 1, 64 * MiB, 4096), /PAGES record at byte 106: 1 pages at offset 67108864 lie outside guest RAM/],
    ['zero pages running past guest RAM', rec(REC_ZERO, 0, 2, 64 * MiB - 4096), /ZERO record at byte 106: 2 pages at offset 67104768 lie outside guest RAM/],
    ['pages with unknown flag bits', rec(REC_PAGES, 0x40, 1, 0, 4096), /record at byte 106: reserved bits set/],
    ['a run of 300 pages', rec(REC_PAGES, 0, 300, 0), /PAGES record at byte 106: bad page count 300/],
    ['pages at an unaligned offset', rec(REC_PAGES, 0, 1, 100, 4096), /offset 100 is not page aligned/],
    ['an unknown record type', rec(0x99, 0, 0, 0), /unknown record type 0x99 at byte 106/],
    ['a run cut in its second page', rec(REC_PAGES, 0, 2, 0, 4096 + 100), /truncated stream: ended inside a record at byte 4218/],
  ])('destination fed a good header then %s: failed with the reason, monitor still answers', async (_what, bad, reason) => {
    const uri = `unix:${lab.path('in.sock')}`;
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=64M', '-incoming', uri]);
    const s = await sendTo(lab.path('in.sock'), Buffer.concat([header(), rec(REC_ZERO, 0, 8, 0), bad]), true);
    const d = await waitStatus(dst, TERMINAL as never, 10000);
    s.destroy();
    await expectFailedAndUsable(dst, d, reason, { status: 'inmigrate' });
    expect((await dst.qmp.execute('query-migrate') as MigrationInfo).ram?.duplicate).toBe(8); // the good ZERO run before it was placed
  });

  test('source answered with a garbage return path: failed with the reason, its guest runs again', async () => {
    const path = lab.path('fake-dst.sock');
    const fake = net.createServer((c) => {
      c.on('data', () => undefined);
      c.on('error', () => undefined); // the source hangs up on us
      c.write(Buffer.from('\x99garbage-that-is-no-return-path'));
    });
    await new Promise<void>((r) => fake.listen(path, r));
    try {
      const src = await lab.vm('src', ['-m', '64M', '-smp', '1']);
      await setCaps(src, ['postcopy-ram']);
      await src.qmp.execute('migrate', { uri: `unix:${path}` });
      const s = await waitStatus(src, TERMINAL as never, 10000);
      await expectFailedAndUsable(src, s, /return path record at byte 0: (reserved bits set|unknown return path record type)/, { status: 'running', running: true });
    } finally {
      fake.close();
    }
  });

  test.each([
    ['a record that is no page', (() => { const r = Buffer.alloc(RECORD_HEADER_BYTES); r[0] = 0x99; return r; })(),
      /urgent channel: unexpected record type 0x99 \(expected PAGES or ZERO\)/],
    ['pages outside guest RAM', (() => {
      const r = Buffer.alloc(RECORD_HEADER_BYTES + 4096);
      writeRecordHeader(r, 0, REC_PAGES, 0, 1, 64 * MiB);
      return r;
    })(), /urgent channel: PAGES record of 1 pages at offset 67108864 is outside guest RAM \(16384 pages\)/],
    ['pages with reserved flag bits', (() => {
      const r = Buffer.alloc(RECORD_HEADER_BYTES + 4096);
      writeRecordHeader(r, 0, REC_PAGES, 0x40, 1, 0);
      return r;
    })(), /urgent channel: PAGES record with reserved bits set \(flags 0x40\)/],
    ['pages flagged 0x80 (once the fault thread\'s private "placed" mark: consumed, never placed, the vCPU hung)', (() => {
      const r = Buffer.alloc(RECORD_HEADER_BYTES + 4096);
      writeRecordHeader(r, 0, REC_PAGES, 0x80, 1, 0);
      return r;
    })(), /urgent channel: PAGES record with reserved bits set \(flags 0x80\)/],
  ])('destination in postcopy fed %s on the urgent channel: failed with the reason, monitor still answers', async (_what, garbage, reason) => {
    const path = lab.path('pc.sock');
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=64M', '-incoming', `unix:${path}`]);
    const main = await sendTo(path, Buffer.concat([ // a header and at once the switchover: every page comes on request
      encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: 'sweep,end=64M', postcopy: true }),
      encodeSwitchover(true, sweepFromStart()),
    ]), false);
    const urgent = await sendTo(path, encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: 'sweep,end=64M', urgent: true }), false);
    // the destination's vCPU runs and faults: its fault thread asks for the page
    const request = new Promise<Buffer>((resolve) => urgent.once('data', resolve));
    const running = new Promise<void>((resolve) => main.on('data', (b: Buffer) => { if (b.includes(RP_RUNNING)) resolve(); }));
    await running;
    expect((await request)[0]).toBe(RP_REQ_PAGES);
    urgent.write(garbage);
    const d = await waitStatus(dst, TERMINAL as never, 10000);
    main.destroy();
    urgent.destroy();
    await expectFailedAndUsable(dst, d, reason, { status: 'paused' });
  });

  test('destination told to switch to postcopy without an urgent channel: failed within 5 s, monitor still answers', async () => {
    const path = lab.path('no-urgent-in.sock');
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=64M', '-incoming', `unix:${path}`]);
    const main = await sendTo(path, Buffer.concat([
      encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: 'sweep,end=64M', postcopy: true }),
      encodeSwitchover(true, sweepFromStart()),
    ]), false);
    main.on('data', () => undefined);
    const d = await waitStatus(dst, TERMINAL as never, 10000);
    main.destroy();
    await expectFailedAndUsable(dst, d, /postcopy switchover, but the urgent channel did not come within 5 s/, { status: 'paused' });
  });

  // found by the stream fuzzer (an urgent channel refused for a flipped HEADER byte, the push fast enough):
  // the destination completed with its vCPUs never started, run state inmigrate, which no `cont` could change
  test('destination told to switch to postcopy whose urgent channel never comes, but every page does: completed, and its guest runs', async () => {
    const path = lab.path('push-only.sock');
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=64M', '-incoming', `unix:${path}`]);
    const main = await sendTo(path, Buffer.concat([
      encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: 'sweep,end=64M', postcopy: true }),
      encodeSwitchover(true, sweepFromStart()),
      rec(REC_ZERO, 0, (64 * MiB) / 4096, 0), // every page, in the background stream
      encodeBare(REC_END),
    ]), false);
    main.on('data', () => undefined);
    const d = await waitStatus(dst, TERMINAL as never, 10000);
    main.destroy();
    expect([d.status, d['error-desc']]).toEqual(['completed', undefined]);
    expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
  });

  // found by the stream fuzzer: 4 bytes inserted in SWITCHOVER's header made its length 0xb3 (say): the
  // destination waited for payload bytes that never came, the source for RP_COMPLETE, both for ever
  test('a destination that takes every byte and never completes: the source fails 5 s after the end of its stream, its guest stays paused', async () => {
    const path = lab.path('silent.sock');
    const conns: net.Socket[] = [];
    const fake = net.createServer((c) => { conns.push(c); c.on('data', () => undefined); c.on('error', () => undefined); });
    await new Promise<void>((r) => fake.listen(path, r));
    try {
      const src = await lab.vm('src', ['-m', '16M', '-smp', '1', '-workload', 'idle']);
      await src.qmp.execute('migrate', { uri: `unix:${path}` });
      await waitStatus(src, ['device']);
      const t0 = Date.now();
      const s = await waitStatus(src, TERMINAL as never, 10000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(4500);
      // that destination may hold the whole guest and run it: the source does not run it too unless told (cont)
      await expectFailedAndUsable(src, s, /^the destination did not complete within 5 s of the end of the stream \(the guest stays paused here\)$/, { status: 'paused', running: false });
      await src.qmp.execute('cont');
      expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
    } finally {
      for (const c of conns) c.destroy();
      fake.close();
    }
  });

  test.each([
    ['a page request one page past the end of RAM', (() => {
      const req = Buffer.alloc(RECORD_HEADER_BYTES);
      writeRecordHeader(req, 0, RP_REQ_PAGES, 0, 4096, 64 * MiB);
      return req;
    })(), /urgent channel: bad page request: offset 67108864 length 4096 \(RAM is 16384 pages of 4096 bytes\)/],
    // found by the stream fuzzer: a destination that refused the urgent channel (a byte inserted in its HEADER)
    // once the page server had taken it failed the source with "unexpected record type 0x42"
    ['its refusal of the channel (RP_ERROR)', encodeText(RP_ERROR, 'migration connection refused: its header does not carry this migration\'s token'),
      /^urgent channel: the destination says: migration connection refused: its header does not carry this migration's token$/],
  ])('source in postcopy that is sent %s on the urgent channel: failed with the reason, monitor still answers', async (_what, bytes, reason) => {
    const path = lab.path('fake-pc.sock');
    const conns: net.Socket[] = [];
    const fake = net.createServer((c) => {
      conns.push(c);
      c.on('data', () => undefined);
      c.on('error', () => undefined);
    });
    await new Promise<void>((r) => fake.listen(path, r));
    try {
      const src = await lab.vm('src', ['-m', '64M', '-smp', '1']);
      await setCaps(src, ['postcopy-ram']);
      await src.qmp.execute('migrate', { uri: `unix:${path}` });
      await src.qmp.execute('migrate-start-postcopy');
      await waitStatus(src, ['postcopy-active']);
      while (conns.length < 2) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 200)); // the page server has taken the urgent channel
      conns[1].write(bytes);
      const s = await waitStatus(src, TERMINAL as never, 10000);
      await expectFailedAndUsable(src, s, reason, { status: 'postmigrate' });
    } finally {
      for (const c of conns) c.destroy();
      fake.close();
    }
  });

  test.each([
    ['drops', (c: net.Socket): void => { c.destroy(); }, /urgent channel/],
    // the refusal's words, not only "closed" (found by the stream fuzzer: a byte inserted in the urgent channel's HEADER)
    ['refuses', (c: net.Socket): void => { c.end(encodeText(RP_ERROR, 'migration connection refused: it sent no header within 5 s')); },
      /urgent channel: the destination says: migration connection refused: it sent no header within 5 s$/],
  ])('a destination that %s the urgent channel: postcopy never starts, the source fails and its guest runs again', async (_what, refuse, reason) => {
    const path = lab.path('no-urgent.sock');
    let n = 0;
    const kept: net.Socket[] = [];
    let refused: () => void = () => undefined;
    const done = new Promise<void>((r) => { refused = r; });
    const fake = net.createServer((c) => {
      c.on('error', () => undefined);
      if (n++ === 0) { kept.push(c); c.on('data', () => undefined); } else { refuse(c); refused(); }
    });
    await new Promise<void>((r) => fake.listen(path, r));
    try {
      const src = await lab.vm('src', ['-m', '64M', '-smp', '1']);
      await setCaps(src, ['postcopy-ram']);
      await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1 << 20 }); // still in precopy when asked to switch
      await src.qmp.execute('migrate', { uri: `unix:${path}` });
      // asked to switch once the channel is gone (this test's server may come late to it when the machine is busy:
      // the switchover had gone through, the page server read the refusal)
      await done;
      await new Promise((r) => setTimeout(r, 100));
      await src.qmp.execute('migrate-start-postcopy').catch(() => undefined); // it may have failed already
      const s = await waitStatus(src, TERMINAL as never, 10000);
      await expectFailedAndUsable(src, s, reason, { status: 'running', running: true });
    } finally {
      for (const c of kept) c.destroy();
      fake.close();
    }
  });

  test('migrate_cancel on the destination: failed there, the source is told and its guest runs on', async () => {
    const uri = `unix:${lab.path('c.sock')}`;
    const dst = await lab.vm('dst', ['-m', '64M', '-smp', '1', '-incoming', uri]);
    const src = await lab.vm('src', ['-m', '64M', '-smp', '1']);
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 4 * MiB }); // a long precopy
    await src.qmp.execute('migrate', { uri });
    await waitStatus(dst, ['active']);
    await dst.qmp.execute('migrate_cancel');
    const d = await waitStatus(dst, TERMINAL as never);
    const s = await waitStatus(src, TERMINAL as never);
    expect(d.status).toBe('failed');
    expect(d['error-desc']).toMatch(/cancelled on the destination/);
    await expectFailedAndUsable(src, s, /cancelled on the destination/, { status: 'running' });
  });
});
