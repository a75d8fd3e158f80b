// Where a destination waits for its source (QEMU's -incoming / migrate-incoming
// listener): a TCP or unix-socket server whose connections arrive paused
// (the native receiver reads the main one; Node never does). A unix socket
// is src/unix-listen.ts's: born 0600 in a private directory and renamed to
// its path, a stale socket replaced, a live one or any other file refused,
// and removed later only while it is still ours (removeUnixSocket).

import net from 'node:net';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import { CommandError } from '../errors.js';
import { listenUnixPrivate, type BoundUnixSocket } from '../unix-listen.js';

export interface Listener {
  server: net.Server;
  /** the unix socket bound (its public path), to remove once both connections are in; null for TCP */
  unix: BoundUnixSocket | null;
}

/** Listens on `addr`; resolves once listening. */
export async function listenForMigration(addr: MigrationAddress, onConnection: (s: net.Socket) => void): Promise<Listener> {
  const server = net.createServer({ pauseOnConnect: true }, onConnection);
  const where = `Failed to listen on '${formatMigrationUri(addr)}'`;
  if (addr.transport !== 'tcp') return { server, unix: await listenUnixPrivate(server, addr.path, where) };
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new CommandError(`${where}: ${e.code === 'EADDRINUSE' ? 'Address already in use' : e.message}`)));
    server.listen({ host: addr.host, port: addr.port }, () => resolve());
  });
  return { server, unix: null };
}
