/* dir_rename.c — renaming a whole directory.
 *
 * A directory rename copies every key under it (bounded parallelism) and
 * only when every copy has succeeded deletes the originals, so a failure
 * midway leaves the old tree whole (and some copies beside it). */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct move_job {
    struct fs *fs;
    struct s3_list_entry *keys;
    size_t n;
    size_t src_len;
    const char *dst_prefix;
    const struct timespec *ctime; /* the marker's new ctime */
    atomic_size_t next;
    atomic_int error;
};

static void *move_worker(void *arg)
{
    struct move_job *j = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n || atomic_load(&j->error))
            break;
        struct buf dst = BUF_INIT;
        buf_puts(&dst, j->dst_prefix);
        buf_puts(&dst, j->keys[i].key + j->src_len);
        bool marker = j->keys[i].key[j->src_len] == '\0';
        int rc = !dst.data ? ENOMEM
                 : marker  ? fs_copy_new_ctime(j->fs, j->keys[i].key, dst.data, j->keys[i].etag,
                                               j->ctime, NULL)
                           : fs_copy(j->fs, j->keys[i].key, dst.data, j->keys[i].size,
                                     j->keys[i].etag, NULL, NULL);
        if (rc) {
            log_error("rename: copy of %s to %s failed: %s", j->keys[i].key, dst.data,
                      strerror(rc));
            int zero = 0;
            atomic_compare_exchange_strong(&j->error, &zero, rc);
        }
        buf_free(&dst);
    }
    return NULL;
}

static int list_all(struct fs *fs, const char *prefix, struct s3_list_entry **out, size_t *n_out)
{
    struct s3_list_entry *all = NULL;
    size_t n = 0;
    char *token = NULL;
    int rc;
    do {
        struct s3_list_params p = {.prefix = prefix, .continuation_token = token};
        struct s3_list_page page = {0};
        rc = s3_list_objects_v2(fs->s3, &p, &page, NULL);
        free(token);
        token = NULL;
        for (size_t i = 0; !rc && i < page.n_skipped; i++)
            fs_dir_warn_skipped(fs, page.skipped[i], FS_NUL_NAME " (left where it is)");
        if (!rc && page.n_entries) {
            struct s3_list_entry *m = realloc(all, (n + page.n_entries) * sizeof(*m));
            if (!m) {
                rc = ENOMEM;
            } else {
                all = m;
                memcpy(all + n, page.entries, page.n_entries * sizeof(*m));
                n += page.n_entries;
                page.n_entries = 0; /* the keys now belong to `all` */
            }
        }
        if (!rc && page.truncated && page.next_token)
            token = strdup(page.next_token);
        s3_list_page_free(&page);
    } while (!rc && token);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            free(all[i].key);
        free(all);
        return rc;
    }
    *out = all;
    *n_out = n;
    return 0;
}

int fs_rename_dir(struct fs *fs, const char *src, const char *dst, const struct timespec *ctime)
{
    char *src_prefix = fs_key(fs, src, true), *dst_prefix = fs_key(fs, dst, true);
    struct s3_list_entry *keys = NULL;
    size_t n = 0;
    int rc = src_prefix && dst_prefix ? list_all(fs, src_prefix, &keys, &n) : ENOMEM;
    if (rc)
        goto out;
    if (n == 0) {
        struct s3_put_opts o = {.content_type = FS_DIR_CONTENT_TYPE};
        rc = s3_put_object(fs->s3, dst_prefix, "", 0, &o, NULL, NULL);
        goto out;
    }
    struct move_job job = {.fs = fs,
                           .keys = keys,
                           .n = n,
                           .src_len = strlen(src_prefix),
                           .dst_prefix = dst_prefix,
                           .ctime = ctime};
    atomic_init(&job.next, 0);
    atomic_init(&job.error, 0);
    unsigned nthreads = fs->cfg.rename_parallel ? fs->cfg.rename_parallel : 8;
    if (nthreads > n)
        nthreads = (unsigned)n;
    pthread_t th[64];
    if (nthreads > 64)
        nthreads = 64;
    unsigned started = 0;
    for (; started < nthreads; started++)
        if (util_thread_start(&th[started], move_worker, &job))
            break;
    if (started == 0)
        move_worker(&job);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    rc = atomic_load(&job.error);
    if (rc) {
        log_error("rename of %s to %s stopped: the old keys are all kept; copies already made "
                  "under %s stay",
                  src_prefix, dst_prefix, dst_prefix);
        goto out;
    }
    /* Every copy is in place: now the originals go, 1000 per request. */
    for (size_t i = 0; i < n && !rc; i += 1000) {
        size_t m = n - i < 1000 ? n - i : 1000;
        const char *batch[1000];
        int errs[1000];
        for (size_t k = 0; k < m; k++)
            batch[k] = keys[i + k].key;
        rc = s3_delete_objects(fs->s3, batch, m, errs, NULL);
        for (size_t k = 0; k < m && !rc; k++)
            if (errs[k] && errs[k] != ENOENT)
                rc = errs[k];
    }
    if (rc)
        log_error("rename of %s to %s: the copies are complete but deleting the old keys "
                  "failed: %s",
                  src_prefix, dst_prefix, strerror(rc));
out:
    for (size_t i = 0; i < n; i++)
        free(keys[i].key);
    free(keys);
    free(src_prefix);
    free(dst_prefix);
    return rc;
}
