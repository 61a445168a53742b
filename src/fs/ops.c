/* ops.c — the FUSE low-level operations table of pailfs.
 *
 * pailfs shows an S3 bucket (or a prefix of it) as a directory tree: keys
 * are files, key prefixes are directories, "dir/" markers make empty
 * directories, and s3fs-fuse's metadata gives modes, owners, times and
 * symlinks.  Every operation below is a short function handing off to the
 * file that owns the work: op_names.c (names and attributes), op_dir.c
 * (reading directories), op_xattr.c (extended attributes), op_file.c (open
 * files and their data), inode.c (the inode table).  Those call down into
 * the engines (read.c, write.c, gzview.c, dir.c, resolve.c ...) and never
 * back up: contrib/layers.txt holds the order.
 *
 * Deliberately not supported: hard links (EPERM: S3 has no second name for
 * one object), devices, FIFOs and sockets (EPERM), RENAME_EXCHANGE (EINVAL:
 * two keys cannot be swapped atomically), file locks (the kernel keeps them
 * local to this mount). */
#include "fs/fs_private.h"

#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    /* `ls -l` must cost listings only: always hand attributes with names. */
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    /* Reads of 1 MiB: one request, wakeup and reply per block read, not
     * eight.  The kernel cuts a read at max_pages, which libfuse derives
     * from max_write (its default, 1 MiB, is the kernel's largest:
     * /proc/sys/fs/fuse/max_pages_limit 256), and sends read-ahead in
     * pieces of max_readahead.  A max_read mount option must be said here
     * too, or libfuse refuses the session. */
    conn->max_readahead = 1 << 20;
    /* The kernel's read-ahead of every file open goes out as background
     * requests, at most max_background at once for the whole mount (the
     * kernel's default, 12): sixteen files read at once would have four
     * waiting while the others' requests wait for their GETs.  Readers
     * are bounded by max_memory, not by this. */
    conn->max_background = FS_MAX_BACKGROUND;
    conn->congestion_threshold = FS_MAX_BACKGROUND * 3 / 4;
    struct fs *fs = userdata;
    if (fs->cfg.max_read)
        conn->max_read = fs->cfg.max_read;
    /* Writes are staged and uploaded by us; the kernel must not cache them. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    struct fs *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (in)
        fs_inode_forget_locked(fs, in, nlookup);
    pthread_mutex_unlock(&fs->lock);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct fs *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    for (size_t i = 0; i < count; i++) {
        struct fs_inode *in = fs_inode_get(fs, forgets[i].ino);
        if (in)
            fs_inode_forget_locked(fs, in, forgets[i].nlookup);
    }
    pthread_mutex_unlock(&fs->lock);
    fuse_reply_none(req);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    /* A bucket has no size limit: report a large, constant amount free. */
    struct statvfs st;
    memset(&st, 0, sizeof(st));
    st.f_bsize = 1 << 20;
    st.f_frsize = 1 << 20;
    st.f_blocks = st.f_bfree = st.f_bavail = 1ULL << 30; /* 1 PiB */
    st.f_files = st.f_ffree = st.f_favail = 1ULL << 40;
    st.f_namemax = FS_MAX_NAME;
    fuse_reply_statfs(req, &st);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    fs_reply_err(req, EPERM);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    fs_op_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    fs_op_readdir(req, ino, size, off, fi, true);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fs_reply_err(req, 0); /* directory changes are stored when made */
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = fs_op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = fs_op_getattr,
    .setattr = fs_op_setattr,
    .readlink = fs_op_readlink,
    .mknod = fs_op_mknod,
    .mkdir = fs_op_mkdir,
    .unlink = fs_op_unlink,
    .rmdir = fs_op_rmdir,
    .symlink = fs_op_symlink,
    .rename = fs_op_rename,
    .link = op_link,
    .open = fs_op_open,
    .read = fs_op_read,
    .write = fs_op_write,
    .flush = fs_op_flush,
    .release = fs_op_release,
    .fsync = fs_op_fsync,
    .opendir = fs_op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = fs_op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = fs_op_setxattr,
    .getxattr = fs_op_getxattr,
    .listxattr = fs_op_listxattr,
    .removexattr = fs_op_removexattr,
    .create = fs_op_create,
};

const struct fuse_lowlevel_ops *fs_lowlevel_ops(void)
{
    return &ops;
}
