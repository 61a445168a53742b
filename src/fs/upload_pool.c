/* upload_pool.c — the upload threads of a mount and the memory they may
 * hold.
 *
 * Parts of multipart uploads (multipart.c) are jobs on one queue served by
 * 2 x max_inflight threads (at most 32): a part in memory, a range of a
 * staging file, a range of the old object copied server-side
 * (UploadPartCopy) or, where the server cannot copy, fetched and sent
 * again.  Each file has at most max_inflight parts in flight; the parts
 * in memory of all files count against max_memory, and a writer waits
 * (up to 10 s, then goes over with one warning) for memory given back.
 * Whether the server implements UploadPartCopy is learnt once per mount.
 * At mount a thread also aborts multipart uploads under the prefix older
 * than abort_stale_uploads.
 *
 * A stream's part buffers are kept warm (see "warm part buffers" below):
 * a buffer whose upload ended serves the next part, so a sequential write
 * does not fault in and zero 8 MiB of fresh memory per part. */
#include "fs/fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_WMEM_WAIT_MS 10000

/* An idle part buffer: the list node lives in the buffer's own first bytes. */
struct partbuf {
    struct partbuf *next;
    size_t cap;
};

struct wjob {
    struct wjob *next;
    struct fs_wfile *wf;
    enum fs_wjob_kind kind;
    int number;
    char *data; /* FS_WJ_MEM: the part, a part buffer of data_cap
                 * bytes (owned, given back by the job); FS_WJ_FD and
                 * FETCH: malloc'd by the job */
    size_t data_cap;
    uint64_t off, len; /* FS_WJ_FD/COPY/FETCH: the range */
    uint64_t reserved; /* bytes of the memory bound the job gives back */
    int fd;            /* FS_WJ_FD */
    char *key, *upload_id;
    char src_etag[80];
};

struct fs_wpool {
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* a job queued, or stop */
    pthread_cond_t mem_cond;  /* memory given back */
    struct wjob *head, *tail; /* protected by lock */
    bool stop;                /* protected by lock */
    uint64_t mem_used;        /* protected by lock */
    uint64_t mem_limit;
    bool warned_mem; /* protected by lock */
    pthread_t *threads;
    unsigned n_threads;
    pthread_t stale; /* the stale-upload sweep at mount */
    bool stale_started;
    int part_copy;        /* 1 works, -1 refused, 0 unknown; protected by lock */
    struct partbuf *idle; /* warm part buffers; protected by lock */
    uint64_t idle_bytes;  /* their sizes; protected by lock */
};

/* ---- warm part buffers ----------------------------------------------------
 *
 * A fresh part buffer costs a page fault and a zeroed page per 4 KiB the
 * writer fills, and its unmapping as much again: a third of the CPU of a
 * sequential write (issue 21's profile).  So a part buffer is mapped once
 * and, when its upload ends, kept idle for the next part of the same size
 * (any file's).  Idle buffers count against max_memory with the reserved
 * bytes: one given back (after its reservation) is kept only while
 * reserved + idle + it stay within the bound, and a writer that needs
 * memory unmaps idle ones (partbuf_trim_locked) before it would wait.
 * Buffers of 2 MiB and more ask for transparent huge pages
 * (MADV_HUGEPAGE): a fresh one then faults in 512 times fewer pieces. */

#define FS_HUGE_PAGE (2u << 20)

static void partbuf_unmap(void *p, size_t cap)
{
    if (p)
        munmap(p, cap);
}

/* Unmap idle buffers until n more bytes fit in the bound beside the
 * reserved and idle ones (or none is left). */
static void partbuf_trim_locked(struct fs_wpool *wp, uint64_t n)
{
    while (wp->idle && wp->mem_used + wp->idle_bytes + n > wp->mem_limit) {
        struct partbuf *b = wp->idle;
        wp->idle = b->next;
        wp->idle_bytes -= b->cap;
        partbuf_unmap(b, b->cap);
    }
}

char *fs_partbuf_get(struct fs_wpool *wp, size_t cap)
{
    pthread_mutex_lock(&wp->lock);
    for (struct partbuf **pp = &wp->idle; *pp; pp = &(*pp)->next) {
        struct partbuf *b = *pp;
        if (b->cap != cap)
            continue;
        *pp = b->next;
        wp->idle_bytes -= cap;
        pthread_mutex_unlock(&wp->lock);
        return (char *)b;
    }
    pthread_mutex_unlock(&wp->lock);
    void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (cap >= FS_HUGE_PAGE)
        (void)madvise(p, cap, MADV_HUGEPAGE); /* a hint: refused, 4 KiB pages */
#endif
    return p;
}

void fs_partbuf_put(struct fs_wpool *wp, char *buf, size_t cap)
{
    if (!buf)
        return;
    if (cap < sizeof(struct partbuf)) {
        partbuf_unmap(buf, cap);
        return;
    }
    pthread_mutex_lock(&wp->lock);
    bool keep = !wp->stop && wp->mem_used + wp->idle_bytes + cap <= wp->mem_limit;
    if (keep) {
        struct partbuf *b = (struct partbuf *)(void *)buf;
        b->cap = cap;
        b->next = wp->idle;
        wp->idle = b;
        wp->idle_bytes += cap;
    }
    pthread_mutex_unlock(&wp->lock);
    if (!keep)
        partbuf_unmap(buf, cap);
}

/* ---- the memory bound ------------------------------------------------------ */

uint64_t fs_wmem_take(struct fs_wpool *wp, uint64_t n)
{
    pthread_mutex_lock(&wp->lock);
    partbuf_trim_locked(wp, n); /* idle warm buffers go before anyone waits */
    uint64_t deadline = util_now_ms() + FS_WMEM_WAIT_MS;
    while (wp->mem_used && wp->mem_used + n > wp->mem_limit) {
        uint64_t now = util_now_ms();
        if (now >= deadline) {
            /* Buffers of files that are not being written fill the bound;
             * waiting longer could wait forever on the same program. */
            if (!wp->warned_mem)
                log_warn("write buffers exceed max_memory (%llu MiB): many files are open "
                         "for writing at once and partly written",
                         (unsigned long long)(wp->mem_limit >> 20));
            wp->warned_mem = true;
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (deadline - now) * 1000000ULL;
        ts.tv_sec += (time_t)(ns / 1000000000ULL);
        ts.tv_nsec = (long)(ns % 1000000000ULL);
        pthread_cond_timedwait(&wp->mem_cond, &wp->lock, &ts);
    }
    wp->mem_used += n;
    metrics_add(&fs_metrics[FS_M_MEM_WRITE], (int64_t)n);
    pthread_mutex_unlock(&wp->lock);
    return n;
}

void fs_wmem_give(struct fs_wpool *wp, uint64_t n)
{
    if (!n)
        return;
    pthread_mutex_lock(&wp->lock);
    wp->mem_used -= n;
    metrics_add(&fs_metrics[FS_M_MEM_WRITE], -(int64_t)n);
    pthread_cond_broadcast(&wp->mem_cond);
    pthread_mutex_unlock(&wp->lock);
}

/* Exactly [off, off+len) of version `etag` of `key` into dst. */
int fs_get_range(struct fs *fs, const char *key, uint64_t off, size_t len, const char *etag,
                 char *dst)
{
    size_t got = 0;
    int rc = s3_get_to_mem(fs->s3, key, off, len, *etag ? etag : NULL, dst, len, &got, NULL, NULL);
    if (rc == ESTALE)
        log_error("%s changed in the bucket while open for writing", key);
    /* Fewer bytes (the object ends first) or more (EFBIG) than asked: EIO. */
    if (!rc && got != len)
        rc = EIO;
    return rc == ESTALE || rc == EFBIG ? EIO : rc;
}

int fs_read_all(int fd, char *p, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0) { /* past the end of a sparse file: zeros */
            memset(p + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    return 0;
}

static int wjob_body(struct fs *fs, struct wjob *j, struct s3_part *part)
{
    if (j->kind == FS_WJ_COPY)
        return s3_upload_part_copy(fs->s3, j->key, j->upload_id, j->number, j->key, j->off, j->len,
                                   j->src_etag, part, NULL);
    int rc = 0;
    if (j->kind != FS_WJ_MEM) {
        j->data = malloc(j->len ? j->len : 1);
        if (!j->data)
            return ENOMEM;
        rc = j->kind == FS_WJ_FD ? fs_read_all(j->fd, j->data, j->len, j->off)
                                 : fs_get_range(fs, j->key, j->off, j->len, j->src_etag, j->data);
        j->off = 0;
    }
    if (!rc)
        rc = s3_upload_part(fs->s3, j->key, j->upload_id, j->number, j->data, j->len, part, NULL);
    return rc;
}

/* The job's bytes: a part buffer goes back warm, the rest is freed. */
static void wjob_drop_data(struct fs_wpool *wp, struct wjob *j)
{
    if (j->kind == FS_WJ_MEM)
        fs_partbuf_put(wp, j->data, j->data_cap);
    else
        free(j->data);
    j->data = NULL;
}

static void wjob_free(struct fs_wpool *wp, struct wjob *j)
{
    wjob_drop_data(wp, j);
    free(j->key);
    free(j->upload_id);
    free(j);
}

static void wjob_run(struct fs *fs, struct wjob *j)
{
    struct s3_part part = {0};
    int rc = wjob_body(fs, j, &part);
    fs_wmem_give(fs->wp, j->reserved);
    wjob_drop_data(fs->wp, j); /* kept warm if it fits beside what is reserved now */
    struct fs_wfile *wf = j->wf;
    pthread_mutex_lock(&wf->lock);
    struct s3_part *p = &wf->up.parts[j->number - 1];
    *p = part;
    p->number = j->number;
    if (rc && !wf->up.error) {
        log_error("part %d of %s failed: %s", j->number, j->key, strerror(rc));
        wf->up.error = rc;
    }
    wf->up.inflight--;
    metrics_add(&fs_metrics[FS_M_PARTS_INFLIGHT], -1);
    pthread_cond_broadcast(&wf->cond);
    pthread_mutex_unlock(&wf->lock);
    wjob_free(fs->wp, j);
}

static void *wpool_main(void *arg)
{
    struct fs *fs = arg;
    struct fs_wpool *wp = fs->wp;
    pthread_mutex_lock(&wp->lock);
    for (;;) {
        while (!wp->head && !wp->stop)
            pthread_cond_wait(&wp->cond, &wp->lock);
        if (!wp->head)
            break;
        struct wjob *j = wp->head;
        wp->head = j->next;
        if (!wp->head)
            wp->tail = NULL;
        pthread_mutex_unlock(&wp->lock);
        wjob_run(fs, j);
        pthread_mutex_lock(&wp->lock);
    }
    pthread_mutex_unlock(&wp->lock);
    return NULL;
}

/* Abort multipart uploads under the mount's prefix begun longer ago than
 * abort_stale_uploads: what a killed pailfs leaves behind.  Other tools'
 * uploads that old are aborted too: no upload should live that long.  An
 * upload whose age is unknown (no <Initiated>, or one we cannot read) is
 * left alone: it may be another writer's, in use now.  A key outside the
 * prefix never gets here: s3_list_multipart_uploads refuses its page. */
static void *stale_main(void *arg)
{
    struct fs *fs = arg;
    int64_t cutoff = (int64_t)time(NULL) - (int64_t)fs->cfg.abort_stale_uploads;
    char *key_marker = NULL, *id_marker = NULL;
    unsigned aborted = 0, unknown_age = 0;
    for (;;) {
        struct s3_upload_page page;
        int rc =
            s3_list_multipart_uploads(fs->s3, fs->key_prefix, key_marker, id_marker, &page, NULL);
        if (rc) {
            if (rc == ENOSYS || rc == ENOTSUP)
                log_info("the server does not list multipart uploads: stale uploads are not "
                         "cleaned");
            else
                log_warn("listing stale multipart uploads failed: %s", strerror(rc));
            break;
        }
        for (size_t i = 0; i < page.n_uploads; i++) {
            struct s3_upload *u = &page.uploads[i];
            unknown_age += !u->initiated_known;
            if (!u->initiated_known || u->initiated > cutoff)
                continue;
            rc = s3_abort_multipart_upload(fs->s3, u->key, u->upload_id, NULL);
            if (rc && rc != ENOENT)
                log_warn("aborting the stale upload of %s failed: %s", u->key, strerror(rc));
            else
                aborted++;
        }
        free(key_marker);
        free(id_marker);
        key_marker = page.truncated && page.next_key_marker ? strdup(page.next_key_marker) : NULL;
        id_marker = page.truncated && page.next_upload_id_marker
                        ? strdup(page.next_upload_id_marker)
                        : NULL;
        s3_upload_page_free(&page);
        if (!key_marker)
            break;
    }
    free(key_marker);
    free(id_marker);
    if (aborted)
        log_info("aborted %u multipart upload(s) older than %llu s", aborted,
                 (unsigned long long)fs->cfg.abort_stale_uploads);
    if (unknown_age)
        log_info("left %u multipart upload(s) alone: when they began is unknown", unknown_age);
    return NULL;
}

int fs_wpool_new(struct fs *fs)
{
    struct fs_wpool *wp = calloc(1, sizeof(*wp));
    if (!wp)
        return ENOMEM;
    pthread_mutex_init(&wp->lock, NULL);
    pthread_cond_init(&wp->cond, NULL);
    pthread_cond_init(&wp->mem_cond, NULL);
    wp->mem_limit = fs->cfg.max_memory;
    unsigned inflight = fs->cfg.max_inflight ? fs->cfg.max_inflight : 8;
    wp->n_threads = inflight * 2 > 32 ? 32 : inflight * 2;
    wp->threads = calloc(wp->n_threads, sizeof(*wp->threads));
    fs->wp = wp;
    if (!wp->threads) {
        wp->n_threads = 0;
        return ENOMEM;
    }
    for (unsigned i = 0; i < wp->n_threads; i++) {
        if (util_thread_start(&wp->threads[i], wpool_main, fs)) {
            wp->n_threads = i;
            return EAGAIN;
        }
    }
    if (fs->cfg.part_size < FS_MIN_PART && !fs->cfg.read_only)
        log_warn("part_size=%lluk: AWS S3 refuses multipart parts under 5M (only servers "
                 "without that minimum accept files written with it)",
                 (unsigned long long)(fs->cfg.part_size >> 10));
    if (fs->cfg.abort_stale_uploads && !fs->cfg.read_only)
        wp->stale_started = util_thread_start(&wp->stale, stale_main, fs) == 0;
    return 0;
}

void fs_wpool_free(struct fs *fs)
{
    struct fs_wpool *wp = fs->wp;
    if (!wp)
        return;
    if (wp->stale_started)
        pthread_join(wp->stale, NULL);
    pthread_mutex_lock(&wp->lock);
    wp->stop = true;
    pthread_cond_broadcast(&wp->cond);
    pthread_mutex_unlock(&wp->lock);
    for (unsigned i = 0; i < wp->n_threads; i++)
        pthread_join(wp->threads[i], NULL);
    free(wp->threads);
    while (wp->idle) {
        struct partbuf *b = wp->idle;
        wp->idle = b->next;
        partbuf_unmap(b, b->cap);
    }
    pthread_cond_destroy(&wp->cond);
    pthread_cond_destroy(&wp->mem_cond);
    pthread_mutex_destroy(&wp->lock);
    free(wp);
    fs->wp = NULL;
}

static int up_grow(struct fs_wfile *wf, size_t need)
{
    if (need <= wf->up.cap)
        return 0;
    pthread_mutex_lock(&wf->lock); /* the upload threads write parts[] */
    size_t old = wf->up.cap;
    int rc = util_grow((void **)&wf->up.parts, &wf->up.cap, need, sizeof(*wf->up.parts));
    if (!rc) /* a part not yet finished has number 0 */
        memset(wf->up.parts + old, 0, (wf->up.cap - old) * sizeof(*wf->up.parts));
    pthread_mutex_unlock(&wf->lock);
    return rc;
}

/* Queue part `number`; waits while the file has max_inflight parts in
 * flight.  `data` (FS_WJ_MEM, a part buffer of data_cap bytes) becomes the
 * job's; `reserved` bytes of the memory bound go back when the job ends. */
int fs_up_submit(struct fs *fs, struct fs_wfile *wf, enum fs_wjob_kind kind, int number, char *data,
                 size_t data_cap, uint64_t off, uint64_t len, uint64_t reserved)
{
    struct wjob *j = calloc(1, sizeof(*j));
    int rc = up_grow(wf, (size_t)number);
    if (!j || rc || !(j->key = strdup(wf->up.key)) || !(j->upload_id = strdup(wf->up.id))) {
        if (j)
            wjob_free(fs->wp, j);
        fs_wmem_give(fs->wp, reserved);
        if (kind == FS_WJ_MEM)
            fs_partbuf_put(fs->wp, data, data_cap);
        return ENOMEM;
    }
    j->wf = wf;
    j->kind = kind;
    j->number = number;
    j->data = data;
    j->data_cap = data_cap;
    j->off = off;
    j->len = len;
    j->reserved = reserved;
    j->fd = wf->fd;
    snprintf(j->src_etag, sizeof(j->src_etag), "%s", wf->base_etag);
    unsigned limit = fs->cfg.max_inflight ? fs->cfg.max_inflight : 8;
    pthread_mutex_lock(&wf->lock);
    wf->up.inflight++;
    metrics_add(&fs_metrics[FS_M_PARTS_INFLIGHT], 1);
    pthread_mutex_unlock(&wf->lock);
    struct fs_wpool *wp = fs->wp;
    pthread_mutex_lock(&wp->lock);
    if (wp->tail)
        wp->tail->next = j;
    else
        wp->head = j;
    wp->tail = j;
    pthread_cond_signal(&wp->cond);
    pthread_mutex_unlock(&wp->lock);
    pthread_mutex_lock(&wf->lock);
    while (wf->up.inflight >= limit)
        pthread_cond_wait(&wf->cond, &wf->lock);
    rc = wf->up.error;
    pthread_mutex_unlock(&wf->lock);
    return rc;
}

/* Whether UploadPartCopy works on this server: learnt once per mount by
 * copying one byte of `src` as part 1 (overwritten by the real part 1, so
 * it must be called before any part of the upload is submitted). */
bool fs_part_copy_works(struct fs *fs, struct fs_wfile *wf)
{
    struct fs_wpool *wp = fs->wp;
    pthread_mutex_lock(&wp->lock);
    int known = wp->part_copy;
    pthread_mutex_unlock(&wp->lock);
    if (known)
        return known > 0;
    struct s3_part probe;
    int rc = s3_upload_part_copy(fs->s3, wf->up.key, wf->up.id, 1, wf->up.key, 0, 1, wf->base_etag,
                                 &probe, NULL);
    bool refused = rc == ENOSYS || rc == ENOTSUP; /* 501 NotImplemented, 405 */
    if (rc && !refused)
        return true; /* some other failure: the real copy will report it */
    pthread_mutex_lock(&wp->lock);
    wp->part_copy = rc ? -1 : 1;
    pthread_mutex_unlock(&wp->lock);
    if (rc)
        log_warn("the server does not implement UploadPartCopy: unchanged bytes of edited "
                 "objects are downloaded and uploaded again");
    return rc == 0;
}
