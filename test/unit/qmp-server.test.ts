// The QMP server over real unix and TCP sockets, against a fake Machine:
// greeting, negotiation, ids, every command, QEMU's error texts, events,
// several clients, framing cases real clients produce, the 0600 socket file.
import { mkdtempSync, rmSync, statSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startQmpServer, type QmpServer } from '../../src/monitor/qmp.js';
import { QmpClient, QmpError, type QmpEvent } from '../../src/qmp/client.js';
import { Registry } from '../../src/monitor/registry.js';
import { FakeMachine } from '../helpers/qmp-fake-machine.js';

/** A raw connection: what any client (nc, socat, a script) sees. */
class Raw {
  private buf = '';
  private waiters: (() => void)[] = [];
  closed = false;
  constructor(readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => { this.buf += d; this.wake(); });
    sock.on('close', () => { this.closed = true; this.wake(); });
    sock.on('error', () => undefined);
  }
  static connect(path: string): Promise<Raw> {
    return new Promise((res, rej) => {
      const s = createConnection(path);
      s.once('connect', () => res(new Raw(s)));
      s.once('error', rej);
    });
  }
  private wake(): void { const w = this.waiters; this.waiters = []; w.forEach((f) => f()); }
  send(s: string | Buffer): void { this.sock.write(s); }
  /** the next line, with its \r\n */
  async line(): Promise<string> {
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl >= 0) { const l = this.buf.slice(0, nl + 1); this.buf = this.buf.slice(nl + 1); return l; }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf)}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
  async json(): Promise<Record<string, unknown>> { return JSON.parse(await this.line()) as Record<string, unknown>; }
  /** next line that is no event */
  async reply(): Promise<Record<string, unknown>> {
    for (;;) { const j = await this.json(); if (!('event' in j)) return j; }
  }
  end(): void { this.sock.end(); }
}

let dir: string;
let machine: FakeMachine;
let server: QmpServer;
let path: string;

function registry(): Registry {
  const r = new Registry();
  r.addHmp({ name: 'info', argsType: 'item:s?', params: '[subcommand]', help: 'show things', handler: async () => ({ text: '' }) });
  r.addInfo({
    name: 'migrate_capabilities', argsType: '', params: '', help: 'capabilities',
    handler: async (ctx) => ({ text: ctx.machine.capabilities().map((c) => `${c.capability}: ${c.state ? 'on' : 'off'}`).join('\n') }),
  });
  r.addHmp({ name: 'stop', argsType: '', params: '', help: 'stop', handler: async (ctx) => { await ctx.machine.stop(); return { text: '' }; } });
  return r;
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-test-'));
  path = join(dir, 'vm.qmp');
  machine = new FakeMachine();
  server = await startQmpServer(machine, `unix:${path},server=on,wait=off`, registry());
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

async function negotiated(): Promise<Raw> {
  const r = await Raw.connect(path);
  await r.line();
  r.send('{"execute": "qmp_capabilities"}');
  expect(await r.line()).toBe('{"return": {}}\r\n');
  return r;
}

describe('greeting and negotiation', () => {
  test('greeting is one \\r\\n-terminated line in QEMU shape, claiming no capabilities', async () => {
    const r = await Raw.connect(path);
    expect(await r.line()).toBe('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 10}, "package": "postcopy 0.1.0"}, "capabilities": []}}\r\n');
    r.end();
  });

  test('commands before qmp_capabilities fail with CommandNotFound; a second qmp_capabilities is refused', async () => {
    const r = await Raw.connect(path);
    await r.line();
    r.send('{"execute": "query-status", "id": 7}\n');
    expect(await r.line()).toBe(`{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": 7}\r\n`);
    r.send('{"execute": "no-such-thing"}');
    expect((await r.json()).error).toEqual({ class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" });
    r.send('{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}');
    expect((await r.json()).error).toEqual({ class: 'GenericError', desc: "Capability 'oob' not available" });
    r.send('{"execute": "qmp_capabilities", "arguments": {"enable": ["turbo"]}}');
    expect((await r.json()).error).toEqual({ class: 'GenericError', desc: "Parameter 'enable' does not accept value 'turbo'" });
    r.send('{"execute": "qmp_capabilities", "arguments": {"bogus": 1}}');
    expect((await r.json()).error).toEqual({ class: 'GenericError', desc: "Parameter 'bogus' is unexpected" });
    r.send('{"execute": "qmp_capabilities", "arguments": {"enable": []}, "id": "neg"}');
    expect(await r.line()).toBe('{"return": {}, "id": "neg"}\r\n');
    r.send('{"execute": "qmp_capabilities"}');
    expect(await r.line()).toBe('{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}\r\n');
    r.send('{"execute": "query-status"}');
    expect(await r.line()).toBe('{"return": {"running": true, "status": "running"}}\r\n');
    r.end();
  });

  test('id is echoed verbatim whatever JSON value it is', async () => {
    const r = await negotiated();
    for (const id of ['1', '"abc"', '{"a": [1, "x", null]}', '[]', 'null', '-2.5', 'true', '"\\u00e9"']) {
      r.send(`{"id": ${id}, "execute": "query-status"}`);
      expect(JSON.parse(await r.line())).toEqual({ return: { running: true, status: 'running' }, id: JSON.parse(id) });
    }
    r.send('{"execute": "nope", "id": {"k": 1}}');
    expect(await r.line()).toBe('{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": {"k": 1}}\r\n');
    r.end();
  });
});

describe('request errors (QEMU texts)', () => {
  test('malformed requests and arguments', async () => {
    const r = await negotiated();
    const cases: [string, string][] = [
      ['[1, 2]', 'QMP input must be a JSON object'],
      ['"text"', 'QMP input must be a JSON object'],
      ['{"arguments": {}}', "QMP input lacks member 'execute'"],
      ['{"execute": 5}', "QMP input member 'execute' must be a string"],
      ['{"execute": "stop", "arguments": [1]}', "QMP input member 'arguments' must be an object"],
      ['{"execute": "stop", "argument": {}}', "QMP input member 'argument' is unexpected"],
      ['{"execute": "stop", "arguments": {"foo": 1}}', "Parameter 'foo' is unexpected"],
      ['{"execute": "migrate"}', "Parameter 'uri' is missing"],
      ['{"execute": "migrate", "arguments": {"uri": 4444}}', "Invalid parameter type for 'uri', expected: string"],
      ['{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "postcopy-ram", "state": "yes"}]}}',
        "Invalid parameter type for 'capabilities[0].state', expected: boolean"],
      ['{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "events", "state": true}, {"state": true}]}}',
        "Parameter 'capabilities[1].capability' is missing"],
      ['{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "warp-drive", "state": true}]}}',
        "Parameter 'capability' does not accept value 'warp-drive'"],
      ['{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "events", "state": true, "x": 1}]}}',
        "Parameter 'capabilities[0].x' is unexpected"],
      ['{"execute": "migrate-set-capabilities", "arguments": {"capabilities": {}}}', "Invalid parameter type for 'capabilities', expected: array"],
      ['{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": "fast"}}', "Invalid parameter type for 'downtime-limit', expected: integer"],
      ['{"execute": "migrate-set-parameters", "arguments": {"multifd-channels": 4}}', "Parameter 'multifd-channels' is unexpected"],
      ['{"execute": "human-monitor-command", "arguments": {}}', "Parameter 'command-line' is missing"],
    ];
    for (const [req, desc] of cases) {
      r.send(req);
      expect({ req, reply: await r.json() }).toEqual({ req, reply: { error: { class: 'GenericError', desc } } });
    }
    // none of them took effect
    expect(machine.capabilities().every((c) => !c.state)).toBe(true);
    expect(machine.calls).toEqual([]);
    r.end();
  });

  test('malformed JSON gets an error reply and the connection keeps working', async () => {
    const r = await negotiated();
    r.send('{"execute": "query-status" "id": 1}\r\n');
    expect(await r.line()).toBe('{"error": {"class": "GenericError", "desc": "JSON parse error, expected separator in dict"}}\r\n');
    r.send(Buffer.from([0x7b, 0xff, 0x0a]));
    expect((await r.json()).error).toEqual({ class: 'GenericError', desc: "JSON parse error, stray '\\xff'" });
    r.send('{"execute": "query-status", "id": 2}');
    expect(await r.json()).toEqual({ return: { running: true, status: 'running' }, id: 2 });
    r.end();
  });
});

describe('commands', () => {
  let c: QmpClient;
  beforeEach(async () => { c = await QmpClient.connect(path); });
  afterEach(async () => { await c.close(); });

  test('query-status, stop and cont with STOP and RESUME events', async () => {
    expect(await c.execute('query-status')).toEqual({ running: true, status: 'running' });
    expect(await c.execute('stop')).toEqual({});
    expect(await c.execute('query-status')).toEqual({ running: false, status: 'paused' });
    const stop = await c.waitForEvent('STOP', { timeoutMs: 5000 });
    expect(stop.data).toBeUndefined();
    expect(Number.isInteger(stop.timestamp.seconds) && Number.isInteger(stop.timestamp.microseconds)).toBe(true);
    expect(Math.abs(stop.timestamp.seconds - Date.now() / 1000)).toBeLessThan(60);
    expect(await c.execute('cont')).toEqual({});
    await c.waitForEvent('RESUME', { timeoutMs: 5000 });
    expect(machine.calls).toEqual(['stop', 'cont']);
  });

  test('query-cpus-fast has thread-id, cpu-index, qom-path and target', async () => {
    const cpus = await c.execute<Record<string, unknown>[]>('query-cpus-fast');
    expect(cpus).toHaveLength(2);
    expect(cpus[1]).toMatchObject({ 'cpu-index': 1, 'thread-id': 1002, 'qom-path': '/machine/unattached/device[1]' });
    expect(typeof cpus[0].target).toBe('string');
  });

  test('capabilities and parameters round-trip; the machine refuses what it does not implement', async () => {
    await c.execute('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-ram', state: true }, { capability: 'postcopy-blocktime', state: true }] });
    const caps = await c.execute<{ capability: string; state: boolean }[]>('query-migrate-capabilities');
    expect(caps.filter((x) => x.state).map((x) => x.capability).sort()).toEqual(['postcopy-blocktime', 'postcopy-ram']);
    await expect(c.execute('migrate-set-capabilities', { capabilities: [{ capability: 'xbzrle', state: true }] }))
      .rejects.toMatchObject({ errorClass: 'GenericError', desc: expect.stringContaining("'xbzrle'") });
    await c.execute('migrate-set-parameters', { 'downtime-limit': 123, 'max-bandwidth': 1000000 });
    expect(await c.execute('query-migrate-parameters')).toMatchObject({ 'downtime-limit': 123, 'max-bandwidth': 1000000 });
    await expect(c.execute('migrate-set-parameters', { 'downtime-limit': -1 })).rejects.toBeInstanceOf(QmpError);
  });

  test('migrate returns {} at once; MIGRATION events only with the events capability', async () => {
    expect(await c.execute('query-migrate')).toEqual({}); // QEMU's answer before any migration
    expect(await c.execute('migrate', { uri: 'tcp:127.0.0.1:1' })).toEqual({});
    expect(await c.execute('query-migrate')).toEqual({ status: 'setup' });
    machine.moveTo('completed');
    await c.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    const since = c.events.length;
    await c.execute('migrate', { uri: 'unix:/tmp/x', detach: true });
    machine.moveTo('active');
    machine.moveTo('completed');
    const e = await c.waitForEvent('MIGRATION', { since, match: (x) => x.data?.status === 'completed', timeoutMs: 5000 });
    expect(e.data).toEqual({ status: 'completed' });
    const statuses = c.events.filter((x) => x.event === 'MIGRATION').map((x) => x.data?.status);
    expect(statuses).toEqual(['setup', 'active', 'completed']);
    await expect(c.execute('migrate', { uri: 'bad:x' })).rejects.toMatchObject({ desc: "Invalid migration URI 'bad:x'" });
    // postcopy recovery's commands reach the machine
    await c.execute('migrate', { uri: 'tcp:h:1', resume: true });
    await c.execute('migrate-pause');
    await c.execute('migrate-recover', { uri: 'tcp:h:2' });
    expect(machine.calls.slice(-3)).toEqual(['migrate -r tcp:h:1', 'migrate-pause', 'migrate-recover tcp:h:2']);
  });

  test('migrate-incoming, migrate-start-postcopy, migrate_cancel reach the machine with its errors', async () => {
    await expect(c.execute('migrate-start-postcopy')).rejects.toMatchObject({
      errorClass: 'GenericError', desc: 'Postcopy must be started after migration has been started',
    });
    expect(await c.execute('migrate-incoming', { uri: 'tcp:127.0.0.1:4444' })).toEqual({});
    expect(await c.execute('migrate_cancel')).toEqual({});
    expect(machine.calls).toEqual(['migrate-incoming tcp:127.0.0.1:4444', 'cancel']);
  });

  test('human-monitor-command runs a console line and returns its text, errors included', async () => {
    await c.execute('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-blocktime', state: true }] });
    const text = await c.execute<string>('human-monitor-command', { 'command-line': 'info migrate_capabilities' });
    expect(text).toContain('postcopy-blocktime: on\n');
    expect(await c.execute('human-monitor-command', { 'command-line': 'frobnicate' })).toBe("unknown command: 'frobnicate'\n");
    expect(await c.execute('human-monitor-command', { 'command-line': 'stop' })).toBe('');
    expect(machine.state).toBe('paused');
    await expect(c.execute('human-monitor-command', { 'command-line': 'stop', 'cpu-index': 9 }))
      .rejects.toMatchObject({ desc: "Parameter 'cpu-index' expects a CPU number" });
  });

  test('query-commands lists every command; query-version; x-query-ram-digest; x-query-blocktime', async () => {
    const names = (await c.execute<{ name: string }[]>('query-commands')).map((x) => x.name);
    for (const n of ['qmp_capabilities', 'query-migrate', 'query-migrate-capabilities', 'migrate-set-capabilities',
      'query-migrate-parameters', 'migrate-set-parameters', 'migrate-incoming', 'migrate', 'migrate-start-postcopy',
      'migrate_cancel', 'query-status', 'query-cpus-fast', 'stop', 'cont', 'quit', 'human-monitor-command', 'query-commands']) {
      expect(names).toContain(n);
    }
    expect(await c.execute('query-version')).toEqual(c.greeting.QMP.version);
    expect(await c.execute('x-query-ram-digest')).toEqual({ 'page-size': 4096, pages: 4, digest: '0123456789abcdef'.repeat(4) });
    await expect(c.execute('x-query-blocktime')).rejects.toMatchObject({ desc: expect.stringContaining('No blocktime report') });
  });

  test('quit: the reply comes first, then SHUTDOWN, and the machine quits once', async () => {
    const r = await negotiated();
    r.send('{"execute": "quit", "id": "q"}');
    expect(await r.json()).toEqual({ return: {}, id: 'q' });
    const ev = await r.json();
    expect(ev).toMatchObject({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } });
    expect(machine.quitCount).toBe(1);
    const e2 = await c.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
    expect(e2.event).toBe('SHUTDOWN');
    r.end();
  });
});

describe('quit as vm-main does it (servers closed first, then the machine)', () => {
  test('the client gets the reply, SHUTDOWN once, then the connection closes; the socket file is gone', async () => {
    const p2 = join(dir, 'vm2.qmp');
    let srv: QmpServer | undefined;
    let quits = 0;
    let down: Promise<void> | undefined;
    srv = await startQmpServer(machine, `unix:${p2}`, registry(), {
      requestQuit: () => { quits++; down = srv!.close().then(() => machine.quit()); },
    });
    const r = await Raw.connect(p2);
    await r.line();
    r.send('{"execute": "qmp_capabilities"}{"execute": "quit"}{"execute": "query-status"}');
    expect(await r.line()).toBe('{"return": {}}\r\n');
    expect(await r.line()).toBe('{"return": {}}\r\n');
    expect(await r.json()).toMatchObject({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } });
    // whatever else arrives, it is no second SHUTDOWN, and the server closes the connection
    const rest: string[] = [];
    await expect((async () => { for (;;) rest.push(await r.line()); })()).rejects.toThrow(/connection closed/);
    expect(rest.filter((l) => l.includes('SHUTDOWN'))).toEqual([]);
    expect(quits).toBe(1);
    await down;
    expect(machine.quitCount).toBe(1);
    expect(existsSync(p2)).toBe(false);
  });

  test('HMP quit through human-monitor-command quits the same way', async () => {
    const reg = registry();
    reg.addHmp({ name: 'quit|q', argsType: '', params: '', help: 'quit', handler: async (ctx) => { ctx.requestQuit(); return { text: '' }; } });
    const p3 = join(dir, 'vm3.qmp');
    let quits = 0;
    const srv = await startQmpServer(machine, `unix:${p3}`, reg, { requestQuit: () => { quits++; } });
    const c = await QmpClient.connect(p3);
    expect(await c.execute('human-monitor-command', { 'command-line': 'q' })).toBe('');
    await c.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
    expect(quits).toBe(1);
    await c.close();
    await srv.close();
  });
});

describe('clients and framing over the socket', () => {
  test('several clients at once; events go only to negotiated ones', async () => {
    const a = await QmpClient.connect(path);
    const b = await QmpClient.connect(path);
    const raw = await Raw.connect(path);
    await raw.line(); // greeting, not negotiated
    expect(server.clientCount).toBe(3);
    const [sa, sb] = await Promise.all([a.execute('query-status'), b.execute('stop')]);
    expect(sa).toMatchObject({ status: expect.any(String) });
    expect(sb).toEqual({});
    await a.waitForEvent('STOP', { timeoutMs: 5000 });
    await b.waitForEvent('STOP', { timeoutMs: 5000 });
    raw.send('{"execute": "qmp_capabilities"}');
    expect(await raw.line()).toBe('{"return": {}}\r\n'); // no STOP event before it
    await a.close(); await b.close(); raw.end();
  });

  test('1000 pipelined requests in one write are all answered, in order', async () => {
    const r = await negotiated();
    let batch = '';
    for (let i = 1; i <= 1000; i++) batch += `{"execute": "query-status", "id": ${i}}${i % 3 === 0 ? '\r\n' : ' '}`;
    r.send(batch);
    for (let i = 1; i <= 1000; i++) {
      expect((await r.json()).id).toBe(i);
    }
    r.end();
  });

  test('a request split across writes with pauses between them', async () => {
    const r = await negotiated();
    const text = '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "events", "state": true}]}, "id": 42}';
    for (let i = 0; i < text.length; i += 7) {
      r.send(text.slice(i, i + 7));
      await new Promise((res) => setTimeout(res, 2));
    }
    expect(await r.line()).toBe('{"return": {}, "id": 42}\r\n');
    r.end();
  });

  test('a client that disconnects mid-request leaves the server serving others', async () => {
    const r = await negotiated();
    r.send('{"execute": "migrate", "argum');
    r.sock.destroy();
    const c = await QmpClient.connect(path);
    expect(await c.execute('query-status')).toBeDefined();
    expect(machine.calls).toEqual([]);
    await c.close();
  });

  test('a huge garbage line gets an error reply, not unbounded buffering; the connection survives', async () => {
    const r = await negotiated();
    r.send('{"execute": "query-status", "id": "');
    const junk = Buffer.alloc(1 << 20, 'z');
    for (let i = 0; i < 8; i++) r.send(junk);
    r.send('"}\r\n{"execute": "query-status", "id": "after"}\r\n');
    expect(await r.json()).toEqual({ error: { class: 'GenericError', desc: 'JSON token size limit exceeded' } });
    let last = await r.json();
    while (last.id !== 'after') last = await r.json();
    expect(last).toEqual({ return: { running: true, status: 'running' }, id: 'after' });
    r.end();
  });
});

describe('the socket file', () => {
  test('is a 0600 socket while the server runs, with no temporary left behind, and is removed on close', async () => {
    const st = statSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['vm.qmp']);
    await server.close();
    expect(existsSync(path)).toBe(false);
  });

  test('a stale socket file is replaced; a live one or a regular file is refused', async () => {
    await expect(startQmpServer(machine, `unix:${path}`, registry())).rejects.toThrow(/already listening/);
    const file = join(dir, 'plain');
    writeFileSync(file, 'keep me');
    await expect(startQmpServer(machine, `unix:${file}`, registry())).rejects.toThrow(/exists and is not a socket/);
    await expect(startQmpServer(machine, `unix:${join(dir, 'no', 'such', 's')}`, registry())).rejects.toThrow(/does not exist/);
    // stale: the socket file of a process that was killed
    const stale = join(dir, 'stale.qmp');
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(statSync(stale).isSocket()).toBe(true);
    const s2 = await startQmpServer(machine, `unix:${stale}`, registry());
    const c = await QmpClient.connect(stale);
    expect(await c.execute('query-status')).toBeDefined();
    await c.close(); await s2.close();
  });

  test('tcp: port 0 gets a real port on loopback', async () => {
    const s = await startQmpServer(machine, 'tcp::0,server=on,wait=off', registry());
    expect(s.address).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
    const c = await QmpClient.connect(s.address);
    const events: QmpEvent[] = [];
    c.on('event', (e: QmpEvent) => events.push(e));
    expect(await c.execute('query-status')).toEqual({ running: true, status: 'running' });
    await c.close(); await s.close();
  });
});
