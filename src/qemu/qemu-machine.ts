// The Machine (src/migration/api.ts) of a real QEMU, driven over QMP, so the
// one command registry and the HMP console run against it as against our own
// VMs (`postcopy attach`). The source QEMU is the machine; a destination QEMU,
// when given, gets what is aimed at it: capabilities are set on both, and
// the blocktime comes from it (QEMU's own figures once it is completed, and
// exact ones, live, from its trace log: trace-follower.ts), with the kernel's
// samples of its vCPU threads when it runs on this host (vcpu-schedstat.ts).
//
// The getters answer from what refresh() last read (query-status and
// query-migrate of both sides); the console refreshes before each command,
// MIGRATION/STOP/RESUME events refresh at once, and a migration under way is
// polled. The migration is over once both QEMUs say so: the source completes
// before the destination has placed its last page.

import { EventEmitter } from 'node:events';
import { CommandError } from '../errors.js';
import {
  TERMINAL_STATUSES, type CapabilityName, type CapabilityState, type CpuInfo, type Machine, type MachineInfo,
  type MigrationInfo, type MigrationParameters, type MigrationStatus, type RunState,
} from '../migration/api.js';
import type { CalcDirtyRateArgs, DirtyRateInfo, TimeUnit } from '../migration/dirty-rate.js';
import type { VcpuDirtyLimit } from '../migration/dirty-limit.js';
import { emptyReport } from '../blocktime/report.js';
import type { BlocktimeReport, QemuBlocktimeFields, QemuReported } from '../blocktime/types.js';
import { QmpError, type QmpClient, type QmpEvent } from '../qmp/client.js';
import { TraceFollower } from './trace-follower.js';
import { KERNEL_TRUST, QemuVcpuSampler } from './vcpu-schedstat.js';

const NOT_THROUGH_ATTACH = "the dirty-rate commands are not offered through attach: use QEMU's own monitor (calc_dirty_rate, info dirty_rate)";

export type QemuSide = 'source' | 'destination';

const POLL_MS = 250;
const REPLY_MS = 10_000;
const PARAMETERS: readonly (keyof MigrationParameters)[] = ['max-bandwidth', 'downtime-limit', 'max-postcopy-bandwidth'];
const QEMU_FIELDS: readonly (keyof QemuBlocktimeFields)[] = [
  'postcopy-blocktime', 'postcopy-vcpu-blocktime', 'postcopy-latency', 'postcopy-vcpu-latency',
  'postcopy-non-vcpu-latency', 'postcopy-latency-dist',
];

/** One QEMU's QMP connection: its replies as values, its errors as QEMU's text. */
class QemuEnd {
  /** why it cannot be reached any more, once its connection closed */
  gone: string | undefined;
  constructor(readonly side: QemuSide, readonly client: QmpClient) {}

  get version(): string {
    const v = this.client.greeting.QMP.version.qemu;
    return `${v.major}.${v.minor}.${v.micro}`;
  }

  async run<T>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.gone !== undefined) throw new CommandError(this.gone);
    try {
      return await this.client.execute<T>(command, args, { timeoutMs: REPLY_MS });
    } catch (e) {
      if (e instanceof QmpError) throw new CommandError(e.desc);
      throw new CommandError(this.gone ?? `the ${this.side} QEMU (${this.client.address}): ${(e as Error).message}`);
    }
  }
}

export interface QemuMachineOptions {
  source: QmpClient;
  destination?: QmpClient;
  /** the destination's trace log (-D FILE with the -trace options of docs/qemu.md) */
  destinationTrace?: string;
}

/**
 * `events` emits, besides the Machine's 'migration' and 'runstate':
 *  - 'qemu-event' (side, QmpEvent): every QMP event either QEMU sent
 *  - 'qemu-gone' (side, message): a QEMU's connection closed; the message
 *    says what still works
 */
export class QemuMachine implements Machine {
  readonly events = new EventEmitter();
  private readonly src: QemuEnd;
  private readonly dst: QemuEnd | undefined;
  private readonly follower: TraceFollower | undefined;
  private sampler: QemuVcpuSampler | string = 'no destination';
  private state: RunState = 'running';
  private info_: MigrationInfo = { status: 'none' };
  private status: MigrationStatus = 'none';
  private dstInfo: MigrationInfo & Record<string, unknown> = { status: 'none' };
  private caps: CapabilityState[] = [];
  private params: Partial<MigrationParameters> = {};
  private cpuList: CpuInfo[] = [];
  private ramBytes = 0;
  private poll: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private closed = false;
  /** the kernel's window opened (the destination entered postcopy) */
  private kernelStarted = false;

  private constructor(o: QemuMachineOptions, private readonly dstCpus: readonly number[]) {
    this.events.setMaxListeners(100);
    this.src = new QemuEnd('source', o.source);
    this.dst = o.destination ? new QemuEnd('destination', o.destination) : undefined;
    this.follower = o.destinationTrace !== undefined ? new TraceFollower(o.destinationTrace, dstCpus) : undefined;
    if (this.dst) this.sampler = QemuVcpuSampler.find(dstCpus);
    for (const end of [this.src, this.dst]) {
      if (!end) continue;
      end.client.on('event', (e: QmpEvent) => {
        this.events.emit('qemu-event', end.side, e);
        if (['MIGRATION', 'STOP', 'RESUME', 'SHUTDOWN'].includes(e.event)) void this.refresh().catch(() => undefined);
      });
      end.client.on('close', () => this.lost(end));
    }
  }

  /** Reads both QEMUs' state; turns on the `events` capability (MIGRATION
   *  events) where no migration runs. */
  static async attach(o: QemuMachineOptions): Promise<QemuMachine> {
    if (o.destinationTrace !== undefined && o.destination === undefined) {
      throw new CommandError('--destination-trace needs --destination DEST_QMP (the vCPU thread ids come from its query-cpus-fast)');
    }
    let dstCpus: number[] = [];
    if (o.destination) {
      const cpus = await new QemuEnd('destination', o.destination).run<{ 'cpu-index': number; 'thread-id': number }[]>('query-cpus-fast');
      dstCpus = [...cpus].sort((a, b) => a['cpu-index'] - b['cpu-index']).map((c) => c['thread-id']);
    }
    const m = new QemuMachine(o, dstCpus);
    const mem = await m.src.run<{ 'base-memory': number }>('query-memory-size-summary');
    m.ramBytes = mem['base-memory'];
    const cpus = await m.src.run<{ 'cpu-index': number; 'thread-id': number }[]>('query-cpus-fast');
    m.cpuList = cpus.map((c) => ({ index: c['cpu-index'], threadId: c['thread-id'] })).sort((a, b) => a.index - b.index);
    await m.refresh();
    for (const end of [m.src, m.dst]) {
      if (!end) continue;
      const info = await end.run<{ status?: string }>('query-migrate');
      if (info.status === undefined || TERMINAL_STATUSES.has(info.status as MigrationStatus)) {
        await end.run('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
      }
    }
    await m.readSettings();
    return m;
  }

  /** the QEMU versions, and where the kernel's figures come from */
  describe(): string[] {
    const lines = [`source: QEMU ${this.src.version} at ${this.src.client.address}`];
    if (this.dst) {
      lines.push(`destination: QEMU ${this.dst.version} at ${this.dst.client.address}, vCPU threads ${this.dstCpus.join(', ')}`);
      lines.push(typeof this.sampler === 'string' ? `kernel figures: none (${this.sampler})` : `kernel figures: schedstat of process ${this.sampler.processId}'s vCPU threads`);
    }
    if (this.follower) lines.push(`exact blocktime: from ${this.follower.path}`);
    return lines;
  }

  info(): MachineInfo {
    return { role: 'source', ramBytes: this.ramBytes, pageSize: 4096, vcpus: this.cpuList.length, workload: `QEMU ${this.src.version} guest`, qemu: this.src.version };
  }

  // what the source said last; once it is gone, its state is no longer known
  // (queryMigrate keeps the last figures, with the end the console saw)
  runState(): RunState { return this.known(this.state); }
  cpus(): CpuInfo[] { return this.known(this.cpuList).map((c) => ({ ...c })); }
  queryMigrate(): MigrationInfo { return { ...this.info_, status: this.status }; }
  capabilities(): CapabilityState[] { return this.known(this.caps).map((c) => ({ ...c })); }
  parameters(): Partial<MigrationParameters> { return { ...this.known(this.params) }; }

  private known<T>(v: T): T {
    if (this.src.gone !== undefined) throw new CommandError(this.src.gone);
    return v;
  }

  async stop(): Promise<void> { await this.src.run('stop'); await this.refresh(); }
  async cont(): Promise<void> { await this.src.run('cont'); await this.refresh(); }

  async setCapabilities(caps: CapabilityState[]): Promise<void> {
    await this.src.run('migrate-set-capabilities', { capabilities: caps });
    if (this.dst) {
      try {
        await this.dst.run('migrate-set-capabilities', { capabilities: caps });
      } catch (e) {
        throw new CommandError(`destination: ${(e as Error).message} (set on the source)`);
      }
    }
    await this.readSettings();
  }

  async setParameters(params: Partial<MigrationParameters>): Promise<void> {
    await this.src.run('migrate-set-parameters', params);
    await this.readSettings();
  }

  async migrate(uri: string, resume = false): Promise<void> {
    if (uri === 'local') throw new CommandError("a QEMU migrates to another QEMU: give the destination's -incoming URI (migrate tcp:HOST:PORT)");
    await this.src.run('migrate', resume ? { uri, resume } : { uri });
    await this.refresh();
  }

  async migratePause(): Promise<void> { await this.src.run('migrate-pause'); await this.refresh(); }

  async migrateRecover(uri: string): Promise<void> {
    if (!this.dst) throw new CommandError('migrate_recover goes to the destination: attach with --destination DEST_QMP');
    await this.dst.run('migrate-recover', { uri });
    await this.refresh();
  }

  async migrateIncoming(uri: string): Promise<void> {
    if (!this.dst) throw new CommandError('migrate_incoming goes to the destination: attach with --destination DEST_QMP');
    await this.dst.run('migrate-incoming', { uri });
    await this.refresh();
  }

  async startPostcopy(): Promise<void> { await this.src.run('migrate-start-postcopy'); await this.refresh(); }
  async cancel(): Promise<void> { await this.src.run('migrate_cancel'); await this.refresh(); }

  /** Exact figures from the trace (live or final) with QEMU's own beside
   *  them; QEMU's alone without a trace; undefined without a destination. */
  async blocktime(): Promise<BlocktimeReport | undefined> {
    if (!this.dst) return undefined;
    const qemu = this.qemuReported();
    const noExact = (why: string): BlocktimeReport => ({ ...emptyReport(this.dstCpus, why), 'x-qemu': qemu });
    if (!this.follower) {
      return noExact('exact figures come from the destination\'s trace log: attach with --destination-trace FILE (docs/qemu.md)');
    }
    const ended = this.dstInfo.status !== undefined && TERMINAL_STATUSES.has(this.dstInfo.status);
    const live = !ended && typeof this.sampler !== 'string' && this.kernelStarted ? this.sampler.sampleAll() : [];
    const r = await this.follower.report(live);
    if ('why' in r) return noExact(r.why);
    if (r.report['x-blocktime'].vcpus.some((v) => v.kernelBlockedNs !== undefined)) qemu.kernel = KERNEL_TRUST;
    return { ...r.report, 'x-qemu': { ...qemu, replayed72: r.replayed72 } };
  }

  ramDigest(): string {
    throw new CommandError('the RAM digest is our VMs\' (x-query-ram-digest); a QEMU has none');
  }

  // attach does not offer the dirty-rate commands (attach-command.ts): QEMU's
  // own monitor has them; these say so if called
  calcDirtyRate(_a: CalcDirtyRateArgs): void { throw new CommandError(NOT_THROUGH_ATTACH); }
  queryDirtyRate(_unit?: TimeUnit): DirtyRateInfo { throw new CommandError(NOT_THROUGH_ATTACH); }
  vcpuDirtyLimits(): VcpuDirtyLimit[] | undefined { throw new CommandError(NOT_THROUGH_ATTACH); }

  /** Detaches: the QEMUs keep running. */
  async quit(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopPolling();
    this.events.emit('shutdown');
    this.follower?.close();
    await Promise.all([this.src.client.close(), this.dst?.client.close()]);
  }

  // ---------------------------------------------------------------- state

  /** Reads the run state and both sides' query-migrate (one read at a time). */
  refresh(): Promise<void> {
    this.refreshing ??= this.read().finally(() => { this.refreshing = undefined; });
    return this.refreshing;
  }

  private async read(): Promise<void> {
    if (this.closed) return;
    const [status, info, dstInfo] = await Promise.all([
      this.src.gone === undefined ? this.src.run<{ status: RunState }>('query-status').catch(() => undefined) : undefined,
      this.src.gone === undefined ? this.src.run<MigrationInfo>('query-migrate').catch(() => undefined) : undefined,
      this.dst && this.dst.gone === undefined ? this.dst.run<MigrationInfo & Record<string, unknown>>('query-migrate').catch(() => undefined) : undefined,
    ]);
    if (dstInfo) this.destinationMoved(dstInfo);
    if (info) this.info_ = info.status === undefined ? { status: 'none' } : info;
    if (status && status.status !== this.state) {
      this.state = status.status;
      this.events.emit('runstate', this.state);
    }
    let next: MigrationStatus = this.info_.status;
    // the source is done before the destination has placed its last page
    if (next === 'completed' && this.dst && this.dst.gone === undefined && !TERMINAL_STATUSES.has(this.dstInfo.status)) {
      next = this.status === 'none' ? 'postcopy-active' : this.status;
    }
    if (next !== this.status) {
      this.status = next;
      this.events.emit('migration', next);
    }
    if (next !== 'none' && !TERMINAL_STATUSES.has(next)) this.startPolling();
    else this.stopPolling();
  }

  /** The destination's status moved: the kernel's window opens with its postcopy and closes at its end. */
  private destinationMoved(info: MigrationInfo & Record<string, unknown>): void {
    const was = this.dstInfo.status;
    this.dstInfo = info.status === undefined ? { status: 'none' } : info;
    const now = this.dstInfo.status;
    if (now === was || !this.follower || typeof this.sampler === 'string') return;
    if (now === 'postcopy-active' && !this.kernelStarted) {
      this.kernelStarted = true;
      for (const s of this.sampler.sampleAll()) this.follower.addSample(s);
    } else if (TERMINAL_STATUSES.has(now) && this.kernelStarted) {
      for (const s of this.sampler.sampleAll()) this.follower.addSample(s);
    }
  }

  private async readSettings(): Promise<void> {
    const caps = await this.src.run<{ capability: string; state: boolean }[]>('query-migrate-capabilities');
    // QEMU's own names, whatever its version has (7.2 has some 10.x dropped)
    this.caps = caps.map((c) => ({ capability: c.capability as CapabilityName, state: c.state }));
    const p = await this.src.run<Record<string, unknown>>('query-migrate-parameters');
    this.params = {};
    for (const k of PARAMETERS) if (typeof p[k] === 'number') (this.params as Record<string, number>)[k] = p[k] as number;
  }

  /** QEMU's own blocktime fields of the destination's query-migrate. */
  private qemuReported(): QemuReported {
    const d = this.dst as QemuEnd;
    const fields: Partial<QemuBlocktimeFields> = {};
    for (const k of QEMU_FIELDS) if (this.dstInfo[k] !== undefined) (fields as Record<string, unknown>)[k] = this.dstInfo[k];
    if (Object.keys(fields).length > 0) return { version: d.version, fields };
    if (d.gone !== undefined) return { version: d.version, why: d.gone };
    const caps = this.dstCapsHint();
    return { version: d.version, why: `QEMU fills them in once the destination is completed (it is ${this.dstInfo.status})${caps}` };
  }

  private dstCapsHint(): string {
    return this.dstInfo.status === 'completed' ? ': is postcopy-blocktime on there? (migrate_set_capability postcopy-blocktime on before migrate)' : '';
  }

  private lost(end: QemuEnd): void {
    if (this.closed || end.gone !== undefined) return;
    const other = end.side === 'source' ? this.dst : this.src;
    end.gone = `the ${end.side} QEMU (${end.client.address}) is gone: its QMP connection closed (QEMU quit or was killed)`;
    const can = end.side === 'source'
      ? (other && other.gone === undefined ? "commands for the source fail; 'info postcopy_blocktime' still reads the destination" : 'no QEMU is left')
      : `commands for the destination fail; the source's still work${this.follower ? `; 'info postcopy_blocktime' shows what ${this.follower.path} holds` : ''}`;
    if (end.side === 'source' && this.status !== 'none' && !TERMINAL_STATUSES.has(this.status)) {
      // nobody will say how it ended: a waiting migrate_wait must not wait for ever
      this.info_ = { ...this.info_, status: 'failed', 'error-desc': end.gone };
    }
    this.events.emit('qemu-gone', end.side, `${end.gone}. ${can[0].toUpperCase()}${can.slice(1)}; 'quit' ends this console.`);
    void this.refresh().catch(() => undefined);
  }

  private startPolling(): void {
    if (this.poll || this.closed) return;
    this.poll = setInterval(() => { void this.refresh().catch(() => undefined); }, POLL_MS);
    this.poll.unref();
  }

  private stopPolling(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
  }
}
