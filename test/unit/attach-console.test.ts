// What `postcopy attach` shows of a QEMU that the real-QEMU test cannot pin
// down: the command table it offers (the registry's own entries, with where
// they go in their help), QEMU's fields where a QEMU has them and "no
// figure" where it has not (never a 0 in their place), and its events.
import { attachRegistry } from '../../src/qemu/attach-command.js';
import { createRegistry } from '../../src/monitor/commands.js';
import { formatInfoMigrate, formatQmpEvent } from '../../src/monitor/format.js';
import { formatBlocktimeQemu, formatBlocktimeRich } from '../../src/monitor/format-blocktime.js';
import { emptyReport } from '../../src/blocktime/report.js';
import type { MigrationInfo } from '../../src/migration/api.js';

test("attach's commands are the registry's entries, with where they go in their help", () => {
  const full = createRegistry();
  const r = attachRegistry(full);
  expect(r.findHmp('migrate')?.handler).toBe(full.findHmp('migrate')?.handler);
  expect(r.findInfo('postcopy_blocktime')?.handler).toBe(full.findInfo('postcopy_blocktime')?.handler);
  expect(r.helpText('migrate_set_capability')).toMatch(/\[attach: set on the source and on --destination/);
  expect(r.helpText('info postcopy_blocktime')).toMatch(/\[attach: the destination's; exact and live with --destination-trace/);
  expect(r.helpText('quit')).toContain('[attach: detaches; the QEMUs keep running]');
  // the full table is left as it was
  expect(full.helpText('quit')).not.toContain('attach');
  expect(r.helpText().split('\n').filter((l) => l !== '')).toHaveLength(12);
  expect(r.parseHmp('info migrate -a')?.command.name).toBe('migrate');
});

test("QEMU 7.2's two blocktime fields print; the 10.1 fields it lacks say so instead of 0", () => {
  const text = formatBlocktimeQemu({ 'postcopy-blocktime': 0, 'postcopy-vcpu-blocktime': [16, 0] }, 'QEMU 7.2.22 reports none').join('\n');
  expect(text).toBe([
    'Postcopy Blocktime (ms): 0',
    'Postcopy vCPU Blocktime (ms):',
    ' [16, 0]',
    'Postcopy Latency (ns): no figure (QEMU 7.2.22 reports none)',
    'Postcopy non-vCPU Latencies (ns): no figure (QEMU 7.2.22 reports none)',
    'Postcopy vCPU Latencies (ns):',
    ' no figure (QEMU 7.2.22 reports none)',
    'Postcopy Latency Distribution:',
    '  no figure (QEMU 7.2.22 reports none)',
  ].join('\n'));
});

test('info migrate of a reply without some RAM figures says "no figure", never 0', () => {
  const info = { status: 'active', ram: { total: 256 << 20, remaining: 100 << 20, transferred: 10 << 20, 'dirty-sync-count': 1 } } as unknown as MigrationInfo;
  const text = formatInfoMigrate(info).join('\n');
  expect(text).toContain('Throughput (Mbps): \tno figure');
  expect(text).toContain('pagesize=no figure, total=256 MiB');
  expect(text).toContain('Page Types: \tnormal=no figure, zero=no figure');
});

test("QEMU's figures alone (no trace given): no table of zeros in place of ours", () => {
  const r = { ...emptyReport([31, 32], 'exact figures come from the destination\'s trace log: attach with --destination-trace FILE'),
    'x-qemu': { version: '7.2.22', fields: { 'postcopy-blocktime': 0, 'postcopy-vcpu-blocktime': [16, 0] } } };
  const text = formatBlocktimeRich(r, { color: false });
  expect(text).toMatch(/^Postcopy blocktime: no exact figures: exact figures come from .*--destination-trace FILE\nQEMU 7\.2\.22 \(the destination\) reports:\n/);
  expect(text).toContain('  Postcopy vCPU Blocktime (ms): [16, 0]\n');
  expect(text).toContain('  Postcopy Latency (ns): no figure (QEMU 7.2.22 reports none; 10.1+ does)');
  expect(text).not.toContain('│');
});

test('a QMP event as one line: time, which QEMU, event, data', () => {
  const at = Date.UTC(2026, 11, 1, 11, 46, 16, 403) / 1000;
  expect(formatQmpEvent('source', { event: 'MIGRATION', data: { status: 'postcopy-active' }, timestamp: { seconds: Math.floor(at), microseconds: 403_512 } }))
    .toBe('11:46:16.403 [source] MIGRATION status=postcopy-active');
  expect(formatQmpEvent('destination', { event: 'RESUME', timestamp: { seconds: Math.floor(at), microseconds: 0 } })).toBe('11:46:16.000 [destination] RESUME');
  expect(formatQmpEvent('source', { event: 'MIGRATION_PASS', data: { pass: 2 } })).toBe('[source] MIGRATION_PASS pass=2');
});
