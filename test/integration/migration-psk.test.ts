// Issue 13, "Untrusted peers": the pre-shared key (x-migration-psk) between
// real VM processes. Matching keys migrate (postcopy, every page identical);
// a key on one side only, or another key, is refused with a clear error on
// both sides, and a destination with a key goes on waiting for the right
// source; a stranger that connects first without the key holds nothing up; a
// key file that is not private, or not there, is refused when it is set and
// again when a migration starts.
import net from 'node:net';
import { chmodSync, symlinkSync, writeFileSync } from 'node:fs';
import { Lab, setCaps, waitStatus, digest, sendTo, TERMINAL } from './migration-procs.js';
import { RECORD_HEADER_BYTES, RP_ERROR } from '../../src/migration/wire.js';
import { AUTH_MESSAGE_BYTES } from '../../src/migration/channel-auth.js';
import { requireUffd } from '../helpers/uffd-available.js';
import type { VmProcess } from '../../src/migration/local-destination.js';

const run = requireUffd() ? describe : describe.skip;
const COMMON = ['-m', '32M', '-smp', '2', '-workload', 'random,end=24M,seed=5'];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** a TCP port free a moment ago */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}
const setPsk = (vm: VmProcess, path: string): Promise<unknown> => vm.qmp.execute('migrate-set-parameters', { 'x-migration-psk': path });
const hmp = (vm: VmProcess, line: string): Promise<string> => vm.qmp.execute<string>('human-monitor-command', { 'command-line': line });
/** everything `s` receives, and a promise of its close */
function collect(s: net.Socket): { bytes: () => Buffer; closed: Promise<void>; open: () => boolean } {
  const got: Buffer[] = [];
  let open = true;
  s.on('data', (b: Buffer) => got.push(b));
  s.on('error', () => undefined);
  const closed = new Promise<void>((r) => s.once('close', () => { open = false; r(); }));
  return { bytes: () => Buffer.concat(got), closed, open: () => open };
}
/** the refusal a connection got (its RP_ERROR's text), after the destination's nonce */
function refusal(b: Buffer): string {
  return b[AUTH_MESSAGE_BYTES] === RP_ERROR ? b.toString('utf8', AUTH_MESSAGE_BYTES + RECORD_HEADER_BYTES) : '';
}
async function untilMatch(vm: VmProcess, re: RegExp): Promise<void> {
  for (let i = 0; i < 500 && !re.test(vm.stderr); i++) await sleep(20);
  expect(vm.stderr).toMatch(re);
}

run('a pre-shared key on the migration links (x-migration-psk)', () => {
  let lab: Lab;
  /** a key file of `bytes` random-looking bytes, 0600 */
  const key = (name: string, fill = 0x5a): string => {
    const p = lab.path(name);
    writeFileSync(p, Buffer.alloc(32, fill));
    chmodSync(p, 0o600);
    return p;
  };
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => { await lab.close(); });

  test('matching keys over TCP: postcopy completes on both sides, every page identical; the parameter shows in both monitors', async () => {
    const uri = `tcp:127.0.0.1:${await freePort()}`;
    const k = key('shared.key');
    const dst = await lab.vm('dst', [...COMMON, '-incoming', uri, '-S']);
    const src = await lab.vm('src', COMMON);
    await setPsk(dst, k);
    expect(await hmp(src, `migrate_set_parameter x-migration-psk ${k}`)).toBe('');
    expect(await hmp(src, 'info migrate_parameters')).toContain(`x-migration-psk: '${k}'`);
    expect(await dst.qmp.execute('query-migrate-parameters')).toMatchObject({ 'x-migration-psk': k });
    await setCaps(dst, ['postcopy-ram']);
    await setCaps(src, ['postcopy-ram']);
    await sleep(300); // the workload writes pages
    await src.qmp.execute('migrate', { uri });
    await src.qmp.execute('migrate-start-postcopy');
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
    expect(s.ram!['postcopy-bytes']).toBeGreaterThan(0);
    const [a, b] = await Promise.all([digest(src), digest(dst)]);
    expect(a.filter((h, i) => h !== b[i]).length).toBe(0);
    expect(a.filter((h) => h !== a[a.length - 1]).length).toBeGreaterThan(100); // the workload really wrote pages
    expect(dst.stderr).not.toMatch(/refused/);
  });

  test('a destination with a key: a source without one, then one with another key, are refused (both sides say why); it goes on waiting, and the right key migrates', async () => {
    const uri = `unix:${lab.path('in.sock')}`;
    const dst = await lab.vm('dst', [...COMMON, '-incoming', uri, '-S']);
    const src = await lab.vm('src', [...COMMON, '-S']); // paused: precopy converges
    await setPsk(dst, key('dst.key'));
    await src.qmp.execute('migrate', { uri });
    const none = await waitStatus(src, TERMINAL as never, 10000);
    expect(none.status).toBe('failed');
    expect(none['error-desc']).toBe('return path: the destination asks for a pre-shared key exchange (x-migration-psk), and this source has no x-migration-psk set');
    await untilMatch(dst, /postcopy: migration connection refused: it sent a migration stream without the pre-shared key exchange \(x-migration-psk is set here: none on the source\?\)/);
    expect((await dst.queryMigrate()).status).toBe('none'); // still waiting

    await setPsk(src, key('other.key', 0x33));
    await src.qmp.execute('migrate', { uri });
    const other = await waitStatus(src, TERMINAL as never, 10000);
    expect(other.status).toBe('failed');
    expect(other['error-desc']).toBe('destination: migration connection refused: its proof of the pre-shared key does not match this destination\'s key (x-migration-psk): the two key files differ');
    await untilMatch(dst, /postcopy: migration connection refused: its proof of the pre-shared key does not match/);
    expect((await dst.queryMigrate()).status).toBe('none');
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'paused' });

    await setPsk(src, lab.path('dst.key'));
    await src.qmp.execute('migrate', { uri });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status, d['error-desc']]).toEqual(['completed', 'completed', undefined]);
    expect(await digest(dst)).toEqual(await digest(src));
  });

  test('a source with a key and a destination without: both fail, naming the key', async () => {
    const uri = `unix:${lab.path('in.sock')}`;
    const dst = await lab.vm('dst', [...COMMON, '-incoming', uri]);
    const src = await lab.vm('src', COMMON);
    await setPsk(src, key('src.key'));
    await src.qmp.execute('migrate', { uri });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never, 10000), waitStatus(dst, TERMINAL as never, 10000)]);
    const why = 'migration stream: the source opens with a pre-shared key exchange (x-migration-psk), and this destination has no x-migration-psk set';
    expect([s.status, d.status]).toEqual(['failed', 'failed']);
    expect(d['error-desc']).toBe(why);
    expect(s['error-desc']).toBe(`destination: ${why}`);
    expect(await src.qmp.execute('query-status')).toMatchObject({ status: 'running' });
    expect(await dst.qmp.execute('query-status')).toMatchObject({ status: 'inmigrate' });
  });

  test('strangers that connect first without the key (one silent, one talking HTTP) hold nothing up: the source migrates at once; they are refused', async () => {
    const path = lab.path('in.sock');
    const k = key('k.key');
    const dst = await lab.vm('dst', [...COMMON, '-incoming', `unix:${path}`, '-S']);
    const src = await lab.vm('src', [...COMMON, '-S']);
    await Promise.all([setPsk(dst, k), setPsk(src, k)]);
    const silent = collect(await sendTo(path, Buffer.alloc(0), false));
    const http = collect(await sendTo(path, Buffer.from('GET / HTTP/1.1\r\n\r\n'), false));
    await http.closed;
    expect(refusal(http.bytes())).toMatch(/^migration connection refused: it does not speak the pre-shared key exchange \(record type 0x47/);
    await src.qmp.execute('migrate', { uri: `unix:${path}` });
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never), waitStatus(dst, TERMINAL as never)]);
    expect([s.status, d.status, d['error-desc']]).toEqual(['completed', 'completed', undefined]);
    expect(silent.open()).toBe(true); // the migration did not wait for the silent one's 5 s
    await silent.closed;
    expect(refusal(silent.bytes())).toBe('migration connection refused: it did not complete the pre-shared key exchange (x-migration-psk) within 5 s');
    expect(await digest(dst)).toEqual(await digest(src));
  });

  test('a key file that is not private or not there is refused when set, and when a migration starts if it went bad since', async () => {
    const vm = await lab.vm('vm', ['-m', '32M', '-incoming', 'defer']);
    const loose = key('loose.key');
    chmodSync(loose, 0o644);
    symlinkSync(key('target.key'), lab.path('link.key'));
    writeFileSync(lab.path('empty.key'), '', { mode: 0o600 });
    const cases: [string, RegExp][] = [
      [loose, /: x-migration-psk: cannot read '.*loose\.key': its mode is 0644: group or others may read it \(chmod 600 it\) \(GenericError\)$/],
      [lab.path('link.key'), /: x-migration-psk: cannot read '.*link\.key': it is a symbolic link; not following it \(/],
      [lab.path('missing.key'), /: x-migration-psk: cannot read '.*missing\.key': it does not exist \(/],
      [lab.path('empty.key'), /: x-migration-psk: cannot read '.*empty\.key': it is empty \(/],
    ];
    for (const [p, why] of cases) await expect(setPsk(vm, p)).rejects.toThrow(why);
    expect(await hmp(vm, `migrate_set_parameter x-migration-psk ${loose}`)).toMatch(/^Error: x-migration-psk: cannot read .*: its mode is 0644/);
    expect(await vm.qmp.execute('query-migrate-parameters')).toMatchObject({ 'x-migration-psk': '' }); // unchanged
    // set while good, then loosened: the destination refuses to listen, the source to migrate
    const k = key('k.key');
    await setPsk(vm, k);
    chmodSync(k, 0o644);
    await expect(vm.qmp.execute('migrate-incoming', { uri: `unix:${lab.path('in.sock')}` })).rejects.toThrow(/: x-migration-psk: cannot read .*k\.key': its mode is 0644/);
    const src = await lab.vm('src', ['-m', '32M']);
    const sk = key('src.key');
    await setPsk(src, sk);
    chmodSync(sk, 0o640);
    await expect(src.qmp.execute('migrate', { uri: `unix:${lab.path('in.sock')}` })).rejects.toThrow(/: x-migration-psk: cannot read .*src\.key': its mode is 0640/);
    expect((await src.queryMigrate()).status).toBe('none');
    // a destination already listening whose key went bad refuses the connection, saying why (not where)
    chmodSync(k, 0o600);
    await vm.qmp.execute('migrate-incoming', { uri: `unix:${lab.path('in.sock')}` });
    chmodSync(k, 0o644);
    chmodSync(sk, 0o600);
    await src.qmp.execute('migrate', { uri: `unix:${lab.path('in.sock')}` });
    const s = await waitStatus(src, TERMINAL as never, 10000);
    expect(s['error-desc']).toBe('destination: migration connection refused: this destination\'s pre-shared key file (x-migration-psk) is unusable: its mode is 0644: group or others may read it (chmod 600 it)');
    expect((await vm.queryMigrate()).status).toBe('none');
    expect(await hmp(vm, 'migrate_set_parameter x-migration-psk ""')).toBe(''); // none again
    expect(await vm.qmp.execute('query-migrate-parameters')).toMatchObject({ 'x-migration-psk': '' });
  });
});
