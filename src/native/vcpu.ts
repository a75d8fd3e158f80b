// TypeScript side of native-shim's vCPU threads: one koffi.alloc'ed array of
// control blocks (struct pc_vcpu), read and written at fixed offsets, plus
// start / command / wait / join. Policy (what a pause means for a VM) lives
// in src/vm/vcpus.ts; this module only moves numbers to and from the threads.
import { NativeBlock, NativeMapping } from './memory.js';
import { loadShim, type Shim } from './shim.js';
import * as L from './vcpu-layout.js';

const TWO32 = 4294967296;

export interface NativeWorkload {
  kind: number;           // L.WL_*
  base: number;           // guest RAM address
  startPage: number;
  endPage: number;
  pageSize: number;
  maxSweeps: number;      // 0 = unlimited
  maxAccesses: number;    // 0 = unlimited
  hotPages: number;
  hotShare: number;       // 0..1
}

/** vCPUs that note, before each access, which page and when (native-shim/vcpu.h):
 *  the fault thread dates a fault by it, nearer to when the thread went to sleep. */
export interface AccessStamps {
  /** the vCPU control blocks (native memory), and how many */
  readonly blocks: bigint;
  readonly count: number;
  /** stamps on: the blocktime clock = CLOCK_MONOTONIC ns - clockBase */
  enable(clockBase: number): void;
  disable(): void;
  /** the earliest stamp of the vCPUs running their workload, Infinity when none; with `drained`,
   *  a stamp whose fault was reported (native-shim/waiters.c) and taken already (a fault of vCPU i
   *  dated drained[i] or later) on a page not received is passed over. Only while no placer can
   *  place such a page (a postcopy pause): no event dated by that stamp is still to come, and the
   *  vCPU sleeps on until a placement after the pause */
  horizon(asleep?: { drained: Float64Array; received: Uint8Array }): number;
}

/** bit 63 of a stamp's page field, in its high word: the access's fault was pushed (native-shim/waiters.c TOUCH_REPORTED) */
const TOUCH_REPORTED_HI = 0x80000000;

export class NativeVcpus {
  readonly count: number;
  readonly #block: NativeBlock;
  readonly #i32: Int32Array;
  readonly #u32: Uint32Array;
  readonly #u64: BigUint64Array;
  readonly #f64: Float64Array;
  readonly #shim: Shim;
  #started = false;
  #joined = false;
  /** the waiting map (setStamping), or null */
  #waiting: NativeMapping | null = null;

  constructor(count: number) {
    this.#shim = loadShim();
    this.count = count;
    this.#block = new NativeBlock(count * L.VCPU_BLOCK_SIZE);
    this.#i32 = new Int32Array(this.#block.buffer);
    this.#u32 = new Uint32Array(this.#block.buffer);
    this.#u64 = new BigUint64Array(this.#block.buffer);
    this.#f64 = new Float64Array(this.#block.buffer);
  }

  #w(i: number, off: number): number { return (i * L.VCPU_BLOCK_SIZE + off) >> 2; }

  get64(i: number, off: number): number {
    const w = this.#w(i, off);
    return this.#u32[w] + this.#u32[w + 1] * TWO32;
  }
  set64(i: number, off: number, v: number): void {
    const w = this.#w(i, off);
    this.#u32[w] = v >>> 0;
    this.#u32[w + 1] = Math.floor(v / TWO32);
  }
  getBig(i: number, off: number): bigint { return this.#u64[(i * L.VCPU_BLOCK_SIZE + off) >> 3]; }
  setBig(i: number, off: number, v: bigint): void { this.#u64[(i * L.VCPU_BLOCK_SIZE + off) >> 3] = BigInt.asUintN(64, v); }
  get32(i: number, off: number): number { return Atomics.load(this.#i32, this.#w(i, off)); }

  state(i: number): number { return this.get32(i, L.VCPU_OFF_STATE); }
  command(i: number): number { return this.get32(i, L.VCPU_OFF_CMD); }
  tid(i: number): number { return this.get32(i, L.VCPU_OFF_TID); }

  /** fills vCPU i's block before its thread starts */
  configure(i: number, w: NativeWorkload, initialCmd: number): void {
    const w32 = this.#w(i, 0);
    this.#i32[w32 + (L.VCPU_OFF_CMD >> 2)] = initialCmd;
    this.#i32[w32 + (L.VCPU_OFF_STATE >> 2)] = L.STATE_STARTING;
    this.#i32[w32 + (L.VCPU_OFF_KIND >> 2)] = w.kind;
    this.set64(i, L.VCPU_OFF_BASE, w.base);
    this.set64(i, L.VCPU_OFF_START, w.startPage);
    this.set64(i, L.VCPU_OFF_END, w.endPage);
    this.set64(i, L.VCPU_OFF_POSITION, w.startPage);
    this.set64(i, L.VCPU_OFF_PAGE_SIZE, w.pageSize);
    this.set64(i, L.VCPU_OFF_MAX_SWEEPS, w.maxSweeps);
    this.set64(i, L.VCPU_OFF_MAX_ACCESSES, w.maxAccesses);
    this.set64(i, L.VCPU_OFF_HOT_PAGES, w.hotPages);
    this.set64(i, L.VCPU_OFF_HOT_SHARE, Math.min(TWO32, Math.round(w.hotShare * TWO32)));
  }

  /** the control blocks' address, for a native thread that reads them (the fault thread) */
  get blocks(): bigint { return this.#block.ptr; }

  /**
   * Access stamps on (the blocktime clock = CLOCK_MONOTONIC ns - `clockBase`)
   * or off: with them on, every vCPU notes which page it is about to touch,
   * and when, before each access (one clock read, ~40 ns here), then sets
   * its bit in that page's word of the waiting map, for guest RAM of
   * `pages` 4 KiB pages (native-shim/waiters.c; mapped on the first use,
   * zeroed on each, unmapped with the blocks).
   */
  setStamping(on: boolean, clockBase = 0, pages = 0): void {
    if (on && pages > 0) {
      const bytes = Math.ceil((pages * 8) / 4096) * 4096;
      if (this.#waiting !== null && this.#waiting.bytes < bytes) { this.#waiting.dispose(); this.#waiting = null; }
      if (this.#waiting === null) this.#waiting = NativeMapping.create(bytes);
      else this.#waiting.discard(0, this.#waiting.bytes); // zeros: no vCPU stamps while stamps are off
    }
    const map = on && pages > 0 ? this.#waiting!.address : 0;
    for (let i = 0; i < this.count; i++) {
      this.#f64[(i * L.VCPU_BLOCK_SIZE + L.VCPU_OFF_STAMP_BASE) >> 3] = clockBase;
      // page-aligned address | bit, in one store: a running vCPU reads it at its next access
      Atomics.store(this.#u64, (i * L.VCPU_BLOCK_SIZE + L.VCPU_OFF_WAITING) >> 3, map === 0 ? 0n : BigInt(map + (i & 63)));
    }
    this.setHook(L.HOOK_STAMP, on);
  }

  /** turns hook bit `bit` (L.HOOK_*) on or off for every vCPU */
  setHook(bit: number, on: boolean): void {
    for (let i = 0; i < this.count; i++) {
      if (on) Atomics.or(this.#i32, this.#w(i, L.VCPU_OFF_HOOKS), bit);
      else Atomics.and(this.#i32, this.#w(i, L.VCPU_OFF_HOOKS), ~bit);
    }
  }

  /** asks vCPU i's thread to read its own kernel times before its next access (native-shim/vcpu_sample.c) */
  requestSample(i: number): void { Atomics.or(this.#i32, this.#w(i, L.VCPU_OFF_HOOKS), L.HOOK_SAMPLE); }

  /** how many samples vCPU i's thread took of itself; then its last one (read after the count) */
  samples(i: number): number { return Atomics.load(this.#i32, this.#w(i, L.VCPU_OFF_SAMPLE_SEQ)) >>> 0; }
  lastSample(i: number): { monotonicNs: number; runNs: number; waitNs: number } {
    return {
      monotonicNs: this.#f64[(i * L.VCPU_BLOCK_SIZE + L.VCPU_OFF_SAMPLE_T) >> 3],
      runNs: this.get64(i, L.VCPU_OFF_SAMPLE_RUN),
      waitNs: this.get64(i, L.VCPU_OFF_SAMPLE_WAIT),
    };
  }

  /** a u32 field of vCPU i's block, written so its thread sees it at once */
  set32(i: number, off: number, v: number): void { Atomics.store(this.#i32, this.#w(i, off), v | 0); }

  /**
   * The earliest access stamp the vCPUs still hold (their last
   * VCPU_TOUCHES accesses each, while they run their workload): the fault
   * thread dates no fault it reads from now on earlier. Infinity when none
   * holds one. Reads every vCPU: call it per drain of events, not per event.
   * `drained` (per vCPU): see AccessStamps.horizon. A vCPU asleep a long time
   * (a postcopy pause) then holds the accounting back no more.
   */
  accessHorizon(asleep?: { drained: Float64Array; received: Uint8Array }): number {
    let h = Infinity;
    for (let i = 0; i < this.count; i++) {
      // asleep in an access whose fault was taken, on a page nobody can place now (the caller knows
      // no placer runs): the fault thread pushed any fault of its earlier accesses before that one,
      // and the vCPU stamps its next access only once a placement woke it
      if (asleep !== undefined && this.#asleepReported(i, asleep.drained[i], asleep.received)) continue;
      for (let k = 0; k < L.VCPU_TOUCHES; k++) {
        const b = i * L.VCPU_BLOCK_SIZE + L.VCPU_OFF_TOUCH + k * 16;
        if (this.#u32[b >> 2] === 0 && this.#u32[(b >> 2) + 1] === 0) continue;
        const t = this.#f64[(b + 8) >> 3];
        if (t < h) h = t;
      }
    }
    return h;
  }

  /** vCPU i's newest access has its fault reported and taken (a fault of it dated `drained` or later),
   *  on a page not received (bit 0 of `received`, the destination's page flags) */
  #asleepReported(i: number, drained: number, received: Uint8Array): boolean {
    const n = this.get64(i, L.VCPU_OFF_TOUCHES);
    if (n === 0) return false;
    const b = i * L.VCPU_BLOCK_SIZE + L.VCPU_OFF_TOUCH + ((n - 1) % L.VCPU_TOUCHES) * 16;
    const hi = this.#u32[(b >> 2) + 1];
    if ((hi & TOUCH_REPORTED_HI) === 0 || drained < this.#f64[(b + 8) >> 3]) return false;
    const page = (hi & ~TOUCH_REPORTED_HI) * TWO32 + this.#u32[b >> 2] - 1;
    return (received[page] & 1) === 0;
  }

  /** starts thread i; throws with the pthread error */
  start(i: number): void {
    const err = this.#shim.vcpuStart(this.#block.ptr, i);
    if (err !== 0) throw new Error(`vCPU ${i}: pthread_create failed (errno ${err})`);
    this.#started = true;
  }

  /** sets the command of every vCPU and wakes them */
  commandAll(cmd: number): void {
    this.#shim.vcpuCommand(this.#block.ptr, 0, this.count, cmd);
  }

  /** resolves true once every vCPU is in a state of `mask` (bits 1<<STATE_*), false after timeoutMs */
  waitStates(mask: number, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#shim.vcpuWaitStates.async(this.#block.ptr, this.count, mask, timeoutMs, (err, res) => {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else resolve(res === 1);
      });
    });
  }

  /** every vCPU is in a state of mask right now */
  allIn(mask: number): boolean {
    for (let i = 0; i < this.count; i++) if (((1 << this.state(i)) & mask) === 0) return false;
    return true;
  }

  /** tells every thread to stop and joins them off the main thread (the blocks stay readable until free()) */
  async join(): Promise<void> {
    if (this.#joined) return;
    this.#joined = true;
    if (!this.#started) return;
    this.commandAll(L.CMD_STOP);
    await new Promise<void>((resolve, reject) => {
      this.#shim.vcpuJoin.async(this.#block.ptr, this.count, (err) => {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else resolve();
      });
    });
  }

  /** frees the control blocks; only after join(). Idempotent. */
  free(): void {
    if (!this.#joined && this.#started) throw new Error('vCPU control blocks freed while their threads may run: join() first');
    this.#block.free();
    this.#waiting?.dispose();
    this.#waiting = null;
  }

  /** join() then free() */
  async stopAndJoin(): Promise<void> {
    await this.join();
    this.free();
  }

  get freed(): boolean { return this.#block.freed; }
}
