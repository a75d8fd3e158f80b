// The VM's vCPUs: N native threads running one workload over guest RAM, and
// the run state (running / paused) the monitors and the migration drive.
// pause() resolves only once every vCPU has acknowledged (no access in
// flight, state stable), so the source can snapshot it; state()/setState()
// carry the workload state to a destination VcpuSet that resumes it exactly.
//
// A vCPU blocked in a userfaultfd fault cannot acknowledge a pause or a stop
// until its page is placed (or the userfaultfd is closed, which lets the
// access complete against ordinary zero memory): pause() and stop() wait for
// that; pause({ timeoutMs }) rejects naming the vCPUs that did not answer.
import { CommandError } from '../errors.js';
import { availableParallelism, getPriority, setPriority } from 'node:os';
import { NativeVcpus, vcpuLayout as L, type NativeWorkload } from '../native/index.js';
import type { AccessStamps } from '../native/vcpu.js';
import type { GuestRam } from './guest-ram.js';
import { PAGE_SIZE, checkVcpuCount } from './size.js';
import type { VcpuState } from './vcpu-state.js';
import { sampleThread, type ThreadSample } from './schedstat.js';
import { monotonicBaseNs, monotonicNs } from '../blocktime/clock.js';
import { NativeVcpuThrottle } from './vcpu-throttle.js';
import { DEFAULT_FRACTION, DEFAULT_SEED, DEFAULT_SHARE, type WorkloadSpec } from './workload.js';

export type VcpuStatus = 'starting' | 'running' | 'paused' | 'stopped' | 'done';
const STATUS: VcpuStatus[] = ['starting', 'running', 'paused', 'stopped', 'done'];
const KIND = { sweep: L.WL_SWEEP, random: L.WL_RANDOM, hotset: L.WL_HOTSET, idle: L.WL_IDLE } as const;
/** states in which a vCPU makes no access: a pause is acknowledged */
const QUIET = (1 << L.STATE_PAUSED) | (1 << L.STATE_DONE) | (1 << L.STATE_STOPPED);
const STARTED = QUIET | (1 << L.STATE_RUNNING);

export interface VcpuProgress { accesses: number; sweeps: number }

/** the generator seed of vCPU `index` for `seed` (splitmix64, never 0) */
export function vcpuRngSeed(seed: number, index: number): bigint {
  let z = BigInt.asUintN(64, BigInt(seed) + BigInt(index + 1) * 0x9e3779b97f4a7c15n);
  z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
  z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
  z ^= z >> 31n;
  return z === 0n ? 1n : z;
}

/** the page range [startPage, endPage) of vCPU `index` of `count` */
export function vcpuRange(spec: WorkloadSpec, index: number, count: number): [number, number] {
  const first = spec.start / PAGE_SIZE;
  const pages = spec.end / PAGE_SIZE - first;
  if (!spec.split) return [first, first + pages];
  return [first + Math.floor((index * pages) / count), first + Math.floor(((index + 1) * pages) / count)];
}

/** vCPUs per host CPU beyond which they yield to the VM's own threads */
export const OVERCOMMIT_RATIO = 4;

/**
 * The nice value of each of `count` vCPU threads on `cpus` host CPUs: 0 up
 * to OVERCOMMIT_RATIO vCPUs per CPU; beyond, the value that gives all the
 * vCPUs together about the weight of one ordinary thread per CPU (CFS
 * weights fall by 1.25x per nice step), added to the nice they inherit.
 * Without it 64 busy vCPUs on 2 CPUs leave the event loop, the fault thread
 * and the page server ~1/33 of a CPU each: a QMP query took 1-3 s on an idle VM and over 10 s on a migration
 * destination, and every placed page waited behind the vCPUs it woke.
 */
export function vcpuNice(count: number, cpus: number): number {
  if (count <= OVERCOMMIT_RATIO * cpus) return 0;
  return Math.min(19, Math.ceil(Math.log(count / cpus) / Math.log(1.25)));
}

export class VcpuSet {
  readonly count: number;
  readonly specs: readonly WorkloadSpec[];
  readonly #native: NativeVcpus;
  readonly #ranges: Array<[number, number]>;
  readonly #tids: number[];
  #running: boolean;
  #stopped = false;
  #final: Array<{ progress: VcpuProgress; state: VcpuState; status: VcpuStatus }> | undefined;
  /** QEMU's convergence tools on these threads (cpu throttle, dirty log) */
  readonly throttle: NativeVcpuThrottle;
  /** guest RAM's 4 KiB pages (the waiting map's size) */
  readonly #pages: number;
  /** per vCPU: its count of own samples when one was asked for (kernelSample), -1 = none asked */
  readonly #sampleAsked: Int32Array;

  private constructor(native: NativeVcpus, specs: WorkloadSpec[], ranges: Array<[number, number]>, running: boolean, pages: number) {
    this.#native = native;
    this.count = native.count;
    this.#sampleAsked = new Int32Array(native.count).fill(-1);
    this.specs = specs;
    this.#ranges = ranges;
    this.#running = running;
    this.#tids = Array.from({ length: native.count }, (_, i) => native.tid(i));
    this.throttle = new NativeVcpuThrottle(native, pages, () => !this.#stopped);
    this.#pages = pages;
  }

  /**
   * Starts `count` vCPU threads running `spec` (or spec[i] for vCPU i) over
   * `ram`; with { paused: true } they start paused (QEMU's -S, and the
   * destination, which sets their state before resuming). Resolves once
   * every thread runs and its thread id is known.
   */
  static async create(ram: GuestRam, count: number, spec: WorkloadSpec | readonly WorkloadSpec[],
    opts: { paused?: boolean } = {}): Promise<VcpuSet> {
    checkVcpuCount(count);
    const specs: WorkloadSpec[] = Array.isArray(spec)
      ? [...(spec as readonly WorkloadSpec[])]
      : Array.from({ length: count }, () => spec as WorkloadSpec);
    if (specs.length !== count) throw new CommandError(`${specs.length} workload specs given for ${count} vCPUs`);
    const ranges: Array<[number, number]> = [];
    for (let i = 0; i < count; i++) {
      const s = specs[i];
      if (s.start < 0 || s.end > ram.bytes || s.start % PAGE_SIZE || s.end % PAGE_SIZE || s.end <= s.start) {
        throw new CommandError(`vCPU ${i}: workload range [${s.start}, ${s.end}) is not a page-aligned range inside guest RAM (${ram.bytes} bytes)`);
      }
      const r = vcpuRange(s, i, count);
      if (r[1] <= r[0] && s.name !== 'idle') {
        throw new CommandError(`workload split: ${count} vCPUs need at least ${count} pages, the range has ${(s.end - s.start) / PAGE_SIZE}`);
      }
      ranges.push(r);
    }
    const native = new NativeVcpus(count);
    const paused = opts.paused === true;
    for (let i = 0; i < count; i++) {
      const s = specs[i];
      const [startPage, endPage] = ranges[i];
      const fraction = s.fraction ?? DEFAULT_FRACTION;
      const w: NativeWorkload = {
        kind: KIND[s.name], base: ram.base, startPage, endPage, pageSize: PAGE_SIZE,
        maxSweeps: s.sweeps ?? 0, maxAccesses: s.accesses ?? 0,
        hotPages: s.name === 'hotset' ? Math.max(1, Math.round((endPage - startPage) * fraction)) : 0,
        hotShare: s.share ?? DEFAULT_SHARE,
      };
      native.configure(i, w, paused ? L.CMD_PAUSE : L.CMD_RUN);
      native.setBig(i, L.VCPU_OFF_RNG, vcpuRngSeed(s.seed ?? DEFAULT_SEED, i));
    }
    let started = 0;
    try {
      for (; started < count; started++) native.start(started);
    } catch (e) {
      native.commandAll(L.CMD_STOP);
      await native.stopAndJoin();
      throw new CommandError(`cannot start vCPU ${started}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!(await native.waitStates(STARTED, 10000))) {
      await native.stopAndJoin();
      throw new CommandError('vCPU threads did not start within 10 s');
    }
    const nice = vcpuNice(count, availableParallelism());
    // setpriority(2) on a thread id sets that thread's nice alone (Linux); raising it needs no privilege
    if (nice > 0) for (let i = 0; i < count; i++) setPriority(native.tid(i), Math.min(19, getPriority(native.tid(i)) + nice));
    return new VcpuSet(native, specs, ranges, !paused, ram.bytes / PAGE_SIZE);
  }

  /** vCPUs were told to run (not paused, not stopped) */
  get running(): boolean { return this.#running; }
  get stopped(): boolean { return this.#stopped; }

  /** kernel thread ids, index = vCPU index */
  threadIds(): number[] { return [...this.#tids]; }

  /** The vCPUs' access stamps (see NativeVcpus.setStamping), for the
   *  destination's blocktime; null once the threads are stopped. */
  accessStamps(): AccessStamps | null {
    if (this.#stopped) return null;
    const n = this.#native;
    return {
      blocks: n.blocks, count: n.count,
      enable: (clockBase) => n.setStamping(true, clockBase, this.#pages),
      disable: () => { if (!this.#stopped) n.setStamping(false); },
      horizon: (asleep) => n.accessHorizon(asleep),
    };
  }

  /**
   * The kernel's times of vCPU i's thread now (src/vm/schedstat.ts), or why
   * they say nothing of its blocktime. A thread found waiting for a CPU (or
   * read too slowly) is asked to read them itself before its next access
   * (native-shim/vcpu_sample.c): running, it has no wait in progress. A later
   * call returns that sample, dated when it was taken (a little earlier).
   * `fresh`: a new sampling begins, and a sample asked for before it is not
   * taken (it may be older than events accounted since: the trace would go
   * back in time).
   */
  kernelSample(i: number, fresh = false): ThreadSample {
    const why = (sample: string): ThreadSample => ({ t: monotonicNs(), sample });
    if (!this.#running) return why('the vCPUs are paused');
    if (this.specs[i]?.name === 'idle') return why(`vCPU ${i} runs the idle workload (it sleeps: the kernel's figure says nothing of faults)`);
    const status = this.status(i); // 'paused' for a moment after resume(): woken, not yet running
    if (status === 'done' || status === 'stopped') return why(`vCPU ${i} is ${status}, not running its workload`);
    const n = this.#native;
    if (fresh) this.#sampleAsked[i] = -1;
    const asked = this.#sampleAsked[i];
    if (asked >= 0 && n.samples(i) !== asked) {
      this.#sampleAsked[i] = -1;
      const own = n.lastSample(i);
      return { t: own.monotonicNs - monotonicBaseNs(), sample: { runNs: own.runNs, waitNs: own.waitNs } };
    }
    const s = sampleThread(this.#tids[i]);
    if (s.unsettled === undefined) this.#sampleAsked[i] = -1;
    else if (asked < 0) {
      this.#sampleAsked[i] = n.samples(i);
      n.requestSample(i);
    }
    return s;
  }

  /** [startPage, endPage) of vCPU i's workload */
  range(i: number): [number, number] { this.#check(i); return [...this.#ranges[i]] as [number, number]; }

  status(i: number): VcpuStatus {
    this.#check(i);
    if (this.#final) return this.#final[i].status;
    return STATUS[this.#native.state(i)] ?? 'stopped';
  }

  /**
   * Tells every vCPU to pause and resolves once each acknowledged (or is
   * done/stopped). A vCPU blocked in a userfaultfd fault acknowledges only
   * after its page arrives: with timeoutMs, rejects naming the vCPUs that
   * did not answer in time (they stay told to pause).
   */
  async pause(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.#live('pause');
    this.#running = false;
    this.#native.commandAll(L.CMD_PAUSE);
    // threads answer within microseconds unless blocked in a fault: a short synchronous wait first
    const t0 = process.hrtime();
    while (!this.#native.allIn(QUIET)) {
      const [s, ns] = process.hrtime(t0);
      if (s > 0 || ns > 100_000) break;
    }
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    while (!this.#native.allIn(QUIET)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        const late = Array.from({ length: this.count }, (_, i) => i).filter((i) => ((1 << this.#native.state(i)) & QUIET) === 0);
        throw new CommandError(`vCPU${late.length > 1 ? 's' : ''} ${late.join(', ')} did not acknowledge the pause within ` +
          `${opts.timeoutMs} ms (blocked in a page fault?)`);
      }
      if (this.#stopped) return;
      await this.#native.waitStates(QUIET, Math.min(left, 500));
    }
  }

  /** lets every vCPU run (a done vCPU stays done) */
  resume(): void {
    this.#live('resume');
    this.#running = true;
    this.#native.commandAll(L.CMD_RUN);
  }

  /** resolves once every vCPU reached its sweeps/accesses limit (bounded workloads) */
  async whenDone(opts: { timeoutMs?: number } = {}): Promise<void> {
    const mask = (1 << L.STATE_DONE) | (1 << L.STATE_STOPPED);
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    while (!this.#stopped && !this.#native.allIn(mask)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new CommandError(`vCPUs not done within ${opts.timeoutMs} ms`);
      await this.#native.waitStates(mask, Math.min(left, 500));
    }
  }

  /** stops and joins every thread (off the main thread); idempotent. Progress/state stay readable. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#running = false;
    await this.#native.join();
    this.#final = Array.from({ length: this.count }, (_, i) => ({
      progress: this.#readProgress(i), state: this.#readState(i), status: 'stopped' as VcpuStatus,
    }));
    this.#native.free();
    this.throttle.free();
  }

  progress(i: number): VcpuProgress {
    this.#check(i);
    if (this.#final) return { ...this.#final[i].progress };
    return this.#readProgress(i);
  }

  /** vCPU i's workload state; only meaningful while it is paused, done or stopped */
  state(i: number): VcpuState {
    this.#check(i);
    if (this.#final) return { ...this.#final[i].state };
    const st = this.#native.state(i);
    if (((1 << st) & QUIET) === 0) {
      throw new CommandError(`vCPU ${i} is ${STATUS[st] ?? st}: pause the vCPUs before reading their state`);
    }
    return this.#readState(i);
  }

  /** sets vCPU i's workload state while it is paused (the destination, before resume) */
  setState(i: number, s: VcpuState): void {
    this.#check(i);
    this.#live('setState');
    if (this.#running) throw new CommandError(`vCPU ${i} is running: pause the vCPUs before setting their state`);
    const [startPage, endPage] = this.#ranges[i];
    if (!Number.isSafeInteger(s.position) || s.position < startPage || s.position >= endPage) {
      throw new CommandError(`vCPU ${i}: position ${s.position} is outside its workload range [${startPage}, ${endPage})`);
    }
    for (const k of ['sweeps', 'accesses'] as const) {
      if (!Number.isSafeInteger(s[k]) || s[k] < 0) throw new CommandError(`vCPU ${i}: ${k} ${s[k]} is not a whole number >= 0`);
    }
    if (typeof s.rng !== 'bigint' || BigInt.asUintN(64, s.rng) === 0n) {
      throw new CommandError(`vCPU ${i}: rng state must be a non-zero 64-bit integer`);
    }
    this.#native.set64(i, L.VCPU_OFF_POSITION, s.position);
    this.#native.set64(i, L.VCPU_OFF_SWEEPS, s.sweeps);
    this.#native.set64(i, L.VCPU_OFF_ACCESSES, s.accesses);
    this.#native.setBig(i, L.VCPU_OFF_RNG, s.rng);
  }

  #readProgress(i: number): VcpuProgress {
    return { accesses: this.#native.get64(i, L.VCPU_OFF_ACCESSES), sweeps: this.#native.get64(i, L.VCPU_OFF_SWEEPS) };
  }

  #readState(i: number): VcpuState {
    return {
      position: this.#native.get64(i, L.VCPU_OFF_POSITION),
      sweeps: this.#native.get64(i, L.VCPU_OFF_SWEEPS),
      accesses: this.#native.get64(i, L.VCPU_OFF_ACCESSES),
      rng: this.#native.getBig(i, L.VCPU_OFF_RNG),
    };
  }

  #check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) throw new CommandError(`vCPU index ${i} is out of range (0..${this.count - 1})`);
  }

  #live(op: string): void {
    if (this.#stopped) throw new CommandError(`cannot ${op}: the vCPUs were stopped`);
  }
}
