/* inode.c — the inode table: numbers handed to the kernel, the paths they
 * stand for, their attributes and how long those are trusted, and the
 * open handles of the mount.
 *
 * What is learnt about a path (resolve.c, listings) is kept on its inode
 * for attr_ttl; the mount's own changes update it at once, and files
 * created or written here are the truth until uploaded, and a refresh
 * (fs_inode_update) leaves a file open for writing as it is. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino)
{
    struct fs_inode *in;
    HASH_FIND(hh, fs->by_ino, &ino, sizeof(ino), in);
    return in;
}

/* Whether the bucket's view may replace what the inode holds: not while it
 * is the mount's own unsaved work. */
bool fs_inode_local_truth(const struct fs_inode *in)
{
    return in->local || (in->wf && in->wf->dirty);
}

bool fs_inode_mine(const struct fs_inode *in)
{
    return in->local || in->wf;
}

bool fs_inode_trusted(const struct fs_inode *in)
{
    return fs_inode_mine(in) || util_now_ms() < in->attr_expire_ms;
}

/* A copy of the inode's path and attributes (NULL path: unknown inode). */
char *fs_inode_snapshot(struct fs *fs, fuse_ino_t ino, struct fs_attr *a, char **xattr, bool *fresh)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    char *path = in ? strdup(in->path) : NULL;
    if (in) {
        *a = in->attr;
        if (xattr)
            *xattr = in->xattr ? strdup(in->xattr) : NULL;
        if (fresh)
            *fresh = fs_inode_trusted(in);
    }
    pthread_mutex_unlock(&fs->lock);
    return path;
}

/* Whether an answer of S3 to a request sent when the inode's ETag was
 * `seen` may replace its attributes (fs->lock held).  Not while a write
 * state is attached, even one with nothing written yet: it builds on the
 * version it was attached at (base_etag, size), which is the version the
 * open file reads and the one it will replace; another version's size or
 * metadata on the inode would describe a file nobody has open here.  And
 * not when this mount stored a version since the request was sent (the
 * ETag is no longer `seen`: a truncate stored and done, a flush): that
 * version is newer than the answer. */
static bool answer_may_replace(const struct fs_inode *in, const char *seen)
{
    return !in->local && !in->wf && strcmp(in->attr.etag, seen) == 0;
}

void fs_inode_update(struct fs *fs, fuse_ino_t ino, const char *seen, const struct fs_attr *a,
                     char *xattr)
{
    fs_inode_update_at(fs, ino, seen, a, xattr, util_now_ms());
}

void fs_inode_update_at(struct fs *fs, fuse_ino_t ino, const char *seen, const struct fs_attr *a,
                        char *xattr, uint64_t at_ms)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (in && answer_may_replace(in, seen)) {
        if (strcmp(in->attr.etag, a->etag) != 0) {
            free(in->symlink);
            in->symlink = NULL;
        }
        in->attr = *a;
        free(in->xattr);
        in->xattr = xattr;
        xattr = NULL;
        if (ino != FUSE_ROOT_ID)
            in->attr_expire_ms = at_ms + fs->attr_ttl_ms;
    }
    pthread_mutex_unlock(&fs->lock);
    free(xattr);
}

/* A view's size learnt (same version only). */
void fs_inode_view_size_update(struct fs *fs, fuse_ino_t ino, const struct fs_attr *a)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (in && strcmp(in->attr.etag, a->etag) == 0 && !in->attr.size_exact) {
        in->attr.size = a->size;
        in->attr.size_exact = a->size_exact;
        in->attr.size_estimated = a->size_estimated;
    }
    pthread_mutex_unlock(&fs->lock);
}

void fs_entry_fill(struct fs *fs, struct fs_inode *in, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = in->ino;
    e->generation = 1;
    fs_attr_to_stat(&in->attr, in->ino, &e->attr);
    e->attr_timeout = fs->cfg.attr_ttl;
    e->entry_timeout = fs->cfg.attr_ttl;
    if (in->attr.gz && !in->attr.size_exact && !in->attr.size_estimated)
        e->attr_timeout = 0; /* a listed view's size: getattr estimates it */
    if (fs->cfg.multi_user && !fs_attr_verified(&in->attr))
        e->attr_timeout = 0; /* other users' permission checks: getattr reads the metadata */
}

void fs_inode_expire(struct fs *fs, fuse_ino_t ino)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (in) {
        in->attr_expire_ms = 0;
        if (in->linked) /* nor may its parent's listing answer for it */
            fs_known_forget_locked(fs, in->path);
    }
    pthread_mutex_unlock(&fs->lock);
}

void fs_inode_renew_dir(struct fs *fs, fuse_ino_t ino, uint64_t seen_ms)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    uint64_t until = seen_ms + fs->attr_ttl_ms;
    if (in && in->ino != FUSE_ROOT_ID && S_ISDIR(in->attr.mode) && in->attr_expire_ms < until)
        in->attr_expire_ms = until;
    pthread_mutex_unlock(&fs->lock);
}

struct fs_inode *fs_inode_publish(struct fs *fs, const char *path, const struct fs_attr *a,
                                  const char *xattr, bool from_listing, bool count_lookup,
                                  bool locked, struct fuse_entry_param *e)
{
    if (!locked)
        pthread_mutex_lock(&fs->lock);
    struct fs_inode *in;
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
    /* A listing cannot tell a symlink or the s3fs metadata: an inode that
     * knows more about the same object version keeps what it knows. */
    bool keep =
        in && (fs_inode_mine(in) ||
               (from_listing && (in->attr.has_meta || in->attr.gz) &&
                (S_ISDIR(a->mode) ? S_ISDIR(in->attr.mode) : strcmp(in->attr.etag, a->etag) == 0)));
    if (in && !keep && (in->attr.mode & S_IFMT) != (a->mode & S_IFMT)) {
        fs_inode_unlink_locked(fs, in); /* a new thing under the old name */
        in = NULL;
    }
    if (!in) {
        in = calloc(1, sizeof(*in));
        if (!in || !(in->path = strdup(path))) {
            free(in);
            in = NULL;
            goto out;
        }
        in->ino = fs->next_ino++;
        in->linked = true;
        HASH_ADD(hh, fs->by_ino, ino, sizeof(in->ino), in);
        HASH_ADD_KEYPTR(hh_path, fs->by_path, in->path, strlen(in->path), in);
    }
    if (!keep) {
        if (strcmp(in->attr.etag, a->etag) != 0) {
            free(in->symlink);
            in->symlink = NULL;
        }
        in->attr = *a;
        if (!from_listing) {
            free(in->xattr);
            in->xattr = xattr ? strdup(xattr) : NULL;
        }
    }
    if (!fs_inode_mine(in))
        in->attr_expire_ms = util_now_ms() + fs->attr_ttl_ms;
    if (count_lookup)
        in->nlookup++;
    if (e)
        fs_entry_fill(fs, in, e);
out:
    if (!locked)
        pthread_mutex_unlock(&fs->lock);
    return in;
}

void fs_inode_unlink_locked(struct fs *fs, struct fs_inode *in)
{
    if (in->linked) {
        HASH_DELETE(hh_path, fs->by_path, in);
        in->linked = false;
        fs_known_forget_locked(fs, in->path);
    }
}

static void inode_maybe_free(struct fs *fs, struct fs_inode *in)
{
    if (in->nlookup || in->opens || in->ino == FUSE_ROOT_ID)
        return;
    if (in->linked) {
        /* a child leaving the table: what it knew stays with its directory */
        fs_known_keep_locked(fs, in);
        HASH_DELETE(hh_path, fs->by_path, in);
        in->linked = false;
    }
    fs_known_free_locked(fs, in);
    HASH_DELETE(hh, fs->by_ino, in);
    if (in->local)
        fs->n_local--;
    free(in->path);
    free(in->symlink);
    free(in->xattr);
    free(in);
}

void fs_inode_forget_locked(struct fs *fs, struct fs_inode *in, uint64_t n)
{
    in->nlookup = n > in->nlookup ? 0 : in->nlookup - n;
    inode_maybe_free(fs, in);
}

void fs_inode_close_locked(struct fs *fs, struct fs_inode *in)
{
    in->opens--;
    inode_maybe_free(fs, in);
}

void fs_open_track(struct fs *fs, struct fs_open *o, void (*free_fn)(struct fs_open *))
{
    o->free_fn = free_fn;
    pthread_mutex_lock(&fs->lock);
    o->next = fs->handles.next;
    o->prev = &fs->handles;
    o->next->prev = o;
    fs->handles.next = o;
    pthread_mutex_unlock(&fs->lock);
}

void fs_open_untrack(struct fs *fs, struct fs_open *o)
{
    pthread_mutex_lock(&fs->lock);
    o->prev->next = o->next;
    o->next->prev = o->prev;
    pthread_mutex_unlock(&fs->lock);
}
