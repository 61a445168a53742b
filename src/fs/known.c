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
 * below the names it moved.  Memory: at most FS_KNOWN_MAX entries in the
 * whole mount; a listing that would pass it is not kept (readdir works as
 * before, lookups ask S3).
 *
 * The same changes spoil the listings read ahead (ahead.c) of the
 * directories they touch, so that opendir never shows a listing older than
 * this mount's own change. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct known_ent {
    char *name;
    struct fs_attr attr;
    uint64_t expire_ms; /* util_now_ms() after which it says nothing */
    uint64_t learnt_ms; /* when: a listing's start, or an inode's leaving */
    size_t pos;         /* in `order`, or SIZE_MAX: not from the last listing */
    UT_hash_handle hh;
};

struct fs_known {
    struct known_ent *ents; /* by name */
    size_t n;
    /* The last listing's names in its order (S3's), NULL where one has
     * gone since: what a program reading the directory in order opens
     * next (fs_known_next_locked, for prefetch.c). */
    struct known_ent **order;
    size_t n_order;
    /* The listing was whole and one page: when it expires, asking it again
     * costs what one name's lookup would, and answers its siblings too. */
    bool relist;
};

static void ent_free(struct fs_known *k, struct known_ent *e)
{
    if (e->pos < k->n_order)
        k->order[e->pos] = NULL;
    HASH_DEL(k->ents, e);
    k->n--;
    free(e->name);
    free(e);
}

static void known_clear(struct fs *fs, struct fs_inode *dir)
{
    struct fs_known *k = dir->known;
    if (!k)
        return;
    struct known_ent *e, *tmp;
    HASH_ITER(hh, k->ents, e, tmp)
    {
        ent_free(k, e);
        fs->n_known--;
    }
    free(k->order);
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
    struct known_ent *e;
    HASH_FIND_STR(k->ents, name, e);
    if (!e) {
        if (fs->n_known >= FS_KNOWN_MAX)
            return ENOMEM;
        if (!(e = calloc(1, sizeof(*e))) || !(e->name = strdup(name))) {
            free(e);
            return ENOMEM;
        }
        e->pos = SIZE_MAX;
        HASH_ADD_KEYPTR(hh, k->ents, e->name, strlen(e->name), e);
        k->n++;
        fs->n_known++;
    }
    e->attr = *a;
    e->expire_ms = expire_ms;
    e->learnt_ms = learnt_ms;
    return 0;
}

/* Keep the listing's order of the names just set from `d` (all of them
 * in k).  0 or ENOMEM. */
static int keep_order(struct fs_known *k, const struct fs_dir *d)
{
    if (!k || !d->n)
        return 0;
    if (!(k->order = calloc(d->n, sizeof(*k->order))))
        return ENOMEM;
    for (size_t i = 0; i < d->n; i++) {
        struct known_ent *e;
        HASH_FIND_STR(k->ents, d->ents[i].name, e);
        if (e && e->pos == SIZE_MAX) {
            e->pos = k->n_order;
            k->order[k->n_order++] = e;
        }
    }
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

/* Copies of the directory's entries learnt after `since` (fs->lock held):
 * *out (caller frees each name and the array), *n.  0 or ENOMEM. */
static int newer_than(const struct fs_inode *dir, uint64_t since, struct known_ent **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!dir->known)
        return 0;
    struct known_ent *e, *tmp;
    size_t cap = 0;
    HASH_ITER(hh, dir->known->ents, e, tmp)
    {
        if (e->learnt_ms <= since)
            continue;
        if (util_grow((void **)out, &cap, *n + 1, sizeof(**out)))
            return ENOMEM;
        (*out)[*n] = *e;
        if (!((*out)[*n].name = strdup(e->name)))
            return ENOMEM;
        (*n)++;
    }
    return 0;
}

/* The directory's names become the listing's (fs->lock held).  What an
 * inode that left the table since the listing began knew is newer than
 * the listing (a file this mount wrote meanwhile), and stays. */
static void replace_names(struct fs *fs, struct fs_inode *dir, const struct fs_dir *d,
                          uint64_t listed_ms)
{
    struct known_ent *newer;
    size_t n_newer;
    int rc = newer_than(dir, listed_ms, &newer, &n_newer);
    known_clear(fs, dir);
    uint64_t names_until = listed_ms + fs->attr_ttl_ms;
    for (size_t i = 0; i < d->n && !rc; i++)
        rc = ent_set(fs, dir, d->ents[i].name, &d->ents[i].attr, names_until, listed_ms);
    if (!rc)
        rc = keep_order(dir->known, d);
    for (size_t i = 0; i < n_newer && !rc; i++)
        rc =
            ent_set(fs, dir, newer[i].name, &newer[i].attr, newer[i].expire_ms, newer[i].learnt_ms);
    for (size_t i = 0; i < n_newer; i++)
        free(newer[i].name);
    free(newer);
    uint64_t absent_until = listed_ms + (uint64_t)(fs->cfg.neg_ttl * 1000);
    if (rc)
        known_clear(fs, dir); /* partial knowledge would claim absences */
    else if (dir->known_until_ms < absent_until)
        dir->known_until_ms = absent_until;
    if (!rc && dir->known)
        dir->known->relist = d->n <= FS_KNOWN_PAGE;
}

uint64_t fs_known_gen(struct fs *fs)
{
    pthread_mutex_lock(&fs->lock);
    uint64_t gen = fs->names_gen;
    pthread_mutex_unlock(&fs->lock);
    return gen;
}

void fs_known_store(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path, uint64_t gen,
                    uint64_t listed_ms, const struct fs_dir *d)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *dir;
    HASH_FIND(hh_path, fs->by_path, dir_path, strlen(dir_path), dir);
    /* A name removed here while the listing was in flight may be in it;
     * and the path may be another inode's now (a rename). */
    bool usable = dir && dir->ino == dir_ino && S_ISDIR(dir->attr.mode) && gen == fs->names_gen &&
                  fs->n_known - (dir->known ? dir->known->n : 0) + d->n <= FS_KNOWN_MAX;
    if (usable)
        replace_names(fs, dir, d, listed_ms);
    pthread_mutex_unlock(&fs->lock);
}

enum fs_known_answer fs_known_lookup_locked(struct fs *fs, const char *path, struct fs_attr *a,
                                            uint64_t *expire_ms)
{
    const char *name;
    struct fs_inode *dir = parent_of(fs, path, &name);
    if (!dir)
        return FS_KNOWN_NOTHING;
    uint64_t now = util_now_ms();
    struct known_ent *e = NULL;
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

char *fs_known_relist_locked(struct fs *fs, const char *path, fuse_ino_t *dir_ino)
{
    const char *name;
    struct fs_inode *dir = parent_of(fs, path, &name);
    if (!dir || !dir->known || !dir->known->relist)
        return NULL;
    *dir_ino = dir->ino;
    return strdup(dir->path);
}

void fs_known_forget_locked(struct fs *fs, const char *path)
{
    fs->names_gen++;
    ahead_spoil_parent(fs, path);
    const char *name;
    struct fs_inode *dir = parent_of(fs, path, &name);
    struct known_ent *e = NULL;
    if (dir && dir->known)
        HASH_FIND_STR(dir->known->ents, name, e);
    if (e) {
        ent_free(dir->known, e);
        fs->n_known--;
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
    struct known_ent *e = NULL;
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
        struct known_ent *x = k->order[i];
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
    struct known_ent *e = NULL;
    if (dir && dir->known)
        HASH_FIND_STR(dir->known->ents, name, e);
    if (e && strcmp(e->attr.etag, etag) == 0)
        e->expire_ms = until_ms;
}
