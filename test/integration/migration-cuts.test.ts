// Issue 13, postcopy recovery, links that go wrong under a real migration
// between two VM processes, through a relay (test/helpers/relay.ts): a link
// that goes silent without closing (only the heartbeat can tell: both sides
// pause on their own), one that does so inside a recovery's handshake (the
// handshake's time limit tells), and one migration cut again and again at random
// moments of postcopy, each cut recovered over a fresh relay, with nothing
// lost at the end (every page by digest with -S, the sweep with running vCPUs).
import { Lab, waitStatus, digest, stableDigest, sweepInvariant, inPostcopy, recover, finish, statuses } from './migration-procs.js';
import type { VmProcess } from '../../src/migration/local-destination.js';
import type { MigrationStatus } from '../../src/migration/api.js';
import { Relay } from '../helpers/relay.js';
import { mulberry32 } from '../helpers/prng.js';
import { requireUffd } from '../helpers/uffd-available.js';

const MiB = 1 << 20;
const run = requireUffd() ? describe : describe.skip;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Cut = 'relay' | 'pause-src' | 'pause-dst';
const CUTS = 20;

/** the moves of postcopy recovery each side may make (REFERENCE.md §8), from postcopy-active on */
const SOURCE_MOVES = ['postcopy-active>postcopy-paused', 'postcopy-paused>postcopy-recover-setup', 'postcopy-recover-setup>postcopy-recover',
  'postcopy-recover-setup>postcopy-paused', 'postcopy-recover>postcopy-active', 'postcopy-recover>postcopy-paused', 'postcopy-active>completed'];
const DESTINATION_MOVES = ['postcopy-active>postcopy-paused', 'postcopy-paused>postcopy-recover', 'postcopy-recover>postcopy-active',
  'postcopy-recover>postcopy-paused', 'postcopy-active>completed'];

/** the moves of `seen` (MIGRATION statuses) from its first postcopy-active on that are not in `allowed` */
function strayMoves(seen: unknown[], allowed: string[]): string[] {
  const from = seen.indexOf('postcopy-active');
  const moves = seen.slice(from).map((x, i, a) => `${a[i - 1]}>${x}`).slice(1);
  return moves.filter((m) => !allowed.includes(m));
}

/** waits until `want` holds for both sides' statuses */
async function both(src: VmProcess, dst: VmProcess, want: MigrationStatus, ms: number): Promise<void> {
  await Promise.all([waitStatus(src, [want], ms), waitStatus(dst, [want], ms)]);
}

/** waits until the VM's MIGRATION events have not changed for `quietMs` (a connection it still reads is read) */
async function settled(vm: VmProcess, quietMs: number): Promise<void> {
  for (let n = -1; n !== vm.events.length;) {
    n = vm.events.length;
    await sleep(quietMs);
  }
}

/**
 * One migration in postcopy through a relay, cut at least CUTS times at
 * random moments (seeded: CUTS_SEED=N repeats a run): while postcopy-active
 * the relay's connections killed, or migrate_pause on either side, and
 * sometimes the recovery's own link cut after a random number of its bytes
 * (inside the handshake, or just after it). Each time both sides pause and
 * recover over a fresh relay. Returns the pair, completed.
 */
async function cutAgainAndAgain(lab: Lab, relay: (name: string, target: string) => Promise<Relay>, o: { ramMiB: number; smp?: number; workload: string;
  dstArgs?: string[]; bandwidth: number; label: string }): Promise<{ src: VmProcess; dst: VmProcess }> {
  const seed = Number(process.env.CUTS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  process.stderr.write(`${o.label}: CUTS_SEED=${seed}\n`);
  const rnd = mulberry32(seed);
  const cases: string[] = [];
  let r = await relay('relay-0.sock', 'first.sock');
  let target = 'first.sock';
  let links = 0;
  const { src, dst } = await inPostcopy(lab, { ram: `${o.ramMiB}M`, smp: o.smp, workload: o.workload, dstArgs: o.dstArgs, connect: r.uri, bandwidth: o.bandwidth });

  /** migrate_recover (unless the destination still listens: a connection refused before its header leaves it
   *  listening, QEMU's "triggered already"), migrate -r over a fresh relay; `cutAfter`: its link cut after so many bytes */
  const recoverOnce = async (cutAfter: number | null): Promise<void> => {
    const name = `dst-${++links}.sock`;
    try {
      await dst.qmp.execute('migrate-recover', { uri: `unix:${lab.path(name)}` });
      target = name;
    } catch (e) {
      if (!/Migrate recovery is triggered already/.test((e as Error).message)) throw e;
    }
    const old = r;
    r = await relay(`relay-${links}.sock`, target);
    await old.close();
    const fired = cutAfter === null ? null : r.cutAfter(cutAfter);
    await src.qmp.execute('migrate', { uri: r.uri, resume: true });
    if (fired === null) {
      await both(src, dst, 'postcopy-active', 10000);
      return;
    }
    await Promise.race([fired, sleep(10000).then(async () => {
      const q = [await src.queryMigrate(), await dst.queryMigrate()].map((i) => `${i.status} (${i['error-desc'] ?? ''}), remaining ${i.ram?.remaining}`);
      throw new Error(`the recovery's link never carried ${cutAfter} bytes (${r.carried} went): source ${q[0]}, destination ${q[1]}`);
    })]);
    await both(src, dst, 'postcopy-paused', 5000);
    await settled(dst, 300);
    await both(src, dst, 'postcopy-paused', 5000);
  };

  try {
    for (let cut = 1; cut <= CUTS; cut++) {
      const after = Math.round(10 + rnd() * 110); // ms of postcopy-active before the cut
      const x = rnd();
      const how: Cut = x < 0.6 ? 'relay' : x < 0.8 ? 'pause-src' : 'pause-dst';
      cases.push(`#${cut} ${how} after ${after} ms`);
      await sleep(after);
      const st = [(await src.queryMigrate()).status, (await dst.queryMigrate()).status];
      if (st.join() !== 'postcopy-active,postcopy-active') throw new Error(`before cut ${cut}: ${st.join('/')} (postcopy must last through ${CUTS} cuts)`);
      if (how === 'relay') r.cut();
      else await (how === 'pause-src' ? src : dst).qmp.execute('migrate-pause');
      await both(src, dst, 'postcopy-paused', 5000);
      // a third of the recoveries have their own link cut (again, a third of the time), each a cut of its own
      while (cut < CUTS && rnd() < 1 / 3) {
        const bytes = Math.floor(rnd() * ((o.ramMiB * MiB) / 4096 / 8 + 6000)); // the received-page bitmap, and some
        cases.push(`#${++cut} the recovery's link after ${bytes} bytes`);
        await recoverOnce(bytes);
      }
      cases.push('recovered');
      await recoverOnce(null);
    }
    await finish(src, dst);
  } catch (e) {
    throw new Error(`${o.label}, CUTS_SEED=${seed}, cuts so far: ${cases.join('; ')}: ${(e as Error).message}`);
  }
  // every cut paused the source; each side went only the ways of REFERENCE.md §8
  const s = statuses(src);
  const d = statuses(dst);
  expect(s.filter((x) => x === 'postcopy-paused').length).toBe(CUTS);
  expect(strayMoves(s, SOURCE_MOVES)).toEqual([]);
  expect(strayMoves(d, DESTINATION_MOVES)).toEqual([]);
  // the destination's outages are its pauses from postcopy-active; the blocktime counts them, and its time in them
  const outages = d.filter((x, i) => x === 'postcopy-paused' && d[i - 1] === 'postcopy-active').length;
  expect(outages).toBeGreaterThanOrEqual(cases.filter((c) => / after \d+ ms$/.test(c)).length);
  const bt = (await dst.queryMigrate())['x-blocktime']!;
  expect(bt.pauses).toBe(outages);
  expect(bt.pausedNs).toBeGreaterThan(0);
  for (const v of bt.vcpus) {
    expect(v.pausedBlocktimeNs).toBeLessThanOrEqual(bt.pausedNs!);
    expect(v.pausedBlocktimeNs).toBeLessThanOrEqual(v.blocktimeNs);
  }
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
    const [s, d] = await Promise.all([waitStatus(src, ['postcopy-paused'], heartbeatMs + 4000), waitStatus(dst, ['postcopy-paused'], heartbeatMs + 4000)]);
    expect(s['error-desc']).toMatch(/nothing came from the peer for \d+ ms \(x-postcopy-heartbeat-ms\)/);
    expect(d['error-desc']).toMatch(/nothing came from the peer for \d+ ms \(x-postcopy-heartbeat-ms\)/);
    await recover(src, dst, `unix:${lab.path('direct.sock')}`);
    await finish(src, dst);
    expect(statuses(src).slice(2)).toEqual(['postcopy-active', 'postcopy-paused', 'postcopy-recover-setup', 'postcopy-recover', 'postcopy-active', 'completed']);
    expect(statuses(dst).slice(2)).toEqual(['postcopy-active', 'postcopy-paused', 'postcopy-recover', 'postcopy-active', 'completed']);
    await dst.qmp.execute('stop');
    expect(sweepInvariant(await stableDigest(dst), (48 * MiB) / 4096)).toBeNull();
  });

  test('the main stream alone goes silent (the urgent channel still beats): the source pauses once its push is held up for the heartbeat, the destination follows; recovered, complete', async () => {
    const heartbeatMs = 600;
    const r = await relay('relay.sock', 'first.sock');
    const { src, dst } = await inPostcopy(lab, { ram: '128M', workload: 'sweep,end=120M', connect: r.uri, heartbeatMs, bandwidth: 64 * MiB });
    r.stallOne(0);
    const [s, d] = await Promise.all([waitStatus(src, ['postcopy-paused'], heartbeatMs + 4000), waitStatus(dst, ['postcopy-paused'], heartbeatMs + 4000)]);
    expect(s['error-desc']).toMatch(/main stream: not one byte went out for \d+ ms, the socket or the window of unacknowledged bytes full \(x-postcopy-heartbeat-ms\)/);
    expect(d['error-desc']).toMatch(/urgent channel/);
    await recover(src, dst, `unix:${lab.path('direct.sock')}`);
    await finish(src, dst);
    await dst.qmp.execute('stop');
    expect(sweepInvariant(await stableDigest(dst), (120 * MiB) / 4096)).toBeNull();
  });

  test('a recovery whose link goes silent inside its handshake: each side is paused again on its own within the step limit; a direct recovery completes, every page identical', async () => {
    const seed = Number(process.env.CUTS_SEED ?? Math.floor(Math.random() * 2 ** 31));
    // past the recovery's header (under 300 bytes), inside the received-page bitmap (48 MiB: 1.5 KiB) or just after it (the handshake: ~1.7 KB)
    const bytes = 300 + Math.floor(mulberry32(seed)() * 1300);
    process.stderr.write(`silent handshake: CUTS_SEED=${seed}, silent after ${bytes} bytes\n`);
    const { src, dst } = await inPostcopy(lab, { ram: '48M', workload: 'random,end=40M,seed=8', dstArgs: ['-S'] });
    await src.qmp.execute('migrate-pause');
    await waitStatus(dst, ['postcopy-paused'], 5000);
    await dst.qmp.execute('migrate-recover', { uri: `unix:${lab.path('dst-1.sock')}` });
    const r = await relay('relay-1.sock', 'dst-1.sock');
    const silent = r.cutAfter(bytes, true);
    await src.qmp.execute('migrate', { uri: r.uri, resume: true });
    await silent;
    // neither side hears from the other again: the step limit (10 s) + room for a loaded machine
    const [s, d] = await Promise.all([waitStatus(src, ['postcopy-paused'], 15000), waitStatus(dst, ['postcopy-paused'], 15000)]);
    const tell = `(CUTS_SEED=${seed}, silent after ${bytes} bytes)`;
    expect([s['error-desc'], tell]).toEqual([expect.stringMatching(/^recovery: no (received-page bitmap|acknowledgement of RESUME) from the destination within 10 s$/), tell]);
    expect([d['error-desc'], tell]).toEqual([expect.stringMatching(/^recovery: no (RESUME|urgent channel) from the source within 10 s$/), tell]);
    expect(statuses(dst).slice(-3)).toEqual(['postcopy-paused', 'postcopy-recover', 'postcopy-paused']);
    await recover(src, dst, `unix:${lab.path('direct.sock')}`);
    await finish(src, dst);
    expect(await digest(dst)).toEqual(await digest(src));
  });

  test(`${CUTS} cuts at random moments of one postcopy, destination -S: each recovered over a fresh relay; every page identical`, async () => {
    const { src, dst } = await cutAgainAndAgain(lab, relay, { ramMiB: 48, workload: 'random,end=40M,seed=7', dstArgs: ['-S'], bandwidth: 2 * MiB, label: '-S' });
    expect(await digest(dst)).toEqual(await digest(src));
  });

  test(`${CUTS} cuts at random moments of one postcopy, vCPUs running: each recovered over a fresh relay; the sweep holds`, async () => {
    const { dst } = await cutAgainAndAgain(lab, relay, { ramMiB: 320, workload: 'sweep,end=304M', bandwidth: 2 * MiB, label: 'running' });
    await dst.qmp.execute('stop');
    expect(sweepInvariant(await stableDigest(dst), (304 * MiB) / 4096)).toBeNull();
  });

  test(`${CUTS} cuts at random moments of one postcopy, 4 vCPUs sweeping a slice each: every slice's sweep holds`, async () => {
    const { dst } = await cutAgainAndAgain(lab, relay, { ramMiB: 320, smp: 4, workload: 'sweep,end=320M,split=on', bandwidth: 2 * MiB, label: '4 vCPUs' });
    await dst.qmp.execute('stop');
    const d = await stableDigest(dst);
    const slice = d.length / 4;
    for (let i = 0; i < 4; i++) expect([i, sweepInvariant(d.slice(i * slice, (i + 1) * slice), slice)]).toEqual([i, null]);
  });
});
