// QEMU-style parsing of the VM's sizes, vCPU counts and workload specs, and
// the wire encoding of vCPU workload state.
import { CommandError } from '../../src/errors.js';
import {
  parseSize, parseSmp, formatSize, parseWorkload, formatWorkload, encodeVcpuState, decodeVcpuState,
  VCPU_STATE_BYTES, vcpuRange, vcpuRngSeed, type WorkloadSpec,
} from '../../src/vm/index.js';

const MiB = 2 ** 20;

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CommandError);
    return (e as Error).message;
  }
  throw new Error('expected a CommandError');
}

describe('parseSize (-m)', () => {
  it.each([
    ['256M', 256 * MiB], ['256', 256 * MiB], ['1G', 1024 * MiB], ['1.5g', 1536 * MiB], ['4096K', 4 * MiB],
    ['8192B', 8192], ['1T', 2 ** 40], [' 64m ', 64 * MiB],
  ])('%s = %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each([
    ['0', 'is zero'], ['-5M', 'is negative'], ['abc', "'abc' is not a size"], ['12Q', "'12Q' is not a size"],
    ['', 'is empty'], ['100B', 'not a multiple of the page size'], ['2T', 'too large'], ['1.0000001K', 'whole number'],
  ])('refuses %j (%s)', (text, why) => {
    expect(message(() => parseSize(text))).toContain(why);
  });

  it('formats sizes with the largest exact unit', () => {
    expect(formatSize(256 * MiB)).toBe('256M');
    expect(formatSize(1536 * MiB)).toBe('1536M');
    expect(formatSize(4096)).toBe('4K');
    expect(formatSize(100)).toBe('100');
  });
});

describe('parseSmp (-smp)', () => {
  it.each([['4', 4], ['cpus=2', 2], ['4,sockets=2,cores=2,threads=1', 4], ['sockets=1,cores=3', 3], ['512', 512], ['1', 1]])(
    '%s = %d vCPUs', (text, n) => expect(parseSmp(text)).toBe(n));

  it.each([
    ['0', 'out of range'], ['513', 'out of range'], ['-1', 'not a whole number'], ['two', 'not a whole number'],
    ['4,sockets=3', 'does not match'], ['4,bogus=1', "unknown key 'bogus'"], ['', 'is empty'], ['4,maxcpus=8', 'hotplug'],
  ])('refuses %j (%s)', (text, why) => {
    expect(message(() => parseSmp(text))).toContain(why);
  });
});

describe('parseWorkload / formatWorkload', () => {
  const ram = 256 * MiB;

  it('defaults: the whole RAM, seed 1, hotset 10% / 90%', () => {
    expect(parseWorkload('sweep', ram)).toEqual({ name: 'sweep', start: 0, end: ram });
    expect(parseWorkload('random', ram)).toEqual({ name: 'random', start: 0, end: ram, seed: 1 });
    expect(parseWorkload('hotset', ram)).toEqual({ name: 'hotset', start: 0, end: ram, seed: 1, fraction: 0.1, share: 0.9 });
    expect(parseWorkload('idle', ram)).toEqual({ name: 'idle', start: 0, end: ram });
  });

  it('keys, with start rounded down and end rounded up to pages', () => {
    expect(parseWorkload('sweep,start=5000,end=100M,sweeps=3,split=on', ram))
      .toEqual({ name: 'sweep', start: 4096, end: 100 * MiB, sweeps: 3, split: true });
    expect(parseWorkload('random,seed=7,end=10000,accesses=50', ram))
      .toEqual({ name: 'random', start: 0, end: 12288, seed: 7, accesses: 50 });
    expect(parseWorkload('hotset,fraction=0.25,share=1', ram))
      .toEqual({ name: 'hotset', start: 0, end: ram, seed: 1, fraction: 0.25, share: 1 });
  });

  it.each([
    ['', 'workload is empty'], ['swep', "unknown workload 'swep'"], ['sweep,seed=1', "sweep has no key 'seed'"],
    ['idle,end=1M', 'takes no keys'], ['sweep,end=300M', 'beyond guest RAM'], ['sweep,start=256M', 'outside guest RAM'],
    ['sweep,start=8K,end=8K', 'range is empty'], ['random,seed=-1', 'whole number'], ['hotset,fraction=0', '(0, 1]'],
    ['hotset,fraction=1.5', '(0, 1]'], ['hotset,share=2', '[0, 1]'], ['hotset,share=x', '[0, 1]'],
    ['sweep,sweeps=0', '>= 1'], ['sweep,split=maybe', "'on' or 'off'"], ['sweep,end', 'not key=value'],
    ['sweep,end=1M,end=2M', 'given twice'], ['sweep,end=lots', 'not a size'],
  ])('refuses %j (%s)', (text, why) => {
    expect(message(() => parseWorkload(text, ram))).toContain(why);
  });

  it.each(['sweep', 'sweep,start=4K,end=100M,sweeps=2,split=on', 'random,seed=9,accesses=1000', 'hotset,fraction=0.5,share=0.75,seed=3', 'idle'])(
    'round-trips %s', (text) => {
      const spec = parseWorkload(text, ram);
      expect(parseWorkload(formatWorkload(spec), ram)).toEqual(spec);
    });

  it('formats canonically', () => {
    expect(formatWorkload(parseWorkload('sweep,end=100M', ram))).toBe('sweep,end=100M');
    expect(formatWorkload(parseWorkload('idle', ram))).toBe('idle');
  });
});

describe('vCPU ranges and seeds', () => {
  const spec: WorkloadSpec = { name: 'sweep', start: 4096, end: 4096 * 11, split: true };
  it('split gives each vCPU a disjoint slice covering the range', () => {
    const slices = [0, 1, 2].map((i) => vcpuRange(spec, i, 3));
    expect(slices).toEqual([[1, 4], [4, 7], [7, 11]]);
    expect(vcpuRange({ ...spec, split: false }, 2, 3)).toEqual([1, 11]);
  });
  it('seeds differ per vCPU, are deterministic and never zero', () => {
    expect(vcpuRngSeed(7, 0)).toBe(vcpuRngSeed(7, 0));
    expect(vcpuRngSeed(7, 0)).not.toBe(vcpuRngSeed(7, 1));
    expect(vcpuRngSeed(0, 0)).not.toBe(0n);
  });
});

describe('vCPU state encoding', () => {
  it('round-trips 32 bytes at an offset, including a full 64-bit rng', () => {
    const s = { position: 2 ** 40 + 5, sweeps: 123456789, accesses: 2 ** 52 + 1, rng: 0xfedcba9876543210n };
    const buf = new Uint8Array(8 + VCPU_STATE_BYTES);
    encodeVcpuState(s, buf, 8);
    expect(decodeVcpuState(buf, 8)).toEqual(s);
    expect(() => encodeVcpuState(s, buf, 9)).toThrow(RangeError);
  });
});
