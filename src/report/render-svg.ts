// Turns a Vega-Lite spec into SVG text in Node, with no browser and no
// canvas: Vega-Lite compiles it to a Vega spec, a headless Vega view renders
// it. The report embeds the SVG, so the HTML file needs no script at all.

import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

const CONFIG = {
  background: 'white',
  font: 'system-ui, sans-serif',
  title: { anchor: 'start' as const, fontSize: 13 },
  axis: { labelFontSize: 11, titleFontSize: 11 },
};

/** The SVG of `spec`. Vega numbers clip paths per thread (clip1, clip2, ...
 *  for as long as the thread lives): they are renumbered from 1 in each chart
 *  and given `idPrefix`, so that a chart's SVG is the same whichever thread
 *  drew it and charts put in one page never share an id. */
export async function renderSvg(spec: TopLevelSpec, idPrefix = ''): Promise<string> {
  const compiled = compile({ ...spec, config: CONFIG } as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Error });
  try {
    const svg = await view.toSVG();
    const local = new Map<string, number>();
    return svg.replace(/(id="|url\(#)clip(\d+)/g, (_, head: string, n: string) => {
      let k = local.get(n);
      if (k === undefined) local.set(n, (k = local.size + 1));
      return `${head}${idPrefix}clip${k}`;
    });
  } finally {
    view.finalize();
  }
}
