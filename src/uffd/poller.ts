// Event-loop integration for a userfaultfd: calls the handler whenever fault
// messages may be pending, without ever blocking the Node event loop.
//
// Design (measured in docs/foundation.md): the poller parks in poll(2) on a
// koffi worker thread (fn.async) over the uffd and an eventfd that stop()
// signals; when it returns, the handler runs on the main thread and is called
// again until it finds nothing. Optionally (spinMicros > 0) the poller then
// waits a short "hot window" for the next event in a synchronous ppoll(2) on
// the main thread (sleeping in the kernel, not burning CPU), so a fault
// stream is served with one thread wake-up per fault, as a C handler would;
// it yields to the event loop with setImmediate at least every sliceMicros.
import koffi from 'koffi';
import { performance } from 'node:perf_hooks';
import * as libc from '../native/libc.js';
import { UffdError } from './errors.js';
import type { Userfaultfd } from './userfaultfd.js';

/**
 * Default spin window: 0, i.e. park in poll(2) as soon as a read finds
 * nothing. Measured on the 2-core machine: spinning on the main thread keeps
 * the vCPU and the handler on different cores, so every fault pays a
 * cross-core wake-up, and was 2-4x slower than parking (docs/foundation.md).
 */
export const DEFAULT_SPIN_MICROS = 0;

export interface PollerOptions {
  /** hot window: after the handler found nothing, wait this long (us) on the main thread for the next event before parking; 0 = park at once */
  spinMicros?: number;
  /** longest stretch the poller keeps the event loop busy before yielding (us) */
  sliceMicros?: number;
  /** called when the handler throws or the fd reports an error; the poller has stopped by then */
  onError?: (err: Error) => void;
}

/**
 * The handler reads and resolves what is pending (uffd.readEvents() ...) and
 * should return how many events it handled: that lets the poller spin while
 * events keep coming. A handler that returns nothing makes the poller park
 * after every call (still correct: poll(2) is level-triggered).
 */
export type ReadableHandler = () => number | void;

export class UffdPoller {
  readonly #uffd: Userfaultfd;
  readonly #onReadable: ReadableHandler;
  readonly #spinMs: number;
  readonly #sliceMs: number;
  readonly #onError: ((err: Error) => void) | undefined;
  #running = false;
  #stopping = false;
  #parked = false;
  #pollfds: bigint | undefined;
  #pollView: Int32Array | undefined;
  #efd = -1;
  #lastEvent = 0;
  #stopWaiters: Array<() => void> = [];
  readonly #eight = new Uint8Array(8);
  readonly #timespec = new Uint32Array(4);
  readonly #timespecBytes = new Uint8Array(this.#timespec.buffer);
  /** times the poller parked in poll(2) (for benchmarks) */
  parks = 0;

  constructor(uffd: Userfaultfd, onReadable: ReadableHandler, opts: PollerOptions = {}) {
    this.#uffd = uffd;
    this.#onReadable = onReadable;
    this.#spinMs = (opts.spinMicros ?? DEFAULT_SPIN_MICROS) / 1000;
    this.#sliceMs = (opts.sliceMicros ?? 2000) / 1000;
    this.#onError = opts.onError;
  }

  get running(): boolean { return this.#running; }

  start(): void {
    if (this.#running) return;
    if (this.#uffd.closed) throw new UffdError('poller: the userfaultfd is closed', 'CLOSED');
    this.#efd = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
    if (this.#efd < 0) throw new UffdError(`poller: eventfd failed: ${libc.strerror(libc.errno())}`, 'EVENTFD');
    const p = koffi.alloc('int32_t', 4) as unknown;
    this.#pollfds = typeof p === 'bigint' ? p : koffi.address(p);
    this.#pollView = new Int32Array(koffi.view(this.#pollfds, 16));
    this.#running = true;
    this.#stopping = false;
    this.#lastEvent = performance.now();
    setImmediate(this.#spin);
  }

  /** stops polling; resolves once no poll(2) is pending. The handler is not called after this resolves. */
  stop(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    this.#stopping = true;
    const done = new Promise<void>((resolve) => this.#stopWaiters.push(resolve));
    if (this.#parked) {
      this.#eight[0] = 1;
      libc.write(this.#efd, this.#eight, 8);
    }
    return done;
  }

  #finish(): void {
    this.#running = false;
    this.#stopping = false;
    libc.close(this.#efd);
    this.#efd = -1;
    if (this.#pollfds !== undefined) koffi.free(this.#pollfds);
    this.#pollfds = undefined;
    this.#pollView = undefined;
    const waiters = this.#stopWaiters;
    this.#stopWaiters = [];
    for (const w of waiters) w();
  }

  #fail(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.#finish();
    if (this.#onError) this.#onError(e);
    else queueMicrotask(() => { throw e; });
  }

  readonly #spin = (): void => {
    if (this.#stopping) { this.#finish(); return; }
    const sliceStart = performance.now();
    let used = 0;
    for (let iter = 1; ; iter++) {
      let n: number | void;
      try {
        n = this.#onReadable();
      } catch (err) {
        this.#fail(err);
        return;
      }
      if (this.#stopping) { this.#finish(); return; }
      if (typeof n !== 'number') { this.#park(); return; }
      // more may have come while we handled these (a vCPU woken by our copy often faults again at once);
      // the clock is read every 16 batches only, it costs as much as a read(2)
      if (n > 0 && (iter & 15) !== 0) continue;
      used = performance.now() - sliceStart;
      if (used >= this.#sliceMs) { setImmediate(this.#spin); return; }
      if (n > 0) continue;
      if (this.#spinMs <= 0 || !this.#waitHot(Math.min(this.#spinMs, this.#sliceMs - used))) { this.#park(); return; }
    }
  };

  /** synchronous ppoll(2) on the uffd alone for up to ms; true when it became readable */
  #waitHot(ms: number): boolean {
    const v = this.#pollView!;
    v[0] = this.#uffd.fd; v[1] = libc.POLLIN;
    const ns = Math.max(1000, Math.round(ms * 1e6));
    this.#timespec[0] = Math.floor(ns / 1e9); this.#timespec[1] = 0;
    this.#timespec[2] = ns % 1e9; this.#timespec[3] = 0;
    return libc.ppoll(this.#pollfds!, 1, this.#timespecBytes, null) > 0;
  }

  #park(): void {
    if (this.#uffd.closed) { this.#fail(new UffdError('poller: the userfaultfd was closed while polling', 'CLOSED')); return; }
    const v = this.#pollView!;
    v[0] = this.#uffd.fd; v[1] = libc.POLLIN; // events in the low half, revents (high half) cleared
    v[2] = this.#efd; v[3] = libc.POLLIN;
    this.#parked = true;
    this.parks++;
    libc.poll.async(this.#pollfds!, 2, -1, this.#unparked);
  }

  /** poll(2)'s completion; one function for every park (no closure per fault) */
  readonly #unparked = (err: unknown, res: number): void => {
    this.#parked = false;
    if (this.#stopping) { this.#finish(); return; }
    if (err) { this.#fail(err); return; }
    const uffdRevents = (this.#pollView![1] >>> 16) & 0xffff;
    if (res < 0 || (uffdRevents & (libc.POLLERR | libc.POLLNVAL)) !== 0) {
      this.#fail(new UffdError(`poller: poll(2) on the userfaultfd failed (${res < 0 ? 'error' : `revents 0x${uffdRevents.toString(16)}`})`,
        'EPOLL'));
      return;
    }
    this.#lastEvent = performance.now();
    this.#spin();
  };
}
