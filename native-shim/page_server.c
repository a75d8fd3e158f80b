/* The source's page server (QEMU's return-path page requests, served at once):
 * a thread that reads page requests (REQ_PAGES, faulted pages and read-ahead)
 * from the urgent channel and answers each with its pages read straight from
 * guest RAM, as PAGES and ZERO records (runs of data pages and of zero
 * pages), in the order asked. The source's vCPUs are stopped in postcopy, so
 * RAM does not change under it. Each answered request is pushed to the event
 * ring (SERVED) so the background push in TypeScript skips those pages and
 * goes on just after them. */
#define _GNU_SOURCE
#include "channel.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define page_is_zero pc_page_is_zero
/* wire.ts RP_ERROR: the destination says why (it refused this connection as its urgent channel) */
#define RP_ERROR 0x42

/* the source's page flags and the sender's hint (stream_sender.c), or NULL */
struct server {
    uint8_t *flags;
    double *hint;
};

/* Pages [first, first+count) go out here: the push need not send them; it
 * goes on just after them when some were not sent yet. */
static void take_pages(struct pc_channel *c, uint64_t first, uint64_t count)
{
    struct server *sv = c->side;
    if (!sv || !sv->flags)
        return;
    double fresh = 0;
    for (uint64_t p = first; p < first + count; p++)
        fresh += (__atomic_exchange_n(&sv->flags[p], PC_SRC_HAS, __ATOMIC_ACQ_REL) & PC_SRC_NEED) != 0;
    c->st->stats[PC_SRC_CLEARED] += fresh;
    c->st->stats[PC_SRC_INFLIGHT] += (double)count - fresh;
    if (fresh > 0 && sv->hint) {
        double next = (double)(first + count + 1);
        __atomic_store(sv->hint, &next, __ATOMIC_RELEASE);
    }
}

/* Answers the request at r (checked), if the output has room: PAGES and
 * ZERO records, flagged READAHEAD when the request was. 0 = no room yet,
 * 1 = answered, -1 = stop asked. */
static int answer(struct pc_channel *c, const uint8_t *r)
{
    const uint64_t ps = c->page_size;
    uint64_t count = pc_le32(r + 4) / ps;
    uint64_t first = (uint64_t)pc_record_page(c, r, count); /* checked by serve() */
    int readahead = r[1] & PC_REQ_READAHEAD;
    /* worst case: every page a record of its own */
    if (c->out_cap - c->out_len < count * (PC_RECORD_HEADER + ps))
        return 0;
    c->st->stats[readahead ? PC_SRC_READAHEAD : PC_SRC_REQUESTS] += (double)count;
    take_pages(c, first, count);
    const uint8_t *src = (const uint8_t *)(uintptr_t)(c->base + first * ps);
    /* runs of zero pages and of data pages; a huge-page block beside smaller
     * pages in whole host pages (its requests are whole host pages) */
    const uint64_t unit = pc_host_units(c, first);
    for (uint64_t i = 0; i < count;) {
        int zero = page_is_zero(src + i * ps, unit * ps);
        uint64_t j = i + unit;
        while (j < count && page_is_zero(src + j * ps, unit * ps) == zero)
            j += unit;
        size_t bytes = PC_RECORD_HEADER + (zero ? 0 : (j - i) * ps);
        pc_put_page_record(c, c->out + c->out_len, zero ? PC_REC_ZERO : PC_REC_PAGES, readahead, (uint32_t)(j - i), first + i);
        if (!zero)
            memcpy(c->out + c->out_len + PC_RECORD_HEADER, src + i * ps, (j - i) * ps);
        c->out_len += bytes;
        c->st->stats[zero ? PC_SRC_ZERO : PC_SRC_NORMAL] += (double)(j - i);
        i = j;
    }
    return pc_channel_push(c, PC_EV_SERVED, (double)first, (double)count, pc_channel_now(c)) < 0 ? -1 : 1;
}

/* Answers the complete requests in c->in while the output has room: those
 * for faulted pages first, then read-ahead. Returns -1 on a malformed
 * request (the channel failed) or when asked to stop. */
static int serve(struct pc_channel *c)
{
    const uint64_t ps = c->page_size;
    size_t end = c->in_len - c->in_len % PC_RECORD_HEADER;
    /* answered requests, one bit per record (c->in holds 64 at most): kept
     * apart from the bytes read, which are never written; a heartbeat is
     * answered as it is read (it only proves the link lives) */
    uint64_t answered = 0;
    for (size_t pos = 0; pos < end; pos += PC_RECORD_HEADER) {
        const uint8_t *r = c->in + pos;
        uint32_t len = pc_le32(r + 4);
        uint64_t off = pc_le64(r + 8);
        if (r[0] == PC_RP_HEARTBEAT) {
            if (r[1] | r[2] | r[3] || len != 0 || off != 0) {
                pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: heartbeat with fields set (flags 0x%02x, count %u)", r[1], len);
                return -1;
            }
            answered |= 1ull << (pos / PC_RECORD_HEADER);
            continue;
        }
        if (r[0] == RP_ERROR && r[1] == 0 && r[2] == 0 && r[3] == 0 && off == 0 && len <= 4096) { /* its text as far as it came */
            char text[PC_ERROR_BYTES];
            size_t have = c->in_len - pos - PC_RECORD_HEADER, n = 0;
            for (const uint8_t *t = r + PC_RECORD_HEADER; n < len && n < have && n < sizeof text - 1; n++) /* no control characters */
                text[n] = t[n] < 0x20 || t[n] == 0x7f ? '?' : (char)t[n];
            text[n] = 0;
            pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: the destination says: %s", text);
            return -1;
        }
        if (r[0] != PC_RP_REQ_PAGES || (r[1] & ~PC_REQ_READAHEAD) != 0) {
            pc_channel_fail(c, PC_CH_FAILED, 0, r[0] != PC_RP_REQ_PAGES
                            ? "urgent channel: unexpected record type 0x%02x from the destination (expected a page request)"
                            : "urgent channel: page request with reserved bits set (type 0x%02x)", r[0]);
            return -1;
        }
        /* bytes 2-3 name the RAM block, the offset is inside it */
        const struct pc_ramblock *b = pc_record_block(c, r);
        if (len == 0 || len % ps != 0 || !b || len / ps > pc_block_max_run(c, b) || pc_record_page(c, r, len / ps) < 0) {
            uint32_t blk = (uint32_t)r[2] | (uint32_t)r[3] << 8;
            if (!b)
                pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: bad page request: RAM block %u (this VM has %u)", blk, c->nblocks);
            else if (c->nblocks == 1)
                pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: bad page request: offset %llu length %u (RAM is %llu pages of %llu bytes)",
                                (unsigned long long)off, len, (unsigned long long)c->pages, (unsigned long long)ps);
            else
                pc_channel_fail(c, PC_CH_FAILED, 0, "urgent channel: bad page request: offset %llu length %u (RAM block %u is %llu pages of %llu bytes)",
                                (unsigned long long)off, len, blk, (unsigned long long)b->pages, (unsigned long long)ps);
            return -1;
        }
    }
    for (int readahead = 0; readahead <= 1; readahead++) {
        for (size_t pos = 0; pos < end; pos += PC_RECORD_HEADER) {
            const uint8_t *r = c->in + pos;
            uint64_t bit = 1ull << (pos / PC_RECORD_HEADER);
            if ((answered & bit) || (r[1] & PC_REQ_READAHEAD) != readahead)
                continue;
            int a = answer(c, r);
            if (a < 0)
                return -1;
            if (a == 0)
                goto compact; /* the rest once the socket took this */
            answered |= bit;
        }
    }
compact: { /* drop the answered requests, keep the others in order */
        size_t kept = 0;
        for (size_t pos = 0; pos < c->in_len; pos += PC_RECORD_HEADER) {
            size_t n = c->in_len - pos < PC_RECORD_HEADER ? c->in_len - pos : PC_RECORD_HEADER;
            if (n == PC_RECORD_HEADER && (answered & (1ull << (pos / PC_RECORD_HEADER))))
                continue;
            memmove(c->in + kept, c->in + pos, n);
            kept += n;
        }
        c->in_len = kept;
    }
    return 0;
}

static void *page_server_run(void *arg)
{
    struct pc_channel *c = arg;
    while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED) && c->st->state == PC_CH_RUNNING) {
        int got = pc_channel_fill(c);
        if (got < 0 || serve(c) < 0)
            break;
        int pending = pc_channel_flush(c);
        if (pending < 0)
            break;
        int ms = pc_channel_heartbeat(c);
        if (ms == -2)
            break; /* silence: the link is lost */
        if (got > 0 || (pending == 0 && c->in_len >= PC_RECORD_HEADER))
            continue; /* more may be there, or room again to answer the rest */
        /* read more only while there is room to answer */
        if (pc_channel_wait_ms(c, -1, c->in_len < c->in_cap, ms) != 0)
            break;
    }
    return NULL;
}

/* Starts the page server on `sock` (the urgent channel, non-blocking);
 * `flags` (0: none) = the source's page flags, `hint` (NULL: none) = where
 * the sender reads the page to go on from (see take_pages()), `blocks` =
 * the RAM block table (nblocks entries, 0: one block).
 * Returns a handle for pc_channel_stop(), or 0 when it could not start. */
uint64_t pc_page_server_start(int sock, uint64_t ram_base, uint64_t page_size, uint64_t pages, uint64_t flags, double *hint,
                              struct pc_channel_status *st, double *ring, uint32_t ring_size,
                              double clock_base, uint32_t heartbeat_ms, uint64_t blocks, uint32_t nblocks)
{
    size_t rec = PC_RECORD_HEADER + pc_max_run_pages(page_size) * page_size, host = PC_RECORD_HEADER + pc_blocks_max_page(blocks, nblocks, page_size);
    if (rec < host)
        rec = host; /* a huge-page block's host page beside smaller pages: one record */
    /* 64 requests in at most: serve()'s bitmap of answered ones is one word */
    struct pc_channel *c = pc_channel_new(sock, ram_base, page_size, pages, st, ring, ring_size, clock_base,
                                          64 * PC_RECORD_HEADER, 2 * rec, PC_SRC_BYTES_IN, PC_SRC_BYTES_OUT);
    if (!c)
        return 0;
    struct server *sv = calloc(1, sizeof *sv);
    if (!sv || pc_channel_blocks(c, blocks, nblocks) < 0) {
        free(sv);
        pc_channel_free(c);
        return 0;
    }
    sv->flags = (uint8_t *)(uintptr_t)flags;
    sv->hint = hint;
    c->side = sv;
    /* heartbeats once the fault thread spoke first (see pc_channel_heartbeat) */
    c->heartbeat_type = PC_REC_HEARTBEAT;
    c->heartbeat_ns = (double)heartbeat_ms * 1e6;
    c->last_rx = c->last_tx = pc_channel_now(c);
    if (pc_channel_spawn(c, page_server_run, "mig/src/urgent") != 0)
        return 0;
    return (uint64_t)(uintptr_t)c;
}
