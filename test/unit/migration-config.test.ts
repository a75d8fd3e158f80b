// URIs, capabilities, parameters, the status machine and the rate limiter:
// the pure rules of the migration engine.
import { EventEmitter } from 'node:events';
import { CommandError } from '../../src/errors.js';
import { parseMigrationUri, formatMigrationUri } from '../../src/migration/uri.js';
import { Capabilities } from '../../src/migration/capabilities.js';
import { Parameters, DEFAULT_PARAMETERS } from '../../src/migration/parameters.js';
import { MigrationStatusMachine } from '../../src/migration/status.js';

describe('parseMigrationUri', () => {
  test('tcp and unix forms', () => {
    expect(parseMigrationUri('tcp:127.0.0.1:4444')).toEqual({ transport: 'tcp', host: '127.0.0.1', port: 4444 });
    expect(parseMigrationUri('tcp:localhost:0')).toEqual({ transport: 'tcp', host: 'localhost', port: 0 });
    expect(parseMigrationUri('tcp:[::1]:5000')).toEqual({ transport: 'tcp', host: '::1', port: 5000 });
    expect(parseMigrationUri('tcp::4444')).toEqual({ transport: 'tcp', host: '127.0.0.1', port: 4444 });
    expect(parseMigrationUri('unix:/tmp/m.sock')).toEqual({ transport: 'unix', path: '/tmp/m.sock' });
    expect(formatMigrationUri(parseMigrationUri('tcp:[::1]:5000'))).toBe('tcp:[::1]:5000');
  });
  test.each([
    ['', /empty/], ['tcp:host', /expected tcp:HOST:PORT/], ['tcp:h:99999', /port '99999'/], ['tcp:h:abc', /port 'abc'/],
    ['tcp:::1:4', /IPv6/], ['unix:', /path is empty/], ['rdma:h:1', /scheme 'rdma' is not supported/], ['garbage', /Invalid migration URI/],
    ['unix:/' + 'x'.repeat(200), /too long/], ['tcp:a b:1', /bad host/],
  ])('%j is refused', (uri, re) => {
    expect(() => parseMigrationUri(uri)).toThrow(CommandError);
    expect(() => parseMigrationUri(uri)).toThrow(re);
  });
});

describe('Capabilities', () => {
  test('lists implemented capabilities, off by default, and sets them', () => {
    const c = new Capabilities();
    expect(c.list().map((x) => x.capability)).toEqual(['auto-converge', 'events', 'postcopy-ram', 'return-path', 'postcopy-blocktime', 'dirty-limit']);
    expect(c.list().every((x) => !x.state)).toBe(true);
    c.set([{ capability: 'postcopy-ram', state: true }, { capability: 'postcopy-blocktime', state: true }], false);
    expect(c.has('postcopy-ram')).toBe(true);
    expect(c.list().find((x) => x.capability === 'postcopy-blocktime')?.state).toBe(true);
    c.set([{ capability: 'postcopy-ram', state: false }], false);
    expect(c.has('postcopy-ram')).toBe(false);
  });
  test('refuses changes during a migration with QEMU\'s text', () => {
    const c = new Capabilities();
    expect(() => c.set([{ capability: 'events', state: true }], true)).toThrow("There's a migration process in progress");
    expect(c.has('events')).toBe(false);
  });
  test('unimplemented, unknown and conflicting capabilities are refused; nothing half-applied', () => {
    const c = new Capabilities();
    expect(() => c.set([{ capability: 'events', state: true }, { capability: 'xbzrle', state: true }], false)).toThrow(/'xbzrle' is not supported/);
    expect(c.has('events')).toBe(false);
    expect(() => c.set([{ capability: 'no-such' as never, state: true }], false)).toThrow(/does not accept value 'no-such'/);
    expect(() => c.set([{ capability: 'postcopy-preempt', state: true }], false)).toThrow(CommandError);
    expect(() => c.set([{ capability: 'events', state: 'yes' as never }], false)).toThrow(/expected: boolean/);
    c.set([{ capability: 'xbzrle', state: false }], false); // off is off
  });
  test('dirty-limit and auto-converge exclude each other, in QEMU\'s words, either way round', () => {
    const c = new Capabilities();
    c.set([{ capability: 'auto-converge', state: true }], false);
    expect(() => c.set([{ capability: 'dirty-limit', state: true }], false))
      .toThrow('dirty-limit conflicts with auto-converge either of then available currently');
    expect(c.has('dirty-limit')).toBe(false);
    c.set([{ capability: 'auto-converge', state: false }, { capability: 'dirty-limit', state: true }], false);
    expect(() => c.set([{ capability: 'auto-converge', state: true }], false)).toThrow(/conflicts with auto-converge/);
    expect([c.has('auto-converge'), c.has('dirty-limit')]).toEqual([false, true]);
  });
});

describe('Parameters', () => {
  test('QEMU defaults and validated updates', () => {
    const p = new Parameters();
    expect(p.get()).toEqual({
      'throttle-trigger-threshold': 50, 'cpu-throttle-initial': 20, 'cpu-throttle-increment': 10, 'cpu-throttle-tailslow': false,
      'max-cpu-throttle': 99, 'max-bandwidth': 134217728, 'downtime-limit': 300, 'max-postcopy-bandwidth': 0, 'x-blocktime-trace': '',
      'x-postcopy-readahead': 0, 'x-postcopy-heartbeat-ms': 2000, 'x-vcpu-dirty-limit-period': 1000, 'vcpu-dirty-limit': 1, 'x-migration-psk': '',
    });
    p.set({ 'max-bandwidth': 1000, 'downtime-limit': 50, 'x-blocktime-trace': '/tmp/t.jsonl', 'x-postcopy-readahead': 255 });
    expect(p.value('x-postcopy-readahead')).toBe(255);
    expect(p.value('max-bandwidth')).toBe(1000);
    expect(p.value('downtime-limit')).toBe(50);
    expect(p.value('x-blocktime-trace')).toBe('/tmp/t.jsonl');
  });
  test.each([
    [{ 'max-bandwidth': -1 }, /non-negative integer/], [{ 'max-bandwidth': 1.5 }, /non-negative integer/],
    [{ 'downtime-limit': 3000000 }, /range of 0 to 2000000/], [{ 'downtime-limit': 'x' }, /expected: integer/],
    [{ 'no-such': 1 }, /Parameter 'no-such' is unexpected/],
    [{ 'cpu-throttle-initial': 0 }, "Parameter 'cpu-throttle-initial' expects an integer in the range of 1 to 99"],
    [{ 'cpu-throttle-increment': 100 }, "Parameter 'cpu-throttle-increment' expects an integer in the range of 1 to 99"],
    [{ 'throttle-trigger-threshold': 101 }, "Parameter 'throttle-trigger-threshold' expects an integer in the range of 1 to 100"],
    [{ 'max-cpu-throttle': 10 }, "Parameter 'max-cpu-throttle' expects an integer in the range of cpu-throttle-initial to 99"],
    [{ 'cpu-throttle-initial': 50, 'max-cpu-throttle': 40 }, /range of cpu-throttle-initial to 99/],
    [{ 'cpu-throttle-tailslow': 1 }, "Invalid parameter type for 'cpu-throttle-tailslow', expected: boolean"],
    [{ 'x-vcpu-dirty-limit-period': 1001 }, "Parameter 'x-vcpu-dirty-limit-period' expects a value between 1 and 1000"],
    [{ 'vcpu-dirty-limit': 0 }, "Parameter 'vcpu-dirty-limit' expects is invalid, it must greater then 1 MB/s"], [{ 'x-blocktime-trace': 5 }, /expected: string/],
    [{ 'x-postcopy-readahead': 256 }, /'x-postcopy-readahead' expects an integer in the range of 0 to 255 \(pages\)/],
    [{ 'x-postcopy-readahead': -1 }, /range of 0 to 255/], [{ 'x-postcopy-readahead': '8' }, /expected: integer/],
    [{ 'x-migration-psk': 1 }, "Invalid parameter type for 'x-migration-psk', expected: string"],
    [{ 'x-migration-psk': 'a\0b' }, "Parameter 'x-migration-psk' expects a file path"],
  ])('%j refused, nothing applied', (change, re) => {
    const p = new Parameters();
    expect(() => p.set({ 'max-bandwidth': 5, ...change })).toThrow(re);
    expect(p.get()).toEqual(DEFAULT_PARAMETERS);
  });
});

describe('MigrationStatusMachine', () => {
  test('walks setup -> active -> postcopy-active -> completed with events and times', () => {
    const ev = new EventEmitter();
    const seen: string[] = [];
    ev.on('migration', (s: string) => seen.push(s));
    let now = 1000;
    const m = new MigrationStatusMachine(ev, () => now);
    expect(m.times()).toEqual({});
    m.moveTo('setup'); now += 5;
    m.moveTo('active'); now += 100;
    expect(m.active).toBe(true);
    m.markDowntimeStart(); now += 7;
    m.moveTo('postcopy-active'); now += 3;
    m.markDowntimeEnd(); now += 50;
    m.moveTo('completed'); now += 999;
    expect(seen).toEqual(['setup', 'active', 'postcopy-active', 'completed']);
    expect(m.times()).toEqual({ 'total-time': 165, 'setup-time': 5, downtime: 10 });
    expect(m.active).toBe(false);
  });
  test('illegal moves throw; fail() records the reason once', () => {
    const m = new MigrationStatusMachine(new EventEmitter(), () => 0);
    expect(() => m.moveTo('completed')).toThrow(/none -> completed/);
    m.moveTo('setup');
    expect(m.fail('RAM size mismatch')).toBe(true);
    expect(m.fail('later')).toBe(false);
    expect(m.status).toBe('failed');
    expect(m.errorDesc).toBe('RAM size mismatch');
    m.moveTo('setup');
    expect(m.errorDesc).toBeUndefined();
  });
});
