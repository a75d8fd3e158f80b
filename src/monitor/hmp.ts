// The HMP console: QEMU's `(qemu) ` monitor on stdin/stdout.
// Interactive (stdin is a TTY): node:readline line editing, history kept in
// a file across runs, Tab completion derived from the registry, a live
// progress line above the prompt while a migration runs (redrawn in place so
// the line being typed is never disturbed), Ctrl-C clears the line (or stops
// waiting for a synchronous `migrate`), Ctrl-D quits.
// Scripts (stdin is not a TTY, or -e): commands run one after another, each
// one's output printed plainly; with exitOnError the first failing command
// ends the console with failure; at the end of the input the console ends
// (vm-main then quits the VM, as `quit` would).
// The console only prints: parsing and running is the registry's job.

import { createInterface, type Interface } from 'node:readline';
import type { Machine, MigrationStatus } from '../migration/api.js';
import { TERMINAL_STATUSES } from '../migration/api.js';
import type { CommandContext, HmpRunResult, Registry } from './registry.js';
import { escapeControls } from './hmp-args.js';
import { painter } from './format.js';
import { ProgressLine } from './progress-line.js';
import { LiveFrame, readlineKeys } from './live-frame.js';
import { HISTORY_SIZE, loadHistory, saveHistory } from './history-file.js';

/** QEMU's readline keeps at most 4095 characters; longer lines are refused. */
export const MAX_LINE = 4096;
export { HISTORY_SIZE } from './history-file.js';
const PROMPT = '(qemu) ';

export interface ConsoleOptions {
  machine: Machine;
  registry: Registry;
  input: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  output: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** line editing, prompt, completion, history, progress line */
  interactive: boolean;
  /** commands to run instead of reading input (-e) */
  commands?: readonly string[];
  /** end with failure at the first failing command */
  exitOnError: boolean;
  color: boolean;
  /** history file (interactive only); undefined = no history kept */
  historyFile?: string;
  /** printed once when an interactive console opens */
  banner?: string;
  /** the program's quit (machine.quit, servers closed, exit); the console
   *  ends itself first */
  requestQuit: () => void;
}

export type ConsoleEnd = 'quit' | 'eof' | 'error' | 'closed';

export interface ConsoleResult {
  /** why the console ended */
  end: ConsoleEnd;
  /** number of commands that failed */
  failures: number;
}

/** One console on one pair of streams. `done` resolves when it ends. */
export class HmpConsole {
  readonly done: Promise<ConsoleResult>;
  private resolveDone!: (r: ConsoleResult) => void;
  private rl: Interface | undefined;
  private readonly queue: string[] = [];
  private busy = false;
  private ended = false;
  private inputClosed = false;
  private failures = 0;
  private quitRequested = false;
  private abort: AbortController | undefined;
  /** the running command's live area (live-frame.ts) */
  private live: LiveFrame | undefined;
  /** the live line above the prompt (interactive only) */
  private readonly progress: ProgressLine;
  /** a migration's end seen while a command ran (its failure, or any end
   *  under a command's frames): shown after the command's output, unless
   *  that output already said `desc` */
  private deferredFailure: { line: string; desc?: string } | undefined;
  /** a command's yes/no question waits for the next typed line */
  private answer: ((line: string | null) => void) | undefined;
  private readonly onMigration = (s: MigrationStatus) => this.migrationChanged(s);

  constructor(private readonly opts: ConsoleOptions) {
    this.done = new Promise((res) => { this.resolveDone = res; });
    this.progress = new ProgressLine({
      machine: opts.machine, output: opts.output, color: opts.color,
      rl: () => (opts.interactive ? this.rl : undefined), mayDraw: () => !this.ended && !this.live?.drawing,
    });
  }

  /** Starts reading (or running -e commands). */
  start(): void {
    const o = this.opts;
    if (o.commands) {
      for (const c of o.commands) this.queue.push(c);
      this.inputClosed = true;
      void this.pump();
      return;
    }
    if (o.interactive) this.startInteractive();
    else this.startScript();
  }

  /** Ends the console from outside (QMP `quit`, a signal). */
  close(): void { this.finish('closed'); }

  /** Prints a line that comes from outside any command (a QEMU's event, a
   *  QEMU gone): as it is in a script, above the prompt on a terminal. */
  notice(line: string): void {
    if (this.ended) return;
    const out = this.opts.output;
    if (!this.opts.interactive || !this.rl) { out.write(`${escapeControls(line)}\n`); return; }
    this.progress.clear();
    out.write(`\r\x1b[2K${escapeControls(line)}\n`);
    this.rl.prompt(true);
  }

  private startScript(): void {
    const rl = createInterface({ input: this.opts.input, terminal: false, crlfDelay: Infinity });
    this.rl = rl;
    rl.on('line', (line) => { this.queue.push(line); void this.pump(); });
    rl.on('close', () => { this.inputClosed = true; void this.pump(); });
  }

  private startInteractive(): void {
    const o = this.opts;
    const history = o.historyFile ? loadHistory(o.historyFile) : [];
    const rl = createInterface({
      input: o.input,
      output: o.output,
      terminal: true,
      prompt: PROMPT,
      history,
      historySize: HISTORY_SIZE,
      removeHistoryDuplicates: true,
      completer: (line: string) => o.registry.complete(line),
    });
    this.rl = rl;
    // the terminal went away (closed window, hung-up line): readline reports
    // EIO from the tty; that is the end of the input, not a crash
    const gone = (): void => {
      if (this.ended) return;
      this.inputClosed = true;
      this.abort?.abort();
      this.finish('eof');
    };
    rl.on('error', gone);
    o.input.on('error', gone);
    rl.on('history', (h: string[]) => { if (o.historyFile) saveHistory(o.historyFile, h); });
    rl.on('line', (line) => {
      this.progress.forget(); // the prompt line scrolled up
      if (this.answer) { this.answer(line); return; }
      if (this.live?.wantsKeys) return; // the Enter that stops a command redrawing (-w)
      this.queue.push(line);
      void this.pump();
    });
    rl.on('SIGINT', () => {
      if (this.busy && this.abort) { this.abort.abort(); return; }
      // drop the line being typed, as a shell does: "^C", then a fresh prompt
      rl.write(null, { ctrl: true, name: 'e' });
      this.opts.output.write('^C\n');
      this.progress.forget();
      rl.write(null, { ctrl: true, name: 'u' });
      rl.prompt();
    });
    rl.on('close', () => {
      // Ctrl-D on an empty line (or the terminal went away): also stop
      // waiting for a synchronous migrate, the user wants out
      this.inputClosed = true;
      this.answer?.(null);
      this.abort?.abort();
      if (!this.ended) this.opts.output.write('\n');
      void this.pump();
    });
    if (o.banner) o.output.write(o.banner);
    o.machine.events.on('migration', this.onMigration);
    const st = o.machine.queryMigrate().status;
    if (st !== 'none' && !TERMINAL_STATUSES.has(st)) this.progress.start();
    rl.prompt();
  }

  /** Runs queued lines one at a time. */
  private async pump(): Promise<void> {
    if (this.busy || this.ended) return;
    this.busy = true;
    // while a command runs there is no prompt: what is typed meanwhile shows
    // on a line of its own (under the live line) and runs afterwards
    this.rl?.setPrompt('');
    try {
      while (this.queue.length > 0 && !this.ended) {
        const line = this.queue.shift() as string;
        const r = await this.runLine(line);
        if (this.ended) return;
        this.print(r.text, !r.ok);
        const deferred = this.deferredFailure;
        this.deferredFailure = undefined;
        if (deferred && (deferred.desc === undefined || !r.text.includes(deferred.desc))) this.opts.output.write(`${deferred.line}\n`);
        if (!r.ok) {
          this.failures++;
          if (this.opts.exitOnError) { this.finish('error'); return; }
        }
        if (this.quitRequested) { this.finish('quit'); return; }
      }
    } finally {
      this.busy = false;
      this.rl?.setPrompt(PROMPT);
    }
    if (this.inputClosed && this.queue.length === 0) {
      this.sayMigrationEnds();
      this.finish('eof');
      return;
    }
    // keep the cursor where the user is typing: a line typed ahead while a
    // command ran stays editable and completable where it ends
    if (this.opts.interactive && this.rl) this.rl.prompt(true);
  }

  /** Shows the last line of `question` as the prompt (the lines before it as
   *  output) and resolves with the answer. */
  private ask(question: string, signal?: AbortSignal): Promise<boolean> {
    const rl = this.rl;
    if (!rl || this.inputClosed || signal?.aborted) return Promise.resolve(false);
    const nl = question.lastIndexOf('\n');
    if (nl >= 0) {
      this.print(question.slice(0, nl + 1), false);
      question = question.slice(nl + 1);
    }
    return new Promise((resolve) => {
      const done = (line: string | null): void => {
        this.answer = undefined;
        signal?.removeEventListener('abort', onAbort);
        rl.setPrompt('');
        resolve(line !== null && /^\s*y(es)?\s*$/i.test(line));
      };
      const onAbort = (): void => { this.opts.output.write('\n'); done(null); };
      this.answer = done;
      signal?.addEventListener('abort', onAbort);
      rl.setPrompt(question);
      rl.prompt();
    });
  }

  /** The end of the input quits the VM: a migration still running ends with
   *  it, which deserves a line. */
  private sayMigrationEnds(): void {
    const m = this.opts.machine;
    const st = m.queryMigrate().status;
    if (st === 'none' || TERMINAL_STATUSES.has(st)) return;
    const what = m.info().role === 'destination' ? 'the incoming migration' : 'the migration';
    this.opts.output.write(`end of input: the VM quits and ${what} (${st}) is cancelled; end the input with 'migrate_wait' to let it finish\n`);
  }

  private async runLine(raw: string): Promise<HmpRunResult> {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.length > MAX_LINE) {
      return { ok: false, text: `Error: line too long (${line.length} characters; the monitor takes at most ${MAX_LINE})\n` };
    }
    // comments let scripts explain themselves (QEMU has none; ours)
    if (/^\s*#/.test(line)) return { ok: true, text: '' };
    this.abort = new AbortController();
    const signal = this.abort.signal;
    const live = this.liveFrame();
    this.live = live;
    const ctx: CommandContext = {
      live,
      machine: this.opts.machine,
      registry: this.opts.registry,
      canWait: true,
      color: this.opts.color,
      signal,
      confirm: this.opts.interactive ? (q) => this.ask(q, signal) : undefined,
      requestQuit: () => { this.quitRequested = true; },
    };
    try {
      return await this.opts.registry.runHmp(ctx, line);
    } catch (e) {
      // a bug in a handler: report it and keep the console alive
      const msg = e instanceof Error ? e.message : String(e);
      return { ok: false, text: `Error: internal error: ${msg}\n` };
    } finally {
      this.abort = undefined;
      live.close();
      this.live = undefined;
    }
  }

  /** The live area of one command: frames in place on the terminal, with
   *  a typed key for it to stop on (the key itself is dropped from the
   *  line being typed); plain lines for a script. */
  private liveFrame(): LiveFrame {
    const o = this.opts;
    if (!o.interactive) return new LiveFrame({ output: o.output, inPlace: false });
    return new LiveFrame({
      output: o.output,
      inPlace: true,
      beforeFirst: () => this.progress.clear(),
      onKey: readlineKeys(o.input, () => this.rl),
    });
  }

  private print(text: string, isError: boolean): void {
    if (text === '') return;
    const c = painter(this.opts.color);
    const out = isError && this.opts.color ? text.split('\n').map((l) => (l === '' ? l : c.red(l))).join('\n') : text;
    if (this.opts.interactive) this.progress.eraseForOutput();
    this.opts.output.write(out);
  }

  private finish(end: ConsoleEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.progress.stop();
    this.opts.machine.events.off('migration', this.onMigration);
    const rl = this.rl;
    this.rl = undefined;
    if (rl) {
      rl.removeAllListeners('close');
      rl.close();
    }
    if (this.opts.interactive) {
      try { this.opts.input.setRawMode?.(false); } catch { /* no terminal any more */ }
    }
    this.abort?.abort();
    this.resolveDone({ end, failures: this.failures });
    if (end === 'quit') this.opts.requestQuit();
  }

  // ---------------------------------------------------------------- progress

  private migrationChanged(s: MigrationStatus): void {
    if (this.ended) return;
    if (TERMINAL_STATUSES.has(s)) {
      this.progress.stop();
      const info = this.opts.machine.queryMigrate();
      const c = painter(this.opts.color);
      let line: string;
      if (s === 'completed') {
        const t = info['total-time'] !== undefined ? ` in ${info['total-time']} ms` : '';
        const d = info.downtime !== undefined ? `, downtime ${info.downtime} ms` : '';
        line = c.green(`migration completed${t}${d}`);
      } else if (s === 'failed') {
        line = c.red(`migration failed${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
      } else {
        line = c.yellow('migration cancelled');
      }
      if (s === 'failed' && this.busy) {
        // a waiting command (migrate, migrate_wait) says it as its Error: once is enough
        this.progress.clear();
        this.deferredFailure = { line, desc: info['error-desc'] ?? '' };
        return;
      }
      if (this.live?.drawing) { // under the frames of a command redrawing (-w), once it ends
        this.deferredFailure = { line };
        return;
      }
      this.progress.show(line);
      this.progress.forget(); // the end's words stay where they are
    } else if (s !== 'none' && this.opts.interactive) {
      this.progress.start();
      void this.progress.draw();
    }
  }
}
