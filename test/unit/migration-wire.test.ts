// The wire codec against every way a stream can be split, cut short or garbled.
import {
  WireError, encodeHeader, encodeBare, encodeText, encodeSwitchover, writeRecordHeader, RECORD_HEADER_BYTES, REC_PAGES, REC_ZERO, REC_DISCARD, REC_END, REC_END_ROUND, REC_ERROR, RP_REQ_PAGES, RP_RUNNING, RP_COMPLETE, RP_ERROR, RP_ACK, VCPU_STATE_BYTES, WIRE_VERSION, maxRunPages, type StreamHeader,
} from '../../src/migration/wire.js';
import { ReturnDecoder, type ReturnHandler } from '../../src/migration/return-decoder.js';
import { StreamDecoder, type StreamHandler } from '../../src/migration/stream-decoder.js';

const PS = 4096;
const RAM = 64 * PS;

function pagesRecord(offset: number, count: number, fill: (page: number) => number): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_BYTES + count * PS);
  writeRecordHeader(b, 0, REC_PAGES, 0, count, offset);
  for (let i = 0; i < count; i++) b.fill(fill(offset / PS + i), RECORD_HEADER_BYTES + i * PS, RECORD_HEADER_BYTES + (i + 1) * PS);
  return b;
}
function rangeRecord(type: number, offset: number, count: number): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_BYTES);
  writeRecordHeader(b, 0, type, 0, count, offset);
  return b;
}

/** Collects a normalized log of what the decoder reported. */
class Recorder implements StreamHandler {
  log: string[] = [];
  ram = Buffer.alloc(RAM);
  header(h: StreamHeader): void { this.log.push(`header v${h.version} ps${h.pageSize} cpus${h.vcpus} ram${h.ramBytes} ${h.workload}`); }
  pages(offset: number, count: number, buf: Buffer, pos: number): void {
    buf.copy(this.ram, offset, pos, pos + count * PS);
    for (let i = 0; i < count; i++) this.log.push(`page ${offset / PS + i}`);
  }
  zero(offset: number, count: number): void { this.log.push(`zero ${offset / PS}+${count}`); }
  discard(offset: number, count: number): void { this.log.push(`discard ${offset / PS}+${count}`); }
  endRound(r: number): void { this.log.push(`round ${r}`); }
  switchover(post: boolean, b: Buffer, pos: number, len: number): void { this.log.push(`switch ${post} ${b.toString('hex', pos, pos + len).slice(0, 8)} ${len}`); }
  end(): void { this.log.push('end'); }
  error(reason: string): void { this.log.push(`error ${reason}`); }
}

function validStream(): Buffer {
  const states = Buffer.alloc(2 * VCPU_STATE_BYTES, 0xab);
  return Buffer.concat([
    encodeHeader({ pageSize: PS, vcpus: 2, ramBytes: RAM, workload: 'sweep,end=64K' }),
    pagesRecord(0, 3, (p) => p + 1),
    rangeRecord(REC_ZERO, 3 * PS, 5),
    pagesRecord(10 * PS, 1, () => 0x77),
    encodeBare(REC_END_ROUND, 1),
    rangeRecord(REC_DISCARD, PS, 2),
    encodeSwitchover(true, states),
    pagesRecord(PS, 2, (p) => 0x40 + p),
    pagesRecord(60 * PS, 4, (p) => p),
    encodeBare(REC_END),
  ]);
}

function decodeWhole(stream: Buffer): Recorder {
  const r = new Recorder();
  const d = new StreamDecoder(r);
  d.push(stream);
  d.finish();
  return r;
}

describe('stream decoder', () => {
  const stream = validStream();
  const reference = decodeWhole(stream);

  test('decodes a whole stream in order', () => {
    expect(reference.log).toEqual([
      `header v${WIRE_VERSION} ps4096 cpus2 ram262144 sweep,end=64K`, 'page 0', 'page 1', 'page 2', 'zero 3+5', 'page 10', 'round 1',
      'discard 1+2', `switch true abababab ${2 * VCPU_STATE_BYTES}`, 'page 1', 'page 2', 'page 60', 'page 61', 'page 62', 'page 63', 'end',
    ]);
    expect(reference.ram[PS]).toBe(0x41);
    expect(reference.ram[10 * PS + 100]).toBe(0x77);
    expect(reference.ram[63 * PS + 4095]).toBe(63);
  });

  test('split in two at every byte boundary gives the same records and bytes', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const r = new Recorder();
      const d = new StreamDecoder(r);
      d.push(stream.subarray(0, cut));
      d.push(stream.subarray(cut));
      d.finish();
      expect(r.log).toEqual(reference.log);
      expect(r.ram.equals(reference.ram)).toBe(true);
    }
  });

  test('fed in small odd-sized chunks gives the same records', () => {
    for (const size of [1, 3, 7, 15, 16, 17, 4095, 4097]) {
      const r = new Recorder();
      const d = new StreamDecoder(r);
      for (let p = 0; p < stream.length; p += size) d.push(stream.subarray(p, p + size));
      d.finish();
      expect(r.log).toEqual(reference.log);
      expect(r.ram.equals(reference.ram)).toBe(true);
    }
  });

  test('truncated at every byte boundary: finish() reports a truncated stream, nothing crashes', () => {
    for (let cut = 0; cut < stream.length; cut++) {
      const d = new StreamDecoder(new Recorder());
      d.push(stream.subarray(0, cut));
      expect(() => d.finish()).toThrow(WireError);
      expect(() => d.finish()).toThrow(/truncated|closed before|ended inside/);
    }
  });

  test('a garbage byte at every position never crashes; bad input is a WireError', () => {
    let errors = 0;
    for (let at = 0; at < stream.length; at += 61) {
      for (const v of [0x00, 0xff, 0x13]) {
        const bad = Buffer.from(stream);
        if (bad[at] === v) continue;
        bad[at] = v;
        const d = new StreamDecoder(new Recorder());
        try {
          d.push(bad);
          d.finish();
        } catch (e) {
          expect(e).toBeInstanceOf(WireError);
          errors++;
        }
      }
    }
    expect(errors).toBeGreaterThan(0);
  });

  test('every header byte corrupted is detected', () => {
    // the header record (16 + 24 + workload bytes), each byte flipped, must fail or change the header
    for (let at = 0; at < RECORD_HEADER_BYTES + 24; at++) {
      const bad = Buffer.from(stream);
      bad[at] ^= 0x80;
      const r = new Recorder();
      const d = new StreamDecoder(r);
      let threw = false;
      try { d.push(bad); d.finish(); } catch (e) { expect(e).toBeInstanceOf(WireError); threw = true; }
      if (!threw) expect(r.log[0]).not.toEqual(reference.log[0]);
    }
  });

  test('random garbage is refused as not a migration stream', () => {
    const d = new StreamDecoder(new Recorder());
    expect(() => d.push(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))).toThrow(/not a postcopy migration stream/);
    expect(() => d.push(Buffer.from([1]))).toThrow(WireError); // stays failed
  });

  test('wrong magic, wrong version, bad sizes are named', () => {
    const h = encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' });
    const badMagic = Buffer.from(h); badMagic[RECORD_HEADER_BYTES] ^= 1;
    expect(() => new StreamDecoder(new Recorder()).push(badMagic)).toThrow(/bad magic/);
    const v2 = encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '', version: WIRE_VERSION + 1 });
    expect(() => new StreamDecoder(new Recorder()).push(v2)).toThrow(new RegExp(`unsupported stream version ${WIRE_VERSION + 1}`));
    expect(() => new StreamDecoder(new Recorder()).push(encodeHeader({ pageSize: 3000, vcpus: 1, ramBytes: RAM, workload: '' }))).toThrow(/page size/);
    expect(() => new StreamDecoder(new Recorder()).push(encodeHeader({ pageSize: PS, vcpus: 0, ramBytes: RAM, workload: '' }))).toThrow(/vCPU count/);
    expect(() => new StreamDecoder(new Recorder()).push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM + 1, workload: '' }))).toThrow(/RAM size/);
  });

  test('records outside RAM, unaligned, oversized or out of order are refused', () => {
    const head = encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' });
    const cases: Array<[Buffer, RegExp]> = [
      [pagesRecord(RAM - PS, 2, () => 1), /outside guest RAM/],
      [rangeRecord(REC_ZERO, 100, 1), /not page aligned/],
      [rangeRecord(REC_ZERO, 0, 0), /outside guest RAM/],
      [(() => { const b = Buffer.alloc(16); writeRecordHeader(b, 0, REC_PAGES, 0, 100000, 0); return b; })(), /bad page count/],
      [encodeBare(REC_END), /END record .* before the switchover/],
      [encodeBare(0x33), /unknown record type 0x33/],
      [head, /second header/],
      [encodeSwitchover(false, Buffer.alloc(3)), /3 bytes of vCPU state, expected 64/],
    ];
    for (const [rec, re] of cases) {
      const d = new StreamDecoder(new Recorder());
      d.push(head);
      expect(() => d.push(rec)).toThrow(re);
    }
    const d = new StreamDecoder(new Recorder());
    d.push(Buffer.concat([head, encodeSwitchover(false, Buffer.alloc(64))]));
    expect(() => d.push(rangeRecord(REC_DISCARD, 0, 1))).toThrow(/DISCARD .* after the switchover/);
    const e = new StreamDecoder(new Recorder());
    e.push(Buffer.concat([head, encodeSwitchover(false, Buffer.alloc(64)), encodeBare(REC_END)]));
    expect(() => e.push(Buffer.from([0]))).toThrow(/after the end of the stream/);
  });

  test('an ERROR record from the source ends the stream with its reason', () => {
    const r = decodeWhole(Buffer.concat([encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' }), encodeText(REC_ERROR, 'migration cancelled')]));
    expect(r.log[1]).toBe('error migration cancelled');
  });

  test('pages delivered as views into the received chunk (no copy when whole)', () => {
    const rec = pagesRecord(0, 2, () => 9);
    const chunk = Buffer.concat([encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: '' }), rec]);
    const seen: Array<[Buffer, number]> = [];
    const h = new Recorder();
    h.pages = (_o, _c, buf, pos) => { seen.push([buf, pos]); };
    new StreamDecoder(h).push(chunk);
    expect(seen).toHaveLength(1);
    expect(seen[0][0]).toBe(chunk);
  });
});

describe('return path decoder', () => {
  class RLog implements ReturnHandler {
    log: string[] = [];
    requestPages(o: number, l: number): void { this.log.push(`req ${o} ${l}`); }
    error(r: string): void { this.log.push(`error ${r}`); }
    running(): void { this.log.push('running'); }
    complete(): void { this.log.push('complete'); }
    ack(n: number): void { this.log.push(`ack ${n}`); }
  }
  const req = (o: number, l: number): Buffer => { const b = Buffer.alloc(16); writeRecordHeader(b, 0, RP_REQ_PAGES, 0, l, o); return b; };
  const ack = (n: number): Buffer => { const b = Buffer.alloc(16); writeRecordHeader(b, 0, RP_ACK, 0, 0, n); return b; };
  const rp = Buffer.concat([req(PS, PS), encodeBare(RP_RUNNING), ack(5 * 2 ** 32 + 7), req(8 * PS, 2 * PS), encodeBare(RP_COMPLETE)]);

  test('every split gives the same requests', () => {
    for (let cut = 0; cut <= rp.length; cut++) {
      const l = new RLog();
      const d = new ReturnDecoder(l, RAM, PS);
      d.push(rp.subarray(0, cut));
      d.push(rp.subarray(cut));
      d.finish();
      expect(l.log).toEqual([`req ${PS} ${PS}`, 'running', `ack ${5 * 2 ** 32 + 7}`, `req ${8 * PS} ${2 * PS}`, 'complete']);
    }
  });

  test('truncation and bad requests are errors', () => {
    for (let cut = 0; cut < rp.length; cut++) {
      const d = new ReturnDecoder(new RLog(), RAM, PS);
      d.push(rp.subarray(0, cut));
      expect(() => d.finish()).toThrow(WireError);
    }
    expect(() => new ReturnDecoder(new RLog(), RAM, PS).push(req(RAM, PS))).toThrow(/not a page range inside guest RAM/);
    expect(() => new ReturnDecoder(new RLog(), RAM, PS).push(req(3, PS))).toThrow(/not a page range/);
    expect(() => new ReturnDecoder(new RLog(), RAM, PS).push(encodeBare(0x99))).toThrow(/unknown return path record type 0x99/);
    const l = new RLog();
    new ReturnDecoder(l, RAM, PS).push(encodeText(RP_ERROR, 'RAM size mismatch'));
    expect(l.log).toEqual(['error RAM size mismatch']);
  });

  test('a long error text in multi-byte characters still arrives, cut on a character boundary', () => {
    const l = new RLog();
    const rec = encodeText(RP_ERROR, `workload mismatch: '${'é'.repeat(3000)}'`);
    expect(rec.length - RECORD_HEADER_BYTES).toBeLessThanOrEqual(4096);
    new ReturnDecoder(l, RAM, PS).push(rec);
    expect(l.log).toHaveLength(1);
    expect(l.log[0]).toMatch(/^error workload mismatch: 'é+$/); // no broken character at the end
  });
});

describe('postcopy advise (HEADER_POSTCOPY)', () => {
  const hdr = (postcopy: boolean, urgent = false): Buffer =>
    encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: RAM, workload: 'idle', postcopy, urgent });

  test('the main stream header says whether the source may switch to postcopy', () => {
    for (const postcopy of [false, true]) {
      let seen: StreamHeader | undefined;
      const r = new Recorder();
      r.header = (h) => { seen = h; };
      new StreamDecoder(r).push(hdr(postcopy));
      expect(seen?.postcopy).toBe(postcopy);
    }
  });

  test('the urgent channel header carries only its own flag', () => {
    expect(() => new StreamDecoder(new Recorder(), 65536, true).push(hdr(true))).toThrow(/urgent-channel header/);
    expect(() => new StreamDecoder(new Recorder(), 65536, true).push(hdr(false, true))).not.toThrow();
  });
});

describe('huge pages', () => {
  const HP = 2 * 1024 * 1024;
  const header = encodeHeader({ pageSize: HP, vcpus: 1, ramBytes: 4 * HP, workload: 'idle' });

  test('a record holds one huge page (256 of 4 KiB): maxRunPages follows the page size', () => {
    expect([maxRunPages(4096), maxRunPages(65536), maxRunPages(HP), maxRunPages(2 ** 30)]).toEqual([256, 16, 1, 1]);
  });

  test('2 MiB pages arriving in 64 KiB pieces are delivered whole, page by page, with their bytes', () => {
    const got: Array<[number, number, number]> = [];
    class HugeRecorder extends Recorder {
      override pages(offset: number, count: number, buf: Buffer, pos: number): void { got.push([offset / HP, count, buf[pos + HP - 1]]); }
    }
    const d = new StreamDecoder(new HugeRecorder());
    const rec = (page: number): Buffer => {
      const b = Buffer.alloc(RECORD_HEADER_BYTES + HP, page + 1);
      writeRecordHeader(b, 0, REC_PAGES, 0, 1, page * HP);
      return b;
    };
    const stream = Buffer.concat([header, rec(0), rec(3)]);
    for (let i = 0; i < stream.length; i += 65536) d.push(stream.subarray(i, i + 65536));
    expect(got).toEqual([[0, 1, 1], [3, 1, 4]]);
  });

  test('two huge pages in one record are refused, naming the limit', () => {
    const b = Buffer.alloc(RECORD_HEADER_BYTES + 2 * HP);
    writeRecordHeader(b, 0, REC_PAGES, 0, 2, 0);
    const d = new StreamDecoder(new Recorder());
    d.push(header);
    expect(() => d.push(b)).toThrow(/PAGES record at byte \d+: bad page count 2 \(1\.\.1\)/);
  });
});
