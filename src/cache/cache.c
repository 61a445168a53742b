/* cache.c — the on-disk block cache (see cache.h for the contract).
 *
 * One file per block, named "<object hash>-<block number>.blk", where the
 * object hash is the first 128 bits of SHA-256 of the identity string.  A
 * file is a 24-byte header (magic, CRC32C of the data, data length) and the
 * data.  The index in memory maps names to sizes and keeps them in LRU
 * order; it is rebuilt at open from the files and their mtimes.  The index
 * is the truth about what is cached: space is reserved in it before a file
 * is written, so the directory never holds more than the bound plus the
 * blocks being written at that moment. */
#include "cache/cache.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uthash.h>
#include <utlist.h>

#define CACHE_MAGIC "PAILBLK1"
#define CACHE_HDR 24
#define CACHE_NAME_MAX 64

struct entry {
    char name[CACHE_NAME_MAX];  /* the file's name */
    uint64_t bytes;             /* file size, header included */
    uint64_t gen;               /* tells a re-made entry of the same name apart */
    struct entry *prev, *next;  /* LRU: least recently used first */
    UT_hash_handle hh;
};

struct cache {
    char *dir;
    uint64_t limit;
    int lock_fd;
    pthread_mutex_t lock;
    struct entry *by_name;   /* protected by lock */
    struct entry *lru;       /* protected by lock */
    uint64_t bytes;          /* protected by lock */
    uint64_t gen;            /* protected by lock */
    struct timespec stamp;   /* the last use recorded; protected by lock */
    atomic_bool warned_full;
};

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

static void block_name(const char *id, uint64_t blockno, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(id, strlen(id), md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
    snprintf(out + 32, CACHE_NAME_MAX - 32, "-%llu.blk", (unsigned long long)blockno);
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

/* Remove an entry from the index and its file from disk (lock held). */
static void drop_locked(struct cache *c, struct entry *e)
{
    char *p = path_of(c, e->name);
    if (p)
        unlink(p);
    free(p);
    c->bytes -= e->bytes;
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

static int scan(struct cache *c)
{
    DIR *d = opendir(c->dir);
    if (!d)
        return errno;
    struct found *all = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        struct stat st;
        if (len < 5 || len >= CACHE_NAME_MAX || fstatat(dirfd(d), de->d_name, &st, 0) < 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (strstr(de->d_name, ".tmp")) { /* a write cut short by a crash */
            unlinkat(dirfd(d), de->d_name, 0);
            continue;
        }
        if (strcmp(de->d_name + len - 4, ".blk") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            struct found *m = realloc(all, cap * sizeof(*m));
            if (!m) {
                rc = ENOMEM;
                break;
            }
            all = m;
        }
        struct entry *e = calloc(1, sizeof(*e));
        if (!e) {
            rc = ENOMEM;
            break;
        }
        memcpy(e->name, de->d_name, len + 1);
        e->bytes = (uint64_t)st.st_size;
        all[n].e = e;
        all[n++].mtime = st.st_mtim;
    }
    closedir(d);
    if (n)
        qsort(all, n, sizeof(*all), by_mtime);
    for (size_t i = 0; i < n; i++) {
        struct entry *e = all[i].e;
        if (rc) {
            free(e);
            continue;
        }
        HASH_ADD_STR(c->by_name, name, e);
        DL_APPEND(c->lru, e);
        c->bytes += e->bytes;
    }
    free(all);
    /* A smaller bound than last time: trim at once. */
    while (!rc && c->lru && c->bytes > c->limit)
        drop_locked(c, c->lru);
    return rc;
}

int cache_open(const char *dir, uint64_t limit, struct cache **out, pid_t *owner)
{
    if (owner)
        *owner = 0;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return errno;
    struct cache *c = calloc(1, sizeof(*c));
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        return ENOMEM;
    }
    c->limit = limit;
    pthread_mutex_init(&c->lock, NULL);
    struct buf lp = BUF_INIT;
    buf_printf(&lp, "%s/.lock", dir);
    c->lock_fd = lp.data ? open(lp.data, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    int rc = c->lock_fd < 0 ? (lp.data ? errno : ENOMEM) : 0;
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
    struct entry *e, *tmp;
    HASH_ITER(hh, c->by_name, e, tmp)
    {
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

int cache_get(struct cache *c, const char *id, uint64_t blockno, void *buf, size_t cap,
              size_t *len)
{
    char name[CACHE_NAME_MAX];
    block_name(id, blockno, name);
    pthread_mutex_lock(&c->lock);
    struct entry *e;
    HASH_FIND_STR(c->by_name, name, e);
    struct timespec used[2] = {{0, UTIME_OMIT}, {0, 0}};
    if (e) { /* most recently used now */
        DL_DELETE(c->lru, e);
        DL_APPEND(c->lru, e);
        used[1] = next_stamp_locked(c);
    }
    pthread_mutex_unlock(&c->lock);
    if (!e)
        return ENOENT;
    char *p = path_of(c, name);
    int fd = p ? open(p, O_RDONLY | O_CLOEXEC) : -1;
    free(p);
    if (fd < 0) {
        if (errno == ENOENT) /* still being written, or removed by hand */
            return ENOENT;
        return errno;
    }
    unsigned char hdr[CACHE_HDR];
    int rc = 0;
    ssize_t n = pread(fd, hdr, CACHE_HDR, 0);
    uint32_t want_len = n == CACHE_HDR ? get_u32(hdr + 12) : 0;
    if (n != CACHE_HDR || memcmp(hdr, CACHE_MAGIC, 8) != 0 || want_len > cap) {
        rc = EBADMSG;
    } else {
        n = pread(fd, buf, want_len, CACHE_HDR);
        if (n != (ssize_t)want_len || crc32_iscsi(buf, (int)want_len, 0) != get_u32(hdr + 8))
            rc = EBADMSG;
    }
    if (!rc)
        futimens(fd, used); /* the LRU order of the next start */
    close(fd);
    if (rc == EBADMSG) {
        log_warn("block cache: %s is damaged (bad checksum or size): dropped, fetching again",
                 name);
        forget(c, name, 0);
        return ENOENT;
    }
    *len = want_len;
    return 0;
}

int cache_put(struct cache *c, const char *id, uint64_t blockno, const void *data, size_t len)
{
    uint64_t need = len + CACHE_HDR;
    if (need > c->limit)
        return c->limit ? EFBIG : 0;
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return ENOMEM;
    block_name(id, blockno, e->name);
    e->bytes = need;
    pthread_mutex_lock(&c->lock);
    struct entry *old;
    HASH_FIND_STR(c->by_name, e->name, old);
    if (old) /* replaced: the new bytes win */
        drop_locked(c, old);
    while (c->lru && c->bytes + need > c->limit)
        drop_locked(c, c->lru);
    c->bytes += need; /* reserved before the file exists: the bound holds */
    e->gen = ++c->gen;
    uint64_t gen = e->gen;
    HASH_ADD_STR(c->by_name, name, e);
    DL_APPEND(c->lru, e);
    char name[CACHE_NAME_MAX];
    memcpy(name, e->name, sizeof(name));
    pthread_mutex_unlock(&c->lock);

    struct buf tmp = BUF_INIT;
    buf_printf(&tmp, "%s/%s.tmp.%llx", c->dir, name, (unsigned long long)util_random_u64());
    char *final = path_of(c, name);
    int rc = tmp.data && final ? 0 : ENOMEM;
    int fd = rc ? -1 : open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (!rc && fd < 0)
        rc = errno;
    if (!rc) {
        unsigned char hdr[CACHE_HDR] = {0};
        memcpy(hdr, CACHE_MAGIC, 8);
        put_u32(hdr + 8, crc32_iscsi((unsigned char *)data, (int)len, 0));
        put_u32(hdr + 12, (uint32_t)len);
        struct iovec iov[2] = {{hdr, CACHE_HDR}, {(void *)data, len}};
        ssize_t n = pwritev(fd, iov, 2, 0);
        if (n != (ssize_t)need)
            rc = n < 0 ? errno : ENOSPC;
    }
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = errno;
    if (!rc) {
        /* Published under the lock, and only if the entry was not evicted
         * (or replaced) while its file was written: the directory never
         * holds a block the index does not count. */
        pthread_mutex_lock(&c->lock);
        struct entry *now;
        HASH_FIND_STR(c->by_name, name, now);
        bool current = now && now->gen == gen;
        struct timespec stamp[2] = {{0, UTIME_OMIT}, next_stamp_locked(c)};
        if (current && (utimensat(AT_FDCWD, tmp.data, stamp, 0) < 0 || rename(tmp.data, final) < 0))
            rc = errno;
        pthread_mutex_unlock(&c->lock);
        if (!current) {
            unlink(tmp.data);
            buf_free(&tmp);
            free(final);
            return 0; /* evicted before it was even stored: as if stored and evicted */
        }
    }
    if (rc) {
        if (tmp.data)
            unlink(tmp.data);
        forget(c, name, gen);
        if (rc == ENOSPC || rc == EDQUOT) {
            rc = ENOSPC;
            if (!atomic_exchange(&c->warned_full, true))
                log_warn("block cache %s: the disk is full; reads go on without caching", c->dir);
        } else {
            log_warn("block cache %s: cannot store a block: %s", c->dir, strerror(rc));
        }
    }
    buf_free(&tmp);
    free(final);
    return rc;
}
