// The source's main connection (QEMU's migrate URI and its return path):
// connect within a time limit, then read the destination's return path
// (return-decoder.ts); a failure to connect names the address, a
// garbled return path or an early close says what went wrong. The stream
// itself is written by the native sender (outgoing-stream.ts).

import type { RamBlocks } from '../vm/ram-blocks.js';
import net from 'node:net';
import { systemErrorText } from '../errors.js';
import { formatMigrationUri, type MigrationAddress } from './uri.js';
import { WireError } from './wire.js';
import { ReturnDecoder, type ReturnHandler } from './return-decoder.js';
import { authenticateConnector } from './channel-auth.js';

const CONNECT_TIMEOUT_MS = 10000;

export interface MainConnection {
  /** connected (within the time limit) */
  connected(sock: net.Socket): void;
  fail(why: string): void;
  /** still connecting (a failure then is a failure to connect) */
  connecting(): boolean;
  /** the migration ended (a close is expected) */
  done(): boolean;
  /** the link is lost after the connection was made (an error, or a close without the return path's end):
   *  postcopy pauses on it (else it fails) */
  lost(why: string): void;
  /** x-migration-psk's key, proved before the stream starts (channel-auth.ts), or null */
  psk?: Buffer | null;
  /** guest RAM's blocks, which page requests name (default: one block) */
  blocks?: RamBlocks;
}

/** Connects to `addr`; the return path goes to `rp` (`recovery`: a postcopy recovery's, with its bitmap). */
export function connectMain(addr: MigrationAddress, rp: ReturnHandler, ramBytes: number, pageSize: number, h: MainConnection,
  recovery = false): net.Socket {
  const decoder = new ReturnDecoder(rp, ramBytes, pageSize, recovery, h.blocks);
  const sock = addr.transport === 'tcp' ? net.connect({ host: addr.host, port: addr.port }) : net.connect({ path: addr.path });
  const timer = setTimeout(() => sock.destroy(new Error(`timed out after ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
  sock.once('connect', () => {
    clearTimeout(timer);
    if (h.done()) return;
    sock.setNoDelay(true);
    authenticateConnector(sock, h.psk ?? null).then(() => { if (!h.done()) h.connected(sock); }, (e: Error) => h.fail(e.message));
  });
  sock.on('data', (chunk: Buffer) => {
    try {
      decoder.push(chunk);
    } catch (e) {
      h.fail(`return path: ${(e as Error).message}`);
    }
  });
  sock.on('error', (e: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    if (h.connecting()) h.fail(`Failed to connect to '${formatMigrationUri(addr)}': ${systemErrorText(e)}`);
    else h.lost(`migration connection error: ${e.message}`);
  });
  sock.on('close', () => {
    clearTimeout(timer);
    if (h.done()) return;
    try {
      decoder.finish();
      h.lost('the destination closed the connection');
    } catch (e) {
      h.lost(e instanceof WireError ? `${e.message} (the destination closed the connection)` : String(e));
    }
  });
  return sock;
}
