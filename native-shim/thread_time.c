/* A thread's time on a CPU, exact to now. /proc/.../schedstat gives it too,
 * but there it lags by up to a scheduler tick (4 ms here) for a thread that
 * is running: the kernel adds the current slice only at the next tick or
 * switch. The thread's CPU clock (the clockid Linux derives from its tid,
 * as pthread_getcpuclockid does) adds the slice in progress. */
#define _GNU_SOURCE
#include <time.h>

/* CPU time of thread `tid` of this process, ns; -1 when it is gone */
double pc_thread_cpu_ns(int tid)
{
    clockid_t id = (clockid_t)((~(unsigned)tid << 3) | 6); /* per-thread, CPUCLOCK_SCHED */
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -1;
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}
