// QMP's wire format: the stream splitter cuts what real clients send into
// values (several per line, split across writes, \r\n, blank lines), reports
// malformed input with QEMU's texts and resynchronises, and bounds memory;
// the serializer writes what QEMU's qobject_to_json writes.
import { QmpStreamSplitter, toQmpJson, diagnose, type SplitResult } from '../../src/monitor/qmp-framing.js';

function split(inputs: (string | Buffer)[], max?: number): SplitResult[] {
  const out: SplitResult[] = [];
  const s = new QmpStreamSplitter((r) => out.push(r), max);
  for (const i of inputs) s.feed(typeof i === 'string' ? Buffer.from(i, 'utf8') : i);
  return out;
}

describe('QmpStreamSplitter', () => {
  test('several requests on one line, with and without separators', () => {
    expect(split(['{"execute": "a"} {"execute": "b"}{"execute":"c"}\r\n'])).toEqual([
      { value: { execute: 'a' } }, { value: { execute: 'b' } }, { value: { execute: 'c' } },
    ]);
  });

  test("the seed's printf input: \\r\\n and a request spread over lines", () => {
    const input = '{"execute" : "qmp_capabilities"}\r\n {"execute": "migrate-set-capabilities" , "arguments":   {\n'
      + '"capabilities": [ { "capability": "postcopy-blocktime", "state":\ntrue } ] } }';
    expect(split([input])).toEqual([
      { value: { execute: 'qmp_capabilities' } },
      { value: { execute: 'migrate-set-capabilities', arguments: { capabilities: [{ capability: 'postcopy-blocktime', state: true }] } } },
    ]);
  });

  test('one request fed one byte at a time', () => {
    const text = '{"execute": "query-status", "id": {"a": [1, "}"]}}';
    const bytes = [...Buffer.from(text)].map((b) => Buffer.from([b]));
    expect(split(bytes)).toEqual([{ value: { execute: 'query-status', id: { a: [1, '}'] } } }]);
  });

  test('a multi-byte UTF-8 character split across two writes', () => {
    const b = Buffer.from('{"id": "é€😀"}');
    const cut = b.indexOf(0xe2) + 1; // inside the euro sign
    expect(split([b.subarray(0, cut), b.subarray(cut)])).toEqual([{ value: { id: 'é€😀' } }]);
  });

  test('blank lines and whitespace between requests produce nothing', () => {
    expect(split(['\r\n\r\n   \t\n', '{"x": 1}', '\n\n'])).toEqual([{ value: { x: 1 } }]);
  });

  test('braces and escaped quotes inside strings do not count', () => {
    expect(split(['{"a": "}{][", "b": "\\"}"}'])).toEqual([{ value: { a: '}{][', b: '"}' } }]);
  });

  test('top-level values that are no objects are delivered for the server to refuse', () => {
    expect(split(['42 "x" [1, 2] true '])).toEqual([{ value: 42 }, { value: 'x' }, { value: [1, 2] }, { value: true }]);
  });

  test('malformed JSON: QEMU-style error, then the next request parses', () => {
    expect(split(['{"execute": foo}{"execute": "b"}'])).toEqual([
      { error: "JSON parse error, invalid keyword 'foo'" }, { value: { execute: 'b' } },
    ]);
    expect(split(['{"execute" "a"}\n{"execute": "b"}'])).toEqual([
      { error: 'JSON parse error, missing : in object pair' }, { value: { execute: 'b' } },
    ]);
    expect(split(['{"a": 1 "b": 2}'])).toEqual([{ error: 'JSON parse error, expected separator in dict' }]);
    expect(split(['{"a": 1,}'])).toEqual([{ error: 'JSON parse error, key is not a string in object' }]);
    expect(split(['[1,]'])).toEqual([{ error: 'JSON parse error, Missing value in list' }]);
    expect(split(['}'])).toEqual([{ error: 'JSON parse error, expecting value' }]);
  });

  test('a stray byte drops the partial request (0xFF resynchronises, as in QEMU)', () => {
    const out = split([Buffer.from('{"execute": "half'), Buffer.from([0xff]), Buffer.from('\n{"execute": "b"}')]);
    expect(out).toEqual([{ error: "JSON parse error, stray '\\xff'" }, { value: { execute: 'b' } }]);
    expect(split(['@@@ garbage\n{"execute": "c"}'])).toEqual([
      { error: "JSON parse error, stray '@'" }, { value: { execute: 'c' } },
    ]);
  });

  test('a huge garbage line costs one error and bounded memory, then parsing goes on', () => {
    const max = 64 * 1024;
    const out: SplitResult[] = [];
    const s = new QmpStreamSplitter((r) => out.push(r), max);
    s.feed(Buffer.from('{"execute": "'));
    const junk = Buffer.alloc(256 * 1024, 'a');
    for (let i = 0; i < 40; i++) s.feed(junk); // 10 MiB
    expect(s.midMessage).toBe(false); // nothing of it is buffered any more
    s.feed(Buffer.from('"}\n{"execute": "after"}'));
    expect(out[0]).toEqual({ error: 'JSON token size limit exceeded' });
    expect(out[out.length - 1]).toEqual({ value: { execute: 'after' } });
    expect(out.length).toBeLessThanOrEqual(3);
  });

  test('a request just under the limit passes; just over it is refused', () => {
    const body = (n: number): string => `{"a": "${'x'.repeat(n)}"}`;
    expect(split([body(1000 - 9)], 1000)).toEqual([{ value: { a: 'x'.repeat(991) } }]);
    expect(split([body(1000 - 8)], 1000)).toEqual([{ error: 'JSON token size limit exceeded' }]);
  });

  test('nesting deeper than 1024 is refused', () => {
    const out = split(['['.repeat(1100) + ']'.repeat(1100) + ' {"ok": true}']);
    expect(out[0]).toEqual({ error: 'JSON nesting depth limit exceeded' });
    expect(out[out.length - 1]).toEqual({ value: { ok: true } });
  });

  test('end of input inside a request reports it', () => {
    const out: SplitResult[] = [];
    const s = new QmpStreamSplitter((r) => out.push(r));
    s.feed(Buffer.from('{"execute": "x"'));
    s.end();
    expect(out).toEqual([{ error: 'JSON parse error, premature EOI' }]);
  });
});

describe('diagnose', () => {
  test('names what is wrong like json-parser.c', () => {
    expect(diagnose('{"a": tru}')).toBe("invalid keyword 'tru'");
    expect(diagnose('{"a": 01}')).toBe("invalid number '01'");
    expect(diagnose('{"a": "\\q"}')).toBe('invalid escape sequence in string');
    expect(diagnose('{"a": }')).toBe('Missing value in dict');
  });
});

describe('toQmpJson', () => {
  test("QEMU's separators and member order", () => {
    expect(toQmpJson({ return: {}, id: 1 })).toBe('{"return": {}, "id": 1}');
    expect(toQmpJson({ a: [1, 2, { b: null }], c: true, d: 'x' })).toBe('{"a": [1, 2, {"b": null}], "c": true, "d": "x"}');
    expect(toQmpJson([])).toBe('[]');
    expect(toQmpJson({ skip: undefined, keep: 0 })).toBe('{"keep": 0}');
  });

  test('escapes like qobject_to_json: control and non-ASCII as \\uXXXX, surrogate pairs beyond the BMP', () => {
    expect(toQmpJson('a"b\\c\n\r\t\b\f')).toBe('"a\\"b\\\\c\\n\\r\\t\\b\\f"');
    expect(toQmpJson('\u0001\u007f')).toBe('"\\u0001\\u007F"');
    expect(toQmpJson('é😀')).toBe('"\\u00E9\\uD83D\\uDE00"');
    expect(toQmpJson('a/b')).toBe('"a/b"');
  });

  test('round-trips through JSON.parse', () => {
    const v = { s: 'ünï\u0000cøde 😀 "q"', n: -1.5, arr: [[], {}, [null]], big: 2 ** 53 - 1 };
    expect(JSON.parse(toQmpJson(v))).toEqual(v);
  });
});
