// The RAM block list of the stream's HEADER (QEMU's RAM_SAVE_FLAG_MEM_SIZE
// list: each block's idstr and used_length, and its page size as QEMU sends
// it for postcopy), and the destination's check of it against its own
// blocks, in QEMU's words where QEMU has them. Page records then name a
// block by its index in this list (wire.ts). Pure, like wire.ts: the list is
// untrusted input, checked byte by byte.
import { RamBlocks, MAX_IDSTR_BYTES, MAX_RAM_BLOCKS, type RamBlockSpec } from '../vm/ram-blocks.js';
import { printable } from './wire-text.js';

/** the largest host page a block may have (2 MiB huge pages: src/native/hugetlbfs.ts MAX_HUGE_PAGE) */
const MAX_BLOCK_PAGE = 2 ** 21;

/** Malformed block list; wire.ts turns it into its WireError */
export class BlockListError extends Error {}

/** bytes of the list of `blocks` (u16 count, then per block: u8 name length, name, u32 page size, u64 used_length) */
export function blockListBytes(blocks: readonly RamBlockSpec[]): number {
  return 2 + blocks.reduce((n, b) => n + 1 + Buffer.byteLength(b.idstr) + 12, 0);
}

/** writes the list at out[pos..]; returns the position after it */
export function writeBlockList(out: Buffer, pos: number, blocks: readonly RamBlockSpec[]): number {
  out.writeUInt16LE(blocks.length, pos);
  let p = pos + 2;
  for (const b of blocks) {
    const n = out.write(b.idstr, p + 1, 'utf8');
    out[p] = n;
    p += 1 + n;
    out.writeUInt32LE(b.pageSize, p);
    out.writeUInt32LE(b.usedLength % 0x100000000, p + 4);
    out.writeUInt32LE(Math.floor(b.usedLength / 0x100000000), p + 8);
    p += 12;
  }
  return p;
}

/** reads the list in buf[pos, end): the blocks laid out, and the position after the list; throws
 *  BlockListError naming what is wrong. `ramBytes`/`pageSize`: the header's, which the blocks must add up to */
export function readBlockList(buf: Buffer, pos: number, end: number, ramBytes: number, pageSize: number): { blocks: RamBlocks; end: number } {
  if (end - pos < 2) throw new BlockListError('header ends before its RAM block list');
  const n = buf.readUInt16LE(pos);
  if (n < 1 || n > MAX_RAM_BLOCKS) throw new BlockListError(`header lists ${n} RAM blocks (1..${MAX_RAM_BLOCKS})`);
  const specs: RamBlockSpec[] = [];
  let p = pos + 2;
  for (let i = 0; i < n; i++) {
    if (p >= end || p + 1 + buf[p] + 12 > end) throw new BlockListError(`header ends inside RAM block ${i} of its list`);
    const len = buf[p];
    const idstr = buf.toString('utf8', p + 1, p + 1 + len);
    p += 1 + len;
    const ps = buf.readUInt32LE(p);
    const hi = buf.readUInt32LE(p + 8);
    if (hi >= 0x200000) throw new BlockListError(`RAM block ${i} (${printable(idstr)}): size out of range`);
    const used = hi * 0x100000000 + buf.readUInt32LE(p + 4);
    p += 12;
    if (len === 0 || len > MAX_IDSTR_BYTES) throw new BlockListError(`RAM block ${i}: empty name`);
    if (ps < pageSize || ps > MAX_BLOCK_PAGE || (ps & (ps - 1)) !== 0) {
      throw new BlockListError(`RAM block ${printable(idstr)} has pages of ${ps} bytes, and the stream's pages are ${pageSize} bytes`);
    }
    specs.push({ idstr, usedLength: used, pageSize: ps });
  }
  if (Math.min(...specs.map((b) => b.pageSize)) !== pageSize) {
    throw new BlockListError(`the stream's pages are ${pageSize} bytes, but no RAM block has pages that small`);
  }
  let blocks: RamBlocks;
  try {
    blocks = RamBlocks.layout(specs);
  } catch (e) {
    throw new BlockListError(`header's RAM block list: ${printable((e as Error).message)}`);
  }
  if (blocks.bytes !== ramBytes) throw new BlockListError(`header's RAM blocks add up to ${blocks.bytes} bytes, not the ${ramBytes} it says`);
  return { blocks, end: p };
}

/**
 * Why this VM's RAM blocks cannot take the source's (QEMU's texts for an
 * unknown block, a length and a page size mismatch), or null when they
 * match: the same blocks, in the same order (a page record names its block
 * by its place in the list).
 */
export function ramBlocksMismatch(source: RamBlocks, local: RamBlocks): string | null {
  for (const s of source.list) {
    const l = local.byName(s.idstr);
    if (!l) return `Unknown ramblock "${printable(s.idstr)}", cannot accept migration`;
    if (l.usedLength !== s.usedLength) {
      return `Length mismatch: ${s.idstr}: 0x${s.usedLength.toString(16)} in != 0x${l.usedLength.toString(16)}: Invalid argument`;
    }
    if (l.pageSize !== s.pageSize) return `Mismatched RAM page size ${s.idstr} (local) ${l.pageSize} != ${s.pageSize}`;
    if (l.index !== s.index) {
      return `RAM block ${s.idstr} is block ${s.index} of the source and block ${l.index} here: give the memory backends (-numa node,memdev=...) in the same order`;
    }
  }
  for (const l of local.list) {
    if (!source.byName(l.idstr)) return `RAM block ${l.idstr} of this VM is not in the migration stream (the source has ${source.list.map((b) => printable(b.idstr)).join(', ')})`;
  }
  return null;
}
