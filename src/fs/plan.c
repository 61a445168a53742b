/* plan.c — how a file becomes multipart parts (pure functions).
 *
 * Three questions, all answered without I/O so they can be unit-tested:
 *
 * 1. A stream of unknown length: how big is part n?  S3 allows 10,000
 *    parts of at most 5 GiB, all but the last at least 5 MiB.  A fixed
 *    8 MiB part caps a file at 78 GiB; a big fixed part wastes memory on
 *    every small file.  So the size doubles every 1,000 parts: with an
 *    8 MiB first part, parts 1-1000 are 8 MiB (7.8 GiB), 1001-2000 are
 *    16 MiB, ... and 10,000 parts hold 1023 x 1000 x 8 MiB = 8 TiB (S3's
 *    own limit, 10,000 parts of 5 GiB, needs 5 GiB parts from the first).
 *    Memory follows the file: a writer holds 8 MiB parts until its file
 *    passes 7.8 GiB.
 *
 * 2. An edited object: which parts are copied server-side from the old
 *    version (UploadPartCopy) and which are uploaded?  The caller describes
 *    the new object as runs of bytes that are still the old object's bytes
 *    at the same offsets ("copy") and runs that are local.  A copy part
 *    must be at least min_part unless it is the last, so short copy runs
 *    become local (the caller fetches them), and a local run shorter than
 *    min_part borrows bytes from the copy run after it.  A plan that would
 *    pass FS_MAX_PARTS is refused before its parts are made, so a huge
 *    run costs no memory.
 *
 * 3. A staged file: which of its 1 MiB blocks still hold nothing but the
 *    old object's bytes?  The block map answers with runs of blocks of one
 *    state, so a byte written at 4 TiB costs two runs, not a byte per MiB
 *    up to it, and it gives the runs of question 2 directly. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
    if (util_grow((void **)&p->parts, &p->cap, p->n + 1, sizeof(*p->parts)))
        return ENOMEM;
    p->parts[p->n++] = (struct fs_part_plan){.off = off, .len = len, .copy = copy};
    return 0;
}

/* `len` bytes at `off` as n balanced pieces of at most `cap` each; E2BIG
 * before anything is added when the plan would pass FS_MAX_PARTS. */
static int plan_split(struct plan *p, uint64_t off, uint64_t len, uint64_t cap, bool copy)
{
    /* Written so that nothing overflows whatever len is: piece i starts at
     * len * i / n = q * i + r * i / n, with r < n <= FS_MAX_PARTS. */
    uint64_t n = len / cap + (len % cap != 0);
    if (n > FS_MAX_PARTS - p->n)
        return E2BIG;
    if (!n)
        return 0;
    uint64_t q = len / n, r = len % n;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t a = q * i + r * i / n, b = q * (i + 1) + r * (i + 1) / n;
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
    uint64_t next = 0;                   /* where the next run must start */
    for (size_t i = 0; !rc && i < n_runs; i++) {
        uint64_t off = runs[i].off, len = runs[i].len;
        if (off != next || len > UINT64_MAX - off) {
            rc = EINVAL; /* runs must be contiguous from 0 (a run that
                          * wrapped around 2^64 is a caller's bug) */
            break;
        }
        next = off + len;
        if (len == 0)
            continue;
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
    if (rc) {
        free(p.parts);
        return rc;
    }
    *out = p.parts;
    *n_out = p.n;
    return 0;
}

/* ---- the block map of a staged file ------------------------------------ */

/* The run holding block b: the last one starting at or before it. */
static size_t blkmap_find(const struct fs_blkmap *m, uint64_t b)
{
    size_t lo = 0, hi = m->n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->runs[mid].first <= b)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

enum fs_blk fs_blkmap_get(const struct fs_blkmap *m, uint64_t b, uint64_t *run_end)
{
    size_t i = blkmap_find(m, b);
    if (run_end)
        *run_end = i + 1 < m->n ? m->runs[i + 1].first : m->n_blk;
    return m->runs[i].state;
}

int fs_blkmap_set(struct fs_blkmap *m, uint64_t from, uint64_t to, enum fs_blk state)
{
    if (from >= to) /* nothing to set; the map still grows to `to` */
        return to > m->n_blk ? fs_blkmap_resize(m, to) : 0;
    /* The runs starting before `from` stay (the last one is cut there);
     * then a gap of DIRTY blocks when the map ends before `from`; then
     * [from, to); then what is left of the run holding `to`, and the runs
     * after it. */
    size_t lo = 0;
    if (m->n && from >= m->n_blk)
        lo = m->n;
    else if (m->n && from > 0)
        lo = blkmap_find(m, from - 1) + 1;
    struct fs_blkrun mid[3];
    size_t n_mid = 0, rest = m->n;
    if (from > m->n_blk)
        mid[n_mid++] = (struct fs_blkrun){m->n_blk, FS_BLK_DIRTY};
    mid[n_mid++] = (struct fs_blkrun){from, state};
    if (to < m->n_blk) {
        size_t k = blkmap_find(m, to);
        rest = k;
        if (m->runs[k].first < to) {
            mid[n_mid++] = (struct fs_blkrun){to, m->runs[k].state};
            rest = k + 1;
        }
    }
    size_t n = lo + n_mid + (m->n - rest);
    if (util_grow((void **)&m->runs, &m->cap, n, sizeof(*m->runs)))
        return ENOMEM;
    memmove(m->runs + lo + n_mid, m->runs + rest, (m->n - rest) * sizeof(*m->runs));
    memcpy(m->runs + lo, mid, n_mid * sizeof(*mid));
    m->n = n;
    if (to > m->n_blk)
        m->n_blk = to;
    /* neighbours of one state become one run */
    size_t w = 0;
    for (size_t i = 0; i < m->n; i++)
        if (!w || m->runs[w - 1].state != m->runs[i].state)
            m->runs[w++] = m->runs[i];
    m->n = w;
    return 0;
}

int fs_blkmap_resize(struct fs_blkmap *m, uint64_t n_blk)
{
    if (n_blk > m->n_blk)
        return fs_blkmap_set(m, m->n_blk, n_blk, FS_BLK_DIRTY);
    while (m->n && m->runs[m->n - 1].first >= n_blk)
        m->n--;
    m->n_blk = n_blk;
    return 0;
}

void fs_blkmap_free(struct fs_blkmap *m)
{
    free(m->runs);
    *m = (struct fs_blkmap){0};
}

int fs_blkmap_runs(const struct fs_blkmap *m, uint64_t size, uint64_t block, uint64_t copy_blocks,
                   struct fs_run **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (!block || m->n_blk != size / block + (size % block != 0))
        return EINVAL;
    struct fs_run *runs = malloc((2 * m->n + 1) * sizeof(*runs));
    if (!runs)
        return ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        uint64_t first = m->runs[i].first;
        uint64_t end = i + 1 < m->n ? m->runs[i + 1].first : m->n_blk;
        /* the part before copy_blocks, and the rest */
        uint64_t cut[3] = {first, end, end};
        if (copy_blocks > first && copy_blocks < end)
            cut[1] = copy_blocks;
        for (int k = 0; k < 2; k++) {
            if (cut[k] >= cut[k + 1])
                continue;
            bool copy = m->runs[i].state != FS_BLK_DIRTY && cut[k] < copy_blocks;
            /* block b < n_blk starts before size: no overflow */
            uint64_t off = cut[k] * block;
            uint64_t stop = cut[k + 1] >= m->n_blk ? size : cut[k + 1] * block;
            if (n && runs[n - 1].copy == copy)
                runs[n - 1].len += stop - off;
            else
                runs[n++] = (struct fs_run){off, stop - off, copy};
        }
    }
    *out = runs;
    *n_out = n;
    return 0;
}
