// The source's page server on its own, over a real unix socket, driven by a
// test peer playing the destination: it answers requests in order, faulted
// pages before read-ahead, straight from guest RAM; when nobody drains its
// event ring it waits (no event is lost) and goes on once drained; stop()
// joins it at once even while it waits. No userfaultfd is involved.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NativeMapping, NativeBlock } from '../../src/native/memory.js';
import { PageChannel, PageServerStat, ChannelEvent } from '../../src/native/page-channel.js';
import { socketPair } from '../helpers/socket-pair.js';
import { writeRecordHeader, RECORD_HEADER_BYTES, RP_REQ_PAGES, RP_HEARTBEAT, REC_PAGES, REC_ZERO } from '../../src/migration/wire.js';

const PS = 4096;
const PAGES = 64;
/** the ring holds 16384 events: more requests than that */
const REQUESTS = 20000;

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pc-channel-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

function request(page: number, count: number, readahead: boolean): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_BYTES);
  writeRecordHeader(b, 0, RP_REQ_PAGES, readahead ? 1 : 0, count * PS, page * PS);
  return b;
}

/** parses the records the page server sent: [type, flags, first page, count] each */
function records(bytes: Buffer): [number, number, number, number][] {
  const out: [number, number, number, number][] = [];
  for (let pos = 0; pos + RECORD_HEADER_BYTES <= bytes.length;) {
    const type = bytes[pos];
    const count = bytes.readUInt32LE(pos + 4);
    out.push([type, bytes[pos + 1], bytes.readUInt32LE(pos + 8) / PS, count]);
    pos += RECORD_HEADER_BYTES + (type === REC_PAGES ? count * PS : 0);
  }
  return out;
}

describe('page server', () => {
  let ram: NativeMapping;
  beforeEach(() => {
    ram = NativeMapping.create(PAGES * PS);
    const b = ram.windows.view(0, ram.bytes);
    for (let p = 0; p < PAGES; p++) if (p % 4 !== 0) b.fill(p, p * PS, (p + 1) * PS); // every 4th page zero
  });
  afterEach(() => { ram.dispose(); });

  test('answers faulted pages before read-ahead, zero and data runs apart, with the pages of guest RAM', async () => {
    const [mine, peer] = await socketPair(dir, 'a.sock');
    const got: Buffer[] = [];
    peer.on('data', (b: Buffer) => got.push(b));
    // both requests in one write: the read-ahead one first
    peer.write(Buffer.concat([request(8, 6, true), request(2, 1, false)]));
    const ch = PageChannel.startPageServer({ sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES });
    const want = RECORD_HEADER_BYTES * 4 + PS * (1 + 4); // page 2; pages 8 (zero), 9-11, 12 (zero), 13
    while (Buffer.concat(got).length < want) await new Promise((r) => setTimeout(r, 5));
    const all = Buffer.concat(got);
    expect(records(all)).toEqual([
      [REC_PAGES, 0, 2, 1],
      [REC_ZERO, 1, 8, 1], [REC_PAGES, 1, 9, 3], [REC_ZERO, 1, 12, 1], [REC_PAGES, 1, 13, 1],
    ]);
    expect(all[RECORD_HEADER_BYTES]).toBe(2); // page 2's bytes
    const served: number[][] = [];
    ch.drain((kind, page, count) => served.push([kind, page, count]));
    expect(served).toEqual([[ChannelEvent.Served, 2, 1], [ChannelEvent.Served, 8, 6]]);
    expect(ch.stat(PageServerStat.Requests)).toBe(1);
    expect(ch.stat(PageServerStat.Readahead)).toBe(6);
    expect(ch.stat(PageServerStat.Zero)).toBe(2);
    expect(ch.stat(PageServerStat.Normal)).toBe(5);
    ch.dispose();
    peer.destroy();
  });

  test('a destination that reads no answer for a while but goes on speaking is not silent (x-postcopy-heartbeat-ms)', async () => {
    const [mine, peer] = await socketPair(dir, 'hb.sock');
    peer.pause(); // it reads nothing: the answers fill the socket, then the server's input fills with requests
    const ch = PageChannel.startPageServer({ sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES, heartbeatMs: 300 });
    peer.write(Buffer.concat(Array.from({ length: 512 }, () => request(0, PAGES, false)))); // 128 MiB of answers
    const hb = Buffer.alloc(RECORD_HEADER_BYTES);
    writeRecordHeader(hb, 0, RP_HEARTBEAT, 0, 0, 0);
    const beat = setInterval(() => peer.write(hb), 50); // its heartbeats wait, unread, in the server's socket
    await new Promise((r) => setTimeout(r, 1500));
    clearInterval(beat);
    // before: "urgent channel: nothing came from the peer for 301 ms", the link lost, postcopy paused
    expect([ch.state, ch.error]).toEqual(['running', '']);
    peer.resume(); // it reads again: every answer comes
    ch.dispose();
    peer.destroy();
  });

  test(`${REQUESTS} requests, more than its ring holds: it waits for a drain, then loses nothing`, async () => {
    const [mine, peer] = await socketPair(dir, 'b.sock');
    let received = 0;
    peer.on('data', (b: Buffer) => { received += b.length; });
    const ch = PageChannel.startPageServer({ sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES });
    const reqs = Buffer.alloc(REQUESTS * RECORD_HEADER_BYTES);
    for (let i = 0; i < REQUESTS; i++) writeRecordHeader(reqs, i * RECORD_HEADER_BYTES, RP_REQ_PAGES, 0, PS, (1 + (i % 3)) * PS);
    peer.write(reqs);
    // nobody drains: it stops when the ring is full
    let last = -1;
    while (received !== last) { last = received; await new Promise((r) => setTimeout(r, 200)); }
    expect(received).toBeLessThan(REQUESTS * (RECORD_HEADER_BYTES + PS)); // it waits, with its ring full
    expect(ch.stat(PageServerStat.Requests)).toBeLessThan(REQUESTS);
    expect(ch.state).toBe('running');
    const pages: number[] = [];
    const sink = (_k: number, page: number): void => { pages.push(page); };
    while (pages.length < REQUESTS) {
      ch.drain(sink);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(pages.length).toBe(REQUESTS);
    expect(pages.every((p, i) => p === 1 + (i % 3))).toBe(true);
    while (received < REQUESTS * (RECORD_HEADER_BYTES + PS)) await new Promise((r) => setTimeout(r, 5));
    expect(received).toBe(REQUESTS * (RECORD_HEADER_BYTES + PS));
    ch.dispose();
    peer.destroy();
  });

  test('a bad request fails it with the reason; stop() joins it at once', async () => {
    const [mine, peer] = await socketPair(dir, 'c.sock');
    peer.on('data', () => undefined);
    const ch = PageChannel.startPageServer({ sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES });
    peer.write(request(PAGES, 1, false)); // one page past the end
    while (ch.state === 'running') await new Promise((r) => setTimeout(r, 5));
    expect(ch.state).toBe('failed');
    expect(ch.error).toBe(`urgent channel: bad page request: offset ${PAGES * PS} length ${PS} (RAM is ${PAGES} pages of ${PS} bytes)`);
    ch.dispose();
    peer.destroy();
  });

  test('the peer closing is reported as closed', async () => {
    const [mine, peer] = await socketPair(dir, 'd.sock');
    const ch = PageChannel.startPageServer({ sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES });
    peer.end();
    while (ch.state === 'running') await new Promise((r) => setTimeout(r, 5));
    expect(ch.state).toBe('closed');
    expect(ch.error).toBe('the peer closed the urgent channel');
    ch.dispose();
  });

  test('a socket it cannot take over (closed): a clear error, and no native memory left behind', async () => {
    const [mine, peer] = await socketPair(dir, 'e.sock');
    mine.destroy();
    peer.destroy();
    await new Promise((r) => setImmediate(r));
    const live = NativeBlock.live;
    expect(() => PageChannel.startPageServer({ sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES }))
      .toThrow(/the socket has no file descriptor/);
    expect(() => PageChannel.startFaultThread({ uffd: -1, sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES, flags: 0, blocktime: false, readahead: 0 }))
      .toThrow(/the socket has no file descriptor/);
    expect(NativeBlock.live).toBe(live);
  });
});
