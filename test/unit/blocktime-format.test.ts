// Rendering of a blocktime report: QEMU's `info migrate -a` block, text for
// text, the rich `info postcopy_blocktime` view (right numbers, no ANSI
// escapes unless colour is asked for), and the `blocktime-replay --compare`
// table.
import { fileURLToPath } from 'node:url';
import { compareLines, compareTrace, type BlocktimeComparison } from '../../src/blocktime-trace/compare.js';
import { emptyReport } from '../../src/blocktime/report.js';
import type { BlocktimeReport } from '../../src/blocktime/types.js';
import { formatBlocktimeQemu, formatBlocktimeRich, formatDurationNs, qemuTimeLabel } from '../../src/monitor/format-blocktime.js';
import { formatBlocktimeCompare } from '../../src/monitor/format-blocktime-compare.js';

const ESC = '\x1b[';
const EXAMPLE_TRACE = fileURLToPath(new URL('../../docs/examples/blocktime-compare.jsonl', import.meta.url));

/** 12 vCPUs (so the lists wrap after 10 values), vCPU 11 idle. */
function known(): BlocktimeReport {
  const blockNs = [15_200_000, 0, 2_000_000, 43_999_999, 29_000_000, 34_000_000, 36_000_000, 29_000_000, 37_000_000, 41_000_000, 33_000_000, 0];
  const lat = [152_000, 0, 20_000, 440_000, 290_000, 340_000, 360_000, 290_000, 370_000, 410_000, 330_000, 0];
  const dist = new Array(24).fill(0);
  dist[6] = 10169; dist[7] = 50151; dist[8] = 12876; dist[9] = 97; dist[23] = 3;
  return {
    'postcopy-blocktime': 712,
    'postcopy-vcpu-blocktime': blockNs.map((ns) => Math.floor(ns / 1e6)),
    'postcopy-latency': 16075,
    'postcopy-vcpu-latency': lat,
    'postcopy-non-vcpu-latency': 14743,
    'postcopy-latency-dist': dist,
    'x-blocktime': {
      state: 'final',
      totalBlocktimeNs: 712_345_678,
      vcpus: blockNs.map((ns, i) => ({
        index: i, threadId: 5000 + i, faults: ns > 0 ? 100 + i : 0, blocktimeNs: ns, latencyAvgNs: lat[i], latencyP99Ns: lat[i] * 3,
      })),
      faults: 73296,
      nonVcpuFaults: 41,
      latencyP50Ns: 150_000,
      latencyP90Ns: 300_000,
      latencyP99Ns: 480_000,
      latencyMaxNs: 9_000_000_000,
      allBlockedWindows: 7,
      longestAllBlockedNs: 250_000_000,
      postcopyNs: 1_520_000_000,
    },
  };
}

describe("QEMU's info migrate blocktime block", () => {
  test('exact text for a known report', () => {
    expect(formatBlocktimeQemu(known())).toEqual([
      'Postcopy Blocktime (ms): 712',
      'Postcopy vCPU Blocktime (ms):',
      ' [15, 0, 2, 43, 29, 34, 36, 29, 37, 41,',
      '  33, 0]',
      'Postcopy Latency (ns): 16075',
      'Postcopy non-vCPU Latencies (ns): 14743',
      'Postcopy vCPU Latencies (ns):',
      ' [152000, 0, 20000, 440000, 290000, 340000, 360000, 290000, 370000, 410000,',
      '  330000, 0]',
      'Postcopy Latency Distribution:',
      '  [     1 us -     2 us ]:          0',
      '  [     2 us -     4 us ]:          0',
      '  [     4 us -     8 us ]:          0',
      '  [     8 us -    16 us ]:          0',
      '  [    16 us -    32 us ]:          0',
      '  [    32 us -    64 us ]:          0',
      '  [    64 us -   128 us ]:      10169',
      '  [   128 us -   256 us ]:      50151',
      '  [   256 us -   512 us ]:      12876',
      '  [   512 us -     1 ms ]:         97',
      '  [     1 ms -     2 ms ]:          0',
      '  [     2 ms -     4 ms ]:          0',
      '  [     4 ms -     8 ms ]:          0',
      '  [     8 ms -    16 ms ]:          0',
      '  [    16 ms -    32 ms ]:          0',
      '  [    32 ms -    65 ms ]:          0',
      '  [    65 ms -   131 ms ]:          0',
      '  [   131 ms -   262 ms ]:          0',
      '  [   262 ms -   524 ms ]:          0',
      '  [   524 ms -    1 sec ]:          0',
      '  [    1 sec -    2 sec ]:          0',
      '  [    2 sec -    4 sec ]:          0',
      '  [    4 sec -    8 sec ]:          0',
      '  [    8 sec -   16 sec ]:          3',
    ]);
  });

  test('list layout: exactly 10 values stay on one line, 1 value, 20 values wrap once', () => {
    const r = emptyReport(10, 'x');
    expect(formatBlocktimeQemu(r).slice(1, 3)).toEqual(['Postcopy vCPU Blocktime (ms):', ' [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]']);
    expect(formatBlocktimeQemu(emptyReport(1, 'x')).slice(1, 3)).toEqual(['Postcopy vCPU Blocktime (ms):', ' [0]']);
    const r20 = formatBlocktimeQemu(emptyReport(20, 'x'));
    expect(r20.slice(2, 4)).toEqual([' [0, 0, 0, 0, 0, 0, 0, 0, 0, 0,', '  0, 0, 0, 0, 0, 0, 0, 0, 0, 0]']);
    expect(r20[4]).toBe('Postcopy Latency (ns): 0');
  });

  test.each([
    [1, '1 us'], [512, '512 us'], [999, '999 us'], [1000, '1 ms'], [1024, '1 ms'], [65536, '65 ms'],
    [524288, '524 ms'], [1048576, '1 sec'], [8388608, '8 sec'], [16777216, '16 sec'], [2 ** 40, '1099511 sec'],
  ])('bucket bound %d us prints as %s', (us, label) => {
    expect(qemuTimeLabel(us)).toBe(label);
  });
});

describe('rich view', () => {
  test('the right numbers, and no ANSI escape at all without colour', () => {
    const s = formatBlocktimeRich(known(), { color: false });
    expect(s).not.toContain(ESC);
    expect(s).toContain('Postcopy blocktime: final');
    const row3 = s.split('\n').find((l) => /│\s+3 │\s+5003 │/.test(l));
    expect(row3).toBeDefined();
    // vCPU 3: 103 faults, 44.0 ms, 44/1520 = 2.9 %, avg 440 µs, p99 1.32 ms
    expect(row3).toMatch(/│\s+103 │\s+44\.0 ms │\s+2\.9 % │\s+440 µs │\s+1\.32 ms │/);
    const idle = s.split('\n').find((l) => /│\s+11 │\s+5011 │/.test(l));
    expect(idle).toMatch(/│\s+0 │\s+0 ns │\s+0\.0 % │\s+- │\s+- │/);
    expect(s).toContain('Total blocktime (all vCPUs blocked at once): 712 ms (46.9 % of postcopy)');
    expect(s).toContain('All-blocked windows: 7, longest 250 ms');
    expect(s).toContain('Postcopy phase: 1.52 s');
    expect(s).toContain('Faults: 73296 (vCPU 73255, non-vCPU 41)');
    expect(s).toContain('Non-vCPU latency: avg 14.7 µs');
    expect(s).toContain('Latency: avg 16.1 µs, p50 150 µs, p90 300 µs, p99 480 µs, max 9.00 s');
    // bar chart from the first to the last non-empty bucket, the largest bar full width
    const bars = s.split('\n').filter((l) => l.includes('│') && / - /.test(l) && /\d$/.test(l));
    expect(bars).toHaveLength(18);
    expect(bars[0]).toMatch(/^\s+64 us -  128 us │█{8} +10169$/);
    expect(bars[1]).toMatch(/^\s+128 us -  256 us │█{40} 50151$/);
    expect(bars[17]).toMatch(/^\s+8 sec -  16 sec │█ +3$/);
  });

  test('live, unavailable, and colour on request', () => {
    const live = known();
    live['x-blocktime'].state = 'live';
    expect(formatBlocktimeRich(live, { color: false })).toContain('live (postcopy running)');
    const none = formatBlocktimeRich(emptyReport([31, 32], 'the kernel lacks UFFD_FEATURE_THREAD_ID'), { color: false });
    expect(none).toContain('Unavailable: the kernel lacks UFFD_FEATURE_THREAD_ID');
    expect(none).toContain('Latency: no faults');
    expect(none).not.toContain('Latency distribution');
    expect(formatBlocktimeRich(known(), { color: true })).toContain(ESC);
  });

  test('the kernel column: its figure or n/a, and the largest relative difference', () => {
    const r = known();
    expect(formatBlocktimeRich(r, { color: false })).not.toContain('kernel');
    r['x-blocktime'].vcpus.forEach((v) => { v.kernelBlockedNs = v.blocktimeNs; });
    r['x-blocktime'].vcpus[3].kernelBlockedNs = 55_000_000; // ours 44.0 ms: -20.0 %
    r['x-blocktime'].vcpus[5].kernelBlockedNs = 35_000_000; // ours 34 ms: -2.9 %
    delete r['x-blocktime'].vcpus[11].kernelBlockedNs;
    r['x-blocktime'].vcpus[11].kernelUnavailable = 'vCPU 11 is done, not running its workload';
    const s = formatBlocktimeRich(r, { color: false });
    expect(s.split('\n')[2]).toMatch(/│\s+kernel │/);
    expect(s.split('\n').find((l) => /│\s+3 │\s+5003 │/.test(l))).toMatch(/│\s+55\.0 ms │$/);
    expect(s.split('\n').find((l) => /│\s+11 │\s+5011 │/.test(l))).toMatch(/│\s+n\/a │$/);
    expect(s).toContain('Kernel (schedstat: time asleep): largest difference vCPU 3, -20.0 %');
    r['x-blocktime'].vcpus.forEach((v) => { delete v.kernelBlockedNs; v.kernelUnavailable = 'the vCPUs are paused'; });
    expect(formatBlocktimeRich(r, { color: false })).toContain('Kernel (schedstat): no figure (the vCPUs are paused)');
  });

  test.each([[0, '0 ns'], [850, '850 ns'], [42_100, '42.1 µs'], [3_200_000, '3.20 ms'], [1_500_000_000, '1.50 s'], [125_000_000_000, '125 s']])(
    'duration %d ns reads %s', (ns, text) => { expect(formatDurationNs(ns)).toBe(text); },
  );
});

describe('emptyReport', () => {
  test('zeros for every vCPU, the reason, the thread ids', () => {
    const r = emptyReport([31, 32, 33], 'no THREAD_ID');
    expect(r['postcopy-vcpu-blocktime']).toEqual([0, 0, 0]);
    expect(r['postcopy-latency-dist']).toHaveLength(24);
    expect(r['x-blocktime'].unavailable).toBe('no THREAD_ID');
    expect(r['x-blocktime'].vcpus.map((v) => v.threadId)).toEqual([31, 32, 33]);
  });
});

describe('compare view', () => {
  // docs/blocktime-compare.md's example: vCPU 0 faults twice before its first
  // page comes (QEMU undercounts it), vCPU 1 waits 0.6 ms across ms
  // boundaries (7.2 rounds each up), one I/O-thread fault
  const example = (): Promise<BlocktimeComparison> => compareTrace(EXAMPLE_TRACE);
  const row = (s: string, label: string): string[] | undefined => s.split('\n')
    .find((l) => l.startsWith(`│ ${label} `))?.split('│').slice(2, -1).map((cell) => cell.trim());

  test('one row per vCPU, the totals and the latencies; n/a where a figure is missing, never 0', async () => {
    const s = formatBlocktimeCompare(await example(), { color: false });
    expect(s).not.toContain(ESC);
    expect(s.split('\n')[2]).toMatch(/│ +│ exact \(ours\) │ QEMU 10\.1 │ QEMU 7\.2 │ kernel │/);
    expect(row(s, 'vCPU 0 blocktime (ms)')).toEqual(['8 (8.000)', '6', '6', 'n/a']);
    expect(row(s, 'vCPU 1 blocktime (ms)')).toEqual(['5 (5.200)', '5', '6', 'n/a']);
    expect(row(s, 'total blocktime (ms)')).toEqual(['4 (4.000)', '4', '3', 'n/a']);
    expect(row(s, 'latency avg (ns)')).toEqual(['3850000', '2850000', 'n/a', 'n/a']);
    expect(row(s, 'vCPU 0 latency avg (ns)')).toEqual(['6000000', '3000000', 'n/a', 'n/a']);
    expect(row(s, 'vCPU 1 latency avg (ns)')).toEqual(['1733333', '1733333', 'n/a', 'n/a']);
    expect(row(s, 'non-vCPU latency avg (ns)')).toEqual(['5900000', '5900000', 'n/a', 'n/a']);
    expect(row(s, 'latency distribution')).toEqual(['6 faults', 'same', 'n/a', 'n/a']);
    // differences in ns: 10.1's 3 ms of vCPU 0 latency outweighs its 2 ms of vCPU 0 blocktime
    expect(s).toContain('QEMU 10.1: largest difference from exact: vCPU 0 latency avg (postcopy-vcpu-latency[0]) 3000000 ns against 6000000 ns (-3000000 ns)');
    expect(s).toContain('QEMU 7.2: largest difference from exact: vCPU 0 blocktime (postcopy-vcpu-blocktime[0]) 6 ms against 8 ms (-2 ms)');
    expect(formatBlocktimeCompare(await example(), { color: true })).toContain(ESC);
  });

  test("the kernel's figure when the trace carries it (a 0 is a figure), n/a for the vCPUs it lacks", async () => {
    const c = await example();
    c.exact['x-blocktime'].vcpus = c.exact['x-blocktime'].vcpus.map((v, i) => (i === 1 ? { ...v, kernelBlockedNs: 5_323_456 } : v));
    const s = formatBlocktimeCompare(c, { color: false });
    expect(row(s, 'vCPU 0 blocktime (ms)')?.[3]).toBe('n/a');
    expect(row(s, 'vCPU 1 blocktime (ms)')?.[3]).toBe('5.323');
    c.exact['x-blocktime'].vcpus = c.exact['x-blocktime'].vcpus.map((v) => ({ ...v, kernelBlockedNs: 0 }));
    expect(row(formatBlocktimeCompare(c, { color: false }), 'vCPU 0 blocktime (ms)')?.[3]).toBe('0.000');
  });

  test('an algorithm that agrees everywhere says so', async () => {
    const trace = ['{"vcpus":[10,11],"t0":0}', '{"t":2000000,"ev":"fault","addr":8192,"tid":11}', '{"t":6000000,"ev":"placed","addr":8192}'];
    const s = formatBlocktimeCompare(await compareLines(trace, 't'), { color: false });
    expect(s).toContain('QEMU 10.1: the same as exact in every field it reports');
    expect(s).toContain('QEMU 7.2: the same as exact in every field it reports');
  });
});
