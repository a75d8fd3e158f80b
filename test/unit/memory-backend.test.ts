// QEMU's memory options resolved to guest RAM's one backend
// (src/vm/memory-backend.ts), on the VM's command line and `postcopy run`'s:
// -mem-path, -mem-prealloc, -object memory-backend-file/ram with -machine
// memory-backend=ID or -numa node,memdev=ID; QEMU's rules and texts for
// everything that does not fit together. Pure: nothing is mapped here.
import { parseVmOptions, VmOptionError } from '../../src/vm-options.js';
import { parseBatchArgs } from '../../src/migration/batch.js';
import { memoryBackendArgs, parseMemoryObject, resolveMemory, emptyMemoryOptions } from '../../src/vm/memory-backend.js';

const MiB = 2 ** 20;
const vmErr = (argv: string[]): string => {
  try {
    parseVmOptions(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(VmOptionError);
    return (e as Error).message;
  }
  throw new Error(`no error for ${argv.join(' ')}`);
};

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
    [['-object', 'memory-backend-ram,id=m,size=1G', '-object', 'memory-backend-ram,id=m,size=1G', '-machine', 'memory-backend=m'], /^attempt to add duplicate property 'm' to object \(type 'container'\)$/],
    [['-object', 'memory-backend-ram,id=m,size=1G'], /^memory backend 'm' is not used: add -machine memory-backend=m$/],
    [['-mem-path', '/hp', '-object', 'memory-backend-ram,id=m,size=1G', '-machine', 'memory-backend=m'], /^'-mem-path' can't be used together with '-machine memory-backend'/],
    [['-object', 'memory-backend-ram,id=a,size=1G', '-object', 'memory-backend-ram,id=b,size=1G', '-numa', 'node,memdev=a', '-numa', 'node,memdev=b'], /several RAM blocks are not supported yet/],
    [['-machine', 'accel=kvm'], /^-machine accel=kvm: 'accel' is not supported \(only memory-backend=ID\)$/],
    [['-numa', 'node,nodeid=0'], /^-numa node,nodeid=0: this engine needs memdev=ID/],
    [['-mem-path'], /^-mem-path needs a value/],
    [['-mem-prealloc=on'], /^-mem-prealloc takes no value$/],
  ])('%j: %s', (argv, re) => {
    expect(vmErr(argv as string[])).toMatch(re);
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
