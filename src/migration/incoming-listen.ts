// Where a destination waits for its source (QEMU's -incoming / migrate-incoming
// listener): a TCP or unix-socket server whose connections arrive paused
// (the native receiver reads the main one; Node never does), a unix socket
// file born 0600, and an existing file refused rather than taken over.

import net from 'node:net';
import { chmodSync, unlinkSync, lstatSync } from 'node:fs';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import { CommandError } from '../errors.js';

export interface Listener {
  server: net.Server;
  /** the unix socket file, to remove once both connections are in ('' for TCP) */
  unixPath: string;
}

/** Listens on `addr`; resolves once listening. */
export function listenForMigration(addr: MigrationAddress, onConnection: (s: net.Socket) => void): Promise<Listener> {
  return new Promise<Listener>((resolve, reject) => {
    const server = net.createServer({ pauseOnConnect: true }, onConnection);
    server.once('error', (e: NodeJS.ErrnoException) => {
      reject(new CommandError(`Failed to listen on '${formatMigrationUri(addr)}': ${e.code === 'EADDRINUSE' ? 'Address already in use' : e.message}`));
    });
    if (addr.transport === 'tcp') {
      server.listen({ host: addr.host, port: addr.port }, () => resolve({ server, unixPath: '' }));
      return;
    }
    if (socketFileExists(addr.path)) {
      reject(new CommandError(`Failed to listen on '${formatMigrationUri(addr)}': Address already in use (remove ${addr.path} if no VM uses it)`));
      return;
    }
    const old = process.umask(0o177); // the socket file is born 0600
    try {
      server.listen({ path: addr.path }, () => {
        try { chmodSync(addr.path, 0o600); } catch { /* umask did it */ }
        resolve({ server, unixPath: addr.path });
      });
    } finally {
      process.umask(old);
    }
  });
}

/** removes a unix socket file ('' = none); gone already is fine */
export function removeSocketFile(path: string): void {
  if (path === '') return;
  try { unlinkSync(path); } catch { /* gone */ }
}

function socketFileExists(path: string): boolean {
  try {
    return lstatSync(path) !== undefined;
  } catch {
    return false;
  }
}
