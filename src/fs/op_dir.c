/* op_dir.c — the FUSE operations on directory handles: opendir, readdir
 * (plus) and releasedir.
 *
 * opendir takes one listing of the directory (dir.c) and keeps it on the
 * handle; readdir hands its entries out from there, so a directory read
 * in several calls sees one consistent listing.  The listing is also kept
 * as what the directory holds (known.c), so the lookups that follow it
 * (`ls -l`, `cat` of its files, `rm dir/f`) ask S3 nothing.  When a tree is
 * being walked, the listing may have been read ahead (ahead.c): opendir
 * takes it, and tells ahead.c what it opened, which is how walks are seen. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct dir_handle {
    struct fs_open open; /* first: the handle is freed through it */
    char *path;
    struct fs_dir d;
};

static void dir_handle_free(struct fs_open *o)
{
    struct dir_handle *dh = (struct dir_handle *)o;
    fs_dir_free(&dh->d);
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
    uint64_t gen = fs_known_gen(fs), listed_ms = util_now_ms();
    int rc = !in ? ENOENT : !dh || !dh->path ? ENOMEM : 0;
    /* a walk down a tree, or the lookup just before, may have listed it
     * already (ahead.c) */
    bool kept = false;
    bool ahead = !rc && fs_ahead_take(fs, dh->path, &dh->d, &gen, &listed_ms, &kept) == 0;
    if (!rc && !ahead)
        rc = fs_dir_list(fs, dh->path, 0, &dh->d);
    if (!rc) /* the names answer lookups too, for as long as they are trusted */
        fs_known_store(fs, ino, dh->path, gen, listed_ms, &dh->d);
    if (!rc)
        fs_ahead_opened(fs, dh->path, &dh->d, ahead && !kept);
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
    pthread_mutex_lock(&fs->lock);
    for (size_t i = (size_t)off; i < dh->d.n + 2; i++) {
        const char *name = i == 0 ? "." : i == 1 ? ".." : dh->d.ents[i - 2].name;
        struct fuse_entry_param e;
        memset(&e, 0, sizeof(e));
        e.attr.st_ino = i < 2 ? ino : 0;
        e.attr.st_mode = i < 2 ? S_IFDIR : dh->d.ents[i - 2].attr.mode;
        size_t need = plus ? fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0)
                           : fuse_add_direntry(req, NULL, 0, name, NULL, 0);
        if (used + need > size)
            break;
        char *path = i >= 2 ? fs_child_path(dh->path, name) : NULL;
        if (i >= 2 && !path)
            break;
        struct fs_inode *in = NULL;
        if (path)
            HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
        if (i >= 2 && type_unknown(fs, &dh->d.ents[i - 2].attr, in)) {
            /* A name without an entry (ino 0), of the type an inode knows
             * or else DT_UNKNOWN: the kernel looks it up when it is used. */
            e.attr.st_ino = in ? in->ino : (1ULL << 63) | i;
            e.attr.st_mode = in ? in->attr.mode & S_IFMT : 0;
        } else if (i >= 2 && plus) {
            /* readdirplus hands the kernel an entry: that counts as a lookup. */
            in = fs_inode_publish(fs, path, &dh->d.ents[i - 2].attr, NULL, true, true, true, &e);
            if (!in) {
                free(path);
                break;
            }
        } else if (i >= 2) {
            e.attr.st_ino = in ? in->ino : (1ULL << 63) | i; /* no inode is made for it */
        }
        free(path);
        if (plus)
            used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)i + 1);
        else
            used += fuse_add_direntry(req, buf + used, size - used, name, &e.attr, (off_t)i + 1);
    }
    pthread_mutex_unlock(&fs->lock);
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
