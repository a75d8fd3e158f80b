// A postcopy migration driven only through consoles, as an operator with two
// QEMU monitors would: a destination process (`-incoming tcp:...`) and a
// source process fed a script on stdin, both the real program. Checks the
// source's `info migrate` lines (QEMU's format) and the blocktime figures the
// destination's `info postcopy_blocktime` / `info migrate -a` print; then the
// lab: `migrate` with no URI from one console, blocktime fetched back; and
// `info postcopy_blocktime -w` in a destination's script: plain lines, one
// per half second, until the migration completes, with QMP answering
// meanwhile.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireUffd } from '../helpers/uffd-available.js';
import { ensureBuilt, killConsoles, startConsole as vm, waitOut } from '../helpers/cli.js';
import { freeTcpPort as freePort } from '../../src/migration/local-destination.js';
import { connectWithRetry } from '../../src/qmp/client.js';
import type { MigrationInfo } from '../../src/migration/api.js';

const haveUffd = requireUffd();
const maybe = haveUffd ? describe : describe.skip;

beforeAll(ensureBuilt, 180_000);
afterAll(killConsoles);

/** checks the rich blocktime view for 2 vCPUs and returns its fault count */
function checkRichView(text: string): number {
  expect(text).toMatch(/Postcopy blocktime: final/);
  expect(text).toMatch(/│\s+0 │\s+\d+ │/); // vCPU 0 row: index, thread id
  expect(text).toMatch(/│\s+1 │\s+\d+ │/);
  expect(text).toMatch(/Total blocktime \(all vCPUs blocked at once\): /);
  const faults = /Faults: (\d+) \(vCPU (\d+), non-vCPU (\d+)\)/.exec(text);
  expect(faults).not.toBeNull();
  return Number((faults as RegExpExecArray)[1]);
}

maybe('migration through the consoles', () => {
  it('source script -> destination -incoming tcp: info migrate and blocktime', async () => {
    const port = await freePort();
    const dst = vm(['-m', '64M', '-smp', '2', '-incoming', `tcp:127.0.0.1:${port}`]);
    dst.p.stdin.write('migrate_set_capability postcopy-ram on\nmigrate_set_capability postcopy-blocktime on\ninfo status\n');
    await waitOut(dst, /VM status: paused \(inmigrate\)\n/, 'destination ready');

    const src = vm(['-m', '64M', '-smp', '2', '--exit-on-error']);
    src.p.stdin.end([
      'migrate_set_capability postcopy-ram on',
      'migrate_set_parameter max-bandwidth 16', // 16 MiB/s: postcopy starts long before precopy could finish
      `migrate -d tcp:127.0.0.1:${port}`,
      'migrate_start_postcopy',
      'migrate_wait 120',
      'info migrate',
      'info status',
      '',
    ].join('\n'));
    expect(await src.exit).toBe(0);
    const lines = src.out().split('\n');
    expect(lines[0]).toBe('Status: \t\tcompleted');
    expect(lines[1]).toMatch(/^Time \(ms\): \t\ttotal=\d+(, setup=\d+)?(, exp_down=\d+)?(, down=\d+)?$/);
    expect(lines[2]).toBe('RAM info:');
    expect(lines[3]).toMatch(/^ {2}Throughput \(Mbps\): \t\d+\.\d\d$/);
    expect(lines[4]).toBe('  Sizes: \t\tpagesize=4 KiB, total=64 MiB');
    expect(lines[5]).toMatch(/^ {2}Transfers: \t\ttransferred=[\d.]+ [KMG]?i?B, remain=0 B$/);
    expect(lines[6]).toMatch(/^ {4}Channels: \t\tprecopy=[\d.]+ [KMG]?i?B, multifd=0 B, postcopy=[\d.]+ [KMG]?i?B$/);
    expect(lines[7]).toMatch(/^ {4}Page Types: \tnormal=\d+, zero=\d+$/);
    expect(lines[8]).toMatch(/^ {2}Page Rates \(pps\): \ttransfer=\d+/);
    expect(lines[9]).toMatch(/^ {2}Others: \t\tdirty_syncs=\d+/);
    expect(lines[10]).toBe('VM status: paused (postmigrate)');

    dst.p.stdin.end('migrate_wait 60\ninfo status\ninfo postcopy_blocktime\ninfo migrate -a\n');
    expect(await dst.exit).toBe(0);
    const d = dst.out();
    expect(d).toContain('VM status: running\n');
    const faults = checkRichView(d);
    expect(faults).toBeGreaterThan(0); // the vCPUs really ran into missing pages
    expect(d).toContain('Status: \t\tcompleted\n');
    expect(d).toMatch(/\nPostcopy Blocktime \(ms\): \d+\n/);
    expect(d).toMatch(/\nPostcopy vCPU Blocktime \(ms\):\n \[\d+, \d+\]\n/);
    expect(d).toMatch(/\nPostcopy Latency Distribution:\n {2}\[ {5}1 us - {5}2 us \]: +\d+\n/);
  }, 180_000);

  it('the lab: migrate with no URI, blocktime fetched from the destination it started', async () => {
    const src = vm(['-m', '64M', '--exit-on-error']);
    src.p.stdin.end([
      'migrate_set_capability postcopy-ram on',
      'migrate_set_capability postcopy-blocktime on',
      'migrate_set_parameter max-bandwidth 16',
      'migrate',
      'migrate_start_postcopy',
      'migrate_wait 120',
      'info postcopy_blocktime',
      'info migrate',
      '',
    ].join('\n'));
    expect(await src.exit).toBe(0);
    const out = src.out();
    expect(out.split('\n')[0]).toBe(
      "postcopy-ram is on and precopy is running: 'migrate_start_postcopy' switches to postcopy, 'migrate_wait' waits for the end");
    checkRichView(out);
    expect(out).toContain('Status: \t\tcompleted\n');
  }, 180_000);

  it('info postcopy_blocktime -w in a script: one plain line per interval until the migration completes; QMP answers meanwhile', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hmp-watch-'));
    try {
      const port = await freePort();
      const qmpPath = join(dir, 'dst.qmp');
      // the source first: its vCPUs write all of guest RAM while the destination starts; after the switch they
      // sweep on ahead of a push held to 8 MiB/s, faulting page after page: seconds of postcopy
      // (512 MiB: the native page path faults 256 MiB in about a second, too short for three lines)
      const src = vm(['-m', '512M', '-smp', '2', '--exit-on-error']);
      const dst = vm(['-m', '512M', '-smp', '2', '-incoming', `tcp:127.0.0.1:${port}`, '-qmp', `unix:${qmpPath},server=on,wait=off`]);
      // -w waits for the migration, the next line runs after it; the script ends once QMP has been asked enough
      dst.p.stdin.write('migrate_set_capability postcopy-blocktime on\ninfo postcopy_blocktime -w 120\ninfo status\n');
      await waitOut(dst, /\| none \| /, 'the first line of -w');
      const qmp = await connectWithRetry(`unix:${qmpPath}`, 10_000);
      // every page written before the migration starts: a page still zero goes as a 16-byte ZERO record, which
      // the push's 8 MiB/s lets through by the hundred thousand (seen: 94 % of RAM received 1 s into postcopy)
      await new Promise((r) => setTimeout(r, 2000));
      src.p.stdin.end([
        'migrate_set_capability postcopy-ram on',
        'migrate_set_parameter max-bandwidth 16',
        'migrate_set_parameter max-postcopy-bandwidth 8M',
        `migrate -d tcp:127.0.0.1:${port}`,
        'migrate_start_postcopy',
        'migrate_wait 120',
        '',
      ].join('\n'));
      // the console is busy with -w; the event loop is not: QMP answers, again and again, while postcopy runs
      let answeredInPostcopy = 0;
      try {
        for (;;) {
          const info = await qmp.execute<MigrationInfo>('query-migrate');
          if (info.status === 'postcopy-active') {
            const t0 = performance.now();
            expect(await qmp.execute<{ status: string }>('query-status')).toMatchObject({ status: 'running' });
            if (performance.now() - t0 < 1000) answeredInPostcopy++;
          }
          if (info.status === 'completed' || info.status === 'failed') break;
          await new Promise((r) => setTimeout(r, 100));
        }
      } catch (e) {
        throw new Error(`${(e as Error).message}\ndestination:\n${dst.out()}\nsource:\n${src.out()}`);
      }
      expect(answeredInPostcopy).toBeGreaterThan(3);
      await qmp.close();
      dst.p.stdin.end();
      expect(await src.exit).toBe(0);
      expect(await dst.exit).toBe(0);

      const out = dst.out();
      expect(out).not.toContain('\x1b'); // no escape codes on a pipe
      const lines = out.split('\n').filter((l) => /^\d+\.\d s \| /.test(l));
      const postcopy = lines.filter((l) => l.includes('| postcopy-active |'));
      if (postcopy.length < 3) throw new Error(`one line per half second of postcopy expected; the destination printed:\n${out}`);
      expect(postcopy[postcopy.length - 1]).toMatch(/\| received \d+\/131072 pages \([\d.]+ %\) \| blocktime [\d.]+ ms \| vCPU blocktime \[[\d.]+, [\d.]+\] ms \| \d+ faults$/);
      const seconds = lines.map((l) => Number(l.split(' ')[0]));
      // half a second apart; the final line comes at the completion, which may fall within the same tenth
      for (let i = 1; i < seconds.length; i++) {
        if (i < seconds.length - 1) expect(seconds[i]).toBeGreaterThan(seconds[i - 1]);
        else expect(seconds[i]).toBeGreaterThanOrEqual(seconds[i - 1]);
      }
      // the last line: the final figures, then why it stopped, then the next command of the script
      expect(lines[lines.length - 1]).toMatch(/\| completed \| received 131072\/131072 pages \(100\.0 %\) \| blocktime /);
      expect(out).toMatch(/\| completed \| [^\n]*\nstopped: the migration completed\nVM status: running\n/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
