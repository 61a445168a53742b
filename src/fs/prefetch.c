/* prefetch.c — read-ahead across files: the next small files of a
 * directory, fetched before they are opened.
 *
 * A program that reads a directory's files one after another (`cat` of a
 * glob, `tar c`, `cp -r` out of the mount, a loop over os.listdir)
 * opens them in the order of the directory's listing.  Each such open
 * would cost a round trip of its own (a GET, and a HEAD when the headers
 * are not known); fetched ahead, read_parallel at a time, a directory of
 * N small files costs about N / read_parallel round trips instead.
 *
 * The idea: the listing kept by known.c gives the order.  Per directory a
 * stream remembers the names that follow the last file opened there.  An
 * open for reading of a regular file that is the next of those (or one
 * fetched ahead: the program skipped some) goes on the pattern: the files
 * after it that are small (1 byte to FS_READ_BLOCK, 1 MiB: one block of
 * the read path, fetched by one GET whatever is read of it) are queued, 2
 * at the pattern's first step and doubling with each open that follows,
 * up to 2 x read_parallel fetched or waiting in the whole mount.  The file
 * opened itself, when it goes on the pattern or is the first regular file
 * of the listing and nothing was fetched for it yet, is fetched on the
 * open's thread the same way.  An open of any other file in the directory breaks
 * the pattern: what was fetched for it and not taken is dropped.
 *
 * A fetch is one GET of the whole object pinned with If-Match to the
 * listing's ETag, by one of read_parallel threads of this file, straight
 * into the read path's block of that object version (read.c; its memory
 * counts against max_memory and is only taken where read-ahead may take
 * it, never waited for).  Its headers are what a HEAD would have said:
 * they refresh the inode at once (fs_inode_update), and the name's entry
 * in the listing (fs_known_trust_locked), so the lookup and the open
 * that follow ask S3 nothing.  At the open, the entry's headers fill the
 * inode, the handle's reader finds the block (no request for the reads),
 * and the entry goes (fs_prefetch_opened).  A 412 or a 404 (the object
 * changed or went since the listing) makes the inode and the name's entry
 * stale, so the open asks S3 and reads the object as it is now; any other
 * failure, or a gzip object of a gunzip mount, or a symlink, is simply
 * not used.  An entry not taken within attr_ttl of its GET (5 s at most)
 * is dropped: its headers are no longer to be trusted.
 *
 * Locking: pf->lock guards the entries, the queue and the streams.  It is
 * never held with fs->lock (the open gathers what it needs from the inode
 * table first); read.c's lock may be taken under it (fs_reader_free).  An
 * entry being fetched is written by its fetcher only, without the lock,
 * and read by others only once `fetching` is false again. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <utlist.h>

#define PF_STREAMS 8        /* directories followed at once */
#define PF_KEEP_MAX_MS 5000 /* an entry not taken by then goes */
#define PF_SWEEP_MS 500     /* how often idle threads drop old entries, while any */
#define PF_FIRST_WINDOW 2   /* files fetched ahead at the pattern's first step */

struct pf_ent {
    /* fixed */
    char *path;
    struct fs_attr listed; /* the listing's: ETag and size */
    /* written by the fetcher while `fetching`, then read under the lock */
    struct fs_reader *r; /* holds the version's block */
    struct fs_attr got;  /* the GET's headers, as a HEAD's answer */
    char *xattr;
    int rc; /* of the fetch */
    uint64_t sent_ms;
    /* protected by pf->lock */
    bool queued, fetching, done;
    bool in_hash; /* in pf->ents: anybody's to take or drop */
    bool taken;   /* an open's (or its fetcher's until done) */
    UT_hash_handle hh;
    struct pf_ent *prev, *next; /* pf->queue */
};

/* One directory read in order: the names after the last file opened. */
struct pf_stream {
    char *dir; /* NULL: unused */
    char **ahead;
    size_t n_ahead;
    size_t window; /* of those, how many were fetched ahead */
    unsigned hits; /* opens in a row that went on with the pattern */
    uint64_t used_ms;
};

struct fs_prefetch {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* queued, fetched, stop */
    /* protected by lock */
    struct pf_ent *ents;  /* by path */
    struct pf_ent *queue; /* to fetch, in order */
    unsigned n_ents;      /* in ents, or being fetched after a drop */
    struct pf_stream streams[PF_STREAMS];
    bool stop;
    /* fixed */
    unsigned max_ents;
    uint64_t keep_ms;
    pthread_t *threads;
    unsigned n_threads;
};

/* ---- entries (pf->lock held) ------------------------------------------ */

static void ent_free(struct fs_prefetch *pf, struct pf_ent *e)
{
    pf->n_ents--;
    fs_reader_free(e->r); /* its block goes unless an open's reader holds it */
    free(e->xattr);
    free(e->path);
    free(e);
}

/* Let go of an entry nobody has taken: at once, or by its fetcher. */
static void ent_drop(struct fs_prefetch *pf, struct pf_ent *e)
{
    HASH_DEL(pf->ents, e);
    e->in_hash = false;
    if (e->queued) {
        DL_DELETE(pf->queue, e);
        e->queued = false;
    }
    if (!e->fetching)
        ent_free(pf, e);
}

static struct pf_ent *ent_new(struct fs_prefetch *pf, const char *path, const struct fs_attr *a)
{
    struct pf_ent *e = calloc(1, sizeof(*e));
    if (!e || !(e->path = strdup(path))) {
        free(e);
        return NULL;
    }
    e->listed = *a;
    e->in_hash = true;
    HASH_ADD_KEYPTR(hh, pf->ents, e->path, strlen(e->path), e);
    pf->n_ents++;
    return e;
}

/* The path's directory: its length in `path` ("" for the root's files). */
static size_t dir_len(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? (size_t)(slash - path) : 0;
}

static bool in_dir(const char *path, const char *dir)
{
    size_t n = dir_len(path);
    return strlen(dir) == n && strncmp(path, dir, n) == 0;
}

/* Entries not taken within keep_ms of their GET go. */
static void sweep_locked(struct fs_prefetch *pf, uint64_t now)
{
    struct pf_ent *e, *tmp;
    HASH_ITER(hh, pf->ents, e, tmp)
    if (e->done && now >= e->sent_ms + pf->keep_ms)
        ent_drop(pf, e);
}

/* Whether a listed file is worth a fetch ahead: one block, not empty. */
static bool small_file(const struct fs_attr *a)
{
    return S_ISREG(a->mode) && !a->gz && *a->etag && a->size > 0 && a->size <= FS_READ_BLOCK;
}

/* ---- a fetch (no lock held) -------------------------------------------- */

/* What the fetch taught, where the lookup and the open will look: fresh
 * headers of the version listed, or that the listing is wrong about it. */
static void publish(struct fs *fs, struct pf_ent *e)
{
    fuse_ino_t ino = 0;
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in;
    HASH_FIND(hh_path, fs->by_path, e->path, strlen(e->path), in);
    bool same = in && !fs_inode_mine(in) && strcmp(in->attr.etag, e->listed.etag) == 0;
    if (e->rc == 0) {
        fs_known_trust_locked(fs, e->path, e->listed.etag, e->sent_ms + fs->attr_ttl_ms);
        ino = same ? in->ino : 0;
    } else if (e->rc == ESTALE || e->rc == ENOENT) {
        /* changed or gone since the listing: whoever opens it asks S3 */
        if (same)
            in->attr_expire_ms = 0;
        fs_known_trust_locked(fs, e->path, e->listed.etag, 0);
    }
    pthread_mutex_unlock(&fs->lock);
    if (ino) {
        char *xattr = e->xattr ? strdup(e->xattr) : NULL;
        fs_inode_update(fs, ino, e->listed.etag, &e->got, xattr); /* takes xattr */
    }
}

static void fetch(struct fs *fs, struct pf_ent *e)
{
    struct s3_object_info info = {0};
    e->sent_ms = util_now_ms();
    e->r = fs_reader_new(fs, 0, e->path, &e->listed);
    int rc = e->r ? fs_reader_fetch_whole(e->r, &info) : ENOMEM;
    if (!rc) {
        fs_attr_from_head(&fs->cfg, &info, false, &e->got);
        bool gz = fs->cfg.gunzip != FS_GUNZIP_OFF && info.content_encoding &&
                  strcasecmp(info.content_encoding, "gzip") == 0;
        /* a view, a symlink, another version: the open's own way */
        if (gz || !S_ISREG(e->got.mode) || strcmp(e->got.etag, e->listed.etag) != 0 ||
            e->got.size != e->listed.size)
            rc = EMEDIUMTYPE;
        const char *x = fs_meta_get(&info, "xattr");
        if (!rc && x && !(e->xattr = strdup(x)))
            rc = ENOMEM;
    }
    s3_object_info_clear(&info);
    e->rc = rc;
    if (rc && rc != ESTALE && rc != ENOENT && rc != EEXIST)
        log_debug("prefetch of %s: %s", e->path, strerror(rc));
    publish(fs, e);
}

/* The fetch of e is over (pf->lock held): a dropped entry goes now. */
static void fetch_done_locked(struct fs_prefetch *pf, struct pf_ent *e)
{
    e->fetching = false;
    e->done = true;
    pthread_cond_broadcast(&pf->cond);
    if (!e->in_hash && !e->taken)
        ent_free(pf, e);
}

/* Fetch e on this thread, now: it was queued, or is new (pf->lock held,
 * dropped meanwhile). */
static void fetch_here_locked(struct fs *fs, struct fs_prefetch *pf, struct pf_ent *e)
{
    if (e->queued) {
        DL_DELETE(pf->queue, e);
        e->queued = false;
    }
    e->fetching = true;
    pthread_mutex_unlock(&pf->lock);
    fetch(fs, e);
    pthread_mutex_lock(&pf->lock);
    fetch_done_locked(pf, e);
}

static void *worker(void *arg)
{
    struct fs *fs = arg;
    struct fs_prefetch *pf = fs->pf;
    pthread_mutex_lock(&pf->lock);
    for (;;) {
        while (!pf->queue && !pf->stop) {
            /* Entries left untaken are swept on a timer; with none, an idle
             * mount's threads sleep until work comes (queued wakes them). */
            if (pf->n_ents == 0) {
                pthread_cond_wait(&pf->cond, &pf->lock);
                continue;
            }
            util_cond_wait_ms(&pf->cond, &pf->lock, PF_SWEEP_MS);
            sweep_locked(pf, util_now_ms());
        }
        if (pf->stop)
            break;
        fetch_here_locked(fs, pf, pf->queue);
    }
    pthread_mutex_unlock(&pf->lock);
    return NULL;
}

/* ---- the pattern (pf->lock held) ---------------------------------------- */

static void stream_forget_ahead(struct pf_stream *s)
{
    for (size_t i = 0; i < s->n_ahead; i++)
        free(s->ahead[i]);
    free(s->ahead);
    s->ahead = NULL;
    s->n_ahead = 0;
}

/* The stream of directory `dir`: found, or made in place of the least
 * recently used one (NULL on ENOMEM). */
static struct pf_stream *stream_of(struct fs_prefetch *pf, const char *dir, uint64_t now)
{
    struct pf_stream *lru = &pf->streams[0];
    for (unsigned i = 0; i < PF_STREAMS; i++) {
        struct pf_stream *s = &pf->streams[i];
        if (s->dir && strcmp(s->dir, dir) == 0) {
            /* The names after its last open came from a listing trusted
             * for keep_ms, as what was fetched ahead is kept: past that,
             * the pattern starts again (an open long after the last is
             * seldom the walk going on). */
            if (now >= s->used_ms + pf->keep_ms) {
                stream_forget_ahead(s);
                s->hits = 0;
            }
            s->used_ms = now;
            return s;
        }
        if (!s->dir || (lru->dir && s->used_ms < lru->used_ms))
            lru = s;
    }
    char *copy = strdup(dir);
    if (!copy)
        return NULL;
    stream_forget_ahead(lru);
    free(lru->dir);
    lru->dir = copy;
    lru->hits = 0;
    lru->used_ms = now;
    return lru;
}

/* Where `name` is among the names that followed the last open, or -1. */
static long ahead_index(const struct pf_stream *s, const char *name)
{
    for (size_t i = 0; i < s->n_ahead; i++)
        if (strcmp(s->ahead[i], name) == 0)
            return (long)i;
    return -1;
}

/* Drop what was fetched for the directory of stream s and not taken: the
 * names ahead before index `upto` (skipped by the program), or all of the
 * directory's (the pattern broke: upto -1). */
static void drop_stream_locked(struct fs_prefetch *pf, struct pf_stream *s, long upto)
{
    struct pf_ent *e, *tmp;
    if (upto < 0) {
        HASH_ITER(hh, pf->ents, e, tmp)
        if (in_dir(e->path, s->dir))
            ent_drop(pf, e);
        return;
    }
    for (long i = 0; i < upto; i++) {
        char *path = fs_child_path(s->dir, s->ahead[i]);
        if (path)
            HASH_FIND_STR(pf->ents, path, e);
        if (path && e)
            ent_drop(pf, e);
        free(path);
    }
}

/* What one open found and asked for. */
struct pf_open {
    char *path, *dir;
    const char *name;
    struct fs_attr attr; /* the inode's, at the open */
    struct fs_known_next *next;
    size_t n_next;
    bool first;
};

static void pf_open_free(struct pf_open *po)
{
    for (size_t i = 0; po->next && i < po->n_next; i++)
        free((char *)po->next[i].name);
    free(po->next);
    free(po->path);
    free(po->dir);
}

/* The inode's path and attributes and the files after it in its
 * directory's listing (fs->lock taken here).  false: not a file to
 * prefetch around (not a stored regular file, or ENOMEM). */
static bool gather(struct fs *fs, fuse_ino_t ino, size_t max, struct pf_open *po)
{
    memset(po, 0, sizeof(*po));
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    bool ok = in && in->linked && S_ISREG(in->attr.mode) && !in->attr.gz && !fs_inode_mine(in);
    if (ok) {
        po->attr = in->attr;
        po->path = strdup(in->path);
        po->dir = po->path ? util_strndup(po->path, dir_len(po->path)) : NULL;
        po->next = calloc(max, sizeof(*po->next));
        ok = po->path && po->dir && po->next;
    }
    if (ok) {
        po->name = po->path + dir_len(po->path) + (*po->dir ? 1 : 0);
        size_t n = fs_known_next_locked(fs, po->dir, po->name, max, po->next, &po->first);
        for (size_t i = 0; i < n; i++) {
            po->next[i].name = strdup(po->next[i].name);
            if (po->next[i].name)
                po->n_next++;
            else
                break;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    if (!ok)
        pf_open_free(po);
    return ok;
}

/* Queue fetches of the small files among the first `window` after the
 * one opened (pf->lock held). */
static void queue_ahead_locked(struct fs_prefetch *pf, const struct pf_open *po, size_t window)
{
    for (size_t i = 0; i < po->n_next && i < window && pf->n_ents < pf->max_ents; i++) {
        if (!small_file(&po->next[i].attr))
            continue;
        char *path = fs_child_path(po->dir, po->next[i].name);
        struct pf_ent *e = NULL;
        if (path)
            HASH_FIND_STR(pf->ents, path, e);
        if (path && !e && (e = ent_new(pf, path, &po->next[i].attr))) {
            e->queued = true;
            DL_APPEND(pf->queue, e);
        }
        free(path);
    }
    pthread_cond_broadcast(&pf->cond);
}

/* The stream's names ahead become the files after the one opened. */
static void stream_advance(struct pf_stream *s, struct pf_open *po)
{
    stream_forget_ahead(s);
    s->ahead = calloc(po->n_next ? po->n_next : 1, sizeof(*s->ahead));
    for (size_t i = 0; s->ahead && i < po->n_next; i++) {
        s->ahead[i] = (char *)po->next[i].name; /* taken from po */
        po->next[i].name = NULL;
        s->n_ahead++;
    }
}

/* ---- the interface ------------------------------------------------------- */

struct fs_prefetched *fs_prefetch_open(struct fs *fs, fuse_ino_t ino, bool write)
{
    struct fs_prefetch *pf = fs->pf;
    struct pf_open po;
    if (!pf || write || !fs->attr_ttl_ms || !gather(fs, ino, pf->max_ents, &po))
        return NULL;
    uint64_t now = util_now_ms();
    pthread_mutex_lock(&pf->lock);
    sweep_locked(pf, now);
    struct pf_stream *s = stream_of(pf, po.dir, now);
    /* The pattern goes on with the next file, or one of those fetched
     * ahead (the program skipped some); a random order rarely does. */
    long at = s ? ahead_index(s, po.name) : -1;
    if (at > 0 && (size_t)at >= s->window)
        at = -1;
    /* The listing's first file is fetched itself (its GET stands for the
     * HEAD); the files after it only once the next one is opened: a
     * single `cat dir/first` costs its one GET. */
    bool goes_on = at >= 0, start = goes_on || po.first;
    struct pf_ent *e;
    HASH_FIND_STR(pf->ents, po.path, e);
    if (!e && start && small_file(&po.attr) && pf->n_ents < pf->max_ents)
        e = ent_new(pf, po.path, &po.attr); /* this one too, on this thread */
    if (e) {
        HASH_DEL(pf->ents, e);
        e->in_hash = false;
        e->taken = true;
    }
    if (s) {
        drop_stream_locked(pf, s, at); /* skipped, or all when it broke */
        s->hits = goes_on ? s->hits + 1 : 0;
    }
    size_t window = 0;
    if (goes_on) {
        unsigned shift = s && s->hits < 9 ? s->hits - 1 : 8; /* hits >= 1 here */
        window = (size_t)PF_FIRST_WINDOW << shift;
        queue_ahead_locked(pf, &po, window);
    }
    if (s) {
        stream_advance(s, &po);
        s->window = window;
    }
    if (e && !e->done && !e->fetching)
        fetch_here_locked(fs, pf, e);
    while (e && e->fetching)
        pthread_cond_wait(&pf->cond, &pf->lock);
    bool usable = e && e->rc == 0 && util_now_ms() < e->sent_ms + pf->keep_ms &&
                  strcmp(e->listed.etag, po.attr.etag) == 0;
    if (e && !usable) {
        ent_free(pf, e);
        e = NULL;
    }
    pthread_mutex_unlock(&pf->lock);
    if (e) /* what a HEAD would have said, as the open needs it */
        fs_inode_update(fs, ino, po.attr.etag, &e->got, e->xattr ? strdup(e->xattr) : NULL);
    pf_open_free(&po);
    return (struct fs_prefetched *)e;
}

void fs_prefetch_opened(struct fs *fs, struct fs_prefetched *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&fs->pf->lock);
    ent_free(fs->pf, (struct pf_ent *)p);
    pthread_mutex_unlock(&fs->pf->lock);
}

bool fs_prefetch_settle(struct fs *fs, const char *path)
{
    struct fs_prefetch *pf = fs->pf;
    if (!pf)
        return false;
    pthread_mutex_lock(&pf->lock);
    struct pf_ent *e;
    HASH_FIND_STR(pf->ents, path, e);
    bool any = e != NULL;
    if (e && e->queued)
        fetch_here_locked(fs, pf, e); /* frees e if it was dropped meanwhile */
    /* found again each time: a dropped entry is freed by its fetcher */
    for (;;) {
        HASH_FIND_STR(pf->ents, path, e);
        if (!e || !e->fetching)
            break;
        pthread_cond_wait(&pf->cond, &pf->lock);
    }
    pthread_mutex_unlock(&pf->lock);
    return any;
}

int fs_prefetch_new(struct fs *fs)
{
    struct fs_prefetch *pf = calloc(1, sizeof(*pf));
    if (!pf)
        return ENOMEM;
    pthread_mutex_init(&pf->lock, NULL);
    pthread_cond_init(&pf->cond, NULL);
    unsigned n = fs->cfg.read_parallel ? fs->cfg.read_parallel : 8;
    pf->max_ents = 2 * n;
    pf->keep_ms = fs->attr_ttl_ms < PF_KEEP_MAX_MS ? fs->attr_ttl_ms : PF_KEEP_MAX_MS;
    fs->pf = pf;
    int rc = (pf->threads = calloc(n, sizeof(*pf->threads))) ? 0 : ENOMEM;
    for (unsigned i = 0; !rc && i < n; i++, pf->n_threads++)
        rc = util_thread_start(&pf->threads[i], worker, fs);
    if (rc)
        fs_prefetch_free(fs);
    return rc;
}

void fs_prefetch_free(struct fs *fs)
{
    struct fs_prefetch *pf = fs->pf;
    if (!pf)
        return;
    pthread_mutex_lock(&pf->lock);
    pf->stop = true;
    pthread_cond_broadcast(&pf->cond);
    pthread_mutex_unlock(&pf->lock);
    for (unsigned i = 0; i < pf->n_threads; i++)
        pthread_join(pf->threads[i], NULL);
    free(pf->threads);
    struct pf_ent *e, *tmp;
    HASH_ITER(hh, pf->ents, e, tmp)
    ent_drop(pf, e); /* no fetch is left: every one goes now */
    for (unsigned i = 0; i < PF_STREAMS; i++) {
        stream_forget_ahead(&pf->streams[i]);
        free(pf->streams[i].dir);
    }
    pthread_cond_destroy(&pf->cond);
    pthread_mutex_destroy(&pf->lock);
    free(pf);
    fs->pf = NULL;
}
