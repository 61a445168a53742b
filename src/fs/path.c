/* path.c — path arithmetic: a path of the mount, its S3 key, its
 * children, and the object a gzip view shows.
 *
 * A path is relative to the mount's prefix: "" for the root, "a/b" below
 * it, no trailing slash.  Its key is the prefix + path, with a '/' for a
 * directory.  These are pure functions of their arguments (and of the
 * mount's prefix), callable from every file of src/fs.
 *
 * A version of an object is named by its endpoint, bucket, key and ETag,
 * one a line: the read path's objects and block cache and the gzip views'
 * indexes are found by that name, and its SHA-256 names index files on
 * disk and in the bucket, so its bytes never change. */
#include "fs/fs_private.h"

char *fs_key(struct fs *fs, const char *path, bool dir)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, fs->key_prefix);
    buf_puts(&b, path);
    if (dir && *path)
        buf_puts(&b, "/");
    return buf_steal(&b);
}

char *fs_child_path(const char *parent, const char *name)
{
    struct buf b = BUF_INIT;
    if (*parent) {
        buf_puts(&b, parent);
        buf_puts(&b, "/");
    }
    buf_puts(&b, name);
    return buf_steal(&b);
}

char *fs_view_raw_path(const char *path, bool gz_suffix)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, path);
    if (gz_suffix)
        buf_puts(&b, ".gz");
    return buf_steal(&b);
}

int fs_version_id(struct fs *fs, struct buf *out, const char *key, const char *etag, bool endpoint)
{
    int rc = endpoint ? buf_printf(out, "%s\n", fs->cfg.endpoint ? fs->cfg.endpoint : "") : 0;
    if (!rc)
        rc = buf_printf(out, "%s\n%s\n%s", fs->cfg.bucket, key, etag);
    if (rc)
        buf_free(out); /* never half a name */
    return rc;
}
