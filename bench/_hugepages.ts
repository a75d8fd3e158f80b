// The hugepage rows of `npm run bench -- migrate` (alone: `--only hugepages`):
// the same postcopy migration (150 MiB guest, a sweep over 100 MiB, postcopy
// 0.3 s after migrate, blocktime on) with guest RAM on 4 KiB anonymous pages
// and on 2 MiB huge pages (-mem-path on a hugetlbfs mount), alternating, with
// 1 and 4 vCPUs. Per row: medians over the runs, and [min, max] ranges of the
// fault latency and the total blocktime. The huge pages are reserved for the
// bench and given back (test/helpers/hugepages.ts).
import { runBatch, type BatchOptions, type BatchResult } from '../src/migration/batch.js';
import { reserveHugePages } from '../test/helpers/hugepages.js';
import { median, checkCompleted, round } from './_migrations.js';

const MiB = 1024 * 1024;
const RAM_MIB = 150;

export interface HugePageRow {
  page_size: number; vcpus: number; runs: number;
  wall_s: number; faults: number; postcopy_requests: number;
  blocktime_ms: number; blocktime_ms_range: [number, number];
  latency_avg_us: number; latency_avg_us_range: [number, number];
  latency_p50_us: number; latency_p99_us: number;
}

function range(xs: number[]): [number, number] {
  return [round(Math.min(...xs), 1), round(Math.max(...xs), 1)];
}

function rowOf(pageSize: number, vcpus: number, rs: BatchResult[]): HugePageRow {
  const us = (f: (r: BatchResult) => number | undefined): number[] => rs.map((r) => (f(r) ?? 0) / 1000);
  const bt = rs.map((r) => r.destination['postcopy-blocktime'] ?? 0);
  const lat = us((r) => r.destination['postcopy-latency']);
  return {
    page_size: pageSize, vcpus, runs: rs.length,
    wall_s: round(median(rs.map((r) => r.wall_s)), 3),
    faults: median(rs.map((r) => r.destination['x-blocktime']?.faults ?? 0)),
    postcopy_requests: median(rs.map((r) => r.source.ram!['postcopy-requests'])),
    blocktime_ms: median(bt), blocktime_ms_range: range(bt),
    latency_avg_us: round(median(lat), 1), latency_avg_us_range: range(lat),
    latency_p50_us: round(median(us((r) => r.destination['x-blocktime']?.latencyP50Ns)), 1),
    latency_p99_us: round(median(us((r) => r.destination['x-blocktime']?.latencyP99Ns)), 1),
  };
}

/** 4 KiB against 2 MiB pages, `reps` runs each per vCPU count, alternating */
export async function hugePageRows(reps: number, warmS: number): Promise<HugePageRow[]> {
  // two processes' guest RAM, and a few pages beside
  const hp = reserveHugePages((2 * RAM_MIB) / 2 + 8);
  try {
    const rows: HugePageRow[] = [];
    for (const vcpus of [1, 4]) {
      const small: BatchResult[] = [];
      const huge: BatchResult[] = [];
      const o: BatchOptions = {
        ramBytes: RAM_MIB * MiB, vcpus, workload: 'sweep,end=100M', warmS, postcopyAfterS: 0.3,
        transport: 'tcp', blocktime: true, trace: '', timeoutS: 300, json: true,
      };
      for (let i = 0; i < reps; i++) {
        for (const hugePages of i % 2 === 0 ? [false, true] : [true, false]) {
          const r = await runBatch(hugePages ? { ...o, memoryBackend: { type: 'memory-backend-file', id: 'pc.ram', memPath: hp.dir, prealloc: false, share: false } } : o);
          checkCompleted(r, `${vcpus} vCPU(s) on ${hugePages ? '2 MiB' : '4 KiB'} pages`);
          (hugePages ? huge : small).push(r);
        }
      }
      rows.push(rowOf(4096, vcpus, small), rowOf(2 * MiB, vcpus, huge));
    }
    return rows;
  } finally {
    hp.release();
  }
}
