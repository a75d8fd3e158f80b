// The destination's decoder of the source's records: the main stream, a
// recovery's stream and the urgent channel (wire.ts has the format). It is
// the one place that sees the source's bytes before they touch guest RAM, so
// every field is checked here: record types, reserved bits, counts, block
// ranges, the order of HEADER, RESUME, SWITCHOVER and END.

import { printable } from './wire-text.js';
import type { RamBlocks } from '../vm/ram-blocks.js';
import { BlockListError, readBlockList } from './wire-blocks.js';
import { RecordDecoder } from './wire-decoder.js';
import {
  HEADER_FIXED, HEADER_POSTCOPY, HEADER_RESUME, HEADER_URGENT_CHANNEL, MAX_PAGE_SIZE, MAX_RUN_PAGES, MAX_VAR_PAYLOAD,
  RECORD_HEADER_BYTES, REC_AUTH, REC_DISCARD, REC_END, REC_END_ROUND, REC_ERROR, REC_HEADER, REC_PAGES, REC_RESUME,
  REC_SWITCHOVER, REC_ZERO, SWITCHOVER_POSTCOPY, TOKEN_BYTES, VCPU_STATE_BYTES, WIRE_MAGIC, WIRE_VERSION, WireError,
  maxRunPages, recordName, type StreamHeader,
} from './wire.js';

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
