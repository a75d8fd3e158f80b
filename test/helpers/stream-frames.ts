// Record framing of the four byte streams of a migration (wire.ts), for test
// tools that watch a migration's bytes go by and must say what a byte offset
// is: the HEADER, a record header, a page payload, the switchover... Only the
// framing (how long each record is), never the meaning: the streams watched
// come from a real source and destination, so they are well formed up to any
// mutation the watcher makes itself (it stops there).
import {
  RECORD_HEADER_BYTES, REC_HEADER, REC_PAGES, REC_SWITCHOVER, REC_ERROR, RP_ERROR, recordName,
} from '../../src/migration/wire.js';

/** main stream (source to destination), return path, urgent channel both ways */
export type Direction = 'main' | 'return' | 'urgent' | 'requests';
export const DIRECTIONS: readonly Direction[] = ['main', 'return', 'urgent', 'requests'];

export interface Frame {
  type: number;
  /** stream offset of the record's first byte */
  start: number;
  /** header + payload bytes */
  length: number;
  flags: number;
  count: number;
  /** the record's offset field (guest RAM bytes for page records) */
  offset: number;
}

/** the name of a record on `dir` (recordName: a return-path or a stream type) */
export function frameName(dir: Direction, type: number): string {
  return recordName(type, dir === 'return' || dir === 'requests');
}

/** Splits one direction's bytes into records as they come. */
export class FrameTracker {
  private pos = 0;
  private readonly head = Buffer.alloc(RECORD_HEADER_BYTES);
  private headLen = 0;
  /** payload bytes of the current record still to come */
  private skip = 0;

  constructor(private readonly dir: Direction, private readonly pageSize: number) {}

  /** bytes seen so far */
  get offset(): number { return this.pos; }
  /** bytes of a record header seen so far whose rest has not come yet */
  get partialHeader(): number { return this.headLen; }

  /** Feeds the next bytes; calls `frame` for each record whose header completes in them. */
  feed(chunk: Buffer, frame: (f: Frame) => void): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        this.pos += n;
        continue;
      }
      const n = Math.min(RECORD_HEADER_BYTES - this.headLen, chunk.length - i);
      chunk.copy(this.head, this.headLen, i, i + n);
      this.headLen += n;
      i += n;
      this.pos += n;
      if (this.headLen < RECORD_HEADER_BYTES) return;
      this.headLen = 0;
      const h = this.head;
      const type = h[0];
      const count = h.readUInt32LE(4);
      const f: Frame = {
        type, start: this.pos - RECORD_HEADER_BYTES, length: RECORD_HEADER_BYTES + this.payload(type, count),
        flags: h[1], count, offset: h.readUInt32LE(8) + h.readUInt32LE(12) * 0x100000000,
      };
      this.skip = f.length - RECORD_HEADER_BYTES;
      frame(f);
    }
  }

  private payload(type: number, count: number): number {
    if (this.dir === 'return' || this.dir === 'requests') return type === RP_ERROR ? count : 0;
    if (type === REC_PAGES) return count * this.pageSize;
    return type === REC_HEADER || type === REC_SWITCHOVER || type === REC_ERROR ? count : 0;
  }
}
