// QEMU's ways of saying what backs guest RAM, resolved to its RAM blocks'
// backends: `-mem-path DIR` [-mem-prealloc] (one block, pc.ram), or
// `-object memory-backend-file,id=ID,mem-path=DIR,size=SIZE[,prealloc=on][,share=on]`
// (or memory-backend-ram,id=ID,size=SIZE) with `-machine memory-backend=ID`
// (one block) or `-numa node,memdev=ID` repeated (a RAM block per node, in
// order). Pure: parsing and QEMU's consistency rules, with QEMU's error texts;
// the mapping itself is src/vm/guest-ram.ts and src/native/hugetlbfs.ts.
import { CommandError } from '../errors.js';
import { parseSizeText } from './size.js';
import type { WorkloadBlock } from './workload.js';

export type MemoryBackendType = 'memory-backend-file' | 'memory-backend-ram';

export interface MemoryBackend {
  type: MemoryBackendType;
  /** the object's id, which names the RAM block (QEMU's default backend: pc.ram) */
  id: string;
  /** memory-backend-file: the hugetlbfs directory */
  memPath?: string;
  /** bytes; undefined for -mem-path's default backend (it takes -m) */
  size?: number;
  prealloc: boolean;
  share: boolean;
}

/** the memory options as given on the command line */
export interface MemoryOptions {
  memPath?: string;
  memPrealloc: boolean;
  /** -object values */
  objects: string[];
  /** -machine memory-backend=ID */
  machineBackend?: string;
  /** -numa node,memdev=ID values */
  numaMemdevs: string[];
}

/** QEMU's id of the default RAM backend of a pc machine */
export const DEFAULT_RAM_ID = 'pc.ram';

export function emptyMemoryOptions(): MemoryOptions {
  return { memPrealloc: false, objects: [], numaMemdevs: [] };
}

function onOff(v: string, what: string): boolean {
  if (v === 'on' || v === 'yes' || v === 'true') return true;
  if (v === 'off' || v === 'no' || v === 'false') return false;
  throw new CommandError(`Parameter '${what}' expects 'on' or 'off'`);
}

/** -object memory-backend-file,id=...,... (or memory-backend-ram) */
export function parseMemoryObject(text: string): MemoryBackend {
  const [type, ...kvs] = text.split(',');
  if (type !== 'memory-backend-file' && type !== 'memory-backend-ram') {
    throw new CommandError(`invalid object type: ${type} (this engine knows memory-backend-file and memory-backend-ram)`);
  }
  const b: MemoryBackend = { type, id: '', prealloc: false, share: false };
  for (const kv of kvs) {
    const eq = kv.indexOf('=');
    const k = eq < 0 ? kv : kv.slice(0, eq);
    const v = eq < 0 ? 'on' : kv.slice(eq + 1);
    switch (k) {
      case 'id': b.id = v; break;
      case 'size': {
        const bytes = parseSizeText(v, `${type} size`, 'B');
        if (bytes === 0) throw new CommandError("can't create backend with size 0");
        b.size = bytes;
        break;
      }
      case 'mem-path':
        if (type !== 'memory-backend-file') throw new CommandError(`Property '${type}.mem-path' not found`);
        b.memPath = v;
        break;
      case 'prealloc': b.prealloc = onOff(v, 'prealloc'); break;
      case 'share': b.share = onOff(v, 'share'); break;
      default: throw new CommandError(`Property '${type}.${k}' not found`);
    }
  }
  if (b.id === '') throw new CommandError("Parameter 'id' is missing");
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(b.id)) {
    throw new CommandError(`Parameter 'id' expects an identifier (letters, digits, '-', '.', '_', starting with a letter): '${b.id}'`);
  }
  if (b.size === undefined) throw new CommandError("can't create backend with size 0");
  if (type === 'memory-backend-file' && b.memPath === undefined) throw new CommandError('mem-path property not set');
  if (type === 'memory-backend-ram' && b.share) throw new CommandError("memory-backend-ram share=on: this engine's anonymous guest RAM is private (share=on is for memory-backend-file)");
  return b;
}

/** -numa node,memdev=ID: the memdev's id */
export function parseNumaNode(text: string): string {
  const [kind, ...kvs] = text.split(',');
  if (kind !== 'node') throw new CommandError(`-numa ${text}: only 'node' is supported`);
  let memdev: string | undefined;
  for (const kv of kvs) {
    const [k, v] = kv.split('=');
    if (k === 'memdev') memdev = v;
    else if (k !== 'nodeid' && k !== 'cpus') throw new CommandError(`-numa ${text}: Invalid parameter '${k}'`);
  }
  if (memdev === undefined || memdev === '') throw new CommandError(`-numa ${text}: this engine needs memdev=ID (a memory backend)`);
  return memdev;
}

/** -machine [type,]memory-backend=ID: the id (other keys are refused) */
export function parseMachineOption(text: string): string | undefined {
  let id: string | undefined;
  for (const kv of text.split(',')) {
    const eq = kv.indexOf('=');
    if (eq < 0 && (kv === 'pc' || kv === 'q35' || kv === 'none')) continue; // a machine type: ours has one kind
    const k = kv.slice(0, eq);
    if (k !== 'memory-backend') throw new CommandError(`-machine ${text}: '${eq < 0 ? kv : k}' is not supported (only memory-backend=ID)`);
    id = kv.slice(eq + 1);
  }
  return id;
}

/** guest RAM's size and what backs it: `backends` in the order of the RAM blocks ([] = plain
 *  anonymous pc.ram); `backend` = the only one, or null (none, or several RAM blocks) */
export interface ResolvedMemory {
  ramBytes: number;
  backend: MemoryBackend | null;
  backends: MemoryBackend[];
}

/**
 * Guest RAM's backends and its size, by QEMU's rules: -m, when given, must
 * equal the backends' total; without -m that total is the RAM size. Each
 * `-numa node,memdev=ID` is one RAM block, in order (several: several
 * blocks); `-machine memory-backend=ID` is the one block. `ramBytes` is -m
 * (undefined when not given).
 */
export function resolveMemory(o: MemoryOptions, ramBytes: number | undefined, defaultRamBytes: number): ResolvedMemory {
  const objects = new Map<string, MemoryBackend>();
  for (const text of o.objects) {
    const b = parseMemoryObject(text);
    if (objects.has(b.id)) throw new CommandError(`attempt to add duplicate property '${b.id}' to object (type 'container')`);
    objects.set(b.id, b);
  }
  const numa = o.numaMemdevs;
  if (o.machineBackend !== undefined && numa.length > 0 && (numa.length > 1 || numa[0] !== o.machineBackend)) {
    throw new CommandError("'-machine memory-backend' and '-numa memdev' properties are mutually exclusive");
  }
  const ids = numa.length > 0 ? numa : o.machineBackend !== undefined ? [o.machineBackend] : [];
  if (ids.length === 0) {
    const unused = [...objects.keys()];
    if (unused.length > 0) throw new CommandError(`memory backend '${unused[0]}' is not used: add -machine memory-backend=${unused[0]}`);
    if (o.memPath === undefined && !o.memPrealloc) return { ramBytes: ramBytes ?? defaultRamBytes, backend: null, backends: [] };
    const b: MemoryBackend = { type: o.memPath !== undefined ? 'memory-backend-file' : 'memory-backend-ram', id: DEFAULT_RAM_ID, memPath: o.memPath, prealloc: o.memPrealloc, share: false };
    return { ramBytes: ramBytes ?? defaultRamBytes, backend: b, backends: [b] };
  }
  if (o.memPath !== undefined) throw new CommandError("'-mem-path' can't be used together with '-machine memory-backend' (give the backend a mem-path)");
  const backends: MemoryBackend[] = [];
  for (const id of ids) {
    const b = objects.get(id);
    if (!b) throw new CommandError(`Memory backend '${id}' not found`);
    if (backends.some((x) => x.id === id)) throw new CommandError(`memdev ${id} is used by two NUMA nodes (memory backend '${id}' is already in use)`);
    backends.push({ ...b, prealloc: b.prealloc || o.memPrealloc });
  }
  for (const other of objects.keys()) {
    if (!ids.includes(other)) throw new CommandError(`memory backend '${other}' is not used: give it a NUMA node (-numa node,memdev=${other})`);
  }
  const total = backends.reduce((n, b) => n + b.size!, 0);
  if (ramBytes !== undefined && ramBytes !== total) {
    throw new CommandError(numa.length > 0
      ? `total memory for NUMA nodes (0x${total.toString(16)}) should equal RAM size (0x${ramBytes.toString(16)})`
      : 'Machine memory size does not match the size of the memory backend');
  }
  return { ramBytes: total, backend: backends.length === 1 ? backends[0] : null, backends };
}

/** the backend as command-line options that give it again (for the processes `migrate` and `postcopy run` start) */
export function memoryBackendArgs(b: MemoryBackend | null, ramBytes: number): string[] {
  if (b === null) return [];
  return ['-object', objectText(b, ramBytes), '-machine', `memory-backend=${b.id}`];
}

/** the backends of several RAM blocks (or of one: memoryBackendArgs) as command-line options that give them again */
export function memoryBackendsArgs(backends: readonly MemoryBackend[], ramBytes: number): string[] {
  if (backends.length <= 1) return memoryBackendArgs(backends[0] ?? null, ramBytes);
  return backends.flatMap((b) => ['-object', objectText(b, b.size!), '-numa', `node,memdev=${b.id}`]);
}

function objectText(b: MemoryBackend, bytes: number): string {
  return [`${b.type},id=${b.id}`, ...(b.memPath !== undefined ? [`mem-path=${b.memPath}`] : []), `size=${bytes}`,
    `prealloc=${b.prealloc ? 'on' : 'off'}`, `share=${b.share ? 'on' : 'off'}`].join(',');
}

/** where the RAM blocks of `backends` lie in guest RAM, for the workload's block key (before guest RAM is
 *  mapped): back to back, as src/vm/ram-blocks.ts lays them out (it leaves no hole); none = pc.ram */
export function workloadBlocks(backends: readonly MemoryBackend[], ramBytes: number): WorkloadBlock[] {
  if (backends.length <= 1) return [{ idstr: backends[0]?.id ?? DEFAULT_RAM_ID, offset: 0, usedLength: ramBytes }];
  let offset = 0;
  return backends.map((b) => {
    const w = { idstr: b.id, offset, usedLength: b.size! };
    offset += b.size!;
    return w;
  });
}
