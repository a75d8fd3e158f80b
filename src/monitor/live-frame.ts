// A console's live area for a command that redraws while it runs (HMP
// `info postcopy_blocktime -w`): on a terminal each frame is written over
// the last one (cursor up, lines cleared), so the screen changes in place
// and does not scroll; on a pipe or in a script each frame is printed after
// the last one as plain lines, with no escape codes, for logs and scripts to
// read. A key typed at the terminal can stop the command (untilKey). The
// console (hmp.ts) makes one per command line and closes it afterwards.

import type { Interface } from 'node:readline';
import type { LiveOutput } from './registry.js';
import { fitWidth } from './format.js';

export interface LiveFrameOptions {
  output: NodeJS.WritableStream & { columns?: number; rows?: number };
  /** frames replace each other in place (an interactive terminal) */
  inPlace: boolean;
  /** registers `listener` for the keys typed at the console; returns its
   *  removal (absent when nobody types: a script) */
  onKey?: (listener: () => void) => () => void;
  /** called once, before the first frame (the console clears its own live line) */
  beforeFirst?: () => void;
}

export class LiveFrame implements LiveOutput {
  readonly inPlace: boolean;
  /** rows the last frame took (in place) */
  private shown = 0;
  private started = false;
  private readonly keyStops: (() => void)[] = [];

  constructor(private readonly o: LiveFrameOptions) {
    this.inPlace = o.inPlace;
  }

  get columns(): number { return Math.max(20, (this.o.output.columns ?? 80) - 1); }
  get rows(): number { return Math.max(4, (this.o.output.rows ?? 24) - 2); }

  /** a frame has been drawn and the command still runs */
  get drawing(): boolean { return this.started; }

  /** a command waits for a key: a line typed now is that key, not a command */
  get wantsKeys(): boolean { return this.keyStops.length > 0; }

  frame(lines: readonly string[]): void {
    if (!this.started) {
      this.started = true;
      this.o.beforeFirst?.();
    }
    if (!this.inPlace) {
      this.o.output.write(`${lines.join('\n')}\n`);
      return;
    }
    // never taller than the screen: the cursor cannot go back above its top
    const fitted = lines.slice(0, this.rows).map((l) => fitWidth(l, this.columns));
    let s = this.shown > 0 ? `\x1b[${this.shown}A\r` : '\r';
    for (const l of fitted) s += `\x1b[2K${l}\n`;
    if (fitted.length < this.shown) s += '\x1b[J';
    this.shown = fitted.length;
    this.o.output.write(s);
  }

  untilKey(): AbortSignal {
    const ac = new AbortController();
    const on = this.o.onKey;
    if (on === undefined) return ac.signal;
    let off: (() => void) | undefined;
    const stop = () => {
      off?.();
      const i = this.keyStops.indexOf(stop);
      if (i >= 0) this.keyStops.splice(i, 1);
      ac.abort();
    };
    off = on(stop);
    this.keyStops.push(stop);
    return ac.signal;
  }

  /** The command ended: no more keys are its. */
  close(): void {
    for (const stop of [...this.keyStops]) stop();
    this.started = false;
  }
}

/** The keys typed at a readline terminal, for LiveFrameOptions.onKey: a key
 *  that stops a command is dropped from the line being typed (readline,
 *  listening first, has echoed it and taken it in). */
export function readlineKeys(input: NodeJS.EventEmitter, rl: () => Interface | undefined): (listener: () => void) => () => void {
  return (listener) => {
    const onKey = (): void => {
      rl()?.write(null, { ctrl: true, name: 'e' });
      rl()?.write(null, { ctrl: true, name: 'u' });
      listener();
    };
    input.on('keypress', onKey);
    return () => { input.off('keypress', onKey); };
  };
}
