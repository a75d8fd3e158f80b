// The migration wire format, both directions, and an incremental decoder.
// Why a module of its own: the source and the destination must agree byte for
// byte, and the decoder is the one place that sees untrusted input; keeping it
// pure (no sockets, no RAM) lets it be tested at every byte boundary.
//
// Every record starts with a fixed 16-byte header (little endian):
//   u8 type | u8 flags | u16 block | u32 count | u32 offset_lo | u32 offset_hi
// `count` is a page count for page records, a byte length for records with a
// variable payload, and a round number for END_ROUND. A page record (PAGES,
// ZERO, DISCARD, REQ_PAGES) addresses its pages as QEMU's RAMBlock idstr +
// offset do: `block` is the RAM block's index in the HEADER's list, the
// offset is in bytes inside that block (page aligned), exact up to 2^53; a
// run never crosses a block's end. Every other record has block 0. The
// handlers below get offsets in guest RAM's one mapping (src/vm/ram-blocks.ts).
//
// Stream (source -> destination):
//   HEADER      count = payload bytes; flags bit 0 = urgent channel; payload: magic u32, version u32,
//               page size u32, vCPUs u32, RAM bytes (lo u32, hi u32), token (16 bytes), the RAM
//               block list (wire-blocks.ts: u16 count, then each block's u8 name length, name,
//               u32 page size, u64 used_length), workload (utf8).
//               The token is random per migration: the urgent channel's HEADER must carry the
//               main stream's, so a connection from anyone else is refused (incoming-urgent.ts)
//   PAGES       offset, count pages (1..MAX_RUN_PAGES), payload = count * page size
//   ZERO        offset, count pages that are all zero (no payload)
//   DISCARD     offset, count pages the destination must drop (dirtied since sent)
//   END_ROUND   count = round number (one precopy pass done)
//   SWITCHOVER  flags bit 0 = postcopy; payload = vCPUs * VCPU_STATE_BYTES
//   END         every page sent; nothing follows
//   ERROR       count = payload bytes; payload: utf8 reason (the source gave up)
//   RESUME      postcopy recovery: the source took the destination's RECV_BITMAP
//               and resumes (QEMU's POSTCOPY_RESUME); pages follow
// A recovery's main stream (postcopy-paused, migrate -r) starts with a HEADER
// flagged RESUME carrying the paused migration's token, then RESUME, pages, END.
// A migration uses two connections: the main stream above, and an urgent
// channel (QEMU's postcopy-preempt idea) that starts with its own HEADER
// (flag URGENT_CHANNEL). In postcopy it belongs to two native threads
// (native-shim/channel.h): the destination's fault thread sends REQ_PAGES on
// it, one per missing page a thread faulted on, and the source's page server
// answers each with one PAGES or ZERO record, so a requested page never
// queues behind background pages nor waits for an event loop.
// Return path (destination -> source, on the main connection):
//   RP_ERROR    count = payload bytes; payload: utf8 reason
//   RP_RUNNING  the destination took the vCPU state (switchover done)
//   RP_COMPLETE every page is in place; the destination completed
//   RP_RECV_BITMAP  recovery: offset = guest pages, count = bitmap bytes; payload: the
//               received-page bitmap (bit p & 7 of byte p >> 3), then RECV_BITMAP_END
//   RP_RESUME_ACK   recovery: the destination took RESUME
//   RP_ACK      offset = bytes of the main stream consumed so far (flow control:
//               in postcopy the source keeps a bounded window of background
//               data in flight, so the destination's queue stays short)
// Pre-shared key exchange (x-migration-psk, channel-auth.ts), before any of the
// above on every connection of a side that has a key:
//   AUTH        source -> destination: flags = step (1 its nonce, 2 its proof)
//   RP_AUTH     destination -> source: flags = step (1 its nonce, 2 its proof)
//               count = 40; payload: magic u32, version u32, 32 bytes (nonce or HMAC)
// A side without a key reads the other's first AUTH record as a record it
// does not expect, and says so naming the key (not a hang: each side's first
// message goes out at connect).
// Page requests (destination -> source, on the urgent channel):
//   REQ_PAGES   offset, count = length in bytes (QEMU's "req pages"); a
//               REQ_PAGES on the main connection is a protocol error
// Heartbeats on the urgent channel in postcopy (native-shim/channel.h): HEARTBEAT
// from the page server, RP_HEARTBEAT from the fault thread, bare records.
//
// The decoder never allocates per record in steady state: headers are read at
// fixed offsets from the received chunk, page payloads are handed out as
// (buffer, offset) views into that chunk, and only a page that straddles two
// chunks is assembled in a preallocated buffer.

import { printable } from './wire-text.js';
import { RamBlocks, type RamBlockSpec } from '../vm/ram-blocks.js';
import { BlockListError, blockListBytes, readBlockList, writeBlockList } from './wire-blocks.js';

export const WIRE_MAGIC = 0x59504350; // "PCPY" little endian
/** 2: the HEADER carries the migration's token; 3: its RAM block list, and page records name their block */
export const WIRE_VERSION = 3;
export const RECORD_HEADER_BYTES = 16;
/** most pages in one PAGES record (1 MiB of 4 KiB pages) */
export const MAX_RUN_PAGES = 256;
/** most bytes of page data in one PAGES record, beyond one page (native-shim/channel.h: PC_MAX_RUN_BYTES) */
export const MAX_RUN_BYTES = 1 << 20;
/** the largest page size a header may name (1 GiB huge pages); the VM then refuses any other than its own */
export const MAX_PAGE_SIZE = 1 << 30;

/** most pages in one PAGES record of `pageSize`-byte pages: 256 of 4 KiB, one of a huge page */
export function maxRunPages(pageSize: number): number {
  return Math.max(1, Math.min(MAX_RUN_PAGES, Math.floor(MAX_RUN_BYTES / pageSize)));
}
/** largest variable payload (header, switchover, error text) */
export const MAX_VAR_PAYLOAD = 256 * 1024;
/** bytes of one vCPU's workload state inside SWITCHOVER */
export const VCPU_STATE_BYTES = 64;
/** bytes of the per-migration token in HEADER */
export const TOKEN_BYTES = 16;
const HEADER_FIXED = 24 + TOKEN_BYTES;

export const REC_HEADER = 0x01;
export const REC_PAGES = 0x02;
export const REC_ZERO = 0x03;
export const REC_DISCARD = 0x04;
export const REC_END_ROUND = 0x05;
export const REC_SWITCHOVER = 0x06;
export const REC_END = 0x07;
export const REC_ERROR = 0x08;
export const REC_RESUME = 0x09;
export const REC_HEARTBEAT = 0x0a;
export const REC_AUTH = 0x0b;
export const RP_REQ_PAGES = 0x41;
export const RP_ERROR = 0x42;
export const RP_RUNNING = 0x43;
export const RP_COMPLETE = 0x44;
export const RP_ACK = 0x45;
export const RP_RECV_BITMAP = 0x46;
export const RP_RESUME_ACK = 0x47;
export const RP_HEARTBEAT = 0x48;
/** after a RECV_BITMAP's bitmap (QEMU's RAMBLOCK_RECV_BITMAP_ENDING) */
export const RECV_BITMAP_END = Buffer.from('PCPYBMAP', 'latin1');
export const RP_AUTH = 0x49;

export const SWITCHOVER_POSTCOPY = 1;
export const HEADER_URGENT_CHANNEL = 1;
/** main-stream HEADER flag: the source has postcopy-ram on (QEMU's postcopy
 *  advise): the destination gets ready for postcopy (opens its userfaultfd)
 *  before any page moves, so a destination that cannot do postcopy fails the
 *  migration while the source's guest still runs there */
export const HEADER_POSTCOPY = 2;
/** main-stream HEADER flag: a postcopy recovery's stream (migrate -r), with the paused migration's token */
export const HEADER_RESUME = 4;
/** longest text payload (ERROR, RP_ERROR), in bytes */
export const MAX_TEXT_BYTES = 4096;

export { printable };

/** Malformed, truncated or unexpected input; the message says what and where. */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

export interface StreamHeader {
  version: number;
  pageSize: number;
  vcpus: number;
  ramBytes: number;
  workload: string;
  /** the source may switch to postcopy (HEADER_POSTCOPY) */
  postcopy: boolean;
  /** the migration's token (TOKEN_BYTES, a copy): the urgent channel echoes the main stream's */
  token: Buffer;
  /** a postcopy recovery's stream (HEADER_RESUME) */
  resume?: boolean;
  /** the source's RAM blocks, laid out as the source has them (wire-blocks.ts) */
  blocks: RamBlocks;
}

// ---------------------------------------------------------------- encoding

/** Writes a record header at buf[pos..pos+16); a page record's `offset` is inside RAM block `block`. */
export function writeRecordHeader(buf: Buffer, pos: number, type: number, flags: number, count: number, offset: number, block = 0): void {
  buf[pos] = type;
  buf[pos + 1] = flags;
  buf.writeUInt16LE(block, pos + 2);
  buf.writeUInt32LE(count >>> 0, pos + 4);
  buf.writeUInt32LE(offset % 0x100000000, pos + 8);
  buf.writeUInt32LE(Math.floor(offset / 0x100000000), pos + 12);
}

/** The HEADER record. `blocks`: the RAM block list (default: one block, pc.ram, of all of RAM). */
export function encodeHeader(
  h: Omit<StreamHeader, 'version' | 'postcopy' | 'token' | 'blocks'> & {
    version?: number; urgent?: boolean; postcopy?: boolean; token?: Buffer; blocks?: readonly RamBlockSpec[];
  },
): Buffer {
  const wl = Buffer.from(h.workload, 'utf8');
  const blocks = h.blocks ?? [{ idstr: 'pc.ram', usedLength: h.ramBytes, pageSize: h.pageSize }];
  const list = blockListBytes(blocks);
  const out = Buffer.alloc(RECORD_HEADER_BYTES + HEADER_FIXED + list + wl.length);
  const flags = h.urgent ? HEADER_URGENT_CHANNEL : h.resume ? HEADER_RESUME : h.postcopy ? HEADER_POSTCOPY : 0;
  writeRecordHeader(out, 0, REC_HEADER, flags, HEADER_FIXED + list + wl.length, 0);
  const p = RECORD_HEADER_BYTES;
  out.writeUInt32LE(WIRE_MAGIC, p);
  out.writeUInt32LE(h.version ?? WIRE_VERSION, p + 4);
  out.writeUInt32LE(h.pageSize, p + 8);
  out.writeUInt32LE(h.vcpus, p + 12);
  out.writeUInt32LE(h.ramBytes % 0x100000000, p + 16);
  out.writeUInt32LE(Math.floor(h.ramBytes / 0x100000000), p + 20);
  if (h.token) {
    if (h.token.length !== TOKEN_BYTES) throw new Error(`a migration token has ${TOKEN_BYTES} bytes, not ${h.token.length}`);
    h.token.copy(out, p + 24);
  }
  wl.copy(out, writeBlockList(out, p + HEADER_FIXED, blocks));
  return out;
}

/** A record whose payload is utf8 text (REC_ERROR, RP_ERROR), cut to
 *  MAX_TEXT_BYTES on a character boundary. */
export function encodeText(type: number, text: string): Buffer {
  let t = Buffer.from(text, 'utf8');
  if (t.length > MAX_TEXT_BYTES) {
    let end = MAX_TEXT_BYTES;
    while (end > 0 && (t[end] & 0xc0) === 0x80) end--; // not inside a UTF-8 sequence
    t = t.subarray(0, end);
  }
  const out = Buffer.alloc(RECORD_HEADER_BYTES + t.length);
  writeRecordHeader(out, 0, type, 0, t.length, 0);
  t.copy(out, RECORD_HEADER_BYTES);
  return out;
}

/** A record with neither payload nor offset (END, RP_RUNNING, RP_COMPLETE, END_ROUND). */
export function encodeBare(type: number, count = 0): Buffer {
  const out = Buffer.alloc(RECORD_HEADER_BYTES);
  writeRecordHeader(out, 0, type, 0, count, 0);
  return out;
}

/** bytes of the received-page bitmap of `pages` pages */
export function bitmapBytes(pages: number): number { return Math.ceil(pages / 8); }

/** RP_RECV_BITMAP: `bitmap` (bitmapBytes(pages)) of `pages` pages, and its end marker */
export function encodeRecvBitmap(pages: number, bitmap: Uint8Array): Buffer {
  const n = bitmapBytes(pages);
  if (bitmap.length !== n) throw new Error(`a bitmap of ${pages} pages has ${n} bytes, not ${bitmap.length}`);
  const out = Buffer.alloc(RECORD_HEADER_BYTES + n + RECV_BITMAP_END.length);
  writeRecordHeader(out, 0, RP_RECV_BITMAP, 0, n, pages);
  out.set(bitmap, RECORD_HEADER_BYTES);
  RECV_BITMAP_END.copy(out, RECORD_HEADER_BYTES + n);
  return out;
}

/** SWITCHOVER with `states` already encoded (vCPUs * VCPU_STATE_BYTES). */
export function encodeSwitchover(postcopy: boolean, states: Buffer): Buffer {
  const out = Buffer.alloc(RECORD_HEADER_BYTES + states.length);
  writeRecordHeader(out, 0, REC_SWITCHOVER, postcopy ? SWITCHOVER_POSTCOPY : 0, states.length, 0);
  states.copy(out, RECORD_HEADER_BYTES);
  return out;
}

// ---------------------------------------------------------------- decoding

/** What the destination does with each stream record. Page payloads are
 *  views valid only during the call. */
export interface StreamHandler {
  header(h: StreamHeader): void;
  pages(offset: number, count: number, buf: Buffer, pos: number): void;
  zero(offset: number, count: number): void;
  discard(offset: number, count: number): void;
  endRound(round: number): void;
  switchover(postcopy: boolean, states: Buffer, pos: number, len: number): void;
  end(): void;
  /** the source gave up: its reason (printable()) */
  error(reason: string): void;
  /** RESUME (a recovery's stream only) */
  resume?(): void;
}

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

const STREAM_NAMES: Record<number, string> = {
  [REC_HEADER]: 'HEADER', [REC_PAGES]: 'PAGES', [REC_ZERO]: 'ZERO', [REC_DISCARD]: 'DISCARD',
  [REC_END_ROUND]: 'END_ROUND', [REC_SWITCHOVER]: 'SWITCHOVER', [REC_END]: 'END', [REC_ERROR]: 'ERROR', [REC_RESUME]: 'RESUME',
  [REC_HEARTBEAT]: 'HEARTBEAT',
};
const RETURN_NAMES: Record<number, string> = {
  [RP_REQ_PAGES]: 'REQ_PAGES', [RP_ERROR]: 'ERROR', [RP_RUNNING]: 'RUNNING', [RP_COMPLETE]: 'COMPLETE', [RP_ACK]: 'ACK',
  [RP_RECV_BITMAP]: 'RECV_BITMAP', [RP_RESUME_ACK]: 'RESUME_ACK', [RP_HEARTBEAT]: 'HEARTBEAT',
};

/** Shared framing: header assembly, payload assembly, truncation. */
abstract class RecordDecoder {
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

/** Destination side: decodes the source's stream. */
export class StreamDecoder extends RecordDecoder {
  private header: StreamHeader | null = null;
  private pageSize = 0;
  /** the header's RAM blocks: a page record's (block, offset) -> offset in guest RAM */
  private blocks: RamBlocks | null = null;
  private vcpus = 0;
  private maxRun = MAX_RUN_PAGES;
  private switched = false;
  /** a recovery's stream: RESUME comes once, before any page */
  private resuming = false;
  private resumed = false;
  // a PAGES record in progress
  private runOffset = 0;
  private runLeft = 0;
  private page: Buffer;
  private pageHave = 0;

  /** `urgent`: decode the urgent channel (its header has the flag, then only PAGES/ZERO, no END) */
  constructor(private readonly handler: StreamHandler, maxPageSize = 65536, private readonly urgent = false) {
    super(RECORD_HEADER_BYTES + MAX_VAR_PAYLOAD);
    this.page = Buffer.allocUnsafe(maxPageSize);
  }

  get streamHeader(): StreamHeader | null { return this.header; }

  protected override midPayload(): boolean { return this.runLeft > 0; }

  protected beginRecord(buf: Buffer, pos: number): number {
    const type = buf[pos];
    const at = this.consumed;
    if (!this.header && type === REC_AUTH) {
      throw new WireError('the source opens with a pre-shared key exchange (x-migration-psk), and this destination has no x-migration-psk set');
    }
    if (!this.header && type !== REC_HEADER) {
      throw new WireError(`stream does not start with a header record (first byte 0x${type.toString(16)}): not a postcopy migration stream`);
    }
    const paged = this.header !== null && (type === REC_PAGES || type === REC_ZERO || type === REC_DISCARD); // bytes 2-3: its block
    if ((!paged && (buf[pos + 2] !== 0 || buf[pos + 3] !== 0)) || (buf[pos + 1] !== 0 && type !== REC_SWITCHOVER && type !== REC_HEADER)) {
      throw new WireError(`record at byte ${at}: reserved bits set (not a migration stream?)`);
    }
    const count = buf.readUInt32LE(pos + 4);
    if (type !== REC_PAGES && type !== REC_ZERO && type !== REC_DISCARD && (buf.readUInt32LE(pos + 8) !== 0 || buf.readUInt32LE(pos + 12) !== 0)) {
      throw new WireError(`record at byte ${at}: offset set on a record that has none`);
    }
    if (type === REC_END && count !== 0) throw new WireError(`END record at byte ${at}: count set on a record that has none`);
    if (!this.header) {
      if (count < HEADER_FIXED || count > MAX_VAR_PAYLOAD) throw new WireError(`header record has a bad length ${count}`);
      const flags = buf[pos + 1];
      if (this.urgent ? flags !== HEADER_URGENT_CHANNEL : flags !== 0 && flags !== HEADER_POSTCOPY && flags !== HEADER_RESUME) {
        throw new WireError(this.urgent ? 'the urgent channel did not start with an urgent-channel header' : 'header flags: an urgent channel where the main stream was expected');
      }
      return count;
    }
    if (this.urgent && type !== REC_PAGES && type !== REC_ZERO) {
      throw new WireError(`record type 0x${type.toString(16)} at byte ${at} on the urgent channel (only PAGES and ZERO belong there)`);
    }
    if (this.resuming && !this.resumed && type !== REC_RESUME && type !== REC_ERROR) {
      throw new WireError(`${recordName(type)} record at byte ${at} before RESUME on a recovery's stream`);
    }
    switch (type) {
      case REC_PAGES: {
        // a huge-page block beside smaller pages: one host page a record
        const most = Math.max(this.maxRun, this.blocks!.list[buf.readUInt16LE(pos + 2)]?.hostPages ?? 0);
        if (count < 1 || count > most) throw new WireError(`PAGES record at byte ${at}: bad page count ${count} (1..${most})`);
        const offset = this.checkRange('PAGES', buf, pos, count, at);
        this.runOffset = offset;
        this.runLeft = count;
        this.pageHave = 0;
        return -1;
      }
      case REC_ZERO: case REC_DISCARD: case REC_END_ROUND: case REC_END: return 0;
      case REC_RESUME:
        if (!this.resuming || this.resumed) throw new WireError(`RESUME record at byte ${at} ${this.resuming ? 'twice' : 'outside a recovery\'s stream'}`);
        if (count !== 0) throw new WireError(`RESUME record at byte ${at}: count ${count} set on a record that has none`);
        return 0;
      case REC_SWITCHOVER:
        if ((buf[pos + 1] & ~SWITCHOVER_POSTCOPY) !== 0) {
          throw new WireError(`SWITCHOVER record at byte ${at}: reserved flag bits set (flags 0x${buf[pos + 1].toString(16)}, only 0x${SWITCHOVER_POSTCOPY} is defined)`);
        }
        if (count !== this.vcpus * VCPU_STATE_BYTES) {
          throw new WireError(`SWITCHOVER record at byte ${at}: ${count} bytes of vCPU state, expected ${this.vcpus * VCPU_STATE_BYTES} for ${this.vcpus} vCPUs`);
        }
        return count;
      case REC_ERROR:
        if (count > MAX_VAR_PAYLOAD) throw new WireError(`ERROR record at byte ${at}: bad length ${count}`);
        return count;
      case REC_HEADER: throw new WireError(`second header record at byte ${at}`);
      default: throw new WireError(`unknown record type 0x${type.toString(16)} at byte ${at}`);
    }
  }

  /** the offset in guest RAM of the page record at buf[pos] (its block and the offset inside it), checked */
  private checkRange(name: string, buf: Buffer, pos: number, count: number, at: number): number {
    const offset = RecordDecoder.offsetAt(buf, pos);
    return blockRange(this.blocks!, buf.readUInt16LE(pos + 2), offset, count, name, at);
  }

  protected completeRecord(buf: Buffer, pos: number): void {
    const type = buf[pos];
    const count = buf.readUInt32LE(pos + 4);
    const at = this.consumed;
    const p = pos + RECORD_HEADER_BYTES;
    if (!this.header) {
      const magic = buf.readUInt32LE(p);
      if (magic !== WIRE_MAGIC) throw new WireError(`bad magic 0x${magic.toString(16)}: not a postcopy migration stream`);
      const version = buf.readUInt32LE(p + 4);
      if (version !== WIRE_VERSION) throw new WireError(`unsupported stream version ${version} (this side speaks version ${WIRE_VERSION})`);
      const pageSize = buf.readUInt32LE(p + 8);
      if (pageSize < 512 || pageSize > MAX_PAGE_SIZE || (pageSize & (pageSize - 1)) !== 0) throw new WireError(`bad page size ${pageSize} in header`);
      const vcpus = buf.readUInt32LE(p + 12);
      if (vcpus < 1 || vcpus > 4096) throw new WireError(`bad vCPU count ${vcpus} in header`);
      const hi = buf.readUInt32LE(p + 20);
      if (hi >= 0x200000) throw new WireError('RAM size in header out of range');
      const ramBytes = hi * 0x100000000 + buf.readUInt32LE(p + 16);
      if (ramBytes === 0 || ramBytes % pageSize !== 0) throw new WireError(`bad RAM size ${ramBytes} in header`);
      let list: ReturnType<typeof readBlockList>;
      try {
        list = readBlockList(buf, p + HEADER_FIXED, p + count, ramBytes, pageSize);
      } catch (e) {
        throw new WireError(e instanceof BlockListError ? e.message : String(e));
      }
      const workload = buf.toString('utf8', list.end, p + count);
      const token = Buffer.from(buf.subarray(p + 24, p + 24 + TOKEN_BYTES));
      const resume = buf[pos + 1] === HEADER_RESUME;
      this.header = { version, pageSize, vcpus, ramBytes, workload, postcopy: buf[pos + 1] === HEADER_POSTCOPY || resume, token, resume, blocks: list.blocks };
      // a recovery's stream continues a postcopy: past the switchover, its pages after RESUME
      this.switched = this.resuming = resume;
      this.pageSize = pageSize;
      this.blocks = list.blocks;
      this.vcpus = vcpus;
      this.maxRun = maxRunPages(pageSize);
      this.handler.header(this.header); // refuses a page size other than this VM's
      if (pageSize > this.page.length) this.page = Buffer.allocUnsafe(pageSize); // once, for a page straddling two chunks
      return;
    }
    switch (type) {
      case REC_ZERO: this.handler.zero(this.checkRange('ZERO', buf, pos, count, at), count); return;
      case REC_DISCARD:
        if (this.switched) throw new WireError(`DISCARD record at byte ${at} after the switchover`);
        this.handler.discard(this.checkRange('DISCARD', buf, pos, count, at), count);
        return;
      case REC_END_ROUND: this.handler.endRound(count); return;
      case REC_RESUME:
        this.resumed = true;
        if (!this.handler.resume) throw new WireError(`RESUME record at byte ${at}: this side does not take a recovery`);
        this.handler.resume();
        return;
      case REC_SWITCHOVER:
        if (this.switched) throw new WireError(`second SWITCHOVER record at byte ${at}`);
        this.switched = true;
        this.handler.switchover((buf[pos + 1] & SWITCHOVER_POSTCOPY) !== 0, buf, p, count);
        return;
      case REC_END:
        if (!this.switched) throw new WireError(`END record at byte ${at} before the switchover`);
        this.done = true;
        this.handler.end();
        return;
      case REC_ERROR:
        this.done = true;
        this.handler.error(printable(buf.toString('utf8', p, p + count)));
        return;
    }
  }

  protected override continuePayload(chunk: Buffer, pos: number, len: number): number {
    const ps = this.pageSize;
    let used = 0;
    if (this.pageHave > 0) { // finish a straddling page
      const take = Math.min(ps - this.pageHave, len - pos);
      chunk.copy(this.page, this.pageHave, pos, pos + take);
      this.pageHave += take;
      used = take;
      if (this.pageHave < ps) return used;
      this.pageHave = 0;
      this.deliver(1, this.page, 0);
      if (this.runLeft === 0) return used;
    }
    const whole = Math.min(Math.floor((len - pos - used) / ps), this.runLeft);
    if (whole > 0) {
      this.deliver(whole, chunk, pos + used);
      used += whole * ps;
    }
    if (this.runLeft > 0 && pos + used < len) { // start of a straddling page
      const take = len - pos - used; // < ps
      chunk.copy(this.page, 0, pos + used, len);
      this.pageHave = take;
      used += take;
    }
    return used;
  }

  private deliver(n: number, buf: Buffer, pos: number): void {
    const off = this.runOffset;
    this.runOffset += n * this.pageSize;
    this.runLeft -= n;
    this.handler.pages(off, n, buf, pos);
  }

  protected missingEnd(): string | null {
    if (!this.header) return 'stream closed before its header';
    if (this.urgent) return null; // the urgent channel has no end record
    return this.done ? null : 'stream closed before its end (truncated migration stream)';
  }
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

/** the offset in guest RAM of `count` pages at `offset` inside block `index` of `blocks`; throws WireError
 *  naming the record (`name` at stream byte `at`) when there is no such block or the pages do not lie inside it */
function blockRange(blocks: RamBlocks, index: number, offset: number, count: number, name: string, at: number): number {
  const inRam = blocks.fromBlock(index, offset, count);
  if (inRam >= 0) return inRam;
  const what = `${name} record at byte ${at}`;
  const b = blocks.list[index];
  if (b === undefined) throw new WireError(`${what}: RAM block ${index}, but the header lists ${blocks.count}`);
  if (offset % b.pageSize !== 0) throw new WireError(`${what}: offset ${offset} is not page aligned`);
  if (count % b.hostPages !== 0) throw new WireError(`${what}: ${count} pages are not whole host pages of RAM block ${b.idstr} (${b.hostPages} pages each)`);
  const where = blocks.count === 1 ? 'guest RAM' : `RAM block ${b.idstr}`;
  throw new WireError(`${what}: ${count} pages at offset ${offset} lie outside ${where} (${b.usedLength} bytes)`);
}

export function recordName(type: number, returnPath = false): string {
  return (returnPath ? RETURN_NAMES : STREAM_NAMES)[type] ?? `0x${type.toString(16)}`;
}
