// Where the CPU went during a migration's postcopy phase, thread by thread:
// samples the on-CPU time (schedstat, ns) of every thread of this process's
// child processes (the batch mode's two VM processes) every few ms, and
// keeps, per thread name, the time it ran while the destination's fault
// thread ("postcopy/fault", alive exactly while postcopy runs) existed. The
// native threads carry QEMU's thread names (native-shim: "live_migration",
// "mig/src/urgent", "mig/dst/main", "postcopy/fault", "CPU N/postcopy").
import { readdirSync, readFileSync } from 'node:fs';

const FAULT_THREAD = 'postcopy/fault';

interface Task { pid: number; tid: number; name: string; onCpuNs: number }

function read(path: string): string | null {
  try { return readFileSync(path, 'utf8'); } catch { return null; }
}

function childPids(): number[] {
  const out: number[] = [];
  for (const t of readdirSync('/proc/self/task')) {
    const c = read(`/proc/self/task/${t}/children`);
    if (c) out.push(...c.trim().split(/\s+/).filter(Boolean).map(Number));
  }
  return out;
}

function tasks(): Task[] {
  const out: Task[] = [];
  for (const pid of childPids()) {
    let tids: string[];
    try { tids = readdirSync(`/proc/${pid}/task`); } catch { continue; }
    for (const t of tids) {
      const name = read(`/proc/${pid}/task/${t}/comm`)?.trim();
      const sched = read(`/proc/${pid}/task/${t}/schedstat`);
      if (name === undefined || sched === null) continue;
      out.push({ pid, tid: Number(t), name, onCpuNs: Number(sched.split(' ')[0]) });
    }
  }
  return out;
}

export interface PostcopyCpu {
  /** how long the fault thread was seen alive (the postcopy phase, to the sampling's resolution) */
  window_ms: number;
  /** per process role and thread name: share of one CPU over the window (1 = a whole CPU) */
  threads: Record<string, number>;
}

/** Samples until stop(); then the CPU each thread used during postcopy. */
export class PostcopyCpuSampler {
  #timer: NodeJS.Timeout;
  /** per tid: on-CPU ns at the first sample inside the window, and the latest */
  #first = new Map<number, Task>();
  #last = new Map<number, Task>();
  #start = 0;
  #end = 0;
  #roles = new Map<number, string>();

  constructor(everyMs = 5) {
    this.#timer = setInterval(() => this.#sample(), everyMs);
  }

  #sample(): void {
    const all = tasks();
    const fault = all.find((t) => t.name === FAULT_THREAD);
    for (const t of all) {
      if (t.name === 'live_migration') this.#roles.set(t.pid, 'source');
      if (t.name === 'mig/dst/main') this.#roles.set(t.pid, 'destination');
    }
    if (!fault) return;
    const now = performance.now();
    if (this.#start === 0) this.#start = now;
    this.#end = now;
    for (const t of all) {
      if (!this.#first.has(t.tid)) this.#first.set(t.tid, t);
      this.#last.set(t.tid, t);
    }
  }

  stop(): PostcopyCpu {
    clearInterval(this.#timer);
    const windowMs = this.#end - this.#start;
    const threads: Record<string, number> = {};
    for (const [tid, last] of this.#last) {
      const first = this.#first.get(tid)!;
      const key = `${this.#roles.get(last.pid) ?? `pid ${last.pid}`} ${last.name}`;
      threads[key] = (threads[key] ?? 0) + (windowMs > 0 ? (last.onCpuNs - first.onCpuNs) / 1e6 / windowMs : 0);
    }
    for (const k of Object.keys(threads)) if (threads[k] < 0.005) delete threads[k];
    return { window_ms: Math.round(windowMs), threads };
  }
}
