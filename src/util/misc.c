/* misc.c — time, string and file helpers too small for a file of their own. */
#include "util/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h> /* SSE2: every x86-64 has it */
#endif

int util_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2)
            return ENOMEM;
        nc *= 2;
    }
    if (elem && nc > SIZE_MAX / elem)
        return ENOMEM;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

/* Streaming copies pay off only for blocks well beyond a cache line; a
 * small copy goes through the cache as ever. */
#define COPY_STREAM_MIN 4096

void util_copy_stream(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
    if (n >= COPY_STREAM_MIN) {
        char *d = dst;
        const char *s = src;
        size_t head = (size_t)(-(uintptr_t)d & 15); /* to dst's first 16-byte boundary */
        memcpy(d, s, head);
        d += head;
        s += head;
        n -= head;
        for (; n >= 64; n -= 64, d += 64, s += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(const void *)s);
            __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(s + 32));
            __m128i e = _mm_loadu_si128((const __m128i *)(const void *)(s + 48));
            _mm_stream_si128((__m128i *)(void *)d, a);
            _mm_stream_si128((__m128i *)(void *)(d + 16), b);
            _mm_stream_si128((__m128i *)(void *)(d + 32), c);
            _mm_stream_si128((__m128i *)(void *)(d + 48), e);
        }
        _mm_sfence(); /* streaming stores are weakly ordered: done before we return */
        memcpy(d, s, n);
        return;
    }
#endif
    memcpy(dst, src, n);
}

void util_sha256_hex(const void *data, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

uint64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void util_sleep_ms(uint64_t ms)
{
    struct timespec req = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L}, rem;
    while (nanosleep(&req, &rem) == -1 && errno == EINTR)
        req = rem;
}

struct timespec util_deadline_ms(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + ms % 1000u * 1000000u;
    ts.tv_sec += (time_t)(ms / 1000u + ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

int util_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mutex, uint64_t ms)
{
    struct timespec until = util_deadline_ms(ms);
    return pthread_cond_timedwait(cond, mutex, &until);
}

int util_parse_iso8601(const char *s, int64_t *out)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return EINVAL;
    if (*end == '.') /* fractional seconds are dropped */
        while (isdigit((unsigned char)*++end))
            ;
    /* The zone: "Z", none (taken as UTC, as S3 means it), or an offset
     * "+HH:MM", "+HHMM" or "+HH" (or "-").  Servers other than AWS write
     * offsets; reading one as unknown once made the stale-upload sweep take
     * a fresh upload for one begun in 1970. */
    int64_t offset = 0;
    if (*end == 'Z') {
        end++;
    } else if (*end == '+' || *end == '-') {
        int64_t sign = *end++ == '-' ? -1 : 1;
        int d[4], n = 0;
        bool colon = false;
        while (n < 4 && (isdigit((unsigned char)*end) || (n == 2 && *end == ':' && !colon))) {
            if (*end == ':')
                colon = true;
            else
                d[n++] = *end - '0';
            end++;
        }
        if ((n != 2 && n != 4) || (colon && n != 4))
            return EINVAL;
        int64_t hh = d[0] * 10 + d[1], mm = n == 4 ? d[2] * 10 + d[3] : 0;
        if (hh > 23 || mm > 59)
            return EINVAL;
        offset = sign * (hh * 3600 + mm * 60);
    }
    if (*end != '\0')
        return EINVAL;
    *out = (int64_t)timegm(&tm) - offset;
    return 0;
}

int util_parse_http_date(const char *s, int64_t *out)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S", &tm);
    if (!end)
        return EINVAL;
    *out = (int64_t)timegm(&tm);
    return 0;
}

char *util_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *util_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

bool util_istarts(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

char *util_escape(char *out, size_t n, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[5];
        size_t len = 2;
        esc[0] = '\\';
        switch (c) {
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\\': esc[1] = '\\'; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                esc[1] = 'x';
                esc[2] = hex[c >> 4];
                esc[3] = hex[c & 15];
                len = 4;
            } else {
                esc[0] = (char)c;
                len = 1;
            }
        }
        if (o + len >= n)
            break;
        memcpy(out + o, esc, len);
        o += len;
    }
    out[o] = '\0';
    return out;
}

bool util_has_control(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            return true;
    return false;
}

void util_wipe_free(char *secret)
{
    if (!secret)
        return;
    volatile char *p = secret;
    while (*p)
        *p++ = 0;
    free(secret);
}

/* xorshift64* seeded per thread from getrandom(): good enough for jitter. */
uint64_t util_random_u64(void)
{
    static __thread uint64_t state;
    if (state == 0) {
        if (getrandom(&state, sizeof(state), 0) != sizeof(state) || state == 0)
            state = (uint64_t)time(NULL) ^ (uint64_t)pthread_self() ^ 0x9E3779B97F4A7C15ull;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1Dull;
}

int util_read_file(const char *path, size_t max, char **out, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct buf b = BUF_INIT;
    char chunk[4096];
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = errno;
            break;
        }
        if (n == 0)
            break;
        if (b.len + (size_t)n > max) {
            rc = EFBIG;
            break;
        }
        if ((rc = buf_append(&b, chunk, (size_t)n)))
            break;
    }
    close(fd);
    explicit_bzero(chunk, sizeof(chunk)); /* the file may be a secret */
    if (rc) {
        if (b.data)
            explicit_bzero(b.data, b.len);
        buf_free(&b);
        return rc;
    }
    if (len_out)
        *len_out = b.len;
    *out = buf_steal(&b);
    return *out ? 0 : ENOMEM;
}

/* ---- percent-encoding (RFC 3986, as SigV4 wants it) ---------------- */

static const char hexdig[] = "0123456789ABCDEF";

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int util_pct_encode(struct buf *out, const char *s, size_t len, bool keep_slash)
{
    int rc = buf_reserve(out, len * 3);
    if (rc)
        return rc;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            out->data[out->len++] = (char)c;
        } else {
            out->data[out->len++] = '%';
            out->data[out->len++] = hexdig[c >> 4];
            out->data[out->len++] = hexdig[c & 15];
        }
    }
    out->data[out->len] = '\0';
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int util_pct_decode(const char *s, char **out)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1), *o = d;
    if (!d)
        return ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n + 1 ? hexval(s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi | lo) == 0) {
                free(d);
                return hi < 0 || lo < 0 ? EINVAL : EILSEQ;
            }
            *o++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    *out = d;
    return 0;
}

int util_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t exits, before;
    sigemptyset(&exits);
    sigaddset(&exits, SIGINT);
    sigaddset(&exits, SIGTERM);
    sigaddset(&exits, SIGHUP);
    sigaddset(&exits, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &exits, &before); /* the new thread inherits it */
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    return rc;
}

/* ---- private directories -------------------------------------------------- */

int util_private_dir(const char *path, bool make)
{
    /* lstat of "dir/" would follow a symbolic link at "dir": check the
     * name without its trailing slashes. */
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    char *p = util_strndup(path, n);
    if (!p)
        return ENOMEM;
    int rc = 0;
    struct stat st;
    if (lstat(p, &st) < 0) {
        rc = errno;
        /* Made here: ours and private whatever the umask (it only takes
         * bits away); checked below all the same, in case of a race. */
        if (rc == ENOENT && make) {
            rc = 0;
            if (mkdir(p, 0700) < 0 && errno != EEXIST)
                rc = errno;
            else if (lstat(p, &st) < 0)
                rc = errno;
        }
    }
    uid_t me = geteuid();
    if (rc) {
        /* missing, or not reachable: the caller words it */
    } else if (S_ISLNK(st.st_mode)) {
        rc = ELOOP;
        log_error("refusing directory %s: it is a symbolic link (pailfs keeps its files only "
                  "in a directory of its own)",
                  p);
    } else if (!S_ISDIR(st.st_mode)) {
        rc = ENOTDIR;
        log_error("refusing directory %s: it is not a directory", p);
    } else if (st.st_uid != me) {
        rc = EPERM;
        log_error("refusing directory %s: it is owned by uid %lu, not by uid %lu (this process); "
                  "another user could plant files in it",
                  p, (unsigned long)st.st_uid, (unsigned long)me);
    } else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        rc = EPERM;
        log_error("refusing directory %s: its mode %04o lets %s write in it; make it 0700", p,
                  (unsigned)(st.st_mode & 07777),
                  st.st_mode & S_IWOTH ? "other users" : "its group");
    }
    free(p);
    return rc;
}

int util_make_dirs(const char *path, mode_t mode)
{
    char *p = strdup(path);
    if (!p)
        return ENOMEM;
    int rc = 0;
    /* The parents, if missing; the last one is checked as well. */
    for (char *s = strchr(p + 1, '/'); s && s[1]; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            rc = errno;
        *s = '/';
        if (rc)
            break;
    }
    if (!rc)
        rc = util_private_dir(p, true);
    free(p);
    return rc;
}
