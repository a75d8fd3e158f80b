// Two real QEMUs on loopback run a postcopy migration of our sweeping boot
// sector with postcopy-blocktime on; the destination's trace log, imported
// by `blocktime-import`'s code, gives exact per-vCPU blocktime, held against
// the figure QEMU 7.2 reports in query-migrate with the documented
// differences (docs/qemu.md): 7.2's ms floors (< 1 ms per interval it
// counts) and its one fault per vCPU (a vCPU's next fault read before its
// previous page's end was accounted overwrites that stretch). QEMU's figure
// is also checked against 7.2's algorithm run on QEMU's own lines.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareLines } from '../../src/blocktime-trace/compare.js';
import { readQemuTraceLog, traceLines } from '../../src/qemu/trace-log.js';
import { cli, ensureBuilt } from '../helpers/cli.js';
import { buildSweepGuest, freePort, guestOptions, qemuAccel, requireQemu, startQemu, stopQemus, traceOptions, waitForSweep, waitStatus } from '../helpers/qemu.js';

const haveQemu = requireQemu();
const maybe = haveQemu ? test : test.skip;
let dir: string;

beforeAll(() => { ensureBuilt(); dir = mkdtempSync(join(tmpdir(), 'qemu-postcopy-')); }, 180_000);
afterAll(async () => { await stopQemus(); if (process.env.POSTCOPY_KEEP_TMP === undefined) rmSync(dir, { recursive: true, force: true }); });

/**
 * QEMU 7.2's own accounting of vCPU `cpu`, replayed at µs from its own
 * mark_postcopy_blocktime_begin/_end lines in the order QEMU wrote them: one
 * slot per vCPU, a begin into a full slot overwrites it (the earlier fault's
 * time is lost), an end for the slot's page adds end - begin. Returns the µs
 * sum, the intervals counted and the faults overwritten.
 */
function qemu72FromItsLines(log: string, cpu: number): { us: number; counted: number; overwritten: number } {
  const line = /^\d+@(\d+)\.(\d{6}):(mark_postcopy_blocktime_(?:begin|end)) addr: 0x([0-9a-f]+), .*?(?:cpu: (-?\d+), already_received: (\d+))?$/;
  let slot: { t: number; addr: string } | undefined;
  let base: number | undefined;
  const r = { us: 0, counted: 0, overwritten: 0 };
  for (const l of log.split('\n')) {
    const m = line.exec(l);
    if (m === null) continue;
    const [, sec, micro, ev, addr, c, received] = m;
    base ??= Number(sec);
    const t = (Number(sec) - base) * 1e6 + Number(micro);
    if (ev === 'mark_postcopy_blocktime_begin') {
      if (Number(c) !== cpu || received !== '0') continue;
      if (slot !== undefined) r.overwritten++;
      slot = { t, addr };
    } else if (slot !== undefined && slot.addr === addr) {
      r.us += t - slot.t;
      r.counted++;
      slot = undefined;
    }
  }
  return r;
}

maybe(`a real postcopy migration between two QEMUs (${qemuAccel()}): the imported trace's exact blocktime agrees with QEMU 7.2's figure`, async () => {
  const ramMiB = 256;
  const img = buildSweepGuest(dir, 112 << 20);
  const log = join(dir, 'dest.log');
  const port = await freePort();
  const guest = guestOptions(img, ramMiB, 2);
  const src = await startQemu(dir, 'src', guest);
  const dst = await startQemu(dir, 'dst', [...guest, '-incoming', `tcp:127.0.0.1:${port}`, ...traceOptions(log)]);
  await waitForSweep(src);

  for (const q of [src, dst]) {
    await q.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-ram', state: true }] });
  }
  await dst.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-blocktime', state: true }] });
  // slow precopy down so that postcopy starts with most of RAM still to send, and the push too: on a
  // loaded host the destination's vCPU may get its CPU only after an unlimited push brought every page
  // (then it never faults: no request, nothing to compare)
  await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 50 << 20, 'max-postcopy-bandwidth': 32 << 20 });
  const cpus = await dst.qmp.execute<{ 'cpu-index': number; 'thread-id': number }[]>('query-cpus-fast');
  const vcpus = [...cpus].sort((x, y) => x['cpu-index'] - y['cpu-index']).map((c) => c['thread-id']);

  await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
  await waitStatus(src, (s) => s === 'active', 10_000);
  await new Promise((r) => setTimeout(r, 500));
  await src.qmp.execute('migrate-start-postcopy');
  const srcInfo = await waitStatus(src, (s) => s === 'completed' || s === 'failed', 40_000);
  expect(srcInfo.status).toBe('completed');
  const dstInfo = await waitStatus(dst, (s) => s === 'completed' || s === 'failed', 10_000);
  expect(dstInfo.status).toBe('completed');
  const requests = srcInfo.ram?.['postcopy-requests'] ?? 0;
  expect(requests).toBeGreaterThan(0);
  const qemuVcpu = dstInfo['postcopy-vcpu-blocktime'] as number[];
  expect(qemuVcpu).toHaveLength(2);
  // the log is complete once the destination has quit
  const exited = new Promise((r) => dst.proc.once('exit', r));
  await dst.qmp.execute('quit').catch(() => undefined);
  await exited;

  const trace = await readQemuTraceLog(log, vcpus);
  const c = await compareLines(traceLines(trace), log);
  // the same through the commands an operator runs
  const out = join(dir, 'dest.jsonl');
  const imp = spawnSync(process.execPath, [cli, 'blocktime-import', log, '--vcpus', vcpus.join(','), '-o', out], { encoding: 'utf8' });
  expect(imp.stderr).toBe('');
  expect(imp.status).toBe(0);
  const replay = spawnSync(process.execPath, [cli, 'blocktime-replay', out, '--compare', '--json'], { encoding: 'utf8' });
  expect(replay.status).toBe(0);
  expect(JSON.parse(replay.stdout)).toEqual(JSON.parse(JSON.stringify(c)));
  const x = c.exact['x-blocktime'];
  expect(trace.eventSet).toBe('7.2');
  expect(x.faults).toBeGreaterThanOrEqual(1);
  expect(trace.events.filter((e) => e.ev === 'fault').length).toBeGreaterThanOrEqual(requests);
  // vCPU 1 never leaves the BIOS's halt: never blocked, so no total either
  expect(x.vcpus[1].blocktimeNs).toBe(0);
  expect(qemuVcpu[1]).toBe(0);
  expect(dstInfo['postcopy-blocktime']).toBe(0);
  expect(x.totalBlocktimeNs).toBe(0);

  // vCPU 0. QEMU 7.2 differs from the exact figure in two documented ways
  // (REFERENCE.md §6): it floors each clock reading to whole ms (each
  // interval it counts can gain or lose < 1 ms), and it keeps one fault per
  // vCPU, so a vCPU's next fault read before its previous page's end was
  // accounted overwrites it and that earlier stretch is lost (the kernel
  // wakes the vCPU inside UFFDIO_COPY, before QEMU accounts the placement:
  // with KVM this race is common).
  const q = qemu72FromItsLines(readFileSync(log, 'utf8'), 0);
  const exactMs = x.vcpus[0].blocktimeNs / 1e6;
  process.stderr.write(`qemu-postcopy: ${requests} postcopy requests, ${x.faults} faults (${x.nonVcpuFaults} non-vCPU); vCPU 0 blocktime: `
    + `exact ${exactMs.toFixed(3)} ms; QEMU 7.2 reports ${qemuVcpu[0]} ms; its algorithm on its own lines ${(q.us / 1000).toFixed(3)} ms `
    + `(${q.counted} intervals counted, ${q.overwritten} faults overwritten); our 7.2 replay of the import ${c['qemu-7.2']['postcopy-vcpu-blocktime'][0]} ms\n`);
  expect(x.vcpus[0].faults).toBeGreaterThan(0);
  // QEMU's figure is its own algorithm on its own events, up to the ms floor of each interval
  expect(Math.abs(qemuVcpu[0] - q.us / 1000)).toBeLessThanOrEqual(q.counted + 1);
  // what QEMU counts are stretches of the vCPU's blocked time: never more than ours, but for the floors
  expect(qemuVcpu[0]).toBeLessThanOrEqual(exactMs + q.counted);
  expect(q.us / 1000).toBeLessThanOrEqual(exactMs + 1);
  // without overwrites, the two differ by the floors alone
  if (q.overwritten === 0) expect(Math.abs(exactMs - qemuVcpu[0])).toBeLessThanOrEqual(q.counted + 1);
}, 90_000);
