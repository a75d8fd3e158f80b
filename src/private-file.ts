// Output files (blocktime traces, HTML reports, imported traces) are opened
// here and nowhere else. A trace names guest addresses and thread ids, and
// its path comes from the user, maybe in a shared directory: the file is
// created 0600, a symbolic link is never followed (another user's link in
// /tmp must not make us truncate a file of ours), and only a regular file of
// our own is truncated and reused. A FIFO or device is refused, not opened
// for a blocking write. Secrets (the migration's pre-shared key) are read
// here too, under the same rules and one more: a file group or others may
// read is refused, as ssh refuses such a private key.

import { accessSync, closeSync, constants, fchmodSync, fstatSync, ftruncateSync, lstatSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { systemErrorText } from './errors.js';

const SYMLINK = 'it is a symbolic link; not following it';
const NOT_REGULAR = 'it is not a regular file';
const foreign = (uid: number): string => `it belongs to another user (uid ${uid})`;
const noDir = (path: string): string => `directory ${dirname(resolve(path))} does not exist`;
const euid = (): number => process.geteuid?.() ?? 0;

/** `cannot write 'PATH': <reason>` (`cannot read` for a secret) */
export class PrivateFileError extends Error {
  constructor(readonly path: string, readonly reason: string, verb: 'write' | 'read' = 'write') {
    super(`cannot ${verb} '${path}': ${reason}`);
    this.name = 'PrivateFileError';
  }
}

/** Opens `path` for writing from its start: created 0600, or an existing
 *  regular file of ours truncated (and made 0600). Returns the fd. */
export function openPrivateFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ELOOP') throw new PrivateFileError(path, SYMLINK);
    if (err.code === 'ENXIO') throw new PrivateFileError(path, NOT_REGULAR);
    if (err.code === 'ENOENT') throw new PrivateFileError(path, noDir(path));
    throw new PrivateFileError(path, systemErrorText(err));
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new PrivateFileError(path, NOT_REGULAR);
    if (st.uid !== euid()) throw new PrivateFileError(path, foreign(st.uid));
    ftruncateSync(fd, 0);
    if ((st.mode & 0o077) !== 0) fchmodSync(fd, 0o600);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e instanceof PrivateFileError ? e : new PrivateFileError(path, (e as Error).message);
  }
}

/** Writes `data` to `path` as openPrivateFile opens it. */
export function writePrivateFile(path: string, data: string): void {
  const fd = openPrivateFile(path);
  try {
    const bytes = Buffer.from(data);
    for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off);
  } finally {
    closeSync(fd);
  }
}

/** Why openPrivateFile(path) would fail, checked without creating or
 *  touching anything (the directory exists and is writable; an existing
 *  file is a regular file of ours, not a link); null when it would not. */
export function privateFileProblem(path: string): string | null {
  try {
    const dir = dirname(resolve(path));
    let d;
    try { d = statSync(dir); } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return noDir(path);
      throw e;
    }
    if (!d.isDirectory()) return `${dir} is not a directory`;
    accessSync(dir, constants.W_OK);
    let st;
    try { st = lstatSync(path); } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    if (st.isSymbolicLink()) return SYMLINK;
    if (!st.isFile()) return NOT_REGULAR;
    if (st.uid !== euid()) return foreign(st.uid);
    accessSync(path, constants.W_OK);
    return null;
  } catch (e) {
    return systemErrorText(e as NodeJS.ErrnoException);
  }
}

/** Reads a secret of ours: a regular file (not a link, not a FIFO), owned
 *  by this user, mode 0600 or stricter, 1..maxBytes bytes. Throws
 *  PrivateFileError ("cannot read 'PATH': REASON"). */
export function readPrivateFile(path: string, maxBytes: number): Buffer {
  const refuse = (reason: string): PrivateFileError => new PrivateFileError(path, reason, 'read');
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ELOOP') throw refuse(SYMLINK);
    if (err.code === 'ENOENT') throw refuse('it does not exist');
    throw refuse(systemErrorText(err));
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw refuse(NOT_REGULAR);
    if (st.uid !== euid()) throw refuse(foreign(st.uid));
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    if ((st.mode & 0o077) !== 0) throw refuse(`its mode is ${mode}: group or others may read it (chmod 600 it)`);
    if (st.size === 0) throw refuse('it is empty');
    if (st.size > maxBytes) throw refuse(`it has ${st.size} bytes, more than ${maxBytes}`);
    const data = Buffer.alloc(st.size);
    let got = 0;
    while (got < data.length) {
      const n = readSync(fd, data, got, data.length - got, got);
      if (n === 0) break;
      got += n;
    }
    if (got === 0) throw refuse('it is empty');
    return data.subarray(0, got);
  } catch (e) {
    throw e instanceof PrivateFileError ? e : refuse((e as Error).message);
  } finally {
    closeSync(fd);
  }
}
