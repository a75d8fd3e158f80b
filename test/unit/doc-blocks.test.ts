// The doc test's reading of Markdown (test/helpers/doc-blocks.ts): which
// blocks are scripts and sessions, their markers and shown output, and the
// output comparison with `...`.
import { matchOutput, parseBlocks, sessionSteps } from '../helpers/doc-blocks.js';

const md = [
  '# t',
  '```sh',
  'npx postcopy --version',
  '```',
  '',
  '```text',
  'postcopy ...',
  '```',
  '<!-- doc-test: skip: two hosts -->',
  '```sh',
  'dst$ npx postcopy -incoming tcp:0.0.0.0:4444',
  '```',
  '<!-- doc-test: exit 1 -->',
  '```bash',
  'false',
  '```',
  '- a list item:',
  '  ```',
  '  postcopy blocktime-replay FILE',
  '  ```',
  '```',
  'src/uffd/   the binding',
  '```',
  '```console',
  '$ npm start',
  '(qemu) info status',
  'VM status: running',
  '(qemu) quit',
  '```',
  '<!-- doc-test: frobnicate -->',
  '```ts',
  'const x = 1;',
  '```',
].join('\n');

describe('parseBlocks', () => {
  const blocks = parseBlocks('x.md', md);

  it('finds scripts, sessions and the rest, with their lines', () => {
    expect(blocks.map((b) => [b.line, b.kind, b.lang])).toEqual([
      [2, 'script', 'sh'], [10, 'script', 'sh'], [14, 'script', 'bash'], [18, 'script', ''],
      [21, 'other', ''], [24, 'session', 'console'], [31, 'other', 'ts'],
    ]);
  });

  it('folds a text block right after a script into its output; reads the markers', () => {
    expect(blocks[0].output).toBe('postcopy ...');
    expect(blocks[1].skip).toBe('two hosts');
    expect(blocks[2].exit).toBe(1);
    expect(blocks[3].body).toBe('postcopy blocktime-replay FILE'); // indentation dropped
    expect(blocks[6].badMarker).toBe('frobnicate');
  });

  it('splits a session into typed lines and what the doc shows after each', () => {
    expect(sessionSteps(blocks[5].body)).toEqual([
      { prompt: '$', input: 'npm start', output: [] },
      { prompt: '(qemu)', input: 'info status', output: ['VM status: running'] },
      { prompt: '(qemu)', input: 'quit', output: [] },
    ]);
  });
});

describe('matchOutput', () => {
  it('matches whole lines, ... within a line, ... lines for any lines, whitespace runs as one', () => {
    expect(matchOutput('a\n... b ...\nc', 'a\nx b y\nc\n')).toBeNull();
    expect(matchOutput('a\n...\nc', 'a\nc')).toBeNull();
    expect(matchOutput('a\n...\nc', 'a\n1\n2\nc\r\n')).toBeNull();
    expect(matchOutput('Status: completed', 'Status: \t\tcompleted')).toBeNull();
    expect(matchOutput('{"a": ...}', '{"a": 1, "b": [2]}')).toBeNull();
  });

  it('fails on a missing, an extra or a different line, and shows both', () => {
    expect(matchOutput('a\nb', 'a')).toMatch(/^the doc shows:\na\nb\n\nit printed:\na$/);
    expect(matchOutput('a', 'a\nb')).not.toBeNull();
    expect(matchOutput('a ... c', 'a b d')).not.toBeNull();
    expect(matchOutput('x.y', 'xzy')).not.toBeNull(); // no regex meaning leaks through
  });
});
