// The migration's public surface, shared by the engine (which implements it)
// and the monitors (which drive it): QEMU's status values, capability and
// parameter names, the query-migrate shape, and the Machine a monitor talks
// to. Names and units are QEMU's (REFERENCE.md §2).

import type { EventEmitter } from 'node:events';
import type { BlocktimeReport } from '../blocktime/types.js';
import type { ConvergenceInfo } from './convergence.js';
import type { CalcDirtyRateArgs, DirtyRateInfo, TimeUnit } from './dirty-rate.js';
import type { VcpuDirtyLimit } from './dirty-limit.js';

/** QEMU's MigrationStatus values. */
export const MIGRATION_STATUSES = [
  'none', 'setup', 'cancelling', 'cancelled', 'active', 'postcopy-active', 'postcopy-paused',
  'postcopy-recover-setup', 'postcopy-recover', 'completed', 'failed', 'pre-switchover', 'device',
] as const;
export type MigrationStatus = (typeof MIGRATION_STATUSES)[number];

/** A migration in one of these states is over. */
export const TERMINAL_STATUSES: ReadonlySet<MigrationStatus> = new Set(['completed', 'failed', 'cancelled']);

/** QEMU's capabilities, in QEMU's order. */
export const ALL_CAPABILITIES = [
  'xbzrle', 'rdma-pin-all', 'auto-converge', 'events', 'postcopy-ram', 'x-colo', 'release-ram',
  'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps', 'postcopy-blocktime',
  'late-block-activate', 'x-ignore-shared', 'validate-uuid', 'background-snapshot', 'zero-copy-send',
  'postcopy-preempt', 'switchover-ack', 'dirty-limit', 'mapped-ram',
] as const;
export type CapabilityName = (typeof ALL_CAPABILITIES)[number];

/** QEMU's migration parameters (10.x), so that one this engine lacks is
 *  refused as such rather than as a name nobody knows. */
export const QEMU_PARAMETERS: readonly string[] = [
  'announce-initial', 'announce-max', 'announce-rounds', 'announce-step', 'throttle-trigger-threshold',
  'cpu-throttle-initial', 'cpu-throttle-increment', 'cpu-throttle-tailslow', 'tls-creds', 'tls-hostname',
  'tls-authz', 'max-bandwidth', 'avail-switchover-bandwidth', 'downtime-limit', 'x-checkpoint-delay',
  'multifd-channels', 'xbzrle-cache-size', 'max-postcopy-bandwidth', 'max-cpu-throttle', 'multifd-compression',
  'multifd-zlib-level', 'multifd-zstd-level', 'multifd-qatzip-level', 'block-bitmap-mapping',
  'x-vcpu-dirty-limit-period', 'vcpu-dirty-limit', 'mode', 'zero-page-detection', 'direct-io',
];

/** The capabilities this engine implements; the others are refused with a clear error. */
export const IMPLEMENTED_CAPABILITIES: readonly CapabilityName[] = [
  'auto-converge', 'events', 'postcopy-ram', 'return-path', 'postcopy-blocktime', 'dirty-limit',
];

export interface CapabilityState {
  capability: CapabilityName;
  state: boolean;
}

/** Migration parameters (QMP names). Units: bandwidth bytes/s (0 = unlimited
 *  for max-postcopy-bandwidth), downtime-limit ms. Ours: `x-blocktime-trace`,
 *  a path to record the blocktime trace to ('' = off); `x-postcopy-readahead`,
 *  pages after a faulted one the destination asks for with it (0 = QEMU's
 *  behaviour: the faulted page only); `x-migration-psk`, the path of a key
 *  file every migration connection proves before any byte moves ('' = none,
 *  channel-auth.ts). The throttle ones are QEMU's
 *  (auto-converge: percentages; dirty-limit: ms and MB/s). */
export interface MigrationParameters {
  'throttle-trigger-threshold': number;
  'cpu-throttle-initial': number;
  'cpu-throttle-increment': number;
  'cpu-throttle-tailslow': boolean;
  'max-cpu-throttle': number;
  'max-bandwidth': number;
  'downtime-limit': number;
  'max-postcopy-bandwidth': number;
  'x-blocktime-trace': string;
  'x-postcopy-readahead': number;
  /** postcopy: silence on the urgent channel (ms) that pauses the migration (0 = never) */
  'x-postcopy-heartbeat-ms': number;
  'x-vcpu-dirty-limit-period': number;
  'vcpu-dirty-limit': number;
  'x-migration-psk': string;
}
export type ParameterName = keyof MigrationParameters;

/** Source-side RAM statistics of query-migrate. */
export interface MigrationRamStats {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  normal: number;
  'normal-bytes': number;
  mbps: number;
  'pages-per-second': number;
  'dirty-sync-count': number;
  'postcopy-requests': number;
  'postcopy-bytes': number;
  'precopy-bytes': number;
  'downtime-bytes': number;
  'page-size': number;
  'dirty-pages-rate': number;
}

/** query-migrate's reply. Fields absent where QEMU leaves them out (e.g.
 *  `ram` before a migration started; blocktime fields only on a destination
 *  with the capability on). */
export interface MigrationInfo extends Partial<BlocktimeReport> {
  status: MigrationStatus;
  'total-time'?: number;
  'setup-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  ram?: MigrationRamStats;
  'error-desc'?: string;
  /** auto-converge on: the cpu throttle now (%) */
  'cpu-throttle-percentage'?: number;
  /** dirty-limit limiting: the vCPUs' mean sleep per dirty ring (us) */
  'dirty-limit-throttle-time-per-round'?: number;
  /** dirty-limit limiting: a dirty ring's time at the vCPUs' mean dirty rate (us) */
  'dirty-limit-ring-full-time'?: number;
  /** ours: present while precopy rounds do not shrink the dirty set */
  'x-convergence'?: ConvergenceInfo;
  /** postcopy recovery (ours): recoveries completed; the source's pages sent again (the destination
   *  lacked them), the destination's pages asked for again on a new link. Present once a pause happened. */
  'x-recovery'?: { recoveries: number; 'pages-resent'?: number; 'pages-requested-again'?: number };
}

/** QEMU's RunState names (query-status "status"): the first six are the
 *  ones this program's VMs use; the others a real QEMU (`attach`) can be in. */
export type RunState = 'running' | 'paused' | 'inmigrate' | 'postmigrate' | 'finish-migrate' | 'shutdown'
  | 'prelaunch' | 'debug' | 'internal-error' | 'io-error' | 'restore-vm' | 'save-vm' | 'suspended'
  | 'watchdog' | 'guest-panicked' | 'colo';

export interface CpuInfo {
  /** vCPU index ("cpu-index") */
  index: number;
  /** kernel thread id of the vCPU thread */
  threadId: number;
}

export interface MachineInfo {
  role: 'source' | 'destination';
  ramBytes: number;
  pageSize: number;
  vcpus: number;
  /** the workload spec, e.g. "sweep,end=100M" */
  workload: string;
  /** the version of the real QEMU this machine is (attach), absent for ours */
  qemu?: string;
  /** guest RAM's RAM blocks, in order (QEMU's `info ramblock`); absent when unknown (a real QEMU) */
  ramBlocks?: RamBlockInfo[];
}

/** A RAM block as QEMU's `info ramblock` shows it. */
export interface RamBlockInfo {
  /** QEMU's idstr: the memory backend's id, pc.ram by default */
  name: string;
  pageSize: number;
  /** offset in the RAM address space */
  offset: number;
  used: number;
  total: number;
  /** host virtual address of its first byte */
  hva: number;
}

/**
 * One process, one VM: what a monitor (HMP or QMP) drives; our own VM
 * (src/machine.ts) or a real QEMU over QMP (src/qemu/qemu-machine.ts). The
 * getters are synchronous (a remote machine answers from what refresh()
 * read); what changes the machine is asynchronous.
 * Errors caused by the user or the migration state are thrown as
 * CommandError with QEMU's text.
 *
 * `events` emits:
 *  - 'migration' (status: MigrationStatus) on every migration status change
 *  - 'runstate' (state: RunState) on every run state change
 *  - 'shutdown' () when the machine is quitting
 */
export interface Machine {
  readonly events: EventEmitter;
  info(): MachineInfo;
  runState(): RunState;
  stop(): Promise<void>;
  cont(): Promise<void>;
  cpus(): CpuInfo[];
  /** ends vCPUs, migration and listeners; resolves when all is released */
  quit(): Promise<void>;

  /** a machine in another process (a QEMU, `attach`) brings what the
   *  getters below return up to date; the monitors call it before each
   *  command. Absent for a machine whose getters are always current. */
  refresh?(): Promise<void>;

  queryMigrate(): MigrationInfo;
  capabilities(): CapabilityState[];
  setCapabilities(caps: CapabilityState[]): Promise<void>;
  /** the parameters this machine has (a QEMU has none of ours, the x- ones) */
  parameters(): Partial<MigrationParameters>;
  setParameters(params: Partial<MigrationParameters>): Promise<void>;
  /** starts an outgoing migration and returns once it is under way (status
   *  setup or later); failures after that show as status 'failed' with
   *  'error-desc'. uri: tcp:HOST:PORT | unix:PATH | 'local' (spawn a matching
   *  destination process on loopback, the lab of `npm start`). `resume`:
   *  postcopy recovery of the paused migration (migrate -r) over uri. */
  migrate(uri: string, resume?: boolean): Promise<void>;
  /** migrate_pause: postcopy-active or postcopy-recover -> postcopy-paused (both sides drop the channels) */
  migratePause(): Promise<void>;
  /** migrate_recover: a postcopy-paused destination listens on uri for the source's recovery */
  migrateRecover(uri: string): Promise<void>;
  /** destination started with `-incoming defer`: start listening on uri */
  /** `exitOnError`: QEMU 9.1's exit-on-error (a failure ends the process); armed again after a failure before postcopy */
  migrateIncoming(uri: string, exitOnError?: boolean): Promise<void>;
  startPostcopy(): Promise<void>;
  cancel(): Promise<void>;
  /** calc-dirty-rate: starts measuring the guest's dirty rate (returns at once) */
  calcDirtyRate(a: CalcDirtyRateArgs): void;
  /** query-dirty-rate: the last measurement, calc-time in `unit` (default second) */
  queryDirtyRate(unit?: TimeUnit): DirtyRateInfo;
  /** query-vcpu-dirty-limit: each vCPU's limit and dirty rate, undefined while no limit is in service */
  vcpuDirtyLimits(): VcpuDirtyLimit[] | undefined;
  /** the destination's blocktime report (live or final), or undefined when
   *  this machine has no blocktime context. On a source that migrated to a
   *  `local` destination it is fetched from that destination. */
  blocktime(): Promise<BlocktimeReport | undefined>;
  /** per-page digests of guest RAM, for "nothing lost" checks: 16 hex digits
   *  (a 64-bit hash) per page, of pageCount pages (default: up to the end)
   *  from firstPage (default 0) on */
  ramDigest(firstPage?: number, pageCount?: number): string;
}
