// The three event lines a destination writes a million times
// (trace-file.ts), read in place from the file's bytes, without decoding
// them to a string or calling JSON.parse: {"t":N,"ev":"fault","addr":N,
// "tid":N[,"kind":"K"]}, {"t":N,"ev":"placed","addr":N} and
// {"t":N,"ev":"push","addr":N}, exactly so (matched against the writer's
// own bytes), into a reused Float64Array.
// Decoding, slicing and JSON.parse made two strings and an object per line
// and were most of a large trace's replay. Anything else (other spacing or
// key order, a number of 16 digits or more, a leading zero, an unknown
// "kind", a tid above 32 bits, a CR, ...) is "not canonical": the replay
// decodes it and reads it with JSON.parse and its checks, which give the
// error if there is one. So a line read here gives the values JSON.parse
// gives, and a line that would be refused is never read here.

import { FAULT_ADDR, FAULT_KIND, FAULT_TID, PLACED_ADDR, PUSH_ADDR, T_OPEN } from './trace-file.js';

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

/** Whether b[i..] starts with `lit` (before `end`). */
function has(b: Uint8Array, i: number, end: number, lit: Uint8Array): boolean {
  if (i + lit.length > end) return false;
  for (let k = 0; k < lit.length; k++) if (b[i + k] !== lit[k]) return false;
  return true;
}

/** Reads the unsigned integer at b[i] into out[NUM]: the index after it, or -1
 *  (no digit, a leading zero, or 16 digits and more: safe integers only). */
function uint(b: Uint8Array, i: number, end: number, out: Float64Array): number {
  const from = i;
  if (i < end && b[i] === 48) {
    if (i + 1 < end && b[i + 1] >= 48 && b[i + 1] <= 57) return -1;
    out[NUM] = 0;
    return i + 1;
  }
  let v = 0;
  while (i < end && b[i] >= 48 && b[i] <= 57) v = v * 10 + (b[i++] - 48);
  if (i === from || i - from > 15) return -1;
  out[NUM] = v;
  return i;
}

/** The kind of canonical event line b[from, end) is (its fields in `out`), or NOT_CANONICAL. */
export function readEventLine(b: Uint8Array, from: number, end: number, out: Float64Array): number {
  if (!has(b, from, end, T_OPEN)) return NOT_CANONICAL;
  let i = uint(b, from + T_OPEN.length, end, out);
  if (i < 0) return NOT_CANONICAL;
  out[T] = out[NUM];
  let ev: number;
  if (has(b, i, end, FAULT_ADDR)) { ev = FAULT_LINE; i += FAULT_ADDR.length; }
  else if (has(b, i, end, PLACED_ADDR)) { ev = PLACED_LINE; i += PLACED_ADDR.length; }
  else if (has(b, i, end, PUSH_ADDR)) { ev = PUSH_LINE; i += PUSH_ADDR.length; }
  else return NOT_CANONICAL;
  i = uint(b, i, end, out);
  if (i < 0) return NOT_CANONICAL;
  out[ADDR] = out[NUM];
  if (ev === FAULT_LINE) {
    if (!has(b, i, end, FAULT_TID)) return NOT_CANONICAL;
    i = uint(b, i + FAULT_TID.length, end, out);
    if (i < 0 || out[NUM] > MAX_TID) return NOT_CANONICAL;
    out[TID] = out[NUM];
    out[CAUSE] = 0;
    if (b[i] === 44 /* , */) {
      let cause = 1;
      while (cause < FAULT_KIND.length && !has(b, i, end, FAULT_KIND[cause])) cause++;
      if (cause === FAULT_KIND.length) return NOT_CANONICAL;
      out[CAUSE] = cause;
      i += FAULT_KIND[cause].length;
    }
  }
  return i === end - 1 && b[i] === 125 /* } */ ? ev : NOT_CANONICAL;
}
