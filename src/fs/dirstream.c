/* dirstream.c — a directory handle's listing, served as its pages arrive.
 *
 * A directory of a million keys is a thousand LIST pages.  A handle holds
 * three of them at most: the page being read, the one before it, and the
 * next, asked for by a thread of the handle's own as soon as the one
 * before arrived, so that the LIST and the reader's work on the page
 * overlap.  The first entries reach the program after one round trip, and
 * the memory a reader costs does not grow with the directory.
 *
 * Offsets.  The kernel gives readdir the offset of the last entry it
 * used, so every entry's offset must lead back to the place after it,
 * even once its page has been let go.  An offset says: page p (its
 * number in the listing), the entry's index i in that page, and 24 bits
 * of a hash of its name:
 *
 *     off = (p + 1) << 44 | (i + 1) << 24 | hash(name)
 *
 * (0, 1 and 2 are the places before ".", "..", and the first entry).  A
 * page still held is found by its number.  Otherwise it is listed again
 * from a remembered continuation token: the token of every page is kept
 * up to FS_DIR_MARKS of them, then of every second, every fourth page...
 * (the thinning keeps the marks bounded whatever the directory's size; a
 * seek far back then costs a few pages more).  In the page found, the
 * place is after the entry of that index if its name hashes alike, else
 * after the entry of the page whose name does (the page changed), else at
 * that index (the name is gone).  docs/SEMANTICS.md says what a program
 * can count on from this.
 *
 * Bounds: FS_DIR_PAGE_ENTRIES entries a page; FS_DIR_MARKS tokens a
 * handle; and the pages held by all handles together stay under
 * max_memory/16 (fs_listing_bytes(), counted in the mount's memory): past
 * it, a handle that fetches a page first lets go of the pages of the
 * handles used least recently (they list again from a mark when read on).
 *
 * Locking: ds->lock makes one readdir at a time of a handle; it is held
 * across the handle's LIST requests.  fs->lock (taken inside ds->lock,
 * never the other way but for trylock) protects fs->dirstreams, each
 * stream's place on it, and the bytes counted; a stream's pages are let
 * go by another thread only while that one holds both. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FS_DIR_MARKS 64
#define OFF_HASH_BITS 24
#define OFF_IDX_BITS 20
#define OFF_PAGE_BITS 19 /* 63 bits in all: an off_t is signed */
#define FS_DIR_PAGE_ENTRIES ((1u << OFF_IDX_BITS) - 2)
#define FS_DIR_MAX_PAGES ((1ULL << OFF_PAGE_BITS) - 2)
#define NO_PAGE UINT64_MAX

struct dir_mark {
    uint64_t no;
    char *token; /* NULL for page 0 */
};

struct fs_dirstream {
    struct fs *fs;
    fuse_ino_t ino;
    pthread_mutex_t lock; /* one readdir at a time */
    struct fs_dir_pager pg;
    uint64_t next_no;      /* the number of the page pg gives next */
    struct fs_dir page[2]; /* [0] the page before, [1] the page being read */
    uint64_t page_no[2];   /* their numbers, NO_PAGE: none */
    size_t page_bytes[2];  /* counted in fs->dir_bytes */
    unsigned cur;          /* the place: page[cur] ... */
    size_t pos;            /* ... its entry pos next */
    struct dir_mark marks[FS_DIR_MARKS];
    unsigned n_marks;
    uint64_t stride; /* a mark every stride pages */
    /* for known.c: the listing is kept as it arrives; it completes when
     * every page was kept, in order, from the first */
    bool in_order;
    uint64_t listed_ms; /* the first page's */
    /* The next page, asked by a thread of its own while the reader reads
     * this one (so the reader's time and the LIST's overlap), or by the
     * lookup that kept the first page (ahead.c) while it sent the marker's
     * HEAD.  Set and waited for under ds->lock; while it runs, it alone
     * uses its pager (pg, or its own: pg once waited for), and reads
     * page[1] (the page before it) as fs_dir_pager_next does. */
    struct fs_dir_fetch *ahead;
    /* on fs->dirstreams, most recently used first; protected by fs->lock */
    struct fs_dirstream *prev_ds, *next_ds;
};

static uint32_t name_hash(const char *name)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h & ((1u << OFF_HASH_BITS) - 1);
}

off_t fs_dirstream_off(uint64_t no, size_t idx, const char *name)
{
    return (off_t)((no + 1) << (OFF_IDX_BITS + OFF_HASH_BITS) |
                   (uint64_t)(idx + 1) << OFF_HASH_BITS | name_hash(name));
}

static size_t page_bytes(const struct fs_dir *d)
{
    size_t b = d->n * sizeof(*d->ents);
    for (size_t i = 0; i < d->n; i++)
        b += strlen(d->ents[i].name) + 1;
    return b;
}

size_t fs_listing_bytes(struct fs *fs)
{
    pthread_mutex_lock(&fs->lock);
    size_t b = fs->dir_bytes + fs_ahead_bytes_locked(fs);
    pthread_mutex_unlock(&fs->lock);
    return b;
}

/* Let go of page slot k (fs->lock held). */
static void drop_page_locked(struct fs_dirstream *ds, unsigned k)
{
    ds->fs->dir_bytes -= ds->page_bytes[k];
    fs_budget_give(ds->fs->budget, FS_USE_LIST, ds->page_bytes[k]);
    ds->page_bytes[k] = 0;
    ds->page_no[k] = NO_PAGE;
    fs_dir_free(&ds->page[k]);
}

static void drop_pages(struct fs_dirstream *ds)
{
    pthread_mutex_lock(&ds->fs->lock);
    drop_page_locked(ds, 0);
    drop_page_locked(ds, 1);
    pthread_mutex_unlock(&ds->fs->lock);
    ds->cur = 1;
    ds->pos = 0;
}

/* Past the bound, the pages of the streams used least recently go, then
 * the page before of this one (fs->lock held; ds->lock held by the
 * caller, the others' tried). */
static void evict_locked(struct fs *fs, struct fs_dirstream *self)
{
    size_t max = (size_t)(fs->cfg.max_memory / 16);
    struct fs_dirstream *ds = fs->dirstreams_lru;
    while (fs->dir_bytes > max && ds) {
        struct fs_dirstream *before = ds->prev_ds;
        if (ds != self && (ds->page_bytes[0] || ds->page_bytes[1]) &&
            pthread_mutex_trylock(&ds->lock) == 0) {
            if (ds->ahead) { /* its thread reads page[1] */
                pthread_mutex_unlock(&ds->lock);
                ds = before;
                continue;
            }
            drop_page_locked(ds, 0);
            drop_page_locked(ds, 1);
            ds->cur = 1;
            ds->pos = 0;
            pthread_mutex_unlock(&ds->lock);
        }
        ds = before;
    }
    if (fs->dir_bytes > max && self->cur == 1)
        drop_page_locked(self, 0);
}

/* Remember the token that lists page `no`, when it falls on a mark; the
 * marks thin out when full (page 0's stays). */
static void mark_page(struct fs_dirstream *ds, uint64_t no, const char *token)
{
    if (no % ds->stride || (ds->n_marks && ds->marks[ds->n_marks - 1].no >= no))
        return;
    if (ds->n_marks == FS_DIR_MARKS) {
        unsigned kept = 0;
        for (unsigned i = 0; i < ds->n_marks; i++) {
            if (ds->marks[i].no % (2 * ds->stride) == 0)
                ds->marks[kept++] = ds->marks[i];
            else
                free(ds->marks[i].token);
        }
        ds->n_marks = kept;
        ds->stride *= 2;
        if (no % ds->stride)
            return;
    }
    char *t = token ? strdup(token) : NULL;
    if (token && !t)
        return; /* only a seek back costs more */
    ds->marks[ds->n_marks++] = (struct dir_mark){.no = no, .token = t};
}

/* A page has arrived as page `no` (its request sent at asked_ms, when
 * names_gen was gen): it becomes the page being read, the one being read
 * before becomes the page before, and it is kept as what the directory
 * holds (known.c). */
static void page_arrived(struct fs_dirstream *ds, struct fs_dir *d, uint64_t no, uint64_t gen,
                         uint64_t asked_ms, const char *token)
{
    struct fs *fs = ds->fs;
    bool first = no == 0;
    if (first) {
        ds->in_order = true;
        ds->listed_ms = asked_ms;
    }
    if (d->exists) /* it is there now: a page slower than attr_ttl does not
                    * leave the directory's own entry stale for the reader */
        fs_inode_renew_dir(fs, ds->ino, util_now_ms());
    bool kept = fs_known_add_page(fs, ds->ino, ds->pg.path, gen, asked_ms, d, first, no, token);
    ds->in_order &= kept;
    if (ds->pg.ended && ds->in_order)
        fs_known_complete(fs, ds->ino, ds->pg.path, gen, ds->listed_ms, first);
    size_t b = page_bytes(d);
    pthread_mutex_lock(&fs->lock);
    drop_page_locked(ds, 0);
    ds->page[0] = ds->page[1];
    ds->page_no[0] = ds->page_no[1];
    ds->page_bytes[0] = ds->page_bytes[1];
    ds->page[1] = *d;
    ds->page_no[1] = no;
    ds->page_bytes[1] = b;
    fs->dir_bytes += b;
    /* a page being read is not refused: it counts, and evict_locked keeps
     * the handles' pages under their share */
    fs_budget_force(fs->budget, FS_USE_LIST, b);
    ds->cur = 1;
    ds->pos = 0;
    evict_locked(fs, ds);
    pthread_mutex_unlock(&fs->lock);
    memset(d, 0, sizeof(*d));
}

/* Ask for the page after the one just arrived, ahead (ds->lock held). */
static void ahead_start(struct fs_dirstream *ds)
{
    if (ds->pg.ended || ds->next_no > FS_DIR_MAX_PAGES || ds->ahead)
        return;
    mark_page(ds, ds->next_no, ds->pg.token);
    const struct fs_dir *prev = ds->page_no[1] == ds->next_no - 1 ? &ds->page[1] : NULL;
    if (fs_dir_fetch_start(&ds->pg, prev, &ds->ahead))
        ds->ahead = NULL; /* asked when the reader needs it */
}

/* Wait for the page asked ahead: 0 and *d (its gen, time and token too),
 * ENOENT when none was asked, or its errno (ds->lock held).  A fetch
 * with a pager of its own leaves it to the stream: the listing goes on
 * from there. */
static int ahead_wait(struct fs_dirstream *ds, struct fs_dir *d, uint64_t *gen, uint64_t *asked_ms,
                      char **token)
{
    struct fs_dir_fetch *f = ds->ahead;
    if (!f)
        return ENOENT;
    int rc = fs_dir_fetch_wait(f, d);
    *gen = f->gen;
    *asked_ms = f->asked_ms;
    *token = f->token;
    f->token = NULL;
    if (f->pg == &f->own) {
        fs_dir_pager_free(&ds->pg);
        ds->pg = f->own;
        memset(&f->own, 0, sizeof(f->own));
    }
    fs_dir_fetch_free(f);
    ds->ahead = NULL;
    return rc;
}

/* Before the pager goes elsewhere: the page asked ahead is not wanted. */
static void ahead_drop(struct fs_dirstream *ds)
{
    struct fs_dir d;
    uint64_t gen, asked_ms;
    char *token = NULL;
    if (ahead_wait(ds, &d, &gen, &asked_ms, &token) == 0)
        fs_dir_free(&d);
    free(token);
}

/* Fetch the next page of the listing (or take the one asked ahead), and
 * ask for the one after it ahead.  0, ENOENT (the listing has ended:
 * nothing was fetched), EOVERFLOW (more pages than offsets can tell), or
 * the errno of the LIST. */
static int fetch_next(struct fs_dirstream *ds)
{
    struct fs_dir d;
    uint64_t gen = 0, asked_ms = 0;
    char *token = NULL;
    int rc = ahead_wait(ds, &d, &gen, &asked_ms, &token);
    if (rc == ENOENT) { /* none asked ahead: now */
        if (ds->pg.ended)
            return ENOENT;
        if (ds->next_no > FS_DIR_MAX_PAGES)
            return EOVERFLOW;
        mark_page(ds, ds->next_no, ds->pg.token);
        gen = fs_known_gen(ds->fs);
        asked_ms = util_now_ms();
        if (ds->pg.token && !(token = strdup(ds->pg.token))) /* what asks for it */
            return ENOMEM;
        struct fs_dir *prev = ds->page_no[1] == ds->next_no - 1 ? &ds->page[1] : NULL;
        rc = fs_dir_pager_next(&ds->pg, ds->next_no ? prev : NULL, &d);
    }
    if (!rc && d.n > FS_DIR_PAGE_ENTRIES) {
        log_warn("listing of \"%s\": a page of %zu entries, more than a handle serves", ds->pg.path,
                 d.n);
        fs_dir_free(&d);
        rc = EOVERFLOW;
    }
    if (!rc)
        page_arrived(ds, &d, ds->next_no++, gen, asked_ms, token);
    free(token);
    if (!rc)
        ahead_start(ds);
    return rc;
}

/* The place in page slot k after the entry of index idx whose name hashes
 * to h (see the top of the file). */
static size_t place_in(const struct fs_dir *d, size_t idx, uint32_t h)
{
    if (idx < d->n && name_hash(d->ents[idx].name) == h)
        return idx + 1;
    size_t best = SIZE_MAX, dist = SIZE_MAX;
    for (size_t i = 0; i < d->n; i++) {
        size_t di = i > idx ? i - idx : idx - i;
        if (name_hash(d->ents[i].name) == h && di < dist) {
            best = i;
            dist = di;
        }
    }
    if (best != SIZE_MAX)
        return best + 1;
    return idx < d->n ? idx : d->n;
}

/* List page `no` again, from the last mark at or before it. */
static int relist_to(struct fs_dirstream *ds, uint64_t no)
{
    unsigned m = 0;
    for (unsigned i = 0; i < ds->n_marks && ds->marks[i].no <= no; i++)
        m = i;
    ahead_drop(ds);
    drop_pages(ds);
    int rc = fs_dir_pager_seek(&ds->pg, ds->marks[m].token);
    if (rc)
        return rc;
    ds->next_no = ds->marks[m].no;
    ds->in_order = false; /* known.c: the pages before it were not kept again */
    while (!rc && ds->page_no[1] != no)
        rc = fetch_next(ds);
    return rc;
}

int fs_dirstream_seek(struct fs_dirstream *ds, off_t off)
{
    uint64_t o = (uint64_t)off;
    uint64_t no = off <= 2 ? 0 : (o >> (OFF_IDX_BITS + OFF_HASH_BITS)) - 1;
    size_t idx = off <= 2 ? 0 : ((o >> OFF_HASH_BITS) & ((1u << OFF_IDX_BITS) - 1));
    uint32_t h = (uint32_t)(o & ((1u << OFF_HASH_BITS) - 1));
    if (off > 2 && (no > FS_DIR_MAX_PAGES || idx == 0))
        return EINVAL; /* no offset this handle gave */
    unsigned k = ds->page_no[1] == no ? 1 : ds->page_no[0] == no ? 0 : 2;
    if (k == 2) {
        int rc = relist_to(ds, no);
        if (rc == ENOENT) { /* the directory ends before that page now */
            ds->cur = 1;
            ds->pos = ds->page[1].n;
            return 0;
        }
        if (rc)
            return rc;
        k = 1;
    }
    ds->cur = k;
    ds->pos = off <= 2 ? 0 : place_in(&ds->page[k], idx - 1, h);
    return 0;
}

int fs_dirstream_next(struct fs_dirstream *ds, bool fetch, const struct fs_dirent **e, off_t *off)
{
    *e = NULL;
    while (ds->pos >= ds->page[ds->cur].n) {
        if (ds->cur == 0 && ds->page_no[1] != NO_PAGE) {
            ds->cur = 1;
            ds->pos = 0;
            continue;
        }
        if (!fetch)
            return 0;
        int rc = fetch_next(ds);
        if (rc == ENOENT)
            return 0;
        if (rc)
            return rc;
    }
    *e = &ds->page[ds->cur].ents[ds->pos];
    *off = fs_dirstream_off(ds->page_no[ds->cur], ds->pos, (*e)->name);
    ds->pos++;
    return 0;
}

void fs_dirstream_lock(struct fs_dirstream *ds)
{
    pthread_mutex_lock(&ds->lock);
    struct fs *fs = ds->fs;
    pthread_mutex_lock(&fs->lock);
    if (fs->dirstreams != ds) { /* most recently used: first */
        *(ds->prev_ds ? &ds->prev_ds->next_ds : &fs->dirstreams) = ds->next_ds;
        *(ds->next_ds ? &ds->next_ds->prev_ds : &fs->dirstreams_lru) = ds->prev_ds;
        ds->prev_ds = NULL;
        ds->next_ds = fs->dirstreams;
        *(ds->next_ds ? &ds->next_ds->prev_ds : &fs->dirstreams_lru) = ds;
        fs->dirstreams = ds;
    }
    pthread_mutex_unlock(&fs->lock);
}

void fs_dirstream_unlock(struct fs_dirstream *ds)
{
    pthread_mutex_unlock(&ds->lock);
}

/* The first page: a listing read ahead or kept by the lookup just
 * before (its continuation token goes on from it, and the lookup may have
 * asked for the page after it already: taken as the page asked ahead),
 * else asked now. */
static int first_page(struct fs_dirstream *ds)
{
    struct fs *fs = ds->fs;
    uint64_t gen = 0, asked_ms = 0;
    bool kept = false;
    struct fs_dir d;
    struct fs_dir_fetch *next = NULL;
    if (fs_ahead_take(fs, ds->pg.path, &d, &gen, &asked_ms, &kept, &next) != 0) {
        int rc = fetch_next(ds);
        if (!rc)
            fs_ahead_opened(fs, ds->pg.path, &ds->page[1], false);
        return rc;
    }
    mark_page(ds, 0, NULL);
    /* a page that is not the whole listing comes with its way on */
    int rc = d.whole ? 0 : fs_dir_pager_seek(&ds->pg, d.next_token);
    if (rc) {
        fs_dir_fetch_free(next); /* before the page it reads */
        fs_dir_free(&d);
        return rc;
    }
    ds->pg.ended = d.whole || !d.next_token;
    free(d.next_token);
    d.next_token = NULL;
    ds->next_no = 1;
    page_arrived(ds, &d, 0, gen, asked_ms, NULL); /* the entries next reads stay put */
    fs_ahead_opened(fs, ds->pg.path, &ds->page[1], !kept);
    if (next) {
        mark_page(ds, 1, next->token);
        ds->ahead = next;
    }
    ahead_start(ds);
    return 0;
}

int fs_dirstream_open(struct fs *fs, fuse_ino_t ino, const char *path, struct fs_dirstream **out)
{
    struct fs_dirstream *ds = calloc(1, sizeof(*ds));
    if (!ds)
        return ENOMEM;
    ds->fs = fs;
    ds->ino = ino;
    ds->stride = 1;
    ds->cur = 1;
    ds->page_no[0] = ds->page_no[1] = NO_PAGE;
    pthread_mutex_init(&ds->lock, NULL);
    int rc = fs_dir_pager_init(fs, path, &ds->pg);
    if (!rc) {
        pthread_mutex_lock(&fs->lock);
        ds->next_ds = fs->dirstreams;
        *(ds->next_ds ? &ds->next_ds->prev_ds : &fs->dirstreams_lru) = ds;
        fs->dirstreams = ds;
        pthread_mutex_unlock(&fs->lock);
        pthread_mutex_lock(&ds->lock);
        rc = first_page(ds);
        pthread_mutex_unlock(&ds->lock);
    } else {
        pthread_mutex_destroy(&ds->lock);
        free(ds);
        return rc;
    }
    if (rc) {
        fs_dirstream_free(ds);
        return rc;
    }
    *out = ds;
    return 0;
}

void fs_dirstream_free(struct fs_dirstream *ds)
{
    if (!ds)
        return;
    struct fs *fs = ds->fs;
    pthread_mutex_lock(&ds->lock); /* no eviction runs on it now */
    ahead_drop(ds);
    pthread_mutex_lock(&fs->lock);
    *(ds->prev_ds ? &ds->prev_ds->next_ds : &fs->dirstreams) = ds->next_ds;
    *(ds->next_ds ? &ds->next_ds->prev_ds : &fs->dirstreams_lru) = ds->prev_ds;
    drop_page_locked(ds, 0);
    drop_page_locked(ds, 1);
    pthread_mutex_unlock(&fs->lock);
    pthread_mutex_unlock(&ds->lock);
    for (unsigned i = 0; i < ds->n_marks; i++)
        free(ds->marks[i].token);
    fs_dir_pager_free(&ds->pg);
    pthread_mutex_destroy(&ds->lock);
    free(ds);
}
