// The VM command line: QEMU spellings, defaults (no arguments = the lab),
// and a clear error naming the option for anything wrong. QEMU's memory
// options resolved to guest RAM's one backend (src/vm/memory-backend.ts), on
// the VM's command line and `postcopy run`'s: -mem-path, -mem-prealloc,
// -object memory-backend-file/ram with -machine memory-backend=ID or -numa
// node,memdev=ID, with QEMU's rules and texts. Pure: nothing is mapped here.
import {
  parseVmOptions, splitCommands, parseRamSize, VmOptionError, DEFAULT_RAM_BYTES,
} from '../../src/vm-options.js';
import { parseBatchArgs } from '../../src/migration/batch.js';
import { memoryBackendArgs, parseMemoryObject, resolveMemory, emptyMemoryOptions } from '../../src/vm/memory-backend.js';

const MiB = 2 ** 20;

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
      ramBytes: DEFAULT_RAM_BYTES, memoryBackend: null, memoryBackends: [], memory: { memPrealloc: false, objects: [], numaMemdevs: [] }, ramGiven: false,
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

describe('memory backend options', () => {
  it('-mem-path DIR [-mem-prealloc]: the default backend pc.ram on that directory, -m its size', () => {
    const o = parseVmOptions(['-m', '512M', '-mem-path', '/dev/hugepages', '-mem-prealloc']);
    expect(o.ramBytes).toBe(512 * MiB);
    expect(o.memoryBackend).toEqual({ type: 'memory-backend-file', id: 'pc.ram', memPath: '/dev/hugepages', prealloc: true, share: false });
    expect(parseVmOptions(['-mem-prealloc']).memoryBackend).toEqual({ type: 'memory-backend-ram', id: 'pc.ram', memPath: undefined, prealloc: true, share: false });
    expect(parseVmOptions(['-m', '64M']).memoryBackend).toBeNull();
  });

  it('-object memory-backend-file with -machine memory-backend=ID or -numa node,memdev=ID; without -m the backend gives the size', () => {
    const obj = '-object=memory-backend-file,id=mem0,mem-path=/hp,size=1G,prealloc=on,share=on';
    for (const tail of [['-machine', 'memory-backend=mem0'], ['-M', 'pc,memory-backend=mem0'], ['-numa', 'node,nodeid=0,memdev=mem0']]) {
      const o = parseVmOptions([obj, ...tail]);
      expect(o.ramBytes).toBe(2 ** 30);
      expect(o.memoryBackend).toEqual({ type: 'memory-backend-file', id: 'mem0', memPath: '/hp', size: 2 ** 30, prealloc: true, share: true });
    }
    expect(parseVmOptions(['-m', '1G', obj, '-machine', 'memory-backend=mem0']).ramBytes).toBe(2 ** 30);
    expect(parseVmOptions(['-object', 'memory-backend-ram,id=r,size=64M', '-machine', 'memory-backend=r', '-mem-prealloc']).memoryBackend)
      .toMatchObject({ type: 'memory-backend-ram', size: 64 * MiB, prealloc: true });
  });

  it.each([
    [['-machine', 'memory-backend=nope'], /^Memory backend 'nope' not found$/],
    [['-m', '512M', '-object', 'memory-backend-file,id=m,mem-path=/hp,size=1G', '-machine', 'memory-backend=m'], /^Machine memory size does not match the size of the memory backend$/],
    [['-m', '512M', '-object', 'memory-backend-file,id=m,mem-path=/hp,size=1G', '-numa', 'node,memdev=m'], /^total memory for NUMA nodes \(0x40000000\) should equal RAM size \(0x20000000\)$/],
    [['-object', 'memory-backend-file,id=m,size=1G', '-machine', 'memory-backend=m'], /^mem-path property not set$/],
    [['-object', 'memory-backend-file,id=m,mem-path=/hp', '-machine', 'memory-backend=m'], /^can't create backend with size 0$/],
    [['-object', 'memory-backend-file,mem-path=/hp,size=1G'], /^Parameter 'id' is missing$/],
    [['-object', 'memory-backend-file,id=m,mem-path=/hp,size=1G,bogus=1', '-machine', 'memory-backend=m'], /^Property 'memory-backend-file\.bogus' not found$/],
    [['-object', 'memory-backend-ram,id=m,mem-path=/hp,size=1G'], /^Property 'memory-backend-ram\.mem-path' not found$/],
    [['-object', 'memory-backend-file,id=m,mem-path=/hp,size=1G,prealloc=maybe'], /^Parameter 'prealloc' expects 'on' or 'off'$/],
    [['-object', 'memory-backend-memfd,id=m,size=1G'], /^invalid object type: memory-backend-memfd/],
    [['-object', 'memory-backend-ram,id=m,size=1G,share=on', '-machine', 'memory-backend=m'], /^memory-backend-ram share=on: this engine's anonymous guest RAM is private/],
    [['-object', 'memory-backend-ram,id=m,size=1G', '-object', 'memory-backend-ram,id=m,size=1G', '-machine', 'memory-backend=m'], /^attempt to add duplicate property 'm' to object \(type 'container'\)$/],
    [['-object', 'memory-backend-ram,id=m,size=1G'], /^memory backend 'm' is not used: add -machine memory-backend=m$/],
    [['-mem-path', '/hp', '-object', 'memory-backend-ram,id=m,size=1G', '-machine', 'memory-backend=m'], /^'-mem-path' can't be used together with '-machine memory-backend'/],
    [['-object', 'memory-backend-ram,id=a,size=1G', '-object', 'memory-backend-ram,id=b,size=1G', '-numa', 'node,memdev=a', '-numa', 'node,memdev=a'], /^memdev a is used by two NUMA nodes/],
    [['-object', 'memory-backend-ram,id=a,size=1G', '-object', 'memory-backend-ram,id=b,size=1G', '-numa', 'node,memdev=a'], /^memory backend 'b' is not used: give it a NUMA node \(-numa node,memdev=b\)$/],
    [['-object', 'memory-backend-ram,id=a,size=1G', '-object', 'memory-backend-ram,id=b,size=1G', '-numa', 'node,memdev=a', '-numa', 'node,memdev=b', '-machine', 'memory-backend=a'], /^'-machine memory-backend' and '-numa memdev' properties are mutually exclusive$/],
    [['-m', '1G', '-object', 'memory-backend-ram,id=a,size=1G', '-object', 'memory-backend-ram,id=b,size=1G', '-numa', 'node,memdev=a', '-numa', 'node,memdev=b'], /^total memory for NUMA nodes \(0x80000000\) should equal RAM size \(0x40000000\)$/],
    [['-object', 'memory-backend-ram,id=a,size=16M', '-object', 'memory-backend-ram,id=b,size=16M', '-numa', 'node,memdev=a', '-numa', 'node,memdev=b', '-workload', 'sweep,block=c'], /^-workload sweep,block=c: workload key 'block=c': no RAM block 'c' \(blocks: a, b\)$/],
    [['-object', 'memory-backend-ram,id=a,size=16M', '-object', 'memory-backend-ram,id=b,size=16M', '-numa', 'node,memdev=a', '-numa', 'node,memdev=b', '-workload', 'sweep,block=b,end=17M'], /^-workload sweep,block=b,end=17M: workload end '17M' is beyond RAM block b \(16M\)$/],
    [['-machine', 'accel=kvm'], /^-machine accel=kvm: 'accel' is not supported \(only memory-backend=ID\)$/],
    [['-numa', 'node,nodeid=0'], /^-numa node,nodeid=0: this engine needs memdev=ID/],
    [['-mem-path'], /^-mem-path needs a value/],
    [['-mem-prealloc=on'], /^-mem-prealloc takes no value$/],
  ])('%j: %s', (argv, re) => {
    expect(err(argv as string[])).toMatch(re);
  });

  it('memoryBackendArgs gives options that parse back to the same backend (what the lab and postcopy run pass on)', () => {
    const b = parseMemoryObject('memory-backend-file,id=mem0,mem-path=/hp,size=256M,share=on');
    const argv = memoryBackendArgs(b, 256 * MiB);
    expect(argv).toEqual(['-object', 'memory-backend-file,id=mem0,mem-path=/hp,size=268435456,prealloc=off,share=on', '-machine', 'memory-backend=mem0']);
    expect(parseVmOptions(['-m', `${256 * MiB}B`, ...argv]).memoryBackend).toEqual(b);
    const dflt = resolveMemory({ ...emptyMemoryOptions(), memPath: '/hp' }, 64 * MiB, 1).backend;
    expect(parseVmOptions(['-m', '64M', ...memoryBackendArgs(dflt, 64 * MiB)]).memoryBackend).toEqual({ ...dflt, size: 64 * MiB });
    expect(memoryBackendArgs(null, 64 * MiB)).toEqual([]);
  });

  it('postcopy run takes the same options for both of its processes', () => {
    const o = parseBatchArgs(['-mem-path', '/hp', '-m', '128M', '-workload', 'sweep,end=100M']);
    expect(o.ramBytes).toBe(128 * MiB);
    expect(o.memoryBackend).toMatchObject({ type: 'memory-backend-file', memPath: '/hp' });
    const p = parseBatchArgs(['-object', 'memory-backend-file,id=m,mem-path=/hp,size=256M', '-numa', 'node,memdev=m', '-workload', 'sweep,end=200M']);
    expect(p.ramBytes).toBe(256 * MiB);
    expect(p.memoryBackend).toMatchObject({ id: 'm', size: 256 * MiB });
    expect(() => parseBatchArgs(['-machine', 'memory-backend=x'])).toThrow(/^Memory backend 'x' not found$/);
  });
});
