// An in-process relay between a migration source and its destination (node
// net, no deps), for the postcopy recovery tests: it listens on a unix socket
// and forwards every connection to the destination's, both ways, with
// backpressure, until told to stall (it stops forwarding and keeps every
// connection open: a link gone silent, no error, no close on either side) or
// to cut (it destroys every connection at once: a reset link), now or once
// it has forwarded a given number of bytes (a cut inside a handshake).
import net from 'node:net';
import { rmSync } from 'node:fs';

interface Pair { a: net.Socket; b: net.Socket; stalled?: boolean }

export class Relay {
  private readonly pairs = new Set<Pair>();
  /** connections taken while stalled */
  private readonly held: net.Socket[] = [];
  private stalled = false;
  /** bytes forwarded, both ways, all connections */
  private forwarded = 0;
  /** cut once `forwarded` reaches this (then refuse every new connection) */
  private cutAt = Infinity;
  private dead = false;
  private onCut: (() => void) | null = null;
  /** at cutAt: stall instead of cutting */
  private silent = false;

  private constructor(private readonly server: net.Server, readonly path: string, private readonly target: string) {}

  /** listens on `path`, forwards to the unix socket `target` */
  static async start(path: string, target: string): Promise<Relay> {
    const server = net.createServer({ pauseOnConnect: true });
    const relay = new Relay(server, path, target);
    server.on('connection', (a) => relay.take(a));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return relay;
  }

  /** bytes forwarded so far, both ways */
  get carried(): number { return this.forwarded; }

  get uri(): string { return `unix:${this.path}`; }

  private take(a: net.Socket): void {
    if (this.dead) { a.destroy(); return; }
    if (this.stalled) { // a black hole: held open, never served
      a.on('error', () => undefined);
      this.held.push(a);
      return;
    }
    const b = net.connect({ path: this.target });
    const pair: Pair = { a, b };
    this.pairs.add(pair);
    const drop = (): void => { a.destroy(); b.destroy(); this.pairs.delete(pair); };
    for (const s of [a, b]) s.on('error', () => { if (!this.stalled) drop(); });
    b.once('connect', () => {
      if (this.stalled) return;
      this.pipe(a, b, pair);
      this.pipe(b, a, pair);
      a.resume();
    });
  }

  /** from -> to, pausing `from` while `to` is full; an end is passed on once the data before it went */
  private pipe(from: net.Socket, to: net.Socket, pair: Pair): void {
    from.on('data', (chunk: Buffer) => {
      if (this.stalled || this.dead || pair.stalled) return;
      const room = this.cutAt - this.forwarded;
      if (chunk.length >= room) { // the bytes up to the cut go, then the link is cut (or goes silent)
        if (room > 0) to.write(chunk.subarray(0, room));
        this.forwarded = this.cutAt;
        if (this.silent) this.stall(); else this.cut();
        this.fire();
        return;
      }
      this.forwarded += chunk.length;
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => { if (!this.stalled && !pair.stalled) from.resume(); });
    from.on('end', () => { if (!this.stalled) to.end(); });
    from.on('close', () => { if (!this.stalled) setTimeout(() => to.destroy(), 1000).unref(); });
  }

  /** Stops forwarding, in both directions, for good: nothing more is read or written, no end or close is
   *  passed on, and the connections stay open (the peers see silence, never an error). */
  stall(): void {
    this.stalled = true;
    for (const { a, b } of this.pairs) { a.pause(); b.pause(); }
  }

  /** Stalls the `index`th connection taken (0: the main stream's) alone, both ways, for good; the others go on. */
  stallOne(index: number): void {
    const pair = [...this.pairs][index];
    if (!pair) throw new Error(`the relay has no connection ${index}`);
    pair.stalled = true;
    pair.a.pause();
    pair.b.pause();
  }

  /** Destroys every connection (the peers see the link reset); new ones are still taken. */
  cut(): void {
    for (const { a, b } of this.pairs) { a.destroy(); b.destroy(); }
    this.pairs.clear();
  }

  private fire(): void {
    const armed = this.onCut;
    this.onCut = null;
    armed?.();
  }

  /** Cuts (for good: new connections are refused) once `bytes` more went through, or with `silent`
   *  stalls then (new connections are taken, and never served); resolves then. */
  cutAfter(bytes: number, silent = false): Promise<void> {
    this.cutAt = this.forwarded + bytes;
    this.silent = silent;
    return new Promise((resolve) => {
      this.onCut = () => { if (!silent) this.dead = true; resolve(); };
      if (bytes === 0) { if (silent) this.stall(); else this.cut(); this.fire(); }
    });
  }

  /** stops listening and drops every connection */
  async close(): Promise<void> {
    this.cut();
    for (const a of this.held.splice(0)) a.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}
