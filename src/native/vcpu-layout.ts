// Byte offsets of native-shim's struct pc_vcpu (native-shim/vcpu.h), the
// control block a vCPU thread shares with TypeScript, and its enum values.
// shim.ts checks the size and one offset against the library at load time.

export const VCPU_BLOCK_SIZE = 384;
export const VCPU_OFF_CMD = 0;        // i32
export const VCPU_OFF_STATE = 4;      // i32
export const VCPU_OFF_TID = 8;        // i32
export const VCPU_OFF_KIND = 12;      // i32
export const VCPU_OFF_BASE = 16;      // u64
export const VCPU_OFF_START = 24;     // u64 page index
export const VCPU_OFF_END = 32;       // u64 page index
export const VCPU_OFF_POSITION = 40;  // u64 page index
export const VCPU_OFF_SWEEPS = 48;    // u64
export const VCPU_OFF_ACCESSES = 56;  // u64
export const VCPU_OFF_RNG = 64;       // u64
export const VCPU_OFF_MAX_SWEEPS = 72;   // u64
export const VCPU_OFF_MAX_ACCESSES = 80; // u64
export const VCPU_OFF_HOT_PAGES = 88;    // u64
export const VCPU_OFF_HOT_SHARE = 96;    // u64 (probability * 2^32)
export const VCPU_OFF_THREAD = 104;      // pthread_t
export const VCPU_OFF_PAGE_SIZE = 112;   // u64
export const VCPU_OFF_HOOKS = 120;       // u64: HOOK_* bits (0 = the access does nothing else)
export const VCPU_OFF_STAMP_BASE = 128;  // double: CLOCK_MONOTONIC ns - this = the blocktime clock
export const VCPU_OFF_TOUCHES = 136;     // u64: accesses stamped
export const VCPU_OFF_THROTTLE_PCT = 144;  // u32: cpu throttle percentage (auto-converge)
export const VCPU_OFF_RING_SLEEP_US = 148; // u32: dirty-limit sleep per DIRTY_RING dirtied pages
export const VCPU_OFF_DIRTY_LOG = 152;     // u64: address of the dirty log (a byte per guest page), 0 = none
export const VCPU_OFF_DIRTY_PAGES = 160;   // u64: clean pages of the log this vCPU dirtied
export const VCPU_OFF_THROTTLE_NS = 168;   // u64: time slept for the cpu throttle
export const VCPU_OFF_LIMIT_NS = 176;      // u64: time slept for the dirty limit
export const VCPU_OFF_WAITING = 184;       // u64: the waiting map's page-aligned address | bit (index & 63), 0 = none
export const VCPU_OFF_TOUCH = 192;       // VCPU_TOUCHES x {u64 page + 1 (0 = none), double t (blocktime clock)}
export const VCPU_TOUCHES = 8;
export const VCPU_OFF_SAMPLE_SEQ = 320;  // u64: samples the thread took of its own kernel times (HOOK_SAMPLE)
export const VCPU_OFF_SAMPLE_T = 328;    // double: the last one's moment, CLOCK_MONOTONIC ns
export const VCPU_OFF_SAMPLE_RUN = 336;  // u64: its time on a CPU, ns
export const VCPU_OFF_SAMPLE_WAIT = 344; // u64: its run-queue wait (schedstat), ns

export const HOOK_STAMP = 1, HOOK_THROTTLE = 2, HOOK_DIRTY = 4, HOOK_SAMPLE = 8;
/** pages a vCPU dirties between two dirty-limit sleeps (native-shim's PC_DIRTY_RING) */
export const DIRTY_RING = 64;

export const CMD_RUN = 0, CMD_PAUSE = 1, CMD_STOP = 2;
export const STATE_STARTING = 0, STATE_RUNNING = 1, STATE_PAUSED = 2, STATE_STOPPED = 3, STATE_DONE = 4;
export const WL_SWEEP = 0, WL_RANDOM = 1, WL_HOTSET = 2, WL_IDLE = 3;
