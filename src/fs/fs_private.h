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
#include "gz/gz.h"
#include "s3/s3.h"
#include "util/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <uthash.h>

#define FS_MAX_NAME 255
#define FS_MAX_KEY 1024 /* S3's limit on a key, in bytes */
#define FS_DIR_CONTENT_TYPE "application/x-directory"
#define FS_GZ_SHARED_PREFIX ".pailfs/gzindex/" /* gz_index=shared, at the bucket root */

/* ---- metrics.c ------------------------------------------------------------ */

/* The filesystem's series, registered by fs_new; bumped with metrics_add. */
enum fs_metric {
    FS_M_READ_BYTES,     /* bytes answered to FUSE reads */
    FS_M_WRITTEN_BYTES,  /* bytes accepted from FUSE writes */
    FS_M_MEM_READ,       /* gauge: read path blocks and their reuse pool */
    FS_M_MEM_WRITE,      /* gauge: write buffers (parts) */
    FS_M_MEM_GZ,         /* gauge: gzip views' chunks inflated ahead */
    FS_M_MEM_LISTINGS,   /* gauge: listings held for readers and read ahead */
    FS_M_MEM_LIMIT,      /* gauge: max_memory */
    FS_M_INODES,         /* gauge: inodes in the table */
    FS_M_PARTS_INFLIGHT, /* gauge: upload parts queued or being sent */
    FS_M_GZ_VIEWS,       /* gzip views opened */
    FS_M_COUNT
};
extern struct metrics_series fs_metrics[FS_M_COUNT];

/* ---- budget.c: the one memory bound of the mount ---------------------- */

/* What memory is for (each its gauge pailfs_memory_bytes{use=...}). */
enum fs_use {
    FS_USE_READ,  /* blocks of the read path, and freed ones kept for reuse */
    FS_USE_WRITE, /* parts of files being written, queued or being sent, and
                   * part buffers kept warm for the next part */
    FS_USE_GZ,    /* chunks gzip views inflated ahead of their readers */
    FS_USE_LIST,  /* listings held for readers: ahead.c charges those it holds
                   * (SPARE); a directory handle's reader charges the pages it
                   * holds (NEED: a page, within the list reserve) and gives
                   * them back as it lets go */
    FS_USE_COUNT
};
/* NEED: a program waits for it; may use the use's reserve.  SPARE: it
 * only speeds things up; taken only from the shared part, leaving the
 * use's own reserve whole (see budget.c for the policy). */
enum fs_take { FS_TAKE_NEED, FS_TAKE_SPARE };
struct fs_budget;
/* The reserve of each use under `limit` (pure; budget.c says why): read
 * and write min(limit/4, 32 MiB) each, gz 0, list min(limit/32, 4 MiB). */
void fs_budget_reserves(uint64_t limit, uint64_t reserve[FS_USE_COUNT]);
/* A bound of `limit` bytes (it sets the memory gauges).  0 or ENOMEM. */
int fs_budget_new(uint64_t limit, struct fs_budget **out);
void fs_budget_free(struct fs_budget *b);
/* `use` keeps memory it can give up when asked: fn(arg, want) gives back
 * (with fs_budget_give) up to about `want` bytes and returns how many.
 * It is called by another use's fs_budget_wait, with no budget lock held
 * (so it may take its own locks).  Set before the mount serves. */
void fs_budget_set_reclaimer(struct fs_budget *b, enum fs_use use,
                             uint64_t (*fn)(void *arg, uint64_t want), void *arg);
/* Charge n bytes to `use` if the bound allows it now: true when charged.
 * Never waits (callable under any lock). */
bool fs_budget_try(struct fs_budget *b, enum fs_use use, uint64_t n, enum fs_take how);
/* Charge n bytes (NEED), asking the other uses' reclaimers and waiting
 * for memory given back, up to timeout_ms.  0 (charged) or ETIMEDOUT
 * (nothing charged).  Call with no lock a reclaimer takes. */
int fs_budget_wait(struct fs_budget *b, enum fs_use use, uint64_t n, uint64_t timeout_ms);
/* Charge n bytes whatever the bound says (only where waiting longer could
 * wait for ever: the caller warns; or for memory that keeps a share of its
 * own: a directory handle's pages, under max_memory/16 together). */
void fs_budget_force(struct fs_budget *b, enum fs_use use, uint64_t n);
/* Give back n bytes `use` was charged. */
void fs_budget_give(struct fs_budget *b, enum fs_use use, uint64_t n);
uint64_t fs_budget_limit(const struct fs_budget *b);
uint64_t fs_budget_used(struct fs_budget *b, enum fs_use use);
/* What `use` could still take with SPARE now. */
uint64_t fs_budget_spare(struct fs_budget *b, enum fs_use use);

/* What is known about one object or directory, as read from S3. */
struct fs_attr {
    mode_t mode; /* type bits and permission bits */
    uid_t uid;
    gid_t gid;
    uint64_t size;
    struct timespec mtime, atime, ctime;
    char etag[80];       /* "" for implicit directories */
    bool has_meta;       /* mode/uid/gid came from x-amz-meta-* (a HEAD) */
    bool marker;         /* directory: a "path/" object exists */
    bool gz;             /* a decompressed view of a gzip object (read-only) */
    bool gz_suffix;      /* ... whose object is path + ".gz" (gunzip=view/replace) */
    bool size_exact;     /* gz: size is known, not estimated */
    bool size_estimated; /* gz: size is an estimate (ISIZE), not a listing's */
    bool headed;         /* learnt from a HEAD (Content-Encoding is known) */
    bool untyped;        /* a listing's empty key: a file or an old-style directory
                          * object (see old_dir); only its HEAD tells which */
    bool old_dir;        /* directory: an empty object "path" without a slash is
                          * its old-style object (older s3fs-fuse wrote them, with
                          * Content-Type application/x-directory); it moves to
                          * the marker "path/" when the attributes change and
                          * goes with the directory */
    uint64_t comp_size;  /* gz: the stored object's size */
};

/* What each block of a staged file holds (write.c): the old object's
 * bytes not fetched yet (ABSENT), fetched into the staging file (CLEAN),
 * or changed here (DIRTY; also every block past the old object's end). */
enum fs_blk { FS_BLK_ABSENT, FS_BLK_CLEAN, FS_BLK_DIRTY };
/* The blocks [0, n_blk) as runs of one state: runs[i] covers blocks
 * [runs[i].first, runs[i+1].first) (the last one up to n_blk), runs[0]
 * starts at 0, and neighbours differ.  Its memory follows the number of
 * edits, never the size of the file or how far out a byte was written.
 * Zero-initialised, it is an empty map. */
struct fs_blkrun {
    uint64_t first;
    enum fs_blk state;
};
struct fs_blkmap {
    struct fs_blkrun *runs;
    size_t n, cap;
    uint64_t n_blk;
};

/* A file open for writing (write.c; see there for the modes). */
enum fs_wmode { FS_W_CLEAN, FS_W_STREAM, FS_W_STAGED };

/* A multipart upload in progress (multipart.c). */
struct fs_upload_state {
    char *key;             /* the key it was begun for */
    char *id;              /* NULL when no upload is in progress */
    struct s3_part *parts; /* parts[n-1] is part n; protected by wf->lock */
    size_t cap;
    unsigned next;     /* part numbers handed out: 1..next */
    unsigned inflight; /* protected by wf->lock */
    int error;         /* first failed part; protected by wf->lock */
    mode_t sent_mode;  /* the metadata it was begun with */
    uid_t sent_uid;
    gid_t sent_gid;
    char *sent_xattr;
};

struct fs_wfile {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a part finished, or busy was cleared */
    bool busy;           /* an operation runs; protected by lock */
    /* the rest belongs to the operation holding busy */
    enum fs_wmode mode;
    bool dirty; /* differs from the object in the bucket */
    int error;  /* sticky: every later write and flush fails with it */
    uint64_t size;
    char base_etag[80]; /* the object version the file's first base_len */
    uint64_t base_len;  /* bytes come from ("" and 0: none) */
    struct fs_upload_state up;
    uint64_t sent;           /* stream: bytes [0, sent) are in parts */
    char *buf;               /* stream: bytes [sent, size), a part buffer (fs_partbuf_get) */
    size_t buf_len, buf_cap; /* buf_cap bytes of the memory bound are buf's */
    int fd;                  /* staged: the staging file, or -1 */
    struct fs_blkmap blk;    /* staged: what each block of it holds */
};

struct fs_inode {
    fuse_ino_t ino;
    UT_hash_handle hh;      /* fs->by_ino */
    UT_hash_handle hh_path; /* fs->by_path, while `linked` */

    /* protected by fs->lock */
    char *path;
    bool linked;      /* reachable by path (false once unlinked/replaced) */
    uint64_t nlookup; /* the kernel's references */
    unsigned opens;   /* open file handles */
    struct fs_attr attr;
    uint64_t attr_expire_ms; /* util_now_ms() after which attr is re-read */
    bool local;              /* created here, not yet stored in the bucket */
    bool delete_at_release;  /* unlinked while open: delete at last release */
    char *symlink;           /* target, once read */
    char *xattr;             /* the x-amz-meta-xattr value as stored, or NULL */
    char kcache_etag[80];    /* the version the kernel's page cache holds */
    uint64_t known_until_ms; /* dir: until then, every child is in the table or in
                              * `known` (a complete listing, or made here) */
    struct fs_known *known;  /* dir: names learnt from listings (known.c) */
    struct fs_wfile *wf;     /* while open for writing */
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

/* What a mount said or found once (once.c). */
struct fs_note;
struct fs_once {
    pthread_mutex_t lock;
    struct fs_note *notes; /* protected by lock */
    unsigned n;            /* notes; protected by lock */
    bool swept;            /* protected by lock */
    uint64_t swept_ms;     /* when the set was last swept; protected by lock */
};

struct fs_readpool;
struct fs_wpool;
struct fs_ahead;
struct fs_ahead_ent;
struct fs_known_ent;
struct fs_dirstream;
struct fs_evict;
struct fs_gzobj;
struct fs_gzhandle;
struct fs_gzpool;
struct fs_reader;
struct rblock;

struct fs {
    struct fs_config cfg;
    struct s3_client *s3;
    char *key_prefix; /* "" or "prefix/" */
    uint64_t attr_ttl_ms;
    struct timespec mount_time;

    pthread_mutex_t lock;
    struct util_mime *mime;   /* cfg.mime_types read at mount; NULL: none or unreadable */
    struct fs_inode *by_ino;  /* protected by lock */
    struct fs_inode *by_path; /* protected by lock */
    struct fs_hidden *hidden; /* protected by lock */
    fuse_ino_t next_ino;      /* protected by lock */
    unsigned n_local;         /* local inodes; protected by lock */
    struct fs_open handles;   /* list head; protected by lock */
    struct fs_budget *budget; /* the memory bound of every use (budget.c) */
    struct fs_readpool *rp;   /* the read path's workers, memory and cache */
    struct fs_wpool *wp;      /* the write path's upload threads and memory */
    struct fuse_session *se;  /* for notifications to the kernel */
    pthread_mutex_t gz_lock;
    struct fs_gzobj *gzobjs; /* indexes of open gzip views; protected by gz_lock */
    struct fs_gzpool *gzp;   /* the inflating threads of every view (gzview.c) */
    struct fs_once once;     /* what was said or found once (once.c) */
    bool warned_conflict;    /* protected by lock */
    uint64_t names_gen;      /* names removed here so far; protected by lock */
    size_t n_known;          /* entries of every inode's `known`; protected by lock */
    /* the same entries, oldest learnt first (known.c); protected by lock */
    struct fs_known_ent *known_oldest, *known_newest;
    struct fs_ahead *ahead; /* listings read ahead down trees (ahead.c) */
    /* listings read ahead, in flight or held, by path; protected by lock */
    struct fs_ahead_ent *ahead_ents;
    struct fs_prefetch *pf; /* read-ahead across files (prefetch.c) */
    /* open directory handles (dirstream.c), most recently read first, and
     * the bytes of the pages they hold; protected by lock */
    struct fs_dirstream *dirstreams, *dirstreams_lru;
    size_t dir_bytes;
    struct fs_evict *evict; /* the inode table's bound (evict.c) */
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
/* Whether *a holds what the object itself says (a HEAD, a directory's
 * resolution, this mount's own making), not a listing's default mode and
 * owner. */
bool fs_attr_verified(const struct fs_attr *a);
void fs_attr_to_stat(const struct fs_attr *a, fuse_ino_t ino, struct stat *st);

/* The x-amz-meta-* headers that describe *a, plus the xattr value (may be
 * NULL), into meta[] (at most FS_META_MAX entries, strings in `store`,
 * which the caller frees with buf_free).  Returns the number of entries. */
#define FS_META_MAX 8
/* A time as s3fs-fuse's x-amz-meta-*time values hold it (seconds, a
 * fraction when there is one), appended to *store. */
void fs_meta_put_time(struct buf *store, const struct timespec *t);
/* Whether a HEAD's answer is an old-style directory object (a key without
 * a trailing slash, as older s3fs-fuse and other tools made them): empty,
 * with Content-Type application/x-directory (or httpd/unix-directory), or
 * with a directory's x-amz-meta-mode. */
bool fs_meta_old_dir(const struct s3_object_info *info);
size_t fs_meta_build(const struct fs_attr *a, const char *xattr, struct s3_meta *meta,
                     struct buf *store);
/* Find meta `name` (lower case, without x-amz-meta-) in info, or NULL. */
const char *fs_meta_get(const struct s3_object_info *info, const char *name);
/* The Content-Type a new file at `path` is stored with: its extension's
 * type by cfg.mime_types, else application/octet-stream; NULL (none sent)
 * when mime_types is off.  The string lives as long as the fs. */
const char *fs_content_type(const struct fs *fs, const char *path);

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

/* ---- plan.c: how a file becomes multipart parts (pure functions) ----- */

#define FS_MIN_PART (5ULL << 20) /* S3: every part but the last */
#define FS_MAX_PART (5ULL << 30)
#define FS_MAX_PARTS 10000

/* The size of part `number` (1-based) of a stream whose first parts are
 * `first` bytes: doubling every 1,000 parts, at most FS_MAX_PART. */
uint64_t fs_part_size(uint64_t first, unsigned number);
/* The longest stream FS_MAX_PARTS parts of that schedule hold.  Test-only:
 * test_fs_plan.c checks the schedule reaches S3's sizes with it. */
uint64_t fs_stream_max_size(uint64_t first);

/* A piece of a new version of an object: bytes [off, off+len) that are
 * still the old version's bytes at the same offsets (copy), or not. */
struct fs_run {
    uint64_t off, len;
    bool copy;
};
/* One planned part: UploadPartCopy of the old version's [off, off+len)
 * (copy), or an upload of the local bytes [off, off+len). */
struct fs_part_plan {
    uint64_t off, len;
    bool copy;
};
/* The parts of an object made of `runs` (contiguous, from offset 0): copy
 * parts of at least min_part (up to FS_MAX_PART) and local parts of at most
 * local_cap (raised to 2 x min_part), every part but the last at least
 * min_part.  Copy runs too short to be parts become local: the caller must
 * have those bytes.  *out is malloc'ed (caller frees; NULL with 0 parts).
 * 0, EINVAL (runs not contiguous, or past 2^64), E2BIG (more than
 * FS_MAX_PARTS: refused before the parts are made), ENOMEM. */
int fs_plan_parts(const struct fs_run *runs, size_t n_runs, uint64_t min_part, uint64_t local_cap,
                  struct fs_part_plan **out, size_t *n_out);

/* The state of block b (< n_blk); *run_end (if not NULL): the first block
 * after b in another state, or n_blk. */
enum fs_blk fs_blkmap_get(const struct fs_blkmap *m, uint64_t b, uint64_t *run_end);
/* Blocks [from, to) become `state`; a map shorter than `to` grows to it,
 * the blocks between its old end and `from` DIRTY.  0 or ENOMEM (the map
 * unchanged). */
int fs_blkmap_set(struct fs_blkmap *m, uint64_t from, uint64_t to, enum fs_blk state);
/* n_blk blocks: cut, or grown with DIRTY blocks.  0 or ENOMEM (unchanged). */
int fs_blkmap_resize(struct fs_blkmap *m, uint64_t n_blk);
void fs_blkmap_free(struct fs_blkmap *m);
/* The runs of a staged file of `size` bytes in blocks of `block` bytes,
 * for fs_plan_parts: blocks before `copy_blocks` that are not DIRTY are
 * copies of the old object, the rest local.  *out is malloc'ed (caller
 * frees).  0, EINVAL (the map does not cover exactly `size` bytes), ENOMEM. */
int fs_blkmap_runs(const struct fs_blkmap *m, uint64_t size, uint64_t block, uint64_t copy_blocks,
                   struct fs_run **out, size_t *n_out);

/* ---- once.c: what a mount says or finds once ------------------------ */

void fs_once_init(struct fs_once *o);
void fs_once_free(struct fs_once *o);
/* Note `what` (a kind: one byte) about `subject`, to hold for max_age_ms
 * (UINT64_MAX: for ever): true when no note of it holds already, i.e. say
 * it now.  Thread-safe. */
bool fs_once(struct fs *fs, char what, const char *subject, uint64_t max_age_ms);
/* Whether a note of `what` about `subject` holds now. */
bool fs_once_noted(struct fs *fs, char what, const char *subject);

/* ---- path.c: path arithmetic (pure) -------------------------------- */

/* The S3 key of a path ("" → the prefix itself), with a trailing '/' when
 * `dir`.  Caller frees.  NULL on ENOMEM. */
char *fs_key(struct fs *fs, const char *path, bool dir);
/* parent path + "/" + name (or name for the root).  Caller frees. */
char *fs_child_path(const char *parent, const char *name);
/* The path of the object a view at `path` shows: path + ".gz" when
 * gz_suffix, else path itself.  Caller frees; NULL on ENOMEM. */
char *fs_view_raw_path(const char *path, bool gz_suffix);
/* Append to *out the name of one version of an object: "endpoint\nbucket\n
 * key\netag" ("" for no endpoint).  What is kept about a version is found
 * by it, and it is hashed into names on disk and in the bucket: its bytes
 * never change.  Without `endpoint` its first line is left out, so that
 * every node names the version alike (the shared gzip index).  0, or
 * ENOMEM with *out freed (out->data NULL: never half a name). */
int fs_version_id(struct fs *fs, struct buf *out, const char *key, const char *etag, bool endpoint);

/* ---- inode.c: the inode table and the open handles ------------------- */

/* Find an inode by number and take nothing; NULL if unknown.  Call with
 * fs->lock held. */
struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino);
/* Whether the inode's own state is the truth, not the bucket's: created
 * here and not stored yet, or written and not stored yet (fs->lock held). */
bool fs_inode_local_truth(const struct fs_inode *in);
/* Whether the inode's attributes are this mount's own, which no answer of
 * S3 replaces: created here and not stored yet, or open for writing
 * (written to or not: the write state builds on the version it was
 * opened at).  (fs->lock held.) */
bool fs_inode_mine(const struct fs_inode *in);
/* Whether the inode's attributes may be used without asking S3: its own,
 * or within attr_ttl (fs->lock held). */
bool fs_inode_trusted(const struct fs_inode *in);
/* A copy of the inode's path (NULL: unknown inode; caller frees), its
 * attributes, its xattr value (if `xattr`; caller frees) and whether they
 * are fresh (if `fresh`). */
char *fs_inode_snapshot(struct fs *fs, fuse_ino_t ino, struct fs_attr *a, char **xattr,
                        bool *fresh);
/* Keep on inode `ino` what S3 answered (*a and the xattr value, taken:
 * freed when not kept) to a request sent when the inode's ETag was `seen`;
 * not while a write state is attached or the file is local, nor when this
 * mount stored a version since (see inode.c).  fs_inode_refresh uses it. */
void fs_inode_update(struct fs *fs, fuse_ino_t ino, const char *seen, const struct fs_attr *a,
                     char *xattr);
/* fs_inode_update of an answer S3 gave at `at_ms` (util_now_ms()), not
 * now: what it says is trusted until at_ms + attr_ttl. */
void fs_inode_update_at(struct fs *fs, fuse_ino_t ino, const char *seen, const struct fs_attr *a,
                        char *xattr, uint64_t at_ms);
/* A gzip view's size learnt (same object version only). */
void fs_inode_view_size_update(struct fs *fs, fuse_ino_t ino, const struct fs_attr *a);
/* A page of the listing of directory `ino`, received at util_now_ms()
 * `seen_ms`, held keys: the directory exists, and its attributes are
 * trusted for attr_ttl from then (a long listing does not make the
 * kernel's revalidation of the directory ask S3 again).  Takes fs->lock. */
void fs_inode_renew_dir(struct fs *fs, fuse_ino_t ino, uint64_t seen_ms);
/* The inode's attributes stop being trusted now: the next lookup or open
 * reads them again (the read path saw the object replaced). */
void fs_inode_expire(struct fs *fs, fuse_ino_t ino);
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
/* Put a new handle on fs->handles / take it off (they take fs->lock). */
void fs_open_track(struct fs *fs, struct fs_open *o, void (*free_fn)(struct fs_open *));
void fs_open_untrack(struct fs *fs, struct fs_open *o);

/* ---- known.c: what listings taught about a directory's names -------- */

/* Entries kept in the whole mount at most (about 300 bytes each); past
 * it the oldest leave. */
#define FS_KNOWN_MAX 100000

struct fs_known;
struct fs_dir;
/* UNTYPED: present, but an empty key, whose type only a HEAD tells. */
enum fs_known_answer { FS_KNOWN_NOTHING, FS_KNOWN_PRESENT, FS_KNOWN_ABSENT, FS_KNOWN_UNTYPED };

/* The count of names removed so far, to give fs_known_store (takes fs->lock). */
uint64_t fs_known_gen(struct fs *fs);
/* Keep `page`, a page of a listing of directory `dir_path` (inode
 * `dir_ino`) asked at util_now_ms() `listed_ms` when fs_known_gen() was
 * `gen`, as names the directory holds, each for attr_ttl from now (its
 * arrival)
 * (`first`: the listing's first page, which begins a new listing);
 * `page_no` is its number in the listing and `token` the continuation
 * token that asked for it (NULL for page 0), kept to ask for the page
 * again when a name of it is looked up after it expired.  False
 * when not all of it was kept: a name was removed here since `gen`, the
 * directory moved, or memory ran out; the listing then cannot complete.
 * Past FS_KNOWN_MAX entries in the mount the oldest leave.  Takes fs->lock. */
bool fs_known_add_page(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path, uint64_t gen,
                       uint64_t listed_ms, const struct fs_dir *page, bool first, uint64_t page_no,
                       const char *token);
/* Every page of the listing begun at `listed_ms` (gen: as its last page's)
 * was kept, in order, with fs_known_add_page: the directory knows that
 * every other name is absent, for neg_ttl from listed_ms, and the names of
 * older listings it lacks leave (`one_page`: it was one page, which a
 * lookup may ask again, fs_known_relist_locked).  Nothing when an entry
 * of it left for the bound meanwhile.  Takes fs->lock. */
void fs_known_complete(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path, uint64_t gen,
                       uint64_t listed_ms, bool one_page);
/* Keep `d`, a complete listing of directory `dir_path` (inode `dir_ino`)
 * begun at util_now_ms() `listed_ms` when fs_known_gen() was `gen`, as
 * what the directory holds: each name for attr_ttl, the absence of every
 * other for neg_ttl (fs_known_add_page, then fs_known_complete).  Takes
 * fs->lock. */
void fs_known_store(struct fs *fs, fuse_ino_t dir_ino, const char *dir_path, uint64_t gen,
                    uint64_t listed_ms, const struct fs_dir *d);
/* What the knowledge of the directory holding `path` says of it (fs->lock
 * held): PRESENT with *a and the time it stops being trusted, ABSENT, or
 * NOTHING.  The inode table comes first: ask only about a name no trusted
 * inode holds, and never take ABSENT for a name an inode holds. */
enum fs_known_answer fs_known_lookup_locked(struct fs *fs, const char *path, struct fs_attr *a,
                                            uint64_t *expire_ms);
/* The directory holding `path` and the page of its last listing to ask
 * again when that listing no longer answers for `path` (attr_ttl passed):
 * its path (caller frees) and *dir_ino, and *page: `whole` when that
 * listing was whole and one page (FS_KNOWN_PAGE names at most: list the
 * directory again), else the number and continuation token (caller frees;
 * NULL for page 0) of the page that held `path`.  NULL when there is no
 * such page (fs->lock held). */
#define FS_KNOWN_PAGE 1000
#define FS_KNOWN_PAGES 4096 /* pages of a listing whose tokens are kept */
struct fs_known_page {
    bool whole;
    uint64_t no;
    char *token;
};
char *fs_known_relist_locked(struct fs *fs, const char *path, fuse_ino_t *dir_ino,
                             struct fs_known_page *page);
/* A name this mount removes or moves away (fs->lock held). */
void fs_known_forget_locked(struct fs *fs, const char *path);
/* Directories at or below `path` forget their listings (a directory
 * rename; fs->lock held). */
void fs_known_forget_below_locked(struct fs *fs, const char *path);
/* Inode `in` leaves the table: what it knows stays as its parent's entry
 * (fs->lock held). */
void fs_known_keep_locked(struct fs *fs, const struct fs_inode *in);
/* A name was made in directory `path` here (fs->lock held): a directory
 * that knows all its names (made here, or listed whole) goes on knowing
 * them for neg_ttl more. */
void fs_dir_known_extend_locked(struct fs *fs, const char *dir_path);
/* The regular files that follow `name` in the order of the last listing
 * of directory `dir_path` (expired entries too), at most `max`, into
 * out[] (names owned by the directory's knowledge: copy them before
 * fs->lock is let go); *first: no regular file comes before `name`.
 * Returns how many; 0 when `name` is not in that listing (fs->lock held). */
struct fs_known_next {
    const char *name;
    struct fs_attr attr;
};
size_t fs_known_next_locked(struct fs *fs, const char *dir_path, const char *name, size_t max,
                            struct fs_known_next *out, bool *first);
/* A request proved that `path` still holds the version `etag` its
 * directory's listing gave (the entry is trusted until `until_ms`), or no
 * longer does (until_ms 0: the entry says nothing, and keeps its place in
 * the listing's order).  fs->lock held; nothing when the entry is gone or
 * of another version. */
void fs_known_trust_locked(struct fs *fs, const char *path, const char *etag, uint64_t until_ms);
/* Free a directory's knowledge (fs->lock held). */
void fs_known_free_locked(struct fs *fs, struct fs_inode *dir);
/* The object at `path` was stored or its metadata changed here (fs->lock
 * held): a listing of its directory read ahead before that is not taken
 * (ahead.c).  Removing and making names says so by itself. */
void fs_known_changed_locked(struct fs *fs, const char *path);

/* ---- resolve.c: what a path is in S3 --------------------------------- */

struct fs_dir;

/* Look `path` up in S3: a directory (prefix or marker) wins over an object
 * of the same name.  The answer for a directory is the first page of its
 * listing, which `kids` (may be NULL) receives: its names, with
 * kids->whole when that page was all of them (the caller frees it with
 * fs_dir_free; on error it holds nothing).  0 and *a filled, ENOENT, or
 * the S3 errno. */
int fs_resolve(struct fs *fs, const char *path, struct fs_attr *a, char **xattr,
               struct fs_dir *kids);
/* Re-read the attributes of `path` last seen as *seen (its type; a view of
 * path + ".gz" when seen->gz_suffix; an old-style directory object).  Same
 * returns as fs_resolve(); ENOENT also when it is now of another type.  A
 * directory's first page, which answers it, is held for the opendir that
 * may follow as a lookup's is (fs_ahead_keep). */
int fs_refresh(struct fs *fs, const char *path, const struct fs_attr *seen, struct fs_attr *a,
               char **xattr);
/* The object `path` alone (one HEAD, no listing): a file, a symlink, a
 * gzip view, or an old-style directory object (fs_meta_old_dir).  0 and
 * *a (*xattr, if not NULL: the caller's), ENOENT, or the S3 errno. */
int fs_resolve_key(struct fs *fs, const char *path, struct fs_attr *a, char **xattr);
/* The one refresh of an inode: ask S3 again about inode `ino` when what it
 * holds is stale (attr_ttl passed; with `need_head` also a regular file
 * known only from a listing while gunzip is on, whose Content-Encoding is
 * not known), and keep the answer (fs_inode_update).  Nothing is asked
 * while the file is local or has a write state; and not for a regular
 * file whose version open here was confirmed since attr_ttl began by the
 * answer of one of the read path's GETs (fs_readpool_told: pinned to the
 * ETag, its headers are what a HEAD would have said then).  0 (*asked, if
 * not NULL: whether S3 was asked, or such a GET's answer kept), ENOENT
 * (unknown inode, or gone or of another type now), ENOMEM, or the S3 errno. */
int fs_inode_refresh(struct fs *fs, fuse_ino_t ino, bool need_head, bool *asked);
/* Whether fs_inode_refresh would ask S3 about `in` now (fs->lock held). */
bool fs_inode_stale_locked(struct fs *fs, const struct fs_inode *in, bool need_head);
/* Make *a, a HEAD's answer about the object at `path`, what a lookup
 * makes of it: a decompressed view when it is gzip-encoded (`gzip`) and
 * gunzip is on (its size learnt as fs_gz_size does). */
void fs_attr_from_encoding(struct fs *fs, const char *path, bool gzip, struct fs_attr *a);
/* gunzip=view/replace: is `path` the view of an object path + ".gz"?
 * 0 and *a, ENOENT, or the S3 errno. */
int fs_resolve_view(struct fs *fs, const char *path, struct fs_attr *a);

/* ---- copy.c: server-side copies -------------------------------------- */

/* Write the attributes of an object that exists in the bucket: CopyObject
 * onto itself with metadata REPLACE (a marker for directories, created when
 * the directory is implicit; an old-style directory object, a->old_dir,
 * moves to that marker and is deleted).  *a is the new state. */
int fs_store_meta(struct fs *fs, const char *path, const struct fs_attr *a, const char *xattr,
                  char *etag_out);
/* Server-side copy of `src` to `dst`, multipart above 5 GiB.  `replace`
 * NULL keeps the metadata.  The copy replaces its source (the caller
 * deletes it, or dst is src): with `src_etag`, the readers open on that
 * version ask for the copy from then on (fs_readpool_moved). */
int fs_copy(struct fs *fs, const char *src_key, const char *dst_key, uint64_t size,
            const char *src_etag, const struct s3_put_opts *replace, char *etag_out);

/* Copy `src_key` (version `src_etag`, "" or NULL: whatever is there) to
 * `dst_key` (onto itself too) with its metadata, Content-Type and
 * Content-Encoding kept, but x-amz-meta-ctime set to *ctime: a rename's
 * copy (one HEAD, then the copy).  0, ENOENT, ESTALE (the source changed),
 * or the S3 errno. */
int fs_copy_new_ctime(struct fs *fs, const char *src_key, const char *dst_key, const char *src_etag,
                      const struct timespec *ctime, char *etag_out);

/* ---- dir.c: listings; dir_rename.c: renaming a directory ------------- */

struct fs_dirent {
    char *name;
    struct fs_attr attr;
    bool hidden; /* gunzip=replace: a K.gz shown as K */
};

struct fs_dir {
    struct fs_dirent *ents;
    size_t n;
    bool whole;          /* every page was read: ents are all the names */
    bool exists;         /* some key is under the prefix (shown or not) */
    bool marker;         /* the "path/" marker object is one of them */
    int64_t first_mtime; /* LastModified of the first key, or the mount's time */
    char *next_token;    /* not whole: the continuation token of the page after */
};

/* The listing of directory `path` (ListObjectsV2, delimiter "/"), at most
 * `max_pages` pages of cfg.list_page keys (0: all of them; d->whole says
 * whether it got them all, else d->next_token goes on), with the views of
 * gunzip=view/replace and the files made here and not stored yet.  0 or
 * the S3 errno; *d is freed on error, else the caller frees it with
 * fs_dir_free. */
int fs_dir_list(struct fs *fs, const char *path, unsigned max_pages, struct fs_dir *d);
void fs_dir_free(struct fs_dir *d);

/* A listing read one page at a time, in key order: what a directory
 * handle serves from (dirstream.c).  Not thread-safe: one user. */
struct fs_dir_pager {
    struct fs *fs;
    char *path;   /* the directory */
    char *prefix; /* its key prefix */
    char *token;  /* the continuation token of the next page; NULL: the first */
    bool ended;   /* the last page was read */
};
/* 0 or ENOMEM; free with fs_dir_pager_free (also after an error). */
int fs_dir_pager_init(struct fs *fs, const char *path, struct fs_dir_pager *pg);
void fs_dir_pager_free(struct fs_dir_pager *pg);
/* The next page will be the one continuation token `token` asks for
 * (NULL: the first).  0 or ENOMEM. */
int fs_dir_pager_seek(struct fs_dir_pager *pg, const char *token);
/* The next page into *d (the caller frees it with fs_dir_free): its
 * entries as fs_dir_list makes them, `prev` (may be NULL) the page before
 * it, whose entries a name on this page may change (a key K there and a
 * prefix K/ here: K becomes the directory).  After the last page pg->ended
 * is true (the last page holds the files made here and not stored yet) and
 * a call gives an empty page.  d->exists: this page holds some key;
 * d->whole: it was the first and the last.  0 or the S3 errno (*d empty;
 * the same page is asked again by the next call). */
int fs_dir_pager_next(struct fs_dir_pager *pg, struct fs_dir *prev, struct fs_dir *d);
/* A copy of d into *out (every entry and the token its own): 0 or ENOMEM
 * (*out empty). */
int fs_dir_copy(const struct fs_dir *d, struct fs_dir *out);

/* A page of a listing asked on a thread of its own, so that its round
 * trip overlaps its owner's work: a handle's reader reading the page
 * before it (dirstream.c), a lookup's HEAD of the directory's marker
 * (ahead.c).  The page before it, `prev`, is read and may be changed (as
 * fs_dir_pager_next does) while the fetch runs: its entries must stay
 * where they are, unfreed, until the fetch was waited for or freed.  The
 * fields are the owner's to read once fs_dir_fetch_wait returned. */
struct fs_dir_fetch {
    struct fs_dir_pager *pg; /* the pager it moves on: the owner's, or `own` */
    struct fs_dir_pager own; /* fs_dir_fetch_next's: the listing goes on from it */
    struct fs_dir prev;      /* a view of the page before (entries not its own) */
    struct fs_dir d;         /* the page, until waited for */
    int rc;                  /* fs_dir_pager_next's */
    uint64_t gen, asked_ms;  /* fs_known_gen() and util_now_ms() when asked */
    char *token;             /* the continuation token that asked for it, NULL: the first */
    bool running;            /* its thread is to be joined */
    pthread_t thread;
};
/* Ask pg's next page now (pg, and prev when not NULL, used by the fetch
 * alone until it is waited for).  0 and *out, or ENOMEM/EAGAIN (nothing
 * asked). */
int fs_dir_fetch_start(struct fs_dir_pager *pg, const struct fs_dir *prev,
                       struct fs_dir_fetch **out);
/* Ask the page after `first` (not whole: first->next_token asks for it) of
 * the listing of `path` now, with a pager of the fetch's own (f->own: the
 * listing goes on from it).  0 and *out, or ENOMEM/EAGAIN. */
int fs_dir_fetch_next(struct fs *fs, const char *path, const struct fs_dir *first,
                      struct fs_dir_fetch **out);
/* Wait for the page: fs_dir_pager_next's 0 and *d (the caller's to free),
 * or its errno.  Once: a second wait gives ENOENT. */
int fs_dir_fetch_wait(struct fs_dir_fetch *f, struct fs_dir *d);
/* Wait for it if it runs, and free what it holds (NULL: nothing).  It
 * joins a thread that takes fs->lock: never called with fs->lock held. */
void fs_dir_fetch_free(struct fs_dir_fetch *f);
int fs_dir_is_empty(struct fs *fs, const char *path, bool *empty);
/* Warn once per key about a key that cannot be shown as a name (dir.c;
 * also used by dir_rename.c). */
#define FS_NUL_NAME "its name holds a NUL byte once decoded"
void fs_dir_warn_skipped(struct fs *fs, const char *key, const char *why);
/* dir_rename.c: every key under `src` to `dst`; the marker's copy gets
 * x-amz-meta-ctime *ctime (a rename changes the directory's ctime). */
int fs_rename_dir(struct fs *fs, const char *src, const char *dst, const struct timespec *ctime);

/* ---- dirstream.c: a directory handle's listing, page by page ---------- */

/* Open the listing of directory `path` (inode `ino`) for a handle: its
 * first page is taken from ahead.c (read ahead, or kept by the lookup just
 * before) or asked now, and each page is kept as what the directory holds
 * (known.c) as it arrives.  0 and *out (free with fs_dirstream_free), or
 * the errno of the first page's LIST, ENOMEM. */
int fs_dirstream_open(struct fs *fs, fuse_ino_t ino, const char *path, struct fs_dirstream **out);
void fs_dirstream_free(struct fs_dirstream *ds);
/* A readdir holds the stream between lock and unlock (one at a time). */
void fs_dirstream_lock(struct fs_dirstream *ds);
void fs_dirstream_unlock(struct fs_dirstream *ds);
/* Go to the place after the entry whose offset is `off` (one this stream
 * gave; 0, 1 and 2: the first entry), listing pages again when they are
 * no longer held.  0, EINVAL (an offset this stream never gives), or the
 * errno of a LIST. */
int fs_dirstream_seek(struct fs_dirstream *ds, off_t off);
/* The entry at the place, and its offset (the place after it), moving on
 * (*e NULL: the listing's end, or with `fetch` false the end of the pages
 * held: the next page is asked for only with `fetch`).  *e stays valid
 * until the next call.  0, EOVERFLOW (a listing longer than offsets can
 * tell), or the errno of a LIST. */
int fs_dirstream_next(struct fs_dirstream *ds, bool fetch, const struct fs_dirent **e, off_t *off);
/* The offset of entry `idx` of page `no` called `name` (exposed for the
 * unit test of the encoding). */
off_t fs_dirstream_off(uint64_t no, size_t idx, const char *name);
/* The memory listings take now: the pages held by directory handles and
 * the listings read ahead (ahead.c), in bytes.  This is the share of
 * listings in the mount's memory (gauge pailfs_memory_bytes{use="listings"});
 * it stays under about max_memory/16 + max_memory/16.  Takes fs->lock. */
size_t fs_listing_bytes(struct fs *fs);

/* ---- evict.c: the bound of the inode table ----------------------------- */

/* Start the thread that keeps the table near cfg.max_inodes (fs->se must
 * be set): 0, ENOMEM or EAGAIN.  stop: joins it (before the session goes;
 * again: nothing). */
int fs_evict_start(struct fs *fs);
void fs_evict_stop(struct fs *fs);

/* ---- ahead.c: listings read ahead down trees -------------------------- */

/* The bytes of the listings read ahead or kept (fs->lock held). */
size_t fs_ahead_bytes_locked(struct fs *fs);

/* A listing read ahead, in flight or held until an opendir takes it; on
 * fs->ahead_ents by path, every field protected by fs->lock.  known.c sets
 * `spoiled` when this mount makes, removes or stores a name in the
 * directory, or renames a directory at or above it: a listing begun
 * before that may lack the change, and is never taken. */
struct fs_ahead_ent {
    char *path; /* the directory */
    UT_hash_handle hh;
    bool done;           /* the listing arrived (d holds it) */
    bool spoiled;        /* see above */
    bool kept;           /* a lookup's whole listing (fs_ahead_keep), not a walk's */
    uint64_t begun_ms;   /* util_now_ms() when its first request was sent */
    uint64_t arrived_ms; /* ... and when it arrived (done) */
    uint64_t gen;        /* fs->names_gen then, for fs_known_store */
    struct fs_dir d;
    size_t bytes; /* what d holds, about */
    /* the page after d, asked by the lookup that kept d (fs_ahead_begin),
     * or NULL: it reads d's entries, so it goes first */
    struct fs_dir_fetch *next;
    struct fs_ahead_ent *gone; /* on a list of those to free, off the table */
};

/* Start / stop the workers of `fs` (read_parallel of them, at most 16).
 * new: 0, ENOMEM or EAGAIN.  stop: no request is sent after it returns
 * (called at shutdown, and again by free); free: everything held. */
int fs_ahead_new(struct fs *fs);
void fs_ahead_stop(struct fs *fs);
void fs_ahead_free(struct fs *fs);
/* opendir of `path`: the first page of its listing read ahead or kept
 * (d->whole, or d->next_token to go on), waiting for one in flight, when
 * it is still trusted (arrived less than attr_ttl ago, not
 * spoiled).  0 with *d (the caller frees it), *gen and *begun_ms as they
 * were when it was begun, and *next: the fetch of the page after it that
 * its lookup asked for (fs_ahead_begin), or NULL; the caller waits for it
 * (its pager goes on from there) or frees it, before it frees *d, whose
 * entries it reads and must not move.  ENOENT when there is none to take
 * (list it as usual).  Takes fs->lock. */
int fs_ahead_take(struct fs *fs, const char *path, struct fs_dir *d, uint64_t *gen,
                  uint64_t *begun_ms, bool *kept, struct fs_dir_fetch **next);
/* A lookup of directory `path` listed its first page (d: whole, or with
 * the continuation token of the next page), begun at begun_ms with
 * fs->names_gen `gen`: held, under the same trust and bounds as a listing
 * read ahead, for the opendir that usually follows (`ls dir`, `ls -l dir`:
 * the first page is asked once, not twice), which takes it with
 * fs_ahead_take (*kept true: no walk queued its subdirectories) and goes
 * on from the token.  Takes *d when it holds it (then *d is emptied);
 * otherwise *d is left as it was.  Takes fs->lock. */
void fs_ahead_keep(struct fs *fs, const char *path, struct fs_dir *d, uint64_t gen,
                   uint64_t begun_ms);
/* A lookup of directory `path` listed its first page `d`, which is not the
 * whole listing, and has more to ask before it answers (its marker's
 * HEAD): a copy of d is kept as fs_ahead_keep keeps it, and the page after
 * it is asked at once, beside that request, for the opendir that usually
 * follows (fs_ahead_take hands it over).  So `ls -l dir` pays the HEAD's
 * round trip beside the second page's, not before it.  When the page is
 * not taken within attr_ttl it was asked for nothing.  Nothing is kept or
 * asked when there is no room, or with attr_ttl=0.  Takes fs->lock. */
void fs_ahead_begin(struct fs *fs, const char *path, const struct fs_dir *d, uint64_t gen,
                    uint64_t begun_ms);
/* opendir of `path` got listing `d` (`ahead`: taken from fs_ahead_take):
 * when it is a subdirectory of the directory listed just before, that one
 * is being walked, and the listings of its other subdirectories are begun
 * ahead.  Takes fs->lock. */
void fs_ahead_opened(struct fs *fs, const char *path, const struct fs_dir *d, bool ahead);

/* ---- op_file.c: open files ----------------------------------------- */

/* A file handle (fuse_file_info.fh). */
struct fs_handle {
    struct fs_open open; /* first: the handle is freed through it */
    struct fs_inode *in;
    char etag[80]; /* the object version read, for If-Match */
    bool write;
    struct fs_reader *reader; /* reads of the object version opened */
    struct fs_gzhandle *gz;   /* a gzip view: reads inflate through it */
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
/* A rename on this mount copied version `etag` of `key` to `new_key`, as
 * version `new_etag`, and deleted the source: the readers of that version
 * that are open ask for the copy from now on (the bytes are the same; the
 * disk cache keeps them under the old identity).  Takes rp->lock. */
void fs_readpool_moved(struct fs *fs, const char *key, const char *etag, const char *new_key,
                       const char *new_etag);
/* What the newest GET of version `etag` of `key` (the object's key) by the
 * read path was told by S3, if its answer's headers came at or after
 * `since_ms` (util_now_ms()): the same a HEAD sent then would have said,
 * *a as fs_attr_from_head makes it, *gzip: Content-Encoding gzip, *xattr
 * the xattr metadata (the caller frees), *at_ms when.  The GETs of an
 * object open for reading are pinned to its ETag (If-Match), so each one
 * that is answered confirms the version is still the one there.  False
 * when no GET of the version was answered since then (nobody reads it, or
 * it moved: fs_readpool_moved).  Takes rp->lock. */
bool fs_readpool_told(struct fs *fs, const char *key, const char *etag, uint64_t since_ms,
                      struct fs_attr *a, bool *gzip, char **xattr, uint64_t *at_ms);
/* What a read hands to fuse_reply_iov: one piece per block, either in the
 * block in memory (pinned[i], kept from being freed until
 * fs_read_reply_done()) or, for bytes read straight from the disk cache,
 * in `buf` (pinned[i] NULL; freed by fs_read_reply_done()).  A reply of
 * bytes that are in one buffer already (rp NULL, nothing pinned) is that
 * buffer as `buf` and one piece. */
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
/* Fetch the whole object of r (1 byte to FS_READ_BLOCK) into r's block now,
 * on the calling thread, with one GET pinned to the version's ETag; *info
 * receives the answer's headers (clear it with s3_object_info_clear, on
 * error too).  Memory is taken only where read-ahead may take it (never
 * waited for).  The block stays while a reader of the version holds it.
 * 0, EINVAL (empty, or larger than a block), EEXIST (the block is held or
 * on its way already), ENOMEM (no memory to spare), ESTALE (the object
 * changed), or the errno of the GET. */
#define FS_READ_BLOCK (1u << 20)
int fs_reader_fetch_whole(struct fs_reader *r, struct s3_object_info *info);

/* ---- prefetch.c: read-ahead across files ----------------------------- */

struct fs_prefetch;
struct fs_prefetched;
/* Start / stop the fetch threads (read_parallel of them) of a mount; free
 * before the inodes and the read path, which a fetch uses.  new: 0,
 * ENOMEM, EAGAIN. */
int fs_prefetch_new(struct fs *fs);
void fs_prefetch_free(struct fs *fs);
/* An open of inode `ino` (held by the caller), before its refresh: follow
 * the directory's pattern (fetch the next small files ahead, or drop what
 * was fetched when the pattern broke), and when the file itself was
 * fetched, of the version the inode holds, fill the inode with the GET's
 * headers (as a HEAD would) and return the fetch, whose block the handle's
 * reader then finds: give it to fs_prefetch_opened once the handle is
 * made (or the open failed).  NULL: nothing to use (the open goes its own
 * way).  Takes fs->lock itself; may wait for the file's fetch in flight. */
struct fs_prefetched *fs_prefetch_open(struct fs *fs, fuse_ino_t ino, bool write);
void fs_prefetch_opened(struct fs *fs, struct fs_prefetched *p);
/* A lookup S3 would answer: when `path` is being fetched ahead, wait for
 * that fetch (it refreshes the inode and the name's entry) and return
 * true, so that the caller looks in what the mount knows again. */
bool fs_prefetch_settle(struct fs *fs, const char *path);

/* An open's first GET (instead of a HEAD): block 0 of the object at
 * `path`, whose answer's headers are told to the open before the body
 * arrives; `etag` is the version the inode knows, and with `pin` the GET
 * is pinned to it (If-Match), else it takes whatever version is there now.
 * When block 0 of `etag` is here already (in memory or the disk cache) and
 * the object (`size` bytes, as known) is not small, the GET asks for one
 * byte: its headers.  The caller (an open, holding the
 * inode) waits for them with fs_first_wait, files the block under the
 * version told with fs_first_adopt, and always lets go with
 * fs_first_release (the GET then stops unless a reader has the block).
 * start: 0 and *out, EAGAIN (no worker free at once, or no memory to
 * spare: ask as before), ENOMEM. */
struct fs_first;
int fs_first_start(struct fs *fs, const char *path, const char *etag, uint64_t size, bool pin,
                   struct fs_first **out);
/* Wait for the answer's headers: 0 and what a HEAD would have said (*a as
 * fs_attr_from_head makes it, *gzip: Content-Encoding gzip, *xattr the
 * x-amz-meta-xattr value or NULL: the caller's), or the GET's errno
 * (ESTALE: if_match failed; ENOENT...), or ENODATA (an answer without
 * headers: a range past the end of an object emptied since). */
int fs_first_wait(struct fs_first *g, struct fs_attr *a, bool *gzip, char **xattr);
/* Put the block into r's object version, if it is the version told and has
 * no block 0 yet: true when done. */
bool fs_first_adopt(struct fs_first *g, struct fs_reader *r);
void fs_first_release(struct fs_first *g);

/* ---- write.c: files open for writing (the stream and staged modes) ---- */

/* Give `in` its write state (fs->lock held): a new file streams, an
 * existing object starts clean; a state `in` has already is shared.  It
 * lives until the last hold on `in` is given back (fs_inode_put), and
 * whoever uses it unlocked holds `in`.  0 or ENOMEM. */
int fs_wfile_attach_locked(struct fs *fs, struct fs_inode *in);
/* Free a write state nobody uses any more; an upload never completed is
 * aborted. */
void fs_wfile_free(struct fs *fs, struct fs_wfile *wf);
/* write(2) of n bytes at off.  0, EBADF (not open for writing), EIO (an
 * upload or a fetch of old bytes failed), ENOSPC (the staging disk is
 * full), EFBIG (past S3_MAX_OBJECT_SIZE), ENOMEM.  Any error sticks: every later
 * write, flush and fsync of the file returns it, and nothing is stored. */
int fs_wfile_write(struct fs *fs, struct fs_inode *in, const char *p, size_t n, uint64_t off);
/* read(2) of a file open for writing.  *data is malloc'ed (caller frees)
 * with *got bytes.  EAGAIN: nothing was written, read the object version
 * `etag` (the handle's) through its reader. Else 0 or an errno. */
int fs_wfile_read(struct fs *fs, struct fs_inode *in, const char *etag, uint64_t off, size_t size,
                  char **data, size_t *got);
/* flush/fsync: store what was written.  0 only when the object in the
 * bucket holds every byte written; else the sticky error (EIO, ENOSPC). */
int fs_upload(struct fs *fs, struct fs_inode *in);
/* The object of `in` (held by the caller; fs->lock not held) was copied
 * onto itself to store new metadata, making version `to` of version `from`
 * with the same bytes: a write state that builds on `from` builds on `to`
 * from now (taking the file's turn, after any write running).  A write
 * that fetched old bytes between the copy and this call fails (EIO). */
void fs_wfile_meta_stored(struct fs *fs, struct fs_inode *in, const char *from, const char *to);
/* Set the size of a file, held by the caller (an open handle, or the
 * operation's own hold).  A file not open for writing gets a write state
 * and is stored at once; the last hold frees the state (fs_inode_put).
 * 0, EFBIG (past S3_MAX_OBJECT_SIZE: nothing changed), or the store's error. */
int fs_truncate(struct fs *fs, struct fs_inode *in, uint64_t size);
/* Everything still open and dirty, stored (for unmount). */
int fs_upload_all(struct fs *fs);

/* ---- upload_pool.c: the upload threads and their memory bound ------- */

/* Start / stop the upload threads (and, at mount, the sweep of stale
 * multipart uploads).  new: 0, ENOMEM, EAGAIN. */
int fs_wpool_new(struct fs *fs);
void fs_wpool_free(struct fs *fs);
/* What a queued part holds: bytes in memory (owned by the job), a range of
 * the staging file, or a range of the old object to copy server-side or,
 * where the server cannot, to fetch and send again. */
enum fs_wjob_kind { FS_WJ_MEM, FS_WJ_FD, FS_WJ_COPY, FS_WJ_FETCH };
/* Count n bytes against max_memory, waiting for memory given back (at most
 * 10 s, then over the bound with one warning).  Returns n. */
uint64_t fs_wmem_take(struct fs_wpool *wp, uint64_t n);
/* Count n bytes against max_memory if the bound allows it within wait_ms
 * (idle part buffers unmapped first, then waiting for memory given
 * back): true when counted. */
bool fs_wmem_try(struct fs_wpool *wp, uint64_t n, uint64_t wait_ms);
void fs_wmem_give(struct fs_wpool *wp, uint64_t n);
/* A stream part's buffer of cap bytes, not zeroed, with its charge of cap
 * bytes to the memory bound (use "write"): a warm idle one of that size
 * when the pool keeps one (charged already), else a fresh one (mapped,
 * huge pages asked for from 2 MiB; below 1 MiB from malloc) once cap is
 * charged, waiting for memory given back at most wait_ms.  *out is the
 * caller's, to give back with fs_partbuf_put, never free().  0, ENOBUFS
 * (the bound had no room in wait_ms: nothing charged), or ENOMEM. */
int fs_partbuf_get(struct fs_wpool *wp, size_t cap, uint64_t wait_ms, char **out);
/* Give back a buffer of fs_partbuf_get (NULL: nothing) with its charge:
 * kept warm for the next part, still charged, while the idle ones stay
 * within the write reserve and some file is being written (idle ones are
 * unmapped, their charge given back, when nothing else of the write use
 * is charged, or a writer or another use wants memory); else unmapped
 * and its charge given back. */
void fs_partbuf_put(struct fs_wpool *wp, char *buf, size_t cap);
/* Exactly [off, off+len) of version `etag` ("" any) of `key` into dst.
 * 0, EIO (short, or the object changed: logged), or the S3 errno. */
int fs_get_range(struct fs *fs, const char *key, uint64_t off, size_t len, const char *etag,
                 char *dst);
/* pread of exactly len bytes at off (zeros past the end of the file).
 * 0 or the errno. */
int fs_read_all(int fd, char *p, size_t len, uint64_t off);
/* Queue part `number` of wf's upload; waits while the file has
 * max_inflight parts in flight.  `data` (FS_WJ_MEM: a part buffer of
 * data_cap bytes from fs_partbuf_get with its charge, its first len bytes
 * the part) becomes the job's, even on failure, and goes back with
 * fs_partbuf_put when the job ends; `reserved` bytes of the memory bound
 * (other kinds; 0 for FS_WJ_MEM) go back when the job ends.  0, the upload's first error, or
 * ENOMEM. */
int fs_up_submit(struct fs *fs, struct fs_wfile *wf, enum fs_wjob_kind kind, int number, char *data,
                 size_t data_cap, uint64_t off, uint64_t len, uint64_t reserved);
/* Whether UploadPartCopy works on this server: learnt once per mount by
 * copying one byte of the old object as part 1 (call before any part of
 * the upload is submitted). */
bool fs_part_copy_works(struct fs *fs, struct fs_wfile *wf);

/* ---- multipart.c: one file's multipart upload ------------------------ */

/* The file's key now (it may have been renamed; *gone: unlinked).  Caller
 * frees; NULL on ENOMEM. */
char *fs_wf_key(struct fs *fs, struct fs_inode *in, bool *gone);
/* The largest part made of local bytes: part_size, at least 2 x 5 MiB. */
uint64_t fs_local_part_cap(struct fs *fs);
/* Begin the multipart upload of the file, with its current metadata. */
int fs_up_create(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf);
/* Queue parts for the old object's [off, off+len) (len >= FS_MIN_PART
 * unless it ends the object).  0, EFBIG (too many parts), or an error. */
int fs_up_copy_range(struct fs *fs, struct fs_wfile *wf, uint64_t off, uint64_t len);
/* Complete the upload once every part landed (then the rename and metadata
 * fixes); the new ETag into etag.  On failure the upload is aborted. */
int fs_up_complete(struct fs *fs, struct fs_inode *in, struct fs_wfile *wf, char *etag);
/* Forget the upload, after its parts in flight (aborting it on the server
 * when `abort`). */
void fs_up_reset(struct fs *fs, struct fs_wfile *wf, bool abort);
/* The metadata a new object of `in` is stored with, taken now. */
struct fs_put_meta {
    struct fs_attr a;
    char *xattr;
    struct buf store;
    struct s3_meta meta[FS_META_MAX];
    struct s3_put_opts opts;
    struct s3_object_info kept;          /* fs_put_meta_keep's HEAD */
    struct s3_object_policy kept_policy; /* points into kept */
};
/* Take the inode's metadata now; the Content-Type from its name
 * (fs_content_type). */
void fs_put_meta_take(struct fs *fs, struct fs_inode *in, struct fs_put_meta *m);
/* The new object replaces `key` at version base_etag and copies some of
 * its bytes (an append, a staged edit): keep that object's Content-Type,
 * encryption and storage class (one HEAD).  When the HEAD fails or finds
 * another version, nothing is kept (the mount's settings apply). */
void fs_put_meta_keep(struct fs *fs, const char *key, const char *base_etag, struct fs_put_meta *m);
void fs_put_meta_free(struct fs_put_meta *m);

/* ---- gzview.c: decompressed views of gzip objects; gzindex_cmd.c ----- */

/* Fill a->size (and a->size_exact) of a view whose object is raw_path:
 * exact from a known index, else read whole now (small objects, or
 * gz_size=exact), else estimated from the ISIZE trailer (one 4-byte GET).
 * a->comp_size and a->etag must be set. */
void fs_gz_size(struct fs *fs, const char *raw_path, struct fs_attr *a);
/* The same without any request: exact when an index is known here, else
 * a->size stays (the compressed size). */
void fs_gz_size_known(struct fs *fs, const char *raw_path, struct fs_attr *a);
/* Open a view of the object at raw_path (version a->etag, a->comp_size
 * bytes).  *out is closed with fs_gz_close.  0, ENOMEM, EIO. */
int fs_gz_open(struct fs *fs, fuse_ino_t ino, const char *raw_path, const struct fs_attr *a,
               struct fs_gzhandle **out);
void fs_gz_close(struct fs_gzhandle *g);
/* Decompressed [off, off+size) into *data (malloc'ed, caller frees; *got
 * short only at the end).  *exact_size: the view's size once it is known,
 * else UINT64_MAX.  0, EIO (damaged stream, server failure), ENOMEM. */
int fs_gz_read(struct fs_gzhandle *g, uint64_t off, size_t size, char **data, size_t *got,
               uint64_t *exact_size);
/* Store the complete index `ix` of version `etag` of the object at
 * raw_path where a mount finds it (pailfs gzindex).  0 or ENOMEM. */
int fs_gz_index_store(struct fs *fs, const char *raw_path, const char *etag, struct gz_index *ix);
/* At unmount: every index still in memory. */
void fs_gz_free_all(struct fs *fs);
/* The mount's inflating threads, shared by every view (gz_workers of
 * them, started when a view first reads ahead).  new: 0 or ENOMEM; free
 * after every view is closed. */
int fs_gz_pool_new(struct fs *fs);
void fs_gz_pool_free(struct fs *fs);

/* ---- reply.c: the errno an operation replies with ------------------ */

/* Replies to req with errno rc (0: success) as a program should see it.
 * The layers below use EPROTO/EBADMSG for an answer the server garbled
 * (unreadable XML, a listing that never ends, oversized headers) and
 * ECANCELED for their own cancellations: to a program all of those are
 * EIO, the error it knows how to handle; the log line has the details. */
void fs_reply_err(fuse_req_t req, int rc);
/* The filesystem a request is for (every operation file). */
static inline struct fs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* ---- release.c: the last hold on a file ----------------------------- */

/* Hold inode `ino` (fs->lock not held): it and its write state stay while
 * an operation talks to S3 without the lock, as an open handle holds them.
 * Given back with fs_inode_put; NULL when the inode is unknown. */
struct fs_inode *fs_inode_hold(struct fs *fs, fuse_ino_t ino);
/* Give back one hold on `in` (an open handle's, or an operation's such as
 * setattr's; fs->lock not held).  The last one stores what was written
 * and not stored yet, frees the write state, and deletes the object of a
 * file unlinked while open.  0, or the error of the file's writes (logged)
 * when it is the last. */
int fs_inode_put(struct fs *fs, struct fs_inode *in);

/* ---- the operations (op_names.c, op_dir.c, op_xattr.c, op_file.c) --- */

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
