/* Per-page digests of guest RAM (a 64-bit hash per page), for "nothing lost"
 * checks after a migration. Native because hashing hundreds of MiB in JS is
 * slow. Reading a page under userfaultfd faults it in like any other access. */
#include <stdint.h>
#include <string.h>

static inline uint64_t mix(uint64_t h, uint64_t w)
{
    h ^= w * 0x9E3779B97F4A7C15ULL;
    h = (h << 31) | (h >> 33);
    return h * 0xBF58476D1CE4E5B9ULL;
}

/* out[i] = digest of page first+i of the memory at base, for count pages. */
void pc_page_digests(uint64_t base, uint64_t page_size, uint64_t first, uint64_t count, uint64_t *out)
{
    for (uint64_t p = 0; p < count; p++) {
        const uint8_t *page = (const uint8_t *)(uintptr_t)(base + (first + p) * page_size);
        uint64_t h = 0x84222325CBF29CE4ULL ^ page_size;
        for (uint64_t off = 0; off < page_size; off += 8) {
            uint64_t w;
            memcpy(&w, page + off, 8);
            h = mix(h, w);
        }
        h ^= h >> 29;
        out[p] = h;
    }
}
