// Blocktime across postcopy pauses (issue 13), with an injected clock: a vCPU
// blocked while the link is down is blocked (its blocktime keeps growing),
// and the part of it inside the pauses is said apart, live and final; the
// console shows both.
import { BlocktimeContext } from '../../src/blocktime/context.js';
import { PauseWindows } from '../../src/blocktime/pause-windows.js';
import { formatBlocktimeRich } from '../../src/monitor/format-blocktime.js';

const A = 0x7f00_0000_0000;
const B = A + 4096;
const ms = 1e6;

function make(tids: number[]) {
  const clock = { now: 0 };
  const ctx = new BlocktimeContext({ vcpuThreadIds: tids, clock: () => clock.now, exitEvents: null });
  return { ctx, clock };
}

describe('blocktime inside postcopy pauses', () => {
  test('PauseWindows: overlap of any interval with closed and open pauses', () => {
    const p = new PauseWindows();
    expect(p.overlap(0, 100)).toBe(0);
    p.began(10);
    expect(p.open).toBe(true);
    expect(p.overlap(0, 25)).toBe(15); // open: up to the interval's end
    p.ended(30);
    p.began(50);
    p.ended(60);
    expect(p.count).toBe(2);
    expect(p.overlap(0, 100)).toBe(30);
    expect(p.overlap(20, 55)).toBe(15);
    expect(p.overlap(30, 50)).toBe(0);
    expect(p.overlap(61, 70)).toBe(0);
    p.ended(90); // no pause lasts: nothing changes
    expect(p.overlap(0, 100)).toBe(30);
  });

  test('a fault across a pause counts whole; its part in the pause is said apart, live and final; a vCPU never blocked has none', () => {
    const { ctx, clock } = make([10, 11]);
    clock.now = 10 * ms; ctx.begin(A, 10);
    clock.now = 20 * ms; ctx.pauses.began(clock.now);
    clock.now = 50 * ms;
    let x = ctx.report()['x-blocktime'];
    expect(x.vcpus[0].blocktimeNs).toBe(40 * ms);
    expect(x.vcpus[0].pausedBlocktimeNs).toBe(30 * ms);
    expect(x.vcpus[1].pausedBlocktimeNs).toBe(0);
    expect([x.pausedNs, x.pauses]).toEqual([30 * ms, 1]);
    clock.now = 60 * ms; ctx.pauses.ended(clock.now);
    clock.now = 80 * ms; ctx.end(A);
    // a fault after the pause: none of it inside
    clock.now = 90 * ms; ctx.begin(B, 10);
    clock.now = 95 * ms; ctx.end(B);
    ctx.finish('completed', 100 * ms);
    x = ctx.report()['x-blocktime'];
    expect(x.vcpus[0].blocktimeNs).toBe(75 * ms);
    expect(x.vcpus[0].pausedBlocktimeNs).toBe(40 * ms);
    expect([x.pausedNs, x.pauses]).toEqual([40 * ms, 1]);
    const text = formatBlocktimeRich(ctx.report(), { color: false });
    expect(text).toMatch(/in pauses/);
    expect(text).toContain('Paused (postcopy-paused, link lost): 40.0 ms in 1 pause');
  });

  test('without a pause the report has no pause fields and the console no pause column', () => {
    const { ctx, clock } = make([10]);
    clock.now = 1 * ms; ctx.begin(A, 10);
    clock.now = 2 * ms; ctx.end(A);
    const r = ctx.report();
    expect(r['x-blocktime'].pausedNs).toBeUndefined();
    expect(r['x-blocktime'].vcpus[0].pausedBlocktimeNs).toBeUndefined();
    expect(formatBlocktimeRich(r, { color: false })).not.toMatch(/pause/);
  });
});
