// Issue 13, "Untrusted peers": what a stranger on the migration port, or a
// peer that breaks the protocol on purpose, could do to a real VM process, and
// what it gets now: a clear error naming the problem, a process that keeps
// running, nothing that hangs. Native failures (a poll(2) that fails) are
// reported in the status block, not mistaken for a requested stop.
import { execFileSync } from 'node:child_process';
import { Lab, waitStatus, sendTo, expectFailedAndUsable, TERMINAL } from './migration-procs.js';
import { encodeHeader, writeRecordHeader, RECORD_HEADER_BYTES, REC_ZERO } from '../../src/migration/wire.js';
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
});
