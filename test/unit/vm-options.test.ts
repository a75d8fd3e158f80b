// The VM command line: QEMU spellings, defaults (no arguments = the lab),
// and a clear error naming the option for anything wrong.
import {
  parseVmOptions, splitCommands, parseRamSize, VmOptionError, DEFAULT_RAM_BYTES,
} from '../../src/vm-options.js';

const err = (argv: string[]): string => {
  try {
    parseVmOptions(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(VmOptionError);
    return (e as Error).message;
  }
  throw new Error(`no error for ${argv.join(' ')}`);
};

describe('parseVmOptions', () => {
  it('no arguments is the lab: 256 MiB, 2 vCPUs, sweep, console on stdio', () => {
    expect(parseVmOptions([])).toEqual({
      ramBytes: DEFAULT_RAM_BYTES, memoryBackend: null, memory: { memPrealloc: false, objects: [], numaMemdevs: [] }, ramGiven: false,
      vcpus: 2, workload: 'sweep', qmp: [], monitor: 'stdio',
      startPaused: false, exitOnError: false, exitWithParent: false, daemonize: false, help: false, version: false,
    });
  });

  it('takes QEMU spellings, with one or two dashes and NAME=VALUE', () => {
    const o = parseVmOptions(['-m', '1G', '--smp', '4', '-S', '-workload', 'sweep,end=100M',
      '-incoming', 'tcp:127.0.0.1:4444', '-qmp', 'unix:/tmp/q.sock,server=on,wait=off',
      '--qmp=tcp:127.0.0.1:4445,server=on,wait=off', '-monitor', 'none', '--exit-on-error']);
    expect(o.ramBytes).toBe(2 ** 30);
    expect(o.vcpus).toBe(4);
    expect(o.startPaused).toBe(true);
    expect(o.workload).toBe('sweep,end=100M');
    expect(o.incoming).toBe('tcp:127.0.0.1:4444');
    expect(o.qmp).toEqual([
      { spec: 'unix:/tmp/q.sock,server=on,wait=off', transport: 'unix', address: '/tmp/q.sock' },
      { spec: 'tcp:127.0.0.1:4445,server=on,wait=off', transport: 'tcp', address: '127.0.0.1:4445' },
    ]);
    expect(o.monitor).toBe('none');
    expect(o.exitOnError).toBe(true);
    expect(parseVmOptions(['-smp', 'cpus=3']).vcpus).toBe(3);
    expect(parseVmOptions(['-smp', '4,sockets=2,cores=2']).vcpus).toBe(4);
    expect(parseVmOptions(['-incoming', 'defer']).incoming).toBe('defer');
    expect(parseVmOptions(['-h']).help).toBe(true);
    expect(parseVmOptions(['--version']).version).toBe(true);
    expect(parseVmOptions(['-run-with', 'exit-with-parent=on']).exitWithParent).toBe(true);
    expect(parseVmOptions(['-run-with', 'exit-with-parent=off']).exitWithParent).toBe(false);
    expect(parseVmOptions(['-daemonize', '-monitor', 'none']).daemonize).toBe(true);
  });

  it('-m defaults to MiB and accepts QEMU suffixes', () => {
    expect(parseRamSize('512')).toBe(512 * 2 ** 20);
    expect(parseRamSize('64M')).toBe(64 * 2 ** 20);
    expect(parseRamSize('size=2G')).toBe(2 * 2 ** 30);
    expect(parseRamSize('8192k')).toBe(8 * 2 ** 20);
    expect(parseRamSize('size=64M')).toBe(64 * 2 ** 20);
  });

  it('-e splits commands on ; outside quotes', () => {
    expect(splitCommands('info status; migrate "unix:/tmp/a;b" ;; quit')).toEqual(['info status', 'migrate "unix:/tmp/a;b"', 'quit']);
    expect(parseVmOptions(['-e', 'info status; info cpus']).execute).toEqual(['info status', 'info cpus']);
  });

  it('names the option in every error', () => {
    expect(err(['-m'])).toBe('-m needs a value (see --help)');
    expect(err(['-m', 'lots'])).toMatch(/^-m lots: RAM size 'lots' is not a size/);
    expect(err(['-m', '0'])).toMatch(/^-m 0: RAM size '0' is zero/);
    expect(err(['-m', '1000B'])).toMatch(/not a multiple of the page size/);
    expect(err(['-smp', 'two'])).toBe("-smp two: vCPU count 'two' is not a whole number");
    expect(err(['-smp', '0'])).toBe("-smp '0': 0 vCPUs is out of range (1..512)");
    expect(err(['-workload', 'bogus'])).toMatch(/^-workload bogus: unknown workload 'bogus'/);
    expect(err(['-m', '64M', '-workload', 'sweep,end=100M'])).toMatch(/^-workload sweep,end=100M: .*beyond guest RAM/);
    expect(err(['-incoming', 'carrier-pigeon'])).toMatch(/^-incoming carrier-pigeon: /);
    expect(err(['-incoming', 'tcp:localhost:99999'])).toMatch(/^-incoming tcp:localhost:99999: .*port/);
    expect(err(['-qmp', 'stdio'])).toMatch(/^-qmp stdio: expected unix:PATH/);
    expect(err(['-monitor', 'vc'])).toBe("-monitor vc: only 'stdio' and 'none' are supported");
    expect(err(['-workload', 'sweep,,'])).toMatch(/^-workload sweep,,: /);
    expect(err(['--frobnicate'])).toBe("unknown option '--frobnicate' (see --help)");
    expect(err(['disk.img'])).toMatch(/^unexpected argument 'disk.img'/);
    expect(err(['-S=1'])).toBe('-S takes no value');
    expect(err(['-m', '1G', '-m', '2G'])).toBe('-m given twice');
    expect(err(['-e', ' ; '])).toBe('-e: no command given');
    expect(err(['-monitor', 'none', '-e', 'info status'])).toMatch(/^-e needs the console/);
    expect(err(['-daemonize'])).toMatch(/^-daemonize needs -monitor none/);
    expect(err(['-run-with', 'chroot=/x'])).toBe("-run-with chroot=/x: 'chroot' is not supported (only exit-with-parent=on|off)");
    expect(err(['-run-with', 'exit-with-parent=yes'])).toBe('-run-with exit-with-parent=yes: exit-with-parent takes on or off');
  });
});
