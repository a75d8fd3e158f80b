#!/usr/bin/env node
// Runs the jest suite as ESM (REFERENCE.md §5) and closes with one plain line,
// "jest: N passed, N failed, N skipped", that CI and people can read at a glance.
// With no arguments (`npm test`): every test file in parallel, except the
// `*.alone.test.ts` ones, which then run one at a time with nothing else: they
// hold our timing against the kernel's and must not share the two CPUs with
// other migrations. With arguments (files, -t ...): one jest run of those.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(join(tmpdir(), 'postcopy-jest-'));
const jest = join(root, 'node_modules', 'jest', 'bin', 'jest.js');
const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --experimental-vm-modules --no-warnings`.trim() };
const ALONE = '\\.alone\\.test\\.ts$';

function runJest(args, name) {
  const out = join(dir, `${name}.json`);
  const r = spawnSync(process.execPath, [jest, '--json', `--outputFile=${out}`, ...args], { cwd: root, stdio: 'inherit', env });
  try {
    return { status: r.status ?? 1, res: JSON.parse(readFileSync(out, 'utf8')) };
  } catch {
    return { status: r.status ?? 1, res: undefined };
  }
}

const given = process.argv.slice(2);
const runs = given.length > 0
  ? [runJest(given, 'given')]
  : [runJest(['--testPathIgnorePatterns', ALONE], 'parallel'), runJest(['--runInBand', '--testPathPatterns', ALONE], 'alone')];

let line = 'jest: no result file (the runner failed before any test ran)';
if (runs.every((r) => r.res !== undefined)) {
  const sum = (k) => runs.reduce((n, r) => n + r.res[k], 0);
  line = `jest: ${sum('numPassedTests')} passed, ${sum('numFailedTests')} failed, ${sum('numPendingTests') + sum('numTodoTests')} skipped`;
  if (sum('numTotalTests') === 0) line += ' (no test ran)';
}
rmSync(dir, { recursive: true, force: true });
process.stdout.write(`\n${line}\n`);
process.exit(runs.every((r) => r.status === 0) ? 0 : 1);
