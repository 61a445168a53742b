/* cache.c — the on-disk block cache (see cache.h for the contract).
 *
 * The idea: a block has one fixed place, a "slot", in a sparse file that
 * holds 64 consecutive blocks of one object version (an extent), so a
 * cold read of 1 GiB makes 16 files, not 1,024 (issue 21: creating and
 * deleting an inode per 1 MiB block was 5 % of a cold read's CPU).  A
 * file is named "<object hash>-<extent number>.blk3", where the object
 * hash is the first 128 bits of SHA-256 of the identity string and the
 * extent number is the block number / 64.  Slot k (block 64 * extent + k)
 * starts at k * (4 KiB + 1 MiB): a 4 KiB record, then up to 1 MiB of
 * data, page-aligned.  A slot never written, or given back, is a hole.
 *
 *     0  "PAILBLK3"     8  last use: seconds (u64)   16  nanoseconds (u32)
 *    24  record CRC32C (of bytes 28..4095: the use time is not covered)
 *    28  block number (u64)   36  data length   40  page size (4096)
 *    44  number of pages n    48  n page CRC32Cs, then zeros up to 4096
 *
 * A read checks the record (magic, CRC, block number, the length the
 * index holds) and every 4 KiB page it returns against its CRC (a whole
 * block at once: block_ok); anything wrong drops the block (its slot is
 * punched) and reports it missing.
 * One pwritev writes record and data; the block counts as present (a
 * reader may see it) only once that returned.  Nothing is fsync'd: after
 * a crash a slot can hold a record whose pages never reached the disk, or
 * half of them.  That is safe because a slot only ever holds this block
 * of this object version or nothing: what is not on disk reads back as
 * zeros (a hole) or as the same bytes written earlier, and a page that is
 * not what its record says fails its CRC.  A torn block is never served;
 * its slot is punched when a read finds it.
 *
 * The index in memory maps "<hash>-<block>" to the block's length and
 * keeps blocks in LRU order; it is rebuilt at open from the records, by
 * their use times (written to the records every 30 seconds and at close).
 * The index is the truth about what is cached: a block's bytes are
 * counted before its slot is written, so the disk never holds more than
 * the bound plus the blocks being written.  Evicting a block punches its
 * slot (fallocate PUNCH_HOLE); the last block of a file removes the file.
 *
 * Descriptors: a file is opened (and made) under the cache's lock and
 * only unlinked under it, so no thread ever opens a name another thread
 * removed for a newer file; reads and writes then use the descriptor
 * outside the lock, counted as its users, and a removed file is closed by
 * its last user.  A sequential reader's blocks are written and read whole
 * through a second descriptor opened with O_DIRECT: no copy through the
 * page cache either way (issue 21: a warm re-read of 1 GiB cost the
 * process 1.17-1.25 core-s so, 1.32-1.54 through the page cache, three
 * runs each on a loaded machine).  Checking a page still reads it once:
 * the CRC.
 *
 * Files of blocks of older formats ("*.blk": one CRC per block; "*.blk2":
 * one file per block, with "*.tmp.*" files being written) are removed at
 * open, never read. */
#include "cache/cache.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uthash.h>
#include <utlist.h>

#define CACHE_MAGIC "PAILBLK3"
#define CACHE_REC 4096u /* a block's record, in front of its data */
#define CACHE_PAGE CACHE_PAGE_SIZE
#define CACHE_MAX_PAGES (CACHE_MAX_BLOCK / CACHE_PAGE)
#define CACHE_REC_FIXED 48 /* the record up to its first page CRC */
#define CACHE_REC_USED (CACHE_REC_FIXED + 4 * CACHE_MAX_PAGES)
#define CACHE_SLOT ((uint64_t)CACHE_REC + CACHE_MAX_BLOCK)
#define CACHE_EXT_BLOCKS 64u /* blocks of one file */
#define CACHE_SUFFIX ".blk3"
#define CACHE_NAME_MAX 64
#define CACHE_OPEN_MAX 1024  /* descriptors kept open between reads, at most */
#define CACHE_RECS_MAX 1024  /* checked records kept in memory, at most */
#define CACHE_STAMP_EVERY 30 /* seconds between writes of use times to records */

_Static_assert(CACHE_REC_USED <= CACHE_REC, "a record holds every page CRC of a block");
_Static_assert(CACHE_MAX_BLOCK % CACHE_PAGE == 0, "blocks are whole pages at most");

/* One extent file.  Reads and writes use its descriptors outside the lock
 * (counted in `users`); a file whose last block went is unlinked at once
 * and its descriptors closed by the last user. */
struct ext {
    char name[CACHE_NAME_MAX]; /* fixed */
    /* protected by c->lock */
    unsigned blocks;         /* index entries in it (stored or being stored) */
    int fd;                  /* -1: not open */
    int dfd;                 /* opened with O_DIRECT; -1: not open */
    bool no_direct;          /* the filesystem refused O_DIRECT */
    unsigned users;          /* reads and writes using the descriptors now */
    bool gone;               /* out of the index (unlinked): close at the last user */
    bool in_open;            /* on c->open */
    struct ext *prev, *next; /* c->open, least recently used first */
    UT_hash_handle hh;       /* c->exts */
};

struct entry {
    char name[CACHE_NAME_MAX]; /* "<hash>-<block number>" */
    uint64_t blockno;
    uint64_t bytes;            /* record and data */
    uint64_t gen;              /* tells a re-made entry of the same name apart */
    struct ext *x;             /* its file (which counts it in `blocks`) */
    bool ready;                /* written: reads may use it */
    struct entry *prev, *next; /* LRU: least recently used first */
    struct timespec used;      /* last use, not yet written to the record when `stamp` */
    bool stamp;
    unsigned char *rec;          /* its record, checked, up to its last page CRC; or NULL */
    struct entry *rprev, *rnext; /* c->recs, least recently used first */
    UT_hash_handle hh;
};

struct cache {
    char *dir;
    uint64_t limit;
    int lock_fd;
    pthread_mutex_t lock;
    struct entry *by_name; /* protected by lock */
    struct entry *lru;     /* protected by lock */
    struct ext *exts;      /* by name; protected by lock */
    uint64_t bytes;        /* protected by lock */
    uint64_t gen;          /* protected by lock */
    struct timespec stamp; /* the last use recorded; protected by lock */
    struct ext *open;      /* files with descriptors open; protected by lock */
    unsigned n_open;       /* descriptors open; protected by lock */
    unsigned open_max;     /* descriptors kept open, at most */
    struct entry *recs;    /* entries whose record is kept; protected by lock */
    unsigned n_recs;       /* protected by lock */
    time_t stamped;        /* when use times were last written; protected by lock */
    atomic_bool warned_full;
    atomic_bool warned_punch;
};

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

uint32_t cache_crc32c(const void *data, size_t len, uint32_t crc)
{
    return util_crc32c(data, len, crc);
}

static off_t slot_off(uint64_t blockno)
{
    return (off_t)((blockno % CACHE_EXT_BLOCKS) * CACHE_SLOT);
}

static size_t pages_of(uint64_t len)
{
    return (size_t)((len + CACHE_PAGE - 1) / CACHE_PAGE);
}

static size_t page_len(uint64_t dlen, uint64_t page)
{
    uint64_t left = dlen - page * CACHE_PAGE;
    return left < CACHE_PAGE ? (size_t)left : CACHE_PAGE;
}

/* ---- names -------------------------------------------------------------- */

/* The first 128 bits of SHA-256 of `id`, in hex (32 characters). */
static void id_hash(const char *id, size_t len, char *hex_out)
{
    char hex[65];
    util_sha256_hex(id, len, hex);
    memcpy(hex_out, hex, 32);
}

/* The hash of `id` into hex[32]. */
static void object_hash(const char *id, char *hex)
{
    /* A reader asks for blocks of the same object again and again: each
     * thread remembers the hash of the last identity it named (one
     * EVP_Digest of SHA-256 costs about 1.7 us, on every cached read).
     * The two are only ever changed together: an identity too long for
     * the buffer is hashed each time and leaves the memo alone, since a
     * hash remembered beside another identity would name that one's
     * blocks (issue 17 item 5). */
    static _Thread_local char last_id[1536];
    static _Thread_local char last_hex[32];
    static _Thread_local bool last_set;
    size_t len = strlen(id);
    if (len >= sizeof(last_id)) {
        id_hash(id, len, hex);
        return;
    }
    if (!last_set || memcmp(last_id, id, len + 1) != 0) {
        id_hash(id, len, last_hex);
        memcpy(last_id, id, len + 1);
        last_set = true;
    }
    memcpy(hex, last_hex, 32);
}

/* The index name of a block, and the name of its file. */
static void block_names(const char *id, uint64_t blockno, char name[CACHE_NAME_MAX],
                        char file[CACHE_NAME_MAX])
{
    char hex[32];
    object_hash(id, hex);
    snprintf(name, CACHE_NAME_MAX, "%.32s-%llu", hex, (unsigned long long)blockno);
    snprintf(file, CACHE_NAME_MAX, "%.32s-%llu" CACHE_SUFFIX, hex,
             (unsigned long long)(blockno / CACHE_EXT_BLOCKS));
}

uint64_t cache_default_limit(const char *dir)
{
    const uint64_t cap = 10ULL << 30;
    struct statvfs sv;
    if (statvfs(dir, &sv) < 0)
        return cap;
    uint64_t tenth = (uint64_t)sv.f_bavail * sv.f_frsize / 10;
    return tenth < cap ? tenth : cap;
}

/* ---- files (c->lock held) ---------------------------------------------- */

static void ext_close_fds(struct cache *c, struct ext *x)
{
    if (x->fd >= 0) {
        close(x->fd);
        c->n_open--;
    }
    if (x->dfd >= 0) {
        close(x->dfd);
        c->n_open--;
    }
    x->fd = x->dfd = -1;
    if (x->in_open) {
        DL_DELETE(c->open, x);
        x->in_open = false;
    }
}

/* Close the descriptors of the least recently used files no read or
 * write uses until at most open_max are open. */
static void ext_trim_open_locked(struct cache *c)
{
    struct ext *x = c->open, *next;
    while (x && c->n_open > c->open_max) {
        next = x->next;
        if (!x->users)
            ext_close_fds(c, x);
        x = next;
    }
}

/* A use of x ends: its last user closes a file out of the index. */
static void ext_release_locked(struct cache *c, struct ext *x)
{
    if (--x->users)
        return;
    if (x->gone) {
        ext_close_fds(c, x);
        free(x);
    } else {
        ext_trim_open_locked(c);
    }
}

static void ext_release(struct cache *c, struct ext *x)
{
    pthread_mutex_lock(&c->lock);
    ext_release_locked(c, x);
    pthread_mutex_unlock(&c->lock);
}

/* The file `name`, in the index, made if missing (with no blocks yet), or
 * NULL (no memory). */
static struct ext *ext_get_locked(struct cache *c, const char *name)
{
    struct ext *x;
    HASH_FIND_STR(c->exts, name, x);
    if (x)
        return x;
    if (!(x = calloc(1, sizeof(*x))))
        return NULL;
    snprintf(x->name, sizeof(x->name), "%s", name);
    x->fd = x->dfd = -1;
    HASH_ADD_STR(c->exts, name, x);
    return x;
}

/* A descriptor of x for a read or a write (x->users counts it): with
 * `direct`, one opened with O_DIRECT (-1 when the filesystem refuses it).
 * The file is made if missing.  Opened under the lock, so that it is
 * never opened after another thread unlinked the name for a newer file.
 * 0 and *fd, or the errno of open. */
static int ext_use_locked(struct cache *c, struct ext *x, bool direct, int *fd)
{
    char path[PATH_MAX];
    int flags = O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC;
    if (x->fd < 0 || (direct && x->dfd < 0 && !x->no_direct)) {
        if (snprintf(path, sizeof(path), "%s/%s", c->dir, x->name) >= (int)sizeof(path))
            return ENAMETOOLONG;
    }
    if (x->fd < 0) {
        if ((x->fd = open(path, flags, 0600)) < 0)
            return errno;
        c->n_open++;
    }
    if (direct && x->dfd < 0 && !x->no_direct) {
        if ((x->dfd = open(path, flags | O_DIRECT, 0600)) < 0)
            x->no_direct = true;
        else
            c->n_open++;
    }
    if (x->in_open)
        DL_DELETE(c->open, x);
    DL_APPEND(c->open, x);
    x->in_open = true;
    x->users++;
    ext_trim_open_locked(c);
    *fd = direct ? x->dfd : x->fd;
    return 0;
}

/* ---- metrics ------------------------------------------------------------ */

static struct metrics_series metrics[] = {
#define M_HITS 0
    {.name = "pailfs_cache_hits_total",
     .help = "Reads of the block cache that found the block on disk.",
     .kind = METRICS_COUNTER},
#define M_MISSES 1
    {.name = "pailfs_cache_misses_total",
     .help = "Reads of the block cache that did not find the block (or found it damaged).",
     .kind = METRICS_COUNTER},
#define M_EVICTIONS 2
    {.name = "pailfs_cache_evictions_total",
     .help = "Blocks removed from the block cache to stay within its size bound.",
     .kind = METRICS_COUNTER},
#define M_BYTES 3
    {.name = "pailfs_cache_bytes",
     .help = "Bytes the block cache holds on disk (records included).",
     .kind = METRICS_GAUGE},
#define M_LIMIT 4
    {.name = "pailfs_cache_limit_bytes",
     .help = "The size bound of the block cache (cache_size).",
     .kind = METRICS_GAUGE},
};

/* The size gauge follows c->bytes; set under the lock, so in its order. */
static void bytes_changed_locked(struct cache *c)
{
    metrics_set(&metrics[M_BYTES], (int64_t)c->bytes);
}

/* ---- the index (c->lock held) ------------------------------------------- */

static void rec_forget_locked(struct cache *c, struct entry *e)
{
    if (!e->rec)
        return;
    DL_DELETE2(c->recs, e, rprev, rnext);
    c->n_recs--;
    free(e->rec);
    e->rec = NULL;
}

/* Give back the slot of block `blockno` in x: punched, so its disk space
 * is free and it reads as a hole.  Where the filesystem cannot punch, its
 * record is zeroed (the block is gone; its space stays until the file
 * goes). */
static void slot_clear_locked(struct cache *c, struct ext *x, uint64_t blockno, uint64_t bytes)
{
    int fd;
    if (ext_use_locked(c, x, false, &fd))
        return; /* cannot open it: the record check refuses whatever is there */
    off_t off = slot_off(blockno), len = (off_t)(pages_of(bytes) * CACHE_PAGE);
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) < 0) {
        static const unsigned char zero[CACHE_REC_FIXED];
        if (!atomic_exchange(&c->warned_punch, true))
            log_warn("block cache %s: cannot punch holes (%s): evicted blocks keep their "
                     "space until their file goes",
                     c->dir, strerror(errno));
        (void)!pwrite(fd, zero, sizeof(zero), off);
    }
    ext_release_locked(c, x);
}

/* Take block `blockno` (of `bytes`) out of file x: its slot is given back,
 * or the file removed with its last block. */
static void ext_drop_block_locked(struct cache *c, struct ext *x, uint64_t blockno, uint64_t bytes)
{
    if (--x->blocks) {
        slot_clear_locked(c, x, blockno, bytes);
        return;
    }
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", c->dir, x->name) < (int)sizeof(path))
        unlink(path);
    HASH_DEL(c->exts, x);
    x->gone = true;
    if (!x->users) {
        ext_close_fds(c, x);
        free(x);
    }
}

/* Remove an entry from the index and its block from disk. */
static void drop_locked(struct cache *c, struct entry *e)
{
    rec_forget_locked(c, e);
    ext_drop_block_locked(c, e->x, e->blockno, e->bytes);
    c->bytes -= e->bytes;
    bytes_changed_locked(c);
    HASH_DEL(c->by_name, e);
    DL_DELETE(c->lru, e);
    free(e);
}

/* Forget a block found wrong (gen 0: whatever entry has that name; else
 * only that generation of it). */
static void forget(struct cache *c, const char *name, uint64_t gen)
{
    pthread_mutex_lock(&c->lock);
    struct entry *e;
    HASH_FIND_STR(c->by_name, name, e);
    if (e && (!gen || e->gen == gen))
        drop_locked(c, e);
    pthread_mutex_unlock(&c->lock);
}

/* A use time later than every one recorded before: clocks are coarse, and
 * ties would lose the LRU order at the next open. */
static struct timespec next_stamp_locked(struct cache *c)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec < c->stamp.tv_sec ||
        (now.tv_sec == c->stamp.tv_sec && now.tv_nsec <= c->stamp.tv_nsec)) {
        now = c->stamp;
        if (++now.tv_nsec >= 1000000000L) {
            now.tv_sec++;
            now.tv_nsec = 0;
        }
    }
    c->stamp = now;
    return now;
}

static void put_time(unsigned char *p, struct timespec t)
{
    put_u64(p, (uint64_t)t.tv_sec);
    put_u32(p + 8, (uint32_t)t.tv_nsec);
}

/* Write the use times recorded since the last time into the blocks'
 * records (outside the record CRC), the LRU order of the next start.
 * Done every CACHE_STAMP_EVERY seconds (or now, with `force`: at close),
 * not at each use: a 4 KiB read would otherwise cost a write too.  A
 * crash loses the order of the uses since the last write, nothing else;
 * a time written into a slot given back meanwhile makes a record of no
 * block, which the next open punches. */
static void stamps_flush(struct cache *c, bool force)
{
    /* In batches: each write holds its file open, and a flush may touch
     * more files than may be open at once. */
    enum { BATCH = 64 };
    struct stamp_write {
        struct ext *x;
        int fd;
        off_t off;
        struct timespec t;
    } list[BATCH];
    pthread_mutex_lock(&c->lock);
    time_t now = time(NULL);
    if (!force && now - c->stamped < CACHE_STAMP_EVERY) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->stamped = now;
    for (;;) {
        size_t n = 0;
        struct entry *e;
        DL_FOREACH(c->lru, e)
        {
            if (n == BATCH)
                break;
            if (e->stamp && e->ready && ext_use_locked(c, e->x, false, &list[n].fd) == 0) {
                list[n].x = e->x;
                list[n].off = slot_off(e->blockno) + 8;
                list[n++].t = e->used;
                e->stamp = false;
            }
        }
        pthread_mutex_unlock(&c->lock);
        for (size_t i = 0; i < n; i++) {
            unsigned char t[12];
            put_time(t, list[i].t);
            (void)!pwrite(list[i].fd, t, sizeof(t), list[i].off); /* only the order is lost */
        }
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < n; i++)
            ext_release_locked(c, list[i].x);
        if (n < BATCH)
            break;
    }
    pthread_mutex_unlock(&c->lock);
}

/* ---- records ------------------------------------------------------------- */

/* The record of block `blockno` of len bytes: magic, use time, block
 * number, length, page size and count, each page's CRC-32C (page_crcs,
 * or computed here when NULL), then the CRC of the record (but for its
 * use time). */
static void record_make(unsigned char rec[CACHE_REC], uint64_t blockno, const void *data,
                        size_t len, const uint32_t *page_crcs, struct timespec used)
{
    size_t pages = pages_of(len);
    memset(rec, 0, CACHE_REC);
    memcpy(rec, CACHE_MAGIC, 8);
    put_time(rec + 8, used);
    put_u64(rec + 28, blockno);
    put_u32(rec + 36, (uint32_t)len);
    put_u32(rec + 40, CACHE_PAGE);
    put_u32(rec + 44, (uint32_t)pages);
    for (size_t p = 0; p < pages; p++)
        put_u32(rec + CACHE_REC_FIXED + 4 * p,
                page_crcs ? page_crcs[p]
                          : cache_crc32c((const unsigned char *)data + p * CACHE_PAGE,
                                         page_len(len, p), 0));
    put_u32(rec + 24, cache_crc32c(rec + 28, CACHE_REC - 28, 0));
}

/* Check a record read from the slot of block `blockno`: 0 and *dlen, or
 * EBADMSG (no record there, another block's, or damaged). */
static int record_check(const unsigned char rec[CACHE_REC], uint64_t blockno, uint32_t *dlen)
{
    if (memcmp(rec, CACHE_MAGIC, 8) != 0)
        return EBADMSG;
    uint32_t len = get_u32(rec + 36);
    if (get_u64(rec + 28) != blockno || get_u32(rec + 40) != CACHE_PAGE || len > CACHE_MAX_BLOCK ||
        get_u32(rec + 44) != pages_of(len) ||
        cache_crc32c(rec + 28, CACHE_REC - 28, 0) != get_u32(rec + 24))
        return EBADMSG;
    *dlen = len;
    return 0;
}

/* Check pages [p0, p1] of a block against the record's CRCs; page p's
 * bytes are at page(p). */
static bool pages_ok(const unsigned char *rec, uint32_t dlen, uint64_t p, const unsigned char *d)
{
    return cache_crc32c(d, page_len(dlen, p), 0) == get_u32(rec + CACHE_REC_FIXED + 4 * p);
}

/* What cache_crc32c() of CACHE_PAGE more zero bytes makes of crc: a
 * linear map, applied a byte of crc at a time through four tables made
 * once (shift[i][b]: the map of byte b at byte i of crc). */
static uint32_t page_shift[4][256];
static pthread_once_t page_shift_once = PTHREAD_ONCE_INIT;

static void page_shift_init(void)
{
    static const unsigned char zero[CACHE_PAGE];
    uint32_t bit[32];
    for (int i = 0; i < 32; i++)
        bit[i] = cache_crc32c(zero, sizeof(zero), (uint32_t)1 << i);
    for (int i = 0; i < 4; i++)
        for (unsigned b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int k = 0; k < 8; k++)
                if (b >> k & 1)
                    v ^= bit[8 * i + k];
            page_shift[i][b] = v;
        }
}

/* Check a whole block against the record's page CRCs with one CRC of all
 * its bytes: ISA-L runs about twice as fast over 1 MiB in one call as
 * over 256 pages of 4 KiB (0.10-0.16 against 0.20-0.30 core-s per GiB
 * read, issue 21).  The page CRCs are combined into the CRC the whole
 * block must have: a CRC without inversions is linear, so the CRC of
 * pages a, b is that of a continued over as many zero bytes as b holds,
 * xor that of b.  A block with one damaged page fails exactly as that
 * page's own CRC would (the zero-byte continuation cannot cancel a
 * difference); several must cancel each other, a chance of 2^-32, as for
 * one page. */
static bool block_ok(const unsigned char *rec, uint32_t dlen, const unsigned char *d)
{
    static const unsigned char zero[CACHE_PAGE];
    pthread_once(&page_shift_once, page_shift_init);
    uint32_t want = 0;
    for (uint64_t p = 0; p < pages_of(dlen); p++) {
        size_t len = page_len(dlen, p);
        if (len == CACHE_PAGE)
            want = page_shift[0][want & 0xff] ^ page_shift[1][want >> 8 & 0xff] ^
                   page_shift[2][want >> 16 & 0xff] ^ page_shift[3][want >> 24];
        else /* the short last page */
            want = cache_crc32c(zero, len, want);
        want ^= get_u32(rec + CACHE_REC_FIXED + 4 * p);
    }
    return cache_crc32c(d, dlen, 0) == want;
}

/* ---- opening: what an earlier process left ------------------------------ */

static bool has_suffix(const char *name, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len > n && strcmp(name + len - n, suffix) == 0;
}

/* The object hash and extent number of a file name "<32 hex>-<n>.blk3":
 * true when it is one. */
static bool parse_ext_name(const char *name, size_t len, uint64_t *extno)
{
    size_t sl = strlen(CACHE_SUFFIX);
    if (len < 32 + 2 + sl || len >= CACHE_NAME_MAX || name[32] != '-' ||
        !has_suffix(name, len, CACHE_SUFFIX))
        return false;
    for (int i = 0; i < 32; i++)
        if (!strchr("0123456789abcdef", name[i]) || !name[i])
            return false;
    uint64_t n = 0;
    for (size_t i = 33; i < len - sl; i++) {
        if (name[i] < '0' || name[i] > '9' || n > UINT64_MAX / 10 / CACHE_EXT_BLOCKS)
            return false;
        n = n * 10 + (uint64_t)(name[i] - '0');
    }
    *extno = n;
    return len - sl > 33;
}

struct found {
    struct entry *e;
    struct timespec used;
};

static int by_use(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    if (x->used.tv_sec != y->used.tv_sec)
        return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
    return x->used.tv_nsec < y->used.tv_nsec ? -1 : x->used.tv_nsec > y->used.tv_nsec;
}

/* The blocks of extent file `name` (open as fd, size bytes) into *all
 * (grown; *n of them, *cap its room); slots holding anything else (a
 * damaged or torn record, a use time written after its block went) are
 * punched.  0 or ENOMEM. */
static int scan_ext(const char *name, uint64_t extno, int fd, uint64_t size, struct found **all,
                    size_t *n, size_t *cap)
{
    unsigned char *rec = malloc(CACHE_REC);
    if (!rec)
        return ENOMEM;
    int rc = 0;
    for (uint64_t k = 0; !rc && k < CACHE_EXT_BLOCKS && k * CACHE_SLOT < size; k++) {
        uint64_t no = extno * CACHE_EXT_BLOCKS + k;
        ssize_t got = pread(fd, rec, CACHE_REC, (off_t)(k * CACHE_SLOT));
        uint32_t dlen = 0;
        static const unsigned char none[CACHE_REC_FIXED];
        size_t look = got < 0 ? 0 : (size_t)got < sizeof(none) ? (size_t)got : sizeof(none);
        bool hole = memcmp(rec, none, look) == 0;
        if (got == CACHE_REC && record_check(rec, no, &dlen) == 0 &&
            k * CACHE_SLOT + CACHE_REC + dlen <= size) {
            struct entry *e = calloc(1, sizeof(*e));
            if (!e || util_grow((void **)all, cap, *n + 1, sizeof(**all))) {
                free(e);
                rc = ENOMEM;
                break;
            }
            snprintf(e->name, sizeof(e->name), "%.32s-%llu", name, (unsigned long long)no);
            e->blockno = no;
            e->bytes = CACHE_REC + (uint64_t)dlen;
            e->ready = true;
            (*all)[*n].e = e;
            (*all)[*n].used.tv_sec = (time_t)get_u64(rec + 8);
            (*all)[(*n)++].used.tv_nsec = (long)(get_u32(rec + 16) % 1000000000u);
        } else if (!hole && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                      (off_t)(k * CACHE_SLOT), (off_t)CACHE_SLOT) < 0) {
            (void)!pwrite(fd, none, sizeof(none), (off_t)(k * CACHE_SLOT));
        }
    }
    free(rec);
    return rc;
}

/* Remove what is no block of this format: files of formats 1 and 2, and
 * format 2's files cut short by a crash.  True when it was one. */
static bool remove_old(DIR *d, const char *name, size_t len, size_t *old)
{
    if (strstr(name, ".tmp")) { /* format 2: a write cut short by a crash */
        unlinkat(dirfd(d), name, 0);
        return true;
    }
    if (has_suffix(name, len, ".blk") || has_suffix(name, len, ".blk2")) {
        unlinkat(dirfd(d), name, 0); /* never read as blocks of this format */
        (*old)++;
        return true;
    }
    return false;
}

/* The blocks of directory `d` (the cache's), each with its use time, into
 * *all[0..*n) (caller frees the array and each entry; each entry's x is
 * set, and counted in its file); files of older formats are removed, and
 * so are files with no block left.  0 or ENOMEM (what was found so far is
 * in *all and the index of files). */
static int scan_dir(struct cache *c, DIR *d, struct found **all, size_t *n)
{
    size_t cap = 0, old = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        uint64_t extno = 0;
        struct stat st;
        if (len < 5 || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode) || remove_old(d, de->d_name, len, &old) ||
            !parse_ext_name(de->d_name, len, &extno))
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        size_t before = *n;
        rc = scan_ext(de->d_name, extno, fd, (uint64_t)st.st_size, all, n, &cap);
        close(fd);
        struct ext *x = *n > before ? ext_get_locked(c, de->d_name) : NULL;
        if (*n > before && !x)
            rc = ENOMEM;
        for (size_t i = before; x && i < *n; i++) {
            (*all)[i].e->x = x;
            x->blocks++;
        }
        if (*n == before && !rc)
            unlinkat(dirfd(d), de->d_name, 0); /* no block left in it */
    }
    if (old)
        log_info("block cache %s: removed %zu blocks of an older format", c->dir, old);
    return rc;
}

/* Take the blocks found into the index, the least recently used first. */
static void adopt_oldest_first(struct cache *c, struct found *all, size_t n)
{
    if (n)
        qsort(all, n, sizeof(*all), by_use);
    for (size_t i = 0; i < n; i++) {
        struct entry *e = all[i].e;
        HASH_ADD_STR(c->by_name, name, e);
        DL_APPEND(c->lru, e);
        c->bytes += e->bytes;
        if (by_use(&all[i], &(struct found){.used = c->stamp}) > 0)
            c->stamp = all[i].used;
    }
}

/* What the cache directory holds when the cache opens: its blocks, trimmed
 * to the bound.  0, ENOMEM, or the errno of opendir. */
static int scan(struct cache *c)
{
    DIR *d = opendir(c->dir);
    if (!d)
        return errno;
    struct found *all = NULL;
    size_t n = 0;
    int rc = scan_dir(c, d, &all, &n);
    closedir(d);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            free(all[i].e); /* the files stay: a later open tries again */
    } else {
        adopt_oldest_first(c, all, n);
    }
    free(all);
    bytes_changed_locked(c);
    /* A smaller bound than last time: trim at once. */
    while (!rc && c->lru && c->bytes > c->limit) {
        drop_locked(c, c->lru);
        metrics_add(&metrics[M_EVICTIONS], 1);
    }
    return rc;
}

int cache_open(const char *dir, uint64_t limit, struct cache **out, pid_t *owner)
{
    if (owner)
        *owner = 0;
    /* Nobody else may plant blocks in it, or a symbolic link at .lock. */
    int rc = util_private_dir(dir, true);
    if (rc)
        return rc;
    struct cache *c = calloc(1, sizeof(*c));
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        return ENOMEM;
    }
    c->limit = limit;
    metrics_register(metrics, sizeof(metrics) / sizeof(metrics[0]));
    metrics_set(&metrics[M_LIMIT], (int64_t)limit);
    pthread_mutex_init(&c->lock, NULL);
    struct buf lp = BUF_INIT;
    buf_printf(&lp, "%s/.lock", dir);
    /* O_NOFOLLOW: truncated and written below, so a link planted there
     * would clobber whatever it pointed at. */
    c->lock_fd = lp.data ? open(lp.data, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    rc = c->lock_fd < 0 ? (lp.data ? errno : ENOMEM) : 0;
    if (rc == ELOOP)
        log_error("refusing %s: it is a symbolic link", lp.data);
    buf_free(&lp);
    if (!rc && flock(c->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? EBUSY : errno;
        char pid[32] = "";
        if (rc == EBUSY && owner && pread(c->lock_fd, pid, sizeof(pid) - 1, 0) > 0)
            *owner = (pid_t)atol(pid);
    }
    if (!rc) {
        char pid[32];
        int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
        if (ftruncate(c->lock_fd, 0) < 0 || pwrite(c->lock_fd, pid, (size_t)n, 0) != n)
            rc = errno;
    }
    if (!rc)
        rc = scan(c);
    c->stamped = time(NULL);
    /* Open files left for the rest of the process: a quarter of its
     * limit, which the caller may have raised. */
    struct rlimit nofile;
    c->open_max = CACHE_OPEN_MAX;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
        nofile.rlim_cur / 4 < c->open_max)
        c->open_max = (unsigned)(nofile.rlim_cur / 4);
    if (rc) {
        cache_close(c);
        return rc;
    }
    log_info("block cache %s: %llu MiB in use of %llu MiB", dir,
             (unsigned long long)(c->bytes >> 20), (unsigned long long)(limit >> 20));
    *out = c;
    return 0;
}

void cache_close(struct cache *c)
{
    if (!c)
        return;
    stamps_flush(c, true);
    struct entry *e, *tmp;
    HASH_ITER(hh, c->by_name, e, tmp)
    {
        free(e->rec);
        HASH_DEL(c->by_name, e);
        free(e);
    }
    struct ext *x, *xtmp;
    HASH_ITER(hh, c->exts, x, xtmp)
    {
        ext_close_fds(c, x); /* no read or write is running */
        HASH_DEL(c->exts, x);
        free(x);
    }
    if (c->lock_fd >= 0)
        close(c->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&c->lock);
    free(c->dir);
    free(c);
}

uint64_t cache_size(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->bytes;
    pthread_mutex_unlock(&c->lock);
    return n;
}

uint64_t cache_limit(struct cache *c)
{
    return c->limit;
}

/* ---- reading ------------------------------------------------------------- */

/* What a read of one block needs, from the index.  Page-aligned (the
 * record is read into it with O_DIRECT). */
struct use {
    unsigned char rec[CACHE_REC];
    char name[CACHE_NAME_MAX];
    uint64_t blockno;
    struct ext *x; /* in use for this read: released by the reader */
    int fd;
    int dfd; /* with O_DIRECT, for a whole block: -1 when refused */
    uint64_t gen;
    uint32_t dlen;
    bool have_rec; /* rec holds the block's record, checked before */
};

/* Count a read of block u->name (most recently used now) and fill u.  0,
 * ENOENT (not cached, or still being written), or the errno of opening
 * its file. */
static int block_use(struct cache *c, struct use *u, bool whole)
{
    bool want_rec = !whole;
    pthread_mutex_lock(&c->lock);
    struct entry *e;
    HASH_FIND_STR(c->by_name, u->name, e);
    if (!e || !e->ready) {
        pthread_mutex_unlock(&c->lock);
        return ENOENT;
    }
    DL_DELETE(c->lru, e); /* most recently used now */
    DL_APPEND(c->lru, e);
    e->used = next_stamp_locked(c);
    e->stamp = true;
    u->gen = e->gen;
    u->dlen = (uint32_t)(e->bytes - CACHE_REC);
    u->have_rec = want_rec && e->rec;
    if (u->have_rec) {
        memcpy(u->rec, e->rec, CACHE_REC_FIXED + 4 * pages_of(u->dlen));
        DL_DELETE2(c->recs, e, rprev, rnext);
        DL_APPEND2(c->recs, e, rprev, rnext);
    }
    int rc = ext_use_locked(c, e->x, whole, &u->dfd);
    if (!rc) {
        u->x = e->x;
        u->fd = e->x->fd;
        if (!whole)
            u->dfd = -1;
    }
    bool flush = time(NULL) - c->stamped >= CACHE_STAMP_EVERY;
    pthread_mutex_unlock(&c->lock);
    if (flush)
        stamps_flush(c, false);
    return rc;
}

/* Keep the checked record of u's block for the next small read of it, if
 * the block is still the one read. */
static void rec_keep(struct cache *c, const struct use *u)
{
    size_t keep = CACHE_REC_FIXED + 4 * pages_of(u->dlen);
    unsigned char *r = malloc(keep);
    if (!r)
        return;
    memcpy(r, u->rec, keep);
    pthread_mutex_lock(&c->lock);
    struct entry *e;
    HASH_FIND_STR(c->by_name, u->name, e);
    if (e && e->gen == u->gen && !e->rec) {
        e->rec = r;
        r = NULL;
        DL_APPEND2(c->recs, e, rprev, rnext);
        if (++c->n_recs > CACHE_RECS_MAX)
            rec_forget_locked(c, c->recs);
    }
    pthread_mutex_unlock(&c->lock);
    free(r);
}

/* Record and data of u's block into u->rec and buf in one preadv: with
 * O_DIRECT when buf (of cap bytes) takes whole pages, so the bytes go
 * from the disk to buf with no copy through the page cache (a sequential
 * reader's: written around the page cache too, and not read again soon).
 * The bytes read, or -1 and errno. */
static ssize_t slot_read(struct use *u, unsigned char *buf, size_t cap)
{
    size_t whole = pages_of(u->dlen) * CACHE_PAGE;
    if (u->dfd >= 0 && whole <= cap && (uintptr_t)buf % CACHE_PAGE == 0) {
        struct iovec iov[2] = {{u->rec, CACHE_REC}, {buf, whole}};
        ssize_t got = preadv(u->dfd, iov, 2, slot_off(u->blockno));
        if (got >= 0 || errno != EINVAL)
            return got;
        /* EINVAL: the filesystem wants other alignments; read it plainly */
    }
    struct iovec iov[2] = {{u->rec, CACHE_REC}, {buf, u->dlen}};
    return preadv(u->fd, iov, 2, slot_off(u->blockno));
}

/* The whole block of u into buf (u->dlen bytes; cap its room), record and
 * data in one read, every page checked.  0, EBADMSG, or the errno of
 * reading. */
static int read_whole(struct use *u, unsigned char *buf, size_t cap)
{
    ssize_t got = slot_read(u, buf, cap);
    if (got < 0)
        return errno;
    uint32_t dlen = 0;
    if ((size_t)got < CACHE_REC + u->dlen || record_check(u->rec, u->blockno, &dlen) != 0 ||
        dlen != u->dlen)
        return EBADMSG; /* a hole, a torn write, or damage */
    return block_ok(u->rec, dlen, buf) ? 0 : EBADMSG;
}

/* u's record, from memory or read and checked (and then kept).  0,
 * EBADMSG, or the errno of reading. */
static int rec_load(struct cache *c, struct use *u)
{
    if (u->have_rec)
        return 0;
    ssize_t got = pread(u->fd, u->rec, CACHE_REC, slot_off(u->blockno));
    if (got < 0)
        return errno;
    uint32_t dlen = 0;
    if (got != CACHE_REC || record_check(u->rec, u->blockno, &dlen) != 0 || dlen != u->dlen)
        return EBADMSG;
    rec_keep(c, u);
    return 0;
}

/* Read data bytes [off, off + len) of u's block (len > 0, off + len <=
 * dlen) into buf, in one preadv: the whole pages the range covers, each
 * checked against its CRC.  The pages at the two ends go through a bounce
 * page when the range starts or ends inside them, so buf needs only `len`
 * bytes.  0, EBADMSG, or the errno of reading. */
static int read_range(const struct use *u, uint64_t off, size_t len, unsigned char *buf)
{
    uint32_t dlen = u->dlen;
    uint64_t end = off + len, p0 = off / CACHE_PAGE, p1 = (end - 1) / CACHE_PAGE;
    uint64_t a = p0 * CACHE_PAGE, z = (p1 + 1) * CACHE_PAGE < dlen ? (p1 + 1) * CACHE_PAGE : dlen;
    bool end_whole = end % CACHE_PAGE == 0 || end == dlen;
    bool bounce0 = off != a || (p0 == p1 && !end_whole), bounce1 = p1 != p0 && !end_whole;
    unsigned char head[CACHE_PAGE], tail[CACHE_PAGE];
    struct iovec iov[3];
    int n = 0;
    uint64_t mid0 = bounce0 ? p0 + 1 : p0, mid1 = bounce1 ? p1 : p1 + 1; /* [mid0, mid1) direct */
    if (bounce0)
        iov[n++] = (struct iovec){head, page_len(dlen, p0)};
    if (mid0 < mid1) {
        uint64_t m_end = mid1 * CACHE_PAGE < dlen ? mid1 * CACHE_PAGE : dlen;
        iov[n++] = (struct iovec){buf + (mid0 * CACHE_PAGE - off), m_end - mid0 * CACHE_PAGE};
    }
    if (bounce1)
        iov[n++] = (struct iovec){tail, page_len(dlen, p1)};
    ssize_t got = preadv(u->fd, iov, n, slot_off(u->blockno) + CACHE_REC + (off_t)a);
    if (got < 0)
        return errno;
    if ((uint64_t)got != z - a)
        return EBADMSG; /* the file is shorter than its record says */
    for (uint64_t p = p0; p <= p1; p++) {
        const unsigned char *d = p == p0 && bounce0   ? head
                                 : p == p1 && bounce1 ? tail
                                                      : buf + (p * CACHE_PAGE - off);
        if (!pages_ok(u->rec, dlen, p, d))
            return EBADMSG;
    }
    if (bounce0) {
        uint64_t stop = a + page_len(dlen, p0) < end ? a + page_len(dlen, p0) : end;
        memcpy(buf, head + (off - a), stop - off);
    }
    if (bounce1)
        memcpy(buf + (p1 * CACHE_PAGE - off), tail, end - p1 * CACHE_PAGE);
    return 0;
}

/* The common part of cache_get and cache_read: bytes [off, off + len) of
 * the block, clipped at its end; with `whole`, the block must fit in len
 * (else it counts as damaged, as a block bigger than any block is). */
static int block_read(struct cache *c, const char *id, uint64_t blockno, uint64_t off, size_t len,
                      bool whole, void *buf, size_t *got)
{
    /* a record is 4 KiB: not on a FUSE thread's stack */
    struct use *u = NULL;
    if (posix_memalign((void **)&u, CACHE_PAGE, sizeof(*u)) != 0)
        return ENOMEM;
    char file[CACHE_NAME_MAX];
    block_names(id, blockno, u->name, file);
    u->blockno = blockno;
    u->x = NULL;
    int rc = block_use(c, u, whole);
    size_t n = 0;
    if (!rc && whole) {
        rc = u->dlen > len ? EBADMSG : read_whole(u, buf, len);
        n = u->dlen;
    } else if (!rc && off < u->dlen) {
        n = u->dlen - off < len ? (size_t)(u->dlen - off) : len;
        rc = rec_load(c, u);
        if (!rc && n)
            rc = read_range(u, off, n, buf);
    }
    if (u->x)
        ext_release(c, u->x);
    if (rc == EBADMSG) {
        log_warn("block cache: block %s is damaged (bad checksum or size): dropped, fetching "
                 "again",
                 u->name);
        forget(c, u->name, u->gen);
        rc = ENOENT;
    }
    free(u);
    if (!rc)
        *got = n;
    return rc;
}

static int counted(int rc)
{
    if (rc == 0)
        metrics_add(&metrics[M_HITS], 1);
    else if (rc == ENOENT)
        metrics_add(&metrics[M_MISSES], 1);
    return rc;
}

int cache_get(struct cache *c, const char *id, uint64_t blockno, void *buf, size_t cap, size_t *len)
{
    return counted(block_read(c, id, blockno, 0, cap, true, buf, len));
}

int cache_read(struct cache *c, const char *id, uint64_t blockno, uint64_t off, size_t len,
               void *buf, size_t *got)
{
    return counted(block_read(c, id, blockno, off, len, false, buf, got));
}

/* ---- storing ------------------------------------------------------------- */

/* Index entry e (its name, block and bytes set) in file `file`, replacing
 * an entry of the same name and evicting the least recently used until it
 * fits: its bytes are counted before its slot is written, so the bound
 * holds.  Not ready: reads do not see it until it is written.  Its
 * generation, or 0 (no memory: e is not taken). */
static uint64_t reserve_locked(struct cache *c, struct entry *e, const char *file)
{
    struct entry *old;
    HASH_FIND_STR(c->by_name, e->name, old);
    if (old) /* replaced: the new bytes win */
        drop_locked(c, old);
    while (c->lru && c->bytes + e->bytes > c->limit) {
        drop_locked(c, c->lru);
        metrics_add(&metrics[M_EVICTIONS], 1);
    }
    /* After the evictions: they may have removed the file. */
    if (!(e->x = ext_get_locked(c, file)))
        return 0;
    e->x->blocks++;
    c->bytes += e->bytes;
    bytes_changed_locked(c);
    e->gen = ++c->gen;
    HASH_ADD_STR(c->by_name, name, e);
    DL_APPEND(c->lru, e);
    return e->gen;
}

/* Write record and data to the slot of block `blockno` of x through fd;
 * with O_DIRECT (fd is x's dfd) when data and len allow it, else through
 * x's ordinary descriptor (also when the filesystem refuses the direct
 * write).  0 or errno. */
static int slot_write(struct ext *x, int dfd, uint64_t blockno, const unsigned char *rec,
                      const void *data, size_t len)
{
    struct iovec iov[2] = {{(void *)rec, CACHE_REC}, {(void *)data, len}};
    ssize_t need = (ssize_t)(CACHE_REC + len);
    off_t off = slot_off(blockno);
    if (dfd >= 0 && len % CACHE_PAGE == 0 && (uintptr_t)data % CACHE_PAGE == 0 &&
        (uintptr_t)rec % CACHE_PAGE == 0) {
        ssize_t n = pwritev(dfd, iov, 2, off);
        if (n == need)
            return 0;
        if (n >= 0 || errno != EINVAL)
            return n < 0 ? errno : ENOSPC;
        /* EINVAL: the filesystem wants other alignments; write it plainly */
    }
    /* x->fd stays open while this write uses x */
    ssize_t n = pwritev(x->fd, iov, 2, off);
    if (n != need)
        return n < 0 ? errno : ENOSPC;
    return 0;
}

/* The write of entry `name` (generation gen, in x) is over: it becomes
 * readable if it is still that entry.  If it was dropped meanwhile
 * (evicted, replaced) and no newer one took its name, its slot is given
 * back again: the eviction may have punched it before this write landed. */
static void publish_locked(struct cache *c, const char *name, uint64_t gen, struct ext *x,
                           uint64_t blockno, uint64_t bytes)
{
    struct entry *now;
    HASH_FIND_STR(c->by_name, name, now);
    if (now && now->gen == gen)
        now->ready = true;
    else if (!now && !x->gone)
        slot_clear_locked(c, x, blockno, bytes);
}

/* A block that could not be stored: its entry goes.  A full disk is
 * ENOSPC, said once; any other errno is said each time. */
static int store_failed(struct cache *c, const char *name, uint64_t gen, int rc)
{
    forget(c, name, gen);
    if (rc == ENOSPC || rc == EDQUOT) {
        if (!atomic_exchange(&c->warned_full, true))
            log_warn("block cache %s: the disk is full; reads go on without caching", c->dir);
        return ENOSPC;
    }
    log_warn("block cache %s: cannot store a block: %s", c->dir, strerror(rc));
    return rc;
}

int cache_store(struct cache *c, const char *id, uint64_t blockno, const void *data, size_t len,
                unsigned flags)
{
    return cache_store_summed(c, id, blockno, data, len, NULL, flags);
}

int cache_store_summed(struct cache *c, const char *id, uint64_t blockno, const void *data,
                       size_t len, const uint32_t *page_crcs, unsigned flags)
{
    uint64_t need = len + CACHE_REC;
    if (need > c->limit || len > CACHE_MAX_BLOCK)
        return c->limit ? EFBIG : 0;
    struct entry *e = calloc(1, sizeof(*e));
    unsigned char *rec = aligned_alloc(CACHE_PAGE, CACHE_REC);
    if (!e || !rec) {
        free(e);
        free(rec);
        return ENOMEM;
    }
    char file[CACHE_NAME_MAX], name[CACHE_NAME_MAX];
    block_names(id, blockno, e->name, file);
    memcpy(name, e->name, CACHE_NAME_MAX);
    e->blockno = blockno;
    e->bytes = need;
    record_make(rec, blockno, data, len, page_crcs,
                (struct timespec){0, 0}); /* CRCs outside the lock */

    pthread_mutex_lock(&c->lock);
    uint64_t gen = reserve_locked(c, e, file);
    struct ext *x = gen ? e->x : NULL;
    int fd = -1, rc = gen ? 0 : ENOMEM;
    if (!rc) {
        e->used = next_stamp_locked(c); /* the newest block */
        put_time(rec + 8, e->used);
        rc = ext_use_locked(c, x, flags & CACHE_STORE_DIRECT, &fd);
        if (rc)
            x = NULL;
    }
    pthread_mutex_unlock(&c->lock); /* e may be evicted from here on */
    if (!gen)
        free(e);
    if (!rc)
        rc = slot_write(x, flags & CACHE_STORE_DIRECT ? fd : -1, blockno, rec, data, len);
    free(rec);
    if (x) {
        pthread_mutex_lock(&c->lock);
        if (!rc)
            publish_locked(c, name, gen, x, blockno, need);
        ext_release_locked(c, x);
        pthread_mutex_unlock(&c->lock);
    }
    if (rc && gen)
        rc = store_failed(c, name, gen, rc);
    return rc;
}
