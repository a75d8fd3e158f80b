// Migration parameters (QMP names, QEMU's defaults and units) and their
// validation. The engine reads the values when it needs them, so a change made
// during a migration takes effect at once, as QEMU's do for bandwidth limits.

import { CommandError } from '../errors.js';
import type { MigrationParameters, ParameterName } from './api.js';

export const DEFAULT_PARAMETERS: Readonly<MigrationParameters> = {
  'throttle-trigger-threshold': 50,
  'cpu-throttle-initial': 20,
  'cpu-throttle-increment': 10,
  'cpu-throttle-tailslow': false,
  'max-cpu-throttle': 99,
  'max-bandwidth': 134217728,
  'downtime-limit': 300,
  'max-postcopy-bandwidth': 0,
  'x-blocktime-trace': '',
  'x-postcopy-readahead': 0,
  'x-postcopy-heartbeat-ms': 2000,
  'x-vcpu-dirty-limit-period': 1000,
  'vcpu-dirty-limit': 1,
  'x-migration-psk': '',
};

/** most pages a read-ahead request may ask for (a request is one PAGES run, 256 pages at most, with the faulted page) */
export const MAX_POSTCOPY_READAHEAD = 255;

/** x-postcopy-heartbeat-ms: heartbeats go every 100 ms (native-shim/channel.h), so a silence shorter than
 *  three of them would pause a healthy link; an hour at most */
export const MIN_HEARTBEAT_MS = 300;
const MAX_HEARTBEAT_MS = 3600000;

/** QEMU's MAX_MIGRATE_DOWNTIME (2000 s in ms). */
export const MAX_DOWNTIME_LIMIT_MS = 2000000;
const MAX_BANDWIDTH = Number.MAX_SAFE_INTEGER;

export const PARAMETER_UNITS: Record<ParameterName, string> = {
  'throttle-trigger-threshold': '',
  'cpu-throttle-initial': '',
  'cpu-throttle-increment': '',
  'cpu-throttle-tailslow': '',
  'max-cpu-throttle': '',
  'x-vcpu-dirty-limit-period': 'ms',
  'vcpu-dirty-limit': 'MB/s',
  'max-bandwidth': 'bytes/second',
  'downtime-limit': 'ms',
  'max-postcopy-bandwidth': 'bytes/second',
  'x-blocktime-trace': '',
  'x-postcopy-readahead': 'pages',
  'x-postcopy-heartbeat-ms': 'ms',
  'x-migration-psk': '',
};

export class Parameters {
  private values: MigrationParameters = { ...DEFAULT_PARAMETERS };

  get(): MigrationParameters {
    return { ...this.values };
  }

  value<K extends ParameterName>(name: K): MigrationParameters[K] {
    return this.values[name];
  }

  /** Validates every given value, then applies them all (or none). */
  set(changes: Partial<Record<string, unknown>>): void {
    const next = { ...this.values };
    for (const [name, v] of Object.entries(changes)) {
      switch (name) {
        case 'max-bandwidth':
        case 'max-postcopy-bandwidth':
          next[name] = checkInteger(name, v, 0, MAX_BANDWIDTH);
          break;
        case 'downtime-limit':
          next[name] = checkInteger(name, v, 0, MAX_DOWNTIME_LIMIT_MS);
          break;
        case 'x-postcopy-readahead':
          next[name] = checkInteger(name, v, 0, MAX_POSTCOPY_READAHEAD);
          break;
        case 'x-postcopy-heartbeat-ms':
          next[name] = checkInteger(name, v, 0, MAX_HEARTBEAT_MS);
          if (next[name] !== 0 && next[name] < MIN_HEARTBEAT_MS) throw new CommandError(`Parameter '${name}' expects ${RANGE_TEXT[name]}`);
          break;
        case 'throttle-trigger-threshold':
          next[name] = checkInteger(name, v, 1, 100);
          break;
        case 'cpu-throttle-initial':
        case 'cpu-throttle-increment':
          next[name] = checkInteger(name, v, 1, 99);
          break;
        case 'max-cpu-throttle':
          next[name] = checkInteger(name, v, 0, 99);
          break;
        case 'cpu-throttle-tailslow':
          if (typeof v !== 'boolean') throw new CommandError("Invalid parameter type for 'cpu-throttle-tailslow', expected: boolean");
          next[name] = v;
          break;
        case 'x-vcpu-dirty-limit-period':
          next[name] = checkInteger(name, v, 1, 1000);
          break;
        case 'vcpu-dirty-limit':
          next[name] = checkInteger(name, v, 1, MAX_BANDWIDTH);
          break;
        case 'x-blocktime-trace':
        case 'x-migration-psk':
          if (typeof v !== 'string') throw new CommandError(`Invalid parameter type for '${name}', expected: string`);
          if (v.includes('\0')) throw new CommandError(`Parameter '${name}' expects a file path`);
          next[name] = v;
          break;
        default:
          throw new CommandError(`Parameter '${name}' is unexpected`);
      }
    }
    // QEMU checks the result as a whole (migrate_params_check)
    if (next['max-cpu-throttle'] < next['cpu-throttle-initial']) {
      throw new CommandError("Parameter 'max-cpu-throttle' expects an integer in the range of cpu-throttle-initial to 99");
    }
    this.values = next;
  }
}

const RANGE_TEXT: Record<string, string> = {
  'throttle-trigger-threshold': 'an integer in the range of 1 to 100',
  'cpu-throttle-initial': 'an integer in the range of 1 to 99',
  'cpu-throttle-increment': 'an integer in the range of 1 to 99',
  'max-cpu-throttle': 'an integer in the range of cpu-throttle-initial to 99',
  'x-vcpu-dirty-limit-period': 'a value between 1 and 1000',
  'vcpu-dirty-limit': 'is invalid, it must greater then 1 MB/s',
  'downtime-limit': `an integer in the range of 0 to ${MAX_DOWNTIME_LIMIT_MS} milliseconds`,
  'x-postcopy-readahead': `an integer in the range of 0 to ${MAX_POSTCOPY_READAHEAD} (pages)`,
  'x-postcopy-heartbeat-ms': `0 (off) or an integer in the range of ${MIN_HEARTBEAT_MS} to ${MAX_HEARTBEAT_MS} (ms)`,
};

function checkInteger(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new CommandError(`Invalid parameter type for '${name}', expected: integer`);
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new CommandError(`Parameter '${name}' expects ${RANGE_TEXT[name] ?? 'a non-negative integer (bytes per second)'}`);
  }
  return v;
}
