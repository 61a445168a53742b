/* op_xattr.c — the FUSE operations on extended attributes.
 *
 * user.* attributes are stored as s3fs stores them, in the object's
 * x-amz-meta-xattr (meta.c encodes them); changing one rewrites the
 * object's metadata in place (copy.c), or only the inode while the file
 * is still local.  Every one replies exactly once through fs_reply_err. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

static bool user_xattr(const char *name)
{
    return strncmp(name, "user.", 5) == 0 && name[5];
}

/* Read the metadata of inode `ino` (at `path`, seen as *seen) now,
 * whatever its TTL: its xattr value was never read.  The answer is kept as
 * a refresh's is (fs_inode_update); *xattr is the value answered (caller
 * frees), which a file open for writing does not keep. */
static int read_meta(struct fs *fs, fuse_ino_t ino, const char *path, const struct fs_attr *seen,
                     char **xattr)
{
    struct fs_attr a;
    char *x = NULL;
    int rc = fs_refresh(fs, path, seen, &a, &x);
    if (!rc) {
        *xattr = x ? strdup(x) : NULL;
        fs_inode_update(fs, ino, seen->etag, &a, x); /* takes x */
    }
    return rc;
}

/* The inode's xattr value (caller frees).  Stale attributes are read again
 * by the one refresh (fs_inode_refresh: after attr_ttl, never while the
 * file is local or open for writing).  A value never read (a name only
 * listed; an object whose HEAD found no s3fs metadata) is read now. */
static int current_xattr(struct fs *fs, fuse_ino_t ino, char **xattr)
{
    bool asked = false;
    int rc = fs_inode_refresh(fs, ino, false, &asked);
    struct fs_attr a;
    char *path = fs_inode_snapshot(fs, ino, &a, xattr, NULL);
    if (!path) {
        free(*xattr);
        *xattr = NULL;
        return ENOENT;
    }
    if (!rc && !asked && !a.has_meta && !*xattr)
        rc = read_meta(fs, ino, path, &a, xattr);
    if (rc == ENOENT && S_ISDIR(a.mode))
        rc = 0; /* the root of a bucket, or a directory without a marker */
    if (rc) {
        free(*xattr);
        *xattr = NULL;
    }
    free(path);
    return rc;
}

static void reply_value(fuse_req_t req, size_t size, const char *val, size_t len)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fs_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, val, len);
}

/* The mount root's FS_STATS_XATTR: the metrics text, for `pailfs --stats`.
 * A getxattr is what any process can do on a path it can see, needs no
 * socket or file of ours, and reaches exactly the pailfs serving it. */
static bool stats_xattr(fuse_ino_t ino, const char *name)
{
    return ino == FUSE_ROOT_ID && strcmp(name, FS_STATS_XATTR) == 0;
}

static void reply_stats(fuse_req_t req, size_t size)
{
    struct buf text = BUF_INIT;
    int rc = metrics_format(&text);
    if (rc)
        fs_reply_err(req, rc);
    else
        reply_value(req, size, text.data ? text.data : "", text.len);
    buf_free(&text);
}

void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fs *fs = fs_of(req);
    if (!user_xattr(name)) {
        /* security.*, system.*, trusted.*: not supported here (as setting
         * them is not), which is ENOTSUP rather than ENODATA: `ls -l` asks
         * for system.posix_acl_access and security.selinux of every entry
         * until a device answers that, then never again on it (two FUSE
         * round trips an entry, 20,000 for a directory of 10,000). */
        fs_reply_err(req, ENOTSUP);
        return;
    }
    if (stats_xattr(ino, name)) {
        reply_stats(req, size);
        return;
    }
    char *xattr = NULL, *val = NULL;
    size_t len = 0;
    int rc = current_xattr(fs, ino, &xattr);
    if (!rc)
        rc = fs_xattr_get(xattr, name, &val, &len);
    if (rc == EINVAL)
        rc = EIO; /* a corrupt x-amz-meta-xattr */
    if (rc)
        fs_reply_err(req, rc);
    else
        reply_value(req, size, val, len);
    free(val);
    free(xattr);
}

void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fs *fs = fs_of(req);
    char *xattr = NULL, *names = NULL;
    size_t len = 0;
    int rc = current_xattr(fs, ino, &xattr);
    if (!rc)
        rc = fs_xattr_list(xattr, &names, &len);
    if (rc == EINVAL)
        rc = EIO;
    if (rc)
        fs_reply_err(req, rc);
    else
        reply_value(req, size, names, len);
    free(names);
    free(xattr);
}

/* Store `updated`, the new xattr value of `in` (held; taken): in the
 * object's metadata (a copy onto itself), or only on the inode while the
 * file's own state is the truth.  0, ENOMEM, or the S3 errno. */
static int xattr_store(struct fs *fs, struct fs_inode *in, char *updated)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_attr a = in->attr;
    char *path = strdup(in->path);
    bool local = fs_inode_local_truth(in);
    pthread_mutex_unlock(&fs->lock);
    char etag[80] = "";
    int rc = !path ? ENOMEM : local ? 0 : fs_store_meta(fs, path, &a, updated, etag);
    if (!rc) {
        pthread_mutex_lock(&fs->lock);
        free(in->xattr);
        in->xattr = updated;
        updated = NULL;
        if (*etag && !S_ISDIR(in->attr.mode))
            snprintf(in->attr.etag, sizeof(in->attr.etag), "%s", etag);
        if (S_ISDIR(in->attr.mode) && !local) {
            in->attr.marker = true;
            in->attr.old_dir = false; /* moved to the marker */
        }
        pthread_mutex_unlock(&fs->lock);
        if (!local)
            fs_wfile_meta_stored(fs, in, a.etag, etag);
    }
    free(path);
    free(updated);
    return rc;
}

static void change_xattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                         size_t size, int flags)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *in = NULL;
    int rc = fs->cfg.read_only        ? EROFS
             : !user_xattr(name)      ? ENOTSUP
             : stats_xattr(ino, name) ? EPERM /* reserved: the figures are not stored */
                                      : 0;
    if (!rc && !(in = fs_inode_hold(fs, ino))) /* held across the requests below */
        rc = ENOENT;
    char *xattr = NULL, *updated = NULL;
    if (!rc)
        rc = current_xattr(fs, ino, &xattr);
    if (!rc)
        rc = fs_xattr_set(xattr, name, value, size, flags, &updated);
    if (rc == EINVAL)
        rc = EIO; /* a corrupt x-amz-meta-xattr */
    if (!rc)
        rc = xattr_store(fs, in, updated);
    if (in)
        (void)fs_inode_put(fs, in); /* what the last hold stores is logged there */
    free(xattr);
    fs_reply_err(req, rc);
}

void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                    size_t size, int flags)
{
    change_xattr(req, ino, name, value, size, flags);
}

void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    change_xattr(req, ino, name, NULL, 0, 0);
}
