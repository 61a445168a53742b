/* op_dir.c — the FUSE operations on directory handles: opendir, readdir
 * (plus) and releasedir.
 *
 * A handle reads the directory's listing as a stream of pages
 * (dirstream.c): opendir asks for the first page (or takes the one read
 * ahead, or kept by the lookup just before: ahead.c), and readdir hands
 * out entries as pages arrive (the next page asked for one ahead), so the
 * first entries reach the program before the last page is fetched.  Each page is also kept as what
 * the directory holds (known.c), so the lookups that follow it (`ls -l`, `cat` of its files, `rm
 * dir/f`) ask S3 nothing.  opendir tells ahead.c what it opened, which is how walks down a tree are
 * seen. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct dir_handle {
    struct fs_open open; /* first: the handle is freed through it */
    char *path;
    struct fs_dirstream *ds;
};

static void dir_handle_free(struct fs_open *o)
{
    struct dir_handle *dh = (struct dir_handle *)o;
    fs_dirstream_free(dh->ds);
    free(dh->path);
    free(dh);
}

void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct dir_handle *dh = calloc(1, sizeof(*dh));
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (dh && in)
        dh->path = strdup(in->path);
    pthread_mutex_unlock(&fs->lock);
    int rc = !in ? ENOENT : !dh || !dh->path ? ENOMEM : 0;
    if (!rc)
        rc = fs_dirstream_open(fs, ino, dh->path, &dh->ds);
    if (rc) {
        if (dh)
            free(dh->path);
        free(dh);
        fs_reply_err(req, rc);
        return;
    }
    fs_open_track(fs, &dh->open, dir_handle_free);
    fi->fh = (uintptr_t)dh;
    fi->cache_readdir = 0;
    fuse_reply_open(req, fi);
}

/* Whether a listing's entry `la` cannot say what it is: an empty key may
 * be an old-style directory object.  With compat_dir its lookup asks; and
 * an inode (`in`, or NULL) of another type that a HEAD found is not
 * overwritten with the listing's guess (fs->lock held). */
static bool type_unknown(const struct fs *fs, const struct fs_attr *la, const struct fs_inode *in)
{
    return la->untyped && (fs->cfg.compat_dir || (in && !S_ISREG(in->attr.mode)));
}

/* Add one entry of the listing to the reply at buf+*used (fs->lock
 * held): false when it does not fit, or on ENOMEM. */
static bool add_entry(fuse_req_t req, struct fs *fs, const char *dir, const struct fs_dirent *de,
                      off_t next, bool plus, char *buf, size_t size, size_t *used)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.attr.st_mode = de->attr.mode;
    size_t need = plus ? fuse_add_direntry_plus(req, NULL, 0, de->name, NULL, 0)
                       : fuse_add_direntry(req, NULL, 0, de->name, NULL, 0);
    if (*used + need > size)
        return false;
    char *path = fs_child_path(dir, de->name);
    if (!path)
        return false;
    struct fs_inode *in = NULL;
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
    /* no inode is made for a plain entry: a number of its own, never an
     * inode's, from its offset */
    fuse_ino_t anon = (1ULL << 63) | ((uint64_t)next & ((1ULL << 62) - 1));
    if (type_unknown(fs, &de->attr, in)) {
        /* A name without an entry (ino 0), of the type an inode knows
         * or else DT_UNKNOWN: the kernel looks it up when it is used. */
        e.attr.st_ino = in ? in->ino : anon;
        e.attr.st_mode = in ? in->attr.mode & S_IFMT : 0;
    } else if (plus) {
        /* readdirplus hands the kernel an entry: that counts as a lookup. */
        in = fs_inode_publish(fs, path, &de->attr, NULL, true, true, true, &e);
        if (!in) {
            free(path);
            return false;
        }
    } else {
        e.attr.st_ino = in ? in->ino : anon;
    }
    free(path);
    if (plus)
        *used += fuse_add_direntry_plus(req, buf + *used, size - *used, de->name, &e, next);
    else
        *used += fuse_add_direntry(req, buf + *used, size - *used, de->name, &e.attr, next);
    return true;
}

/* "." and ".." at offsets 0 and 1 (they lead to 1 and 2). */
static void add_dots(fuse_req_t req, fuse_ino_t ino, off_t off, bool plus, char *buf, size_t size,
                     size_t *used)
{
    for (off_t i = off; i < 2; i++) {
        const char *name = i == 0 ? "." : "..";
        struct fuse_entry_param e;
        memset(&e, 0, sizeof(e));
        e.attr.st_ino = ino;
        e.attr.st_mode = S_IFDIR;
        size_t need = plus ? fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0)
                           : fuse_add_direntry(req, NULL, 0, name, NULL, 0);
        if (*used + need > size)
            return;
        if (plus)
            *used += fuse_add_direntry_plus(req, buf + *used, size - *used, name, &e, i + 1);
        else
            *used += fuse_add_direntry(req, buf + *used, size - *used, name, &e.attr, i + 1);
    }
}

void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info *fi, bool plus)
{
    struct fs *fs = fs_of(req);
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    char *buf = malloc(size);
    if (!buf) {
        fs_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    add_dots(req, ino, off, plus, buf, size, &used);
    fs_dirstream_lock(dh->ds);
    int rc = fs_dirstream_seek(dh->ds, off);
    while (!rc) {
        /* a page is waited for only when nothing is in the reply yet:
         * what is held goes to the program first */
        const struct fs_dirent *de;
        off_t next;
        rc = fs_dirstream_next(dh->ds, used == 0, &de, &next);
        if (rc || !de)
            break;
        pthread_mutex_lock(&fs->lock);
        bool added = add_entry(req, fs, dh->path, de, next, plus, buf, size, &used);
        pthread_mutex_unlock(&fs->lock);
        if (!added) /* full: the kernel asks again from the last offset it took */
            break;
    }
    fs_dirstream_unlock(dh->ds);
    if (rc && !used)
        fs_reply_err(req, rc);
    else
        fuse_reply_buf(req, buf, used);
    free(buf);
}

void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    fs_open_untrack(fs_of(req), &dh->open);
    dir_handle_free(&dh->open);
    fs_reply_err(req, 0);
}
