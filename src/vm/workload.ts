// The guest workload a VM's vCPUs run, spelled `NAME[,key=value...]`:
//   sweep  increment the first byte of every page of [start,end) in order, forever
//          (QEMU's migration-test guest loop); keys start, end, sweeps, accesses, split
//   random uniform page accesses over [start,end); keys start, end, seed, accesses, split
//   hotset `fraction` of the pages (the first ones) get `share` of the accesses;
//          keys start, end, seed, fraction, share, accesses, split
//   idle   never touches memory
// start/end are byte offsets into guest RAM (suffixes K/M/G/T; plain = bytes),
// start rounded down and end rounded up to a page; with `block=ID` they are
// offsets into that RAM block (QEMU's idstr: the memory backend's id, pc.ram
// by default), whose whole range is the default. `sweeps`/`accesses` bound the
// work (the vCPU parks as "done" when it reaches them); `split=on` gives each
// vCPU its own contiguous slice of [start,end) instead of the whole range.
import { CommandError } from '../errors.js';
import { PAGE_SIZE, formatSize, parseSizeText } from './size.js';

export type WorkloadName = 'sweep' | 'random' | 'hotset' | 'idle';
export const WORKLOAD_NAMES: readonly WorkloadName[] = ['sweep', 'random', 'hotset', 'idle'];

export interface WorkloadSpec {
  name: WorkloadName;
  /** byte offset into guest RAM, page-aligned */
  start: number;
  /** byte offset (exclusive), page-aligned, > start, <= RAM size */
  end: number;
  seed?: number;
  fraction?: number;
  share?: number;
  /** stop (park as done) after this many complete sweeps */
  sweeps?: number;
  /** stop (park as done) after this many accesses */
  accesses?: number;
  /** each vCPU takes its own slice of [start, end) */
  split?: boolean;
  /** block=ID: the RAM block [start, end) lies in (start/end are still guest RAM offsets) */
  block?: { idstr: string; offset: number };
}

/** a RAM block as a workload sees it: where it lies in guest RAM */
export interface WorkloadBlock {
  idstr: string;
  offset: number;
  usedLength: number;
}

const KEYS: Record<WorkloadName, readonly string[]> = {
  sweep: ['block', 'start', 'end', 'sweeps', 'accesses', 'split'],
  random: ['block', 'start', 'end', 'seed', 'accesses', 'split'],
  hotset: ['block', 'start', 'end', 'seed', 'fraction', 'share', 'accesses', 'split'],
  idle: [],
};

export const DEFAULT_SEED = 1;
export const DEFAULT_FRACTION = 0.1;
export const DEFAULT_SHARE = 0.9;

function wholeNumber(key: string, value: string, min: number): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < min) {
    throw new CommandError(`workload key '${key}=${value}': expected a whole number >= ${min}`);
  }
  return Number(value);
}

function decimal(key: string, value: string, lo: number, loOpen: boolean, hi: number): number {
  const n = /^\d*\.?\d+(e-?\d+)?$/i.test(value) ? Number(value) : NaN;
  if (!Number.isFinite(n) || n > hi || (loOpen ? n <= lo : n < lo)) {
    throw new CommandError(`workload key '${key}=${value}': expected a number in ${loOpen ? '(' : '['}${lo}, ${hi}]`);
  }
  return n;
}

function bool(key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (['on', 'yes', 'true'].includes(v)) return true;
  if (['off', 'no', 'false'].includes(v)) return false;
  throw new CommandError(`workload key '${key}=${value}': expected 'on' or 'off'`);
}

/** parses a workload spec for a guest of `ramBytes` whose RAM blocks are `blocks` (default: one, pc.ram);
 *  throws CommandError naming the bad part */
export function parseWorkload(text: string, ramBytes: number, blocks?: readonly WorkloadBlock[]): WorkloadSpec {
  const parts = String(text).trim().split(',');
  const name = parts[0].trim() as WorkloadName;
  if (name === ('' as WorkloadName)) throw new CommandError(`workload is empty: expected one of ${WORKLOAD_NAMES.join(', ')}`);
  if (!WORKLOAD_NAMES.includes(name)) {
    throw new CommandError(`unknown workload '${parts[0]}': expected one of ${WORKLOAD_NAMES.join(', ')}`);
  }
  const spec: WorkloadSpec = { name, start: 0, end: ramBytes };
  const seen = new Set<string>();
  let startText = '0';
  let endText: string | undefined;
  for (const part of parts.slice(1)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new CommandError(`workload '${text}': '${part}' is not key=value`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (!KEYS[name].includes(key)) {
      throw new CommandError(`workload ${name} has no key '${key}'` +
        (KEYS[name].length ? ` (keys: ${KEYS[name].join(', ')})` : ' (it takes no keys)'));
    }
    if (seen.has(key)) throw new CommandError(`workload '${text}': key '${key}' given twice`);
    seen.add(key);
    switch (key) {
      case 'start': startText = value; spec.start = parseSizeText(value, `workload start`, 'B'); break;
      case 'end': endText = value; spec.end = parseSizeText(value, `workload end`, 'B'); break;
      case 'seed': spec.seed = wholeNumber(key, value, 0); break;
      case 'sweeps': spec.sweeps = wholeNumber(key, value, 1); break;
      case 'accesses': spec.accesses = wholeNumber(key, value, 1); break;
      case 'fraction': spec.fraction = decimal(key, value, 0, true, 1); break;
      case 'share': spec.share = decimal(key, value, 0, false, 1); break;
      case 'split': spec.split = bool(key, value); break;
      case 'block': {
        const list = blocks ?? [{ idstr: 'pc.ram', offset: 0, usedLength: ramBytes }];
        const b = list.find((x) => x.idstr === value);
        if (!b) throw new CommandError(`workload key 'block=${value}': no RAM block '${value}' (blocks: ${list.map((x) => x.idstr).join(', ')})`);
        spec.block = { idstr: b.idstr, offset: b.offset };
        break;
      }
    }
  }
  // within a block, start/end and their bounds are the block's; the spec keeps guest RAM offsets
  const base = spec.block?.offset ?? 0;
  const size = spec.block ? blocks?.find((x) => x.idstr === spec.block!.idstr)?.usedLength ?? ramBytes : ramBytes;
  const where = spec.block ? `RAM block ${spec.block.idstr}` : 'guest RAM';
  if (!seen.has('end')) spec.end = size;
  spec.start = Math.floor(spec.start / PAGE_SIZE) * PAGE_SIZE;
  spec.end = Math.ceil(spec.end / PAGE_SIZE) * PAGE_SIZE;
  if (spec.start >= size) {
    throw new CommandError(`workload start '${startText}' is outside ${where} (${formatSize(size)})`);
  }
  if (spec.end > size) {
    throw new CommandError(`workload end '${endText}' is beyond ${where} (${formatSize(size)})`);
  }
  if (spec.end <= spec.start) {
    throw new CommandError(`workload range is empty: end '${endText ?? formatSize(size)}' must be above start '${startText}'`);
  }
  spec.start += base;
  spec.end += base;
  if (name === 'random' || name === 'hotset') spec.seed ??= DEFAULT_SEED;
  if (name === 'hotset') {
    spec.fraction ??= DEFAULT_FRACTION;
    spec.share ??= DEFAULT_SHARE;
  }
  return spec;
}

/** the canonical text of a spec; parseWorkload(formatWorkload(s), ram, blocks) gives s back */
export function formatWorkload(spec: WorkloadSpec): string {
  if (spec.name === 'idle') return 'idle';
  const out: string[] = [spec.name];
  const base = spec.block?.offset ?? 0;
  if (spec.block) out.push(`block=${spec.block.idstr}`);
  if (spec.start !== base) out.push(`start=${formatSize(spec.start - base)}`);
  out.push(`end=${formatSize(spec.end - base)}`);
  if (spec.seed !== undefined) out.push(`seed=${spec.seed}`);
  if (spec.fraction !== undefined) out.push(`fraction=${spec.fraction}`);
  if (spec.share !== undefined) out.push(`share=${spec.share}`);
  if (spec.sweeps !== undefined) out.push(`sweeps=${spec.sweeps}`);
  if (spec.accesses !== undefined) out.push(`accesses=${spec.accesses}`);
  if (spec.split !== undefined) out.push(`split=${spec.split ? 'on' : 'off'}`);
  return out.join(',');
}
