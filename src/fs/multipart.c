/* multipart.c — the multipart upload of one file: begun with the file's
 * metadata, parts queued on the upload pool (upload_pool.c) as the write
 * modes produce them, completed or aborted.
 *
 * The upload is bound to the key it began with: a file renamed while being
 * written is completed under the old key, then copied to the new one.  A
 * chmod, chown or setxattr made meanwhile is stored after completion
 * (fix_meta).  An upload that fails is aborted, so no parts are left to be
 * billed. */
#include "fs/fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file's key now (it may have been renamed); caller frees. */
char *fs_wf_key(struct fs *fs, struct fs_inode *in, bool *gone)
{
    pthread_mutex_lock(&fs->lock);
    char *key = fs_key(fs, in->path, false);
    if (gone)
        *gone = !in->linked;
    pthread_mutex_unlock(&fs->lock);
    return key;
}

uint64_t fs_local_part_cap(struct fs *fs)
{
    uint64_t p = fs->cfg.part_size;
    return p < 2 * FS_MIN_PART ? 2 * FS_MIN_PART : p;
}

/* Wait for every part in flight; the upload's error, if any. */
static int up_drain(struct fs_wfile *wf)
{
    pthread_mutex_lock(&wf->lock);
    while (wf->up.inflight)
        pthread_cond_wait(&wf->cond, &wf->lock);
    int rc = wf->up.error;
    pthread_mutex_unlock(&wf->lock);
    return rc;
}

/* Forget the upload (aborting it on the server when `abort`). */
void fs_up_reset(struct fs *fs, struct fs_wfile *wf, bool abort)
{
    up_drain(wf);
    if (abort && wf->up.id) {
        int rc = s3_abort_multipart_upload(fs->s3, wf->up.key, wf->up.id, NULL);
        if (rc == ENOSYS || rc == ENOTSUP)
            log_info("the server refuses AbortMultipartUpload: the parts of the failed upload "
                     "of %s stay until the server drops them",
                     wf->up.key);
        else if (rc && rc != ENOENT)
            log_warn("abort of the upload of %s failed: %s", wf->up.key, strerror(rc));
    }
    free(wf->up.key);
    free(wf->up.id);
    free(wf->up.parts);
    free(wf->up.sent_xattr);
    memset(&wf->up, 0, sizeof(wf->up));
}

/* Queue parts for the old object's [off, off+len) (len >= FS_MIN_PART
 * unless it ends the object): server-side copies, or downloads and uploads
 * where the server cannot copy. */
int fs_up_copy_range(struct fs *fs, struct fs_wfile *wf, uint64_t off, uint64_t len)
{
    bool copy = fs_part_copy_works(fs, wf);
    uint64_t cap = copy ? FS_MAX_PART : fs_local_part_cap(fs);
    uint64_t n = (len + cap - 1) / cap;
    if (wf->up.next + n > FS_MAX_PARTS)
        return EFBIG;
    int rc = 0;
    for (uint64_t i = 0; !rc && i < n; i++) {
        uint64_t a = len * i / n, b = len * (i + 1) / n;
        int number = (int)++wf->up.next;
        if (copy)
            rc = fs_up_submit(fs, wf, FS_WJ_COPY, number, NULL, 0, off + a, b - a, 0);
        else
            rc = fs_up_submit(fs, wf, FS_WJ_FETCH, number, NULL, 0, off + a, b - a,
                              fs_wmem_take(fs->wp, b - a));
    }
    return rc;
}

void fs_put_meta_take(struct fs *fs, struct fs_inode *in, struct fs_put_meta *m)
{
    pthread_mutex_lock(&fs->lock);
    m->a = in->attr;
    m->xattr = in->xattr ? strdup(in->xattr) : NULL;
    const char *type = fs_content_type(fs, in->path); /* the table's string, not the path's */
    pthread_mutex_unlock(&fs->lock);
    m->store = (struct buf)BUF_INIT;
    memset(&m->kept, 0, sizeof(m->kept));
    m->opts = (struct s3_put_opts){.content_type = type,
                                   .meta = m->meta,
                                   .n_meta = fs_meta_build(&m->a, m->xattr, m->meta, &m->store)};
}

void fs_put_meta_keep(struct fs *fs, const char *key, const char *base_etag, struct fs_put_meta *m)
{
    s3_object_info_clear(&m->kept);
    if (s3_head_object(fs->s3, key, &m->kept, NULL) || strcmp(m->kept.etag, base_etag) != 0) {
        s3_object_info_clear(&m->kept);
        return;
    }
    m->kept_policy = s3_object_info_policy(&m->kept);
    m->opts.keep = &m->kept_policy;
    if (m->kept.content_type) /* the stored type, as a copy keeps it */
        m->opts.content_type = m->kept.content_type;
}

void fs_put_meta_free(struct fs_put_meta *m)
{
    buf_free(&m->store);
    free(m->xattr);
    s3_object_info_clear(&m->kept);
}

/* Begin the multipart upload of the file, with its current metadata. */
int fs_up_create(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf)
{
    char *key = fs_wf_key(fs, in, NULL);
    if (!key)
        return ENOMEM;
    struct fs_put_meta m;
    fs_put_meta_take(fs, in, &m);
    if (wf->base_len && wf->base_etag[0]) /* an append or an edit: copies of the old bytes */
        fs_put_meta_keep(fs, key, wf->base_etag, &m);
    char *id = NULL;
    int rc = s3_create_multipart_upload(fs->s3, key, &m.opts, &id, NULL);
    buf_free(&m.store);
    s3_object_info_clear(&m.kept);
    if (rc) {
        log_error("cannot begin the upload of %s: %s", key, strerror(rc));
        free(key);
        free(m.xattr);
        return rc;
    }
    wf->up.key = key;
    wf->up.id = id;
    wf->up.sent_mode = m.a.mode;
    wf->up.sent_uid = m.a.uid;
    wf->up.sent_gid = m.a.gid;
    wf->up.sent_xattr = m.xattr; /* kept: fix_meta compares with it */
    return 0;
}

/* After the object is stored: if chmod/chown/setxattr changed what the
 * upload began with, store the metadata now. */
static int fix_meta(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, char *etag)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_attr a = in->attr;
    char *xattr = in->xattr ? strdup(in->xattr) : NULL;
    char *path = strdup(in->path);
    pthread_mutex_unlock(&fs->lock);
    bool same = a.mode == wf->up.sent_mode && a.uid == wf->up.sent_uid &&
                a.gid == wf->up.sent_gid &&
                ((!xattr && !wf->up.sent_xattr) ||
                 (xattr && wf->up.sent_xattr && strcmp(xattr, wf->up.sent_xattr) == 0));
    int rc = 0;
    if (!same) {
        a.size = wf->size;
        snprintf(a.etag, sizeof(a.etag), "%s", etag);
        rc = path ? fs_store_meta(fs, path, &a, xattr, etag) : ENOMEM;
    }
    free(xattr);
    free(path);
    return rc;
}

/* CompleteMultipartUpload of parts 1..up.next, after they all landed. */
int fs_up_complete(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, char *etag)
{
    int rc = up_drain(wf);
    size_t n = wf->up.next;
    for (size_t i = 0; !rc && i < n; i++)
        if (wf->up.parts[i].number != (int)i + 1)
            rc = EIO; /* a part never finished: cannot happen after the drain */
    if (!rc)
        rc = s3_complete_multipart_upload(fs->s3, wf->up.key, wf->up.id, wf->up.parts, n, etag,
                                          NULL);
    if (rc) {
        log_error("upload of %s failed: %s", wf->up.key, strerror(rc));
        fs_up_reset(fs, wf, true);
        return rc;
    }
    bool gone;
    char *key = fs_wf_key(fs, in, &gone);
    if (key && strcmp(key, wf->up.key) != 0 && !gone) {
        /* renamed while being written: the upload was bound to the old key */
        rc = fs_copy(fs, wf->up.key, key, wf->size, etag, NULL, etag);
        if (!rc)
            rc = s3_delete_object(fs->s3, wf->up.key, NULL);
    }
    free(key);
    if (!rc)
        rc = fix_meta(fs, in, wf, etag);
    fs_up_reset(fs, wf, false);
    return rc;
}
