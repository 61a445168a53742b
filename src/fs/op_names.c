/* op_names.c — the FUSE operations on names: lookup, attributes, making,
 * removing and renaming files, directories and symlinks.
 *
 * Each operation reads what it needs from the inode table under fs->lock,
 * talks to S3 without it, and publishes the result.  Every one replies
 * exactly once; errors leave through fs_reply_err with the errno of the
 * S3 layer (ENOENT, EACCES, EIO, …) or EROFS on a read-only mount.
 * Listing a directory is op_dir.c, extended attributes op_xattr.c. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* The path of `parent`/`name`, checked: 0, ENOENT (unknown parent),
 * ENAMETOOLONG, ENOMEM.  *path is malloc'ed. */
static int child_path(struct fs *fs, fuse_ino_t parent, const char *name, char **path)
{
    size_t len = strlen(name);
    if (len > FS_MAX_NAME)
        return ENAMETOOLONG;
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *dir = fs_inode_get(fs, parent);
    *path = dir ? fs_child_path(dir->path, name) : NULL;
    pthread_mutex_unlock(&fs->lock);
    if (!dir)
        return ENOENT;
    if (!*path)
        return ENOMEM;
    if (strlen(fs->key_prefix) + strlen(*path) > FS_MAX_KEY) {
        free(*path);
        *path = NULL;
        return ENAMETOOLONG;
    }
    return 0;
}

/* A lookup answered by what this mount knows (fs->lock taken here): the
 * inode table first (a trusted inode), then what a listing of the parent
 * said.  0 and *e, ENOENT (hidden, or known absent), EAGAIN (S3 must be
 * asked; *untyped: only about the type of an empty key the listing
 * holds), ENOMEM. */
static int lookup_known(struct fs *fs, const char *path, struct fuse_entry_param *e, bool *untyped)
{
    *untyped = false;
    int rc = EAGAIN;
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in;
    struct fs_hidden *hid;
    HASH_FIND_STR(fs->hidden, path, hid);
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
    struct fs_attr a;
    uint64_t expire_ms;
    if (hid) {
        rc = ENOENT; /* unlinked while open: gone for everyone but its holders */
    } else if (in && fs_inode_trusted(in)) {
        in->nlookup++;
        fs_entry_fill(fs, in, e);
        rc = 0;
    } else {
        enum fs_known_answer k = fs_known_lookup_locked(fs, path, &a, &expire_ms);
        if (k == FS_KNOWN_PRESENT && a.untyped && in && !S_ISREG(in->attr.mode))
            k = FS_KNOWN_UNTYPED; /* a HEAD found more than a file there: ask it again */
        switch (k) {
        case FS_KNOWN_PRESENT:
            in = fs_inode_publish(fs, path, &a, NULL, true, true, true, e);
            if (in && !fs_inode_mine(in))
                in->attr_expire_ms = expire_ms; /* the listing's trust, no more */
            rc = in ? 0 : ENOMEM;
            break;
        case FS_KNOWN_ABSENT:
            rc = in ? EAGAIN : ENOENT; /* an inode says it was there: ask */
            break;
        case FS_KNOWN_UNTYPED: *untyped = true; break;
        case FS_KNOWN_NOTHING: break;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

/* The page of `pg` that page->token asks for (NULL: the first) into *d. */
static int list_one_page(struct fs *fs, const char *dir_path, const char *token, struct fs_dir *d)
{
    struct fs_dir_pager pg;
    int rc = fs_dir_pager_init(fs, dir_path, &pg);
    if (!rc)
        rc = fs_dir_pager_seek(&pg, token);
    if (!rc)
        rc = fs_dir_pager_next(&pg, NULL, d);
    fs_dir_pager_free(&pg);
    return rc;
}

/* A name of a directory whose last listing no longer answers for it
 * (attr_ttl passed): list the directory again when that listing was one
 * page, else the page of it that held the name (`ls -l` of a long listing
 * on a slow machine, whose names expire before it gets to them) — one
 * request that answers the name and its siblings (`rm -r`, a second `cat
 * dir/f`), rather than the name's own listing and HEAD.  0 and *e,
 * ENOENT, EAGAIN (not such a directory, or it did not answer: ask S3 for
 * the name), ENOMEM. */
static int lookup_relisted(struct fs *fs, const char *path, struct fuse_entry_param *e)
{
    fuse_ino_t dir_ino = 0;
    struct fs_known_page page;
    pthread_mutex_lock(&fs->lock);
    char *dir_path = fs_known_relist_locked(fs, path, &dir_ino, &page);
    pthread_mutex_unlock(&fs->lock);
    if (!dir_path)
        return EAGAIN;
    uint64_t gen = fs_known_gen(fs), listed_ms = util_now_ms();
    struct fs_dir d;
    int rc =
        page.whole ? fs_dir_list(fs, dir_path, 1, &d) : list_one_page(fs, dir_path, page.token, &d);
    if (!rc && page.whole && d.whole)
        fs_known_store(fs, dir_ino, dir_path, gen, listed_ms, &d);
    else if (!rc && !page.whole)
        fs_known_add_page(fs, dir_ino, dir_path, gen, listed_ms, &d, false, page.no, page.token);
    if (!rc && d.exists) /* the directory itself is there too */
        fs_inode_renew_dir(fs, dir_ino, util_now_ms());
    if (!rc)
        fs_dir_free(&d);
    free(page.token);
    free(dir_path);
    bool untyped;
    return rc ? EAGAIN : lookup_known(fs, path, e, &untyped);
}

/* An empty key the parent's listing holds: a file, or an old-style
 * directory object.  Its HEAD tells (the listing showed no "path/" keys,
 * so no listing of it is needed).  0 and *e, EAGAIN (gone since: ask S3
 * the usual way), ENOMEM, or the S3 errno. */
static int lookup_typed(struct fs *fs, const char *path, struct fuse_entry_param *e)
{
    struct fs_attr a;
    char *xattr = NULL;
    int rc = fs_resolve_key(fs, path, &a, &xattr);
    if (!rc && !fs_inode_publish(fs, path, &a, xattr, false, true, false, e))
        rc = ENOMEM;
    free(xattr);
    return rc == ENOENT ? EAGAIN : rc;
}

/* A lookup S3 answers: a directory (with the first page of its listing,
 * kept as what it holds when that was all of it), an object, or, with
 * gunzip=view/replace, the view of path + ".gz".  0 and *e, ENOENT, or an
 * errno. */
static int lookup_bucket(struct fs *fs, const char *path, struct fuse_entry_param *e)
{
    uint64_t gen = fs_known_gen(fs), listed_ms = util_now_ms();
    struct fs_attr a;
    struct fs_dir kids;
    char *xattr = NULL;
    int rc = fs_resolve(fs, path, &a, &xattr, &kids);
    if (rc == ENOENT && (fs->cfg.gunzip == FS_GUNZIP_VIEW || fs->cfg.gunzip == FS_GUNZIP_REPLACE))
        rc = fs_resolve_view(fs, path, &a);
    struct fs_inode *in = NULL;
    if (!rc && !(in = fs_inode_publish(fs, path, &a, xattr, false, true, false, e)))
        rc = ENOMEM;
    if (in && kids.whole)
        fs_known_store(fs, e->ino, path, gen, listed_ms, &kids);
    else if (in && S_ISDIR(a.mode)) /* its names, but not yet which are absent; not a
                                     * new listing: an opendir begins that */
        fs_known_add_page(fs, e->ino, path, gen, listed_ms, &kids, false, 0, NULL);
    if (in && S_ISDIR(a.mode))
        fs_ahead_keep(fs, path, &kids, gen, listed_ms); /* for an opendir next */
    fs_dir_free(&kids);
    free(xattr);
    return rc;
}

void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fuse_entry_param e;
    char *path = NULL;
    bool untyped = false;
    int rc = child_path(fs, parent, name, &path);
    if (!rc)
        rc = lookup_known(fs, path, &e, &untyped);
    if (rc == EAGAIN && untyped)
        rc = lookup_typed(fs, path, &e);
    if (rc == EAGAIN && fs_prefetch_settle(fs, path))
        rc = lookup_known(fs, path, &e, &untyped); /* the fetch ahead of it answered */
    if (rc == EAGAIN)
        rc = lookup_relisted(fs, path, &e);
    if (rc == EAGAIN)
        rc = lookup_bucket(fs, path, &e);
    free(path);
    if (rc == ENOENT) { /* the kernel keeps the miss for neg_ttl */
        memset(&e, 0, sizeof(e));
        e.entry_timeout = fs->cfg.neg_ttl;
        rc = 0;
    }
    if (rc)
        fs_reply_err(req, rc);
    else
        fuse_reply_entry(req, &e);
}

/* What getattr and setattr answer: *a as a stat, with no link left for an
 * inode unlinked while open (fstat after unlink); fs->lock held, `in` may
 * be NULL. */
static void stat_of_locked(const struct fs_inode *in, const struct fs_attr *a, fuse_ino_t ino,
                           struct stat *st)
{
    fs_attr_to_stat(a, ino, st);
    if (in && !in->linked)
        st->st_nlink = 0;
}

void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_attr a;
    bool asked = false;
    int rc = fs_inode_refresh(fs, ino, false, &asked);
    char *path = rc ? NULL : fs_inode_snapshot(fs, ino, &a, NULL, NULL);
    if (!rc && !path)
        rc = ENOENT;
    if (!rc && !asked && a.gz && !a.size_exact && !a.size_estimated) {
        /* a view seen in a listing only: its size now (no HEAD needed) */
        char *raw = fs_view_raw_path(path, a.gz_suffix);
        if (raw) {
            fs_gz_size(fs, raw, &a);
            if (!a.size_exact)
                a.size_estimated = true;
            fs_inode_view_size_update(fs, ino, &a);
            free(raw);
        }
    }
    free(path);
    if (rc) {
        fs_reply_err(req, rc);
        return;
    }
    struct stat st;
    pthread_mutex_lock(&fs->lock);
    stat_of_locked(fs_inode_get(fs, ino), &a, ino, &st);
    pthread_mutex_unlock(&fs->lock);
    fuse_reply_attr(req, &st, fs->cfg.attr_ttl);
}

/* The attributes setattr asks for (`to_set` of `attr`) over *a. */
static void setattr_build(struct fs_attr *a, const struct stat *attr, int to_set)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (to_set & FUSE_SET_ATTR_MODE)
        a->mode = (a->mode & S_IFMT) | (attr->st_mode & 07777);
    if (to_set & FUSE_SET_ATTR_UID)
        a->uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID)
        a->gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        a->atime = now;
    else if (to_set & FUSE_SET_ATTR_ATIME)
        a->atime = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        a->mtime = now;
    else if (to_set & FUSE_SET_ATTR_MTIME)
        a->mtime = attr->st_mtim;
    a->ctime = (to_set & FUSE_SET_ATTR_CTIME) ? attr->st_ctim : now;
    a->has_meta = true;
}

/* Keep the attributes *a stored (`local`: on the inode only) on `in`,
 * held, whose version was `from` (etag: the copy's, "" for none). */
static void setattr_publish(struct fs *fs, struct fs_inode *in, struct fs_attr *a, bool local,
                            const char *from, const char *etag)
{
    pthread_mutex_lock(&fs->lock);
    if (S_ISDIR(a->mode) && !local) {
        a->marker = true;
        a->old_dir = false; /* fs_store_meta moved it to "path/" */
    }
    if (*etag && !S_ISDIR(a->mode))
        snprintf(a->etag, sizeof(a->etag), "%s", etag);
    in->attr = *a;
    if (!local)
        in->attr_expire_ms = util_now_ms() + fs->attr_ttl_ms;
    if (!local && in->linked)
        fs_known_changed_locked(fs, in->path); /* listings read ahead lack it */
    pthread_mutex_unlock(&fs->lock);
    if (!local)
        fs_wfile_meta_stored(fs, in, from, etag);
}

/* chmod, chown, utimens of `in` (held): stored in the object's metadata
 * (a copy onto itself), or only on the inode while the file's own state
 * is the truth (not stored yet), and for the bucket's root, which has no
 * object to hold them: kept for the mount's life (`rsync -a`, `cp -a`
 * into the mount end without errors).  0, ENOMEM, or the S3 errno. */
static int setattr_meta(struct fs *fs, struct fs_inode *in, const struct stat *attr, int to_set)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_attr a = in->attr;
    char *path = strdup(in->path), *xattr = in->xattr ? strdup(in->xattr) : NULL;
    bool bucket_root = in->ino == FUSE_ROOT_ID && !*fs->key_prefix;
    bool local = fs_inode_local_truth(in) || bucket_root;
    pthread_mutex_unlock(&fs->lock);
    char from[sizeof(a.etag)], etag[80] = "";
    snprintf(from, sizeof(from), "%s", a.etag);
    setattr_build(&a, attr, to_set);
    int rc = !path ? ENOMEM : local ? 0 : fs_store_meta(fs, path, &a, xattr, etag);
    if (!rc)
        setattr_publish(fs, in, &a, local, from, etag);
    free(path);
    free(xattr);
    return rc;
}

/* Give back setattr's hold on `in` with *st, its attributes now.  The last
 * hold stores what a truncate left: its error is the truncate's. */
static int setattr_done(struct fs *fs, struct fs_inode *in, fuse_ino_t ino, int to_set, int rc,
                        struct stat *st)
{
    pthread_mutex_lock(&fs->lock);
    stat_of_locked(in, &in->attr, ino, st);
    pthread_mutex_unlock(&fs->lock);
    int put = fs_inode_put(fs, in);
    return !rc && (to_set & FUSE_SET_ATTR_SIZE) ? put : rc;
}

#define SETATTR_META                                                                               \
    (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME |            \
     FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |                     \
     FUSE_SET_ATTR_CTIME)

void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                   struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *in = NULL;
    struct stat st;
    int rc = fs->cfg.read_only ? EROFS : 0;
    if (!rc && !(in = fs_inode_hold(fs, ino))) /* held across the requests below */
        rc = ENOENT;
    if (!rc && (to_set & FUSE_SET_ATTR_SIZE))
        rc = S_ISDIR(in->attr.mode) ? EISDIR : fs_truncate(fs, in, (uint64_t)attr->st_size);
    if (!rc && (to_set & SETATTR_META))
        rc = setattr_meta(fs, in, attr, to_set);
    if (in)
        rc = setattr_done(fs, in, ino, to_set, rc, &st);
    if (rc)
        fs_reply_err(req, rc);
    else
        fuse_reply_attr(req, &st, fs->cfg.attr_ttl);
}

/* Store a new empty object (a directory marker, a file from mknod, or a
 * symlink holding its target) and answer with its entry. */
static void make_object(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        const char *body)
{
    struct fs *fs = fs_of(req);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    char *path = NULL, *key = NULL;
    struct fuse_entry_param e;
    int rc = fs->cfg.read_only ? EROFS : child_path(fs, parent, name, &path);
    if (rc)
        goto out;
    bool dir = S_ISDIR(mode);
    if (dir && strlen(fs->key_prefix) + strlen(path) + 1 > FS_MAX_KEY) {
        rc = ENAMETOOLONG; /* its marker "path/" would not fit in a key */
        goto out;
    }
    struct fs_attr a = {0};
    a.mode = mode;
    a.uid = ctx->uid;
    a.gid = ctx->gid;
    a.size = body ? strlen(body) : 0;
    clock_gettime(CLOCK_REALTIME, &a.mtime);
    a.atime = a.ctime = a.mtime;
    a.has_meta = true;
    a.marker = dir;
    struct buf store = BUF_INIT;
    struct s3_meta meta[FS_META_MAX];
    /* a symbolic link (body) keeps no type, as before */
    struct s3_put_opts o = {.content_type = dir    ? FS_DIR_CONTENT_TYPE
                                            : body ? NULL
                                                   : fs_content_type(fs, path),
                            .meta = meta,
                            .n_meta = fs_meta_build(&a, NULL, meta, &store)};
    key = fs_key(fs, path, dir);
    rc = key ? s3_put_object(fs->s3, key, body ? body : "", a.size, &o, dir ? NULL : a.etag, NULL)
             : ENOMEM;
    buf_free(&store);
    if (rc)
        goto out;
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_publish(fs, path, &a, NULL, false, true, true, &e);
    if (in && body) {
        free(in->symlink);
        in->symlink = strdup(body);
    }
    struct fs_inode *pdir = fs_inode_get(fs, parent);
    if (pdir)
        fs_dir_known_extend_locked(fs, pdir->path);
    if (in && S_ISDIR(mode)) /* new and empty: its names are the ones made here */
        in->known_until_ms = util_now_ms() + (uint64_t)(fs->cfg.neg_ttl * 1000);
    pthread_mutex_unlock(&fs->lock);
    if (!in)
        rc = ENOMEM;
out:
    free(path);
    free(key);
    if (rc)
        fs_reply_err(req, rc);
    else
        fuse_reply_entry(req, &e);
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    make_object(req, parent, name, S_IFDIR | (mode & 07777), NULL);
}

void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    if (!S_ISREG(mode)) { /* S3 has no devices, FIFOs or sockets */
        fs_reply_err(req, EPERM);
        return;
    }
    make_object(req, parent, name, mode, NULL);
}

void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    make_object(req, parent, name, S_IFLNK | 0777, link);
}

void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in = fs_inode_get(fs, ino);
    char *target = in && in->symlink ? strdup(in->symlink) : NULL;
    char *key = in && !target ? fs_key(fs, in->path, false) : NULL;
    char etag[80];
    snprintf(etag, sizeof(etag), "%s", in ? in->attr.etag : "");
    bool is_link = in && S_ISLNK(in->attr.mode);
    pthread_mutex_unlock(&fs->lock);
    int rc = !in ? ENOENT : !is_link ? EINVAL : 0;
    if (!rc && !target) {
        struct buf b = BUF_INIT;
        /* The target is the body; PATH_MAX bounds it. */
        rc = key ? s3_get_to_buf(fs->s3, key, 0, 4096, *etag ? etag : NULL, &b, 4096, NULL, NULL)
                 : ENOMEM;
        if (!rc) {
            target = buf_steal(&b);
            pthread_mutex_lock(&fs->lock);
            if ((in = fs_inode_get(fs, ino)) && !in->symlink)
                in->symlink = target ? strdup(target) : NULL;
            pthread_mutex_unlock(&fs->lock);
        }
        buf_free(&b);
        if (rc == ESTALE)
            rc = EIO;
    }
    free(key);
    if (!rc && !target)
        rc = ENOMEM;
    if (rc)
        fs_reply_err(req, rc);
    else
        fuse_reply_readlink(req, target);
    free(target);
}

void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    char *path = NULL, *key = NULL;
    int rc = fs->cfg.read_only ? EROFS : child_path(fs, parent, name, &path);
    if (rc)
        goto out;
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in;
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
    if (in && S_ISDIR(in->attr.mode)) {
        rc = EISDIR;
    } else if (in && in->opens) {
        /* Open files keep reading their object: it goes at the last close. */
        if (!in->local) {
            struct fs_hidden *h = calloc(1, sizeof(*h));
            if (h && (h->path = strdup(path))) {
                HASH_ADD_KEYPTR(hh, fs->hidden, h->path, strlen(h->path), h);
                in->delete_at_release = true;
            } else {
                free(h);
                rc = ENOMEM;
            }
        }
        if (!rc)
            fs_inode_unlink_locked(fs, in);
        pthread_mutex_unlock(&fs->lock);
        goto out;
    }
    bool local = in && in->local;
    pthread_mutex_unlock(&fs->lock);
    if (rc)
        goto out;
    if (!local) {
        key = fs_key(fs, path, false);
        rc = key ? s3_delete_object(fs->s3, key, NULL) : ENOMEM;
    }
    if (!rc) {
        pthread_mutex_lock(&fs->lock);
        HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
        if (in)
            fs_inode_unlink_locked(fs, in);
        fs_known_forget_locked(fs, path); /* also when no inode held it */
        pthread_mutex_unlock(&fs->lock);
    }
out:
    free(path);
    free(key);
    fs_reply_err(req, rc);
}

void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    char *path = NULL, *key = NULL;
    bool empty = false;
    int rc = fs->cfg.read_only ? EROFS : child_path(fs, parent, name, &path);
    if (!rc)
        rc = fs_dir_is_empty(fs, path, &empty);
    if (!rc && !empty)
        rc = ENOTEMPTY;
    if (!rc) {
        /* the marker "path/", and an old-style directory's object "path" */
        pthread_mutex_lock(&fs->lock);
        struct fs_inode *in;
        HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
        bool old_dir = in && S_ISDIR(in->attr.mode) && in->attr.old_dir;
        pthread_mutex_unlock(&fs->lock);
        key = fs_key(fs, path, true);
        rc = key ? s3_delete_object(fs->s3, key, NULL) : ENOMEM;
        if (!rc && old_dir) {
            free(key);
            key = fs_key(fs, path, false);
            rc = key ? s3_delete_object(fs->s3, key, NULL) : ENOMEM;
        }
    }
    if (!rc) {
        pthread_mutex_lock(&fs->lock);
        struct fs_inode *in;
        HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
        if (in)
            fs_inode_unlink_locked(fs, in);
        fs_known_forget_locked(fs, path); /* also when no inode held it */
        pthread_mutex_unlock(&fs->lock);
    }
    free(path);
    free(key);
    fs_reply_err(req, rc);
}

/* What is at `path`: its type (0 when nothing) and, for files, whether it
 * exists only here and its size and ETag. */
struct node_info {
    mode_t type;
    bool local;
    bool old_dir; /* a directory with an old-style object "path" */
    bool marker;  /* a directory with a marker "path/" */
    uint64_t size;
    char etag[80];
};

static int node_at(struct fs *fs, const char *path, struct node_info *ni)
{
    memset(ni, 0, sizeof(*ni));
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in;
    HASH_FIND(hh_path, fs->by_path, path, strlen(path), in);
    struct fs_attr a;
    uint64_t expire_ms;
    enum fs_known_answer k = FS_KNOWN_NOTHING;
    bool trusted = in && fs_inode_trusted(in);
    if (trusted) {
        a = in->attr;
        ni->local = in->local;
    } else {
        k = fs_known_lookup_locked(fs, path, &a, &expire_ms);
        if ((k == FS_KNOWN_ABSENT && in) || k == FS_KNOWN_UNTYPED)
            k = FS_KNOWN_NOTHING; /* an inode says it was there, or the type: ask */
    }
    pthread_mutex_unlock(&fs->lock);
    int rc = 0;
    if (k == FS_KNOWN_ABSENT)
        return 0;
    if (!trusted && k == FS_KNOWN_NOTHING)
        rc = fs_resolve(fs, path, &a, NULL, NULL);
    if (rc == ENOENT)
        return 0;
    if (rc == 0) {
        ni->type = a.mode & S_IFMT;
        ni->old_dir = a.old_dir;
        ni->marker = a.marker;
        ni->size = a.size;
        snprintf(ni->etag, sizeof(ni->etag), "%s", a.etag);
    }
    return rc;
}

/* Move the table's inodes of `src` (and, for a directory, below it) to
 * `dst`; an inode already at `dst` is unlinked; the one moved to `dst`
 * gets the rename's ctime. */
static void rename_in_table(struct fs *fs, const char *src, const char *dst,
                            const struct timespec *ctime, const char *etag)
{
    size_t slen = strlen(src);
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *in, *tmp, *moved = NULL;
    /* what listings said of both names, and below them, is history now */
    fs_known_forget_below_locked(fs, src);
    fs_known_forget_below_locked(fs, dst);
    fs_known_forget_locked(fs, src);
    fs_known_forget_locked(fs, dst);
    HASH_FIND(hh_path, fs->by_path, dst, strlen(dst), in);
    if (in)
        fs_inode_unlink_locked(fs, in);
    /* Collect first: re-adding while iterating the same table is unsafe. */
    HASH_ITER(hh_path, fs->by_path, in, tmp)
    {
        if (strncmp(in->path, src, slen) != 0 || (in->path[slen] && in->path[slen] != '/'))
            continue;
        struct buf np = BUF_INIT;
        buf_puts(&np, dst);
        buf_puts(&np, in->path + slen);
        if (!np.data)
            continue;
        HASH_DELETE(hh_path, fs->by_path, in);
        free(in->path);
        in->path = buf_steal(&np);
        in->hh_path.next = moved; /* reuse the link as a list until re-added */
        moved = in;
    }
    while (moved) {
        in = moved;
        moved = in->hh_path.next;
        struct fs_inode *clash;
        HASH_FIND(hh_path, fs->by_path, in->path, strlen(in->path), clash);
        if (clash)
            fs_inode_unlink_locked(fs, clash);
        HASH_ADD_KEYPTR(hh_path, fs->by_path, in->path, strlen(in->path), in);
        if (strcmp(in->path, dst) == 0) {
            in->attr.ctime = *ctime;
            in->attr.marker |= in->attr.old_dir; /* rename_old_dir made it */
            in->attr.old_dir = false;
        }
        /* A copy is a new version: S3 gives it an ETag of its own when the
         * source was a multipart upload or is KMS-encrypted, and an open
         * pinned to the old one would be refused (412).  The copy's ETag,
         * when known, else a HEAD at the next use. */
        if (S_ISDIR(in->attr.mode) || in->local)
            continue;
        if (strcmp(in->path, dst) == 0 && *etag)
            snprintf(in->attr.etag, sizeof(in->attr.etag), "%s", etag);
        else
            in->attr_expire_ms = 0;
    }
    pthread_mutex_unlock(&fs->lock);
}

/* After the keys under "src/" moved: an old-style directory object "src"
 * becomes the marker "dst/" (its metadata kept, its ctime the rename's),
 * unless a marker moved there already (`marker`); then it only goes. */
static int rename_old_dir(struct fs *fs, const char *src, const char *dst, bool marker,
                          const struct timespec *ctime)
{
    char *skey = fs_key(fs, src, false), *dkey = fs_key(fs, dst, true);
    int rc = !skey || !dkey ? ENOMEM
             : marker       ? 0
                            : fs_copy_new_ctime(fs, skey, dkey, NULL, ctime, NULL);
    if (!rc)
        rc = s3_delete_object(fs->s3, skey, NULL);
    free(skey);
    free(dkey);
    return rc;
}

void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags)
{
    struct fs *fs = fs_of(req);
    char *src = NULL, *dst = NULL, *skey = NULL, *dkey = NULL;
    struct node_info s, d;
    struct timespec now; /* the ctime of what is renamed, stored with it */
    clock_gettime(CLOCK_REALTIME, &now);
    char etag[80] = ""; /* a renamed file's copy */
    int rc = 0;
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        rc = EINVAL; /* RENAME_EXCHANGE, RENAME_WHITEOUT: S3 cannot swap two keys atomically */
    else if (fs->cfg.read_only)
        rc = EROFS;
    if (!rc)
        rc = child_path(fs, parent, name, &src);
    if (!rc)
        rc = child_path(fs, newparent, newname, &dst);
    if (rc || strcmp(src, dst) == 0)
        goto out;
    if ((rc = node_at(fs, src, &s)) || (rc = node_at(fs, dst, &d)))
        goto out;
    if (!s.type) {
        rc = ENOENT;
    } else if (d.type && (flags & RENAME_NOREPLACE)) {
        rc = EEXIST;
    } else if (S_ISDIR(s.type)) {
        size_t slen = strlen(src);
        bool empty = true;
        if (strncmp(dst, src, slen) == 0 && dst[slen] == '/')
            rc = EINVAL;
        else if (d.type && !S_ISDIR(d.type))
            rc = ENOTDIR;
        else if (d.type && !(rc = fs_dir_is_empty(fs, dst, &empty)) && !empty)
            rc = ENOTEMPTY;
        if (!rc)
            rc = fs_rename_dir(fs, src, dst, &now);
        if (!rc && s.old_dir)
            rc = rename_old_dir(fs, src, dst, s.marker, &now);
    } else {
        if (S_ISDIR(d.type))
            rc = EISDIR;
        else if (!s.local) {
            skey = fs_key(fs, src, false);
            dkey = fs_key(fs, dst, false);
            rc = skey && dkey ? fs_copy_new_ctime(fs, skey, dkey, s.etag, &now, etag) : ENOMEM;
            if (!rc)
                rc = s3_delete_object(fs->s3, skey, NULL);
        }
    }
    if (!rc)
        rename_in_table(fs, src, dst, &now, etag);
    if (rc == ESTALE)
        rc = EIO; /* the source changed during the copy: nothing was deleted */
out:
    free(src);
    free(dst);
    free(skey);
    free(dkey);
    fs_reply_err(req, rc);
}
