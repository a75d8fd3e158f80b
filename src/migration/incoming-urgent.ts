// Which connection is the urgent channel (QEMU's postcopy-preempt channel,
// which QEMU tells apart by what it reads first): a migration port accepts
// whatever connects, so every connection after the main one is a candidate
// until its HEADER proves it belongs to this migration by carrying the main
// stream's random token (wire.ts). A candidate with another token, a bad
// header, or no header within the handshake time is refused: told why
// (RP_ERROR), closed, reported, and the migration goes on waiting for the
// right one. The one admitted is read here up to its HEADER; the fault thread
// takes it over at the switchover, and its failures are the migration's.

import type net from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { WireError, encodeText, RP_ERROR, type StreamHeader } from './wire.js';
import { StreamDecoder, type StreamHandler } from './stream-decoder.js';

/** how long an accepted connection may take to send its HEADER */
export const HANDSHAKE_TIMEOUT_MS = 5000;
/** connections waiting to prove themselves at once, at most (more are refused at once) */
const MAX_CANDIDATES = 8;

export interface UrgentGateOptions {
  pageSize: number;
  /** the main stream's token, once its HEADER was decoded (null before) */
  mainToken(): Buffer | null;
  /** the urgent channel, its token right: `h` is checked like the main stream's (a WireError fails the migration) */
  admitted(s: net.Socket, h: StreamHeader): void;
  /** a connection was refused (said to the operator; the migration goes on) */
  refused(why: string): void;
  /** the admitted channel failed */
  fail(reason: string, tellSource: boolean): void;
  /** the admitted channel closed */
  closed(): void;
  /** the source's ERROR record on the admitted channel */
  sourceError(reason: string): void;
  over(): boolean;
}

interface Candidate {
  sock: net.Socket;
  decoder: StreamDecoder;
  header: StreamHeader | null;
  timer: NodeJS.Timeout;
}

const noPages = (): never => { throw new WireError('pages arrived before the postcopy switchover'); };

export class UrgentGate {
  private readonly waiting = new Set<Candidate>();
  /** connections not read yet (they came before the main stream's HEADER) */
  private readonly unread: net.Socket[] = [];
  private chosen: Candidate | null = null;
  /** bytes read on the admitted channel (up to its header) */
  bytes = 0;

  constructor(private readonly o: UrgentGateOptions) {}

  /** the urgent channel was admitted */
  get admitted(): boolean { return this.chosen !== null; }

  /** A connection after the main one: a candidate until its HEADER is
   *  judged, read only once the main stream's HEADER came (until then it may
   *  still become the main connection: takeUnread()). */
  offer(s: net.Socket): void {
    if (this.chosen !== null || this.waiting.size + this.unread.length >= MAX_CANDIDATES) {
      this.refuse(s, this.chosen !== null ? 'the urgent channel of this migration is connected already' : `more than ${MAX_CANDIDATES} connections waiting to be the urgent channel`);
      return;
    }
    if (this.o.mainToken() !== null) { this.begin(s); return; }
    this.unread.push(s);
    const gone = (): void => { const i = this.unread.indexOf(s); if (i >= 0) this.unread.splice(i, 1); };
    s.on('error', gone);
    s.on('close', gone);
  }

  /** The oldest connection not read yet (the main connection sent nothing: this one may be the source's), or null. */
  takeUnread(): net.Socket | null {
    const s = this.unread.shift() ?? null;
    s?.removeAllListeners('error');
    s?.removeAllListeners('close');
    return s;
  }

  private begin(s: net.Socket): void {
    const c: Candidate = {
      sock: s, header: null, decoder: new StreamDecoder(this.handler(() => c), Math.max(65536, this.o.pageSize), true),
      timer: setTimeout(() => this.drop(c, `it sent no header within ${HANDSHAKE_TIMEOUT_MS / 1000} s`), HANDSHAKE_TIMEOUT_MS),
    };
    c.timer.unref();
    this.waiting.add(c);
    s.setNoDelay(true);
    s.on('data', (chunk: Buffer) => this.data(c, chunk));
    s.on('error', (e) => { if (this.chosen === c) this.o.fail(`urgent channel error: ${e.message}`, false); else this.forget(c); });
    s.on('close', () => { if (this.chosen === c) this.o.closed(); else this.forget(c); });
    s.resume(); // accepted paused
  }

  /** The main stream's HEADER came: the connections not read yet are read, and those whose header waited for its token are judged. */
  mainHeaderArrived(): void {
    for (const s of this.unread.splice(0)) {
      s.removeAllListeners('error');
      s.removeAllListeners('close');
      this.begin(s);
    }
    for (const c of [...this.waiting]) if (c.header) this.judge(c);
  }

  /** The migration ended: the candidates still waiting are closed. */
  close(): void {
    for (const s of this.unread.splice(0)) this.refuse(s, 'the migration is over');
    for (const c of [...this.waiting]) this.drop(c, 'the migration is over');
  }

  private data(c: Candidate, chunk: Buffer): void {
    if (this.o.over()) return;
    if (this.chosen === c) this.bytes += chunk.length;
    try {
      c.decoder.push(chunk);
    } catch (e) {
      const why = e instanceof WireError ? `urgent channel: ${e.message}` : `migration: ${(e as Error).message}`;
      if (this.chosen === c) this.o.fail(why, true);
      else this.drop(c, why);
    }
  }

  private handler(c: () => Candidate): StreamHandler {
    return {
      header: (h) => { c().header = h; clearTimeout(c().timer); this.judge(c()); }, // the main stream's own timeout bounds a wait for its token
      pages: noPages,
      zero: noPages,
      discard: () => { throw new WireError('DISCARD on the urgent channel'); },
      endRound: () => { throw new WireError('END_ROUND on the urgent channel'); },
      switchover: () => { throw new WireError('SWITCHOVER on the urgent channel'); },
      end: () => { throw new WireError('END on the urgent channel'); },
      error: (reason) => { if (this.chosen === c()) this.o.sourceError(reason); else this.drop(c(), `it sent an ERROR record: ${reason}`); },
    };
  }

  /** A candidate's HEADER against the main stream's token (later, if that is not here yet). */
  private judge(c: Candidate): void {
    const main = this.o.mainToken();
    const h = c.header;
    if (main === null || h === null || this.chosen !== null) return;
    if (!timingSafeEqual(main, h.token)) {
      this.drop(c, 'its header does not carry this migration\'s token (a connection from another source, or a forged one)');
      return;
    }
    clearTimeout(c.timer);
    this.waiting.delete(c);
    this.chosen = c;
    this.bytes = c.sock.bytesRead;
    for (const other of [...this.waiting]) this.drop(other, 'the urgent channel of this migration is connected already');
    try {
      this.o.admitted(c.sock, h);
    } catch (e) {
      this.o.fail(e instanceof WireError ? `urgent channel: ${e.message}` : `migration: ${(e as Error).message}`, true);
      c.sock.destroy(); // the source hears why on the main connection
    }
  }

  /** Refuses a candidate: told why, closed; the migration goes on. */
  private drop(c: Candidate, why: string): void {
    if (!this.waiting.delete(c)) return;
    clearTimeout(c.timer);
    c.sock.removeAllListeners('data');
    this.refuse(c.sock, why);
  }

  private forget(c: Candidate): void {
    if (this.waiting.delete(c)) clearTimeout(c.timer);
  }

  /** Refuses a connection: RP_ERROR with the reason, closed, reported. */
  refuse(s: net.Socket, why: string): void {
    const text = `migration connection refused: ${why}`;
    s.on('error', () => undefined);
    if (!s.destroyed && s.writable) s.end(encodeText(RP_ERROR, text));
    else s.destroy();
    setTimeout(() => s.destroy(), 1000).unref();
    this.o.refused(text);
  }
}
