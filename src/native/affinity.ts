// Confining every thread of this process to one CPU, and undoing it. Used by
// bench/faults.ts to compare fault handlers without the noise of cross-core
// wake-ups (which, on a nested-virtualisation machine, cost more than the
// handlers themselves: see docs/foundation.md).
import { readdirSync } from 'node:fs';
import * as libc from './libc.js';

const MASK_BYTES = 128; // cpu_set_t

/** the CPU the calling thread runs on */
export function currentCpu(): number {
  return libc.sched_getcpu();
}

/** pins every existing thread (threads created later inherit from their creator) to `cpu`; returns the undo */
export function pinProcessToCpu(cpu: number): () => void {
  const saved: Array<[number, Uint8Array]> = [];
  const one = new Uint8Array(MASK_BYTES);
  one[cpu >> 3] = 1 << (cpu & 7);
  for (const t of readdirSync('/proc/self/task')) {
    const tid = Number(t);
    const mask = new Uint8Array(MASK_BYTES);
    if (libc.sched_getaffinity(tid, MASK_BYTES, mask) !== 0) continue; // thread gone
    if (libc.sched_setaffinity(tid, MASK_BYTES, one) !== 0) {
      const e = libc.errno();
      for (const [id, m] of saved) libc.sched_setaffinity(id, MASK_BYTES, m);
      throw new Error(`sched_setaffinity(${tid}, cpu ${cpu}) failed: ${libc.strerror(e)}`);
    }
    saved.push([tid, mask]);
  }
  const mainMask = saved.find(([tid]) => tid === process.pid)?.[1];
  return () => {
    for (const t of readdirSync('/proc/self/task')) {
      const tid = Number(t);
      const m = saved.find(([id]) => id === tid)?.[1] ?? mainMask;
      if (m) libc.sched_setaffinity(tid, MASK_BYTES, m);
    }
  };
}
