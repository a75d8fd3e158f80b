// Builds the process's one command registry with every HMP entry. The QMP
// server adds its own entries to the same registry when it starts.

import { Registry } from './registry.js';
import { addVmCommands } from './commands-vm.js';
import { addMigrationCommands } from './commands-migration.js';
import { addDirtyRateCommands } from './commands-dirty-rate.js';
import { addRecoveryCommands } from './commands-recovery.js';

export function createRegistry(): Registry {
  const r = new Registry();
  addVmCommands(r);
  addMigrationCommands(r);
  addRecoveryCommands(r);
  addDirtyRateCommands(r);
  return r;
}
