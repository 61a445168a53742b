/* write.c — the write path: files open for writing, and how they reach S3.
 *
 * An object cannot be changed in place, only replaced whole, and a program
 * writing a result bigger than the local disk must not stage it there.  So
 * a file open for writing is in one of three modes:
 *
 *   clean   nothing written yet; reads go to the object.
 *   stream  written front to back (a new file, O_TRUNC, or an append):
 *           bytes fill an in-memory part; each full part goes to a pool
 *           of upload threads at once (at most max_inflight per file) while
 *           the program keeps writing.  A file shorter than its first part
 *           becomes one PutObject at flush; a longer one a multipart upload
 *           completed at flush.  An append to an existing object starts the
 *           upload with UploadPartCopy of the old bytes, never a download.
 *   staged  anything else (seek back, holes, edits, truncation): the file
 *           is materialised sparsely in cache_dir/staging, one 1 MiB block
 *           at a time as blocks are read or partly written; at flush the
 *           new object is planned (plan.c) as server-side copies of the old
 *           object's unchanged ranges plus uploads of the changed ones.
 *
 * A stream turns into staged when a write lands before what was already
 * sent.  Parts already uploaded cannot be read back from S3, so the upload
 * is first completed as a checkpoint (what fsync does), then edited.
 *
 * The contract: the object appears only complete, at flush or fsync, and
 * those return 0 only when it is in the bucket.  A failed write, part or
 * completion aborts the upload, leaves the old object as it was, and makes
 * this and every later flush and write of the file fail (EIO; ENOSPC when
 * the staging disk filled; EFBIG past S3's largest object) until it is closed: a
 * file that lacks bytes a program wrote is never stored.
 *
 * Locking: a file's operations (write, read, truncate, flush) are one at a
 * time — `busy` is held across their S3 requests and waits; wf->lock only
 * guards the fields upload threads touch (the upload's parts, in-flight
 * count and error) and `busy` itself.  fs->lock is never held across I/O.
 *
 * Beside this file: multipart.c (one file's multipart upload), upload_pool.c
 * (the upload threads, the write use of the memory bound and the warm part
 * buffers), plan.c (the staged block map and the plan of parts), release.c
 * (what the last close stores). */
#include "fs/fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_STAGE_BLOCK (1ULL << 20)

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

/* ---- one file's operations, one at a time ------------------------------ */

static void wf_begin(struct fs_wfile *wf)
{
    pthread_mutex_lock(&wf->lock);
    while (wf->busy)
        pthread_cond_wait(&wf->cond, &wf->lock);
    wf->busy = true;
    pthread_mutex_unlock(&wf->lock);
}

static void wf_end(struct fs_wfile *wf)
{
    pthread_mutex_lock(&wf->lock);
    wf->busy = false;
    pthread_cond_broadcast(&wf->cond);
    pthread_mutex_unlock(&wf->lock);
}

/* What an inode learns from a stored file (fs->lock not held). */
static void publish_stored(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf,
                           const char *etag)
{
    pthread_mutex_lock(&fs->lock);
    snprintf(in->attr.etag, sizeof(in->attr.etag), "%s", etag);
    in->attr.size = wf->size;
    in->attr.has_meta = true;
    in->attr.headed = true; /* stored here: no Content-Encoding */
    if (in->local) {
        in->local = false;
        fs->n_local--;
    }
    in->attr_expire_ms = util_now_ms() + fs->attr_ttl_ms;
    if (in->linked)
        fs_known_changed_locked(fs, in->path); /* listings read ahead lack it */
    pthread_mutex_unlock(&fs->lock);
}

/* A failure that loses written bytes sticks to the file. */
static int stick(struct fs_wfile *wf, int rc)
{
    if (rc && !wf->error)
        wf->error = rc == ENOSPC || rc == EFBIG || rc == ENOMEM ? rc : EIO;
    return rc ? wf->error : 0;
}

/* ---- stream mode ------------------------------------------------------- */

/* Give back the part being filled (warm, to the pool) and its memory. */
static void part_drop(struct fs *fs, struct fs_wfile *wf)
{
    fs_partbuf_put(fs->wp, wf->buf, wf->buf_cap);
    wf->buf = NULL;
    wf->buf_len = wf->buf_cap = 0;
}

/* How long a stream writer with no part in flight waits for memory
 * before it stages its file on disk instead (part_grow). */
#define FS_WMEM_SPILL_MS 500
#define FS_WMEM_INFLIGHT_MS 10000
/* The first part of a file grows with its data up to this, then is the
 * whole part. */
#define FS_PART_GROW_MAX (512u << 10)

/* Room for `want` bytes in the part being filled: 0, ENOMEM, or ENOBUFS
 * (the memory bound has no room for it: stage the file on disk).
 *
 * Each buffer comes with its charge to the bound (fs_partbuf_get).  A
 * file's first part grows with its data, doubling from 64 KiB, so a
 * thousand small files open for writing hold little; past
 * FS_PART_GROW_MAX, and for every later part, the buffer is the whole
 * part at once, a warm one from the pool when it can be: growing a part
 * piece by piece copied it once more and faulted in fresh pages.  A
 * writer refused room waits while parts of its own are in flight (they
 * give memory back); with none, it waits a little, then stages the file
 * on disk, holding no memory: writers never wait on each other's buffers
 * for ever. */
static int part_grow(struct fs *fs, struct fs_wfile *wf, size_t want)
{
    if (want <= wf->buf_cap)
        return 0;
    size_t target = (size_t)fs_part_size(fs->cfg.part_size, wf->up.next + 1);
    size_t cap = wf->buf_cap ? wf->buf_cap * 2 : 64 << 10;
    while (cap < want)
        cap *= 2;
    if (wf->up.next || cap > FS_PART_GROW_MAX || cap >= target)
        cap = want > target ? want : target;
    pthread_mutex_lock(&wf->lock);
    bool inflight = wf->up.inflight > 0;
    pthread_mutex_unlock(&wf->lock);
    char *nb = NULL;
    int rc = fs_partbuf_get(fs->wp, cap, inflight ? FS_WMEM_INFLIGHT_MS : FS_WMEM_SPILL_MS, &nb);
    if (rc)
        return rc;
    if (wf->buf_len)
        memcpy(nb, wf->buf, wf->buf_len);
    fs_partbuf_put(fs->wp, wf->buf, wf->buf_cap);
    wf->buf = nb;
    wf->buf_cap = cap;
    return 0;
}

/* Hand the filled part to the uploaders (beginning the upload, and copying
 * the old object's bytes first when this stream appends to one). */
static int stream_send(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf)
{
    int rc = 0;
    if (!wf->up.id) {
        rc = fs_up_create(fs, in, wf);
        if (!rc && wf->base_len)
            rc = fs_up_copy_range(fs, wf, 0, wf->base_len);
        if (rc)
            return rc;
    }
    size_t len = wf->buf_len;
    if (!len && wf->up.next)
        return 0;         /* nothing to add after the old object's bytes */
    char *data = wf->buf; /* with its charge, to the job */
    size_t cap = wf->buf_cap;
    wf->buf = NULL;
    wf->buf_len = wf->buf_cap = 0;
    wf->sent += len;
    return fs_up_submit(fs, wf, FS_WJ_MEM, (int)++wf->up.next, data, cap, 0, len, 0);
}

static int stream_append(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, const char *p,
                         size_t n)
{
    while (n) {
        uint64_t target = fs_part_size(fs->cfg.part_size, wf->up.next + 1);
        if (wf->buf_len >= target) {
            if (wf->up.next + 1 >= FS_MAX_PARTS)
                return EFBIG;
            int rc = stream_send(fs, in, wf);
            if (rc)
                return rc;
            continue;
        }
        size_t k = (size_t)(target - wf->buf_len) < n ? (size_t)(target - wf->buf_len) : n;
        int rc = part_grow(fs, wf, wf->buf_len + k);
        if (rc)
            return rc;
        if (p) /* read again only when the part is full: past the caches */
            util_copy_stream(wf->buf + wf->buf_len, p, k);
        else
            memset(wf->buf + wf->buf_len, 0, k);
        wf->buf_len += k;
        wf->size += k;
        if (p)
            p += k;
        n -= k;
    }
    return 0;
}

/* The whole file as one PutObject, with the inode's metadata now; an
 * edit of the object at version base_etag (or NULL) keeps its type,
 * encryption and class. */
static int put_whole(struct fs *fs, struct fs_inode *in, const char *data, size_t len,
                     const char *base_etag, char *etag)
{
    char *key = fs_wf_key(fs, in, NULL);
    struct fs_put_meta m;
    fs_put_meta_take(fs, in, &m);
    if (key && base_etag && *base_etag)
        fs_put_meta_keep(fs, key, base_etag, &m);
    int rc = key ? s3_put_object(fs->s3, key, data, len, &m.opts, etag, NULL) : ENOMEM;
    if (rc) /* without a key (ENOMEM) no name: in->path is fs->lock's */
        log_error("upload of %s failed: %s", key ? key : "a file", strerror(rc));
    fs_put_meta_free(&m);
    free(key);
    return rc;
}

/* Store what the stream holds: one PutObject when it never left memory,
 * else the last part and the completion.  Afterwards the object is the
 * stream's base and writing may go on. */
static int stream_commit(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, char *etag)
{
    if (!wf->up.id && !wf->base_len) /* the bytes stay in memory: the file is still all there */
        return put_whole(fs, in, wf->buf, wf->buf_len, NULL, etag);
    int rc = 0;
    if (!wf->up.id || wf->buf_len)
        rc = stream_send(fs, in, wf);
    if (!rc)
        rc = fs_up_complete(fs, in, wf, etag);
    else
        fs_up_reset(fs, wf, true);
    if (rc)
        return rc;
    snprintf(wf->base_etag, sizeof(wf->base_etag), "%s", etag);
    wf->base_len = wf->size;
    wf->sent = wf->size;
    return 0;
}

/* fsync's promise in the middle of a stream: everything written so far
 * is the object now. */
static int stream_checkpoint(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf)
{
    char etag[80];
    int rc = stick(wf, stream_commit(fs, in, wf, etag));
    if (!rc) {
        wf->dirty = false;
        publish_stored(fs, in, wf, etag);
    }
    return rc;
}

/* A stream that appends to an old object shorter than a part can hold:
 * the old bytes go into the first part instead of a copy. */
static int stream_pull_base(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf)
{
    if (!wf->base_len || wf->base_len >= FS_MIN_PART || wf->up.id)
        return 0;
    char *key = fs_wf_key(fs, in, NULL);
    int rc = key ? part_grow(fs, wf, (size_t)wf->base_len) : ENOMEM;
    if (!rc)
        rc = fs_get_range(fs, key, 0, (size_t)wf->base_len, wf->base_etag, wf->buf);
    free(key);
    if (rc)
        return rc;
    wf->buf_len = (size_t)wf->base_len;
    wf->sent = 0;
    wf->base_len = 0;
    return 0;
}

/* ---- staged mode ------------------------------------------------------- */

/* Blocks of a staged file of `size` bytes. */
static uint64_t stage_blocks(uint64_t size)
{
    return size / FS_STAGE_BLOCK + (size % FS_STAGE_BLOCK != 0);
}

/* Make block b hold its real bytes: the old object's part of it fetched
 * (the rest of the block is local already). */
static int stage_fetch(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, uint64_t b)
{
    if (fs_blkmap_get(&wf->blk, b, NULL) != FS_BLK_ABSENT)
        return 0;
    uint64_t start = (uint64_t)b * FS_STAGE_BLOCK;
    uint64_t end = start + FS_STAGE_BLOCK;
    if (end > wf->base_len)
        end = wf->base_len;
    int rc = 0;
    if (end > start) {
        char *key = fs_wf_key(fs, in, NULL);
        char *data = malloc((size_t)(end - start));
        rc = key && data ? fs_get_range(fs, key, start, (size_t)(end - start), wf->base_etag, data)
                         : ENOMEM;
        if (!rc)
            rc = write_all(wf->fd, data, (size_t)(end - start), start);
        free(key);
        free(data);
    }
    if (!rc)
        rc = fs_blkmap_set(&wf->blk, b, b + 1, FS_BLK_CLEAN);
    return rc;
}

static int stage_fetch_range(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, uint64_t off,
                             uint64_t len)
{
    if (!len)
        return 0;
    uint64_t end = stage_blocks(off + len);
    if (end > wf->blk.n_blk)
        end = wf->blk.n_blk;
    for (uint64_t b = off / FS_STAGE_BLOCK; b < end;) {
        uint64_t run_end;
        if (fs_blkmap_get(&wf->blk, b, &run_end) != FS_BLK_ABSENT) {
            b = run_end; /* a run of blocks that hold their bytes already */
            continue;
        }
        int rc = stage_fetch(fs, in, wf, b);
        if (rc)
            return rc;
        b++;
    }
    return 0;
}

/* Leave stream (or clean) mode for staged: a staging file holding what is
 * not in the old object.  Parts already sent are completed first. */
static int to_staged(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf)
{
    if (wf->mode == FS_W_STAGED)
        return 0;
    int rc = 0;
    if (wf->mode == FS_W_STREAM && wf->up.id) {
        rc = stream_checkpoint(fs, in, wf);
        if (rc)
            return rc;
        if (log_get_level() >= LOG_LVL_DEBUG) {
            char *key = fs_wf_key(fs, in, NULL); /* in->path is fs->lock's: a rename frees it */
            log_debug("%s: written out of order after parts were sent; stored what was "
                      "written so far and staged the rest",
                      key ? key : "a file");
            free(key);
        }
    }
    struct buf tmpl = BUF_INIT;
    buf_printf(&tmpl, "%s/staging/stage-XXXXXX", fs->cfg.cache_dir);
    if (!tmpl.data)
        return ENOMEM;
    int fd = mkstemp(tmpl.data);
    if (fd < 0) {
        rc = errno;
        log_error("cannot make a staging file in %s/staging: %s", fs->cfg.cache_dir, strerror(rc));
    } else {
        unlink(tmpl.data);
    }
    buf_free(&tmpl);
    if (rc)
        return rc;
    wf->fd = fd;
    fs_blkmap_free(&wf->blk);
    /* the old object's blocks, not fetched; past them, local bytes */
    if ((rc = fs_blkmap_set(&wf->blk, 0, stage_blocks(wf->base_len), FS_BLK_ABSENT)) ||
        (rc = fs_blkmap_resize(&wf->blk, stage_blocks(wf->size))))
        return rc;
    if (ftruncate(fd, (off_t)wf->size) < 0)
        return errno;
    if (wf->mode == FS_W_STREAM && wf->buf_len) {
        /* the part not sent yet: after the old object's bytes, which the
         * block it starts in needs first */
        if (wf->sent % FS_STAGE_BLOCK)
            rc = stage_fetch(fs, in, wf, wf->sent / FS_STAGE_BLOCK);
        if (!rc)
            rc = write_all(fd, wf->buf, wf->buf_len, wf->sent);
        if (!rc)
            rc = fs_blkmap_set(&wf->blk, wf->sent / FS_STAGE_BLOCK,
                               stage_blocks(wf->sent + wf->buf_len), FS_BLK_DIRTY);
        if (rc)
            return rc;
    }
    part_drop(fs, wf);
    wf->mode = FS_W_STAGED;
    return 0;
}

/* n bytes at off (n > 0, off + n <= S3_MAX_OBJECT_SIZE).  The file's size and
 * block map change only once the bytes are in the staging file; a failure
 * leaves them as they were (the caller fails the file: the staging file
 * may hold part of the bytes). */
static int stage_write(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, const char *p,
                       size_t n, uint64_t off)
{
    uint64_t end = off + n;
    uint64_t first = off / FS_STAGE_BLOCK, last = (end - 1) / FS_STAGE_BLOCK;
    int rc = 0;
    /* A block only partly overwritten needs its old bytes first.  Only
     * blocks of the old object can be ABSENT, and the map covers them. */
    for (uint64_t b = first; !rc && b <= last && b < wf->blk.n_blk; b++) {
        uint64_t bs = b * FS_STAGE_BLOCK, be = bs + FS_STAGE_BLOCK;
        if (be > wf->base_len)
            be = wf->base_len;
        if (!(off <= bs && end >= be))
            rc = stage_fetch(fs, in, wf, b);
    }
    if (!rc)
        rc = write_all(wf->fd, p, n, off);
    if (!rc) /* grows the map too: the blocks before `first` it adds are a hole, local zeros */
        rc = fs_blkmap_set(&wf->blk, first, last + 1, FS_BLK_DIRTY);
    if (rc)
        return rc;
    if (end > wf->size)
        wf->size = end;
    return 0;
}

static int stage_truncate(struct fs_wfile *wf, uint64_t size)
{
    if (ftruncate(wf->fd, (off_t)size) < 0)
        return errno;
    int rc = fs_blkmap_resize(&wf->blk, stage_blocks(size));
    if (rc)
        return rc;
    if (size < wf->base_len)
        wf->base_len = size; /* bytes past it are gone, even if it grows again */
    wf->size = size;
    return 0;
}

/* The new object from the staging file and the old object: copies of the
 * unchanged ranges, uploads of the rest. */
static int stage_commit(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, char *etag)
{
    /* A block can be copied when all its bytes are the old object's: the
     * blocks wholly inside base_len, and the last one when the file ends
     * where the old object ended. */
    uint64_t copy_blocks = !*wf->base_etag            ? 0
                           : wf->base_len >= wf->size ? stage_blocks(wf->size)
                                                      : wf->base_len / FS_STAGE_BLOCK;
    struct fs_run *runs = NULL;
    size_t nr = 0;
    int rc = fs_blkmap_runs(&wf->blk, wf->size, FS_STAGE_BLOCK, copy_blocks, &runs, &nr);
    if (rc == EINVAL) {
        log_error("the block map of a staged file does not match its size: not stored");
        return EIO;
    }
    struct fs_part_plan *plan = NULL;
    size_t np = 0;
    if (!rc)
        rc = fs_plan_parts(runs, nr, FS_MIN_PART, fs_local_part_cap(fs), &plan, &np);
    free(runs);
    if (rc)
        return rc == E2BIG ? EFBIG : rc == EINVAL ? EIO : rc;
    bool any_copy = false;
    for (size_t i = 0; i < np; i++)
        any_copy |= plan[i].copy;
    if (!any_copy && wf->size <= fs_local_part_cap(fs)) {
        /* small: one PutObject of the whole file */
        char *data = malloc(wf->size ? (size_t)wf->size : 1);
        rc = data ? stage_fetch_range(fs, in, wf, 0, wf->size) : ENOMEM;
        if (!rc)
            rc = fs_read_all(wf->fd, data, (size_t)wf->size, 0);
        if (!rc)
            rc = put_whole(fs, in, data, (size_t)wf->size, wf->base_len ? wf->base_etag : NULL,
                           etag);
        free(data);
        free(plan);
        return rc;
    }
    rc = fs_up_create(fs, in, wf);
    /* Learn whether the server copies before any part is sent: the probe
     * copies one byte into part 1, and would overwrite a local part 1
     * already in flight (CompleteMultipartUpload then fails: InvalidPart). */
    if (!rc && any_copy)
        (void)fs_part_copy_works(fs, wf);
    for (size_t i = 0; !rc && i < np; i++) {
        if (plan[i].copy) {
            rc = fs_up_copy_range(fs, wf, plan[i].off, plan[i].len);
            continue;
        }
        rc = stage_fetch_range(fs, in, wf, plan[i].off, plan[i].len);
        if (!rc)
            rc = fs_up_submit(fs, wf, FS_WJ_FD, (int)++wf->up.next, NULL, 0, plan[i].off,
                              plan[i].len, fs_wmem_take(fs->wp, plan[i].len));
    }
    free(plan);
    if (rc) {
        fs_up_reset(fs, wf, true);
        return rc;
    }
    return fs_up_complete(fs, in, wf, etag);
}

/* ---- the file's interface ---------------------------------------------- */

int fs_wfile_attach_locked(struct fs *fs, struct fs_inode *in)
{
    (void)fs;
    if (in->wf)
        return 0;
    struct fs_wfile *wf = calloc(1, sizeof(*wf));
    if (!wf)
        return ENOMEM;
    pthread_mutex_init(&wf->lock, NULL);
    pthread_cond_init(&wf->cond, NULL);
    wf->fd = -1;
    if (in->local) {
        wf->mode = FS_W_STREAM;
    } else {
        wf->mode = FS_W_CLEAN;
        wf->size = wf->base_len = in->attr.size;
        snprintf(wf->base_etag, sizeof(wf->base_etag), "%s", in->attr.etag);
    }
    in->wf = wf;
    return 0;
}

void fs_wfile_free(struct fs *fs, struct fs_wfile *wf)
{
    if (!wf)
        return;
    fs_up_reset(fs, wf, true); /* an upload nobody completed */
    part_drop(fs, wf);
    if (wf->fd >= 0)
        close(wf->fd);
    fs_blkmap_free(&wf->blk);
    pthread_cond_destroy(&wf->cond);
    pthread_mutex_destroy(&wf->lock);
    free(wf);
}

static void touch(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf)
{
    wf->dirty = true;
    pthread_mutex_lock(&fs->lock);
    in->attr.size = wf->size;
    clock_gettime(CLOCK_REALTIME, &in->attr.mtime);
    in->attr.ctime = in->attr.mtime;
    pthread_mutex_unlock(&fs->lock);
}

/* The memory bound had no room for the rest of the write [off, off+n)
 * of p in the stream's part: stage the file on disk (the part becomes the
 * staging file's bytes, its memory given back) and write there what the
 * part did not take. */
static int stream_spill(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, const char *p,
                        size_t n, uint64_t off)
{
    uint64_t taken = wf->size > off ? wf->size - off : 0;
    if (taken > n)
        taken = n;
    log_debug("no memory for a part of a file being written: staged on disk");
    int rc = to_staged(fs, in, wf);
    if (!rc && taken < n)
        rc = stage_write(fs, in, wf, p + taken, n - taken, off + taken);
    return rc == EDQUOT ? ENOSPC : rc;
}

int fs_wfile_write(struct fs *fs, struct fs_inode *in, const char *p, size_t n, uint64_t off)
{
    const char *p0 = p; /* the whole write, for stream_spill */
    size_t n0 = n;
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    if (!wf)
        return EBADF;
    wf_begin(wf);
    int rc = wf->error;
    if (rc || !n)
        goto out;
    /* Every failed write fails the file (a later write, fsync or close
     * returns the error): a program that missed one error must not get a
     * 0 from close() for a file that lacks bytes it wrote. */
    if (off > S3_MAX_OBJECT_SIZE || n > S3_MAX_OBJECT_SIZE - off) {
        rc = stick(wf, EFBIG); /* S3 cannot hold it: refused before anything changes */
        goto out;
    }
    if (wf->mode == FS_W_CLEAN) {
        if (off == wf->size) {
            wf->mode = FS_W_STREAM; /* an append (or the first bytes of an empty file) */
            wf->sent = wf->size;
            rc = stick(wf, stream_pull_base(fs, in, wf));
        } else {
            rc = stick(wf, to_staged(fs, in, wf));
        }
        if (rc)
            goto out;
    }
    if (wf->mode == FS_W_STREAM) {
        uint64_t gap_max = fs->cfg.part_size;
        if (off < wf->sent || off > wf->size + gap_max) {
            rc = to_staged(fs, in, wf);
            if (rc) {
                rc = stick(wf, rc);
                goto out;
            }
        }
    }
    if (wf->mode == FS_W_STREAM) {
        if (off > wf->size)
            rc = stream_append(fs, in, wf, NULL, (size_t)(off - wf->size)); /* a short hole */
        if (!rc && off < wf->size) {
            size_t k = (size_t)(wf->size - off) < n ? (size_t)(wf->size - off) : n;
            memcpy(wf->buf + (off - wf->sent), p, k);
            p += k;
            n -= k;
        }
        if (!rc)
            rc = stream_append(fs, in, wf, p, n);
        if (rc == ENOBUFS)
            rc = stream_spill(fs, in, wf, p0, n0, off);
        rc = stick(wf, rc);
        if (rc && wf->up.id)
            fs_up_reset(fs, wf, true); /* the old object stays; drop the parts now */
    } else {
        rc = stage_write(fs, in, wf, p, n, off);
        rc = stick(wf, rc == EDQUOT ? ENOSPC : rc); /* store none of the edit */
    }
out:
    if (!rc)
        touch(fs, in, wf);
    wf_end(wf);
    return rc;
}

int fs_wfile_read(struct fs *fs, struct fs_inode *in, const char *etag, uint64_t off, size_t size,
                  char **data, size_t *got)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    if (!wf)
        return EAGAIN;
    wf_begin(wf);
    int rc = 0;
    *data = NULL;
    *got = 0;
    if (wf->mode == FS_W_CLEAN && etag && strcmp(etag, wf->base_etag) == 0) {
        rc = EAGAIN; /* unchanged: the handle's reader has it */
        goto out;
    }
    if (off >= wf->size)
        goto out;
    if (off + size > wf->size)
        size = (size_t)(wf->size - off);
    char *out = malloc(size ? size : 1);
    if (!out) {
        rc = ENOMEM;
        goto out;
    }
    if (wf->mode == FS_W_STAGED) {
        rc = stage_fetch_range(fs, in, wf, off, size);
        if (!rc)
            rc = fs_read_all(wf->fd, out, size, off);
    } else {
        if (wf->mode == FS_W_STREAM && off < wf->sent && off + size > wf->base_len) {
            /* bytes in parts already sent cannot be read back: store them */
            rc = stream_checkpoint(fs, in, wf);
        }
        uint64_t from_base = off < wf->base_len ? wf->base_len - off : 0;
        if (from_base > size)
            from_base = size;
        if (!rc && from_base) {
            char *key = fs_wf_key(fs, in, NULL);
            rc = key ? fs_get_range(fs, key, off, (size_t)from_base, wf->base_etag, out) : ENOMEM;
            free(key);
        }
        if (!rc && from_base < size) {
            uint64_t o = off + from_base; /* in the part being filled */
            memcpy(out + from_base, wf->buf + (o - wf->sent), size - (size_t)from_base);
        }
    }
    if (rc)
        free(out);
    else {
        *data = out;
        *got = size;
    }
out:
    wf_end(wf);
    return rc;
}

int fs_upload(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    if (!wf)
        return 0;
    wf_begin(wf);
    int rc = wf->error;
    if (rc || !wf->dirty)
        goto out;
    bool gone;
    free(fs_wf_key(fs, in, &gone));
    if (gone) { /* unlinked while open: nothing to store */
        fs_up_reset(fs, wf, true);
        wf->dirty = false;
        goto out;
    }
    char etag[80] = "";
    if (wf->mode == FS_W_STAGED)
        rc = stage_commit(fs, in, wf, etag);
    else
        rc = stream_commit(fs, in, wf, etag);
    if (rc) {
        rc = stick(wf, rc);
        goto out;
    }
    wf->dirty = false;
    snprintf(wf->base_etag, sizeof(wf->base_etag), "%s", etag);
    wf->base_len = wf->mode == FS_W_STAGED || wf->up.id || wf->sent ? wf->size : 0;
    if (wf->mode == FS_W_STAGED) /* one run, in room the map has: cannot fail */
        (void)fs_blkmap_set(&wf->blk, 0, wf->blk.n_blk, FS_BLK_CLEAN);
    publish_stored(fs, in, wf, etag);
out:
    wf_end(wf);
    return rc;
}

void fs_wfile_meta_stored(struct fs *fs, struct fs_inode *in, const char *from, const char *to)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    if (!wf || !*from || !*to)
        return;
    /* The copy has the bytes of `from`: old bytes the file still needs
     * (a staged fetch, a server-side copy at upload) are there, and no
     * longer under `from`, whose ETag the bucket has stopped answering. */
    wf_begin(wf);
    if (strcmp(wf->base_etag, from) == 0)
        snprintf(wf->base_etag, sizeof(wf->base_etag), "%s", to);
    wf_end(wf);
}

int fs_truncate(struct fs *fs, struct fs_inode *in, uint64_t size)
{
    if (size > S3_MAX_OBJECT_SIZE)
        return EFBIG; /* S3 cannot hold it: refused before anything changes */
    /* The write state lives while the inode is held (the caller's hold
     * keeps it): an open for writing meanwhile shares it, and the last
     * hold frees it (fs_inode_put). */
    pthread_mutex_lock(&fs->lock);
    bool temporary = !in->wf;
    int rc = fs_wfile_attach_locked(fs, in);
    struct fs_wfile *wf = in->wf;
    pthread_mutex_unlock(&fs->lock);
    if (rc)
        return rc;
    wf_begin(wf);
    rc = wf->error;
    bool changed = size != wf->size || (size == 0 && wf->base_len);
    if (!rc && size == 0 && wf->mode != FS_W_STAGED) {
        /* nothing of the old bytes is needed: a fresh stream */
        fs_up_reset(fs, wf, true);
        part_drop(fs, wf);
        wf->mode = FS_W_STREAM;
        wf->size = wf->sent = wf->base_len = 0;
        wf->base_etag[0] = '\0';
    } else if (!rc && changed) {
        if (wf->mode == FS_W_STREAM && size >= wf->sent && size <= wf->size) {
            wf->buf_len = (size_t)(size - wf->sent);
            wf->size = size;
        } else if (wf->mode == FS_W_STREAM && size > wf->size &&
                   size - wf->size <= fs->cfg.part_size) {
            rc = stream_append(fs, in, wf, NULL, (size_t)(size - wf->size));
        } else {
            rc = to_staged(fs, in, wf);
            if (!rc)
                rc = stage_truncate(wf, size);
        }
        rc = stick(wf, rc);
    }
    if (!rc && changed)
        touch(fs, in, wf);
    wf_end(wf);
    if (temporary && !rc)
        rc = fs_upload(fs, in); /* not open for writing: stored now, its result returned */
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
        if (fs_upload(fs, pending)) {
            if (!pending->wf->error)
                pending->wf->error = EIO;
            result = EIO;
        }
    }
}
