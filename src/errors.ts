// Errors a user sees through a monitor. QMP reports `errorClass` as the error
// "class"; HMP prints "Error: <message>". Every module throws this (or a
// subclass) for failures caused by the user's input or the migration's state,
// so the monitors can tell them from bugs.

import { getSystemErrorMap } from 'node:util';

export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound';

export class CommandError extends Error {
  constructor(message: string, readonly errorClass: QmpErrorClass = 'GenericError') {
    super(message);
    this.name = 'CommandError';
  }
}

/** A system call's failure as C's strerror says it ("Connection refused",
 *  "No such file or directory"), QEMU's wording; other errors by message. */
export function systemErrorText(e: NodeJS.ErrnoException): string {
  const text = typeof e.errno === 'number' ? getSystemErrorMap().get(e.errno)?.[1] : undefined;
  return text ? text[0].toUpperCase() + text.slice(1) : e.message;
}
