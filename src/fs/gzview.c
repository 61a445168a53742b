/* gzview.c — decompressed views of gzip objects.
 *
 * A view reads its compressed bytes through an ordinary reader of the raw
 * object (read.c: read-ahead, the block cache) and inflates them with
 * src/gz.  The access-point index of an object version is shared by every
 * open handle of it, and once a reader has gone through the whole stream
 * it is written to cache_dir/gzindex/<sha256 of endpoint, bucket, key and
 * ETag>.gzx, so a view's exact size and fast seeks survive remounts.
 *
 * A view's size is exact when an index is complete (in memory or on disk).
 * Before that it is an estimate: gzip's ISIZE trailer (the input size
 * modulo 4 GiB), raised by 4 GiB steps until it is at least the compressed
 * size; views of unknown size are opened direct_io so programs read to the
 * real end.  Small objects (up to 1 MiB compressed), and every object with
 * gz_size=exact, are read whole at their first lookup instead. */
#include "fs/fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GZ_SMALL (1ULL << 20)
#define GZ_SRC_STEP (4u << 20)

struct fs_gzobj {
    UT_hash_handle hh;
    char *id;
    struct gz_index *ix;
    unsigned refs;       /* protected by fs->gz_lock */
    bool saved;          /* protected by fs->gz_lock */
};

#define GZ_AHEAD (4u << 20)
enum { AHEAD_EMPTY, AHEAD_FILLING, AHEAD_READY };

/* A sequential reader's decompressed read-ahead: a thread inflates the
 * next 4 MiB into one buffer while the reader is served from the other, so
 * inflating overlaps the program's own work (grep on the other core). */
struct gz_ahead {
    pthread_t thread;
    bool started, stop;
    bool active;          /* filling ahead of a sequential reader */
    bool at_end;          /* a fill reached the end of the data */
    uint64_t fill_pos;    /* where the next fill starts */
    char *buf[2];
    uint64_t off[2];
    size_t len[2];
    int rc[2];
    int state[2];
    unsigned turn;        /* the buffer the next fill uses */
};

struct fs_gzhandle {
    pthread_mutex_t lock; /* the cursor and the read-ahead */
    pthread_cond_t cond;  /* a fill finished, or a buffer was freed */
    struct fs *fs;
    struct fs_gzobj *obj;
    struct gz_reader *r;  /* the cursor: used by one thread at a time */
    struct fs_reader *raw;
    uint64_t comp_size;
    bool passthrough;     /* not gzip after all: the raw bytes */
    uint64_t last_end;    /* where the previous read ended */
    unsigned streak;      /* reads that continued the previous one */
    struct gz_ahead ah;
};

static char *gz_id(struct fs *fs, const char *raw_path, const char *etag)
{
    char *key = fs_key(fs, raw_path, false);
    struct buf id = BUF_INIT;
    buf_printf(&id, "%s\n%s\n%s\n%s", fs->cfg.endpoint ? fs->cfg.endpoint : "", fs->cfg.bucket,
               key ? key : "", etag);
    free(key);
    return buf_steal(&id);
}

static char *index_file(struct fs *fs, const char *id)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(id, strlen(id), md, &n, EVP_sha256(), NULL);
    struct buf p = BUF_INIT;
    buf_printf(&p, "%s/gzindex/", fs->cfg.cache_dir);
    for (unsigned i = 0; i < 16; i++)
        buf_printf(&p, "%02x", md[i]);
    buf_puts(&p, ".gzx");
    return buf_steal(&p);
}

/* gz_index=shared: where the index of a version is kept in the bucket,
 * at the bucket's root whatever the mount's prefix (caller frees). */
static char *shared_key(struct fs *fs, const char *id)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    /* the endpoint is left out: every node names the same object alike */
    const char *nl = strchr(id, '\n');
    const char *rest = nl ? nl + 1 : id;
    EVP_Digest(rest, strlen(rest), md, &n, EVP_sha256(), NULL);
    struct buf k = BUF_INIT;
    buf_puts(&k, FS_GZ_SHARED_PREFIX);
    for (unsigned i = 0; i < 16; i++)
        buf_printf(&k, "%02x", md[i]);
    buf_puts(&k, ".gzx");
    (void)fs;
    return buf_steal(&k);
}

struct grow_sink {
    struct buf b;
    size_t max;
};

static int grow_sink_fn(void *arg, const void *data, size_t len)
{
    struct grow_sink *g = arg;
    if (g->b.len + len > g->max)
        return EFBIG;
    return buf_append(&g->b, data, len);
}

/* The shared index of a version, from the bucket.  0 and the bytes in
 * *data (caller frees) and *len, or an errno (ENOENT: there is none). */
static int shared_fetch(struct fs *fs, const char *id, char **data, size_t *len)
{
    char *key = shared_key(fs, id);
    struct grow_sink g = {.b = BUF_INIT, .max = 1ULL << 30};
    int rc = key ? s3_get_object(fs->s3, key, 0, S3_TO_END, NULL, grow_sink_fn, &g, NULL, NULL)
                 : ENOMEM;
    free(key);
    if (rc) {
        buf_free(&g.b);
        return rc;
    }
    *len = g.b.len;
    *data = buf_steal(&g.b);
    return *data ? 0 : ENOMEM;
}

/* The decompressed size an index file records, if it is one for an object
 * of comp_size bytes (the rest is checked when it is loaded). */
static bool index_file_size(const char *file, uint64_t comp_size, uint64_t *size)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    unsigned char h[32];
    bool ok = pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && memcmp(h, "PAILGZX1", 8) == 0;
    close(fd);
    uint64_t comp = 0, sz = 0;
    for (int i = 7; ok && i >= 0; i--) {
        comp = comp << 8 | h[16 + i];
        sz = sz << 8 | h[24 + i];
    }
    if (!ok || comp != comp_size)
        return false;
    *size = sz;
    return true;
}

/* Write a complete index where later mounts find it (tmp + rename), and
 * with gz_index=shared in the bucket too (unless `local_only`). */
static void index_write(struct fs *fs, struct fs_gzobj *o, bool local_only)
{
    struct buf data = BUF_INIT;
    if (gz_index_save(o->ix, &data)) {
        buf_free(&data);
        return;
    }
    struct buf dir = BUF_INIT, tmp = BUF_INIT;
    buf_printf(&dir, "%s/gzindex", fs->cfg.cache_dir);
    char *file = index_file(fs, o->id);
    buf_printf(&tmp, "%s.tmp%llx", file ? file : "", (unsigned long long)util_random_u64());
    int rc = dir.data && tmp.data && file ? 0 : ENOMEM;
    if (!rc && mkdir(dir.data, 0700) < 0 && errno != EEXIST)
        rc = errno;
    int fd = rc ? -1 : open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (!rc && fd < 0)
        rc = errno;
    if (!rc && write(fd, data.data, data.len) != (ssize_t)data.len)
        rc = errno ? errno : EIO;
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = errno;
    if (!rc && rename(tmp.data, file) < 0)
        rc = errno;
    if (rc) {
        if (tmp.data)
            unlink(tmp.data);
        log_warn("cannot store a gzip index in %s/gzindex: %s", fs->cfg.cache_dir,
                 strerror(rc));
    }
    if (fs->cfg.gz_index_shared && !fs->cfg.read_only && !local_only) {
        char *key = shared_key(fs, o->id);
        int prc = key ? s3_put_object(fs->s3, key, data.data, data.len, NULL, NULL, NULL) : ENOMEM;
        if (prc)
            log_warn("cannot store a gzip index in the bucket (%s): %s", key ? key : "",
                     strerror(prc));
        free(key);
    }
    buf_free(&data);
    buf_free(&dir);
    buf_free(&tmp);
    free(file);
}

static void index_save(struct fs *fs, struct fs_gzobj *o)
{
    index_write(fs, o, false);
}

static void index_save_local(struct fs *fs, struct fs_gzobj *o)
{
    index_write(fs, o, true);
}

static int raw_source(void *arg, uint64_t off, void *buf, size_t len, size_t *got)
{
    struct fs_gzhandle *g = arg;
    *got = 0;
    while (*got < len && off + *got < g->comp_size) {
        size_t step = len - *got < GZ_SRC_STEP ? len - *got : GZ_SRC_STEP;
        struct fs_read_reply rep;
        int rc = fs_reader_read(g->raw, off + *got, step, &rep);
        if (rc)
            return rc;
        size_t n = 0;
        for (size_t i = 0; i < rep.n; i++) {
            memcpy((char *)buf + *got + n, rep.iov[i].iov_base, rep.iov[i].iov_len);
            n += rep.iov[i].iov_len;
        }
        fs_read_reply_done(&rep);
        if (!n)
            break;
        *got += n;
    }
    return 0;
}

/* The shared index of a version: in memory, from its file, or new. */
static struct fs_gzobj *obj_get(struct fs *fs, const char *raw_path, const char *etag,
                                uint64_t comp_size)
{
    char *id = gz_id(fs, raw_path, etag);
    if (!id)
        return NULL;
    pthread_mutex_lock(&fs->gz_lock);
    struct fs_gzobj *o;
    HASH_FIND_STR(fs->gzobjs, id, o);
    if (o) {
        o->refs++;
        pthread_mutex_unlock(&fs->gz_lock);
        free(id);
        return o;
    }
    pthread_mutex_unlock(&fs->gz_lock);
    struct gz_index *ix = NULL;
    bool from_file = false;
    char *file = index_file(fs, id);
    char *data = NULL;
    size_t len = 0;
    if (file && util_read_file(file, 1ULL << 30, &data, &len) == 0) {
        if (gz_index_load(data, len, comp_size, &ix) == 0)
            from_file = true;
        else
            log_warn("%s: gzip index %s is not usable; building it again", raw_path, file);
    }
    free(data);
    data = NULL;
    bool from_bucket = false;
    if (!ix && fs->cfg.gz_index_shared && shared_fetch(fs, id, &data, &len) == 0) {
        if (gz_index_load(data, len, comp_size, &ix) == 0)
            from_bucket = true;
        else
            log_warn("%s: the shared gzip index in the bucket is not usable; building it again",
                     raw_path);
    }
    free(data);
    free(file);
    if (!ix && gz_index_new(comp_size, fs->cfg.gz_span, &ix)) {
        free(id);
        return NULL;
    }
    pthread_mutex_lock(&fs->gz_lock);
    HASH_FIND_STR(fs->gzobjs, id, o);
    if (o) { /* another handle made it meanwhile */
        o->refs++;
        pthread_mutex_unlock(&fs->gz_lock);
        gz_index_free(ix);
        free(id);
        return o;
    }
    o = calloc(1, sizeof(*o));
    if (o) {
        o->id = id;
        o->ix = ix;
        o->refs = 1;
        o->saved = from_file;
        HASH_ADD_KEYPTR(hh, fs->gzobjs, o->id, strlen(o->id), o);
    }
    pthread_mutex_unlock(&fs->gz_lock);
    if (!o) {
        gz_index_free(ix);
        free(id);
    } else if (from_bucket) {
        o->saved = true;
        index_save_local(fs, o);
    }
    return o;
}

static void obj_put(struct fs *fs, struct fs_gzobj *o)
{
    pthread_mutex_lock(&fs->gz_lock);
    bool last = --o->refs == 0;
    if (last)
        HASH_DEL(fs->gzobjs, o);
    pthread_mutex_unlock(&fs->gz_lock);
    if (!last)
        return;
    gz_index_free(o->ix);
    free(o->id);
    free(o);
}

int fs_gz_open(struct fs *fs, fuse_ino_t ino, const char *raw_path, const struct fs_attr *a,
               struct fs_gzhandle **out)
{
    struct fs_gzhandle *g = calloc(1, sizeof(*g));
    if (!g)
        return ENOMEM;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->fs = fs;
    g->comp_size = a->comp_size;
    struct fs_attr raw = *a;
    raw.size = a->comp_size;
    g->raw = fs_reader_new(fs, ino, raw_path, &raw);
    g->obj = g->raw ? obj_get(fs, raw_path, a->etag, a->comp_size) : NULL;
    int rc = g->obj ? gz_reader_new(g->obj->ix, raw_source, g, &g->r) : ENOMEM;
    if (!rc) {
        unsigned char head[3];
        size_t got = 0;
        rc = raw_source(g, 0, head, sizeof(head), &got);
        if (!rc && !gz_is_gzip(head, got)) {
            g->passthrough = true;
            log_warn("%s is not gzip: shown as it is stored", raw_path);
        }
    }
    if (rc) {
        fs_gz_close(g);
        return rc == ENOMEM ? rc : EIO;
    }
    *out = g;
    return 0;
}

static void *ahead_main(void *arg)
{
    struct fs_gzhandle *g = arg;
    struct gz_ahead *ah = &g->ah;
    pthread_mutex_lock(&g->lock);
    for (;;) {
        unsigned b = ah->turn;
        while (!ah->stop && !(ah->active && !ah->at_end && ah->state[b] == AHEAD_EMPTY))
            pthread_cond_wait(&g->cond, &g->lock);
        if (ah->stop)
            break;
        ah->state[b] = AHEAD_FILLING;
        ah->off[b] = ah->fill_pos;
        uint64_t at = ah->fill_pos;
        pthread_mutex_unlock(&g->lock);
        size_t got = 0;
        int rc = gz_read(g->r, at, ah->buf[b], GZ_AHEAD, &got);
        pthread_mutex_lock(&g->lock);
        ah->len[b] = got;
        ah->rc[b] = rc;
        ah->state[b] = AHEAD_READY;
        ah->fill_pos = at + got;
        ah->at_end = rc || got < GZ_AHEAD;
        ah->turn = b ^ 1;
        pthread_cond_broadcast(&g->cond);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* Stop filling and wait for a fill in progress (g->lock held): the cursor
 * is then free for a direct read. */
static void ahead_quiesce(struct fs_gzhandle *g)
{
    struct gz_ahead *ah = &g->ah;
    ah->active = false;
    while (ah->state[0] == AHEAD_FILLING || ah->state[1] == AHEAD_FILLING)
        pthread_cond_wait(&g->cond, &g->lock);
    ah->state[0] = ah->state[1] = AHEAD_EMPTY;
}

/* Begin reading ahead from `pos` (g->lock held).  false: no memory or
 * thread, the reads stay direct. */
static bool ahead_start(struct fs_gzhandle *g, uint64_t pos)
{
    struct gz_ahead *ah = &g->ah;
    if (!ah->started) {
        ah->buf[0] = malloc(GZ_AHEAD);
        ah->buf[1] = malloc(GZ_AHEAD);
        if (!ah->buf[0] || !ah->buf[1] || pthread_create(&ah->thread, NULL, ahead_main, g)) {
            free(ah->buf[0]);
            free(ah->buf[1]);
            ah->buf[0] = ah->buf[1] = NULL;
            return false;
        }
        ah->started = true;
    }
    ah->active = true;
    ah->at_end = false;
    ah->fill_pos = pos;
    ah->turn = 0;
    pthread_cond_broadcast(&g->cond);
    return true;
}

/* Serve what it can of [off, off+size) from the read-ahead (g->lock
 * held): *got bytes from its start; *eof when the data ends there; *rc a
 * failed fill met at the first byte.  Waits only for a fill of the range. */
static void ahead_serve(struct fs_gzhandle *g, uint64_t off, char *dst, size_t size, size_t *got,
                        bool *eof, int *rc)
{
    struct gz_ahead *ah = &g->ah;
    *got = 0;
    *eof = false;
    *rc = 0;
    while (*got < size && ah->active) {
        uint64_t pos = off + *got;
        int hit = -1;
        bool wait = false;
        for (int b = 0; b < 2; b++) {
            if (ah->state[b] == AHEAD_EMPTY || pos < ah->off[b])
                continue;
            if (ah->state[b] == AHEAD_FILLING && pos < ah->off[b] + GZ_AHEAD)
                wait = true;
            else if (ah->state[b] == AHEAD_READY &&
                     (pos < ah->off[b] + ah->len[b] || (ah->rc[b] && pos == ah->off[b] + ah->len[b])))
                hit = b;
        }
        if (hit < 0 && !wait) {
            *eof = ah->at_end && pos == ah->fill_pos && !ah->rc[ah->turn ^ 1];
            return;
        }
        if (hit < 0) {
            pthread_cond_wait(&g->cond, &g->lock);
            continue;
        }
        if (pos >= ah->off[hit] + ah->len[hit]) { /* the fill failed here */
            if (!*got)
                *rc = ah->rc[hit];
            return;
        }
        size_t k = (size_t)(ah->off[hit] + ah->len[hit] - pos);
        if (k > size - *got)
            k = size - *got;
        memcpy(dst + *got, ah->buf[hit] + (pos - ah->off[hit]), k);
        *got += k;
        if (pos + k == ah->off[hit] + ah->len[hit] && !ah->rc[hit]) {
            ah->state[hit] = AHEAD_EMPTY; /* consumed: fill the next range into it */
            pthread_cond_broadcast(&g->cond);
        }
    }
}

void fs_gz_close(struct fs_gzhandle *g)
{
    if (!g)
        return;
    if (g->ah.started) {
        pthread_mutex_lock(&g->lock);
        g->ah.stop = true;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->ah.thread, NULL);
    }
    free(g->ah.buf[0]);
    free(g->ah.buf[1]);
    gz_reader_free(g->r);
    if (g->obj)
        obj_put(g->fs, g->obj);
    fs_reader_free(g->raw);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

int fs_gz_read(struct fs_gzhandle *g, uint64_t off, size_t size, char **data, size_t *got,
               uint64_t *exact_size)
{
    *data = malloc(size ? size : 1);
    *got = 0;
    *exact_size = UINT64_MAX;
    if (!*data)
        return ENOMEM;
    pthread_mutex_lock(&g->lock);
    int rc = 0;
    if (g->passthrough) {
        rc = off < g->comp_size ? raw_source(g, off, *data, size, got) : 0;
        *exact_size = g->comp_size;
    } else {
        bool eof = false;
        if (g->ah.active)
            ahead_serve(g, off, *data, size, got, &eof, &rc);
        if (*got < size && !eof && !rc) {
            /* not (all) in the read-ahead: the cursor, once no fill uses it
             * (other reads of this handle may run meanwhile: recheck) */
            size_t first = *got;
            if (g->ah.started)
                ahead_quiesce(g);
            g->streak = off == g->last_end && off ? g->streak + 1 : 0;
            size_t more = 0;
            rc = gz_read(g->r, off + first, *data + first, size - first, &more);
            *got = first + more;
            /* a second read continuing the first: inflate ahead from here */
            if (!rc && *got == size && g->streak >= 1)
                ahead_start(g, off + *got);
        }
        g->last_end = off + *got;
    }
    pthread_mutex_unlock(&g->lock);
    uint64_t sz;
    if (!rc && !g->passthrough && gz_index_size(g->obj->ix, &sz)) {
        *exact_size = sz;
        pthread_mutex_lock(&g->fs->gz_lock);
        bool save = !g->obj->saved;
        g->obj->saved = true;
        pthread_mutex_unlock(&g->fs->gz_lock);
        if (save)
            index_save(g->fs, g->obj);
    }
    if (rc) {
        free(*data);
        *data = NULL;
        return rc == ENOMEM ? rc : EIO;
    }
    return 0;
}

struct tail {
    unsigned char b[4];
    size_t n;
};

static int tail_sink(void *arg, const void *data, size_t len)
{
    struct tail *t = arg;
    if (t->n + len > sizeof(t->b))
        return EIO;
    memcpy(t->b + t->n, data, len);
    t->n += len;
    return 0;
}

/* The size an index known here records (in memory or on disk). */
static bool size_known(struct fs *fs, const char *raw_path, const struct fs_attr *a,
                       uint64_t *size)
{
    char *id = gz_id(fs, raw_path, a->etag);
    if (!id)
        return false;
    pthread_mutex_lock(&fs->gz_lock);
    struct fs_gzobj *o;
    HASH_FIND_STR(fs->gzobjs, id, o);
    bool known = o && gz_index_size(o->ix, size);
    pthread_mutex_unlock(&fs->gz_lock);
    char *file = known ? NULL : index_file(fs, id);
    if (!known && file)
        known = index_file_size(file, a->comp_size, size);
    free(file);
    free(id);
    if (!known && fs->cfg.gz_index_shared) {
        /* another node may have built it: bring it here, then look again */
        struct fs_gzobj *got = obj_get(fs, raw_path, a->etag, a->comp_size);
        if (got) {
            known = gz_index_size(got->ix, size);
            obj_put(fs, got);
        }
    }
    return known;
}

void fs_gz_size_known(struct fs *fs, const char *raw_path, struct fs_attr *a)
{
    uint64_t size;
    a->size_exact = size_known(fs, raw_path, a, &size);
    if (a->size_exact)
        a->size = size;
}

void fs_gz_size(struct fs *fs, const char *raw_path, struct fs_attr *a)
{
    uint64_t size = 0;
    bool known = size_known(fs, raw_path, a, &size);
    a->size_exact = false;
    if (!known && (a->comp_size <= GZ_SMALL || fs->cfg.gz_size_exact)) {
        /* read it whole now: its index (and exact size) is then known */
        struct fs_gzhandle *g;
        if (fs_gz_open(fs, 0, raw_path, a, &g) == 0) {
            char *data;
            size_t got;
            uint64_t exact = UINT64_MAX;
            for (uint64_t off = 0;; off += got) {
                if (fs_gz_read(g, off, 1 << 20, &data, &got, &exact))
                    break;
                free(data);
                if (!got)
                    break;
            }
            fs_gz_close(g);
            known = exact != UINT64_MAX;
            size = exact;
        }
    }
    if (known) {
        a->size = size;
        a->size_exact = true;
        return;
    }
    /* ISIZE: the last member's length modulo 2^32 */
    char *key = fs_key(fs, raw_path, false);
    struct tail t = {.n = 0};
    uint64_t est = a->comp_size;
    if (key && a->comp_size >= 18 &&
        s3_get_object(fs->s3, key, a->comp_size - 4, 4, a->etag, tail_sink, &t, NULL, NULL) == 0 &&
        t.n == 4) {
        uint64_t isize = (uint64_t)t.b[0] | (uint64_t)t.b[1] << 8 | (uint64_t)t.b[2] << 16 |
                         (uint64_t)t.b[3] << 24;
        while (isize < a->comp_size)
            isize += 1ULL << 32;
        est = isize;
    }
    free(key);
    a->size = est;
    a->size_estimated = true;
}

void fs_gz_free_all(struct fs *fs)
{
    struct fs_gzobj *o, *tmp;
    HASH_ITER(hh, fs->gzobjs, o, tmp)
    {
        HASH_DEL(fs->gzobjs, o);
        gz_index_free(o->ix);
        free(o->id);
        free(o);
    }
}

/* ---- pailfs gzindex: building an index without a mount ----------------- */

#define GZ_BUILD_CHUNK (8u << 20)

struct s3src {
    struct fs *fs;
    const char *key;
    const char *etag;
    uint64_t size;
    char *buf;
    uint64_t buf_off;
    size_t buf_len;
    void (*progress)(void *, uint64_t, uint64_t);
    void *arg;
};

static int s3src_sink(void *arg, const void *data, size_t len)
{
    struct s3src *s = arg;
    if (s->buf_len + len > GZ_BUILD_CHUNK)
        return EIO;
    memcpy(s->buf + s->buf_len, data, len);
    s->buf_len += len;
    return 0;
}

/* Compressed bytes straight from S3, 8 MiB GETs in order. */
static int s3src_read(void *arg, uint64_t off, void *out, size_t len, size_t *got)
{
    struct s3src *s = arg;
    *got = 0;
    while (*got < len && off + *got < s->size) {
        uint64_t pos = off + *got;
        if (pos < s->buf_off || pos >= s->buf_off + s->buf_len) {
            s->buf_off = pos;
            s->buf_len = 0;
            int rc = s3_get_object(s->fs->s3, s->key, pos, GZ_BUILD_CHUNK, s->etag, s3src_sink,
                                   s, NULL, NULL);
            if (rc)
                return rc == ESTALE ? EIO : rc;
            if (!s->buf_len)
                break;
            if (s->progress)
                s->progress(s->arg, pos + s->buf_len, s->size);
        }
        size_t k = (size_t)(s->buf_off + s->buf_len - pos);
        if (k > len - *got)
            k = len - *got;
        memcpy((char *)out + *got, s->buf + (pos - s->buf_off), k);
        *got += k;
    }
    return 0;
}

int fs_gzindex_build(const struct fs_config *cfg, struct s3_client *s3, const char *key,
                     void (*progress)(void *arg, uint64_t done, uint64_t total), void *arg,
                     uint64_t *size_out, size_t *points_out, size_t *index_bytes_out)
{
    struct fs fs = {.cfg = *cfg, .s3 = s3, .key_prefix = ""};
    pthread_mutex_init(&fs.gz_lock, NULL);
    struct s3_object_info info = {0};
    int rc = fs_make_dirs(cfg->cache_dir, 0700);
    if (rc)
        log_error("cannot make %s: %s", cfg->cache_dir, strerror(rc));
    if (!rc)
        rc = s3_head_object(s3, key, &info, NULL);
    struct s3src src = {.fs = &fs, .key = key, .etag = info.etag, .size = info.size,
                        .buf = malloc(GZ_BUILD_CHUNK), .progress = progress, .arg = arg};
    struct fs_gzobj o = {0};
    struct gz_reader *r = NULL;
    char *scratch = malloc(4u << 20);
    if (!rc && (!src.buf || !scratch))
        rc = ENOMEM;
    if (!rc) {
        unsigned char head[3];
        size_t got = 0;
        rc = s3src_read(&src, 0, head, sizeof(head), &got);
        if (!rc && !gz_is_gzip(head, got)) {
            log_error("%s is not gzip", key);
            rc = EIO;
        }
    }
    if (!rc && !(o.id = gz_id(&fs, key, info.etag)))
        rc = ENOMEM;
    if (!rc)
        rc = gz_index_new(info.size, cfg->gz_span, &o.ix);
    if (!rc)
        rc = gz_reader_new(o.ix, s3src_read, &src, &r);
    for (uint64_t off = 0; !rc;) {
        size_t got = 0;
        rc = gz_read(r, off, scratch, 4u << 20, &got);
        if (!got)
            break;
        off += got;
    }
    uint64_t size = 0;
    if (!rc && !gz_index_size(o.ix, &size))
        rc = EIO;
    if (!rc) {
        struct buf data = BUF_INIT;
        if (gz_index_save(o.ix, &data) == 0)
            *index_bytes_out = data.len;
        buf_free(&data);
        index_write(&fs, &o, false);
        *size_out = size;
        *points_out = gz_index_points(o.ix);
    }
    gz_reader_free(r);
    gz_index_free(o.ix);
    free(o.id);
    free(scratch);
    free(src.buf);
    s3_object_info_clear(&info);
    pthread_mutex_destroy(&fs.gz_lock);
    return rc;
}
