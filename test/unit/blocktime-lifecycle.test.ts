// The context's two notifiers, as in the seed: the migration state listener
// (terminal status -> per-fault tracking released, totals kept, state final)
// and the process-exit listener (everything released), and destroy() taking
// both listeners away again.
import { EventEmitter } from 'node:events';
import { BlocktimeContext } from '../../src/blocktime/context.js';
import type { TraceSink } from '../../src/blocktime/trace.js';
import type { KernelTimes } from '../../src/blocktime/types.js';

const A = 0x7f00_0000_0000;
const B = A + 4096;

/** A sink that keeps what it is given, to see what the context reports to it. */
class MemorySink implements TraceSink {
  lines: string[] = [];
  closed = 0;
  header(v: readonly number[], t0: number): void { this.lines.push(`header ${v.join(',')} ${t0}`); }
  fault(t: number, addr: number, tid: number): void { this.lines.push(`fault ${t} ${addr} ${tid}`); }
  placed(t: number, addr: number): void { this.lines.push(`placed ${t} ${addr}`); }
  push(t: number, addr: number): void { this.lines.push(`push ${t} ${addr}`); }
  schedstat(t: number, tid: number, s: KernelTimes | string): void {
    this.lines.push(`schedstat ${t} ${tid} ${typeof s === 'string' ? s : `${s.runNs} ${s.waitNs}`}`);
  }
  end(t: number, status: string): void { this.lines.push(`end ${t} ${status}`); }
  flush(): void { /* kept in memory */ }
  close(): void { this.closed++; }
}

function setup() {
  const clock = { now: 100 };
  const migration = new EventEmitter();
  const exit = new EventEmitter();
  const trace = new MemorySink();
  const ctx = new BlocktimeContext({
    vcpuThreadIds: [10, 11], clock: () => clock.now, migrationEvents: migration, exitEvents: exit, trace,
  });
  return { clock, migration, exit, trace, ctx };
}

describe('blocktime context lifecycle', () => {
  test.each(['completed', 'failed', 'cancelled'] as const)(
    "migration '%s': tracking released, outstanding intervals closed at that moment, totals kept",
    (status) => {
      const { clock, migration, trace, ctx } = setup();
      expect(migration.listenerCount('migration')).toBe(1);
      clock.now = 1000; ctx.begin(A, 10);
      clock.now = 2000; ctx.begin(B, 11);
      clock.now = 3000; ctx.end(A);
      for (const s of ['setup', 'active', 'postcopy-active', 'postcopy-paused']) migration.emit('migration', s);
      expect(ctx.state).toBe('live');
      expect(ctx.pending).toBe(1);
      clock.now = 9000;
      migration.emit('migration', status);
      expect(ctx.state).toBe('final');
      expect(ctx.pending).toBe(0);
      expect(ctx.isTracked(B)).toBe(false);
      expect(migration.listenerCount('migration')).toBe(0);

      clock.now = 50_000; // the final report no longer moves with the clock
      const r = ctx.report();
      expect(r['x-blocktime'].state).toBe('final');
      expect(r['x-blocktime'].vcpus.map((v) => v.blocktimeNs)).toEqual([2000, 7000]);
      expect(r['x-blocktime'].totalBlocktimeNs).toBe(1000); // both down 2000..3000
      expect(r['postcopy-vcpu-latency']).toEqual([2000, 0]); // B never got its page: no latency
      expect(r['x-blocktime'].faults).toBe(2);
      expect(r['x-blocktime'].postcopyNs).toBe(8900);

      // events after the end are ignored
      ctx.begin(A, 10);
      ctx.end(B);
      expect(ctx.report()).toEqual(r);
      expect(trace.lines).toEqual([
        'header 10,11 100', `fault 1000 ${A} 10`, `fault 2000 ${B} 11`, `placed 3000 ${A}`, `end 9000 ${status}`,
      ]);
      expect(trace.closed).toBe(1);
      ctx.destroy();
      expect(trace.closed).toBe(1);
    },
  );

  test('process exit releases everything and removes both listeners', () => {
    const { clock, migration, exit, trace, ctx } = setup();
    clock.now = 1000; ctx.begin(A, 10);
    expect(exit.listenerCount('exit')).toBe(1);
    exit.emit('exit', 0);
    expect(ctx.state).toBe('destroyed');
    expect(ctx.pending).toBe(0);
    expect(exit.listenerCount('exit')).toBe(0);
    expect(migration.listenerCount('migration')).toBe(0);
    expect(trace.closed).toBe(1);
    expect(trace.lines.some((l) => l.startsWith('end'))).toBe(false); // an unfinished trace has no end line
    expect(() => ctx.report()).toThrow(/destroyed/);
    migration.emit('migration', 'completed'); // nothing listens any more
    expect(ctx.state).toBe('destroyed');
  });

  test('after the migration ended the exit listener is still there, and takes the totals away', () => {
    const { migration, exit, ctx } = setup();
    migration.emit('migration', 'completed');
    expect(ctx.report()['x-blocktime'].state).toBe('final');
    expect(exit.listenerCount('exit')).toBe(1);
    exit.emit('exit', 0);
    expect(exit.listenerCount('exit')).toBe(0);
    expect(() => ctx.report()).toThrow(/destroyed/);
  });

  test('1000 contexts created and destroyed leave the listener counts where they were (real process exit listener)', () => {
    const migration = new EventEmitter();
    const exitBefore = process.listenerCount('exit');
    for (let i = 0; i < 1000; i++) {
      const ctx = new BlocktimeContext({ vcpuThreadIds: [1, 2, 3, 4], migrationEvents: migration });
      expect(process.listenerCount('exit')).toBe(exitBefore + 1);
      if (i % 3 === 0) migration.emit('migration', 'completed');
      ctx.destroy();
      ctx.destroy(); // twice is harmless
    }
    expect(process.listenerCount('exit')).toBe(exitBefore);
    expect(migration.listenerCount('migration')).toBe(0);
  });
});

describe('kernel samples (the ground truth beside the figures)', () => {
  test('blocked = elapsed - on CPU - run-queue wait between the first and the latest sample', () => {
    const { ctx, trace } = setup();
    ctx.kernelSample(0, 1_000, { runNs: 50_000, waitNs: 7_000 });
    ctx.kernelSample(1, 1_000, { runNs: 10, waitNs: 0 });
    ctx.kernelSample(0, 101_000, { runNs: 80_000, waitNs: 17_000 }, false); // a live report's: not traced
    let v = ctx.report()['x-blocktime'].vcpus;
    expect(v[0].kernelBlockedNs).toBe(100_000 - 30_000 - 10_000);
    expect(v[1].kernelBlockedNs).toBeUndefined();
    expect(v[1].kernelUnavailable).toMatch(/one kernel sample/);
    ctx.kernelSample(0, 201_000, { runNs: 150_000, waitNs: 20_000 });
    ctx.kernelSample(1, 201_000, 'vCPU 1 was paused at the end of the window');
    v = ctx.report()['x-blocktime'].vcpus;
    expect(v[0].kernelBlockedNs).toBe(200_000 - 100_000 - 13_000);
    expect(v[1]).toMatchObject({ kernelUnavailable: 'vCPU 1 was paused at the end of the window' });
    expect(trace.lines.filter((l) => l.startsWith('schedstat'))).toEqual([
      'schedstat 1000 10 50000 7000', 'schedstat 1000 11 10 0', 'schedstat 201000 10 150000 20000',
      'schedstat 201000 11 vCPU 1 was paused at the end of the window',
    ]);
  });

  test('without samples a report has no kernel fields; after the end samples change nothing', () => {
    const { ctx, migration } = setup();
    expect(ctx.report()['x-blocktime'].vcpus[0]).not.toHaveProperty('kernelBlockedNs');
    expect(ctx.report()['x-blocktime'].vcpus[0]).not.toHaveProperty('kernelUnavailable');
    migration.emit('migration', 'completed');
    ctx.kernelSample(0, 5_000, { runNs: 1, waitNs: 1 });
    expect(ctx.report()['x-blocktime'].vcpus[0]).not.toHaveProperty('kernelUnavailable');
  });
});
