// The QMP client that tests, the batch mode and the lab use: it fails fast
// and clearly when nothing listens, waits for a freshly started server when
// asked to, matches replies to requests and rejects what is pending when the
// connection drops.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, QmpError, connectWithRetry } from '../../src/qmp/client.js';
import { startQmpServer } from '../../src/monitor/qmp.js';
import { Registry } from '../../src/monitor/registry.js';
import { FakeMachine } from '../helpers/qmp-fake-machine.js';

let dir: string;
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'qmp-client-')); });
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A scripted server: sends a greeting, then answers with `reply`. */
function scripted(path: string, reply: (req: Record<string, unknown>, s: Socket) => void, greeting = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": ""}, "capabilities": ["oob"]}}\r\n'): Promise<Server> {
  return new Promise((res) => {
    const srv = createServer((s) => {
      s.write(greeting);
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) { const l = buf.slice(0, nl); buf = buf.slice(nl + 1); reply(JSON.parse(l) as Record<string, unknown>, s); }
      });
      s.on('error', () => undefined);
    });
    srv.listen(path, () => res(srv));
  });
}

test('absent socket: fails at once with a message that says what to do', async () => {
  const p = join(dir, 'none.sock');
  await expect(QmpClient.connect(p)).rejects.toThrow(`QMP socket ${p} does not exist (is the VM running with -qmp unix:${p},server=on,wait=off?)`);
});

test('a stale socket file (its process was killed) is "connection refused"; a plain file is "not a socket"', async () => {
  const p = join(dir, 'stale.sock');
  const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  expect(r.signal).toBe('SIGKILL');
  expect(statSync(p).isSocket()).toBe(true);
  await expect(QmpClient.connect(p)).rejects.toThrow(`QMP unix:${p}: connection refused (nothing is listening there)`);
  writeFileSync(join(dir, 'file'), 'x');
  await expect(QmpClient.connect(join(dir, 'file'))).rejects.toThrow(/connection refused|not a socket/);
});

test('tcp with nothing listening: connection refused', async () => {
  const srv = createServer();
  const port = await new Promise<number>((r) => srv.listen(0, '127.0.0.1', () => r((srv.address() as { port: number }).port)));
  await new Promise<void>((r) => srv.close(() => r()));
  await expect(QmpClient.connect(`tcp:127.0.0.1:${port}`)).rejects.toThrow(/connection refused/);
});

test('connectWithRetry waits for a server that starts later, and gives up at its deadline', async () => {
  const p = join(dir, 'late.sock');
  const machine = new FakeMachine();
  let server: Awaited<ReturnType<typeof startQmpServer>> | undefined;
  const t = setTimeout(() => { void startQmpServer(machine, `unix:${p}`, new Registry()).then((s) => { server = s; }); }, 300);
  const c = await connectWithRetry(p, 10000);
  expect(await c.execute('query-status')).toEqual({ running: true, status: 'running' });
  await c.close();
  clearTimeout(t);
  await server?.close();
  await expect(connectWithRetry(join(dir, 'never.sock'), 200)).rejects.toThrow(/does not exist.*gave up after 200 ms/);
});

test('replies are matched by id; errors become QmpError; events are logged and emitted', async () => {
  const p = join(dir, 's.sock');
  const srv = await scripted(p, (req, s) => {
    if (req.execute === 'qmp_capabilities') { s.write(`{"return": {}, "id": ${JSON.stringify(req.id)}}\r\n`); return; }
    if (req.execute === 'slow') { setTimeout(() => s.write(`{"return": "slow", "id": ${JSON.stringify(req.id)}}\r\n`), 50); return; }
    if (req.execute === 'fail') { s.write(`{"error": {"class": "DeviceNotFound", "desc": "no such"}, "id": ${JSON.stringify(req.id)}}\r\n`); return; }
    s.write(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "PING", "data": {"n": 1}}\r\n`);
    s.write(`{"return": ${JSON.stringify(req.arguments ?? null)}, "id": ${JSON.stringify(req.id)}}\r\n`);
  });
  const c = await QmpClient.connect(p);
  expect(c.greeting.QMP.version.qemu.major).toBe(9);
  const [slow, fast] = await Promise.all([c.execute('slow'), c.execute('echo', { a: 1 })]);
  expect(slow).toBe('slow');
  expect(fast).toEqual({ a: 1 });
  const err = await c.execute('fail').catch((e: unknown) => e);
  expect(err).toBeInstanceOf(QmpError);
  expect(err).toMatchObject({ errorClass: 'DeviceNotFound', desc: 'no such', command: 'fail' });
  expect(c.events[0]).toEqual({ timestamp: { seconds: 1, microseconds: 2 }, event: 'PING', data: { n: 1 } });
  expect((await c.waitForEvent('PING')).data).toEqual({ n: 1 });
  await c.close();
  await new Promise<void>((r) => srv.close(() => r()));
});

test('a dropped connection rejects pending commands; a per-command timeout rejects', async () => {
  const p = join(dir, 'd.sock');
  const srv = await scripted(p, (req, s) => {
    if (req.execute === 'qmp_capabilities') s.write(`{"return": {}, "id": ${JSON.stringify(req.id)}}\r\n`);
    else if (req.execute === 'die') s.destroy();
  });
  const c = await QmpClient.connect(p);
  await expect(c.execute('hang', undefined, { timeoutMs: 100 })).rejects.toThrow(/no reply to 'hang' within 100 ms/);
  await expect(c.execute('die')).rejects.toThrow(/connection closed/);
  expect(c.isClosed).toBe(true);
  await expect(c.execute('after')).rejects.toThrow(/connection is closed/);
  await new Promise<void>((r) => srv.close(() => r()));
});

test('something that is no QMP server: a clear error, not a hang', async () => {
  const p = join(dir, 'http.sock');
  const srv = await scripted(p, () => undefined, 'HTTP/1.1 400 Bad Request\r\n');
  await expect(QmpClient.connect(p, { timeoutMs: 2000 })).rejects.toThrow(/greeting is not JSON/);
  const silent = join(dir, 'silent.sock');
  const srv2 = createServer(() => undefined);
  await new Promise<void>((r) => srv2.listen(silent, () => r()));
  await expect(QmpClient.connect(silent, { timeoutMs: 200 })).rejects.toThrow(/no greeting within 200 ms/);
  await new Promise<void>((r) => srv.close(() => r()));
  srv2.close();
});
