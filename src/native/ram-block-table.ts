// The RAM block table the native page-path threads take (native-shim/channel.h
// struct pc_ramblock: offset, first page, pages, page size, u64 each), in
// koffi.alloc'ed memory: every thread copies it when it starts, so the
// table lives as long as guest RAM and is never read on a hot path from here.
import { NativeBlock } from './memory.js';

/** bytes of one struct pc_ramblock */
export const RAM_BLOCK_ENTRY_BYTES = 32;

export interface NativeRamBlock {
  offset: number;
  firstPage: number;
  pages: number;
  pageSize: number;
}

export class RamBlockTable {
  readonly #mem: NativeBlock;
  readonly count: number;

  constructor(blocks: readonly NativeRamBlock[]) {
    this.count = blocks.length;
    this.#mem = new NativeBlock(blocks.length * RAM_BLOCK_ENTRY_BYTES);
    const u64 = new BigUint64Array(this.#mem.buffer, 0, blocks.length * 4);
    blocks.forEach((b, i) => {
      u64.set([BigInt(b.offset), BigInt(b.firstPage), BigInt(b.pages), BigInt(b.pageSize)], i * 4);
    });
  }

  /** the table's native address (what the thread start functions take, with count) */
  get address(): number { return this.#mem.address; }

  /** once guest RAM is gone (no thread copies it any more). Idempotent. */
  free(): void { this.#mem.free(); }
}
