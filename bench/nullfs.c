/* nullfs.c — the least a FUSE filesystem can do, for bench/run's floor
 * (issue 21): what replying to the kernel costs with nothing else done.
 *
 *     nullfs SIZE MOUNTPOINT        (root; foreground; fusermount3 -u ends it)
 *
 * It shows one file, "data", of SIZE bytes.  A read is answered from one
 * 1 MiB buffer (byte i of the file is buf[i % 1 MiB]); a write is accepted
 * whole and thrown away, the file keeping its size.  Nothing is fetched,
 * cached, hashed or uploaded, and one thread serves every request (no
 * handoff between threads), so the core-seconds this process spends per
 * GiB are the kernel's copies across /dev/fuse plus libfuse's loop: a floor
 * under any FUSE filesystem mounted the same way.  It asks for what pailfs
 * asks for in its op_init (src/fs/ops.c): 1 MiB read-ahead requests, 64
 * background requests, no writeback cache; libfuse's default max_write
 * (1 MiB).  The mount's bdi read_ahead_kb (1024 in pailfs) is set by the
 * harness once mounted.  An open is answered as pailfs answers one of an
 * object it has read before: keep_cache, no direct_io, so the kernel takes
 * O_DIRECT reads (fio's 4 KiB random reads, the rand8 floor) as FUSE reads
 * of the size asked, one request each.
 *
 * Built by bench/run (pailbench/floor.py) with cc and libfuse3-dev, the
 * packages pailfs itself builds with; not part of `make`. */
#define _DEFAULT_SOURCE /* S_IFDIR, S_IFREG under -std=c11 */
#define FUSE_USE_VERSION 31
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define BUF_SIZE (1u << 20)
#define FILE_INO 2
#define FILE_NAME "data"
#define MAX_IOV 64

static char buf[BUF_SIZE];
static off_t file_size;

static void stat_of(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0644;
        st->st_nlink = 1;
        st->st_size = file_size;
    }
}

static void null_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_readahead = 1 << 20;
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (parent != FUSE_ROOT_ID || strcmp(name, FILE_NAME) != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = FILE_INO;
    e.attr_timeout = e.entry_timeout = 1.0;
    stat_of(FILE_INO, &e.attr);
    fuse_reply_entry(req, &e);
}

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct stat st;
    stat_of(ino, &st);
    fuse_reply_attr(req, &st, 1.0);
}

/* dd opens with O_TRUNC: the truncation is accepted and forgotten. */
static void null_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                         struct fuse_file_info *fi)
{
    (void)attr, (void)to_set;
    null_getattr(req, ino, fi);
}

static void null_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino != FILE_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

/* The bytes at [off, off + size) of the file, as pieces of the one buffer. */
static void null_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    (void)ino, (void)fi;
    struct iovec iov[MAX_IOV];
    int n = 0;
    if (off < file_size && (off_t)size > file_size - off)
        size = (size_t)(file_size - off);
    while (off < file_size && size > 0 && n < MAX_IOV) {
        size_t at = (size_t)(off % BUF_SIZE), len = BUF_SIZE - at;
        if (len > size)
            len = size;
        iov[n].iov_base = buf + at;
        iov[n].iov_len = len;
        n++;
        off += (off_t)len;
        size -= len;
    }
    fuse_reply_iov(req, iov, n);
}

static void null_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)ino, (void)data, (void)off, (void)fi;
    fuse_reply_write(req, size);
}

static void null_ok(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino, (void)fi;
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
    .init = null_init,
    .lookup = null_lookup,
    .getattr = null_getattr,
    .setattr = null_setattr,
    .open = null_open,
    .read = null_read,
    .write = null_write,
    .flush = null_ok,
    .release = null_ok,
};

int main(int argc, char **argv)
{
    char *end = NULL;
    if (argc != 3 || (file_size = strtoll(argv[1], &end, 10)) <= 0 || *end) {
        fprintf(stderr, "usage: %s SIZE MOUNTPOINT\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < BUF_SIZE; i++)
        buf[i] = (char)(i * 131 >> 3);
    char *fargv[] = {argv[0], "-o", "fsname=pailbench-null,subtype=null", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
    if (!se)
        return 1;
    int rc = 1;
    if (fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, argv[2]) == 0) {
            rc = fuse_session_loop(se) < 0;
            fuse_session_unmount(se);
        }
        fuse_remove_signal_handlers(se);
    }
    fuse_session_destroy(se);
    return rc;
}
