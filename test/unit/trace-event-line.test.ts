// The replay's reader of canonical event lines in a file's bytes
// (event-line.ts): what it reads is what JSON.parse reads, every line the
// trace file writes is canonical, and whatever it is not sure of goes back to
// JSON.parse (NOT_CANONICAL).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ADDR, CAUSE, EVENT_FIELDS, FAULT_LINE, NOT_CANONICAL, PLACED_LINE, PUSH_LINE, readEventLine, T, TID,
} from '../../src/blocktime-trace/event-line.js';
import { TraceFileSink } from '../../src/blocktime-trace/trace-file.js';
import { FAULT_KINDS } from '../../src/blocktime/trace.js';
import { mulberry32 } from '../helpers/prng.js';

const out = new Float64Array(EVENT_FIELDS);
/** readEventLine on the bytes of `line`, as the replay reads a file */
const read = (line: string): number => {
  const b = Buffer.from(`#${line}\n`); // not at offset 0, and a byte after it
  return readEventLine(b, 1, b.length - 1, out);
};
const CODE: Record<string, number> = { fault: FAULT_LINE, placed: PLACED_LINE, push: PUSH_LINE };

/** readEventLine agrees with JSON.parse on `line`. */
function agrees(line: string): void {
  const o = JSON.parse(line) as { t: number; ev: string; addr: number; tid?: number; kind?: string };
  expect(read(line)).toBe(CODE[o.ev]);
  expect(out[T]).toBe(o.t);
  expect(out[ADDR]).toBe(o.addr);
  if (o.ev === 'fault') {
    expect(out[TID]).toBe(o.tid);
    expect(out[CAUSE]).toBe(o.kind === undefined ? 0 : FAULT_KINDS.indexOf(o.kind as (typeof FAULT_KINDS)[number]));
  }
}

test('every line the trace file writes is read as JSON.parse reads it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'event-line-'));
  try {
    const path = join(dir, 't.jsonl');
    const sink = new TraceFileSink(path);
    const rnd = mulberry32(7);
    const big = () => Math.floor(rnd() * 2 ** (1 + Math.floor(rnd() * 49)));
    sink.header([1, 2], 0);
    for (let i = 0; i < 3000; i++) {
      const r = rnd();
      if (r < 0.5) sink.fault(big(), big(), Math.floor(rnd() * 2 ** 32), Math.floor(rnd() * FAULT_KINDS.length));
      else if (r < 0.8) sink.placed(big(), big());
      else sink.push(big(), big());
    }
    sink.fault(0, 0, 0, 0);
    sink.fault(999_999_999_999_999, 999_999_999_999_999, 0xffffffff, 1);
    sink.close();
    const lines = readFileSync(path, 'utf8').trimEnd().split('\n').slice(1);
    expect(lines.length).toBe(3002);
    for (const line of lines) agrees(line);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.each([
  ['spaces', '{"t": 1,"ev":"placed","addr":4096}'],
  ['another key order', '{"ev":"placed","t":1,"addr":4096}'],
  ['a trailing space', '{"t":1,"ev":"placed","addr":4096} '],
  ['a leading zero', '{"t":01,"ev":"placed","addr":4096}'],
  ['16 digits', '{"t":1,"ev":"placed","addr":1000000000000000}'],
  ['a fraction', '{"t":1.5,"ev":"placed","addr":4096}'],
  ['an exponent', '{"t":1,"ev":"placed","addr":4e3}'],
  ['a negative number', '{"t":-1,"ev":"placed","addr":4096}'],
  ['a tid above 32 bits', '{"t":1,"ev":"fault","addr":4096,"tid":4294967296}'],
  ['an unknown kind', '{"t":1,"ev":"fault","addr":4096,"tid":1,"kind":"pushed"}'],
  ['an empty kind', '{"t":1,"ev":"fault","addr":4096,"tid":1,"kind":""}'],
  ['a kind and more', '{"t":1,"ev":"fault","addr":4096,"tid":1,"kind":"requested","x":1}'],
  ['a fault with no tid', '{"t":1,"ev":"fault","addr":4096}'],
  ['a duplicate key', '{"t":1,"ev":"placed","addr":4096,"addr":8192}'],
  ['another event', '{"t":1,"ev":"end","status":"completed"}'],
  ['no closing brace', '{"t":1,"ev":"placed","addr":4096'],
  ['an escape', '{"t":1,"ev":"fault","addr":4096,"tid":1,"kind":"requeste\\u0064"}'],
  ['a CR before the end', '{"t":1,"ev":"placed","addr":4096}\r'],
  ['a number cut short', '{"t":'],
  ['a kind cut short', '{"t":1,"ev":"fault","addr":4096,"tid":1,"kind":"req'],
])('%s: not canonical, left to JSON.parse', (_, line) => {
  expect(read(line)).toBe(NOT_CANONICAL);
});

test('zeros and the largest canonical numbers', () => {
  agrees('{"t":0,"ev":"push","addr":0}');
  agrees('{"t":999999999999999,"ev":"fault","addr":999999999999999,"tid":4294967295,"kind":"unread"}');
  agrees('{"t":5,"ev":"fault","addr":8192,"tid":3}');
});
