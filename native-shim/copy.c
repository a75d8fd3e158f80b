/* Byte copies between two buffers at offsets, for src/native/memory-windows.ts.
 * Node 20's Buffer.copy() makes a new Uint8Array view on every call whose
 * source range does not start at 0, which is every page copied between guest
 * RAM's windows and the stream's buffers; this does the same memcpy with
 * nothing allocated (koffi passes each buffer's own pointer). */
#include <stdint.h>
#include <string.h>

/* dst[dst_pos, dst_pos+n) = src[src_pos, src_pos+n); the caller checked the bounds */
void pc_copy_bytes(uint8_t *dst, uint64_t dst_pos, const uint8_t *src, uint64_t src_pos, uint64_t n)
{
    memmove(dst + dst_pos, src + src_pos, n);
}
