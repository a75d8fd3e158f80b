// QEMU's spellings of sizes and vCPU counts: `-m 256M` (a plain number means
// MiB, as QEMU's -m does), `end=100M` in a workload (plain number = bytes),
// `-smp 4` / `-smp cpus=4,sockets=1,cores=4,threads=1`. Bad values are refused
// with a CommandError that names the value and says what is expected.
import { CommandError } from '../errors.js';

export const PAGE_SIZE = 4096;
/** the largest guest RAM accepted (virtual; untouched memory costs nothing) */
export const MAX_RAM_BYTES = 2 ** 40;
export const MAX_VCPUS = 512;

const UNITS: Record<string, number> = { B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
const SIZE_RE = /^(\d+(?:\.\d+)?)([BKMGT])?$/i;

/** bytes of "256M", "1.5G", "4096" (`defaultUnit` when no suffix); throws CommandError naming `what` */
export function parseSizeText(text: string, what: string, defaultUnit: 'B' | 'M'): number {
  const t = String(text).trim();
  if (t === '') throw new CommandError(`${what} is empty: expected a size such as 256M`);
  if (t.startsWith('-')) throw new CommandError(`${what} '${text}' is negative: expected a positive size such as 256M`);
  const m = SIZE_RE.exec(t);
  if (!m) {
    throw new CommandError(`${what} '${text}' is not a size: expected a number with an optional suffix ` +
      `B, K, M, G or T (e.g. 256M; no suffix means ${defaultUnit === 'M' ? 'MiB' : 'bytes'})`);
  }
  const unit = UNITS[(m[2] ?? defaultUnit).toUpperCase()];
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) {
    throw new CommandError(`${what} '${text}' is not a whole number of bytes or is too large`);
  }
  return bytes;
}

/** QEMU -m: guest RAM size in bytes. Plain numbers are MiB; must be a positive page multiple up to 1T. */
export function parseSize(text: string): number {
  const bytes = parseSizeText(text, 'RAM size', 'M');
  if (bytes === 0) throw new CommandError(`RAM size '${text}' is zero: expected a positive size such as 256M`);
  if (bytes % PAGE_SIZE !== 0) {
    throw new CommandError(`RAM size '${text}' (${bytes} bytes) is not a multiple of the page size (${PAGE_SIZE})`);
  }
  if (bytes > MAX_RAM_BYTES) {
    throw new CommandError(`RAM size '${text}' is too large: the maximum is ${formatSize(MAX_RAM_BYTES)}`);
  }
  return bytes;
}

/** "256M", "1G", "4K", or plain bytes when no unit divides it */
export function formatSize(bytes: number): string {
  for (const u of ['T', 'G', 'M', 'K'] as const) {
    if (bytes >= UNITS[u] && bytes % UNITS[u] === 0) return `${bytes / UNITS[u]}${u}`;
  }
  return String(bytes);
}

function parseCount(value: string, what: string): number {
  if (!/^\d+$/.test(value.trim())) throw new CommandError(`${what} '${value}' is not a whole number`);
  return Number(value);
}

/** QEMU -smp: "4", "cpus=4", "4,sockets=1,cores=2,threads=2"; 1..512 vCPUs */
export function parseSmp(text: string): number {
  const t = String(text).trim();
  if (t === '') throw new CommandError('-smp is empty: expected a vCPU count such as 4');
  const topo: Record<string, number> = {};
  let cpus: number | undefined;
  for (const [i, part] of t.split(',').entries()) {
    const eq = part.indexOf('=');
    if (eq < 0) {
      if (i !== 0) throw new CommandError(`-smp '${text}': '${part}' is not key=value`);
      cpus = parseCount(part, 'vCPU count');
      continue;
    }
    const key = part.slice(0, eq).trim();
    const val = parseCount(part.slice(eq + 1), `-smp ${key}`);
    if (key === 'cpus') cpus = val;
    else if (['sockets', 'dies', 'clusters', 'cores', 'threads', 'maxcpus'].includes(key)) topo[key] = val;
    else throw new CommandError(`-smp '${text}': unknown key '${key}' (known: cpus, sockets, dies, clusters, cores, threads, maxcpus)`);
  }
  const product = ['sockets', 'dies', 'clusters', 'cores', 'threads'].reduce((p, k) => p * (topo[k] ?? 1), 1);
  const hasTopo = ['sockets', 'dies', 'clusters', 'cores', 'threads'].some((k) => k in topo);
  if (cpus === undefined) cpus = hasTopo ? product : topo.maxcpus;
  if (cpus === undefined) throw new CommandError(`-smp '${text}': no vCPU count given`);
  if (hasTopo && product !== cpus) {
    throw new CommandError(`-smp '${text}': topology ${product} (sockets*dies*clusters*cores*threads) does not match cpus=${cpus}`);
  }
  if (topo.maxcpus !== undefined && topo.maxcpus !== cpus) {
    throw new CommandError(`-smp '${text}': CPU hotplug is not supported (maxcpus must equal cpus)`);
  }
  checkVcpuCount(cpus, `-smp '${text}'`);
  return cpus;
}

/** throws unless n is a whole number in 1..512 */
export function checkVcpuCount(n: number, what = 'vCPU count'): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_VCPUS) {
    throw new CommandError(`${what}: ${n} vCPUs is out of range (1..${MAX_VCPUS})`);
  }
}
