/* plan.c — how a file becomes multipart parts (pure functions).
 *
 * Two questions, both answered without I/O so they can be unit-tested:
 *
 * 1. A stream of unknown length: how big is part n?  S3 allows 10,000
 *    parts of at most 5 GiB, all but the last at least 5 MiB.  A fixed
 *    8 MiB part caps a file at 78 GiB; a big fixed part wastes memory on
 *    every small file.  So the size doubles every 1,000 parts: with an
 *    8 MiB first part, parts 1-1000 are 8 MiB (7.8 GiB), 1001-2000 are
 *    16 MiB, ... and 10,000 parts hold 1023 x 1000 x 8 MiB = 8 TiB, more
 *    than S3's 5 TiB object limit.  Memory follows the file: a writer
 *    holds 8 MiB parts until its file passes 7.8 GiB.
 *
 * 2. An edited object: which parts are copied server-side from the old
 *    version (UploadPartCopy) and which are uploaded?  The caller describes
 *    the new object as runs of bytes that are still the old object's bytes
 *    at the same offsets ("copy") and runs that are local.  A copy part
 *    must be at least min_part unless it is the last, so short copy runs
 *    become local (the caller fetches them), and a local run shorter than
 *    min_part borrows bytes from the copy run after it. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>

uint64_t fs_part_size(uint64_t first, unsigned number)
{
    if (first == 0)
        first = 1;
    unsigned tier = number ? (number - 1) / 1000 : 0;
    if (tier >= 32)
        return FS_MAX_PART;
    uint64_t size = first << tier;
    return size > FS_MAX_PART || size < first ? FS_MAX_PART : size;
}

uint64_t fs_stream_max_size(uint64_t first)
{
    uint64_t total = 0;
    for (unsigned n = 1; n <= FS_MAX_PARTS; n += 1000)
        total += 1000 * fs_part_size(first, n);
    return total;
}

struct plan {
    struct fs_part_plan *parts;
    size_t n, cap;
};

static int plan_add(struct plan *p, uint64_t off, uint64_t len, bool copy)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct fs_part_plan *np = realloc(p->parts, cap * sizeof(*np));
        if (!np)
            return ENOMEM;
        p->parts = np;
        p->cap = cap;
    }
    p->parts[p->n++] = (struct fs_part_plan){.off = off, .len = len, .copy = copy};
    return 0;
}

/* `len` bytes at `off` as n balanced pieces of at most `cap` each. */
static int plan_split(struct plan *p, uint64_t off, uint64_t len, uint64_t cap, bool copy)
{
    uint64_t n = (len + cap - 1) / cap;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t a = len * i / n, b = len * (i + 1) / n;
        int rc = plan_add(p, off + a, b - a, copy);
        if (rc)
            return rc;
    }
    return 0;
}

int fs_plan_parts(const struct fs_run *runs, size_t n_runs, uint64_t min_part, uint64_t local_cap,
                  struct fs_part_plan **out, size_t *n_out)
{
    struct plan p = {0};
    int rc = 0;
    if (local_cap < 2 * min_part)
        local_cap = 2 * min_part;
    uint64_t pend_off = 0, pend_len = 0; /* local bytes not yet in a part */
    for (size_t i = 0; !rc && i < n_runs; i++) {
        uint64_t off = runs[i].off, len = runs[i].len;
        if (len == 0)
            continue;
        if (pend_len && pend_off + pend_len != off) {
            rc = EINVAL; /* runs must be contiguous */
            break;
        }
        if (!runs[i].copy || len < min_part) {
            if (!pend_len)
                pend_off = off;
            pend_len += len;
            continue;
        }
        if (pend_len && pend_len < min_part) {
            /* The local bytes before this copy run are too few for a part
             * of their own: take the start of the copy run with them, or
             * all of it when what would be left is too short to copy. */
            uint64_t need = min_part - pend_len;
            if (len - need < min_part) {
                pend_len += len;
                continue;
            }
            pend_len += need;
            off += need;
            len -= need;
        }
        if (pend_len)
            rc = plan_split(&p, pend_off, pend_len, local_cap, false);
        pend_len = 0;
        if (!rc)
            rc = plan_split(&p, off, len, FS_MAX_PART, true);
    }
    if (!rc && pend_len)
        rc = plan_split(&p, pend_off, pend_len, local_cap, false);
    if (!rc && p.n > FS_MAX_PARTS)
        rc = E2BIG;
    if (rc) {
        free(p.parts);
        return rc;
    }
    *out = p.parts;
    *n_out = p.n;
    return 0;
}
