// Helpers for the migration tests that run real VM processes (`node
// dist/src/cli.js`, driven over QMP): spawning a source/destination pair,
// waiting for states, reading guest RAM through x-query-ram-digest, and a
// chain of processes reused across many migrations (VmChain).
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmProcess } from '../../src/migration/local-destination.js';
import { GuestRam } from '../../src/vm/index.js';
import type { MigrationInfo, MigrationStatus } from '../../src/migration/api.js';

export const TERMINAL = ['completed', 'failed', 'cancelled'];

export class Lab {
  readonly dir = mkdtempSync(join(tmpdir(), 'pc-mig-'));
  private readonly vms: VmProcess[] = [];
  private readonly quitting: Promise<void>[] = [];
  private readonly killed: string[] = [];

  async vm(name: string, args: string[], wrapper: string[] = []): Promise<VmProcess> {
    const vm = await VmProcess.spawn(args, join(this.dir, `${name}.qmp`), 20000, wrapper);
    this.vms.push(vm);
    return vm;
  }

  path(name: string): string { return join(this.dir, name); }

  /** quits `vm` now (in the background: close() waits for it) */
  drop(vm: VmProcess): void {
    const i = this.vms.indexOf(vm);
    if (i >= 0) this.vms.splice(i, 1);
    this.quitting.push(vm.quit().catch(() => undefined).then(() => {
      if (vm.child.signalCode !== null) this.killed.push(`process ${vm.child.pid} (${vm.child.signalCode})`);
    }));
  }

  /** the VMs dropped so far that did not exit when asked to quit (killed), once all have gone */
  async dropped(): Promise<string[]> {
    await Promise.all(this.quitting);
    return this.killed;
  }

  async close(): Promise<void> {
    await Promise.all([...this.vms.map((v) => v.quit().catch(() => undefined)), ...this.quitting]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function setCaps(vm: VmProcess, caps: string[]): Promise<void> {
  await vm.qmp.execute('migrate-set-capabilities', { capabilities: caps.map((capability) => ({ capability, state: true })) });
}

export async function waitStatus(vm: VmProcess, want: MigrationStatus[], timeoutMs = 30000): Promise<MigrationInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await vm.queryMigrate();
    if (want.includes(info.status)) return info;
    if (Date.now() > deadline) throw new Error(`status ${info.status} after ${timeoutMs} ms, wanted ${want.join('/')}: ${JSON.stringify(info)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** page digests of all of guest RAM, or of pageCount pages from firstPage on */
export async function digest(vm: VmProcess, firstPage?: number, pageCount?: number): Promise<string[]> {
  const args: Record<string, number> = {};
  if (firstPage !== undefined) args['first-page'] = firstPage;
  if (pageCount !== undefined) args['page-count'] = pageCount;
  const r = await vm.qmp.execute<{ digest: string }>('x-query-ram-digest', args);
  return r.digest.match(/.{16}/g) ?? [];
}

/** a digest read twice in a row with the same result (the vCPUs have settled) */
export async function stableDigest(vm: VmProcess): Promise<string[]> {
  let last = await digest(vm);
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const now = await digest(vm);
    if (now.join() === last.join()) return now;
    last = now;
  }
  throw new Error('guest RAM never settled (vCPUs still writing?)');
}

/** digest of a page whose first byte is b and the rest zero -> b */
let table: Map<string, number> | undefined;
export function firstByteTable(): Map<string, number> {
  if (table) return table;
  const ram = GuestRam.create(256 * 4096);
  for (let b = 0; b < 256; b++) ram.windows.copyIn(b, Uint8Array.of(b), 0, 1);
  const d = ram.digestHex().match(/.{16}/g)!;
  ram.dispose();
  table = new Map(d.map((h, b) => [h, b]));
  return table;
}

/**
 * QEMU's migration-test check for a sweep on one vCPU over pages [0, pages):
 * every page holds only its first byte, and the first bytes read
 * k+1, k+1, ..., k+1, k, k, ..., k (mod 256) -- the sweep's position is where
 * the value steps down. Returns null when it holds, else what is wrong.
 * Pages in `ignore` are left out (a test that corrupted them itself).
 */
export function sweepInvariant(pageDigests: string[], sweepPages: number, ignore: ReadonlySet<number> = new Set()): string | null {
  const t = firstByteTable();
  const bytes: [number, number][] = []; // [page, first byte]
  for (let p = 0; p < pageDigests.length; p++) {
    if (ignore.has(p)) continue;
    const b = t.get(pageDigests[p]);
    if (b === undefined) return `page ${p} holds more than its first byte (corrupt)`;
    if (p >= sweepPages && b !== 0) return `page ${p} outside the sweep holds ${b}`;
    if (p < sweepPages) bytes.push([p, b]);
  }
  let steps = 0;
  for (let i = 1; i < bytes.length; i++) {
    const [p, b] = bytes[i];
    const a = bytes[i - 1][1];
    if (b === a) continue;
    if (b !== ((a + 255) & 0xff)) return `page ${p} holds ${b} after ${a}`;
    steps++;
  }
  if (steps > 1) return `the sweep steps down ${steps} times`;
  if (steps === 0 && bytes[0]?.[1] === 0) return 'the sweep never ran';
  return null;
}

/** the pages whose digests differ */
export function differingPages(a: string[], b: string[]): number[] {
  const out: number[] = [];
  for (let p = 0; p < Math.max(a.length, b.length); p++) if (a[p] !== b[p]) out.push(p);
  return out;
}

/** connects to a destination's unix socket, writes `bytes`, then closes (or keeps it open) */
export function sendTo(path: string, bytes: Buffer, close: boolean): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path }, () => {
      s.write(bytes);
      if (close) s.end();
      resolve(s);
    });
    s.on('error', reject);
  });
}

/** The migration failed with `reason`, and the VM's monitor still answers with `state`. */
export async function expectFailedAndUsable(vm: VmProcess, info: MigrationInfo, reason: RegExp, state: Record<string, unknown>): Promise<void> {
  expect(info.status).toBe('failed');
  expect(info['error-desc']).toMatch(reason);
  expect(await vm.qmp.execute('query-status')).toMatchObject(state);
}

/** A destination process waiting at `path` (-incoming unix:PATH). */
export interface Armed { vm: VmProcess; path: string }

/**
 * A source and a destination kept ready for one migration after another,
 * reusing each process for as long as it can go on (QEMU's rules): a
 * destination whose migration failed before the postcopy switchover arms
 * again (migrate-incoming), one that completed holds the guest and becomes
 * the next source; a source whose guest has not left can migrate again.
 * Spare processes (a paused source, destinations) start in the background
 * while a migration runs; a source waits between migrations paused.
 */
export class VmChain {
  src: VmProcess | null = null;
  dst: Armed | null = null;
  private readonly spareSrc: Promise<VmProcess>[] = [];
  private readonly spareDst: Promise<Armed>[] = [];
  private n = 0;
  /** processes started so far */
  spawned = 0;

  /** `args`: every VM's (RAM, vCPUs, workload) */
  constructor(private readonly lab: Lab, private readonly args: string[], private readonly spares = { src: 1, dst: 2 }) {}

  /** a source (paused: `cont` it) and an armed destination */
  async ready(): Promise<{ src: VmProcess; dst: Armed }> {
    this.dst ??= await (this.spareDst.shift() ?? this.startDestination());
    this.src ??= await (this.spareSrc.shift() ?? this.start(`src-${this.n++}`, ['-S']));
    while (this.spareDst.length < this.spares.dst) this.spareDst.push(this.startDestination());
    while (this.spareSrc.length < this.spares.src) this.spareSrc.push(this.start(`src-${this.n++}`, ['-S']));
    for (const p of [...this.spareSrc, ...this.spareDst]) p.catch(() => undefined); // a failed start fails when taken
    return { src: this.src, dst: this.dst };
  }

  /** After a migration ended on both sides: who stays (see the class comment); the others quit. */
  async settle(): Promise<void> {
    const src = this.src!;
    const dst = this.dst!;
    if ((await dst.vm.queryMigrate()).status === 'completed') { // the guest lives there now
      this.lab.drop(src);
      this.src = dst.vm;
      this.dst = null;
      await this.src.qmp.execute('stop');
      return;
    }
    const run = async (vm: VmProcess): Promise<string> => (await vm.qmp.execute<{ status: string }>('query-status')).status;
    if (await run(src) === 'postmigrate') { this.lab.drop(src); this.src = null; } else await src.qmp.execute('stop');
    if (await run(dst.vm) === 'inmigrate') {
      await dst.vm.qmp.execute('migrate-incoming', { uri: `unix:${dst.path}`, 'exit-on-error': false });
    } else { // after the postcopy switchover: guest RAM is split, this VM cannot take another migration
      this.lab.drop(dst.vm);
      this.dst = null;
    }
  }

  /** quits the spares (those still starting once they are up) */
  async close(): Promise<void> {
    const spares = await Promise.allSettled([...this.spareSrc, ...this.spareDst.map(async (a) => (await a).vm)]);
    this.spareSrc.length = 0;
    this.spareDst.length = 0;
    for (const s of spares) if (s.status === 'fulfilled') this.lab.drop(s.value);
  }

  /** gives up on both processes (after a hang: their state is unknown) */
  discard(): void {
    if (this.src) this.lab.drop(this.src);
    if (this.dst) this.lab.drop(this.dst.vm);
    this.src = null;
    this.dst = null;
  }

  private async startDestination(): Promise<Armed> {
    const name = `dst-${this.n++}`;
    const path = this.lab.path(`${name}.sock`);
    return { vm: await this.start(name, ['-incoming', `unix:${path}`]), path };
  }

  private async start(name: string, extra: string[]): Promise<VmProcess> {
    this.spawned++;
    return this.lab.vm(name, [...this.args, ...extra]);
  }
}
