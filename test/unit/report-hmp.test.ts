// HMP `info postcopy_blocktime -o FILE.html`: the HTML report of the
// destination's x-blocktime-trace file so far (live while the migration
// runs, final after); without a trace parameter it says -o needs one.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRegistry } from '../../src/monitor/commands.js';
import type { CommandContext } from '../../src/monitor/registry.js';
import { FakeMachine } from '../helpers/qmp-fake-machine.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'report-hmp-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

async function hmp(m: FakeMachine, line: string): Promise<string> {
  const registry = createRegistry();
  const ctx: CommandContext = { machine: m, registry, canWait: false, color: false, requestQuit: () => undefined };
  return (await registry.runHmp(ctx, line)).text;
}

const ev = (t: number, e: string, more: object = {}) => JSON.stringify({ t, ev: e, ...more });

test('-o without x-blocktime-trace says that it needs one; -o without a file name says so', async () => {
  const m = new FakeMachine();
  m.status = 'postcopy-active';
  expect(await hmp(m, 'info postcopy_blocktime -o /tmp/x.html')).toMatch(/^Error: -o draws the events of the x-blocktime-trace file, and none is set: migrate_set_parameter x-blocktime-trace PATH/);
  expect(await hmp(m, 'info postcopy_blocktime -o')).toMatch(/^Error: -o needs a file name/);
  expect(await hmp(m, 'info postcopy_blocktime x.html')).toMatch(/^Error: unexpected argument 'x.html'/);
});

test('-o writes the report of the trace so far, live or final', async () => {
  const trace = join(dir, 'bt.jsonl');
  const out = join(dir, 'bt.html');
  const lines = [JSON.stringify({ vcpus: [11, 12], t0: 0 }), ev(1e6, 'fault', { addr: 4096, tid: 11 }), ev(2e6, 'placed', { addr: 4096 })];
  writeFileSync(trace, `${lines.join('\n')}\n`);
  const m = new FakeMachine();
  await m.setParameters({ 'x-blocktime-trace': trace });
  m.status = 'postcopy-active';
  expect(await hmp(m, `info postcopy_blocktime -o ${out}`)).toMatch(/^wrote .*bt\.html \(\d+ KiB\) from .*bt\.jsonl \(live: /);
  expect(readFileSync(out, 'utf8')).toContain('live (the trace has no end line)');
  writeFileSync(trace, `${[...lines, ev(3e6, 'end', { status: 'completed' })].join('\n')}\n`);
  m.status = 'completed';
  const text = await hmp(m, `info postcopy_blocktime -o ${out}`);
  expect(text).not.toContain('live');
  const html = readFileSync(out, 'utf8');
  expect(html).toContain('final; 2 vCPUs; 1 faults');
  expect(html).toContain('data-chart="timeline"');
});

test('a trace not written yet is an error naming it', async () => {
  const m = new FakeMachine();
  await m.setParameters({ 'x-blocktime-trace': join(dir, 'none.jsonl') });
  expect(await hmp(m, `info postcopy_blocktime -o ${join(dir, 'n.html')}`)).toMatch(/^Error: .*none\.jsonl: no such file/);
});
