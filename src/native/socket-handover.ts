// Handing a connected socket from Node to a native thread: a dup of its fd,
// and (for a thread that owns the connection) the Node socket destroyed
// without touching the connection. Its own module because every page-path
// thread takes its socket this way, at the start and again at a recovery.
import type net from 'node:net';
import * as libc from './libc.js';

/**
 * Takes a connected socket away from Node: returns a dup of its fd (still
 * non-blocking) and destroys the Node socket without touching the connection
 * (close(2) of one of two fds); its data/close/end/error listeners go with
 * it. The socket must have no write pending and nothing unread in Node.
 */
export function handOverSocket(s: net.Socket): number {
  if (s.writableLength > 0) throw new Error(`the socket still has ${s.writableLength} bytes to write`);
  const dup = dupSocket(s);
  s.removeAllListeners('data');
  s.removeAllListeners('close');
  s.removeAllListeners('end');
  s.removeAllListeners('error');
  s.on('error', () => { /* the connection is the thread's now */ });
  s.destroy();
  return dup;
}

/** A dup of a connected socket's fd (CLOEXEC, still non-blocking). */
export function dupSocket(s: net.Socket): number {
  const handle = (s as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd ?? -1;
  if (fd < 0) throw new Error('the socket has no file descriptor (closed, or not a TCP/unix socket)');
  const dup = libc.fcntl(fd, libc.F_DUPFD_CLOEXEC, 0);
  if (dup < 0) throw new Error(`dup of socket fd ${fd}: ${libc.strerror(libc.errno())}`);
  return dup;
}
