/* The received-page bitmap of postcopy recovery (QEMU's ramblock recv
 * bitmap, sent and loaded): built from the destination's page flags, applied
 * to the source's. Native because each side's loop runs once per recovery,
 * so V8 never compiles it: in JS it took 2-4 ms per side for 65536 pages,
 * the larger part of a recovery's handshake. Synchronous, on the caller's
 * thread: the flags stay the caller's (the threads that also write them are
 * held off by the handshake: the destination places nothing while paused, the
 * source serves no request before RESUME). */
#include <stdint.h>

/* out[p >> 3] bit p & 7 = flags[p] has `received`, for pages 0..pages-1
 * (out holds (pages + 7) / 8 bytes); returns the pages received. */
uint64_t pc_recv_bitmap_build(const uint8_t *flags, uint64_t pages, uint32_t received, uint8_t *out)
{
    uint64_t n = 0;
    for (uint64_t p = 0; p < pages; p += 8) {
        unsigned byte = 0;
        unsigned left = pages - p < 8 ? (unsigned)(pages - p) : 8;
        for (unsigned i = 0; i < left; i++)
            byte |= (unsigned)((__atomic_load_n(&flags[p + i], __ATOMIC_RELAXED) & received) != 0) << i;
        out[p >> 3] = (uint8_t)byte;
        n += (uint64_t)__builtin_popcount(byte);
    }
    return n;
}

/* Every page the bitmap has is `has`; every other one is `need` again.
 * counts[0] = pages now `need`, counts[1] = those of them that were `has`
 * (sent, and lost in flight). */
void pc_recv_bitmap_apply(uint8_t *flags, uint64_t pages, const uint8_t *bitmap, uint32_t has, uint32_t need, double *counts)
{
    uint64_t needed = 0, again = 0;
    for (uint64_t p = 0; p < pages; p++) {
        if ((bitmap[p >> 3] >> (p & 7)) & 1) {
            flags[p] = (uint8_t)has;
        } else {
            again += flags[p] == has;
            flags[p] = (uint8_t)need;
            needed++;
        }
    }
    counts[0] = (double)needed;
    counts[1] = (double)again;
}
