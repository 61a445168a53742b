/* log.c — one-line log messages on stderr (or syslog, or a file) with a
 * global level.
 * The idea: a line is formatted whole into a local buffer and written with
 * one write(2), so lines from different threads never interleave.  A daemon,
 * whose stderr is /dev/null, sends the same lines to syslog instead, unless
 * a log file is given.
 *
 * The log file keeps one descriptor number for its whole life: a reopen
 * (logrotate's SIGHUP) opens the path anew and dup2()s the new file onto
 * that number, which the kernel does atomically, so a thread writing at
 * that moment lands whole in the old file or whole in the new one, and
 * never in a descriptor closed under it.  The signal handler itself only
 * writes a byte to a pipe; a thread of ours reads it and reopens. */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = LOG_LVL_WARN;
static _Atomic bool log_to_syslog = false;
static _Atomic int log_fd = -1; /* the log file, or -1: stderr or syslog */
static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER; /* serialises reopens */
static char *file_path;                                       /* protected by file_lock */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_priorities[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

void log_set_level(enum log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level);
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return EINVAL;
}

void log_use_syslog(bool on)
{
    if (on)
        openlog("pailfs", LOG_PID, LOG_DAEMON);
    atomic_store(&log_to_syslog, on);
    if (!on)
        closelog();
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load(&log_level))
        return;
    int saved_errno = errno;
    /* Messages quote keys, ETags, server messages and paths, any of which
     * may hold a newline (a forged second line) or an escape sequence
     * (which would drive the terminal that shows the log): the message is
     * written with util_escape, so every line is one line of plain text
     * whatever the caller passed. */
    char msg[2048], line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int fd = atomic_load(&log_fd);
    if (fd < 0 && atomic_load(&log_to_syslog)) {
        /* syslog stamps the time, the name and the pid itself */
        int n = snprintf(line, sizeof(line), "%s: ", level_names[level]);
        util_escape(line + n, sizeof(line) - (size_t)n, msg);
        syslog(syslog_priorities[level], "%s", line);
        errno = saved_errno;
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ pailfs %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    util_escape(line + n, sizeof(line) - (size_t)n - 1, msg);
    size_t len = strlen(line);
    line[len++] = '\n';
    ssize_t w = write(fd >= 0 ? fd : STDERR_FILENO, line, len);
    (void)w;
    errno = saved_errno;
}

static int open_log(const char *path)
{
    /* O_NOFOLLOW: in a directory others can write, such as /tmp, a link
     * planted at `path` would have us append to any file we may write. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0640);
    /* and a file someone else made there (they would read our log, or
     * feed a FIFO: O_NONBLOCK so opening one never waits) is not ours */
    struct stat st;
    int bad = fd < 0                   ? 0
              : fstat(fd, &st) < 0     ? errno
              : !S_ISREG(st.st_mode)   ? EINVAL
              : st.st_uid != geteuid() ? EPERM
                                       : 0;
    if (bad) {
        close(fd);
        errno = bad;
        return -1;
    }
    if (fd >= 0)
        fcntl(fd, F_SETFL, O_APPEND); /* writes may wait, as on any file */
    if (fd >= 0 && fd <= STDERR_FILENO) {
        /* started with a standard descriptor closed: a daemon's detach
         * would put /dev/null over this one */
        int high = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        int e = errno;
        close(fd);
        errno = e;
        fd = high;
    }
    return fd;
}

int log_use_file(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return ENOMEM;
    int fd = open_log(path);
    if (fd < 0) {
        int e = errno;
        free(copy);
        return e;
    }
    pthread_mutex_lock(&file_lock);
    int old = atomic_exchange(&log_fd, fd);
    free(file_path);
    file_path = copy;
    pthread_mutex_unlock(&file_lock);
    if (old >= 0)
        close(old); /* only before threads log, as documented */
    return 0;
}

int log_reopen(void)
{
    pthread_mutex_lock(&file_lock);
    int cur = atomic_load(&log_fd), rc = 0;
    if (cur < 0 || !file_path) {
        pthread_mutex_unlock(&file_lock);
        return EINVAL;
    }
    int fd = open_log(file_path);
    if (fd < 0 || dup3(fd, cur, O_CLOEXEC) < 0)
        rc = errno;
    if (fd >= 0)
        close(fd);
    pthread_mutex_unlock(&file_lock);
    if (rc)
        log_error("cannot reopen log file %s: %s (still writing to the old file)", file_path,
                  strerror(rc));
    else
        log_info("log file %s reopened", file_path);
    return rc;
}

/* ---- reopen on a signal ------------------------------------------------ */

static int reopen_pipe[2] = {-1, -1};
static int reopen_signo;
static pthread_t reopen_thread;
static bool reopen_running;

static void reopen_handler(int signo)
{
    (void)signo;
    int saved = errno;
    char c = 'r';
    ssize_t w = write(reopen_pipe[1], &c, 1); /* full pipe: a reopen is pending anyway */
    (void)w;
    errno = saved;
}

static void *reopen_main(void *arg)
{
    (void)arg;
    char c[16];
    for (;;) {
        ssize_t n = read(reopen_pipe[0], c, sizeof(c));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL; /* the write end closed: stop */
        if (memchr(c, 'r', (size_t)n))
            log_reopen(); /* a signal that came before the stop still counts */
        if (memchr(c, 'q', (size_t)n))
            return NULL;
    }
}

int log_reopen_on_signal(int signo)
{
    if (reopen_running)
        return EALREADY;
    if (pipe2(reopen_pipe, O_CLOEXEC) < 0)
        return errno;
    /* the handler must never block, whatever the reader does */
    fcntl(reopen_pipe[1], F_SETFL, fcntl(reopen_pipe[1], F_GETFL) | O_NONBLOCK);
    int rc = util_thread_start(&reopen_thread, reopen_main, NULL);
    if (rc) {
        close(reopen_pipe[0]);
        close(reopen_pipe[1]);
        reopen_pipe[0] = reopen_pipe[1] = -1;
        return rc;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = reopen_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) < 0) {
        rc = errno;
        reopen_running = true;
        reopen_signo = 0;
        log_reopen_stop();
        return rc;
    }
    reopen_signo = signo;
    reopen_running = true;
    return 0;
}

void log_reopen_stop(void)
{
    if (!reopen_running)
        return;
    if (reopen_signo)
        signal(reopen_signo, SIG_DFL);
    char q = 'q';
    ssize_t w;
    do
        w = write(reopen_pipe[1], &q, 1);
    while (w < 0 && errno == EINTR);
    pthread_join(reopen_thread, NULL);
    close(reopen_pipe[0]);
    close(reopen_pipe[1]);
    reopen_pipe[0] = reopen_pipe[1] = -1;
    reopen_running = false;
}
