// The command table parses lines the way QEMU's monitor does: args_type
// kinds, QEMU's error texts, help lines, completion and QMP argument checks.
import { Registry, HmpParseError, type CommandContext, type HmpCommand } from '../../src/monitor/registry.js';
import { parseArgsType, parseSizeMiB } from '../../src/monitor/hmp-args.js';
import { CommandError } from '../../src/errors.js';
import type { Machine } from '../../src/migration/api.js';

function echo(name: string, argsType: string, params = ''): HmpCommand {
  return {
    name, argsType, params, help: `help of ${name}`,
    handler: async (_ctx, args) => ({ text: JSON.stringify(args.toObject()), data: args.toObject() }),
  };
}

function table(): Registry {
  const r = new Registry();
  r.addHmp(echo('help|?', 'name:S?', '[cmd]'));
  r.addHmp(echo('info', 'item:s?', '[subcommand]'));
  r.addHmp(echo('migrate', 'detach:-d,resume:-r,uri:s?', '[-d] [-r] [uri]'));
  r.addHmp(echo('migrate_set_capability', 'capability:s,state:b', 'capability state'));
  r.addHmp({ ...echo('cap_complete', 'capability:s,state:b'), complete: (i) => (i === 0 ? ['postcopy-ram', 'postcopy-blocktime', 'events'] : ['on', 'off']) });
  r.addHmp(echo('num', 'n:i,size:o?', 'n [size]'));
  r.addHmp(echo('quit|q', '', ''));
  r.addHmp({ name: 'fails', argsType: '', params: '', help: 'x', handler: async () => { throw new CommandError('it went wrong'); } });
  r.addInfo(echo('migrate', 'all:-a', '[-a]'));
  r.addInfo(echo('status', '', ''));
  return r;
}

const ctx = (r: Registry): CommandContext => ({
  machine: {} as Machine, registry: r, canWait: true, color: false, requestQuit: () => undefined,
});

async function run(line: string) {
  const r = table();
  return r.runHmp(ctx(r), line);
}

describe('args_type', () => {
  it('parses QEMU spellings', () => {
    expect(parseArgsType('detach:-d,uri:s?,state:b,n:i')).toEqual([
      { name: 'detach', kind: 'flag', optional: true, flag: 'd' },
      { name: 'uri', kind: 's', optional: true },
      { name: 'state', kind: 'b', optional: false },
      { name: 'n', kind: 'i', optional: false },
    ]);
    expect(() => parseArgsType('uri')).toThrow(/bad args_type/);
  });
  it('sizes default to MiB like qemu_strtosz_MiB', () => {
    expect(parseSizeMiB('64')).toBe(64 * 2 ** 20);
    expect(parseSizeMiB('1G')).toBe(2 ** 30);
    expect(parseSizeMiB('512k')).toBe(512 * 1024);
    expect(parseSizeMiB('12x')).toBeUndefined();
  });
});

describe('runHmp', () => {
  it('runs a command with typed arguments', async () => {
    const r = await run('migrate_set_capability postcopy-ram on');
    expect(r.ok).toBe(true);
    expect(r.data).toEqual({ capability: 'postcopy-ram', state: true });
    expect(r.text.endsWith('\n')).toBe(true);
  });
  it('refuses a bad boolean with QEMU text', async () => {
    const r = await run('migrate_set_capability postcopy-ram yes');
    expect(r.ok).toBe(false);
    expect(r.text).toBe("Expected 'on' or 'off'\nTry \"help migrate_set_capability\" for more information\n");
  });
  it('reports a missing string argument', async () => {
    const r = await run('migrate_set_capability');
    expect(r.text).toBe('migrate_set_capability: string expected\nTry "help migrate_set_capability" for more information\n');
  });
  it('reports extra arguments', async () => {
    const r = await run('migrate_set_capability a on extra');
    expect(r.ok).toBe(false);
    expect(r.text.split('\n')[0]).toBe('migrate_set_capability: extraneous characters at the end of line');
  });
  it('reports unknown commands and unknown info items', async () => {
    expect((await run('frobnicate 1 2')).text).toBe("unknown command: 'frobnicate'\n");
    expect((await run('info nothing')).text).toBe("unknown command: 'info nothing'\n");
  });
  it('takes flags in any order and refuses unknown ones', async () => {
    expect((await run('migrate -r -d tcp:1:2')).data).toEqual({ detach: true, resume: true, uri: 'tcp:1:2' });
    expect((await run('migrate tcp:1:2')).data).toEqual({ uri: 'tcp:1:2' });
    expect((await run('migrate -x tcp:1:2')).text.split('\n')[0]).toBe('migrate: unsupported option -x');
  });
  it('dispatches info subcommands with their own arguments', async () => {
    expect((await run('info migrate -a')).data).toEqual({ all: true });
    expect((await run('info status extra')).text.split('\n')[0]).toBe('status: extraneous characters at the end of line');
  });
  it('parses quoted strings with escapes', async () => {
    expect((await run('migrate "unix:/tmp/a b\\"c"')).data).toEqual({ uri: 'unix:/tmp/a b"c' });
    expect((await run('migrate "unterminated')).text.split('\n')[0]).toBe('migrate: unterminated string');
  });
  it('checks integers and sizes', async () => {
    expect((await run('num 0x10 2G')).data).toEqual({ n: 16, size: 2 ** 31 });
    expect((await run('num abc')).text.split('\n')[0]).toBe("invalid char 'a' in expression");
    expect((await run('num 99999999999')).text.split('\n')[0]).toBe("'num' has failed: integer is for 32-bit values");
    expect((await run('num 1 lots')).text.split('\n')[0]).toBe('invalid size');
  });
  it('answers aliases and blank lines', async () => {
    expect((await run('q')).ok).toBe(true);
    expect(await run('   ')).toEqual({ ok: true, text: '' });
  });
  it('prints CommandError as "Error: ..."', async () => {
    expect(await run('fails')).toMatchObject({ ok: false, text: 'Error: it went wrong\n' });
  });
  it('does not echo control characters back', async () => {
    const r = await run('\x1b[2J\x07boom');
    expect(r.text).toBe("unknown command: '\\x1b[2J\\x07boom'\n");
  });
});

describe('help and completion', () => {
  it('derives help lines from the table', () => {
    const r = table();
    expect(r.helpText('migrate')).toBe('migrate [-d] [-r] [uri] -- help of migrate\n');
    expect(r.helpText('info')).toBe('info migrate [-a] -- help of migrate\ninfo status  -- help of status\n');
    expect(r.helpText().split('\n')).toContain('quit|q  -- help of quit|q');
    expect(() => r.helpText('nope')).toThrow(HmpParseError);
  });
  it('completes names, info items and arguments', () => {
    const r = table();
    expect(r.complete('mig')).toEqual([['migrate', 'migrate_set_capability'], 'mig']);
    expect(r.complete('info s')).toEqual([['status '], 's']);
    expect(r.complete('cap_complete postcopy-')).toEqual([['postcopy-blocktime', 'postcopy-ram'], 'postcopy-']);
    expect(r.complete('cap_complete events o')).toEqual([['off', 'on'], 'o']);
    expect(r.complete('help info m')).toEqual([['migrate '], 'm']);
  });
});

describe('QMP namespace', () => {
  it('checks arguments with QEMU texts', () => {
    const r = table();
    const cmd = { name: 'migrate', args: [{ name: 'uri', type: 'str' as const }, { name: 'detach', type: 'bool' as const, optional: true }], handler: async () => ({}) };
    r.addQmp(cmd);
    expect(r.qmp('migrate')).toBe(cmd);
    expect(r.checkQmpArgs(cmd, { uri: 'x' })).toEqual({ uri: 'x' });
    expect(() => r.checkQmpArgs(cmd, {})).toThrow("Parameter 'uri' is missing");
    expect(() => r.checkQmpArgs(cmd, { uri: 1 })).toThrow("Invalid parameter type for 'uri', expected: string");
    expect(() => r.checkQmpArgs(cmd, { uri: 'x', foo: 1 })).toThrow("Parameter 'foo' is unexpected");
    expect(() => r.addQmp(cmd)).toThrow(/twice/);
  });
});
