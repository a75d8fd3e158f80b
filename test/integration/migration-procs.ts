// Helpers for the migration tests that run real VM processes (`node
// dist/src/cli.js`, driven over QMP): spawning a source/destination pair,
// waiting for states, reading guest RAM through x-query-ram-digest, the
// postcopy recovery steps (a pair in postcopy, migrate_recover + migrate -r),
// and a chain of processes reused across many migrations (VmChain).
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

const MiB = 1 << 20;

export interface InPostcopyOptions {
  ram: string;
  /** -smp (default 1) */
  smp?: number;
  workload: string;
  dstArgs?: string[];
  /** max-postcopy-bandwidth (default 2 MiB/s): the push slowed so that postcopy lasts */
  bandwidth?: number;
  /** where the destination listens (-incoming), default unix:first.sock in the lab */
  incoming?: string;
  /** where the source migrates to (a relay in between), default `incoming` */
  connect?: string;
  /** commands the VMs run under (ip netns exec NS) */
  srcWrapper?: string[];
  dstWrapper?: string[];
  /** x-postcopy-heartbeat-ms on both sides (default: the VMs' own, 2000) */
  heartbeatMs?: number;
}

/** a pair in postcopy, its push slowed so that it lasts (max-postcopy-bandwidth) */
export async function inPostcopy(lab: Lab, o: InPostcopyOptions): Promise<{ src: VmProcess; dst: VmProcess }> {
  const common = ['-m', o.ram, '-smp', String(o.smp ?? 1), '-workload', o.workload];
  const incoming = o.incoming ?? `unix:${lab.path('first.sock')}`;
  const dst = await lab.vm('dst', [...common, ...(o.dstArgs ?? []), '-incoming', incoming], o.dstWrapper);
  const src = await lab.vm('src', common, o.srcWrapper);
  await setCaps(dst, ['postcopy-ram', 'postcopy-blocktime', 'events']);
  await setCaps(src, ['postcopy-ram', 'events']);
  if (o.heartbeatMs !== undefined) {
    for (const vm of [src, dst]) await vm.qmp.execute('migrate-set-parameters', { 'x-postcopy-heartbeat-ms': o.heartbeatMs });
  }
  await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 32 * MiB, 'max-postcopy-bandwidth': o.bandwidth ?? 2 * MiB });
  await new Promise((r) => setTimeout(r, 300));
  await src.qmp.execute('migrate', { uri: o.connect ?? incoming });
  await waitStatus(src, ['active']);
  await new Promise((r) => setTimeout(r, 100));
  await src.qmp.execute('migrate-start-postcopy');
  await waitStatus(src, ['postcopy-active']);
  await waitStatus(dst, ['postcopy-active']);
  return { src, dst };
}

/** migrate_recover URI on the destination, migrate -r on the source (to `connect`, default the same URI), both postcopy-active again */
export async function recover(src: VmProcess, dst: VmProcess, uri: string, connect = uri): Promise<void> {
  await dst.qmp.execute('migrate-recover', { uri });
  await src.qmp.execute('migrate', { uri: connect, resume: true });
  await waitStatus(src, ['postcopy-active'], 10000);
  await waitStatus(dst, ['postcopy-active'], 10000);
}

/** the push unthrottled: both sides complete, with no error (else both sides' states, and the end of their stderr, say why) */
export async function finish(src: VmProcess, dst: VmProcess): Promise<void> {
  await src.qmp.execute('migrate-set-parameters', { 'max-postcopy-bandwidth': 0 });
  const ended = async (vm: VmProcess): Promise<MigrationInfo | Error> => waitStatus(vm, TERMINAL as never).catch((e: Error) => e);
  const [s, d] = await Promise.all([ended(src), ended(dst)]);
  if (s instanceof Error || d instanceof Error) {
    const said = (vm: VmProcess, i: MigrationInfo | Error): string => `${i instanceof Error ? i.message : i.status}; stderr: ${vm.stderr.trim().split('\n').slice(-4).join(' / ')}`;
    throw new Error(`the migration did not end: source ${said(src, s)}; destination ${said(dst, d)}`);
  }
  expect([s.status, d.status, s['error-desc'], d['error-desc']]).toEqual(['completed', 'completed', undefined, undefined]);
}

/** the statuses of the VM's MIGRATION events, in order */
export const statuses = (vm: VmProcess): unknown[] => vm.events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status);

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
    // a guest gone (postmigrate), or a postcopy paused with its guest split between the two: the source is not reused
    if (await run(src) === 'postmigrate' || (await src.queryMigrate()).status === 'postcopy-paused') { this.lab.drop(src); this.src = null; } else await src.qmp.execute('stop');
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
