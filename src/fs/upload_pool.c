/* upload_pool.c — the upload threads of a mount and the memory they may
 * hold.
 *
 * Parts of multipart uploads (multipart.c) are jobs on one queue served by
 * 2 x max_inflight threads (at most 32): a part in memory, a range of a
 * staging file, a range of the old object copied server-side
 * (UploadPartCopy) or, where the server cannot copy, fetched and sent
 * again.  Each file has at most max_inflight parts in flight; the parts
 * in memory of all files are charged to the mount's one bound (budget.c,
 * use "write"), and a writer waits (up to 10 s, then goes over with one
 * warning) for memory given back.
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
    struct wjob *head, *tail; /* protected by lock */
    bool stop;                /* protected by lock */
    struct fs_budget *budget; /* fixed: the mount's */
    atomic_bool warned_mem;
    pthread_t *threads;
    unsigned n_threads;
    pthread_t stale; /* the stale-upload sweep at mount */
    bool stale_started;
    int part_copy;        /* 1 works, -1 refused, 0 unknown; protected by lock */
    struct partbuf *idle; /* warm part buffers, charged; protected by lock */
    uint64_t idle_bytes;  /* their sizes; protected by lock */
    uint64_t idle_max;    /* fixed: the write reserve */
};

/* ---- warm part buffers ----------------------------------------------------
 *
 * A fresh part buffer costs a page fault and a zeroed page per 4 KiB the
 * writer fills, and its unmapping as much again: a third of the CPU of a
 * sequential write (issue 21's profile).  So a part buffer is mapped once
 * and, when its upload ends, kept idle for the next part of the same size
 * (any file's).  A part buffer comes with its charge to the mount's bound
 * (use "write", its full size: fs_partbuf_get takes it, or takes over an
 * idle buffer's) and goes back with it: fs_partbuf_put keeps a buffer
 * idle with its charge, or unmaps it and gives the charge back.  So idle
 * buffers stay charged at their full size while kept, at most idle_max
 * bytes of them (the write reserve: they never hold the shared part of
 * the bound), and only while some file is being written (when nothing
 * else of the write use is charged, they all go).  They are unmapped,
 * their charge given back, as soon as memory is wanted: by a writer of
 * this mount before it would wait (wmem_charge), and by another use
 * waiting for memory (write_reclaim, the budget's reclaimer for
 * "write").  Buffers below FS_PARTBUF_WARM
 * (the first part of a small file, which grows with its data) come from
 * malloc and are never kept.  Buffers of 2 MiB and more ask for
 * transparent huge pages (MADV_HUGEPAGE): a fresh one then faults in 512
 * times fewer pieces. */

#define FS_HUGE_PAGE (2u << 20)
#define FS_PARTBUF_WARM (1u << 20)

static void partbuf_unmap(void *p, size_t cap)
{
    if (p)
        munmap(p, cap);
}

/* Unmap idle buffers until `want` bytes were given back to the bound (or
 * none is left).  Returns the bytes given back. */
static uint64_t partbuf_trim(struct fs_wpool *wp, uint64_t want)
{
    uint64_t freed = 0;
    pthread_mutex_lock(&wp->lock);
    while (wp->idle && freed < want) {
        struct partbuf *b = wp->idle;
        wp->idle = b->next;
        wp->idle_bytes -= b->cap;
        freed += b->cap;
        partbuf_unmap(b, b->cap);
    }
    pthread_mutex_unlock(&wp->lock);
    fs_budget_give(wp->budget, FS_USE_WRITE, freed);
    return freed;
}

/* The budget's reclaimer for "write" (another use waits for memory): the
 * idle part buffers.  Parts being filled or sent stay. */
static uint64_t write_reclaim(void *arg, uint64_t want)
{
    return partbuf_trim(arg, want);
}

/* Charge n bytes to "write" within wait_ms: at once if the bound has
 * room, else after unmapping idle buffers (before anyone waits), else
 * waiting for memory given back.  0 or ETIMEDOUT (nothing charged). */
static int wmem_charge(struct fs_wpool *wp, uint64_t n, uint64_t wait_ms)
{
    if (fs_budget_try(wp->budget, FS_USE_WRITE, n, FS_TAKE_NEED))
        return 0;
    partbuf_trim(wp, n);
    return fs_budget_wait(wp->budget, FS_USE_WRITE, n, wait_ms);
}

int fs_partbuf_get(struct fs_wpool *wp, size_t cap, uint64_t wait_ms, char **out)
{
    if (cap >= FS_PARTBUF_WARM) {
        pthread_mutex_lock(&wp->lock);
        for (struct partbuf **pp = &wp->idle; *pp; pp = &(*pp)->next) {
            struct partbuf *b = *pp;
            if (b->cap != cap)
                continue;
            *pp = b->next;
            wp->idle_bytes -= cap;
            pthread_mutex_unlock(&wp->lock);
            *out = (char *)b; /* its charge comes with it */
            return 0;
        }
        pthread_mutex_unlock(&wp->lock);
    }
    if (wmem_charge(wp, cap, wait_ms))
        return ENOBUFS;
    void *p = NULL;
    if (cap < FS_PARTBUF_WARM) {
        p = malloc(cap);
    } else {
        p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            p = NULL;
#ifdef MADV_HUGEPAGE
        else if (cap >= FS_HUGE_PAGE)
            (void)madvise(p, cap, MADV_HUGEPAGE); /* a hint: refused, 4 KiB pages */
#endif
    }
    if (!p) {
        fs_budget_give(wp->budget, FS_USE_WRITE, cap);
        return ENOMEM;
    }
    *out = p;
    return 0;
}

void fs_partbuf_put(struct fs_wpool *wp, char *buf, size_t cap)
{
    if (!buf)
        return;
    if (cap < FS_PARTBUF_WARM) {
        free(buf);
        fs_budget_give(wp->budget, FS_USE_WRITE, cap);
        return;
    }
    pthread_mutex_lock(&wp->lock);
    bool keep = !wp->stop && wp->idle_bytes + cap <= wp->idle_max;
    if (keep) { /* it stays charged */
        struct partbuf *b = (struct partbuf *)(void *)buf;
        b->cap = cap;
        b->next = wp->idle;
        wp->idle = b;
        wp->idle_bytes += cap;
    }
    /* Nothing else of the write use is charged: no file is being written
     * (its last part is sent), so the idle ones go too, as the read path
     * lets its kept buffers go when its last block does. */
    bool writing = fs_budget_used(wp->budget, FS_USE_WRITE) > wp->idle_bytes + (keep ? 0 : cap);
    pthread_mutex_unlock(&wp->lock);
    if (!keep) {
        partbuf_unmap(buf, cap);
        fs_budget_give(wp->budget, FS_USE_WRITE, cap);
    }
    if (!writing)
        partbuf_trim(wp, UINT64_MAX);
}

/* ---- the memory bound ------------------------------------------------------ */

uint64_t fs_wmem_take(struct fs_wpool *wp, uint64_t n)
{
    if (wmem_charge(wp, n, FS_WMEM_WAIT_MS) == 0)
        return n;
    /* Buffers of files that are not being written fill the bound; waiting
     * longer could wait forever on the same program. */
    if (!atomic_exchange(&wp->warned_mem, true))
        log_warn("write buffers exceed max_memory (%llu MiB): many files are open "
                 "for writing at once and partly written",
                 (unsigned long long)(fs_budget_limit(wp->budget) >> 20));
    fs_budget_force(wp->budget, FS_USE_WRITE, n);
    return n;
}

bool fs_wmem_try(struct fs_wpool *wp, uint64_t n, uint64_t wait_ms)
{
    return wmem_charge(wp, n, wait_ms) == 0;
}

void fs_wmem_give(struct fs_wpool *wp, uint64_t n)
{
    fs_budget_give(wp->budget, FS_USE_WRITE, n);
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
    wjob_drop_data(fs->wp, j); /* a part buffer kept warm (still charged) or its charge given */
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
    wp->budget = fs->budget;
    uint64_t reserve[FS_USE_COUNT];
    fs_budget_reserves(fs_budget_limit(fs->budget), reserve);
    wp->idle_max = reserve[FS_USE_WRITE];
    fs_budget_set_reclaimer(fs->budget, FS_USE_WRITE, write_reclaim, wp);
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
    fs_budget_set_reclaimer(wp->budget, FS_USE_WRITE, NULL, NULL);
    partbuf_trim(wp, UINT64_MAX); /* every idle buffer, its charge given back */
    pthread_cond_destroy(&wp->cond);
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
