// A VcpuThrottle (src/migration/guest.ts) whose vCPUs the test moves by hand:
// `dirty(i, pages)` and `sleep(i, ns)` stand for what a vCPU thread would
// have done; what the tools set (throttle, sleeps, the log) is recorded.
import type { VcpuThrottle } from '../../src/migration/guest.js';

export class FakeVcpuThrottle implements VcpuThrottle {
  readonly ringPages = 64;
  cpuThrottle = 0;
  logUsers = 0;
  reaps = 0;
  readonly pages: number[];
  readonly slept: number[];
  readonly ringSleepUs: number[];

  constructor(readonly count: number) {
    this.pages = new Array<number>(count).fill(0);
    this.slept = new Array<number>(count).fill(0);
    this.ringSleepUs = new Array<number>(count).fill(0);
  }

  setCpuThrottle(pct: number): void { this.cpuThrottle = pct; }
  startDirtyLog(): void { this.logUsers++; }
  stopDirtyLog(): void { this.logUsers--; }
  reapDirtyLog(): void { this.reaps++; }
  dirtyPages(i: number): number { return this.pages[i]; }
  setRingSleep(i: number, us: number): void { this.ringSleepUs[i] = us; }
  sleptNs(i: number): { throttle: number; limit: number } { return { throttle: 0, limit: this.slept[i] }; }

  dirty(i: number, pages: number): void { this.pages[i] += pages; }
  sleep(i: number, ns: number): void { this.slept[i] += ns; }
}
