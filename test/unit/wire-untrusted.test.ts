// The wire codec's defences against a peer that is not to be trusted (issue
// 13): the migration's token travels in HEADER, and no flag bit the wire does
// not define is accepted.
import {
  StreamDecoder, WireError, encodeHeader, encodeSwitchover, TOKEN_BYTES, VCPU_STATE_BYTES, type StreamHandler, type StreamHeader,
} from '../../src/migration/wire.js';

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
