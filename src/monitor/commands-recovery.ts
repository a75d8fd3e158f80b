// HMP entries for postcopy recovery (QEMU's migrate_pause, migrate_recover,
// and migrate -r): the commands an operator who lost the link in postcopy
// knows, with QEMU's texts (REFERENCE.md §8). `migrate -r` waits, like
// migrate, until the recovery ended: postcopy-active again, or paused again
// (then it says why).

import { CommandError } from '../errors.js';
import type { CommandContext, HmpCommand, Registry } from './registry.js';
import { waitForMigration } from './commands-migration.js';

/** migrate -r URI: the source resumes its paused migration over URI. */
export async function resumeMigration(ctx: CommandContext, uri: string, detach: boolean): Promise<{ text: string }> {
  const m = ctx.machine;
  await m.migrate(uri, true);
  if (detach || !ctx.canWait) return { text: '' };
  const outcome = await waitForMigration(m, (s) => s === 'postcopy-active' || s === 'postcopy-paused' || s === 'failed' || s === 'completed', {
    signal: ctx.signal,
  });
  if (outcome === 'interrupted') return { text: "the recovery continues in the background ('info migrate' shows it)" };
  const info = m.queryMigrate();
  if (info.status === 'postcopy-paused' || info.status === 'failed') {
    throw new CommandError(`recovery failed: ${info['error-desc'] ?? info.status} (the migration is ${info.status})`);
  }
  return { text: '' };
}

const migratePause: HmpCommand = {
  name: 'migrate_pause',
  argsType: '',
  params: '',
  help: 'pause an ongoing postcopy migration (postcopy-active or postcopy-recover): both sides drop the channels;'
    + " the destination's vCPUs stay blocked on the pages still missing until 'migrate_recover' and 'migrate -r'",
  handler: async (ctx) => { await ctx.machine.migratePause(); return { text: '' }; },
};

const migrateRecover: HmpCommand = {
  name: 'migrate_recover',
  argsType: 'uri:s',
  params: 'uri',
  help: "on a postcopy-paused destination: listen on URI for the source's recovery ('migrate -r URI' on the source)",
  handler: async (ctx, args) => { await ctx.machine.migrateRecover(args.str('uri')); return { text: '' }; },
  complete: (i) => (i === 0 ? ['tcp:', 'unix:'] : []),
};

/** Adds the recovery entries to a registry. */
export function addRecoveryCommands(r: Registry): Registry {
  return r.addHmp(migratePause).addHmp(migrateRecover);
}
