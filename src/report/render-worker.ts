// The second renderer of the report's charts (svg-renderers.ts): a worker
// thread that imports Vega as soon as it starts (while the main thread
// replays the trace), then renders charts of the list it is given, taking
// each next one from the counter it shares with the main thread, and posts
// each SVG back. It gets the specs, whose data is already binned per pixel
// column (a few thousand rows, nothing per event), in one message.

import { parentPort } from 'node:worker_threads';
import type { TopLevelSpec } from 'vega-lite';
import { renderSvg } from './render-svg.js';

/** The main thread's request: render specs[i] for each i taken from next[0] (Atomics.add), ids prefixed. */
export interface RenderRequest { specs: TopLevelSpec[]; prefixes: string[]; next: Int32Array }
/** One chart rendered, or `done` once the list is taken, or what went wrong. */
export type RenderReply = { i: number; svg: string } | { done: true } | { error: string };

const port = parentPort;
if (port === null) throw new Error('render-worker.js runs as a worker thread');
port.on('message', (req: RenderRequest) => {
  void (async () => {
    try {
      for (let i = Atomics.add(req.next, 0, 1); i < req.specs.length; i = Atomics.add(req.next, 0, 1)) {
        port.postMessage({ i, svg: await renderSvg(req.specs[i], req.prefixes[i]) } satisfies RenderReply);
      }
      port.postMessage({ done: true } satisfies RenderReply);
    } catch (e) {
      port.postMessage({ error: (e as Error).stack ?? String(e) } satisfies RenderReply);
    }
  })();
});
