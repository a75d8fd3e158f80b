// A connected pair of unix sockets in `dir`, for tests that hand one end to a
// native thread (the page server, the fault thread) and play the peer on the other.
import net from 'node:net';
import { join } from 'node:path';

/** [the end a native thread takes, the test peer's end]; with `paused`, Node
 *  never reads the first end (accepted with pauseOnConnect, as the migration
 *  accepts its main stream: a thread that reads a dup of it gets every byte) */
export async function socketPair(dir: string, name: string, paused = false): Promise<[net.Socket, net.Socket]> {
  const path = join(dir, name);
  const server = net.createServer({ pauseOnConnect: paused });
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const peer = net.connect({ path });
  await new Promise<void>((r) => peer.once('connect', () => r()));
  const mine = await accepted;
  server.close();
  return [mine, peer];
}
