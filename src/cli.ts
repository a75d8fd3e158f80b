#!/usr/bin/env node
// The `postcopy` command: picks the subcommand from argv and hands the rest to
// the module that owns it. Nothing else lives here.
//   postcopy [QEMU-style options]          one VM with its monitors (the default)
//   postcopy run [options]                 batch: a source and a destination on loopback
//   postcopy blocktime-replay FILE [--json | --qemu | --compare [--json]]
//                                          report of a recorded blocktime trace
//   postcopy blocktime-replay --html OUT.html FILE [FILE_B]
//                                          its pictures, one HTML page (src/report/)
//   postcopy blocktime-import LOG [--vcpus TID,...] [-o OUT]
//                                          a QEMU destination's trace log as our trace
//   postcopy attach SOURCE_QMP [--destination DEST_QMP] [--destination-trace LOG]
//                                          the HMP console on a real QEMU (src/qemu/)

type Main = (argv: string[]) => Promise<number>;

const subcommands: Record<string, () => Promise<{ main: Main }>> = {
  'run': () => import('./migration/batch.js'),
  'blocktime-replay': () => import('./blocktime-trace/replay-command.js'),
  'blocktime-import': () => import('./qemu/import-command.js'),
  'attach': () => import('./qemu/attach-command.js'),
};

async function dispatch(argv: string[]): Promise<number> {
  const load = argv.length > 0 ? subcommands[argv[0]] : undefined;
  if (load) return (await load()).main(argv.slice(1));
  return (await import('./vm-main.js')).main(argv);
}

dispatch(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`postcopy: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
