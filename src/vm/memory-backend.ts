// QEMU's ways of saying what backs guest RAM, resolved to one backend (this
// engine has one RAM block): `-mem-path DIR` [-mem-prealloc], or
// `-object memory-backend-file,id=ID,mem-path=DIR,size=SIZE[,prealloc=on][,share=on]`
// (or memory-backend-ram) with `-machine memory-backend=ID` or
// `-numa node,memdev=ID`. Pure: parsing and QEMU's consistency rules, with
// QEMU's error texts; the mapping itself is src/native/hugetlbfs.ts.
import { CommandError } from '../errors.js';
import { parseSizeText } from './size.js';

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

/**
 * The one backend of guest RAM and its size, by QEMU's rules: -m, when given,
 * must equal the backend's size; without -m the backend's size is the RAM
 * size. `ramBytes` is -m (undefined when not given). null = plain anonymous RAM.
 */
export function resolveMemory(o: MemoryOptions, ramBytes: number | undefined, defaultRamBytes: number): { ramBytes: number; backend: MemoryBackend | null } {
  const objects = new Map<string, MemoryBackend>();
  for (const text of o.objects) {
    const b = parseMemoryObject(text);
    if (objects.has(b.id)) throw new CommandError(`attempt to add duplicate property '${b.id}' to object (type 'container')`);
    objects.set(b.id, b);
  }
  if (o.numaMemdevs.length > 1) {
    throw new CommandError(`${o.numaMemdevs.length} NUMA nodes: this engine migrates one RAM block (several RAM blocks are not supported yet)`);
  }
  if (o.machineBackend !== undefined && o.numaMemdevs.length > 0 && o.numaMemdevs[0] !== o.machineBackend) {
    throw new CommandError(`-machine memory-backend=${o.machineBackend} and -numa node,memdev=${o.numaMemdevs[0]}: this engine has one RAM block, give one backend`);
  }
  const id = o.machineBackend ?? o.numaMemdevs[0];
  if (id === undefined) {
    const unused = [...objects.keys()];
    if (unused.length > 0) throw new CommandError(`memory backend '${unused[0]}' is not used: add -machine memory-backend=${unused[0]}`);
    if (o.memPath === undefined && !o.memPrealloc) return { ramBytes: ramBytes ?? defaultRamBytes, backend: null };
    return {
      ramBytes: ramBytes ?? defaultRamBytes,
      backend: { type: o.memPath !== undefined ? 'memory-backend-file' : 'memory-backend-ram', id: DEFAULT_RAM_ID, memPath: o.memPath, prealloc: o.memPrealloc, share: false },
    };
  }
  if (o.memPath !== undefined) throw new CommandError("'-mem-path' can't be used together with '-machine memory-backend' (give the backend a mem-path)");
  const b = objects.get(id);
  if (!b) throw new CommandError(`Memory backend '${id}' not found`);
  for (const other of objects.keys()) if (other !== id) throw new CommandError(`memory backend '${other}' is not used: this engine has one RAM block ('${id}')`);
  const size = b.size!;
  if (ramBytes !== undefined && ramBytes !== size) {
    throw new CommandError(o.numaMemdevs.length > 0
      ? `total memory for NUMA nodes (0x${size.toString(16)}) should equal RAM size (0x${ramBytes.toString(16)})`
      : 'Machine memory size does not match the size of the memory backend');
  }
  return { ramBytes: size, backend: { ...b, prealloc: b.prealloc || o.memPrealloc } };
}

/** the backend as command-line options that give it again (for the processes `migrate` and `postcopy run` start) */
export function memoryBackendArgs(b: MemoryBackend | null, ramBytes: number): string[] {
  if (b === null) return [];
  const kv = [`${b.type},id=${b.id}`, ...(b.memPath !== undefined ? [`mem-path=${b.memPath}`] : []), `size=${ramBytes}`,
    `prealloc=${b.prealloc ? 'on' : 'off'}`, `share=${b.share ? 'on' : 'off'}`];
  return ['-object', kv.join(','), '-machine', `memory-backend=${b.id}`];
}
