// The framing both decoders share (wire.ts has the format): a record's
// header and payload assembled across chunks, a streamed payload (pages)
// handed on as it arrives, the stream's offset for error messages, and a
// truncation told apart from a clean end. Kept apart from the two decoders
// so that each of them says only what its records mean.

import { RECORD_HEADER_BYTES, WireError } from './wire.js';

/** Shared framing: header assembly, payload assembly, truncation. */
export abstract class RecordDecoder {
  /** bytes consumed so far (for error messages) */
  protected consumed = 0;
  protected done = false;
  protected failed: WireError | null = null;
  private readonly asm: Buffer;
  private asmLen = 0;
  private asmWant = 0;

  constructor(asmBytes: number) {
    this.asm = Buffer.allocUnsafe(asmBytes);
  }

  /** Feeds received bytes; throws WireError on bad input (and keeps failing after).
   *  `at`: the stream offset of chunk[0], when bytes in between were
   *  consumed elsewhere (the native receiver places page records itself). */
  push(chunk: Buffer, at?: number): void {
    if (this.failed) throw this.failed;
    if (at !== undefined) this.consumed = at;
    try {
      this.pushInner(chunk);
    } catch (e) {
      this.failed = e instanceof WireError ? e : new WireError(`bad record: ${(e as Error).message}`);
      throw this.failed;
    }
  }

  /** The peer closed: throws WireError if it stopped mid-record or before its end. */
  finish(): void {
    if (this.failed) throw this.failed;
    if (this.asmLen > 0 || this.midPayload()) {
      throw (this.failed = new WireError(`truncated stream: ended inside a record at byte ${this.consumed + this.asmLen}`));
    }
    const missing = this.missingEnd();
    if (missing) throw (this.failed = new WireError(missing));
  }

  get finished(): boolean { return this.done; }
  /** inside a record (its header or payload not all here yet) */
  get midRecord(): boolean { return this.asmLen > 0 || this.midPayload(); }

  private pushInner(chunk: Buffer): void {
    const len = chunk.length;
    let pos = 0;
    while (pos < len) {
      if (this.done) throw new WireError(`unexpected data after the end of the stream at byte ${this.consumed}`);
      if (this.midPayload()) {
        const used = this.continuePayload(chunk, pos, len);
        pos += used;
        this.consumed += used;
        continue;
      }
      if (this.asmLen > 0 || len - pos < RECORD_HEADER_BYTES) {
        // assemble a header (and any payload) across chunks
        if (this.asmLen < RECORD_HEADER_BYTES) {
          const take = Math.min(RECORD_HEADER_BYTES - this.asmLen, len - pos);
          chunk.copy(this.asm, this.asmLen, pos, pos + take);
          this.asmLen += take;
          pos += take;
          if (this.asmLen < RECORD_HEADER_BYTES) return;
          const payload = this.beginRecord(this.asm, 0);
          if (payload < 0) { // streamed payload (pages) handled by continuePayload
            this.consumed += RECORD_HEADER_BYTES;
            this.asmLen = 0;
            continue;
          }
          this.asmWant = RECORD_HEADER_BYTES + payload;
        }
        const take = Math.min(this.asmWant - this.asmLen, len - pos);
        chunk.copy(this.asm, this.asmLen, pos, pos + take);
        this.asmLen += take;
        pos += take;
        if (this.asmLen < this.asmWant) return;
        const total = this.asmWant;
        this.asmLen = 0;
        this.asmWant = 0;
        this.completeRecord(this.asm, 0);
        this.consumed += total;
        continue;
      }
      // fast path: the header is whole in this chunk
      const payload = this.beginRecord(chunk, pos);
      if (payload < 0) {
        pos += RECORD_HEADER_BYTES;
        this.consumed += RECORD_HEADER_BYTES;
        continue;
      }
      const total = RECORD_HEADER_BYTES + payload;
      if (len - pos >= total) {
        this.completeRecord(chunk, pos);
        pos += total;
        this.consumed += total;
      } else {
        chunk.copy(this.asm, 0, pos, len);
        this.asmLen = len - pos;
        this.asmWant = total;
        pos = len;
      }
    }
  }

  /** Validates the header at buf[pos]; returns the payload length to assemble,
   *  or -1 when the payload is streamed through continuePayload. */
  protected abstract beginRecord(buf: Buffer, pos: number): number;
  /** Dispatches a whole record whose header is at buf[pos]. */
  protected abstract completeRecord(buf: Buffer, pos: number): void;
  protected midPayload(): boolean { return false; }
  protected continuePayload(_chunk: Buffer, _pos: number, _len: number): number { return 0; }
  protected abstract missingEnd(): string | null;

  protected static offsetAt(buf: Buffer, pos: number): number {
    const lo = buf.readUInt32LE(pos + 8);
    const hi = buf.readUInt32LE(pos + 12);
    if (hi >= 0x200000) throw new WireError(`offset out of range (high word ${hi})`);
    return hi * 0x100000000 + lo;
  }
}
