// QEMU's RAM block list (ram_list.blocks) of one VM. Each memory backend a
// NUMA node takes (-numa node,memdev=ID) is a RAMBlock: its idstr (the
// backend's id), its used_length and its page size. The blocks lie back to
// back in guest RAM's one mapping (QEMU's ram_addr_t space: the block's
// `offset`), in the order given, each aligned to its page size; guest RAM's
// pages are numbered from 0 across them (`firstPage`), in units of the
// smallest page size of all blocks (QEMU's target page: `unit`), so a block
// of huge pages beside 4 KiB blocks is `pageSize / unit` pages a host page,
// which move whole. The stream addresses a page by block and offset inside
// it, as QEMU's idstr + offset do: the block by its index in the stream
// header's list. Pure: the layout and lookups (a binary search over the few
// blocks, never a scan per page).

import { formatSize } from './size.js';

/** what a RAM block is, before it is placed */
export interface RamBlockSpec {
  /** QEMU's idstr: the memory backend's id (pc.ram for the default RAM) */
  readonly idstr: string;
  /** QEMU's used_length, bytes */
  readonly usedLength: number;
  /** the host page size of its backing: the unit of its pages, faults and placement */
  readonly pageSize: number;
}

export interface RamBlock extends RamBlockSpec {
  /** its position in the list (the stream's block index) */
  readonly index: number;
  /** its first byte in guest RAM's mapping (QEMU's block->offset) */
  readonly offset: number;
  /** its first page among guest RAM's pages (in units) */
  readonly firstPage: number;
  /** usedLength / unit */
  readonly pages: number;
  /** pages (units) per host page: 1, or a huge page's beside smaller pages */
  readonly hostPages: number;
}

/** the most RAM blocks a VM has (the stream's block index is 16 bits; native-shim PC_MAX_BLOCKS) */
export const MAX_RAM_BLOCKS = 64;
/** QEMU's idstr holds 256 bytes with its NUL */
export const MAX_IDSTR_BYTES = 255;

export class RamBlocks {
  readonly list: readonly RamBlock[];
  /** bytes of guest RAM's mapping: the end of the last block */
  readonly bytes: number;
  readonly pages: number;
  /** the smallest page size of the blocks */
  readonly minPageSize: number;
  /** the largest (guest RAM's mapping is aligned to it) */
  readonly maxPageSize: number;
  /** the unit of guest pages: minPageSize (QEMU's target page) */
  readonly unit: number;

  private constructor(list: RamBlock[], unit: number) {
    this.list = list;
    const last = list[list.length - 1];
    this.bytes = last.offset + last.usedLength;
    this.pages = last.firstPage + last.pages;
    this.unit = unit;
    this.minPageSize = unit;
    this.maxPageSize = Math.max(...list.map((b) => b.pageSize));
  }

  /** the blocks of `specs`, in that order, back to back; throws RangeError naming a bad one */
  static layout(specs: readonly RamBlockSpec[]): RamBlocks {
    if (specs.length === 0 || specs.length > MAX_RAM_BLOCKS) throw new RangeError(`${specs.length} RAM blocks: give 1 to ${MAX_RAM_BLOCKS}`);
    const list: RamBlock[] = [];
    const names = new Set<string>();
    const unit = Math.min(...specs.map((s) => s.pageSize));
    let offset = 0;
    for (const [index, s] of specs.entries()) {
      if (s.idstr === '' || Buffer.byteLength(s.idstr) > MAX_IDSTR_BYTES) throw new RangeError(`RAM block name '${s.idstr}' is empty or longer than ${MAX_IDSTR_BYTES} bytes`);
      if (names.has(s.idstr)) throw new RangeError(`RAM block '${s.idstr}' given twice`);
      names.add(s.idstr);
      const ps = s.pageSize;
      if (!(Number.isSafeInteger(ps) && ps >= 512 && (ps & (ps - 1)) === 0)) throw new RangeError(`RAM block ${s.idstr}: bad page size ${ps}`);
      if (!(Number.isSafeInteger(s.usedLength) && s.usedLength > 0 && s.usedLength % ps === 0)) {
        throw new RangeError(`RAM block ${s.idstr}: size ${s.usedLength} is not a positive multiple of its page size ${ps}`);
      }
      if (offset % ps !== 0) { // no holes between blocks: every page of the mapping is a block's
        throw new RangeError(`RAM block ${s.idstr} has pages of ${ps} bytes, and the blocks before it add up to 0x${offset.toString(16)} bytes, `
          + `no multiple of that: give them sizes that are multiples of ${formatSize(ps)}, or give this block first`);
      }
      list.push({ idstr: s.idstr, usedLength: s.usedLength, pageSize: ps, index, offset, firstPage: offset / unit, pages: s.usedLength / unit, hostPages: ps / unit });
      offset += s.usedLength;
    }
    return new RamBlocks(list, unit);
  }

  /** one block of all of guest RAM (the default: pc.ram) */
  static single(idstr: string, bytes: number, pageSize: number): RamBlocks {
    return RamBlocks.layout([{ idstr, usedLength: bytes, pageSize }]);
  }

  get count(): number { return this.list.length; }

  byName(idstr: string): RamBlock | undefined {
    return this.list.find((b) => b.idstr === idstr);
  }

  /** the index of the block holding guest page `page` */
  indexAtPage(page: number): number { return this.#last((b) => b.firstPage <= page); }

  /** the index of the block holding byte `offset` of guest RAM's mapping */
  indexAtOffset(offset: number): number { return this.#last((b) => b.offset <= offset); }

  /** the last block for which `before` holds (it holds for a prefix of the list): a binary search */
  #last(before: (b: RamBlock) => boolean): number {
    const l = this.list;
    let lo = 0;
    let hi = l.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (before(l[mid])) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** the byte offset in guest RAM's mapping of `count` pages (units) at `offset` inside block `index`, or -1
   *  when there is no such block, the pages are not whole host pages of it or do not all lie inside it */
  fromBlock(index: number, offset: number, count: number): number {
    const b = this.list[index];
    if (b === undefined || offset % b.pageSize !== 0 || count < 1 || count % b.hostPages !== 0 || offset + count * this.unit > b.usedLength) return -1;
    return b.offset + offset;
  }
}
