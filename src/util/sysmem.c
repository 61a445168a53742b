/* sysmem.c — how much memory this process may use, for the default of
 * max_memory.
 *
 * A node's memory is often smaller than its machine's: a container or a
 * systemd unit puts pailfs and its job in a cgroup with a memory limit,
 * and a default sized by MemTotal alone makes the kernel kill the job.
 * So the memory a process may use is the least of the machine's MemTotal
 * and the memory limits of the cgroup it runs in and of that cgroup's
 * parents (a limit set on a parent applies to every child): cgroup v2's
 * memory.max ("max": none), v1's memory.limit_in_bytes (a huge value:
 * none).  /proc/self/cgroup names the cgroup; on a hybrid system both
 * hierarchies are looked at.
 *
 * Every file read here is data, not trusted: a path with "..", control
 * characters or no leading '/' is refused, a number must be plain decimal
 * within 2^63, and files are read at most a page or so.  Whatever cannot
 * be read or parsed adds no limit. */
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYSMEM_FILE_MAX 65536
#define SYSMEM_PATH_MAX 4096

uint64_t util_mem_default(uint64_t avail)
{
    uint64_t d = avail / 8;
    if (d < UTIL_MEM_DEFAULT_MIN)
        d = UTIL_MEM_DEFAULT_MIN;
    if (d > UTIL_MEM_DEFAULT_MAX)
        d = UTIL_MEM_DEFAULT_MAX;
    return d;
}

/* A plain decimal number of bytes (trailing blanks and newline allowed);
 * "max" is no limit.  false: not a number (or past 2^63: no limit either). */
static bool parse_limit(const char *s, uint64_t *out)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncmp(s, "max", 3) == 0) {
        s += 3;
        *out = UINT64_MAX;
    } else {
        if (*s < '0' || *s > '9')
            return false;
        uint64_t v = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            if (v > (UINT64_MAX >> 1) / 10)
                return false;
            v = v * 10 + (uint64_t)(*s - '0');
        }
        *out = v;
    }
    while (*s == ' ' || *s == '\t' || *s == '\n')
        s++;
    return *s == '\0';
}

/* The text of the file at the path `fmt` makes, read whole (at most
 * SYSMEM_FILE_MAX bytes), its length in *len; the caller frees it.  NULL
 * when the path is too long, the file cannot be read, or it holds a NUL
 * byte (text, not data to guess at): the callers then add no limit. */
static char *read_text(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *read_text(size_t *len, const char *fmt, ...)
{
    char path[PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    char *data = NULL;
    if (n < 0 || (size_t)n >= sizeof(path) ||
        util_read_file(path, SYSMEM_FILE_MAX, &data, len) != 0)
        return NULL;
    if (strlen(data) != *len) {
        free(data);
        return NULL;
    }
    return data;
}

/* Whether `p` (len bytes) may name a cgroup: absolute, no ".." or "."
 * component, no control characters, not too long. */
static bool path_ok(const char *p, size_t len)
{
    if (len == 0 || len >= SYSMEM_PATH_MAX || p[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return false;
    for (size_t i = 0; i < len;) {
        size_t j = i + 1;
        while (j < len && p[j] != '/')
            j++;
        size_t n = j - i - 1; /* the component after p[i] == '/' */
        if ((n == 1 && p[i + 1] == '.') || (n == 2 && p[i + 1] == '.' && p[i + 2] == '.'))
            return false;
        i = j;
    }
    return true;
}

/* The least limit in file `name` of the cgroup directory base+cg and of
 * each of its parents (cg "/a/b": base/a/b, base/a, and base itself when
 * `with_root`).  UINT64_MAX: none. */
static uint64_t least_limit(const char *base, const char *cg, size_t cg_len, const char *name,
                            bool with_root)
{
    uint64_t least = UINT64_MAX;
    size_t n = cg_len;
    while (n > 0 && cg[n - 1] == '/')
        n--; /* "/" itself: the root */
    for (;;) {
        if (n > 0 || with_root) {
            size_t len;
            char *data = read_text(&len, "%s%.*s/%s", base, (int)n, cg, name);
            uint64_t v;
            if (data && parse_limit(data, &v) && v < least)
                least = v;
            free(data);
        }
        if (n == 0)
            break;
        while (n > 0 && cg[n - 1] != '/')
            n--;
        while (n > 0 && cg[n - 1] == '/')
            n--;
    }
    return least;
}

/* Whether the comma-separated controller list [c, c+len) holds "memory". */
static bool has_memory(const char *c, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && c[j] != ',')
            j++;
        if (j - i == 6 && memcmp(c + i, "memory", 6) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

uint64_t util_cgroup_mem_limit(const char *root)
{
    size_t len;
    char *data = read_text(&len, "%s/proc/self/cgroup", root);
    uint64_t least = UINT64_MAX;
    if (!data)
        return least;
    /* lines "ID:CONTROLLERS:PATH"; v2's is "0::PATH" */
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && data[end] != '\n')
            end++;
        const char *line = data + i, *c1 = memchr(line, ':', end - i);
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(data + end - c1 - 1)) : NULL;
        if (c2) {
            const char *ctl = c1 + 1, *cg = c2 + 1;
            size_t ctl_len = (size_t)(c2 - ctl), cg_len = (size_t)(data + end - cg);
            uint64_t v = UINT64_MAX;
            struct buf base = BUF_INIT;
            if (!path_ok(cg, cg_len)) {
                /* not a path we follow */
            } else if (ctl_len == 0 && c1 - line == 1 && line[0] == '0') {
                buf_printf(&base, "%s/sys/fs/cgroup", root);
                if (base.data)
                    v = least_limit(base.data, cg, cg_len, "memory.max", false);
            } else if (has_memory(ctl, ctl_len)) {
                buf_printf(&base, "%s/sys/fs/cgroup/memory", root);
                if (base.data)
                    v = least_limit(base.data, cg, cg_len, "memory.limit_in_bytes", true);
            }
            buf_free(&base);
            if (v < least)
                least = v;
        }
        i = end + 1;
    }
    free(data);
    return least;
}

uint64_t util_mem_total(const char *root)
{
    size_t len;
    char *data = read_text(&len, "%s/proc/meminfo", root);
    uint64_t total = UINT64_MAX;
    if (data) {
        const char *p = strstr(data, "MemTotal:");
        unsigned long long kb;
        char unit[4] = "";
        if (p && (p == data || p[-1] == '\n') && sscanf(p + 9, "%llu %3s", &kb, unit) == 2 &&
            strcmp(unit, "kB") == 0 && kb < (UINT64_MAX >> 11))
            total = (uint64_t)kb << 10;
    }
    free(data);
    return total;
}

uint64_t util_mem_available(const char *root)
{
    uint64_t cg = util_cgroup_mem_limit(root), total = util_mem_total(root);
    return cg < total ? cg : total;
}
