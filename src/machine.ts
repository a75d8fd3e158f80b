// The Machine: one VM (guest RAM + vCPU threads) with its migration engine,
// as one QEMU process is. Monitors drive it through the Machine interface of
// src/migration/api.ts; this module holds the run state, the capabilities and
// parameters, and hands the migration work to src/migration/ (outgoing for a
// source, incoming for a destination, local-destination for `migrate local`).

import { EventEmitter } from 'node:events';
import { constants } from 'node:buffer';
import { CommandError } from './errors.js';
import type {
  CapabilityState, CpuInfo, Machine, MachineInfo, MigrationInfo, MigrationParameters, RunState,
} from './migration/api.js';
import type { BlocktimeReport } from './blocktime/types.js';
import { GuestRam, VcpuSet, formatWorkload, encodeVcpuState, decodeVcpuState, type WorkloadSpec } from './vm/index.js';
import { Capabilities } from './migration/capabilities.js';
import { Parameters } from './migration/parameters.js';
import { MigrationStatusMachine } from './migration/status.js';
import { parseMigrationUri } from './migration/uri.js';
import { OutgoingMigration } from './migration/outgoing.js';
import { IncomingMigration } from './migration/incoming.js';
import { loadMigrationKey } from './migration/channel-auth.js';
import { checkTracePath } from './blocktime-trace/index.js';
import { VCPU_STATE_BYTES } from './migration/wire.js';
import type { GuestMemory, VcpuControl } from './migration/guest.js';
import { sampleThread, yieldCpu } from './vm/schedstat.js';
import { monotonicNs } from './blocktime/clock.js';
import type { DirtyTrackingMode } from './migration/dirty-tracker.js';
import { ConvergenceTools } from './migration/convergence-tools.js';
import { memoryBackendsArgs, type MemoryBackend } from './vm/memory-backend.js';

const MAX_STRING_LENGTH = constants.MAX_STRING_LENGTH;

export { parseMigrationUri, formatMigrationUri } from './migration/uri.js';
export type { MigrationAddress } from './migration/uri.js';

export interface MachineOptions {
  ramBytes: number;
  /** what backs guest RAM (-mem-path, memory-backend-file): null or absent = anonymous 4 KiB pages */
  memoryBackend?: MemoryBackend | null;
  /** several RAM blocks (-numa node,memdev=ID repeated): their backends, in order (overrides memoryBackend) */
  memoryBackends?: MemoryBackend[];
  vcpus: number;
  workload: WorkloadSpec;
  /** 'tcp:H:P' | 'unix:PATH' | 'defer': this VM is a destination */
  incoming?: string;
  /** -S: vCPUs start paused (and stay paused after an incoming migration) */
  startPaused: boolean;
  /** force a dirty-tracking mechanism (tests, benchmarks) */
  dirtyTracking?: DirtyTrackingMode;
}

/** guest RAM as the migration engine sees it (src/migration/guest.ts) */
export function guestMemoryOf(ram: GuestRam): GuestMemory {
  return {
    base: ram.base, bytes: ram.bytes, pageSize: ram.pageSize, blocks: ram.blocks, blockTable: ram.blockTable,
    contents: ram.windows,
    discard: (offset, len) => ram.discard(offset / ram.pageSize, len / ram.pageSize),
  };
}

export async function createMachine(opts: MachineOptions): Promise<Machine> {
  const incoming = opts.incoming;
  if (incoming !== undefined && incoming !== 'defer') parseMigrationUri(incoming); // bad URI: refuse before mapping RAM
  const ram = (opts.memoryBackends?.length ?? 0) > 1 ? GuestRam.createBlocks(opts.memoryBackends!) : GuestRam.create(opts.ramBytes, opts.memoryBackend ?? null);
  let vcpus: VcpuSet;
  try {
    vcpus = await VcpuSet.create(ram, opts.vcpus, opts.workload, { paused: incoming !== undefined || opts.startPaused });
  } catch (e) {
    ram.dispose();
    throw e;
  }
  const m = new VmMachine(ram, vcpus, opts);
  if (incoming !== undefined && incoming !== 'defer') {
    try {
      await m.migrateIncoming(incoming);
    } catch (e) {
      await m.quit();
      throw e;
    }
  }
  return m;
}

/** the local-destination module, loaded on first `migrate local` */
interface LocalDestinationLike {
  readonly uri: string;
  /** where a user can reach it: process id and QMP address */
  readonly whereabouts: string;
  queryMigrate(): Promise<MigrationInfo>;
  quit(): Promise<void>;
}

class VmMachine implements Machine {
  readonly events = new EventEmitter();
  private readonly caps = new Capabilities();
  private readonly params = new Parameters();
  private readonly status: MigrationStatusMachine;
  private readonly workloadText: string;
  private readonly memory: GuestMemory;
  private readonly control: VcpuControl;
  private state: RunState;
  private readonly isDestination: boolean;
  private autostart: boolean;
  private outgoing: OutgoingMigration | null = null;
  private incoming: IncomingMigration | null = null;
  private incomingStarted = false;
  private local: LocalDestinationLike | null = null;
  /** the last outgoing migration's URI as given ('local' = the lab) */
  private lastTarget = '';
  private quitting: Promise<void> | null = null;
  /** calc-dirty-rate, auto-converge, dirty-limit */
  private readonly tools: ConvergenceTools;

  constructor(private readonly ram: GuestRam, private readonly vcpus: VcpuSet, private readonly opts: MachineOptions) {
    this.events.setMaxListeners(100);
    this.status = new MigrationStatusMachine(this.events);
    this.workloadText = formatWorkload(opts.workload);
    this.isDestination = opts.incoming !== undefined;
    this.autostart = !opts.startPaused;
    this.state = this.isDestination ? 'inmigrate' : opts.startPaused ? 'paused' : 'running';
    this.memory = guestMemoryOf(ram);
    // a lab destination that never got the guest (precopy cancelled or
    // failed) holds guest-sized memory for nothing: let it go at once
    this.events.on('migration', (s: string) => {
      if ((s === 'cancelled' || s === 'failed') && this.local && this.outgoing && !this.outgoing.postcopySwitched) void this.releaseLab();
    });
    const v = vcpus;
    this.control = {
      count: v.count,
      threadIds: () => v.threadIds(),
      pause: () => v.pause(),
      resume: () => v.resume(),
      saveStates: (out, pos) => { for (let i = 0; i < v.count; i++) encodeVcpuState(v.state(i), out, pos + i * VCPU_STATE_BYTES); },
      loadStates: (buf, pos) => { for (let i = 0; i < v.count; i++) v.setState(i, decodeVcpuState(buf, pos + i * VCPU_STATE_BYTES)); },
      accessStamps: () => v.accessStamps(),
      kernelSample: (i, fresh) => v.kernelSample(i, fresh),
      yieldCpu,
      throttle: v.throttle,
    };
    this.tools = new ConvergenceTools({
      ram: this.memory, vcpus: v.throttle, events: this.events, params: () => this.params.get(),
      ramUnreadable: () => (this.incoming && !this.incoming.ramReadable ? 'guest RAM is being filled by the incoming migration' : undefined),
      trackingBusy: () => {
        if (this.status.active) return 'a migration is running and tracks guest RAM itself';
        if (this.state === 'inmigrate' || (this.incoming && !this.incoming.ramReadable)) return 'this VM waits for, or is filled by, an incoming migration';
        return undefined;
      },
    });
  }

  private setRunState(s: RunState): void {
    if (this.state === s) return;
    this.state = s;
    this.events.emit('runstate', s);
  }

  info(): MachineInfo {
    return {
      role: this.isDestination ? 'destination' : 'source',
      ramBytes: this.ram.bytes, pageSize: this.ram.pageSize, vcpus: this.vcpus.count, workload: this.workloadText,
      ramBlocks: this.ram.blocks.list.map((b) => ({
        name: b.idstr, pageSize: b.pageSize, offset: b.offset, used: b.usedLength, total: b.usedLength, hva: this.ram.base + b.offset,
      })),
    };
  }

  runState(): RunState { return this.state; }

  async stop(): Promise<void> {
    this.live('stop');
    if (this.state === 'inmigrate') { this.autostart = false; return; } // as QEMU: the VM stays paused after the migration
    if (this.state !== 'running') return;
    void this.vcpus.pause().catch(() => undefined);
    this.setRunState('paused');
  }

  async cont(): Promise<void> {
    this.live('cont');
    if (this.state === 'inmigrate') { this.autostart = true; return; }
    if (this.state === 'running') return;
    if (this.state === 'finish-migrate') throw new CommandError('Migration is switching over; the VM cannot be continued now');
    if (this.state === 'postmigrate') {
      throw new CommandError('The guest has migrated away (run state postmigrate); continuing it here would run it twice');
    }
    if (this.incoming && this.status.status === 'failed' && !this.incoming.ramReadable) {
      throw new CommandError('Postcopy failed: guest RAM is incomplete, the VM cannot be continued');
    }
    this.vcpus.resume();
    this.setRunState('running');
  }

  cpus(): CpuInfo[] {
    return this.vcpus.threadIds().map((threadId, index) => ({ index, threadId }));
  }

  // ---------------------------------------------------------------- migration

  queryMigrate(): MigrationInfo {
    const info: MigrationInfo = { status: this.status.status };
    if (this.status.status === 'none') return info;
    Object.assign(info, this.status.times());
    const ram = this.outgoing?.ramStats() ?? this.incoming?.ramStats();
    if (ram) info.ram = ram;
    if ((this.status.status === 'failed' || this.status.status === 'postcopy-paused') && this.status.errorDesc) info['error-desc'] = this.status.errorDesc;
    if (this.outgoing) Object.assign(info, this.tools.migrationInfo());
    const rec = this.outgoing?.recoveryFigures ?? this.incoming?.recoveryFigures;
    if (rec && (rec.recoveries > 0 || this.status.status === 'postcopy-paused' || this.status.status.startsWith('postcopy-recover'))) info['x-recovery'] = rec;
    const stall = this.status.status === 'active' ? this.outgoing?.convergence() : undefined;
    if (stall) info['x-convergence'] = stall;
    if (this.incoming && this.caps.has('postcopy-blocktime')) {
      const r = this.incoming.blocktimeReport();
      if (r) Object.assign(info, r);
    }
    return info;
  }

  capabilities(): CapabilityState[] { return this.caps.list(); }

  async setCapabilities(caps: CapabilityState[]): Promise<void> {
    this.caps.set(caps, this.status.active);
  }

  parameters(): MigrationParameters { return this.params.get(); }

  async setParameters(params: Partial<MigrationParameters>): Promise<void> {
    // a trace that could not be written would only show when postcopy starts
    const trace: unknown = params['x-blocktime-trace'];
    if (typeof trace === 'string') checkTracePath(trace);
    const psk: unknown = params['x-migration-psk'];
    if (typeof psk === 'string') loadMigrationKey(psk); // the key file as it is now: a bad one is refused here, and when a migration starts
    this.params.set(params as Record<string, unknown>);
  }

  async migrate(uri: string, resume = false): Promise<void> {
    this.live('migrate');
    if (resume) {
      if (!this.outgoing || this.status.status !== 'postcopy-paused') throw new CommandError('Cannot resume if there is no paused migration');
      this.outgoing.resume(parseMigrationUri(uri));
      return;
    }
    if (this.status.active) throw new CommandError("There's a migration process in progress");
    if (this.state === 'inmigrate') throw new CommandError('Guest is waiting for an incoming migration');
    if (this.incoming && !this.incoming.ramReadable) throw new CommandError('Guest RAM is incomplete after a failed incoming migration');
    if (this.state === 'postmigrate') throw new CommandError(this.guestLeft());
    this.tools.checkMigrate();
    const psk = loadMigrationKey(this.params.value('x-migration-psk')); // read again: the file may have changed since it was set
    let target: string = uri;
    if (uri === 'local') {
      await this.releaseLab();
      const { LocalDestination } = await import('./migration/local-destination.js');
      this.local = await LocalDestination.spawn({
        ramBytes: this.ram.bytes, memoryArgs: memoryBackendsArgs(this.ram.backends, this.ram.bytes), vcpus: this.vcpus.count, workload: this.workloadText,
        capabilities: this.caps.list(), parameters: this.params.get(),
      });
      if (this.quitting) { await this.releaseLab(); this.live('migrate'); } // it quit while the lab started
      target = this.local.uri;
    }
    const addr = parseMigrationUri(target);
    this.lastTarget = uri;
    this.outgoing = new OutgoingMigration({
      ram: this.memory, vcpus: this.control, workload: this.workloadText, status: this.status, params: this.params,
      postcopy: this.caps.has('postcopy-ram'), wasRunning: this.state === 'running',
      setRunState: (s) => this.setRunState(s), trackingMode: this.opts.dirtyTracking, events: this.events,
      throttle: this.tools.forMigration(this.caps), psk,
    });
    this.outgoing.start(addr);
  }

  /** Why a VM whose guest left cannot migrate again, and where the guest is. */
  private guestLeft(): string {
    const where = this.lastTarget === 'local' && this.local ? `the lab destination (${this.local.whereabouts})` : `the destination (${this.lastTarget})`;
    if (this.status.status === 'completed') {
      return `The guest has migrated: it runs in ${where}; this VM keeps a stale copy (run state postmigrate). Start a new VM to migrate again`;
    }
    return `The guest left this VM at the postcopy switchover and the migration to ${where} ${this.status.status === 'cancelled' ? 'was cancelled' : 'failed'}`
      + ' after it: this VM keeps a stale copy (run state postmigrate) and cannot migrate it again';
  }

  private async releaseLab(): Promise<void> {
    const l = this.local;
    this.local = null;
    await l?.quit().catch(() => undefined);
  }

  /**
   * migrate_incoming / migrate-incoming (and -incoming URI). A failed or
   * cancelled attempt that never reached the postcopy switchover can be
   * armed again (guest RAM is wiped first: the new source sends it all);
   * after the switchover guest RAM is split between two hosts and this VM
   * cannot take another. `exitOnError` (QEMU 9.1's exit-on-error): a failure
   * ends the process with status 1 ('incoming-exit' on the emitter).
   */
  async migrateIncoming(uri: string, exitOnError = false): Promise<void> {
    this.live('migrate-incoming');
    if (!this.isDestination) throw new CommandError("'-incoming' was not specified on the command line");
    const prev = this.incoming;
    if (this.incomingStarted) {
      if (!prev || !this.status.terminal || this.status.status === 'completed') throw new CommandError('The incoming migration has already been started');
      if (!prev.ramReadable || this.state !== 'inmigrate') {
        throw new CommandError('The incoming migration failed after the postcopy switchover: guest RAM is split between this VM and the source, so it cannot take another migration (restart it)');
      }
    }
    const addr = parseMigrationUri(uri);
    loadMigrationKey(this.params.value('x-migration-psk')); // checked now; read again at each connection (channel-auth.ts)
    this.incomingStarted = true;
    if (prev) {
      this.incoming = null;
      await prev.close();
      this.memory.discard(0, this.memory.bytes); // what the failed attempt wrote reads as zero again
    }
    const inc = new IncomingMigration({
      ram: this.memory, vcpus: this.control, workload: this.workloadText, status: this.status, params: this.params,
      blocktimeEnabled: () => this.caps.has('postcopy-blocktime'),
      autostart: () => this.autostart,
      setRunState: (s) => this.setRunState(s), events: this.events,
    });
    try {
      await inc.listen(addr);
    } catch (e) {
      this.incomingStarted = prev !== null;
      await inc.close().catch(() => undefined);
      throw e;
    }
    this.incoming = inc;
    if (exitOnError) {
      const onStatus = (st: string): void => {
        if (this.incoming !== inc) { this.events.off('migration', onStatus); return; }
        if (st === 'failed') this.events.emit('incoming-exit', this.status.errorDesc ?? 'the incoming migration failed');
        if (st === 'failed' || st === 'completed') this.events.off('migration', onStatus);
      };
      this.events.on('migration', onStatus);
    }
  }

  /** where an incoming migration listens (tcp port resolved), or null */
  incomingAddress(): string | null { return this.incoming?.address() ?? null; }

  async startPostcopy(): Promise<void> {
    this.live('migrate-start-postcopy');
    if (!this.outgoing || !this.status.active) throw new CommandError('Postcopy must be started after migration has been started');
    if (!this.caps.has('postcopy-ram') || !this.outgoingPostcopyEnabled()) {
      throw new CommandError('Enable postcopy with migrate_set_capability before the start of migration');
    }
    this.outgoing.requestPostcopy();
  }

  private outgoingPostcopyEnabled(): boolean {
    return this.outgoing !== null && this.outgoing.postcopyEnabled;
  }

  async migratePause(): Promise<void> {
    this.live('migrate-pause');
    const st = this.status.status;
    if (st !== 'postcopy-active' && st !== 'postcopy-recover') {
      throw new CommandError('migrate-pause is currently only supported during postcopy-active or postcopy-recover state');
    }
    if (this.outgoing) this.outgoing.pauseByUser();
    else this.incoming?.pauseByUser();
  }

  async migrateRecover(uri: string): Promise<void> {
    this.live('migrate-recover');
    if (!this.incoming || this.status.status !== 'postcopy-paused') throw new CommandError('Migrate recover can only be run when postcopy is paused.');
    if (this.incoming.recovering) throw new CommandError('Migrate recovery is triggered already');
    await this.incoming.recover(parseMigrationUri(uri));
  }

  async cancel(): Promise<void> {
    if (this.outgoing && this.status.active) { this.outgoing.cancel(); return; }
    if (this.incoming && this.status.active) this.incoming.cancel();
  }

  calcDirtyRate: Machine['calcDirtyRate'] = (a) => { this.live('calc-dirty-rate'); this.tools.calcDirtyRate(a); };
  queryDirtyRate: Machine['queryDirtyRate'] = (unit) => this.tools.queryDirtyRate(unit);
  vcpuDirtyLimits: Machine['vcpuDirtyLimits'] = () => this.tools.vcpuDirtyLimits();

  async blocktime(): Promise<BlocktimeReport | undefined> {
    if (this.incoming) return this.incoming.blocktimeReport();
    if (this.local) {
      const info = await this.local.queryMigrate();
      if (info['x-blocktime'] === undefined) return undefined;
      return info as unknown as BlocktimeReport;
    }
    return undefined;
  }

  ramDigest(firstPage = 0, pageCount = this.ram.pages - firstPage): string {
    this.live('ram digest');
    if (this.incoming && !this.incoming.ramReadable) {
      throw new CommandError('Guest RAM is being filled by the incoming migration (registered with userfaultfd, as postcopy needs): its digest is available once the migration completed');
    }
    const pages = this.ram.pages;
    if (!(Number.isSafeInteger(firstPage) && firstPage >= 0 && firstPage < pages)) {
      throw new CommandError(`The first page ${firstPage} is outside guest RAM (pages 0 to ${pages - 1})`);
    }
    if (!(Number.isSafeInteger(pageCount) && pageCount >= 0 && firstPage + pageCount <= pages)) {
      throw new CommandError(`${pageCount} pages from page ${firstPage} go beyond guest RAM (${pages} pages)`);
    }
    if (pageCount * 16 > MAX_STRING_LENGTH) {
      throw new CommandError(`The digest of ${pageCount} pages would be longer than a string can be; ask for at most ${Math.floor(MAX_STRING_LENGTH / 16)} pages at a time`);
    }
    return this.ram.digestHex(firstPage, pageCount);
  }

  // ---------------------------------------------------------------- quit

  quit(): Promise<void> {
    this.quitting ??= this.doQuit();
    return this.quitting;
  }

  private async doQuit(): Promise<void> {
    this.events.emit('shutdown');
    if (this.outgoing && this.status.active) this.outgoing.cancel();
    await this.outgoing?.close();
    await this.incoming?.close();
    await this.releaseLab();
    await this.vcpus.stop();
    this.setRunState('shutdown');
    this.ram.dispose();
  }

  private live(op: string): void {
    if (this.quitting) throw new CommandError(`cannot ${op}: the VM is quitting`);
  }
}
