// Helpers for the migration tests that run real VM processes (`node
// dist/src/cli.js`, driven over QMP): spawning a source/destination pair,
// waiting for states, and reading guest RAM through x-query-ram-digest.
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

  async vm(name: string, args: string[], wrapper: string[] = []): Promise<VmProcess> {
    const vm = await VmProcess.spawn(args, join(this.dir, `${name}.qmp`), 20000, wrapper);
    this.vms.push(vm);
    return vm;
  }

  path(name: string): string { return join(this.dir, name); }

  async close(): Promise<void> {
    await Promise.all(this.vms.map((v) => v.quit().catch(() => undefined)));
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
 */
export function sweepInvariant(pageDigests: string[], sweepPages: number): string | null {
  const t = firstByteTable();
  const bytes: number[] = [];
  for (let p = 0; p < pageDigests.length; p++) {
    const b = t.get(pageDigests[p]);
    if (b === undefined) return `page ${p} holds more than its first byte (corrupt)`;
    if (p >= sweepPages && b !== 0) return `page ${p} outside the sweep holds ${b}`;
    if (p < sweepPages) bytes.push(b);
  }
  let steps = 0;
  for (let p = 1; p < bytes.length; p++) {
    if (bytes[p] === bytes[p - 1]) continue;
    if (bytes[p] !== ((bytes[p - 1] + 255) & 0xff)) return `page ${p} holds ${bytes[p]} after ${bytes[p - 1]}`;
    steps++;
  }
  if (steps > 1) return `the sweep steps down ${steps} times`;
  if (steps === 0 && bytes[0] === 0) return 'the sweep never ran';
  return null;
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
