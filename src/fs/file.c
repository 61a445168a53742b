/* file.c — open files.
 *
 * Reads go through the handle's reader (read.c: blocks, read-ahead, the
 * disk cache), pinned to the object version seen at open.  Writes go to a
 * staging file: an unlinked temporary file in
 * cache_dir/staging that holds the whole file while it is open for writing
 * (loaded from the bucket on the first write, unless the file is new or
 * truncated).  flush (every close) and fsync upload it whole: PutObject up
 * to 16 MiB, a multipart upload above.  The object therefore appears in the
 * bucket only complete, and close() returns the upload's real result.
 * (The streaming write path replaces the staging of sequential writes in
 * later work; the contract stays.) */
#include "fs/fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_PUT_MAX (16ULL << 20)
#define FS_PART_MIN (16ULL << 20)
#define FS_LOAD_CHUNK (8ULL << 20)

static struct fs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static void now_ts(struct timespec *t)
{
    clock_gettime(CLOCK_REALTIME, t);
}

/* ---- staging files ---------------------------------------------------- */

int fs_wfile_attach_locked(struct fs *fs, struct fs_inode *in)
{
    if (in->wf)
        return 0;
    struct buf tmpl = BUF_INIT;
    buf_printf(&tmpl, "%s/staging/stage-XXXXXX", fs->cfg.cache_dir);
    if (!tmpl.data)
        return ENOMEM;
    int fd = mkstemp(tmpl.data);
    int rc = fd < 0 ? errno : 0;
    if (fd >= 0)
        unlink(tmpl.data);
    if (rc)
        log_error("cannot make a staging file in %s/staging: %s", fs->cfg.cache_dir,
                  strerror(rc));
    buf_free(&tmpl);
    if (rc)
        return rc;
    struct fs_wfile *wf = calloc(1, sizeof(*wf));
    if (!wf) {
        close(fd);
        return ENOMEM;
    }
    pthread_mutex_init(&wf->lock, NULL);
    wf->fd = fd;
    in->wf = wf;
    return 0;
}

static void wfile_free(struct fs_wfile *wf)
{
    if (!wf)
        return;
    close(wf->fd);
    pthread_mutex_destroy(&wf->lock);
    free(wf);
}

struct mem_sink {
    char *data;
    size_t len, cap;
};

static int mem_sink_fn(void *arg, const void *data, size_t len)
{
    struct mem_sink *m = arg;
    if (m->len + len > m->cap)
        return EIO; /* more than was asked for: the filter upstream failed */
    memcpy(m->data + m->len, data, len);
    m->len += len;
    return 0;
}

static int write_all(int fd, const char *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int read_all(int fd, char *p, size_t len, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

/* Copy the object into the staging file (wf->lock held).  Chunks go
 * through memory so the HTTP thread never writes to disk. */
static int wfile_load(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf)
{
    if (wf->loaded)
        return 0;
    pthread_mutex_lock(&fs->lock);
    char *key = fs_key(fs, in->path, false);
    char etag[80];
    snprintf(etag, sizeof(etag), "%s", in->attr.etag);
    bool local = in->local;
    pthread_mutex_unlock(&fs->lock);
    if (!key)
        return ENOMEM;
    int rc = 0;
    if (!local) {
        struct mem_sink m = {.data = malloc(FS_LOAD_CHUNK), .cap = FS_LOAD_CHUNK};
        if (!m.data)
            rc = ENOMEM;
        for (uint64_t off = 0; !rc;) {
            m.len = 0;
            rc = s3_get_object(fs->s3, key, off, FS_LOAD_CHUNK, *etag ? etag : NULL, mem_sink_fn,
                               &m, NULL, NULL);
            if (!rc)
                rc = write_all(wf->fd, m.data, m.len, off);
            off += m.len;
            if (m.len < FS_LOAD_CHUNK)
                break;
        }
        free(m.data);
        if (rc == ESTALE)
            log_error("%s changed in the bucket while being opened for writing", key);
    }
    free(key);
    if (rc)
        return rc == ESTALE ? EIO : rc;
    wf->loaded = true;
    return 0;
}

/* ---- uploads ---------------------------------------------------------- */

static int upload_multipart(struct fs *fs, const char *key, int fd, uint64_t size,
                            const struct s3_put_opts *opts, char *etag)
{
    uint64_t part = FS_PART_MIN;
    while (size / part >= 10000)
        part *= 2;
    char *upload_id = NULL;
    int rc = s3_create_multipart_upload(fs->s3, key, opts, &upload_id, NULL);
    if (rc)
        return rc;
    size_t n = (size_t)((size + part - 1) / part);
    struct s3_part *parts = calloc(n, sizeof(*parts));
    char *data = malloc(part);
    if (!parts || !data)
        rc = ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        uint64_t off = i * part;
        size_t len = (size_t)(size - off < part ? size - off : part), got;
        rc = read_all(fd, data, len, off, &got);
        if (!rc && got != len)
            rc = EIO;
        parts[i].number = (int)i + 1;
        if (!rc)
            rc = s3_upload_part(fs->s3, key, upload_id, parts[i].number, data, len,
                                parts[i].etag, NULL);
    }
    if (!rc)
        rc = s3_complete_multipart_upload(fs->s3, key, upload_id, parts, n, etag, NULL);
    if (rc)
        s3_abort_multipart_upload(fs->s3, key, upload_id, NULL);
    free(data);
    free(parts);
    free(upload_id);
    return rc;
}

int fs_upload(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    if (!wf)
        return 0;
    pthread_mutex_lock(&wf->lock);
    int rc = wf->error;
    if (rc || !wf->dirty)
        goto out;
    pthread_mutex_lock(&fs->lock);
    bool gone = !in->linked;
    struct fs_attr a = in->attr;
    char *xattr = in->xattr ? strdup(in->xattr) : NULL;
    char *key = fs_key(fs, in->path, false);
    pthread_mutex_unlock(&fs->lock);
    if (gone) { /* unlinked while open: nothing to store */
        wf->dirty = false;
        free(xattr);
        free(key);
        goto out;
    }
    struct stat st;
    struct buf store = BUF_INIT;
    struct s3_meta meta[FS_META_MAX];
    char etag[80] = "";
    if (!key)
        rc = ENOMEM;
    else if (fstat(wf->fd, &st) < 0)
        rc = errno;
    if (!rc) {
        a.size = (uint64_t)st.st_size;
        struct s3_put_opts opts = {.meta = meta, .n_meta = fs_meta_build(&a, xattr, meta, &store)};
        if (a.size <= FS_PUT_MAX) {
            char *data = malloc(a.size ? a.size : 1);
            size_t got = 0;
            rc = data ? read_all(wf->fd, data, a.size, 0, &got) : ENOMEM;
            if (!rc && got != a.size)
                rc = EIO;
            if (!rc)
                rc = s3_put_object(fs->s3, key, data, a.size, &opts, etag, NULL);
            free(data);
        } else {
            rc = upload_multipart(fs, key, wf->fd, a.size, &opts, etag);
        }
    }
    if (rc) {
        log_error("upload of %s failed: %s", key ? key : in->path, strerror(rc));
        rc = rc == ENOMEM || rc == ENOSPC ? rc : EIO;
    } else {
        wf->dirty = false;
        pthread_mutex_lock(&fs->lock);
        snprintf(in->attr.etag, sizeof(in->attr.etag), "%s", etag);
        in->attr.has_meta = true;
        if (in->local) {
            in->local = false;
            fs->n_local--;
        }
        in->attr_expire_ms = util_now_ms() + fs->attr_ttl_ms;
        pthread_mutex_unlock(&fs->lock);
    }
    buf_free(&store);
    free(xattr);
    free(key);
out:
    pthread_mutex_unlock(&wf->lock);
    return rc;
}

int fs_truncate(struct fs *fs, struct fs_inode *in, uint64_t size)
{
    pthread_mutex_lock(&fs->lock);
    bool temporary = !in->wf;
    int rc = fs_wfile_attach_locked(fs, in);
    struct fs_wfile *wf = in->wf;
    if (!rc && temporary)
        in->opens++; /* hold the inode while it is staged */
    pthread_mutex_unlock(&fs->lock);
    if (rc)
        return rc;
    pthread_mutex_lock(&wf->lock);
    if (size == 0)
        wf->loaded = true; /* nothing of the old bytes is needed */
    rc = wfile_load(fs, in, wf);
    if (!rc && ftruncate(wf->fd, (off_t)size) < 0)
        rc = errno;
    if (!rc) {
        wf->dirty = true;
        pthread_mutex_lock(&fs->lock);
        in->attr.size = size;
        now_ts(&in->attr.mtime);
        in->attr.ctime = in->attr.mtime;
        pthread_mutex_unlock(&fs->lock);
    }
    pthread_mutex_unlock(&wf->lock);
    if (temporary) {
        if (!rc)
            rc = fs_upload(fs, in);
        pthread_mutex_lock(&fs->lock);
        in->wf = NULL;
        fs_inode_close_locked(fs, in);
        pthread_mutex_unlock(&fs->lock);
        wfile_free(wf);
    }
    return rc;
}

int fs_upload_all(struct fs *fs)
{
    int result = 0;
    for (;;) {
        struct fs_inode *pending = NULL;
        pthread_mutex_lock(&fs->lock);
        for (struct fs_inode *in = fs->by_ino; in; in = in->hh.next)
            if (in->wf && in->wf->dirty && !in->wf->error) {
                pending = in;
                break;
            }
        pthread_mutex_unlock(&fs->lock);
        if (!pending)
            return result;
        int rc = fs_upload(fs, pending);
        if (rc) {
            pending->wf->error = rc;
            result = EIO;
        }
    }
}

/* ---- operations ------------------------------------------------------- */

static void handle_free(struct fs_open *o)
{
    struct fs_handle *h = (struct fs_handle *)o;
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
    if (!in->local && !(h->reader = fs_reader_new(fs, in->ino, in->path, &in->attr))) {
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

void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct fuse_entry_param e;
    struct fs_handle *h = NULL;
    int rc = 0;
    if (fs->cfg.read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (strlen(name) > FS_MAX_NAME) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *dir = fs_inode_get(fs, parent), *in = NULL;
    char *path = dir ? fs_child_path(dir->path, name) : NULL;
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
    now_ts(&a.mtime);
    a.atime = a.ctime = a.mtime;
    a.has_meta = true;
    struct fs_inode *old;
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), old);
    if (old && !old->local)
        fs_inode_unlink_locked(fs, old);
    in = fs_inode_publish(fs, path, &a, NULL, false, true, true, &e);
    if (!in) {
        rc = ENOMEM;
        goto out;
    }
    if (!in->local) {
        in->local = true;
        fs->n_local++;
    }
    rc = fs_wfile_attach_locked(fs, in);
    if (!rc && !(h = handle_new(fs, in, true)))
        rc = ENOMEM;
    if (rc) {
        fs_inode_forget_locked(fs, in, 1);
        goto out;
    }
    in->wf->loaded = true;
    in->wf->dirty = true;
    in->opens++;
    fi->fh = (uintptr_t)h;
    fi->keep_cache = 0;
out:
    pthread_mutex_unlock(&fs->lock);
    free(path);
    if (rc) {
        fuse_reply_err(req, rc);
        return;
    }
    fs_open_track(fs, &h->open, handle_free);
    fuse_reply_create(req, &e, fi);
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    bool write = (fi->flags & O_ACCMODE) != O_RDONLY;
    if (write && fs->cfg.read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (!in) {
        pthread_mutex_unlock(&fs->lock);
        fuse_reply_err(req, ENOENT);
        return;
    }
    in->opens++; /* hold it while S3 is asked */
    /* Close-to-open: an open after the TTL sees the bucket's current version. */
    bool stale = !(in->local || in->wf) && util_now_ms() >= in->attr_expire_ms;
    char *path = stale ? strdup(in->path) : NULL;
    mode_t type = in->attr.mode & S_IFMT;
    pthread_mutex_unlock(&fs->lock);
    int rc = 0;
    if (stale) {
        struct fs_attr a;
        char *xattr = NULL;
        rc = path ? fs_refresh(fs, path, type, &a, &xattr) : ENOMEM;
        pthread_mutex_lock(&fs->lock);
        if (!rc && !(in->local || in->wf)) {
            if (strcmp(a.etag, in->attr.etag) != 0) {
                free(in->symlink);
                in->symlink = NULL;
            }
            in->attr = a;
            free(in->xattr);
            in->xattr = xattr;
            xattr = NULL;
            in->attr_expire_ms = util_now_ms() + fs->attr_ttl_ms;
        }
        pthread_mutex_unlock(&fs->lock);
        free(xattr);
        free(path);
    }
    struct fs_handle *h = NULL;
    pthread_mutex_lock(&fs->lock);
    if (!rc && write)
        rc = fs_wfile_attach_locked(fs, in);
    if (!rc && !(h = handle_new(fs, in, write)))
        rc = ENOMEM;
    if (rc) {
        fs_inode_close_locked(fs, in);
        pthread_mutex_unlock(&fs->lock);
        fuse_reply_err(req, rc);
        return;
    }
    struct fs_wfile *wf = write ? in->wf : NULL;
    pthread_mutex_unlock(&fs->lock);
    if (wf && (fi->flags & O_TRUNC)) {
        rc = fs_truncate(fs, in, 0);
        if (rc) {
            pthread_mutex_lock(&fs->lock);
            fs_inode_close_locked(fs, in);
            pthread_mutex_unlock(&fs->lock);
            handle_free(&h->open);
            fuse_reply_err(req, rc);
            return;
        }
    }
    fs_open_track(fs, &h->open, handle_free);
    fi->fh = (uintptr_t)h;
    pthread_mutex_lock(&fs->lock);
    fi->keep_cache = !(wf && (fi->flags & O_TRUNC)) && keep_page_cache(in);
    pthread_mutex_unlock(&fs->lock);
    fuse_reply_open(req, fi);
}

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    struct fs_inode *in = h->in;
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    char *data = NULL;
    size_t got = 0;
    int rc = 0;
    if (wf) {
        /* Written here: the staging file is the truth once it holds the
         * bytes; before that the object is, through the reader. */
        pthread_mutex_lock(&wf->lock);
        if (wf->loaded || !h->reader)
            rc = wfile_load(fs, in, wf);
        if (!rc && wf->loaded) {
            data = malloc(size ? size : 1);
            rc = data ? read_all(wf->fd, data, size, (uint64_t)off, &got) : ENOMEM;
        }
        pthread_mutex_unlock(&wf->lock);
    }
    /* Nothing of the handle is touched after the reply: once the kernel has
     * the data, a RELEASE may free the handle on another thread at once. */
    if (!rc && !data) {
        struct fs_read_reply rep;
        rc = fs_reader_read(h->reader, (uint64_t)off, size, &rep);
        if (!rc) {
            fuse_reply_iov(req, rep.iov, (int)rep.n);
            fs_read_reply_done(&rep);
            return;
        }
    }
    if (rc)
        fuse_reply_err(req, rc);
    else
        fuse_reply_buf(req, data, got);
    free(data);
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    struct fs_inode *in = h->in;
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    if (!wf || !h->write) {
        fuse_reply_err(req, EBADF);
        return;
    }
    pthread_mutex_lock(&wf->lock);
    int rc = wfile_load(fs, in, wf);
    if (!rc)
        rc = write_all(wf->fd, buf, size, (uint64_t)off);
    if (!rc) {
        wf->dirty = true;
        pthread_mutex_lock(&fs->lock);
        if ((uint64_t)off + size > in->attr.size)
            in->attr.size = (uint64_t)off + size;
        now_ts(&in->attr.mtime);
        in->attr.ctime = in->attr.mtime;
        pthread_mutex_unlock(&fs->lock);
    }
    pthread_mutex_unlock(&wf->lock);
    if (rc)
        fuse_reply_err(req, rc);
    else
        fuse_reply_write(req, size);
}

void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    fuse_reply_err(req, h->write ? fs_upload(fs_of(req), h->in) : 0);
}

void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fs_op_flush(req, ino, fi);
}

/* The last close of a file unlinked while open: delete the object now,
 * unless it was replaced meanwhile. */
static void delete_deferred(struct fs *fs, const char *path, const char *etag)
{
    char *key = fs_key(fs, path, false);
    struct s3_object_info info = {0};
    if (key && s3_head_object(fs->s3, key, &info, NULL) == 0 && strcmp(info.etag, etag) == 0) {
        int rc = s3_delete_object(fs->s3, key, NULL);
        if (rc)
            log_error("delete of %s (unlinked while open) failed: %s", key, strerror(rc));
    }
    s3_object_info_clear(&info);
    free(key);
    pthread_mutex_lock(&fs->lock);
    struct fs_hidden *hid;
    HASH_FIND_STR(fs->hidden, path, hid);
    if (hid) {
        HASH_DEL(fs->hidden, hid);
        free(hid->path);
        free(hid);
    }
    pthread_mutex_unlock(&fs->lock);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
    struct fs_inode *in = h->in;
    pthread_mutex_lock(&fs->lock);
    bool last = in->opens == 1;
    pthread_mutex_unlock(&fs->lock);
    if (last && h->write) {
        int rc = fs_upload(fs, in); /* normally done by flush already */
        if (rc)
            log_error("%s: data written was not stored: %s", in->path, strerror(rc));
    }
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = NULL;
    char *deferred = NULL, etag[80];
    if (in->opens == 1) {
        wf = in->wf;
        in->wf = NULL;
        if (in->delete_at_release) {
            deferred = strdup(in->path);
            snprintf(etag, sizeof(etag), "%s", in->attr.etag);
            in->delete_at_release = false;
        }
    }
    fs_inode_close_locked(fs, in);
    pthread_mutex_unlock(&fs->lock);
    wfile_free(wf);
    if (deferred)
        delete_deferred(fs, deferred, etag);
    free(deferred);
    fs_open_untrack(fs, &h->open);
    handle_free(&h->open);
    fuse_reply_err(req, 0);
}
