/* vCPU threads: real pthreads that report their kernel thread id and run a
 * guest workload over guest RAM at native speed (sweep / random / hotset /
 * idle) until told to pause or stop. Pause is a real wait on a futex; the
 * thread acknowledges it by publishing PC_STATE_PAUSED after its last access
 * completed and its workload state was written back, so the state can be
 * snapshotted on the source and restored on the destination.
 *
 * Each access first looks at one word, `hooks`: 0 (the usual case) costs that
 * load and nothing else. Its bits add the access stamps (destination,
 * blocktime), QEMU's cpu throttle (auto-converge: after each 10 ms of running,
 * sleep pct/(100-pct) of that) and a dirty log (a byte per guest page: the
 * first write to a clean page counts for this vCPU; with ring_sleep_us set,
 * every PC_DIRTY_RING such pages cost a sleep: dirty-limit), and a sample of
 * the thread's kernel times taken by itself (vcpu_sample.c). Sleeps wait on
 * the command word, so a pause or stop ends them at once. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "vcpu.h"

_Static_assert(sizeof(struct pc_vcpu) == 384, "pc_vcpu is 384 bytes");
_Static_assert(offsetof(struct pc_vcpu, sample_seq) == 320, "sample_seq at 320");
_Static_assert(offsetof(struct pc_vcpu, touch) == 192, "touch at 192");
_Static_assert(offsetof(struct pc_vcpu, position) == 40, "position at 40");
_Static_assert(offsetof(struct pc_vcpu, thread) == 104, "thread at 104");
_Static_assert(sizeof(pthread_t) <= 8, "pthread_t fits 8 bytes");
_Static_assert(offsetof(struct pc_vcpu, throttle_pct) == 144, "throttle_pct at 144");
_Static_assert(offsetof(struct pc_vcpu, limit_ns) == 176, "limit_ns at 176");

static int ld32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void st32(int32_t *p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static void st64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

static void futex_wait(int32_t *addr, int32_t expected)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(int32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static void publish_state(struct pc_vcpu *v, int32_t s)
{
    st32(&v->state, s);
    futex_wake(&v->state);
}

static inline uint64_t xorshift64s(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* uniform in [0, n) without division */
static inline uint64_t below(uint64_t r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

static inline void touch(uint64_t base, uint64_t page, uint64_t page_size)
{
    volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)(base + page * page_size);
    *p = (uint8_t)(*p + 1);
}

/* With stamping on (the destination during postcopy), the access about to
 * be made and when: the fault thread takes this time for the fault the
 * access raises, the nearest there is to when the thread went to sleep. */
static inline void stamp(struct pc_vcpu *v, uint64_t page)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - v->stamp_base;
    uint64_t n = v->touches;
    struct pc_touch *e = &v->touch[n % PC_TOUCHES];
    __atomic_store_n(&e->page, 0, __ATOMIC_RELAXED); /* a reader never pairs this page with the old time */
    __atomic_store(&e->t, &t, __ATOMIC_RELEASE);
    __atomic_store_n(&e->page, page + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&v->touches, n + 1, __ATOMIC_RELEASE);
    /* then this vCPU's bit in the page's word of the waiting map, for a
     * placement that wakes it before its fault is read (waiters.c) */
    uint64_t w = __atomic_load_n(&v->waiting, __ATOMIC_RELAXED);
    if (w) {
        uint64_t *word = (uint64_t *)(uintptr_t)(w & ~(uint64_t)4095) + page, bit = 1ULL << (w & 63);
        if (!(__atomic_load_n(word, __ATOMIC_ACQUIRE) & bit))
            __atomic_fetch_or(word, bit, __ATOMIC_SEQ_CST);
    }
}

/* What a vCPU thread keeps between accesses for its hooks. */
struct hook_state {
    uint64_t slice_start; /* when the current throttle timeslice began */
    uint32_t until_clock; /* accesses before the throttle reads the clock again */
    uint32_t ring_fill;   /* pages dirtied since the last dirty-limit sleep */
    uint64_t overslept;   /* throttle sleep beyond what was asked, taken off the next one */
    uint64_t last_read;   /* when the throttle last read the clock */
    uint32_t every;       /* accesses between two clock reads, kept to ~50-200 us of running */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void add64(uint64_t *p, uint64_t d) { st64(p, __atomic_load_n(p, __ATOMIC_RELAXED) + d); }

/* Sleeps `ns` unless told to pause or stop meanwhile; returns the time slept. */
static uint64_t nap(struct pc_vcpu *v, uint64_t ns)
{
    uint64_t t0 = now_ns(), end = t0 + ns, t = t0;
    while (t < end && ld32(&v->cmd) == PC_CMD_RUN) {
        uint64_t left = end - t;
        struct timespec rel = { (time_t)(left / 1000000000ULL), (long)(left % 1000000000ULL) };
        syscall(SYS_futex, &v->cmd, FUTEX_WAIT_PRIVATE, PC_CMD_RUN, &rel, NULL, 0);
        t = now_ns();
    }
    return t - t0;
}

/* QEMU's cpu throttle: after each timeslice of running, sleep pct/(100-pct)
 * of a timeslice. The clock is read every `every` accesses, a number kept so
 * that reads come 50-200 us apart (a read costs up to microseconds under
 * nested virtualisation; an access from nanoseconds to a page fault's
 * microseconds). A sleep that ran
 * over (a wake-up is late by a millisecond or more on a busy host, which
 * would make a 1 % throttle take 10-20 %) is taken off the next one, so the
 * time slept matches the percentage on average. */
static void throttle(struct pc_vcpu *v, struct hook_state *h)
{
    if (h->until_clock-- > 0)
        return;
    uint64_t t = now_ns();
    if (t - h->last_read < 50000 && h->every < (1u << 20))
        h->every *= 2;
    else if (t - h->last_read > 200000 && h->every > 1)
        h->every /= 2;
    h->last_read = t;
    h->until_clock = h->every - 1;
    uint32_t pct = __atomic_load_n(&v->throttle_pct, __ATOMIC_RELAXED);
    if (pct == 0 || pct > 99 || t - h->slice_start < PC_THROTTLE_SLICE_NS) {
        if (pct == 0 || pct > 99)
            h->slice_start = t;
        return;
    }
    uint64_t want = PC_THROTTLE_SLICE_NS * pct / (100 - pct);
    if (h->overslept >= want) {
        h->overslept -= want;
    } else {
        want -= h->overslept;
        uint64_t slept = nap(v, want);
        add64(&v->throttle_ns, slept);
        h->overslept = slept > want ? slept - want : 0; /* a pause cut it short: no debt */
    }
    h->slice_start = h->last_read = now_ns();
}

/* The dirty log: the first write to a clean page counts for this vCPU, and
 * with a dirty limit every PC_DIRTY_RING of them cost ring_sleep_us (the
 * check of the page's byte is inline in hooks(); this is the rest). */
static void dirtied(struct pc_vcpu *v, struct hook_state *h, uint8_t *log, uint64_t page)
{
    __atomic_store_n(&log[page], 1, __ATOMIC_RELAXED);
    st64(&v->dirty_pages, v->dirty_pages + 1);
    if (++h->ring_fill < PC_DIRTY_RING)
        return;
    h->ring_fill = 0;
    uint32_t us = __atomic_load_n(&v->ring_sleep_us, __ATOMIC_RELAXED);
    if (us)
        add64(&v->limit_ns, nap(v, (uint64_t)us * 1000ULL));
}

/* Before each access: nothing but this load while no hook is on. */
static inline void hooks(struct pc_vcpu *v, struct hook_state *h, uint64_t page)
{
    uint64_t k = __atomic_load_n(&v->hooks, __ATOMIC_RELAXED);
    if (!k)
        return;
    if (k & PC_HOOK_THROTTLE)
        throttle(v, h);
    if (k & PC_HOOK_DIRTY) {
        uint8_t *log = (uint8_t *)(uintptr_t)__atomic_load_n(&v->dirty_log, __ATOMIC_ACQUIRE);
        if (log && !__atomic_load_n(&log[page], __ATOMIC_RELAXED))
            dirtied(v, h, log, page);
    }
    if (k & PC_HOOK_SAMPLE)
        pc_vcpu_self_sample(v);
    if (k & PC_HOOK_STAMP)
        stamp(v, page);
}

/* Not running the workload any more: no access in flight. */
static void unstamp(struct pc_vcpu *v)
{
    for (int i = 0; i < PC_TOUCHES; i++)
        __atomic_store_n(&v->touch[i].page, 0, __ATOMIC_RELEASE);
}

/* Waits while cmd says PAUSE; returns the command that ended the wait. */
static int wait_paused(struct pc_vcpu *v)
{
    int c;
    unstamp(v);
    publish_state(v, PC_STATE_PAUSED);
    while ((c = ld32(&v->cmd)) == PC_CMD_PAUSE)
        futex_wait(&v->cmd, PC_CMD_PAUSE);
    return c;
}

/* Parked after reaching a limit: waits until STOP (PAUSE/RUN leave it DONE). */
static void wait_done(struct pc_vcpu *v)
{
    int c;
    unstamp(v);
    publish_state(v, PC_STATE_DONE);
    while ((c = ld32(&v->cmd)) != PC_CMD_STOP)
        futex_wait(&v->cmd, c);
}

static int limit_reached(const struct pc_vcpu *v)
{
    return (v->max_sweeps && v->sweeps >= v->max_sweeps) || (v->max_accesses && v->accesses >= v->max_accesses);
}

static void *vcpu_main(void *arg)
{
    struct pc_vcpu *v = arg;
    v->tid = (int32_t)syscall(SYS_gettid);
    struct hook_state h = { now_ns(), 0, 0, 0, 0, 256 };
    for (;;) {
        int c = ld32(&v->cmd);
        if (c == PC_CMD_STOP)
            break;
        if (c == PC_CMD_PAUSE) {
            if (wait_paused(v) == PC_CMD_STOP)
                break;
            continue; /* state fields may have been set while paused: reload below */
        }
        if (limit_reached(v)) {
            wait_done(v);
            break;
        }
        publish_state(v, PC_STATE_RUNNING);
        const uint64_t base = v->base, start = v->start, end = v->end, ps = v->page_size;
        const uint64_t max_sweeps = v->max_sweeps, max_accesses = v->max_accesses;
        uint64_t pos = v->position, sweeps = v->sweeps, accesses = v->accesses, rng = v->rng;
        const uint64_t n = end - start, hot = v->hot_pages, share = v->hot_share;
        switch (v->kind) {
        case PC_WL_IDLE:
            unstamp(v);
            while ((c = ld32(&v->cmd)) == PC_CMD_RUN)
                futex_wait(&v->cmd, PC_CMD_RUN);
            break;
        case PC_WL_SWEEP:
            while (ld32(&v->cmd) == PC_CMD_RUN) {
                hooks(v, &h, pos);
                touch(base, pos, ps);
                accesses++;
                if (++pos >= end) {
                    pos = start;
                    sweeps++;
                    st64(&v->sweeps, sweeps);
                }
                st64(&v->position, pos);
                st64(&v->accesses, accesses);
                if ((max_sweeps && sweeps >= max_sweeps) || (max_accesses && accesses >= max_accesses))
                    break;
            }
            break;
        case PC_WL_RANDOM:
        case PC_WL_HOTSET:
            while (ld32(&v->cmd) == PC_CMD_RUN) {
                uint64_t page;
                if (v->kind == PC_WL_RANDOM) {
                    page = start + below(xorshift64s(&rng), n);
                } else {
                    int in_hot = (xorshift64s(&rng) >> 32) < share;
                    uint64_t r = xorshift64s(&rng);
                    if (hot == n || (in_hot && hot > 0))
                        page = start + below(r, hot);
                    else
                        page = start + hot + below(r, n - hot);
                }
                hooks(v, &h, page);
                touch(base, page, ps);
                accesses++;
                st64(&v->rng, rng);
                st64(&v->accesses, accesses);
                if (max_accesses && accesses >= max_accesses)
                    break;
            }
            break;
        default:
            /* unknown workload: behave as idle */
            while (ld32(&v->cmd) == PC_CMD_RUN)
                futex_wait(&v->cmd, PC_CMD_RUN);
            break;
        }
    }
    unstamp(v);
    publish_state(v, PC_STATE_STOPPED);
    return NULL;
}

/* Starts the thread of vCPU `index` of the block array. Returns 0 or an errno. */
int pc_vcpu_start(struct pc_vcpu *vcpus, int index)
{
    struct pc_vcpu *v = &vcpus[index];
    pthread_attr_t attr;
    pthread_t t;
    int err = pthread_attr_init(&attr);
    if (err)
        return err;
    pthread_attr_setstacksize(&attr, 256 * 1024);
    st32(&v->state, PC_STATE_STARTING);
    err = pthread_create(&t, &attr, vcpu_main, v);
    pthread_attr_destroy(&attr);
    if (err)
        return err;
    char name[16]; /* QEMU's "CPU %d/KVM", with our engine for accelerator (15 characters at most) */
    snprintf(name, sizeof name, "CPU %d/postcopy", index);
    pthread_setname_np(t, name);
    memcpy(&v->thread, &t, sizeof t);
    return 0;
}

/* Sets the command of vCPUs [first, first+count) and wakes them. */
void pc_vcpu_command(struct pc_vcpu *vcpus, int first, int count, int cmd)
{
    for (int i = first; i < first + count; i++) {
        st32(&vcpus[i].cmd, cmd);
        futex_wake(&vcpus[i].cmd);
    }
}

/* Joins the threads of vCPUs [0, count) (they must have been told to stop).
 * Blocks: call it through koffi's .async. Returns the number joined. */
int pc_vcpu_join(struct pc_vcpu *vcpus, int count)
{
    int joined = 0;
    for (int i = 0; i < count; i++) {
        pthread_t t;
        memcpy(&t, &vcpus[i].thread, sizeof t);
        if (vcpus[i].thread && pthread_join(t, NULL) == 0)
            joined++;
        vcpus[i].thread = 0;
    }
    return joined;
}

/* Waits up to timeout_ms until every vCPU of [0, count) is in a state of
 * `mask` (bit per pc_vcpu_state). Blocks: call through .async. Returns 1 when
 * all are, 0 on timeout. */
int pc_vcpu_wait_states(struct pc_vcpu *vcpus, int count, int mask, int timeout_ms)
{
    struct timespec now, deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (int i = 0; i < count; i++) {
        int s;
        while (!((1 << (s = ld32(&vcpus[i].state))) & mask)) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long left_ns = (deadline.tv_sec - now.tv_sec) * 1000000000L + (deadline.tv_nsec - now.tv_nsec);
            if (left_ns <= 0)
                return 0;
            struct timespec rel = { left_ns / 1000000000L, left_ns % 1000000000L };
            syscall(SYS_futex, &vcpus[i].state, FUTEX_WAIT_PRIVATE, s, &rel, NULL, 0);
        }
    }
    return 1;
}
