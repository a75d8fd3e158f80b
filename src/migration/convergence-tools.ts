// The Machine's side of QEMU's convergence tools: the one dirty-rate meter
// (calc-dirty-rate) and, per outgoing migration, the precopy throttle
// (auto-converge / dirty-limit), lifted whenever a migration ends. Built from
// the VM's guest RAM and vCPUs; the Machine only delegates to it.
import type { EventEmitter } from 'node:events';
import { CommandError } from '../errors.js';
import { TERMINAL_STATUSES, type MigrationParameters, type MigrationStatus } from './api.js';
import type { Capabilities } from './capabilities.js';
import type { GuestMemory, VcpuThrottle } from './guest.js';
import { DirtyRateMeter, type CalcDirtyRateArgs, type DirtyRateInfo, type TimeUnit } from './dirty-rate.js';
import { PrecopyThrottle, type ThrottleInfo } from './precopy-throttle.js';
import type { VcpuDirtyLimit } from './dirty-limit.js';
import { startDirtyTracking } from './dirty-tracker.js';
import { pageDigests } from '../native/index.js';

export interface ConvergenceToolsOptions {
  ram: GuestMemory;
  vcpus: VcpuThrottle | undefined;
  events: EventEmitter;
  params: () => MigrationParameters;
  /** why guest RAM cannot be read now (a destination filling it), or undefined */
  ramUnreadable: () => string | undefined;
  /** why guest RAM cannot be write-tracked now (a migration holds it), or undefined */
  trackingBusy: () => string | undefined;
}

export class ConvergenceTools {
  readonly meter: DirtyRateMeter;
  private throttle: PrecopyThrottle | null = null;

  constructor(private readonly o: ConvergenceToolsOptions) {
    const { ram } = o;
    this.meter = new DirtyRateMeter({
      ramBytes: ram.bytes,
      pageSize: ram.pageSize,
      pageDigest: (p) => pageDigests(ram.base, ram.pageSize, p, 1)[0],
      vcpus: o.vcpus,
      unreadable: o.ramUnreadable,
      startTracking: () => {
        const busy = o.trackingBusy();
        if (busy !== undefined) return busy;
        let tracker: ReturnType<typeof startDirtyTracking>;
        try {
          tracker = startDirtyTracking(ram, 'wp-async');
        } catch (e) {
          return `cannot track dirty pages: ${(e as Error).message}`;
        }
        return {
          finish: async () => {
            const marks = new Uint8Array(ram.bytes / ram.pageSize);
            try { return tracker.collect(marks); } finally { await tracker.stop(); }
          },
        };
      },
    });
    o.events.on('migration', (s: MigrationStatus) => { if (TERMINAL_STATUSES.has(s)) this.throttle?.stop(); });
  }

  /** The throttle of the outgoing migration about to start (undefined with
   *  neither auto-converge nor dirty-limit on, or vCPUs without the knobs). */
  forMigration(caps: Capabilities): PrecopyThrottle | undefined {
    this.throttle?.stop();
    this.throttle = null;
    const autoConverge = caps.has('auto-converge');
    const dirtyLimit = caps.has('dirty-limit');
    if (!(autoConverge || dirtyLimit) || !this.o.vcpus) return undefined;
    this.throttle = new PrecopyThrottle({ vcpus: this.o.vcpus, pageSize: this.o.ram.pageSize, autoConverge, dirtyLimit, params: this.o.params });
    return this.throttle;
  }

  /** query-migrate's fields of the tools */
  migrationInfo(): ThrottleInfo { return this.throttle?.info() ?? {}; }

  calcDirtyRate(a: CalcDirtyRateArgs): void { this.meter.calc(a); }
  /** a migration cannot start while a dirty-bitmap measurement holds guest RAM's write-protect tracking */
  checkMigrate(): void {
    if (this.meter.tracking) {
      throw new CommandError('A dirty-bitmap dirty rate measurement tracks guest RAM until it ends (query-dirty-rate): migrate after it');
    }
  }
  queryDirtyRate(unit?: TimeUnit): DirtyRateInfo { return this.meter.query(unit); }
  vcpuDirtyLimits(): VcpuDirtyLimit[] | undefined { return this.throttle?.vcpuLimits(); }
}
