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

export class FakeMachine implements Machine {
  readonly events = new EventEmitter();
  readonly calls: string[] = [];
  status: MigrationStatus = 'none';
  state: RunState = 'running';
  quitCount = 0;
  private caps = new Capabilities();
  private params = new Parameters();

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
  async migrate(uri: string): Promise<void> {
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
  report: BlocktimeReport | undefined;
  async blocktime(): Promise<BlocktimeReport | undefined> { return this.report; }
  ramDigest(): string { return '0123456789abcdef'.repeat(4); }
}
