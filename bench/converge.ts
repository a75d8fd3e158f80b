// `npm run bench -- converge [--json] [--reps N (3)] [--none-s S (15)] [--no-qemu]`:
// QEMU's convergence tools on the workload of issue 12, ours beside QEMU 7.2's
// in the same run, at a matched guest dirty rate: one vCPU sweeping 64 MiB (a
// write to every page, over and over: ours `sweep,start=1M,end=65M`, QEMU's
// the tests' boot-sector guest, test/helpers/qemu.ts, KVM when /dev/kvm
// opens), 128 MiB of RAM, max-bandwidth 50 MiB/s, loopback TCP.
//
// Per side and --reps, alternating (machine load hits both alike):
//  - calc-dirty-rate over 1 s, page-sampling and dirty-bitmap: the guest's
//    dirty rate (MB/s) as each side measures it (the sweep dirties its 64 MiB
//    every period, so both should read ~64);
//  - precopy without a tool for --none-s seconds: whether it converged, and
//    the dirty syncs it went through;
//  - auto-converge (cpu-throttle-initial 60, increment 20): seconds to
//    completed, the highest cpu-throttle-percentage, downtime;
//  - dirty-limit (vcpu-dirty-limit 4): the same; QEMU needs KVM's dirty ring
//    (`-accel kvm,dirty-ring-size=4096`): when it refuses, its error is kept.
// Medians and ranges per row; `ratio` = ours / QEMU's time to converge.
// Last, the cost of the knobs to a vCPU that does not use them: one vCPU
// thread sweeping 32 MiB in this process, accesses per second with every hook
// off, with the dirty log on, and with a 1 % throttle (median of --reps 1 s
// windows each; `ratio` = on / off).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmProcess, freeTcpPort } from '../src/migration/local-destination.js';
import type { QmpClient } from '../src/qmp/client.js';
import type { MigrationInfo } from '../src/migration/api.js';
import { GuestRam, VcpuSet, parseWorkload } from '../src/vm/index.js';
import { buildSweepGuest, guestOptions, qemuAccel, startQemu, stopQemus, waitForSweep } from '../test/helpers/qemu.js';
import { numberOption } from './_options.js';
import { median, round } from './_migrations.js';

const MiB = 1 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Tool = 'none' | 'auto-converge' | 'dirty-limit';
const PARAMS: Record<Tool, Record<string, number>> = {
  'none': {}, 'auto-converge': { 'cpu-throttle-initial': 60, 'cpu-throttle-increment': 20 }, 'dirty-limit': { 'vcpu-dirty-limit': 4 },
};

interface Outcome { converged: boolean; seconds: number; syncs: number; maxThrottle: number; downtimeMs: number; error?: string }
interface Pair { src: QmpClient; dst: QmpClient; port: number; close(): Promise<void>; why(): string }

async function dirtyRate(q: QmpClient, mode: string): Promise<number> {
  await q.execute('calc-dirty-rate', { 'calc-time': 1, mode });
  for (;;) {
    await sleep(200);
    const r = await q.execute<{ status: string; 'dirty-rate'?: number }>('query-dirty-rate');
    if (r.status === 'measured') return r['dirty-rate'] ?? -1;
  }
}

async function migrate(p: Pair, tool: Tool, limitS: number): Promise<Outcome> {
  if (tool !== 'none') await p.src.execute('migrate-set-capabilities', { capabilities: [{ capability: tool, state: true }] });
  await p.src.execute('migrate-set-parameters', { 'max-bandwidth': 50 * MiB, ...PARAMS[tool] });
  const t0 = performance.now();
  await p.src.execute('migrate', { uri: `tcp:127.0.0.1:${p.port}` });
  let maxThrottle = 0;
  for (;;) {
    await sleep(250);
    const i = await p.src.execute<MigrationInfo>('query-migrate');
    maxThrottle = Math.max(maxThrottle, i['cpu-throttle-percentage'] ?? 0);
    const seconds = round((performance.now() - t0) / 1000, 2);
    if (i.status === 'completed' || i.status === 'failed' || seconds > limitS) {
      if (i.status !== 'completed' && i.status !== 'failed') await p.src.execute('migrate_cancel');
      return {
        converged: i.status === 'completed', seconds, syncs: i.ram?.['dirty-sync-count'] ?? 0, maxThrottle,
        downtimeMs: i.downtime ?? -1, ...(i.status === 'failed' ? { error: i['error-desc'] } : {}),
      };
    }
  }
}

async function ours(dir: string, n: number): Promise<Pair> {
  const common = ['-m', '128M', '-smp', '1', '-workload', 'sweep,start=1M,end=65M'];
  const port = await freeTcpPort();
  const dst = await VmProcess.spawn([...common, '-incoming', `tcp:127.0.0.1:${port}`], join(dir, `d${n}.qmp`));
  const src = await VmProcess.spawn(common, join(dir, `s${n}.qmp`));
  return { src: src.qmp, dst: dst.qmp, port, close: async () => { await src.quit(); await dst.quit(); }, why: () => '' };
}

async function qemu(dir: string, n: number, img: string, dirtyRing: boolean): Promise<Pair> {
  const opts = guestOptions(img, 128, 1);
  if (dirtyRing) opts.splice(opts.indexOf('-accel'), 2, '-accel', 'kvm,dirty-ring-size=4096');
  const port = await freeTcpPort();
  const src = await startQemu(dir, `qs${n}`, opts);
  const dst = await startQemu(dir, `qd${n}`, [...opts, '-incoming', `tcp:127.0.0.1:${port}`]);
  await waitForSweep(src);
  return {
    src: src.qmp, dst: dst.qmp, port,
    close: async () => { for (const q of [src, dst]) { await q.qmp.execute('quit').catch(() => undefined); q.proc.kill('SIGKILL'); } },
    why: () => [src, dst].map((q) => q.stderr().trim()).filter(Boolean).join('; '),
  };
}

/** accesses/s of one sweeping vCPU with the knobs off, the dirty log on, a 1 % throttle */
async function hookCost(reps: number): Promise<Record<string, unknown>> {
  const ram = GuestRam.create(64 * MiB);
  const v = await VcpuSet.create(ram, 1, parseWorkload('sweep,end=32M', ram.bytes));
  const rate = async (): Promise<number> => {
    const a0 = v.progress(0).accesses, t0 = performance.now();
    await sleep(1000);
    return ((v.progress(0).accesses - a0) * 1000) / (performance.now() - t0);
  };
  const runs: Record<string, number[]> = { off: [], dirty_log: [], throttle_1pct: [] };
  try {
    for (let r = 0; r < reps; r++) {
      runs.off.push(await rate());
      v.throttle.startDirtyLog();
      runs.dirty_log.push(await rate());
      v.throttle.stopDirtyLog();
      v.throttle.setCpuThrottle(1);
      runs.throttle_1pct.push(await rate());
      v.throttle.setCpuThrottle(0);
    }
  } finally {
    await v.stop();
    ram.dispose();
  }
  const off = median(runs.off);
  const out: Record<string, unknown> = {};
  for (const [k, xs] of Object.entries(runs)) {
    out[k] = { median_maccesses_s: round(median(xs) / 1e6, 1), min: round(Math.min(...xs) / 1e6, 1), max: round(Math.max(...xs) / 1e6, 1),
      ratio: round(median(xs) / off, 2) };
  }
  return out;
}

function stats(xs: number[]): { median: number; min: number; max: number } {
  return { median: round(median(xs), 2), min: round(Math.min(...xs), 2), max: round(Math.max(...xs), 2) };
}

export async function run(argv: string[]): Promise<Record<string, unknown>> {
  const reps = numberOption(argv, 'reps', 3, 1);
  const noneS = numberOption(argv, 'none-s', 15, 3);
  const withQemu = !argv.includes('--no-qemu');
  const dir = mkdtempSync(join(tmpdir(), 'bench-converge-'));
  const img = withQemu ? buildSweepGuest(dir, 65 * MiB) : '';
  const sides = withQemu ? ['ours', 'qemu'] as const : ['ours'] as const;
  const rows: Record<string, Record<string, Outcome[] | number[]>> = {};
  let n = 0;
  try {
    for (let r = 0; r < reps; r++) {
      for (const side of sides) {
        rows[side] ??= {};
        const row = rows[side];
        for (const tool of ['none', 'auto-converge', 'dirty-limit'] as Tool[]) {
          const ring = side === 'qemu' && tool === 'dirty-limit' && qemuAccel() === 'kvm';
          let p: Pair;
          try {
            p = side === 'ours' ? await ours(dir, n++) : await qemu(dir, n++, img, ring);
          } catch (e) {
            ((row[tool] ??= []) as Outcome[]).push({ converged: false, seconds: 0, syncs: 0, maxThrottle: 0, downtimeMs: -1, error: String(e) });
            continue;
          }
          try {
            if (tool === 'none') {
              await sleep(500);
              for (const mode of ['page-sampling', 'dirty-bitmap']) {
                const rate = await dirtyRate(p.src, mode).catch(() => undefined);
                if (rate !== undefined) ((row[mode] ??= []) as number[]).push(rate);
              }
            }
            const o = await migrate(p, tool, tool === 'none' ? noneS : 120).catch((e: unknown) => ({
              converged: false, seconds: 0, syncs: 0, maxThrottle: 0, downtimeMs: -1,
              error: `${e instanceof Error ? e.message : String(e)}${p.why() ? ` (stderr: ${p.why()})` : ''}`,
            }));
            ((row[tool] ??= []) as Outcome[]).push(o);
          } finally {
            await p.close();
          }
        }
      }
    }
  } finally {
    await stopQemus();
    rmSync(dir, { recursive: true, force: true });
  }
  const summary: Record<string, unknown> = {};
  for (const [side, row] of Object.entries(rows)) {
    const s: Record<string, unknown> = {};
    for (const mode of ['page-sampling', 'dirty-bitmap']) if (row[mode]) s[`dirty_rate_${mode}_mbps`] = stats(row[mode] as number[]);
    for (const tool of ['none', 'auto-converge', 'dirty-limit'] as Tool[]) {
      const os = row[tool] as Outcome[];
      const done = os.filter((o) => o.converged);
      s[tool] = {
        converged: `${done.length}/${os.length}`,
        ...(done.length ? { seconds: stats(done.map((o) => o.seconds)), downtime_ms: stats(done.map((o) => o.downtimeMs)) } : {}),
        syncs: stats(os.map((o) => o.syncs)),
        ...(tool === 'auto-converge' ? { max_throttle: stats(os.map((o) => o.maxThrottle)) } : {}),
        ...(os.some((o) => o.error) ? { errors: [...new Set(os.map((o) => o.error).filter(Boolean))] } : {}),
      };
    }
    summary[side] = s;
  }
  const ratio = (tool: Tool): number | undefined => {
    const a = (summary.ours as Record<string, { seconds?: { median: number } }> | undefined)?.[tool]?.seconds?.median;
    const b = (summary.qemu as Record<string, { seconds?: { median: number } }> | undefined)?.[tool]?.seconds?.median;
    return a !== undefined && b !== undefined ? round(a / b, 2) : undefined;
  };
  const vcpuHooks = await hookCost(reps);
  return {
    bench: 'converge', reps, accel: withQemu ? qemuAccel() : undefined, workload: '1 vCPU sweeping 64 MiB of 128 MiB, 50 MiB/s',
    ...summary, ratio_auto_converge_s: ratio('auto-converge'), ratio_dirty_limit_s: ratio('dirty-limit'), vcpu_hooks: vcpuHooks,
  };
}
