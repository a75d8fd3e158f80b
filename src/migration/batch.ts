// `postcopy run`: one whole migration as a batch job. Starts a destination
// and a source VM process on this host (by default joined by a unix socket
// in a private 0700 directory; loopback TCP on request), lets the source's
// workload warm up, migrates, switches to postcopy after a delay, waits for
// both sides to finish and prints both sides' query-migrate (one JSON line
// with --json).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError } from '../errors.js';
import { parseSize, parseSmp, parseWorkload, formatWorkload } from '../vm/index.js';
import { LocalDestination, VmProcess } from './local-destination.js';
import {
  emptyMemoryOptions, memoryBackendArgs, memoryBackendsArgs, parseMachineOption, parseNumaNode, resolveMemory, workloadBlocks, type MemoryBackend,
} from '../vm/memory-backend.js';
import { checkTracePath } from '../blocktime-trace/index.js';
import { MAX_POSTCOPY_READAHEAD } from './parameters.js';
import { stallSentence } from './convergence.js';
import type { CapabilityState, MigrationInfo } from './api.js';

export const USAGE = `usage: postcopy run [options]
  -m SIZE               guest RAM (QEMU syntax; plain number = MiB)      [150M]
  -mem-path DIR, -mem-prealloc, -object memory-backend-file,id=ID,...,
  -machine memory-backend=ID, -numa node,memdev=ID
                        guest RAM's backend, as for one VM (hugetlbfs):
                        both VM processes get it
  -smp N                vCPUs                                             [1]
  -workload SPEC        the source's workload, e.g. sweep,end=100M        [sweep]
  --warm SECONDS        let the workload run before migrating             [4]
  --postcopy-after S    switch to postcopy S seconds after migrate;
                        'never' = precopy only: the run fails as soon
                        as the source says precopy is not converging      [0.3]
  --uri unix|tcp        transport: a unix socket in a private 0700
                        directory, or TCP on 127.0.0.1 (which any local
                        user can reach while the migration runs)          [unix]
  --no-blocktime        leave postcopy-blocktime off on the destination
  --trace FILE          record the blocktime trace (x-blocktime-trace)
  --max-bandwidth B/S   precopy bandwidth limit (bytes/s)                 [134217728]
  --max-postcopy-bandwidth B/S  postcopy limit (bytes/s, 0 = none)        [0]
  --readahead PAGES     pages after a faulted one the destination asks
                        for with it (x-postcopy-readahead, 0..255)        [0]
  --timeout SECONDS     give up after this long                           [120]
  --json                one JSON line: {"wall_s", "source", "destination"}
`;

export interface BatchOptions {
  ramBytes: number;
  /** guest RAM's backend for both processes (null: anonymous 4 KiB pages) */
  memoryBackend?: MemoryBackend | null;
  /** the backends of several RAM blocks (-numa node,memdev=ID repeated), for both processes */
  memoryBackends?: MemoryBackend[];
  vcpus: number;
  workload: string;
  warmS: number;
  /** null: never switch (precopy only) */
  postcopyAfterS: number | null;
  transport: 'tcp' | 'unix';
  blocktime: boolean;
  trace: string;
  maxBandwidth?: number;
  maxPostcopyBandwidth?: number;
  /** x-postcopy-readahead on the destination */
  readahead?: number;
  timeoutS: number;
  json: boolean;
  /** -h / --help: print the usage, run nothing */
  help?: boolean;
}

export interface BatchResult {
  wall_s: number;
  source: MigrationInfo;
  destination: MigrationInfo;
}

function seconds(flag: string, v: string | undefined): number {
  if (v === undefined) throw new CommandError(`${flag} needs a value (seconds)`);
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > 3600) throw new CommandError(`${flag} '${v}' is not a number of seconds in 0..3600`);
  return n;
}

function bytesPerSecond(flag: string, v: string | undefined): number {
  if (v === undefined || !/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new CommandError(`${flag} '${v ?? ''}' is not a whole number of bytes per second`);
  return Number(v);
}

export function parseBatchArgs(argv: string[]): BatchOptions {
  const o: BatchOptions = {
    ramBytes: 150 * 1024 * 1024, vcpus: 1, workload: 'sweep', warmS: 4, postcopyAfterS: 0.3,
    transport: 'unix', blocktime: true, trace: '', timeoutS: 120, json: false,
  };
  let ramText = '150M';
  let ramGiven = false;
  const mem = emptyMemoryOptions();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = (): string | undefined => argv[++i];
    switch (a) {
      case '-m': { const v = val(); if (v === undefined) throw new CommandError('-m needs a size'); ramText = v; o.ramBytes = parseSize(v); ramGiven = true; break; }
      case '-mem-path': { const v = val(); if (v === undefined) throw new CommandError('-mem-path needs a directory'); mem.memPath = v; break; }
      case '-mem-prealloc': mem.memPrealloc = true; break;
      case '-object': { const v = val(); if (v === undefined) throw new CommandError('-object needs a value'); mem.objects.push(v); break; }
      case '-machine': case '-M': { const v = val(); if (v === undefined) throw new CommandError(`${a} needs a value`); mem.machineBackend = parseMachineOption(v) ?? mem.machineBackend; break; }
      case '-numa': { const v = val(); if (v === undefined) throw new CommandError('-numa needs a value'); mem.numaMemdevs.push(parseNumaNode(v)); break; }
      case '-smp': { const v = val(); if (v === undefined) throw new CommandError('-smp needs a vCPU count'); o.vcpus = parseSmp(v); break; }
      case '-workload': { const v = val(); if (v === undefined) throw new CommandError('-workload needs a spec'); o.workload = v; break; }
      case '--warm': o.warmS = seconds(a, val()); break;
      case '--postcopy-after': { const v = val(); o.postcopyAfterS = v === 'never' ? null : seconds(a, v); break; }
      case '--uri': {
        const v = val();
        if (v !== 'tcp' && v !== 'unix') throw new CommandError(`--uri '${v ?? ''}': expected tcp or unix`);
        o.transport = v;
        break;
      }
      case '--no-blocktime': o.blocktime = false; break;
      case '--trace': { const v = val(); if (!v) throw new CommandError('--trace needs a file name'); o.trace = v; break; }
      case '--max-bandwidth': o.maxBandwidth = bytesPerSecond(a, val()); break;
      case '--max-postcopy-bandwidth': o.maxPostcopyBandwidth = bytesPerSecond(a, val()); break;
      case '--readahead': {
        const v = val();
        if (v === undefined || !/^\d+$/.test(v) || Number(v) > MAX_POSTCOPY_READAHEAD) throw new CommandError(`--readahead '${v ?? ''}' is not a number of pages in 0..${MAX_POSTCOPY_READAHEAD}`);
        o.readahead = Number(v);
        break;
      }
      case '--timeout': o.timeoutS = seconds(a, val()); if (o.timeoutS === 0) throw new CommandError('--timeout must be > 0'); break;
      case '--json': o.json = true; break;
      case '-h': case '--help': o.help = true; return o;
      default: throw new CommandError(`unknown option '${a}' (see postcopy run --help)`);
    }
  }
  const resolved = resolveMemory(mem, ramGiven ? o.ramBytes : undefined, o.ramBytes);
  o.ramBytes = resolved.ramBytes;
  o.memoryBackend = resolved.backend;
  o.memoryBackends = resolved.backends;
  if (!ramGiven) ramText = `${o.ramBytes}B`;
  // the workload must fit the RAM size (whatever the order of -m and -workload)
  try {
    o.workload = formatWorkload(parseWorkload(o.workload, o.ramBytes, workloadBlocks(resolved.backends, o.ramBytes)));
  } catch (e) {
    throw new CommandError(`${(e as Error).message} (with -m ${ramText})`);
  }
  checkTracePath(o.trace); // fail now on an unwritable path, not after the migration
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The two VM processes of a batch run, for callers that look at them when
 *  the migration has ended and before they quit (benchmarks read /proc). */
export interface BatchProcesses { sourcePid: number; destinationPid: number }

/** Runs one migration between two fresh VM processes; `atEnd` (optional) runs
 *  once both sides have ended, while both processes are still alive. */
export async function runBatch(o: BatchOptions, atEnd?: (p: BatchProcesses) => void): Promise<BatchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-run-')); // 0700
  const caps: CapabilityState[] = [
    { capability: 'events', state: true }, { capability: 'return-path', state: true },
    { capability: 'postcopy-ram', state: o.postcopyAfterS !== null },
  ];
  const params = {
    ...(o.maxBandwidth !== undefined ? { 'max-bandwidth': o.maxBandwidth } : {}),
    ...(o.maxPostcopyBandwidth !== undefined ? { 'max-postcopy-bandwidth': o.maxPostcopyBandwidth } : {}),
  };
  let dest: LocalDestination | null = null;
  let source: VmProcess | null = null;
  try {
    const memoryArgs = o.memoryBackends && o.memoryBackends.length > 1 ? memoryBackendsArgs(o.memoryBackends, o.ramBytes)
      : memoryBackendArgs(o.memoryBackend ?? null, o.ramBytes);
    const common = ['-m', `${o.ramBytes}B`, ...memoryArgs, '-smp', String(o.vcpus), '-workload', o.workload];
    [dest, source] = await Promise.all([
      LocalDestination.spawn({
        ramBytes: o.ramBytes, memoryArgs, vcpus: o.vcpus, workload: o.workload, transport: o.transport,
        capabilities: [...caps, { capability: 'postcopy-blocktime', state: o.blocktime }],
        parameters: {
          ...params, ...(o.trace ? { 'x-blocktime-trace': o.trace } : {}),
          ...(o.readahead !== undefined ? { 'x-postcopy-readahead': o.readahead } : {}),
        } as never,
      }),
      VmProcess.spawn(common, join(dir, 'source-qmp.sock'), undefined, [], dir),
    ]);
    await source.configure(caps, params);
    await sleep(o.warmS * 1000);
    const t0 = performance.now();
    const deadline = Date.now() + o.timeoutS * 1000;
    await source.qmp.execute('migrate', { uri: dest.uri });
    if (o.postcopyAfterS !== null) {
      await sleep(o.postcopyAfterS * 1000);
      const now = await source.queryMigrate();
      if (now.status === 'setup' || now.status === 'active') await source.qmp.execute('migrate-start-postcopy');
    }
    // precopy only: no point waiting for a precopy that the source says cannot converge
    const stalled = (i: MigrationInfo): string | undefined => (i['x-convergence'] ? stallSentence(i['x-convergence'], 'batch') : undefined);
    const srcInfo = await source.waitDone(Math.max(1, deadline - Date.now()), o.postcopyAfterS === null ? stalled : undefined);
    const dstInfo = await dest.waitDone(Math.max(1000, deadline - Date.now()));
    const wall = (performance.now() - t0) / 1000;
    atEnd?.({ sourcePid: source.child.pid ?? 0, destinationPid: dest.vm.child.pid ?? 0 });
    return { wall_s: Math.round(wall * 1000) / 1000, source: srcInfo, destination: dstInfo };
  } finally {
    await Promise.all([source?.quit(), dest?.quit()].map((p) => p?.catch(() => undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
}

function mib(n: number | undefined): string {
  return `${((n ?? 0) / 1048576).toFixed(1)} MiB`;
}

export function formatBatchSummary(r: BatchResult): string {
  const s = r.source;
  const d = r.destination;
  const lines = [
    `migration: source ${s.status}, destination ${d.status}${s['error-desc'] ? ` (source: ${s['error-desc']})` : ''}${d['error-desc'] ? ` (destination: ${d['error-desc']})` : ''}`,
    `wall time (migrate -> completed): ${r.wall_s.toFixed(3)} s; total-time ${s['total-time'] ?? '-'} ms, setup ${s['setup-time'] ?? '-'} ms, downtime ${s.downtime ?? '-'} ms`,
  ];
  if (s.ram) {
    lines.push(`transferred ${mib(s.ram.transferred)} at ${s.ram.mbps} Mbps: ${s.ram.normal} pages, ${s.ram.duplicate} zero pages, ${s.ram['dirty-sync-count']} dirty syncs`);
    lines.push(`precopy ${mib(s.ram['precopy-bytes'])}, postcopy ${mib(s.ram['postcopy-bytes'])}, postcopy requests ${s.ram['postcopy-requests']}`);
  }
  const bt = d['x-blocktime'];
  if (bt) {
    if (bt.unavailable) lines.push(`blocktime: unavailable (${bt.unavailable})`);
    else {
      lines.push(`blocktime: total ${d['postcopy-blocktime']} ms, per vCPU [${(d['postcopy-vcpu-blocktime'] ?? []).join(', ')}] ms, ${bt.faults} faults`);
      lines.push(`fault latency: avg ${((d['postcopy-latency'] ?? 0) / 1000).toFixed(1)} us, p50 ${(bt.latencyP50Ns / 1000).toFixed(1)} us, p99 ${(bt.latencyP99Ns / 1000).toFixed(1)} us, max ${(bt.latencyMaxNs / 1000).toFixed(1)} us`);
    }
  }
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  let o: BatchOptions;
  try {
    o = parseBatchArgs(argv);
  } catch (e) {
    process.stderr.write(`postcopy run: ${(e as Error).message}\n`);
    return 2;
  }
  if (o.help) { process.stdout.write(USAGE); return 0; }
  try {
    const r = await runBatch(o);
    process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatBatchSummary(r)}\n`);
    return r.source.status === 'completed' && r.destination.status === 'completed' ? 0 : 1;
  } catch (e) {
    process.stderr.write(`postcopy run: ${(e as Error).message}\n`);
    return 1;
  }
}
