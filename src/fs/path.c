/* path.c — path arithmetic: a path of the mount, its S3 key, its
 * children, and the object a gzip view shows.
 *
 * A path is relative to the mount's prefix: "" for the root, "a/b" below
 * it, no trailing slash.  Its key is the prefix + path, with a '/' for a
 * directory.  These are pure functions of their arguments (and of the
 * mount's prefix), callable from every file of src/fs. */
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
