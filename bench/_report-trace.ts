// A synthetic blocktime trace of any length for the report's benchmark and
// its size test: vCPUs sweeping their own slice of guest RAM while a few
// random faults land anywhere, ~4 pages in flight, latencies of 5-200 µs,
// pauses of 10-40 ms (one in 2000 events) with nothing in flight,
// a kernel sample per vCPU at both ends, each fault's "kind" (mostly
// requested, some in flight or read ahead) and the background push's
// position every 2 ms, as a destination writes them. Lines are generated one by one
// (an iterable), so a 10^6-event trace is never held in memory.
import { mulberry32 } from '../test/helpers/prng.js';

const BASE = 0x7f0000000000;
const PAGE = 4096;
/** a push line every this many ns of trace time, as the destination samples it */
const PUSH_EVERY_NS = 2e6;

/** `events` events (faults and placements, half each) after a header, then an end line. */
export function* syntheticTrace(events: number, vcpus = 4, seed = 1): Generator<string> {
  const rnd = mulberry32(seed);
  const tids = Array.from({ length: vcpus }, (_, i) => 5000 + i);
  let t = 1_000_000;
  yield JSON.stringify({ vcpus: tids, t0: t });
  for (const tid of tids) yield `{"t":${t},"ev":"schedstat","tid":${tid},"run":0,"wait":0}`;
  const inFlight: { addr: number; due: number }[] = [];
  const next = new Array<number>(vcpus).fill(0);
  const slice = 1 << 18; // pages per vCPU
  let n = 0;
  let pushAt = t;
  let pushed = 0;
  while (n < events) {
    if (t >= pushAt) { // the push walks guest RAM from the start, a 64-page run per sample
      pushed = (pushed + 64) % (vcpus * slice);
      yield `{"t":${t},"ev":"push","addr":${BASE + pushed * PAGE}}`;
      pushAt = t + PUSH_EVERY_NS;
    }
    if (rnd() < 0.0005 && n < events - inFlight.length - 1) {
      // the guest computes for 10-40 ms: what is in flight arrives, then nobody faults
      while (inFlight.length > 0) {
        yield `{"t":${t},"ev":"placed","addr":${(inFlight.shift() as { addr: number }).addr}}`;
        n++;
      }
      t += 10e6 + Math.floor(rnd() * 30e6);
    }
    t += 1 + Math.floor(rnd() * 4000);
    if (inFlight.length > 0 && (inFlight.length >= 4 || inFlight[0].due <= t || n >= events - inFlight.length)) {
      const p = inFlight.shift() as { addr: number };
      yield `{"t":${t},"ev":"placed","addr":${p.addr}}`;
      n++;
      continue;
    }
    const v = Math.floor(rnd() * (vcpus + 0.2));
    const tid = v < vcpus ? tids[v] : 9999;
    const page = v < vcpus && rnd() < 0.9 ? v * slice + (next[v]++ % slice) : Math.floor(rnd() * vcpus * slice);
    const addr = BASE + page * PAGE;
    if (inFlight.some((p) => p.addr === addr)) continue;
    const r = rnd();
    const kind = r < 0.8 ? 'requested' : r < 0.9 ? 'in-flight' : r < 0.97 ? 'read-ahead' : 'received';
    yield `{"t":${t},"ev":"fault","addr":${addr},"tid":${tid},"kind":"${kind}"}`;
    inFlight.push({ addr, due: t + 5000 + Math.floor(rnd() * 195_000) });
    n++;
  }
  t += 1000;
  for (const tid of tids) yield `{"t":${t},"ev":"schedstat","tid":${tid},"run":${Math.floor((t - 1_000_000) / 3)},"wait":0}`;
  yield `{"t":${t},"ev":"end","status":"completed"}`;
}
