/* log.c — one-line log messages on stderr (or syslog) with a global level.
 * The idea: a line is formatted whole into a local buffer and written with
 * one write(2), so lines from different threads never interleave.  A daemon,
 * whose stderr is /dev/null, sends the same lines to syslog instead. */
#include "util/util.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = LOG_LVL_WARN;
static _Atomic bool log_to_syslog = false;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_priorities[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

void log_set_level(enum log_level level) { atomic_store(&log_level, (int)level); }

enum log_level log_get_level(void) { return (enum log_level)atomic_load(&log_level); }

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
    char line[2048];
    if (atomic_load(&log_to_syslog)) {
        /* syslog stamps the time, the name and the pid itself */
        int n = snprintf(line, sizeof(line), "%s: ", level_names[level]);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        syslog(syslog_priorities[level], "%s", line);
        errno = saved_errno;
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ pailfs %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
    errno = saved_errno;
}
