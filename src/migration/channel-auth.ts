// Why this module: a migration port beyond loopback is open to whoever can
// reach it, and the token that ties a migration's two connections together
// (incoming-urgent.ts) is no secret from someone who reads the stream. With
// the parameter x-migration-psk (a key FILE) set, every connection (the main
// one, the urgent channel, any later reconnection) proves knowledge of the key
// before a migration byte moves, both ways, by challenge-response with
// HMAC-SHA256: a source sends no guest to a peer without the key, and a
// destination takes none from one.
//
//   source (connector)                        destination (listener)
//   AUTH 1: its nonce        -- at connect --  RP_AUTH 1: its nonce
//   AUTH 2: HMAC(key, "source" | nonces)  -->  checked (timingSafeEqual)
//   checked, then its HEADER  <--  RP_AUTH 2: HMAC(key, "destination" | nonces)
//
// Fixed-size records (wire.ts's AUTH and RP_AUTH, with a magic and a
// version), each side's first one sent at connect: a peer without a key reads
// it at once as something it does not expect and says so, naming the key (no
// hang). One round trip per channel. The listener never reads past the
// exchange: a destination's connections are accepted paused and read later by
// the native receiver or the urgent gate, so the exchange is read on a dup of
// the socket's fd that is closed before the listener's proof goes out (the
// source writes nothing more until it has that proof). No encryption and no
// integrity of the stream itself: QEMU's TLS (tls-creds) is the step after.

import net from 'node:net';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { CommandError } from '../errors.js';
import { PrivateFileError, readPrivateFile } from '../private-file.js';
import { dupSocket } from '../native/socket-handover.js';
import { HANDSHAKE_TIMEOUT_MS } from './incoming-urgent.js';
import { MAX_TEXT_BYTES, RECORD_HEADER_BYTES, REC_AUTH, REC_ERROR, REC_HEADER, RP_AUTH, RP_ERROR, writeRecordHeader } from './wire.js';

export const AUTH_MAGIC = 0x4b535050; // "PPSK" little endian
export const AUTH_VERSION = 1;
/** bytes of a nonce and of an HMAC-SHA256 */
const VALUE_BYTES = 32;
const PAYLOAD_BYTES = 8 + VALUE_BYTES;
/** every message of the exchange, either way */
export const AUTH_MESSAGE_BYTES = RECORD_HEADER_BYTES + PAYLOAD_BYTES;
const STEP_NONCE = 1;
const STEP_PROOF = 2;
/** a key file's size: at least MIN_KEY_BYTES (16 random bytes), at most MAX_KEY_BYTES */
export const MIN_KEY_BYTES = 16;
export const MAX_KEY_BYTES = 4096;
const MAKE_ONE = 'make one with: head -c 32 /dev/urandom > FILE; chmod 600 FILE';

/** The exchange failed; the message says why (the listener's is a refusal's reason). */
export class ChannelAuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChannelAuthError';
  }
}

/** The key in `path`, checked as private-file.ts reads secrets (PrivateFileError). */
function readKey(path: string): Buffer {
  const key = readPrivateFile(path, MAX_KEY_BYTES);
  if (key.length < MIN_KEY_BYTES) throw new PrivateFileError(path, `it holds ${key.length} bytes, fewer than ${MIN_KEY_BYTES} (${MAKE_ONE})`, 'read');
  return key;
}

/** x-migration-psk's key ('' = none: null), read now: when the parameter is
 *  set, and again when a migration starts (the file may have changed).
 *  Throws CommandError naming the problem. */
export function loadMigrationKey(path: string): Buffer | null {
  if (path === '') return null;
  try {
    return readKey(path);
  } catch (e) {
    throw new CommandError(`x-migration-psk: ${(e as Error).message}`);
  }
}

function message(type: number, step: number, value: Buffer): Buffer {
  const out = Buffer.alloc(AUTH_MESSAGE_BYTES);
  writeRecordHeader(out, 0, type, step, PAYLOAD_BYTES, 0);
  out.writeUInt32LE(AUTH_MAGIC, RECORD_HEADER_BYTES);
  out.writeUInt32LE(AUTH_VERSION, RECORD_HEADER_BYTES + 4);
  value.copy(out, RECORD_HEADER_BYTES + 8);
  return out;
}

/** HMAC(key, label | the destination's nonce | the source's nonce); the label keeps one side's proof from serving as the other's */
function proof(key: Buffer, prover: 'source' | 'destination', listenerNonce: Buffer, connectorNonce: Buffer): Buffer {
  return createHmac('sha256', key).update(`postcopy x-migration-psk v${AUTH_VERSION} ${prover}\0`)
    .update(listenerNonce).update(connectorNonce).digest();
}

/** The peer's two messages as their bytes arrive, each checked as far as it came. */
class Inbox {
  private held: Buffer = Buffer.alloc(0);
  private got = 0;
  /** bytes that came after the exchange */
  rest: Buffer = Buffer.alloc(0);

  /** `type`: the peer's record type; `peer`: how the reasons name it */
  constructor(private readonly type: number, private readonly peer: string) {}

  get done(): boolean { return this.got === 2; }

  /** the values (nonce, then proof) that `chunk` completes; throws ChannelAuthError */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let buf = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk;
    while (this.got < 2 && buf.length > 0 && this.check(buf)) {
      if (buf.length < AUTH_MESSAGE_BYTES) break;
      out.push(Buffer.from(buf.subarray(RECORD_HEADER_BYTES + 8, AUTH_MESSAGE_BYTES)));
      buf = buf.subarray(AUTH_MESSAGE_BYTES);
      this.got++;
    }
    if (this.done) this.rest = buf;
    this.held = this.done ? Buffer.alloc(0) : Buffer.from(buf);
    return out;
  }

  /** what `m` (the current message, so far) has wrong; false: a refusal still coming */
  private check(m: Buffer): boolean {
    const step = this.got + 1;
    const fail = (why: string): never => { throw new ChannelAuthError(why); };
    if (m[0] !== this.type) {
      if (this.type === RP_AUTH && m[0] === RP_ERROR) return this.refused(m);
      // a source without a key opens with its HEADER, or, when our RP_AUTH
      // made it give up before its HEADER went out, with its ERROR record
      if (this.type === REC_AUTH && (m[0] === REC_HEADER || m[0] === REC_ERROR) && step === 1) {
        fail(`${this.peer} sent a migration stream without the pre-shared key exchange (x-migration-psk is set here: none on the source?)`);
      }
      fail(`${this.peer} does not speak the pre-shared key exchange (record type 0x${m[0].toString(16)} where its message ${step} was due; x-migration-psk is set here)`);
    }
    if (m.length >= 2 && m[1] !== step) fail(`${this.peer} sent the pre-shared key exchange's message ${m[1]} where message ${step} was due`);
    if (m.length >= RECORD_HEADER_BYTES && (m.readUInt16LE(2) !== 0 || m.readUInt32LE(4) !== PAYLOAD_BYTES || m.readUInt32LE(8) !== 0 || m.readUInt32LE(12) !== 0)) {
      fail(`${this.peer} sent a malformed pre-shared key exchange message (${m.readUInt32LE(4)} bytes of payload, ${PAYLOAD_BYTES} expected)`);
    }
    if (m.length >= RECORD_HEADER_BYTES + 4 && m.readUInt32LE(RECORD_HEADER_BYTES) !== AUTH_MAGIC) {
      fail(`${this.peer} sent a pre-shared key exchange message with a bad magic 0x${m.readUInt32LE(RECORD_HEADER_BYTES).toString(16)}`);
    }
    const version = m.length >= RECORD_HEADER_BYTES + 8 ? m.readUInt32LE(RECORD_HEADER_BYTES + 4) : AUTH_VERSION;
    if (version !== AUTH_VERSION) fail(`${this.peer} speaks pre-shared key exchange version ${version}, this side ${AUTH_VERSION}`);
    return true;
  }

  /** The listener's RP_ERROR in place of its message: the reason, once whole. */
  private refused(m: Buffer): boolean {
    if (m.length < RECORD_HEADER_BYTES) return false;
    const count = m.readUInt32LE(4);
    if (count > MAX_TEXT_BYTES) throw new ChannelAuthError(`${this.peer} sent a malformed refusal (${count} bytes of text)`);
    if (m.length < RECORD_HEADER_BYTES + count) return false;
    throw new ChannelAuthError(`destination: ${m.toString('utf8', RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + count)}`);
  }
}

type DataListener = (chunk: Buffer) => void;

/**
 * The connector's side (the source), on a socket just connected, before
 * anything else is written on it: resolves once both sides proved the key;
 * rejects with ChannelAuthError naming the problem (the caller closes the
 * socket). The socket's 'data' listeners are held back meanwhile and get
 * only what follows the exchange. No key: resolves at once.
 */
export function authenticateConnector(sock: net.Socket, key: Buffer | null, timeoutMs = HANDSHAKE_TIMEOUT_MS): Promise<void> {
  if (key === null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const held = sock.listeners('data') as DataListener[];
    sock.removeAllListeners('data');
    const mine = randomBytes(VALUE_BYTES);
    const inbox = new Inbox(RP_AUTH, 'the destination');
    let theirs: Buffer | null = null;
    const finish = (why: string | null): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('close', onEnd);
      for (const l of held) sock.on('data', l);
      if (why !== null) { reject(new ChannelAuthError(why)); return; }
      resolve();
      if (inbox.rest.length > 0) for (const l of held) l.call(sock, inbox.rest);
    };
    const onData = (chunk: Buffer): void => {
      let values: Buffer[];
      try {
        values = inbox.push(chunk);
      } catch (e) {
        finish((e as Error).message);
        return;
      }
      for (const v of values) {
        if (theirs === null) {
          theirs = v;
          sock.write(message(REC_AUTH, STEP_PROOF, proof(key, 'source', theirs, mine)));
        } else {
          finish(timingSafeEqual(v, proof(key, 'destination', theirs, mine)) ? null
            : 'the destination could not prove it holds the pre-shared key (x-migration-psk): another key, or not the destination meant');
        }
      }
    };
    const onEnd = (): void => finish('the destination closed the connection during the pre-shared key exchange (x-migration-psk)');
    const timer = setTimeout(() => finish(`the destination did not complete the pre-shared key exchange (x-migration-psk) within ${timeoutMs / 1000} s`), timeoutMs);
    timer.unref();
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('close', onEnd);
    sock.write(message(REC_AUTH, STEP_NONCE, mine));
  });
}

/**
 * The listener's side (the destination), on a connection accepted paused:
 * resolves once the source proved the key, with this side's proof written;
 * rejects with ChannelAuthError, the reason to refuse it with. Node reads
 * none of the connection's own bytes: the exchange is read on a dup of its fd.
 */
export function authenticateListener(sock: net.Socket, key: Buffer, timeoutMs = HANDSHAKE_TIMEOUT_MS): Promise<void> {
  return new Promise((resolve, reject) => {
    let reader: net.Socket;
    try {
      reader = new net.Socket({ fd: dupSocket(sock), readable: true, writable: false, allowHalfOpen: true });
    } catch (e) {
      reject(new ChannelAuthError(`it cannot be read: ${(e as Error).message}`));
      return;
    }
    sock.on('error', () => undefined); // a write that fails here: the reader says why; the caller listens from now on
    const mine = randomBytes(VALUE_BYTES);
    const inbox = new Inbox(REC_AUTH, 'it');
    const values: Buffer[] = [];
    const finish = (why: string | null): void => {
      clearTimeout(timer);
      reader.removeAllListeners();
      reader.on('error', () => undefined);
      reader.destroy(); // closes the dup only: the connection stays, its next byte unread
      if (why !== null) { reject(new ChannelAuthError(why)); return; }
      sock.write(message(RP_AUTH, STEP_PROOF, proof(key, 'destination', mine, values[0])));
      resolve();
    };
    const timer = setTimeout(() => finish(`it did not complete the pre-shared key exchange (x-migration-psk) within ${timeoutMs / 1000} s`), timeoutMs);
    timer.unref();
    reader.on('data', (chunk: Buffer) => {
      try {
        values.push(...inbox.push(chunk));
      } catch (e) {
        finish((e as Error).message);
        return;
      }
      if (!inbox.done) return;
      if (inbox.rest.length > 0) finish(`it sent ${inbox.rest.length} bytes beyond the pre-shared key exchange before it was answered`);
      else if (!timingSafeEqual(values[1], proof(key, 'source', mine, values[0]))) finish('its proof of the pre-shared key does not match this destination\'s key (x-migration-psk): the two key files differ');
      else finish(null);
    });
    reader.on('end', () => finish('it closed the connection during the pre-shared key exchange'));
    reader.on('error', (e) => finish(`it failed during the pre-shared key exchange: ${e.message}`));
    sock.write(message(RP_AUTH, STEP_NONCE, mine));
  });
}

/**
 * The accept path's hook: with x-migration-psk set (`keyPath()`, the key read
 * at each connection), a connection reaches `admit` only once it proved the
 * key; the others go to `refuse` with the reason. Connections prove
 * themselves side by side, so one that came first and never answers holds
 * no one up. No key: `admit` at once, as before.
 */
export function authenticatedConnections(
  keyPath: () => string, admit: (s: net.Socket) => void, refuse: (s: net.Socket, why: string) => void,
): (s: net.Socket) => void {
  return (s) => {
    const path = keyPath();
    if (path === '') { admit(s); return; }
    let key: Buffer;
    try {
      key = readKey(path);
    } catch (e) {
      refuse(s, `this destination's pre-shared key file (x-migration-psk) is unusable: ${e instanceof PrivateFileError ? e.reason : (e as Error).message}`);
      return;
    }
    authenticateListener(s, key).then(() => admit(s), (e: Error) => refuse(s, e.message));
  };
}
