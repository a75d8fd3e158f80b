// The one command table both monitors dispatch through, modelled on QEMU's
// hmp-commands.hx: every command is a declarative entry (name, args_type,
// params, help, handler, completion) and the console derives parsing, help
// and Tab completion from the table instead of hand-coding them per command.
//
// Two namespaces over the same operations:
//  - HMP entries (`addHmp`, and `addInfo` for the `info` sub-table like QEMU's
//    info_cmds). Arguments are written in QEMU's args_type syntax:
//      name:s   one word or a "double quoted" string     name:s?  optional
//      name:S   the rest of the line                     name:S?  optional
//      name:i   integer (32 bit)   name:l  integer (64 bit)   (both take ?)
//      name:o   size, MiB when no suffix ("64", "1G", "512k")  name:o?
//      name:b   on|off ("Expected 'on' or 'off'")
//      name:-d  flag -d (true when given)
//    A handler gets the Machine (in the CommandContext) and the typed
//    ParsedArgs and RETURNS its output ({ text, data? }); it never prints.
//    `runHmp(ctx, line)` parses and runs one line and returns the text exactly
//    as the console would print it (errors included), which is also what QMP's
//    `human-monitor-command` answers.
//  - QMP entries (`addQmp`): name, a small JSON argument schema checked with
//    QEMU's error texts (`checkQmpArgs`), and a handler returning the QMP
//    `return` value. QMP commands reuse the operations the HMP entries use
//    (src/monitor/commands-*.ts export them) so both monitors behave the same.
//
// Errors: handlers throw CommandError (src/errors.ts); runHmp prints them as
// "Error: <message>" (QEMU's hmp_handle_error). Parse errors print QEMU's
// own texts ("unknown command: 'x'", "migrate: string expected", ...) and
// "Try "help x" for more information".

import type { Machine } from '../migration/api.js';
import { CommandError } from '../errors.js';
import { Cursor, escapeControls, isSpace, parseArgsType, parseArguments, printable, type ParsedArgs } from './hmp-args.js';

// ---------------------------------------------------------------- contexts

/** What a handler may use besides its arguments. Built by the monitor that
 *  runs the command (HMP console, QMP server, tests). */
export interface CommandContext {
  readonly machine: Machine;
  readonly registry: Registry;
  /** true when the caller may block on a long command (the HMP console and
   *  scripts); false under QMP's human-monitor-command, where `migrate`
   *  continues detached as QEMU's does ("terminal does not allow synchronous
   *  migration, continuing detached"). */
  readonly canWait: boolean;
  /** whether text output may carry ANSI colours */
  readonly color: boolean;
  /** aborted when the user interrupts a waiting command (Ctrl-C) */
  readonly signal?: AbortSignal;
  /** transient progress for a command that waits; a TTY console shows it on
   *  its status line, other callers leave it out */
  readonly progress?: (line: string) => void;
  /** asks the person at an interactive console a yes/no question (false on
   *  anything but y/yes, Ctrl-C or the end of input); absent for scripts and
   *  QMP, where a command goes ahead as QEMU's would */
  readonly confirm?: (question: string) => Promise<boolean>;
  /** asks the program to quit once the current reply has been delivered */
  readonly requestQuit: () => void;
  /** the console's live area, for a command that redraws while it runs
   *  (`info postcopy_blocktime -w`); absent where nothing can be redrawn (QMP) */
  readonly live?: LiveOutput;
}

/** Where a long-running command shows frames while it runs (live-frame.ts).
 *  Its final text is still its CommandOutput, printed under the last frame. */
export interface LiveOutput {
  /** true on a terminal: each frame replaces the last in place; false (a
   *  pipe, a script): each frame is printed after the last, as plain lines */
  readonly inPlace: boolean;
  /** the width and the height a frame should fit in (in place) */
  readonly columns: number;
  readonly rows: number;
  /** shows a frame, one string per line */
  frame(lines: readonly string[]): void;
  /** a signal that aborts at the next key pressed at the console (never
   *  when nobody types at it: a script, -e) */
  untilKey(): AbortSignal;
}

/** What an HMP handler returns: the text to print (may be '' or end without
 *  a newline; the runner adds one) and optional structured data. */
export interface CommandOutput {
  text: string;
  data?: unknown;
}

/** The outcome of one console line. `text` is everything the console prints
 *  for it, errors included, each line ending in '\n' ('' when silent). */
export interface HmpRunResult {
  ok: boolean;
  text: string;
  data?: unknown;
  /** the entry that ran (absent for blank lines and unknown commands) */
  command?: HmpCommand;
}

// ---------------------------------------------------------------- entries (their arguments: src/monitor/hmp-args.ts)

/** Completion of one argument: `argIndex` is the 0-based index of the word
 *  being completed after the command name (flags count as words), `words`
 *  the words before it. Returns the candidates (unfiltered is fine: the
 *  registry keeps those that start with the prefix). */
export type Completer = (argIndex: number, prefix: string, words: readonly string[]) => readonly string[];

export interface HmpCommand {
  /** "name" or "name|alias" as in hmp-commands.hx (e.g. "quit|q") */
  name: string;
  /** QEMU args_type, e.g. "capability:s,state:b" */
  argsType: string;
  /** parameter synopsis for help, e.g. "capability state" */
  params: string;
  help: string;
  handler: (ctx: CommandContext, args: ParsedArgs) => Promise<CommandOutput>;
  complete?: Completer;
}

export type QmpArgType = 'str' | 'int' | 'number' | 'bool' | 'array' | 'object' | 'any';

export interface QmpArgSpec {
  name: string;
  type: QmpArgType;
  optional?: boolean;
}

export interface QmpCommand {
  /** QMP name, e.g. "migrate-set-capabilities" */
  name: string;
  /** the accepted members of "arguments"; others are refused */
  args: readonly QmpArgSpec[];
  /** one line for docs/listings */
  help?: string;
  /** returns the QMP "return" value ({} when there is nothing to return) */
  handler: (ctx: CommandContext, args: Record<string, unknown>) => Promise<unknown>;
}

/** A user-facing parse failure: `lines` are printed as they are (QEMU prints
 *  parse errors without an "Error: " prefix). */
export class HmpParseError extends CommandError {
  constructor(readonly lines: string[]) {
    super(lines.join('\n'));
    this.name = 'HmpParseError';
  }
}

// ---------------------------------------------------------------- helpers

/** The names an entry answers to ("quit|q" -> ["quit", "q"]). */
export function entryNames(cmd: HmpCommand): string[] {
  return cmd.name.split('|');
}

/** The primary name ("quit|q" -> "quit"). */
export function primaryName(cmd: HmpCommand): string {
  return entryNames(cmd)[0];
}

/** An error's lines as the monitor prints them, with any echoed input escaped. */
function errorText(lines: readonly string[]): string {
  return lines.map((l) => `${escapeControls(l)}\n`).join('');
}

// ---------------------------------------------------------------- the table

interface ParsedLine {
  command: HmpCommand;
  args: ParsedArgs;
}

/** The command table. One per process; vm-main builds it with the HMP
 *  entries (commands-*.ts) and hands it to both monitors. */
export class Registry {
  private readonly hmp: HmpCommand[] = [];
  private readonly info: HmpCommand[] = [];
  private readonly qmpByName = new Map<string, QmpCommand>();

  addHmp(cmd: HmpCommand): this {
    this.register(this.hmp, cmd);
    return this;
  }

  /** adds an `info` subcommand (QEMU's info_cmds) */
  addInfo(cmd: HmpCommand): this {
    this.register(this.info, cmd);
    return this;
  }

  addQmp(cmd: QmpCommand): this {
    if (this.qmpByName.has(cmd.name)) throw new Error(`QMP command '${cmd.name}' registered twice`);
    this.qmpByName.set(cmd.name, cmd);
    return this;
  }

  private register(table: HmpCommand[], cmd: HmpCommand): void {
    parseArgsType(cmd.argsType); // malformed tables fail at start-up, not at use
    for (const n of entryNames(cmd)) {
      if (findIn(table, n)) throw new Error(`HMP command '${n}' registered twice`);
    }
    table.push(cmd);
  }

  /** A registry of the same entries, only those `keep` names (HMP and
   *  `info` entries by primary name), with `notes` ("migrate", "info cpus")
   *  added to their help: for a machine that has fewer commands (a QEMU,
   *  `attach`) or routes some elsewhere. The table stays the one table. */
  subset(keep: { hmp: readonly string[]; info: readonly string[] }, notes: Readonly<Record<string, string>> = {}): Registry {
    const r = new Registry();
    const noted = (cmd: HmpCommand, key: string): HmpCommand => (notes[key] ? { ...cmd, help: `${cmd.help} [${notes[key]}]` } : cmd);
    for (const c of this.hmp) if (keep.hmp.includes(primaryName(c))) r.addHmp(noted(c, primaryName(c)));
    for (const c of this.info) if (keep.info.includes(primaryName(c))) r.addInfo(noted(c, `info ${primaryName(c)}`));
    for (const q of this.qmpByName.values()) r.addQmp(q);
    return r;
  }

  hmpCommands(): readonly HmpCommand[] { return this.hmp; }
  infoCommands(): readonly HmpCommand[] { return this.info; }
  findHmp(name: string): HmpCommand | undefined { return findIn(this.hmp, name); }
  findInfo(name: string): HmpCommand | undefined { return findIn(this.info, name); }
  qmp(name: string): QmpCommand | undefined { return this.qmpByName.get(name); }
  qmpCommands(): readonly QmpCommand[] { return [...this.qmpByName.values()]; }

  /** Parses one console line. Returns undefined for a blank line; throws
   *  HmpParseError with QEMU's texts for anything it cannot parse. */
  parseHmp(line: string): ParsedLine | undefined {
    const c = new Cursor(line);
    c.skipSpace();
    if (c.atEnd()) return undefined;
    const lineStart = c.pos;
    const name = this.commandName(c);
    let cmd = this.findHmp(name);
    if (!cmd) throw new HmpParseError([`unknown command: '${printable(line.slice(lineStart, c.pos))}'`]);
    c.skipSpace();
    if (cmd.name === 'info' && !c.atEnd()) {
      const sub = this.commandName(c);
      const found = this.findInfo(sub);
      if (!found) throw new HmpParseError([`unknown command: '${printable(line.slice(lineStart, c.pos))}'`]);
      cmd = found;
      c.skipSpace();
    }
    const label = line.slice(lineStart, c.pos).trimEnd();
    const tryHelp = `Try "help ${printable(label)}" for more information`;
    try {
      return { command: cmd, args: parseArguments(cmd.name, cmd.argsType, c) };
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      throw new HmpParseError([msg, tryHelp]);
    }
  }

  private commandName(c: Cursor): string {
    const start = c.pos;
    while (!c.atEnd() && !isSpace(c.peek()) && c.peek() !== '/') c.pos++;
    return c.s.slice(start, c.pos);
  }

  /** Parses and runs one console line; never throws for user errors. */
  async runHmp(ctx: CommandContext, line: string): Promise<HmpRunResult> {
    let parsed: ParsedLine | undefined;
    try {
      parsed = this.parseHmp(line);
    } catch (e) {
      if (e instanceof HmpParseError) return { ok: false, text: errorText(e.lines) };
      throw e;
    }
    if (!parsed) return { ok: true, text: '' };
    try {
      await ctx.machine.refresh?.(); // a machine in another process: its state as of now
      const out = await parsed.command.handler(ctx, parsed.args);
      return { ok: true, text: withNewline(out.text), data: out.data, command: parsed.command };
    } catch (e) {
      if (e instanceof HmpParseError) return { ok: false, text: errorText(e.lines), command: parsed.command };
      if (e instanceof CommandError) return { ok: false, text: `Error: ${escapeControls(e.message, true)}\n`, command: parsed.command };
      throw e;
    }
  }

  /** QEMU's help_cmd: "name params -- help" for every entry, or for the one
   *  named (`help info`, `help info migrate`, `help migrate`). */
  helpText(topic?: string): string {
    const words = (topic ?? '').trim().split(/\s+/).filter((w) => w !== '');
    const line = (prefix: string, cmd: HmpCommand) =>
      `${prefix}${cmd.name} ${cmd.params} -- ${cmd.help}\n`;
    if (words.length === 0) return this.hmp.map((c) => line('', c)).join('');
    const cmd = this.findHmp(words[0]);
    if (!cmd) throw new HmpParseError([`unknown command: '${printable(words[0])}'`]);
    if (cmd.name === 'info') {
      if (words.length === 1) return this.info.map((c) => line('info ', c)).join('');
      const sub = this.findInfo(words[1]);
      if (!sub) throw new HmpParseError([`unknown command: '${printable(`${words[0]} ${words[1]}`)}'`]);
      return line('info ', sub);
    }
    return line('', cmd);
  }

  /** Tab completion of a partial line (the text up to the cursor), in
   *  node:readline's completer shape: [candidates, the word completed]. */
  complete(partial: string): [string[], string] {
    const endsInSpace = partial === '' || isSpace(partial[partial.length - 1]);
    const words = partial.trim() === '' ? [] : partial.trim().split(/\s+/);
    const prefix = endsInSpace ? '' : (words.pop() ?? '');
    // one candidate left: complete it and the space after it, as QEMU's readline does
    const pick = (cands: readonly string[]) => {
      const hits = [...new Set(cands)].filter((x) => x.startsWith(prefix)).sort();
      return hits.length === 1 ? [`${hits[0]} `] : hits;
    };
    if (words.length === 0) return [pick(this.hmp.flatMap(entryNames)), prefix];
    const cmd = this.findHmp(words[0]);
    if (!cmd) return [[], prefix];
    const first = primaryName(cmd);
    if (first === 'info') {
      if (words.length === 1) return [pick(this.info.flatMap(entryNames)), prefix];
      const sub = this.findInfo(words[1]);
      if (!sub?.complete) return [[], prefix];
      return [pick(sub.complete(words.length - 2, prefix, words.slice(2))), prefix];
    }
    if (first === 'help') {
      if (words.length === 1) return [pick(this.hmp.flatMap(entryNames)), prefix];
      if (words.length === 2 && words[1] === 'info') return [pick(this.info.flatMap(entryNames)), prefix];
      return [[], prefix];
    }
    if (!cmd.complete) return [[], prefix];
    return [pick(cmd.complete(words.length - 1, prefix, words.slice(1))), prefix];
  }

  /** Checks QMP "arguments" against a command's schema with QEMU's texts;
   *  returns them as a record. */
  checkQmpArgs(cmd: QmpCommand, args: unknown): Record<string, unknown> {
    if (args === undefined) args = {};
    if (args === null || typeof args !== 'object' || Array.isArray(args)) {
      throw new CommandError("QMP input member 'arguments' must be an object");
    }
    const rec = args as Record<string, unknown>;
    for (const spec of cmd.args) {
      const v = rec[spec.name];
      if (v === undefined) {
        if (!spec.optional) throw new CommandError(`Parameter '${spec.name}' is missing`);
        continue;
      }
      if (!qmpTypeOk(spec.type, v)) {
        throw new CommandError(`Invalid parameter type for '${spec.name}', expected: ${qmpTypeName(spec.type)}`);
      }
    }
    for (const k of Object.keys(rec)) {
      if (!cmd.args.some((s) => s.name === k)) throw new CommandError(`Parameter '${k}' is unexpected`);
    }
    return rec;
  }
}

function findIn(table: readonly HmpCommand[], name: string): HmpCommand | undefined {
  return table.find((c) => entryNames(c).includes(name));
}

function withNewline(text: string): string {
  return text === '' || text.endsWith('\n') ? text : `${text}\n`;
}

function qmpTypeOk(type: QmpArgType, v: unknown): boolean {
  switch (type) {
    case 'str': return typeof v === 'string';
    case 'int': return typeof v === 'number' && Number.isInteger(v);
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'bool': return typeof v === 'boolean';
    case 'array': return Array.isArray(v);
    case 'object': return v !== null && typeof v === 'object' && !Array.isArray(v);
    case 'any': return true;
  }
}

function qmpTypeName(type: QmpArgType): string {
  switch (type) {
    case 'str': return 'string';
    case 'int': return 'integer';
    case 'number': return 'number';
    case 'bool': return 'boolean';
    case 'array': return 'array';
    case 'object': return 'object';
    case 'any': return 'any';
  }
}
