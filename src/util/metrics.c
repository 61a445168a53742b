/* metrics.c — the process-wide registry of counters and gauges, printed in
 * the Prometheus text format.
 *
 * The idea: counting must be free where it happens, and printing may be
 * slow.  So a series is a static struct owned by the layer that bumps it
 * (one relaxed atomic add, see util.h), and the registry is only a list
 * linking them, walked under a mutex by whoever prints: the writer thread
 * every few seconds, or the filesystem answering `pailfs --stats`.  The
 * list never shrinks, so a printer never meets a freed series.
 *
 * Prometheus wants all samples of one name together under one HELP and
 * TYPE; series are registered in any order, so each name is printed with
 * every series that shares it when it is first met (a few hundred series:
 * the quadratic walk costs microseconds every few seconds). */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_series *registry_head;                   /* protected by registry_lock */
static struct metrics_series **registry_tail = &registry_head; /* protected by registry_lock */

void metrics_register(struct metrics_series *series, size_t n)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n; i++) {
        struct metrics_series *s = &series[i];
        if (s->registered)
            continue;
        s->registered = true;
        s->next = NULL;
        *registry_tail = s;
        registry_tail = &s->next;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* Was a series of this name printed before `upto` (the first of its name)? */
static bool name_seen_before(const struct metrics_series *upto, const char *name)
{
    for (const struct metrics_series *s = registry_head; s != upto; s = s->next)
        if (strcmp(s->name, name) == 0)
            return true;
    return false;
}

int metrics_format(struct buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&registry_lock);
    for (struct metrics_series *f = registry_head; f && !rc; f = f->next) {
        if (name_seen_before(f, f->name))
            continue;
        rc = buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                        f->kind == METRICS_COUNTER ? "counter" : "gauge");
        for (struct metrics_series *s = f; s && !rc; s = s->next) {
            if (strcmp(s->name, f->name) != 0)
                continue;
            int64_t v = metrics_get(s);
            if (s->sparse && v == 0)
                continue;
            if (s->labels && *s->labels)
                rc = buf_printf(out, "%s{%s} %lld\n", s->name, s->labels, (long long)v);
            else
                rc = buf_printf(out, "%s %lld\n", s->name, (long long)v);
        }
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

/* Create a temporary file beside `path` for metrics_write_file: a new file
 * (O_EXCL) under a name nobody can guess, never a link someone planted in
 * a shared directory such as /tmp (which O_CREAT alone would follow and
 * truncate).  A name already taken is retried with another.  The fd, or -1
 * with errno. */
static int open_tmp(const char *path, struct buf *tmp)
{
    for (int tries = 0;; tries++) {
        buf_clear(tmp);
        /* a name node_exporter's *.prom glob does not match, so it never
         * reads the half-written file */
        if (buf_printf(tmp, "%s.tmp.%016llx", path, (unsigned long long)util_random_u64())) {
            errno = ENOMEM;
            return -1;
        }
        int fd = open(tmp->data, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST || tries == 15)
            return fd;
    }
}

int metrics_write_file(const char *path)
{
    struct buf text = BUF_INIT, tmp = BUF_INIT;
    int rc = metrics_format(&text);
    int fd = -1;
    /* Same directory, so rename is atomic (and replaces a link planted at
     * `path` itself, never what it points to). */
    if (!rc && (fd = open_tmp(path, &tmp)) < 0)
        rc = errno;
    for (size_t done = 0; !rc && done < text.len;) {
        ssize_t n = write(fd, text.data + done, text.len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = n < 0 ? errno : EIO;
        else
            done += (size_t)n;
    }
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = errno;
    if (!rc && rename(tmp.data, path) < 0)
        rc = errno;
    if (rc && fd >= 0)
        unlink(tmp.data);
    buf_free(&text);
    buf_free(&tmp);
    return rc;
}

/* ---- the writer thread ---------------------------------------------------- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool running; /* protected by lock */
    bool stop;    /* protected by lock */
    char *path;
    unsigned interval_s;
} writer = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void write_logged(bool *failing)
{
    int rc = metrics_write_file(writer.path);
    if (rc && !*failing)
        log_warn("cannot write metrics file %s: %s", writer.path, strerror(rc));
    else if (!rc && *failing)
        log_info("metrics file %s written again", writer.path);
    *failing = rc != 0;
}

static void *writer_main(void *arg)
{
    (void)arg;
    bool failing = false;
    pthread_mutex_lock(&writer.lock);
    while (!writer.stop) {
        pthread_mutex_unlock(&writer.lock);
        write_logged(&failing);
        pthread_mutex_lock(&writer.lock);
        struct timespec ts = util_deadline_ms((uint64_t)writer.interval_s * 1000u);
        while (!writer.stop && pthread_cond_timedwait(&writer.wake, &writer.lock, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&writer.lock);
    write_logged(&failing); /* the figures at the end: what a last scrape sees */
    return NULL;
}

int metrics_writer_start(const char *path, unsigned interval_s)
{
    pthread_mutex_lock(&writer.lock);
    int rc = writer.running ? EALREADY : 0;
    if (!rc) {
        writer.path = strdup(path);
        writer.interval_s = interval_s ? interval_s : 1;
        writer.stop = false;
        rc = writer.path ? util_thread_start(&writer.thread, writer_main, NULL) : ENOMEM;
        if (rc) {
            free(writer.path);
            writer.path = NULL;
        }
        writer.running = rc == 0;
    }
    pthread_mutex_unlock(&writer.lock);
    return rc;
}

void metrics_writer_stop(void)
{
    pthread_mutex_lock(&writer.lock);
    bool running = writer.running;
    writer.stop = true;
    pthread_cond_signal(&writer.wake);
    pthread_mutex_unlock(&writer.lock);
    if (!running)
        return;
    pthread_join(writer.thread, NULL);
    pthread_mutex_lock(&writer.lock);
    writer.running = false;
    free(writer.path);
    writer.path = NULL;
    pthread_mutex_unlock(&writer.lock);
}
