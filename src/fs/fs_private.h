/* fs_private.h — what the files of src/fs share, and nobody else sees.
 *
 * The filesystem keeps one table of inodes.  An inode is a name the kernel
 * knows: a path relative to the mount's prefix ("" for the root, "a/b" for
 * a file or a directory; directories carry no trailing slash), its type and
 * its attributes with the time they stop being trusted.  S3 has no inodes,
 * so numbers are handed out as names are met and never reused; an inode
 * lives until the kernel forgets it and no file handle holds it.
 *
 * Locking: one mutex, fs->lock, protects both hash tables and every inode
 * field marked so below.  It is never held across an S3 request: code reads
 * what it needs under the lock, talks to S3 unlocked, then takes the lock
 * again to publish the result.  File data of an open file (struct fs_wfile)
 * has its own mutex. */
#ifndef PAILFS_FS_PRIVATE_H
#define PAILFS_FS_PRIVATE_H

#include "fs/fs.h"
#include "util/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <uthash.h>

#define FS_MAX_NAME 255
#define FS_MAX_KEY 1024        /* S3's limit on a key, in bytes */
#define FS_DIR_CONTENT_TYPE "application/x-directory"

/* What is known about one object or directory, as read from S3. */
struct fs_attr {
    mode_t mode;            /* type bits and permission bits */
    uid_t uid;
    gid_t gid;
    uint64_t size;
    struct timespec mtime, atime, ctime;
    char etag[80];          /* "" for implicit directories */
    bool has_meta;          /* mode/uid/gid came from x-amz-meta-* (a HEAD) */
    bool marker;            /* directory: a "path/" object exists */
};

/* The staged contents of a file open for writing (the simple write path:
 * an unlinked temporary file in cache_dir, uploaded whole at flush). */
struct fs_wfile {
    pthread_mutex_t lock;   /* serialises load, truncate, upload */
    int fd;                 /* staging file */
    bool loaded;            /* fd holds the object's bytes (or they were truncated away) */
    bool dirty;             /* fd differs from the object in the bucket */
    int error;              /* a failed upload, reported by the next flush */
};

struct fs_inode {
    fuse_ino_t ino;
    UT_hash_handle hh;      /* fs->by_ino */
    UT_hash_handle hh_path; /* fs->by_path, while `linked` */

    /* protected by fs->lock */
    char *path;
    bool linked;            /* reachable by path (false once unlinked/replaced) */
    uint64_t nlookup;       /* the kernel's references */
    unsigned opens;         /* open file handles */
    struct fs_attr attr;
    uint64_t attr_expire_ms;/* util_now_ms() after which attr is re-read */
    bool local;             /* created here, not yet stored in the bucket */
    bool delete_at_release; /* unlinked while open: delete at last release */
    char *symlink;          /* target, once read */
    char *xattr;            /* the x-amz-meta-xattr value as stored, or NULL */
    char kcache_etag[80];   /* the version the kernel's page cache holds */
    struct fs_wfile *wf;    /* while open for writing */
};

/* A name that was unlinked while open: hidden from listings until the
 * deferred delete has run. */
struct fs_hidden {
    char *path;
    UT_hash_handle hh;
};

/* Every handle given to the kernel is on fs->handles, so handles the kernel
 * never released (the session ended with files open) are freed at unmount. */
struct fs_open {
    struct fs_open *prev, *next;
    void (*free_fn)(struct fs_open *);
};

struct fs_readpool;
struct fs_reader;
struct rblock;

struct fs {
    struct fs_config cfg;
    struct s3_client *s3;
    char *key_prefix;          /* "" or "prefix/" */
    uint64_t attr_ttl_ms;
    struct timespec mount_time;

    pthread_mutex_t lock;
    struct fs_inode *by_ino;   /* protected by lock */
    struct fs_inode *by_path;  /* protected by lock */
    struct fs_hidden *hidden;  /* protected by lock */
    fuse_ino_t next_ino;       /* protected by lock */
    unsigned n_local;          /* local inodes; protected by lock */
    struct fs_open handles;    /* list head; protected by lock */
    struct fs_readpool *rp;    /* the read path's workers, memory and cache */
    bool warned_conflict;      /* protected by lock */
};

/* ---- meta.c: s3fs-compatible metadata (pure functions) ---------------- */

/* Fill *a from a HEAD response of an object (not a directory marker unless
 * `is_dir`).  Mode, uid, gid and times come from x-amz-meta-* when present,
 * else from the config's defaults and Last-Modified; the config's forced
 * uid/gid/umask apply last. */
void fs_attr_from_head(const struct fs_config *cfg, const struct s3_object_info *info, bool is_dir,
                       struct fs_attr *a);
/* Fill *a for an object or a directory seen in a listing (no metadata). */
void fs_attr_from_listing(const struct fs_config *cfg, bool is_dir, uint64_t size, int64_t mtime,
                          const char *etag, struct fs_attr *a);
/* Apply the config's forced owner and umask to *a. */
void fs_attr_apply_config(const struct fs_config *cfg, struct fs_attr *a);
void fs_attr_to_stat(const struct fs_attr *a, fuse_ino_t ino, struct stat *st);

/* The x-amz-meta-* headers that describe *a, plus the xattr value (may be
 * NULL), into meta[] (at most FS_META_MAX entries, strings in `store`,
 * which the caller frees with buf_free).  Returns the number of entries. */
#define FS_META_MAX 8
size_t fs_meta_build(const struct fs_attr *a, const char *xattr, struct s3_meta *meta,
                     struct buf *store);
/* Find meta `name` (lower case, without x-amz-meta-) in info, or NULL. */
const char *fs_meta_get(const struct s3_object_info *info, const char *name);

/* Parse "1700000000" or "1700000000.123456789" (seconds since the epoch).
 * 0 or EINVAL. */
int fs_parse_time(const char *s, struct timespec *out);

/* xattrs stored as s3fs does: x-amz-meta-xattr is the percent-encoded JSON
 * object {"name":"base64(value)",...}.  These work on that encoded string.
 * get: 0 (value malloc'ed in *val, caller frees), ENODATA, EINVAL (corrupt).
 * set: value NULL removes; returns the new encoded string in *out (malloc'ed,
 *      NULL when no attribute is left), or ENODATA (remove of a missing one),
 *      EEXIST/ENODATA for XATTR_CREATE/XATTR_REPLACE, EINVAL, ENOMEM.
 * list: the names, each NUL-terminated, into *out (malloc'ed) and *len. */
int fs_xattr_get(const char *encoded, const char *name, char **val, size_t *len);
int fs_xattr_set(const char *encoded, const char *name, const char *val, size_t len, int flags,
                 char **out);
int fs_xattr_list(const char *encoded, char **out, size_t *len);

/* Whether `name` can be a POSIX file name (not "", ".", "..", no '/',
 * at most 255 bytes). */
bool fs_name_valid(const char *name, size_t len);

/* ---- inode.c: the inode table and metadata -------------------------- */

/* The S3 key of a path ("" → the prefix itself), with a trailing '/' when
 * `dir`.  Caller frees.  NULL on ENOMEM. */
char *fs_key(struct fs *fs, const char *path, bool dir);
/* parent path + "/" + name (or name for the root).  Caller frees. */
char *fs_child_path(const char *parent, const char *name);

/* Find an inode by number and take nothing; NULL if unknown.  Call with
 * fs->lock held. */
struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino);
/* Look `path` up in S3: a directory (prefix or marker) wins over an object
 * of the same name.  0 and *a filled, ENOENT, or the S3 errno. */
int fs_resolve(struct fs *fs, const char *path, struct fs_attr *a, char **xattr);
/* Re-read the attributes of `path` known to be of type `mode`.  Same
 * returns as fs_resolve(); ENOENT also when it is now of another type. */
int fs_refresh(struct fs *fs, const char *path, mode_t type, struct fs_attr *a, char **xattr);
/* Publish what was learnt about `path`: find or make its inode (a new one
 * when the type changed), set its attributes, count one lookup when
 * `count_lookup`, and fill *e for the kernel.  Takes fs->lock itself when
 * `locked` is false.  Returns the inode, or NULL on ENOMEM. */
struct fs_inode *fs_inode_publish(struct fs *fs, const char *path, const struct fs_attr *a,
                                  const char *xattr, bool from_listing, bool count_lookup,
                                  bool locked, struct fuse_entry_param *e);
/* Fill *e for an inode (with fs->lock held). */
void fs_entry_fill(struct fs *fs, struct fs_inode *in, struct fuse_entry_param *e);
/* Take `in` out of the path table (unlink, or replaced by a rename). */
void fs_inode_unlink_locked(struct fs *fs, struct fs_inode *in);
/* Drop `n` kernel references / one open; frees the inode when nothing
 * holds it any more.  With fs->lock held. */
void fs_inode_forget_locked(struct fs *fs, struct fs_inode *in, uint64_t n);
void fs_inode_close_locked(struct fs *fs, struct fs_inode *in);
/* Write the attributes of an object that exists in the bucket: CopyObject
 * onto itself with metadata REPLACE (a marker for directories, created when
 * the directory is implicit).  *a is the new state. */
int fs_store_meta(struct fs *fs, const char *path, const struct fs_attr *a, const char *xattr,
                  char *etag_out);
/* Server-side copy of `src` to `dst`, multipart above 5 GiB.  `replace`
 * NULL keeps the metadata. */
int fs_copy(struct fs *fs, const char *src_key, const char *dst_key, uint64_t size,
            const char *src_etag, const struct s3_put_opts *replace, char *etag_out);

/* Put a new handle on fs->handles / take it off (they take fs->lock). */
void fs_open_track(struct fs *fs, struct fs_open *o, void (*free_fn)(struct fs_open *));
void fs_open_untrack(struct fs *fs, struct fs_open *o);

/* ---- dir.c ----------------------------------------------------------- */

struct fs_dirent {
    char *name;
    struct fs_attr attr;
};

struct fs_dir {
    struct fs_dirent *ents;
    size_t n;
};

int fs_dir_list(struct fs *fs, const char *path, struct fs_dir *d);
void fs_dir_free(struct fs_dir *d);
int fs_dir_is_empty(struct fs *fs, const char *path, bool *empty);
int fs_rename_dir(struct fs *fs, const char *src, const char *dst);

/* ---- file.c: open files (the simple data path) ---------------------- */

/* A file handle (fuse_file_info.fh). */
struct fs_handle {
    struct fs_open open;    /* first: the handle is freed through it */
    struct fs_inode *in;
    char etag[80];          /* the object version read, for If-Match */
    bool write;
    struct fs_reader *reader; /* reads of the object version opened */
};

/* ---- read.c: the read path ------------------------------------------ */

/* Start / stop the read path of `fs` (workers, memory bound, block cache).
 * new: 0, ENOMEM, EBUSY (the block cache is another process's), or the
 * errno of opening the cache. */
int fs_readpool_new(struct fs *fs);
void fs_readpool_free(struct fs *fs);
/* A reader of the object version described by *a at `path`; NULL on
 * ENOMEM.  Freed with fs_reader_free (jobs in flight finish on their own). */
struct fs_reader *fs_reader_new(struct fs *fs, fuse_ino_t ino, const char *path,
                                const struct fs_attr *a);
void fs_reader_free(struct fs_reader *r);
/* What a read hands to fuse_reply_iov: one piece per block, either in the
 * block in memory (pinned[i], kept from being freed until
 * fs_read_reply_done()) or, for bytes read straight from the disk cache,
 * in `buf` (pinned[i] NULL; freed by fs_read_reply_done()). */
#define FS_READ_MAX_IOV 8
struct fs_read_reply {
    struct iovec iov[FS_READ_MAX_IOV];
    struct rblock *pinned[FS_READ_MAX_IOV];
    size_t n;
    char *buf;
    struct fs_readpool *rp;
};
/* Read [off, off+size) (clipped at the end of the object; at most 7 MiB)
 * into rep->iov[0..n).  0 (call fs_read_reply_done after replying), EINVAL
 * (too big), or EIO (the server failed, or the object changed since it was
 * opened). */
int fs_reader_read(struct fs_reader *r, uint64_t off, size_t size, struct fs_read_reply *rep);
void fs_read_reply_done(struct fs_read_reply *rep);

/* Store what an inode's staging file holds (if dirty) as its object. */
int fs_upload(struct fs *fs, struct fs_inode *in);
/* Make an empty staging file for `in` (fs->lock held); 0 or errno. */
int fs_wfile_attach_locked(struct fs *fs, struct fs_inode *in);
/* Set the size of a file, through its staging file (one is made and
 * uploaded at once when the file is not open for writing). */
int fs_truncate(struct fs *fs, struct fs_inode *in, uint64_t size);
/* Everything still open and dirty, uploaded (for unmount). */
int fs_upload_all(struct fs *fs);

/* ---- the operations (ns.c: names and attributes; file.c: data) ------ */

void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                   struct fuse_file_info *fi);
void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags);
void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void fs_op_readlink(fuse_req_t req, fuse_ino_t ino);
void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info *fi, bool plus);
void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                    size_t size, int flags);
void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi);
void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi);
void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

#endif
