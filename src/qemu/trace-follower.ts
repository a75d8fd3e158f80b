// `attach --destination-trace FILE`: follows a QEMU destination's trace log
// (trace-log.ts's format) while it migrates, so the exact blocktime is known
// during postcopy, which QEMU itself cannot show. What the log holds so far
// (whole lines only: QEMU may be writing the last one) is imported and
// replayed through the same rules and algorithms as `blocktime-import` and
// `blocktime-replay --compare`, beside the kernel's samples of the vCPU
// threads (vcpu-schedstat.ts). A replay costs O(events) per query: a few ms
// for the tens of thousands of faults of a TCG run, at a console's pace.

import { closeSync, openSync, readSync } from 'node:fs';
import { compareLines } from '../blocktime-trace/compare.js';
import type { BlocktimeReport, KernelTimes, QemuReported } from '../blocktime/types.js';
import { QemuLogError, TRACE_OPTIONS, parseQemuTraceLog, traceLines } from './trace-log.js';

const CHUNK = 1 << 20;
const FIRST_TIME = /^\d+@(\d+)\.\d{6}:/;

/** A kernel sample of vCPU `vcpu`'s thread at `realtimeNs` (the log's clock, ns since the epoch). */
export interface FollowedSample {
  vcpu: number;
  realtimeNs: number;
  sample: KernelTimes | string;
}

/** The exact report of the log so far and QEMU 7.2's algorithm on it, or why there is none yet. */
export type FollowedReport =
  | { report: BlocktimeReport; replayed72: NonNullable<QemuReported['replayed72']> }
  | { why: string };

export class TraceFollower {
  private fd = -1;
  private offset = 0;
  private rest = '';
  private readonly lines: string[] = [];
  /** the second of the log's first timestamped line: the import's time base */
  private baseSec: number | undefined;
  private readonly samples: FollowedSample[] = [];

  /** `vcpus`: the destination's vCPU thread ids by index (query-cpus-fast). */
  constructor(readonly path: string, private readonly vcpus: readonly number[]) {}

  /** Opens the log; a log that is not there (yet) is opened on the next read. */
  private read(): void {
    if (this.fd < 0) {
      try { this.fd = openSync(this.path, 'r'); } catch { return; }
    }
    const buf = Buffer.allocUnsafe(CHUNK);
    for (;;) {
      const n = readSync(this.fd, buf, 0, CHUNK, this.offset);
      if (n <= 0) break;
      this.offset += n;
      const parts = (this.rest + buf.toString('utf8', 0, n)).split('\n');
      this.rest = parts.pop() as string;
      for (const p of parts) this.lines.push(p);
    }
    if (this.baseSec === undefined) {
      for (const l of this.lines) {
        const m = FIRST_TIME.exec(l);
        if (m !== null) { this.baseSec = Number(m[1]); break; }
      }
    }
  }

  /** Keeps a kernel sample, to be replayed in time order with the log's events. */
  addSample(s: FollowedSample): void {
    this.samples.push(s);
  }

  /** The figures of what the log holds so far: live until the destination's
   *  cleanup is logged, then final. `live` samples (taken for this report
   *  only) move the kernel's window to now. */
  async report(live: readonly FollowedSample[] = []): Promise<FollowedReport> {
    this.read();
    if (this.fd < 0) return { why: `the destination's trace log ${this.path} does not exist (yet): start the destination with -D ${this.path} and the -trace options of docs/qemu.md` };
    let trace;
    try {
      trace = await parseQemuTraceLog(this.lines, this.path, this.vcpus);
    } catch (e) {
      if (!(e instanceof QemuLogError)) throw e;
      // before postcopy the log has no fault (or, for a moment, no placement) yet: that is no error
      if (/no postcopy_ram_fault_thread_request event|faults but no postcopy_place_page/.test(e.message)) {
        return { why: `no fault and its placement logged yet in ${this.path} (figures start with postcopy's first fault; a destination that never logs one lacks ${TRACE_OPTIONS})` };
      }
      return { why: e.message };
    }
    const base = (this.baseSec as number) * 1e9;
    const tids = trace.vcpus;
    const kernel = [...this.samples, ...live]
      .map((s) => ({ t: Math.max(0, Math.round(s.realtimeNs - base)), tid: tids[s.vcpu], sample: s.sample }))
      .filter((s) => s.tid !== undefined)
      .sort((a, b) => a.t - b.t);
    const c = await compareLines(merge(traceLines(trace), kernel), this.path);
    return {
      report: c.exact,
      replayed72: { 'postcopy-blocktime': c['qemu-7.2']['postcopy-blocktime'], 'postcopy-vcpu-blocktime': c['qemu-7.2']['postcopy-vcpu-blocktime'] },
    };
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** The import's lines with the kernel samples put in among them by time
 *  (after the header). The `end` line stays last: a sample taken once QEMU
 *  had logged its cleanup (the poll that saw it completed) moves it later,
 *  which changes no blocktime (every page is placed by then). */
function* merge(lines: Iterable<string>, kernel: readonly { t: number; tid: number; sample: KernelTimes | string }[]): Generator<string> {
  let k = 0;
  let first = true;
  for (const line of lines) {
    if (first) { first = false; yield line; continue; }
    const e = JSON.parse(line) as { t: number; ev: string };
    if (e.ev === 'end') {
      let t = e.t;
      while (k < kernel.length) { t = Math.max(t, kernel[k].t); yield schedstatLine(kernel[k++]); }
      yield JSON.stringify({ ...e, t });
      return;
    }
    while (k < kernel.length && kernel[k].t <= e.t) yield schedstatLine(kernel[k++]);
    yield line;
  }
  while (k < kernel.length) yield schedstatLine(kernel[k++]);
}

function schedstatLine(s: { t: number; tid: number; sample: KernelTimes | string }): string {
  const body = typeof s.sample === 'string' ? { unavailable: s.sample } : { run: s.sample.runNs, wait: s.sample.waitNs };
  return JSON.stringify({ t: s.t, ev: 'schedstat', tid: s.tid, ...body });
}
