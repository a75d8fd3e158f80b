// The -qmp argument: what is accepted, and a clear error for the rest.
import { parseQmpSpec, formatQmpSpec } from '../../src/monitor/qmp-spec.js';
import { parseQmpClientAddress } from '../../src/qmp/client.js';
import { CommandError } from '../../src/errors.js';

describe('parseQmpSpec', () => {
  test('unix and tcp in QEMU spelling', () => {
    expect(parseQmpSpec('unix:/run/vm.qmp,server=on,wait=off')).toEqual({ transport: 'unix', path: '/run/vm.qmp' });
    expect(parseQmpSpec('unix:rel/vm.sock')).toEqual({ transport: 'unix', path: 'rel/vm.sock' });
    expect(parseQmpSpec('tcp:127.0.0.1:4444,server=on,wait=off')).toEqual({ transport: 'tcp', host: '127.0.0.1', port: 4444 });
    expect(parseQmpSpec('tcp:[::1]:4444,server,nowait')).toEqual({ transport: 'tcp', host: '::1', port: 4444 });
    expect(parseQmpSpec('tcp:0.0.0.0:1,server=yes,wait=no')).toEqual({ transport: 'tcp', host: '0.0.0.0', port: 1 });
  });

  test('an empty host means loopback, not every address', () => {
    expect(parseQmpSpec('tcp::4444,server=on,wait=off')).toEqual({ transport: 'tcp', host: '127.0.0.1', port: 4444 });
  });

  test("',,' is a literal comma in a path", () => {
    expect(parseQmpSpec('unix:/tmp/a,,b.sock,server=on')).toEqual({ transport: 'unix', path: '/tmp/a,b.sock' });
  });

  test('refusals name the problem', () => {
    const cases: [string, RegExp][] = [
      ['unix:/x,wait=on', /wait=on is not supported.*use wait=off/],
      ['unix:/x,server=on,wait', /wait=on is not supported/],
      ['unix:/x,server=off', /server=off.*not supported; use server=on/],
      ['unix:/x,reconnect=1', /invalid parameter 'reconnect' \(known: server, wait\)/],
      ['unix:/x,wait=maybe', /parameter 'wait' expects 'on' or 'off', not 'maybe'/],
      ['unix:,server=on', /socket path is empty/],
      [`unix:/${'d'.repeat(120)}`, /socket path too long \(\d+ bytes/],
      ['tcp:localhost', /expected tcp:HOST:PORT/],
      ['tcp:localhost:http', /port 'http' is not a number/],
      ['tcp:localhost:70000', /port '70000' is not a number in 0\.\.65535/],
      ['stdio', /unsupported QMP transport 'stdio'/],
      ['/tmp/bare.sock', /unsupported QMP transport/],
      ['unix:/x,,', /./],
      ['unix:/x,', /empty option/],
    ];
    for (const [spec, re] of cases) {
      let err: unknown;
      try { parseQmpSpec(spec); } catch (e) { err = e; }
      if (spec === 'unix:/x,,') { expect(err).toBeUndefined(); continue; } // path "/x,"
      expect(err).toBeInstanceOf(CommandError);
      expect({ spec, message: (err as Error).message }).toEqual({ spec, message: expect.stringMatching(re) });
      expect((err as Error).message.startsWith(`-qmp ${spec}:`)).toBe(true);
    }
  });

  test('formatQmpSpec gives back an address the client accepts', () => {
    for (const s of ['unix:/run/a.sock', 'tcp:127.0.0.1:5', 'tcp:[::1]:6']) {
      const spec = parseQmpSpec(s);
      expect(formatQmpSpec(spec)).toBe(s);
      const a = parseQmpClientAddress(formatQmpSpec(spec));
      expect(a.kind).toBe(spec.transport);
    }
  });
});

describe('parseQmpClientAddress', () => {
  test('unix:PATH, tcp:HOST:PORT, a bare path, and a whole -qmp spec', () => {
    expect(parseQmpClientAddress('unix:/a/b')).toEqual({ kind: 'unix', path: '/a/b' });
    expect(parseQmpClientAddress('/a/b')).toEqual({ kind: 'unix', path: '/a/b' });
    expect(parseQmpClientAddress('tcp:localhost:4444')).toEqual({ kind: 'tcp', host: 'localhost', port: 4444 });
    expect(parseQmpClientAddress('unix:/a/b,server=on,wait=off')).toEqual({ kind: 'unix', path: '/a/b' });
  });
  test('bad addresses throw with the reason', () => {
    expect(() => parseQmpClientAddress('tcp:localhost')).toThrow(/expected tcp:HOST:PORT/);
    expect(() => parseQmpClientAddress('tcp:h:0')).toThrow(/not a number in 1\.\.65535/);
    expect(() => parseQmpClientAddress('unix:')).toThrow(/empty socket path/);
    expect(() => parseQmpClientAddress('')).toThrow(/empty/);
    expect(() => parseQmpClientAddress('vsock:3')).toThrow(/unknown transport/);
  });
});
