/* copy.c — server-side copies: an object copied to a new key (rename),
 * or onto itself with new metadata (chmod, chown, utimens, xattrs).
 *
 * CopyObject up to 5 GiB; above that UploadPartCopy in parts of at least
 * 512 MiB, so no byte travels through the mount.  Metadata not changed
 * here (x-amz-meta-* of other tools) is kept. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define FS_COPY_SINGLE_MAX (5ULL << 30) /* CopyObject's limit */
#define FS_COPY_PART_MIN (512ULL << 20)

static int copy_multipart(struct fs *fs, const char *src, const char *dst, uint64_t size,
                          const char *src_etag, const struct s3_put_opts *opts, char *etag_out)
{
    uint64_t part = FS_COPY_PART_MIN;
    while (size / part >= 10000)
        part *= 2;
    char *upload_id = NULL;
    int rc = s3_create_multipart_upload(fs->s3, dst, opts, &upload_id, NULL);
    if (rc)
        return rc;
    size_t n = (size_t)((size + part - 1) / part);
    struct s3_part *parts = calloc(n, sizeof(*parts));
    if (!parts)
        rc = ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        uint64_t off = i * part, len = size - off < part ? size - off : part;
        parts[i].number = (int)i + 1;
        rc = s3_upload_part_copy(fs->s3, dst, upload_id, (int)i + 1, src, off, len, src_etag,
                                 &parts[i], NULL);
    }
    if (!rc)
        rc = s3_complete_multipart_upload(fs->s3, dst, upload_id, parts, n, etag_out, NULL);
    if (rc)
        s3_abort_multipart_upload(fs->s3, dst, upload_id, NULL);
    free(parts);
    free(upload_id);
    return rc;
}

/* A copy's options that keep what the source (HEAD's *info) carries but
 * for its metadata, which is meta[0..n): S3 keeps neither encryption nor
 * storage class unless the copy names them (*keep, filled here). */
static struct s3_put_opts keeping(const struct s3_object_info *info, struct s3_object_policy *keep,
                                  const struct s3_meta *meta, size_t n)
{
    *keep = s3_object_info_policy(info);
    return (struct s3_put_opts){.content_type = info->content_type,
                                .content_encoding = info->content_encoding,
                                .meta = meta,
                                .n_meta = n,
                                .keep = keep};
}

static int copy_object(struct fs *fs, const char *src_key, const char *dst_key, uint64_t size,
                       const char *src_etag, const struct s3_put_opts *replace, char *etag_out)
{
    if (replace)
        return size <= FS_COPY_SINGLE_MAX
                   ? s3_copy_object(fs->s3, src_key, dst_key, replace, src_etag, etag_out, NULL)
                   : copy_multipart(fs, src_key, dst_key, size, src_etag, replace, etag_out);
    /* S3 keeps neither the source's encryption nor its storage class unless
     * the copy names them, and a multipart copy not even its metadata:
     * read them first. */
    struct s3_object_info info = {0};
    int rc = s3_head_object(fs->s3, src_key, &info, NULL);
    if (rc == 0) {
        struct s3_object_policy keep;
        struct s3_put_opts opts = keeping(&info, &keep, info.meta, info.n_meta);
        opts.metadata_copied = size <= FS_COPY_SINGLE_MAX;
        rc = size <= FS_COPY_SINGLE_MAX
                 ? s3_copy_object(fs->s3, src_key, dst_key, &opts, src_etag, etag_out, NULL)
                 : copy_multipart(fs, src_key, dst_key, size, src_etag, &opts, etag_out);
    }
    s3_object_info_clear(&info);
    return rc;
}

int fs_copy(struct fs *fs, const char *src_key, const char *dst_key, uint64_t size,
            const char *src_etag, const struct s3_put_opts *replace, char *etag_out)
{
    char etag[80] = "";
    int rc = copy_object(fs, src_key, dst_key, size, src_etag, replace, etag);
    /* A copy of a multipart or KMS-encrypted object has an ETag of its own,
     * and every copy pailfs makes replaces its source (a rename, or new
     * metadata onto itself): files open on the source version read on from
     * the copy. */
    if (!rc && src_etag && *src_etag && *etag)
        fs_readpool_moved(fs, src_key, src_etag, dst_key, etag);
    if (!rc && etag_out)
        snprintf(etag_out, 80, "%s", etag);
    return rc;
}

/* The metadata of `info` with ours (from *a) in place of the s3fs names. */
static size_t merge_meta(const struct fs_attr *a, const char *xattr,
                         const struct s3_object_info *info, struct s3_meta *out, size_t cap,
                         struct buf *store)
{
    size_t n = fs_meta_build(a, xattr, out, store);
    for (size_t i = 0; info && i < info->n_meta && n < cap; i++) {
        const char *name = info->meta[i].name;
        static const char *const ours[] = {"mode",  "uid",   "gid",  "mtime",
                                           "atime", "ctime", "xattr"};
        bool mine = false;
        for (size_t j = 0; j < 7; j++)
            mine = mine || strcmp(name, ours[j]) == 0;
        if (!mine)
            out[n++] = info->meta[i];
    }
    return n;
}

/* An old-style directory object "path" whose attributes now live in the
 * marker "path/" goes, as s3fs-fuse moves it. */
static int delete_old_dir(struct fs *fs, const char *path)
{
    char *key = fs_key(fs, path, false);
    int rc = key ? s3_delete_object(fs->s3, key, NULL) : ENOMEM;
    free(key);
    return rc;
}

int fs_store_meta(struct fs *fs, const char *path, const struct fs_attr *a, const char *xattr,
                  char *etag_out)
{
    bool dir = S_ISDIR(a->mode);
    if (dir && !*path && !*fs->key_prefix)
        return EPERM; /* the bucket's root has no object to hold metadata */
    char *key = fs_key(fs, path, dir);
    if (!key)
        return ENOMEM;
    struct buf store = BUF_INIT;
    struct s3_meta meta[64];
    int rc;
    for (int attempt = 0;; attempt++) {
        struct s3_object_info info = {0};
        rc = s3_head_object(fs->s3, key, &info, NULL);
        if (rc == ENOENT && dir) {
            /* An implicit directory: give it a marker to hold the attributes. */
            size_t n = fs_meta_build(a, xattr, meta, &store);
            struct s3_put_opts o = {.content_type = FS_DIR_CONTENT_TYPE, .meta = meta, .n_meta = n};
            rc = s3_put_object(fs->s3, key, "", 0, &o, etag_out, NULL);
            if (rc == 0 && a->old_dir)
                rc = delete_old_dir(fs, path);
        } else if (rc == 0) {
            size_t n = merge_meta(a, xattr, &info, meta, 64, &store);
            struct s3_object_policy keep;
            struct s3_put_opts o = keeping(&info, &keep, meta, n);
            rc = fs_copy(fs, key, key, info.size, info.etag, &o, etag_out);
            if (rc == 0 && dir && a->old_dir)
                rc = delete_old_dir(fs, path);
        }
        s3_object_info_clear(&info);
        if (rc != ESTALE || attempt == 2)
            break; /* ESTALE: the object changed between HEAD and copy */
    }
    buf_free(&store);
    free(key);
    return rc;
}

int fs_copy_new_ctime(struct fs *fs, const char *src_key, const char *dst_key, const char *src_etag,
                      const struct timespec *ctime, char *etag_out)
{
    struct s3_object_info info = {0};
    int rc = s3_head_object(fs->s3, src_key, &info, NULL);
    if (rc == 0) {
        /* Everything the object carries, but x-amz-meta-ctime. */
        struct s3_meta meta[64];
        size_t n = 0;
        for (size_t i = 0; i < info.n_meta && n < 63; i++)
            if (strcmp(info.meta[i].name, "ctime") != 0)
                meta[n++] = info.meta[i];
        struct buf store = BUF_INIT;
        fs_meta_put_time(&store, ctime);
        meta[n++] = (struct s3_meta){.name = "ctime", .value = store.data};
        struct s3_object_policy keep;
        struct s3_put_opts o = keeping(&info, &keep, meta, n);
        rc = !store.data ? ENOMEM
                         : fs_copy(fs, src_key, dst_key, info.size,
                                   src_etag && *src_etag ? src_etag : info.etag, &o, etag_out);
        buf_free(&store);
    }
    s3_object_info_clear(&info);
    return rc;
}
