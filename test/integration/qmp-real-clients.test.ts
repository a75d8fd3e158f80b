// Real QMP clients against our server: netcat-openbsd (the seed's printf |
// nc -U example, verbatim) and socat. The server runs in this process with
// the real command registry over a fake Machine; the whole-VM runs are in
// qmp-postcopy.test.ts. Without nc/socat the tests are skipped with the
// reason printed, except under CI=true where that is a failure.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startQmpServer, type QmpServer } from '../../src/monitor/qmp.js';
import { createRegistry } from '../../src/monitor/commands.js';
import { FakeMachine } from '../helpers/qmp-fake-machine.js';

function have(tool: string, pkg: string): boolean {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`]);
  if (r.status === 0) return true;
  const why = `${tool} is not installed (apt-get install -y ${pkg})`;
  if (process.env.CI === 'true') throw new Error(`CI: ${why}`);
  process.stdout.write(`skipping: ${why}\n`);
  return false;
}

const hasNc = have('nc', 'netcat-openbsd');
const hasSocat = have('socat', 'socat');

/** Runs a client with `input` on stdin; resolves with its stdout when it exits (bounded). */
function run(cmd: string, args: string[], input: string, timeoutMs = 20000): Promise<{ stdout: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`${cmd} ${args.join(' ')} did not exit within ${timeoutMs} ms; stdout so far: ${stdout}`)); }, timeoutMs);
    p.on('error', (e) => { clearTimeout(t); reject(e); });
    p.on('close', (code) => {
      clearTimeout(t);
      if (stderr.trim() !== '') process.stdout.write(`${cmd} stderr: ${stderr}\n`);
      resolve({ stdout, code });
    });
    p.stdin.end(input);
  });
}

// The seed's example, byte for byte what its printf produces.
const SEED_INPUT = '{"execute" : "qmp_capabilities"}\r\n {"execute": "migrate-set-capabilities" , "arguments":   {\n'
  + '"capabilities": [ { "capability": "postcopy-blocktime", "state":\ntrue } ] } }';

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 10}, "package": "postcopy 0.1.0"}, "capabilities": []}}\r\n';

let dir: string;
let machine: FakeMachine;
let server: QmpServer;
let path: string;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-nc-'));
  path = join(dir, 'migrate-vm-monitor.sock');
  machine = new FakeMachine();
  server = await startQmpServer(machine, `unix:${path},server=on,wait=off`, createRegistry());
});
afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

(hasNc ? test : test.skip)("the seed's printf | nc -N -U example: greeting, two {\"return\": {}}, capability on", async () => {
  const { stdout, code } = await run('nc', ['-N', '-U', path], SEED_INPUT);
  expect(code).toBe(0);
  expect(stdout).toBe(`${GREETING}{"return": {}}\r\n{"return": {}}\r\n`);
  expect(machine.capabilities().find((c) => c.capability === 'postcopy-blocktime')?.state).toBe(true);
  // and the console agrees
  const hmp = await run('nc', ['-N', '-U', path],
    '{"execute": "qmp_capabilities"}\n{"execute": "human-monitor-command", "arguments": {"command-line": "info migrate_capabilities"}}\n');
  const lines = hmp.stdout.trim().split('\r\n');
  const text = JSON.parse(lines[2]).return as string;
  expect(text).toMatch(/^postcopy-blocktime: on$/m);
});

(hasNc ? test : test.skip)("the seed's example verbatim, plain nc -U: the replies arrive (nc itself waits for the server, as with QEMU)", async () => {
  const p = spawn('nc', ['-U', path], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  const want = `${GREETING}{"return": {}}\r\n{"return": {}}\r\n`;
  try {
    p.stdin.end(SEED_INPUT);
    const deadline = Date.now() + 10000;
    while (stdout.length < want.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(stdout).toBe(want);
    expect(p.exitCode).toBeNull(); // nc without -N keeps the connection open after its input ends
  } finally {
    p.kill('SIGTERM');
  }
  expect(machine.capabilities().find((c) => c.capability === 'postcopy-blocktime')?.state).toBe(true);
});

(hasNc ? test : test.skip)('nc -q 1 (implies -N) works too; a malformed line between good ones is answered and skipped', async () => {
  const input = '{"execute":"qmp_capabilities"}\n{"execute": "query-status",}\n{"execute":"query-status","id":"s"}\n';
  const { stdout } = await run('nc', ['-q', '1', '-U', path], input);
  expect(stdout).toBe(`${GREETING}{"return": {}}\r\n`
    + '{"error": {"class": "GenericError", "desc": "JSON parse error, key is not a string in object"}}\r\n'
    + '{"return": {"running": true, "status": "running"}, "id": "s"}\r\n');
});

(hasSocat ? test : test.skip)('socat - UNIX-CONNECT: pipelined requests with \\r\\n, answered in order', async () => {
  let input = '{"execute": "qmp_capabilities"}\r\n';
  for (let i = 0; i < 50; i++) input += `{"execute": "query-status", "id": ${i}}\r\n`;
  const { stdout, code } = await run('socat', ['-t', '5', '-', `UNIX-CONNECT:${path}`], input);
  expect(code).toBe(0);
  const lines = stdout.split('\r\n').filter((l) => l !== '');
  expect(lines[0]).toBe(GREETING.trimEnd());
  expect(lines[1]).toBe('{"return": {}}');
  expect(lines.slice(2).map((l) => JSON.parse(l).id)).toEqual([...Array(50).keys()]);
});

(hasSocat ? test : test.skip)('socat over TCP', async () => {
  const tcp = await startQmpServer(machine, 'tcp:127.0.0.1:0,server=on,wait=off', createRegistry());
  try {
    const port = tcp.address.split(':').pop()!;
    const { stdout } = await run('socat', ['-t', '5', '-', `TCP:127.0.0.1:${port}`],
      '{"execute": "qmp_capabilities"}\n{"execute": "query-migrate-capabilities", "id": 1}\n');
    const lines = stdout.split('\r\n').filter((l) => l !== '');
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[2])).toMatchObject({ id: 1, return: expect.arrayContaining([{ capability: 'events', state: false }]) });
  } finally {
    await tcp.close();
  }
});
