/* The source's main-stream writer (QEMU's migration thread, its RAM part):
 * every byte of the main stream goes out through this thread, in the order
 * TypeScript queued it. TypeScript queues control records (encoded by
 * wire.ts) and passes over guest RAM; in a pass the thread walks the page
 * flags (shared with TypeScript and the page server), takes each page that
 * needs sending (NEED -> HAS, atomically: the page server may take it first),
 * tells zero pages from data, and writes PAGES and ZERO runs with writev
 * straight from guest RAM (a run of pages is one iovec: no copy in user
 * space), about 1 MiB a call, under the rate limit TypeScript sets. A pass
 * either goes over RAM once (a precopy round) or, in postcopy, round and
 * round until no page needs sending, going on just after the pages the page
 * server sent last (its hint). Stop finishes the batch in progress (records
 * stay whole), writes TypeScript's last record if any (ERROR), and joins. */
#define _GNU_SOURCE
#include "channel.h"
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BATCH_PAYLOAD (1u << 20)
#define BATCH_IOV 512
/* the token bucket holds ~100 ms of traffic at the limit, at least 1 MiB (rate-limit.ts) */
#define BURST_MS 100
#define MIN_BURST (1u << 20)
/* longest throttled sleep before the limit is read again (a new max-bandwidth applies within it) */
#define RECHECK_MS 100
/* a unix socket's send buffer (the default, ~200 KiB, costs a wake-up of
 * each side per 200 KiB); TCP's grows by itself */
#define UNIX_SNDBUF (4 << 20)
/* how long stop waits for the batch in progress and the last record */
#define STOP_GRACE_MS 500

enum { CMD_BYTES = 1, CMD_PASS = 2 };

struct command {
    struct command *next;
    int kind;
    uint32_t len;
    uint8_t data[];
};

struct sender {
    pthread_mutex_t lock;
    struct command *head, *tail; /* queued by TypeScript, in order */
    uint8_t *last;         /* written after the thread is asked to stop */
    size_t last_len;
    int interrupt;         /* end the pass in progress at the next batch */
    uint8_t *flags;
    uint64_t cursor;
    /* a batch */
    struct iovec iov[BATCH_IOV];
    uint8_t hdr[BATCH_IOV][PC_RECORD_HEADER];
    int niov, nhdr;
    /* token bucket */
    double tokens, last_ns, last_limit;
    double stop_deadline;
    int abandon;           /* stop at once, records whole or not (the link is lost: postcopy paused) */
};

static int stopping(const struct pc_channel *c)
{
    return __atomic_load_n(&c->stop, __ATOMIC_RELAXED);
}

/* waits for the socket to take more (or for wake_fd, or `ms`); idle
 * meanwhile. -1 when poll failed (the channel failed), else 0. */
static int wait_out(struct pc_channel *c, int ms)
{
    struct pollfd p[2] = { { .fd = c->wake_fd, .events = POLLIN }, { .fd = c->sock, .events = POLLOUT } };
    if (pc_channel_poll(c, p, 2, ms) < 0)
        return -1;
    uint64_t v;
    if ((p[0].revents & POLLIN) && read(c->wake_fd, &v, sizeof v) < 0) { /* cleared by another read */ }
    return 0;
}

/* Writes iov[0, n) whole. After a stop request it goes on until the
 * deadline (records stay whole). 0, or -1 (failed, or the deadline passed). */
static int write_all(struct pc_channel *c, struct sender *s, struct iovec *iov, int n)
{
    while (n > 0) {
        int k = n > IOV_MAX ? IOV_MAX : n;
        /* the stream's bytes up to the end of this writev: on loopback the
         * destination reads (and acknowledges) them while the call still runs */
        double upto = c->st->stats[PC_SND_BYTES_OUT];
        for (int i = 0; i < k; i++)
            upto += (double)iov[i].iov_len;
        __atomic_store(&c->st->stats[PC_SND_WRITING], &upto, __ATOMIC_RELEASE);
        ssize_t w = writev(c->sock, iov, k);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) { /* any socket error loses the link (postcopy pauses on it) */
                pc_channel_fail(c, PC_CH_CLOSED, errno, "migration stream: send: %s", strerror(errno));
                return -1;
            }
            if (__atomic_load_n(&s->abandon, __ATOMIC_ACQUIRE))
                return -1; /* the link is lost: nothing waits for it */
            if (stopping(c)) {
                if (s->stop_deadline == 0)
                    s->stop_deadline = pc_channel_now(c) + STOP_GRACE_MS * 1e6;
                else if (pc_channel_now(c) > s->stop_deadline)
                    return -1;
            }
            if (wait_out(c, stopping(c) ? 10 : -1) < 0)
                return -1;
            continue;
        }
        c->st->stats[PC_SND_BYTES_OUT] += (double)w;
        c->st->stats[PC_SND_WRITES]++;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int write_bytes(struct pc_channel *c, struct sender *s, uint8_t *p, size_t len)
{
    struct iovec v = { .iov_base = p, .iov_len = len };
    return write_all(c, s, &v, 1);
}

/* ms to wait before `bytes` may go under the limit TypeScript set (0 = now) */
static double throttle_ms(struct pc_channel *c, struct sender *s, double bytes)
{
    double limit;
    __atomic_load(&c->st->stats[PC_SND_LIMIT], &limit, __ATOMIC_RELAXED);
    double now = pc_channel_now(c);
    if (limit <= 0)
        return 0;
    double burst = limit * BURST_MS / 1000 > MIN_BURST ? limit * BURST_MS / 1000 : MIN_BURST;
    if (limit != s->last_limit) { /* a new limit starts with a fresh, empty bucket */
        s->last_limit = limit;
        s->tokens = s->tokens < 0 ? s->tokens : 0;
    } else {
        s->tokens += (now - s->last_ns) / 1e9 * limit;
        if (s->tokens > burst)
            s->tokens = burst;
    }
    s->last_ns = now;
    if (s->tokens >= bytes || s->tokens >= burst)
        return 0;
    double ms = (bytes - s->tokens) / limit * 1000;
    return ms < 1 ? 1 : ms;
}

static int page_zero(const struct pc_channel *c, uint64_t p)
{
    return pc_page_is_zero((const uint8_t *)(uintptr_t)(c->base + p * c->page_size), c->page_size);
}

/* Takes the host page of `units` pages from p (a huge-page block beside
 * smaller pages: it moves whole) as one record of its own, PAGES or ZERO,
 * when any of its pages needs sending. Returns the payload bytes it added. */
static uint64_t take_host_page(struct pc_channel *c, struct sender *s, uint64_t p, uint64_t units)
{
    int need = 0;
    for (uint64_t q = p; q < p + units; q++)
        need |= __atomic_load_n(&s->flags[q], __ATOMIC_RELAXED) & PC_SRC_NEED;
    if (!need)
        return 0;
    need = 0;
    for (uint64_t q = p; q < p + units; q++) /* NEED -> HAS; a page not needed has HAS already */
        need |= __atomic_exchange_n(&s->flags[q], PC_SRC_HAS, __ATOMIC_ACQ_REL) & PC_SRC_NEED;
    if (!need)
        return 0; /* the page server sent it meanwhile */
    const uint64_t bytes = units * c->page_size;
    const uint8_t *at = (const uint8_t *)(uintptr_t)(c->base + p * c->page_size);
    int zero = pc_page_is_zero(at, bytes);
    c->st->stats[PC_SND_SENT] += (double)units;
    c->st->stats[zero ? PC_SND_ZERO : PC_SND_NORMAL] += (double)units;
    pc_put_page_record(c, s->hdr[s->nhdr], zero ? PC_REC_ZERO : PC_REC_PAGES, 0, (uint32_t)units, p);
    s->iov[s->niov++] = (struct iovec){ .iov_base = s->hdr[s->nhdr++], .iov_len = PC_RECORD_HEADER };
    if (zero)
        return 0;
    s->iov[s->niov++] = (struct iovec){ .iov_base = (void *)(uintptr_t)at, .iov_len = bytes };
    return bytes;
}

/* Gathers the next batch from the cursor on: pages that need sending, as
 * PAGES and ZERO runs (iovecs into guest RAM), none crossing the end of a
 * RAM block. `wrap`: go round (postcopy). Returns the pages it looked at. */
static uint64_t fill_batch(struct pc_channel *c, struct sender *s, int wrap)
{
    const uint64_t ps = c->page_size;
    uint64_t scanned = 0, payload = 0;
    int kind = 0; /* open run: 0 none, 1 pages, 2 zero */
    uint64_t run_start = 0, run_len = 0, run_end = 0; /* run_end: the end of the run's block */
    uint64_t blk_first = 0, blk_end = 0, blk_units = 1; /* the block of the last page looked at (several blocks) */
    s->niov = s->nhdr = 0;
    while (payload < BATCH_PAYLOAD && s->nhdr < BATCH_IOV / 2 - 1) {
        if (s->cursor >= c->pages) {
            if (!wrap)
                break;
            s->cursor = 0;
        }
        if (wrap && scanned >= c->pages)
            break;
        uint64_t p = s->cursor++;
        scanned++;
        if (c->nblocks > 1) {
            if (p < blk_first || p >= blk_end) {
                const struct pc_ramblock *b = &c->blocks[pc_block_index(c, p)];
                blk_first = b->first;
                blk_end = b->first + b->pages;
                blk_units = pc_block_units(c, b);
            }
            if (blk_units > 1) { /* a huge-page block beside smaller pages: whole host pages, a record each */
                p -= (p - blk_first) % blk_units;
                s->cursor = p + blk_units;
                scanned += blk_units - 1;
                if (kind != 0) { /* the open run is another block's: it ends here */
                    pc_put_page_record(c, s->hdr[s->nhdr - 1], kind == 1 ? PC_REC_PAGES : PC_REC_ZERO, 0, (uint32_t)run_len, run_start);
                    kind = 0;
                }
                payload += take_host_page(c, s, p, blk_units);
                continue;
            }
        }
        if (!(__atomic_load_n(&s->flags[p], __ATOMIC_RELAXED) & PC_SRC_NEED))
            continue;
        if (!(__atomic_exchange_n(&s->flags[p], PC_SRC_HAS, __ATOMIC_ACQ_REL) & PC_SRC_NEED))
            continue; /* the page server sent it meanwhile */
        c->st->stats[PC_SND_SENT]++;
        int k = page_zero(c, p) ? 2 : 1;
        if (kind != k || p != run_start + run_len || p >= run_end || (k == 1 && run_len >= c->max_run)) {
            if (kind != 0)
                pc_put_page_record(c, s->hdr[s->nhdr - 1], kind == 1 ? PC_REC_PAGES : PC_REC_ZERO, 0, (uint32_t)run_len, run_start);
            kind = k;
            run_start = p;
            run_len = 0;
            run_end = pc_block_end(c, p);
            s->iov[s->niov++] = (struct iovec){ .iov_base = s->hdr[s->nhdr++], .iov_len = PC_RECORD_HEADER };
            if (k == 1)
                s->iov[s->niov++] = (struct iovec){ .iov_base = (void *)(uintptr_t)(c->base + p * ps), .iov_len = 0 };
        }
        run_len++;
        if (k == 1) {
            s->iov[s->niov - 1].iov_len += ps;
            payload += ps;
            c->st->stats[PC_SND_NORMAL]++;
        } else {
            c->st->stats[PC_SND_ZERO]++;
        }
    }
    if (kind != 0)
        pc_put_page_record(c, s->hdr[s->nhdr - 1], kind == 1 ? PC_REC_PAGES : PC_REC_ZERO, 0, (uint32_t)run_len, run_start);
    return scanned;
}

/* One pass (see the header comment). 0 when done, -1 when the thread must end. */
static int pass(struct pc_channel *c, struct sender *s, int wrap)
{
    s->cursor = wrap ? s->cursor : 0;
    for (;;) {
        if (stopping(c) || __atomic_load_n(&s->interrupt, __ATOMIC_ACQUIRE))
            return stopping(c) ? -1 : 0;
        double hint;
        __atomic_load(&c->st->stats[PC_SND_HINT], &hint, __ATOMIC_ACQUIRE);
        if (wrap && hint > 0) { /* the page server sent pages the push had not reached: go on just after them */
            double none = 0;
            __atomic_store(&c->st->stats[PC_SND_HINT], &none, __ATOMIC_RELEASE);
            s->cursor = (uint64_t)hint - 1 < c->pages ? (uint64_t)hint - 1 : 0;
        }
        /* postcopy window: so much in flight beyond what the destination consumed, at most */
        double window = c->st->stats[PC_SND_WINDOW];
        if (window > 0 && c->st->stats[PC_SND_BYTES_OUT] - c->st->stats[PC_SND_ACKED] > window) {
            if (wait_out(c, 1) < 0)
                return -1;
            continue;
        }
        double ms = throttle_ms(c, s, BATCH_PAYLOAD > c->page_size ? BATCH_PAYLOAD : (double)c->page_size); /* a batch: one huge page at least */
        if (ms > 0) {
            if (wait_out(c, (int)(ms < RECHECK_MS ? ms : RECHECK_MS)) < 0)
                return -1;
            continue;
        }
        uint64_t scanned = fill_batch(c, s, wrap);
        c->st->stats[PC_SND_CURSOR] = (double)s->cursor;
        if (s->niov == 0 && (!wrap || scanned >= c->pages || scanned == 0))
            return 0; /* a round's end, or nothing needs sending any more */
        if (s->niov == 0)
            continue;
        double bytes = 0;
        for (int i = 0; i < s->niov; i++)
            bytes += (double)s->iov[i].iov_len;
        if (s->last_limit > 0)
            s->tokens -= bytes;
        if (write_all(c, s, s->iov, s->niov) < 0)
            return -1;
    }
}

static struct command *next_command(struct sender *s)
{
    pthread_mutex_lock(&s->lock);
    struct command *cmd = s->head;
    if (cmd) {
        s->head = cmd->next;
        if (!s->head)
            s->tail = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    return cmd;
}

static void *sender_run(void *arg)
{
    struct pc_channel *c = arg;
    struct sender *s = c->side;
    while (!stopping(c) && c->st->state == PC_CH_RUNNING) {
        struct command *cmd = next_command(s);
        if (!cmd) {
            pc_channel_wait(c, -1, 0);
            uint64_t v;
            if (read(c->wake_fd, &v, sizeof v) < 0) { /* a stop leaves it set: harmless */ }
            continue;
        }
        int rc = 0;
        if (cmd->kind == CMD_BYTES) {
            rc = write_bytes(c, s, cmd->data, cmd->len);
        } else {
            /* an interrupt meant for a pass that had already ended is not this one's */
            __atomic_store_n(&s->interrupt, 0, __ATOMIC_RELEASE);
            rc = pass(c, s, cmd->data[0]);
            __atomic_store_n(&s->interrupt, 0, __ATOMIC_RELEASE);
            double done = c->st->stats[PC_SND_PASSES] + 1;
            __atomic_store(&c->st->stats[PC_SND_PASSES], &done, __ATOMIC_RELEASE);
        }
        free(cmd);
        if (rc < 0)
            break;
    }
    if (stopping(c) && c->st->state == PC_CH_RUNNING && s->last_len > 0) {
        s->stop_deadline = pc_channel_now(c) + STOP_GRACE_MS * 1e6;
        if (write_bytes(c, s, s->last, s->last_len) == 0)
            c->st->stats[PC_SND_LAST_SENT] = 1;
    }
    return NULL;
}

static void sender_free(void *side)
{
    struct sender *s = side;
    for (struct command *n; s->head; s->head = n) {
        n = s->head->next;
        free(s->head);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->last);
    free(s);
}

static int enqueue(struct pc_channel *c, int kind, const uint8_t *data, uint32_t len)
{
    struct sender *s = c->side;
    struct command *cmd = malloc(sizeof *cmd + len);
    if (!cmd)
        return -ENOMEM;
    cmd->next = NULL;
    cmd->kind = kind;
    cmd->len = len;
    memcpy(cmd->data, data, len);
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = cmd;
    else
        s->head = cmd;
    s->tail = cmd;
    pthread_mutex_unlock(&s->lock);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0) { /* the thread looks at the queue when it wakes */ }
    return 0;
}

/* Starts the writer on `sock` (the main connection, non-blocking; Node
 * still reads the return path on its own fd). `flags` = the page flags
 * (PC_SRC_NEED / PC_SRC_HAS), shared with TypeScript's dirty syncs (made
 * between passes) and the page server; `blocks` = the RAM block table
 * (nblocks entries, 0: one block). Returns a handle, or 0. */
uint64_t pc_stream_sender_start(int sock, uint64_t ram_base, uint64_t page_size, uint64_t pages, uint64_t flags,
                                struct pc_channel_status *st, double *ring, uint32_t ring_size, double clock_base,
                                uint64_t blocks, uint32_t nblocks)
{
    struct pc_channel *c = pc_channel_new(sock, ram_base, page_size, pages, st, ring, ring_size, clock_base, 16, 16,
                                          PC_SND_BYTES_IN, PC_SND_BYTES_OUT);
    if (!c)
        return 0;
    if (pc_channel_blocks(c, blocks, nblocks) < 0) {
        pc_channel_free(c);
        return 0;
    }
    struct sender *s = calloc(1, sizeof *s);
    if (!s) {
        pc_channel_free(c);
        return 0;
    }
    struct sockaddr_storage a;
    socklen_t alen = sizeof a;
    int buf = UNIX_SNDBUF;
    if (getsockname(sock, (struct sockaddr *)&a, &alen) == 0 && a.ss_family == AF_UNIX &&
        setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf) != 0) { /* the default then */ }
    pthread_mutex_init(&s->lock, NULL);
    c->what = "migration stream";
    s->flags = (uint8_t *)(uintptr_t)flags;
    c->side = s;
    c->side_free = sender_free;
    if (pc_channel_spawn(c, sender_run, "live_migration") != 0)
        return 0;
    return (uint64_t)(uintptr_t)c;
}

/* Queues `len` bytes (records encoded by wire.ts) to write in order. */
int pc_stream_sender_bytes(uint64_t handle, const uint8_t *data, uint32_t len)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    return c ? enqueue(c, CMD_BYTES, data, len) : -EINVAL;
}

/* Queues a pass over guest RAM: once from page 0 (wrap 0, a precopy round),
 * or round and round until no page needs sending (wrap 1, postcopy). Each
 * pass done adds 1 to stats[PC_SND_PASSES]. */
int pc_stream_sender_pass(uint64_t handle, int wrap)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    uint8_t w = wrap != 0;
    return c ? enqueue(c, CMD_PASS, &w, 1) : -EINVAL;
}

/* Ends the pass in progress after its batch (migrate_start_postcopy). */
int pc_stream_sender_interrupt(uint64_t handle)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    if (!c)
        return -EINVAL;
    struct sender *s = c->side;
    __atomic_store_n(&s->interrupt, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0) { /* seen at the next batch */ }
    return 0;
}

/* Stops the writer: the batch in progress goes out whole, then `last`
 * (len bytes, e.g. an ERROR record; stats[PC_SND_LAST_SENT] = 1 once
 * written), within STOP_GRACE_MS; joins and frees it. */
int pc_stream_sender_stop(uint64_t handle, const uint8_t *last, uint32_t len)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    if (!c)
        return -EINVAL;
    struct sender *s = c->side;
    if (len > 0 && (s->last = malloc(len)) != NULL) {
        memcpy(s->last, last, len);
        s->last_len = len;
    }
    return pc_channel_stop(handle);
}

/* Stops the writer at once (postcopy paused: the link is lost, and what is
 * in flight is sent again after recovery); joins and frees it. */
int pc_stream_sender_abort(uint64_t handle)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    if (!c)
        return -EINVAL;
    struct sender *s = c->side;
    __atomic_store_n(&s->abandon, 1, __ATOMIC_RELEASE);
    return pc_channel_stop(handle);
}
