// The console's text formats match QEMU's (size_to_str, %0.3g, info migrate
// line layout with its tabs, info cpus/status), so scripts written for QEMU
// keep parsing our output.
import { DEFAULT_PARAMETERS } from '../../src/migration/parameters.js';
import {
  sizeToStr, formatG3, formatInfoMigrate, formatCpus, formatStatus, formatCapabilities, formatParameters,
  formatProgress, colorWanted,
} from '../../src/monitor/format.js';
import type { MigrationInfo } from '../../src/migration/api.js';

describe('QEMU number formats', () => {
  it('size_to_str', () => {
    expect(sizeToStr(0)).toBe('0 B');
    expect(sizeToStr(999)).toBe('999 B');
    expect(sizeToStr(1000)).toBe('0.977 KiB');
    expect(sizeToStr(4096)).toBe('4 KiB');
    expect(sizeToStr(256 * 2 ** 20)).toBe('256 MiB');
    expect(sizeToStr(1.5 * 2 ** 30)).toBe('1.5 GiB');
    expect(sizeToStr(123456789)).toBe('118 MiB');
  });
  it('%0.3g', () => {
    expect(formatG3(1)).toBe('1');
    expect(formatG3(0.5)).toBe('0.5');
    expect(formatG3(117.73756)).toBe('118');
    expect(formatG3(12.345)).toBe('12.3');
    expect(formatG3(999.7)).toBe('1e+03');
  });
});

const ram = {
  transferred: 150 * 2 ** 20, remaining: 106 * 2 ** 20, total: 256 * 2 ** 20, duplicate: 1000, normal: 38400,
  'normal-bytes': 38400 * 4096, mbps: 812.345, 'pages-per-second': 25000, 'dirty-sync-count': 2,
  'postcopy-requests': 0, 'postcopy-bytes': 0, 'precopy-bytes': 150 * 2 ** 20, 'downtime-bytes': 0,
  'page-size': 4096, 'dirty-pages-rate': 0,
};

describe('info migrate', () => {
  it('prints nothing before any migration (QEMU has no status then)', () => {
    expect(formatInfoMigrate({ status: 'none' })).toEqual([]);
  });
  it('prints QEMU 10.x lines with their tabs', () => {
    const info: MigrationInfo = { status: 'active', 'total-time': 1234, 'setup-time': 5, 'expected-downtime': 300, ram };
    expect(formatInfoMigrate(info)).toEqual([
      'Status: \t\tactive',
      'Time (ms): \t\ttotal=1234, setup=5, exp_down=300',
      'RAM info:',
      '  Throughput (Mbps): \t812.35',
      '  Sizes: \t\tpagesize=4 KiB, total=256 MiB',
      '  Transfers: \t\ttransferred=150 MiB, remain=106 MiB',
      '    Channels: \t\tprecopy=150 MiB, multifd=0 B, postcopy=0 B',
      '    Page Types: \tnormal=38400, zero=1000',
      '  Page Rates (pps): \ttransfer=25000',
      '  Others: \t\tdirty_syncs=2',
    ]);
  });
  it('adds the optional parts only when they are there', () => {
    const info: MigrationInfo = {
      status: 'completed', 'total-time': 2000, downtime: 12,
      ram: { ...ram, 'postcopy-requests': 77, 'downtime-bytes': 8192, 'dirty-pages-rate': 5, 'postcopy-bytes': 4 * 2 ** 20 },
    };
    const lines = formatInfoMigrate(info);
    expect(lines[1]).toBe('Time (ms): \t\ttotal=2000, down=12');
    expect(lines).toContain('    Channels: \t\tprecopy=150 MiB, multifd=0 B, postcopy=4 MiB');
    expect(lines).toContain('  Page Rates (pps): \ttransfer=25000, dirty=5');
    expect(lines).toContain('  Others: \t\tdirty_syncs=2, postcopy_req=77, downtime_bytes=8192');
  });
  it('shows the error of a failed migration; no time line at total 0', () => {
    expect(formatInfoMigrate({ status: 'failed', 'error-desc': 'Connection refused', 'total-time': 0 }))
      .toEqual(['Status: \t\tfailed (Connection refused)']);
  });
});

describe('other info views', () => {
  it('info cpus marks the current CPU', () => {
    expect(formatCpus([{ index: 0, threadId: 101 }, { index: 1, threadId: 102 }]))
      .toEqual(['* CPU #0: thread_id=101', '  CPU #1: thread_id=102']);
  });
  it('info status', () => {
    expect(formatStatus('running')).toBe('VM status: running');
    expect(formatStatus('paused')).toBe('VM status: paused');
    expect(formatStatus('inmigrate')).toBe('VM status: paused (inmigrate)');
    expect(formatStatus('postmigrate')).toBe('VM status: paused (postmigrate)');
  });
  it('capabilities and parameters', () => {
    expect(formatCapabilities([{ capability: 'postcopy-ram', state: true }, { capability: 'events', state: false }]))
      .toEqual(['postcopy-ram: on', 'events: off']);
    expect(formatParameters({ ...DEFAULT_PARAMETERS, 'x-postcopy-readahead': 16, 'cpu-throttle-tailslow': true }))
      .toEqual(['throttle-trigger-threshold: 50', 'cpu-throttle-initial: 20', 'cpu-throttle-increment: 10',
        'cpu-throttle-tailslow: on', 'max-cpu-throttle: 99',
        'max-bandwidth: 134217728 bytes/second', 'max-postcopy-bandwidth: 0 bytes/second',
        'downtime-limit: 300 ms', 'x-vcpu-dirty-limit-period: 1000 ms', 'vcpu-dirty-limit: 1 MB/s',
        "x-blocktime-trace: ''", 'x-postcopy-readahead: 16 pages', 'x-postcopy-heartbeat-ms: 2000 ms', "x-migration-psk: ''"]);
  });
  it('progress line: status, percent, throughput, blocktime; no colour codes when off', () => {
    const line = formatProgress({ status: 'postcopy-active', ram: { ...ram, 'postcopy-requests': 9 } }, 42, false);
    expect(line).toBe('migration postcopy-active |  59% of 256 MiB | 812.3 Mbps | 9 page requests | blocktime 42 ms');
    expect(formatProgress({ status: 'setup' }, undefined, true)).toContain('\x1b[');
  });
  it('colour only on a TTY without NO_COLOR', () => {
    expect(colorWanted({ isTTY: true }, {})).toBe(true);
    expect(colorWanted({ isTTY: false }, {})).toBe(false);
    expect(colorWanted({ isTTY: true }, { NO_COLOR: '1' })).toBe(false);
  });
});
