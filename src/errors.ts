// Errors a user sees through a monitor. QMP reports `errorClass` as the error
// "class"; HMP prints "Error: <message>". Every module throws this (or a
// subclass) for failures caused by the user's input or the migration's state,
// so the monitors can tell them from bugs.

export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound';

export class CommandError extends Error {
  constructor(message: string, readonly errorClass: QmpErrorClass = 'GenericError') {
    super(message);
    this.name = 'CommandError';
  }
}
