// `postcopy blocktime-import FILE [--vcpus TID,TID...] [-o OUT.jsonl]`: turns
// a QEMU destination's trace log (trace-log.ts) into our blocktime trace, on
// stdout or into OUT, for `postcopy blocktime-replay OUT [--compare]`. A log
// that cannot be imported prints `postcopy: FILE:LINE: problem` and exits 1;
// usage errors exit 2.

import { writePrivateFile } from '../private-file.js';
import { QemuLogError, readQemuTraceLog, traceLines } from './trace-log.js';

const USAGE = 'usage: postcopy blocktime-import FILE [--vcpus TID,TID...] [-o OUT.jsonl]\n';

export async function main(argv: string[]): Promise<number> {
  const usage = (msg: string): number => {
    process.stderr.write(`postcopy: blocktime-import: ${msg}\n${USAGE}`);
    return 2;
  };
  const files: string[] = [];
  let vcpus: number[] | undefined;
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') { process.stdout.write(USAGE); return 0; }
    if (a === '--vcpus' || a === '-o') {
      const v = argv[++i];
      if (v === undefined) return usage(`${a} needs a value`);
      if (a === '-o') { out = v; continue; }
      const parsed = parseVcpus(v);
      if (typeof parsed === 'string') return usage(parsed);
      vcpus = parsed;
    } else if (a.startsWith('-') && a !== '-') {
      return usage(`unknown option '${a}'`);
    } else {
      files.push(a);
    }
  }
  if (files.length !== 1) return usage(files.length === 0 ? 'no QEMU trace log given' : 'give exactly one QEMU trace log');

  let text: string;
  try {
    const trace = await readQemuTraceLog(files[0], vcpus);
    text = `${[...traceLines(trace)].join('\n')}\n`;
  } catch (e) {
    if (!(e instanceof QemuLogError)) throw e;
    process.stderr.write(`postcopy: ${e.message}\n`);
    return 1;
  }
  if (out === undefined) {
    process.stdout.write(text);
    return 0;
  }
  try {
    writePrivateFile(out, text);
  } catch (e) {
    process.stderr.write(`postcopy: blocktime-import: ${(e as Error).message}\n`);
    return 1;
  }
  return 0;
}

/** "TID,TID..." as thread ids, or what is wrong with it. */
function parseVcpus(v: string): number[] | string {
  const parts = v.split(',');
  const tids: number[] = [];
  for (const p of parts) {
    if (!/^\d+$/.test(p) || Number(p) === 0 || Number(p) > 0xffffffff) {
      return `--vcpus: '${p}' is no thread id (expected TID,TID... by vCPU index, e.g. --vcpus 14782,14783)`;
    }
    if (tids.includes(Number(p))) return `--vcpus: thread id ${p} appears twice`;
    tids.push(Number(p));
  }
  return tids;
}
