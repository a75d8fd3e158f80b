// The wire codec's defences against a peer that is not to be trusted (issue
// 13): the migration's token travels in HEADER, and no flag bit or field the
// wire does not define is accepted.
import {
  WireError, encodeHeader, encodeSwitchover, encodeBare, encodeText, writeRecordHeader, printable, TOKEN_BYTES, VCPU_STATE_BYTES, REC_END, REC_ERROR, RP_ACK, RP_RUNNING, RP_COMPLETE, RP_ERROR, type StreamHeader,
} from '../../src/migration/wire.js';
import { ReturnDecoder, type ReturnHandler } from '../../src/migration/return-decoder.js';
import { StreamDecoder, type StreamHandler } from '../../src/migration/stream-decoder.js';

const PS = 4096;
const RAM = 64 * PS;

function decoder(): { d: StreamDecoder; headers: StreamHeader[] } {
  const headers: StreamHeader[] = [];
  const ignore = (): void => undefined;
  const h: StreamHandler = {
    header: (x) => headers.push(x), pages: ignore, zero: ignore, discard: ignore, endRound: ignore, switchover: ignore, end: ignore, error: ignore,
  };
  return { d: new StreamDecoder(h), headers };
}

describe('the migration token in HEADER', () => {
  test('travels byte for byte, and is all zero when none is given', () => {
    const token = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const a = decoder();
    a.d.push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: 'sweep', token }));
    expect(a.headers[0].token.equals(token)).toBe(true);
    expect(a.headers[0].workload).toBe('sweep');
    const b = decoder();
    b.d.push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' }));
    expect(b.headers[0].token.equals(Buffer.alloc(TOKEN_BYTES))).toBe(true);
  });

  test('a token of the wrong size is refused when encoding', () => {
    expect(() => encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '', token: Buffer.alloc(3) })).toThrow(/16 bytes, not 3/);
  });
});

describe('flag bits the wire does not define', () => {
  test.each([0x80, 0x02, 0x81])('SWITCHOVER with flag byte %d is refused, naming the bits', (flags) => {
    const { d } = decoder();
    d.push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' }));
    const rec = encodeSwitchover(true, Buffer.alloc(VCPU_STATE_BYTES));
    rec[1] = flags;
    expect(() => d.push(rec)).toThrow(WireError);
    expect(() => d.push(Buffer.alloc(0))).toThrow(new RegExp(`SWITCHOVER record at byte \\d+: reserved flag bits set \\(flags 0x${flags.toString(16)}, only 0x1 is defined\\)`));
  });

  test('SWITCHOVER with the postcopy bit alone is taken', () => {
    const { d } = decoder();
    d.push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' }));
    expect(() => d.push(encodeSwitchover(true, Buffer.alloc(VCPU_STATE_BYTES)))).not.toThrow();
  });
});

describe('fields a record does not use are reserved', () => {
  const returnPath = (): { d: ReturnDecoder; log: string[] } => {
    const log: string[] = [];
    const h: ReturnHandler = {
      requestPages: (o, l) => log.push(`req ${o} ${l}`), error: (r) => log.push(`error ${r}`),
      running: () => log.push('running'), complete: () => log.push('complete'), ack: (n) => log.push(`ack ${n}`),
    };
    return { d: new ReturnDecoder(h, RAM, PS), log };
  };
  const rec = (type: number, count: number, offset: number): Buffer => { const b = Buffer.alloc(16); writeRecordHeader(b, 0, type, 0, count, offset); return b; };

  // found by the stream fuzzer: a byte flipped in RP_COMPLETE's offset or RP_RUNNING's count went unnoticed, and
  // RP_ACK with its lowest type bit flipped (0x45 -> 0x44) read as RP_COMPLETE: the source completed on it
  test.each([
    ['RUNNING with a count', rec(RP_RUNNING, 0x18000000, 0), /return path RUNNING record at byte 0: count set on a record that has none/],
    ['RUNNING with an offset', rec(RP_RUNNING, 0, 1), /return path RUNNING record at byte 0: offset set on a record that has none/],
    ['COMPLETE with an offset', rec(RP_COMPLETE, 0, 0xd4 * 2 ** 40), /return path COMPLETE record at byte 0: offset set on a record that has none/],
    ['COMPLETE with a count', rec(RP_COMPLETE, 7, 0), /return path COMPLETE record at byte 0: count set on a record that has none/],
    ['an ACK with its type flipped to COMPLETE', rec(RP_ACK ^ 1, 0, 65536), /return path COMPLETE record at byte 0: offset set/],
    ['ACK with a count', rec(RP_ACK, 1, 65536), /return path ACK record at byte 0: count set on a record that has none/],
    ['ERROR with an offset', (() => { const b = encodeText(RP_ERROR, 'x'); b[9] = 1; return b; })(), /return path ERROR record at byte 0: offset set/],
  ])('return path %s is refused, and nothing is reported', (_what, bad, reason) => {
    const { d, log } = returnPath();
    expect(() => d.push(bad)).toThrow(reason);
    expect(log).toEqual([]);
  });

  test('the return path records as sent still pass', () => {
    const { d, log } = returnPath();
    d.push(Buffer.concat([rec(RP_ACK, 0, 65536), encodeBare(RP_RUNNING), encodeText(RP_ERROR, 'why')]));
    expect(log).toEqual(['ack 65536', 'running', 'error why']);
  });

  test('END with a count is refused', () => {
    const { d } = decoder();
    d.push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' }));
    d.push(encodeSwitchover(false, Buffer.alloc(VCPU_STATE_BYTES)));
    expect(() => d.push(encodeBare(REC_END, 0x100))).toThrow(/END record at byte \d+: count set on a record that has none/);
  });
});

// found by the stream fuzzer: a reason (or a workload) from the peer went into error-desc as it came, and a line break
// in it broke HMP's `info migrate` in two; a terminal's escape would have reached the operator's terminal
describe('text from the peer, quoted in a message', () => {
  test('printable() writes control characters as \\xNN and leaves the rest', () => {
    expect(printable('sweep,e\u00ef\u00bf\u00bd\n\u001b[2J\u007f\u0085 é ok')).toBe('sweep,e\u00ef\u00bf\u00bd\\x0a\\x1b[2J\\x7f\\x85 é ok');
  });

  test('the reason of an ERROR record and of an RP_ERROR arrives printable', () => {
    const reasons: string[] = [];
    const ignore = (): void => undefined;
    const d = new StreamDecoder({
      header: ignore, pages: ignore, zero: ignore, discard: ignore, endRound: ignore, switchover: ignore, end: ignore, error: (r) => reasons.push(r),
    });
    d.push(Buffer.concat([encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' }), encodeText(REC_ERROR, 'out of\nmemory\u001b[0m')]));
    const rp = new ReturnDecoder({ requestPages: ignore, error: (r) => reasons.push(r), running: ignore, complete: ignore, ack: ignore }, RAM, PS);
    rp.push(encodeText(RP_ERROR, 'refused:\r\nStatus: completed'));
    expect(reasons).toEqual(['out of\\x0amemory\\x1b[0m', 'refused:\\x0d\\x0aStatus: completed']);
  });
});
