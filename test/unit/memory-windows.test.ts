// MemoryWindows on a real 5 GiB mapping (MAP_NORESERVE: only the few pages
// touched here cost memory): copies and zero tests above 4 GiB, where no
// single Buffer reaches, runs that straddle the 4 GiB boundary and a 1 GiB
// window boundary, bounds, no allocation on the page path, and StagingArea's
// bound. The native page digests are the independent check that bytes land
// at the right address.
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { NativeMapping, MemoryWindowsError, WINDOW_BYTES, PAGE_BYTES, pageDigests } from '../../src/native/index.js';
import { StagingArea } from '../../src/uffd/index.js';

const PS = PAGE_BYTES;
const GiB = 2 ** 30;
/** page number of byte offset n GiB */
const pageAt = (gib: number): number => (gib * GiB) / PS;

/** the native digest of one page holding `bytes` (rest zero), from a separate small mapping */
function digestOf(bytes: Uint8Array): bigint {
  const ref = NativeMapping.create(PS);
  ref.windows.copyIn(0, bytes, 0, bytes.length);
  const d = pageDigests(ref.address, PS, 0, 1)[0];
  ref.dispose();
  return d;
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) % 251 + 1; // never zero
  return b;
}

describe('MemoryWindows over a 5 GiB mapping', () => {
  let map: NativeMapping;
  beforeAll(() => { map = NativeMapping.create(5 * GiB); });
  afterAll(() => { map.dispose(); });

  test('1 GiB windows: 4 GiB is a window boundary, the last window ends with the mapping', () => {
    expect(WINDOW_BYTES).toBe(GiB);
    expect((4 * GiB) % WINDOW_BYTES).toBe(0);
    expect(map.windows.view(pageAt(5) - 1, PS).length).toBe(PS);
    expect(() => map.windows.view(pageAt(5) - 1, PS + 1)).toThrow(RangeError);
  });

  test('a page above 4 GiB: copyIn lands at its native address, copyOut and view read it back', () => {
    const page = pageAt(4) + 3;
    const src = pattern(PS, 7);
    map.windows.copyIn(page, src, 0, PS);
    expect(pageDigests(map.address, PS, page, 1)[0]).toBe(digestOf(src));
    const out = Buffer.alloc(PS + 10);
    map.windows.copyOut(page, out, 10, PS);
    expect(out.subarray(10).equals(src)).toBe(true);
    expect(map.windows.view(page, PS).equals(src)).toBe(true);
    expect(map.windows.isZero(page, PS)).toBe(false);
    expect(map.windows.isZero(page + 1, PS)).toBe(true); // untouched neighbour
    map.discard(page * PS, PS);
    expect(map.windows.isZero(page, PS)).toBe(true);
  });

  test.each([
    ['the 4 GiB boundary', 4],
    ['the 1 GiB window boundary', 1],
  ])('a run of pages straddling %s is split: every page where it belongs', (_name, gib) => {
    const first = pageAt(gib) - 2;
    const run = pattern(5 * PS, 3); // 2 pages below the boundary, 3 above
    map.windows.copyIn(first, run, 0, run.length);
    const d = pageDigests(map.address, PS, first, 5);
    for (let p = 0; p < 5; p++) expect(d[p]).toBe(digestOf(run.subarray(p * PS, (p + 1) * PS)));
    const back = Buffer.alloc(run.length + 3);
    map.windows.copyOut(first, back, 3, run.length);
    expect(back.subarray(3).equals(run)).toBe(true);
    expect(map.windows.isZero(first, run.length)).toBe(false);
    expect(map.windows.isZero(first + 5, PS)).toBe(true);
    expect(() => map.windows.view(first, run.length)).toThrow(MemoryWindowsError);
    map.discard(first * PS, run.length);
    expect(map.windows.isZero(first, run.length)).toBe(true);
  });

  test('a copy of an odd length across the 4 GiB boundary, from a buffer position; zero tests see one byte either side of it', () => {
    const below = pageAt(4) - 1;
    const src = pattern(PS + 300, 9);
    map.windows.copyIn(below, src, 50, PS + 250); // the page below and 250 bytes above
    expect(map.windows.view(below, PS).equals(src.subarray(50, 50 + PS))).toBe(true);
    expect(map.windows.view(below + 1, 251).equals(Buffer.concat([src.subarray(50 + PS, 300 + PS), Buffer.alloc(1)]))).toBe(true);
    map.discard(below * PS, 2 * PS);
    // 1 MiB around the boundary (longer than the zero block compared against), one byte set at a time
    const from = pageAt(4) - 128;
    for (const [page, at] of [[below, PS - 1], [below + 1, 0], [from + 255, PS - 1]]) {
      map.windows.view(page, PS)[at] = 1;
      expect(map.windows.isZero(from, 1024 * 1024)).toBe(false);
      map.windows.view(page, PS)[at] = 0;
      expect(map.windows.isZero(from, 1024 * 1024)).toBe(true);
    }
    map.discard(from * PS, 1024 * 1024);
  });

  test('positions outside the mapping and short buffers throw, and nothing is written', () => {
    const w = map.windows;
    const page = Buffer.alloc(PS, 1);
    expect(() => w.copyIn(pageAt(5), page, 0, 1)).toThrow(RangeError);
    expect(() => w.copyIn(pageAt(5) - 1, page, 0, PS + 1)).toThrow(/outside the mapping/);
    expect(() => w.copyIn(-1, page, 0, PS)).toThrow(RangeError);
    expect(() => w.copyIn(0.5, page, 0, 1)).toThrow(RangeError);
    expect(() => w.copyIn(pageAt(4), page, 1, PS)).toThrow(/outside the 4096-byte buffer/);
    expect(() => w.copyOut(pageAt(4), Buffer.alloc(10), 0, 11)).toThrow(RangeError);
    expect(() => w.isZero(pageAt(5), 1)).toThrow(RangeError);
    expect(w.isZero(pageAt(4), PS)).toBe(true);
    expect(w.isZero(pageAt(5) - 1, PS)).toBe(true);
  });

  test('windows are made once and kept: views of one window share its memory', () => {
    const a = map.windows.view(pageAt(4) + 1, 8);
    const b = map.windows.view(pageAt(4) + 9, 8);
    const c = map.windows.view(pageAt(3), 8);
    expect(a.buffer).toBe(b.buffer);
    expect(a.buffer).not.toBe(c.buffer);
  });

  test('page copies and zero tests around 4 GiB allocate nothing that needs collecting', async () => {
    const w = map.windows;
    const out = Buffer.alloc(64 * PS);
    const pages = 64; // a few touched pages across the boundary, read over and over
    const first = pageAt(4) - 32;
    w.copyIn(first + 40, pattern(PS, 1), 0, PS);
    // the outgoing stream's shape: a zero test per page, a copy for a data page
    const drive = (n: number): number => {
      let zero = 0;
      for (let i = 0; i < n; i++) {
        const p = i % pages;
        if (w.isZero(first + p, PS)) zero++;
        else w.copyOut(first + p, out, p * PS, PS);
      }
      return zero;
    };
    drive(100_000); // warm-up: JIT tiers, the shim loaded, both windows made
    const gcs: PerformanceEntry[] = [];
    const obs = new PerformanceObserver((list) => { gcs.push(...list.getEntries()); });
    obs.observe({ entryTypes: ['gc'] });
    await new Promise((r) => setTimeout(r, 50));
    gcs.length = 0;
    const zero = drive(512_000);
    await new Promise((r) => setTimeout(r, 50));
    obs.disconnect();
    expect(gcs.length).toBeLessThanOrEqual(1);
    expect(zero).toBe(512_000 - 512_000 / pages); // the one data page was copied, the rest tested zero
    expect(out.subarray(40 * PS, 41 * PS).equals(pattern(PS, 1))).toBe(true);
    map.discard(first * PS, pages * PS);
  });

  test('StagingArea keeps one Buffer over its slots, so it refuses more than one window instead of aborting', () => {
    expect(() => StagingArea.create((5 * GiB) / PS)).toThrow(/staging: 1310720 slots of 4096 bytes exceed 1073741824 bytes/);
    const st = StagingArea.create(WINDOW_BYTES / PS);
    st.write(WINDOW_BYTES / PS - 1, pattern(PS, 5));
    expect(st.slot(WINDOW_BYTES / PS - 1).equals(pattern(PS, 5))).toBe(true);
    st.dispose();
  });

  test('after dispose every call throws instead of touching unmapped memory', () => {
    const m = NativeMapping.create(5 * GiB);
    m.windows.copyIn(pageAt(4), Uint8Array.of(1), 0, 1);
    m.dispose();
    expect(() => m.windows.copyOut(pageAt(4), Buffer.alloc(1), 0, 1)).toThrow(MemoryWindowsError);
    expect(() => m.windows.isZero(0, PS)).toThrow(/unmapped/);
    expect(() => m.windows.view(0, 1)).toThrow(/unmapped/);
  });
});
