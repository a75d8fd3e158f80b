// A postcopy migration through a real network link: two network namespaces
// joined by a veth pair with 10.x addresses that exist only inside them, and
// 2 ms of netem delay each way. The source runs in one namespace, the
// destination in the other; QMP goes over unix sockets (the filesystem is
// shared). Needs root and iproute2; skipped with the reason otherwise, except
// under CI=true, where it must run. A kernel without sch_netem (this one has
// no CONFIG_NET_SCH_NETEM) gets the delay from a relay process in the
// source's namespace instead: every chunk waits 2 ms before it goes on, in
// both directions, and the source migrates through it. A second test cuts
// the link itself mid-postcopy (the destination's veth set down: TCP sees no
// error, only the heartbeat tells), and recovers over it once it is back up.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Lab, setCaps, waitStatus, stableDigest, sweepInvariant, inPostcopy, recover, finish, statuses, TERMINAL } from './migration-procs.js';
import { requireUffd } from '../helpers/uffd-available.js';

function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  const ip = spawnSync('ip', ['-V']);
  if (ip.error || ip.status !== 0) return 'iproute2 (ip) is not installed';
  const tc = spawnSync('tc', ['-V']);
  if (tc.error || tc.status !== 0) return 'iproute2 (tc) is not installed';
  return null;
}

const reason = netnsUnavailable();
if (reason && process.env.CI === 'true') throw new Error(`the netns migration test must run in CI: ${reason}`);
if (reason) process.stderr.write(`skipping the netns migration test: ${reason}\n`);
const run = !reason && requireUffd() ? describe : describe.skip;

const MiB = 1 << 20;
const tag = `pc${process.pid % 100000}`;
const nsA = `${tag}a`;
const nsB = `${tag}b`;
const octet = 100 + (process.pid % 150);
const addrA = `10.${octet}.7.1`;
const addrB = `10.${octet}.7.2`;

/** A TCP relay that holds every chunk 2 ms in each direction (node, no deps). */
const RELAY = `
const net = require('node:net');
const [listenHost, listenPort, toHost, toPort] = process.argv.slice(2);
const DELAY_MS = 2;
const pipe = (from, to) => from.on('data', (b) => setTimeout(() => { if (!to.destroyed) to.write(b); }, DELAY_MS));
net.createServer((a) => {
  const b = net.connect(Number(toPort), toHost);
  a.setNoDelay(true); b.setNoDelay(true);
  pipe(a, b); pipe(b, a);
  // a side that ends ends the other once its last chunk went (end() flushes what write() queued; a destroy()
  // here dropped the destination's last RP_COMPLETE now and then: the source failed, 'return path closed')
  const ends = (from, to) => from.on('end', () => setTimeout(() => to.end(), DELAY_MS + 1));
  ends(a, b); ends(b, a);
  const gone = () => setTimeout(() => { a.destroy(); b.destroy(); }, 1000);
  a.on('close', gone); b.on('close', gone); a.on('error', () => {}); b.on('error', () => {});
}).listen(Number(listenPort), listenHost, () => process.stdout.write('ready\\n'));
`;

function sh(args: string[]): void {
  const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
}

run('migration across network namespaces (veth + 2 ms each way)', () => {
  let lab: Lab;
  let netem = true;
  let relay: ChildProcess | undefined;
  beforeAll(async () => {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    sh(['ip', 'link', 'add', `${tag}va`, 'netns', nsA, 'type', 'veth', 'peer', 'name', `${tag}vb`, 'netns', nsB]);
    sh(['ip', '-n', nsA, 'addr', 'add', `${addrA}/24`, 'dev', `${tag}va`]);
    sh(['ip', '-n', nsB, 'addr', 'add', `${addrB}/24`, 'dev', `${tag}vb`]);
    for (const [ns, dev] of [[nsA, `${tag}va`], [nsB, `${tag}vb`]]) {
      sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
      sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      const tc = spawnSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', '2ms'], { encoding: 'utf8' });
      if (tc.status !== 0) {
        if (!/unknown/i.test(tc.stderr)) throw new Error(`tc netem failed: ${tc.stderr}`);
        netem = false;
      }
    }
    lab = new Lab();
    if (!netem) {
      process.stderr.write('netns migration test: this kernel has no netem qdisc; a relay in the source namespace adds the 2 ms each way\n');
      const script = lab.path('relay.cjs');
      writeFileSync(script, RELAY);
      relay = spawn('ip', ['netns', 'exec', nsA, process.execPath, script, addrA, '4445', addrB, '4444'], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        relay!.stdout!.once('data', () => resolve());
        relay!.once('exit', (code) => reject(new Error(`the delay relay exited (${code})`)));
      });
    }
  });
  afterAll(async () => {
    relay?.kill();
    await lab?.close();
    spawnSync('ip', ['netns', 'del', nsA]);
    spawnSync('ip', ['netns', 'del', nsB]);
  });

  test('postcopy over TCP between the namespaces completes; the sweep goes on exactly; faults pay the link delay', async () => {
    const common = ['-m', '64M', '-smp', '1', '-workload', 'sweep,end=32M'];
    const dst = await lab.vm('dst', [...common, '-incoming', `tcp:${addrB}:4444`], ['ip', 'netns', 'exec', nsB]);
    const src = await lab.vm('src', common, ['ip', 'netns', 'exec', nsA]);
    await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime']);
    await setCaps(src, ['postcopy-ram']);
    await new Promise((r) => setTimeout(r, 300));
    // straight over the netem link, or through the delaying relay
    await src.qmp.execute('migrate', { uri: netem ? `tcp:${addrB}:4444` : `tcp:${addrA}:4445` });
    await waitStatus(src, ['active']);
    await src.qmp.execute('migrate-start-postcopy');
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never, 50000), waitStatus(dst, TERMINAL as never, 50000)]);
    expect([s.status, d.status, s['error-desc']]).toEqual(['completed', 'completed', undefined]);
    const bt = d['x-blocktime']!;
    expect(bt.faults).toBeGreaterThan(0);
    // a page request crosses the 2 ms link twice (faults on pages already in
    // flight in the background stream can be served sooner)
    expect(bt.latencyMaxNs).toBeGreaterThanOrEqual(4_000_000);
    await dst.qmp.execute('stop');
    expect(sweepInvariant(await stableDigest(dst), (32 << 20) / 4096)).toBeNull();
  });

  test('the link cut mid-postcopy (ip link set down): both sides pause on the heartbeat; back up, recovered over it, it completes; the sweep holds', async () => {
    const cutLab = new Lab(); // the first test's VMs live on in `lab`
    const heartbeatMs = 500;
    const incoming = `tcp:${addrB}:4444`;
    const connect = netem ? incoming : `tcp:${addrA}:4445`; // the relay in the source's namespace, if any, stays: the cut is the veth's
    try {
      const { src, dst } = await inPostcopy(cutLab, {
        ram: '64M', workload: 'sweep,end=32M', incoming, connect, heartbeatMs, bandwidth: 2 * MiB,
        srcWrapper: ['ip', 'netns', 'exec', nsA], dstWrapper: ['ip', 'netns', 'exec', nsB],
      });
      await new Promise((r) => setTimeout(r, 300));
      // the destination's end of the veth down: the source's end loses its carrier too, and nothing gets through
      sh(['ip', '-n', nsB, 'link', 'set', `${tag}vb`, 'down']);
      try {
        // heartbeat + room for a loaded machine; each side finds the silence on its own
        const [s, d] = await Promise.all([waitStatus(src, ['postcopy-paused'], heartbeatMs + 4000), waitStatus(dst, ['postcopy-paused'], heartbeatMs + 4000)]);
        expect(s['error-desc']).toMatch(/nothing came from the peer for \d+ ms \(x-postcopy-heartbeat-ms\)/);
        expect(d['error-desc']).toMatch(/nothing came from the peer for \d+ ms \(x-postcopy-heartbeat-ms\)/);
      } finally {
        sh(['ip', '-n', nsB, 'link', 'set', `${tag}vb`, 'up']);
      }
      await recover(src, dst, incoming, connect);
      await finish(src, dst);
      expect(statuses(src).slice(2)).toEqual(['postcopy-active', 'postcopy-paused', 'postcopy-recover-setup', 'postcopy-recover', 'postcopy-active', 'completed']);
      expect(statuses(dst).slice(2)).toEqual(['postcopy-active', 'postcopy-paused', 'postcopy-recover', 'postcopy-active', 'completed']);
      await dst.qmp.execute('stop');
      expect(sweepInvariant(await stableDigest(dst), (32 << 20) / 4096)).toBeNull();
    } finally {
      await cutLab.close();
    }
  });
});
