/* The RAM block table of a page-path thread (channel.h struct pc_ramblock):
 * taking it at start, finding a page's block (a binary search of the few
 * blocks, once per run or per request, never per page of a run), and page
 * records' addresses as the wire has them: a block index and an offset in
 * the block (QEMU's RAMBlock idstr + offset). */
#include "channel.h"
#include <stdlib.h>
#include <string.h>

int pc_channel_blocks(struct pc_channel *c, uint64_t table, uint32_t n)
{
    if (n > PC_MAX_BLOCKS)
        return -1;
    struct pc_ramblock *b = calloc(n > 0 ? n : 1, sizeof *b);
    if (!b)
        return -1;
    if (n == 0) {
        b[0] = (struct pc_ramblock){ .offset = 0, .first = 0, .pages = c->pages, .page_size = c->page_size };
        n = 1;
    } else {
        memcpy(b, (const void *)(uintptr_t)table, n * sizeof *b);
    }
    /* back to back from page 0, in order, covering every page; host pages of
     * this channel's page size or a power-of-two multiple of it, aligned */
    uint64_t next = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t ps = b[i].page_size;
        if (b[i].first != next || b[i].pages == 0 || ps < c->page_size || (ps & (ps - 1)) != 0 ||
            b[i].offset != b[i].first * c->page_size || b[i].offset % ps != 0 || (b[i].pages * c->page_size) % ps != 0) {
            free(b);
            return -1;
        }
        next += b[i].pages;
    }
    if (next != c->pages) {
        free(b);
        return -1;
    }
    free(c->blocks);
    c->blocks = b;
    c->nblocks = n;
    return 0;
}

uint32_t pc_block_index(const struct pc_channel *c, uint64_t page)
{
    uint32_t lo = 0, hi = c->nblocks - 1; /* the last block whose first page is <= page */
    while (lo < hi) {
        uint32_t mid = (lo + hi + 1) / 2;
        if (c->blocks[mid].first <= page)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

void pc_put_page_record(const struct pc_channel *c, uint8_t *p, int type, int flags, uint32_t count, uint64_t page)
{
    uint32_t i = pc_block_index(c, page);
    const struct pc_ramblock *b = &c->blocks[i];
    pc_put_record(p, type, flags, count, (page - b->first) * c->page_size);
    p[2] = (uint8_t)(i & 0xff);
    p[3] = (uint8_t)(i >> 8);
}

const struct pc_ramblock *pc_record_block(const struct pc_channel *c, const uint8_t *r)
{
    uint32_t i = (uint32_t)r[2] | (uint32_t)r[3] << 8;
    return i < c->nblocks ? &c->blocks[i] : NULL;
}

int64_t pc_record_page(const struct pc_channel *c, const uint8_t *r, uint64_t n)
{
    const struct pc_ramblock *b = pc_record_block(c, r);
    if (!b)
        return -1;
    uint64_t off = pc_le64(r + 8), u = c->page_size;
    if (off % b->page_size != 0 || (n * u) % b->page_size != 0 || off / u >= b->pages || n > b->pages - off / u)
        return -1;
    return (int64_t)(b->first + off / u);
}

uint64_t pc_blocks_max_page(uint64_t table, uint32_t n, uint64_t page_size)
{
    const struct pc_ramblock *b = (const struct pc_ramblock *)(uintptr_t)table;
    uint64_t most = page_size;
    for (uint32_t i = 0; i < n && i < PC_MAX_BLOCKS; i++)
        if (b[i].page_size > most && b[i].page_size <= (1u << 30))
            most = b[i].page_size;
    return most;
}
