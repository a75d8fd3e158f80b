// Unix sockets of the monitors and the migration port: born 0600, a stale
// socket file replaced, a live one or a non-socket refused, and removed on
// close only while the path still holds our socket. Real sockets.
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenUnixPrivate, removeUnixSocket, socketIsLive } from '../../src/unix-listen.js';

let dir: string;
const servers: Server[] = [];
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pc-unix-')); });
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  rmSync(dir, { recursive: true, force: true });
});
const server = (): Server => { const s = createServer((c) => c.destroy()); servers.push(s); return s; };

describe('private unix sockets', () => {
  test('the socket is 0600, at the path asked, and answers', async () => {
    const p = join(dir, 'a.sock');
    const bound = await listenUnixPrivate(server(), p, 'test');
    expect(bound.path).toBe(p);
    expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(await socketIsLive(p)).toBe(true);
  });

  test('a live socket is not taken over; a non-socket is not replaced', async () => {
    const p = join(dir, 'b.sock');
    await listenUnixPrivate(server(), p, 'first');
    await expect(listenUnixPrivate(server(), p, 'second')).rejects.toThrow(`second: another process is already listening on ${p}`);
    const f = join(dir, 'plain');
    writeFileSync(f, 'data');
    await expect(listenUnixPrivate(server(), f, 'third')).rejects.toThrow(/third: .*plain exists and is not a socket; refusing to replace it/);
  });

  test('a stale socket file (nobody listening) is replaced', async () => {
    const p = join(dir, 'c.sock');
    // a process that listened there and died without removing its socket
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(existsSync(p)).toBe(true);
    expect(await socketIsLive(p)).toBe(false);
    await listenUnixPrivate(server(), p, 'new');
    expect(await socketIsLive(p)).toBe(true);
  });

  test('closing removes our socket only: a socket bound there since by someone else stays', async () => {
    const p = join(dir, 'd.sock');
    const ours = server();
    const bound = await listenUnixPrivate(ours, p, 'ours');
    rmSync(p); // someone removed ours and bound their own at the same path
    const theirs = server();
    await listenUnixPrivate(theirs, p, 'theirs');
    removeUnixSocket(bound);
    expect(existsSync(p)).toBe(true);
    expect(await socketIsLive(p)).toBe(true);
  });
});
