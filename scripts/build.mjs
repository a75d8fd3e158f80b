#!/usr/bin/env node
// Builds what `npm install` promises: the native shim (C, system compiler) and
// the TypeScript in dist/. A missing compiler or a failed build stops the
// install with a message that says what to install or fix.
// --if-stale: skip the work when every output is newer than every input.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const shimDir = join(root, 'native-shim');
const shimOut = join(shimDir, 'build', 'libpostcopy_shim.so');
const tsStamp = join(root, 'dist', '.build-stamp');
const ifStale = process.argv.includes('--if-stale');

function fail(msg) {
  process.stderr.write(`\npostcopy build failed: ${msg}\n\n`);
  process.exit(1);
}

function newest(paths, filter) {
  let t = 0;
  for (const p of paths) {
    if (!existsSync(p)) continue;
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const e of readdirSync(p)) {
        if (e === 'node_modules' || e === 'build' || e === 'dist') continue;
        t = Math.max(t, newest([join(p, e)], filter));
      }
    } else if (filter(p)) t = Math.max(t, st.mtimeMs);
  }
  return t;
}
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.error) fail(`${what}: could not run '${cmd}': ${r.error.message}`);
  if (r.status !== 0) fail(`${what} exited with status ${r.status} (see the messages above)`);
}

if (process.platform !== 'linux') fail(`postcopy needs Linux (userfaultfd); this is ${process.platform}`);

// 1. native shim
const cSources = readdirSync(shimDir).filter((f) => f.endsWith('.c')).map((f) => join(shimDir, f));
const cInputs = newest([shimDir], (p) => /\.(c|h)$/.test(p));
if (!ifStale || mtime(shimOut) < cInputs) {
  const cc = process.env.CC || 'cc';
  const probe = spawnSync(cc, ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) {
    fail(`no C compiler ('${cc}') found. Install one, e.g. 'apt-get install build-essential' ` +
      `(Debian/Ubuntu) or 'dnf install gcc' (Fedora), or set CC to your compiler, then run 'npm install' again.`);
  }
  mkdirSync(dirname(shimOut), { recursive: true });
  run(cc, ['-O2', '-g', '-Wall', '-Wextra', '-Werror', '-std=gnu11', '-fPIC', '-shared', '-pthread',
    '-o', shimOut, ...cSources], 'building native-shim');
}

// 2. TypeScript
const tsInputs = Math.max(newest([join(root, 'src'), join(root, 'bench'), join(root, 'test')], (p) => p.endsWith('.ts')),
  mtime(join(root, 'tsconfig.json')));
if (!ifStale || mtime(tsStamp) < tsInputs) {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) fail(`TypeScript is not installed; run 'npm install' first`);
  run(process.execPath, [tsc, '-p', root], 'compiling TypeScript');
  mkdirSync(dirname(tsStamp), { recursive: true });
  spawnSync('touch', [tsStamp]);
}
