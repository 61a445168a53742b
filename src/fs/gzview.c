/* gzview.c — decompressed views of gzip objects.
 *
 * A view reads its compressed bytes through an ordinary reader of the raw
 * object (read.c: read-ahead, the block cache) and inflates them with
 * src/gz.  The access-point index of an object version is shared by every
 * open handle of it, and once a reader has gone through the whole stream
 * it is written to cache_dir/gzindex/<sha256 of endpoint, bucket, key and
 * ETag>.gzx, so a view's exact size and fast seeks survive remounts.
 * With gz_index=shared it is also kept in the bucket, where anyone who may
 * write can replace it: one found there is read only if its object could
 * have an index that long (gz_index_max_bytes), is loaded with the checks
 * of gz_index_load, is fetched by one thread for all that want it, and
 * when it is missing or refused that is noted for the object version, so
 * stats do not ask again.  Listing a directory asks for none.
 *
 * A view's size is exact when an index is complete (in memory or on disk).
 * Before that it is an estimate: gzip's ISIZE trailer (the input size
 * modulo 4 GiB), raised by 4 GiB steps until it is at least the compressed
 * size; views of unknown size are opened direct_io so programs read to the
 * real end.  Small objects (up to 1 MiB compressed), and every object with
 * gz_size=exact, are read whole at their first lookup instead.
 *
 * Inflating ahead: a view read sequentially has chunks inflated ahead of
 * its reader by the mount's inflating threads (gz_workers of them, shared
 * by every view: a hundred views read at once use the same few threads,
 * not a few each).  A thread goes round the views reading ahead, filling
 * one chunk of each in turn, so views share the threads fairly; a view
 * whose next chunk no thread has begun inflates it on its reader's own
 * thread, as a view does when it is read at random.  The chunks' memory
 * is charged to the mount's bound (use "gz", SPARE): a view refused memory
 * reads directly, and when memory is short a consumed chunk's buffer is
 * given back at once rather than kept for the view's next chunk. */
#include "fs/fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utlist.h>

#define VIEW_SMALL (1ULL << 20)
#define VIEW_SRC_STEP (4u << 20)
/* An index file is read whole into memory: never more than this, whatever
 * gz_index_max_bytes allows for a very large object. */
#define VIEW_INDEX_FILE_MAX (1ULL << 30)
/* The first GET of a shared index asks for at most this much: its answer
 * tells the whole size, so a longer index than its object allows is
 * refused having cost no more (most indexes come whole in it). */
#define VIEW_SHARED_FIRST (1u << 20)
/* How long "the bucket has no usable index of this version" is believed:
 * another node may share one meanwhile. */
#define VIEW_SHARED_MISS_MS (10 * 60 * 1000ULL)

#define VIEW_AHEAD (4u << 20)
#define VIEW_PAR_MAX (16u << 20)
#define VIEW_WORKERS_MAX 4 /* cursors of one view */
#define VIEW_THREADS_MAX 16
enum { AHEAD_EMPTY, AHEAD_FILLING, AHEAD_READY };

struct fs_gzhandle;

/* One inflating cursor of a handle: cursor 0 is the handle's own (its
 * reader and raw reader, used by direct reads while no fill runs); the
 * others have their own, so that the mount's threads can inflate other
 * spans of the view at once. */
struct view_worker {
    struct fs_gzhandle *g;
    bool busy; /* a thread fills a slot with it; protected by g->lock */
    struct gz_reader *r;
    struct fs_reader *raw;
};

/* The mount's inflating threads and the views they serve. */
struct fs_gzpool {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a view may have a chunk to fill, or stop */
    pthread_cond_t idle; /* a thread let go of a view */
    /* protected by lock */
    struct fs_gzhandle *views; /* reading ahead, in the order threads visit them */
    unsigned n_views;
    uint64_t kicks; /* bumped whenever a view may have new work */
    bool stop;
    unsigned max_threads; /* fixed */
    unsigned n_threads;   /* started; protected by lock */
    pthread_t threads[VIEW_THREADS_MAX];
};

/* A chunk of decompressed output [off, end) filled ahead of the reader. */
struct view_slot {
    char *buf;
    size_t cap;
    uint64_t off, end;
    size_t len; /* what the fill produced: < end - off at the end of the data */
    int rc;
    int state;
};

/* A sequential reader's decompressed read-ahead.  The pool's threads
 * claim chunks in order, each with one of the view's cursors, and fill
 * them while the reader is served from those already full, so inflating
 * overlaps the program's own work.  A chunk that starts at an access point
 * and ends at the next one can be claimed with any cursor: with an index
 * (a second read, a remount, a shared index) the spans ahead are inflated
 * on several cores at once.  Past the index's frontier no point lies
 * ahead, and only the cursor that stands at the next chunk may take it:
 * one core, as inflating from the start requires. */
struct view_ahead {
    bool started, stop; /* started: cursors made and the view joined the pool */
    bool active;        /* filling ahead of a sequential reader */
    bool at_end;        /* a fill reached the end of the data, or failed */
    uint64_t claim_pos; /* where the next chunk starts */
    unsigned nw, ns;    /* cursors, slots */
    struct view_worker w[VIEW_WORKERS_MAX];
    struct view_slot s[VIEW_WORKERS_MAX + 1];
};

/* The index of one object version, shared by its open views.  The first
 * thread to want it makes it here with `loading` set and finds the index
 * (its file, the bucket) with the lock released; others that want it
 * meanwhile wait on `loaded`, so a shared index is fetched once however
 * many threads ask.  Once loading is over, ix does not change (NULL: the
 * loading failed, for want of memory). */
struct fs_gzobj {
    UT_hash_handle hh;
    char *id;            /* fs_version_id(key, etag): fs->gzobjs' key */
    char *key;           /* the object's S3 key */
    char etag[80];       /* the version's ETag */
    struct gz_index *ix; /* protected by fs->gz_lock while loading */
    unsigned refs;       /* protected by fs->gz_lock */
    bool saved;          /* protected by fs->gz_lock */
    bool loading;        /* protected by fs->gz_lock */
    pthread_cond_t loaded;
};

/* Notes kept about an object version, its id the subject (once.c): the
 * log stays short as views come and go, and a missing shared index is not
 * asked for again at every stat. */
enum {
    NOTE_DAMAGE = 'd',    /* said: the data is damaged */
    NOTE_NOT_GZIP = 'n',  /* said: not gzip after all */
    NOTE_NO_SHARED = 'x', /* found: the bucket has no usable shared index */
};

/* Whether to say `what` about object o now (true the first time only). */
static bool tell_once(struct fs *fs, const struct fs_gzobj *o, char what)
{
    return fs_once(fs, what, o->id, UINT64_MAX);
}

struct fs_gzhandle {
    pthread_mutex_t lock; /* the cursor and the read-ahead */
    pthread_cond_t cond;  /* a fill finished, or a slot was freed */
    struct fs *fs;
    struct fs_gzobj *obj;
    struct gz_reader *r; /* the cursor: used by one thread at a time */
    struct fs_reader *raw;
    fuse_ino_t ino;
    char *raw_path;
    struct fs_attr raw_attr;
    uint64_t comp_size;
    bool passthrough;  /* not gzip after all: the raw bytes */
    uint64_t last_end; /* where the previous read ended */
    unsigned streak;   /* reads that continued the previous one */
    struct view_ahead ah;
    /* the pool's: protected by fs->gzp->lock */
    struct fs_gzhandle *pool_prev, *pool_next;
    bool pooled;        /* on gzp->views */
    unsigned pool_refs; /* threads looking at it */
};

/* The id of the version `etag` of the object at raw_path, and (when `key`
 * is not NULL) its key: both for the caller to free, NULL on ENOMEM. */
static char *version_id(struct fs *fs, const char *raw_path, const char *etag, char **key)
{
    char *k = fs_key(fs, raw_path, false);
    struct buf id = BUF_INIT;
    if (!k || fs_version_id(fs, &id, k, etag, true)) {
        free(k);
        return NULL;
    }
    if (key)
        *key = k;
    else
        free(k);
    return buf_steal(&id);
}

static char *index_file(struct fs *fs, const char *id)
{
    char hex[65];
    util_sha256_hex(id, strlen(id), hex);
    struct buf p = BUF_INIT;
    buf_printf(&p, "%s/gzindex/%.32s.gzx", fs->cfg.cache_dir, hex);
    return buf_steal(&p);
}

/* gz_index=shared: where the index of a version is kept in the bucket,
 * at the bucket's root whatever the mount's prefix (caller frees). */
static char *shared_key(struct fs *fs, const struct fs_gzobj *o)
{
    char hex[65];
    struct buf id = BUF_INIT;
    /* the endpoint is left out: every node names the same object alike */
    if (fs_version_id(fs, &id, o->key, o->etag, false))
        return NULL;
    util_sha256_hex(id.data, id.len, hex);
    buf_free(&id);
    struct buf k = BUF_INIT;
    buf_printf(&k, "%s%.32s.gzx", FS_GZ_SHARED_PREFIX, hex);
    return buf_steal(&k);
}

/* The longest index file of an object of comp_size bytes worth reading. */
static uint64_t index_file_max(uint64_t comp_size)
{
    uint64_t max = gz_index_max_bytes(comp_size);
    return max < VIEW_INDEX_FILE_MAX ? max : VIEW_INDEX_FILE_MAX;
}

/* The shared index of a version of comp_size bytes, from the bucket.  It
 * is anyone's who may write there, so it is not read whole unless its
 * object could have an index that long (index_file_max): the first GET
 * asks for at most VIEW_SHARED_FIRST bytes and its answer gives the whole
 * size; the rest, if any, comes in a second GET pinned to the first's
 * ETag.  0 and the bytes in *data (caller frees) and *len, or an errno
 * (ENOENT: there is none; EFBIG: longer than allowed, logged). */
static int shared_fetch(struct fs *fs, const char *raw_path, const struct fs_gzobj *o,
                        uint64_t comp_size, char **data, size_t *len)
{
    char *key = shared_key(fs, o);
    uint64_t max = index_file_max(comp_size); /* at most VIEW_INDEX_FILE_MAX: a size_t */
    struct buf b = BUF_INIT;
    struct s3_object_info info = {0};
    uint64_t first = max < VIEW_SHARED_FIRST ? max : VIEW_SHARED_FIRST;
    int rc =
        key ? s3_get_to_buf(fs->s3, key, 0, first, NULL, &b, (size_t)max, &info, NULL) : ENOMEM;
    if (!rc && info.size > max) {
        log_warn("%s: the shared gzip index in the bucket (%s) is %llu bytes, more than an "
                 "index of this %llu-byte object can be (%llu): refused, unread; building it "
                 "here",
                 raw_path, key, (unsigned long long)info.size, (unsigned long long)comp_size,
                 (unsigned long long)max);
        rc = EFBIG;
    }
    if (!rc && b.len < info.size)
        rc = s3_get_to_buf(fs->s3, key, b.len, info.size - b.len, info.etag, &b, (size_t)max, NULL,
                           NULL);
    s3_object_info_clear(&info);
    free(key);
    if (rc) {
        buf_free(&b);
        return rc;
    }
    *len = b.len;
    *data = buf_steal(&b);
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
    if (!ok || comp != comp_size || sz > gz_size_max(comp_size))
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
    if (fs->cfg.gz_index_no_local)
        goto shared; /* -o sse_c_key_file: no decrypted bytes in cache_dir */
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
        log_warn("cannot store a gzip index in %s/gzindex: %s", fs->cfg.cache_dir, strerror(rc));
    }
shared:
    if (fs->cfg.gz_index_shared && !fs->cfg.read_only && !local_only) {
        char *key = shared_key(fs, o);
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

/* Compressed bytes for one cursor, through its own raw reader. */
static int raw_source(void *arg, uint64_t off, void *buf, size_t len, size_t *got)
{
    struct view_worker *w = arg;
    *got = 0;
    while (*got < len && off + *got < w->g->comp_size) {
        size_t step = len - *got < VIEW_SRC_STEP ? len - *got : VIEW_SRC_STEP;
        struct fs_read_reply rep;
        int rc = fs_reader_read(w->raw, off + *got, step, &rep);
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

/* The complete index of a version kept in cache_dir or, with
 * gz_index=shared, in the bucket; NULL when neither has a usable one.
 * *from_bucket: it came from the bucket (and is not in cache_dir yet). */
static struct gz_index *index_find(struct fs *fs, const char *raw_path, const struct fs_gzobj *o,
                                   uint64_t comp_size, bool *from_bucket)
{
    const char *id = o->id;
    struct gz_index *ix = NULL;
    char *file = index_file(fs, id);
    char *data = NULL;
    size_t len = 0;
    *from_bucket = false;
    if (file && !fs->cfg.gz_index_no_local &&
        util_read_file(file, index_file_max(comp_size), &data, &len) == 0 &&
        gz_index_load(data, len, comp_size, &ix) != 0)
        log_warn("%s: gzip index %s is not usable; building it again", raw_path, file);
    free(data);
    free(file);
    /* a missing or refused shared index is asked for again only after
     * VIEW_SHARED_MISS_MS (another node may have shared one since) */
    if (ix || !fs->cfg.gz_index_shared || fs_once_noted(fs, NOTE_NO_SHARED, id))
        return ix;
    data = NULL;
    int rc = shared_fetch(fs, raw_path, o, comp_size, &data, &len);
    if (!rc && gz_index_load(data, len, comp_size, &ix) != 0) {
        log_warn("%s: the shared gzip index in the bucket is not usable; building it again",
                 raw_path);
        rc = EINVAL;
    }
    free(data);
    /* absent, unreadable to us or refused: noted; a failure that may pass
     * (retries exhausted, the index replaced meanwhile) is not */
    if (rc == ENOENT || rc == EACCES || rc == EFBIG || rc == EINVAL)
        fs_once(fs, NOTE_NO_SHARED, id, VIEW_SHARED_MISS_MS);
    *from_bucket = ix != NULL;
    return ix;
}

static void obj_free(struct fs_gzobj *o)
{
    gz_index_free(o->ix);
    pthread_cond_destroy(&o->loaded);
    free(o->id);
    free(o->key);
    free(o);
}

static void obj_put(struct fs *fs, struct fs_gzobj *o)
{
    pthread_mutex_lock(&fs->gz_lock);
    bool last = --o->refs == 0;
    if (last)
        HASH_DEL(fs->gzobjs, o);
    pthread_mutex_unlock(&fs->gz_lock);
    if (last)
        obj_free(o);
}

/* The shared index of a version: in memory, from its file, from the
 * bucket, or new.  NULL only for want of memory. */
static struct fs_gzobj *obj_get(struct fs *fs, const char *raw_path, const char *etag,
                                uint64_t comp_size)
{
    char *key = NULL;
    char *id = version_id(fs, raw_path, etag, &key);
    if (!id)
        return NULL;
    pthread_mutex_lock(&fs->gz_lock);
    struct fs_gzobj *o;
    HASH_FIND_STR(fs->gzobjs, id, o);
    if (o) {
        o->refs++;
        while (o->loading)
            pthread_cond_wait(&o->loaded, &fs->gz_lock);
        bool ok = o->ix != NULL;
        pthread_mutex_unlock(&fs->gz_lock);
        free(id);
        free(key);
        if (!ok) {
            obj_put(fs, o);
            return NULL;
        }
        return o;
    }
    o = calloc(1, sizeof(*o));
    if (!o) {
        pthread_mutex_unlock(&fs->gz_lock);
        free(id);
        free(key);
        return NULL;
    }
    o->id = id;
    o->key = key;
    snprintf(o->etag, sizeof(o->etag), "%s", etag);
    o->refs = 1;
    o->loading = true;
    pthread_cond_init(&o->loaded, NULL);
    HASH_ADD_KEYPTR(hh, fs->gzobjs, o->id, strlen(o->id), o);
    pthread_mutex_unlock(&fs->gz_lock);

    bool from_bucket = false;
    struct gz_index *ix = index_find(fs, raw_path, o, comp_size, &from_bucket);
    bool found = ix != NULL;
    if (!ix && gz_index_new(comp_size, fs->cfg.gz_span, &ix))
        ix = NULL;
    pthread_mutex_lock(&fs->gz_lock);
    o->ix = ix;
    o->saved = found;
    o->loading = false;
    pthread_cond_broadcast(&o->loaded);
    pthread_mutex_unlock(&fs->gz_lock);
    if (!ix) {
        obj_put(fs, o);
        return NULL;
    }
    if (from_bucket)
        index_save_local(fs, o);
    return o;
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
    g->ino = ino;
    g->comp_size = a->comp_size;
    g->raw_attr = *a;
    g->raw_attr.size = a->comp_size;
    g->raw_path = strdup(raw_path);
    g->raw = g->raw_path ? fs_reader_new(fs, ino, raw_path, &g->raw_attr) : NULL;
    g->obj = g->raw ? obj_get(fs, raw_path, a->etag, a->comp_size) : NULL;
    struct view_worker *w0 = &g->ah.w[0];
    w0->g = g;
    w0->raw = g->raw;
    int rc = g->obj ? gz_reader_new(g->obj->ix, raw_source, w0, &g->r) : ENOMEM;
    w0->r = g->r;
    if (!rc) {
        unsigned char head[3];
        size_t got = 0;
        rc = raw_source(w0, 0, head, sizeof(head), &got);
        if (!rc && !gz_is_gzip(head, got)) {
            g->passthrough = true;
            if (tell_once(fs, g->obj, NOTE_NOT_GZIP))
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

/* The next chunk cursor w may fill, claimed into an empty slot (g->lock
 * held); NULL when there is none for it now. */
static struct view_slot *ahead_claim(struct fs_gzhandle *g, struct view_worker *w)
{
    struct view_ahead *ah = &g->ah;
    if (!ah->active || ah->at_end || ah->stop || w->busy)
        return NULL;
    struct view_slot *sl = NULL;
    for (unsigned i = 0; i < ah->ns && !sl; i++)
        if (ah->s[i].state == AHEAD_EMPTY)
            sl = &ah->s[i];
    if (!sl)
        return NULL;
    struct gz_index *ix = g->obj->ix;
    uint64_t at = ah->claim_pos, here, next;
    /* only w's own cursor continues past the frontier without re-inflating */
    bool mine = gz_reader_at(w->r, &here) && here == at;
    if (!mine && !gz_index_is_point(ix, at))
        return NULL;
    uint64_t end = at + VIEW_AHEAD;
    if (ah->nw > 1 && gz_index_next_point(ix, at, &next) && next - at <= VIEW_PAR_MAX)
        end = next; /* a whole span: the chunk after it starts at a point */
    if (sl->cap < end - at) {
        struct fs_budget *b = g->fs->budget;
        if (!fs_budget_try(b, FS_USE_GZ, end - at - sl->cap, FS_TAKE_SPARE))
            return NULL; /* no memory to spare: the reader inflates itself */
        char *nb = realloc(sl->buf, end - at);
        if (!nb) {
            fs_budget_give(b, FS_USE_GZ, end - at - sl->cap);
            return NULL;
        }
        sl->buf = nb;
        sl->cap = end - at;
    }
    sl->state = AHEAD_FILLING;
    sl->off = at;
    sl->end = end;
    sl->len = 0;
    sl->rc = 0;
    ah->claim_pos = end;
    return sl;
}

/* Fill one chunk of view g, if one of its cursors may take one now:
 * true when a chunk was filled.  Called by a pool thread holding a ref
 * on g (no lock held). */
static bool view_fill_one(struct fs_gzhandle *g)
{
    struct view_ahead *ah = &g->ah;
    pthread_mutex_lock(&g->lock);
    struct view_slot *sl = NULL;
    struct view_worker *w = NULL;
    for (unsigned i = 0; i < ah->nw && !sl; i++)
        if ((sl = ahead_claim(g, &ah->w[i])))
            w = &ah->w[i];
    if (!sl) {
        pthread_mutex_unlock(&g->lock);
        return false;
    }
    w->busy = true;
    pthread_mutex_unlock(&g->lock);
    size_t got = 0;
    int rc = gz_read(w->r, sl->off, sl->buf, (size_t)(sl->end - sl->off), &got);
    pthread_mutex_lock(&g->lock);
    w->busy = false;
    sl->len = got;
    sl->rc = rc;
    sl->state = AHEAD_READY;
    if (rc || got < sl->end - sl->off)
        ah->at_end = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return true;
}

/* Tell the pool's threads a view may have work (any lock but gzp->lock
 * may be held: a view's lock comes before the pool's). */
static void pool_kick(struct fs_gzpool *p)
{
    pthread_mutex_lock(&p->lock);
    p->kicks++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
}

/* An inflating thread: rounds over the views reading ahead, one chunk of
 * each in turn, until a round finds nothing to do and nothing new came;
 * then it sleeps until a view kicks.  A view stays on the list while a
 * thread holds a ref on it (pool_leave waits). */
static void *pool_main(void *arg)
{
    struct fs_gzpool *p = arg;
    pthread_setname_np(pthread_self(), "pailfs-gz");
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        uint64_t kicks = p->kicks;
        bool did = false;
        struct fs_gzhandle *g = p->views;
        for (unsigned i = 0, n = p->n_views; i < n && g && !p->stop; i++) {
            g->pool_refs++;
            pthread_mutex_unlock(&p->lock);
            did |= view_fill_one(g);
            pthread_mutex_lock(&p->lock);
            struct fs_gzhandle *next = g->pool_next;
            if (--g->pool_refs == 0)
                pthread_cond_broadcast(&p->idle);
            g = next;
        }
        /* the next round starts one view further: no view always first */
        if (p->views && p->views->pool_next) {
            struct fs_gzhandle *first = p->views;
            DL_DELETE2(p->views, first, pool_prev, pool_next);
            DL_APPEND2(p->views, first, pool_prev, pool_next);
        }
        if (!did && kicks == p->kicks && !p->stop)
            pthread_cond_wait(&p->work, &p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* g reads ahead from now on: on the pool's list, with its threads
 * started (the first time a view needs them). */
static void pool_join(struct fs_gzpool *p, struct fs_gzhandle *g)
{
    pthread_mutex_lock(&p->lock);
    if (!g->pooled) {
        DL_APPEND2(p->views, g, pool_prev, pool_next);
        g->pooled = true;
        p->n_views++;
    }
    while (p->n_threads < p->max_threads &&
           util_thread_start(&p->threads[p->n_threads], pool_main, p) == 0)
        p->n_threads++;
    p->kicks++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
}

/* g leaves the pool's list once no thread looks at it (no lock held). */
static void pool_leave(struct fs_gzpool *p, struct fs_gzhandle *g)
{
    pthread_mutex_lock(&p->lock);
    while (g->pool_refs)
        pthread_cond_wait(&p->idle, &p->lock);
    if (g->pooled) {
        DL_DELETE2(p->views, g, pool_prev, pool_next);
        g->pooled = false;
        p->n_views--;
    }
    pthread_mutex_unlock(&p->lock);
}

/* The inflating threads of a mount: gz_workers, or one per core but one
 * (1 to VIEW_WORKERS_MAX). */
static unsigned pool_threads(const struct fs_config *cfg)
{
    if (cfg->gz_workers)
        return cfg->gz_workers < VIEW_THREADS_MAX ? cfg->gz_workers : VIEW_THREADS_MAX;
    /* one core is left to the programs reading (and the kernel's copies) */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN) - 1;
    return cpus > VIEW_WORKERS_MAX ? VIEW_WORKERS_MAX : cpus > 1 ? (unsigned)cpus : 1;
}

int fs_gz_pool_new(struct fs *fs)
{
    struct fs_gzpool *p = calloc(1, sizeof(*p));
    if (!p)
        return ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    p->max_threads = pool_threads(&fs->cfg);
    fs->gzp = p;
    return 0;
}

void fs_gz_pool_free(struct fs *fs)
{
    struct fs_gzpool *p = fs->gzp;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p);
    fs->gzp = NULL;
}

/* Stop filling and wait for the fills in progress (g->lock held): every
 * cursor is then free, the handle's own for a direct read. */
static void ahead_quiesce(struct fs_gzhandle *g)
{
    struct view_ahead *ah = &g->ah;
    /* The wait lets go of g->lock: another read of this handle may
     * meanwhile have read directly and started filling again, and a worker
     * may have claimed any slot, one already looked at included.  So stop
     * again and look at every slot again until, with the lock held, none
     * is filling: only then is every cursor free (worker 0's is the
     * handle's own, the one a direct read uses). */
    for (;;) {
        ah->active = false;
        bool filling = false;
        for (unsigned i = 0; i < ah->ns; i++)
            filling |= ah->s[i].state == AHEAD_FILLING;
        if (!filling)
            break;
        pthread_cond_wait(&g->cond, &g->lock);
    }
    for (unsigned i = 0; i < ah->ns; i++)
        ah->s[i].state = AHEAD_EMPTY;
}

/* Extra cursors, each with its own raw reader, up to as many as the pool
 * has threads (at most VIEW_WORKERS_MAX; g->lock held).  Spans larger than
 * VIEW_PAR_MAX, or chunks that would take more than a quarter of
 * max_memory, leave fewer. */
static void ahead_add_workers(struct fs_gzhandle *g)
{
    struct view_ahead *ah = &g->ah;
    unsigned want = g->fs->gzp->max_threads;
    if (want > VIEW_WORKERS_MAX)
        want = VIEW_WORKERS_MAX;
    if (g->fs->cfg.gz_span > VIEW_PAR_MAX)
        want = 1;
    /* (workers + 1) span-sized chunks: at most a quarter of max_memory */
    uint64_t chunk = (g->fs->cfg.gz_span ? g->fs->cfg.gz_span : 8ULL << 20) + (1u << 20);
    while (want > 1 && (want + 1) * chunk > g->fs->cfg.max_memory / 4)
        want--;
    while (ah->nw < want) {
        struct view_worker *w = &ah->w[ah->nw];
        w->g = g;
        w->raw = fs_reader_new(g->fs, g->ino, g->raw_path, &g->raw_attr);
        if (!w->raw || gz_reader_new(g->obj->ix, raw_source, w, &w->r)) {
            gz_reader_free(w->r);
            fs_reader_free(w->raw);
            memset(w, 0, sizeof(*w));
            break;
        }
        ah->nw++;
    }
}

/* Begin reading ahead from `pos` (g->lock held). */
static void ahead_start(struct fs_gzhandle *g, uint64_t pos)
{
    struct view_ahead *ah = &g->ah;
    if (!ah->started) {
        ah->nw = 1;
        ah->started = true;
        ahead_add_workers(g);
        ah->ns = ah->nw + 1;
        log_debug("%s: inflating ahead with %u cursor(s)", g->raw_path, ah->nw);
        pool_join(g->fs->gzp, g);
    }
    ah->active = true;
    ah->at_end = false;
    ah->claim_pos = pos;
    pthread_cond_broadcast(&g->cond);
    pool_kick(g->fs->gzp);
}

/* A slot was read to its end (g->lock held): free for the next chunk;
 * when the bound is short of memory its buffer goes back too, for other
 * views (a view keeps its buffers only while memory is plentiful). */
static void slot_consumed(struct fs_gzhandle *g, struct view_slot *sl)
{
    sl->state = AHEAD_EMPTY;
    struct fs_budget *b = g->fs->budget;
    if (sl->cap && fs_budget_spare(b, FS_USE_GZ) < 2 * (uint64_t)sl->cap * g->ah.ns) {
        free(sl->buf);
        fs_budget_give(b, FS_USE_GZ, sl->cap);
        sl->buf = NULL;
        sl->cap = 0;
    }
    pthread_cond_broadcast(&g->cond);
    pool_kick(g->fs->gzp);
}

/* Serve what it can of [off, off+size) from the read-ahead (g->lock
 * held): *got bytes from its start; *eof when the data ends there; *rc a
 * failed fill met at the first byte.  Waits only for a fill of the range. */
static void ahead_serve(struct fs_gzhandle *g, uint64_t off, char *dst, size_t size, size_t *got,
                        bool *eof, int *rc)
{
    struct view_ahead *ah = &g->ah;
    *got = 0;
    *eof = false;
    *rc = 0;
    while (*got < size && ah->active) {
        uint64_t pos = off + *got;
        struct view_slot *hit = NULL;
        bool wait = false;
        for (unsigned i = 0; i < ah->ns; i++) {
            struct view_slot *sl = &ah->s[i];
            if (sl->state == AHEAD_EMPTY || pos < sl->off || pos >= sl->end)
                continue;
            if (sl->state == AHEAD_FILLING)
                wait = true;
            else
                hit = sl;
        }
        if (!hit && !wait)
            return;
        if (!hit) {
            pthread_cond_wait(&g->cond, &g->lock);
            continue;
        }
        if (pos >= hit->off + hit->len) { /* the fill stopped short of pos */
            if (hit->rc && !*got)
                *rc = hit->rc;
            else if (!hit->rc && pos == hit->off + hit->len)
                *eof = true;
            return;
        }
        size_t k = (size_t)(hit->off + hit->len - pos);
        if (k > size - *got)
            k = size - *got;
        memcpy(dst + *got, hit->buf + (pos - hit->off), k);
        *got += k;
        if (pos + k == hit->end)
            slot_consumed(g, hit); /* a thread may claim it */
    }
}

void fs_gz_close(struct fs_gzhandle *g)
{
    if (!g)
        return;
    struct view_ahead *ah = &g->ah;
    pthread_mutex_lock(&g->lock);
    ah->stop = true; /* no thread claims a chunk of it from now on */
    if (ah->started)
        ahead_quiesce(g);
    pthread_mutex_unlock(&g->lock);
    if (ah->started)
        pool_leave(g->fs->gzp, g);
    for (unsigned i = 1; i < VIEW_WORKERS_MAX; i++) {
        gz_reader_free(ah->w[i].r);
        fs_reader_free(ah->w[i].raw);
    }
    for (unsigned i = 0; i <= VIEW_WORKERS_MAX; i++) {
        free(ah->s[i].buf);
        fs_budget_give(g->fs->budget, FS_USE_GZ, ah->s[i].cap);
    }
    gz_reader_free(g->r);
    if (g->obj)
        obj_put(g->fs, g->obj);
    fs_reader_free(g->raw);
    free(g->raw_path);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/* gz.c has said why; this says which object, once. */
static void tell_damage(struct fs_gzhandle *g, uint64_t at)
{
    if (tell_once(g->fs, g->obj, NOTE_DAMAGE))
        log_error("%s: the gzip stream is damaged: its decompressed bytes end at offset %llu; "
                  "reads from there fail with EIO (the raw object reads as stored)",
                  g->raw_path, (unsigned long long)at);
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
        rc = off < g->comp_size ? raw_source(&g->ah.w[0], off, *data, size, got) : 0;
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
    uint64_t at = rc && !g->passthrough ? gz_index_damage(g->obj->ix) : UINT64_MAX;
    /* A read that reaches the damage hands out the good bytes before it
     * (a short read: the view is direct_io while its size is not exact,
     * so the program asks again, at the damage, and gets EIO there). */
    if (rc == EIO && *got && at != UINT64_MAX && off + *got <= at) {
        rc = 0;
        tell_damage(g, at);
    }
    if (rc) {
        if (at != UINT64_MAX)
            tell_damage(g, at);
        free(*data);
        *data = NULL;
        return rc == ENOMEM ? rc : EIO;
    }
    return 0;
}

/* The size an index known here records (in memory or on disk), and with
 * `fetch` and gz_index=shared one in the bucket (one GET at most). */
static bool size_known(struct fs *fs, const char *raw_path, const struct fs_attr *a, bool fetch,
                       uint64_t *size)
{
    char *id = version_id(fs, raw_path, a->etag, NULL);
    if (!id)
        return false;
    pthread_mutex_lock(&fs->gz_lock);
    struct fs_gzobj *o;
    HASH_FIND_STR(fs->gzobjs, id, o);
    bool known = o && !o->loading && o->ix && gz_index_size(o->ix, size);
    pthread_mutex_unlock(&fs->gz_lock);
    char *file = known ? NULL : index_file(fs, id);
    if (!known && file)
        known = index_file_size(file, a->comp_size, size);
    free(file);
    free(id);
    if (!known && fetch && fs->cfg.gz_index_shared) {
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
    a->size_exact = size_known(fs, raw_path, a, false, &size);
    if (a->size_exact)
        a->size = size;
}

void fs_gz_size(struct fs *fs, const char *raw_path, struct fs_attr *a)
{
    uint64_t size = 0;
    bool known = size_known(fs, raw_path, a, true, &size);
    a->size_exact = false;
    if (!known && (a->comp_size <= VIEW_SMALL || fs->cfg.gz_size_exact)) {
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
    unsigned char t[4];
    size_t got = 0;
    uint64_t est = a->comp_size;
    if (key && a->comp_size >= 18 &&
        s3_get_to_mem(fs->s3, key, a->comp_size - 4, 4, a->etag, t, sizeof(t), &got, NULL, NULL) ==
            0 &&
        got == 4) {
        uint64_t isize =
            (uint64_t)t[0] | (uint64_t)t[1] << 8 | (uint64_t)t[2] << 16 | (uint64_t)t[3] << 24;
        /* raised to at least the compressed size in whole 4 GiB steps, at
         * once: a size near 2^64 once made a `+= 4 GiB` loop wrap and spin
         * (issue 17 item 9; the s3 layer now refuses sizes past S3's largest object) */
        if (isize < a->comp_size)
            isize += (a->comp_size - isize + 0xffffffffULL) & ~0xffffffffULL;
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
        obj_free(o);
    }
}

int fs_gz_index_store(struct fs *fs, const char *raw_path, const char *etag, struct gz_index *ix)
{
    struct fs_gzobj o = {.ix = ix};
    o.id = version_id(fs, raw_path, etag, &o.key);
    if (!o.id)
        return ENOMEM;
    snprintf(o.etag, sizeof(o.etag), "%s", etag);
    index_write(fs, &o, false);
    free(o.id);
    free(o.key);
    return 0;
}
