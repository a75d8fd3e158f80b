// QEMU 10.1's blocktime algorithm (upstream's since 10.1), written from its
// semantics (REFERENCE.md §1, §2), so that `blocktime-replay --compare` can
// show what that QEMU would have reported for the same faults, field for
// field. Where it differs from our exact context it is kept as QEMU has it.
//
// - Times are ns. Faults are kept per page address, several waiters per
//   page (PageWaiters, O(1) per fault, O(waiters) per placement, as QEMU's
//   hash of lists), each {fault time, vCPU or -1}.
// - Per vCPU: faults seen (all of them, resolved or not) and outstanding
//   faults. A vCPU whose outstanding count goes 0 -> 1 is down; last_begin =
//   that fault's time. (QEMU keeps the outstanding count in a u8 and asserts
//   it stays <= 255; it is not bounded here.)
// - On placement, every waiter's latency goes into the 24-bucket histogram;
//   a vCPU's blocktime grows by the latency of the waiter that brings its
//   count to 0 (upstream's quirk: with two outstanding faults only the last
//   one's latency counts, so part of the blocked interval can be missed; we
//   keep it, this is QEMU's figure); a non-vCPU waiter's latency goes into
//   the non-vCPU sum. Then, if every vCPU was down and the placement freed
//   at least one, total += now - last_begin.
// - The latency averages are QEMU's: vCPU i's = its blocktime / its faults;
//   non-vCPU = non-vCPU latency sum / non-vCPU faults; overall = (every
//   vCPU's blocktime + non-vCPU sum) / (every fault). Faults still
//   outstanding count in the divisors; ms figures are floored, uint32.
// - A fault on a page already received is never injected: QEMU checks the
//   received bitmap before calling begin, under the same lock as the
//   placement; the postcopy rules (rules.ts) do the same check here. A
//   placement nobody waits on finds no list and records nothing, as the
//   rules' filter does.
// - The end of the migration closes nothing: an outstanding fault adds to
//   no blocktime and no histogram bucket, but stays in the fault counts.
//   (QEMU shows the figures only once the destination is completed;
//   report() gives them whatever the status.)

import type { AlgorithmStart, BlocktimeAlgorithm } from './algorithm.js';
import { qemuLatencyBucket } from './latency-histogram.js';
import { PageWaiters } from './page-waiters.js';
import { floorAverage, nsToMs } from './report.js';
import { LATENCY_BUCKETS, type QemuBlocktimeFields } from './types.js';
import { VcpuThreads } from './vcpu-threads.js';

export class Qemu101Blocktime implements BlocktimeAlgorithm<QemuBlocktimeFields> {
  private readonly tidToVcpu: VcpuThreads;
  private readonly vcpus: number;
  private readonly waiters: PageWaiters;
  /** vcpu_faults_count: faults seen per vCPU */
  private readonly faults: Float64Array;
  /** vcpu_faults_current: outstanding faults per vCPU */
  private readonly outstanding: Float64Array;
  /** vcpu_blocktime_total, ns */
  private readonly blocktime: Float64Array;
  private readonly buckets = new Float64Array(LATENCY_BUCKETS);
  private total = 0;
  private lastBegin = 0;
  private cpusDown = 0;
  private nonVcpuFaults = 0;
  private nonVcpuLatency = 0;
  private done = false;

  constructor(start: AlgorithmStart) {
    this.tidToVcpu = new VcpuThreads(start.vcpuThreadIds);
    const n = start.vcpuThreadIds.length;
    this.vcpus = n;
    this.waiters = new PageWaiters(Math.max(64, 2 * n));
    this.faults = new Float64Array(n);
    this.outstanding = new Float64Array(n);
    this.blocktime = new Float64Array(n);
  }

  begin(addr: number, tid: number, at: number): void {
    if (this.done) return;
    const v = this.tidToVcpu.indexOf(tid);
    if (v >= 0) {
      this.faults[v]++;
      if (this.outstanding[v]++ === 0) {
        this.cpusDown++;
        this.lastBegin = at;
      }
    } else {
      this.nonVcpuFaults++;
    }
    this.waiters.add(addr, at, v);
  }

  end(addr: number, at: number): void {
    if (this.done) return;
    const w = this.waiters;
    let rec = w.take(addr);
    let freed = 0;
    while (rec >= 0) {
      // events come in time order, so this is >= 0 (QEMU asserts it)
      const latency = at - w.faultTime[rec];
      const v = w.faultVcpu[rec];
      const following = w.nextRecord[rec];
      w.release(rec);
      rec = following;
      this.buckets[qemuLatencyBucket(latency)]++;
      if (v < 0) {
        this.nonVcpuLatency += latency;
      } else if (--this.outstanding[v] === 0) {
        this.blocktime[v] += latency;
        freed++;
      }
    }
    if (this.cpusDown === this.vcpus && freed > 0) this.total += at - this.lastBegin;
    this.cpusDown -= freed;
  }

  /** Closes nothing (QEMU doesn't); later events are ignored. */
  finish(): void {
    this.done = true;
  }

  report(): QemuBlocktimeFields {
    let latencySum = this.nonVcpuLatency;
    let faultCount = this.nonVcpuFaults;
    const vcpuMs: number[] = [];
    const vcpuLatency: number[] = [];
    for (let v = 0; v < this.vcpus; v++) {
      latencySum += this.blocktime[v];
      faultCount += this.faults[v];
      vcpuMs.push(nsToMs(this.blocktime[v]) >>> 0); // (uint32_t)
      vcpuLatency.push(floorAverage(this.blocktime[v], this.faults[v]));
    }
    return {
      'postcopy-blocktime': nsToMs(this.total) >>> 0,
      'postcopy-vcpu-blocktime': vcpuMs,
      'postcopy-latency': floorAverage(latencySum, faultCount),
      'postcopy-vcpu-latency': vcpuLatency,
      'postcopy-non-vcpu-latency': floorAverage(this.nonVcpuLatency, this.nonVcpuFaults),
      'postcopy-latency-dist': Array.from(this.buckets),
    };
  }
}
