/* ahead.c — listings read ahead down trees, for `find`, `du` and `ls -R`.
 *
 * A program that walks a tree lists a directory, then opens its
 * subdirectories one after another, each with a listing of its own: one
 * round trip per directory, one after another.  Seen from here, a walk is
 * an opendir of a directory C that follows the listing of its parent P
 * (C is one of P's subdirectories).  Then P is being walked, and the
 * listings of P's other subdirectories and of C's are begun ahead, by a
 * few workers of our own; as each arrives, its own subdirectories are
 * queued the same way, so a whole tree is listed about `depth` round trips
 * deep, not one per directory.  An opendir takes the listing read ahead of its
 * directory (waiting for it while it is in flight) instead of asking S3.
 * The same table holds the first page of a directory's listing that a
 * lookup of it made (fs_ahead_keep): `ls -l dir` looks dir up, then opens
 * it, and the opendir takes that page rather than ask again, and goes on
 * from its continuation token when the directory has more.  A lookup
 * that has its marker's HEAD still to send asks for the second page
 * beside it (fs_ahead_begin), held with the first as a fetch in flight,
 * which the opendir takes as its page asked ahead: `ls -l dir` then pays
 * the HEAD beside a page, not before it.  What is held is one page a
 * directory (and that fetch): a handle streams the rest (dirstream.c).
 *
 * Order: a walker goes depth first, in listing order, which is the byte
 * order of the directories' keys ("a/" < "a/x/" < "a0/" ...).  The queue
 * is kept in that order, and a worker takes the first directory at or
 * after the last one opened (the cursor): what the walker needs next.
 *
 * Bounds: read_parallel workers (at most FS_AHEAD_MAX_WORKERS) send one
 * listing each at a time; at most FS_AHEAD_HELD listings are in flight or
 * held, in at most max_memory/16 bytes (about 200-300 bytes an entry),
 * each charged to the mount's memory bound (budget.c, use "list", as
 * SPARE: a listing the bound has no room for is not held), and
 * at most FS_AHEAD_QUEUE directories wait in the queue.  A listing that
 * nobody took within attr_ttl is dropped, and since the walk it was for
 * has stopped or gone elsewhere, so is the queue: a false start (`ls a`
 * then `ls a/b`, no walk) costs at most FS_AHEAD_HELD listings.
 *
 * Trust: a listing read ahead is taken only while it is younger than
 * attr_ttl (counted from its arrival: what an opendir would list itself
 * instead is no fresher once shown, when a LIST takes longer than
 * attr_ttl; the names it teaches are trusted from its request) and no
 * name in its directory was made, removed, renamed or stored by this
 * mount since it was begun (known.c marks it spoiled).  Otherwise opendir
 * lists as it always did.  A failed listing ahead is dropped: opendir then
 * lists and sees the error itself.  With attr_ttl=0 nothing is read ahead.
 *
 * Locking: everything here, the queue and the listings (fs->ahead_ents),
 * is protected by fs->lock, never held across a request; a listing with a
 * fetch leaves the table under it and is freed after it (the fetch's
 * thread takes it). */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FS_AHEAD_MAX_WORKERS 16
#define FS_AHEAD_HELD 64    /* listings in flight or held */
#define FS_AHEAD_QUEUE 1024 /* directories waiting */
#define FS_AHEAD_RECENT 8   /* listings remembered to notice a walk */

/* A directory listed by an opendir, remembered to notice that a walk goes
 * into one of its subdirectories. */
struct walked {
    char *path;
    char **names; /* its subdirectories, in listing order */
    size_t n;
    bool triggered; /* its subdirectories were queued already */
};

struct fs_ahead {
    pthread_cond_t work;    /* queued, room made, or stop */
    pthread_cond_t arrived; /* a listing arrived or failed */
    pthread_t threads[FS_AHEAD_MAX_WORKERS];
    unsigned n_threads;
    bool stop;
    char **queue; /* keys ("path/") waiting, in byte order */
    size_t n_queue, cap_queue;
    char *cursor;     /* the key of the directory opened last */
    unsigned n_ents;  /* fs->ahead_ents */
    size_t held;      /* bytes of their listings */
    size_t max_bytes; /* max_memory / 16 */
    struct walked recent[FS_AHEAD_RECENT];
    unsigned next_recent;
};

/* The key of a directory, its place in walk order: "path/", "" for the
 * root.  Caller frees; NULL on ENOMEM. */
static char *key_of(const char *path)
{
    size_t n = strlen(path);
    char *k = malloc(n + 2);
    if (k) {
        memcpy(k, path, n);
        k[n] = '/';
        k[n ? n + 1 : 0] = '\0';
    }
    return k;
}

/* The first index of the queue whose key is >= k. */
static size_t queue_find(const struct fs_ahead *ah, const char *k)
{
    size_t lo = 0, hi = ah->n_queue;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ah->queue[mid], k) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void queue_remove_at(struct fs_ahead *ah, size_t i)
{
    free(ah->queue[i]);
    memmove(&ah->queue[i], &ah->queue[i + 1], (ah->n_queue - i - 1) * sizeof(*ah->queue));
    ah->n_queue--;
}

static void queue_clear(struct fs_ahead *ah)
{
    while (ah->n_queue)
        free(ah->queue[--ah->n_queue]);
}

/* Queue directory `path` unless it is queued, in flight or held already,
 * or the queue is full (fs->lock held).  true when it was queued. */
static bool queue_add_locked(struct fs *fs, const char *path)
{
    struct fs_ahead *ah = fs->ahead;
    struct fs_ahead_ent *ae;
    HASH_FIND(hh, fs->ahead_ents, path, strlen(path), ae);
    if (ae || ah->n_queue >= FS_AHEAD_QUEUE)
        return false;
    char *k = key_of(path);
    if (!k)
        return false;
    size_t i = queue_find(ah, k);
    if ((i < ah->n_queue && strcmp(ah->queue[i], k) == 0) ||
        util_grow((void **)&ah->queue, &ah->cap_queue, ah->n_queue + 1, sizeof(*ah->queue))) {
        free(k);
        return false;
    }
    memmove(&ah->queue[i + 1], &ah->queue[i], (ah->n_queue - i) * sizeof(*ah->queue));
    ah->queue[i] = k;
    ah->n_queue++;
    return true;
}

/* Queue the subdirectories `names` of `dir` but `except` (fs->lock held). */
static void queue_children_locked(struct fs *fs, const char *dir, char *const *names, size_t n,
                                  const char *except)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (except && strcmp(names[i], except) == 0)
            continue;
        char *p = fs_child_path(dir, names[i]);
        any |= p && queue_add_locked(fs, p);
        free(p);
    }
    if (any)
        pthread_cond_broadcast(&fs->ahead->work);
}

/* The subdirectories of listing d, in its order (at most FS_AHEAD_QUEUE:
 * the queue holds no more).  *names is malloc'ed, each name too. */
static size_t subdirs_of(const struct fs_dir *d, char ***names)
{
    size_t n = 0;
    *names = NULL;
    for (size_t i = 0; i < d->n; i++)
        n += S_ISDIR(d->ents[i].attr.mode);
    if (n > FS_AHEAD_QUEUE)
        n = FS_AHEAD_QUEUE;
    if (!n || !(*names = calloc(n, sizeof(**names))))
        return 0;
    size_t got = 0;
    for (size_t i = 0; i < d->n && got < n; i++)
        if (S_ISDIR(d->ents[i].attr.mode) && ((*names)[got] = strdup(d->ents[i].name)))
            got++;
    return got;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static size_t listing_bytes(const struct fs_ahead_ent *ae)
{
    size_t b = sizeof(*ae) + strlen(ae->path) + 1 + ae->d.n * sizeof(*ae->d.ents);
    for (size_t i = 0; i < ae->d.n; i++)
        b += strlen(ae->d.ents[i].name) + 1;
    return b;
}

/* Never with fs->lock held when ae->next may run (it takes the lock). */
static void ent_free(struct fs_ahead_ent *ae)
{
    fs_dir_fetch_free(ae->next); /* first: it reads d */
    fs_dir_free(&ae->d);
    free(ae->path);
    free(ae);
}

/* Take `ae` off the table (fs->lock held; the caller frees it). */
static void ent_remove_locked(struct fs *fs, struct fs_ahead_ent *ae)
{
    struct fs_ahead *ah = fs->ahead;
    HASH_DEL(fs->ahead_ents, ae);
    ah->n_ents--;
    ah->held -= ae->bytes;
    /* The bytes leave the bound here, with the listing: what an open
     * directory holds is its reader's to charge (FS_USE_LIST). */
    fs_budget_give(fs->budget, FS_USE_LIST, ae->bytes);
    ae->bytes = 0;
    pthread_cond_broadcast(&ah->work);
}

/* Free the listings on the list `gone` (fs->lock not held). */
static void ents_free(struct fs_ahead_ent *gone)
{
    while (gone) {
        struct fs_ahead_ent *next = gone->gone;
        ent_free(gone);
        gone = next;
    }
}

/* Take off the listings nobody took within attr_ttl, onto *gone to be
 * freed once fs->lock is let go; when there were any, the walk they were
 * for is over, and the queue goes too (fs->lock held). */
static void sweep_locked(struct fs *fs, struct fs_ahead_ent **gone)
{
    struct fs_ahead *ah = fs->ahead;
    uint64_t now = util_now_ms();
    bool stale = false;
    struct fs_ahead_ent *ae, *tmp;
    HASH_ITER(hh, fs->ahead_ents, ae, tmp)
    {
        if (ae->done && now - ae->arrived_ms >= fs->attr_ttl_ms) {
            stale |= !ae->kept; /* a lookup's own says nothing of a walk */
            ent_remove_locked(fs, ae);
            ae->gone = *gone;
            *gone = ae;
        }
    }
    if (stale)
        queue_clear(ah);
}

/* The next directory to list (malloc'ed path), or NULL when none is
 * queued or there is no room (fs->lock held). */
static char *next_locked(struct fs *fs)
{
    struct fs_ahead *ah = fs->ahead;
    if (!ah->n_queue || ah->n_ents >= FS_AHEAD_HELD || ah->held >= ah->max_bytes)
        return NULL;
    size_t i = ah->cursor ? queue_find(ah, ah->cursor) : 0;
    if (i == ah->n_queue)
        i = 0; /* behind the walker: last */
    char *path = ah->queue[i];
    ah->queue[i] = NULL;
    size_t n = strlen(path);
    if (n)
        path[n - 1] = '\0'; /* the key's '/' */
    queue_remove_at(ah, i);
    return path;
}

/* List `path` ahead (its first page): its entry is on the table while in
 * flight; once the page arrives it is held and its subdirectories are queued (the walk
 * goes on below it); a failed one leaves (fs->lock held, dropped while
 * the requests go). */
static void list_one_locked(struct fs *fs, char *path)
{
    struct fs_ahead *ah = fs->ahead;
    struct fs_ahead_ent *ae = calloc(1, sizeof(*ae));
    if (!ae) {
        free(path);
        return;
    }
    ae->path = path;
    ae->begun_ms = util_now_ms();
    ae->gen = fs->names_gen;
    HASH_ADD_KEYPTR(hh, fs->ahead_ents, ae->path, strlen(ae->path), ae);
    ah->n_ents++;
    pthread_mutex_unlock(&fs->lock);
    struct fs_dir d; /* its first page: a longer listing goes on from there */
    int rc = fs_dir_list(fs, ae->path, 1, &d);
    char **names = NULL;
    size_t n = rc ? 0 : subdirs_of(&d, &names);
    pthread_mutex_lock(&fs->lock);
    if (!rc) {
        ae->d = d;
        size_t bytes = listing_bytes(ae);
        if (!fs_budget_try(fs->budget, FS_USE_LIST, bytes, FS_TAKE_SPARE))
            rc = ENOMEM; /* no room in the bound: the opendir lists it itself */
        else
            ae->bytes = bytes;
    }
    if (rc) {
        ent_remove_locked(fs, ae);
        ent_free(ae);
    } else {
        ae->done = true;
        ae->arrived_ms = util_now_ms();
        ah->held += ae->bytes;
        queue_children_locked(fs, ae->path, names, n, NULL);
    }
    names_free(names, n);
    pthread_cond_broadcast(&ah->arrived);
}

static void *worker_main(void *arg)
{
    struct fs *fs = arg;
    struct fs_ahead *ah = fs->ahead;
    pthread_mutex_lock(&fs->lock);
    while (!ah->stop) {
        struct fs_ahead_ent *gone = NULL;
        sweep_locked(fs, &gone);
        if (gone) { /* a page a lookup asked ahead may be on its way */
            pthread_mutex_unlock(&fs->lock);
            ents_free(gone);
            pthread_mutex_lock(&fs->lock);
            continue;
        }
        char *path = next_locked(fs);
        if (path) {
            list_one_locked(fs, path);
            continue;
        }
        if (!fs->ahead_ents) { /* nothing to sweep: sleep until work comes */
            pthread_cond_wait(&ah->work, &fs->lock);
            continue;
        }
        /* woken by work or room; a while later anyway, to sweep */
        util_cond_wait_ms(&ah->work, &fs->lock, 250);
    }
    pthread_mutex_unlock(&fs->lock);
    return NULL;
}

int fs_ahead_new(struct fs *fs)
{
    struct fs_ahead *ah = calloc(1, sizeof(*ah));
    if (!ah)
        return ENOMEM;
    pthread_cond_init(&ah->work, NULL);
    pthread_cond_init(&ah->arrived, NULL);
    ah->max_bytes = (size_t)(fs->cfg.max_memory / 16);
    fs->ahead = ah;
    unsigned want = fs->cfg.read_parallel;
    if (want < 1)
        want = 1;
    if (want > FS_AHEAD_MAX_WORKERS)
        want = FS_AHEAD_MAX_WORKERS;
    int rc = 0;
    while (!rc && ah->n_threads < want && fs->attr_ttl_ms > 0) {
        rc = util_thread_start(&ah->threads[ah->n_threads], worker_main, fs);
        if (!rc)
            ah->n_threads++;
    }
    return rc;
}

void fs_ahead_stop(struct fs *fs)
{
    struct fs_ahead *ah = fs->ahead;
    if (!ah)
        return;
    pthread_mutex_lock(&fs->lock);
    ah->stop = true;
    queue_clear(ah);
    pthread_cond_broadcast(&ah->work);
    pthread_cond_broadcast(&ah->arrived);
    pthread_mutex_unlock(&fs->lock);
    for (unsigned i = 0; i < ah->n_threads; i++)
        pthread_join(ah->threads[i], NULL);
    ah->n_threads = 0;
    /* the pages lookups asked ahead: answered before this returns */
    struct fs_ahead_ent *gone = NULL, *ae, *tmp;
    pthread_mutex_lock(&fs->lock);
    HASH_ITER(hh, fs->ahead_ents, ae, tmp)
    {
        if (ae->next) {
            ent_remove_locked(fs, ae);
            ae->gone = gone;
            gone = ae;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    ents_free(gone);
}

void fs_ahead_free(struct fs *fs)
{
    struct fs_ahead *ah = fs->ahead;
    if (!ah)
        return;
    fs_ahead_stop(fs);
    struct fs_ahead_ent *ae, *tmp;
    HASH_ITER(hh, fs->ahead_ents, ae, tmp)
    {
        HASH_DEL(fs->ahead_ents, ae);
        fs_budget_give(fs->budget, FS_USE_LIST, ae->bytes);
        ent_free(ae);
    }
    for (unsigned i = 0; i < FS_AHEAD_RECENT; i++) {
        free(ah->recent[i].path);
        names_free(ah->recent[i].names, ah->recent[i].n);
    }
    free(ah->queue);
    free(ah->cursor);
    pthread_cond_destroy(&ah->work);
    pthread_cond_destroy(&ah->arrived);
    free(ah);
    fs->ahead = NULL;
}

size_t fs_ahead_bytes_locked(struct fs *fs)
{
    return fs->ahead ? fs->ahead->held : 0;
}

int fs_ahead_take(struct fs *fs, const char *path, struct fs_dir *d, uint64_t *gen,
                  uint64_t *begun_ms, bool *kept, struct fs_dir_fetch **next)
{
    *next = NULL;
    struct fs_ahead *ah = fs->ahead;
    if (!ah)
        return ENOENT;
    char *k = key_of(path);
    pthread_mutex_lock(&fs->lock);
    size_t i = k ? queue_find(ah, k) : ah->n_queue;
    if (i < ah->n_queue && strcmp(ah->queue[i], k) == 0)
        queue_remove_at(ah, i); /* listed now, by the caller */
    struct fs_ahead_ent *ae;
    HASH_FIND(hh, fs->ahead_ents, path, strlen(path), ae);
    while (ae && !ae->done && !ah->stop) {
        pthread_cond_wait(&ah->arrived, &fs->lock);
        HASH_FIND(hh, fs->ahead_ents, path, strlen(path), ae);
    }
    bool ok = false;
    if (ae && ae->done) {
        ent_remove_locked(fs, ae);
        ok = !ae->spoiled && util_now_ms() - ae->arrived_ms < fs->attr_ttl_ms;
    } else {
        ae = NULL;
    }
    pthread_mutex_unlock(&fs->lock);
    free(k);
    if (!ae)
        return ENOENT;
    if (ok) {
        *d = ae->d;
        *gen = ae->gen;
        *begun_ms = ae->begun_ms;
        *kept = ae->kept;
        *next = ae->next; /* it reads d's entries, which stay where they are */
        ae->next = NULL;
        memset(&ae->d, 0, sizeof(ae->d));
    }
    ent_free(ae);
    return ok ? 0 : ENOENT;
}

/* Whether a lookup's listing of `path` begun with names_gen `gen` may be
 * held (fs->lock held). */
static bool may_keep_locked(struct fs *fs, const char *path, uint64_t gen)
{
    struct fs_ahead *ah = fs->ahead;
    struct fs_ahead_ent *old = NULL;
    HASH_FIND(hh, fs->ahead_ents, path, strlen(path), old);
    /* A name removed since it was begun is not in it: not kept (one
     * made or stored since marks it spoiled, as for any listing here). */
    return !old && !ah->stop && gen == fs->names_gen && ah->n_ents < FS_AHEAD_HELD &&
           ah->held < ah->max_bytes;
}

/* Hold the lookup's listing *d of `path` (with the fetch of its next page,
 * or NULL) when there is room: true, and *d emptied; false: *d, and the
 * fetch, are the caller's still. */
static bool keep(struct fs *fs, const char *path, struct fs_dir *d, struct fs_dir_fetch *next,
                 uint64_t gen, uint64_t begun_ms)
{
    struct fs_ahead *ah = fs->ahead;
    struct fs_ahead_ent *ae = calloc(1, sizeof(*ae));
    char *p = strdup(path);
    pthread_mutex_lock(&fs->lock);
    bool ok = ae && p && may_keep_locked(fs, path, gen);
    if (ok) {
        ae->path = p;
        ae->d = *d;
        /* a page asked ahead will hold about as much as the first */
        ae->bytes = listing_bytes(ae) * (next ? 2 : 1);
        ok = fs_budget_try(fs->budget, FS_USE_LIST, ae->bytes, FS_TAKE_SPARE);
    }
    if (ok) {
        ae->next = next;
        ae->begun_ms = begun_ms;
        ae->arrived_ms = util_now_ms();
        ae->gen = gen;
        ae->done = true;
        ae->kept = true;
        HASH_ADD_KEYPTR(hh, fs->ahead_ents, ae->path, strlen(ae->path), ae);
        ah->n_ents++;
        ah->held += ae->bytes;
        memset(d, 0, sizeof(*d));
    }
    pthread_mutex_unlock(&fs->lock);
    if (!ok) {
        free(ae);
        free(p);
    }
    return ok;
}

void fs_ahead_keep(struct fs *fs, const char *path, struct fs_dir *d, uint64_t gen,
                   uint64_t begun_ms)
{
    if (fs->ahead && fs->attr_ttl_ms && (d->whole || d->next_token))
        keep(fs, path, d, NULL, gen, begun_ms);
}

void fs_ahead_begin(struct fs *fs, const char *path, const struct fs_dir *d, uint64_t gen,
                    uint64_t begun_ms)
{
    struct fs_ahead *ah = fs->ahead;
    if (!ah || !fs->attr_ttl_ms || d->whole || !d->next_token)
        return;
    pthread_mutex_lock(&fs->lock);
    bool room = may_keep_locked(fs, path, gen);
    pthread_mutex_unlock(&fs->lock);
    struct fs_dir copy;
    if (!room || fs_dir_copy(d, &copy))
        return;
    struct fs_dir_fetch *next = NULL;
    /* the fetch reads the entries of the copy, which keep() moves, never
     * reallocates */
    if (fs_dir_fetch_next(fs, path, &copy, &next) == 0 &&
        keep(fs, path, &copy, next, gen, begun_ms))
        return;
    fs_dir_fetch_free(next); /* lost a race for the room: it was asked for nothing */
    fs_dir_free(&copy);
}

/* Whether `name` is one of w's subdirectories. */
static bool walked_has(const struct walked *w, const char *name)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->names[i], name) == 0)
            return true;
    return false;
}

void fs_ahead_opened(struct fs *fs, const char *path, const struct fs_dir *d, bool ahead)
{
    struct fs_ahead *ah = fs->ahead;
    if (!ah || !ah->n_threads)
        return;
    struct walked w = {.path = strdup(path), .triggered = ahead};
    char *k = key_of(path);
    const char *slash = strrchr(path, '/');
    size_t plen = slash ? (size_t)(slash - path) : 0;
    const char *name = slash ? slash + 1 : path;
    pthread_mutex_lock(&fs->lock);
    /* under the lock: the fetch of the next page may change d's entries */
    w.n = subdirs_of(d, &w.names);
    if (k) {
        free(ah->cursor);
        ah->cursor = k;
    }
    bool in_walk = false;
    for (unsigned i = 0; *path && i < FS_AHEAD_RECENT && !in_walk; i++) {
        struct walked *p = &ah->recent[i];
        if (!p->path || strlen(p->path) != plen || strncmp(p->path, path, plen) != 0 ||
            !walked_has(p, name))
            continue;
        in_walk = true;
        if (!p->triggered) /* its walk has begun: its other subdirectories next */
            queue_children_locked(fs, p->path, p->names, p->n, name);
        p->triggered = true;
    }
    if (in_walk && !w.triggered) /* and the walk goes on below this one */
        queue_children_locked(fs, path, w.names, w.n, NULL);
    w.triggered |= in_walk;
    struct walked *slot = NULL; /* the same directory listed again: a new start */
    for (unsigned i = 0; i < FS_AHEAD_RECENT && !slot; i++)
        if (ah->recent[i].path && w.path && strcmp(ah->recent[i].path, w.path) == 0)
            slot = &ah->recent[i];
    if (!slot) {
        slot = &ah->recent[ah->next_recent];
        ah->next_recent = (ah->next_recent + 1) % FS_AHEAD_RECENT;
    }
    struct walked old = *slot;
    *slot = w;
    pthread_mutex_unlock(&fs->lock);
    free(old.path);
    names_free(old.names, old.n);
}
