/* What the destination's fault thread and the source's page server share:
 * starting and stopping the thread, the event ring to TypeScript, failure
 * reporting, and non-blocking socket I/O that a stop request can interrupt. */
#define _GNU_SOURCE
#include "channel.h"
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double pc_channel_now(const struct pc_channel *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - c->clock_base;
}

/* Appends an event; waits while the ring is full (TypeScript drains it every
 * few ms). Returns -1 when asked to stop meanwhile. */
int pc_channel_push(struct pc_channel *c, int kind, double page, double arg, double t)
{
    struct pc_channel_status *st = c->st;
    uint32_t tail = st->ring_tail;
    while (tail - __atomic_load_n(&st->ring_head, __ATOMIC_ACQUIRE) > c->ring_mask) {
        if (__atomic_load_n(&c->stop, __ATOMIC_RELAXED))
            return -1;
        usleep(100);
    }
    double *e = c->ring + 4 * (size_t)(tail & c->ring_mask);
    e[0] = kind;
    e[1] = page;
    e[2] = arg;
    e[3] = t;
    __atomic_store_n(&st->ring_tail, tail + 1, __ATOMIC_RELEASE);
    return 0;
}

void pc_channel_fail(struct pc_channel *c, int state, int err, const char *fmt, ...)
{
    if (c->st->state != PC_CH_RUNNING)
        return; /* the first reason wins */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->st->error, PC_ERROR_BYTES, fmt, ap);
    va_end(ap);
    c->st->err = err;
    __atomic_store_n(&c->st->state, state, __ATOMIC_RELEASE);
}

int pc_channel_flush(struct pc_channel *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->sock, c->out + c->out_off, c->out_len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            if (errno == EINTR)
                continue;
            /* any socket error loses the link (postcopy pauses on it) */
            pc_channel_fail(c, PC_CH_CLOSED, errno, "%s: send: %s", c->what, strerror(errno));
            return -1;
        }
        c->out_off += (size_t)n;
        c->st->stats[c->stat_bytes_out] += (double)n;
        if (c->heartbeat_type)
            c->last_tx = pc_channel_now(c);
    }
    c->out_off = c->out_len = 0;
    return 0;
}

int pc_channel_fill(struct pc_channel *c)
{
    if (c->in_len == c->in_cap)
        return 0;
    for (;;) {
        ssize_t n = recv(c->sock, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n > 0) {
            c->in_len += (size_t)n;
            c->st->stats[c->stat_bytes_in] += (double)n;
            if (c->heartbeat_type) {
                c->last_rx = pc_channel_now(c);
                c->heartbeat_armed = 1;
            }
            return 1;
        }
        if (n == 0) {
            if (c->at_eof)
                c->at_eof(c);
            else
                pc_channel_fail(c, PC_CH_CLOSED, 0, "the peer closed the %s", c->what);
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        pc_channel_fail(c, PC_CH_CLOSED, errno, "%s: recv: %s", c->what, strerror(errno));
        return -1;
    }
}

int pc_channel_heartbeat(struct pc_channel *c)
{
    if (!c->heartbeat_type)
        return -1; /* no heartbeats: poll without a limit */
    const double now = pc_channel_now(c), every = PC_HEARTBEAT_EVERY_MS * 1e6;
    /* bytes of the peer's waiting unread are no silence: this thread, not
     * the link, was held up (off its CPU on a loaded host, or its input full
     * while its own socket would not take an answer) */
    if (c->heartbeat_ns > 0 && c->heartbeat_armed && now - c->last_rx > c->heartbeat_ns) {
        struct pollfd p = { .fd = c->sock, .events = POLLIN };
        if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN))
            c->last_rx = now;
    }
    if (c->heartbeat_ns > 0 && c->heartbeat_armed && now - c->last_rx > c->heartbeat_ns) {
        pc_channel_fail(c, PC_CH_CLOSED, ETIMEDOUT, "%s: nothing came from the peer for %.0f ms (x-postcopy-heartbeat-ms)",
                        c->what, (now - c->last_rx) / 1e6);
        return -2;
    }
    /* the page server speaks only once the fault thread has: before, the
     * destination's event loop still reads the channel, up to its header */
    if (c->heartbeat_armed && now - c->last_tx >= every && c->out_cap - c->out_len >= PC_RECORD_HEADER) {
        pc_put_record(c->out + c->out_len, c->heartbeat_type, 0, 0, 0);
        c->out_len += PC_RECORD_HEADER;
        c->last_tx = now;
    }
    double next = c->last_tx + every - now;
    if (c->heartbeat_ns > 0 && c->heartbeat_armed && c->last_rx + c->heartbeat_ns - now < next)
        next = c->last_rx + c->heartbeat_ns - now;
    return next <= 0 ? 0 : (int)(next / 1e6) + 1;
}

void pc_channel_mark(struct pc_channel *c, double t)
{
    __atomic_store(&c->st->watermark, &t, __ATOMIC_RELEASE);
}

int pc_channel_poll(struct pc_channel *c, struct pollfd *p, nfds_t n, int ms)
{
    /* the reader takes "idle" as: nothing stamped before it looked will
     * still be pushed (every event is stamped after idle = 0) */
    __atomic_store_n(&c->st->idle, 1, __ATOMIC_SEQ_CST);
    int rc;
    while ((rc = poll(p, n, ms)) < 0 && errno == EINTR)
        ;
    int e = errno;
    __atomic_store_n(&c->st->idle, 0, __ATOMIC_SEQ_CST);
    if (rc < 0) { /* not a stop: the status says so, and the other side hears of it */
        pc_channel_fail(c, PC_CH_FAILED, e, "%s: poll: %s", c->what, strerror(e));
        return -1;
    }
    return rc;
}

int pc_channel_wait(struct pc_channel *c, int extra_fd, int want_in)
{
    return pc_channel_wait_ms(c, extra_fd, want_in, -1);
}

int pc_channel_wait_ms(struct pc_channel *c, int extra_fd, int want_in, int ms)
{
    struct pollfd p[3] = {
        { .fd = c->wake_fd, .events = POLLIN },
        { .fd = c->sock, .events = (short)((want_in ? POLLIN : 0) | (c->out_len > c->out_off ? POLLOUT : 0)) },
        { .fd = extra_fd, .events = POLLIN },
    };
    /* no busy-poll window: measured here, spinning 20-50 us after work took
     * the CPU the event loops need and doubled the fault latency */
    if (pc_channel_poll(c, p, extra_fd >= 0 ? 3 : 2, ms) < 0)
        return 1; /* failed: the thread ends, its status says why */
    return (p[0].revents & POLLIN) ? 1 : 0;
}

struct pc_channel *pc_channel_new(int sock, uint64_t base, uint64_t page_size, uint64_t pages,
                                  struct pc_channel_status *st, double *ring, uint32_t ring_size,
                                  double clock_base, size_t in_cap, size_t out_cap, int stat_bytes_in, int stat_bytes_out)
{
    struct pc_channel *c = ring_size != 0 && (ring_size & (ring_size - 1)) == 0 ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        close(sock);
        return NULL;
    }
    c->sock = sock;
    c->what = "urgent channel";
    c->uffd = -1;
    c->base = base;
    c->page_size = page_size;
    c->pages = pages;
    c->max_run = pc_max_run_pages(page_size);
    c->st = st;
    c->ring = ring;
    c->ring_mask = ring_size - 1;
    c->clock_base = clock_base;
    c->in_cap = in_cap;
    c->stat_bytes_in = stat_bytes_in;
    c->stat_bytes_out = stat_bytes_out;
    c->out_cap = out_cap;
    c->in = malloc(in_cap);
    c->out = malloc(out_cap);
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!c->in || !c->out || c->wake_fd < 0) {
        close(sock);
        if (c->wake_fd >= 0)
            close(c->wake_fd);
        free(c->in);
        free(c->out);
        free(c);
        return NULL;
    }
    st->state = PC_CH_RUNNING;
    return c;
}

void pc_channel_free(struct pc_channel *c)
{
    close(c->sock);
    close(c->wake_fd);
    free(c->in);
    free(c->out);
    free(c->requested);
    free(c->vcpu_tids);
    free(c->blocks);
    if (c->side_free)
        c->side_free(c->side);
    else
        free(c->side);
    free(c);
}

int pc_channel_spawn(struct pc_channel *c, void *(*run)(void *), const char *name)
{
    int e = pthread_create(&c->thread, NULL, run, c);
    if (e != 0)
        pc_channel_free(c);
    else
        pthread_setname_np(c->thread, name);
    return e;
}

/* Stops the thread (it leaves poll at once), joins it, closes its socket and
 * frees its state. The uffd stays open: it belongs to TypeScript. */
int pc_channel_stop(uint64_t handle)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    if (!c)
        return -EINVAL;
    __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0) { /* the stop flag is enough */ }
    pthread_join(c->thread, NULL);
    if (c->st->state == PC_CH_RUNNING)
        c->st->state = PC_CH_STOPPED;
    pc_channel_free(c);
    return 0;
}

/* sizeof * 1000 + offsetof(stats): what TypeScript checks */
int pc_channel_layout(void)
{
    return (int)(sizeof(struct pc_channel_status) * 1000 + offsetof(struct pc_channel_status, stats));
}

uint64_t pc_max_run_pages(uint64_t page_size)
{
    uint64_t n = PC_MAX_RUN_BYTES / page_size;
    return n < 1 ? 1 : n > PC_MAX_RUN_PAGES ? PC_MAX_RUN_PAGES : n;
}

int pc_page_is_zero(const uint8_t *p, uint64_t len)
{
    const uint64_t *w = (const uint64_t *)p;
    for (uint64_t i = 0; i < len / 8; i += 4)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
            return 0;
    return 1;
}

uint64_t pc_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

uint32_t pc_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

void pc_put_record(uint8_t *p, int type, int flags, uint32_t count, uint64_t offset)
{
    p[0] = (uint8_t)type;
    p[1] = (uint8_t)flags;
    p[2] = p[3] = 0;
    memcpy(p + 4, &count, 4);
    memcpy(p + 8, &offset, 8);
}

#define PLACE_RETRIES 1000

int pc_place(struct pc_channel *c, uint64_t off, uint64_t count, const uint8_t *src, int stat_existed, int events)
{
    const uint64_t ps = c->page_size;
    /* a run lies in one block; a huge-page block beside smaller pages takes whole host pages */
    const uint64_t unit = pc_host_units(c, off / ps);
    /* with the waiting map, the waiters are woken after their faults are
     * taken (pc_waiters_wake), not by the ioctl */
    const uint64_t quiet = c->waiting ? UFFDIO_COPY_MODE_DONTWAKE : 0;
    uint64_t done = 0;
    int again = 0;
    while (done < count) {
        uint64_t dst = c->base + off + done * ps, len = (count - done) * ps;
        int64_t got;
        int rc, e;
        if (src || c->zero_src) {
            /* on hugetlbfs (no UFFDIO_ZEROPAGE) zero pages are copied from c->zero_src, page by page */
            const uint8_t *from = src ? src + done * ps : c->zero_src;
            if (!src)
                len = unit * ps;
            struct uffdio_copy cp = { .dst = dst, .src = (uint64_t)(uintptr_t)from, .len = len, .mode = quiet };
            rc = ioctl(c->uffd, UFFDIO_COPY, &cp);
            e = errno;
            got = cp.copy;
        } else {
            struct uffdio_zeropage zp = { .range = { .start = dst, .len = len }, .mode = quiet ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0 };
            rc = ioctl(c->uffd, UFFDIO_ZEROPAGE, &zp);
            e = errno;
            got = zp.zeropage;
        }
        uint64_t placed = rc == 0 ? len / ps : got > 0 ? (uint64_t)got / ps : 0;
        if (placed > 0) {
            if (quiet && pc_waiters_wake(c, off / ps + done, placed) < 0)
                return -1;
            /* only what this call placed: a page the other placer put in
             * first (EEXIST) is woken, and dated, by that placer */
            if (events && pc_channel_push(c, PC_EV_PLACED, (double)(off / ps + done), (double)placed, pc_placed_at(c)) < 0)
                return -1;
        }
        done += placed;
        if (rc == 0)
            continue;
        if (e == EAGAIN) {
            if (++again > PLACE_RETRIES) {
                pc_channel_fail(c, PC_CH_FAILED, e, "placing %llu pages at offset %llu: the kernel kept answering EAGAIN",
                                (unsigned long long)count, (unsigned long long)off);
                return -1;
            }
            continue;
        }
        if (e == EEXIST) { /* placed by the other placer: it wakes the waiters (woke them, unless quiet) */
            if (!quiet) {
                struct uffdio_range r = { .start = c->base + off + done * ps, .len = unit * ps };
                ioctl(c->uffd, UFFDIO_WAKE, &r);
            }
            c->st->stats[stat_existed]++;
            done += unit;
            continue;
        }
        pc_channel_fail(c, PC_CH_FAILED, e, "%s of %llu pages at offset %llu: %s", src ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE",
                        (unsigned long long)count, (unsigned long long)off, strerror(e));
        return -1;
    }
    return 0;
}
