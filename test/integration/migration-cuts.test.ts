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

type Cut = 'relay' | 'pause-src' | 'pause-dst';
const CUTS = 20;

/**
 * One migration in postcopy through a relay, cut CUTS times at random moments
 * (seeded: CUTS_SEED=N repeats a run): the relay's connections killed, or
 * migrate_pause on either side; each time both sides pause, and recover over a
 * fresh relay to a fresh destination socket. Returns the pair, completed.
 */
async function cutAgainAndAgain(lab: Lab, relay: (name: string, target: string) => Promise<Relay>, o: { ram: string; workload: string;
  dstArgs?: string[]; bandwidth: number; label: string }): Promise<{ src: VmProcess; dst: VmProcess }> {
  const seed = Number(process.env.CUTS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  process.stderr.write(`${o.label}: CUTS_SEED=${seed}\n`);
  const rnd = mulberry32(seed);
  const cases: string[] = [];
  const fail = (e: unknown): never => {
    throw new Error(`${o.label}, CUTS_SEED=${seed}, cuts so far: ${cases.join('; ')}: ${(e as Error).message}`);
  };
  let r = await relay('relay-0.sock', 'first.sock');
  const { src, dst } = await inPostcopy(lab, { ram: o.ram, workload: o.workload, dstArgs: o.dstArgs, connect: r.uri, bandwidth: o.bandwidth });
  try {
    for (let i = 1; i <= CUTS; i++) {
      const after = Math.round(10 + rnd() * 190); // ms of postcopy-active before the cut
      const x = rnd();
      const how: Cut = x < 0.6 ? 'relay' : x < 0.8 ? 'pause-src' : 'pause-dst';
      cases.push(`#${i} ${how} after ${after} ms`);
      await sleep(after);
      const st = [(await src.queryMigrate()).status, (await dst.queryMigrate()).status];
      if (st.join() !== 'postcopy-active,postcopy-active') throw new Error(`before cut ${i}: ${st.join('/')} (postcopy must last through ${CUTS} cuts)`);
      if (how === 'relay') r.cut();
      else await (how === 'pause-src' ? src : dst).qmp.execute('migrate-pause');
      await Promise.all([waitStatus(src, ['postcopy-paused'], 5000), waitStatus(dst, ['postcopy-paused'], 5000)]);
      const old = r;
      r = await relay(`relay-${i}.sock`, `dst-${i}.sock`);
      await old.close();
      await recover(src, dst, `unix:${lab.path(`dst-${i}.sock`)}`, r.uri);
    }
    await finish(src, dst);
  } catch (e) {
    fail(e);
  }
  const pauses = statuses(dst).filter((x) => x === 'postcopy-paused').length;
  expect(pauses).toBe(CUTS);
  expect((await dst.queryMigrate())['x-blocktime']!.pauses).toBe(CUTS);
  return { src, dst };
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

  test(`${CUTS} cuts at random moments of one postcopy, destination -S: each recovered over a fresh relay; every page identical`, async () => {
    const { src, dst } = await cutAgainAndAgain(lab, relay, { ram: '48M', workload: 'random,end=40M,seed=7', dstArgs: ['-S'], bandwidth: 2 * MiB, label: '-S' });
    expect(await digest(dst)).toEqual(await digest(src));
  });

  test(`${CUTS} cuts at random moments of one postcopy, vCPUs running: each recovered over a fresh relay; the sweep holds`, async () => {
    const { dst } = await cutAgainAndAgain(lab, relay, { ram: '64M', workload: 'sweep,end=48M', bandwidth: 2 * MiB, label: 'running' });
    await dst.qmp.execute('stop');
    expect(sweepInvariant(await stableDigest(dst), (48 * MiB) / 4096)).toBeNull();
  });
});
