// HMP entries for the VM itself: help, info (the sub-table's parent),
// info status, info cpus, info ramblock, stop, cont, quit. Handlers return text; the
// operations they use are the Machine's, so QMP's `stop`/`cont`/`quit`
// entries can call the same ones.

import type { CommandContext, HmpCommand, Registry } from './registry.js';
import { formatCpus, formatRamBlocks, formatStatus } from './format.js';

/** Text appended to the full `help` list on a source VM (the lab). */
const LAB_HELP = [
  '',
  "Lab: 'migrate' with no URI (or 'migrate local') starts a matching destination process",
  'on loopback with the same capabilities; after migrate_start_postcopy,',
  "'info postcopy_blocktime' shows the blocktime measured there.",
  "Ours (not QEMU's): migrate_wait, info postcopy_blocktime.",
].join('\n');

const help: HmpCommand = {
  name: 'help|?',
  argsType: 'name:S?',
  params: '[cmd]',
  help: "show the help",
  handler: async (ctx, args) => {
    const topic = args.optStr('name');
    let text = ctx.registry.helpText(topic);
    const info = ctx.machine.info();
    if (topic === undefined && info.role === 'source' && info.qemu === undefined) text += `${LAB_HELP}\n`;
    return { text };
  },
  complete: () => [], // the registry completes command names for help itself
};

const info: HmpCommand = {
  name: 'info',
  argsType: 'item:s?',
  params: '[subcommand]',
  help: 'show various information about the system state',
  // reached only without a subcommand (the registry dispatches the others)
  handler: async (ctx) => ({ text: ctx.registry.helpText('info') }),
};

const infoStatus: HmpCommand = {
  name: 'status',
  argsType: '',
  params: '',
  help: 'show the current VM status (running|paused)',
  handler: async (ctx) => {
    const state = ctx.machine.runState();
    return { text: formatStatus(state), data: { status: state, running: state === 'running' } };
  },
};

const infoCpus: HmpCommand = {
  name: 'cpus',
  argsType: '',
  params: '',
  help: 'show infos for each CPU',
  handler: async (ctx) => {
    const cpus = ctx.machine.cpus();
    return { text: formatCpus(cpus).join('\n'), data: cpus };
  },
};

const infoRamblock: HmpCommand = {
  name: 'ramblock',
  argsType: '',
  params: '',
  help: 'Display system RAMBlock information',
  handler: async (ctx) => {
    const blocks = ctx.machine.info().ramBlocks ?? [];
    return { text: formatRamBlocks(blocks), data: blocks };
  },
};

const stop: HmpCommand = {
  name: 'stop|s',
  argsType: '',
  params: '',
  help: 'stop emulation',
  handler: async (ctx) => { await ctx.machine.stop(); return { text: '' }; },
};

const cont: HmpCommand = {
  name: 'cont|c',
  argsType: '',
  params: '',
  help: 'resume emulation',
  handler: async (ctx) => { await ctx.machine.cont(); return { text: '' }; },
};

const quit: HmpCommand = {
  name: 'quit|q',
  argsType: '',
  params: '',
  help: 'quit the emulator',
  handler: async (ctx: CommandContext) => { ctx.requestQuit(); return { text: '' }; },
};

/** Adds the VM entries to a registry. */
export function addVmCommands(r: Registry): Registry {
  r.addHmp(help).addHmp(info).addHmp(stop).addHmp(cont).addHmp(quit);
  r.addInfo(infoStatus).addInfo(infoCpus).addInfo(infoRamblock);
  return r;
}
