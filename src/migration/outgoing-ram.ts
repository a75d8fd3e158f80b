// The source's RAM state (QEMU's RAMState, apart from the migration's
// status): one flag byte per page in native memory, which the native sender
// (native-shim/stream_sender.c) and page server walk and update themselves
// (NEED -> HAS, atomically), the dirty syncs that set NEED again, and the
// count of pages still to send, kept exact without a scan: pages marked NEED
// here, minus those the two threads took.

import type { GuestMemory } from './guest.js';
import type { RamBlocks } from '../vm/ram-blocks.js';
import type { DirtyTracker } from './dirty-tracker.js';
import { NativeBlock } from '../native/memory.js';
import { loadShim } from '../native/shim.js';
import { SenderStat, PageServerStat } from '../native/page-channel.js';
import { writeRecordHeader, RECORD_HEADER_BYTES, REC_DISCARD } from './wire.js';

// page flags (native-shim/channel.h PC_SRC_*)
const NEED = 1; // must be sent (never sent, or dirtied since)
const HAS = 2;  // the destination holds a copy (sent since the last discard)

/** the threads' counters this state reads (live, or their final copies) */
export interface TakenFigures {
  sender(): Float64Array;
  server(): Float64Array;
}

export class SourceRam {
  readonly pageSize: number;
  readonly pages: number;
  private readonly block: NativeBlock;
  private readonly flags: Uint8Array;
  /** fromReceivedBitmap's two counts (native-shim/recv_bitmap.c) */
  private readonly counts = new Float64Array(2);
  /** pages marked NEED: all at the start, then each dirty sync's */
  private marked: number;
  /** guest RAM's blocks: a DISCARD run names its block and stops at its end */
  private readonly blocks: RamBlocks;

  constructor(ram: GuestMemory, private readonly taken: TakenFigures) {
    this.pageSize = ram.pageSize;
    this.blocks = ram.blocks;
    this.pages = ram.bytes / ram.pageSize;
    this.block = new NativeBlock(this.pages);
    this.flags = new Uint8Array(this.block.buffer, 0, this.pages).fill(NEED);
    this.marked = this.pages;
  }

  /** the flags' address, for the native threads */
  get address(): number { return this.block.address; }

  /** pages still to send */
  get needed(): number {
    return this.marked - this.taken.sender()[SenderStat.Sent] - this.taken.server()[PageServerStat.Cleared];
  }

  /** A dirty sync (the sender idle): pages written since the last one need sending again; returns how many. */
  sync(tracker: DirtyTracker): number {
    const n = tracker.collect(this.flags) + this.wholeHostPages();
    this.marked += n;
    return n;
  }

  /** A huge-page block beside smaller pages moves in whole host pages (QEMU's postcopy_chunk_hostpages):
   *  a host page with a page to send is sent whole, and discarded whole. Returns the pages it marked. */
  private wholeHostPages(): number {
    const flags = this.flags;
    let marked = 0;
    for (const b of this.blocks.list) {
      if (b.hostPages === 1) continue;
      for (let h = b.firstPage, end = b.firstPage + b.pages; h < end; h += b.hostPages) {
        let need = false;
        for (let p = h; p < h + b.hostPages && !need; p++) need = (flags[p] & NEED) !== 0;
        if (!need) continue;
        for (let p = h; p < h + b.hostPages; p++) {
          if ((flags[p] & NEED) === 0) { flags[p] |= NEED; marked++; }
        }
      }
    }
    return marked;
  }

  /** DISCARD records for the pages dirtied since the destination got them
   *  (it must drop its copy), their flags back to NEED only; a run stops at
   *  its RAM block's end and names the block. */
  discards(): Buffer {
    const flags = this.flags;
    const runs: number[] = [];
    for (let p = 0; p < this.pages; p++) {
      if (flags[p] !== (NEED | HAS)) continue;
      const b = this.blocks.list[this.blocks.indexAtPage(p)];
      const end = b.firstPage + b.pages;
      let q = p;
      while (q < end && flags[q] === (NEED | HAS)) { flags[q] = NEED; q++; }
      runs.push(p, q - p, b.index);
      p = q - 1; // the next page may start the next block's run
    }
    const out = Buffer.allocUnsafe((runs.length / 3) * RECORD_HEADER_BYTES);
    for (let i = 0; i < runs.length; i += 3) {
      const b = this.blocks.list[runs[i + 2]];
      writeRecordHeader(out, (i / 3) * RECORD_HEADER_BYTES, REC_DISCARD, 0, runs[i + 1], (runs[i] - b.firstPage) * b.pageSize, b.index);
    }
    return out;
  }

  /** Postcopy recovery: the destination has exactly the pages its
   *  received-page bitmap says (bit p & 7 of byte p >> 3); every other page
   *  needs sending, again if it was sent (lost in flight, or in a run cut in
   *  half). Returns the pages to send again. No thread writes the flags
   *  meanwhile: the sender is between passes, and the page server gets no
   *  request before RESUME. */
  fromReceivedBitmap(bitmap: Uint8Array): number {
    const counts = this.counts;
    loadShim().recvBitmapApply(this.flags, this.pages, bitmap, HAS, NEED, counts); // [NEED now, of them HAS before]
    this.marked = counts[0] + this.taken.sender()[SenderStat.Sent] + this.taken.server()[PageServerStat.Cleared];
    return counts[1];
  }

  /** once no thread uses the flags any more */
  free(): void {
    this.block.free();
  }
}
