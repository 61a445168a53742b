/* once.c — what a mount says or finds once.
 *
 * Some things are worth one log line, not one per listing or per open: a
 * key that cannot be a file name (dir.c), an object version that is
 * damaged or not gzip after all (gzview.c).  Some findings are worth
 * remembering a while: the bucket has no usable shared gzip index of a
 * version.  Each is a note: a kind (one byte) and a subject (a key, a
 * version id), in a set of the mount's own, so that two mounts in one
 * process (the tests) each say their things once.  A note holds for ever
 * or until a time.  The set is bounded: past ONCE_MAX notes nothing new
 * is said or remembered (a bucket of a million bad keys logs ten thousand
 * lines), once the notes that have run out are swept away (at most once a
 * second, so that a full set costs no sweep per call). */
#include "fs/fs_private.h"

#include <stdlib.h>
#include <string.h>

#define ONCE_MAX 10000
#define ONCE_SWEEP_MS 1000

struct fs_note {
    UT_hash_handle hh;
    uint64_t until_ms; /* it holds until then (UINT64_MAX: for ever) */
    char what[];       /* the kind, then the subject */
};

void fs_once_init(struct fs_once *o)
{
    memset(o, 0, sizeof(*o));
    pthread_mutex_init(&o->lock, NULL);
}

void fs_once_free(struct fs_once *o)
{
    struct fs_note *t, *tmp;
    HASH_ITER(hh, o->notes, t, tmp)
    {
        HASH_DEL(o->notes, t);
        free(t);
    }
    o->n = 0;
    pthread_mutex_destroy(&o->lock);
}

/* Drop the notes that no longer hold, unless that was done a moment ago. */
static void sweep_locked(struct fs_once *o, uint64_t now)
{
    if (o->swept && now - o->swept_ms < ONCE_SWEEP_MS)
        return;
    o->swept = true;
    o->swept_ms = now;
    struct fs_note *t, *tmp;
    HASH_ITER(hh, o->notes, t, tmp)
    {
        if (t->until_ms > now)
            continue;
        HASH_DEL(o->notes, t);
        free(t);
        o->n--;
    }
}

bool fs_once(struct fs *fs, char what, const char *subject, uint64_t max_age_ms)
{
    struct fs_once *o = &fs->once;
    size_t n = strlen(subject) + 2;
    struct fs_note *t = malloc(sizeof(*t) + n);
    if (!t)
        return true; /* said twice rather than not at all */
    uint64_t now = util_now_ms();
    t->until_ms = max_age_ms > UINT64_MAX - now ? UINT64_MAX : now + max_age_ms;
    t->what[0] = what;
    memcpy(t->what + 1, subject, n - 1);
    struct fs_note *had;
    bool say;
    pthread_mutex_lock(&o->lock);
    HASH_FIND_STR(o->notes, t->what, had);
    if (had) {
        say = now >= had->until_ms;
        if (say)
            had->until_ms = t->until_ms;
    } else {
        if (o->n >= ONCE_MAX)
            sweep_locked(o, now);
        say = o->n < ONCE_MAX;
        if (say) {
            HASH_ADD_STR(o->notes, what, t);
            o->n++;
            t = NULL;
        }
    }
    pthread_mutex_unlock(&o->lock);
    free(t);
    return say;
}

bool fs_once_noted(struct fs *fs, char what, const char *subject)
{
    struct fs_once *o = &fs->once;
    size_t n = strlen(subject) + 2;
    char *k = malloc(n);
    if (!k)
        return false;
    k[0] = what;
    memcpy(k + 1, subject, n - 1);
    uint64_t now = util_now_ms();
    struct fs_note *had;
    pthread_mutex_lock(&o->lock);
    HASH_FIND_STR(o->notes, k, had);
    bool holds = had && now < had->until_ms;
    pthread_mutex_unlock(&o->lock);
    free(k);
    return holds;
}
