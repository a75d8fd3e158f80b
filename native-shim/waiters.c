/* The faults nobody read. A vCPU that touches a missing page sleeps in the
 * kernel, its fault queued as a message on the userfaultfd; the placement of
 * that page wakes it and takes the message off the queue, read or not. A
 * fault the fault thread had not read yet when its page came (the main
 * stream's receiver placing the background push, the fault thread placing a
 * read-ahead run) was lost to the blocktime although the vCPU slept: one
 * sleep in six, 4 vCPUs sweeping, by the kernel's own count (sched_switch
 * out of handle_userfault: 647 sleeps, 543 faults read).
 *
 * With the blocktime on, each such sleep is counted once:
 *  - a vCPU, before an access, stamps it (page, time: vcpu.c stamp()) and
 *    then sets its bit in the page's word of the waiting map (one uint64_t
 *    per guest page, bit = vCPU index & 63; the vCPUs of one bit are few);
 *  - a placer places without waking (..._MODE_DONTWAKE), takes the words of
 *    the pages it placed and, for each vCPU of their bits whose current
 *    access is to such a page, began ASLEEP_AFTER_NS ago or more (a vCPU can
 *    run through the first pages of a run while the rest are copied: those
 *    accesses are short) and was reported by nobody, pushes a FAULT event
 *    (cause UNREAD, dated by the stamp) while that vCPU still sleeps (its
 *    stamp still bounds the event order: src/migration/postcopy-accounting.ts),
 *    then wakes the pages' waiters;
 *  - the fault thread pushes a fault it reads only if nobody reported that
 *    access yet.
 * "Reported" is a bit of the access stamp itself (TOUCH_REPORTED), taken by
 * compare-and-swap: a placer and the fault thread may race for it; one wins.
 * A vCPU preempted for 2 us or more in an access that did not fault, on a
 * page just copied, would count a fault of at most the copy's length. */
#define _GNU_SOURCE
#include "channel.h"
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <sys/ioctl.h>

/* in a stamp's page field (page index + 1): the fault of this access was pushed */
#define TOUCH_REPORTED (1ULL << 63)

int pc_waiters_attach(struct pc_channel *c, const struct pc_vcpu *vcpus, int nvcpus)
{
    if (!vcpus || nvcpus <= 0)
        return 0;
    uint32_t slots = 8; /* tid -> vCPU index + 1, open addressing */
    while (slots < 4u * (uint32_t)nvcpus)
        slots *= 2;
    int32_t *tids = calloc(2 * (size_t)slots, sizeof(int32_t));
    if (!tids)
        return -1;
    for (int i = 0; i < nvcpus; i++) {
        uint32_t tid = (uint32_t)vcpus[i].tid, s = (tid * 0x9e3779b1u) & (slots - 1);
        while (tids[2 * s + 1] != 0)
            s = (s + 1) & (slots - 1);
        tids[2 * s] = (int32_t)tid;
        tids[2 * s + 1] = i + 1;
    }
    free(c->vcpu_tids);
    c->vcpu_tids = tids;
    c->vcpu_mask = slots - 1;
    c->vcpus = vcpus;
    c->nvcpus = nvcpus;
    uint64_t w = vcpus[0].waiting, vps = vcpus[0].page_size;
    c->waiting = w ? (uint64_t *)(uintptr_t)(w & ~(uint64_t)4095) : NULL;
    /* the vCPUs stamp their own (guest) pages: several of them make one huge page */
    c->waiting_per = vps > 0 && c->page_size > vps ? c->page_size / vps : 1;
    return 0;
}

/* The index k of vCPU v's latest stamp on channel page `page` (its tag, the
 * page field as read, in *tag, its time in *t), or -1. */
static int stamp_of(const struct pc_channel *c, const struct pc_vcpu *v, uint64_t page, uint64_t *tag, double *t)
{
    int found = -1;
    double best = -1;
    for (int k = 0; k < PC_TOUCHES; k++) {
        uint64_t p = __atomic_load_n(&v->touch[k].page, __ATOMIC_ACQUIRE);
        if (p == 0 || ((p & ~TOUCH_REPORTED) - 1) / c->waiting_per != page)
            continue;
        double s;
        __atomic_load(&v->touch[k].t, &s, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&v->touch[k].page, __ATOMIC_ACQUIRE) == p && s > best) {
            best = s;
            found = k;
            *tag = p;
        }
    }
    *t = best;
    return found;
}

/* Takes the report of stamp k of vCPU v, read as `tag`: 1 = taken, 0 = reported already. */
static int take(const struct pc_vcpu *v, int k, uint64_t tag)
{
    if (tag & TOUCH_REPORTED)
        return 0;
    uint64_t *field = (uint64_t *)&v->touch[k].page;
    /* fails when another took it, or the vCPU stamped a new access there */
    return __atomic_compare_exchange_n(field, &tag, tag | TOUCH_REPORTED, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* an access in progress this long is a sleep on its page: one that does not
 * fault takes tens of ns (a vCPU can run through a run's first pages while
 * the rest are being copied), a fault's handling before the sleep 1-5 us */
#define ASLEEP_AFTER_NS 2000.0

/* A placer asks: is vCPU v asleep on `page` (placed, not woken yet), with
 * nobody having reported it? Its current access must be on the page, and
 * for ASLEEP_AFTER_NS at least by `now`. 1 = taken (its stamp's time in *t). */
static int take_sleeper(const struct pc_channel *c, const struct pc_vcpu *v, uint64_t page, double now, double *t)
{
    uint64_t n = __atomic_load_n(&v->touches, __ATOMIC_ACQUIRE);
    if (n == 0)
        return 0;
    int k = (int)((n - 1) % PC_TOUCHES);
    uint64_t tag = __atomic_load_n(&v->touch[k].page, __ATOMIC_ACQUIRE);
    __atomic_load(&v->touch[k].t, t, __ATOMIC_ACQUIRE);
    if (tag == 0 || __atomic_load_n(&v->touches, __ATOMIC_ACQUIRE) != n ||
        ((tag & ~TOUCH_REPORTED) - 1) / c->waiting_per != page || now - *t < ASLEEP_AFTER_NS)
        return 0;
    return take(v, k, tag);
}

static const struct pc_vcpu *vcpu_of_tid(const struct pc_channel *c, uint32_t tid)
{
    if (!c->vcpu_tids)
        return NULL;
    for (uint32_t s = (tid * 0x9e3779b1u) & c->vcpu_mask;; s = (s + 1) & c->vcpu_mask) {
        int32_t idx = c->vcpu_tids[2 * s + 1];
        if (idx == 0)
            return NULL;
        if ((uint32_t)c->vcpu_tids[2 * s] == tid)
            return &c->vcpus[idx - 1];
    }
}

int pc_waiters_claim(struct pc_channel *c, uint32_t tid, uint64_t page, double seen, double *t)
{
    *t = seen;
    const struct pc_vcpu *v = vcpu_of_tid(c, tid);
    if (!v)
        return 1; /* a thread that is no vCPU: no stamps */
    double s;
    if (!c->waiting) { /* no placer reports: the stamp dates it, when there is one */
        uint64_t tag;
        if (stamp_of(c, v, page, &tag, &s) >= 0 && s < seen)
            *t = s;
        return 1;
    }
    /* the vCPU sleeps on the page until a placement wakes it, and every
     * placement takes the report first: a stamp gone, or reported, means a
     * placement reported this fault */
    for (;;) {
        uint64_t tag;
        int k = stamp_of(c, v, page, &tag, &s);
        if (k < 0 || (tag & TOUCH_REPORTED))
            return 0;
        if (take(v, k, tag))
            break;
    }
    if (s < seen)
        *t = s;
    return 1;
}

int pc_waiters_wake(struct pc_channel *c, uint64_t first, uint64_t n)
{
    const uint64_t per = c->waiting_per;
    const double now = pc_channel_now(c);
    int rc = 0;
    uint64_t *w = c->waiting + first * per, *end = c->waiting + (first + n) * per;
    for (; w < end; w++) {
        if (!__atomic_load_n(w, __ATOMIC_ACQUIRE))
            continue;
        uint64_t bits = __atomic_exchange_n(w, 0, __ATOMIC_ACQ_REL);
        uint64_t page = (uint64_t)(w - c->waiting) / per;
        while (bits) {
            int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            for (int i = b; i < c->nvcpus; i += 64) {
                double t;
                if (take_sleeper(c, &c->vcpus[i], page, now, &t) &&
                    pc_channel_push(c, PC_EV_FAULT | PC_CAUSE_UNREAD << PC_CAUSE_SHIFT, (double)page,
                                    (double)(uint32_t)c->vcpus[i].tid, t) < 0)
                    rc = -1; /* stopping: still wake them */
            }
        }
    }
    struct uffdio_range r = { .start = c->base + first * c->page_size, .len = n * c->page_size };
    /* the placement's time: the woken cannot run before it (a stamp after
     * the wake counts the time it preempts this thread, if it does) */
    c->woken_at = pc_channel_now(c);
    ioctl(c->uffd, UFFDIO_WAKE, &r);
    return rc;
}
