/* gzindex_cmd.c — `pailfs gzindex`: building the index of a gzip object
 * without a mount.
 *
 * The object is read once, start to end, in 8 MiB GETs pinned to its
 * ETag, and inflated with src/gz; the finished index is stored where a
 * mount would store it (gzview.c: cache_dir, and the bucket with
 * gz_index=shared), so the first mount that opens the view has its
 * exact size and fast seeks at once. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BUILD_CHUNK (8u << 20)

struct s3src {
    struct fs *fs;
    const char *key;
    const char *etag;
    uint64_t size;
    char *buf;
    uint64_t buf_off;
    size_t buf_len;
    void (*progress)(void *, uint64_t, uint64_t);
    void *arg;
};

/* Compressed bytes straight from S3, 8 MiB GETs in order. */
static int s3src_read(void *arg, uint64_t off, void *out, size_t len, size_t *got)
{
    struct s3src *s = arg;
    *got = 0;
    while (*got < len && off + *got < s->size) {
        uint64_t pos = off + *got;
        if (pos < s->buf_off || pos >= s->buf_off + s->buf_len) {
            s->buf_off = pos;
            s->buf_len = 0;
            int rc = s3_get_to_mem(s->fs->s3, s->key, pos, BUILD_CHUNK, s->etag, s->buf,
                                   BUILD_CHUNK, &s->buf_len, NULL, NULL);
            if (rc) {
                s->buf_len = 0;
                /* changed since its HEAD, or longer than asked for */
                return rc == ESTALE || rc == EFBIG ? EIO : rc;
            }
            if (!s->buf_len)
                break;
            if (s->progress)
                s->progress(s->arg, pos + s->buf_len, s->size);
        }
        size_t k = (size_t)(s->buf_off + s->buf_len - pos);
        if (k > len - *got)
            k = len - *got;
        memcpy((char *)out + *got, s->buf + (pos - s->buf_off), k);
        *got += k;
    }
    return 0;
}

int fs_gzindex_build(const struct fs_config *cfg, struct s3_client *s3, const char *key,
                     void (*progress)(void *arg, uint64_t done, uint64_t total), void *arg,
                     uint64_t *size_out, size_t *points_out, size_t *index_bytes_out)
{
    struct fs fs = {.cfg = *cfg, .s3 = s3, .key_prefix = ""};
    pthread_mutex_init(&fs.gz_lock, NULL);
    fs_once_init(&fs.once);
    struct s3_object_info info = {0};
    int rc = util_make_dirs(cfg->cache_dir, 0700);
    if (rc)
        log_error("cannot make %s: %s", cfg->cache_dir, strerror(rc));
    if (!rc)
        rc = s3_head_object(s3, key, &info, NULL);
    struct s3src src = {.fs = &fs,
                        .key = key,
                        .etag = info.etag,
                        .size = info.size,
                        .buf = malloc(BUILD_CHUNK),
                        .progress = progress,
                        .arg = arg};
    struct gz_index *ix = NULL;
    struct gz_reader *r = NULL;
    char *scratch = malloc(4u << 20);
    if (!rc && (!src.buf || !scratch))
        rc = ENOMEM;
    if (!rc) {
        unsigned char head[3];
        size_t got = 0;
        rc = s3src_read(&src, 0, head, sizeof(head), &got);
        if (!rc && !gz_is_gzip(head, got)) {
            log_error("%s is not gzip", key);
            rc = EIO;
        }
    }
    if (!rc)
        rc = gz_index_new(info.size, cfg->gz_span, &ix);
    if (!rc)
        rc = gz_reader_new(ix, s3src_read, &src, &r);
    for (uint64_t off = 0; !rc;) {
        size_t got = 0;
        rc = gz_read(r, off, scratch, 4u << 20, &got);
        if (!got)
            break;
        off += got;
    }
    uint64_t size = 0;
    if (!rc && !gz_index_size(ix, &size))
        rc = EIO;
    if (!rc) {
        struct buf data = BUF_INIT;
        if (gz_index_save(ix, &data) == 0)
            *index_bytes_out = data.len;
        buf_free(&data);
        rc = fs_gz_index_store(&fs, key, info.etag, ix);
        *size_out = size;
        *points_out = gz_index_points(ix);
    }
    gz_reader_free(r);
    gz_index_free(ix);
    free(scratch);
    free(src.buf);
    s3_object_info_clear(&info);
    pthread_mutex_destroy(&fs.gz_lock);
    fs_once_free(&fs.once);
    return rc;
}
