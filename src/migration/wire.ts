// The migration wire format, both directions: its records, and their encoding.
// Why a module of its own: the source and the destination must agree byte for
// byte, and the decoders are the one place that sees untrusted input; keeping them
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
// The decoders (stream-decoder.ts, return-decoder.ts, on wire-decoder.ts's
// framing) never allocate per record in steady state: headers are read at
// fixed offsets from the received chunk, page payloads are handed out as
// (buffer, offset) views into that chunk, and only a page that straddles two
// chunks is assembled in a preallocated buffer.

import { printable } from './wire-text.js';
import type { RamBlocks, RamBlockSpec } from '../vm/ram-blocks.js';
import { blockListBytes, writeBlockList } from './wire-blocks.js';

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
/** bytes of HEADER's payload before its RAM block list */
export const HEADER_FIXED = 24 + TOKEN_BYTES;

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

// ---------------------------------------------------------------- record names

const STREAM_NAMES: Record<number, string> = {
  [REC_HEADER]: 'HEADER', [REC_PAGES]: 'PAGES', [REC_ZERO]: 'ZERO', [REC_DISCARD]: 'DISCARD',
  [REC_END_ROUND]: 'END_ROUND', [REC_SWITCHOVER]: 'SWITCHOVER', [REC_END]: 'END', [REC_ERROR]: 'ERROR', [REC_RESUME]: 'RESUME',
  [REC_HEARTBEAT]: 'HEARTBEAT',
};
export const RETURN_NAMES: Readonly<Record<number, string>> = {
  [RP_REQ_PAGES]: 'REQ_PAGES', [RP_ERROR]: 'ERROR', [RP_RUNNING]: 'RUNNING', [RP_COMPLETE]: 'COMPLETE', [RP_ACK]: 'ACK',
  [RP_RECV_BITMAP]: 'RECV_BITMAP', [RP_RESUME_ACK]: 'RESUME_ACK', [RP_HEARTBEAT]: 'HEARTBEAT',
};

export function recordName(type: number, returnPath = false): string {
  return (returnPath ? RETURN_NAMES : STREAM_NAMES)[type] ?? `0x${type.toString(16)}`;
}
