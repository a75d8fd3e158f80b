// A postcopy migration through a real network link: two network namespaces
// joined by a veth pair with 10.x addresses that exist only inside them, and
// 2 ms of netem delay each way. The source runs in one namespace, the
// destination in the other; QMP goes over unix sockets (the filesystem is
// shared). Needs root and iproute2; skipped with the reason otherwise, except
// under CI=true, where it must run. A kernel without sch_netem (this one has
// no CONFIG_NET_SCH_NETEM) runs the link without the delay and says so.
import { spawnSync } from 'node:child_process';
import { Lab, setCaps, waitStatus, stableDigest, sweepInvariant, TERMINAL } from './migration-procs.js';
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

const tag = `pc${process.pid % 100000}`;
const nsA = `${tag}a`;
const nsB = `${tag}b`;
const octet = 100 + (process.pid % 150);
const addrA = `10.${octet}.7.1`;
const addrB = `10.${octet}.7.2`;

function sh(args: string[]): void {
  const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
}

run('migration across network namespaces (veth + netem 2 ms)', () => {
  let lab: Lab;
  let netem = true;
  beforeAll(() => {
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
    if (!netem) process.stderr.write('netns migration test: this kernel has no netem qdisc; the veth link runs without the 2 ms delay\n');
    lab = new Lab();
  });
  afterAll(async () => {
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
    await src.qmp.execute('migrate', { uri: `tcp:${addrB}:4444` });
    await waitStatus(src, ['active']);
    await src.qmp.execute('migrate-start-postcopy');
    const [s, d] = await Promise.all([waitStatus(src, TERMINAL as never, 50000), waitStatus(dst, TERMINAL as never, 50000)]);
    expect([s.status, d.status, s['error-desc']]).toEqual(['completed', 'completed', undefined]);
    const bt = d['x-blocktime']!;
    expect(bt.faults).toBeGreaterThan(0);
    // a page request crosses the 2 ms link twice
    if (netem) expect(bt.latencyMaxNs).toBeGreaterThanOrEqual(4_000_000);
    await dst.qmp.execute('stop');
    expect(sweepInvariant(await stableDigest(dst), (32 << 20) / 4096)).toBeNull();
  });
});
