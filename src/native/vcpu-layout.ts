// Byte offsets of native-shim's struct pc_vcpu (native-shim/vcpu.h), the
// control block a vCPU thread shares with TypeScript, and its enum values.
// shim.ts checks the size and one offset against the library at load time.

export const VCPU_BLOCK_SIZE = 320;
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
export const VCPU_OFF_STAMP = 120;       // u64: 1 = stamp every access
export const VCPU_OFF_STAMP_BASE = 128;  // double: CLOCK_MONOTONIC ns - this = the blocktime clock
export const VCPU_OFF_TOUCHES = 136;     // u64: accesses stamped
export const VCPU_OFF_TOUCH = 192;       // VCPU_TOUCHES x {u64 page + 1 (0 = none), double t (blocktime clock)}
export const VCPU_TOUCHES = 8;

export const CMD_RUN = 0, CMD_PAUSE = 1, CMD_STOP = 2;
export const STATE_STARTING = 0, STATE_RUNNING = 1, STATE_PAUSED = 2, STATE_STOPPED = 3, STATE_DONE = 4;
export const WL_SWEEP = 0, WL_RANDOM = 1, WL_HOTSET = 2, WL_IDLE = 3;
