/* evict.c — the bound of the inode table.
 *
 * An inode lives while the kernel holds it (its lookup count), and the
 * kernel holds what it has looked up, or been handed by readdirplus,
 * until its own memory runs short: `ls -l` of a million keys would leave
 * a million inodes here (about 500 bytes each with their paths), however
 * little the kernel itself minds.  So past max_inodes (20,000; about 500
 * bytes an inode with its path) a thread
 * of ours asks the kernel to let go of the entries of the oldest files
 * (fuse_lowlevel_notify_inval_entry): an entry nobody uses leaves its
 * cache, the kernel forgets its inode, and what the inode knew stays as
 * its directory's knowledge (known.c), so a later `stat` of it still asks
 * S3 nothing while that is trusted.  Files open, written or made here,
 * directories and the root are never asked about; an entry in use stays
 * (the kernel refuses nothing: it keeps what is in use and drops the rest).
 *
 * The thread never holds fs->lock while it talks to the kernel: the
 * kernel may wait, before it answers, for a lookup or readdir in the same
 * directory, which our FUSE workers answer with fs->lock. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EVICT_BATCH 2048 /* entries asked about per round */

struct evict_one {
    fuse_ino_t parent;
    char *name;
};

struct fs_evict {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* stop */
    bool stop;
    bool running;
};

/* Whether the kernel may be asked to let go of `in` (fs->lock held). */
static bool evictable(const struct fs_inode *in)
{
    return in->linked && in->nlookup && !in->opens && !in->local && !in->wf &&
           in->ino != FUSE_ROOT_ID && !S_ISDIR(in->attr.mode);
}

/* The oldest evictable inodes past the bound, as (parent, name) into
 * out[] (names malloc'ed).  Returns how many. */
static size_t pick(struct fs *fs, struct evict_one *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&fs->lock);
    size_t count = HASH_COUNT(fs->by_ino), soft = fs->cfg.max_inodes;
    metrics_set(&fs_metrics[FS_M_INODES], (int64_t)count);
    /* down to 7/8 of the bound: a round is not needed for every inode */
    size_t over = count > soft ? count - soft + soft / 8 : 0;
    if (over > max)
        over = max;
    for (struct fs_inode *in = fs->by_ino; in && n < over; in = in->hh.next) {
        if (!evictable(in))
            continue;
        const char *slash = strrchr(in->path, '/');
        size_t plen = slash ? (size_t)(slash - in->path) : 0;
        struct fs_inode *dir;
        HASH_FIND(hh_path, fs->by_path, in->path, plen, dir);
        char *name = strdup(slash ? slash + 1 : in->path);
        if (!dir || !name) {
            free(name);
            continue;
        }
        out[n].parent = dir->ino;
        out[n].name = name;
        n++;
    }
    pthread_mutex_unlock(&fs->lock);
    return n;
}

static void *evict_main(void *arg)
{
    struct fs *fs = arg;
    struct fs_evict *ev = fs->evict;
    struct evict_one *batch = calloc(EVICT_BATCH, sizeof(*batch));
    pthread_mutex_lock(&ev->lock);
    while (!ev->stop && batch) {
        pthread_mutex_unlock(&ev->lock);
        size_t n = pick(fs, batch, EVICT_BATCH);
        for (size_t i = 0; i < n; i++) {
            fuse_lowlevel_notify_inval_entry(fs->se, batch[i].parent, batch[i].name,
                                             strlen(batch[i].name));
            free(batch[i].name);
        }
        pthread_mutex_lock(&ev->lock);
        /* a round a second, or at once again while there was work */
        if (!ev->stop)
            util_cond_wait_ms(&ev->cond, &ev->lock, n ? 50 : 1000);
    }
    pthread_mutex_unlock(&ev->lock);
    free(batch);
    return NULL;
}

int fs_evict_start(struct fs *fs)
{
    struct fs_evict *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return ENOMEM;
    pthread_mutex_init(&ev->lock, NULL);
    pthread_cond_init(&ev->cond, NULL);
    fs->evict = ev;
    int rc = util_thread_start(&ev->thread, evict_main, fs);
    ev->running = rc == 0;
    return rc;
}

void fs_evict_stop(struct fs *fs)
{
    struct fs_evict *ev = fs->evict;
    if (!ev)
        return;
    pthread_mutex_lock(&ev->lock);
    ev->stop = true;
    pthread_cond_broadcast(&ev->cond);
    pthread_mutex_unlock(&ev->lock);
    if (ev->running)
        pthread_join(ev->thread, NULL);
    pthread_cond_destroy(&ev->cond);
    pthread_mutex_destroy(&ev->lock);
    free(ev);
    fs->evict = NULL;
}
