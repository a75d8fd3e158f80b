/* The speed of light for a remote page fault on this host, in plain C: a
 * thread sweeps `pages` pages of memory registered with userfaultfd (MISSING);
 * a handler thread reads each fault, sends a 16-byte request over a loopback
 * TCP connection or a unix socketpair to a server thread, which answers with
 * a 16-byte header and the 4 KiB page; the handler places it with UFFDIO_COPY.
 * Latency = fault read -> page placed, as the blocktime context measures it.
 * Nothing else runs: no background stream, no event loop. Used only as the
 * baseline of the migrate benchmark (bench/migrate.ts). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PS 4096
#define HDR 16

/* reads (out = 0) or writes (out = 1) exactly n bytes; -1 on EOF or error */
static int transfer_full(int fd, uint8_t *b, size_t n, int out)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = out ? write(fd, b + done, n - done) : read(fd, b + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

struct sweep { volatile uint8_t *mem; uint64_t pages; };

static void *sweeper(void *arg)
{
    struct sweep *s = arg;
    for (uint64_t p = 0; p < s->pages; p++)
        s->mem[p * PS] = 1;
    return NULL;
}

static void *server(void *arg)
{
    int fd = *(int *)arg;
    uint8_t req[HDR], out[HDR + PS];
    memset(out, 0x5a, sizeof out);
    while (transfer_full(fd, req, HDR, 0) == 0) {
        memcpy(out, req, HDR); /* the reply names the page */
        if (transfer_full(fd, out, sizeof out, 1) != 0)
            break;
    }
    return NULL;
}

static int connected_pair(int tcp, int fds[2])
{
    if (!tcp)
        return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    int one = 1;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 || getsockname(l, (struct sockaddr *)&a, &al) < 0)
        goto fail;
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a) < 0)
        goto fail;
    fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (fds[1] < 0)
        goto fail;
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    close(l);
    return 0;
fail:
    if (l >= 0)
        close(l);
    return -1;
}

/* Sweeps `pages` remote pages; returns the average fault latency in ns, or -errno. */
double pc_remote_fault_baseline(uint64_t pages, int tcp)
{
    int err = 0, fds[2] = { -1, -1 };
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (uffd < 0)
        uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (uffd < 0)
        return -errno;
    struct uffdio_api api = { .api = UFFD_API };
    uint8_t *mem = mmap(NULL, pages * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)mem, pages * PS }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (mem == MAP_FAILED || ioctl(uffd, UFFDIO_API, &api) < 0 || ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 || connected_pair(tcp, fds) < 0) {
        err = -errno;
        close(uffd);
        if (mem != MAP_FAILED)
            munmap(mem, pages * PS);
        return err;
    }
    pthread_t srv, vcpu;
    struct sweep sw = { mem, pages };
    pthread_create(&srv, NULL, server, &fds[1]);
    pthread_create(&vcpu, NULL, sweeper, &sw);
    double sum = 0;
    uint8_t req[HDR] = { 0 }, in[HDR + PS];
    struct pollfd pfd = { .fd = uffd, .events = POLLIN };
    for (uint64_t done = 0; done < pages && err == 0;) {
        struct uffd_msg msg;
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) { err = -errno; break; }
        if (read(uffd, &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        double t0 = now_ns();
        uint64_t addr = msg.arg.pagefault.address & ~(uint64_t)(PS - 1);
        memcpy(req + 8, &addr, 8);
        if (transfer_full(fds[0], req, HDR, 1) != 0 || transfer_full(fds[0], in, sizeof in, 0) != 0) { err = -EPIPE; break; }
        struct uffdio_copy cp = { .dst = addr, .src = (uint64_t)(uintptr_t)(in + HDR), .len = PS, .mode = 0 };
        if (ioctl(uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST) { err = -errno; break; }
        sum += now_ns() - t0;
        done++;
    }
    if (err != 0) { /* let the sweeper finish on plain memory */
        struct uffdio_range r = reg.range;
        ioctl(uffd, UFFDIO_UNREGISTER, &r);
        ioctl(uffd, UFFDIO_WAKE, &r);
    }
    pthread_join(vcpu, NULL);
    shutdown(fds[0], SHUT_RDWR);
    pthread_join(srv, NULL);
    close(fds[0]);
    close(fds[1]);
    close(uffd);
    munmap(mem, pages * PS);
    return err != 0 ? err : sum / (double)pages;
}
