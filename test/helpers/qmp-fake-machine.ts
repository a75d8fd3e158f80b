// A small in-memory Machine for the QMP server's tests: real capability and
// parameter rules (src/migration/), a status that moves only when the test
// (or migrate()) says so, and a record of what the monitor asked for. The
// real Machine is exercised by the end-to-end test in test/integration/.

import { EventEmitter } from 'node:events';
import { CommandError } from '../../src/errors.js';
import type {
  CapabilityState, CpuInfo, Machine, MachineInfo, MigrationInfo, MigrationParameters, MigrationStatus, RunState,
} from '../../src/migration/api.js';
import type { BlocktimeReport } from '../../src/blocktime/types.js';
import { Capabilities } from '../../src/migration/capabilities.js';
import { Parameters } from '../../src/migration/parameters.js';
import { DirtyRateMeter, type CalcDirtyRateArgs, type DirtyRateInfo, type TimeUnit } from '../../src/migration/dirty-rate.js';
import type { VcpuDirtyLimit } from '../../src/migration/dirty-limit.js';
import { mulberry32 } from './prng.js';

/** A dirty-rate meter over a 1 GiB guest the test writes by hand
 *  (`pages[i]++` dirties page i) on a clock it moves with `advance(ms)`;
 *  no vCPUs (dirty-ring is refused), dirty-bitmap counts what was written. */
export function fakeDirtyRateMeter(seed = 1) {
  const pageSize = 4096;
  const rand = mulberry32(seed);
  const pages = new Uint32Array(2 ** 30 / pageSize);
  let now = 0;
  const due: Array<{ at: number; fn: () => void }> = [];
  let written = new Set<number>();
  const meter = new DirtyRateMeter({
    ramBytes: pages.length * pageSize, pageSize,
    pageDigest: (p) => BigInt(pages[p]),
    startTracking: () => { written = new Set(); return { finish: async () => written.size }; },
    unreadable: () => undefined,
  }, {
    now: () => now, wallSeconds: () => 1700000000 + Math.floor(now / 1000),
    after: (ms, fn) => { due.push({ at: now + ms, fn }); }, random: (n) => Math.floor(rand() * n),
  });
  return {
    meter, pages,
    write(p: number): void { pages[p]++; written.add(p); },
    /** moves the clock and runs what fell due; resolves once their promises settled */
    async advance(ms: number): Promise<void> {
      now += ms;
      const ready = due.filter((x) => x.at <= now);
      for (const d of ready) due.splice(due.indexOf(d), 1);
      for (const d of ready) d.fn();
      for (let i = 0; i < 5; i++) await Promise.resolve();
    },
  };
}

export class FakeMachine implements Machine {
  readonly events = new EventEmitter();
  readonly calls: string[] = [];
  status: MigrationStatus = 'none';
  state: RunState = 'running';
  quitCount = 0;
  private caps = new Capabilities();
  private params = new Parameters();
  readonly dirty = fakeDirtyRateMeter();

  info(): MachineInfo {
    return { role: 'source', ramBytes: 4 * 4096, pageSize: 4096, vcpus: 2, workload: 'idle' };
  }
  runState(): RunState { return this.state; }
  setRunState(s: RunState): void { this.state = s; this.events.emit('runstate', s); }
  async stop(): Promise<void> { this.calls.push('stop'); this.setRunState('paused'); }
  async cont(): Promise<void> {
    this.calls.push('cont');
    if (this.state === 'inmigrate') throw new CommandError('Migration is not finalized yet');
    this.setRunState('running');
  }
  cpus(): CpuInfo[] { return [{ index: 0, threadId: 1001 }, { index: 1, threadId: 1002 }]; }
  async quit(): Promise<void> { this.quitCount++; this.calls.push('quit'); this.events.emit('shutdown'); }
  queryMigrate(): MigrationInfo { return { status: this.status }; }
  capabilities(): CapabilityState[] { return this.caps.list(); }
  async setCapabilities(caps: CapabilityState[]): Promise<void> {
    this.caps.set(caps, this.status !== 'none' && !['completed', 'failed', 'cancelled'].includes(this.status));
  }
  parameters(): MigrationParameters { return this.params.get(); }
  async setParameters(p: Partial<MigrationParameters>): Promise<void> { this.params.set(p); }
  moveTo(s: MigrationStatus): void { this.status = s; this.events.emit('migration', s); }
  async migrate(uri: string, resume = false): Promise<void> {
    if (resume) { this.calls.push(`migrate -r ${uri}`); return; }
    this.calls.push(`migrate ${uri}`);
    if (uri.startsWith('bad:')) throw new CommandError(`Invalid migration URI '${uri}'`);
    this.moveTo('setup');
  }
  async migrateIncoming(uri: string): Promise<void> { this.calls.push(`migrate-incoming ${uri}`); }
  async startPostcopy(): Promise<void> {
    if (this.status === 'none') throw new CommandError('Postcopy must be started after migration has been started');
    this.calls.push('start-postcopy');
  }
  async cancel(): Promise<void> { this.calls.push('cancel'); }
  async migratePause(): Promise<void> { this.calls.push('migrate-pause'); }
  async migrateRecover(uri: string): Promise<void> { this.calls.push(`migrate-recover ${uri}`); }
  calcDirtyRate(a: CalcDirtyRateArgs): void { this.dirty.meter.calc(a); }
  queryDirtyRate(unit?: TimeUnit): DirtyRateInfo { return this.dirty.meter.query(unit); }
  vcpuDirtyLimits(): VcpuDirtyLimit[] | undefined { return undefined; }
  report: BlocktimeReport | undefined;
  async blocktime(): Promise<BlocktimeReport | undefined> { return this.report; }
  ramDigest(): string { return '0123456789abcdef'.repeat(4); }
}
