/* known.c — what listings taught about a directory's names, and for how long.
 *
 * A listing of a directory answers more than readdir: for as long as its
 * names are trusted, it says which children exist (with the listing's size,
 * ETag and mtime) and, when it is complete, that every other name does not.
 * A lookup answered from it costs no request, which is most of what a
 * real network charges for `cat dir/f`, `rm dir/f` or `stat dir/missing`.
 *
 * A directory's knowledge is its inode's `known`: entries by name, each
 * trusted until its own time (attr_ttl after the listing, or what the inode
 * it came from had left), and `known_until_ms`, until which the names
 * present in the inode table or in `known` are all the names there are
 * (neg_ttl after a complete listing, or after the directory was made here).
 * The inode table always comes first: an entry only speaks for a name no
 * inode holds, so what this mount creates or writes wins at once.
 *
 * Keeping it true is three rules.  A name this mount removes (unlink,
 * rmdir, rename) leaves its entry and bumps fs->names_gen, so a listing
 * that was in flight meanwhile (and may still hold the name) is not
 * stored.  An inode leaving the table leaves what it knew as its parent's
 * entry (fs_known_keep_locked), which a listing begun before that does not
 * overwrite.  A directory rename forgets all knowledge
 * below the names it moved.
 *
 * A listing is kept page by page as it arrives (fs_known_add_page), each
 * page's names trusted for attr_ttl from that page's arrival, so that the
 * lookups of `ls -l` following a long listing find the names of its early
 * pages still trusted.  Only once every page of one listing was kept, in
 * order, does the directory know that the names it lacks are absent
 * (fs_known_complete); names of an older listing that the new one lacks
 * leave then.
 *
 * Memory: at most FS_KNOWN_MAX entries in the whole mount, on one list
 * from the oldest learnt to the newest; past the bound the oldest leaves
 * (it was learnt longest ago: in a long listing, a name `ls -l` has
 * already asked about), and its directory no longer knows that the names
 * it lacks are absent.
 *
 * The same changes spoil the listings read ahead (ahead.c) of the
 * directories they touch, so that opendir never shows a listing older than
 * this mount's own change. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fs_known_ent {
    char *name;
    struct fs_attr attr;
    uint64_t expire_ms;                 /* util_now_ms() after which it says nothing */
    uint64_t learnt_ms;                 /* when: a listing's start, or an inode's leaving */
    size_t pos;                         /* in `order`, or SIZE_MAX: not from the last listing */
    uint64_t serial;                    /* the listing of its directory that last held it */
    uint32_t page;                      /* its page's number in it, or UINT32_MAX */
    struct fs_known *k;                 /* its directory's */
    struct fs_known_ent *older, *newer; /* fs->known_oldest ... known_newest */
    UT_hash_handle hh;
};

struct fs_known {
    struct fs_known_ent *ents; /* by name */
    size_t n;
    /* The last listing's names in its order (S3's), NULL where one has
     * gone since: what a program reading the directory in order opens
     * next (fs_known_next_locked, for prefetch.c). */
    struct fs_known_ent **order;
    size_t n_order, cap_order;
    /* The listing was whole and one page: when it expires, asking it again
     * costs what one name's lookup would, and answers its siblings too. */
    bool relist;
    struct fs_inode *dir; /* whose knowledge this is */
    uint64_t serial;      /* of the listing being kept (fs_known_add_page) */
    /* the continuation token of each page of that listing (tokens[p] for
     * page p > 0; page 0 needs none), so that a name whose page expired is
     * asked again with its page, not alone */
    char **tokens;
    size_t n_tokens;
    bool lost; /* an entry of it left for the mount's bound */
};

static void ent_free(struct fs *fs, struct fs_known *k, struct fs_known_ent *e)
{
    if (e->pos < k->n_order)
        k->order[e->pos] = NULL;
    HASH_DEL(k->ents, e);
    k->n--;
    *(e->older ? &e->older->newer : &fs->known_oldest) = e->newer;
    *(e->newer ? &e->newer->older : &fs->known_newest) = e->older;
    fs->n_known--;
    free(e->name);
    free(e);
}

/* The oldest entry of the mount leaves, and with it its directory's
 * knowledge of absent names (fs->lock held). */
static void evict_oldest(struct fs *fs)
{
    struct fs_known_ent *e = fs->known_oldest;
    if (!e)
        return;
    struct fs_known *k = e->k;
    k->lost = true;
    k->relist = false;
    k->dir->known_until_ms = 0;
    ent_free(fs, k, e);
}

static void tokens_free(struct fs_known *k)
{
    for (size_t i = 0; i < k->n_tokens; i++)
        free(k->tokens[i]);
    free(k->tokens);
    k->tokens = NULL;
    k->n_tokens = 0;
}

/* Remember the token of page `no` (of the first FS_KNOWN_PAGES pages: a
 * name of a page past them is asked alone). */
static void token_set(struct fs_known *k, uint64_t no, const char *token)
{
    if (no == 0 || no >= FS_KNOWN_PAGES || !token)
        return;
    if (no >= k->n_tokens) {
        char **t = realloc(k->tokens, (no + 1) * sizeof(*t));
        if (!t)
            return;
        memset(t + k->n_tokens, 0, (no + 1 - k->n_tokens) * sizeof(*t));
        k->tokens = t;
        k->n_tokens = no + 1;
    }
    free(k->tokens[no]);
    k->tokens[no] = strdup(token);
}

static void known_clear(struct fs *fs, struct fs_inode *dir)
{
    struct fs_known *k = dir->known;
    if (!k)
        return;
    struct fs_known_ent *e, *tmp;
    HASH_ITER(hh, k->ents, e, tmp)
    ent_free(fs, k, e);
    free(k->order);
    tokens_free(k);
    free(k);
    dir->known = NULL;
}

void fs_known_free_locked(struct fs *fs, struct fs_inode *dir)
{
    known_clear(fs, dir);
}

/* Set or replace the entry of `name` (fs->lock held).  0 or ENOMEM. */
static int ent_set(struct fs *fs, struct fs_inode *dir, const char *name, const struct fs_attr *a,
                   uint64_t expire_ms, uint64_t learnt_ms)
{
    if (!dir->known && !(dir->known = calloc(1, sizeof(*dir->known))))
        return ENOMEM;
    struct fs_known *k = dir->known;
    k->dir = dir;
    struct fs_known_ent *e;
    HASH_FIND_STR(k->ents, name, e);
    if (!e) {
        while (fs->n_known >= FS_KNOWN_MAX && fs->known_oldest)
            evict_oldest(fs);
        if (!(e = calloc(1, sizeof(*e))) || !(e->name = strdup(name))) {
            free(e);
            return ENOMEM;
        }
        e->pos = SIZE_MAX;
        e->page = UINT32_MAX;
        e->k = k;
        HASH_ADD_KEYPTR(hh, k->ents, e->name, strlen(e->name), e);
        k->n++;
        fs->n_known++;
    } else { /* off the list, to go back on as the newest */
        *(e->older ? &e->older->newer : &fs->known_oldest) = e->newer;
        *(e->newer ? &e->newer->older : &fs->known_newest) = e->older;
    }
    e->older = fs->known_newest;
    e->newer = NULL;
    *(e->older ? &e->older->newer : &fs->known_oldest) = e;
    fs->known_newest = e;
    e->serial = k->serial;
    e->attr = *a;
    e->expire_ms = expire_ms;
    e->learnt_ms = learnt_ms;
    return 0;
}

/* The directory inode holding `path` and the child's name in it, or NULL
 * (fs->lock held). */
static struct fs_inode *parent_of(struct fs *fs, const char *path, const char **name)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    *name = slash ? slash + 1 : path;
    struct fs_inode *dir;
    HASH_FIND(hh_path, fs->by_path, path, n, dir);
    return dir && S_ISDIR(dir->attr.mode) ? dir : NULL;
}

/* Put entry e next in the order of the listing being kept (at most
 * FS_KNOWN_MAX of them: past that, the order is only a guess). */
static void order_append(struct fs_known *k, struct fs_known_ent *e)
{
    if (e->pos != SIZE_MAX || k->n_order >= FS_KNOWN_MAX)
        return;
    if (util_grow((void **)&k->order, &k->cap_order, k->n_order + 1, sizeof(*k->order)))
        return;
    e->pos = k->n_order;
    k->order[k->n_order++] = e;
}

/* A new listing of the directory begins: its order starts again
 * (fs->lock held). */
static void listing_begin(struct fs *fs, struct fs_inode *dir)
{
    if (!dir->known && !(dir->known = calloc(1, sizeof(*dir->known))))
        return;
    struct fs_known *k = dir->known;
    k->dir = dir;
    for (size_t i = 0; i < k->n_order; i++)
        if (k->order[i])
            k->order[i]->pos = SIZE_MAX;
    free(k->order);
    k->order = NULL;
    k->n_order = k->cap_order = 0;
    tokens_free(k);
    k->serial++;
    k->lost = false;
    (void)fs;
}

/* The directory `dir_path` if it is still inode dir_ino and no name was
 * removed here since `gen` (fs->lock held). */
static struct fs_inode *listed_dir(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path,
                                   uint64_t gen)
{
    struct fs_inode *dir;
    HASH_FIND(hh_path, fs->by_path, dir_path, strlen(dir_path), dir);
    /* A name removed here while the page was in flight may be in it;
     * and the path may be another inode's now (a rename). */
    return dir && dir->ino == dir_ino && S_ISDIR(dir->attr.mode) && gen == fs->names_gen ? dir
                                                                                         : NULL;
}

uint64_t fs_known_gen(struct fs *fs)
{
    pthread_mutex_lock(&fs->lock);
    uint64_t gen = fs->names_gen;
    pthread_mutex_unlock(&fs->lock);
    return gen;
}

bool fs_known_add_page(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path, uint64_t gen,
                       uint64_t listed_ms, const struct fs_dir *page, bool first, uint64_t page_no,
                       const char *token)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *dir = listed_dir(fs, dir_ino, dir_path, gen);
    if (dir && (first || !dir->known))
        listing_begin(fs, dir);
    bool kept = dir && dir->known;
    if (kept)
        token_set(dir->known, page_no, token);
    /* trusted from the page's arrival, as an inode is from its answer's:
     * from its request, a page slower than attr_ttl would teach nothing */
    uint64_t until = util_now_ms() + fs->attr_ttl_ms;
    for (size_t i = 0; kept && i < page->n; i++) {
        struct fs_known_ent *e;
        HASH_FIND_STR(dir->known->ents, page->ents[i].name, e);
        if (e && e->learnt_ms > listed_ms) {
            /* learnt since the page was asked (a file this mount wrote,
             * whose inode left the table): newer than the page */
            e->serial = dir->known->serial;
        } else if (ent_set(fs, dir, page->ents[i].name, &page->ents[i].attr, until, listed_ms)) {
            kept = false;
            break;
        }
        HASH_FIND_STR(dir->known->ents, page->ents[i].name, e);
        if (e)
            e->page = page_no < FS_KNOWN_PAGES ? (uint32_t)page_no : UINT32_MAX;
        if (e)
            order_append(dir->known, e);
    }
    if (dir && dir->known && !kept)
        dir->known->lost = true;
    pthread_mutex_unlock(&fs->lock);
    return kept;
}

void fs_known_complete(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path, uint64_t gen,
                       uint64_t listed_ms, bool one_page)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *dir = listed_dir(fs, dir_ino, dir_path, gen);
    struct fs_known *k = dir ? dir->known : NULL;
    if (k && !k->lost) {
        /* names of an older listing this one lacks are gone */
        struct fs_known_ent *e, *tmp;
        HASH_ITER(hh, k->ents, e, tmp)
        {
            if (e->serial != k->serial && e->learnt_ms <= listed_ms)
                ent_free(fs, k, e);
        }
        uint64_t absent_until = listed_ms + (uint64_t)(fs->cfg.neg_ttl * 1000);
        if (dir->known_until_ms < absent_until)
            dir->known_until_ms = absent_until;
        k->relist = one_page && k->n <= FS_KNOWN_PAGE;
    }
    pthread_mutex_unlock(&fs->lock);
}

void fs_known_store(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path, uint64_t gen,
                    uint64_t listed_ms, const struct fs_dir *d)
{
    if (fs_known_add_page(fs, dir_ino, dir_path, gen, listed_ms, d, true, 0, NULL))
        fs_known_complete(fs, dir_ino, dir_path, gen, listed_ms, true);
}

enum fs_known_answer fs_known_lookup_locked(struct fs *fs, const char *path, struct fs_attr *a,
                                            uint64_t *expire_ms)
{
    const char *name;
    struct fs_inode *dir = parent_of(fs, path, &name);
    if (!dir)
        return FS_KNOWN_NOTHING;
    uint64_t now = util_now_ms();
    struct fs_known_ent *e = NULL;
    if (dir->known)
        HASH_FIND_STR(dir->known->ents, name, e);
    if (e && now < e->expire_ms) {
        *a = e->attr;
        *expire_ms = e->expire_ms;
        return e->attr.untyped && fs->cfg.compat_dir ? FS_KNOWN_UNTYPED : FS_KNOWN_PRESENT;
    }
    /* an expired entry: the name was there, whether it still is is not
     * known; and gunzip=replace lists K.gz as K only, though K.gz opens */
    size_t len = strlen(name);
    bool unlisted =
        fs->cfg.gunzip == FS_GUNZIP_REPLACE && len > 3 && strcmp(name + len - 3, ".gz") == 0;
    if (!e && !unlisted && now < dir->known_until_ms)
        return FS_KNOWN_ABSENT;
    return FS_KNOWN_NOTHING;
}

/* The listing read ahead of directory `dir_path` (the `n` bytes of it), if
 * any, is never taken: a name in it changed here (fs->lock held). */
static void ahead_spoil(struct fs *fs, const char *dir_path, size_t n)
{
    struct fs_ahead_ent *ae;
    HASH_FIND(hh, fs->ahead_ents, dir_path, n, ae);
    if (ae)
        ae->spoiled = true;
}

/* ... and for the directory holding `path`. */
static void ahead_spoil_parent(struct fs *fs, const char *path)
{
    const char *slash = strrchr(path, '/');
    ahead_spoil(fs, path, slash ? (size_t)(slash - path) : 0);
}

void fs_known_changed_locked(struct fs *fs, const char *path)
{
    ahead_spoil_parent(fs, path);
}

char *fs_known_relist_locked(struct fs *fs, const char *path, fuse_ino_t *dir_ino,
                             struct fs_known_page *page)
{
    const char *name;
    struct fs_inode *dir = parent_of(fs, path, &name);
    struct fs_known *k = dir ? dir->known : NULL;
    if (!k)
        return NULL;
    memset(page, 0, sizeof(*page));
    page->whole = k->relist;
    if (!k->relist) { /* the page that held the name, when it is known */
        struct fs_known_ent *e;
        HASH_FIND_STR(k->ents, name, e);
        if (!e || e->page == UINT32_MAX ||
            (e->page && (e->page >= k->n_tokens || !k->tokens[e->page])))
            return NULL;
        page->no = e->page;
        if (e->page && !(page->token = strdup(k->tokens[e->page])))
            return NULL;
    }
    *dir_ino = dir->ino;
    char *p = strdup(dir->path);
    if (!p) {
        free(page->token);
        page->token = NULL;
    }
    return p;
}

void fs_known_forget_locked(struct fs *fs, const char *path)
{
    fs->names_gen++;
    ahead_spoil_parent(fs, path);
    const char *name;
    struct fs_inode *dir = parent_of(fs, path, &name);
    struct fs_known_ent *e = NULL;
    if (dir && dir->known)
        HASH_FIND_STR(dir->known->ents, name, e);
    if (e) {
        ent_free(fs, dir->known, e);
    }
}

void fs_known_forget_below_locked(struct fs *fs, const char *path)
{
    size_t n = strlen(path);
    for (struct fs_inode *in = fs->by_path; in; in = in->hh_path.next)
        if (in->known && (n == 0 || (strncmp(in->path, path, n) == 0 &&
                                     (in->path[n] == '\0' || in->path[n] == '/'))))
            known_clear(fs, in);
    for (struct fs_ahead_ent *ae = fs->ahead_ents; ae; ae = ae->hh.next)
        if (n == 0 ||
            (strncmp(ae->path, path, n) == 0 && (ae->path[n] == '\0' || ae->path[n] == '/')))
            ae->spoiled = true;
}

void fs_dir_known_extend_locked(struct fs *fs, const char *dir_path)
{
    struct fs_inode *dir;
    HASH_FIND(hh_path, fs->by_path, dir_path, strlen(dir_path), dir);
    ahead_spoil(fs, dir_path, strlen(dir_path));
    if (dir && dir->known_until_ms > util_now_ms())
        dir->known_until_ms = util_now_ms() + (uint64_t)(fs->cfg.neg_ttl * 1000);
}

void fs_known_keep_locked(struct fs *fs, const struct fs_inode *in)
{
    const char *name;
    struct fs_inode *dir = parent_of(fs, in->path, &name);
    if (!dir)
        return;
    /* Not yet stored, or written here: the bucket does not hold what the
     * inode says, and nothing else will tell the name exists. */
    if (in->local || in->wf || ent_set(fs, dir, name, &in->attr, in->attr_expire_ms, util_now_ms()))
        dir->known_until_ms = 0;
}

size_t fs_known_next_locked(struct fs *fs, const char *dir_path, const char *name, size_t max,
                            struct fs_known_next *out, bool *first)
{
    struct fs_inode *dir;
    HASH_FIND(hh_path, fs->by_path, dir_path, strlen(dir_path), dir);
    struct fs_known *k = dir && S_ISDIR(dir->attr.mode) ? dir->known : NULL;
    struct fs_known_ent *e = NULL;
    if (k)
        HASH_FIND_STR(k->ents, name, e);
    *first = false;
    if (!e || e->pos >= k->n_order)
        return 0;
    /* Expired entries count too: the order is only a guess of what comes
     * next, which a GET pinned to the entry's ETag checks. */
    bool before = false;
    for (size_t i = 0; i < e->pos && !before; i++)
        before = k->order[i] && S_ISREG(k->order[i]->attr.mode);
    *first = !before;
    size_t n = 0;
    for (size_t i = e->pos + 1; i < k->n_order && n < max; i++) {
        struct fs_known_ent *x = k->order[i];
        if (!x || !S_ISREG(x->attr.mode) || x->attr.untyped)
            continue; /* an empty key may be an old-style directory */
        out[n].name = x->name;
        out[n].attr = x->attr;
        n++;
    }
    return n;
}

void fs_known_trust_locked(struct fs *fs, const char *path, const char *etag, uint64_t until_ms)
{
    const char *name;
    struct fs_inode *dir = parent_of(fs, path, &name);
    struct fs_known_ent *e = NULL;
    if (dir && dir->known)
        HASH_FIND_STR(dir->known->ents, name, e);
    if (e && strcmp(e->attr.etag, etag) == 0)
        e->expire_ms = until_ms;
}
