// Renders the report's charts on two threads: Vega's SVG rendering was a
// third of a large trace's report (~1 s for 6 charts) and this machine has
// two cores. A worker (render-worker.ts) is started before the replay so it
// loads Vega meanwhile; then the main thread and the worker take the charts
// one by one from a shared counter (Atomics), so whoever is free renders the
// next. With one CPU, or run from the TypeScript sources (jest) without a
// built dist/, everything is rendered here. The result is the same either
// way: each chart's clip ids carry its own prefix, so SVGs rendered in two
// threads (each counting clip1, clip2, ...) never share an id in the page.

import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { TopLevelSpec } from 'vega-lite';
import { renderSvg } from './render-svg.js';
import type { RenderReply, RenderRequest } from './render-worker.js';

/** dist/src/report/render-worker.js, from dist/ or from the sources; undefined when not built */
function workerScript(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'render-worker.js'), resolve(here, '..', '..', 'dist', 'src', 'report', 'render-worker.js')];
  return candidates.find((c) => existsSync(c));
}

export class SvgRenderers {
  private readonly worker: Worker | undefined;

  /** whether a worker renders too */
  get parallel(): boolean { return this.worker !== undefined; }

  /** Starts the worker now (it loads Vega while the caller does other work);
   *  `worker: false`: render everything on this thread. */
  constructor(opts: { worker?: boolean } = {}) {
    const script = opts.worker !== false && availableParallelism() > 1 ? workerScript() : undefined;
    // not unref'd: while the main thread awaits its last charts, the worker is all that keeps the process up
    this.worker = script === undefined ? undefined : new Worker(script);
  }

  /** The SVG of each spec, in order; `prefixes[i]` goes before each id of chart i. */
  async render(specs: readonly TopLevelSpec[], prefixes: readonly string[]): Promise<string[]> {
    const out = new Array<string>(specs.length);
    const next = new Int32Array(new SharedArrayBuffer(4));
    const theirs = this.worker === undefined ? Promise.resolve() : this.inWorker(this.worker, specs, prefixes, next, out);
    // the worker's failure surfaces below, once ours are done (never unhandled meanwhile)
    theirs.catch(() => undefined);
    for (let i = Atomics.add(next, 0, 1); i < specs.length; i = Atomics.add(next, 0, 1)) out[i] = await renderSvg(specs[i], prefixes[i]);
    await theirs;
    return out;
  }

  /** Stops the worker (call it: until then the worker keeps the process alive). */
  close(): void {
    void this.worker?.terminate();
  }

  private inWorker(w: Worker, specs: readonly TopLevelSpec[], prefixes: readonly string[], next: Int32Array, out: string[]): Promise<void> {
    return new Promise((res, rej) => {
      const onError = (e: Error) => { done(); rej(e); };
      const onMessage = (m: RenderReply) => {
        if ('i' in m) out[m.i] = m.svg;
        else if ('done' in m) { done(); res(); }
        else { done(); rej(new Error(`rendering a chart in the worker: ${m.error}`)); }
      };
      const done = () => { w.off('message', onMessage); w.off('error', onError); };
      w.on('message', onMessage);
      w.on('error', onError);
      w.postMessage({ specs: [...specs], prefixes: [...prefixes], next } satisfies RenderRequest);
    });
  }
}
