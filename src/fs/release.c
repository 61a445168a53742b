/* release.c — the last hold on a file: what was written and not stored yet
 * is stored, the write state freed, and the object of a file unlinked
 * while open deleted (unless it was replaced meanwhile).  An open handle
 * holds its inode (fs_inode_hold), and so do operations such as setattr's
 * truncate. */
#include "fs/fs_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct fs_inode *fs_inode_hold(struct fs *fs, fuse_ino_t ino)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    if (in)
        in->opens++;
    pthread_mutex_unlock(&fs->lock);
    return in;
}

int fs_inode_put(struct fs *fs, struct fs_inode *in)
{
    int rc = 0;
    pthread_mutex_lock(&fs->lock);
    /* The last hold stores what is not stored yet (normally flush did),
     * outside the lock; an open meanwhile makes it not the last any more,
     * and that open's own last close stores what it writes. */
    while (in->opens == 1 && in->wf && in->wf->dirty && !in->wf->error) {
        pthread_mutex_unlock(&fs->lock);
        rc = fs_upload(fs, in);
        pthread_mutex_lock(&fs->lock);
        if (rc)
            break;
    }
    struct fs_wfile *wf = NULL;
    char *deferred = NULL, *path = NULL, etag[80];
    if (in->opens == 1) {
        wf = in->wf;
        in->wf = NULL;
        if (wf && wf->error && !rc)
            rc = wf->error;
        if (wf && (wf->error || wf->dirty)) {
            /* Not stored: the attributes and the kernel's pages hold what
             * was written; the next open reads the bucket's version. */
            in->attr_expire_ms = 0;
            in->kcache_etag[0] = '\0';
        }
        if (in->delete_at_release) {
            deferred = strdup(in->path);
            snprintf(etag, sizeof(etag), "%s", in->attr.etag);
            in->delete_at_release = false;
        }
    }
    if (rc) /* the name now: a rename may free in->path once the lock is gone */
        path = strdup(in->path);
    fs_inode_close_locked(fs, in);
    pthread_mutex_unlock(&fs->lock);
    if (rc)
        log_error("%s: data written was not stored: %s", path ? path : "a file", strerror(rc));
    free(path);
    fs_wfile_free(fs, wf);
    if (deferred)
        delete_deferred(fs, deferred, etag);
    free(deferred);
    return rc;
}
