/* The postcopy page path in native threads (QEMU's postcopy fault thread on
 * the destination, its return-path handling of page requests on the source),
 * and what they share with TypeScript.
 *
 * Both threads own the urgent channel's socket once postcopy starts: the
 * destination's thread reads userfaultfd faults, writes page requests on the
 * urgent channel and places the pages that come back with UFFDIO_COPY; the
 * source's thread reads those requests and answers each with the page read
 * straight from guest RAM. No event loop sits on the path of a requested page.
 *
 * TypeScript learns what happened through a status block (state, error text,
 * counters) and an event ring, both allocated by TypeScript (koffi.alloc) and
 * laid out below; src/native/page-channel.ts mirrors the offsets and
 * pc_channel_layout() lets it check them. */
#ifndef POSTCOPY_CHANNEL_H
#define POSTCOPY_CHANNEL_H
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "vcpu.h"

/* wire.ts, byte for byte */
#define PC_RECORD_HEADER 16
#define PC_MAX_RUN_PAGES 256
/* and at most this many bytes of pages, beyond one page: one huge page a record (wire.ts maxRunPages) */
#define PC_MAX_RUN_BYTES (1u << 20)
#define PC_REC_PAGES 0x02
#define PC_REC_ZERO 0x03
#define PC_RP_REQ_PAGES 0x41
/* postcopy's heartbeats on the urgent channel (wire.ts): the page server
 * sends HEARTBEAT, the fault thread RP_HEARTBEAT, each after
 * PC_HEARTBEAT_EVERY_MS with nothing else sent; silence longer than the
 * receiving side's x-postcopy-heartbeat-ms is a lost link */
#define PC_REC_HEARTBEAT 0x0a
#define PC_RP_HEARTBEAT 0x48
#define PC_HEARTBEAT_EVERY_MS 100
/* flag of REQ_PAGES, and of the PAGES/ZERO records answering it: pages
 * after a faulted one, asked for ahead of need */
#define PC_REQ_READAHEAD 0x01

/* destination page flags (incoming.ts): the page's content is here */
#define PC_PAGE_RECEIVED 1
/* ... and was written in precopy (a page sent again is copied over in place) */
#define PC_PAGE_POPULATED 2

/* CLOSED: the link is lost (EOF, any socket error, heartbeat silence);
 * FAILED: anything else (a protocol violation, the kernel refused);
 * PAUSED: the fault thread lost its link and goes on reading faults until
 * TypeScript attaches a new one (postcopy recovery) */
enum pc_channel_state { PC_CH_RUNNING = 0, PC_CH_STOPPED = 1, PC_CH_CLOSED = 2, PC_CH_FAILED = 3, PC_CH_PAUSED = 4 };

/* ring entry kinds: 4 doubles each {kind, page, arg, t_ns} */
enum pc_channel_event {
    PC_EV_FAULT = 1,  /* destination: a vCPU (thread id = arg) faulted on a missing page (| cause, below) */
    PC_EV_PLACED = 2, /* destination: arg pages from page were placed */
    PC_EV_SERVED = 3, /* source: arg pages from page were sent on request */
};
/* A FAULT entry's kind also says how the fault thread served the fault, in
 * the bits from PC_CAUSE_SHIFT up: PC_EV_FAULT | cause << PC_CAUSE_SHIFT
 * (src/blocktime/trace.ts FaultCause, same numbers) */
#define PC_CAUSE_SHIFT 4
enum pc_fault_cause {
    PC_CAUSE_REQUESTED = 1, /* it sent the page request (the first fault on the page) */
    PC_CAUSE_READAHEAD = 2, /* the page was asked for already, as read-ahead of an earlier fault */
    PC_CAUSE_INFLIGHT = 3,  /* the page was asked for already, for an earlier fault */
    PC_CAUSE_RECEIVED = 4,  /* the page was here already (known zero, or pushed since): no request */
    PC_CAUSE_UNREAD = 5,    /* not read: the page's placement found the vCPU asleep on it (waiters.c) */
};

/* destination counters (stats[]) */
enum { PC_DST_FAULTS = 0, PC_DST_REQUESTS, PC_DST_PLACED, PC_DST_ZERO_PLACED, PC_DST_LOCAL_ZERO, PC_DST_EXISTED,
       PC_DST_BYTES_IN, PC_DST_BYTES_OUT, PC_DST_READAHEAD, PC_DST_REREQUESTS /* pages asked for again on a new link */,
       PC_DST_LINKS /* links taken: the first, and one per attach */ };
/* source counters (stats[]); CLEARED: requested pages it sent first (the
 * push need not send them), INFLIGHT: requested pages sent already */
enum { PC_SRC_REQUESTS = 0, PC_SRC_NORMAL, PC_SRC_ZERO, PC_SRC_BYTES_OUT, PC_SRC_BYTES_IN, PC_SRC_READAHEAD,
       PC_SRC_CLEARED, PC_SRC_INFLIGHT };
/* source main-stream sender (stream_sender.c) stats[]: counters it keeps,
 * then inputs TypeScript (LIMIT bytes/s, 0 = none; ACKED, WINDOW: bytes) or
 * the page server (HINT: page + 1 to go on from, 0 = none) write, then WRITING */
enum { PC_SND_NORMAL = 0, PC_SND_ZERO, PC_SND_BYTES_OUT, PC_SND_BYTES_IN, PC_SND_SENT, PC_SND_PASSES, PC_SND_WRITES,
       PC_SND_CURSOR, PC_SND_LAST_SENT, PC_SND_LIMIT, PC_SND_ACKED, PC_SND_WINDOW, PC_SND_HINT,
       PC_SND_WRITING /* the stream's bytes up to the end of the writev in progress (or the last): no RP_ACK goes beyond */ };
/* source page flags (outgoing.ts): must be sent; the destination holds a copy */
#define PC_SRC_NEED 1
#define PC_SRC_HAS 2
/* destination main-stream receiver (stream_receiver.c) counters (stats[]);
 * CTL_LEN / CTL_AT: the bytes handed back and their stream offset;
 * TRUNCATED: 1 when the stream ended inside a record */
enum { PC_RCV_NORMAL = 0, PC_RCV_ZERO, PC_RCV_RECEIVED, PC_RCV_PLACE_CALLS, PC_RCV_BYTES_IN, PC_RCV_BYTES_OUT,
       PC_RCV_CTL_LEN, PC_RCV_CTL_AT, PC_RCV_EXISTED, PC_RCV_TRUNCATED };
/* the receiver's mode, set on each resume: page records may come (the
 * header was checked), postcopy placement */
#define PC_RCV_MODE_PAGES 1
#define PC_RCV_MODE_POSTCOPY 2

/* One RAM block (QEMU's RAMBlock) as the page path sees it. Page records
 * name their block in bytes 2-3 of the record header (its index in the
 * stream header's list) and an offset inside it, as QEMU's idstr + offset;
 * every thread holds guest RAM's pages numbered from 0 across the blocks,
 * which lie back to back in guest RAM's one mapping, in this order.
 * TypeScript writes the table (src/native/ram-block-table.ts); each thread
 * copies it at start. No table (0 blocks): one block of all of guest RAM.
 * A page is the channel's page_size, the smallest page of all blocks (QEMU's
 * target page); a block of huge pages beside 4 KiB ones moves in whole host
 * pages (page_size / c->page_size pages: its "host units"), as QEMU's
 * postcopy does: requested, sent, placed and discarded whole. */
struct pc_ramblock {
    uint64_t offset;    /* its first byte in guest RAM (QEMU's block->offset) */
    uint64_t first;     /* its first page among guest RAM's pages */
    uint64_t pages;     /* used_length / the channel's page size */
    uint64_t page_size; /* its host page size */
};
#define PC_MAX_BLOCKS 64

#define PC_STATS 16
#define PC_ERROR_BYTES 256

struct pc_channel_status {
    uint32_t ring_tail;   /*   0 entries pushed (the thread stores, release) */
    uint32_t ring_head;   /*   4 entries consumed (TypeScript stores) */
    int32_t state;        /*   8 enum pc_channel_state */
    int32_t err;          /*  12 errno of a failure, 0 for a protocol error */
    double stats[PC_STATS]; /* 16 */
    char error[PC_ERROR_BYTES]; /* 144 */
    /* 400: events dated before this (the thread's clock, as its events')
     * have all been pushed; the fault thread: when its last read of the
     * userfaultfd began (a fault it reads later was queued after it, or
     * is dated by an access stamp the vCPU still holds) */
    double watermark;
    int32_t idle;         /* 408: 1 while the thread waits in poll (stamps nothing) */
    int32_t handback;     /* 412: receiver: 1 while records wait in the control buffer for TypeScript */
};

/* One thread's state; common to both sides. The thread owns `sock` (a dup
 * TypeScript handed over) and closes it when stopped. */
struct pc_channel {
    pthread_t thread;
    int sock;
    int wake_fd;          /* eventfd: pc_channel_stop() wakes the thread */
    int stop;
    uint64_t base, page_size, pages;
    struct pc_ramblock *blocks; /* the RAM blocks, sorted by first page (pc_channel_blocks) */
    uint32_t nblocks;
    uint64_t max_run;     /* pages in one PAGES record at most (pc_max_run_pages) */
    struct pc_channel_status *st;
    double *ring;
    uint32_t ring_mask;
    double clock_base;
    /* input (socket) */
    uint8_t *in;
    size_t in_len, in_cap;
    int stat_bytes_in;    /* stats[] index counting bytes read */
    int stat_bytes_out;   /* stats[] index counting bytes written */
    /* output (socket) */
    uint8_t *out;
    size_t out_off, out_len, out_cap;
    /* side specific */
    int uffd;             /* destination */
    int blocktime;        /* destination: push FAULT events */
    const uint8_t *flags; /* destination: page flags shared with TypeScript */
    uint8_t *requested;   /* destination: asked for already, or placed here */
    const uint8_t *zero_src; /* destination: a zeroed page that zero pages are copied from (hugetlbfs has
                              * no UFFDIO_ZEROPAGE), or NULL: UFFDIO_ZEROPAGE */
    uint32_t readahead;   /* destination: pages after a faulted one asked for with it */
    uint64_t head_placed; /* destination: pages already placed of the record at c->in[0] */
    const struct pc_vcpu *vcpus; /* destination: the vCPU blocks (access stamps), or NULL */
    int nvcpus;
    uint64_t *waiting;    /* destination, blocktime: the vCPUs' waiting map (waiters.c), or NULL */
    uint64_t waiting_per; /* its words (vCPU pages) per page of this channel */
    double woken_at;      /* with it: when pc_waiters_wake last woke a placement's waiters */
    int32_t *vcpu_tids;   /* destination: open-addressing table tid -> vCPU index + 1 (pairs) */
    uint32_t vcpu_mask;   /* its slots - 1 */
    const char *what;     /* the channel's name in errors ("urgent channel" unless set) */
    void (*at_eof)(struct pc_channel *c); /* the peer closed: says why (else a plain "closed") */
    void *side;           /* a side's own state (freed with the channel, by side_free if set) */
    void (*side_free)(void *side);
    /* heartbeats (postcopy's urgent channel): the record to send (0: none),
     * the silence that loses the link (ns, 0: never), whether that clock
     * runs yet (from the first bytes received, or from the start), and
     * when bytes last came and went */
    int heartbeat_type;
    int heartbeat_armed;
    double heartbeat_ns;
    double last_rx, last_tx;
};

double pc_channel_now(const struct pc_channel *c);
int pc_channel_push(struct pc_channel *c, int kind, double page, double arg, double t);
void pc_channel_fail(struct pc_channel *c, int state, int err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* writes what is queued; 0 = all out, 1 = some left (socket full), -1 = failed */
int pc_channel_flush(struct pc_channel *c);
/* reads what the socket has into c->in; 1 = got bytes, 0 = nothing now, -1 = closed or failed */
int pc_channel_fill(struct pc_channel *c);
/* heartbeats: queues one when nothing went out for PC_HEARTBEAT_EVERY_MS
 * (and there is room); fails the link (CLOSED) after heartbeat_ns of
 * silence. Returns -2 when the link is lost, else the ms until the next
 * look, for poll (-1: no limit). */
int pc_channel_heartbeat(struct pc_channel *c);
/* publishes the watermark `t`: every event dated before it has been pushed */
void pc_channel_mark(struct pc_channel *c, double t);
/* poll(2) of p[0, n) for `ms` (-1: no limit), EINTR retried, the thread
 * marked idle meanwhile (see pc_channel_status.idle); a failure of poll
 * itself fails the channel (state failed, errno, "what: poll: ...") and
 * returns -1, else poll's count */
int pc_channel_poll(struct pc_channel *c, struct pollfd *p, nfds_t n, int ms);
/* waits in poll for the socket (and extra_fd when >= 0); 1 = stop asked,
 * or poll failed (the channel failed). */
int pc_channel_wait(struct pc_channel *c, int extra_fd, int want_in);
/* pc_channel_wait() for at most `ms` (-1: no limit) */
int pc_channel_wait_ms(struct pc_channel *c, int extra_fd, int want_in, int ms);
/* NULL when out of memory (the socket is closed then) */
struct pc_channel *pc_channel_new(int sock, uint64_t base, uint64_t page_size, uint64_t pages,
                                  struct pc_channel_status *st, double *ring, uint32_t ring_size,
                                  double clock_base, size_t in_cap, size_t out_cap, int stat_bytes_in, int stat_bytes_out);
/* starts run(c) in a thread named `name` (QEMU's thread names where it has
 * one: top and perf show them); on failure frees c (and closes its socket) */
int pc_channel_spawn(struct pc_channel *c, void *(*run)(void *), const char *name);
void pc_channel_free(struct pc_channel *c);
/* waiters.c: the faults a placement wakes before the fault thread read them */
/* the vCPUs whose faults this channel dates by their access stamps and,
 * when their blocks name a waiting map, whose sleeps its placements report;
 * -1 when out of memory */
int pc_waiters_attach(struct pc_channel *c, const struct pc_vcpu *vcpus, int nvcpus);
/* the fault thread read a fault of thread `tid` on `page`: 1 = push it, dated *t
 * (its access stamp, or `seen`); 0 = a placement reported that access already */
int pc_waiters_claim(struct pc_channel *c, uint32_t tid, uint64_t page, double seen, double *t);
/* pages [first, first+n) were placed without waking (c->waiting set): the
 * vCPUs asleep on them that nobody reported are pushed as FAULT events
 * (UNREAD), then the pages' waiters are woken. -1 when the ring failed. */
int pc_waiters_wake(struct pc_channel *c, uint64_t first, uint64_t n);
/* the time of the placement just made, for its PLACED event: when its
 * waiters were woken (with the waiting map), else now, right after the ioctl
 * that woke them */
static inline double pc_placed_at(const struct pc_channel *c)
{
    return c->waiting ? c->woken_at : pc_channel_now(c);
}

/* takes the RAM block table (n entries at `table`, copied; 0: one block of
 * all of guest RAM); -1 when it is malformed or out of memory */
int pc_channel_blocks(struct pc_channel *c, uint64_t table, uint32_t n);
/* the index of the block holding `page` (a binary search: few blocks) */
uint32_t pc_block_index(const struct pc_channel *c, uint64_t page);
/* the first page after the block holding `page` (a run never crosses it) */
static inline uint64_t pc_block_end(const struct pc_channel *c, uint64_t page)
{
    const struct pc_ramblock *b = &c->blocks[pc_block_index(c, page)];
    return b->first + b->pages;
}
/* pages per host page of block b: 1, or a huge page's beside smaller pages */
static inline uint64_t pc_block_units(const struct pc_channel *c, const struct pc_ramblock *b)
{
    return b->page_size / c->page_size;
}
/* pages per host page of the block holding `page` (1 with one block) */
static inline uint64_t pc_host_units(const struct pc_channel *c, uint64_t page)
{
    return c->nblocks == 1 ? 1 : pc_block_units(c, &c->blocks[pc_block_index(c, page)]);
}
/* pages one PAGES record of block b holds at most: one host page of a huge-page block, else c->max_run */
static inline uint64_t pc_block_max_run(const struct pc_channel *c, const struct pc_ramblock *b)
{
    uint64_t u = pc_block_units(c, b);
    return u > 1 ? u : c->max_run;
}
/* the largest host page of a block table (n entries at `table`), at least page_size: what buffers hold */
uint64_t pc_blocks_max_page(uint64_t table, uint32_t n, uint64_t page_size);
/* writes a page record header (PAGES, ZERO, REQ_PAGES) for guest page
 * `page`: its block's index and the page's offset in the block */
void pc_put_page_record(const struct pc_channel *c, uint8_t *p, int type, int flags, uint32_t count, uint64_t page);
/* the block a page record names (bytes 2-3), or NULL when there is none */
const struct pc_ramblock *pc_record_block(const struct pc_channel *c, const uint8_t *r);
/* the guest page where the page record at r starts, when it and the n-1
 * pages after it lie inside its block, in whole host pages, else -1 */
int64_t pc_record_page(const struct pc_channel *c, const uint8_t *r, uint64_t n);

/* most pages in one PAGES record of page_size-byte pages (256 of 4 KiB, one huge page) */
uint64_t pc_max_run_pages(uint64_t page_size);
/* stops the thread (it leaves poll at once), joins it, frees the channel */
int pc_channel_stop(uint64_t handle);
int pc_page_is_zero(const uint8_t *p, uint64_t len);
uint64_t pc_le64(const uint8_t *p);
uint32_t pc_le32(const uint8_t *p);
void pc_put_record(uint8_t *p, int type, int flags, uint32_t count, uint64_t offset);
/* UFFDIO_COPY from `src` (UFFDIO_ZEROPAGE when src is NULL; on hugetlbfs,
 * UFFDIO_COPY of c->zero_src page by page when it is set) of `count` pages
 * at `off` into c->uffd, retried on EAGAIN; a page present already (placed
 * by the other placer) is skipped, its waiters woken (unless quiet: the
 * other placer wakes them), stats[stat_existed] counted. With `events`, a
 * PLACED event for each stretch it placed itself, dated when its waiters
 * were woken (pc_placed_at). 0, or -1 when the kernel refused or the ring
 * could not take an event (the channel failed or stops). */
int pc_place(struct pc_channel *c, uint64_t off, uint64_t count, const uint8_t *src, int stat_existed, int events);

#endif
