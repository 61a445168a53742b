/* resolve.c — turning S3 objects into attributes: resolution and refresh.
 *
 * A path is resolved against S3 in at most two requests: the first page
 * of the listing of "path/" says whether a directory of that name exists
 * (implicitly, by keys under it, or by a "path/" marker, whose metadata a
 * HEAD then reads), and only when there is none does a HEAD of "path" look
 * for an object.  So a directory always wins over an object of the same
 * name.  The page costs what a one-key listing costs, and when it holds
 * the whole directory its names answer the lookups that follow (known.c).  What is learnt
 * is kept on the inode for attr_ttl; the mount's own changes update it at
 * once; files created or written here are the truth until uploaded, and
 * a refresh (fs_inode_refresh) leaves a file open for writing as it is. */
#include "fs/fs_private.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static char *dup_meta(const struct s3_object_info *info, const char *name)
{
    const char *v = fs_meta_get(info, name);
    return v ? strdup(v) : NULL;
}

/* A directory marker "path/" holds the directory's metadata: one HEAD. */
static void resolve_marker(struct fs *fs, const char *path, struct fs_attr *a, char **xattr)
{
    char *key = fs_key(fs, path, true);
    struct s3_object_info info = {0};
    if (key && s3_head_object(fs->s3, key, &info, NULL) == 0) {
        fs_attr_from_head(&fs->cfg, &info, true, a);
        if (xattr)
            *xattr = dup_meta(&info, "xattr");
    }
    a->marker = true;
    s3_object_info_clear(&info);
    free(key);
}

/* Is there a directory called `path`?  0 (and *a), ENOENT, or an errno.
 * The question is the first page of its listing: a page costs what a
 * one-key listing costs, and its names then answer the lookups that
 * follow (kids, may be NULL: a lookup's, kept for the opendir that usually
 * follows).  When the page shows a marker and more pages, a lookup's
 * second page is asked beside the marker's HEAD (fs_ahead_begin): the
 * opendir then finds it on its way.  `page` (may be NULL; not with kids)
 * receives the first page as kids does, with nothing asked beside it. */
static int resolve_dir(struct fs *fs, const char *path, struct fs_attr *a, char **xattr,
                       struct fs_dir *kids, struct fs_dir *page)
{
    uint64_t gen = fs_known_gen(fs), listed_ms = util_now_ms();
    struct fs_dir d;
    int rc = fs_dir_list(fs, path, 1, &d);
    if (rc == 0 && !d.exists)
        rc = ENOENT;
    if (rc == 0) {
        fs_attr_from_listing(&fs->cfg, true, 0, d.first_mtime, NULL, a);
        a->headed = true; /* all there is to know, but for a marker's metadata */
        if (d.marker && kids)
            fs_ahead_begin(fs, path, &d, gen, listed_ms);
        if (d.marker)
            resolve_marker(fs, path, a, xattr);
    }
    if (!kids)
        kids = page;
    if (rc == 0 && kids)
        *kids = d;
    else if (rc == 0)
        fs_dir_free(&d);
    return rc;
}

/* A gzip object shown decompressed: read-only, sized by gzview.c. */
static void make_view(struct fs *fs, const char *raw_path, bool suffix, struct fs_attr *a)
{
    a->gz = true;
    a->gz_suffix = suffix;
    a->comp_size = a->size;
    a->mode &= (mode_t)~0222;
    fs_gz_size(fs, raw_path, a);
}

static int resolve_object(struct fs *fs, const char *path, struct fs_attr *a, char **xattr)
{
    char *key = fs_key(fs, path, false);
    if (!key)
        return ENOMEM;
    struct s3_object_info info = {0};
    int rc = s3_head_object(fs->s3, key, &info, NULL);
    if (rc == 0) {
        bool old_dir = fs_meta_old_dir(&info);
        fs_attr_from_head(&fs->cfg, &info, old_dir, a);
        a->marker = false;
        a->old_dir = old_dir;
        if (xattr)
            *xattr = dup_meta(&info, "xattr");
    }
    bool gz = rc == 0 && fs->cfg.gunzip != FS_GUNZIP_OFF && S_ISREG(a->mode) &&
              info.content_encoding && strcasecmp(info.content_encoding, "gzip") == 0;
    s3_object_info_clear(&info);
    free(key);
    if (gz)
        make_view(fs, path, false, a);
    return rc;
}

int fs_resolve_key(struct fs *fs, const char *path, struct fs_attr *a, char **xattr)
{
    if (xattr)
        *xattr = NULL;
    return resolve_object(fs, path, a, xattr);
}

int fs_resolve_view(struct fs *fs, const char *path, struct fs_attr *a)
{
    size_t n = strlen(path);
    char *raw = fs_view_raw_path(path, true);
    if (!raw)
        return ENOMEM;
    bool too_long = strlen(fs->key_prefix) + n + 3 > FS_MAX_KEY; /* raw's key */
    int rc = too_long ? ENOENT : resolve_object(fs, raw, a, NULL);
    if (!rc && !S_ISREG(a->mode))
        rc = ENOENT;
    if (!rc && !a->gz)
        make_view(fs, raw, true, a);
    else if (!rc)
        a->gz_suffix = true;
    free(raw);
    return rc;
}

/* The HEAD of an object sent beside the listing of its name as a
 * directory, on a thread of its own, so that both take one round trip. */
struct side_head {
    struct fs *fs;
    const char *path;
    struct fs_attr a;
    char *xattr;
    int rc;
    pthread_t thread;
};

static void *side_head_run(void *arg)
{
    struct side_head *h = arg;
    h->rc = resolve_object(h->fs, h->path, &h->a, &h->xattr);
    return NULL;
}

/* Whether the name looks like a file's: an extension ("data.csv",
 * "part-0001.json.gz").  Such a name is an object far more often than a
 * directory, so its HEAD goes out with the listing instead of after it; a
 * directory of such a name costs a HEAD that finds nothing. */
static bool looks_like_file(const char *path)
{
    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    const char *dot = strrchr(name, '.');
    return dot && dot > name && dot[1];
}

int fs_resolve(struct fs *fs, const char *path, struct fs_attr *a, char **xattr,
               struct fs_dir *kids)
{
    if (xattr)
        *xattr = NULL;
    if (kids)
        memset(kids, 0, sizeof(*kids));
    size_t len = strlen(fs->key_prefix) + strlen(path);
    if (len > FS_MAX_KEY)
        return ENAMETOOLONG;
    /* a key of the full 1,024 bytes has no room for "/...": only a file */
    if (len == FS_MAX_KEY)
        return resolve_object(fs, path, a, xattr);
    struct side_head h = {.fs = fs, .path = path};
    bool side = looks_like_file(path) && util_thread_start(&h.thread, side_head_run, &h) == 0;
    int rc = resolve_dir(fs, path, a, xattr, kids, NULL);
    if (side)
        pthread_join(h.thread, NULL);
    if (rc == ENOENT && side) {
        rc = h.rc;
        *a = h.a;
        if (xattr)
            *xattr = h.xattr;
        else
            free(h.xattr);
    } else if (rc == ENOENT) {
        rc = resolve_object(fs, path, a, xattr);
    } else if (side) {
        free(h.xattr); /* a directory wins over an object of the same name */
    }
    return rc;
}

/* A directory's refresh: its first page, as resolve_dir asks it, held for
 * the opendir that may follow as a lookup's page is (fs_ahead_keep: same
 * trust, same bound), so that it is not asked twice.  A shell sitting in
 * the directory runs `ls -l .` again after attr_ttl: the kernel asks no
 * lookup of a name then, but the directory's attributes (getattr), and
 * opens it next.  The page after it is not asked beside a marker's HEAD
 * here (fs_ahead_begin), as a lookup's is: a stat of an open directory or
 * of the current one is seldom followed by a listing. */
static int refresh_dir(struct fs *fs, const char *path, struct fs_attr *a, char **xattr)
{
    uint64_t gen = fs_known_gen(fs), listed_ms = util_now_ms();
    struct fs_dir d;
    int rc = resolve_dir(fs, path, a, xattr, NULL, &d);
    if (rc == 0) {
        fs_ahead_keep(fs, path, &d, gen, listed_ms); /* takes d when it holds it */
        fs_dir_free(&d);
    }
    return rc;
}

int fs_refresh(struct fs *fs, const char *path, const struct fs_attr *seen, struct fs_attr *a,
               char **xattr)
{
    mode_t type = seen->mode & S_IFMT;
    if (xattr)
        *xattr = NULL;
    if (seen->gz_suffix)
        return fs_resolve_view(fs, path, a);
    int rc = S_ISDIR(type) ? refresh_dir(fs, path, a, xattr) : resolve_object(fs, path, a, xattr);
    if (rc == ENOENT && seen->old_dir) /* still the old-style object? */
        rc = resolve_object(fs, path, a, xattr);
    if (rc == 0 && (a->mode & S_IFMT) != (type & S_IFMT)) {
        if (xattr) {
            free(*xattr);
            *xattr = NULL;
        }
        rc = ENOENT;
    }
    return rc;
}

bool fs_inode_stale_locked(struct fs *fs, const struct fs_inode *in, bool need_head)
{
    /* only listed so far: its Content-Encoding is not known */
    bool unheaded = !in->attr.headed && !in->attr.gz && S_ISREG(in->attr.mode) &&
                    fs->cfg.gunzip != FS_GUNZIP_OFF;
    /* with allow_other, a listing's default mode and owner are never
     * handed to the kernel's permission checks */
    bool defaults = fs->cfg.multi_user && !fs_attr_verified(&in->attr);
    /* Close-to-open: after the TTL, the bucket's current version; but a
     * name unlinked while open keeps what it was (its path may be another
     * file's by now). */
    return !fs_inode_mine(in) && in->linked &&
           (util_now_ms() >= in->attr_expire_ms || (need_head && unheaded) || defaults);
}

void fs_attr_from_encoding(struct fs *fs, const char *path, bool gzip, struct fs_attr *a)
{
    if (gzip && fs->cfg.gunzip != FS_GUNZIP_OFF && S_ISREG(a->mode))
        make_view(fs, path, false, a);
}

/* The refresh of a regular file from what a GET of its version, open
 * here, was told within attr_ttl: kept as a HEAD's answer is (the
 * Content-Encoding is known from it).  So a program reading a file it has
 * open (the kernel asks for its attributes again every attr_ttl while it
 * reads) costs no HEAD while its GETs come back.  Whether it was kept. */
static bool refresh_from_told(struct fs *fs, fuse_ino_t ino, const char *path,
                              const struct fs_attr *seen)
{
    if (!S_ISREG(seen->mode) || seen->gz || !*seen->etag)
        return false;
    uint64_t now = util_now_ms();
    uint64_t since = now > fs->attr_ttl_ms ? now - fs->attr_ttl_ms : 0;
    char *key = fs_key(fs, path, false);
    struct fs_attr a;
    bool gzip = false;
    char *xattr = NULL;
    uint64_t at = 0;
    bool told = key && fs_readpool_told(fs, key, seen->etag, since, &a, &gzip, &xattr, &at);
    free(key);
    if (!told)
        return false;
    if (!S_ISREG(a.mode)) { /* metadata made it something else: as a HEAD finds */
        free(xattr);
        return false;
    }
    fs_attr_from_encoding(fs, path, gzip, &a);
    fs_inode_update_at(fs, ino, seen->etag, &a, xattr, at); /* takes xattr */
    return true;
}

int fs_inode_refresh(struct fs *fs, fuse_ino_t ino, bool need_head, bool *asked)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (!in) {
        pthread_mutex_unlock(&fs->lock);
        return ENOENT;
    }
    bool stale = fs_inode_stale_locked(fs, in, need_head);
    char *path = stale ? strdup(in->path) : NULL;
    struct fs_attr seen = in->attr;
    pthread_mutex_unlock(&fs->lock);
    if (asked)
        *asked = stale;
    if (!stale)
        return 0;
    if (path && refresh_from_told(fs, ino, path, &seen)) {
        free(path);
        return 0;
    }
    struct fs_attr a;
    char *xattr = NULL;
    int rc = path ? fs_refresh(fs, path, &seen, &a, &xattr) : ENOMEM;
    if (!rc)
        fs_inode_update(fs, ino, seen.etag, &a, xattr); /* takes xattr */
    else
        free(xattr);
    free(path);
    return rc;
}
