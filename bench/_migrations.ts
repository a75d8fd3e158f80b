// What the benchmarks that run whole migrations share (files starting with
// `_` are not benchmarks: run.ts skips them): medians, rounding, the check
// that a run completed on both sides, and a destination's resident memory
// beyond its guest RAM.
import { readFileSync } from 'node:fs';
import type { BatchResult } from '../src/migration/batch.js';

const MiB = 1024 * 1024;

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function checkCompleted(r: BatchResult, what: string): void {
  if (r.source.status !== 'completed' || r.destination.status !== 'completed') {
    throw new Error(`${what}: source ${r.source.status}, destination ${r.destination.status} ` +
      `(${r.source['error-desc'] ?? r.destination['error-desc'] ?? 'no error given'})`);
  }
}

export const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

/** Resident bytes of a process beyond its guest RAM, from /proc/PID/smaps.
 *  The guest RAM mapping is the anonymous read-write mapping at least
 *  `ramBytes` long and less than 16 MiB longer (the kernel may merge it with
 *  a neighbouring anonymous mapping); its Rss is left out, except for that
 *  neighbour's share, counted as if all of it were resident (an upper bound). */
export function residentBeyondGuestRam(pid: number, ramBytes: number): number {
  const text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  let total = 0;
  let inRam = false;
  let ramFound = false;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const size = parseInt(head[2], 16) - parseInt(head[1], 16);
      const anonymous = head[3] === 'rw-p' && head[4] === '0' && head[5] === '';
      inRam = !ramFound && anonymous && size >= ramBytes && size < ramBytes + 16 * MiB;
      if (inRam) { ramFound = true; total += size - ramBytes; }
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && !inRam) total += Number(rss[1]) * 1024;
  }
  if (!ramFound) throw new Error(`no guest RAM mapping of ${ramBytes} bytes in /proc/${pid}/smaps`);
  return total;
}
