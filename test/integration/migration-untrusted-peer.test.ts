// Issue 13, "Untrusted peers": what a stranger on the migration port, or a
// peer that breaks the protocol on purpose, could do to a real VM process, and
// what it gets now: a clear error naming the problem, a process that keeps
// running, nothing that hangs. Native failures (a poll(2) that fails) are
// reported in the status block, not mistaken for a requested stop.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { Lab, setCaps, waitStatus, digest, sendTo, expectFailedAndUsable, TERMINAL } from './migration-procs.js';
import {
  encodeHeader, encodeSwitchover, writeRecordHeader, RECORD_HEADER_BYTES, REC_ZERO, RP_ACK, RP_ERROR, RP_REQ_PAGES, RP_RUNNING, VCPU_STATE_BYTES, TOKEN_BYTES,
} from '../../src/migration/wire.js';
import { encodeVcpuState } from '../../src/vm/vcpu-state.js';
import { requireUffd } from '../helpers/uffd-available.js';

const MiB = 1 << 20;
const run = requireUffd() ? describe : describe.skip;
const WORKLOAD = 'sweep,end=64M';
const DST = ['-m', '64M', '-smp', '1', '-workload', WORKLOAD];
const header = (o: { postcopy?: boolean; urgent?: boolean; token?: Buffer } = {}): Buffer =>
  encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 64 * MiB, workload: WORKLOAD, ...o });
const zero = (page: number, count: number): Buffer => {
  const r = Buffer.alloc(RECORD_HEADER_BYTES);
  writeRecordHeader(r, 0, REC_ZERO, 0, count, page * 4096);
  return r;
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const token = (b: number): Buffer => Buffer.alloc(TOKEN_BYTES, b);
/** one vCPU's SWITCHOVER state: about to sweep from page 0 */
function sweepFromStart(): Buffer {
  const st = Buffer.alloc(VCPU_STATE_BYTES);
  encodeVcpuState({ position: 0, sweeps: 0, accesses: 0, rng: 1n }, st);
  return encodeSwitchover(true, st);
}
/** everything `s` receives, and a promise of its close */
function collect(s: net.Socket): { bytes: () => Buffer; closed: Promise<void> } {
  const got: Buffer[] = [];
  s.on('data', (b: Buffer) => got.push(b));
  s.on('error', () => undefined);
  return { bytes: () => Buffer.concat(got), closed: new Promise((r) => s.once('close', () => r())) };
}

run('a migration peer that is not to be trusted', () => {
  let lab: Lab;
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('a poll(2) that fails in the destination\'s stream receiver: failed with errno and message, not taken for a stop', async () => {
    const path = lab.path('in.sock');
    const dst = await lab.vm('dst', [...DST, '-incoming', `unix:${path}`]);
    const main = await sendTo(path, Buffer.concat([header(), zero(0, 8)]), false);
    main.on('data', () => undefined);
    await waitStatus(dst, ['active'], 10000);
    await sleep(100); // the receiver waits in poll for more
    const pid = String(dst.child.pid);
    // a soft RLIMIT_NOFILE of 1 makes poll of 2 fds fail with EINVAL
    const soft = execFileSync('prlimit', ['--pid', pid, '--nofile', '--output', 'SOFT', '--noheadings']).toString().trim();
    execFileSync('prlimit', ['--pid', pid, '--nofile=1:']);
    try {
      main.write(zero(8, 8)); // wakes it; it waits again
      await sleep(300);
    } finally {
      execFileSync('prlimit', ['--pid', pid, `--nofile=${soft}:`]);
    }
    const d = await waitStatus(dst, TERMINAL as never, 5000);
    main.destroy();
    await expectFailedAndUsable(dst, d, /migration stream: poll: Invalid argument/, { status: 'inmigrate' });
  });

  test('a second connection whose header lacks the main stream\'s token is refused, named and closed; the right urgent channel then comes and serves', async () => {
    const path = lab.path('in.sock');
    const dst = await lab.vm('dst', [...DST, '-incoming', `unix:${path}`]);
    // a fake source: its header and at once the postcopy switchover (every page comes on request)
    const main = await sendTo(path, Buffer.concat([header({ postcopy: true, token: token(7) }), sweepFromStart()]), false);
    const fromMain = collect(main);
    await waitStatus(dst, ['active'], 10000);
    const stranger = await sendTo(path, header({ urgent: true, token: token(8) }), false);
    const told = collect(stranger);
    await told.closed;
    expect(told.bytes()[0]).toBe(RP_ERROR);
    expect(told.bytes().toString('utf8', RECORD_HEADER_BYTES))
      .toMatch(/^migration connection refused: its header does not carry this migration's token/);
    expect(dst.stderr).toMatch(/postcopy: migration connection refused: its header does not carry this migration's token/);
    expect((await dst.queryMigrate()).status).toBe('active'); // the migration goes on
    const urgent = await sendTo(path, header({ urgent: true, token: token(7) }), false);
    const request = new Promise<Buffer>((resolve) => urgent.once('data', resolve));
    while (!fromMain.bytes().includes(RP_RUNNING)) await sleep(10);
    expect((await request)[0]).toBe(RP_REQ_PAGES); // the vCPU faulted; the fault thread asks the right channel
    expect((await dst.queryMigrate()).status).toBe('postcopy-active');
    main.destroy();
    urgent.destroy();
  });

  test('an idle second connection is dropped after 5 s with the reason; the migration goes on and its urgent channel still comes', async () => {
    const path = lab.path('in.sock');
    const dst = await lab.vm('dst', [...DST, '-incoming', `unix:${path}`]);
    const main = await sendTo(path, header({ postcopy: true, token: token(3) }), false);
    const fromMain = collect(main);
    await waitStatus(dst, ['active'], 10000);
    const idle = await sendTo(path, Buffer.alloc(0), false);
    const told = collect(idle);
    const t0 = Date.now();
    await told.closed;
    expect(Date.now() - t0).toBeGreaterThan(4000);
    expect(told.bytes().toString('utf8', RECORD_HEADER_BYTES)).toBe('migration connection refused: it sent no header within 5 s');
    expect((await dst.queryMigrate()).status).toBe('active');
    main.write(sweepFromStart()); // the switchover: every page comes on request
    const urgent = await sendTo(path, header({ urgent: true, token: token(3) }), false);
    const request = new Promise<Buffer>((resolve) => urgent.once('data', resolve));
    while (!fromMain.bytes().includes(RP_RUNNING)) await sleep(10);
    expect((await request)[0]).toBe(RP_REQ_PAGES);
    main.destroy();
    urgent.destroy();
  });

  /** an RP_ACK record: `consumed` bytes of the main stream */
  const ack = (consumed: number): Buffer => {
    const r = Buffer.alloc(RECORD_HEADER_BYTES);
    writeRecordHeader(r, 0, RP_ACK, 0, 0, consumed);
    return r;
  };
  test.each([
    ['before the postcopy switchover', false, [ack(16)], /return path: RP_ACK of 16 bytes before the postcopy switchover/],
    ['beyond what was sent', true, [ack(2 ** 40)], /return path: RP_ACK of 1099511627776 bytes, beyond the \d+ bytes sent on the main stream/],
    ['going backwards', true, [ack(64), ack(32)], /return path: RP_ACK of 32 bytes goes backwards \(64 were acknowledged before\)/],
  ])('a destination that sends RP_ACK %s: the source fails, naming it', async (_what, postcopy, acks, reason) => {
    const path = lab.path('fake-dst.sock');
    const conns: net.Socket[] = [];
    const fake = net.createServer((c) => { conns.push(c); c.on('data', () => undefined); c.on('error', () => undefined); });
    await new Promise<void>((r) => fake.listen(path, r));
    try {
      const src = await lab.vm('src', ['-m', '64M', '-smp', '1']);
      await setCaps(src, ['postcopy-ram']);
      await src.qmp.execute('migrate', { uri: `unix:${path}` });
      if (postcopy) {
        await src.qmp.execute('migrate-start-postcopy');
        await waitStatus(src, ['postcopy-active']);
      }
      while (conns.length < 1) await sleep(10);
      conns[0].write(Buffer.concat(acks));
      const s = await waitStatus(src, TERMINAL as never, 10000);
      await expectFailedAndUsable(src, s, reason, { status: postcopy ? 'postmigrate' : 'running' });
    } finally {
      for (const c of conns) c.destroy();
      fake.close();
    }
  });

  test('an idle first connection: dropped within 5 s with a message (failed), and migrate_incoming arms the destination again; a real source then completes', async () => {
    const uri = `unix:${lab.path('in.sock')}`;
    const dst = await lab.vm('dst', [...DST, '-incoming', uri, '-S']);
    const idle = await sendTo(lab.path('in.sock'), Buffer.alloc(0), false);
    collect(idle);
    const d = await waitStatus(dst, TERMINAL as never, 8000);
    await expectFailedAndUsable(dst, d, /the migration connection sent no header within 5 s \(not a migration source\?\): dropped/, { status: 'inmigrate' });
    idle.destroy();
    // HMP, as QEMU's: exit-on-error off
    expect(await dst.qmp.execute('human-monitor-command', { 'command-line': `migrate_incoming ${uri}` })).toBe('');
    const src = await lab.vm('src', [...DST, '-S']); // paused: precopy converges
    await src.qmp.execute('migrate', { uri });
    const [s2, d2] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s2.status, d2.status, d2['error-desc']]).toEqual(['completed', 'completed', undefined]);
    expect(await digest(dst)).toEqual(await digest(src)); // every page, as on the source
    await expect(dst.qmp.execute('migrate-incoming', { uri })).rejects.toThrow(/The incoming migration has already been started/);
  });

  test('a stranger that connects first and sends nothing gives way after 5 s to the source that connected after it, which completes', async () => {
    const uri = `unix:${lab.path('in.sock')}`;
    const dst = await lab.vm('dst', [...DST, '-incoming', uri, '-S']);
    const stranger = await sendTo(lab.path('in.sock'), Buffer.alloc(0), false);
    const told = collect(stranger);
    const src = await lab.vm('src', [...DST, '-S']);
    await src.qmp.execute('migrate', { uri });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never, 20000), waitStatus(dst, TERMINAL as never, 20000)]);
    expect([s.status, d.status, d['error-desc']]).toEqual(['completed', 'completed', undefined]);
    await told.closed;
    expect(told.bytes().toString('utf8', RECORD_HEADER_BYTES)).toMatch(/^migration connection refused: it sent nothing within 5 s/);
    expect(await digest(dst)).toEqual(await digest(src));
  });

  test('QMP migrate-incoming: exit-on-error (default true, as QEMU 9.1) ends the process on a failure; false keeps it up and armable', async () => {
    const uri = `unix:${lab.path('in.sock')}`;
    const keep = await lab.vm('keep', [...DST, '-incoming', 'defer']);
    await keep.qmp.execute('migrate-incoming', { uri, 'exit-on-error': false });
    (await sendTo(lab.path('in.sock'), Buffer.from('GET / HTTP/1.1\r\n\r\n'), true)).on('error', () => undefined);
    const k = await waitStatus(keep, TERMINAL as never, 8000);
    await expectFailedAndUsable(keep, k, /not a postcopy migration stream/, { status: 'inmigrate' });
    expect(await keep.qmp.execute('migrate-incoming', { uri, 'exit-on-error': false })).toEqual({}); // armed again
    const uri2 = `unix:${lab.path('in2.sock')}`;
    const exits = await lab.vm('exits', [...DST, '-incoming', 'defer']);
    const exited = new Promise<number | null>((r) => exits.child.once('exit', (code) => r(code)));
    await exits.qmp.execute('migrate-incoming', { uri: uri2 });
    (await sendTo(lab.path('in2.sock'), Buffer.from('GET / HTTP/1.1\r\n\r\n'), true)).on('error', () => undefined);
    expect(await exited).toBe(1);
    expect(exits.stderr).toMatch(/postcopy: load of migration failed: .*not a postcopy migration stream/);
  });
});
