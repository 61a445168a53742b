/* cache.c — the on-disk block cache (see cache.h for the contract).
 *
 * One file per block, named "<object hash>-<block number>.blk2", where the
 * object hash is the first 128 bits of SHA-256 of the identity string.  A
 * file is a 4 KiB header and the data.  The header holds the magic, the
 * data length, a CRC32C of each 4 KiB piece of the data ("page") and a
 * CRC32C of the header itself:
 *
 *     0  "PAILBLK2"      8  header CRC32C (of bytes 12..4095)
 *    12  data length    16  page size (4096)   20  number of pages n
 *    24  n page CRC32Cs, then zeros up to 4096; the data follows.
 *
 * Why pages: a random reader asks for 4 KiB of a 1 MiB block; with one
 * checksum per page it reads and verifies those 4 KiB, not the whole
 * block.  The header is one page so the data stays page-aligned in the
 * file.  (Format 1, "PAILBLK1" in "*.blk" files, had one CRC per block;
 * such files are removed at open.)
 *
 * The index in memory maps names to sizes and keeps them in LRU order; it
 * is rebuilt at open from the files and their mtimes.  The index is the
 * truth about what is cached: space is reserved in it before a file is
 * written, so the directory never holds more than the bound plus the
 * blocks being written at that moment. */
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

#define CACHE_MAGIC "PAILBLK2"
#define CACHE_HDR 4096
#define CACHE_PAGE 4096u
#define CACHE_MAX_PAGES ((CACHE_HDR - 24) / 4)
#define CACHE_MAX_DATA ((size_t)CACHE_MAX_PAGES * CACHE_PAGE)
#define CACHE_SUFFIX ".blk2"
#define CACHE_OLD_SUFFIX ".blk" /* format 1 */
#define CACHE_NAME_MAX 64
#define CACHE_OPEN_MAX 1024  /* block files kept open between reads, at most */
#define CACHE_STAMP_EVERY 30 /* seconds between writes of use times to mtimes */

struct ofile;

struct entry {
    char name[CACHE_NAME_MAX]; /* the file's name */
    uint64_t bytes;            /* file size, header included */
    uint64_t gen;              /* tells a re-made entry of the same name apart */
    struct entry *prev, *next; /* LRU: least recently used first */
    struct timespec used;      /* last use, not yet written to the mtime when `stamp` */
    bool stamp;
    struct ofile *of; /* its file, open, or NULL */
    UT_hash_handle hh;
};

/* A block file kept open with its checked header: a small read of a
 * cached block then costs one preadv, not open + two reads + close.
 * Only files the index holds are kept; an entry dropped (evicted,
 * replaced, damaged) lets go of its file, closed once no read uses it,
 * so unlinked files do not linger. */
struct ofile {
    struct entry *e; /* whose file it is; NULL once gone */
    int fd;
    unsigned users; /* reads using fd now */
    bool gone;      /* its entry let go: close when unused */
    uint32_t dlen;
    struct ofile *prev, *next; /* c->open, least recently used first */
    unsigned char hdr[];       /* the header up to its last page CRC */
};

struct cache {
    char *dir;
    uint64_t limit;
    int lock_fd;
    pthread_mutex_t lock;
    struct entry *by_name; /* protected by lock */
    struct entry *lru;     /* protected by lock */
    uint64_t bytes;        /* protected by lock */
    uint64_t gen;          /* protected by lock */
    struct timespec stamp; /* the last use recorded; protected by lock */
    struct ofile *open;    /* protected by lock */
    unsigned n_open;       /* protected by lock */
    unsigned open_max;     /* files kept open, at most */
    time_t stamped;        /* when use times were last written; protected by lock */
    atomic_bool warned_full;
};

/* With c->lock held: let go of an open file (it is closed now, or by its
 * last user). */
static void ofile_release_locked(struct cache *c, struct ofile *of)
{
    if (!of->gone) {
        DL_DELETE(c->open, of);
        c->n_open--;
        of->gone = true;
        of->e->of = NULL;
        of->e = NULL;
    }
    if (!of->users) {
        close(of->fd);
        free(of);
    }
}

/* A use time later than every one recorded before (lock held): file
 * timestamps are coarse, and ties would lose the LRU order at the next
 * open. */
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

/* Write the use times recorded since the last time to the files' mtimes,
 * the LRU order of the next start.  Done every CACHE_STAMP_EVERY seconds
 * (or now, with `force`: at close), not at each use: a 4 KiB read would
 * otherwise cost a metadata write too.  A crash loses the order of the
 * uses since the last write, nothing else. */
static void stamps_flush(struct cache *c, bool force)
{
    struct use {
        char name[CACHE_NAME_MAX];
        struct timespec t;
    } *list = NULL;
    size_t n = 0, want = 0;
    pthread_mutex_lock(&c->lock);
    time_t now = time(NULL);
    if (!force && now - c->stamped < CACHE_STAMP_EVERY) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->stamped = now;
    struct entry *e;
    DL_FOREACH(c->lru, e)
    {
        want += e->stamp;
    }
    list = want ? malloc(want * sizeof(*list)) : NULL;
    DL_FOREACH(c->lru, e)
    {
        if (list && e->stamp) {
            memcpy(list[n].name, e->name, CACHE_NAME_MAX);
            list[n++].t = e->used;
            e->stamp = false;
        }
    }
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct timespec t[2] = {{0, UTIME_OMIT}, list[i].t};
        if (snprintf(path, sizeof(path), "%s/%s", c->dir, list[i].name) < (int)sizeof(path))
            utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW); /* gone meanwhile: nothing to keep */
    }
    free(list);
}

/* The first 128 bits of SHA-256 of `id`, in hex (32 characters). */
static void id_hash(const char *id, size_t len, char *hex_out)
{
    char hex[65];
    util_sha256_hex(id, len, hex);
    memcpy(hex_out, hex, 32);
}

static void block_name(const char *id, uint64_t blockno, char *out)
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
        id_hash(id, len, out);
    } else {
        if (!last_set || memcmp(last_id, id, len + 1) != 0) {
            id_hash(id, len, last_hex);
            memcpy(last_id, id, len + 1);
            last_set = true;
        }
        memcpy(out, last_hex, 32);
    }
    snprintf(out + 32, CACHE_NAME_MAX - 32, "-%llu" CACHE_SUFFIX, (unsigned long long)blockno);
}

static char *path_of(struct cache *c, const char *name)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s/%s", c->dir, name);
    return b.data ? buf_steal(&b) : NULL;
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
     .help = "Bytes the block cache holds on disk (headers included).",
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

/* Remove an entry from the index and its file from disk (lock held). */
static void drop_locked(struct cache *c, struct entry *e)
{
    if (e->of)
        ofile_release_locked(c, e->of);
    char *p = path_of(c, e->name);
    if (p)
        unlink(p);
    free(p);
    c->bytes -= e->bytes;
    bytes_changed_locked(c);
    HASH_DEL(c->by_name, e);
    DL_DELETE(c->lru, e);
    free(e);
}

struct found {
    struct entry *e;
    struct timespec mtime;
};

static int by_mtime(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : x->mtime.tv_nsec > y->mtime.tv_nsec;
}

static bool has_suffix(const char *name, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len > n && strcmp(name + len - n, suffix) == 0;
}

/* The blocks of directory `d` (the cache's), each with its mtime, into
 * *all[0..*n) (caller frees the array and each entry); leftovers (a write
 * cut short by a crash, blocks of format 1) are removed on the way.  0 or
 * ENOMEM (what was found so far is in *all). */
static int scan_dir(struct cache *c, DIR *d, struct found **all, size_t *n)
{
    size_t cap = 0, old = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        struct stat st;
        if (len < 5 || len >= CACHE_NAME_MAX ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (strstr(de->d_name, ".tmp")) { /* a write cut short by a crash */
            unlinkat(dirfd(d), de->d_name, 0);
            continue;
        }
        if (has_suffix(de->d_name, len, CACHE_OLD_SUFFIX)) { /* format 1: never read */
            unlinkat(dirfd(d), de->d_name, 0);
            old++;
            continue;
        }
        if (!has_suffix(de->d_name, len, CACHE_SUFFIX))
            continue;
        if (util_grow((void **)all, &cap, *n + 1, sizeof(**all))) {
            rc = ENOMEM;
            break;
        }
        struct entry *e = calloc(1, sizeof(*e));
        if (!e) {
            rc = ENOMEM;
            break;
        }
        memcpy(e->name, de->d_name, len + 1);
        e->bytes = (uint64_t)st.st_size;
        (*all)[*n].e = e;
        (*all)[(*n)++].mtime = st.st_mtim;
    }
    if (old)
        log_info("block cache %s: removed %zu blocks of an older format", c->dir, old);
    return rc;
}

/* Take the blocks found into the table, the least recently written first
 * in the LRU (as they were used before the restart, near enough). */
static void adopt_oldest_first(struct cache *c, struct found *all, size_t n)
{
    if (n)
        qsort(all, n, sizeof(*all), by_mtime);
    for (size_t i = 0; i < n; i++) {
        struct entry *e = all[i].e;
        HASH_ADD_STR(c->by_name, name, e);
        DL_APPEND(c->lru, e);
        c->bytes += e->bytes;
    }
}

/* What the cache directory holds when the cache opens: its blocks, trimmed
 * to the bound.  0, ENOMEM (nothing taken), or the errno of opendir. */
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
            free(all[i].e);
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
        if (e->of)
            ofile_release_locked(c, e->of); /* no read is running */
        HASH_DEL(c->by_name, e);
        free(e);
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

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

uint32_t cache_crc32c(const void *data, size_t len, uint32_t crc)
{
    return util_crc32c(data, len, crc);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Forget a block whose file turned out wrong or missing (gen 0: whatever
 * entry has that name; else only that generation of it). */
static void forget(struct cache *c, const char *name, uint64_t gen)
{
    pthread_mutex_lock(&c->lock);
    struct entry *e;
    HASH_FIND_STR(c->by_name, name, e);
    if (e && (!gen || e->gen == gen))
        drop_locked(c, e);
    pthread_mutex_unlock(&c->lock);
}

/* Check the header of an open block file (read into h): 0 and *dlen, the
 * errno of reading it, or EBADMSG (not a block of this format, or damaged). */
static int hdr_read(int fd, unsigned char *h, uint32_t *dlen)
{
    ssize_t n = pread(fd, h, CACHE_HDR, 0);
    if (n < 0)
        return errno;
    if (n != CACHE_HDR || memcmp(h, CACHE_MAGIC, 8) != 0)
        return EBADMSG;
    uint32_t len = get_u32(h + 12), pages = get_u32(h + 20);
    if (get_u32(h + 16) != CACHE_PAGE || len > CACHE_MAX_DATA ||
        pages != (len + CACHE_PAGE - 1) / CACHE_PAGE ||
        cache_crc32c(h + 12, CACHE_HDR - 12, 0) != get_u32(h + 8))
        return EBADMSG;
    *dlen = len;
    return 0;
}

static size_t page_len(uint32_t dlen, uint64_t page)
{
    uint64_t left = dlen - page * CACHE_PAGE;
    return left < CACHE_PAGE ? (size_t)left : CACHE_PAGE;
}

/* Read data bytes [off, off + len) of a block file whose header is h (len
 * > 0, off + len <= dlen) into buf, in one preadv: the whole pages the
 * range covers, each checked against its CRC.  The pages at the two ends
 * go through a bounce page when the range starts or ends inside them, so
 * buf needs only `len` bytes.  0, EBADMSG, or the errno of reading. */
static int data_read(int fd, const unsigned char *h, uint32_t dlen, uint64_t off, size_t len,
                     unsigned char *buf)
{
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
    ssize_t got = preadv(fd, iov, n, (off_t)(CACHE_HDR + a));
    if (got < 0)
        return errno;
    if ((uint64_t)got != z - a)
        return EBADMSG; /* the file is shorter than its header says */
    for (uint64_t p = p0; p <= p1; p++) {
        const unsigned char *d = p == p0 && bounce0   ? head
                                 : p == p1 && bounce1 ? tail
                                                      : buf + (p * CACHE_PAGE - off);
        if (cache_crc32c(d, page_len(dlen, p), 0) != get_u32(h + 24 + 4 * p))
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

/* Open block file `name` and check its header: 0 and *out (one user),
 * ENOENT (no such file: being written, or removed by hand), EBADMSG, or
 * another errno. */
static int ofile_open(struct cache *c, const char *name, struct ofile **out)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", c->dir, name) >= (int)sizeof(path))
        return ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    unsigned char hdr[CACHE_HDR];
    uint32_t dlen = 0;
    int rc = hdr_read(fd, hdr, &dlen);
    /* Only what reads use: 1 KiB for a 1 MiB block, not the whole page. */
    size_t keep = 24 + 4 * (size_t)((dlen + CACHE_PAGE - 1) / CACHE_PAGE);
    struct ofile *of = rc ? NULL : calloc(1, sizeof(*of) + keep);
    if (!rc && !of)
        rc = ENOMEM;
    if (rc) {
        close(fd);
        return rc;
    }
    memcpy(of->hdr, hdr, keep);
    of->fd = fd;
    of->dlen = dlen;
    of->users = 1;
    *out = of;
    return 0;
}

/* Count a read of block `name` (most recently used now).  *of: its open
 * file, with this read counted among its users, or NULL; *gen: the
 * entry's generation.  0, or ENOENT when the cache has no such block. */
static int block_use(struct cache *c, const char *name, struct ofile **of, uint64_t *gen)
{
    pthread_mutex_lock(&c->lock);
    struct entry *e;
    HASH_FIND_STR(c->by_name, name, e);
    if (!e) {
        pthread_mutex_unlock(&c->lock);
        return ENOENT;
    }
    DL_DELETE(c->lru, e); /* most recently used now */
    DL_APPEND(c->lru, e);
    e->used = next_stamp_locked(c);
    e->stamp = true;
    *gen = e->gen;
    *of = e->of;
    if (*of) {
        (*of)->users++;
        DL_DELETE(c->open, *of);
        DL_APPEND(c->open, *of);
    }
    bool flush = time(NULL) - c->stamped >= CACHE_STAMP_EVERY;
    pthread_mutex_unlock(&c->lock);
    if (flush)
        stamps_flush(c, false);
    return 0;
}

/* Open block `name` for a read (*of, one user), and keep it open for the
 * next read if its entry is still the one of generation `gen`.  0 or the
 * errno of ofile_open. */
static int block_open(struct cache *c, const char *name, uint64_t gen, struct ofile **of)
{
    int rc = ofile_open(c, name, of);
    if (rc)
        return rc;
    pthread_mutex_lock(&c->lock);
    struct entry *e;
    HASH_FIND_STR(c->by_name, name, e);
    if (e && e->gen == gen && !e->of) {
        e->of = *of;
        (*of)->e = e;
        DL_APPEND(c->open, *of);
        if (++c->n_open > c->open_max)
            ofile_release_locked(c, c->open);
    } else {
        (*of)->gone = true;
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* The end of a read of `of`: its last user closes a file no longer kept. */
static void ofile_done(struct cache *c, struct ofile *of)
{
    pthread_mutex_lock(&c->lock);
    if (!--of->users && of->gone) {
        close(of->fd);
        free(of);
    }
    pthread_mutex_unlock(&c->lock);
}

/* The common part of cache_get and cache_read: bytes [off, off + len) of
 * the block, clipped at its end; with `whole`, the block must fit in len
 * (else it counts as damaged, as a block bigger than any block is). */
static int block_read(struct cache *c, const char *id, uint64_t blockno, uint64_t off, size_t len,
                      bool whole, void *buf, size_t *got)
{
    char name[CACHE_NAME_MAX];
    block_name(id, blockno, name);
    struct ofile *of;
    uint64_t gen;
    int rc = block_use(c, name, &of, &gen);
    if (rc)
        return rc;
    if (!of)
        rc = block_open(c, name, gen, &of);
    size_t n = 0;
    if (!rc && whole && of->dlen > len)
        rc = EBADMSG;
    if (!rc && off < of->dlen) {
        n = of->dlen - off < len ? (size_t)(of->dlen - off) : len;
        if (n)
            rc = data_read(of->fd, of->hdr, of->dlen, off, n, buf);
    }
    if (of)
        ofile_done(c, of);
    if (rc == ENOENT) /* still being written, or removed by hand */
        return ENOENT;
    if (rc == EBADMSG) {
        log_warn("block cache: %s is damaged (bad checksum or size): dropped, fetching again",
                 name);
        forget(c, name, 0);
        return ENOENT;
    }
    if (rc)
        return rc;
    *got = n;
    return 0;
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

/* Write header and data to a new file fd; with `direct`, through
 * O_DIRECT when data and len allow it (page-aligned, whole pages), so the
 * bytes go from data to the disk with no copy into the page cache; else,
 * or when the filesystem refuses it, by an ordinary write.  0 or errno. */
static int write_block(int fd, const unsigned char *hdr, const void *data, size_t len, bool direct)
{
    struct iovec iov[2] = {{(void *)hdr, CACHE_HDR}, {(void *)data, len}};
    ssize_t need = (ssize_t)(CACHE_HDR + len);
    if (direct && len % CACHE_PAGE == 0 && (uintptr_t)data % CACHE_PAGE == 0 &&
        (uintptr_t)hdr % CACHE_PAGE == 0) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0) {
            ssize_t n = pwritev(fd, iov, 2, 0);
            fcntl(fd, F_SETFL, fl);
            if (n == need)
                return 0;
            if (n >= 0 || errno != EINVAL)
                return n < 0 ? errno : ENOSPC;
            /* EINVAL: the filesystem wants other alignments; write it plainly */
        }
    }
    ssize_t n = pwritev(fd, iov, 2, 0);
    if (n != need)
        return n < 0 ? errno : ENOSPC;
    return 0;
}

/* Index entry e (its name and bytes set), replacing an entry of the same
 * name and evicting the least recently used until it fits: its bytes are
 * counted before its file exists, so the bound holds.  Its name is copied
 * to `name` under the lock (e may be evicted as soon as it is released);
 * returns its generation. */
static uint64_t reserve(struct cache *c, struct entry *e, char name[CACHE_NAME_MAX])
{
    pthread_mutex_lock(&c->lock);
    struct entry *old;
    HASH_FIND_STR(c->by_name, e->name, old);
    if (old) /* replaced: the new bytes win */
        drop_locked(c, old);
    while (c->lru && c->bytes + e->bytes > c->limit) {
        drop_locked(c, c->lru);
        metrics_add(&metrics[M_EVICTIONS], 1);
    }
    c->bytes += e->bytes;
    bytes_changed_locked(c);
    e->gen = ++c->gen;
    uint64_t gen = e->gen;
    HASH_ADD_STR(c->by_name, name, e);
    DL_APPEND(c->lru, e);
    memcpy(name, e->name, CACHE_NAME_MAX);
    pthread_mutex_unlock(&c->lock);
    return gen;
}

/* The header of a block of len bytes: magic, length, page size and count,
 * each page's CRC-32C, then the CRC of the header itself. */
static void block_header(unsigned char hdr[CACHE_HDR], const void *data, size_t len)
{
    uint32_t pages = (uint32_t)((len + CACHE_PAGE - 1) / CACHE_PAGE);
    memcpy(hdr, CACHE_MAGIC, 8);
    put_u32(hdr + 12, (uint32_t)len);
    put_u32(hdr + 16, CACHE_PAGE);
    put_u32(hdr + 20, pages);
    for (uint32_t p = 0; p < pages; p++)
        put_u32(hdr + 24 + 4 * p, cache_crc32c((const unsigned char *)data + (size_t)p * CACHE_PAGE,
                                               page_len((uint32_t)len, p), 0));
    put_u32(hdr + 8, cache_crc32c(hdr + 12, CACHE_HDR - 12, 0));
}

/* The block, header first, into a new file at `tmp`.  0 or errno. */
static int write_tmp(const char *tmp, const void *data, size_t len, unsigned flags)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    _Alignas(CACHE_PAGE) unsigned char hdr[CACHE_HDR] = {0};
    block_header(hdr, data, len);
    int rc = write_block(fd, hdr, data, len, flags & CACHE_STORE_DIRECT);
    if (close(fd) < 0 && !rc)
        rc = errno;
    return rc;
}

/* Rename tmp to final, stamped as the newest block, under the lock and
 * only if the entry is still generation `gen`, not evicted (or replaced)
 * while its file was written: the directory never holds a block the index
 * does not count.  *current says which; 0 or the errno of the rename. */
static int publish(struct cache *c, const char *name, uint64_t gen, const char *tmp,
                   const char *final, bool *current)
{
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    struct entry *now;
    HASH_FIND_STR(c->by_name, name, now);
    *current = now && now->gen == gen;
    struct timespec stamp[2] = {{0, UTIME_OMIT}, next_stamp_locked(c)};
    if (*current &&
        (utimensat(AT_FDCWD, tmp, stamp, AT_SYMLINK_NOFOLLOW) < 0 || rename(tmp, final) < 0))
        rc = errno;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* A block that could not be stored: its file and its entry go.  A full
 * disk is ENOSPC, said once; any other errno is said each time. */
static int store_failed(struct cache *c, const char *name, uint64_t gen, const char *tmp, int rc)
{
    if (tmp)
        unlink(tmp);
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
    uint64_t need = len + CACHE_HDR;
    if (need > c->limit || len > CACHE_MAX_DATA)
        return c->limit ? EFBIG : 0;
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return ENOMEM;
    block_name(id, blockno, e->name);
    e->bytes = need;
    char name[CACHE_NAME_MAX];
    uint64_t gen = reserve(c, e, name);

    struct buf tmp = BUF_INIT;
    buf_printf(&tmp, "%s/%s.tmp.%llx", c->dir, name, (unsigned long long)util_random_u64());
    char *final = path_of(c, name);
    int rc = tmp.data && final ? 0 : ENOMEM;
    if (!rc)
        rc = write_tmp(tmp.data, data, len, flags);
    bool current = true;
    if (!rc)
        rc = publish(c, name, gen, tmp.data, final, &current);
    if (!current)
        unlink(tmp.data); /* evicted before it was even stored: as if stored and evicted */
    else if (rc)
        rc = store_failed(c, name, gen, tmp.data, rc);
    buf_free(&tmp);
    free(final);
    return rc;
}
