// The destination's blocktime feed: events from the fault thread (which can
// come out of order: faults dated by the vCPUs' access stamps) and from the
// event loop are accounted in time order, and only once the horizon has
// passed them; the rules see placements of pages nobody waits on, and the
// context gets the kernel samples in the same order.
import { BlocktimeContext } from '../../src/blocktime/context.js';
import { PostcopyAccounting } from '../../src/migration/postcopy-accounting.js';
import { FAULT_KINDS, FaultCause, type TraceSink } from '../../src/blocktime/trace.js';
import type { KernelTimes } from '../../src/blocktime/types.js';

const BASE = 0x7f00_0000_0000;
const PS = 4096;
const addr = (page: number): number => BASE + page * PS;

function setup(pages = 64) {
  const lines: string[] = [];
  const trace: TraceSink = {
    header: () => undefined,
    fault: (t, a, tid, cause) => { lines.push(`fault ${t} ${(a - BASE) / PS} ${tid}${cause ? ` ${FAULT_KINDS[cause]}` : ''}`); },
    placed: (t, a) => { lines.push(`placed ${t} ${(a - BASE) / PS}`); },
    push: (t, a) => { lines.push(`push ${t} ${(a - BASE) / PS}`); },
    schedstat: (t, tid, s: KernelTimes | string) => { lines.push(`schedstat ${t} ${tid} ${typeof s === 'string' ? s : s.runNs}`); },
    end: () => undefined,
    flush: () => undefined,
    close: () => undefined,
  };
  const clock = { now: 0 };
  const ctx = new BlocktimeContext({ vcpuThreadIds: [100, 101], clock: () => clock.now, migrationEvents: null, exitEvents: null, trace });
  const flags = new Uint8Array(pages);
  const acc = new PostcopyAccounting(ctx, BASE, PS, flags);
  return { ctx, acc, lines, clock, flags };
}

test('out-of-order events are accounted in time order, once the horizon passes them', () => {
  const { ctx, acc, lines } = setup();
  acc.placed(3, 1, 500);   // the fault thread placed page 3 ...
  acc.fault(3, 100, 200);       // ... that vCPU 0 had faulted on earlier (its stamp)
  acc.placed(7, 2, 300);    // the main stream placed pages 7-8
  acc.fault(8, 101, 250);       // vCPU 1 faulted on page 8 before that
  expect(lines).toEqual([]);    // nothing before the horizon says so
  acc.releaseBefore(260);
  expect(lines).toEqual(['fault 200 3 100', 'fault 250 8 101']);
  acc.releaseBefore(Infinity);
  expect(lines).toEqual(['fault 200 3 100', 'fault 250 8 101', 'placed 300 8', 'placed 500 3']);
  const v = ctx.report()['x-blocktime'].vcpus;
  expect(v.map((x) => x.blocktimeNs)).toEqual([300, 50]);
});

test('a fault on a page placed earlier records nothing, equal times keep their order', () => {
  const { ctx, acc, lines } = setup();
  acc.placed(4, 1, 100);
  acc.fault(4, 100, 150);       // read after the main stream placed it: no wait
  acc.fault(5, 100, 150);
  acc.placed(5, 1, 150);   // same time as the fault: the fault first
  acc.releaseBefore(Infinity);
  expect(lines).toEqual(['fault 150 5 100', 'placed 150 5']);
  expect(ctx.report()['x-blocktime'].faults).toBe(1);
});

test('kernel samples go to the context in time order with the events', () => {
  const { ctx, acc, lines } = setup();
  acc.kernelSample(0, 10, { runNs: 5, waitNs: 0 });
  acc.kernelSample(1, 12, 'vCPU 1 is done, not running its workload');
  acc.fault(2, 100, 11);
  acc.placed(2, 1, 40);
  acc.kernelSample(0, 50, { runNs: 15, waitNs: 5 });
  acc.releaseBefore(Infinity);
  expect(lines).toEqual(['schedstat 10 100 5', 'fault 11 2 100', 'schedstat 12 101 vCPU 1 is done, not running its workload',
    'placed 40 2', 'schedstat 50 100 15']);
  const v = ctx.report()['x-blocktime'].vcpus;
  expect(v[0]).toMatchObject({ kernelBlockedNs: 40 - 10 - 5, kernelWindowBlocktimeNs: 29 });
  expect(v[1].kernelUnavailable).toMatch(/done/);
});

test('thousands of pending events (the buffer grows and slides) come out sorted', () => {
  const { acc, lines } = setup(20_000);
  let t = 1000;
  for (let p = 0; p < 5000; p++) {
    t += 10;
    acc.placed(p, 1, t);              // nobody waits: no line
    acc.fault(10_000 + p, 100, t - 15);   // dated a little earlier than the last placement
    acc.placed(10_000 + p, 1, t + 3);
    if (p % 700 === 0) acc.releaseBefore(t - 20);
  }
  acc.releaseBefore(Infinity);
  const times = lines.map((l) => Number(l.split(' ')[1]));
  expect(times).toHaveLength(10_000);
  for (let i = 1; i < times.length; i++) expect(times[i]).toBeGreaterThanOrEqual(times[i - 1]);
});

test('how each fault was served and the background push samples reach the trace, in time order with the events', () => {
  const { acc, lines } = setup();
  acc.fault(3, 100, 20, FaultCause.Requested);
  acc.pushed(10, 15);           // the push had delivered page 10 by then
  acc.fault(3, 101, 25, FaultCause.InFlight);
  acc.fault(4, 101, 30, FaultCause.ReadAhead);
  acc.placed(3, 2, 40);
  acc.fault(9, 100, 50, FaultCause.Received);
  acc.pushed(12, 45);
  acc.placed(9, 1, 55);
  acc.releaseBefore(Infinity);
  expect(lines).toEqual(['push 15 10', 'fault 20 3 100 requested', 'fault 25 3 101 in-flight', 'fault 30 4 101 read-ahead',
    'placed 40 3', 'placed 40 4', 'push 45 12', 'fault 50 9 100 received', 'placed 55 9']);
});
