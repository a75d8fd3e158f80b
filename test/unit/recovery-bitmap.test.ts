// The received-page bitmap of postcopy recovery, end to end in pure logic:
// the destination builds it from its page flags (incoming-recovery.ts), the
// wire carries it (wire.ts), and the source makes due again exactly the pages
// the destination lacks, counting those it had sent already (lost in flight)
// apart from those it never sent (outgoing-ram.ts).
import { IncomingRecovery } from '../../src/migration/incoming-recovery.js';
import { SourceRam } from '../../src/migration/outgoing-ram.js';
import { ReturnDecoder, type ReturnHandler } from '../../src/migration/return-decoder.js';
import { RamBlocks } from '../../src/vm/ram-blocks.js';
import type { GuestMemory } from '../../src/migration/guest.js';

const PS = 4096;
const PAGES = 21; // not a multiple of 8: the last byte is partial

test('the destination lacks pages 3, 4 and 20: exactly those are due again; 3 and 4 were sent (lost in flight), 20 never was', () => {
  const flags = new Uint8Array(PAGES).fill(1); // PC_PAGE_RECEIVED
  flags[3] = flags[4] = flags[20] = 0;
  flags[7] = 1 | 2; // received and populated: still received
  const record = new IncomingRecovery(PS).bitmap(flags, PAGES);
  let bitmap: Buffer | null = null;
  const h: ReturnHandler = {
    requestPages: () => undefined, error: () => undefined, running: () => undefined, complete: () => undefined, ack: () => undefined,
    recvBitmap: (b) => { bitmap = Buffer.from(b); },
  };
  new ReturnDecoder(h, PAGES * PS, PS, true).push(record);
  expect(bitmap).not.toBeNull();

  const taken = new Float64Array(16);
  const ram = { base: 0, bytes: PAGES * PS, pageSize: PS, blocks: RamBlocks.single('pc.ram', PAGES * PS, PS), blockTable: null } as unknown as GuestMemory;
  const src = new SourceRam(ram, { sender: () => taken, server: () => new Float64Array(16) });
  try {
    // the sender took every page but 20 (its flags read as raw bytes below: NEED 1, HAS 2)
    const raw = new Uint8Array((src as unknown as { block: { buffer: ArrayBuffer } }).block.buffer, 0, PAGES);
    raw.fill(2);
    raw[20] = 1;
    taken[4] = PAGES - 1; // SenderStat.Sent
    expect(src.needed).toBe(1);
    expect(src.fromReceivedBitmap(bitmap!)).toBe(2);
    expect(src.needed).toBe(3);
    expect([...raw].map((f, p) => (f === 1 ? p : -1)).filter((p) => p >= 0)).toEqual([3, 4, 20]);
  } finally {
    src.free();
  }
});

test('a guest of 70001 pages, a random tenth of them missing: the bitmap names exactly those, and the source makes exactly those due again', () => {
  const pages = 70001;
  let seed = 7;
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const flags = new Uint8Array(pages).fill(1);
  const missing: number[] = [];
  for (let p = 0; p < pages; p++) if (rand() < 0.1) { flags[p] = 0; missing.push(p); } else if (rand() < 0.5) flags[p] = 1 | 2;
  const record = new IncomingRecovery(PS).bitmap(flags, pages);
  let bitmap: Buffer | null = null;
  new ReturnDecoder({
    requestPages: () => undefined, error: () => undefined, running: () => undefined, complete: () => undefined, ack: () => undefined,
    recvBitmap: (b) => { bitmap = Buffer.from(b); },
  }, pages * PS, PS, true).push(record);
  const taken = new Float64Array(16);
  const ram = { base: 0, bytes: pages * PS, pageSize: PS, blocks: RamBlocks.single('pc.ram', pages * PS, PS), blockTable: null } as unknown as GuestMemory;
  const src = new SourceRam(ram, { sender: () => taken, server: () => new Float64Array(16) });
  try {
    const raw = new Uint8Array((src as unknown as { block: { buffer: ArrayBuffer } }).block.buffer, 0, pages);
    raw.fill(2); // every page sent
    taken[4] = pages;
    expect(src.fromReceivedBitmap(bitmap!)).toBe(missing.length);
    expect(src.needed).toBe(missing.length);
    expect([...raw].map((f, p) => (f === 1 ? p : -1)).filter((p) => p >= 0)).toEqual(missing);
    expect(raw.every((f) => f === 1 || f === 2)).toBe(true);
  } finally {
    src.free();
  }
});
