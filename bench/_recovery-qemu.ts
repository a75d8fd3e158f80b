// The QEMU reference for `bench recovery`: Debian's QEMU, source and
// destination, migrate through the same relay, and the same cut, pause and
// recovery are timed from QEMU's own MIGRATION events. QEMU's source
// reaches postcopy-active again through postcopy-recover (7.2; 9.1 adds
// postcopy-recover-setup before it). Its guest is the sweep boot sector
// (test/helpers/qemu.ts), vCPU 0 sweeping 240 MiB; it says nothing of pages
// sent again nor of the blocktime in the pause, so those columns are ours alone.
import { join } from 'node:path';
import type { QmpEvent } from '../src/qmp/client.js';
import { buildSweepGuest, guestOptions, startQemu, stopQemus, waitForSweep, waitStatus, type QemuProc } from '../test/helpers/qemu.js';
import type { Relay } from './_relay.js';

const MiB = 1 << 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** the wall-clock ms of the last MIGRATION event with `status` */
export function eventMs(events: readonly QmpEvent[], status: string): number {
  const e = [...events].reverse().find((x) => x.event === 'MIGRATION' && x.data?.status === status);
  if (!e) throw new Error(`no MIGRATION ${status} event`);
  return e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
}

export interface QemuRecoveryFigures { srcPausedMs: number; dstPausedMs: number; recoverMs: number }

const is = (...want: string[]) => (s: string): boolean => want.includes(s);

/** One QEMU migration cut mid-postcopy through `relay` (listening at relayPath, to dst.sock in `dir`), recovered after pauseMs. */
export async function qemuRecoveryOnce(dir: string, n: number, vcpus: number, pauseMs: number, relay: (listen: string, to: string) => Promise<Relay>): Promise<QemuRecoveryFigures> {
  const d = (name: string): string => join(dir, `qemu-${name}${n}`);
  const guest = guestOptions(buildSweepGuest(dir, 241 * MiB), 256, vcpus);
  const src = await startQemu(dir, `src${n}`, guest);
  const dst = await startQemu(dir, `dst${n}`, [...guest, '-incoming', `unix:${d('dst.sock')}`]);
  const r = await relay(d('relay.sock'), d('dst.sock'));
  try {
    await waitForSweep(src, 120_000); // the BIOS takes seconds on a loaded host
    for (const q of [src, dst]) {
      await q.qmp.execute('migrate-set-capabilities', { capabilities: ['postcopy-ram', 'events'].map((capability) => ({ capability, state: true })) });
    }
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * MiB, 'max-postcopy-bandwidth': 16 * MiB });
    await src.qmp.execute('migrate', { uri: `unix:${d('relay.sock')}` });
    await waitStatus(src, is('active'), 10_000, 5);
    await src.qmp.execute('migrate-start-postcopy');
    await waitStatus(dst, is('postcopy-active'), 10_000, 5);
    await sleep(300);
    const cutAt = r.cut();
    await waitStatus(src, is('postcopy-paused'), 10_000, 5);
    await waitStatus(dst, is('postcopy-paused'), 10_000, 5);
    await sleep(pauseMs);
    await dst.qmp.execute('migrate-recover', { uri: `unix:${d('again.sock')}` });
    const resumeAt = Date.now();
    await src.qmp.execute('migrate', { uri: `unix:${d('again.sock')}`, resume: true });
    await waitStatus(src, is('postcopy-active'), 10_000, 5);
    await waitStatus(dst, is('postcopy-active'), 10_000, 5);
    const figures = {
      srcPausedMs: eventMs(src.qmp.events, 'postcopy-paused') - cutAt,
      dstPausedMs: eventMs(dst.qmp.events, 'postcopy-paused') - cutAt,
      recoverMs: eventMs(src.qmp.events, 'postcopy-active') - resumeAt,
    };
    await src.qmp.execute('migrate-set-parameters', { 'max-postcopy-bandwidth': 0 });
    const s = await waitStatus(src, is('completed', 'failed'), 60_000, 20);
    if (s.status !== 'completed') throw new Error(`QEMU's source ended ${s.status} after its recovery`);
    return figures;
  } finally {
    r.close();
    await quit(src, dst);
  }
}

async function quit(...qs: QemuProc[]): Promise<void> {
  for (const q of qs) await q.qmp.execute('quit').catch(() => undefined);
  await stopQemus();
}
