// The monitors' entries for QEMU's dirty-rate and dirty-limit tools: HMP
// `calc_dirty_rate [-r] [-b] second [sample_pages_per_GB]`, `info
// dirty_rate`, `info vcpu_dirty_limit`; QMP `calc-dirty-rate`,
// `query-dirty-rate`, `query-vcpu-dirty-limit`. Texts are QEMU's
// (migration/dirtyrate.c, system/dirtylimit.c).
import { DIRTY_RATE_MODES, TIME_UNITS, type DirtyRateInfo, type DirtyRateMode, type TimeUnit } from '../migration/dirty-rate.js';
import type { VcpuDirtyLimit } from '../migration/dirty-limit.js';
import type { HmpCommand, QmpCommand, Registry } from './registry.js';
import { checkQapi } from './qmp-args.js';

/** `info dirty_rate` (hmp_info_dirty_rate; "Start Time" is in seconds, QEMU prints "(ms)") */
export function formatDirtyRate(info: DirtyRateInfo): string[] {
  const out = [`Status: ${info.status}`, `Start Time: ${info['start-time']} (ms)`];
  if (info.mode === 'page-sampling') out.push(`Sample Pages: ${info['sample-pages']} (per GB)`);
  out.push(`Period: ${info['calc-time']} (sec)`, `Mode: ${info.mode}`);
  if (info['dirty-rate'] === undefined) {
    out.push('Dirty rate: (not ready)');
    return out;
  }
  out.push(`Dirty rate: ${info['dirty-rate']} (MB/s)`);
  for (const v of info['vcpu-dirty-rate'] ?? []) out.push(`vcpu[${v.id}], Dirty rate: ${v['dirty-rate']} (MB/s)`);
  return out;
}

/** `info vcpu_dirty_limit` (hmp_info_vcpu_dirty_limit) */
export function formatVcpuDirtyLimits(limits: readonly VcpuDirtyLimit[] | undefined): string[] {
  if (!limits) return ['Dirty page limit not enabled!'];
  return limits.map((l) => `vcpu[${l['cpu-index']}], limit rate ${l['limit-rate']} (MB/s), current rate ${l['current-rate']} (MB/s)`);
}

const calcDirtyRate: HmpCommand = {
  name: 'calc_dirty_rate',
  argsType: 'dirty_ring:-r,dirty_bitmap:-b,second:l,sample_pages_per_GB:l?',
  params: '[-r] [-b] second [sample_pages_per_GB]',
  help: 'start a round of guest dirty rate measurement (page sampling by default; -r: the vCPUs\' own dirty log, per vCPU;'
    + ' -b: exact, with the userfaultfd dirty tracking, when no migration runs)',
  handler: async (ctx, args) => {
    const sec = args.int('second');
    if (sec === 0) return { text: 'Incorrect period length specified!' };
    const ring = args.flag('dirty_ring');
    const bitmap = args.flag('dirty_bitmap');
    if (ring && bitmap) return { text: 'Either dirty ring or dirty bitmap can be specified!' };
    const samples = args.optInt('sample_pages_per_GB');
    const mode: DirtyRateMode = bitmap ? 'dirty-bitmap' : ring ? 'dirty-ring' : 'page-sampling';
    ctx.machine.calcDirtyRate({ 'calc-time': sec, mode, ...(samples !== undefined ? { 'sample-pages': samples } : {}) });
    return { text: `Starting dirty rate measurement with period ${sec} seconds\n[Please use 'info dirty_rate' to check results]` };
  },
  complete: (i) => (i === 0 ? ['-r', '-b'] : []),
};

const infoDirtyRate: HmpCommand = {
  name: 'dirty_rate',
  argsType: '',
  params: '',
  help: 'show dirty rate information',
  handler: async (ctx) => {
    const info = ctx.machine.queryDirtyRate();
    return { text: formatDirtyRate(info).join('\n'), data: info };
  },
};

const infoVcpuDirtyLimit: HmpCommand = {
  name: 'vcpu_dirty_limit',
  argsType: '',
  params: '',
  help: 'show dirty page limit information of all vCPU',
  handler: async (ctx) => {
    const limits = ctx.machine.vcpuDirtyLimits();
    return { text: formatVcpuDirtyLimits(limits).join('\n'), data: limits };
  },
};

const qmpEntries: QmpCommand[] = [
  {
    name: 'calc-dirty-rate',
    args: [
      { name: 'calc-time', type: 'int' },
      { name: 'calc-time-unit', type: 'str', optional: true },
      { name: 'sample-pages', type: 'int', optional: true },
      { name: 'mode', type: 'str', optional: true },
    ],
    help: "start measuring the guest's dirty rate (MB/s) over calc-time; query-dirty-rate reads the result",
    handler: async (ctx, a) => {
      if (a['calc-time-unit'] !== undefined) checkQapi({ enum: TIME_UNITS }, a['calc-time-unit'], 'calc-time-unit');
      if (a.mode !== undefined) checkQapi({ enum: DIRTY_RATE_MODES }, a.mode, 'mode');
      ctx.machine.calcDirtyRate({
        'calc-time': a['calc-time'] as number,
        ...(a['calc-time-unit'] !== undefined ? { 'calc-time-unit': a['calc-time-unit'] as TimeUnit } : {}),
        ...(a['sample-pages'] !== undefined ? { 'sample-pages': a['sample-pages'] as number } : {}),
        ...(a.mode !== undefined ? { mode: a.mode as DirtyRateMode } : {}),
      });
      return {};
    },
  },
  {
    name: 'query-dirty-rate',
    args: [{ name: 'calc-time-unit', type: 'str', optional: true }],
    help: 'the result of the last calc-dirty-rate',
    handler: async (ctx, a) => {
      if (a['calc-time-unit'] !== undefined) checkQapi({ enum: TIME_UNITS }, a['calc-time-unit'], 'calc-time-unit');
      return ctx.machine.queryDirtyRate(a['calc-time-unit'] as TimeUnit | undefined);
    },
  },
  {
    name: 'query-vcpu-dirty-limit',
    args: [],
    help: "each vCPU's dirty limit and current dirty rate (MB/s) while dirty-limit limits them (else [])",
    handler: async (ctx) => ctx.machine.vcpuDirtyLimits() ?? [],
  },
];

/** Adds the entries to a registry. */
export function addDirtyRateCommands(r: Registry): Registry {
  r.addHmp(calcDirtyRate);
  r.addInfo(infoDirtyRate).addInfo(infoVcpuDirtyLimit);
  for (const q of qmpEntries) r.addQmp(q);
  return r;
}
