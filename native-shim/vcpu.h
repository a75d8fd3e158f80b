/* The vCPU control block shared between a vCPU thread and TypeScript. The
 * memory comes from koffi.alloc (never a JS Buffer); TypeScript reads and
 * writes it at the fixed offsets below (src/native/vcpu-layout.ts mirrors them,
 * and pc_vcpu_layout() lets it check). One block per vCPU, 384 bytes (six
 * cache lines; the access stamps have lines 3-5 to themselves, the
 * thread's own sample of its kernel times the last). */
#ifndef POSTCOPY_VCPU_H
#define POSTCOPY_VCPU_H
#include <stdint.h>

enum pc_vcpu_cmd { PC_CMD_RUN = 0, PC_CMD_PAUSE = 1, PC_CMD_STOP = 2 };
enum pc_vcpu_state {
    PC_STATE_STARTING = 0, /* thread not yet running its loop */
    PC_STATE_RUNNING = 1,
    PC_STATE_PAUSED = 2,   /* acknowledged a pause: no access in flight, state fields stable */
    PC_STATE_STOPPED = 3,  /* thread has left its loop */
    PC_STATE_DONE = 4,     /* reached its sweeps/accesses limit; parked until stop */
};
#define PC_TOUCHES 8
/* hooks: bit 0 stamp every access (destination, postcopy, blocktime on);
 * bit 1 cpu throttle; bit 2 dirty log (count, and with ring_sleep_us limit);
 * bit 3 sample the thread's kernel times once, then clear the bit */
enum { PC_HOOK_STAMP = 1, PC_HOOK_THROTTLE = 2, PC_HOOK_DIRTY = 4, PC_HOOK_SAMPLE = 8 };
/* QEMU's throttle timeslice: run this long, then sleep pct/(100-pct) of it */
#define PC_THROTTLE_SLICE_NS 10000000ULL
/* the dirty "ring": pages dirtied between two dirty-limit sleeps */
#define PC_DIRTY_RING 64
enum pc_workload { PC_WL_SWEEP = 0, PC_WL_RANDOM = 1, PC_WL_HOTSET = 2, PC_WL_IDLE = 3 };

struct pc_vcpu {
    int32_t cmd;           /*   0 futex word, written by TS through pc_vcpu_command() */
    int32_t state;         /*   4 futex word, written by the thread */
    int32_t tid;           /*   8 kernel thread id (gettid) */
    int32_t kind;          /*  12 enum pc_workload */
    uint64_t base;         /*  16 guest RAM base address */
    uint64_t start;        /*  24 first page index of the range (relative to base) */
    uint64_t end;          /*  32 end page index (exclusive) */
    uint64_t position;     /*  40 sweep: page index touched next */
    uint64_t sweeps;       /*  48 completed sweeps */
    uint64_t accesses;     /*  56 completed accesses */
    uint64_t rng;          /*  64 xorshift64* state (random, hotset) */
    uint64_t max_sweeps;   /*  72 0 = unlimited */
    uint64_t max_accesses; /*  80 0 = unlimited */
    uint64_t hot_pages;    /*  88 hotset: pages [start, start+hot_pages) are hot */
    uint64_t hot_share;    /*  96 hotset: probability of a hot access, scaled to 2^32 */
    uint64_t thread;       /* 104 pthread_t */
    uint64_t page_size;    /* 112 */
    uint64_t hooks;        /* 120 what each access does besides the write (PC_HOOK_*); 0 = nothing */
    double stamp_base;     /* 128 CLOCK_MONOTONIC ns minus this = the blocktime clock */
    uint64_t touches;      /* 136 accesses stamped; the last is in touch[(touches - 1) % PC_TOUCHES] */
    /* 144: convergence tools (src/vm/vcpu-throttle.ts), honoured only with their hook bit set */
    uint32_t throttle_pct; /* 144 auto-converge: sleep this percentage of the time (QEMU's cpu throttle) */
    uint32_t ring_sleep_us;/* 148 dirty-limit: sleep this long each time PC_DIRTY_RING pages were dirtied */
    uint64_t dirty_log;    /* 152 address of one byte per guest page (0 = clean), shared by the vCPUs */
    uint64_t dirty_pages;  /* 160 pages this vCPU found clean in the dirty log and dirtied */
    uint64_t throttle_ns;  /* 168 time slept for the cpu throttle */
    uint64_t limit_ns;     /* 176 time slept for the dirty limit */
    uint64_t waiting;      /* 184 with stamps on: the waiting map's address (page-aligned; one uint64_t
                            * per guest page) | this vCPU's bit in it (index & 63); 0 = none (waiters.c) */
    /* 192: the last PC_TOUCHES accesses (stamp on), each written before the
     * access, so the fault it raises finds it even when the fault is read
     * after the vCPU was woken and went on. page = page index + 1, 0 = none
     * (not running its workload). */
    struct pc_touch { uint64_t page; double t; } touch[PC_TOUCHES];
    /* 320: the thread's kernel times as it read them itself (PC_HOOK_SAMPLE: vcpu_sample.c) */
    uint64_t sample_seq;   /* 320 bumped (release) once the fields below hold a new sample */
    double sample_t;       /* 328 its moment: CLOCK_MONOTONIC ns, the middle of the read */
    uint64_t sample_run;   /* 336 time on a CPU (the thread's CPU clock), ns */
    uint64_t sample_wait;  /* 344 run-queue wait (schedstat), ns */
    uint64_t spare[4];     /* 352 */
};

/* reads this thread's kernel times into sample_*, then clears PC_HOOK_SAMPLE */
void pc_vcpu_self_sample(struct pc_vcpu *v);

#endif
