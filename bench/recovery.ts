// `npm run bench -- recovery [--json] [--runs N] [--pause-ms MS]`: what a
// postcopy link loss and its recovery cost (issue 13), for 1 and 4 vCPUs:
// two VM processes migrate through a relay on unix sockets; mid-postcopy the
// relay drops every connection (both sides see the link go); after
// --pause-ms the destination runs migrate-recover and the source migrate
// {"resume": true} on a new socket. Per row, medians and ranges over the runs:
//  - cut -> postcopy-paused on each side (the MIGRATION events' timestamps);
//  - migrate -r -> postcopy-active on the source (the handshake);
//  - pages sent again (the destination lacked them: lost in flight) and
//    pages the destination asked for again;
//  - the destination's blocktime inside the pause against the pause's length
//    (a vCPU that touches a missing page in the outage is blocked for all of
//    it: its blocktime in the pause should come near the pause).
// Beside each of our runs, in the same minutes, Debian's QEMU through the
// same relay and the same cut (bench/_recovery-qemu.ts): its cut -> paused
// and migrate -r -> postcopy-active, and ours over QEMU's. QEMU says nothing
// of pages sent again nor of the blocktime in the pause (REFERENCE.md §8).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmProcess } from '../src/migration/local-destination.js';
import type { MigrationInfo, MigrationStatus } from '../src/migration/api.js';
import { median, round } from './_migrations.js';
import { numberOption } from './_options.js';
import { relay } from './_relay.js';
import { eventMs, qemuRecoveryOnce, type QemuRecoveryFigures } from './_recovery-qemu.js';
import { requireQemu, QEMU } from '../test/helpers/qemu.js';

const MiB = 1 << 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(vm: VmProcess, want: MigrationStatus[], ms: number): Promise<MigrationInfo> {
  const until = Date.now() + ms;
  for (;;) {
    const info = await vm.queryMigrate();
    if (want.includes(info.status)) return info;
    if (Date.now() > until) throw new Error(`status ${info.status} (${info['error-desc'] ?? ''}), wanted ${want.join('/')}`);
    await sleep(5);
  }
}

interface RunFigures { srcPausedMs: number; dstPausedMs: number; recoverMs: number; resent: number; rerequested: number; pauseMs: number; inPauseMs: number }

async function once(dir: string, n: number, vcpus: number, pauseMs: number): Promise<RunFigures> {
  const common = ['-m', '256M', '-smp', String(vcpus), '-workload', 'sweep,end=240M'];
  const d = (name: string): string => join(dir, `${name}${n}`);
  const dst = await VmProcess.spawn([...common, '-incoming', `unix:${d('dst.sock')}`], d('dst.qmp'));
  const src = await VmProcess.spawn(common, d('src.qmp'));
  const r = await relay(d('relay.sock'), d('dst.sock'));
  try {
    for (const vm of [dst, src]) {
      await vm.qmp.execute('migrate-set-capabilities', { capabilities: ['postcopy-ram', 'events', ...(vm === dst ? ['postcopy-blocktime'] : [])].map((capability) => ({ capability, state: true })) });
    }
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * MiB, 'max-postcopy-bandwidth': 16 * MiB });
    await sleep(300);
    await src.qmp.execute('migrate', { uri: `unix:${d('relay.sock')}` });
    await waitFor(src, ['active'], 10000);
    await src.qmp.execute('migrate-start-postcopy');
    await waitFor(dst, ['postcopy-active'], 10000);
    await sleep(300);
    const cutAt = r.cut();
    await waitFor(src, ['postcopy-paused'], 10000);
    await waitFor(dst, ['postcopy-paused'], 10000);
    await sleep(pauseMs);
    await dst.qmp.execute('migrate-recover', { uri: `unix:${d('again.sock')}` });
    const resumeAt = Date.now();
    await src.qmp.execute('migrate', { uri: `unix:${d('again.sock')}`, resume: true });
    await waitFor(src, ['postcopy-active'], 10000);
    await waitFor(dst, ['postcopy-active'], 10000);
    await src.qmp.execute('migrate-set-parameters', { 'max-postcopy-bandwidth': 0 });
    const s = await waitFor(src, ['completed', 'failed'], 60000);
    const f = await waitFor(dst, ['completed', 'failed'], 60000);
    if (s.status !== 'completed' || f.status !== 'completed') throw new Error(`source ${s.status}, destination ${f.status}: ${s['error-desc'] ?? f['error-desc']}`);
    const bt = f['x-blocktime']!;
    return {
      srcPausedMs: eventMs(src.events, 'postcopy-paused') - cutAt,
      dstPausedMs: eventMs(dst.events, 'postcopy-paused') - cutAt,
      recoverMs: eventMs(src.events, 'postcopy-active') - resumeAt,
      resent: s['x-recovery']?.['pages-resent'] ?? 0,
      rerequested: f['x-recovery']?.['pages-requested-again'] ?? 0,
      pauseMs: (bt.pausedNs ?? 0) / 1e6,
      inPauseMs: Math.max(...bt.vcpus.map((v) => v.pausedBlocktimeNs ?? 0)) / 1e6,
    };
  } finally {
    r.close();
    await Promise.all([src.quit(), dst.quit()].map((p) => p.catch(() => undefined)));
  }
}

const stats = (xs: number[], digits = 1): { median: number; min: number; max: number } =>
  ({ median: round(median(xs), digits), min: round(Math.min(...xs), digits), max: round(Math.max(...xs), digits) });

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const runs = numberOption(argv, 'runs', 3, 1);
  const pauseMs = numberOption(argv, 'pause-ms', 500, 0);
  const dir = mkdtempSync(join(tmpdir(), 'pc-bench-recovery-'));
  const rows: Record<string, unknown>[] = [];
  try {
    const withQemu = requireQemu();
    for (const vcpus of [1, 4]) {
      const all: RunFigures[] = [];
      const qemu: QemuRecoveryFigures[] = [];
      for (let i = 0; i < runs; i++) { // alternating: the host's swings hit both alike
        all.push(await once(dir, vcpus * 100 + i, vcpus, pauseMs));
        if (withQemu) qemu.push(await qemuRecoveryOnce(dir, vcpus * 100 + i, vcpus, pauseMs, relay));
      }
      const col = (k: keyof RunFigures): number[] => all.map((x) => x[k]);
      const q = (k: keyof QemuRecoveryFigures): number[] => qemu.map((x) => x[k]);
      const reference = withQemu ? {
        qemu_cut_to_paused_source_ms: stats(q('srcPausedMs')),
        qemu_cut_to_paused_destination_ms: stats(q('dstPausedMs')),
        qemu_resume_to_active_ms: stats(q('recoverMs')),
        resume_to_active_ratio: round(median(col('recoverMs')) / median(q('recoverMs')), 2),
      } : { qemu: `not run: ${QEMU} missing` };
      rows.push({
        vcpus,
        cut_to_paused_source_ms: stats(col('srcPausedMs')),
        cut_to_paused_destination_ms: stats(col('dstPausedMs')),
        resume_to_active_ms: stats(col('recoverMs')),
        pages_sent_again: stats(col('resent'), 0),
        pages_requested_again: stats(col('rerequested'), 0),
        pause_ms: stats(col('pauseMs')),
        worst_vcpu_blocktime_in_pause_ms: stats(col('inPauseMs')),
        ...reference,
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { bench: 'recovery', runs, pause_ms_asked: pauseMs, guest: '256 MiB, sweep over 240 MiB, push 16 MiB/s', rows };
}
