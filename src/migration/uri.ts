// Migration URIs in QEMU's spelling: `tcp:HOST:PORT` and `unix:PATH`.
// Parsing lives apart so the monitors, the engine and the batch mode reject a
// bad address with the same clear message before any socket is touched.

import { CommandError } from '../errors.js';

export type MigrationAddress =
  | { transport: 'tcp'; host: string; port: number }
  | { transport: 'unix'; path: string };

/** Host used when a tcp URI names none (`tcp::4444`): loopback, never every interface. */
export const DEFAULT_TCP_HOST = '127.0.0.1';

export function parseMigrationUri(text: string): MigrationAddress {
  if (typeof text !== 'string' || text.length === 0) throw new CommandError('Migration URI is empty (expected tcp:HOST:PORT or unix:PATH)');
  if (text.startsWith('tcp:')) {
    const rest = text.slice(4);
    let host: string;
    let portText: string;
    if (rest.startsWith('[')) { // [v6]:port
      const close = rest.indexOf(']');
      if (close < 0 || rest[close + 1] !== ':') throw new CommandError(`Invalid migration URI '${text}': expected tcp:[ADDR]:PORT`);
      host = rest.slice(1, close);
      portText = rest.slice(close + 2);
    } else {
      const colon = rest.lastIndexOf(':');
      if (colon < 0) throw new CommandError(`Invalid migration URI '${text}': expected tcp:HOST:PORT`);
      host = rest.slice(0, colon);
      portText = rest.slice(colon + 1);
      if (host.includes(':')) throw new CommandError(`Invalid migration URI '${text}': write IPv6 addresses as tcp:[ADDR]:PORT`);
    }
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
      throw new CommandError(`Invalid migration URI '${text}': port '${portText}' is not a number in 0..65535`);
    }
    if (host !== '' && !/^[A-Za-z0-9.\-:%]+$/.test(host)) throw new CommandError(`Invalid migration URI '${text}': bad host '${host}'`);
    return { transport: 'tcp', host: host === '' ? DEFAULT_TCP_HOST : host, port: Number(portText) };
  }
  if (text.startsWith('unix:')) {
    const path = text.slice(5);
    if (path.length === 0) throw new CommandError(`Invalid migration URI '${text}': the unix socket path is empty`);
    if (path.includes('\0')) throw new CommandError(`Invalid migration URI: the unix socket path contains a NUL byte`);
    if (Buffer.byteLength(path) > 107) throw new CommandError(`Invalid migration URI: unix socket path too long (${Buffer.byteLength(path)} bytes, at most 107)`);
    return { transport: 'unix', path };
  }
  const scheme = /^([a-z0-9+-]+):/i.exec(text)?.[1];
  throw new CommandError(scheme
    ? `Migration URI scheme '${scheme}' is not supported (use tcp:HOST:PORT or unix:PATH)`
    : `Invalid migration URI '${text}' (expected tcp:HOST:PORT or unix:PATH)`);
}

export function formatMigrationUri(a: MigrationAddress): string {
  if (a.transport === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `tcp:[${a.host}]:${a.port}` : `tcp:${a.host}:${a.port}`;
}
