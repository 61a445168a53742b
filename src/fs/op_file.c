/* op_file.c — open files: the FUSE operations on file handles.
 *
 * An open for reading of a file whose attributes S3 must confirm (known
 * only from a listing, or past attr_ttl) asks no HEAD: the object's first
 * GET, which the first read would send anyway, goes out at open, and its
 * answer's headers do what the HEAD's did (the inode's attributes, a gzip
 * view, a symlink found) while its body goes on into the read path.  So
 * `cat` of a listed file costs one round trip, not two.
 *
 * Reads go through the handle's reader (read.c: blocks, read-ahead, the
 * disk cache), pinned to the object version seen at open, unless the file
 * was written here (write.c then knows the bytes).  Writes, flush and fsync
 * hand off to write.c: streamed multipart uploads or staged edits, stored
 * at flush/fsync, whose result close() returns.  The last close is
 * release.c's. */
#include "fs/fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- operations ------------------------------------------------------- */

static void handle_free(struct fs_open *o)
{
    struct fs_handle *h = (struct fs_handle *)o;
    fs_gz_close(h->gz);
    fs_reader_free(h->reader);
    free(h);
}

/* A handle on `in` (fs->lock held); readers of a stored object get a
 * reader of the version seen now. */
static struct fs_handle *handle_new(struct fs *fs, struct fs_inode *in, bool write)
{
    struct fs_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->in = in;
    h->write = write;
    snprintf(h->etag, sizeof(h->etag), "%s", in->attr.etag);
    if (!in->local && !in->attr.gz &&
        !(h->reader = fs_reader_new(fs, in->ino, in->path, &in->attr))) {
        free(h);
        return NULL;
    }
    return h;
}

/* keep_cache when the kernel's cached pages are of the version opened now
 * (fs->lock held). */
static bool keep_page_cache(struct fs_inode *in)
{
    bool same = *in->attr.etag && strcmp(in->kcache_etag, in->attr.etag) == 0;
    snprintf(in->kcache_etag, sizeof(in->kcache_etag), "%s", in->attr.etag);
    return same;
}

/* Make the inode of a new file `name` in `parent`, local and open for
 * writing, and its handle (fs->lock held): *e and *h filled.  0, ENOENT
 * (unknown parent), ENAMETOOLONG, ENOMEM. */
static int create_locked(struct fs *fs, const struct fuse_ctx *ctx, fuse_ino_t parent,
                         const char *name, mode_t mode, struct fuse_entry_param *e,
                         struct fs_handle **h)
{
    struct fs_inode *dir = fs_inode_get(fs, parent), *in = NULL;
    char *path = dir ? fs_child_path(dir->path, name) : NULL;
    int rc = 0;
    if (!dir)
        rc = ENOENT;
    else if (!path)
        rc = ENOMEM;
    else if (strlen(fs->key_prefix) + strlen(path) > FS_MAX_KEY)
        rc = ENAMETOOLONG;
    if (rc)
        goto out;
    struct fs_attr a = {0};
    a.mode = S_IFREG | (mode & 07777);
    a.uid = ctx->uid;
    a.gid = ctx->gid;
    clock_gettime(CLOCK_REALTIME, &a.mtime);
    a.atime = a.ctime = a.mtime;
    a.has_meta = true;
    struct fs_inode *old;
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), old);
    if (old && !old->local)
        fs_inode_unlink_locked(fs, old);
    in = fs_inode_publish(fs, path, &a, NULL, false, true, true, e);
    if (!in) {
        rc = ENOMEM;
        goto out;
    }
    if (!in->local) {
        in->local = true;
        fs->n_local++;
    }
    rc = fs_wfile_attach_locked(fs, in);
    if (!rc && !(*h = handle_new(fs, in, true)))
        rc = ENOMEM;
    if (rc) {
        if (!in->opens && in->wf) { /* made just now: no upload, no I/O to free it */
            fs_wfile_free(fs, in->wf);
            in->wf = NULL;
        }
        fs_inode_forget_locked(fs, in, 1);
        goto out;
    }
    in->wf->dirty = true; /* even empty, it is stored at close */
    in->opens++;
    fs_dir_known_extend_locked(fs, dir->path);
out:
    free(path);
    return rc;
}

void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fuse_entry_param e;
    struct fs_handle *h = NULL;
    int rc = 0;
    if (fs->cfg.read_only)
        rc = EROFS;
    else if (strlen(name) > FS_MAX_NAME)
        rc = ENAMETOOLONG;
    if (rc)
        goto out_err;
    pthread_mutex_lock(&fs->lock);
    rc = create_locked(fs, fuse_req_ctx(req), parent, name, mode, &e, &h);
    if (!rc) {
        fi->fh = (uintptr_t)h;
        fi->keep_cache = 0;
    }
    pthread_mutex_unlock(&fs->lock);
    if (rc)
        goto out_err;
    fs_open_track(fs, &h->open, handle_free);
    fuse_reply_create(req, &e, fi);
    return;
out_err:
    fs_reply_err(req, rc);
}

/* What the first GET told about `path` (held by an open of inode `ino`,
 * whose ETag was `seen`), kept on the inode as a HEAD's answer is: a
 * regular file's attributes, a view's when gzip-encoded.  Anything else (a
 * symlink: the listing could not tell) is kept too, and ESTALE returned:
 * the kernel then looks the name up again (it finds the new type and
 * drops its inode of the old one), and the file is never read as a
 * regular one.  0, ESTALE. */
static int open_first_keep(struct fs *fs, fuse_ino_t ino, const char *path, const char *seen,
                           struct fs_attr *a, bool gzip, char *xattr)
{
    bool reg = S_ISREG(a->mode);
    if (reg)
        fs_attr_from_encoding(fs, path, gzip, a);
    fs_inode_update(fs, ino, seen, a, xattr); /* takes xattr */
    return reg ? 0 : ESTALE;
}

/* The open's refresh through its first GET rather than a HEAD, for a
 * regular file open for reading whose attributes S3 must confirm: known
 * only from a listing (the GET pinned to the listing's ETag while that is
 * trusted), or past attr_ttl (not pinned: whatever version is there now,
 * close-to-open).  The open waits for the answer's headers only; block 0
 * goes on arriving into *pre, a reader of the version told (the caller
 * frees it once its handle has its own reader).  0, ESTALE (no longer a
 * regular file), EAGAIN (not done this way: refresh as before; also after
 * a 412, so the name is looked up again by HEAD), or the GET's errno. */
static int open_first_get(struct fs *fs, fuse_ino_t ino, struct fs_reader **pre)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    bool first = in && fs_inode_stale_locked(fs, in, true) && S_ISREG(in->attr.mode) &&
                 !in->attr.gz && in->attr.size > 0;
    bool trusted = first && util_now_ms() < in->attr_expire_ms;
    char *path = first ? strdup(in->path) : NULL;
    char seen[sizeof(in->attr.etag)];
    snprintf(seen, sizeof(seen), "%s", in ? in->attr.etag : "");
    uint64_t size = in ? in->attr.size : 0;
    pthread_mutex_unlock(&fs->lock);
    if (!first)
        return EAGAIN;
    struct fs_first *g = NULL;
    int rc = path ? fs_first_start(fs, path, seen, size, trusted, &g) : ENOMEM;
    struct fs_attr a;
    bool gzip = false;
    char *xattr = NULL;
    if (!rc)
        rc = fs_first_wait(g, &a, &gzip, &xattr);
    if (!rc && S_ISREG(a.mode) && (*pre = fs_reader_new(fs, ino, path, &a)))
        fs_first_adopt(g, *pre);
    fs_first_release(g);
    if (rc == ESTALE || rc == ENODATA)
        rc = EAGAIN; /* changed since the listing (412), or emptied: look it up again */
    else if (!rc)
        rc = open_first_keep(fs, ino, path, seen, &a, gzip, xattr);
    free(path);
    return rc;
}

/* What an open learns before it makes its handle (`in` held): *was, the
 * attributes the kernel was told; then, cheapest first, what a file read
 * ahead brought (*pf, for fs_prefetch_opened), what the first GET's
 * headers tell (*pre, its block 0 arriving), or a HEAD, as far as the
 * attributes need confirming (close-to-open: after the TTL, the bucket's
 * current version; a listed file's Content-Encoding and metadata).
 * 0 or an errno of fs_inode_refresh / open_first_get. */
static int open_refresh(struct fs *fs, fuse_ino_t ino, struct fs_inode *in, bool write,
                        struct fs_attr *was, struct fs_prefetched **pf, struct fs_reader **pre)
{
    pthread_mutex_lock(&fs->lock);
    *was = in->attr;
    pthread_mutex_unlock(&fs->lock);
    *pf = fs_prefetch_open(fs, ino, write);
    int rc = write ? EAGAIN : open_first_get(fs, ino, pre);
    if (rc == EAGAIN)
        rc = fs_inode_refresh(fs, ino, true, NULL);
    return rc;
}

/* The handle of an open of `in` (held), with the write state attached when
 * `write`; *view: the attributes opened, and *raw the path of a view's
 * object (caller frees).  0, EACCES (a decompressed view cannot be
 * written), ENOMEM. */
static int open_handle(struct fs *fs, struct fs_inode *in, bool write, struct fs_handle **out,
                       struct fs_attr *view, char **raw)
{
    int rc = 0;
    pthread_mutex_lock(&fs->lock);
    if (write && in->attr.gz)
        rc = EACCES;
    if (!rc && write)
        rc = fs_wfile_attach_locked(fs, in);
    if (!rc && !(*out = handle_new(fs, in, write)))
        rc = ENOMEM;
    *view = in->attr;
    *raw = !rc && view->gz ? fs_view_raw_path(in->path, view->gz_suffix) : NULL;
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

/* What the kernel may keep of the file's pages (fs->lock taken here). */
static void open_cache_flags(struct fs *fs, struct fs_inode *in, const struct fs_attr *view,
                             bool truncated, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs->lock);
    fi->keep_cache = !truncated && keep_page_cache(in);
    if (view->gz && !view->size_exact) {
        /* size unknown yet: the kernel must read to our EOF, not its i_size */
        fi->direct_io = 1;
        fi->keep_cache = 0;
        in->kcache_etag[0] = '\0';
    }
    pthread_mutex_unlock(&fs->lock);
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    bool write = (fi->flags & O_ACCMODE) != O_RDONLY;
    bool truncate = write && (fi->flags & O_TRUNC);
    struct fs_inode *in = NULL;
    struct fs_handle *h = NULL;
    struct fs_reader *pre = NULL;
    struct fs_attr view, was;
    char *raw = NULL;
    int rc = 0;
    if (write && fs->cfg.read_only) {
        rc = EROFS;
        goto out_err;
    }
    if (!(in = fs_inode_hold(fs, ino))) { /* held while S3 is asked */
        rc = ENOENT;
        goto out_err;
    }
    struct fs_prefetched *pf = NULL;
    rc = open_refresh(fs, ino, in, write, &was, &pf, &pre);
    if (!rc)
        rc = open_handle(fs, in, write, &h, &view, &raw);
    fs_prefetch_opened(fs, pf); /* the handle's reader holds the block now */
    if (!rc && view.gz) {
        rc = raw ? fs_gz_open(fs, ino, raw, &view, &h->gz) : ENOMEM;
        /* counted here, not in fs_gz_open: a stat reading a small view
         * whole is no open by anyone */
        if (!rc)
            metrics_add(&fs_metrics[FS_M_GZ_VIEWS], 1);
    }
    free(raw);
    fs_reader_free(pre); /* the handle's reader holds its blocks now */
    pre = NULL;
    if (!rc && truncate)
        rc = fs_truncate(fs, in, 0);
    if (rc)
        goto out_err;
    fs_open_track(fs, &h->open, handle_free);
    fi->fh = (uintptr_t)h;
    open_cache_flags(fs, in, &view, truncate, fi);
    /* The open learnt another size (a new version, or a file listed as
     * plain that is a view): the kernel may hold the old one, and would
     * stop reading there.  Told before the reply (attributes only, no page
     * is touched), so that no read comes first. */
    if ((view.size != was.size || view.gz != was.gz) && fs->se)
        fuse_lowlevel_notify_inval_inode(fs->se, ino, -1, 0);
    fuse_reply_open(req, fi);
    return;
out_err:
    fs_reader_free(pre);
    if (in) /* give back the open held (and a write state nobody else holds) */
        fs_inode_put(fs, in);
    if (h)
        handle_free(&h->open);
    fs_reply_err(req, rc);
}

/* Make *rep the reply of the `len` bytes at `data` (taken: freed by
 * fs_read_reply_done). */
static void reply_of_buf(struct fs_read_reply *rep, char *data, size_t len)
{
    memset(rep, 0, sizeof(*rep));
    rep->buf = data;
    if (len) {
        rep->iov[0].iov_base = data;
        rep->iov[0].iov_len = len;
        rep->n = 1;
    }
}

/* A read of a decompressed view: 0 and the bytes in *rep, or an errno.
 * *learnt: the read reached the end, and the view's exact size, now
 * recorded, differs from what the kernel was told. */
static int read_view(struct fs *fs, struct fs_handle *h, size_t size, off_t off,
                     struct fs_read_reply *rep, bool *learnt)
{
    char *data = NULL;
    size_t got = 0;
    uint64_t exact;
    int rc = fs_gz_read(h->gz, (uint64_t)off, size, &data, &got, &exact);
    struct fs_inode *in = h->in;
    if (!rc && exact != UINT64_MAX) {
        pthread_mutex_lock(&fs->lock);
        *learnt = !in->attr.size_exact || in->attr.size != exact;
        in->attr.size = exact;
        in->attr.size_exact = true;
        pthread_mutex_unlock(&fs->lock);
    }
    if (rc)
        free(data);
    else
        reply_of_buf(rep, data, got);
    return rc;
}

/* A read of a file: from write.c when it was written here, else from the
 * handle's reader.  0 and the bytes in *rep (fs_read_reply_done after the
 * reply), or an errno. */
static int read_file(struct fs *fs, struct fs_handle *h, size_t size, off_t off,
                     struct fs_read_reply *rep)
{
    char *data = NULL;
    size_t got = 0;
    int rc = fs_wfile_read(fs, h->in, h->reader ? h->etag : NULL, (uint64_t)off, size, &data, &got);
    if (rc == EAGAIN && !h->reader)
        rc = EIO; /* cannot happen: a handle without a reader is of a file written here */
    if (rc == EAGAIN)
        return fs_reader_read(h->reader, (uint64_t)off, size, rep);
    if (rc)
        free(data);
    else
        reply_of_buf(rep, data, got);
    return rc;
}

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    struct fs_read_reply rep = {0};
    bool learnt = false;
    int rc = h->gz ? read_view(fs, h, size, off, &rep, &learnt) : read_file(fs, h, size, off, &rep);
    /* Nothing of the handle is touched after the reply: once the kernel has
     * the data, a RELEASE may free the handle on another thread at once. */
    if (rc) {
        fs_reply_err(req, rc);
    } else {
        size_t n = 0;
        for (size_t i = 0; i < rep.n; i++)
            n += rep.iov[i].iov_len;
        metrics_add(&fs_metrics[FS_M_READ_BYTES], (int64_t)n);
        fuse_reply_iov(req, rep.iov, (int)rep.n);
    }
    fs_read_reply_done(&rep);
    if (learnt && fs->se) /* the kernel's attributes hold the estimate */
        fuse_lowlevel_notify_inval_inode(fs->se, ino, -1, 0);
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    int rc = h->write ? fs_wfile_write(fs_of(req), h->in, buf, size, (uint64_t)off) : EBADF;
    if (rc) {
        fs_reply_err(req, rc);
    } else {
        metrics_add(&fs_metrics[FS_M_WRITTEN_BYTES], (int64_t)size);
        fuse_reply_write(req, size);
    }
}

void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    fs_reply_err(req, h->write ? fs_upload(fs_of(req), h->in) : 0);
}

void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fs_op_flush(req, ino, fi);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    (void)fs_inode_put(fs, h->in); /* logged there; a release cannot fail */
    fs_open_untrack(fs, &h->open);
    handle_free(&h->open);
    fs_reply_err(req, 0);
}
