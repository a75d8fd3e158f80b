// `-daemonize` (QEMU's option): the VM goes on in the background, in a
// session of its own, and the command returns only once the VM is ready: its
// QMP sockets listen and an `-incoming` address accepts the stream. So a
// script's next line can connect at once, with no wait loop and no sleep.
// Until then the VM's error messages reach the caller's stderr, and a VM that
// cannot start makes the command fail with its exit status.

import { spawn } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';

/** names the pipe (a file descriptor) on which the daemon says it is ready */
const READY_FD_ENV = 'POSTCOPY_READY_FD';

/** The parent's half: starts the VM (`argv` without -daemonize) detached and
 *  resolves with 0 once it is ready, or with its status if it ended first. */
export function runDaemonized(argv: readonly string[], stderr: NodeJS.WritableStream = process.stderr): Promise<number> {
  const args = argv.filter((a) => a !== '-daemonize' && a !== '--daemonize');
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1], ...args], {
    detached: true, stdio: ['ignore', 'ignore', 'pipe', 'pipe'], env: { ...process.env, [READY_FD_ENV]: '3' },
  });
  const readyPipe = child.stdio[3] as Readable;
  child.stderr?.on('data', (d: Buffer) => stderr.write(d));
  return new Promise((resolve) => {
    let settled = false;
    const settle = (code: number): void => {
      if (settled) return;
      settled = true;
      child.stderr?.destroy();
      readyPipe.destroy();
      child.unref();
      resolve(code);
    };
    readyPipe.on('data', (d: Buffer) => { if (d.toString().includes('ready')) settle(0); });
    child.once('exit', (code, signal) => settle(code ?? (signal ? 128 : 1)));
    child.once('error', (e) => { stderr.write(`postcopy: -daemonize: ${e.message}\n`); settle(1); });
  });
}

/** The daemon's half: says it is ready, once (nothing when not daemonized). */
export function signalReady(env: NodeJS.ProcessEnv): void {
  const fd = Number(env[READY_FD_ENV]);
  if (!Number.isInteger(fd) || fd < 3) return;
  delete env[READY_FD_ENV];
  try {
    writeSync(fd, 'ready\n');
    closeSync(fd);
  } catch { /* the caller went away: nobody to tell */ }
}
