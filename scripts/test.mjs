#!/usr/bin/env node
// Runs the jest suite as ESM (REFERENCE.md §5) and closes with one plain line,
// "jest: N passed, N failed, N skipped", that CI and people can read at a glance.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(mkdtempSync(join(tmpdir(), 'postcopy-jest-')), 'result.json');
const jest = join(root, 'node_modules', 'jest', 'bin', 'jest.js');
const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --experimental-vm-modules --no-warnings`.trim() };
const r = spawnSync(process.execPath, [jest, '--json', `--outputFile=${out}`, ...process.argv.slice(2)], {
  cwd: root, stdio: 'inherit', env,
});
let line = 'jest: no result file (the runner failed before any test ran)';
try {
  const res = JSON.parse(readFileSync(out, 'utf8'));
  line = `jest: ${res.numPassedTests} passed, ${res.numFailedTests} failed, ${res.numPendingTests + res.numTodoTests} skipped`;
  if (res.numTotalTests === 0) line += ' (no test ran)';
} catch { /* keep the message above */ }
rmSync(dirname(out), { recursive: true, force: true });
process.stdout.write(`\n${line}\n`);
process.exit(r.status ?? 1);
