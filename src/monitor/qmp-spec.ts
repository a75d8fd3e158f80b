// The -qmp option's spec, as QEMU spells it: `unix:PATH,server=on,wait=off`
// or `tcp:HOST:PORT,server=on,wait=off` (QEMU's option-list syntax: ',,' is
// a literal comma; on/off values; what this server cannot do is refused with
// a text that names it). Parsed before anything starts, so a bad option
// fails the command line, not the running VM.

import { resolve } from 'node:path';
import { CommandError } from '../errors.js';

export type QmpSpec =
  | { transport: 'unix'; path: string }
  | { transport: 'tcp'; host: string; port: number };

/** QEMU's option-list split: ',' separates, ',,' is a literal comma. */
function splitOpts(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === ',') {
      if (s[i + 1] === ',') { cur += ','; i++; continue; }
      out.push(cur); cur = '';
      continue;
    }
    cur += s[i];
  }
  out.push(cur);
  return out;
}

function parseOnOff(spec: string, key: string, v: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(v)) return true;
  if (['off', 'no', 'false', 'n'].includes(v)) return false;
  throw new CommandError(`-qmp ${spec}: parameter '${key}' expects 'on' or 'off', not '${v}'`);
}

/** Parses a -qmp argument. Only server mode without waiting is supported;
 *  anything else is refused with a message naming the problem. */
export function parseQmpSpec(spec: string): QmpSpec {
  const parts = splitOpts(spec);
  const head = parts[0];
  let result: QmpSpec;
  if (head.startsWith('unix:')) {
    const path = head.slice(5);
    if (path === '') throw new CommandError(`-qmp ${spec}: the socket path is empty (use unix:PATH)`);
    if (path.includes('\0')) throw new CommandError(`-qmp ${spec}: the socket path contains a NUL byte`);
    const bytes = Buffer.byteLength(resolve(path));
    if (bytes > 107) throw new CommandError(`-qmp ${spec}: socket path too long (${bytes} bytes; a unix socket path has at most 107)`);
    result = { transport: 'unix', path };
  } else if (head.startsWith('tcp:')) {
    const rest = head.slice(4);
    const colon = rest.lastIndexOf(':');
    if (colon < 0) throw new CommandError(`-qmp ${spec}: expected tcp:HOST:PORT`);
    let host = rest.slice(0, colon);
    if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
    const portText = rest.slice(colon + 1);
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
      throw new CommandError(`-qmp ${spec}: port '${portText}' is not a number in 0..65535`);
    }
    // an empty host means loopback here (QEMU would listen on every address)
    result = { transport: 'tcp', host: host === '' ? '127.0.0.1' : host, port: Number(portText) };
  } else {
    const kind = /^[a-z]+/.exec(head)?.[0] ?? head;
    throw new CommandError(`-qmp ${spec}: unsupported QMP transport '${kind}' (use unix:PATH or tcp:HOST:PORT)`);
  }
  for (const opt of parts.slice(1)) {
    const eq = opt.indexOf('=');
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? undefined : opt.slice(eq + 1);
    switch (key) {
      case 'server':
        if (value !== undefined && !parseOnOff(spec, key, value)) {
          throw new CommandError(`-qmp ${spec}: server=off (connecting out to a QMP client) is not supported; use server=on`);
        }
        break;
      case 'wait':
        if (value === undefined || parseOnOff(spec, key, value)) {
          throw new CommandError(`-qmp ${spec}: wait=on is not supported (the VM does not wait for a QMP client before starting); use wait=off`);
        }
        break;
      case 'nowait':
        if (value !== undefined) throw new CommandError(`-qmp ${spec}: 'nowait' takes no value`);
        break;
      case '':
        throw new CommandError(`-qmp ${spec}: empty option (stray ',')`);
      default:
        throw new CommandError(`-qmp ${spec}: invalid parameter '${key}' (known: server, wait)`);
    }
  }
  return result;
}

export function formatQmpSpec(s: QmpSpec): string {
  return s.transport === 'unix' ? `unix:${s.path}` : `tcp:${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port}`;
}

// ------------------------------------------------------------------ server
