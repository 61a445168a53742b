/* read.c — the read path: blocks, read-ahead, memory bound, disk cache.
 *
 * An object is read in blocks of 1 MiB.  The blocks in memory belong to
 * the object version (every open file reading it shares them); each open
 * file has a reader with its own read-ahead window.  A read
 * asks for the blocks it covers; a reader that keeps reading where it left
 * off (sequential) also asks for the blocks ahead of it, up to its window,
 * which starts at 1 MiB and doubles with every sequential read up to
 * max_readahead; a read anywhere else resets the window (and lets go of
 * the read-ahead no read used), so a random reader fetches only the block
 * it touches.  With a disk cache, a random reader reads there only the
 * 4 KiB pages it asks for, and a block it had to fetch leaves memory once
 * stored (read_random); without one, it keeps the blocks it has read
 * while memory allows: random readers come back to them.
 *
 * Missing blocks are fetched by a pool of worker threads (read_parallel of
 * them): a job is a run of up to part_size consecutive blocks; it takes
 * what it can from the disk cache and fetches the rest with one ranged GET
 * per gap, pinned with If-Match to the ETag seen at open.  A first read
 * or a seek is answered as soon as its own bytes are in, while the rest of
 * their block is still arriving (a first byte does not wait for a whole
 * 1 MiB); whole
 * blocks are written to the disk cache afterwards by one of RD_STORERS
 * storer threads (never by the HTTP thread; a sequential reader's with
 * O_DIRECT, around the page cache), so that the worker goes on fetching
 * while the disk writes; at most RD_STORE_MAX blocks are on their way to
 * the disk, then workers wait (the job keeps its blocks pinned, and in
 * max_memory, until they are stored).
 *
 * An open that must learn the object's headers first (a file known only
 * from a listing, or whose attributes expired) sends the object's first
 * GET itself instead of a HEAD (fs_first_*): a worker fetches block 0 into
 * a block of no object yet and tells the open the answer's headers as soon
 * as they arrive; the open then files the block under the object version
 * the headers name (fs_first_adopt), so the program's first read finds its
 * bytes there or arriving.  Until then the block belongs to no object, so
 * no reader of another version can see its bytes; once the open lets go, a
 * block nobody adopted, or one dropped unread, stops its GET (an adopted
 * one is dropped only when its last reader goes and there is no disk cache
 * to keep it in: with one, it is fetched to its end and stored).
 *
 * Memory: every block in memory is charged to the mount's one bound
 * (budget.c, use "read"), and so are the freed buffers kept warm for reuse
 * (at most RD_WARM_MAX; see "warm buffers"): what the read path holds
 * charged is always mem_used + warm_counted() (rp->charged).  Read-ahead
 * takes memory only while some is spare (FS_TAKE_SPARE: the read reserve
 * stays free for blocks a read is waiting for), and each sequential
 * reader's read-ahead at most its fair share of what the read path holds
 * and could take (read_ahead_share); a block a read needs may use the
 * reserve, takes memory back from the least recently used finished blocks
 * no read is using, and else waits.  So readers share the bound by
 * back-pressure, one greedy reader cannot starve the others, and none
 * fails for want of memory.  Another use waiting for memory (a writer)
 * asks the read path to give back its finished blocks and its kept
 * buffers (read_reclaim).
 *
 * What a cold sequential read costs, per block: the HTTP thread copies the
 * bytes from libcurl into the block, takes the CRCs of its pages while
 * they are in the CPU's cache (block_sum), and wakes the FUSE thread
 * waiting for it, which replies from the block (no copy of ours); a storer
 * writes the block and those CRCs to the disk cache.  So each wakeup is
 * made for the threads it concerns only (the block's own done, room_cond, work_cond,
 * store_cond, store_room), buffers are
 * reused warm, and the kernel asks 1 MiB at a time (ops.c).
 *
 * Locking: one mutex (rp->lock) guards the objects, their block tables,
 * the readers' windows and the job queue; data of a block is written only
 * by its one job while it is FETCHING, and read only after it is READY. */
#include "cache/cache.h"
#include "fs/fs_private.h"

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <utlist.h>

#define RD_BLOCK FS_READ_BLOCK
_Static_assert(RD_BLOCK <= CACHE_MAX_BLOCK && RD_BLOCK % CACHE_PAGE_SIZE == 0,
               "a block is whole pages of the disk cache");
/* Warm block buffers kept for reuse (see "warm buffers" below), at most,
 * while blocks are in memory; and once none is.  As many as a sequential
 * reader's read-ahead comes and goes by: with 32, a cold 1 GiB read
 * unmapped and faulted in again 200 MiB of buffers (issue 21). */
#define RD_WARM_MAX 128
#define RD_WARM_IDLE 4
/* Block buffers are carved two to a slab: a 2 MiB-aligned mapping the
 * kernel may back with one transparent huge page (see "warm buffers"). */
#define RD_SLAB (2 * (size_t)RD_BLOCK)
/* Blocks fetched and not yet in the disk cache (queued or being written),
 * at most: beyond that the workers wait (the disk sets the pace). */
#define RD_STORE_MAX 16
#define RD_STORERS 2
/* An open's first GET asks for block 0 even when it is here already if the
 * object is at most this long: on a changed object that saves the read's
 * round trip, and unchanged it costs little more than the headers. */
#define RD_FIRST_SMALL (128u << 10)

enum rb_state { RB_FETCHING, RB_READY, RB_ERROR };

/* Which lock guards what, below: "rp->lock" fields are read and written
 * only with rp->lock held; "fixed" fields are set when the thing is made,
 * before another thread can reach it, and never change (so they are read
 * without the lock). */

/* A warm block buffer kept for reuse that is no slab's half (its first
 * bytes); protected by rp->lock. */
struct rbuf {
    struct rbuf *next;
};

/* Two block buffers in one 2 MiB-aligned mapping (see "warm buffers");
 * protected by rp->lock. */
struct rslab {
    char *base;
    unsigned free;             /* bit h: half h is kept warm, no block's */
    struct rslab *prev, *next; /* on warm.halves or warm.wholes while free */
    UT_hash_handle hh;         /* warm.slabs, by base */
};

/* The warm buffers (protected by rp->lock): the free halves of slabs, and
 * single buffers made when a slab's second half could not be charged. */
struct rd_warm {
    struct rslab *slabs;  /* every slab mapped, by base */
    struct rslab *halves; /* one half free (the other a block's) */
    struct rslab *wholes; /* both halves free */
    struct rbuf *singles;
    unsigned n;    /* buffers kept: free halves and singles */
    unsigned bare; /* blocks counted in mem_used that have no buffer yet */
};

struct rblock {
    uint64_t no; /* fixed */
    /* The bytes, and how many: written without the lock by the block's one
     * job while it is FETCHING (len under rp->lock when they come from the
     * disk cache); read, without the lock too, only once it is READY, when
     * they no longer change.  The buffer itself is fixed. */
    char *data;
    size_t len;
    /* While FETCHING, the bytes at the start of data a read may use
     * already: stored by the job after it wrote them (release), loaded by a
     * read (acquire), so a read is answered as soon as its own bytes are in
     * rather than when the whole block is (a first byte from a 1 MiB GET).
     * `awaited` is the least end a waiting read needs (0: none waits), set
     * by the read with rp->lock held; the job, seeing `arrived` reach it,
     * wakes the reads (under rp->lock, so no wakeup is lost). */
    _Atomic size_t arrived;
    _Atomic size_t awaited;
    /* The CRC-32C of each 4 KiB page of data[0, len), computed as the
     * bytes arrive (block_sum) and written and read as data is: what the
     * disk cache stores with the block, with no second pass over it. */
    uint32_t crc[FS_READ_BLOCK / CACHE_PAGE_SIZE];
    /* the rest: protected by rp->lock, but for `transient`, fixed */
    struct robj *o; /* the table holding it; NULL once dropped */
    enum rb_state state;
    int error;
    unsigned pins;  /* reads waiting on it and its job */
    bool used;      /* a read has had bytes from it */
    bool transient; /* a random reader's: dropped once stored and unpinned */
    bool stored;    /* the disk cache holds it */
    bool job;       /* a job holds it (and so its object) */
    bool first;     /* an open's first GET brings it (block 0, adopted) */
    bool in_lru;
    /* The reads waiting on it (wait_blocks) wait here, woken by its own
     * changes only (block_wake): with one condition for every block, each
     * block of 16 readers at once woke every read waiting on any block,
     * 80,000 context switches per GiB (issue 22).  Made with the block. */
    pthread_cond_t done;
    struct rblock *lru_prev, *lru_next; /* reclaimable: ready, in a table, unpinned */
    UT_hash_handle hh;                  /* o->blocks */
};

/* An object version being read, shared by every open file reading it. */
struct robj {
    /* fixed (read by workers and storers without the lock) */
    char *key;
    char *id; /* cache identity: endpoint, bucket, key, ETag */
    char etag[80];
    uint64_t size;
    /* protected by rp->lock */
    char *moved_key;       /* where a rename on this mount copied the bytes */
    char moved_etag[80];   /* (fs_readpool_moved), or NULL: at key */
    struct rblock *blocks; /* by block number */
    /* What the newest GET's answer said (as a HEAD's answer would, see
     * fs_readpool_told), and when its headers came (0: none yet). */
    struct fs_attr told;
    char *told_xattr;
    bool told_gzip;
    uint64_t told_ms;
    unsigned readers;  /* open files reading it */
    unsigned refs;     /* readers and jobs */
    UT_hash_handle hh; /* rp->objs, by id */
};

/* One open file's reader.  Reads of one handle may run at the same time on
 * several FUSE threads: they share its window. */
struct fs_reader {
    /* fixed (o: a reference of its own to the object) */
    struct fs *fs;
    struct robj *o;
    fuse_ino_t ino;
    /* protected by rp->lock */
    uint64_t next_off; /* where a sequential read would go on */
    uint64_t ra_next;  /* the first block the read-ahead has not asked for */
    uint64_t window;
    unsigned streak; /* reads in a row that went on where one ended */
    bool seq;        /* counted in rp->n_seq */
};

/* A run of blocks to fetch.  Made and queued with rp->lock held; once a
 * worker has taken it off rp->queue, o, blocks and n belong to that worker
 * (then to the storer it hands it to) and are read without the lock. */
struct rjob {
    struct robj *o; /* NULL for an open's first GET until its block is adopted */
    struct rblock **blocks;
    size_t n;
    struct fs_first *first; /* fixed: an open's first GET (one block), or NULL */
    bool need;              /* fixed: a read waits on its blocks (not read-ahead) */
    /* on rp->queue or rp->stores; protected by rp->lock */
    struct rjob *next;
};

/* An open's first GET (see the top); its job's `first`. */
struct fs_first {
    /* fixed */
    struct fs_readpool *rp;
    const struct fs_config *cfg;
    char *key;
    char if_match[80]; /* "" for none */
    struct rblock *b;  /* block 0: pinned by the job, and by the open until it lets go */
    bool headers_only; /* b NULL: block 0 is here already, the GET asks for one byte */
    /* protected by rp->lock */
    struct rjob *job; /* while its GET runs; NULL after */
    unsigned refs;    /* the open's and the job's */
    bool open_pin;    /* the open still pins b */
    bool released;    /* the open let go: b unread unless adopted */
    bool told;        /* the answer's headers are in attr, gzip and xattr */
    bool done;        /* the GET ended, with rc */
    int rc;
    struct fs_attr attr;
    bool gzip;
    char *xattr;
};

struct fs_readpool {
    pthread_mutex_t lock;
    /* Each waits for one kind of event, so that an event wakes only the
     * threads it concerns (one condition for all woke every idle worker at
     * every block, and they fought readers for the lock: a sixth of a cold
     * read's context switches). */
    pthread_cond_t done_cond;  /* an open's first GET: headers told, or done (a block: b->done) */
    pthread_cond_t room_cond;  /* memory freed, a block reclaimable */
    pthread_cond_t store_room; /* room in rp->stores: workers waiting to hand blocks over */
    pthread_cond_t work_cond;  /* jobs queued, or stop: idle workers */
    pthread_cond_t store_cond; /* stores queued, or stop_store */
    /* fixed: set by fs_readpool_new before the threads start */
    struct fs_budget *budget; /* the mount's; blocks are charged as FS_USE_READ */
    struct cache *cache;
    struct s3_client *s3;
    const struct fs_config *cfg;
    unsigned n_storers; /* storers started before any worker */
    /* protected by rp->lock */
    uint64_t mem_used;   /* blocks in tables or pinned */
    struct rd_warm warm; /* buffers to reuse: warm_counted() */
    uint64_t charged;    /* charged to the budget: mem_used + warm_counted() */
    unsigned n_seq;      /* readers reading sequentially now (fs_reader.seq) */
    struct rblock *lru;
    struct robj *objs; /* by id */
    struct rjob *queue;
    struct rjob *stores;   /* fetched, for the storers to write to the disk cache */
    unsigned store_blocks; /* blocks of the jobs in stores or being stored */
    bool stop, stop_store;
    unsigned idle; /* workers waiting for a job */
    /* only touched by the thread that makes and frees the pool */
    pthread_t *threads;
    unsigned n_threads;
    pthread_t storers[RD_STORERS];
};

/* ---- blocks (rp->lock held) ------------------------------------------ */

static void lru_update(struct fs_readpool *rp, struct rblock *b)
{
    bool want = b->o && b->state != RB_FETCHING && b->pins == 0;
    if (want == b->in_lru)
        return;
    if (want) {
        DL_APPEND2(rp->lru, b, lru_prev, lru_next);
        pthread_cond_broadcast(&rp->room_cond); /* a read waiting for memory may take it */
    } else {
        DL_DELETE2(rp->lru, b, lru_prev, lru_next);
    }
    b->in_lru = want;
}

/* What the kept buffers add to mem_used: those beyond the blocks that
 * have none yet (as many are theirs, already counted). */
static uint64_t warm_counted(const struct fs_readpool *rp)
{
    return rp->warm.n > rp->warm.bare ? (uint64_t)(rp->warm.n - rp->warm.bare) * RD_BLOCK : 0;
}

/* Give the budget back what the read path no longer holds (rp->lock
 * held), after mem_used or the warm buffers shrank.  Growth is charged
 * before it happens (block_new), so the charge is never short. */
static void charge_sync_locked(struct fs_readpool *rp)
{
    uint64_t held = rp->mem_used + warm_counted(rp);
    if (rp->charged > held) {
        fs_budget_give(rp->budget, FS_USE_READ, rp->charged - held);
        rp->charged = held;
    }
}

/* ---- warm buffers (rp->lock held) -------------------------------------
 *
 * A fresh 1 MiB buffer is a fresh mapping: the kernel faults in and zeroes
 * its 256 pages at first touch and unmaps them at free, which cost a cold
 * read an eighth of its CPU.  So the buffer of a freed block is kept and
 * given to the next block made, as it is: never zeroed, since a block's
 * bytes are read only below what its job wrote (len, arrived).  Kept
 * buffers stay charged to the budget as blocks are (rp->charged =
 * mem_used + warm_counted()), and a block takes a kept buffer before any
 * new one (and then no new charge), so what the process maps never
 * exceeds the most blocks in memory at once.  A block gets its buffer
 * only when its first bytes come (block_buffer), not when it is asked
 * for: a kept buffer is resident, and read-ahead asks for up to
 * max_readahead of blocks at once, which arrive over a while; so the peak
 * RSS stays that of the blocks being filled or filled.  At most
 * RD_WARM_MAX are kept; when the last block in memory goes, all but
 * RD_WARM_IDLE are freed, and another use waiting for memory has all
 * but those promised to bare blocks freed (read_reclaim); each freed
 * one's charge goes back to the budget (charge_sync_locked).
 *
 * Buffers come two to a slab, a 2 MiB-aligned mapping advised
 * MADV_HUGEPAGE: the kernel then backs it with one transparent huge page,
 * faulted in at once, and pins it for the FUSE reply and for O_DIRECT a
 * folio at a time rather than 256 pages (pinning 4 KiB pages was a fifth
 * of a warm read; issue 21).  A slab is unmapped only when both halves
 * are free, so a kept half whose other half a block holds stays (still
 * charged: the bound counts what is mapped); kept halves are given out
 * before whole slabs, which fills slabs and leaves whole ones to free.
 * A slab's second half is a kept buffer from the start: it is charged
 * then, as a promise to another bare block or taken from what the budget
 * spares; when it spares nothing, the block gets a single 1 MiB buffer. */

static struct rslab *slab_of(struct fs_readpool *rp, const char *data)
{
    char *base = (char *)((uintptr_t)data & ~(uintptr_t)(RD_SLAB - 1));
    struct rslab *s;
    HASH_FIND(hh, rp->warm.slabs, &base, sizeof(base), s);
    return s;
}

/* Set slab s's free halves, moving it to the list that says so. */
static void slab_set_free(struct fs_readpool *rp, struct rslab *s, unsigned free)
{
    if (s->free == 3)
        DL_DELETE(rp->warm.wholes, s);
    else if (s->free)
        DL_DELETE(rp->warm.halves, s);
    s->free = free;
    if (free == 3)
        DL_APPEND(rp->warm.wholes, s);
    else if (free)
        DL_APPEND(rp->warm.halves, s);
}

/* A new slab, its half 0 taken and half 1 kept (its charge is the
 * caller's), or NULL. */
static char *slab_new(struct fs_readpool *rp)
{
    struct rslab *s = calloc(1, sizeof(*s));
    char *map =
        s ? mmap(NULL, 2 * RD_SLAB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
          : MAP_FAILED;
    if (map == MAP_FAILED) {
        free(s);
        return NULL;
    }
    /* twice the size mapped, the aligned slab kept, the rest unmapped */
    char *base = (char *)(((uintptr_t)map + RD_SLAB - 1) & ~(uintptr_t)(RD_SLAB - 1));
    if (base > map)
        munmap(map, (size_t)(base - map));
    munmap(base + RD_SLAB, (size_t)(map + 2 * RD_SLAB - (base + RD_SLAB)));
#ifdef MADV_HUGEPAGE
    (void)madvise(base, RD_SLAB, MADV_HUGEPAGE); /* a hint: refused, 4 KiB pages */
#endif
    s->base = base;
    HASH_ADD(hh, rp->warm.slabs, base, sizeof(s->base), s);
    slab_set_free(rp, s, 2);
    rp->warm.n++;
    return base;
}

/* Unmap slab s, both halves free. */
static void slab_unmap(struct fs_readpool *rp, struct rslab *s)
{
    slab_set_free(rp, s, 0);
    HASH_DEL(rp->warm.slabs, s);
    munmap(s->base, RD_SLAB);
    free(s);
    rp->warm.n -= 2;
}

/* A kept buffer, or NULL when none is: a half whose other half is in use
 * first, then a whole slab's, then a single. */
static char *warm_take(struct fs_readpool *rp)
{
    struct rslab *s = rp->warm.halves ? rp->warm.halves : rp->warm.wholes;
    if (s) {
        unsigned half = s->free & 1u ? 0 : 1;
        slab_set_free(rp, s, s->free & ~(1u << half));
        rp->warm.n--;
        return s->base + half * RD_BLOCK;
    }
    struct rbuf *buf = rp->warm.singles;
    if (!buf)
        return NULL;
    rp->warm.singles = buf->next;
    rp->warm.n--;
    return (char *)buf;
}

/* Keep a buffer, whatever number are kept already. */
static void warm_put(struct fs_readpool *rp, char *data)
{
    struct rslab *s = slab_of(rp, data);
    if (s) {
        slab_set_free(rp, s, s->free | 1u << (unsigned)((size_t)(data - s->base) / RD_BLOCK));
    } else {
        struct rbuf *buf = (struct rbuf *)(void *)data;
        buf->next = rp->warm.singles;
        rp->warm.singles = buf;
    }
    rp->warm.n++;
}

/* Free all but about `keep` kept buffers (the caller gives back their
 * charge: charge_sync_locked): singles first, then whole slabs; a half
 * whose other half is in use stays. */
static void warm_trim(struct fs_readpool *rp, unsigned keep)
{
    while (rp->warm.n > keep && rp->warm.singles) {
        struct rbuf *buf = rp->warm.singles;
        rp->warm.singles = buf->next;
        rp->warm.n--;
        free(buf);
    }
    while (rp->warm.n >= keep + 2 && rp->warm.wholes)
        slab_unmap(rp, rp->warm.wholes);
}

/* Keep the buffer of a freed block (already out of mem_used; its charge
 * then stays), but no more than RD_WARM_MAX. */
static void warm_give(struct fs_readpool *rp, char *data)
{
    warm_put(rp, data);
    if (rp->warm.n > RD_WARM_MAX)
        warm_trim(rp, RD_WARM_MAX);
}

/* Take back the buffer of block b, which holds none of its bytes yet:
 * kept for it (or another block without one) until its bytes come. */
static void warm_return(struct fs_readpool *rp, struct rblock *b)
{
    warm_put(rp, b->data);
    rp->warm.bare++;
    b->data = NULL;
}

/* A buffer for a bare block when none is kept: a new slab's half when its
 * other half is charged (promised to another bare block, or spared by the
 * budget now), else a single buffer; NULL when neither can be mapped. */
static char *buffer_new(struct fs_readpool *rp)
{
    bool promised = rp->warm.bare > 1; /* this block is one of them */
    if (promised || fs_budget_try(rp->budget, FS_USE_READ, RD_BLOCK, FS_TAKE_SPARE)) {
        if (!promised)
            rp->charged += RD_BLOCK;
        char *data = slab_new(rp);
        if (data)
            return data;
        charge_sync_locked(rp); /* a charge taken for the second half goes back */
    }
    char *data;
    /* page-aligned: the disk cache can write it with O_DIRECT */
    return posix_memalign((void **)&data, 4096, RD_BLOCK) == 0 ? data : NULL;
}

/* Give block b its buffer, a kept one if any, before its first bytes are
 * written (its memory was charged when it was made).  0 or ENOMEM. */
static int block_buffer(struct fs_readpool *rp, struct rblock *b)
{
    if (b->data)
        return 0;
    if (!(b->data = warm_take(rp)) && !(b->data = buffer_new(rp)))
        return ENOMEM;
    rp->warm.bare--;
    return 0;
}

/* ---- blocks (rp->lock held), continued -------------------------------- */

static void block_maybe_free(struct fs_readpool *rp, struct rblock *b)
{
    if (b->o || b->pins)
        return;
    rp->mem_used -= RD_BLOCK;
    if (b->data)
        warm_give(rp, b->data);
    else
        rp->warm.bare--;
    /* nothing is being read: memory idle is given back (a kept buffer
     * that was a bare block's now counts on its own, still charged) */
    warm_trim(rp, rp->mem_used ? RD_WARM_MAX : RD_WARM_IDLE);
    charge_sync_locked(rp);
    pthread_cond_destroy(&b->done);
    free(b);
    pthread_cond_broadcast(&rp->room_cond);
}

/* Take a block out of its object's table. */
static void block_drop(struct fs_readpool *rp, struct rblock *b)
{
    if (!b->o)
        return;
    HASH_DEL(b->o->blocks, b);
    b->o = NULL;
    lru_update(rp, b);
    block_maybe_free(rp, b);
}

static void block_unpin(struct fs_readpool *rp, struct rblock *b)
{
    b->pins--;
    /* A random reader reads it again from the disk cache, a page at a
     * time, as cheaply as from here: memory is better left to read-ahead.
     * And a block fs_reader_free() left to its job goes when the job lets
     * go (even if a read still pins it: the object may go next). */
    if (b->o && ((!b->pins && b->transient && b->stored) || !b->o->readers)) {
        block_drop(rp, b);
        return;
    }
    lru_update(rp, b);
    block_maybe_free(rp, b);
}

/* Wait a while on rp->room_cond (rp->lock held): for a block freed or
 * made reclaimable here, or at most a few ms, for memory another use gives
 * back to the budget (which cannot wake this condition: it is given under
 * other locks). */
static void wait_memory_locked(struct fs_readpool *rp)
{
    util_cond_wait_ms(&rp->room_cond, &rp->lock, 20);
}

/* A new FETCHING block in o's table (or the one another thread made while
 * this one waited; with o NULL, in no table), or NULL: without `wait` when the
 * budget has no memory to spare; with `wait` after reclaiming or waiting. */
static struct rblock *block_new(struct fs_readpool *rp, struct robj *o, uint64_t no, bool wait,
                                bool transient)
{
    for (;;) {
        if (rp->warm.n > rp->warm.bare) /* a kept buffer no block has: charged already */
            break;
        if (fs_budget_try(rp->budget, FS_USE_READ, RD_BLOCK, wait ? FS_TAKE_NEED : FS_TAKE_SPARE)) {
            rp->charged += RD_BLOCK;
            break;
        }
        /* Room is made from finished blocks no read is using, least
         * recently used first; read-ahead takes only blocks already read
         * from, never another reader's read-ahead not yet read. */
        struct rblock *victim = NULL;
        unsigned scanned = 0;
        for (struct rblock *c = rp->lru; c && scanned < 64; c = c->lru_next, scanned++)
            if (wait || c->used) {
                victim = c;
                break;
            }
        if (victim) {
            block_drop(rp, victim); /* frees it (its buffer kept): it was unpinned */
        } else if (!wait) {
            return NULL;
        } else if (fs_budget_wait(rp->budget, FS_USE_READ, RD_BLOCK, 0) == 0) {
            /* the other uses gave back memory they kept (idle part
             * buffers); their reclaimers never take rp->lock */
            rp->charged += RD_BLOCK;
            break;
        } else {
            wait_memory_locked(rp);
            struct rblock *b = NULL; /* another reader may have made it meanwhile */
            if (o)
                HASH_FIND(hh, o->blocks, &no, sizeof(no), b);
            if (b)
                return b;
        }
    }
    struct rblock *b = calloc(1, sizeof(*b)); /* its buffer comes with its bytes */
    if (!b) {
        charge_sync_locked(rp); /* a charge taken for it goes back */
        return NULL;
    }
    rp->mem_used += RD_BLOCK;
    rp->warm.bare++; /* a kept buffer, if any, is now promised to it */
    pthread_cond_init(&b->done, NULL);
    b->o = o;
    b->no = no;
    b->state = RB_FETCHING;
    b->transient = transient;
    if (o)
        HASH_ADD(hh, o->blocks, no, sizeof(b->no), b);
    return b;
}

/* The budget's reclaimer (another use waits for memory): give back about
 * `want` bytes of finished blocks no read is using, least recently used
 * first, and the kept buffers but those promised to blocks whose bytes
 * are on their way.  Blocks a read waits on or pins stay. */
static uint64_t read_reclaim(void *arg, uint64_t want)
{
    struct fs_readpool *rp = arg;
    pthread_mutex_lock(&rp->lock);
    uint64_t before = rp->charged;
    uint64_t freed = warm_counted(rp);
    while (freed < want && rp->lru) {
        block_drop(rp, rp->lru); /* unpinned: its buffer kept or freed */
        freed += RD_BLOCK;
    }
    warm_trim(rp, rp->warm.bare);
    charge_sync_locked(rp);
    uint64_t given = before - rp->charged;
    pthread_mutex_unlock(&rp->lock);
    return given;
}

/* ---- jobs ---------------------------------------------------------------- */

/* Continue the page CRCs of block b over the bytes [from, from + len)
 * just written into it (its job's thread): they are in the CPU's cache
 * now, where a storer reading the block later would fetch them from
 * memory again. */
static void block_sum(struct rblock *b, size_t from, size_t len)
{
    const char *p = b->data + from;
    while (len) {
        size_t page = from / CACHE_PAGE_SIZE, in = from % CACHE_PAGE_SIZE;
        size_t n = CACHE_PAGE_SIZE - in < len ? CACHE_PAGE_SIZE - in : len;
        b->crc[page] = cache_crc32c(p, n, in ? b->crc[page] : 0);
        p += n;
        from += n;
        len -= n;
    }
}

/* Append bytes a GET brought to the FETCHING block b (its job's thread,
 * without rp->lock): they become readable at once by a read waiting for
 * them, and the block READY once whole (a short last block is made READY
 * by the job when its GET ends).  len must fit in the block.  0, or
 * ENOMEM when the block could get no buffer. */
static int block_append(struct fs_readpool *rp, struct rblock *b, const void *data, size_t len)
{
    if (!b->data) { /* its first bytes: the job alone sets data, reads wait for them */
        pthread_mutex_lock(&rp->lock);
        int rc = block_buffer(rp, b);
        pthread_mutex_unlock(&rp->lock);
        if (rc)
            return rc;
    }
    memcpy(b->data + b->len, data, len);
    block_sum(b, b->len, len);
    b->len += len;
    atomic_store(&b->arrived, b->len);
    size_t want = atomic_load(&b->awaited);
    if (b->len == RD_BLOCK || (want && b->len >= want)) {
        pthread_mutex_lock(&rp->lock);
        if (b->len == RD_BLOCK)
            b->state = RB_READY;
        atomic_store(&b->awaited, 0); /* the reads not served yet ask again */
        pthread_cond_broadcast(&b->done);
        pthread_mutex_unlock(&rp->lock);
    }
    return 0;
}

struct fill {
    struct fs_readpool *rp;
    struct robj *o;         /* the job's; NULL: its headers are not kept */
    struct rblock **blocks; /* the gap being fetched */
    size_t n, i;            /* blocks; the one being filled */
};

static int fill_sink(void *arg, const void *data, size_t len)
{
    struct fill *f = arg;
    const char *p = data;
    while (len) {
        if (f->i >= f->n)
            return EIO; /* more than asked for */
        struct rblock *b = f->blocks[f->i];
        size_t room = RD_BLOCK - b->len, take = len < room ? len : room;
        int rc = block_append(f->rp, b, p, take);
        if (rc)
            return rc;
        p += take;
        len -= take;
        if (b->len == RD_BLOCK) {
            pthread_mutex_lock(&f->rp->lock);
            /* Nobody wants the rest (the file was closed): stop here. */
            bool stop = !b->o && f->i + 1 < f->n && !f->blocks[f->i + 1]->o;
            pthread_mutex_unlock(&f->rp->lock);
            f->i++;
            if (stop)
                return ECANCELED;
        }
    }
    return 0;
}

/* A GET's answer headers, on the HTTP thread: the object's metadata now,
 * as a HEAD would have said (the GET is pinned to o's ETag), kept on o
 * with the time for fs_readpool_told. */
static void fill_told(void *arg, const struct s3_object_info *info)
{
    struct fill *f = arg;
    if (!f->o)
        return;
    struct fs_attr a;
    fs_attr_from_head(f->rp->cfg, info, false, &a);
    const char *x = fs_meta_get(info, "xattr");
    char *xattr = x ? strdup(x) : NULL;
    if (x && !xattr)
        return; /* not kept: a getattr asks S3 */
    bool gzip = info->content_encoding && strcasecmp(info->content_encoding, "gzip") == 0;
    uint64_t now = util_now_ms();
    pthread_mutex_lock(&f->rp->lock);
    struct robj *o = f->o;
    o->told = a;
    free(o->told_xattr);
    o->told_xattr = xattr;
    o->told_gzip = gzip;
    o->told_ms = now;
    pthread_mutex_unlock(&f->rp->lock);
}

/* Where o's bytes are to be asked for now: its key and ETag, or the copy a
 * rename on this mount made of them.  The key is the caller's to free
 * (NULL: ENOMEM). */
static char *obj_where(struct fs_readpool *rp, const struct robj *o, char etag[80])
{
    pthread_mutex_lock(&rp->lock);
    char *key = strdup(o->moved_key ? o->moved_key : o->key);
    snprintf(etag, 80, "%s", o->moved_key ? o->moved_etag : o->etag);
    pthread_mutex_unlock(&rp->lock);
    return key;
}

/* cache_get() into block b, which gets a buffer for it; on a miss the
 * buffer goes back to the kept ones until the block's bytes come (it was
 * not touched).  0, or cache_get's errno, or ENOMEM. */
static int cache_get_block(struct fs_readpool *rp, struct robj *r, struct rblock *b, size_t *len)
{
    pthread_mutex_lock(&rp->lock);
    int rc = block_buffer(rp, b);
    pthread_mutex_unlock(&rp->lock);
    if (!rc)
        rc = cache_get(rp->cache, r->id, b->no, b->data, RD_BLOCK, len);
    if (rc && b->data) {
        pthread_mutex_lock(&rp->lock);
        warm_return(rp, b);
        pthread_mutex_unlock(&rp->lock);
    }
    return rc;
}

static void run_job(struct fs_readpool *rp, struct rjob *j)
{
    struct robj *r = j->o;
    bool cached[j->n];
    for (size_t i = 0; i < j->n; i++) {
        struct rblock *b = j->blocks[i];
        size_t len = 0;
        cached[i] = rp->cache && cache_get_block(rp, r, b, &len) == 0;
        /* A block is whole unless it is the object's last. */
        uint64_t want = r->size - b->no * RD_BLOCK;
        if (cached[i] && len != (want < RD_BLOCK ? want : RD_BLOCK))
            cached[i] = false;
        if (cached[i]) {
            pthread_mutex_lock(&rp->lock);
            b->len = len;
            b->stored = true;
            b->state = RB_READY;
            pthread_cond_broadcast(&b->done);
            pthread_mutex_unlock(&rp->lock);
        }
    }
    for (size_t i = 0; i < j->n;) {
        if (cached[i]) {
            i++;
            continue;
        }
        size_t k = i;
        while (k < j->n && !cached[k])
            k++;
        struct fill f = {.rp = rp, .blocks = j->blocks + i, .n = k - i};
        uint64_t off = j->blocks[i]->no * RD_BLOCK;
        char etag[80], *key = obj_where(rp, r, etag);
        /* headers kept only of the object at its own key, pinned */
        f.o = key && *etag && strcmp(key, r->key) == 0 ? r : NULL;
        int rc = !key ? ENOMEM
                      : s3_get_object_told(rp->s3, key, off, (uint64_t)(k - i) * RD_BLOCK,
                                           *etag ? etag : NULL, fill_told, &f, fill_sink, &f, NULL);
        free(key);
        pthread_mutex_lock(&rp->lock);
        for (size_t m = 0; m < f.n; m++) {
            struct rblock *b = f.blocks[m];
            if (b->state != RB_FETCHING)
                continue;
            if (!rc && b->len == r->size - b->no * RD_BLOCK) {
                b->state = RB_READY; /* the short last block */
            } else {
                b->state = RB_ERROR;
                b->error = rc && rc != ECANCELED ? rc : EIO;
            }
            pthread_cond_broadcast(&b->done);
        }
        pthread_mutex_unlock(&rp->lock);
        if (rc == ESTALE)
            log_error("read of %s: the object changed since it was opened", r->key);
        i = k;
    }
}

/* Keep in the disk cache what a job fetched (ready blocks do not change
 * any more).  Run by a storer, so that the worker goes on fetching while
 * the disk writes. */
static void store_job(struct fs_readpool *rp, struct rjob *j)
{
    for (size_t m = 0; m < j->n; m++) {
        struct rblock *b = j->blocks[m];
        pthread_mutex_lock(&rp->lock);
        bool want = b->state == RB_READY && !b->stored;
        pthread_mutex_unlock(&rp->lock);
        /* A sequential reader's block is not read again soon (and if it
         * is, the kernel has it): store it around the page cache. */
        unsigned flags = b->transient ? 0 : CACHE_STORE_DIRECT;
        if (want &&
            cache_store_summed(rp->cache, j->o->id, b->no, b->data, b->len, b->crc, flags) == 0) {
            pthread_mutex_lock(&rp->lock);
            b->stored = true;
            pthread_mutex_unlock(&rp->lock);
        }
    }
}

static void obj_unref_locked(struct fs_readpool *rp, struct robj *o);
static void first_unref_locked(struct fs_readpool *rp, struct fs_first *g);

/* The job is over: its blocks and its object go free (rp->lock held). */
static void job_end_locked(struct fs_readpool *rp, struct rjob *j)
{
    for (size_t i = 0; i < j->n; i++) {
        j->blocks[i]->job = false;
        block_unpin(rp, j->blocks[i]);
    }
    if (j->o)
        obj_unref_locked(rp, j->o);
    if (j->first) {
        j->first->job = NULL;
        first_unref_locked(rp, j->first);
    }
    free(j->blocks);
    free(j);
}

/* ---- an open's first GET --------------------------------------------- */

static void first_unref_locked(struct fs_readpool *rp, struct fs_first *g)
{
    (void)rp;
    if (--g->refs)
        return;
    free(g->key);
    free(g->xattr);
    free(g);
}

/* The answer's headers, on the HTTP thread: what a HEAD would have said. */
static void first_told(void *arg, const struct s3_object_info *info)
{
    struct fs_first *g = arg;
    struct fs_attr a;
    fs_attr_from_head(g->cfg, info, false, &a);
    const char *x = fs_meta_get(info, "xattr");
    char *xattr = x ? strdup(x) : NULL;
    bool gzip = info->content_encoding && strcasecmp(info->content_encoding, "gzip") == 0;
    pthread_mutex_lock(&g->rp->lock);
    g->attr = a;
    g->gzip = gzip;
    g->xattr = xattr;
    g->told = true;
    pthread_cond_broadcast(&g->rp->done_cond);
    pthread_mutex_unlock(&g->rp->lock);
}

/* Block 0's bytes, on the HTTP thread, as fill_sink; stops the transfer
 * once nobody will read them (the open let go and the block is in no
 * object's table: never adopted, or dropped since). */
static int first_sink(void *arg, const void *data, size_t len)
{
    struct fs_first *g = arg;
    struct rblock *b = g->b; /* the job's pin keeps it */
    if (!b)
        return 0; /* headers only: the byte asked for is dropped */
    pthread_mutex_lock(&g->rp->lock);
    bool unread = g->released && !b->o;
    pthread_mutex_unlock(&g->rp->lock);
    if (unread)
        return ECANCELED;
    if (len > RD_BLOCK - b->len)
        return EIO; /* more than asked for */
    return block_append(g->rp, b, data, len);
}

/* The first GET: block 0, its headers told to the open on the way. */
static void run_first(struct fs_readpool *rp, struct rjob *j)
{
    struct fs_first *g = j->first;
    struct rblock *b = g->b;
    int rc =
        s3_get_object_told(rp->s3, g->key, 0, b ? RD_BLOCK : 1, *g->if_match ? g->if_match : NULL,
                           first_told, g, first_sink, g, NULL);
    pthread_mutex_lock(&rp->lock);
    g->done = true;
    g->rc = rc;
    if (b && b->state == RB_FETCHING) {
        uint64_t want = g->attr.size < RD_BLOCK ? g->attr.size : RD_BLOCK;
        if (!rc && g->told && b->len == want) {
            b->state = RB_READY; /* the short last block */
        } else {
            b->state = RB_ERROR;
            b->error = rc && rc != ECANCELED ? rc : EIO;
        }
    }
    if (b)
        pthread_cond_broadcast(&b->done);
    pthread_cond_broadcast(&rp->done_cond);
    pthread_mutex_unlock(&rp->lock);
    if (rc == ESTALE && g->told)
        log_error("read of %s: the object changed since it was opened", g->key);
}

/* Keep block b of o in the disk cache, though its job is over: a store
 * job of its own, when the storers have room (rp->lock held). */
static void store_later_locked(struct fs_readpool *rp, struct robj *o, struct rblock *b)
{
    if (!rp->n_storers || b->state != RB_READY || b->stored || rp->store_blocks >= RD_STORE_MAX)
        return;
    struct rjob *j = calloc(1, sizeof(*j));
    struct rblock **blocks = calloc(1, sizeof(*blocks));
    if (!j || !blocks) {
        free(j);
        free(blocks);
        return;
    }
    blocks[0] = b;
    j->blocks = blocks;
    j->n = 1;
    j->o = o;
    o->refs++;
    b->pins++;
    b->job = true;
    LL_APPEND(rp->stores, j);
    rp->store_blocks++;
    pthread_cond_signal(&rp->store_cond);
}

static void *storer(void *arg)
{
    struct fs_readpool *rp = arg;
    pthread_mutex_lock(&rp->lock);
    for (;;) {
        while (!rp->stores && !rp->stop_store)
            pthread_cond_wait(&rp->store_cond, &rp->lock);
        if (!rp->stores)
            break; /* stopped, and nothing left to store */
        struct rjob *j = rp->stores;
        rp->stores = j->next;
        pthread_mutex_unlock(&rp->lock);
        store_job(rp, j);
        pthread_mutex_lock(&rp->lock);
        rp->store_blocks -= (unsigned)j->n;
        pthread_cond_broadcast(&rp->store_room); /* room for a worker waiting */
        job_end_locked(rp, j);
    }
    pthread_mutex_unlock(&rp->lock);
    return NULL;
}

static void *worker(void *arg)
{
    struct fs_readpool *rp = arg;
    pthread_mutex_lock(&rp->lock);
    for (;;) {
        rp->idle++;
        while (!rp->queue && !rp->stop)
            pthread_cond_wait(&rp->work_cond, &rp->lock);
        rp->idle--;
        if (rp->stop)
            break;
        struct rjob *j = rp->queue;
        rp->queue = j->next;
        pthread_mutex_unlock(&rp->lock);
        if (j->first)
            run_first(rp, j);
        else
            run_job(rp, j);
        pthread_mutex_lock(&rp->lock);
        if (j->first)
            j->first->job = NULL; /* adopted from now on, it is not stored with the job */
        bool store = false;
        for (size_t i = 0; rp->n_storers && j->o && i < j->n; i++)
            store |= j->blocks[i]->state == RB_READY && !j->blocks[i]->stored;
        if (!store) {
            job_end_locked(rp, j);
            continue;
        }
        while (rp->store_blocks && rp->store_blocks + j->n > RD_STORE_MAX)
            pthread_cond_wait(&rp->store_room, &rp->lock);
        j->next = NULL;
        LL_APPEND(rp->stores, j);
        rp->store_blocks += (unsigned)j->n;
        pthread_cond_signal(&rp->store_cond);
    }
    pthread_mutex_unlock(&rp->lock);
    return NULL;
}

/* Queue j for a worker (rp->lock held) and wake one idle worker (only
 * one: the others would find nothing to do and sleep again).  Jobs a read
 * waits on go before every read-ahead job, in their order: with many
 * readers at once, one reader's deep read-ahead must not delay another's
 * read (the fairness of readers sharing the workers). */
static void job_queue_locked(struct fs_readpool *rp, struct rjob *j, bool need)
{
    j->need = need;
    j->next = NULL;
    if (!need || !rp->queue || !rp->queue->need) {
        if (need)
            LL_PREPEND(rp->queue, j);
        else
            LL_APPEND(rp->queue, j);
    } else {
        struct rjob *at = rp->queue;
        while (at->next && at->next->need)
            at = at->next;
        j->next = at->next;
        at->next = j;
    }
    pthread_cond_signal(&rp->work_cond);
}

/* Queue fetches for blocks [first, last] of o that are not held; `wait`
 * says whether to wait for memory (blocks a read needs) or to stop at the
 * first one there is no memory for (read-ahead).  With `pin`, each block
 * is also pinned for the caller and stored in pin[no - first].  Blocks
 * made here are `transient` as asked.  Returns the first block not asked
 * for (last + 1 when all were). */
static uint64_t request(struct fs_readpool *rp, struct robj *o, uint64_t first, uint64_t last,
                        bool wait, bool transient, uint64_t part_blocks, struct rblock **pin)
{
    struct rjob *j = NULL;
    uint64_t no = first;
    for (; no <= last; no++) {
        struct rblock *b;
        HASH_FIND(hh, o->blocks, &no, sizeof(no), b);
        if (!b && !(b = block_new(rp, o, no, wait, transient)))
            break;
        if (pin) { /* a read needs it: nothing may reclaim it from now on */
            b->pins++;
            lru_update(rp, b);
            pin[no - first] = b;
        }
        if (b->state != RB_FETCHING || b->pins > (pin ? 1u : 0u)) { /* there, or on its way */
            if (j) {
                job_queue_locked(rp, j, pin != NULL);
                j = NULL;
            }
            continue;
        }
        if (!j) {
            j = calloc(1, sizeof(*j));
            if (j)
                j->blocks = calloc(part_blocks, sizeof(*j->blocks));
            if (!j || !j->blocks) {
                free(j);
                j = NULL;
                block_drop(rp, b);
                break;
            }
            j->o = o;
            o->refs++;
        }
        b->pins++; /* the job's */
        b->job = true;
        j->blocks[j->n++] = b;
        if (j->n == part_blocks) {
            job_queue_locked(rp, j, pin != NULL);
            j = NULL;
        }
    }
    if (j)
        job_queue_locked(rp, j, pin != NULL);
    return no; /* the first block not asked for */
}

/* ---- one read: the reader's window, the blocks, the read-ahead ---------- */

/* A read [off, end) by a random reader, with a disk cache: blocks in
 * memory are read there; of the others, only the pages asked for are read
 * from the disk cache (into rep->buf), and only blocks the disk cache does
 * not hold are fetched, one block per GET, as transient blocks (kept in
 * memory only until they are stored and read).  So a random reader costs
 * a page of disk per hit and at most 1 MiB of the server per miss, and
 * holds no memory between reads.  Fills rep->pinned and rep->iov, one
 * slot per block (a NULL pin: the bytes are in rep->buf already).  Called
 * with rp->lock held, which it drops while reading the disk.  0 or EIO
 * (no memory for a block, even after waiting). */
static int read_random(struct fs_readpool *rp, struct robj *o, uint64_t off, uint64_t end,
                       uint64_t part_blocks, struct fs_read_reply *rep)
{
    uint64_t b0 = off / RD_BLOCK, b1 = (end - 1) / RD_BLOCK;
    bool from_disk[FS_READ_MAX_IOV] = {false}, any = false;
    rep->n = (size_t)(b1 - b0 + 1);
    for (size_t i = 0; i < rep->n; i++) {
        uint64_t no = b0 + i;
        struct rblock *b;
        HASH_FIND(hh, o->blocks, &no, sizeof(no), b);
        if (b) { /* in memory, or on its way */
            b->pins++;
            lru_update(rp, b);
            rep->pinned[i] = b;
        } else {
            from_disk[i] = any = true;
        }
    }
    if (!any)
        return 0;
    /* o stays: the caller's reader holds it. */
    pthread_mutex_unlock(&rp->lock);
    rep->buf = malloc(end - off);
    bool fetch[FS_READ_MAX_IOV] = {false};
    for (size_t i = 0; i < rep->n; i++) {
        if (!from_disk[i])
            continue;
        uint64_t no = b0 + i, base = no * RD_BLOCK;
        uint64_t from = off > base ? off : base, to = end < base + RD_BLOCK ? end : base + RD_BLOCK;
        char *dst = rep->buf + (from - off);
        size_t got = 0;
        fetch[i] = !rep->buf ||
                   cache_read(rp->cache, o->id, no, from - base, to - from, dst, &got) != 0 ||
                   got != to - from;
        if (!fetch[i])
            rep->iov[i] = (struct iovec){dst, to - from};
    }
    pthread_mutex_lock(&rp->lock);
    for (size_t i = 0; i < rep->n; i++) {
        if (!fetch[i])
            continue;
        uint64_t no = b0 + i;
        if (request(rp, o, no, no, true, true, part_blocks, &rep->pinned[i]) <= no)
            return EIO;
    }
    return 0;
}

/* Drop the blocks [first, end) of o that read-ahead brought or is
 * bringing and no read has used or holds (only the job's pin, if any). */
static void drop_unread_ahead(struct fs_readpool *rp, struct robj *o, uint64_t first, uint64_t end)
{
    for (uint64_t no = first; no < end; no++) {
        struct rblock *b;
        HASH_FIND(hh, o->blocks, &no, sizeof(no), b);
        if (b && !b->used && !b->transient && b->pins == (b->job ? 1u : 0u))
            block_drop(rp, b);
    }
}

/* Whether the read [off, end) goes on sequentially, by the reader's window
 * and streak, which it updates; a sequential read drops the blocks behind
 * it, a seek the read-ahead no read used (rp->lock held). */
static bool reader_track(struct fs_readpool *rp, struct fs_reader *r, uint64_t off, uint64_t end)
{
    uint64_t b0 = off / RD_BLOCK, max_ra = r->fs->cfg.max_readahead;
    /* Sequential: a reader that has twice in a row gone on where it left
     * off.  The kernel's read-ahead sends several reads at once and they
     * may arrive out of order, so once a reader is sequential, reads a
     * little behind or ahead keep it so: behind by as much as the kernel
     * has in flight at once (up to max_background reads of max_read each,
     * 12 MiB at the defaults), within the window.  Anything else is a seek. */
    uint64_t behind = r->window < 16 * (uint64_t)RD_BLOCK ? r->window : 16 * (uint64_t)RD_BLOCK;
    if (behind < 2 * (uint64_t)RD_BLOCK)
        behind = 2 * (uint64_t)RD_BLOCK;
    uint64_t ahead = r->window > RD_BLOCK ? r->window : RD_BLOCK;
    bool near = r->next_off > 0 && off + behind >= r->next_off && off <= r->next_off + ahead;
    bool goes_on = r->next_off > 0 && off >= r->next_off && off - r->next_off <= (128u << 10);
    r->streak = goes_on || (near && r->streak >= 2) ? r->streak + 1 : 0;
    bool seq = r->streak >= 2;
    struct rblock *b, *tmp;
    if (seq) {
        if (r->window < max_ra && end > r->next_off)
            r->window *= 2;
        /* Behind the read: consumed, or (not read yet) left behind by
         * more than reads arrive out of order. */
        HASH_ITER(hh, r->o->blocks, b, tmp)
        if (b->state != RB_FETCHING &&
            ((b->used && b->no + 2 < b0) || (b->no + 1) * RD_BLOCK + behind <= off))
            block_drop(rp, b);
    } else {
        /* A seek: no read-ahead.  Blocks already here stay while memory
         * allows (random readers come back to them); the least recently
         * used go first when a read needs room.  But the read-ahead this
         * reader asked for and no read has touched is let go (its GETs
         * stop, as at close): a reader that keeps seeking would otherwise
         * fill max_memory with blocks nobody reads. */
        if (r->ra_next && !near)
            drop_unread_ahead(rp, r->o, r->next_off / RD_BLOCK, r->ra_next);
        r->window = RD_BLOCK;
    }
    if (!near || end > r->next_off)
        r->next_off = end;
    if (seq != r->seq) {
        rp->n_seq += seq ? 1 : -1;
        r->seq = seq;
    }
    return seq;
}

/* The blocks one sequential reader's read-ahead may reach past its read:
 * an equal share, among the readers reading sequentially now, of what the
 * read path holds and could still take (rp->lock held).  Without it the
 * first readers to grow their windows to max_readahead (64 MiB each) hold
 * the memory, and readers that came later fetch only the blocks their
 * reads wait on.  At least two blocks: each reader keeps streaming. */
static uint64_t read_ahead_share(struct fs_readpool *rp)
{
    uint64_t room = rp->charged + fs_budget_spare(rp->budget, FS_USE_READ);
    uint64_t share = room / RD_BLOCK / (rp->n_seq ? rp->n_seq : 1);
    return share < 2 ? 2 : share;
}

/* The blocks one GET of a sequential reader's read-ahead asks for: as
 * many as its window while that is small (a short sequential read costs
 * little), then part_size; but at most half the reader's share, so that
 * while one GET's blocks are being read the next is on its way, and the
 * GETs stay that long however many readers share the memory (asking for
 * whatever single blocks the share had room for cost each reader a GET
 * per block or two, and the server a request each). */
static uint64_t read_ahead_chunk(const struct fs_reader *r, uint64_t share, uint64_t part_blocks)
{
    uint64_t chunk = r->window / RD_BLOCK < part_blocks ? r->window / RD_BLOCK : part_blocks;
    if (chunk > share / 2)
        chunk = share / 2;
    return chunk ? chunk : 1;
}

/* A sequential reader's read-ahead: fetches of the blocks after the read
 * up to its window and its share, a whole chunk per GET, while memory
 * spares them (rp->lock held). */
static void read_ahead(struct fs_readpool *rp, struct fs_reader *r, uint64_t end,
                       uint64_t part_blocks)
{
    uint64_t n_blocks = (r->o->size + RD_BLOCK - 1) / RD_BLOCK;
    uint64_t share = read_ahead_share(rp);
    uint64_t want = (end + r->window + RD_BLOCK - 1) / RD_BLOCK;
    uint64_t cap = (end + RD_BLOCK - 1) / RD_BLOCK + share;
    if (want > cap)
        want = cap;
    if (want > n_blocks)
        want = n_blocks;
    uint64_t chunk = read_ahead_chunk(r, share, part_blocks);
    /* A GET goes out once a whole chunk is wanted (or the object's end),
     * and never past the share. */
    while (r->ra_next < want && (want - r->ra_next >= chunk || want == n_blocks)) {
        uint64_t last = r->ra_next + chunk - 1;
        if (last >= want)
            last = want - 1;
        uint64_t got = request(rp, r->o, r->ra_next, last, false, false, part_blocks, NULL);
        bool all = got > last;
        r->ra_next = got;
        if (!all)
            break; /* no memory to spare: the next read goes on */
    }
}

/* Whether the first `to` bytes of the FETCHING block b are in; if not,
 * b's job is asked to wake the reads when they are (rp->lock held). */
static bool block_arrived_locked(struct rblock *b, size_t to)
{
    if (atomic_load(&b->arrived) >= to)
        return true;
    size_t want = atomic_load(&b->awaited);
    if (!want || to < want)
        atomic_store(&b->awaited, to);
    /* Again after the store: a job that appended past `to` before it could
     * see the store is seen here (both are sequentially consistent). */
    return atomic_load(&b->arrived) >= to;
}

/* Wait for the blocks of the read [off, end) pinned in rep and point
 * rep->iov into them; they stay pinned until the reply is sent, which
 * points into them (no copy).  An `early` read (not part of a sequential
 * stream: a first read, a seek) is answered as soon as its own bytes are
 * in; a sequential one waits for whole blocks, one wakeup a block rather
 * than one for each of the kernel's reads (that cost a quarter more CPU
 * per GiB read).  0, the fetch's errno, or EIO (rp->lock held). */
static int wait_blocks(struct fs_readpool *rp, uint64_t off, uint64_t end, bool early,
                       struct fs_read_reply *rep)
{
    uint64_t b0 = off / RD_BLOCK, b1 = (end - 1) / RD_BLOCK;
    for (size_t i = 0; i < rep->n; i++) {
        struct rblock *blk = rep->pinned[i];
        uint64_t no = b0 + i;
        if (!blk)
            continue; /* read from the disk cache into rep->buf */
        uint64_t from = no == b0 ? off - no * RD_BLOCK : 0;
        uint64_t to = no == b1 ? end - no * RD_BLOCK : RD_BLOCK;
        while (blk->state == RB_FETCHING && !(early && block_arrived_locked(blk, to)))
            pthread_cond_wait(&blk->done, &rp->lock);
        if (blk->state == RB_ERROR) {
            int rc = blk->error;
            block_drop(rp, blk); /* a later read tries again */
            return rc;
        }
        if (blk->state == RB_READY && to > blk->len)
            return EIO; /* the object is shorter than it said */
        blk->used = true;
        rep->iov[i].iov_base = blk->data + from;
        rep->iov[i].iov_len = to - from;
    }
    return 0;
}

/* ---- the interface --------------------------------------------------- */

/* The disk cache of blocks, unless cache_size=0: 0 (rp->cache set, or
 * NULL without a cache), or the errno of opening it (EBUSY: another
 * process holds it). */
static int open_block_cache(struct fs *fs, struct fs_readpool *rp)
{
    int rc = 0;
    struct buf dir = BUF_INIT;
    uint64_t limit = fs->cfg.cache_size;
    if (!fs->cfg.cache_size_set || limit) {
        /* One directory per endpoint and bucket, owned by one process. */
        struct buf id = BUF_INIT;
        buf_printf(&id, "%s\n%s", fs->cfg.endpoint ? fs->cfg.endpoint : "", fs->cfg.bucket);
        unsigned char h = 0;
        for (size_t i = 0; id.data && i < id.len; i++)
            h = (unsigned char)(h * 31 + (unsigned char)id.data[i]);
        buf_printf(&dir, "%s/blocks-", fs->cfg.cache_dir);
        /* A bucket name is DNS-safe, but an access point ARN holds ':'
         * and '/': those become '_' (the hash above tells them apart). */
        for (const char *p = fs->cfg.bucket; *p; p++)
            buf_append(&dir, *p == '/' || *p == ':' ? "_" : p, 1);
        buf_printf(&dir, "-%02x", h);
        buf_free(&id);
        if (!fs->cfg.cache_size_set)
            limit = cache_default_limit(fs->cfg.cache_dir);
        pid_t owner = 0;
        rc = dir.data ? cache_open(dir.data, limit, &rp->cache, &owner) : ENOMEM;
        /* The caller says what failed; the log has the directory's name. */
        if (rc)
            log_debug("block cache %s: %s (held by pid %ld)", dir.data ? dir.data : "",
                      strerror(rc), (long)owner);
    }
    buf_free(&dir);
    return rc;
}

int fs_readpool_new(struct fs *fs)
{
    struct fs_readpool *rp = calloc(1, sizeof(*rp));
    if (!rp)
        return ENOMEM;
    pthread_mutex_init(&rp->lock, NULL);
    pthread_cond_init(&rp->done_cond, NULL);
    pthread_cond_init(&rp->room_cond, NULL);
    pthread_cond_init(&rp->store_room, NULL);
    pthread_cond_init(&rp->work_cond, NULL);
    pthread_cond_init(&rp->store_cond, NULL);
    /* Single block buffers are 1 MiB: have malloc map and unmap each one, so memory given
     * back is given back to the system (glibc would otherwise raise its
     * threshold after the first free and keep freed blocks in its arenas,
     * and the process would grow past max_memory).  But not libcurl's
     * 256 KiB receive buffer, made anew for every transfer: from the heap
     * it is reused warm, mapped afresh it cost a GET 64 page faults. */
    mallopt(M_MMAP_THRESHOLD, 512 * 1024);
    /* The block cache keeps the files of blocks open between reads, up to
     * a quarter of this limit: a random reader's hit is then one preadv.
     * The soft limit is often 1024 where the hard one is far higher. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max &&
        nofile.rlim_cur < 8192) {
        nofile.rlim_cur = nofile.rlim_max < 8192 ? nofile.rlim_max : 8192;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    rp->s3 = fs->s3;
    rp->cfg = &fs->cfg;
    rp->budget = fs->budget;
    fs_budget_set_reclaimer(fs->budget, FS_USE_READ, read_reclaim, rp);
    int rc = open_block_cache(fs, rp);
    unsigned n = fs->cfg.read_parallel ? fs->cfg.read_parallel : 8;
    rp->threads = rc ? NULL : calloc(n, sizeof(*rp->threads));
    if (!rc && !rp->threads)
        rc = ENOMEM;
    for (unsigned i = 0; !rc && rp->cache && i < RD_STORERS; i++, rp->n_storers++)
        rc = util_thread_start(&rp->storers[i], storer, rp);
    for (unsigned i = 0; !rc && i < n; i++, rp->n_threads++)
        rc = util_thread_start(&rp->threads[i], worker, rp);
    fs->rp = rp;
    if (rc) {
        fs_readpool_free(fs);
        return rc;
    }
    return 0;
}

void fs_readpool_free(struct fs *fs)
{
    struct fs_readpool *rp = fs->rp;
    if (!rp)
        return;
    pthread_mutex_lock(&rp->lock);
    rp->stop = true;
    pthread_cond_broadcast(&rp->work_cond);
    pthread_cond_broadcast(&rp->done_cond); /* opens waiting for a first GET's headers */
    pthread_mutex_unlock(&rp->lock);
    for (unsigned i = 0; i < rp->n_threads; i++)
        pthread_join(rp->threads[i], NULL);
    free(rp->threads);
    /* The storers write what the workers fetched, then end. */
    pthread_mutex_lock(&rp->lock);
    rp->stop_store = true;
    pthread_cond_broadcast(&rp->store_cond);
    pthread_mutex_unlock(&rp->lock);
    for (unsigned i = 0; i < rp->n_storers; i++)
        pthread_join(rp->storers[i], NULL);
    while (rp->queue) { /* jobs never started: the session has ended */
        struct rjob *j = rp->queue;
        rp->queue = j->next;
        job_end_locked(rp, j); /* no thread is left to contend for the lock */
    }
    warm_trim(rp, 0); /* no thread is left to contend for the lock */
    struct rslab *s, *tmp;
    HASH_ITER(hh, rp->warm.slabs, s, tmp) /* none: no block is left */
    {
        rp->warm.n += !(s->free & 1u) + !(s->free & 2u);
        slab_set_free(rp, s, 3);
        slab_unmap(rp, s);
    }
    charge_sync_locked(rp);
    fs_budget_set_reclaimer(fs->budget, FS_USE_READ, NULL, NULL);
    cache_close(rp->cache);
    pthread_cond_destroy(&rp->store_cond);
    pthread_cond_destroy(&rp->work_cond);
    pthread_cond_destroy(&rp->room_cond);
    pthread_cond_destroy(&rp->store_room);
    pthread_cond_destroy(&rp->done_cond);
    pthread_mutex_destroy(&rp->lock);
    free(rp);
    fs->rp = NULL;
}

struct fs_reader *fs_reader_new(struct fs *fs, fuse_ino_t ino, const char *path,
                                const struct fs_attr *a)
{
    struct fs_readpool *rp = fs->rp;
    struct fs_reader *r = calloc(1, sizeof(*r));
    char *key = fs_key(fs, path, false);
    struct buf id = BUF_INIT;
    fs_version_id(fs, &id, key ? key : "", a->etag, true);
    if (!r || !key || !id.data) {
        free(r);
        free(key);
        buf_free(&id);
        return NULL;
    }
    r->fs = fs;
    r->ino = ino;
    r->window = RD_BLOCK;
    pthread_mutex_lock(&rp->lock);
    struct robj *o;
    HASH_FIND_STR(rp->objs, id.data, o);
    if (!o && (o = calloc(1, sizeof(*o)))) {
        o->key = key;
        o->id = buf_steal(&id);
        key = NULL;
        snprintf(o->etag, sizeof(o->etag), "%s", a->etag);
        o->size = a->size;
        HASH_ADD_KEYPTR(hh, rp->objs, o->id, strlen(o->id), o);
    }
    if (o) {
        o->readers++;
        o->refs++;
    }
    pthread_mutex_unlock(&rp->lock);
    free(key);
    buf_free(&id);
    if (!o) {
        free(r);
        return NULL;
    }
    r->o = o;
    return r;
}

static void obj_unref_locked(struct fs_readpool *rp, struct robj *o)
{
    if (--o->refs)
        return;
    HASH_DEL(rp->objs, o);
    free(o->told_xattr);
    free(o->moved_key);
    free(o->key);
    free(o->id);
    free(o);
}

void fs_readpool_moved(struct fs *fs, const char *key, const char *etag, const char *new_key,
                       const char *new_etag)
{
    struct fs_readpool *rp = fs->rp;
    pthread_mutex_lock(&rp->lock);
    struct robj *o, *tmp;
    HASH_ITER(hh, rp->objs, o, tmp)
    {
        const char *at = o->moved_key ? o->moved_key : o->key;
        const char *version = o->moved_key ? o->moved_etag : o->etag;
        char *k;
        if (strcmp(at, key) != 0 || strcmp(version, etag) != 0 || !(k = strdup(new_key)))
            continue; /* (on ENOMEM its readers get ENOENT, as before the alias) */
        free(o->moved_key);
        o->moved_key = k;
        snprintf(o->moved_etag, sizeof(o->moved_etag), "%s", new_etag);
    }
    pthread_mutex_unlock(&rp->lock);
}

bool fs_readpool_told(struct fs *fs, const char *key, const char *etag, uint64_t since_ms,
                      struct fs_attr *a, bool *gzip, char **xattr, uint64_t *at_ms)
{
    struct fs_readpool *rp = fs->rp;
    struct buf id = BUF_INIT;
    fs_version_id(fs, &id, key, etag, true);
    if (!id.data)
        return false;
    pthread_mutex_lock(&rp->lock);
    struct robj *o;
    HASH_FIND_STR(rp->objs, id.data, o);
    bool told = o && o->told_ms && o->told_ms >= since_ms && !o->moved_key;
    char *x = told && o->told_xattr ? strdup(o->told_xattr) : NULL;
    if (told && o->told_xattr && !x)
        told = false;
    if (told) {
        *a = o->told;
        *gzip = o->told_gzip;
        *xattr = x;
        *at_ms = o->told_ms;
    }
    pthread_mutex_unlock(&rp->lock);
    buf_free(&id);
    return told;
}

void fs_reader_free(struct fs_reader *r)
{
    if (!r)
        return;
    struct fs_readpool *rp = r->fs->rp;
    struct robj *o = r->o;
    pthread_mutex_lock(&rp->lock);
    if (r->seq)
        rp->n_seq--;
    if (--o->readers == 0) { /* nobody reads it any more: let its blocks go */
        struct rblock *b, *tmp;
        HASH_ITER(hh, o->blocks, b, tmp)
        {
            /* ...but a block on its way to the disk cache (a random
             * reader's, or any whole one, such as an open's block 0) stays
             * findable until it is there (block_unpin drops it when its job
             * ends; the job keeps o), or the next open would fetch it again
             * while the disk is slow.  So does an open's block 0 still
             * arriving, when there is a disk cache to keep it in: its
             * GET goes on (at most 1 MiB, asked for already), where
             * stopping it made a random reader that opens for each read
             * fetch block 0 twice. */
            if (b->job && (b->transient || (b->state == RB_READY && !b->stored) ||
                           (b->first && b->state == RB_FETCHING && rp->cache)))
                continue;
            block_drop(rp, b);
        }
    }
    obj_unref_locked(rp, o);
    pthread_mutex_unlock(&rp->lock);
    free(r);
}

int fs_reader_read(struct fs_reader *r, uint64_t off, size_t size, struct fs_read_reply *rep)
{
    struct fs *fs = r->fs;
    struct fs_readpool *rp = fs->rp;
    memset(rep, 0, sizeof(*rep));
    if (off >= r->o->size || size == 0)
        return 0;
    uint64_t end = off + size < r->o->size ? off + size : r->o->size;
    uint64_t b0 = off / RD_BLOCK, b1 = (end - 1) / RD_BLOCK;
    if (b1 - b0 + 1 > FS_READ_MAX_IOV)
        return EINVAL; /* the kernel never asks for that much at once */
    uint64_t part_blocks = fs->cfg.part_size / RD_BLOCK ? fs->cfg.part_size / RD_BLOCK : 1;

    pthread_mutex_lock(&rp->lock);
    bool seq = reader_track(rp, r, off, end);
    rep->rp = rp;
    int rc = 0;
    if (!seq && rp->cache) {
        rc = read_random(rp, r->o, off, end, part_blocks, rep);
    } else {
        uint64_t asked = request(rp, r->o, b0, b1, true, false, part_blocks, rep->pinned);
        rep->n = asked - b0;
        if (asked <= b1)
            rc = EIO; /* not even memory to ask for it */
    }
    if (!seq || r->ra_next <= b1)
        r->ra_next = b1 + 1;
    if (seq)
        read_ahead(rp, r, end, part_blocks);
    if (!rc)
        rc = wait_blocks(rp, off, end, !seq, rep);
    pthread_mutex_unlock(&rp->lock);
    if (rc == ESTALE) {
        /* The object was replaced: this handle cannot go on without mixing
         * versions.  Make the next lookup or open see the new one. */
        fs_inode_expire(fs, r->ino);
        rc = EIO;
    }
    if (rc)
        fs_read_reply_done(rep);
    return rc;
}

/* Whether block 0 of version `id` is here already, in memory or in the
 * disk cache: then the first GET asks for its headers only. */
static bool block0_here(struct fs_readpool *rp, const char *id)
{
    uint64_t no = 0;
    struct rblock *b = NULL;
    struct robj *o;
    pthread_mutex_lock(&rp->lock);
    HASH_FIND_STR(rp->objs, id, o);
    if (o)
        HASH_FIND(hh, o->blocks, &no, sizeof(no), b);
    bool here = b && b->state != RB_ERROR;
    pthread_mutex_unlock(&rp->lock);
    char byte;
    size_t got = 0;
    return here || (rp->cache && cache_read(rp->cache, id, 0, 0, 1, &byte, &got) == 0 && got);
}

int fs_first_start(struct fs *fs, const char *path, const char *etag, uint64_t size, bool pin,
                   struct fs_first **out)
{
    struct fs_readpool *rp = fs->rp;
    struct fs_first *g = calloc(1, sizeof(*g));
    struct rjob *j = calloc(1, sizeof(*j));
    struct rblock **blocks = calloc(1, sizeof(*blocks));
    char *key = fs_key(fs, path, false);
    struct buf id = BUF_INIT;
    if (key)
        fs_version_id(fs, &id, key, etag, true);
    if (!g || !j || !blocks || !key || !id.data) {
        free(g);
        free(j);
        free(blocks);
        free(key);
        buf_free(&id);
        return ENOMEM;
    }
    g->rp = rp;
    g->cfg = &fs->cfg;
    g->key = key;
    snprintf(g->if_match, sizeof(g->if_match), "%s", pin ? etag : "");
    /* The version expected may have block 0 here already: its bytes are
     * not fetched again (a changed object's are, by the read: a second
     * round trip), unless they cost about what the headers do. */
    g->headers_only = size > RD_FIRST_SMALL && block0_here(rp, id.data);
    buf_free(&id);
    pthread_mutex_lock(&rp->lock);
    /* Only when a worker is free at once: an open must not queue behind
     * other files' fetches, and a HEAD costs no more than this GET's
     * headers.  Memory as read-ahead takes it: beyond the reserve, none. */
    bool go = rp->idle && !rp->queue;
    struct rblock *b = go && !g->headers_only ? block_new(rp, NULL, 0, false, false) : NULL;
    if (!go || (!b && !g->headers_only)) {
        pthread_mutex_unlock(&rp->lock);
        free(g->key);
        free(g);
        free(j);
        free(blocks);
        return EAGAIN;
    }
    if (b) {
        b->pins = 2; /* the job's and the open's */
        b->job = true;
        g->open_pin = true;
        blocks[j->n++] = b;
    }
    g->b = b;
    g->job = j;
    g->refs = 2;
    j->blocks = blocks;
    j->first = g;
    j->need = true; /* the open waits on it: first of all */
    LL_PREPEND(rp->queue, j);
    pthread_cond_signal(&rp->work_cond);
    pthread_mutex_unlock(&rp->lock);
    *out = g;
    return 0;
}

int fs_first_wait(struct fs_first *g, struct fs_attr *a, bool *gzip, char **xattr)
{
    struct fs_readpool *rp = g->rp;
    pthread_mutex_lock(&rp->lock);
    while (!g->told && !g->done && !rp->stop)
        pthread_cond_wait(&rp->done_cond, &rp->lock);
    int rc = g->told ? 0 : g->done && g->rc ? g->rc : g->done ? ENODATA : EIO;
    if (!rc) {
        *a = g->attr;
        *gzip = g->gzip;
        *xattr = g->xattr;
        g->xattr = NULL;
    }
    pthread_mutex_unlock(&rp->lock);
    return rc;
}

int fs_reader_fetch_whole(struct fs_reader *r, struct s3_object_info *info)
{
    struct fs_readpool *rp = r->fs->rp;
    struct robj *o = r->o;
    if (o->size == 0 || o->size > RD_BLOCK)
        return EINVAL;
    if (block0_here(rp, o->id))
        return EEXIST; /* in the disk cache: read from there, no request */
    uint64_t no = 0;
    pthread_mutex_lock(&rp->lock);
    struct rblock *b;
    HASH_FIND(hh, o->blocks, &no, sizeof(no), b);
    /* Already here or on its way (another open reads it): its headers would
     * need a request of their own, and its bytes need none. */
    int rc = b ? EEXIST : 0;
    if (!rc && !(b = block_new(rp, o, 0, false, false)))
        rc = ENOMEM; /* no memory beyond the reserve: read-ahead waits for none */
    if (!rc)
        b->pins++; /* this fetch's: a read finds it FETCHING and waits */
    pthread_mutex_unlock(&rp->lock);
    if (rc)
        return rc;
    struct fill f = {.rp = rp, .blocks = &b, .n = 1};
    rc = s3_get_object(rp->s3, o->key, 0, RD_BLOCK, *o->etag ? o->etag : NULL, fill_sink, &f, info,
                       NULL);
    pthread_mutex_lock(&rp->lock);
    if (b->state == RB_FETCHING) {
        if (!rc && b->len == o->size) {
            b->state = RB_READY;
        } else {
            b->state = RB_ERROR;
            b->error = rc && rc != ECANCELED ? rc : EIO;
        }
    }
    if (!rc && b->state != RB_READY)
        rc = EIO;
    pthread_cond_broadcast(&b->done);
    store_later_locked(rp, o, b); /* a second cat reads it from the disk cache */
    if (b->state == RB_ERROR)
        block_drop(rp, b); /* a later read tries again */
    block_unpin(rp, b);    /* and with no reader left, a ready one goes too */
    pthread_mutex_unlock(&rp->lock);
    return rc;
}

bool fs_first_adopt(struct fs_first *g, struct fs_reader *r)
{
    struct fs_readpool *rp = g->rp;
    struct robj *o = r->o;
    struct rblock *b = g->b, *there;
    uint64_t no = 0;
    if (!b)
        return false;
    pthread_mutex_lock(&rp->lock);
    HASH_FIND(hh, o->blocks, &no, sizeof(no), there);
    /* Only under the version told: its bytes are that version's. */
    bool adopt = g->told && g->open_pin && !b->o && b->state != RB_ERROR && !there &&
                 strcmp(o->etag, g->attr.etag) == 0 && o->size == g->attr.size;
    if (adopt) {
        b->o = o;
        b->first = true;
        HASH_ADD(hh, o->blocks, no, sizeof(b->no), b);
        if (g->job) { /* stored with its job */
            g->job->o = o;
            o->refs++;
        } else {
            store_later_locked(rp, o, b);
        }
        lru_update(rp, b);
    }
    pthread_mutex_unlock(&rp->lock);
    return adopt;
}

void fs_first_release(struct fs_first *g)
{
    if (!g)
        return;
    struct fs_readpool *rp = g->rp;
    pthread_mutex_lock(&rp->lock);
    g->released = true;
    if (g->open_pin) {
        g->open_pin = false;
        block_unpin(rp, g->b);
    }
    first_unref_locked(rp, g);
    pthread_mutex_unlock(&rp->lock);
}

void fs_read_reply_done(struct fs_read_reply *rep)
{
    bool any = false; /* none without rp: a reply made of one buffer */
    for (size_t i = 0; i < rep->n; i++)
        any |= rep->pinned[i] != NULL;
    if (any) {
        pthread_mutex_lock(&rep->rp->lock);
        for (size_t i = 0; i < rep->n; i++)
            if (rep->pinned[i])
                block_unpin(rep->rp, rep->pinned[i]);
        pthread_mutex_unlock(&rep->rp->lock);
    }
    free(rep->buf);
    memset(rep, 0, sizeof(*rep));
}
