/* budget.c — the one memory bound of a mount (max_memory).
 *
 * Every buffer the mount holds for data is charged here, by its use:
 * blocks of the read path (and the freed ones kept warm for reuse), parts
 * of files being written (and part buffers kept warm), decompressed
 * chunks of gzip views, listings held for readers.  The sum of the charges never passes the limit.
 *
 * The idea: each use has a reserve, a minimum no other use can take from
 * it; the rest of the limit is shared, first come, first served.  A use
 * asks in one of two ways:
 *
 *   NEED   memory a program waits for (a block a read covers, a part a
 *          writer fills): granted while the use stays within its reserve,
 *          or the shared part has room.
 *   SPARE  memory that only speeds things up (read-ahead, a view's
 *          inflating ahead, a listing held ahead): granted only from the
 *          shared part, and only while the use's own reserve stays whole
 *          beside it, for the NEEDs to come.
 *
 * So memory held by one use never stops another: a writer whose memory
 * readers hold still gets its reserve at once.  Past the reserve a NEED
 * may wait (fs_budget_wait), and while it waits the uses that keep memory
 * they could give up are asked to give some back (a reclaimer: the read
 * path's finished blocks nobody is reading and its kept block buffers,
 * the write path's kept part buffers).  What each use does when it is
 * refused is its own, written at the call: read-ahead stops, a view
 * inflates on the reader's thread, a stream writer stages to disk, a
 * listing is not held.
 *
 * Locking: b->lock is a leaf: taken under the callers' locks (the read
 * path's, fs->lock, a view's), never held while calling out.  Reclaimers
 * are called by fs_budget_wait with no lock of its own held. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct fs_budget {
    pthread_mutex_t lock;
    pthread_cond_t given;           /* memory was given back */
    uint64_t limit;                 /* fixed */
    uint64_t reserve[FS_USE_COUNT]; /* fixed */
    uint64_t used[FS_USE_COUNT];    /* protected by lock */
    /* fixed once set, before any wait */
    uint64_t (*reclaim[FS_USE_COUNT])(void *arg, uint64_t want);
    void *reclaim_arg[FS_USE_COUNT];
};

static const enum fs_metric use_gauge[FS_USE_COUNT] = {
    [FS_USE_READ] = FS_M_MEM_READ,
    [FS_USE_WRITE] = FS_M_MEM_WRITE,
    [FS_USE_GZ] = FS_M_MEM_GZ,
    [FS_USE_LIST] = FS_M_MEM_LISTINGS,
};

void fs_budget_reserves(uint64_t limit, uint64_t reserve[FS_USE_COUNT])
{
    uint64_t quarter = limit / 4 < (32ULL << 20) ? limit / 4 : 32ULL << 20;
    uint64_t list = limit / 32 < (4ULL << 20) ? limit / 32 : 4ULL << 20;
    reserve[FS_USE_READ] = quarter;  /* the blocks reads wait on */
    reserve[FS_USE_WRITE] = quarter; /* a part or two of files being written */
    reserve[FS_USE_GZ] = 0;          /* a view refused inflates on its reader's thread */
    reserve[FS_USE_LIST] = list;     /* a page or so of a listing being read */
}

int fs_budget_new(uint64_t limit, struct fs_budget **out)
{
    struct fs_budget *b = calloc(1, sizeof(*b));
    if (!b)
        return ENOMEM;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->given, NULL);
    b->limit = limit;
    fs_budget_reserves(limit, b->reserve);
    for (int u = 0; u < FS_USE_COUNT; u++)
        metrics_set(&fs_metrics[use_gauge[u]], 0);
    metrics_set(&fs_metrics[FS_M_MEM_LIMIT], (int64_t)limit);
    *out = b;
    return 0;
}

void fs_budget_free(struct fs_budget *b)
{
    if (!b)
        return;
    pthread_cond_destroy(&b->given);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void fs_budget_set_reclaimer(struct fs_budget *b, enum fs_use use,
                             uint64_t (*fn)(void *arg, uint64_t want), void *arg)
{
    b->reclaim[use] = fn;
    b->reclaim_arg[use] = arg;
}

static uint64_t max_u64(uint64_t a, uint64_t c)
{
    return a > c ? a : c;
}

/* Whether `use` may take n more now (b->lock held): the sum, over the
 * uses, of what each holds or keeps in reserve stays within the limit. */
static bool fits_locked(const struct fs_budget *b, enum fs_use use, uint64_t n, enum fs_take how)
{
    uint64_t others = 0;
    for (int u = 0; u < FS_USE_COUNT; u++)
        if (u != (int)use)
            others += max_u64(b->used[u], b->reserve[u]);
    uint64_t mine = b->used[use] + n;
    /* SPARE leaves the use's own reserve whole beside what it takes */
    uint64_t cost = how == FS_TAKE_SPARE ? mine + b->reserve[use] : max_u64(mine, b->reserve[use]);
    return n <= b->limit && others <= b->limit && cost <= b->limit - others;
}

static void charge_locked(struct fs_budget *b, enum fs_use use, uint64_t n)
{
    b->used[use] += n;
    metrics_set(&fs_metrics[use_gauge[use]], (int64_t)b->used[use]);
}

bool fs_budget_try(struct fs_budget *b, enum fs_use use, uint64_t n, enum fs_take how)
{
    pthread_mutex_lock(&b->lock);
    bool ok = fits_locked(b, use, n, how);
    if (ok)
        charge_locked(b, use, n);
    pthread_mutex_unlock(&b->lock);
    return ok;
}

void fs_budget_force(struct fs_budget *b, enum fs_use use, uint64_t n)
{
    pthread_mutex_lock(&b->lock);
    charge_locked(b, use, n);
    pthread_mutex_unlock(&b->lock);
}

/* Ask every other use that can give memory back for `want` bytes (no
 * lock held).  Returns what they gave. */
static uint64_t reclaim_others(struct fs_budget *b, enum fs_use use, uint64_t want)
{
    uint64_t got = 0;
    for (int u = 0; u < FS_USE_COUNT && got < want; u++)
        if (u != (int)use && b->reclaim[u])
            got += b->reclaim[u](b->reclaim_arg[u], want - got);
    return got;
}

int fs_budget_wait(struct fs_budget *b, enum fs_use use, uint64_t n, uint64_t timeout_ms)
{
    uint64_t deadline = util_now_ms() + timeout_ms;
    for (;;) {
        if (fs_budget_try(b, use, n, FS_TAKE_NEED))
            return 0;
        if (reclaim_others(b, use, n) && fs_budget_try(b, use, n, FS_TAKE_NEED))
            return 0;
        uint64_t now = util_now_ms();
        if (now >= deadline)
            return ETIMEDOUT;
        /* A short wait at most: the memory may come back through a
         * reclaimer (whose use gives it back only when asked). */
        uint64_t ms = deadline - now < 100 ? deadline - now : 100;
        pthread_mutex_lock(&b->lock);
        if (!fits_locked(b, use, n, FS_TAKE_NEED))
            util_cond_wait_ms(&b->given, &b->lock, ms);
        pthread_mutex_unlock(&b->lock);
    }
}

void fs_budget_give(struct fs_budget *b, enum fs_use use, uint64_t n)
{
    if (!n)
        return;
    pthread_mutex_lock(&b->lock);
    b->used[use] = b->used[use] >= n ? b->used[use] - n : 0;
    metrics_set(&fs_metrics[use_gauge[use]], (int64_t)b->used[use]);
    pthread_cond_broadcast(&b->given);
    pthread_mutex_unlock(&b->lock);
}

uint64_t fs_budget_limit(const struct fs_budget *b)
{
    return b->limit;
}

uint64_t fs_budget_used(struct fs_budget *b, enum fs_use use)
{
    pthread_mutex_lock(&b->lock);
    uint64_t n = b->used[use];
    pthread_mutex_unlock(&b->lock);
    return n;
}

uint64_t fs_budget_spare(struct fs_budget *b, enum fs_use use)
{
    pthread_mutex_lock(&b->lock);
    uint64_t others = 0;
    for (int u = 0; u < FS_USE_COUNT; u++)
        if (u != (int)use)
            others += max_u64(b->used[u], b->reserve[u]);
    uint64_t mine = b->used[use] + b->reserve[use];
    uint64_t spare = others + mine < b->limit ? b->limit - others - mine : 0;
    pthread_mutex_unlock(&b->lock);
    return spare;
}
