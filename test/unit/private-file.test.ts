// Output files (traces, reports, imports) are created 0600, never through a
// symbolic link, never as a FIFO or device; an existing regular file of ours
// is truncated and tightened to 0600. Real files in a temporary directory.
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privateFileProblem, writePrivateFile } from '../../src/private-file.js';
import { openTraceFile } from '../../src/blocktime-trace/trace-file.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pc-private-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

const mode = (p: string): number => statSync(p).mode & 0o777;

describe('output files', () => {
  test('a new file is born 0600 whatever the umask', () => {
    const old = process.umask(0);
    try {
      writePrivateFile(join(dir, 'new.txt'), 'x\n');
    } finally { process.umask(old); }
    expect(mode(join(dir, 'new.txt'))).toBe(0o600);
    expect(readFileSync(join(dir, 'new.txt'), 'utf8')).toBe('x\n');
  });

  test('an existing 0644 file of ours is truncated and made 0600', () => {
    const p = join(dir, 'old.txt');
    writeFileSync(p, 'a much longer old content\n');
    chmodSync(p, 0o644);
    writePrivateFile(p, 'new\n');
    expect(readFileSync(p, 'utf8')).toBe('new\n');
    expect(mode(p)).toBe(0o600);
  });

  test('a symbolic link is not followed: its target stays untouched', () => {
    const target = join(dir, 'precious.txt');
    writeFileSync(target, 'keep me\n');
    const link = join(dir, 'trace.jsonl');
    symlinkSync(target, link);
    expect(privateFileProblem(link)).toBe('it is a symbolic link; not following it');
    expect(() => writePrivateFile(link, 'overwritten')).toThrow(`cannot write '${link}': it is a symbolic link; not following it`);
    expect(() => openTraceFile(link)).toThrow(/^x-blocktime-trace: cannot write '.*trace\.jsonl': it is a symbolic link/);
    expect(readFileSync(target, 'utf8')).toBe('keep me\n');
  });

  test('a FIFO is refused at once, not opened for a write that blocks', () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(privateFileProblem(fifo)).toBe('it is not a regular file');
    expect(() => writePrivateFile(fifo, 'x')).toThrow(/it is not a regular file/);
  });

  test('a directory, or a missing directory, is named', () => {
    expect(() => writePrivateFile(dir, 'x')).toThrow(/cannot write '.*': /);
    const missing = join(dir, 'nope', 'f.txt');
    expect(privateFileProblem(missing)).toBe(`directory ${join(dir, 'nope')} does not exist`);
    expect(() => writePrivateFile(missing, 'x')).toThrow(`directory ${join(dir, 'nope')} does not exist`);
    expect(existsSync(join(dir, 'nope'))).toBe(false);
  });

  test('a file of another user is refused, checked and opened alike', () => {
    const p = join(dir, 'theirs.txt');
    writeFileSync(p, 'theirs\n');
    if (process.geteuid?.() !== 0) {
      console.log('skipped: changing a file\'s owner needs root');
      return;
    }
    execFileSync('chown', ['65534', p]);
    expect(privateFileProblem(p)).toBe('it belongs to another user (uid 65534)');
    expect(() => writePrivateFile(p, 'mine')).toThrow(/belongs to another user/);
    expect(readFileSync(p, 'utf8')).toBe('theirs\n');
  });
});
