/* The destination's postcopy fault thread (QEMU's postcopy_ram_fault_thread,
 * with the preempt channel's page placement folded in): one thread that
 *  - reads the userfaultfd's fault messages and, for each fault on a page not
 *    yet here, sends a page request (REQ_PAGES) on the urgent channel, once
 *    per page, with a read-ahead request for the pages after it, and pushes a
 *    FAULT event (page, faulting thread id, time, and how it served the
 *    fault: requested, read-ahead, in flight or already received) to the
 *    ring for the blocktime context;
 *  - resolves a fault on a page known to be zero (received as ZERO in precopy,
 *    never populated) with UFFDIO_ZEROPAGE at once;
 *  - places the requested pages the source sends back with UFFDIO_COPY or
 *    UFFDIO_ZEROPAGE, which wakes the faulting threads, and pushes a PLACED
 *    event (page, count, time).
 * The main stream's background pages are placed by TypeScript into the same
 * userfaultfd; whichever copy of a page comes second gets EEXIST, and a
 * thread that faulted on it was woken by the first. */
#define _GNU_SOURCE
#include "channel.h"
#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* c->requested[page] */
#define ASKED 1       /* a request was sent */
#define PLACED_HERE 2 /* this thread placed it (asked for, or read ahead by the source) */
#define AHEAD 4       /* with ASKED or PLACED_HERE: asked for as read-ahead of another fault */

/* wakes the threads that faulted on a page placed already (with the waiting
 * map, nothing: every placer wakes its pages' waiters once it took their faults) */
static void wake(struct pc_channel *c, uint64_t addr, uint64_t len)
{
    if (c->waiting)
        return;
    struct uffdio_range r = { .start = addr, .len = len };
    ioctl(c->uffd, UFFDIO_WAKE, &r);
}

/* pc_place() of a requested run (its PLACED events: the pages this thread
 * placed, not those the receiver had placed first), then this thread's
 * bookkeeping. Returns -1 when the kernel refused (the channel failed). */
static int place(struct pc_channel *c, uint64_t off, uint64_t count, const uint8_t *src)
{
    if (pc_place(c, off, count, src, PC_DST_EXISTED, 1) < 0)
        return -1;
    for (uint8_t *r = c->requested + off / c->page_size, *e = r + count; r < e; r++)
        *r = PLACED_HERE | (*r & AHEAD);
    c->st->stats[src ? PC_DST_PLACED : PC_DST_ZERO_PLACED] += (double)count;
    return 0;
}

static int read_faults(struct pc_channel *c);

/* One zero page at addr (`units` pages: a host page), at once:
 * UFFDIO_ZEROPAGE, or UFFDIO_COPY of the zero page on hugetlbfs. 0 = placed. */
static int zero_one(struct pc_channel *c, uint64_t addr, uint64_t units)
{
    int rc;
    if (c->zero_src) {
        struct uffdio_copy cp = { .dst = addr, .src = (uint64_t)(uintptr_t)c->zero_src, .len = units * c->page_size,
                                  .mode = c->waiting ? UFFDIO_COPY_MODE_DONTWAKE : 0 };
        rc = ioctl(c->uffd, UFFDIO_COPY, &cp);
    } else {
        struct uffdio_zeropage zp = { .range = { .start = addr, .len = units * c->page_size },
                                      .mode = c->waiting ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0 };
        rc = ioctl(c->uffd, UFFDIO_ZEROPAGE, &zp);
    }
    if (rc == 0 && c->waiting)
        pc_waiters_wake(c, (addr - c->base) / c->page_size, units);
    return rc;
}

/* read-ahead is placed this many pages at a time, with a look at new faults between */
#define READAHEAD_PIECE 16

/* Checks the record header at r; returns its length, or 0 (the channel failed). */
static size_t record_length(struct pc_channel *c, const uint8_t *r)
{
    const uint64_t ps = c->page_size;
    uint32_t count = pc_le32(r + 4);
    uint64_t off = pc_le64(r + 8);
    if (r[0] == PC_REC_HEARTBEAT) { /* only proves the link lives: no count, no offset, no flags */
        if (r[1] | r[2] | r[3] || count != 0 || off != 0) {
            pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: HEARTBEAT record with fields set (flags 0x%02x, count %u)", r[1], count);
            return 0;
        }
        return PC_RECORD_HEADER;
    }
    if (r[0] != PC_REC_PAGES && r[0] != PC_REC_ZERO) {
        pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: unexpected record type 0x%02x (expected PAGES or ZERO)", r[0]);
        return 0;
    }
    /* every bit but READAHEAD is reserved: nothing of this thread's own is
     * ever kept in the bytes it read (a mark there could come from the peer);
     * bytes 2-3 name the RAM block */
    if ((r[1] & ~PC_REQ_READAHEAD) != 0) {
        pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: %s record with reserved bits set (flags 0x%02x)",
                        r[0] == PC_REC_PAGES ? "PAGES" : "ZERO", r[1]);
        return 0;
    }
    const struct pc_ramblock *b = pc_record_block(c, r);
    if (count == 0 || !b || count > pc_block_max_run(c, b) || pc_record_page(c, r, count) < 0) {
        if (c->nblocks == 1 && b)
            pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: %s record of %u pages at offset %llu is outside guest RAM (%llu pages)",
                            r[0] == PC_REC_PAGES ? "PAGES" : "ZERO", count, (unsigned long long)off, (unsigned long long)c->pages);
        else
            pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: %s record of %u pages at offset %llu is outside RAM block %u (%llu pages)",
                            r[0] == PC_REC_PAGES ? "PAGES" : "ZERO", count, (unsigned long long)off, (unsigned)r[2] | (unsigned)r[3] << 8,
                            (unsigned long long)(b ? b->pages : 0));
        return 0;
    }
    return PC_RECORD_HEADER + (r[0] == PC_REC_PAGES ? (size_t)count * ps : 0);
}

/* Places pages [from, to) of the record at r. Read-ahead goes in pieces,
 * with new faults read (and their requests sent) between pieces. */
static int place_record(struct pc_channel *c, const uint8_t *r, uint64_t from, uint64_t to)
{
    const uint64_t ps = c->page_size;
    uint64_t off = (uint64_t)pc_record_page(c, r, pc_le32(r + 4)) * ps; /* checked by record_length() */
    const uint8_t *data = r[0] == PC_REC_PAGES ? r + PC_RECORD_HEADER : NULL;
    const uint64_t piece = READAHEAD_PIECE > pc_host_units(c, off / ps) ? READAHEAD_PIECE : pc_host_units(c, off / ps);
    while (from < to) {
        uint64_t n = (r[1] & PC_REQ_READAHEAD) && to - from > piece ? piece : to - from;
        if (place(c, off + from * ps, n, data ? data + from * ps : NULL) < 0)
            return -1;
        from += n;
        if (from < to && c->out_cap - c->out_len >= 2 * 64 * PC_RECORD_HEADER &&
            (read_faults(c) < 0 || pc_channel_flush(c) < 0))
            return -1;
    }
    return 0;
}

/* Places what arrived in c->in: first the complete records that answer
 * faults, wherever they are behind read-ahead, then the complete read-ahead
 * records, then the whole pages of a record still arriving (c->head_placed
 * counts those of the record at c->in[0]), so a vCPU following a read-ahead
 * run waits for its page only. Returns -1 when the channel failed. */
static int place_arrived(struct pc_channel *c)
{
    size_t end = 0, len = 0;
    while (c->in_len - end >= PC_RECORD_HEADER) { /* the complete records: [0, end) */
        if ((len = record_length(c, c->in + end)) == 0)
            return -1;
        if (c->in_len - end < len)
            break;
        end += len;
    }
    /* each complete record is placed in exactly one of the two passes (by its
     * READAHEAD bit), and all of [0, end) is dropped after them: no record
     * needs a "placed" mark (the wire's bytes are never written) */
    for (int readahead = 0; readahead <= 1; readahead++) {
        for (size_t pos = 0; pos < end; pos += record_length(c, c->in + pos)) {
            const uint8_t *r = c->in + pos;
            if (((r[1] & PC_REQ_READAHEAD) != 0) != readahead)
                continue;
            if (place_record(c, r, pos == 0 ? c->head_placed : 0, pc_le32(r + 4)) < 0)
                return -1;
        }
    }
    uint64_t done = end == 0 ? c->head_placed : 0;
    if (c->in_len - end >= PC_RECORD_HEADER && c->in[end] == PC_REC_PAGES) { /* arriving: its whole pages */
        uint64_t whole = (c->in_len - end - PC_RECORD_HEADER) / c->page_size;
        if (c->nblocks > 1) /* whole host pages of a huge-page block */
            whole -= whole % pc_host_units(c, (uint64_t)pc_record_page(c, c->in + end, pc_le32(c->in + end + 4)));
        if (whole > done) {
            if (place_record(c, c->in + end, done, whole) < 0)
                return -1;
            done = whole;
        }
    }
    if (end > 0) {
        memmove(c->in, c->in + end, c->in_len - end);
        c->in_len -= end;
    }
    c->head_placed = c->in_len >= PC_RECORD_HEADER ? done : 0;
    return 0;
}

/* Asks for `page` and, in a second request flagged READAHEAD, for the pages
 * after it that are neither here nor asked for, up to c->readahead of them:
 * a guest that touches memory in order finds them in place instead of
 * faulting on each (the source answers in order, so the faulted page comes
 * first and its vCPU resumes before the rest is placed). */
static void request(struct pc_channel *c, uint64_t page)
{
    const uint64_t ps = c->page_size, block_end = pc_block_end(c, page), units = pc_host_units(c, page);
    uint64_t end = page + units; /* a huge-page block beside smaller pages: its whole host page, no read-ahead */
    while (units == 1 && end < block_end && end - page <= c->readahead && c->requested[end] == 0 &&
           !(__atomic_load_n(&c->flags[end], __ATOMIC_ACQUIRE) & PC_PAGE_RECEIVED))
        end++;
    memset(c->requested + page, ASKED, units);
    memset(c->requested + page + units, ASKED | AHEAD, end - page - units);
    if (c->sock < 0)
        return; /* paused: asked for when a link is attached again (request_outstanding()) */
    pc_put_page_record(c, c->out + c->out_len, PC_RP_REQ_PAGES, 0, (uint32_t)(units * ps), page);
    c->out_len += PC_RECORD_HEADER;
    c->st->stats[PC_DST_REQUESTS]++;
    if (end > page + units) {
        pc_put_page_record(c, c->out + c->out_len, PC_RP_REQ_PAGES, PC_REQ_READAHEAD, (uint32_t)((end - page - 1) * ps), page + 1);
        c->out_len += PC_RECORD_HEADER;
        c->st->stats[PC_DST_READAHEAD] += (double)(end - page - 1);
    }
}

/* The page index of a fault message on guest RAM, or -1. */
static int64_t fault_page(const struct pc_channel *c, const struct uffd_msg *m)
{
    if (m->event != UFFD_EVENT_PAGEFAULT)
        return -1;
    uint64_t addr = m->arg.pagefault.address & ~(c->page_size - 1);
    if (addr < c->base || (addr - c->base) / c->page_size >= c->pages)
        return -1;
    return (int64_t)((addr - c->base) / c->page_size);
}

/* The first page of the host page holding `page`: itself, but in a
 * huge-page block beside smaller pages (it moves whole). */
static uint64_t host_start(const struct pc_channel *c, uint64_t page)
{
    if (c->nblocks == 1)
        return page;
    const struct pc_ramblock *b = &c->blocks[pc_block_index(c, page)];
    return page - (page - b->first) % pc_block_units(c, b);
}

/* How a fault on `page` is served (enum pc_fault_cause); asks for the page
 * when nobody has (request()). */
static int serve(struct pc_channel *c, uint64_t page)
{
    if (__atomic_load_n(&c->flags[page], __ATOMIC_ACQUIRE) & PC_PAGE_RECEIVED)
        return PC_CAUSE_RECEIVED;
    uint8_t r = c->requested[page];
    if (r == 0) {
        request(c, page);
        return PC_CAUSE_REQUESTED;
    }
    return (r & AHEAD) ? PC_CAUSE_READAHEAD : PC_CAUSE_INFLIGHT;
}

/* Reads the pending fault messages. Returns how many, or -1 (failed).
 * Each fault is served first (its page asked for, if nobody has: the
 * requests go out at the next flush) and, with blocktime, pushed as a FAULT
 * event with how it was served; all are stamped at the read and pushed
 * before any event this read causes (the ring stays in time order). Then
 * the faults on pages already here are resolved. Whether a fault waited on
 * a page is for the rules to say, in the merged time order of all
 * placements (src/blocktime/rules.ts). */
static int read_faults(struct pc_channel *c)
{
    struct uffd_msg msgs[64];
    uint8_t cause[64];
    const double before = pc_channel_now(c);
    ssize_t n = read(c->uffd, msgs, sizeof msgs);
    if (n < 0) {
        if (errno == EAGAIN)
            pc_channel_mark(c, before); /* nothing was queued before it */
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        pc_channel_fail(c, PC_CH_FAILED, errno, "reading userfaultfd: %s", strerror(errno));
        return -1;
    }
    /* stamped right at the read: the nearest this thread gets to when the
     * faults were raised (the kernel's message carries no time) */
    const double seen = pc_channel_now(c);
    const uint64_t ps = c->page_size;
    int k = (int)(n / (ssize_t)sizeof msgs[0]);
    for (int i = 0; i < k; i++) {
        int64_t page = fault_page(c, &msgs[i]);
        if (page < 0)
            continue;
        c->st->stats[PC_DST_FAULTS]++;
        cause[i] = (uint8_t)serve(c, host_start(c, (uint64_t)page));
        uint32_t tid = msgs[i].arg.pagefault.feat.ptid;
        double t;
        if (c->blocktime && pc_waiters_claim(c, tid, (uint64_t)page, seen, &t) &&
            pc_channel_push(c, PC_EV_FAULT | cause[i] << PC_CAUSE_SHIFT, (double)page, (double)tid, t) < 0)
            return -1;
    }
    if (k < (int)(sizeof msgs / sizeof msgs[0]))
        pc_channel_mark(c, before); /* every fault queued before the read is pushed */
    for (int i = 0; i < k; i++) {
        int64_t sp = fault_page(c, &msgs[i]);
        if (sp < 0)
            continue;
        uint64_t page = host_start(c, (uint64_t)sp), addr = c->base + page * ps, units = pc_host_units(c, page);
        if (cause[i] == PC_CAUSE_RECEIVED) {
            /* known to be zero and never written (placed here, now: the
             * fault waited for this), or placed by the main stream since the
             * fault (EEXIST: that placement woke it) */
            if (zero_one(c, addr, units) != 0)
                wake(c, addr, units * ps);
            else if (c->blocktime && pc_channel_push(c, PC_EV_PLACED, (double)page, (double)units, pc_placed_at(c)) < 0)
                return -1;
            c->st->stats[PC_DST_LOCAL_ZERO]++;
        } else if (c->requested[page] & PLACED_HERE) {
            /* raised while this thread was placing it (a vCPU running ahead
             * into pages the source read ahead): that placement woke it */
            wake(c, addr, units * ps);
        }
    }
    return k;
}

/* clears the wake-up of an attach, a detach or a stop (the loop looks at each) */
static void drain_wake(struct pc_channel *c)
{
    uint64_t v;
    if (read(c->wake_fd, &v, sizeof v) < 0) { /* cleared already */ }
}

/* TypeScript's requests to the thread (pc_fault_thread_attach/detach),
 * numbered in the order they were made: the thread may find both an attach
 * and a detach when it looks (a recovery right after a pause, or a pause
 * right after a recovery's attach) and applies them in that order */
struct link {
    int pending_sock; /* a new urgent channel to take (-1: none) */
    int detach;       /* drop the link (the migration paused on the other channel, or migrate_pause) */
    uint32_t heartbeat_ms; /* the silence that loses the pending link */
    uint32_t seq;     /* requests made (TypeScript's thread only writes it) */
    uint32_t attach_seq, detach_seq; /* the number of the latest attach, detach */
};

/* A page still to come that this thread asked for (`ahead`: as read-ahead). */
static int outstanding(const struct pc_channel *c, uint64_t p, int ahead)
{
    uint8_t r = c->requested[p];
    return (r & ASKED) && !(r & PLACED_HERE) && ((r & AHEAD) != 0) == ahead &&
           !(__atomic_load_n(&c->flags[p], __ATOMIC_ACQUIRE) & PC_PAGE_RECEIVED);
}

/* On a new link: every request still outstanding goes again, in runs,
 * those of faulted pages first. Read-ahead that finds no room is forgotten
 * (the background push brings it, and a fault on it asks again). */
static void request_outstanding(struct pc_channel *c)
{
    const uint64_t ps = c->page_size;
    for (int ahead = 0; ahead <= 1; ahead++) {
        for (uint64_t p = 0; p < c->pages;) {
            if (!outstanding(c, p, ahead)) {
                p++;
                continue;
            }
            const struct pc_ramblock *b = &c->blocks[pc_block_index(c, p)];
            uint64_t q = p + 1, block_end = b->first + b->pages, most = pc_block_max_run(c, b);
            while (q < block_end && q - p < most && outstanding(c, q, ahead))
                q++;
            if (c->out_cap - c->out_len >= PC_RECORD_HEADER) {
                pc_put_page_record(c, c->out + c->out_len, PC_RP_REQ_PAGES, ahead ? PC_REQ_READAHEAD : 0, (uint32_t)((q - p) * ps), p);
                c->out_len += PC_RECORD_HEADER;
                c->st->stats[PC_DST_REREQUESTS] += (double)(q - p);
            } else if (ahead) {
                memset(c->requested + p, 0, q - p);
            }
            p = q;
        }
    }
}

/* The link is lost (its reason is in the status): the thread goes on
 * reading faults, asking for nothing, until a new link is attached. */
static void lose_link(struct pc_channel *c)
{
    close(c->sock);
    c->sock = -1;
    c->in_len = c->out_len = c->out_off = 0;
    c->head_placed = 0;
    __atomic_store_n(&c->st->state, PC_CH_PAUSED, __ATOMIC_RELEASE);
}

/* A detach: the link is dropped (if there is one). */
static void detach_link(struct pc_channel *c)
{
    if (c->st->state != PC_CH_RUNNING)
        return;
    pc_channel_fail(c, PC_CH_CLOSED, 0, "the migration paused");
    lose_link(c);
}

/* TypeScript's requests: a new link (the requests outstanding go on it), or dropping the link;
 * both found at once are applied in the order they were made (the last one wins). */
static void take_requests(struct pc_channel *c)
{
    struct link *l = c->side;
    int detach = __atomic_exchange_n(&l->detach, 0, __ATOMIC_ACQ_REL);
    int sock = __atomic_exchange_n(&l->pending_sock, -1, __ATOMIC_ACQ_REL);
    /* a number read may be of a request made since the exchanges: it is then the newest of its kind,
     * and what it asks for is taken at the next look, which ends on it */
    int detach_last = detach && (int32_t)(__atomic_load_n(&l->detach_seq, __ATOMIC_ACQUIRE) -
                                          __atomic_load_n(&l->attach_seq, __ATOMIC_ACQUIRE)) > 0;
    if (detach && !detach_last)
        detach_link(c); /* a pause, then a recovery: the new link is not the pause's to drop */
    if (sock >= 0) {
        if (c->sock >= 0)
            close(c->sock);
        c->sock = sock;
        c->heartbeat_ns = (double)__atomic_load_n(&l->heartbeat_ms, __ATOMIC_ACQUIRE) * 1e6;
        c->in_len = c->out_len = c->out_off = 0;
        c->head_placed = 0;
        c->last_rx = c->last_tx = pc_channel_now(c);
        c->st->error[0] = 0;
        c->st->err = 0;
        request_outstanding(c);
        __atomic_store_n(&c->st->state, PC_CH_RUNNING, __ATOMIC_RELEASE);
        /* after the state: a reader that sees this link taken sees it running (or lost again) */
        double links = c->st->stats[PC_DST_LINKS] + 1;
        __atomic_store(&c->st->stats[PC_DST_LINKS], &links, __ATOMIC_RELEASE);
    }
    if (detach_last)
        detach_link(c); /* a recovery's attach, then a pause: taken (and counted), then dropped */
}

static void *fault_thread_run(void *arg)
{
    struct pc_channel *c = arg;
    /* room for one read of fault messages (two requests each) */
    const size_t headroom = 2 * 64 * PC_RECORD_HEADER;
    while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
        take_requests(c);
        int state = c->st->state;
        if (state == PC_CH_CLOSED) { /* the link is lost: pause, go on reading faults */
            lose_link(c);
            continue;
        }
        if (state == PC_CH_PAUSED) {
            int faults = read_faults(c);
            if (faults < 0)
                break;
            if (faults == 0 && pc_channel_wait(c, c->uffd, 0) != 0)
                drain_wake(c);
            continue;
        }
        if (state != PC_CH_RUNNING)
            break;
        int room = c->out_cap - c->out_len >= headroom;
        int faults = room ? read_faults(c) : 0;
        if (faults < 0 || pc_channel_flush(c) < 0)
            continue; /* the state says what follows */
        int got = pc_channel_fill(c);
        if (got < 0 || place_arrived(c) < 0)
            continue;
        int ms = pc_channel_heartbeat(c);
        if (ms == -2)
            continue;
        if (faults > 0 || got > 0)
            continue;
        if (pc_channel_wait_ms(c, c->out_cap - c->out_len >= headroom ? c->uffd : -1, c->in_len < c->in_cap, ms) != 0)
            drain_wake(c);
    }
    return NULL;
}

/* Starts the fault thread: faults from `uffd` (guest RAM registered MISSING,
 * non-blocking), requests and pages on `sock` (the urgent channel,
 * non-blocking), `flags` = TypeScript's page flags (bit RECEIVED),
 * `readahead` = pages after a faulted one asked for with it (see request()),
 * `blocks` = the RAM block table (nblocks entries, 0: one block).
 * Returns a handle for pc_channel_stop(), or 0 when it could not start. */
uint64_t pc_fault_thread_start(int uffd, int sock, uint64_t ram_base, uint64_t page_size, uint64_t pages, uint64_t flags,
                               uint32_t readahead, struct pc_channel_status *st, double *ring, uint32_t ring_size, int blocktime,
                               double clock_base, const struct pc_vcpu *vcpus, int nvcpus, uint64_t zero_src,
                               uint32_t heartbeat_ms, uint64_t blocks, uint32_t nblocks)
{
    size_t rec = PC_RECORD_HEADER + pc_max_run_pages(page_size) * page_size, host = PC_RECORD_HEADER + pc_blocks_max_page(blocks, nblocks, page_size);
    if (rec < host)
        rec = host; /* a huge-page block's host page beside smaller pages: one record */
    struct pc_channel *c = pc_channel_new(sock, ram_base, page_size, pages, st, ring, ring_size, clock_base,
                                          2 * rec, 4096 * PC_RECORD_HEADER, PC_DST_BYTES_IN, PC_DST_BYTES_OUT);
    if (!c)
        return 0;
    c->uffd = uffd;
    c->blocktime = blocktime;
    /* a read-ahead request is one run: with huge pages (one a run) there is none */
    c->readahead = readahead < c->max_run ? readahead : (uint32_t)(c->max_run - 1);
    c->zero_src = (const uint8_t *)(uintptr_t)zero_src;
    c->flags = (const uint8_t *)(uintptr_t)flags;
    c->requested = calloc(pages, 1);
    struct link *l = calloc(1, sizeof *l);
    c->side = l;
    if (!c->requested || !l || pc_channel_blocks(c, blocks, nblocks) < 0) {
        pc_channel_free(c);
        return 0;
    }
    if (blocktime && pc_waiters_attach(c, vcpus, nvcpus) < 0) {
        pc_channel_free(c);
        return 0;
    }
    l->pending_sock = -1;
    /* the source's page server runs before this thread starts (and before
     * it is attached again): the silence counts from now */
    c->heartbeat_type = PC_RP_HEARTBEAT;
    c->heartbeat_armed = 1;
    c->heartbeat_ns = (double)heartbeat_ms * 1e6;
    c->last_rx = c->last_tx = pc_channel_now(c);
    st->stats[PC_DST_LINKS] = 1;
    if (pc_channel_spawn(c, fault_thread_run, "postcopy/fault") != 0)
        return 0;
    return (uint64_t)(uintptr_t)c;
}

/* Postcopy recovery: the thread takes `sock` (a new urgent channel,
 * non-blocking) as its link, asks again for every page still outstanding,
 * and runs again (state RUNNING). `heartbeat_ms`: the silence that loses
 * the new link (0: none). */
int pc_fault_thread_attach(uint64_t handle, int sock, uint32_t heartbeat_ms)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    if (!c || sock < 0)
        return -EINVAL;
    struct link *l = c->side;
    __atomic_store_n(&l->heartbeat_ms, heartbeat_ms, __ATOMIC_RELEASE);
    __atomic_store_n(&l->attach_seq, ++l->seq, __ATOMIC_RELEASE);
    int old = __atomic_exchange_n(&l->pending_sock, sock, __ATOMIC_ACQ_REL);
    if (old >= 0)
        close(old);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0) { /* seen at the next look */ }
    return 0;
}

/* The migration paused elsewhere (the main stream, migrate_pause): the
 * thread drops its link (state PAUSED) and goes on reading faults. */
int pc_fault_thread_detach(uint64_t handle)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    if (!c)
        return -EINVAL;
    struct link *l = c->side;
    __atomic_store_n(&l->detach_seq, ++l->seq, __ATOMIC_RELEASE);
    __atomic_store_n(&l->detach, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0) { /* seen at the next look */ }
    return 0;
}
