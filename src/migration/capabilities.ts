// Migration capabilities with QEMU's names, order and rules: which ones this
// engine implements, which pairs conflict, and that none changes while a
// migration runs. Pure state; the Machine asks it and reports its errors.

import { CommandError } from '../errors.js';
import {
  ALL_CAPABILITIES, IMPLEMENTED_CAPABILITIES, type CapabilityName, type CapabilityState,
} from './api.js';

const implemented: ReadonlySet<string> = new Set(IMPLEMENTED_CAPABILITIES);
const known: ReadonlySet<string> = new Set(ALL_CAPABILITIES);

export class Capabilities {
  private readonly on = new Set<CapabilityName>();

  list(): CapabilityState[] {
    return IMPLEMENTED_CAPABILITIES.map((capability) => ({ capability, state: this.on.has(capability) }));
  }

  has(name: CapabilityName): boolean {
    return this.on.has(name);
  }

  /** Applies all changes or none. `migrationActive`: a migration is running. */
  set(changes: readonly CapabilityState[], migrationActive: boolean): void {
    if (migrationActive) throw new CommandError("There's a migration process in progress");
    if (!Array.isArray(changes)) throw new CommandError('Invalid parameter type for \'capabilities\', expected: array');
    const next = new Set(this.on);
    for (const c of changes) {
      const name = (c as { capability?: unknown })?.capability;
      const state = (c as { state?: unknown })?.state;
      if (typeof name !== 'string') throw new CommandError("Parameter 'capability' is missing");
      if (typeof state !== 'boolean') throw new CommandError("Invalid parameter type for 'state', expected: boolean");
      if (!known.has(name)) throw new CommandError(`Parameter 'capability' does not accept value '${name}'`);
      if (!implemented.has(name)) {
        if (!state) continue; // turning off what is off is fine
        throw new CommandError(`Capability '${name}' is not supported by this migration engine (supported: ${IMPLEMENTED_CAPABILITIES.join(', ')})`);
      }
      if (state) next.add(name as CapabilityName); else next.delete(name as CapabilityName);
    }
    // QEMU's cross-capability rules (migrate_caps_check)
    if (next.has('postcopy-blocktime') && next.has('background-snapshot')) {
      throw new CommandError('Postcopy is not compatible with background snapshot');
    }
    if (next.has('dirty-limit') && next.has('auto-converge')) {
      // QEMU's words, typo included (scripts match them)
      throw new CommandError('dirty-limit conflicts with auto-converge either of then available currently');
    }
    if (next.has('postcopy-preempt') && !next.has('postcopy-ram')) {
      throw new CommandError('Postcopy preempt requires postcopy-ram');
    }
    this.on.clear();
    for (const n of next) this.on.add(n);
  }
}
