// Listening sockets as the monitors and the migration port need them, in one
// place: a unix socket is born 0600 inside a fresh 0700 directory and renamed
// to its public path, so no other user can connect in the window before a
// chmod; a path that holds something else, or a live socket, is never
// replaced; and on exit the file is removed only if it is still ours (same
// inode), so a later process that bound the same path keeps its socket.

import { lstatSync, mkdtempSync, renameSync, rmdirSync, statSync, unlinkSync, chmodSync } from 'node:fs';
import { createConnection, type Server } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { CommandError } from './errors.js';

/** A unix socket this process bound: where, and which inode, to remove it safely. */
export interface BoundUnixSocket {
  readonly path: string;
  readonly ino: number;
}

/** `server.listen(opts)` as a promise; failures as CommandError `${where}: cannot listen: <why>`. */
export function listenOn(server: Server, opts: { port: number; host: string } | { path: string },
                         where: string): Promise<void> {
  return new Promise((res, rej) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      const why = e.code === 'EADDRINUSE' ? 'address already in use'
        : e.code === 'EACCES' ? 'permission denied'
        : e.code === 'EADDRNOTAVAIL' ? 'address not available on this host'
        : e.code === 'ENOTFOUND' ? 'unknown host' : e.message;
      rej(new CommandError(`${where}: cannot listen: ${why}`));
    };
    const onListening = (): void => { server.off('error', onError); res(); };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(opts);
  });
}

/** Whether something accepts connections on the unix socket at `path`. */
export function socketIsLive(path: string): Promise<boolean> {
  return new Promise((res) => {
    const c = createConnection(path);
    const t = setTimeout(() => { c.destroy(); res(true); }, 500);
    c.once('connect', () => { clearTimeout(t); c.destroy(); res(true); });
    c.once('error', () => { clearTimeout(t); res(false); });
  });
}

/**
 * Makes `server` listen on the unix socket `path`, created 0600. A stale
 * socket file (nobody listening) is replaced; anything else at `path` is
 * refused. Errors are CommandError prefixed with `where`.
 */
export async function listenUnixPrivate(server: Server, path: string, where: string): Promise<BoundUnixSocket> {
  const abs = resolve(path);
  let existing;
  try { existing = lstatSync(abs); } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CommandError(`${where}: ${(e as Error).message}`);
  }
  if (existing) {
    if (!existing.isSocket()) throw new CommandError(`${where}: ${path} exists and is not a socket; refusing to replace it`);
    if (await socketIsLive(abs)) throw new CommandError(`${where}: another process is already listening on ${path}`);
  }
  let dir: string;
  try { dir = mkdtempSync(join(dirname(abs), '.sock-')); } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CommandError(`${where}: directory ${dirname(abs)} does not exist`);
    if (code === 'EACCES') throw new CommandError(`${where}: cannot create a socket in ${dirname(abs)} (permission denied)`);
    throw new CommandError(`${where}: ${(e as Error).message}`);
  }
  // mkdtemp makes the directory 0700: nobody else can reach the socket
  // inside it; it is made 0600 before it moves to its public path
  const tmp = join(dir, 's');
  try {
    if (Buffer.byteLength(tmp) > 107) throw new CommandError(`${where}: socket path too long for the temporary name ${tmp}`);
    await listenOn(server, { path: tmp }, where);
    chmodSync(tmp, 0o600);
    renameSync(tmp, abs);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* not there */ }
    try { rmdirSync(dir); } catch { /* keep going */ }
    if (server.listening) server.close();
    throw e instanceof CommandError ? e : new CommandError(`${where}: ${(e as Error).message}`);
  }
  rmdirSync(dir);
  return { path: abs, ino: statSync(abs).ino };
}

/** Removes the socket file if it is still the one we bound. */
export function removeUnixSocket(bound: BoundUnixSocket): void {
  try {
    if (statSync(bound.path).ino === bound.ino) unlinkSync(bound.path);
  } catch { /* already gone */ }
}
