// QEMU destination trace logs written the way QEMU's `log` backend writes
// them (`TID@SECONDS.MICROS:name body`, REFERENCE.md §7), from the format
// strings of migration/trace-events, in QEMU 7.2's event set or 10.1's; and
// one scenario whose exact and QEMU figures are known by hand.

export type EventSet = '7.2' | '10.1';

/** one event of the scenario: at µs after BASE_S, by thread `tid` */
export type LogEvent =
  | { us: number; fault: number; tid: number; vcpu: number }
  | { us: number; placed: number; zero?: boolean }
  | { us: number; start: true }
  | { us: number; cleanup: true };

export const BASE_S = 1796110088;
export const FAULT_THREAD = 14789;
export const VCPU_TIDS = [14782, 14783];
export const IO_THREAD = 14790;
const DD = '0x558aac95f530';

const stamp = (tid: number, us: number): string => {
  const total = BASE_S * 1e6 + us;
  return `${tid}@${Math.floor(total / 1e6)}.${String(total % 1e6).padStart(6, '0')}:`;
};
const hex = (n: number): string => n.toString(16);

/** The log lines of `events`, in the given order (not sorted: QEMU's threads
 *  interleave), in `set`'s events. `timestamps: false` as without -msg timestamp=on. */
export function qemuLog(events: readonly LogEvent[], set: EventSet, timestamps = true): string[] {
  const lines: string[] = [];
  const put = (tid: number, us: number, s: string): void => { lines.push(`${timestamps ? stamp(tid, us) : ''}${s}`); };
  let totalMs = 0;
  for (const e of events) {
    if ('start' in e) {
      if (set === '10.1') VCPU_TIDS.forEach((tid, cpu) => put(FAULT_THREAD - 1, e.us, `postcopy_blocktime_tid_cpu_map cpu: ${cpu}, tid: ${tid}`));
      put(FAULT_THREAD - 1, e.us, 'postcopy_ram_enable_notify ');
    } else if ('cleanup' in e) {
      put(FAULT_THREAD - 1, e.us, 'postcopy_ram_incoming_cleanup_entry ');
      put(FAULT_THREAD - 1, e.us, `postcopy_ram_incoming_cleanup_blocktime total blocktime ${set === '7.2' ? totalMs : totalMs * 1e6}`);
    } else if ('fault' in e) {
      put(FAULT_THREAD, e.us, `postcopy_ram_fault_thread_request Request for HVA=0x${hex(e.fault)} rb=pc.ram offset=0x${hex(e.fault - 0x7f7770000000)} pid=${e.tid}`);
      if (set === '7.2' && e.vcpu >= 0) put(FAULT_THREAD, e.us, `mark_postcopy_blocktime_begin addr: 0x${hex(e.fault)}, dd: ${DD}, time: ${Math.floor(e.us / 1000)}, cpu: ${e.vcpu}, already_received: 0`);
      if (set === '10.1') put(FAULT_THREAD, e.us, `postcopy_blocktime_begin addr: 0x${hex(e.fault)}, time: ${(BASE_S * 1e6 + e.us) * 1000}, cpu: ${e.vcpu}, exist: 0`);
    } else {
      put(FAULT_THREAD, e.us, `postcopy_place_page${e.zero ? '_zero' : ''} host=0x${hex(e.placed)}`);
      if (set === '7.2') put(FAULT_THREAD, e.us, `mark_postcopy_blocktime_end addr: 0x${hex(e.placed)}, dd: ${DD}, time: ${totalMs}, affected_cpu: 0`);
      if (set === '10.1') put(FAULT_THREAD, e.us, `postcopy_blocktime_end addr: 0x${hex(e.placed)}, time: ${(BASE_S * 1e6 + e.us) * 1000}, affected_cpus: 0, affected_non_cpus: 0`);
    }
  }
  return lines;
}

const A = 0x7f77785e7000;
const page = (i: number): number => A + i * 4096;

/**
 * Two vCPUs and an I/O thread. vCPU 0: page 0 for 3 ms, then page 2 from
 * 10 ms and page 3 from 11 ms, placed at 20 ms; page 2's placement is logged
 * at 12 ms, after vCPU 0's fault on page 3 (QEMU logs it after the ioctl that
 * woke the vCPU), so the import dates it at 11 ms. vCPU 1: page 1 for 4 ms
 * (both down from 1 to 3 ms: total 2 ms). The I/O thread: page 4 for 1 ms. A
 * late fault on page 0 (placed already) counts nothing. The placement of
 * page 1 is logged before page 0's, as threads interleave.
 *   exact:     vCPU 0 = 3 + 1 + 9 = 13 ms, vCPU 1 = 4 ms, total 2 ms, 5 faults (1 non-vCPU)
 *   QEMU 7.2 on the imported events: the same (no fault is overwritten any more)
 */
export const SCENARIO: LogEvent[] = [
  { us: 100_000, start: true },
  { us: 1_000_000, fault: page(0), tid: VCPU_TIDS[0], vcpu: 0 },
  { us: 1_001_000, fault: page(1), tid: VCPU_TIDS[1], vcpu: 1 },
  { us: 1_005_000, placed: page(1) },
  { us: 1_003_000, placed: page(0) },
  { us: 1_010_000, fault: page(2), tid: VCPU_TIDS[0], vcpu: 0 },
  { us: 1_011_000, fault: page(3), tid: VCPU_TIDS[0], vcpu: 0 },
  { us: 1_012_000, placed: page(2) },
  { us: 1_020_000, placed: page(3), zero: true },
  { us: 1_030_000, fault: page(4), tid: IO_THREAD, vcpu: -1 },
  { us: 1_031_000, placed: page(4) },
  { us: 1_040_000, fault: page(0), tid: VCPU_TIDS[1], vcpu: 1 },
  { us: 1_100_000, cleanup: true },
];
