// QEMU trace logs (7.2's event set and 10.1's, written from the format
// strings of migration/trace-events) imported into our trace and replayed to
// the figures known by hand; and every refusal, with its line number and the
// QEMU options that fix it.
import { compareLines } from '../../src/blocktime-trace/compare.js';
import { parseQemuTraceLog, traceLines } from '../../src/qemu/trace-log.js';
import { IO_THREAD, SCENARIO, VCPU_TIDS, qemuLog } from '../helpers/qemu-trace-log.js';

const MS = 1e6;

async function importAndCompare(lines: string[], vcpus?: number[]) {
  const trace = await parseQemuTraceLog(lines, 'dest.log', vcpus);
  return { trace, c: await compareLines(traceLines(trace), 'imported') };
}

test.each(['7.2', '10.1'] as const)('a QEMU %s log imports to the exact figures, beside QEMU 7.2\'s', async (set) => {
  const lines = [...qemuLog(SCENARIO, set), '2026-12-01T10:00:00.000000Z qemu-system-x86_64: terminating on signal 15 from pid 1'];
  const { trace, c } = await importAndCompare(lines, set === '7.2' ? VCPU_TIDS : undefined);
  expect(trace.vcpus).toEqual(VCPU_TIDS);
  expect(trace.eventSet).toBe(set);
  expect(trace.t0).toBe(100_000 * 1000);
  expect(trace.end).toEqual({ t: 1_100_000 * 1000, status: 'completed' });
  const x = c.exact['x-blocktime'];
  expect(x.state).toBe('final');
  expect(x.vcpus.map((v) => v.blocktimeNs)).toEqual([13 * MS, 4 * MS]);
  expect(x.totalBlocktimeNs).toBe(2 * MS);
  expect(x.faults).toBe(5);
  expect(x.nonVcpuFaults).toBe(1);
  expect(c.exact['postcopy-vcpu-blocktime']).toEqual([13, 4]);
  expect(c.exact['postcopy-non-vcpu-latency']).toBe(1 * MS);
  expect(c['qemu-7.2']).toEqual({ 'postcopy-blocktime': 2, 'postcopy-vcpu-blocktime': [13, 4] });
  expect(c['qemu-10.1']['postcopy-vcpu-blocktime']).toEqual([13, 4]);
});

test('the imported trace is sorted by time, fault lines carry the faulting thread, placements both kinds', async () => {
  const trace = await parseQemuTraceLog(qemuLog(SCENARIO, '7.2'), 'dest.log', VCPU_TIDS);
  const ts = trace.events.map((e) => e.t);
  expect(ts).toEqual([...ts].sort((a, b) => a - b));
  expect(trace.events.filter((e) => e.ev === 'fault').map((e) => e.tid))
    .toEqual([VCPU_TIDS[0], VCPU_TIDS[1], VCPU_TIDS[0], VCPU_TIDS[0], IO_THREAD, VCPU_TIDS[1]]);
  expect(trace.events.filter((e) => e.ev === 'placed')).toHaveLength(5);
  const first = [...traceLines(trace)][0];
  expect(JSON.parse(first)).toEqual({ vcpus: VCPU_TIDS, t0: 100_000_000 });
});

test('a placement logged after the same thread\'s next fault is dated at that fault, just before it', async () => {
  const trace = await parseQemuTraceLog(qemuLog(SCENARIO, '7.2'), 'dest.log', VCPU_TIDS);
  const page2 = 0x7f77785e7000 + 2 * 4096;
  const i = trace.events.findIndex((e) => e.ev === 'placed' && e.addr === page2);
  expect(trace.events[i].t).toBe(1_011_000 * 1000);
  expect(trace.events[i + 1]).toEqual({ t: 1_011_000 * 1000, ev: 'fault', addr: page2 + 4096, tid: VCPU_TIDS[0] });
  // another thread's fault proves nothing about page 2: an I/O thread faulting meanwhile leaves it
  const io = SCENARIO.map((e) => ('fault' in e && e.us === 1_011_000 ? { ...e, tid: IO_THREAD, vcpu: -1 } : e));
  const t2 = await parseQemuTraceLog(qemuLog(io, '7.2'), 'dest.log', VCPU_TIDS);
  expect(t2.events.find((e) => e.ev === 'placed' && e.addr === page2)?.t).toBe(1_012_000 * 1000);
});

test('a log that stops before the cleanup has no end line; one with a page never placed ends "failed"', async () => {
  const noCleanup = await parseQemuTraceLog(qemuLog(SCENARIO.slice(0, -1), '7.2'), 'd', VCPU_TIDS);
  expect(noCleanup.end).toBeUndefined();
  const stuck = [...SCENARIO.slice(0, -1), { us: 1_050_000, fault: 0x7f7778000000, tid: VCPU_TIDS[1], vcpu: 1 }, SCENARIO[SCENARIO.length - 1]];
  expect((await parseQemuTraceLog(qemuLog(stuck, '7.2'), 'd', VCPU_TIDS)).end?.status).toBe('failed');
});

describe('refusals name the line and the fix', () => {
  const refuse = (lines: string[], vcpus?: number[]) => parseQemuTraceLog(lines, 'dest.log', vcpus);

  test('no timestamps: -msg timestamp=on', async () => {
    const lines = ['qemu-system-x86_64: -incoming tcp:0:4444: warning: something', ...qemuLog(SCENARIO, '7.2', false)];
    await expect(refuse(lines, VCPU_TIDS)).rejects.toThrow(/^dest\.log:2: postcopy_ram_enable_notify has no time: .*-msg timestamp=on$/);
  });

  test('no fault events: the -trace options', async () => {
    const lines = qemuLog(SCENARIO.filter((e) => !('fault' in e)), '7.2');
    await expect(refuse(lines, VCPU_TIDS)).rejects.toThrow(`dest.log: no postcopy_ram_fault_thread_request event in its ${lines.length} lines: start the destination with -msg timestamp=on -D LOG -trace postcopy_ram_fault_thread_request`);
    await expect(refuse([], VCPU_TIDS)).rejects.toThrow('in its 0 lines');
  });

  test('faults without placements: postcopy_place_page*', async () => {
    const lines = qemuLog(SCENARIO.filter((e) => !('placed' in e)), '7.2');
    await expect(refuse(lines, VCPU_TIDS)).rejects.toThrow("add -trace 'postcopy_place_page*'");
  });

  test('a malformed or cut line of a known event: its number and the expected format', async () => {
    const lines = qemuLog(SCENARIO, '7.2');
    const i = lines.findIndex((l) => l.includes('postcopy_place_page '));
    lines[i] = lines[i].slice(0, lines[i].indexOf('host=') + 7);
    await expect(refuse(lines, VCPU_TIDS)).rejects.toThrow(`dest.log:${i + 1}: malformed postcopy_place_page line: expected postcopy_place_page 'host=%p', got 'host=0x'`);
    const lines2 = qemuLog(SCENARIO, '10.1');
    const j = lines2.findIndex((l) => l.includes('Request for'));
    lines2[j] = lines2[j].replace(/ pid=\d+/, '');
    await expect(refuse(lines2)).rejects.toThrow(new RegExp(`^dest\\.log:${j + 1}: malformed postcopy_ram_fault_thread_request line`));
  });

  test('pid=0: the postcopy-blocktime capability', async () => {
    const lines = qemuLog(SCENARIO, '7.2').map((l) => l.replace(/pid=\d+/, 'pid=0'));
    const i = lines.findIndex((l) => l.includes('pid=0'));
    await expect(refuse(lines, VCPU_TIDS)).rejects.toThrow(new RegExp(`^dest\\.log:${i + 1}: the fault names no thread \\(pid=0\\).*postcopy-blocktime on`));
  });

  test('a 7.2 log without --vcpus: says where to find them and what the log knows', async () => {
    await expect(refuse(qemuLog(SCENARIO, '7.2'))).rejects.toThrow(
      `dest.log: no vCPU thread ids: give --vcpus TID,TID... (thread_id= of the destination's 'info cpus', or thread-id of query-cpus-fast, by vCPU index), or use QEMU 10.1+ with -trace 'postcopy_blocktime*' (the log names the vCPUs that faulted: vCPU 0 = ${VCPU_TIDS[0]}, vCPU 1 = ${VCPU_TIDS[1]})`);
  });

  test('--vcpus that QEMU\'s own lines contradict', async () => {
    const lines = qemuLog(SCENARIO, '7.2');
    const swapped = [VCPU_TIDS[1], VCPU_TIDS[0]];
    await expect(refuse(lines, swapped)).rejects.toThrow(/^dest\.log:\d+: QEMU counts thread 14782 as vCPU 0, but the vCPU thread ids make it vCPU 1$/);
    const l101 = qemuLog(SCENARIO, '10.1');
    await expect(refuse(l101, swapped)).rejects.toThrow(/^dest\.log:1: QEMU maps vCPU 0 to thread 14782, but --vcpus gives thread 14783$/);
    await expect(refuse(l101, [VCPU_TIDS[0], VCPU_TIDS[1], IO_THREAD])).rejects.toThrow(/QEMU counts thread 14790 as no vCPU, but the vCPU thread ids make it vCPU 2/);
  });
});
