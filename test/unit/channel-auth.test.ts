// Issue 13, the pre-shared key (x-migration-psk): the exchange of
// channel-auth.ts on real unix socket pairs, the destination's end accepted
// paused as the migration accepts it. Both sides prove the key before any
// migration byte; a peer without the key, with another one, or that breaks
// the exchange is refused with the reason; the listener reads nothing of the
// connection beyond the exchange (the native receiver gets every byte after
// it); and the key file is refused unless it is a private file of ours.
import net from 'node:net';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { socketPair } from '../helpers/socket-pair.js';
import {
  authenticateConnector, authenticateListener, authenticatedConnections, loadMigrationKey, AUTH_MAGIC, AUTH_MESSAGE_BYTES, AUTH_VERSION,
} from '../../src/migration/channel-auth.js';
import { encodeHeader, encodeText, writeRecordHeader, RECORD_HEADER_BYTES, REC_AUTH, REC_ERROR, RP_AUTH, RP_ERROR } from '../../src/migration/wire.js';
import { ReturnDecoder, type ReturnHandler } from '../../src/migration/return-decoder.js';
import { StreamDecoder, type StreamHandler } from '../../src/migration/stream-decoder.js';

let dir: string;
let n = 0;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pc-psk-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

const KEY = Buffer.from('a4d1c0ffee5eed0123456789abcdef0fedcba9876543210f', 'hex');
const OTHER = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
/** [the destination's end, accepted paused; the source's end]; a peer's close is no test failure */
async function pair(): Promise<[net.Socket, net.Socket]> {
  const p = await socketPair(dir, `s${n++}.sock`, true);
  for (const s of p) s.on('error', () => undefined);
  return p;
}
const header = (): Buffer => encodeHeader({ pageSize: 4096, vcpus: 1, ramBytes: 1 << 20, workload: 'sweep' });
/** everything `s` receives from now on */
function collect(s: net.Socket): () => Buffer {
  const got: Buffer[] = [];
  s.on('data', (b: Buffer) => got.push(b));
  s.on('error', () => undefined);
  return () => Buffer.concat(got);
}
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}
/** a message of the exchange, made by hand */
function msg(type: number, step: number, o: { magic?: number; version?: number; value?: Buffer } = {}): Buffer {
  const out = Buffer.alloc(AUTH_MESSAGE_BYTES);
  writeRecordHeader(out, 0, type, step, AUTH_MESSAGE_BYTES - RECORD_HEADER_BYTES, 0);
  out.writeUInt32LE(o.magic ?? AUTH_MAGIC, RECORD_HEADER_BYTES);
  out.writeUInt32LE(o.version ?? AUTH_VERSION, RECORD_HEADER_BYTES + 4);
  (o.value ?? Buffer.alloc(32, 7)).copy(out, RECORD_HEADER_BYTES + 8);
  return out;
}
/** the listener refuses as the migration does (incoming-urgent.ts): RP_ERROR with the reason, then closed */
async function listenAndRefuse(dst: net.Socket, key: Buffer, timeoutMs?: number): Promise<string> {
  try {
    await authenticateListener(dst, key, timeoutMs);
    return 'admitted';
  } catch (e) {
    dst.end(encodeText(RP_ERROR, `migration connection refused: ${(e as Error).message}`));
    return (e as Error).message;
  }
}
const settle = async (p: Promise<unknown>): Promise<string> => {
  try { await p; return 'resolved'; } catch (e) { return (e as Error).message; }
};

describe('the pre-shared key exchange', () => {
  test('matching keys: both sides prove it; the listener reads nothing beyond it, the connector\'s own listeners get only what follows', async () => {
    const [dst, src] = await pair();
    const returnPath = collect(src); // the source's return path decoder, attached before the exchange
    const t0 = performance.now();
    await Promise.all([authenticateListener(dst, KEY), authenticateConnector(src, KEY)]);
    const ms = performance.now() - t0;
    expect(returnPath().length).toBe(0); // the exchange is not the return path's
    src.write(header()); // the source's stream starts
    dst.write(Buffer.from('RP')); // the destination's return path
    const stream = collect(dst);
    dst.resume(); // as the native receiver would read it: from the first byte after the exchange
    await until(() => stream().length >= header().length && returnPath().length >= 2);
    expect(stream().equals(header())).toBe(true);
    expect(returnPath().toString()).toBe('RP');
    process.stdout.write(`pre-shared key exchange on a unix socket pair: ${ms.toFixed(2)} ms (one round trip)\n`);
    dst.destroy();
    src.destroy();
  });

  test('another key: the listener refuses the source\'s proof, the source hears why', async () => {
    const [dst, src] = await pair();
    const [listener, connector] = await Promise.all([listenAndRefuse(dst, KEY), settle(authenticateConnector(src, OTHER))]);
    expect(listener).toBe('its proof of the pre-shared key does not match this destination\'s key (x-migration-psk): the two key files differ');
    expect(connector).toBe(`destination: migration connection refused: ${listener}`);
    src.destroy();
  });

  test('a source without a key (its HEADER at once) is refused; its return path names the key', async () => {
    const [dst, src] = await pair();
    let sourceError = '';
    const rp = new ReturnDecoder({} as ReturnHandler, 1 << 20, 4096);
    src.on('data', (b: Buffer) => { try { rp.push(b); } catch (e) { sourceError ||= (e as Error).message; } });
    src.write(header());
    const listener = await listenAndRefuse(dst, KEY);
    expect(listener).toMatch(/^it sent a migration stream without the pre-shared key exchange \(x-migration-psk is set here: none on the source\?\)$/);
    await until(() => sourceError !== '');
    expect(sourceError).toBe('the destination asks for a pre-shared key exchange (x-migration-psk), and this source has no x-migration-psk set');
    src.destroy();
  });

  test('a source without a key that gave up on our RP_AUTH before its HEADER went out (its ERROR first) is refused the same way', async () => {
    const [dst, src] = await pair();
    src.write(encodeText(REC_ERROR, 'the destination asks for a pre-shared key exchange (x-migration-psk), and this source has no x-migration-psk set'));
    const listener = await listenAndRefuse(dst, KEY);
    expect(listener).toMatch(/^it sent a migration stream without the pre-shared key exchange \(x-migration-psk is set here: none on the source\?\)$/);
    src.destroy();
  });

  test('a destination without a key: its stream decoder names the key, and the source hears that', async () => {
    const [dst, src] = await pair();
    const ignore = (): void => undefined;
    const d = new StreamDecoder({ header: ignore, pages: ignore, zero: ignore, discard: ignore, endRound: ignore, switchover: ignore, end: ignore, error: ignore } as StreamHandler);
    let destError = '';
    dst.on('data', (b: Buffer) => {
      try { d.push(b); } catch (e) { destError = (e as Error).message; dst.end(encodeText(RP_ERROR, `migration stream: ${destError}`)); }
    });
    dst.resume();
    const connector = await settle(authenticateConnector(src, KEY));
    expect(destError).toBe('the source opens with a pre-shared key exchange (x-migration-psk), and this destination has no x-migration-psk set');
    expect(connector).toBe(`destination: migration stream: ${destError}`);
    src.destroy();
  });

  test('silence: each side gives up after its time limit, saying so', async () => {
    const [dst, src] = await pair();
    src.on('data', () => undefined);
    expect(await listenAndRefuse(dst, KEY, 200)).toBe('it did not complete the pre-shared key exchange (x-migration-psk) within 0.2 s');
    const [dst2, src2] = await pair();
    expect(await settle(authenticateConnector(src2, KEY, 200)))
      .toBe('the destination did not complete the pre-shared key exchange (x-migration-psk) within 0.2 s');
    for (const s of [src, dst2, src2]) s.destroy();
  });

  test.each([
    ['a second message out of order', [msg(REC_AUTH, 2)], /^it sent the pre-shared key exchange's message 2 where message 1 was due$/],
    ['another version', [msg(REC_AUTH, 1, { version: 2 })], /^it speaks pre-shared key exchange version 2, this side 1$/],
    ['a bad magic', [msg(REC_AUTH, 1, { magic: 0x12345678 })], /^it sent a pre-shared key exchange message with a bad magic 0x12345678$/],
    ['not the exchange at all', [Buffer.from('GET / HTTP/1.1\r\n\r\n')], /^it does not speak the pre-shared key exchange \(record type 0x47 where its message 1 was due/],
    ['more than the exchange before it was answered', [msg(REC_AUTH, 1), msg(REC_AUTH, 2), Buffer.from('extra')], /^it sent 5 bytes beyond the pre-shared key exchange before it was answered$/],
    ['a proof that is not HMAC(key, ...)', [msg(REC_AUTH, 1), msg(REC_AUTH, 2)], /^its proof of the pre-shared key does not match/],
  ])('a connector that sends %s is refused with the reason', async (_what, parts, reason) => {
    const [dst, src] = await pair();
    src.on('data', () => undefined);
    src.write(Buffer.concat(parts));
    expect(await listenAndRefuse(dst, KEY)).toMatch(reason);
    src.destroy();
  });

  test('a connector that closes mid-way is refused; a listener whose proof is wrong or that closes is refused by the source', async () => {
    const [dst, src] = await pair();
    src.end(msg(REC_AUTH, 1).subarray(0, 20));
    expect(await listenAndRefuse(dst, KEY)).toBe('it closed the connection during the pre-shared key exchange');
    // a fake destination: its nonce, then a proof made without the key
    const [fake, src2] = await pair();
    fake.resume();
    fake.write(msg(RP_AUTH, 1));
    const wrong = settle(authenticateConnector(src2, KEY));
    fake.once('data', () => fake.write(msg(RP_AUTH, 2)));
    expect(await wrong).toBe('the destination could not prove it holds the pre-shared key (x-migration-psk): another key, or not the destination meant');
    const [gone, src3] = await pair();
    gone.destroy();
    expect(await settle(authenticateConnector(src3, KEY))).toBe('the destination closed the connection during the pre-shared key exchange (x-migration-psk)');
    for (const s of [src, src2, src3, fake]) s.destroy();
  });

  test('the accept hook: no key admits at once; a bad key file refuses the connection naming the problem, not the path', async () => {
    const admitted: net.Socket[] = [];
    const refused: string[] = [];
    const keyPath = join(dir, 'loose.key');
    writeFileSync(keyPath, KEY);
    chmodSync(keyPath, 0o644);
    let path = '';
    const hook = authenticatedConnections(() => path, (s) => admitted.push(s), (s, why) => { refused.push(why); s.destroy(); });
    const [a, pa] = await pair();
    hook(a);
    expect(admitted).toEqual([a]);
    path = keyPath;
    const [b, pb] = await pair();
    hook(b);
    expect(refused).toEqual(['this destination\'s pre-shared key file (x-migration-psk) is unusable: its mode is 0644: group or others may read it (chmod 600 it)']);
    for (const s of [a, pa, pb]) s.destroy();
  });
});

describe('the key file (x-migration-psk)', () => {
  const file = (name: string, data: Buffer | string, mode = 0o600): string => {
    const p = join(dir, name);
    writeFileSync(p, data);
    chmodSync(p, mode);
    return p;
  };

  test('none is none; a private file of ours, 0600 or 0400, is the key', () => {
    expect(loadMigrationKey('')).toBeNull();
    expect(loadMigrationKey(file('good.key', KEY))!.equals(KEY)).toBe(true);
    expect(loadMigrationKey(file('ro.key', KEY, 0o400))!.equals(KEY)).toBe(true);
  });

  test('refused, naming the problem: readable by others, a symlink, missing, empty, too short, a directory, another user\'s', () => {
    const good = file('target.key', KEY);
    symlinkSync(good, join(dir, 'link.key'));
    mkdirSync(join(dir, 'dir.key'));
    const theirs = file('theirs.key', KEY);
    const root = process.geteuid?.() === 0; // only root can give a file away
    if (root) chownSync(theirs, 65534, 65534);
    const cases: [string, RegExp][] = [
      [file('open.key', KEY, 0o644), /^x-migration-psk: cannot read '.*open\.key': its mode is 0644: group or others may read it \(chmod 600 it\)$/],
      [file('group.key', KEY, 0o640), /its mode is 0640/],
      [join(dir, 'link.key'), /cannot read '.*link\.key': it is a symbolic link; not following it$/],
      [join(dir, 'missing.key'), /cannot read '.*missing\.key': it does not exist$/],
      [file('empty.key', ''), /cannot read '.*empty\.key': it is empty$/],
      [file('short.key', 'secret'), /it holds 6 bytes, fewer than 16 \(make one with: head -c 32 \/dev\/urandom > FILE; chmod 600 FILE\)$/],
      [file('big.key', Buffer.alloc(5000, 1)), /it has 5000 bytes, more than 4096$/],
      [join(dir, 'dir.key'), /it is not a regular file$/],
      ...(root ? [[theirs, /it belongs to another user \(uid 65534\)$/] as [string, RegExp]] : []),
    ];
    for (const [p, why] of cases) expect(() => loadMigrationKey(p)).toThrow(why);
  });
});
