// A relay between two unix sockets whose connections can all be dropped at
// once: the link loss of bench recovery, for our VM processes and QEMU's alike.
import net from 'node:net';

export interface Relay {
  /** destroys every connection through it now; returns when (wall-clock ms) */
  cut(): number;
  close(): void;
}

/** a relay from `listen` to `to` whose connections can all be dropped at once */
export async function relay(listen: string, to: string): Promise<Relay> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((a) => {
    const b = net.connect({ path: to });
    sockets.push(a, b);
    a.pipe(b);
    b.pipe(a);
    a.on('error', () => undefined);
    b.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(listen, r));
  return {
    cut: () => { const t = Date.now(); for (const s of sockets) s.destroy(); return t; },
    close: () => server.close(),
  };
}

