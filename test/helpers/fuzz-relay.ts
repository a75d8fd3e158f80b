// A relay that sits between a migration source and its destination (the
// source migrates to the relay's unix socket, the relay connects on to the
// destination) and forwards both directions of every connection, spoiling
// one of them once: a byte flipped, the connection cut, bytes inserted,
// at a byte chosen by record (the nth PAGES record, 20 bytes in) or by
// offset. It keeps the connections' order (the destination takes its first
// connection as the main stream, the next as the urgent channel: a
// connection is passed on only once the one before it is connected), or
// sending one record twice, and
// says where the mutation landed: which record, which page, and whether the
// postcopy switchover had gone through before it.
import net from 'node:net';
import { FrameTracker, frameName, type Direction, type Frame } from './stream-frames.js';
import { REC_SWITCHOVER, REC_END, SWITCHOVER_POSTCOPY, RECORD_HEADER_BYTES, writeRecordHeader } from '../../src/migration/wire.js';

/** repeat: the record goes twice (a record without payload before itself, one with payload after itself) */
export type MutationKind = 'flip' | 'truncate' | 'insert' | 'repeat';

export interface Mutation {
  dir: Direction;
  kind: MutationKind;
  /** the record of `type` numbered `nth` (0 = the first) on `dir`, `at` bytes into it: below 16 a byte
   *  of its header, else of its payload (modulo the payload's length; of the header when it has none);
   *  with type null, the byte at offset `at` of `dir` */
  type: number | null;
  nth: number;
  at: number;
  /** flip: the byte is xor'ed with this (1..255) */
  xor: number;
  /** insert: these bytes go in before the byte */
  bytes: Buffer;
}

export interface Landing {
  /** the stream offset of the byte mutated */
  offset: number;
  /** the record it is part of, and how far into it */
  frame: Frame;
  into: number;
  /** the postcopy SWITCHOVER / END had been passed on whole on the main stream before */
  switched: boolean;
  ended: boolean;
}

export function describeMutation(m: Mutation, dirName = m.dir): string {
  const what = m.kind === 'flip' ? `flip ^0x${m.xor.toString(16)}` : m.kind === 'insert' ? `insert ${m.bytes.length} bytes` : m.kind;
  const where = m.type === null ? `at byte ${m.at}` : `in ${frameName(m.dir, m.type)} #${m.nth}${m.kind === 'repeat' ? '' : ` at +${m.at}`}`;
  return `${what} on ${dirName} ${where}`;
}

export function describeLanding(l: Landing | null, dir: Direction): string {
  if (l === null) return 'not applied (the stream never got there)';
  const f = l.frame;
  return `byte ${l.offset} = ${frameName(dir, f.type)}@${f.start}+${l.into} (len ${f.length}, count ${f.count}, offset ${f.offset})`
    + `${l.switched ? ', after the switchover' : ''}${l.ended ? ', after END' : ''}`;
}

/** One migration through the relay: its connections and its one mutation. */
export class RelaySession {
  landing: Landing | null = null;
  connections = 0;
  /** records seen per direction and type ('main:2'), and bytes per direction (both up to any cut) */
  readonly counts = new Map<string, number>();
  readonly bytes: Partial<Record<Direction, number>> = {};
  /** where the main stream's postcopy SWITCHOVER / END end (-1: not seen yet), and the bytes of it passed on */
  private switchEnd = -1;
  private endEnd = -1;
  /** where the postcopy SWITCHOVER the source wrote ends, seen also after a cut on main (the relay reads on, unforwarded) */
  private switchWrittenEnd = -1;
  private mainWritten = 0;
  private mainForwarded = 0;
  private target = -1;
  private seen = 0;
  /** repeat: the record's bytes [start, end) as they go by, to send again */
  private copy: { start: number; end: number; bytes: Buffer[] } | null = null;
  private lastFrame: Frame | null = null;
  private readonly sockets: net.Socket[] = [];
  /** the connection before the next one (the next connects upstream only once this one did) */
  private previous: Promise<void> = Promise.resolve();

  constructor(readonly mutation: Mutation | null, private readonly pageSize: number) {
    if (mutation?.type === null) this.target = mutation.at;
  }

  get applied(): boolean { return this.landing !== null; }

  /** Connects `down` (from the source) on to `upstream`, in order. */
  accept(down: net.Socket, upstream: string): void {
    const index = this.connections++;
    const dirs: [Direction, Direction] | null = index === 0 ? ['main', 'return'] : index === 1 ? ['urgent', 'requests'] : null;
    this.sockets.push(down);
    down.on('error', () => undefined);
    const ready = this.previous.then(() => new Promise<net.Socket | null>((resolve) => {
      const up = net.connect({ path: upstream });
      this.sockets.push(up);
      up.on('error', () => { resolve(null); down.destroy(); });
      up.once('connect', () => resolve(up));
    }));
    this.previous = ready.then(() => undefined);
    void ready.then((up) => {
      if (up === null) return;
      const cut = (): void => { up.end(); down.end(); setTimeout(() => { up.destroy(); down.destroy(); }, 1000).unref(); };
      this.pipe(down, up, dirs?.[0] ?? null, cut);
      this.pipe(up, down, dirs?.[1] ?? null, cut);
      down.resume(); // accepted paused
    });
  }

  /** Forwards `from` to `to`, watching the records of `dir` and applying the mutation there. */
  private pipe(from: net.Socket, to: net.Socket, dir: Direction | null, cut: () => void): void {
    const tracker = dir ? new FrameTracker(dir, this.pageSize) : null;
    let held = Buffer.alloc(0);
    let dead = false;
    const send = (b: Buffer): void => {
      if (b.length === 0 || to.destroyed || !to.writable) return;
      if (!to.write(b)) { from.pause(); to.once('drain', () => from.resume()); }
    };
    from.on('data', (chunk: Buffer) => {
      if (dead) {
        if (tracker === null || dir !== 'main') return;
        tracker.feed(chunk, (f) => this.written(f));
        this.mainWritten = tracker.offset;
        return;
      }
      if (tracker === null || dir === null) { send(chunk); return; }
      const base = tracker.offset - held.length;
      tracker.feed(chunk, (f) => this.framed(dir, f));
      this.bytes[dir] = tracker.offset;
      if (dir === 'main') this.mainWritten = tracker.offset;
      const unit = held.length > 0 ? Buffer.concat([held, chunk]) : chunk;
      // a record header is never split between two writes: its record is known before any of it goes on
      const n = unit.length - tracker.partialHeader;
      held = Buffer.from(unit.subarray(n));
      const out = unit.subarray(0, n);
      const cp = this.copy;
      if (cp && this.mutation?.dir === dir && cp.end > base && cp.start < base + n) {
        cp.bytes.push(Buffer.from(out.subarray(Math.max(0, cp.start - base), Math.min(n, cp.end - base))));
      }
      // a record repeated after itself may be the last of the stream for now: its copy goes right after it
      const last = cp !== null && this.target === base + n && cp.bytes.reduce((a, b) => a + b.length, 0) === cp.end - cp.start;
      if (this.mutation?.dir === dir && this.landing === null && this.target >= base && (this.target < base + n || last)) {
        const k = this.target - base;
        this.land(dir);
        const m = this.mutation;
        if (m.kind === 'flip') {
          const copy = Buffer.from(out);
          copy[k] ^= m.xor;
          send(copy);
        } else if (m.kind === 'insert' || m.kind === 'repeat') {
          send(Buffer.concat([out.subarray(0, k), m.kind === 'insert' ? m.bytes : Buffer.concat(this.copy!.bytes), out.subarray(k)]));
        } else {
          send(out.subarray(0, k));
          dead = true;
          cut();
          return;
        }
      } else {
        send(out);
      }
      if (dir === 'main') this.mainForwarded = base + n;
    });
    from.on('end', () => { if (!dead) { send(held); to.end(); } });
    from.on('close', () => setTimeout(() => to.destroy(), 1000).unref());
  }

  /** the source wrote the postcopy SWITCHOVER whole on main, whether or not the relay passed it on: from
   *  then on it has handed the guest over and must pause, not fail, when the link goes */
  get switchWritten(): boolean {
    return this.switchWrittenEnd >= 0 && this.switchWrittenEnd <= this.mainWritten;
  }

  /** a record header the source wrote on main */
  private written(f: Frame): void {
    if (f.type === REC_SWITCHOVER && (f.flags & SWITCHOVER_POSTCOPY) && this.switchWrittenEnd < 0) this.switchWrittenEnd = f.start + f.length;
  }

  /** a record header went by on `dir` */
  private framed(dir: Direction, f: Frame): void {
    if (dir === 'main') this.written(f);
    if (dir === 'main' && f.type === REC_SWITCHOVER && (f.flags & SWITCHOVER_POSTCOPY) && this.switchEnd < 0) this.switchEnd = f.start + f.length;
    if (dir === 'main' && f.type === REC_END && this.endEnd < 0) this.endEnd = f.start + f.length;
    const key = `${dir}:${f.type}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    const m = this.mutation;
    if (m === null || m.dir !== dir || this.landing !== null) return;
    if (m.type === null) {
      if (f.start <= m.at) this.lastFrame = f;
      return;
    }
    if (f.type !== m.type || this.seen++ !== m.nth) return;
    this.lastFrame = f;
    const H = RECORD_HEADER_BYTES;
    if (m.kind === 'repeat') { // without payload its bytes are known now: again before it; else after it, once they went by
      this.target = f.length === H ? f.start : f.start + f.length;
      if (f.length > H) { this.copy = { start: f.start, end: f.start + f.length, bytes: [] }; return; }
      const h = Buffer.alloc(H);
      writeRecordHeader(h, 0, f.type, f.flags, f.count, f.offset);
      this.copy = { start: 0, end: 0, bytes: [h] };
      return;
    }
    this.target = f.start + (m.at < H || f.length === H ? m.at % H : H + ((m.at - H) % (f.length - H)));
  }

  private land(dir: Direction): void {
    const f = this.lastFrame!;
    // on the main stream itself: before the byte; elsewhere: what had gone on to the destination by now
    const upTo = dir === 'main' ? this.target : this.mainForwarded;
    this.landing = {
      offset: this.target, frame: f, into: this.target - f.start,
      switched: this.switchEnd >= 0 && this.switchEnd <= upTo, ended: this.endEnd >= 0 && this.endEnd <= upTo,
    };
  }

  /** closes what is left of this session's connections */
  close(): void {
    for (const s of this.sockets) s.destroy();
  }
}

/** The relay's listening socket; each migration through it is a session (arm()). */
export class FuzzRelay {
  private session: RelaySession | null = null;
  private upstream = '';

  private constructor(private readonly server: net.Server, readonly path: string, private readonly pageSize: number) {
    server.on('connection', (s: net.Socket) => {
      if (this.session === null) s.destroy();
      else this.session.accept(s, this.upstream);
    });
  }

  static async listen(path: string, pageSize = 4096): Promise<FuzzRelay> {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(path, () => resolve()); });
    return new FuzzRelay(server, path, pageSize);
  }

  /** The next connections go to the unix socket `upstream`, with `mutation` (null: none) applied once. */
  arm(upstream: string, mutation: Mutation | null): RelaySession {
    this.session?.close();
    this.upstream = upstream;
    this.session = new RelaySession(mutation, this.pageSize);
    return this.session;
  }

  async close(): Promise<void> {
    this.session?.close();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
