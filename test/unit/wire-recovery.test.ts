// The postcopy recovery's records on the wire (issue 13): a recovery's stream
// (HEADER flagged RESUME, then RESUME before any page), the received-page
// bitmap on the return path with its end marker, and the refusals of each
// out of place, every one a WireError that names the problem.
import {
  encodeHeader, encodeBare, encodeRecvBitmap, writeRecordHeader, bitmapBytes, REC_RESUME, REC_ZERO, RP_RESUME_ACK, RECORD_HEADER_BYTES, TOKEN_BYTES,
} from '../../src/migration/wire.js';
import { ReturnDecoder, type ReturnHandler } from '../../src/migration/return-decoder.js';
import { StreamDecoder, type StreamHandler } from '../../src/migration/stream-decoder.js';

const PS = 4096;
const PAGES = 20;
const header = (resume: boolean): Buffer =>
  encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: PAGES * PS, workload: 'idle', token: Buffer.alloc(TOKEN_BYTES, 3), resume, postcopy: !resume });
const zero = (page: number): Buffer => { const b = Buffer.alloc(RECORD_HEADER_BYTES); writeRecordHeader(b, 0, REC_ZERO, 0, 1, page * PS); return b; };

function streamLog(): { log: string[]; h: StreamHandler } {
  const log: string[] = [];
  const h: StreamHandler = {
    header: (x) => log.push(`header resume=${x.resume} postcopy=${x.postcopy}`), pages: () => log.push('pages'), zero: (o) => log.push(`zero ${o / PS}`),
    discard: () => log.push('discard'), endRound: () => log.push('round'), switchover: () => log.push('switchover'), end: () => log.push('end'),
    error: (r) => log.push(`error ${r}`), resume: () => log.push('resume'),
  };
  return { log, h };
}

function returnLog(): { log: string[]; h: ReturnHandler } {
  const log: string[] = [];
  const h: ReturnHandler = {
    requestPages: () => log.push('req'), error: (r) => log.push(`error ${r}`), running: () => log.push('running'), complete: () => log.push('complete'),
    ack: () => log.push('ack'), resumeAck: () => log.push('resume-ack'),
    recvBitmap: (b) => log.push(`bitmap ${[...b].map((x) => x.toString(2).padStart(8, '0')).join(' ')}`),
  };
  return { log, h };
}

describe('recovery records', () => {
  test("a recovery's stream: RESUME header, RESUME, pages (past the switchover), END", () => {
    const { log, h } = streamLog();
    const d = new StreamDecoder(h, PS);
    d.push(Buffer.concat([header(true), encodeBare(REC_RESUME), zero(3), encodeBare(0x07)]));
    expect(log).toEqual(['header resume=true postcopy=true', 'resume', 'zero 3', 'end']);
  });

  test("a page before RESUME, a second RESUME, RESUME on a first stream, a count on it: refused, named", () => {
    const cases: [Buffer, RegExp][] = [
      [Buffer.concat([header(true), zero(1)]), /ZERO record at byte \d+ before RESUME on a recovery's stream/],
      [Buffer.concat([header(true), encodeBare(REC_RESUME), encodeBare(REC_RESUME)]), /RESUME record at byte \d+ twice/],
      [Buffer.concat([header(false), encodeBare(REC_RESUME)]), /RESUME record at byte \d+ outside a recovery's stream/],
      [Buffer.concat([header(true), encodeBare(REC_RESUME, 5)]), /RESUME record at byte \d+: count 5 set/],
    ];
    for (const [bytes, why] of cases) expect(() => new StreamDecoder(streamLog().h, PS).push(bytes)).toThrow(why);
  });

  test('the received-page bitmap: bit p & 7 of byte p >> 3, its end marker checked, its size that of this VM', () => {
    const bits = new Uint8Array(bitmapBytes(PAGES));
    for (const p of [0, 9, 19]) bits[p >> 3] |= 1 << (p & 7);
    const { log, h } = returnLog();
    new ReturnDecoder(h, PAGES * PS, PS, true).push(Buffer.concat([encodeRecvBitmap(PAGES, bits), encodeBare(RP_RESUME_ACK)]));
    expect(log).toEqual(['bitmap 00000001 00000010 00001000', 'resume-ack']);
    const rec = encodeRecvBitmap(PAGES, bits);
    rec[rec.length - 1] ^= 1;
    expect(() => new ReturnDecoder(returnLog().h, PAGES * PS, PS, true).push(rec)).toThrow(/no end marker after the bitmap/);
    expect(() => new ReturnDecoder(returnLog().h, 2 * PAGES * PS, PS, true).push(encodeRecvBitmap(PAGES, bits)))
      .toThrow(/of 20 pages, this VM has 40 pages/);
    // outside a recovery, neither record belongs on the return path
    expect(() => new ReturnDecoder(returnLog().h, PAGES * PS, PS).push(encodeRecvBitmap(PAGES, bits))).toThrow(/RECV_BITMAP record at byte 0 outside a recovery/);
    expect(() => new ReturnDecoder(returnLog().h, PAGES * PS, PS).push(encodeBare(RP_RESUME_ACK))).toThrow(/RESUME_ACK record at byte 0 outside a recovery/);
  });
});
