/* mime.c — Content-Type of a file name, from a mime.types file.
 *
 * The file (Debian's /etc/mime.types, the format s3fs-fuse reads too) has
 * one type per line followed by its extensions: "text/csv  csv".  It is
 * read once, at mount, into a sorted array of (extension, type) searched
 * by binary search.  Its text is not trusted: the file is bounded in
 * size, a type must look like one ("top/sub", printable, no blanks) since
 * it is sent as a header value, and an extension longer than
 * UTIL_MIME_EXT_MAX is skipped.  The first line naming an extension wins. */
#include "util/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UTIL_MIME_FILE_MAX (4u << 20)
#define UTIL_MIME_EXT_MAX 32
#define UTIL_MIME_TYPE_MAX 127

struct util_mime_entry {
    char ext[UTIL_MIME_EXT_MAX + 1]; /* lower case */
    char *type;
};

struct util_mime {
    struct util_mime_entry *e; /* sorted by ext */
    size_t n, cap;
    char **types; /* owned; the entries point into them */
    size_t n_types, types_cap;
};

/* "top/sub": characters a header token allows, one '/' inside. */
static bool type_ok(const char *t, size_t n)
{
    const char *slash = memchr(t, '/', n);
    if (n == 0 || n > UTIL_MIME_TYPE_MAX || !slash || slash == t || slash == t + n - 1)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)t[i]) && !strchr("/+-.!#$&^_", t[i]))
            return false;
    return memchr(slash + 1, '/', (size_t)(t + n - slash - 1)) == NULL;
}

static int add(struct util_mime *m, const char *ext, size_t n, char *type)
{
    if (n == 0 || n > UTIL_MIME_EXT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)ext[i] <= ' ' || (unsigned char)ext[i] >= 0x7f)
            return 0;
    if (util_grow((void **)&m->e, &m->cap, m->n + 1, sizeof(*m->e)))
        return ENOMEM;
    struct util_mime_entry *e = &m->e[m->n++];
    for (size_t i = 0; i < n; i++)
        e->ext[i] = (char)tolower((unsigned char)ext[i]);
    e->ext[n] = '\0';
    e->type = type;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct util_mime_entry *x = a, *y = b;
    int c = strcmp(x->ext, y->ext);
    /* equal extensions: file order (types were allocated in it), first wins */
    return c ? c : (x < y ? -1 : x > y);
}

/* One line: a type and its extensions, or nothing (comment, blank, bad). */
static int parse_line(struct util_mime *m, const char *s, size_t len)
{
    const char *end = s + len, *p = s;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *t = p;
    while (p < end && *p != ' ' && *p != '\t')
        p++;
    if (t == p || *t == '#' || !type_ok(t, (size_t)(p - t)))
        return 0;
    size_t tlen = (size_t)(p - t);
    char *type = NULL;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *x = p;
        while (p < end && *p != ' ' && *p != '\t')
            p++;
        if (x == p || *x == '#')
            break;
        if (!type) {
            if (util_grow((void **)&m->types, &m->types_cap, m->n_types + 1, sizeof(char *)) ||
                !(type = util_strndup(t, tlen)))
                return ENOMEM;
            m->types[m->n_types++] = type;
        }
        int rc = add(m, x, (size_t)(p - x), type);
        if (rc)
            return rc;
    }
    return 0;
}

int util_mime_parse(const char *text, size_t len, struct util_mime **out)
{
    struct util_mime *m = calloc(1, sizeof(*m));
    if (!m)
        return ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
        rc = parse_line(m, text + i, n);
        i += n + 1;
    }
    if (rc) {
        util_mime_free(m);
        return rc;
    }
    qsort(m->e, m->n, sizeof(*m->e), cmp_entry);
    *out = m;
    return 0;
}

int util_mime_load(const char *path, struct util_mime **out)
{
    char *text = NULL;
    size_t len = 0;
    int rc = util_read_file(path, UTIL_MIME_FILE_MAX, &text, &len);
    if (!rc)
        rc = util_mime_parse(text, len, out);
    free(text);
    return rc;
}

const char *util_mime_lookup(const struct util_mime *m, const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strrchr(base, '.');
    if (!m || !dot || dot == base || !dot[1] || strlen(dot + 1) > UTIL_MIME_EXT_MAX)
        return NULL;
    char ext[UTIL_MIME_EXT_MAX + 1];
    size_t n = strlen(dot + 1);
    for (size_t i = 0; i <= n; i++)
        ext[i] = (char)tolower((unsigned char)dot[1 + i]);
    size_t lo = 0, hi = m->n;
    while (lo < hi) { /* the first entry >= ext */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(m->e[mid].ext, ext) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->n && strcmp(m->e[lo].ext, ext) == 0 ? m->e[lo].type : NULL;
}

void util_mime_free(struct util_mime *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_types; i++)
        free(m->types[i]);
    free(m->types);
    free(m->e);
    free(m);
}
