// The three event lines a destination writes a million times
// (trace-file.ts), read without JSON.parse: {"t":N,"ev":"fault","addr":N,
// "tid":N[,"kind":"K"]}, {"t":N,"ev":"placed","addr":N} and
// {"t":N,"ev":"push","addr":N}, exactly so, into a reused Float64Array.
// JSON.parse made an object per line and was most of a large trace's replay.
// Anything else (other spacing or key order, a number of 16 digits or more,
// a leading zero, an unknown "kind", a tid above 32 bits, ...) is "not
// canonical" and goes through JSON.parse and the replay's checks, which give
// the error if there is one; so a line read here gives the same values as
// JSON.parse, and a line that would fail is never read here.

import { FAULT_KINDS } from '../blocktime/trace.js';

export const NOT_CANONICAL = 0;
export const FAULT_LINE = 1;
export const PLACED_LINE = 2;
export const PUSH_LINE = 3;

/** out[] fields */
export const T = 0;
export const ADDR = 1;
export const TID = 2;
/** the FaultCause (FAULT_KINDS index; 0 when the line has no "kind") */
export const CAUSE = 3;
const NUM = 4;
/** the length of out[] */
export const EVENT_FIELDS = 5;

export const MAX_TID = 0xffffffff;
/** `"kind":"K"` followed by the closing quote, per FaultCause */
const KIND_QUOTED = FAULT_KINDS.map((k) => `${k}"`);

/** Reads the unsigned integer at `i` into out[NUM]: the index after it, or -1
 *  (no digit, a leading zero, or 16 digits and more: safe integers only). */
function uint(s: string, i: number, out: Float64Array): number {
  const from = i;
  let c = s.charCodeAt(i);
  if (c === 48) {
    c = s.charCodeAt(i + 1);
    if (c >= 48 && c <= 57) return -1;
    out[NUM] = 0;
    return i + 1;
  }
  let v = 0;
  while (c >= 48 && c <= 57) {
    v = v * 10 + (c - 48);
    c = s.charCodeAt(++i);
  }
  if (i === from || i - from > 15) return -1;
  out[NUM] = v;
  return i;
}

/** The kind of canonical event line `s` is (its fields in `out`), or NOT_CANONICAL. */
export function readEventLine(s: string, out: Float64Array): number {
  if (!s.startsWith('{"t":')) return NOT_CANONICAL;
  let i = uint(s, 5, out);
  if (i < 0) return NOT_CANONICAL;
  out[T] = out[NUM];
  let ev: number;
  if (s.startsWith(',"ev":"fault","addr":', i)) { ev = FAULT_LINE; i += 21; }
  else if (s.startsWith(',"ev":"placed","addr":', i)) { ev = PLACED_LINE; i += 22; }
  else if (s.startsWith(',"ev":"push","addr":', i)) { ev = PUSH_LINE; i += 20; }
  else return NOT_CANONICAL;
  i = uint(s, i, out);
  if (i < 0) return NOT_CANONICAL;
  out[ADDR] = out[NUM];
  if (ev === FAULT_LINE) {
    if (!s.startsWith(',"tid":', i)) return NOT_CANONICAL;
    i = uint(s, i + 7, out);
    if (i < 0 || out[NUM] > MAX_TID) return NOT_CANONICAL;
    out[TID] = out[NUM];
    out[CAUSE] = 0;
    if (s.startsWith(',"kind":"', i)) {
      i += 9;
      let cause = 1;
      while (cause < KIND_QUOTED.length && !s.startsWith(KIND_QUOTED[cause], i)) cause++;
      if (cause === KIND_QUOTED.length) return NOT_CANONICAL;
      out[CAUSE] = cause;
      i += KIND_QUOTED[cause].length;
    }
  }
  return i === s.length - 1 && s.charCodeAt(i) === 125 /* } */ ? ev : NOT_CANONICAL;
}
