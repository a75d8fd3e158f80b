/* The kernel's times of a vCPU thread, read by the thread itself when asked
 * (PC_HOOK_SAMPLE, before its next access). The blocktime's ground truth is
 * elapsed - on CPU - run-queue wait (src/vm/schedstat.ts), and a thread
 * waiting on a run queue has a wait in progress that schedstat adds only
 * once it runs: a sampler outside must wait until it catches the thread
 * running or asleep. On two CPUs it may never: the vCPU beside the sampler
 * is the one its wake-up just preempted, round after round (one vCPU in
 * three of a 4-vCPU row had no kernel figure). Running, the thread has no
 * wait in progress, and its CPU clock is exact to the moment. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "vcpu.h"

#define TIGHT_NS 100000 /* a read preempted for longer is taken again */
#define TRIES 4

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void pc_vcpu_self_sample(struct pc_vcpu *v)
{
    char buf[128];
    for (int i = 0; i < TRIES; i++) {
        uint64_t t1 = mono_ns();
        int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        struct timespec cpu;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
        uint64_t t2 = mono_ns();
        unsigned long long run, wait;
        buf[n > 0 ? n : 0] = 0;
        if (n <= 0 || sscanf(buf, "%llu %llu", &run, &wait) != 2)
            break; /* no schedstat: the sampler outside says why */
        if (t2 - t1 > TIGHT_NS && i < TRIES - 1)
            continue;
        v->sample_t = (double)(t1 + (t2 - t1) / 2);
        v->sample_run = (uint64_t)cpu.tv_sec * 1000000000ULL + (uint64_t)cpu.tv_nsec;
        v->sample_wait = wait;
        __atomic_store_n(&v->sample_seq, v->sample_seq + 1, __ATOMIC_RELEASE);
        break;
    }
    /* TypeScript sets and clears hook bits with 32-bit atomics on the low word */
    __atomic_fetch_and((uint32_t *)&v->hooks, ~(uint32_t)PC_HOOK_SAMPLE, __ATOMIC_RELAXED);
}
