// A real QEMU for the tests: whether one is installed (a developer's run
// skips with the reason; in CI, CI=true, a missing QEMU fails), the project's
// tiny guest (a boot sector, assembled here with the system's `as` and `ld`,
// that switches to 32-bit protected mode and increments one word of every
// 4 KiB page from 1 MiB up to a limit, forever, like our `sweep` workload),
// and QEMU processes started on it with their QMP socket in a private dir.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { connectWithRetry, type QmpClient } from '../../src/qmp/client.js';
import { requireCapability } from './require-capability.js';

export const QEMU = process.env.POSTCOPY_QEMU ?? 'qemu-system-x86_64';

let cached: { ok: boolean; reason: string } | undefined;

function probe(): { ok: boolean; reason: string } {
  if (cached) return cached;
  const q = spawnSync(QEMU, ['--version'], { encoding: 'utf8' });
  const tools = ['as', 'ld'].filter((t) => spawnSync(t, ['--version'], { stdio: 'ignore' }).status !== 0);
  if (q.status !== 0) cached = { ok: false, reason: `${QEMU} is not installed (apt-get install qemu-system-x86)` };
  else if (tools.length > 0) cached = { ok: false, reason: `${tools.join(' and ')} missing (apt-get install binutils)` };
  else cached = { ok: true, reason: '' };
  return cached;
}

/** true when QEMU can run here; false (reason printed) when not; throws when not and CI=true */
export function requireQemu(): boolean {
  return requireCapability('QEMU', probe);
}

/** kvm when /dev/kvm can be opened read-write, else tcg (POSTCOPY_QEMU_ACCEL overrides) */
export function qemuAccel(): 'kvm' | 'tcg' {
  const forced = process.env.POSTCOPY_QEMU_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return forced;
  try { accessSync('/dev/kvm', constants.R_OK | constants.W_OK); return 'kvm'; } catch { return 'tcg'; }
}

/** Guest-physical address the sweep starts at, and the word a test reads to see it run. */
export const SWEEP_START = 0x100000;

/** Writes `dir`/sweep.img: a 512-byte boot sector sweeping [1 MiB, sweepEnd). */
export function buildSweepGuest(dir: string, sweepEnd: number): string {
  const src = join(dir, 'sweep.s');
  writeFileSync(src, `
  .set SWEEP_END, 0x${sweepEnd.toString(16)}
  .code16
  .globl _start
_start:
  cli
  xorw %ax, %ax
  movw %ax, %ds
  lgdtl gdtdesc
  movl %cr0, %eax
  orl $1, %eax
  movl %eax, %cr0
  ljmpl $0x08, $pm
  .code32
pm:
  movw $0x10, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
outer:
  movl $0x${SWEEP_START.toString(16)}, %edi
inner:
  incl (%edi)
  addl $4096, %edi
  cmpl $SWEEP_END, %edi
  jb inner
  jmp outer
  .p2align 3
gdt:
  .quad 0
  .quad 0x00cf9a000000ffff
  .quad 0x00cf92000000ffff
gdtdesc:
  .word gdtdesc - gdt - 1
  .long gdt
  .org 510
  .word 0xaa55
`);
  const obj = join(dir, 'sweep.o');
  const img = join(dir, 'sweep.img');
  for (const [cmd, args] of [['as', ['--32', '-o', obj, src]], ['ld', ['-m', 'elf_i386', '-Ttext', '0x7c00', '--oformat', 'binary', '-o', img, obj]]] as const) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  }
  return img;
}

export interface QemuProc {
  proc: ChildProcess;
  qmp: QmpClient;
  /** the command line it was started with */
  argv: string[];
  /** its stderr so far */
  stderr: () => string;
}

const started: QemuProc[] = [];

/** The options of a guest: `ramMiB` of RAM, `smp` vCPUs, the sweep disk, nothing else. */
export function guestOptions(image: string, ramMiB: number, smp: number): string[] {
  return ['-accel', qemuAccel(), '-m', `${ramMiB}M`, '-smp', String(smp), '-nodefaults', '-display', 'none', '-vga', 'none',
    '-drive', `file=${image},format=raw,if=ide`];
}

/** The options that make a destination log what `blocktime-import` and
 *  `attach --destination-trace` read (docs/qemu.md), into `log`. */
export function traceOptions(log: string): string[] {
  return ['-trace', 'postcopy_ram_fault_thread_request', '-trace', 'postcopy_place_page*', '-trace', 'mark_postcopy_blocktime*',
    '-trace', 'postcopy_ram_enable_notify', '-trace', 'postcopy_ram_incoming_cleanup*', '-msg', 'timestamp=on', '-D', log];
}

/** A TCP port nobody listens on now (for -incoming). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const a = s.address(); s.close(() => resolve(typeof a === 'object' && a ? a.port : 0)); });
  });
}

/** The QMP socket a QEMU started with `{ attach: true }` keeps free for `postcopy attach`. */
export function attachSocket(dir: string, name: string): string {
  return join(dir, `${name}-attach.qmp`);
}

/** Starts QEMU with `args` plus a QMP socket `dir`/NAME.qmp, and connects to
 *  it; `attach`: a second -qmp socket (attachSocket) nobody holds. */
export async function startQemu(dir: string, name: string, args: string[], opts: { attach?: boolean } = {}): Promise<QemuProc> {
  const sock = join(dir, `${name}.qmp`);
  const argv = [...args, '-qmp', `unix:${sock},server=on,wait=off`];
  if (opts.attach) argv.push('-qmp', `unix:${attachSocket(dir, name)},server=on,wait=off`);
  const proc = spawn(QEMU, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<never>((_, reject) => proc.on('exit', (code) => reject(new Error(`${QEMU} (${name}) exited with ${code}: ${err}`))));
  const qmp = await Promise.race([connectWithRetry(`unix:${sock}`, 20_000), exited]);
  exited.catch(() => { /* reported to whoever waits on the process */ });
  const q = { proc, qmp, argv, stderr: () => err };
  started.push(q);
  return q;
}

/** Waits until the guest's sweep runs (its first page's counter moves). */
export async function waitForSweep(q: QemuProc, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const out = await q.qmp.execute<string>('human-monitor-command', { 'command-line': `x /1wx 0x${SWEEP_START.toString(16)}` });
    const v = parseInt(out.split(':')[1] ?? '0', 16);
    if (v > 1) return;
    if (Date.now() > end) throw new Error(`the guest did not start sweeping in ${timeoutMs} ms (${out.trim()})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** What a test reads of a QEMU's query-migrate. */
export interface QemuMigrateInfo {
  status?: string;
  'total-time'?: number;
  ram?: Record<string, number>;
  'postcopy-blocktime'?: number;
  'postcopy-vcpu-blocktime'?: number[];
}

/** Polls query-migrate every `pollMs` until `want(status)`; fails after `timeoutMs`. */
export async function waitStatus(q: QemuProc, want: (s: string) => boolean, timeoutMs: number, pollMs = 100): Promise<QemuMigrateInfo> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const info = await q.qmp.execute<QemuMigrateInfo>('query-migrate');
    if (info.status !== undefined && want(info.status)) return info;
    if (Date.now() > end) throw new Error(`migration status still ${info.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Ends every QEMU started here (for afterAll). */
export async function stopQemus(): Promise<void> {
  for (const q of started.splice(0)) {
    await q.qmp.close().catch(() => undefined);
    if (q.proc.exitCode === null && q.proc.signalCode === null) q.proc.kill('SIGKILL');
  }
}
