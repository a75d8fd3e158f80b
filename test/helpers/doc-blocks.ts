// The code blocks of the Markdown docs, for the doc test: which ones a user
// would type into a shell (scripts) or into a console (sessions), what each
// shows as its output, and whether the doc says it cannot run here.
//
// Conventions (README.md says them to readers):
//   ```sh (bash, shell)   a script, run as one fresh shell would run it pasted
//   ```console            a session: `$ CMD` typed into a shell, `(qemu) CMD`
//                         into the console that CMD opened; the lines between
//                         are what the command prints
//   ```text right after a script: what the script prints
//   <!-- doc-test: skip: REASON --> on the line before a block: not runnable here
//   <!-- doc-test: exit N -->       the script ends with status N (a documented failure)
// An untagged block that reads like shell or a console session counts as one.
// In shown output, a line `...` stands for any lines (none included), and
// `...` within a line for any text; runs of spaces and tabs compare as one.

export type BlockKind = 'script' | 'session' | 'other';

export interface DocBlock {
  file: string;
  /** 1-based line of the opening fence */
  line: number;
  /** the info string's first word ('' when none) */
  lang: string;
  kind: BlockKind;
  /** the content, without the fence's indentation */
  body: string;
  /** the reason it cannot run here, from a skip marker */
  skip?: string;
  /** the exit status the doc says the block ends with */
  exit: number;
  /** what the doc shows the script prints (the ```text block after it) */
  output?: string;
  /** a marker the test does not understand */
  badMarker?: string;
}

const SHELL_LANGS = new Set(['sh', 'bash', 'shell', 'zsh']);
/** first words of a command line a user would type into a shell */
const SHELL_WORDS = new Set(['postcopy', 'npx', 'npm', 'node', 'printf', 'nc', 'socat', 'sudo', 'sysctl', 'apt-get',
  'ip', 'cd', 'export', 'echo', 'cat', 'ls', 'curl', 'bash', 'sh', 'make', 'git']);

function kindOf(lang: string, body: string): BlockKind {
  if (SHELL_LANGS.has(lang)) return 'script';
  if (lang === 'console') return 'session';
  if (lang !== '') return 'other';
  const first = body.split('\n').map((l) => l.trim()).find((l) => l !== '' && !l.startsWith('#')) ?? '';
  if (first.startsWith('(qemu) ') || first.startsWith('$ ')) return 'session';
  const word = first.replace(/^[\w-]*\$ /, '').split(/\s+/)[0];
  return SHELL_WORDS.has(word) ? 'script' : 'other';
}

const MARKER = /^<!--\s*doc-test:\s*(.*?)\s*-->$/;

/** Every fenced block of a Markdown text, a script's output block folded into it. */
export function parseBlocks(file: string, markdown: string): DocBlock[] {
  const lines = markdown.split('\n');
  const raw: { line: number; end: number; lang: string; body: string; marker?: string }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(```+|~~~+)\s*([^\s`]*)/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, lang] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      if (lines[j].trim().startsWith(fence[0].repeat(fence.length)) && lines[j].trim().replace(/[`~]/g, '') === '') break;
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j].trimStart());
    }
    let k = i - 1;
    while (k >= 0 && lines[k].trim() === '') k--;
    const m = k >= 0 ? MARKER.exec(lines[k].trim()) : null;
    raw.push({ line: i + 1, end: j + 1, lang: lang.toLowerCase(), body: body.join('\n'), marker: m?.[1] });
    i = j;
  }
  const blocks: DocBlock[] = [];
  for (let n = 0; n < raw.length; n++) {
    const r = raw[n];
    const b: DocBlock = { file, line: r.line, lang: r.lang, kind: kindOf(r.lang, r.body), body: r.body, exit: 0 };
    if (r.marker !== undefined) {
      const skip = /^skip:\s*(.+)$/.exec(r.marker);
      const exit = /^exit\s+(\d+)$/.exec(r.marker);
      if (skip) b.skip = skip[1];
      else if (exit) b.exit = Number(exit[1]);
      else b.badMarker = r.marker;
    }
    const next = raw[n + 1];
    const between = next ? lines.slice(r.end, next.line - 1) : [];
    if (b.kind === 'script' && next && next.lang === 'text' && between.every((l) => l.trim() === '')) {
      b.output = next.body;
      n++;
    }
    blocks.push(b);
  }
  return blocks;
}

const normalize = (s: string): string[] => {
  const lines = s.replace(/\r/g, '').split('\n').map((l) => l.replace(/[ \t]+/g, ' ').trimEnd());
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
};

function linePattern(expected: string): RegExp {
  const parts = expected.split('...').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${parts.join('.*')}$`);
}

/** null when `actual` is what `expected` shows; otherwise both, for the failure message. */
export function matchOutput(expected: string, actual: string): string | null {
  const e = normalize(expected);
  const a = normalize(actual);
  const patterns = e.map((l) => (l.trim() === '...' ? null : linePattern(l)));
  const memo = new Map<number, boolean>();
  const match = (i: number, j: number): boolean => {
    const key = i * (a.length + 1) + j;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    let ok: boolean;
    if (i === e.length) ok = j === a.length;
    else if (patterns[i] === null) ok = match(i + 1, j) || (j < a.length && match(i, j + 1));
    else ok = j < a.length && (patterns[i] as RegExp).test(a[j]) && match(i + 1, j + 1);
    memo.set(key, ok);
    return ok;
  };
  if (match(0, 0)) return null;
  return `the doc shows:\n${e.join('\n')}\n\nit printed:\n${a.join('\n')}`;
}

/** One step of a console session: what is typed at which prompt, and what the doc shows it prints. */
export interface SessionStep {
  prompt: '$' | '(qemu)';
  input: string;
  /** the lines the doc shows after it (may be empty: nothing shown) */
  output: string[];
}

export function sessionSteps(body: string): SessionStep[] {
  const steps: SessionStep[] = [];
  for (const line of body.split('\n')) {
    const m = /^(\$|\(qemu\)) (.*)$/.exec(line);
    if (m) steps.push({ prompt: m[1] as '$' | '(qemu)', input: m[2], output: [] });
    else if (steps.length > 0 && line.trim() !== '') steps[steps.length - 1].output.push(line);
  }
  return steps;
}
