// The precopy convergence watch (src/migration/convergence.ts) on an injected
// clock: rounds that stop shrinking the dirty set make a stall (only after
// enough rounds and enough time), a shrinking round ends it, and the words
// name the figures and the ways out in the monitor's or the batch's terms.
import { ConvergenceWatch, describeStall, stallSentence } from '../../src/migration/convergence.js';

const MiB = 2 ** 20;

function watch() {
  let now = 0;
  const w = new ConvergenceWatch(() => now, { rounds: 3, minMs: 2000, shrink: 0.9 });
  const round = (remainingMiB: number, afterMs = 1000): void => {
    now += afterMs;
    w.round({ remainingBytes: remainingMiB * MiB, dirtyRate: 130 * MiB, bandwidth: 128 * MiB });
  };
  return { w, round, advance: (ms: number) => { now += ms; } };
}

describe('ConvergenceWatch', () => {
  it('a dirty set that stays the same is a stall after 3 rounds, not before', () => {
    const { w, round } = watch();
    round(150);
    round(149);
    round(150);
    expect(w.stall).toBeUndefined();
    round(148);
    expect(w.stall).toEqual({ remainingBytes: 148 * MiB, dirtyRate: 130 * MiB, bandwidth: 128 * MiB, rounds: 4, stalledRounds: 3 });
  });

  it('a set that grows is a stall too', () => {
    const { w, round } = watch();
    for (const r of [10, 20, 40, 80]) round(r);
    expect(w.stall?.stalledRounds).toBe(3);
  });

  it('rounds that keep shrinking the set are no stall, however many', () => {
    const { w, round } = watch();
    let r = 150;
    for (let i = 0; i < 20; i++) { round(r); r *= 0.8; }
    expect(w.stall).toBeUndefined();
  });

  it('tiny rounds: no stall before minMs has passed without a shrink', () => {
    const { w, round, advance } = watch();
    for (let i = 0; i < 10; i++) round(50, 10);
    expect(w.stall).toBeUndefined();
    advance(2000);
    expect(w.stall?.stalledRounds).toBe(9);
  });

  it('a round that shrinks the set ends the stall', () => {
    const { w, round } = watch();
    for (let i = 0; i < 5; i++) round(100);
    expect(w.stall).toBeDefined();
    round(80);
    expect(w.stall).toBeUndefined();
  });

  it('says the figures and the ways out, in the monitor terms and in postcopy run terms', () => {
    const stall = { remainingBytes: 107 * MiB, dirtyRate: 133 * MiB, bandwidth: 128.5 * MiB, rounds: 5, stalledRounds: 4 };
    const c = describeStall(stall, { maxBandwidth: 128 * MiB, postcopyRam: false, implemented: ['events', 'postcopy-ram'] });
    expect(c.summary).toBe('4 rounds have not shrunk the dirty set (107.0 MiB still to send after 5 rounds):'
      + ' the guest dirties 133.0 MiB/s and the stream moves 128.5 MiB/s (max-bandwidth 128.0 MiB/s)');
    expect(c['ways-out']).toBe('postcopy (migrate_set_capability postcopy-ram on before migrate, then migrate_start_postcopy);'
      + ' a higher max-bandwidth (migrate_set_parameter max-bandwidth 0: no limit);'
      + " throttling the guest (QEMU's auto-converge or dirty-limit; not in this engine yet)");
    expect(stallSentence(c, 'batch')).toBe(`precopy is not converging: ${c.summary}. Ways out: postcopy (--postcopy-after SECONDS);`
      + ' a higher --max-bandwidth (0: no limit); throttling the guest (from a monitor: migrate_set_capability auto-converge or dirty-limit on, before migrate)');

    const on = describeStall(stall, { maxBandwidth: 0, postcopyRam: true, implemented: ['postcopy-ram', 'auto-converge'] });
    expect(on.summary).toMatch(/\(no max-bandwidth limit\)$/);
    expect(on['ways-out']).toBe('migrate_start_postcopy; a faster link; throttling the guest (migrate_set_capability auto-converge on, before migrate)');
  });
});
