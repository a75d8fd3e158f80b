// The HMP argument line, as QEMU's monitor reads it (monitor/hmp.c
// monitor_parse_arguments, get_str, qemu_strtosz_MiB): the args_type syntax of
// a command's table entry, then words, "quoted strings", integers, sizes,
// on/off and -x flags, into the typed ParsedArgs a handler receives. Errors
// are thrown as Error with QEMU's texts; the registry (src/monitor/registry.ts)
// prints them with "Try "help x" for more information".

import { CommandError } from '../errors.js';

export type ArgKind = 's' | 'S' | 'i' | 'l' | 'o' | 'b' | 'flag';

export interface ArgSpec {
  name: string;
  kind: ArgKind;
  optional: boolean;
  /** for kind 'flag': the option letter (`detach:-d` -> 'd') */
  flag?: string;
}

/** Parses QEMU's args_type syntax ("detach:-d,uri:s?") into specs. Throws
 *  Error on a malformed table entry (a programming error, not user input). */
export function parseArgsType(argsType: string): ArgSpec[] {
  if (argsType.trim() === '') return [];
  return argsType.split(',').map((part) => {
    const m = /^([A-Za-z0-9_-]+):(-([A-Za-z])|([sSilob])(\?)?)$/.exec(part.trim());
    if (!m) throw new Error(`bad args_type entry '${part}' in '${argsType}'`);
    if (m[3]) return { name: m[1], kind: 'flag', optional: true, flag: m[3] };
    return { name: m[1], kind: m[4] as ArgKind, optional: m[5] === '?' };
  });
}

/** The typed arguments a handler receives. */
export class ParsedArgs {
  constructor(private readonly values: ReadonlyMap<string, string | number | boolean>) {}
  has(name: string): boolean { return this.values.has(name); }
  /** a string argument (s, S); throws when absent */
  str(name: string): string {
    const v = this.values.get(name);
    if (typeof v !== 'string') throw new CommandError(`Parameter '${name}' is missing`);
    return v;
  }
  optStr(name: string): string | undefined {
    const v = this.values.get(name);
    return typeof v === 'string' ? v : undefined;
  }
  /** an integer or size argument (i, l, o); throws when absent */
  int(name: string): number {
    const v = this.values.get(name);
    if (typeof v !== 'number') throw new CommandError(`Parameter '${name}' is missing`);
    return v;
  }
  optInt(name: string): number | undefined {
    const v = this.values.get(name);
    return typeof v === 'number' ? v : undefined;
  }
  /** an on/off argument (b); throws when absent */
  bool(name: string): boolean {
    const v = this.values.get(name);
    if (typeof v !== 'boolean') throw new CommandError(`Parameter '${name}' is missing`);
    return v;
  }
  /** a -x flag: true when given */
  flag(name: string): boolean { return this.values.get(name) === true; }
  toObject(): Record<string, string | number | boolean> { return Object.fromEntries(this.values); }
}

/** Escapes what a terminal would act on: C0/C1 control characters become
 *  \xNN and the replacement character (what undecodable bytes turn into)
 *  \ufffd; line breaks stay when `keepNewlines`. */
export function escapeControls(s: string, keepNewlines = false): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f-\x9f\ufffd]/g, (c) => {
    if (keepNewlines && c === '\n') return c;
    const code = c.charCodeAt(0);
    return code > 0xff ? `\\u${code.toString(16)}` : `\\x${code.toString(16).padStart(2, '0')}`;
  });
}

/** Makes a piece of input safe to echo in a message: escaped, long texts cut. */
export function printable(s: string, max = 80): string {
  const safe = escapeControls(s.length > max ? s.slice(0, max) : s);
  return s.length > max ? `${safe}...` : safe;
}

export const isSpace = (c: string | undefined): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\v' || c === '\f';

/** A position in the line being parsed. */
export class Cursor {
  pos = 0;
  constructor(readonly s: string) {}
  skipSpace(): void { while (this.pos < this.s.length && isSpace(this.s[this.pos])) this.pos++; }
  atEnd(): boolean { return this.pos >= this.s.length; }
  peek(): string | undefined { return this.s[this.pos]; }
  rest(): string { return this.s.slice(this.pos); }
}

/** QEMU's get_str: one word, or a double-quoted string with \n \r \\ \' \"
 *  escapes. Returns undefined at end of line; throws a message on a bad
 *  quoted string. */
function getStr(c: Cursor): string | undefined {
  c.skipSpace();
  if (c.atEnd()) return undefined;
  if (c.peek() === '"') {
    c.pos++;
    let out = '';
    while (!c.atEnd() && c.peek() !== '"') {
      let ch = c.s[c.pos++];
      if (ch === '\\') {
        const e = c.s[c.pos++];
        if (e === 'n') ch = '\n';
        else if (e === 'r') ch = '\r';
        else if (e === '\\' || e === '\'' || e === '"') ch = e;
        else throw new Error(`unsupported escape code: '\\${e ?? ''}'`);
      }
      out += ch;
    }
    if (c.peek() !== '"') throw new Error('unterminated string');
    c.pos++;
    return out;
  }
  const start = c.pos;
  while (!c.atEnd() && !isSpace(c.peek())) c.pos++;
  return c.s.slice(start, c.pos);
}

/** Parses an HMP integer: decimal, 0x hex or 0 octal, with an optional sign. */
function getInt(c: Cursor): number {
  c.skipSpace();
  if (c.atEnd()) throw new Error('unexpected end of expression');
  const m = /^[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)/.exec(c.rest());
  if (!m) throw new Error(`invalid char '${printable(c.peek() ?? '', 1)}' in expression`);
  c.pos += m[0].length;
  if (!c.atEnd() && !isSpace(c.peek())) throw new Error(`invalid char '${printable(c.peek() ?? '', 1)}' in expression`);
  const neg = m[0].startsWith('-');
  const body = m[0].replace(/^[+-]/, '');
  const v = body.startsWith('0x') || body.startsWith('0X') ? parseInt(body.slice(2), 16)
    : body.length > 1 && body.startsWith('0') ? parseInt(body, 8) : parseInt(body, 10);
  if (!Number.isSafeInteger(v)) throw new Error('number too large');
  return neg ? -v : v;
}

const SIZE_UNITS: Record<string, number> = { b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/** QEMU's qemu_strtosz_MiB on one word: a number with an optional
 *  B/K/M/G/T/P/E suffix, MiB when there is none. Undefined when invalid. */
export function parseSizeMiB(word: string): number | undefined {
  const m = /^([0-9]+(?:\.[0-9]+)?)([bBkKmMgGtTpPeE])?$/.exec(word);
  if (!m) return undefined;
  const v = Number(m[1]) * SIZE_UNITS[(m[2] ?? 'm').toLowerCase()];
  if (!Number.isFinite(v) || v > Number.MAX_SAFE_INTEGER) return undefined;
  if (!Number.isInteger(v)) return undefined;
  return v;
}

/** QEMU's monitor_parse_arguments over our ArgSpecs. Throws Error with the
 *  text QEMU prints. */
export function parseArguments(name: string, argsType: string, c: Cursor): ParsedArgs {
  const values = new Map<string, string | number | boolean>();
  const specs = parseArgsType(argsType);
  let flagsDone = false;
  for (const spec of specs) {
    c.skipSpace();
    switch (spec.kind) {
      case 'flag': {
        // QEMU reads options in table order; we accept the command's flags in
        // any order, all of them at the first flag spec.
        if (flagsDone) break;
        flagsDone = true;
        while (c.peek() === '-') {
          const letter = c.s[c.pos + 1];
          const follows = c.s[c.pos + 2];
          const owner = specs.find((s) => s.kind === 'flag' && s.flag === letter);
          if (!owner || (follows !== undefined && !isSpace(follows))) {
            throw new Error(`${name}: unsupported option -${printable(letter ?? '', 1)}`);
          }
          c.pos += 2;
          values.set(owner.name, true);
          c.skipSpace();
        }
        break;
      }
      case 's': {
        if (spec.optional && c.atEnd()) break;
        let v: string | undefined;
        try { v = getStr(c); } catch (e) { throw new Error(`${name}: ${(e as Error).message}`); }
        if (v === undefined) throw new Error(`${name}: string expected`);
        values.set(spec.name, v);
        break;
      }
      case 'S': {
        if (spec.optional && c.atEnd()) break;
        const rest = c.rest().trimEnd();
        if (rest === '') throw new Error(`${name}: string expected`);
        values.set(spec.name, rest);
        c.pos = c.s.length;
        break;
      }
      case 'i':
      case 'l': {
        if (spec.optional && c.atEnd()) break;
        const v = getInt(c);
        if (spec.kind === 'i' && (v > 0xffffffff || v < -0x80000000)) {
          throw new Error(`'${name}' has failed: integer is for 32-bit values`);
        }
        values.set(spec.name, v);
        break;
      }
      case 'o': {
        if (spec.optional && c.atEnd()) break;
        const word = getStr(c);
        const v = word === undefined ? undefined : parseSizeMiB(word);
        if (v === undefined) throw new Error('invalid size');
        values.set(spec.name, v);
        break;
      }
      case 'b': {
        const start = c.pos;
        while (!c.atEnd() && !isSpace(c.peek())) c.pos++;
        const w = c.s.slice(start, c.pos);
        if (w === 'on') values.set(spec.name, true);
        else if (w === 'off') values.set(spec.name, false);
        else throw new Error("Expected 'on' or 'off'");
        break;
      }
    }
  }
  c.skipSpace();
  if (!c.atEnd()) throw new Error(`${name}: extraneous characters at the end of line`);
  return new ParsedArgs(values);
}
