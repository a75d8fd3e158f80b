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

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = compile({ ...spec, config: CONFIG } as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
