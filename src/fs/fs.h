/* fs.h — the filesystem layer: a bucket (or a prefix of it) as a directory
 * tree, served through libfuse3's low-level API.
 *
 * The command line builds a struct fs_config, makes an S3 client, checks the
 * bucket, then calls fs_new() and hands fs_lowlevel_ops() and the fs to
 * fuse_session_new().  When the FUSE loop has ended, fs_shutdown() finishes
 * what is still pending (uploads of files still open) and fs_free() releases
 * everything.  The layer knows src/s3 and src/util; it never prints to
 * stderr except through the logger. */
#ifndef PAILFS_FS_H
#define PAILFS_FS_H

#include "s3/s3.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

struct fs;

struct fs_config {
    const char *bucket; /* for messages */
    const char *prefix; /* "" or "some/prefix" (no leading or trailing '/') */
    bool read_only;     /* every change fails with EROFS */
    bool multi_user;    /* allow_other: the kernel checks other users'
                         * permissions against the modes and owners shown,
                         * so a listing's defaults are never shown as valid */

    /* What objects without s3fs metadata look like. */
    uid_t uid; /* default owner: the mounting user */
    gid_t gid;
    bool force_uid;   /* uid= given: every object shows `uid` */
    bool force_gid;   /* gid= given: every object shows `gid` */
    bool compat_dir;  /* a listing's empty keys are typed by a HEAD each: old-style
                       * directory objects show as directories after listings too */
    mode_t file_mode; /* permission bits of files, default 0644 */
    mode_t dir_mode;  /* permission bits of directories, default 0755 */
    mode_t umask;     /* cleared from every mode shown, default 0 */

    double attr_ttl;     /* seconds attributes and entries stay valid (1) */
    double neg_ttl;      /* seconds a missing name stays missing (1) */
    unsigned list_page;  /* keys asked per LIST page, 1 to 1000 (1000); a
                          * smaller one is for tests of long listings */
    unsigned max_inodes; /* inodes past which the kernel is asked to forget
                          * the oldest files (20000) */

    const char *cache_dir;    /* staging of files being written, and the block cache */
    unsigned rename_parallel; /* copies in flight during a directory rename (8) */

    /* The read path. */
    const char *endpoint;         /* names cached blocks with the bucket ("" → AWS) */
    uint64_t cache_size;          /* bound of the disk block cache; 0 turns it off */
    bool cache_size_set;          /* false: the default (cache_default_limit()) */
    uint64_t max_memory;          /* all read buffers of the mount (256 MiB) */
    uint64_t part_size;           /* bytes per ranged GET of the read-ahead (8 MiB) */
    uint64_t max_readahead;       /* read-ahead window of one open file (64 MiB) */
    unsigned read_parallel;       /* ranged GETs in flight for reads (8) */
    unsigned max_read;            /* -o max_read: the largest FUSE read; 0: the kernel's */
    unsigned max_inflight;        /* parts of one file uploading at once (8) */
    uint64_t abort_stale_uploads; /* seconds; 0: never (86400) */

    /* gzip views. */
    enum fs_gunzip { FS_GUNZIP_OFF, FS_GUNZIP_ENCODING, FS_GUNZIP_VIEW, FS_GUNZIP_REPLACE } gunzip;
    uint64_t gz_span;       /* output bytes between access points (8 MiB) */
    unsigned gz_workers;    /* inflating workers of a sequential view reader;
                             * 0: one per core but one, 1 to 4 */
    bool gz_size_exact;     /* stat of a view of unknown size builds its index */
    bool gz_index_shared;   /* indexes are also kept in the bucket */
    bool gz_index_no_local; /* none kept in cache_dir (SSE-C: they hold
                             * decompressed bytes) */

    /* New objects. */
    const char *mime_types; /* a mime.types file: new files get the
                             * Content-Type of their extension (else
                             * application/octet-stream); NULL: none sent */
};

/* Fill *cfg with the defaults above (uid/gid: the calling process's). */
void fs_config_defaults(struct fs_config *cfg);

/* Make a filesystem over `s3` (which it does not own: free it after
 * fs_free()).  The config's strings must outlive the fs.
 * 0, ENOMEM, EBUSY (another pailfs uses this bucket's block cache in
 * cache_dir), EPERM or ELOOP (cache_dir or a directory or lock file in it
 * is not private, see util_private_dir(): logged), or the errno of
 * creating cache_dir (EACCES, ENOTDIR, …). */
int fs_new(const struct fs_config *cfg, struct s3_client *s3, struct fs **out);

/* The session the fs serves, for notifications to the kernel (call once,
 * before the loop starts). */
void fs_set_session(struct fs *fs, struct fuse_session *se);

/* The extended attribute of the mount root whose value is every metric in
 * the Prometheus text format (util's metrics_format()), for
 * `pailfs --stats`.  It is never listed by listxattr and cannot be set or
 * removed (EPERM); on any other inode it is an ordinary user xattr. */
#define FS_STATS_XATTR "user.pailfs.stats"

/* FUSE requests the kernel sends in the background at once (its
 * read-ahead of every open file together: its default, 12, kept more than
 * a dozen files read at once waiting on each other), told at init; the
 * loop's worker threads may be as many, plus FS_LOOP_EXTRA_THREADS for
 * the requests programs wait on meanwhile.  Each thread waits on a read's
 * blocks, which max_memory bounds. */
#define FS_MAX_BACKGROUND 64
#define FS_LOOP_EXTRA_THREADS 16

/* The operations table to give to fuse_session_new() with `fs` as userdata. */
const struct fuse_lowlevel_ops *fs_lowlevel_ops(void);

/* After the session loop ended: upload whatever open files still hold
 * (logging any failure: there is no caller left to tell).  Returns 0 when
 * everything was stored, else EIO. */
int fs_shutdown(struct fs *fs);

void fs_free(struct fs *fs);

/* `pailfs gzindex`: build the gzip index of `key` (a key of the bucket,
 * whatever cfg->prefix says) through `s3`, and store it where mounts with
 * the same cache_dir (and, with gz_index=shared, every node) find it.
 * progress(arg, done, total) is called now and then with compressed bytes.
 * *size_out: the decompressed size.  0, EIO (damaged or not gzip), or the
 * errno of S3. */
int fs_gzindex_build(const struct fs_config *cfg, struct s3_client *s3, const char *key,
                     void (*progress)(void *arg, uint64_t done, uint64_t total), void *arg,
                     uint64_t *size_out, size_t *points_out, size_t *index_bytes_out);

#endif
