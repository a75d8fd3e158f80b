// The cases of the migration stream fuzzer (test/integration/migration-fuzz.test.ts),
// drawn from a seeded PRNG (the same seed, the same cases), and what the wire
// lets a mutation do unnoticed: there is no checksum on the wire (as in
// QEMU), so a flipped byte of page data, of a page record's range, of the
// vCPU state or of an acknowledgement may go through, and so may a record
// sent twice; a reserved bit or field, a cut or bytes inserted must not. For
// a case that completed, what the mutation may have spoilt.
import { mulberry32 } from './prng.js';
import { describeMutation, type Mutation, type MutationKind, type Landing } from './fuzz-relay.js';
import { frameName, type Direction } from './stream-frames.js';
import {
  RECORD_HEADER_BYTES as H, REC_HEADER, REC_PAGES, REC_ZERO, REC_DISCARD, REC_END_ROUND, REC_SWITCHOVER, REC_END,
  RP_ACK, RP_RUNNING, RP_COMPLETE, RP_REQ_PAGES, HEADER_POSTCOPY, SWITCHOVER_POSTCOPY, writeRecordHeader,
} from '../../src/migration/wire.js';

export type Mode = 'precopy' | 'postcopy';

export interface FuzzCase {
  index: number;
  mode: Mode;
  /** null: a clean migration (the processes reused still migrate) */
  mutation: Mutation | null;
  /** postcopy: ms between migrate and migrate-start-postcopy */
  switchAfterMs: number;
  /** postcopy: the destination's x-postcopy-readahead (pages asked for after a faulted one), the push's MiB/s (0: no limit) */
  readahead: number;
  pushMiBs: number;
}

/** records of a migration per `dir:type`, and bytes per direction */
export interface Reference { counts: Map<string, number>; bytes: Partial<Record<Direction, number>> }

/** about what a clean migration of the test's guest (-m 4M, a sweep over 3 MiB of it) holds, from which the
 *  sites are drawn: fixed, so that a seed draws the same cases whatever this run's migrations hold */
const k = (dir: Direction, type: number): string => `${dir}:${type}`;
export const NOMINAL: Record<Mode, Reference> = {
  precopy: {
    counts: new Map([[k('main', REC_HEADER), 1], [k('main', REC_PAGES), 6], [k('main', REC_ZERO), 1], [k('main', REC_END_ROUND), 1],
      [k('main', REC_SWITCHOVER), 1], [k('main', REC_END), 1], [k('return', RP_RUNNING), 1], [k('return', RP_COMPLETE), 1],
      [k('urgent', REC_HEADER), 1]]),
    bytes: { main: 6_000_000, return: 32 },
  },
  postcopy: {
    counts: new Map([[k('main', REC_HEADER), 1], [k('main', REC_PAGES), 4], [k('main', REC_ZERO), 1], [k('main', REC_DISCARD), 1],
      [k('main', REC_SWITCHOVER), 1], [k('main', REC_END), 1], [k('return', RP_RUNNING), 1], [k('return', RP_COMPLETE), 1],
      [k('return', RP_ACK), 20], [k('urgent', REC_HEADER), 1], [k('urgent', REC_PAGES), 40], [k('urgent', REC_ZERO), 1],
      [k('requests', RP_REQ_PAGES), 40]]),
    bytes: { main: 1_200_000, return: 300 },
  },
};

interface Site { dir: Direction; type: number | null; weight: number; modes: Mode[]; header?: boolean }
const BOTH: Mode[] = ['precopy', 'postcopy'];
const PC: Mode[] = ['postcopy'];
/** where mutations land, and how often: every record kind of every direction, and any byte */
const SITES: Site[] = [
  { dir: 'main', type: REC_HEADER, weight: 2, modes: BOTH },
  { dir: 'main', type: REC_PAGES, weight: 2, modes: BOTH, header: true },
  { dir: 'main', type: REC_PAGES, weight: 2, modes: BOTH },
  { dir: 'main', type: REC_ZERO, weight: 1, modes: BOTH },
  { dir: 'main', type: REC_END_ROUND, weight: 1, modes: BOTH },
  { dir: 'main', type: REC_DISCARD, weight: 1, modes: PC },
  { dir: 'main', type: REC_SWITCHOVER, weight: 2, modes: BOTH },
  { dir: 'main', type: REC_END, weight: 2, modes: BOTH },
  { dir: 'main', type: null, weight: 2, modes: BOTH },
  { dir: 'return', type: RP_RUNNING, weight: 1, modes: BOTH },
  { dir: 'return', type: RP_COMPLETE, weight: 1, modes: BOTH },
  { dir: 'return', type: RP_ACK, weight: 2, modes: PC },
  { dir: 'urgent', type: REC_HEADER, weight: 1, modes: BOTH },
  { dir: 'urgent', type: REC_PAGES, weight: 2, modes: PC },
  { dir: 'urgent', type: REC_ZERO, weight: 1, modes: PC },
  { dir: 'requests', type: RP_REQ_PAGES, weight: 3, modes: PC },
];

/** `n` mutated cases, a share `postcopyShare` of them postcopy, and a clean one after every `cleanEvery - 1` */
export function drawCases(seed: number, n: number, postcopyShare: number, cleanEvery: number, refs = NOMINAL): FuzzCase[] {
  const rnd = mulberry32(seed);
  const int = (k: number): number => Math.floor(rnd() * k);
  const out: FuzzCase[] = [];
  for (let index = 0; out.length - Math.floor(index / cleanEvery) < n; index++) {
    const mode: Mode = rnd() < postcopyShare ? 'postcopy' : 'precopy';
    const postcopy = { switchAfterMs: int(40), readahead: [0, 8, 64][int(3)], pushMiBs: [16, 48, 0][int(3)] };
    if (index % cleanEvery === cleanEvery - 1) { out.push({ index, mode, mutation: null, ...postcopy }); continue; }
    const ref = refs[mode];
    const sites = SITES.filter((s) => s.modes.includes(mode) && (s.type === null || (ref.counts.get(k(s.dir, s.type)) ?? 0) > 0));
    let w = rnd() * sites.reduce((a, s) => a + s.weight, 0);
    const site = sites.find((s) => (w -= s.weight) < 0) ?? sites[0];
    const seen = site.type === null ? 0 : ref.counts.get(k(site.dir, site.type))!;
    const kinds: MutationKind[] = ['flip', 'flip', 'truncate', 'insert', 'repeat'];
    const drawn = kinds[int(kinds.length)];
    const kind = drawn === 'repeat' && site.type === null ? 'insert' : drawn; // a record repeated is one drawn by record
    const bytes = Buffer.from(Array.from({ length: 1 + int(rnd() < 0.5 ? 4 : 40) }, () => int(256)));
    out.push({
      index, mode, ...postcopy,
      mutation: {
        dir: site.dir, kind, type: site.type,
        nth: int(Math.max(1, Math.floor(seen * 0.9))),
        at: site.type === null ? int(Math.floor((ref.bytes[site.dir] ?? 1) * 0.95)) : site.header || rnd() < 0.3 ? int(H) : H + int(1 << 30),
        xor: 1 + int(255), bytes,
      },
    });
  }
  return out;
}

export function describeCase(seed: number, c: FuzzCase): string {
  const pc = c.mode === 'postcopy' ? `, switch after ${c.switchAfterMs} ms, read-ahead ${c.readahead}, push ${c.pushMiBs || 'unlimited'} MiB/s` : '';
  return `seed ${seed} case ${c.index} (${c.mode}${pc}): ${c.mutation ? describeMutation(c.mutation) : 'clean'}`;
}

/** where the HEADER's one block's name (pc.ram) starts: after the fixed fields (40 bytes), the block count (2) and the name's length (1) */
const ONE_BLOCK_NAME = H + 40 + 3;

/**
 * Whether the migration may still complete: after a flipped byte of data (a
 * page, a page record's range or type, a round number, the vCPU state, an
 * acknowledged offset, a page request: no checksum notices it) or a record
 * sent twice (but HEADER, SWITCHOVER), never after a reserved bit or field,
 * a cut, or bytes inserted -- but for the urgent channel, which the migration
 * may do without: in precopy, when it was refused for its HEADER (the
 * switchover waits 5 s for another), or lost in postcopy (the destination
 * fails 200 ms later, the source 500 ms): the push may bring every page
 * first; and once END went by, the destination is done with it.
 */
export function mayComplete(c: FuzzCase, l: Landing): boolean {
  const m = c.mutation!;
  const urgent = m.dir === 'urgent' || m.dir === 'requests';
  if (urgent && (c.mode === 'precopy' || m.kind === 'truncate' || l.frame.type === REC_HEADER || l.ended)) return true;
  // a record sent twice is taken twice (the same pages again, the same acknowledgement...), but a second HEADER or SWITCHOVER
  if (m.kind === 'repeat') return !(m.dir === 'main' && (l.frame.type === REC_HEADER || l.frame.type === REC_SWITCHOVER));
  if (m.kind !== 'flip') return false;
  const t = l.frame.type;
  const i = l.into;
  const head = (data: number[]): boolean => i === 0 || data.includes(i);
  const range = [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
  const count = [4, 5, 6, 7];
  if (m.dir === 'main') {
    // the postcopy advise bit; the token (only the urgent channel is refused for it); the name of the
    // guest's one RAM block, pc.ram (one block on each side is guest RAM whatever its name)
    if (t === REC_HEADER) return (i === 1 && m.xor === HEADER_POSTCOPY) || (i >= H + 24 && i < H + 40) || (i >= ONE_BLOCK_NAME && i < ONE_BLOCK_NAME + 6);
    if (t === REC_PAGES) return i >= H || head(range);
    if (t === REC_ZERO || t === REC_DISCARD) return head(range);
    if (t === REC_END_ROUND) return head(count);
    if (t === REC_SWITCHOVER) return i >= H || i === 0 || (i === 1 && m.xor === SWITCHOVER_POSTCOPY);
    if (t === REC_END) return i === 0;
    return false;
  }
  if (m.dir === 'return') return t === RP_ACK ? head([8, 9, 10, 11, 12, 13, 14, 15]) : i === 0;
  if (m.dir === 'requests') return head(range) || (i === 1 && m.xor === 1); // 1: READAHEAD
  // the urgent channel in postcopy: its header must be right, its pages are data
  return t !== REC_HEADER && (i >= H || head(range) || (i === 1 && m.xor === 1));
}

/** what a completed case may have spoilt in the guest: pages, and the vCPU state (the guest then goes on elsewhere) */
export interface Spoilt { pages: Set<number>; vcpu: boolean }

export function mergeSpoilt(a: Spoilt | undefined, b: Spoilt): Spoilt {
  return { pages: new Set([...(a?.pages ?? []), ...b.pages]), vcpu: (a?.vcpu ?? false) || b.vcpu };
}

/**
 * What a completed case may hold wrong (no checksum): the page whose data
 * byte was flipped, or the pages a flipped page-record header named before
 * and after the flip; the vCPU state when a byte of it was flipped.
 */
export function spoiltBy(c: FuzzCase, l: Landing | null, pageSize: number, pages: number): Spoilt {
  const out: Spoilt = { pages: new Set(), vcpu: false };
  const m = c.mutation;
  if (m === null || l === null || m.kind !== 'flip' || m.dir === 'return' || m.dir === 'requests') return out;
  const f = l.frame;
  if (f.type === REC_SWITCHOVER && l.into >= H) return { ...out, vcpu: true };
  const add = (type: number, count: number, offset: number): void => {
    if (type !== REC_PAGES && type !== REC_ZERO && type !== REC_DISCARD) return;
    for (let p = Math.floor(offset / pageSize), k = 0; k < count && p < pages; p++, k++) out.pages.add(p);
  };
  if (l.into >= H) {
    if (f.type === REC_PAGES) out.pages.add(f.offset / pageSize + Math.floor((l.into - H) / pageSize));
    return out;
  }
  const h = Buffer.alloc(H);
  writeRecordHeader(h, 0, f.type, f.flags, f.count, f.offset);
  add(h[0], f.count, f.offset);
  h[l.into] ^= m.xor;
  add(h[0], h.readUInt32LE(4), h.readUInt32LE(8) + h.readUInt32LE(12) * 0x100000000);
  return out;
}

/** where the byte lay, for the summary: 'main PAGES payload', 'return ACK header' */
export function siteName(c: FuzzCase, l: Landing | null): string {
  if (c.mutation === null) return 'clean';
  if (l === null) return `${c.mutation.dir} (not reached)`;
  return `${c.mutation.dir} ${frameName(c.mutation.dir, l.frame.type)} ${l.into < H ? 'header' : 'payload'}`;
}
