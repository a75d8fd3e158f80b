// "No allocation per event in steady state" (the blocktime issue), checked:
// a million begin/end events on a 512-vCPU context, after a warm-up, must not
// make V8 collect garbage more than once while they run. Addresses and times are small
// integers here, so what is measured is the context's own allocation, not the
// boxing of the caller's numbers.
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { BlocktimeContext } from '../../src/blocktime/context.js';

const VCPUS = 512;
const PAGES = 4096;

function drive(ctx: BlocktimeContext, clock: { now: number }, events: number): void {
  for (let i = 0; i < events; i++) {
    const page = (i * 7) % PAGES;
    clock.now += 3;
    ctx.begin(page * 4096, 1000 + (i % VCPUS)); // a vCPU faults
    if ((i & 7) === 7) ctx.begin(page * 4096, 1); // now and then a thread that is no vCPU joins
    clock.now += 5;
    ctx.end(page * 4096); // the page is placed
  }
}

test('a million fault/placement pairs allocate nothing that needs collecting', async () => {
  const clock = { now: 1 };
  const tids = Array.from({ length: VCPUS }, (_, i) => 1000 + i);
  const ctx = new BlocktimeContext({ vcpuThreadIds: tids, clock: () => clock.now });
  drive(ctx, clock, 200_000); // warm-up: JIT tiers, every table at its steady size
  const gcs: PerformanceEntry[] = [];
  const obs = new PerformanceObserver((list) => { gcs.push(...list.getEntries()); });
  obs.observe({ entryTypes: ['gc'] });
  await new Promise((r) => setTimeout(r, 50)); // let anything pending from the warm-up settle
  const t0 = performance.now();
  drive(ctx, clock, 1_000_000);
  const t1 = performance.now();
  await new Promise((r) => setTimeout(r, 50)); // deliver the entries
  obs.disconnect();
  // only the collections that began while the events ran: the test runner's own
  // work in the waits around them (its messages, timers) is not the context's
  const during = gcs.filter((g) => g.startTime >= t0 && g.startTime <= t1);
  expect(during.length).toBeLessThanOrEqual(1);
  expect(ctx.report()['x-blocktime'].faults).toBeGreaterThan(1_000_000); // the events really were accounted
  ctx.destroy();
});
