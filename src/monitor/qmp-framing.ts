// QMP's wire format, both ways. Input: a byte stream in which JSON values
// arrive several to a line, split across packets, with \r\n or blank lines
// between them; QmpStreamSplitter cuts it into whole values the way QEMU's
// JSON streamer does (brace/bracket depth, not newlines), reports malformed
// input with QEMU's "JSON parse error, ..." texts, resynchronises like
// QEMU's lexer, and bounds what it buffers. Output: toQmpJson() serializes
// like QEMU's qobject_to_json (": " and ", " separators, non-ASCII as \uXXXX).

/** QEMU's limits (json-streamer.c) except the size: we cap one message at 1 MiB by default. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1 << 20;
export const MAX_NESTING = 1024;

export type SplitResult = { value: unknown } | { error: string };

const enum S { Start, Value, Str, StrEsc, Scalar, Recovery }

const SP = 0x20, TAB = 0x09, LF = 0x0a, CR = 0x0d;
const LBRACE = 0x7b, RBRACE = 0x7d, LBRACK = 0x5b, RBRACK = 0x5d, QUOTE = 0x22, BSLASH = 0x5c;
const COLON = 0x3a, COMMA = 0x2c;

function isScalarByte(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
    || c === 0x2d || c === 0x2b || c === 0x2e;
}
/** bytes that end QEMU's lexer error recovery (IN_RECOVERY) */
function endsRecovery(c: number): boolean {
  return (c < 0x20 && c !== TAB) || c >= 0xfe || c === LBRACE || c === RBRACE || c === LBRACK || c === RBRACK
    || c === COLON || c === COMMA;
}
function strayText(c: number): string {
  if (c >= 0x20 && c < 0x7f) return String.fromCharCode(c);
  return `\\x${c.toString(16).padStart(2, '0')}`;
}

/**
 * Feed bytes in; get one callback per complete JSON value (parsed) or per
 * error. Memory is bounded by maxMessageBytes: a longer value is reported
 * ("JSON token size limit exceeded") and skipped.
 */
export class QmpStreamSplitter {
  private state = S.Start;
  private depth = 0;
  private pieces: Buffer[] = [];
  private size = 0;

  constructor(private readonly onResult: (r: SplitResult) => void,
              private readonly maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES) {}

  /** true while part of a value is buffered */
  get midMessage(): boolean { return this.state !== S.Start && this.state !== S.Recovery; }

  feed(chunk: Buffer): void {
    // start of the current value's bytes in this chunk (0: it began in an earlier one)
    let begin = this.midMessage ? 0 : -1;
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      const c = chunk[i];
      switch (this.state) {
        case S.Start:
          if (c === SP || c === TAB || c === LF || c === CR) { i++; continue; }
          if (c === LBRACE || c === LBRACK) { this.state = S.Value; this.depth = 1; begin = i; i++; continue; }
          if (c === QUOTE) { this.state = S.Str; this.depth = 0; begin = i; i++; continue; }
          if (isScalarByte(c)) { this.state = S.Scalar; begin = i; i++; continue; }
          i++;
          if (c === RBRACE || c === RBRACK || c === COLON || c === COMMA) {
            this.onResult({ error: 'JSON parse error, expecting value' });
          } else {
            this.onResult({ error: `JSON parse error, stray '${strayText(c)}'` });
            this.state = S.Recovery;
          }
          continue;
        case S.Recovery:
          if (endsRecovery(c)) { this.state = S.Start; continue; } // re-read c in Start
          i++;
          continue;
        case S.Scalar:
          if (isScalarByte(c)) { i++; continue; }
          this.finish(chunk, begin, i); begin = -1;
          continue; // re-read c in Start
        case S.Str:
          if (c === QUOTE) {
            i++;
            if (this.depth === 0) { this.finish(chunk, begin, i); begin = -1; } else this.state = S.Value;
            continue;
          }
          if (c === BSLASH) { this.state = S.StrEsc; i++; continue; }
          if (c < 0x20 || c >= 0xfe) { this.stray(c); begin = -1; i++; continue; }
          i++;
          continue;
        case S.StrEsc:
          if (c < 0x20 || c >= 0xfe) { this.stray(c); begin = -1; i++; continue; }
          this.state = S.Str; i++;
          continue;
        case S.Value:
          if (c === QUOTE) { this.state = S.Str; i++; continue; }
          if (c === LBRACE || c === LBRACK) {
            if (++this.depth > MAX_NESTING) {
              this.discard('JSON nesting depth limit exceeded'); begin = -1; i++; continue;
            }
            i++; continue;
          }
          if (c === RBRACE || c === RBRACK) {
            i++;
            if (--this.depth === 0) { this.finish(chunk, begin, i); begin = -1; }
            continue;
          }
          if ((c < 0x20 && c !== TAB && c !== LF && c !== CR) || c >= 0xfe) { this.stray(c); begin = -1; i++; continue; }
          i++;
          continue;
      }
    }
    if (begin >= 0 && (this.state === S.Value || this.state === S.Str || this.state === S.StrEsc || this.state === S.Scalar)) {
      this.keep(chunk.subarray(begin, n));
    }
  }

  /** end of input: a value still open is reported as incomplete */
  end(): void {
    if (this.state === S.Scalar) { this.finishPieces(); return; }
    if (this.midMessage) this.discard('JSON parse error, premature EOI');
    this.state = S.Start;
  }

  private keep(b: Buffer): void {
    if (b.length === 0) return;
    this.size += b.length;
    if (this.size > this.maxMessageBytes) { this.discard('JSON token size limit exceeded'); return; }
    this.pieces.push(b);
  }

  private finish(chunk: Buffer, begin: number, end: number): void {
    const tail = chunk.subarray(begin < 0 ? 0 : begin, end);
    if (this.size + tail.length > this.maxMessageBytes) { this.discard('JSON token size limit exceeded'); this.state = S.Start; return; }
    if (this.pieces.length === 0) {
      this.reset();
      this.deliver(tail);
      return;
    }
    this.pieces.push(tail);
    this.finishPieces();
  }

  private finishPieces(): void {
    const all = Buffer.concat(this.pieces);
    this.reset();
    this.deliver(all);
  }

  private deliver(bytes: Buffer): void {
    const text = bytes.toString('utf8');
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.onResult({ error: `JSON parse error, ${diagnose(text)}` });
      return;
    }
    this.onResult({ value });
  }

  private stray(c: number): void {
    this.pieces = []; this.size = 0; this.depth = 0;
    this.onResult({ error: `JSON parse error, stray '${strayText(c)}'` });
    this.state = S.Recovery;
  }

  private discard(message: string): void {
    this.pieces = []; this.size = 0; this.depth = 0;
    this.onResult({ error: message });
    this.state = S.Recovery;
  }

  private reset(): void {
    this.pieces = []; this.size = 0; this.depth = 0;
    this.state = S.Start;
  }
}

/** Why `text` (one balanced value that JSON.parse refused) is not JSON, in
 *  the words of QEMU's json-parser.c. */
export function diagnose(text: string): string {
  let i = 0;
  const ws = (): void => { while (i < text.length && /[ \t\r\n]/.test(text[i])) i++; };
  class Fail extends Error {}
  const fail = (m: string): never => { throw new Fail(m); };
  const str = (): void => {
    const q = text[i++];
    while (i < text.length && text[i] !== q) {
      if (text[i] === '\\') {
        const e = text[i + 1];
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('invalid hex escape sequence in string');
          i += 6;
          continue;
        }
        if (e === undefined || !'"\'\\/bfnrt'.includes(e)) fail('invalid escape sequence in string');
        i += 2;
        continue;
      }
      i++;
    }
    if (i >= text.length) fail('premature EOI');
    i++;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === undefined) fail('premature EOI');
    if (c === '{') {
      i++; ws();
      if (text[i] === '}') { i++; return; }
      for (;;) {
        ws();
        if (text[i] !== '"' && text[i] !== "'") {
          if (text[i] === undefined) fail('premature EOI');
          fail('key is not a string in object');
        }
        str(); ws();
        if (text[i] !== ':') fail('missing : in object pair');
        i++; ws();
        if (text[i] === '}' || text[i] === ',' || text[i] === undefined) fail('Missing value in dict');
        value(); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return; }
        fail('expected separator in dict');
      }
    }
    if (c === '[') {
      i++; ws();
      if (text[i] === ']') { i++; return; }
      for (;;) {
        ws();
        if (text[i] === ']' || text[i] === ',' || text[i] === undefined) fail('Missing value in list');
        value(); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return; }
        fail('expected separator in list');
      }
    }
    if (c === '"' || c === "'") { str(); return; }
    const m = /^[A-Za-z0-9.+-]+/.exec(text.slice(i));
    if (!m) fail('expecting value');
    const tok = m![0];
    if (/^[A-Za-z]/.test(tok)) {
      if (tok !== 'true' && tok !== 'false' && tok !== 'null') fail(`invalid keyword '${tok}'`);
    } else if (!/^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(tok)) {
      fail(`invalid number '${tok}'`);
    }
    i += tok.length;
  };
  try {
    value(); ws();
    if (i < text.length) return 'expecting value';
    // balanced and well formed by these rules but refused by JSON.parse: QEMU's
    // single-quoted strings or invalid UTF-8, which we do not accept
    return 'unsupported input (single-quoted strings or invalid UTF-8)';
  } catch (e) {
    if (e instanceof Fail) return e.message;
    throw e;
  }
}

function quote(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    switch (c) {
      case 0x22: out += '\\"'; break;
      case 0x5c: out += '\\\\'; break;
      case 0x08: out += '\\b'; break;
      case 0x0c: out += '\\f'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0d: out += '\\r'; break;
      case 0x09: out += '\\t'; break;
      default:
        // UTF-16 code units: a character beyond the BMP comes out as its surrogate pair, as QEMU writes it
        if (c < 0x20 || c >= 0x7f) out += `\\u${c.toString(16).toUpperCase().padStart(4, '0')}`;
        else out += s[i];
    }
  }
  return `${out}"`;
}

/** Serializes like QEMU's qobject_to_json (not pretty). undefined members are left out. */
export function toQmpJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  switch (typeof v) {
    case 'string': return quote(v);
    case 'boolean': return v ? 'true' : 'false';
    case 'number': return Number.isFinite(v) ? String(v) : 'null';
    case 'bigint': return v.toString();
    case 'object': {
      if (Array.isArray(v)) return `[${v.map(toQmpJson).join(', ')}]`;
      const parts: string[] = [];
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (x === undefined || typeof x === 'function') continue;
        parts.push(`${quote(k)}: ${toQmpJson(x)}`);
      }
      return `{${parts.join(', ')}}`;
    }
    default: return 'null';
  }
}
