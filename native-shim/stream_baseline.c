/* The speed of light for moving guest RAM between two processes on this
 * host, in plain C: `bytes` go from a warm buffer through a loopback TCP
 * connection or a unix stream socketpair into fresh anonymous memory (the
 * receiver pays first-touch faults, as a migration destination does), 256 KiB
 * per write, sender and receiver on two threads. Used only as the baseline of
 * the migrate benchmark (bench/migrate.ts), which reports our throughput as a
 * ratio of it. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BASELINE_CHUNK (256 * 1024)

struct receiver {
    int fd;
    uint64_t bytes;
    int err;
};

static void *receive_all(void *arg)
{
    struct receiver *r = arg;
    char *dst = mmap(NULL, r->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (dst == MAP_FAILED) { r->err = errno; return NULL; }
    uint64_t got = 0;
    while (got < r->bytes) {
        ssize_t n = read(r->fd, dst + got, r->bytes - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { r->err = n < 0 ? errno : EPIPE; break; }
        got += (uint64_t)n;
    }
    munmap(dst, r->bytes);
    return NULL;
}

/* a connected pair: [0] sends, [1] receives; returns 0 or -errno */
static int connect_pair(int tcp, int fds[2])
{
    if (!tcp) return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0) return -errno;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int rc = 0;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len)) {
        rc = -errno;
    } else if ((fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        rc = -errno;
    } else if (connect(fds[0], (struct sockaddr *)&a, sizeof a) || (fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC)) < 0) {
        rc = -errno;
        close(fds[0]);
    } else {
        int one = 1;
        setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    close(l);
    return rc;
}

/* returns the elapsed nanoseconds, or -errno */
int64_t pc_stream_baseline(uint64_t bytes, int tcp)
{
    int fds[2];
    int rc = connect_pair(tcp, fds);
    if (rc) return rc;
    static char src[BASELINE_CHUNK];
    memset(src, 0x5a, sizeof src);
    struct receiver r = { .fd = fds[1], .bytes = bytes, .err = 0 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th;
    if ((rc = pthread_create(&th, NULL, receive_all, &r)) != 0) {
        close(fds[0]);
        close(fds[1]);
        return -rc;
    }
    int werr = 0;
    for (uint64_t sent = 0; sent < bytes && !werr;) {
        uint64_t want = bytes - sent < BASELINE_CHUNK ? bytes - sent : BASELINE_CHUNK;
        ssize_t n = write(fds[0], src, want);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) werr = errno;
        else sent += (uint64_t)n;
    }
    if (werr) shutdown(fds[1], SHUT_RDWR);
    pthread_join(th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fds[0]);
    close(fds[1]);
    if (werr) return -werr;
    if (r.err) return -r.err;
    return (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
}
