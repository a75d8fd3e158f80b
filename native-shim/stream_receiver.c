/* The destination's main-stream reader (QEMU's ram_load, in a thread of its
 * own): reads the source's stream from the main socket, places PAGES and
 * ZERO runs into guest RAM and marks them received, with no event loop on
 * the way. Every other record (HEADER, DISCARD, END_ROUND, SWITCHOVER, END,
 * ERROR) and every page record it cannot prove valid is handed back to
 * TypeScript, whole, in a control buffer TypeScript allocated: wire.ts
 * decodes it (one codec, one definition of each record), acts, and resumes
 * the thread. The thread knows only the framing (which records carry `count`
 * bytes of payload); what a record means stays in wire.ts.
 *
 * Placement:
 *  - precopy, guest RAM registered with userfaultfd (MISSING): a page never
 *    written yet goes in with UFFDIO_COPY (cheaper here than a first-touch
 *    fault), a page sent again (dirtied) is copied over in place; a ZERO run
 *    over written pages drops them (MADV_DONTNEED). Only this thread writes
 *    the page flags then (TypeScript does only while the thread is paused on
 *    a hand-back), and it counts the pages it marked received;
 *  - not registered (no userfaultfd, no postcopy): plain copies;
 *  - postcopy: UFFDIO_COPY / UFFDIO_ZEROPAGE only (on hugetlbfs, which has
 *    no UFFDIO_ZEROPAGE, zero pages are copied from a zeroed page; a page the fault thread
 *    placed first is skipped, EEXIST), each run pushed to the ring as a
 *    PLACED event stamped right after its ioctl, as the fault thread does:
 *    TypeScript marks those pages received and feeds the blocktime from the
 *    two rings in time order; with the blocktime, the faults of vCPUs asleep
 *    on a run that the fault thread had not read yet too, before they are
 *    woken (waiters.c). In postcopy this thread also acknowledges what
 *    it consumed (RP_ACK, the source's flow-control window). */
#define _GNU_SOURCE
#include "channel.h"
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* wire.ts, byte for byte (framing only) */
#define REC_HEADER 0x01
#define REC_DISCARD 0x04
#define REC_END_ROUND 0x05
#define REC_SWITCHOVER 0x06
#define REC_END 0x07
#define REC_ERROR 0x08
#define REC_RESUME 0x09
#define RP_ACK 0x45
#define MAX_VAR_PAYLOAD (256 * 1024)
/* acknowledge every this many bytes consumed, in postcopy (incoming.ts said 64 KiB) */
#define ACK_EVERY (64 * 1024)

struct receiver {
    uint8_t *ctl;         /* TypeScript's control buffer */
    size_t ctl_cap, ctl_len;
    uint64_t ctl_at;      /* stream offset of ctl[0] */
    int mode;             /* PC_RCV_MODE_*, set by TypeScript on resume */
    uint64_t consumed;    /* stream bytes parsed */
    uint64_t run_off, run_left; /* a PAGES record whose payload is arriving */
    uint64_t run_units;    /* its pages are placed this many at a time (a huge-page block's host page) */
    uint64_t acked;
    int terminal;         /* END or ERROR handed back: nothing follows, nothing more is read */
    uint8_t ack[PC_RECORD_HEADER];
    uint8_t *flags;       /* page flags shared with TypeScript */
};

/* Hands the control records gathered so far to TypeScript and pauses. */
static void hand_back(struct pc_channel *c, struct receiver *r)
{
    c->st->stats[PC_RCV_CTL_LEN] = (double)r->ctl_len;
    c->st->stats[PC_RCV_CTL_AT] = (double)r->ctl_at;
    r->ctl_len = 0;
    __atomic_store_n(&c->st->handback, 1, __ATOMIC_RELEASE);
}

static void take(struct receiver *r, const uint8_t *rec, size_t n)
{
    if (r->ctl_len == 0)
        r->ctl_at = r->consumed;
    memcpy(r->ctl + r->ctl_len, rec, n);
    r->ctl_len += n;
    r->consumed += n;
}

/* a PAGES/ZERO record this thread may place (else wire.ts says what is wrong) */
static int placeable(const struct pc_channel *c, const uint8_t *h, int mode)
{
    uint32_t count = pc_le32(h + 4);
    /* a ZERO run has no payload, hence no bound but its RAM block's; a PAGES
     * run at most its block's run (one record of huge pages is one page:
     * wire.ts maxRunPages); bytes 2-3 name the block */
    const struct pc_ramblock *b = pc_record_block(c, h);
    return (mode & PC_RCV_MODE_PAGES) && h[1] == 0 && count >= 1 && b &&
           (h[0] == PC_REC_ZERO || count <= pc_block_max_run(c, b)) && pc_record_page(c, h, count) >= 0;
}

/* payload bytes of a control record, or -1 when it is none wire.ts accepts
 * (then only its header is handed back, and wire.ts names the problem) */
static int64_t payload_length(int type, uint32_t count)
{
    switch (type) {
    case REC_DISCARD: case REC_END_ROUND: case REC_END: case REC_RESUME: return 0;
    case REC_HEADER: case REC_SWITCHOVER: case REC_ERROR: return count <= MAX_VAR_PAYLOAD ? (int64_t)count : -1;
    default: return -1;
    }
}

/* marks [first, first+n) received (precopy: this thread owns the flags), `populated` or not */
static void mark(struct pc_channel *c, struct receiver *r, uint64_t first, uint64_t n, int populated)
{
    double fresh = 0;
    for (uint64_t p = first; p < first + n; p++) {
        uint8_t f = r->flags[p];
        fresh += !(f & PC_PAGE_RECEIVED);
        r->flags[p] = (uint8_t)((populated ? f | PC_PAGE_POPULATED : f & ~PC_PAGE_POPULATED) | PC_PAGE_RECEIVED);
    }
    c->st->stats[PC_RCV_RECEIVED] += fresh;
}

/* postcopy: pc_place() with its PLACED events (the pages this thread placed, not those the fault thread placed first) */
static int place_postcopy(struct pc_channel *c, uint64_t off, uint64_t n, const uint8_t *src)
{
    c->st->stats[PC_RCV_PLACE_CALLS]++;
    return pc_place(c, off, n, src, PC_RCV_EXISTED, 1);
}

static int place_pages(struct pc_channel *c, struct receiver *r, uint64_t off, uint64_t n, const uint8_t *src, int mode)
{
    const uint64_t ps = c->page_size, first = off / ps;
    c->st->stats[PC_RCV_NORMAL] += (double)n;
    if (mode & PC_RCV_MODE_POSTCOPY)
        return place_postcopy(c, off, n, src);
    if (c->uffd < 0) {
        memcpy((uint8_t *)(uintptr_t)(c->base + off), src, n * ps);
    } else {
        for (uint64_t p = first; p < first + n;) { /* runs of pages alike: written already, or not yet */
            int populated = (r->flags[p] & PC_PAGE_POPULATED) != 0;
            uint64_t q = p + 1;
            while (q < first + n && ((r->flags[q] & PC_PAGE_POPULATED) != 0) == populated)
                q++;
            const uint8_t *from = src + (p - first) * ps;
            if (populated) {
                memcpy((uint8_t *)(uintptr_t)(c->base + p * ps), from, (q - p) * ps);
            } else {
                if (pc_place(c, p * ps, q - p, from, PC_RCV_EXISTED, 0) < 0)
                    return -1;
                c->st->stats[PC_RCV_PLACE_CALLS]++;
            }
            p = q;
        }
    }
    mark(c, r, first, n, 1);
    return 0;
}

static int place_zero(struct pc_channel *c, struct receiver *r, uint64_t off, uint64_t n, int mode)
{
    const uint64_t ps = c->page_size, first = off / ps;
    c->st->stats[PC_RCV_ZERO] += (double)n;
    if (mode & PC_RCV_MODE_POSTCOPY)
        return place_postcopy(c, off, n, NULL);
    for (uint64_t p = first; p < first + n; p++) {
        if (r->flags[p] & PC_PAGE_POPULATED) { /* it held data that is zero now */
            /* a shared mapping (memory-backend-file/memfd share=on, hugetlbfs)
             * keeps its pages in the file: MADV_REMOVE frees them there, as
             * the TypeScript discard does; a private one refuses it (EACCES,
             * EINVAL): MADV_DONTNEED */
            void *at = (void *)(uintptr_t)(c->base + off);
            if (madvise(at, n * ps, MADV_REMOVE) != 0 && madvise(at, n * ps, MADV_DONTNEED) != 0) {
                pc_channel_fail(c, PC_CH_FAILED, errno, "madvise(DONTNEED) of %llu pages at offset %llu: %s",
                                (unsigned long long)n, (unsigned long long)off, strerror(errno));
                return -1;
            }
            break;
        }
    }
    mark(c, r, first, n, 0);
    return 0;
}

/* Places and gathers what c->in holds; stops at a hand-back, or where more
 * bytes are needed. Returns -1 when the thread failed. */
static int parse(struct pc_channel *c, struct receiver *r)
{
    const uint64_t ps = c->page_size;
    const int mode = __atomic_load_n(&r->mode, __ATOMIC_ACQUIRE);
    size_t pos = 0, len = c->in_len;
    int rc = 0;
    for (;;) {
        if (r->run_left > 0) {
            uint64_t whole = (len - pos) / ps;
            if (whole > r->run_left)
                whole = r->run_left;
            whole -= whole % r->run_units; /* a huge-page block's host page goes in whole */
            if (whole == 0)
                break;
            if (place_pages(c, r, r->run_off, whole, c->in + pos, mode) < 0) {
                rc = -1;
                break;
            }
            pos += whole * ps;
            r->consumed += whole * ps;
            r->run_off += whole * ps;
            r->run_left -= whole;
            continue;
        }
        if (len - pos < PC_RECORD_HEADER)
            break;
        const uint8_t *h = c->in + pos;
        if (h[0] == PC_REC_PAGES || h[0] == PC_REC_ZERO) {
            if (r->ctl_len > 0) { /* TypeScript acts on what came before first (a DISCARD, the switchover) */
                hand_back(c, r);
                break;
            }
            if (!placeable(c, h, mode)) {
                take(r, h, PC_RECORD_HEADER);
                hand_back(c, r);
                break;
            }
            uint32_t count = pc_le32(h + 4);
            uint64_t off = (uint64_t)pc_record_page(c, h, count) * ps; /* in guest RAM (placeable() checked it) */
            pos += PC_RECORD_HEADER;
            r->consumed += PC_RECORD_HEADER;
            if (h[0] == PC_REC_PAGES) {
                r->run_off = off;
                r->run_left = count;
                r->run_units = pc_host_units(c, off / ps);
            } else if (place_zero(c, r, off, count, mode) < 0) {
                rc = -1;
                break;
            }
            continue;
        }
        int64_t plen = payload_length(h[0], pc_le32(h + 4));
        size_t total = PC_RECORD_HEADER + (size_t)(plen < 0 ? 0 : plen);
        if (len - pos < total)
            break;
        if (r->ctl_len + total > r->ctl_cap) {
            hand_back(c, r);
            break;
        }
        int type = h[0];
        take(r, h, total);
        pos += total;
        if (type == REC_END || type == REC_ERROR)
            r->terminal = 1;
        if (plen < 0 || (type != REC_DISCARD && type != REC_END_ROUND)) {
            hand_back(c, r); /* wire.ts's error, or a record TypeScript must act on before anything else */
            break;
        }
    }
    if (pos > 0) {
        memmove(c->in, c->in + pos, len - pos);
        c->in_len = len - pos;
    }
    return rc;
}

/* the source closed the stream: inside a record, it is truncated */
static void at_eof(struct pc_channel *c)
{
    struct receiver *r = c->side;
    if (r->run_left > 0 || c->in_len > 0) {
        c->st->stats[PC_RCV_TRUNCATED] = 1;
        pc_channel_fail(c, PC_CH_CLOSED, 0, "truncated stream: ended inside a record at byte %llu", (unsigned long long)r->consumed);
    } else {
        pc_channel_fail(c, PC_CH_CLOSED, 0, "the source closed the connection");
    }
}

/* postcopy: RP_ACK of the bytes consumed, every ACK_EVERY (a 16-byte send
 * is taken whole or not at all: it never interleaves with TypeScript's
 * return-path records on the same connection) */
static void acknowledge(struct pc_channel *c, struct receiver *r)
{
    if (!(__atomic_load_n(&r->mode, __ATOMIC_ACQUIRE) & PC_RCV_MODE_POSTCOPY) || r->consumed - r->acked < ACK_EVERY)
        return;
    pc_put_record(r->ack, RP_ACK, 0, 0, r->consumed);
    ssize_t n = send(c->sock, r->ack, sizeof r->ack, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == (ssize_t)sizeof r->ack) {
        r->acked = r->consumed;
        c->st->stats[PC_RCV_BYTES_OUT] += (double)n;
    }
}

/* waits for the socket (or, with want_sock 0, only for TypeScript's resume
 * or stop), idle meanwhile */
static void wait_for(struct pc_channel *c, int want_sock)
{
    struct pollfd p[2] = { { .fd = c->wake_fd, .events = POLLIN }, { .fd = c->sock, .events = POLLIN } };
    if (pc_channel_poll(c, p, want_sock ? 2 : 1, -1) < 0)
        return; /* failed: the loop ends on the state */
    uint64_t v;
    if ((p[0].revents & POLLIN) && read(c->wake_fd, &v, sizeof v) < 0) { /* cleared by another read */ }
}

static void *receiver_run(void *arg)
{
    struct pc_channel *c = arg;
    struct receiver *r = c->side;
    while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED) && c->st->state == PC_CH_RUNNING) {
        if (r->terminal || __atomic_load_n(&c->st->handback, __ATOMIC_ACQUIRE)) {
            wait_for(c, 0); /* for the resume, or (terminal) for the stop */
            continue;
        }
        /* every event this pass pushes is stamped after this */
        pc_channel_mark(c, pc_channel_now(c));
        if (parse(c, r) < 0)
            break;
        if (__atomic_load_n(&c->st->handback, __ATOMIC_ACQUIRE))
            continue;
        if (r->ctl_len > 0) { /* nothing more here for now: TypeScript takes what was gathered */
            hand_back(c, r);
            continue;
        }
        acknowledge(c, r);
        int got = pc_channel_fill(c);
        if (got < 0)
            break;
        if (got == 0)
            wait_for(c, 1);
    }
    return NULL;
}

/* Starts the reader on `sock` (the main connection, non-blocking; the
 * thread reads it, TypeScript still writes the return path on its own fd):
 * `flags` = the page flags, `ctl` = the control buffer (at least
 * 16 + 256 KiB), `blocks` = the RAM block table (nblocks entries, 0: one
 * block). Guest RAM's userfaultfd comes with the first resume (it is
 * opened once the header is checked). Returns a handle for
 * pc_channel_stop() and pc_stream_receiver_resume(), or 0. */
uint64_t pc_stream_receiver_start(int sock, uint64_t ram_base, uint64_t page_size, uint64_t pages, uint64_t flags, uint8_t *ctl,
                                  uint32_t ctl_cap, struct pc_channel_status *st, double *ring, uint32_t ring_size, double clock_base,
                                  uint64_t blocks, uint32_t nblocks)
{
    size_t in_cap = 512u << 10; /* stays in cache between recv and UFFDIO_COPY */
    const uint64_t host = pc_blocks_max_page(blocks, nblocks, page_size); /* a huge-page block's host page beside smaller pages */
    if (in_cap < 4 * host + PC_RECORD_HEADER + MAX_VAR_PAYLOAD)
        in_cap = 4 * host + PC_RECORD_HEADER + MAX_VAR_PAYLOAD;
    if (ctl_cap < PC_RECORD_HEADER + MAX_VAR_PAYLOAD) {
        close(sock);
        return 0;
    }
    struct pc_channel *c = pc_channel_new(sock, ram_base, page_size, pages, st, ring, ring_size, clock_base, in_cap, 64,
                                          PC_RCV_BYTES_IN, PC_RCV_BYTES_OUT);
    if (!c)
        return 0;
    struct receiver *r = calloc(1, sizeof *r);
    if (!r || pc_channel_blocks(c, blocks, nblocks) < 0) {
        free(r);
        pc_channel_free(c);
        return 0;
    }
    r->ctl = ctl;
    r->ctl_cap = ctl_cap;
    r->run_units = 1;
    r->flags = (uint8_t *)(uintptr_t)flags;
    c->side = r;
    c->what = "migration stream";
    c->at_eof = at_eof;
    st->handback = 0;
    if (pc_channel_spawn(c, receiver_run, "mig/dst/main") != 0)
        return 0;
    return (uint64_t)(uintptr_t)c;
}

/* TypeScript took the handed-back records: go on in `mode` (PC_RCV_MODE_*),
 * placing into `uffd` (-1: guest RAM is not registered), zero pages copied
 * from `zero_src` (a zeroed page: hugetlbfs has no UFFDIO_ZEROPAGE) or, 0,
 * with UFFDIO_ZEROPAGE. */
int pc_stream_receiver_resume(uint64_t handle, int mode, int uffd, uint64_t zero_src, const struct pc_vcpu *vcpus, int nvcpus)
{
    struct pc_channel *c = (struct pc_channel *)(uintptr_t)handle;
    if (!c)
        return -EINVAL;
    struct receiver *r = c->side;
    if (vcpus && !c->vcpus && pc_waiters_attach(c, vcpus, nvcpus) < 0)
        return -ENOMEM;
    c->uffd = uffd;
    c->zero_src = (const uint8_t *)(uintptr_t)zero_src;
    __atomic_store_n(&r->mode, mode, __ATOMIC_RELEASE);
    __atomic_store_n(&c->st->handback, 0, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0) { /* the thread sees handback = 0 at its next look */ }
    return 0;
}
