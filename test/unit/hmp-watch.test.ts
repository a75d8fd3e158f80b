// `info postcopy_blocktime -w` against a fake Machine whose status the test
// moves and a real blocktime context (injected clock): one plain line per
// interval on a pipe, frames redrawn in place on a terminal (cursor up over
// the last frame, never taller than the screen), stopped by the end of the
// migration, after SECONDS or by a key; refused where nothing can be redrawn.
import { PassThrough } from 'node:stream';
import { createRegistry } from '../../src/monitor/commands.js';
import type { CommandContext } from '../../src/monitor/registry.js';
import { LiveFrame } from '../../src/monitor/live-frame.js';
import { formatWatchFrame, type WatchFigures } from '../../src/monitor/format-blocktime.js';
import { BlocktimeContext } from '../../src/blocktime/context.js';
import { FakeMachine } from '../helpers/qmp-fake-machine.js';

/** a report of 2 vCPUs over 100 ms of postcopy: vCPU 0 blocked 30 ms, vCPU 1 10 ms, 10 ms at once */
function report(vcpus = 2) {
  const clock = { now: 0 };
  const ctx = new BlocktimeContext({ vcpuThreadIds: Array.from({ length: vcpus }, (_, i) => 100 + i), clock: () => clock.now, migrationEvents: null, exitEvents: null });
  ctx.begin(4096, 100, 10e6);
  ctx.begin(8192, 101, 20e6);
  ctx.end(8192, 30e6);
  ctx.end(4096, 40e6);
  clock.now = 100e6;
  return ctx.report();
}

function machine(): FakeMachine {
  const m = new FakeMachine();
  m.status = 'postcopy-active';
  m.report = report();
  return m;
}

async function run(m: FakeMachine, line: string, live?: LiveFrame): Promise<string> {
  const registry = createRegistry();
  const ctx: CommandContext = { machine: m, registry, canWait: true, color: false, requestQuit: () => undefined, live };
  return (await registry.runHmp(ctx, line)).text;
}

function sink(columns = 100, rows = 30) {
  const out = new PassThrough() as PassThrough & { columns: number; rows: number };
  out.columns = columns;
  out.rows = rows;
  let text = '';
  out.on('data', (d: Buffer) => { text += d.toString(); });
  return { out, text: () => text };
}

test('refused where nothing can be redrawn (QMP), and for bad arguments', async () => {
  const m = machine();
  expect(await run(m, 'info postcopy_blocktime -w')).toMatch(/^Error: -w redraws on the console; this monitor cannot/);
  const live = new LiveFrame({ output: sink().out, inPlace: false });
  expect(await run(m, 'info postcopy_blocktime -w soon', live)).toMatch(/^Error: -w takes a number of seconds to watch for, not 'soon'/);
  expect(await run(m, 'info postcopy_blocktime -w 0', live)).toMatch(/^Error: -w takes a number of seconds/);
  expect(await run(m, 'info postcopy_blocktime -o -w x.html', live)).toMatch(/^Error: -o and -w are two outputs/);
});

test('on a pipe: one plain line per half second, until SECONDS pass', async () => {
  const io = sink();
  const text = await run(machine(), 'info postcopy_blocktime -w 1.2', new LiveFrame({ output: io.out, inPlace: false }));
  expect(text).toBe('stopped after 1.2 s; the migration goes on\n');
  const lines = io.text().split('\n').filter((l) => l !== '');
  expect(lines.length).toBeGreaterThanOrEqual(3); // 0 s, 0.5 s, 1 s, and at 1.2 s
  expect(Number(lines[lines.length - 1].split(' ')[0])).toBeGreaterThanOrEqual(1.2);
  for (const l of lines) expect(l).toMatch(/^\d+\.\d s \| postcopy-active \| blocktime 10\.0 ms \| vCPU blocktime \[30\.0, 10\.0\] ms \| 2 faults$/);
  expect(io.text()).not.toContain('\x1b');
});

test('the end of the migration ends it, with a frame of the final figures', async () => {
  const m = machine();
  const io = sink();
  setTimeout(() => m.moveTo('completed'), 700);
  expect(await run(m, 'info postcopy_blocktime -w', new LiveFrame({ output: io.out, inPlace: false }))).toBe('stopped: the migration completed\n');
  expect(io.text().trimEnd().split('\n').pop()).toMatch(/^\d+\.\d s \| completed \| /);
});

test('on a terminal: each frame over the last, a key stops it', async () => {
  const io = sink();
  let key: (() => void) | undefined;
  const live = new LiveFrame({ output: io.out, inPlace: true, onKey: (l) => { key = l; return () => { key = undefined; }; } });
  setTimeout(() => key?.(), 700);
  expect(await run(machine(), 'info postcopy_blocktime -w', live)).toBe('stopped (key pressed); the migration goes on\n');
  expect(key).toBeUndefined(); // the key listener is gone with the command
  // every frame after the first starts by going back up over the last one: the screen does not scroll
  const frames = io.text().split('\x1b[6A');
  expect(frames.length).toBeGreaterThanOrEqual(3); // 0 s, 0.5 s, and the last on the key
  for (const f of frames) {
    expect(f.startsWith('\r')).toBe(true);
    expect((f.match(/\n/g) ?? []).length).toBe(6); // header, pages, 2 vCPUs, total, faults
    expect(f).not.toMatch(/\x1b\[\d+A/);
  }
  expect(io.text()).toContain('vCPU 0           ');
});

test('a frame: a bar per vCPU of its share of postcopy, cut to the screen with many vCPUs', () => {
  const f: WatchFigures = { info: { status: 'postcopy-active' }, role: 'destination', elapsedMs: 1500, report: report(), noReport: '' };
  const lines = formatWatchFrame(f, { color: false, columns: 80, rows: 30 });
  expect(lines[0]).toBe('postcopy blocktime -w: postcopy-active  1.5 s  (a key stops)');
  expect(lines[1]).toBe('pages received   (no migration yet)');
  expect(lines[2]).toBe(`vCPU 0           ${'█'.repeat(12)}${'░'.repeat(28)}  30.0 %  30.0 ms blocked, 1 faults`);
  expect(lines[3]).toBe(`vCPU 1           ${'█'.repeat(4)}${'░'.repeat(36)}  10.0 %  10.0 ms blocked, 1 faults`);
  expect(lines[4]).toBe('total blocktime  10.0 ms (10.0 % of 100 ms postcopy), all vCPUs blocked at once');
  const many = formatWatchFrame({ ...f, report: report(64) }, { color: false, columns: 80, rows: 20 });
  expect(many.length).toBeLessThanOrEqual(20);
  expect(many).toContain('... 49 more vCPUs (info postcopy_blocktime lists them all)');
});
