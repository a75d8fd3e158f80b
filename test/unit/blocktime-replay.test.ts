// Traces: recording through the file sink and replaying gives the same report;
// every kind of bad trace is refused with an error naming the file and line;
// the subcommand's exit codes and output modes.
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { BlocktimeContext } from '../../src/blocktime/context.js';
import { PageStateMap, PostcopyRules } from '../../src/blocktime/rules.js';
import { replayTrace } from '../../src/blocktime-trace/replay.js';
import { main } from '../../src/blocktime-trace/replay-command.js';
import { TraceFileSink, openTraceFile } from '../../src/blocktime-trace/trace-file.js';
import { mulberry32 } from '../helpers/prng.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'blocktime-replay-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

/** Drives a recording context, through the postcopy rules as the destination
 *  does, with `events` random events; returns it and its clock. */
function record(path: string, events: number, seed: number) {
  const rnd = mulberry32(seed);
  const tids = [4101, 4102, 4103, 4104];
  const clock = { now: 1_000_000 };
  const migration = new EventEmitter();
  const ctx = new BlocktimeContext({
    vcpuThreadIds: tids, clock: () => clock.now, migrationEvents: migration, exitEvents: null, trace: new TraceFileSink(path),
  });
  const rules = new PostcopyRules(new PageStateMap(), [ctx]);
  const pending: number[] = [];
  for (let i = 0; i < events; i++) {
    clock.now += 1 + Math.floor(rnd() * 200_000);
    if (rnd() < 0.55 || pending.length === 0) {
      const addr = rnd() < 0.2 && pending.length > 0 ? pending[0] : 0x7ffd_0000_0000 + Math.floor(rnd() * 1e6) * 4096;
      rules.fault(clock.now, addr, rnd() < 0.1 ? 77 : tids[Math.floor(rnd() * tids.length)]);
      pending.push(addr);
    } else {
      const k = Math.floor(rnd() * pending.length);
      rules.placed(clock.now, pending[k]);
      pending.splice(k, 1);
    }
  }
  return { ctx, clock, migration };
}

describe('trace round trip', () => {
  test('a failed migration: record through the file sink, replay, the same final report', async () => {
    const path = join(dir, 'failed.jsonl');
    const { ctx, clock, migration } = record(path, 20_000, 1); // well past one 64 KiB buffer
    expect(ctx.pending).toBeGreaterThan(0);
    clock.now += 5000;
    migration.emit('migration', 'failed');
    const want = ctx.report();
    expect(want['x-blocktime'].state).toBe('final');
    const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
    expect(JSON.parse(lines[0])).toEqual({ vcpus: [4101, 4102, 4103, 4104], t0: 1_000_000 });
    expect(JSON.parse(lines[1])).toEqual({ t: expect.any(Number), ev: 'fault', addr: expect.any(Number), tid: expect.any(Number) });
    expect(JSON.parse(lines[lines.length - 1])).toEqual({ t: clock.now, ev: 'end', status: 'failed' });
    expect(await replayTrace(path)).toEqual(want);
  });

  test('a trace cut while live (process exit) replays as a live report at its last event', async () => {
    const path = join(dir, 'live.jsonl');
    const { ctx, clock } = record(path, 3000, 2);
    const want = ctx.report(); // the clock still stands at the last event
    ctx.destroy(); // flushes, no end line
    const got = await replayTrace(path);
    expect(got['x-blocktime'].state).toBe('live');
    expect(got).toEqual(want);
    expect(readFileSync(path, 'utf8')).not.toContain('"end"');
    expect(clock.now).toBe(want['x-blocktime'].postcopyNs + 1_000_000);
  });

  test('openTraceFile: "" means no trace; an unwritable path is a clear error', () => {
    expect(openTraceFile('')).toBeUndefined();
    expect(() => openTraceFile(join(dir, 'no', 'such', 'dir', 't.jsonl'))).toThrow(/x-blocktime-trace: cannot write '.*t\.jsonl': directory .*dir does not exist/);
  });
});

describe('bad traces name the problem and the line', () => {
  const H = '{"vcpus":[10,11]}';
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '', /: empty trace/],
    ['only blank lines', '\n\n', /: empty trace/],
    ['missing header', '{"t":1,"ev":"fault","addr":4096,"tid":10}\n', /:1: the first line must be the header .*not an event/],
    ['header not an object', '[1,2]\n', /:1: expected a JSON object/],
    ['empty vcpus', '{"vcpus":[]}\n', /:1: "vcpus" must be a non-empty array/],
    ['bad vcpu tid', '{"vcpus":[10,-3]}\n', /:1: "vcpus"\[1\] must be a non-negative 32-bit integer/],
    ['duplicate vcpu tid', '{"vcpus":[10,10]}\n', /:1: "vcpus"\[1\]: thread id 10 appears twice/],
    ['bad t0', '{"vcpus":[10],"t0":"x"}\n', /:1: "t0" must be a non-negative integer/],
    ['invalid JSON', `${H}\n{"t":1,"ev":"fault","addr":4096,"tid":10}\n{"t":2,"ev":"placed",\n`, /:3: not valid JSON/],
    ['negative t', `${H}\n{"t":-1,"ev":"fault","addr":4096,"tid":10}\n`, /:2: "t" must be a non-negative integer/],
    ['fractional t', `${H}\n{"t":1.5,"ev":"fault","addr":4096,"tid":10}\n`, /:2: "t" must be a non-negative integer/],
    ['t as a string', `${H}\n{"t":"5","ev":"fault","addr":4096,"tid":10}\n`, /:2: "t" must be a non-negative integer/],
    ['time going backwards', `${H}\n{"t":10,"ev":"fault","addr":4096,"tid":10}\n{"t":5,"ev":"placed","addr":4096}\n`, /:3: "t" goes backwards \(5 after 10\)/],
    ['before t0', '{"vcpus":[10],"t0":100}\n{"t":50,"ev":"fault","addr":4096,"tid":10}\n', /:2: "t" goes backwards \(50 after 100\)/],
    ['unknown ev', `${H}\n{"t":1,"ev":"poke","addr":4096}\n`, /:2: unknown "ev" "poke" \(expected "fault", "placed", "push", "end" or "schedstat"\)/],
    ['schedstat of a thread that is no vCPU', `${H}\n{"t":1,"ev":"schedstat","tid":9,"run":1,"wait":1}\n`, /:2: "tid" 9 is no vCPU of the header/],
    ['schedstat without times', `${H}\n{"t":1,"ev":"schedstat","tid":10,"run":-1}\n`, /:2: "run" and "wait" must be non-negative integers/],
    ['missing ev', `${H}\n{"t":1,"addr":4096}\n`, /:2: "ev" is missing \(expected "fault", "placed", "push", "end" or "schedstat"\)/],
    ['missing addr', `${H}\n{"t":1,"ev":"placed"}\n`, /:2: "addr" must be a non-negative integer/],
    ['bad tid', `${H}\n{"t":1,"ev":"fault","addr":4096,"tid":4294967296}\n`, /:2: "tid" must be a non-negative 32-bit integer/],
    ['unknown fault kind', `${H}\n{"t":1,"ev":"fault","addr":4096,"tid":10,"kind":"pushed"}\n`, /:2: "kind" must be "requested", "read-ahead", "in-flight", "received" or "unread", got "pushed"/],
    ['push without addr', `${H}\n{"t":1,"ev":"push","addr":-4096}\n`, /:2: "addr" must be a non-negative integer/],
    ['bad end status', `${H}\n{"t":1,"ev":"end","status":"active"}\n`, /:2: "status" must be "completed", "failed" or "cancelled", got "active"/],
    ['event after end', `${H}\n{"t":1,"ev":"end","status":"completed"}\n{"t":2,"ev":"placed","addr":4096}\n`, /:3: event after the "end" line/],
  ];
  test.each(cases)('%s', async (name, content, message) => {
    const path = join(dir, `${name.replace(/ /g, '-')}.jsonl`);
    writeFileSync(path, content);
    await expect(replayTrace(path)).rejects.toThrow(message);
    await expect(replayTrace(path)).rejects.toThrow(path);
  });

  test('the 17th line of a longer trace is named as line 17', async () => {
    const path = join(dir, 'trace.jsonl');
    const lines = [H];
    for (let i = 1; i < 16; i++) lines.push(JSON.stringify({ t: i, ev: i % 2 ? 'fault' : 'placed', addr: 4096, tid: 10 }));
    lines.push('{"t":-4,"ev":"placed","addr":4096}', '{"t":100,"ev":"placed","addr":4096}');
    writeFileSync(path, `${lines.join('\n')}\n`);
    await expect(replayTrace(path)).rejects.toThrow(`${path}:17: "t" must be a non-negative integer`);
  });

  test('"kind" and "push" lines change no figure: the same trace without them replays to the same report', async () => {
    const withThem = ['{"vcpus":[10,11],"t0":0}', '{"t":1,"ev":"push","addr":0}', '{"t":2,"ev":"fault","addr":4096,"tid":10,"kind":"requested"}',
      '{"t":3,"ev":"fault","addr":4096,"tid":11,"kind":"in-flight"}', '{"t":4,"ev":"fault","addr":8192,"tid":11,"kind":"read-ahead"}',
      '{"t":5,"ev":"push","addr":12288}', '{"t":9,"ev":"placed","addr":4096}', '{"t":12,"ev":"placed","addr":8192}',
      '{"t":13,"ev":"end","status":"completed"}'];
    const without = withThem.filter((l) => !l.includes('"push"')).map((l) => l.replace(/,"kind":"[a-z-]+"/, ''));
    const a = join(dir, 'kinds.jsonl');
    const b = join(dir, 'no-kinds.jsonl');
    writeFileSync(a, `${withThem.join('\n')}\n`);
    writeFileSync(b, `${without.join('\n')}\n`);
    const [ra, rb] = [await replayTrace(a), await replayTrace(b)];
    expect(ra['x-blocktime'].faults).toBe(3);
    expect(ra).toEqual(rb);
  });

  test('missing file and directory', async () => {
    await expect(replayTrace(join(dir, 'nope.jsonl'))).rejects.toThrow(/nope\.jsonl: no such file/);
    mkdirSync(join(dir, 'adir'), { recursive: true });
    await expect(replayTrace(join(dir, 'adir'))).rejects.toThrow(/adir: is a directory/);
  });

  test('CRLF line ends and blank lines are accepted; a placement nobody waited for records nothing', async () => {
    const path = join(dir, 'crlf.jsonl');
    writeFileSync(path, `${H}\r\n\r\n{"t":5,"ev":"placed","addr":8192}\r\n{"t":10,"ev":"fault","addr":4096,"tid":10}\r\n{"t":2010,"ev":"placed","addr":4096}\r\n`);
    const r = await replayTrace(path);
    expect(r['x-blocktime'].vcpus[0].blocktimeNs).toBe(2000);
    expect(r['x-blocktime'].faults).toBe(1);
    expect(r['x-blocktime'].postcopyNs).toBe(2005); // starts at the first event without t0
  });
});

describe('blocktime-replay main()', () => {
  let out: string;
  let err: string;
  beforeEach(() => {
    out = '';
    err = '';
    jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => { out += String(s); return true; });
    jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => { err += String(s); return true; });
  });
  afterEach(() => { jest.restoreAllMocks(); });

  const good = (): string => {
    const path = join(dir, 'good.jsonl');
    writeFileSync(path, '{"vcpus":[10,11],"t0":0}\n{"t":1000,"ev":"fault","addr":4096,"tid":10}\n{"t":2001000,"ev":"placed","addr":4096}\n{"t":3000000,"ev":"end","status":"completed"}\n');
    return path;
  };

  test('--json prints one JSON line in the query-migrate shape', async () => {
    expect(await main([good(), '--json'])).toBe(0);
    expect(out.endsWith('\n')).toBe(true);
    expect(out.trimEnd().split('\n')).toHaveLength(1);
    const r = JSON.parse(out);
    expect(r['postcopy-vcpu-blocktime']).toEqual([2, 0]);
    expect(r['postcopy-latency']).toBe(2_000_000);
    expect(r['x-blocktime'].state).toBe('final');
    expect(err).toBe('');
  });

  test('default view and --qemu view', async () => {
    expect(await main([good()])).toBe(0);
    expect(out).toContain('Postcopy blocktime: final');
    expect(out).toContain('2.00 ms');
    expect(out).not.toMatch(/\x1b\[/); // stdout is no TTY here
    out = '';
    expect(await main(['--qemu', good()])).toBe(0);
    expect(out.split('\n').slice(0, 3)).toEqual(['Postcopy Blocktime (ms): 0', 'Postcopy vCPU Blocktime (ms):', ' [2, 0]']);
  });

  test('a malformed trace: exit 1, the error on stderr, nothing on stdout', async () => {
    const path = join(dir, 'bad.jsonl');
    writeFileSync(path, '{"vcpus":[10]}\n{"t":1,"ev":"fault","addr":4096,"tid":10}\n{"t":"x","ev":"placed","addr":4096}\n');
    expect(await main([path, '--json'])).toBe(1);
    expect(err).toBe(`postcopy: ${path}:3: "t" must be a non-negative integer\n`);
    expect(out).toBe('');
  });

  test('usage errors exit 2', async () => {
    expect(await main([])).toBe(2);
    expect(err).toMatch(/no trace file given/);
    expect(await main(['a', 'b'])).toBe(2);
    expect(await main(['--frobnicate', 'a'])).toBe(2);
    expect(err).toMatch(/unknown option '--frobnicate'/);
    err = '';
    expect(await main([good(), '--json', '--qemu'])).toBe(2);
    expect(err).toMatch(/^postcopy: blocktime-replay: --qemu and --json are two output modes: give one\nusage: /);
    expect(await main([good(), '--compare', '--qemu'])).toBe(2);
    expect(out).toBe('');
  });

  test('--compare and --compare --json', async () => {
    expect(await main([good(), '--compare'])).toBe(0);
    // 7.2: the fault in the first ms counts from ms 1, the placement is at ms 2
    expect(out).toMatch(/│ vCPU 0 blocktime \(ms\) +│ +2 \(2\.000\) │ +2 │ +1 │ +n\/a │/);
    out = '';
    expect(await main([good(), '--compare', '--json'])).toBe(0);
    expect(Object.keys(JSON.parse(out))).toEqual(['exact', 'qemu-10.1', 'qemu-7.2']);
  });
});
