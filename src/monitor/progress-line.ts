// The live progress line of an interactive HMP console: while a migration
// runs, one line above the prompt (or above what is typed meanwhile), redrawn
// in place every PROGRESS_INTERVAL_MS without touching the line being typed;
// a migration's end leaves its last words there. The console (hmp.ts) says
// when; this module owns the line's cursor arithmetic and its timer.

import type { Interface } from 'node:readline';
import type { Machine } from '../migration/api.js';
import { TERMINAL_STATUSES } from '../migration/api.js';
import { fitWidth, formatProgress } from './format.js';

const PROGRESS_INTERVAL_MS = 500;

export interface ProgressLineOptions {
  machine: Machine;
  output: NodeJS.WritableStream & { columns?: number };
  color: boolean;
  /** the console's readline, while it has one */
  rl: () => Interface | undefined;
  /** whether the line may be drawn now (the console open, no command drawing frames of its own) */
  mayDraw: () => boolean;
}

export class ProgressLine {
  private timer: NodeJS.Timeout | undefined;
  private shown = false;
  private busy = false;

  constructor(private readonly o: ProgressLineOptions) {}

  /** the prompt line scrolled up (a line was entered, ^C): the next show starts a new line */
  forget(): void { this.shown = false; }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => { void this.draw(); }, PROGRESS_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** the migration's figures now, on the line (with the blocktime in postcopy) */
  async draw(): Promise<void> {
    if (this.busy || !this.o.mayDraw()) return;
    this.busy = true;
    try {
      const m = this.o.machine;
      const info = m.queryMigrate();
      if (info.status === 'none' || TERMINAL_STATUSES.has(info.status)) return;
      let blocktimeMs: number | undefined;
      if (info.status === 'postcopy-active') {
        try { blocktimeMs = (await m.blocktime())?.['postcopy-blocktime']; } catch { /* figures not reachable now */ }
      }
      if (!this.timer || !this.o.mayDraw()) return;
      this.show(formatProgress(m.queryMigrate(), blocktimeMs, this.o.color));
    } finally {
      this.busy = false;
    }
  }

  /** Shows `text` on the line above the prompt without touching the line
   *  being typed: the first time that line is pushed down by one, later the
   *  same line is rewritten in place (cursor saved and restored). */
  show(text: string): void {
    const rl = this.o.rl();
    const out = this.o.output;
    if (!rl) return;
    const fitted = fitWidth(text, Math.max(20, (out.columns ?? 80) - 1));
    if (!this.shown) {
      // from the first row of the prompt line (it may wrap) down
      const up = rl.getCursorPos().rows;
      out.write(`${up > 0 ? `\x1b[${up}A` : ''}\r\x1b[J`);
      out.write(`${fitted}\n`);
      rl.prompt(true);
      this.shown = true;
      return;
    }
    out.write(`\x1b7\x1b[${rowsUp(rl)}A\r\x1b[2K${fitted}\x1b8`);
  }

  /** Removes the line and shows the typed line where it was. */
  clear(): void {
    const rl = this.o.rl();
    if (!rl || !this.shown) return;
    this.o.output.write(`\x1b[${rowsUp(rl)}A\r\x1b[J`);
    this.shown = false;
    rl.prompt(true);
  }

  /** Before a command's output: the cursor sits on the line of what was typed
   *  meanwhile (if anything), under this line if it shows; the output
   *  replaces both, and the prompt with the typed text comes back after it. */
  eraseForOutput(): void {
    const rl = this.o.rl();
    if (this.shown && rl) this.o.output.write(`\x1b[${rowsUp(rl)}A\r\x1b[J`);
    else this.o.output.write('\r\x1b[2K');
    this.shown = false;
  }
}

/** rows from the cursor up to the progress line (it sits just above the typed line) */
function rowsUp(rl: Interface): number {
  return rl.getCursorPos().rows + 1;
}
