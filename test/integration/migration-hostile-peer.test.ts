// A real VM process facing a peer that is no migration engine: garbage, a
// wrong version or a truncated stream sent to a destination, a garbage return
// path answered to a source. Each time the migration fails with a message that
// says what was wrong, and the process stays up and usable (its monitor
// answers; a source's guest runs again).
import net from 'node:net';
import { Lab, setCaps, waitStatus, TERMINAL } from './migration-procs.js';
import { encodeHeader, writeRecordHeader, RECORD_HEADER_BYTES, REC_PAGES } from '../../src/migration/wire.js';
import { requireUffd } from '../helpers/uffd-available.js';

const MiB = 1 << 20;
const run = requireUffd() ? describe : describe.skip;

/** connects to a destination's unix socket, writes `bytes`, then closes (or keeps it open) */
function sendTo(path: string, bytes: Buffer, close: boolean): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path }, () => {
      s.write(bytes);
      if (close) s.end();
      resolve(s);
    });
    s.on('error', reject);
  });
}

run('a migration peer that is no migration engine', () => {
  let lab: Lab;
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  const header = (version?: number): Buffer => encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: 'sweep,end=64M', version });

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
    expect(d.status).toBe('failed');
    expect(d['error-desc']).toMatch(reason);
    expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'inmigrate' });
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
      expect(s.status).toBe('failed');
      expect(s['error-desc']).toMatch(/return path record at byte 0: (reserved bits set|unknown return path record type)/);
      expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
    } finally {
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
    expect(s.status).toBe('failed');
    expect(s['error-desc']).toMatch(/cancelled on the destination/);
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running' });
  });
});
