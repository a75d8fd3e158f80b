/* The benchmark baseline: a plain C userfaultfd fault handler doing the TS
 * handler's job (read every pending message, resolve each page fault with
 * UFFDIO_COPY from one source page). Used only by bench/faults.ts to measure
 * how close the TypeScript handler comes to C. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Handles faults on `uffd` until `expected` page faults were resolved or
 * `stop_fd` (an eventfd) becomes readable. Every fault is resolved by copying
 * the page at `src` to the faulting page. Blocks: call through koffi .async.
 * Returns the number of faults resolved, or -errno on a failure. */
int64_t pc_fault_handler_run(int uffd, uint64_t src, uint64_t page_size, int64_t expected, int stop_fd)
{
    struct uffd_msg msgs[64];
    struct pollfd pfd[2] = { { .fd = uffd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
    int64_t handled = 0;
    while (expected <= 0 || handled < expected) {
        ssize_t n = read(uffd, msgs, sizeof msgs);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                return -errno;
            if (poll(pfd, stop_fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
                return -errno;
            if (stop_fd >= 0 && (pfd[1].revents & POLLIN))
                break;
            continue;
        }
        for (ssize_t i = 0; i < n / (ssize_t)sizeof msgs[0]; i++) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                continue;
            struct uffdio_copy copy = {
                .dst = msgs[i].arg.pagefault.address & ~(page_size - 1),
                .src = src,
                .len = page_size,
                .mode = 0,
            };
            for (;;) {
                if (ioctl(uffd, UFFDIO_COPY, &copy) == 0)
                    break;
                if (errno == EEXIST) {
                    struct uffdio_range r = { copy.dst, page_size };
                    ioctl(uffd, UFFDIO_WAKE, &r);
                    break;
                }
                if (errno != EAGAIN)
                    return -errno;
                copy.copy = 0;
            }
            handled++;
        }
    }
    return handled;
}
