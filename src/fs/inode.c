/* inode.c — the inode table, and turning S3 objects into attributes.
 *
 * A path is resolved against S3 in at most two requests: a one-key listing
 * of "path/" says whether a directory of that name exists (implicitly, by
 * keys under it, or by a "path/" marker, whose metadata a HEAD then reads),
 * and only when there is none does a HEAD of "path" look for an object.  So
 * a directory always wins over an object of the same name.  What is learnt
 * is kept on the inode for attr_ttl; the mount's own changes update it at
 * once, and files created or written here are the truth until uploaded. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FS_COPY_SINGLE_MAX (5ULL << 30)      /* CopyObject's limit */
#define FS_COPY_PART_MIN (512ULL << 20)

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

struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino)
{
    struct fs_inode *in;
    HASH_FIND(hh, fs->by_ino, &ino, sizeof(ino), in);
    return in;
}

static char *dup_meta(const struct s3_object_info *info, const char *name)
{
    const char *v = fs_meta_get(info, name);
    return v ? strdup(v) : NULL;
}

/* Is there a directory called `path`?  0 (and *a), ENOENT, or an errno. */
static int resolve_dir(struct fs *fs, const char *path, struct fs_attr *a, char **xattr)
{
    char *key = fs_key(fs, path, true);
    if (!key)
        return ENOMEM;
    struct s3_list_params p = {.prefix = key, .max_keys = 1};
    struct s3_list_page page = {0};
    int rc = s3_list_objects_v2(fs->s3, &p, &page, NULL);
    if (rc == 0 && page.n_entries == 0 && page.n_prefixes == 0 && page.n_skipped == 0)
        rc = ENOENT; /* a key we cannot show still makes the directory */
    if (rc == 0) {
        bool marker = page.n_entries && strcmp(page.entries[0].key, key) == 0;
        int64_t mtime = page.n_entries ? page.entries[0].mtime : fs->mount_time.tv_sec;
        fs_attr_from_listing(&fs->cfg, true, 0, mtime, NULL, a);
        if (marker) {
            struct s3_object_info info = {0};
            if (s3_head_object(fs->s3, key, &info, NULL) == 0) {
                fs_attr_from_head(&fs->cfg, &info, true, a);
                if (xattr)
                    *xattr = dup_meta(&info, "xattr");
            }
            a->marker = true;
            s3_object_info_clear(&info);
        }
    }
    s3_list_page_free(&page);
    free(key);
    return rc;
}

/* A gzip object shown decompressed: read-only, sized by gzview.c. */
static void make_view(struct fs *fs, const char *raw_path, bool suffix, struct fs_attr *a)
{
    a->gz = true;
    a->gz_suffix = suffix;
    a->comp_size = a->size;
    a->mode &= (mode_t)~0222;
    fs_gz_size(fs, raw_path, a);
}

static int resolve_object(struct fs *fs, const char *path, struct fs_attr *a, char **xattr)
{
    char *key = fs_key(fs, path, false);
    if (!key)
        return ENOMEM;
    struct s3_object_info info = {0};
    int rc = s3_head_object(fs->s3, key, &info, NULL);
    if (rc == 0) {
        fs_attr_from_head(&fs->cfg, &info, false, a);
        if (xattr)
            *xattr = dup_meta(&info, "xattr");
    }
    bool gz = rc == 0 && fs->cfg.gunzip != FS_GUNZIP_OFF && S_ISREG(a->mode) &&
              info.content_encoding && strcasecmp(info.content_encoding, "gzip") == 0;
    s3_object_info_clear(&info);
    free(key);
    if (gz)
        make_view(fs, path, false, a);
    return rc;
}

char *fs_view_raw_path(const char *path, bool gz_suffix)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, path);
    if (gz_suffix)
        buf_puts(&b, ".gz");
    return buf_steal(&b);
}

int fs_resolve_view(struct fs *fs, const char *path, struct fs_attr *a)
{
    size_t n = strlen(path);
    char *raw = fs_view_raw_path(path, true);
    if (!raw)
        return ENOMEM;
    int rc = strlen(fs->key_prefix) + n + 3 > FS_MAX_KEY ? ENOENT : resolve_object(fs, raw, a, NULL);
    if (!rc && !S_ISREG(a->mode))
        rc = ENOENT;
    if (!rc && !a->gz)
        make_view(fs, raw, true, a);
    else if (!rc)
        a->gz_suffix = true;
    free(raw);
    return rc;
}

int fs_resolve(struct fs *fs, const char *path, struct fs_attr *a, char **xattr)
{
    if (xattr)
        *xattr = NULL;
    size_t len = strlen(fs->key_prefix) + strlen(path);
    if (len > FS_MAX_KEY)
        return ENAMETOOLONG;
    /* a key of the full 1,024 bytes has no room for "/...": only a file */
    int rc = len == FS_MAX_KEY ? ENOENT : resolve_dir(fs, path, a, xattr);
    if (rc == ENOENT)
        rc = resolve_object(fs, path, a, xattr);
    return rc;
}

int fs_refresh(struct fs *fs, const char *path, mode_t type, bool gz_suffix, struct fs_attr *a,
               char **xattr)
{
    if (xattr)
        *xattr = NULL;
    if (gz_suffix)
        return fs_resolve_view(fs, path, a);
    int rc = S_ISDIR(type) ? resolve_dir(fs, path, a, xattr) : resolve_object(fs, path, a, xattr);
    if (rc == 0 && (a->mode & S_IFMT) != (type & S_IFMT)) {
        if (xattr) {
            free(*xattr);
            *xattr = NULL;
        }
        rc = ENOENT;
    }
    return rc;
}

void fs_entry_fill(struct fs *fs, struct fs_inode *in, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = in->ino;
    e->generation = 1;
    fs_attr_to_stat(&in->attr, in->ino, &e->attr);
    e->attr_timeout = fs->cfg.attr_ttl;
    e->entry_timeout = fs->cfg.attr_ttl;
    if (in->attr.gz && !in->attr.size_exact && !in->attr.size_estimated)
        e->attr_timeout = 0; /* a listed view's size: getattr estimates it */
}

/* Whether the bucket's view may replace what the inode holds: not while it
 * is the mount's own unsaved work. */
static bool inode_is_local_truth(const struct fs_inode *in)
{
    return in->local || (in->wf && in->wf->dirty);
}

struct fs_inode *fs_inode_publish(struct fs *fs, const char *path, const struct fs_attr *a,
                                  const char *xattr, bool from_listing, bool count_lookup,
                                  bool locked, struct fuse_entry_param *e)
{
    if (!locked)
        pthread_mutex_lock(&fs->lock);
    struct fs_inode *in;
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
    /* A listing cannot tell a symlink or the s3fs metadata: an inode that
     * knows more about the same object version keeps what it knows. */
    bool keep = in && (inode_is_local_truth(in) ||
                       (from_listing && (in->attr.has_meta || in->attr.gz) &&
                        (S_ISDIR(a->mode) ? S_ISDIR(in->attr.mode)
                                          : strcmp(in->attr.etag, a->etag) == 0)));
    if (in && !keep && (in->attr.mode & S_IFMT) != (a->mode & S_IFMT)) {
        fs_inode_unlink_locked(fs, in); /* a new thing under the old name */
        in = NULL;
    }
    if (!in) {
        in = calloc(1, sizeof(*in));
        if (!in || !(in->path = strdup(path))) {
            free(in);
            in = NULL;
            goto out;
        }
        in->ino = fs->next_ino++;
        in->linked = true;
        HASH_ADD(hh, fs->by_ino, ino, sizeof(in->ino), in);
        HASH_ADD_KEYPTR(hh_path, fs->by_path, in->path, strlen(in->path), in);
    }
    if (!keep) {
        if (strcmp(in->attr.etag, a->etag) != 0) {
            free(in->symlink);
            in->symlink = NULL;
        }
        in->attr = *a;
        if (!from_listing) {
            free(in->xattr);
            in->xattr = xattr ? strdup(xattr) : NULL;
        }
    }
    if (!inode_is_local_truth(in))
        in->attr_expire_ms = util_now_ms() + fs->attr_ttl_ms;
    if (count_lookup)
        in->nlookup++;
    if (e)
        fs_entry_fill(fs, in, e);
out:
    if (!locked)
        pthread_mutex_unlock(&fs->lock);
    return in;
}

void fs_inode_unlink_locked(struct fs *fs, struct fs_inode *in)
{
    if (in->linked) {
        HASH_DELETE(hh_path, fs->by_path, in);
        in->linked = false;
    }
}

/* The inode of the directory holding `path`, or NULL (fs->lock held). */
static struct fs_inode *parent_of(struct fs *fs, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    struct fs_inode *dir;
    HASH_FIND(hh_path, fs->by_path, path, n, dir);
    return dir;
}

void fs_dir_known_extend_locked(struct fs *fs, const char *dir_path)
{
    struct fs_inode *dir;
    HASH_FIND(hh_path, fs->by_path, dir_path, strlen(dir_path), dir);
    if (dir && dir->known_until_ms > util_now_ms())
        dir->known_until_ms = util_now_ms() + (uint64_t)(fs->cfg.neg_ttl * 1000);
}

static void inode_maybe_free(struct fs *fs, struct fs_inode *in)
{
    if (in->nlookup || in->opens || in->ino == FUSE_ROOT_ID)
        return;
    if (in->linked) {
        /* a child leaving the table: its directory no longer knows all */
        struct fs_inode *dir = parent_of(fs, in->path);
        if (dir)
            dir->known_until_ms = 0;
    }
    fs_inode_unlink_locked(fs, in);
    HASH_DELETE(hh, fs->by_ino, in);
    if (in->local)
        fs->n_local--;
    free(in->path);
    free(in->symlink);
    free(in->xattr);
    free(in);
}

void fs_inode_forget_locked(struct fs *fs, struct fs_inode *in, uint64_t n)
{
    in->nlookup = n > in->nlookup ? 0 : in->nlookup - n;
    inode_maybe_free(fs, in);
}

void fs_inode_close_locked(struct fs *fs, struct fs_inode *in)
{
    in->opens--;
    inode_maybe_free(fs, in);
}

/* ---- copies and metadata changes ------------------------------------ */

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
        rc = s3_upload_part_copy(fs->s3, dst, upload_id, parts[i].number, src, off, len, src_etag,
                                 parts[i].etag, NULL);
    }
    if (!rc)
        rc = s3_complete_multipart_upload(fs->s3, dst, upload_id, parts, n, etag_out, NULL);
    if (rc)
        s3_abort_multipart_upload(fs->s3, dst, upload_id, NULL);
    free(parts);
    free(upload_id);
    return rc;
}

int fs_copy(struct fs *fs, const char *src_key, const char *dst_key, uint64_t size,
            const char *src_etag, const struct s3_put_opts *replace, char *etag_out)
{
    if (size <= FS_COPY_SINGLE_MAX)
        return s3_copy_object(fs->s3, src_key, dst_key, replace, src_etag, etag_out, NULL);
    if (replace)
        return copy_multipart(fs, src_key, dst_key, size, src_etag, replace, etag_out);
    /* A multipart copy does not carry the metadata over: read it first. */
    struct s3_object_info info = {0};
    int rc = s3_head_object(fs->s3, src_key, &info, NULL);
    if (rc == 0) {
        struct s3_put_opts opts = {.content_type = info.content_type,
                                   .content_encoding = info.content_encoding,
                                   .meta = info.meta,
                                   .n_meta = info.n_meta};
        rc = copy_multipart(fs, src_key, dst_key, size, src_etag, &opts, etag_out);
    }
    s3_object_info_clear(&info);
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
        static const char *const ours[] = {"mode", "uid", "gid", "mtime", "atime", "ctime",
                                           "xattr"};
        bool mine = false;
        for (size_t j = 0; j < 7; j++)
            mine = mine || strcmp(name, ours[j]) == 0;
        if (!mine)
            out[n++] = info->meta[i];
    }
    return n;
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
        } else if (rc == 0) {
            size_t n = merge_meta(a, xattr, &info, meta, 64, &store);
            struct s3_put_opts o = {.content_type = info.content_type,
                                    .content_encoding = info.content_encoding,
                                    .meta = meta,
                                    .n_meta = n};
            rc = fs_copy(fs, key, key, info.size, info.etag, &o, etag_out);
        }
        s3_object_info_clear(&info);
        if (rc != ESTALE || attempt == 2)
            break; /* ESTALE: the object changed between HEAD and copy */
    }
    buf_free(&store);
    free(key);
    return rc;
}
