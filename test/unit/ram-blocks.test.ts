// Several RAM blocks, the pure parts: the layout (back to back, pages
// numbered across blocks), the lookups, the command line (-numa node,memdev
// repeated, the workload's block key, the options the lab passes on), the
// stream's HEADER with its block list, page records addressed by block and
// offset, and the destination's refusal of blocks that do not match, in
// QEMU's words.
import { RamBlocks } from '../../src/vm/ram-blocks.js';
import { parseVmOptions } from '../../src/vm-options.js';
import { memoryBackendsArgs } from '../../src/vm/memory-backend.js';
import { formatWorkload, parseWorkload } from '../../src/vm/workload.js';
import { encodeHeader, writeRecordHeader, RECORD_HEADER_BYTES, REC_ZERO, REC_DISCARD, RP_REQ_PAGES, type StreamHeader } from '../../src/migration/wire.js';
import { ReturnDecoder, type ReturnHandler } from '../../src/migration/return-decoder.js';
import { StreamDecoder, type StreamHandler } from '../../src/migration/stream-decoder.js';
import { ramBlocksMismatch } from '../../src/migration/wire-blocks.js';

const MiB = 2 ** 20;
const PS = 4096;
const TWO = [{ idstr: 'm0', usedLength: 8 * MiB, pageSize: PS }, { idstr: 'm1', usedLength: 4 * MiB, pageSize: PS }];

describe('the RAM block layout', () => {
  it('lays blocks back to back in order, numbering pages across them, and finds a page\'s block', () => {
    const b = RamBlocks.layout(TWO);
    expect(b.list.map((x) => [x.idstr, x.index, x.offset, x.firstPage, x.pages])).toEqual([['m0', 0, 0, 0, 2048], ['m1', 1, 8 * MiB, 2048, 1024]]);
    expect([b.bytes, b.pages, b.count]).toEqual([12 * MiB, 3072, 2]);
    expect([0, 2047, 2048, 3071].map((p) => b.indexAtPage(p))).toEqual([0, 0, 1, 1]);
    expect([0, 8 * MiB - 1, 8 * MiB].map((o) => b.indexAtOffset(o))).toEqual([0, 0, 1]);
    expect(b.fromBlock(1, 4096, 2)).toBe(8 * MiB + 4096);
    expect(b.fromBlock(1, 4 * MiB - PS, 2)).toBe(-1); // runs past the block's end
    expect(b.fromBlock(1, 100, 1)).toBe(-1); // unaligned
    expect(b.fromBlock(2, 0, 1)).toBe(-1); // no such block
  });

  it('numbers pages in the smallest page size: a huge-page block is host pages of several of them', () => {
    const b = RamBlocks.layout([{ idstr: 'h', usedLength: 4 * MiB, pageSize: 2 * MiB }, { idstr: 'a', usedLength: 8192, pageSize: 4096 }]);
    expect(b.list.map((x) => [x.offset, x.firstPage, x.pages, x.hostPages])).toEqual([[0, 0, 1024, 512], [4 * MiB, 1024, 2, 1]]);
    expect([b.unit, b.maxPageSize, b.pages]).toEqual([4096, 2 * MiB, 1026]);
    expect(b.fromBlock(0, 2 * MiB, 512)).toBe(2 * MiB); // one host page
    expect(b.fromBlock(0, 0, 1)).toBe(-1); // part of one
    expect(b.fromBlock(0, 4096, 512)).toBe(-1); // not at a host page's start
  });

  it('refuses a hole before a huge-page block, and bad blocks, naming them', () => {
    expect(() => RamBlocks.layout([{ idstr: 'a', usedLength: 4096, pageSize: 4096 }, { idstr: 'h', usedLength: 2 * MiB, pageSize: 2 * MiB }]))
      .toThrow(/^RAM block h has pages of 2097152 bytes, and the blocks before it add up to 0x1000 bytes, no multiple of that: give them sizes that are multiples of 2M, or give this block first$/);
    expect(() => RamBlocks.layout([...TWO, TWO[0]])).toThrow(/RAM block 'm0' given twice/);
    expect(() => RamBlocks.layout([{ idstr: 'x', usedLength: 5000, pageSize: PS }])).toThrow(/RAM block x: size 5000 is not a positive multiple of its page size 4096/);
    expect(() => RamBlocks.layout([])).toThrow(/0 RAM blocks/);
  });
});

describe('several RAM blocks on the command line', () => {
  const argv = ['-object', 'memory-backend-ram,id=m0,size=8M', '-object', 'memory-backend-ram,id=m1,size=4M',
    '-numa', 'node,memdev=m0', '-numa', 'node,nodeid=1,memdev=m1'];

  it('-numa node,memdev=ID repeated: one block per node, in order; RAM is their total', () => {
    const o = parseVmOptions(argv);
    expect(o.ramBytes).toBe(12 * MiB);
    expect(o.memoryBackend).toBeNull();
    expect(o.memoryBackends.map((b) => [b.id, b.size])).toEqual([['m0', 8 * MiB], ['m1', 4 * MiB]]);
    expect(parseVmOptions(['-m', '12M', ...argv]).ramBytes).toBe(12 * MiB);
  });

  it('the options the lab and postcopy run pass on give the same blocks again', () => {
    const o = parseVmOptions(argv);
    const again = parseVmOptions(['-m', `${o.ramBytes}B`, ...memoryBackendsArgs(o.memoryBackends, o.ramBytes)]);
    expect(again.memoryBackends).toEqual(o.memoryBackends);
  });
});

describe('the workload key block=ID', () => {
  it('puts [start, end) inside the block (its whole range by default) and prints it back the same', () => {
    const blocks = [{ idstr: 'm0', offset: 0, usedLength: 8 * MiB }, { idstr: 'm1', offset: 8 * MiB, usedLength: 4 * MiB }];
    const w = parseWorkload('sweep,block=m1', 12 * MiB, blocks);
    expect([w.start, w.end]).toEqual([8 * MiB, 12 * MiB]);
    const v = parseWorkload('random,start=1M,end=2M,block=m1,seed=3', 12 * MiB, blocks);
    expect([v.start, v.end]).toEqual([9 * MiB, 10 * MiB]);
    expect(formatWorkload(v)).toBe('random,block=m1,start=1M,end=2M,seed=3');
    expect(parseWorkload(formatWorkload(v), 12 * MiB, blocks)).toEqual(v);
    expect(parseWorkload('sweep,block=pc.ram,end=1M', 12 * MiB)).toMatchObject({ start: 0, end: MiB }); // the default block's name
  });
});

class Log implements StreamHandler {
  got?: StreamHeader;
  readonly seen: string[] = [];
  header(h: StreamHeader): void { this.got = h; }
  pages(offset: number, count: number): void { this.seen.push(`pages ${offset}+${count}`); }
  zero(offset: number, count: number): void { this.seen.push(`zero ${offset}+${count}`); }
  discard(offset: number, count: number): void { this.seen.push(`discard ${offset}+${count}`); }
  endRound(): void { /* not here */ }
  switchover(): void { /* not here */ }
  end(): void { /* not here */ }
  error(reason: string): void { this.seen.push(`error ${reason}`); }
}

const record = (type: number, count: number, offset: number, block: number): Buffer => {
  const b = Buffer.alloc(RECORD_HEADER_BYTES);
  writeRecordHeader(b, 0, type, 0, count, offset, block);
  return b;
};
const header = (blocks = TWO): Buffer => encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: 12 * MiB, workload: 'idle', blocks });

describe('the stream with several RAM blocks', () => {
  it('the HEADER lists the blocks; page records name a block and an offset inside it', () => {
    const log = new Log();
    const d = new StreamDecoder(log);
    d.push(Buffer.concat([header(), record(REC_ZERO, 3, 4096, 1), record(REC_DISCARD, 2, 0, 0)]));
    expect(log.got!.blocks.list.map((b) => [b.idstr, b.usedLength, b.pageSize, b.offset])).toEqual([['m0', 8 * MiB, PS, 0], ['m1', 4 * MiB, PS, 8 * MiB]]);
    expect(log.got!.workload).toBe('idle');
    expect(log.seen).toEqual([`zero ${8 * MiB + 4096}+3`, 'discard 0+2']);
  });

  it.each([
    [record(REC_ZERO, 1, 0, 2), /ZERO record at byte \d+: RAM block 2, but the header lists 2/],
    [record(REC_ZERO, 2, 4 * MiB - PS, 1), /ZERO record at byte \d+: 2 pages at offset 4190208 lie outside RAM block m1 \(4194304 bytes\)/],
    [record(REC_ZERO, 1, 100, 0), /offset 100 is not page aligned/],
  ])('a page record outside its block fails naming it (%#)', (rec, why) => {
    expect(() => new StreamDecoder(new Log()).push(Buffer.concat([header(), rec]))).toThrow(why);
  });

  it('a header whose blocks do not add up, or whose page size is none of its blocks\', is refused', () => {
    const short = encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: 16 * MiB, workload: '', blocks: TWO });
    expect(() => new StreamDecoder(new Log()).push(short)).toThrow(/RAM blocks add up to 12582912 bytes, not the 16777216 it says/);
    const huge = [{ idstr: 'h', usedLength: 4 * MiB, pageSize: 2 * MiB }];
    expect(() => new StreamDecoder(new Log()).push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: 4 * MiB, workload: '', blocks: huge })))
      .toThrow(/the stream's pages are 4096 bytes, but no RAM block has pages that small/);
    const small = [{ idstr: 's', usedLength: 4 * MiB, pageSize: 1024 }];
    expect(() => new StreamDecoder(new Log()).push(encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: 4 * MiB, workload: '', blocks: small })))
      .toThrow(/RAM block s has pages of 1024 bytes, and the stream's pages are 4096 bytes/);
  });

  it('a huge-page block beside a 4 KiB block: its records are whole host pages of 4 KiB pages', () => {
    const mixed = [{ idstr: 'h', usedLength: 4 * MiB, pageSize: 2 * MiB }, { idstr: 'm', usedLength: 4 * MiB, pageSize: PS }];
    const log = new Log();
    const d = new StreamDecoder(log);
    d.push(Buffer.concat([encodeHeader({ pageSize: PS, vcpus: 1, ramBytes: 8 * MiB, workload: '', blocks: mixed }),
      record(REC_ZERO, 512, 2 * MiB, 0), record(REC_ZERO, 3, PS, 1)]));
    expect(log.seen).toEqual([`zero ${2 * MiB}+512`, `zero ${4 * MiB + PS}+3`]);
    expect(() => d.push(record(REC_ZERO, 1, 0, 0))).toThrow(/ZERO record at byte \d+: 1 pages are not whole host pages of RAM block h \(512 pages each\)/);
  });

  it('a page request on the return path names its block', () => {
    const asked: number[] = [];
    const rp: ReturnHandler = { requestPages: (o, l) => asked.push(o, l), error: () => undefined, running: () => undefined, complete: () => undefined, ack: () => undefined };
    const d = new ReturnDecoder(rp, 12 * MiB, PS, false, RamBlocks.layout(TWO));
    d.push(record(RP_REQ_PAGES, 2 * PS, PS, 1));
    expect(asked).toEqual([8 * MiB + PS, 2 * PS]);
    expect(() => new ReturnDecoder(rp, 12 * MiB, PS, false, RamBlocks.layout(TWO)).push(record(RP_REQ_PAGES, PS, 4 * MiB, 1)))
      .toThrow(/not a page range inside guest RAM/);
  });
});

describe('the destination checks the source\'s blocks against its own', () => {
  const mine = RamBlocks.layout(TWO);
  it.each([
    [[TWO[0], { ...TWO[1], usedLength: 8 * MiB }], 'Length mismatch: m1: 0x800000 in != 0x400000: Invalid argument'],
    [[TWO[0], { ...TWO[1], idstr: 'other' }], 'Unknown ramblock "other", cannot accept migration'],
    [[TWO[1], TWO[0]], 'RAM block m1 is block 0 of the source and block 1 here: give the memory backends (-numa node,memdev=...) in the same order'],
    [[TWO[0]], 'RAM block m1 of this VM is not in the migration stream (the source has m0)'],
  ])('%j', (source, why) => {
    expect(ramBlocksMismatch(RamBlocks.layout(source), mine)).toBe(why);
  });

  it('QEMU\'s page size text for a block of another page size', () => {
    const huge = RamBlocks.layout([{ idstr: 'm0', usedLength: 8 * MiB, pageSize: 2 * MiB }, TWO[1]]);
    expect(ramBlocksMismatch(huge, mine)).toBe('Mismatched RAM page size m0 (local) 4096 != 2097152');
    expect(ramBlocksMismatch(RamBlocks.layout(TWO), mine)).toBeNull();
  });
});
