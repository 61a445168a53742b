/* fs.c — making, shutting down and freeing a filesystem: the mount's
 * configuration defaults, its cache directories, and starting and stopping
 * the engines (the read path, the upload pool, listings ahead, gzip views)
 * in order. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fs_config_defaults(struct fs_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->prefix = "";
    cfg->uid = getuid();
    cfg->gid = getgid();
    cfg->file_mode = 0644;
    cfg->dir_mode = 0755;
    cfg->attr_ttl = 1.0;
    cfg->neg_ttl = 1.0;
    cfg->rename_parallel = 8;
    cfg->endpoint = "";
    /* an eighth of what the cgroup or the machine allows, 16M to 256M */
    cfg->max_memory = util_mem_default(util_mem_available(""));
    cfg->part_size = 8ULL << 20;
    cfg->max_readahead = 64ULL << 20;
    cfg->read_parallel = 8;
    cfg->list_page = 1000;
    cfg->max_inodes = 20000;
    cfg->max_inflight = 8;
    cfg->abort_stale_uploads = 86400;
    cfg->gunzip = FS_GUNZIP_ENCODING;
    cfg->gz_span = 8ULL << 20;
}

/* cache_dir and what the fs keeps in it (the block caches check their own
 * directories), all private: another user who could write there could
 * plant staged data, gzip indexes or blocks.  A gzindex directory is made
 * when the first index is stored. */
static int make_cache_dirs(const char *cache_dir)
{
    int rc = util_make_dirs(cache_dir, 0700);
    struct buf b = BUF_INIT;
    if (!rc)
        rc = buf_printf(&b, "%s/staging", cache_dir) ? ENOMEM : util_private_dir(b.data, true);
    buf_clear(&b);
    if (!rc && !(rc = buf_printf(&b, "%s/gzindex", cache_dir)) &&
        (rc = util_private_dir(b.data, false)) == ENOENT)
        rc = 0;
    buf_free(&b);
    return rc;
}

/* The mime.types table, read once.  A missing or unreadable file is no
 * reason to refuse the mount: new files are then application/octet-stream. */
static void load_mime_types(struct fs *fs)
{
    if (!fs->cfg.mime_types)
        return;
    int rc = util_mime_load(fs->cfg.mime_types, &fs->mime);
    if (rc)
        log_warn("cannot read %s (%s): new files are stored as application/octet-stream",
                 fs->cfg.mime_types, strerror(rc));
}

int fs_new(const struct fs_config *cfg, struct s3_client *s3, struct fs **out)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return ENOMEM;
    metrics_register(fs_metrics, FS_M_COUNT);
    gz_metrics_init();
    fs->cfg = *cfg;
    fs->s3 = s3;
    fs->attr_ttl_ms = (uint64_t)(cfg->attr_ttl * 1000.0);
    clock_gettime(CLOCK_REALTIME, &fs->mount_time);
    pthread_mutex_init(&fs->lock, NULL);
    struct buf b = BUF_INIT;
    if (cfg->prefix && *cfg->prefix)
        buf_printf(&b, "%s/", cfg->prefix);
    fs->key_prefix = buf_steal(&b);
    int rc = fs->key_prefix ? 0 : ENOMEM;
    if (!cfg->cache_dir)
        fs->cfg.cache_dir = "/var/cache/pailfs";
    if (!rc)
        rc = make_cache_dirs(fs->cfg.cache_dir); /* the caller says why it failed */
    struct fs_inode *root = rc ? NULL : calloc(1, sizeof(*root));
    if (!rc && (!root || !(root->path = strdup("")))) {
        free(root);
        rc = ENOMEM;
    }
    if (rc) {
        free(fs->key_prefix);
        pthread_mutex_destroy(&fs->lock);
        free(fs);
        return rc;
    }
    load_mime_types(fs);
    root->ino = FUSE_ROOT_ID;
    root->linked = true;
    root->nlookup = 1;
    fs_attr_from_listing(&fs->cfg, true, 0, fs->mount_time.tv_sec, NULL, &root->attr);
    root->attr.mtime = root->attr.atime = root->attr.ctime = fs->mount_time;
    root->attr.headed = true; /* the mount's own: nothing to ask */
    root->attr_expire_ms = UINT64_MAX;
    HASH_ADD(hh, fs->by_ino, ino, sizeof(root->ino), root);
    HASH_ADD_KEYPTR(hh_path, fs->by_path, root->path, 0, root);
    fs->next_ino = FUSE_ROOT_ID + 1;
    fs->handles.next = fs->handles.prev = &fs->handles;
    pthread_mutex_init(&fs->gz_lock, NULL);
    fs_once_init(&fs->once);
    rc = fs_budget_new(cfg->max_memory, &fs->budget);
    if (!rc)
        rc = fs_gz_pool_new(fs);
    if (!rc)
        rc = fs_readpool_new(fs);
    if (!rc)
        rc = fs_prefetch_new(fs);
    if (!rc)
        rc = fs_wpool_new(fs);
    if (!rc)
        rc = fs_ahead_new(fs);
    if (rc) {
        fs_free(fs);
        return rc;
    }
    *out = fs;
    return 0;
}

void fs_set_session(struct fs *fs, struct fuse_session *se)
{
    fs->se = se;
    if (se && fs_evict_start(fs))
        log_warn("no thread to bound the inode table: it grows with what the kernel holds");
}

int fs_shutdown(struct fs *fs)
{
    fs_evict_stop(fs); /* nothing is said to the kernel once the mount is going */
    fs_ahead_stop(fs); /* no listing ahead once the mount is going */
    return fs_upload_all(fs);
}

void fs_free(struct fs *fs)
{
    if (!fs)
        return;
    /* first: their workers read and publish to the inode table */
    fs_evict_stop(fs);
    fs_ahead_free(fs);
    fs_prefetch_free(fs);
    while (fs->handles.next != &fs->handles) {
        struct fs_open *o = fs->handles.next;
        o->prev->next = o->next;
        o->next->prev = o->prev;
        o->free_fn(o);
    }
    struct fs_inode *in, *tmp;
    HASH_ITER(hh, fs->by_ino, in, tmp)
    {
        if (in->linked)
            HASH_DELETE(hh_path, fs->by_path, in);
        HASH_DELETE(hh, fs->by_ino, in);
        fs_wfile_free(fs, in->wf);
        fs_known_free_locked(fs, in); /* no other thread is left */
        free(in->path);
        free(in->symlink);
        free(in->xattr);
        free(in);
    }
    struct fs_hidden *h, *htmp;
    HASH_ITER(hh, fs->hidden, h, htmp)
    {
        HASH_DEL(fs->hidden, h);
        free(h->path);
        free(h);
    }
    fs_gz_pool_free(fs); /* after the handles: their views leave it */
    fs_gz_free_all(fs);
    fs_readpool_free(fs);       /* after the handles: their readers use it */
    fs_wpool_free(fs);          /* after the write states: their uploads use it */
    fs_budget_free(fs->budget); /* last: every use gives its memory back to it */
    free(fs->key_prefix);
    util_mime_free(fs->mime);
    pthread_mutex_destroy(&fs->gz_lock);
    fs_once_free(&fs->once);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
}
