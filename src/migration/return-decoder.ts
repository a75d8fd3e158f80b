// The source's decoder of the destination's return path (wire.ts has the
// format): page requests checked against this VM's RAM blocks, a recovery's
// received-page bitmap and acknowledgement, flow-control acks, the end. A
// field a record does not use must be 0, so a garbled byte never reads as
// another record.

import { printable } from './wire-text.js';
import { RamBlocks } from '../vm/ram-blocks.js';
import { RecordDecoder } from './wire-decoder.js';
import {
  MAX_TEXT_BYTES, RECORD_HEADER_BYTES, RECV_BITMAP_END, RETURN_NAMES, RP_ACK, RP_AUTH, RP_COMPLETE, RP_ERROR, RP_RECV_BITMAP,
  RP_REQ_PAGES, RP_RESUME_ACK, RP_RUNNING, WireError, bitmapBytes,
} from './wire.js';

/** What the source does with each return-path record. */
export interface ReturnHandler {
  requestPages(offset: number, length: number): void;
  error(reason: string): void;
  running(): void;
  complete(): void;
  ack(consumed: number): void;
  /** RP_RECV_BITMAP (a recovery's return path only): the bitmap is a view valid during the call */
  recvBitmap?(bitmap: Buffer): void;
  /** RP_RESUME_ACK (a recovery's return path only) */
  resumeAck?(): void;
}

/** Source side: decodes the destination's return path. */
export class ReturnDecoder extends RecordDecoder {
  private readonly pages: number;
  private readonly blocks: RamBlocks;
  /** `recovery`: a recovery's return path (RECV_BITMAP, RESUME_ACK; room to assemble the bitmap);
   *  `blocks`: this VM's RAM blocks (default: one of all of RAM), which page requests name */
  constructor(private readonly handler: ReturnHandler, ramBytes: number, pageSize: number,
    private readonly recovery = false, blocks?: RamBlocks) {
    super(RECORD_HEADER_BYTES + Math.max(MAX_TEXT_BYTES, recovery ? bitmapBytes(ramBytes / pageSize) + RECV_BITMAP_END.length : 0));
    this.pages = ramBytes / pageSize;
    this.blocks = blocks ?? RamBlocks.single('pc.ram', ramBytes, pageSize);
  }

  protected beginRecord(buf: Buffer, pos: number): number {
    const type = buf[pos];
    const at = this.consumed;
    if (type === RP_AUTH) throw new WireError('the destination asks for a pre-shared key exchange (x-migration-psk), and this source has no x-migration-psk set');
    if (buf[pos + 1] !== 0 || (type !== RP_REQ_PAGES && (buf[pos + 2] !== 0 || buf[pos + 3] !== 0))) { // a request's bytes 2-3: its block
      throw new WireError(`return path record at byte ${at}: reserved bits set`);
    }
    const count = buf.readUInt32LE(pos + 4);
    // a field a record does not use is reserved (0): a garbled RP_ACK or RP_RUNNING must not read as RP_COMPLETE
    const name = RETURN_NAMES[type];
    if (name !== undefined && type !== RP_REQ_PAGES && type !== RP_RECV_BITMAP) { // RECV_BITMAP uses both (checked below)
      if (type !== RP_ACK && (buf.readUInt32LE(pos + 8) !== 0 || buf.readUInt32LE(pos + 12) !== 0)) {
        throw new WireError(`return path ${name} record at byte ${at}: offset set on a record that has none`);
      }
      if (type !== RP_ERROR && count !== 0) throw new WireError(`return path ${name} record at byte ${at}: count set on a record that has none`);
    }
    switch (type) {
      case RP_REQ_PAGES: case RP_RUNNING: case RP_COMPLETE: case RP_ACK: return 0;
      case RP_ERROR:
        if (count > MAX_TEXT_BYTES) throw new WireError(`return path ERROR record at byte ${at}: bad length ${count}`);
        return count;
      case RP_RESUME_ACK:
        if (!this.recovery) throw new WireError(`return path RESUME_ACK record at byte ${at} outside a recovery`);
        return 0;
      case RP_RECV_BITMAP: {
        if (!this.recovery) throw new WireError(`return path RECV_BITMAP record at byte ${at} outside a recovery`);
        const pages = RecordDecoder.offsetAt(buf, pos);
        if (pages !== this.pages || count !== bitmapBytes(pages)) {
          throw new WireError(`return path RECV_BITMAP record at byte ${at}: ${count} bytes of ${pages} pages, this VM has ${this.pages} pages (${bitmapBytes(this.pages)} bytes)`);
        }
        return count + RECV_BITMAP_END.length;
      }
      default: throw new WireError(`unknown return path record type 0x${type.toString(16)} at byte ${at}`);
    }
  }

  protected completeRecord(buf: Buffer, pos: number): void {
    const type = buf[pos];
    const count = buf.readUInt32LE(pos + 4);
    const at = this.consumed;
    switch (type) {
      case RP_REQ_PAGES: {
        const offset = RecordDecoder.offsetAt(buf, pos);
        const b = this.blocks.list[buf.readUInt16LE(pos + 2)];
        if (b === undefined || offset % b.pageSize !== 0 || count === 0 || count % b.pageSize !== 0 || offset + count > b.usedLength) {
          throw new WireError(`page request at byte ${at}: ${count} bytes at offset ${offset} of RAM block ${buf.readUInt16LE(pos + 2)} is not a page range inside guest RAM`);
        }
        this.handler.requestPages(b.offset + offset, count);
        return;
      }
      case RP_RUNNING: this.handler.running(); return;
      case RP_RESUME_ACK: this.handler.resumeAck?.(); return;
      case RP_RECV_BITMAP: {
        const p = pos + RECORD_HEADER_BYTES;
        if (!buf.subarray(p + count, p + count + RECV_BITMAP_END.length).equals(RECV_BITMAP_END)) {
          throw new WireError(`return path RECV_BITMAP record at byte ${at}: no end marker after the bitmap`);
        }
        this.handler.recvBitmap?.(buf.subarray(p, p + count));
        return;
      }
      case RP_ACK: this.handler.ack(RecordDecoder.offsetAt(buf, pos)); return;
      case RP_COMPLETE: this.done = true; this.handler.complete(); return;
      case RP_ERROR:
        this.done = true;
        this.handler.error(printable(buf.toString('utf8', pos + RECORD_HEADER_BYTES, pos + RECORD_HEADER_BYTES + count)));
        return;
    }
  }

  protected missingEnd(): string | null {
    return this.done ? null : 'return path closed by the destination';
  }
}
