/* options.c — the command-line grammar of pailfs (see options.h).
 *
 * One table, `o_table`, names every -o option: whether it takes a value, the
 * function that checks and stores it, and the words a bad value is refused
 * with.  A value is taken only when all of it parses: "uid=12x", "umask=8",
 * "attr_ttl=1e3" and "retries=-1" are errors that quote the value, never
 * something silently truncated.  Options for the kernel mount are checked
 * here and collected into the fuse_args handed to fuse_session_new(); the
 * ones mount(8), fstab and systemd add for their own use are dropped. */
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* State of one parse beyond what ends up in struct options. */
struct parse {
    struct options *o;
    bool allow_other, allow_root;
    bool cache_dir_given;
    bool mime_types_given;
    bool sse_c_cache; /* -o sse_c_cache: keep SSE-C objects' bytes on disk */
    unsigned retries;
    double connect_timeout_s;
    unsigned stall_timeout_s;
    char *err;
    size_t errlen;
};

static void set_err(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(struct parse *p, const char *fmt, ...)
{
    if (!p->errlen)
        return;
    char raw[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    /* The message quotes what was typed: a newline or an escape sequence in
     * an argument must not break the one line or drive the terminal. */
    util_escape(p->err, p->errlen, raw);
}

/* ---- values --------------------------------------------------------------- */

/* A decimal number of digits only (no sign, no blanks, no junk), ≤ max. */
static int parse_decimal(const char *s, unsigned long long max, unsigned long long *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno || v > max)
        return EINVAL;
    *out = v;
    return 0;
}

/* Octal digits only, ≤ 07777: "022", "0644", "755". */
static int parse_mode(const char *s, mode_t *out)
{
    if (!*s || strspn(s, "01234567") != strlen(s))
        return EINVAL;
    errno = 0;
    unsigned long v = strtoul(s, NULL, 8);
    if (errno || v > 07777)
        return EINVAL;
    *out = (mode_t)v;
    return 0;
}

/* Seconds as "2", "0.25", ".5" or "3.": digits with at most one point, no
 * sign, exponent, hex, "inf" or "nan" (which strtod alone would take). */
static int parse_seconds(const char *s, double *out)
{
    size_t whole = strspn(s, "0123456789");
    size_t frac = 0;
    if (s[whole] == '.')
        frac = strspn(s + whole + 1, "0123456789");
    size_t len = whole + (s[whole] == '.' ? 1 + frac : 0);
    if (len != strlen(s) || whole + frac == 0)
        return EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end)
        return EINVAL;
    *out = v;
    return 0;
}

static int set_string(char **slot, const char *v)
{
    char *copy = strdup(v);
    if (!copy)
        return ENOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

/* An absolute version of `path`: a daemon runs in "/", so a relative path
 * given at the shell must be anchored to the directory it was given in. */
static int set_absolute_path(char **slot, const char *path)
{
    if (path[0] == '/')
        return set_string(slot, path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return errno == ENOMEM ? ENOMEM : EINVAL;
    struct buf b = BUF_INIT;
    if (buf_printf(&b, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path))
        return ENOMEM;
    free(*slot);
    *slot = buf_steal(&b);
    return *slot ? 0 : ENOMEM;
}

/* Add one option (escaping ',' and '\') to a comma-separated list. */
static int add_fuse_opt(char **list, const char *opt)
{
    return fuse_opt_add_opt_escaped(list, opt) == 0 ? 0 : ENOMEM;
}

/* ---- the -o options -------------------------------------------------------- */

/* Each returns 0, EINVAL (the value is bad: the caller words the message
 * from the table's `expect`) or ENOMEM; a few word their own message and
 * return EALREADY to say it is set. */
typedef int (*o_setter)(struct parse *p, const char *name, const char *v);

static int o_endpoint(struct parse *p, const char *name, const char *v)
{
    const char *rest = strncmp(v, "http://", 7) == 0    ? v + 7
                       : strncmp(v, "https://", 8) == 0 ? v + 8
                                                        : NULL;
    if (!rest || !*rest || *rest == '/' || strpbrk(v, " \t\r\n"))
        return EINVAL;
    return set_string(&p->o->endpoint, v);
}

static int o_region(struct parse *p, const char *name, const char *v)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
    if (!*v || strspn(v, ok) != strlen(v))
        return EINVAL;
    return set_string(&p->o->region, v);
}

static int o_profile(struct parse *p, const char *name, const char *v)
{
    return *v ? set_string(&p->o->profile, v) : EINVAL;
}

static int o_passwd_file(struct parse *p, const char *name, const char *v)
{
    return *v ? set_absolute_path(&p->o->passwd_file, v) : EINVAL;
}

/* ---- SSE-C and checksums (issue 20) ---- */

static int o_sse_c_key_file(struct parse *p, const char *name, const char *v)
{
    return *v ? set_absolute_path(&p->o->sse_c_key_file, v) : EINVAL;
}

static int o_sse_c_cache(struct parse *p, const char *name, const char *v)
{
    p->sse_c_cache = true;
    return 0;
}

static int o_checksum(struct parse *p, const char *name, const char *v)
{
    static const struct {
        const char *name;
        enum s3_checksum algo;
    } algos[] = {
        {"crc32c", S3_CHECKSUM_CRC32C},
        {"crc64nvme", S3_CHECKSUM_CRC64NVME},
        {"sha256", S3_CHECKSUM_SHA256},
        {"off", S3_CHECKSUM_OFF},
    };
    for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
        if (strcmp(v, algos[i].name) == 0) {
            p->o->s3.checksum = algos[i].algo;
            return 0;
        }
    }
    return EINVAL;
}

/* SSE-C objects are only readable with the key: unless -o sse_c_cache
 * says otherwise, their plain bytes are not kept on disk by the mount (the
 * block cache is off, gzip indexes, which hold 32 KiB windows of
 * decompressed bytes, are not written to cache_dir).  Files being written
 * are still staged there while open: they are the writer's own bytes. */
static int finish_sse_c(struct parse *p)
{
    struct options *o = p->o;
    if (p->sse_c_cache && !o->sse_c_key_file) {
        set_err(p, "pailfs: option -o sse_c_cache needs -o sse_c_key_file");
        return EINVAL;
    }
    o->s3.sse_c_key_file = o->sse_c_key_file;
    if (o->sse_c_key_file && !p->sse_c_cache) {
        o->fs.cache_size = 0;
        o->fs.cache_size_set = true;
        o->fs.gz_index_no_local = true;
    }
    return 0;
}

static int o_cafile(struct parse *p, const char *name, const char *v)
{
    return *v ? set_absolute_path(&p->o->cafile, v) : EINVAL;
}

static int o_no_verify_ssl(struct parse *p, const char *name, const char *v)
{
    p->o->s3.http.no_verify_ssl = true;
    return 0;
}

static int o_cache_dir(struct parse *p, const char *name, const char *v)
{
    if (!*v)
        return EINVAL;
    p->cache_dir_given = true;
    return set_absolute_path(&p->o->cache_dir, v);
}

static int o_path_style(struct parse *p, const char *name, const char *v)
{
    p->o->s3.addressing = S3_ADDR_PATH;
    return 0;
}

static int o_public(struct parse *p, const char *name, const char *v)
{
    p->o->s3.public_bucket = true;
    return 0;
}

static int o_ro(struct parse *p, const char *name, const char *v)
{
    p->o->fs.read_only = true;
    return 0;
}

static int o_compat_dir(struct parse *p, const char *name, const char *v)
{
    p->o->fs.compat_dir = true;
    return 0;
}

static int o_rw(struct parse *p, const char *name, const char *v)
{
    p->o->fs.read_only = false;
    return 0;
}

static int o_id(struct parse *p, const char *name, const char *v)
{
    unsigned long long n;
    if (parse_decimal(v, (uid_t)-1 - 1, &n)) /* (uid_t)-1 means "no change" */
        return EINVAL;
    if (name[0] == 'u') {
        p->o->fs.uid = (uid_t)n;
        p->o->fs.force_uid = true;
    } else {
        p->o->fs.gid = (gid_t)n;
        p->o->fs.force_gid = true;
    }
    return 0;
}

static int o_mode(struct parse *p, const char *name, const char *v)
{
    mode_t m;
    if (parse_mode(v, &m))
        return EINVAL;
    if (strcmp(name, "umask") == 0)
        p->o->fs.umask = m;
    else if (strcmp(name, "file_mode") == 0)
        p->o->fs.file_mode = m;
    else
        p->o->fs.dir_mode = m;
    return 0;
}

static int o_ttl(struct parse *p, const char *name, const char *v)
{
    double t;
    if (parse_seconds(v, &t) || t > OPTIONS_MAX_TTL_S)
        return EINVAL;
    if (strcmp(name, "attr_ttl") == 0)
        p->o->fs.attr_ttl = t;
    else
        p->o->fs.neg_ttl = t;
    return 0;
}

/* The options that take a whole number: its bounds and where it goes,
 * written once.  A field of struct parse (in_parse) or of struct options. */
struct whole_option {
    const char *name;
    unsigned long long min, max;
    bool in_parse;
    size_t offset;
};

static const struct whole_option wholes[] = {
    {"retries", 0, OPTIONS_MAX_RETRIES, true, offsetof(struct parse, retries)},
    /* whole seconds: libcurl measures a stalled transfer in seconds */
    {"stall_timeout", 1, OPTIONS_MAX_STALL_TIMEOUT_S, true,
     offsetof(struct parse, stall_timeout_s)},
    {"metrics_interval", 1, OPTIONS_MAX_METRICS_INTERVAL_S, false,
     offsetof(struct options, metrics_interval_s)},
    {"rename_parallel", 1, OPTIONS_MAX_RENAME_PARALLEL, false,
     offsetof(struct options, fs.rename_parallel)},
    {"read_parallel", 1, OPTIONS_MAX_READ_PARALLEL, false,
     offsetof(struct options, fs.read_parallel)},
    {"gz_workers", 0, 4, false, offsetof(struct options, fs.gz_workers)},
    {"list_page", 1, 1000, false, offsetof(struct options, fs.list_page)},
    {"max_inodes", 16, 100000000, false, offsetof(struct options, fs.max_inodes)},
    {"max_inflight", 1, 64, false, offsetof(struct options, fs.max_inflight)},
};

static int o_whole(struct parse *p, const char *name, const char *v)
{
    for (size_t i = 0; i < sizeof(wholes) / sizeof(wholes[0]); i++) {
        const struct whole_option *w = &wholes[i];
        if (strcmp(w->name, name) != 0)
            continue;
        unsigned long long n;
        if (parse_decimal(v, w->max, &n) || n < w->min)
            return EINVAL;
        char *base = w->in_parse ? (char *)p : (char *)p->o;
        *(unsigned *)(void *)(base + w->offset) = (unsigned)n;
        return 0;
    }
    return EINVAL;
}

static int o_connect_timeout(struct parse *p, const char *name, const char *v)
{
    double t;
    if (parse_seconds(v, &t) || t < 0.001 || t > OPTIONS_MAX_CONNECT_TIMEOUT_S)
        return EINVAL;
    p->connect_timeout_s = t;
    return 0;
}

static int o_log_level(struct parse *p, const char *name, const char *v)
{
    if (log_level_parse(v, &p->o->log_level))
        return EINVAL;
    p->o->log_level_given = true;
    return 0;
}

static int o_logfile(struct parse *p, const char *name, const char *v)
{
    return *v ? set_absolute_path(&p->o->logfile, v) : EINVAL;
}

static int o_metrics_file(struct parse *p, const char *name, const char *v)
{
    return *v ? set_absolute_path(&p->o->metrics_file, v) : EINVAL;
}

/* A size in bytes: digits with an optional binary suffix k, m, g or t
 * (any case, "KiB"/"KB" accepted too). */
static int parse_size(const char *s, unsigned long long *out)
{
    size_t digits = strspn(s, "0123456789");
    if (digits == 0 || digits > 15)
        return EINVAL;
    unsigned long long n = strtoull(s, NULL, 10);
    const char *u = s + digits;
    unsigned shift = 0;
    switch (*u | 0x20) {
    case 'k': shift = 10; break;
    case 'm': shift = 20; break;
    case 'g': shift = 30; break;
    case 't': shift = 40; break;
    default:
        if (*u)
            return EINVAL;
    }
    if (*u) {
        u++;
        if (strcasecmp(u, "ib") == 0 || strcasecmp(u, "b") == 0)
            u += strlen(u);
        if (*u)
            return EINVAL;
    }
    if (shift && n > (~0ULL >> shift))
        return EINVAL;
    *out = n << shift;
    return 0;
}

static int o_size(struct parse *p, const char *name, const char *v)
{
    unsigned long long n;
    if (parse_size(v, &n))
        return EINVAL;
    if (strcmp(name, "cache_size") == 0) {
        p->o->fs.cache_size = n;
        p->o->fs.cache_size_set = true;
    } else if (strcmp(name, "max_memory") == 0) {
        if (n < (16ULL << 20))
            return EINVAL;
        p->o->fs.max_memory = n;
    } else if (strcmp(name, "part_size") == 0) {
        if (n < (4ULL << 10) || n > (1ULL << 30))
            return EINVAL;
        p->o->fs.part_size = n;
    } else if (strcmp(name, "gz_span") == 0) {
        if (n < (1ULL << 20) || n > (1ULL << 30))
            return EINVAL;
        p->o->fs.gz_span = n;
    } else {
        if (n < (1ULL << 20) || n > (1ULL << 30))
            return EINVAL;
        p->o->fs.max_readahead = n;
    }
    return 0;
}

/* "off", or a whole number with an optional s, m, h or d. */
static int o_abort_stale(struct parse *p, const char *name, const char *v)
{
    (void)name;
    if (strcmp(v, "off") == 0) {
        p->o->fs.abort_stale_uploads = 0;
        return 0;
    }
    char *end;
    errno = 0;
    if (!*v || *v < '0' || *v > '9')
        return EINVAL;
    unsigned long long n = strtoull(v, &end, 10);
    unsigned long long mult = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mult = 60, end++;
    else if (*end == 'h')
        mult = 3600, end++;
    else if (*end == 'd')
        mult = 86400, end++;
    if (errno || *end || n == 0 || n > 3650ULL * 86400 / mult)
        return EINVAL;
    p->o->fs.abort_stale_uploads = n * mult;
    return 0;
}

static int o_gunzip(struct parse *p, const char *name, const char *v)
{
    (void)name;
    static const char *modes[] = {"off", "encoding", "view", "replace"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v, modes[i]) == 0) {
            p->o->fs.gunzip = (enum fs_gunzip)i;
            return 0;
        }
    return EINVAL;
}

static int o_gz_index(struct parse *p, const char *name, const char *v)
{
    (void)name;
    if (strcmp(v, "local") != 0 && strcmp(v, "shared") != 0)
        return EINVAL;
    p->o->fs.gz_index_shared = strcmp(v, "shared") == 0;
    return 0;
}

static int o_gz_size(struct parse *p, const char *name, const char *v)
{
    (void)name;
    if (strcmp(v, "exact") != 0 && strcmp(v, "estimate") != 0)
        return EINVAL;
    p->o->fs.gz_size_exact = strcmp(v, "exact") == 0;
    return 0;
}

static int o_allow(struct parse *p, const char *name, const char *v)
{
    if (strcmp(name, "allow_other") == 0)
        p->allow_other = true;
    else
        p->allow_root = true;
    return 0;
}

static int o_fsname(struct parse *p, const char *name, const char *v)
{
    return *v ? set_string(&p->o->fsname, v) : EINVAL;
}

static int o_subtype(struct parse *p, const char *name, const char *v)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
    if (!*v || strspn(v, ok) != strlen(v))
        return EINVAL;
    return set_string(&p->o->subtype, v);
}

static int o_debug(struct parse *p, const char *name, const char *v)
{
    p->o->fuse_debug = true;
    p->o->foreground = true; /* its output goes to stderr */
    return 0;
}

static int o_auto_unmount(struct parse *p, const char *name, const char *v)
{
    p->o->auto_unmount = true;
    return add_fuse_opt(&p->o->fuse_opts, name);
}

/* A kernel mount flag, handed to FUSE as it is. */
static int o_mount_flag(struct parse *p, const char *name, const char *v)
{
    return add_fuse_opt(&p->o->fuse_opts, name);
}

static int o_max_read(struct parse *p, const char *name, const char *v)
{
    unsigned long long n;
    if (parse_decimal(v, UINT32_MAX, &n) || n == 0)
        return EINVAL;
    char opt[32];
    snprintf(opt, sizeof(opt), "max_read=%llu", n);
    p->o->fs.max_read = (unsigned)n; /* op_init says it again: libfuse wants both */
    return add_fuse_opt(&p->o->fuse_opts, opt);
}

static int o_ignore(struct parse *p, const char *name, const char *v)
{
    return 0;
}

static int o_sync(struct parse *p, const char *name, const char *v)
{
    set_err(p, "pailfs: option -o sync is not supported: a file reaches S3 when it is "
               "closed or fsync'ed, never at each write (use fsync)");
    return EALREADY;
}

/* ---- how new objects are stored (issue 20) ---------------------------------- */

static int o_sse(struct parse *p, const char *name, const char *v)
{
    return s3_sse_valid(v) ? set_string(&p->o->sse, v) : EINVAL;
}

/* A KMS key id, alias or ARN: printable, no blank (it is a header value). */
static int o_sse_kms_key_id(struct parse *p, const char *name, const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 2048)
        return EINVAL;
    for (const char *c = v; *c; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f)
            return EINVAL;
    return set_string(&p->o->sse_kms_key_id, v);
}

static int o_sse_bucket_key(struct parse *p, const char *name, const char *v)
{
    p->o->s3.policy.sse_bucket_key = true;
    return 0;
}

static int o_storage_class(struct parse *p, const char *name, const char *v)
{
    return s3_storage_class_valid(v) ? set_string(&p->o->storage_class, v) : EINVAL;
}

static int o_requester_pays(struct parse *p, const char *name, const char *v)
{
    p->o->s3.requester_pays = true;
    return 0;
}

/* "off", or the path of a mime.types file (read at mount). */
static int o_mime_types(struct parse *p, const char *name, const char *v)
{
    if (!*v)
        return EINVAL;
    p->mime_types_given = true;
    if (strcmp(v, "off") == 0) {
        free(p->o->mime_types);
        p->o->mime_types = NULL;
        return 0;
    }
    return set_absolute_path(&p->o->mime_types, v);
}

/* The KMS settings need a KMS encryption: S3 refuses them otherwise, at
 * the first write, long after the mount said nothing. */
static int check_policy(struct parse *p)
{
    const char *kms_opt = p->o->sse_kms_key_id             ? "sse_kms_key_id"
                          : p->o->s3.policy.sse_bucket_key ? "sse_bucket_key"
                                                           : NULL;
    if (kms_opt && !s3_sse_is_kms(p->o->sse)) {
        set_err(p, "pailfs: option -o %s needs -o sse=aws:kms or -o sse=aws:kms:dsse", kms_opt);
        return EINVAL;
    }
    return 0;
}

enum o_arg { O_FLAG, O_VALUE };

struct o_option {
    const char *name;
    enum o_arg arg;
    o_setter set;
    const char *expect; /* what a good value is, for the error message */
};

static const struct o_option o_table[] = {
    /* mount */
    {"ro", O_FLAG, o_ro, NULL},
    {"rw", O_FLAG, o_rw, NULL},
    {"allow_other", O_FLAG, o_allow, NULL},
    {"allow_root", O_FLAG, o_allow, NULL},
    {"auto_unmount", O_FLAG, o_auto_unmount, NULL},
    {"cache_dir", O_VALUE, o_cache_dir, "a directory path"},
    {"rename_parallel", O_VALUE, o_whole, "a whole number from 1 to 64"},
    /* S3 */
    {"endpoint", O_VALUE, o_endpoint, "an http:// or https:// URL such as http://127.0.0.1:9000"},
    {"region", O_VALUE, o_region, "a region name such as eu-west-1"},
    {"path_style", O_FLAG, o_path_style, NULL},
    {"profile", O_VALUE, o_profile, "a profile name"},
    {"passwd_file", O_VALUE, o_passwd_file, "a file path"},
    {"sse_c_key_file", O_VALUE, o_sse_c_key_file, "a file path"},
    {"sse_c_cache", O_FLAG, o_sse_c_cache, NULL},
    {"checksum", O_VALUE, o_checksum, "crc32c, crc64nvme, sha256 or off"},
    {"public", O_FLAG, o_public, NULL},
    {"cafile", O_VALUE, o_cafile, "a file path of PEM certificates"},
    {"no_verify_ssl", O_FLAG, o_no_verify_ssl, NULL},
    {"retries", O_VALUE, o_whole, "a whole number from 0 to 20"},
    {"connect_timeout", O_VALUE, o_connect_timeout, "a number of seconds above 0 and at most 300"},
    {"stall_timeout", O_VALUE, o_whole, "a whole number of seconds from 1 to 300"},
    {"requester_pays", O_FLAG, o_requester_pays, NULL},
    /* new objects */
    {"sse", O_VALUE, o_sse, "AES256, aws:kms or aws:kms:dsse"},
    {"sse_kms_key_id", O_VALUE, o_sse_kms_key_id,
     "a KMS key id, alias or ARN (printable, no blanks, at most 2048 characters)"},
    {"sse_bucket_key", O_FLAG, o_sse_bucket_key, NULL},
    {"storage_class", O_VALUE, o_storage_class,
     "an S3 storage class such as STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, "
     "GLACIER_IR, GLACIER or DEEP_ARCHIVE"},
    {"mime_types", O_VALUE, o_mime_types, "off, or the path of a mime.types file"},
    /* ownership and modes */
    {"uid", O_VALUE, o_id, "a numeric user id"},
    {"gid", O_VALUE, o_id, "a numeric group id"},
    {"umask", O_VALUE, o_mode, "an octal mode of at most 07777"},
    {"file_mode", O_VALUE, o_mode, "an octal mode of at most 07777"},
    {"dir_mode", O_VALUE, o_mode, "an octal mode of at most 07777"},
    {"compat_dir", O_FLAG, o_compat_dir, NULL},
    /* caching */
    {"attr_ttl", O_VALUE, o_ttl, "a number of seconds, 0 or more (fractions allowed)"},
    {"neg_ttl", O_VALUE, o_ttl, "a number of seconds, 0 or more (fractions allowed)"},
    {"list_page", O_VALUE, o_whole, "a whole number from 1 to 1000"},
    {"max_inodes", O_VALUE, o_whole, "a whole number from 16 to 100000000"},
    {"cache_size", O_VALUE, o_size, "a size in bytes such as 0, 500M or 10G"},
    /* the read path */
    {"max_memory", O_VALUE, o_size, "a size of at least 16M, such as 256M"},
    {"part_size", O_VALUE, o_size, "a size from 4k to 1G, such as 8M"},
    {"max_readahead", O_VALUE, o_size, "a size from 1M to 1G, such as 32M"},
    {"read_parallel", O_VALUE, o_whole, "a whole number from 1 to 64"},
    /* the write path */
    {"max_inflight", O_VALUE, o_whole, "a whole number from 1 to 64"},
    {"abort_stale_uploads", O_VALUE, o_abort_stale,
     "off, or a duration such as 3600, 90m, 24h or 7d"},
    /* gzip views */
    {"gunzip", O_VALUE, o_gunzip, "off, encoding, view or replace"},
    {"gz_span", O_VALUE, o_size, "a size from 1M to 1G, such as 8M"},
    {"gz_workers", O_VALUE, o_whole, "0 (one per core but one, 1 to 4) or 1 to 4"},
    {"gz_size", O_VALUE, o_gz_size, "estimate or exact"},
    {"gz_index", O_VALUE, o_gz_index, "local or shared"},
    /* logging */
    {"log_level", O_VALUE, o_log_level, "error, warn, info or debug"},
    {"logfile", O_VALUE, o_logfile, "a file path"},
    /* metrics */
    {"metrics_file", O_VALUE, o_metrics_file, "a file path"},
    {"metrics_interval", O_VALUE, o_whole, "a whole number of seconds from 1 to 3600"},
    /* FUSE pass-through */
    {"default_permissions", O_FLAG, o_ignore, NULL}, /* always on */
    {"fsname", O_VALUE, o_fsname, "a name"},
    {"subtype", O_VALUE, o_subtype, "a name of letters, digits, '-', '_' or '.'"},
    {"debug", O_FLAG, o_debug, NULL},
    {"max_read", O_VALUE, o_max_read, "a positive number of bytes"},
    {"nosuid", O_FLAG, o_mount_flag, NULL},
    {"nodev", O_FLAG, o_mount_flag, NULL},
    {"noexec", O_FLAG, o_mount_flag, NULL},
    {"suid", O_FLAG, o_mount_flag, NULL},
    {"dev", O_FLAG, o_mount_flag, NULL},
    {"exec", O_FLAG, o_mount_flag, NULL},
    {"noatime", O_FLAG, o_mount_flag, NULL},
    {"atime", O_FLAG, o_mount_flag, NULL},
    /* accepted and ignored: what mount(8), fstab and systemd add for
     * themselves, and atime variants that do not apply (S3 keeps no atime) */
    {"_netdev", O_FLAG, o_ignore, NULL},
    {"nofail", O_FLAG, o_ignore, NULL},
    {"auto", O_FLAG, o_ignore, NULL},
    {"noauto", O_FLAG, o_ignore, NULL},
    {"user", O_FLAG, o_ignore, NULL},
    {"nouser", O_FLAG, o_ignore, NULL},
    {"users", O_FLAG, o_ignore, NULL},
    {"owner", O_FLAG, o_ignore, NULL},
    {"group", O_FLAG, o_ignore, NULL},
    {"defaults", O_FLAG, o_ignore, NULL},
    {"async", O_FLAG, o_ignore, NULL},
    {"relatime", O_FLAG, o_ignore, NULL},
    {"norelatime", O_FLAG, o_ignore, NULL},
    {"strictatime", O_FLAG, o_ignore, NULL},
    {"nostrictatime", O_FLAG, o_ignore, NULL},
    {"lazytime", O_FLAG, o_ignore, NULL},
    {"nolazytime", O_FLAG, o_ignore, NULL},
    {"diratime", O_FLAG, o_ignore, NULL},
    {"nodiratime", O_FLAG, o_ignore, NULL},
    /* refused, with a reason */
    {"sync", O_FLAG, o_sync, NULL},
};

/* Options ignored by the start of their name, whatever follows:
 * x-systemd.automount, x-gvfs-show, comment=systemd.…, user=NAME (which
 * mount(8) adds for a "user" fstab entry). */
static bool o_ignored_by_prefix(const char *name, const char *v)
{
    return strncmp(name, "x-", 2) == 0 || (v && strcmp(name, "comment") == 0) ||
           (v && strcmp(name, "user") == 0);
}

/* Apply one option "name" or "name=value". */
static int apply_one(struct parse *p, char *item)
{
    char *eq = strchr(item, '=');
    const char *v = NULL;
    if (eq) {
        *eq = '\0';
        v = eq + 1;
    }
    const char *name = item;
    if (!*name && !v)
        return 0; /* "a,,b" or a trailing comma */
    if (o_ignored_by_prefix(name, v))
        return 0;
    const struct o_option *o = NULL;
    for (size_t i = 0; i < sizeof(o_table) / sizeof(o_table[0]); i++) {
        if (strcmp(o_table[i].name, name) == 0) {
            o = &o_table[i];
            break;
        }
    }
    if (!o) {
        /* the name only: a mistyped option's value may be a secret */
        set_err(p, "pailfs: unknown option -o %s", name);
        return EINVAL;
    }
    if (o->arg == O_FLAG && v) {
        set_err(p, "pailfs: option -o %s takes no value", name);
        return EINVAL;
    }
    if (o->arg == O_VALUE && !v) {
        set_err(p, "pailfs: option -o %s needs a value (-o %s=VALUE)", name, name);
        return EINVAL;
    }
    int rc = o->set(p, name, v);
    if (rc == EALREADY)
        return EINVAL;
    if (rc == EINVAL)
        set_err(p, "pailfs: bad value '%s' for -o %s: expected %s", v ? v : "", name,
                o->expect ? o->expect : "no value");
    else if (rc == ENOMEM)
        set_err(p, "pailfs: out of memory");
    return rc;
}

/* Apply "opt[=val],opt…", where '\' escapes the next character (so a value
 * may hold a comma), as libfuse and mount.fuse3 read them. */
static int apply_o(struct parse *p, const char *arg)
{
    char *item = malloc(strlen(arg) + 1);
    if (!item) {
        set_err(p, "pailfs: out of memory");
        return ENOMEM;
    }
    int rc = 0;
    size_t n = 0;
    for (const char *s = arg;; s++) {
        if (*s == '\\' && s[1]) {
            item[n++] = *++s;
        } else if (*s == ',' || !*s) {
            item[n] = '\0';
            if ((rc = apply_one(p, item)) || !*s)
                break;
            n = 0;
        } else {
            item[n++] = *s;
        }
    }
    free(item);
    return rc;
}

/* ---- positional arguments, defaults, FUSE args ------------------------------ */

/* Where BUCKET ends in BUCKET[:/PREFIX]: at the first ':', or for an
 * access point ARN (arn:PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME, which
 * the S3 layer checks) at the first ':' after its five. */
static const char *bucket_end(const char *arg)
{
    const char *colon = strchr(arg, ':');
    if (strncmp(arg, "arn:", 4) == 0)
        for (int i = 0; i < 5 && colon; i++)
            colon = strchr(colon + 1, ':');
    return colon;
}

/* BUCKET, BUCKET:, BUCKET:/ → no prefix; BUCKET:/a/b/ → "a/b". */
static int split_bucket(struct parse *p, const char *arg)
{
    const char *colon = bucket_end(arg);
    size_t blen = colon ? (size_t)(colon - arg) : strlen(arg);
    if (blen == 0) {
        set_err(p, "pailfs: empty bucket name in '%s' (expected BUCKET[:/PREFIX])", arg);
        return EINVAL;
    }
    const char *pre = colon ? colon + 1 : "";
    while (*pre == '/')
        pre++;
    size_t plen = strlen(pre);
    while (plen && pre[plen - 1] == '/')
        plen--;
    free(p->o->bucket);
    free(p->o->prefix);
    p->o->bucket = util_strndup(arg, blen);
    p->o->prefix = util_strndup(pre, plen);
    if (!p->o->bucket || !p->o->prefix) {
        set_err(p, "pailfs: out of memory");
        return ENOMEM;
    }
    return 0;
}

/* $XDG_CACHE_HOME/pailfs, else $HOME/.cache/pailfs, else (root)
 * /var/cache/pailfs. */
static int default_cache_dir(struct parse *p)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    struct buf b = BUF_INIT;
    int rc;
    if (xdg && xdg[0] == '/') /* the spec ignores a relative one */
        rc = buf_printf(&b, "%s/pailfs", xdg);
    else if (home && home[0] == '/')
        rc = buf_printf(&b, "%s/.cache/pailfs", strcmp(home, "/") == 0 ? "" : home);
    else if (geteuid() == 0)
        rc = buf_puts(&b, "/var/cache/pailfs");
    else {
        set_err(p, "pailfs: no cache directory: HOME is not set; give -o cache_dir=PATH");
        return EINVAL;
    }
    if (rc || !(p->o->cache_dir = buf_steal(&b))) {
        buf_free(&b);
        set_err(p, "pailfs: out of memory");
        return ENOMEM;
    }
    return 0;
}

static int build_fuse_args(struct parse *p, const char *argv0)
{
    struct options *o = p->o;
    char *list = NULL;
    struct buf fsname = BUF_INIT, subtype = BUF_INIT;
    int rc = ENOMEM;
    if (o->fsname ? buf_printf(&fsname, "fsname=%s", o->fsname)
                  : buf_printf(&fsname, "fsname=pailfs:%s", o->bucket))
        goto out;
    if (buf_printf(&subtype, "subtype=%s", o->subtype ? o->subtype : "pailfs"))
        goto out;
    if (add_fuse_opt(&list, fsname.data) || add_fuse_opt(&list, subtype.data) ||
        add_fuse_opt(&list, "default_permissions"))
        goto out;
    if (o->fs.read_only && add_fuse_opt(&list, "ro"))
        goto out;
    if (p->allow_other && add_fuse_opt(&list, "allow_other"))
        goto out;
    o->fs.multi_user = p->allow_other;
    if (p->allow_root && add_fuse_opt(&list, "allow_root"))
        goto out;
    if (o->fuse_debug && add_fuse_opt(&list, "debug"))
        goto out;
    if (o->fuse_opts && fuse_opt_add_opt(&list, o->fuse_opts)) /* already escaped */
        goto out;
    if (fuse_opt_add_arg(&o->fuse_args, argv0 && *argv0 ? argv0 : "pailfs") ||
        fuse_opt_add_arg(&o->fuse_args, "-o") || fuse_opt_add_arg(&o->fuse_args, list))
        goto out;
    rc = 0;
out:
    if (rc)
        set_err(p, "pailfs: out of memory");
    free(list);
    buf_free(&fsname);
    buf_free(&subtype);
    return rc;
}

/* Point the layers' configs at what was parsed. */
static int finish(struct parse *p, const char *argv0)
{
    struct options *o = p->o;
    if (p->allow_other && p->allow_root) {
        set_err(p, "pailfs: options -o allow_other and -o allow_root exclude each other");
        return EINVAL;
    }
    int rc;
    if (!p->cache_dir_given && (rc = default_cache_dir(p)))
        return rc;
    if ((rc = check_policy(p)))
        return rc;
    if (!p->mime_types_given && !(o->mime_types = strdup(OPTIONS_DEFAULT_MIME_TYPES))) {
        set_err(p, "pailfs: out of memory");
        return ENOMEM;
    }
    o->s3.policy.sse = o->sse;
    o->s3.policy.sse_kms_key_id = o->sse_kms_key_id;
    o->s3.policy.storage_class = o->storage_class;
    o->fs.mime_types = o->mime_types;

    o->s3.bucket = o->bucket;
    o->s3.endpoint = o->endpoint;
    o->s3.region = o->region;
    o->s3.profile = o->profile;
    o->s3.passwd_file = o->passwd_file;
    o->s3.http.cafile = o->cafile;
    o->s3.max_attempts = p->retries + 1;
    o->s3.http.connect_timeout_ms = (long)(p->connect_timeout_s * 1000.0 + 0.5);
    o->s3.http.stall_timeout_s = (long)p->stall_timeout_s;

    o->fs.bucket = o->bucket;
    o->fs.prefix = o->prefix;
    o->fs.cache_dir = o->cache_dir;
    o->fs.endpoint = o->endpoint ? o->endpoint : "";
    if ((rc = finish_sse_c(p)))
        return rc;
    return build_fuse_args(p, argv0);
}

static int unknown_flag(struct parse *p, char c)
{
    set_err(p, "pailfs: unknown option -%c", c);
    return EINVAL;
}

/* ---- argv ----------------------------------------------------------------- */

/* One word that is a cluster of short options: -f, -fd, -o opts, -oopts,
 * -fo opts.  An -o ending the word takes the next one, argv[++*i]. */
static int short_options(struct parse *p, int argc, char *const argv[], int *i)
{
    struct options *opts = p->o;
    int rc = 0;
    for (const char *c = argv[*i] + 1; *c && !rc && !opts->action; c++) {
        switch (*c) {
        case 'h': opts->action = OPTIONS_HELP; break;
        case 'V': opts->action = OPTIONS_VERSION; break;
        case 'f': opts->foreground = true; break;
        case 's': opts->single_thread = true; break;
        case 'd':
            opts->foreground = true;
            opts->log_level = LOG_LVL_DEBUG;
            opts->log_level_given = true;
            break;
        case 'o':
            if (c[1]) {
                rc = apply_o(p, c + 1);
            } else if (*i + 1 < argc) {
                rc = apply_o(p, argv[++*i]);
            } else {
                set_err(p, "pailfs: option -o needs an argument (-o opt[=val],...)");
                rc = EINVAL;
            }
            c += strlen(c) - 1; /* the rest of the word was its value */
            break;
        default: rc = unknown_flag(p, *c);
        }
    }
    return rc;
}

/* The words of argv in order, until --help or --version: options applied,
 * the others (BUCKET[:/PREFIX] and MOUNTPOINT) kept in pos. */
static int parse_words(struct parse *p, int argc, char *const argv[], const char *pos[2], int *npos)
{
    struct options *opts = p->o;
    bool only_positional = false;
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (*npos == 2) {
                set_err(p,
                        "pailfs: unexpected argument '%s' (usage: pailfs [options] "
                        "BUCKET[:/PREFIX] MOUNTPOINT)",
                        a);
                rc = EINVAL;
            } else {
                pos[(*npos)++] = a;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = true;
        } else if (strcmp(a, "--help") == 0) {
            opts->action = OPTIONS_HELP;
            break;
        } else if (strcmp(a, "--version") == 0) {
            opts->action = OPTIONS_VERSION;
            break;
        } else if (a[1] == '-') {
            set_err(p, "pailfs: unknown option %s", a);
            rc = EINVAL;
        } else {
            rc = short_options(p, argc, argv, &i);
            if (opts->action)
                break;
        }
    }
    return rc;
}

/* A mount's two words: the bucket and prefix, the mount point; then the
 * layers' configs. */
static int mount_words(struct parse *p, const char *const pos[2], int npos, const char *argv0)
{
    if (npos < 2) {
        set_err(p,
                "pailfs: missing %s (usage: pailfs [options] BUCKET[:/PREFIX] "
                "MOUNTPOINT; see pailfs --help)",
                npos == 0 ? "BUCKET and MOUNTPOINT" : "MOUNTPOINT");
        return EINVAL;
    }
    if (!pos[1][0]) {
        set_err(p, "pailfs: empty mount point");
        return EINVAL;
    }
    int rc = split_bucket(p, pos[0]);
    if (rc)
        return rc;
    if (!(p->o->mountpoint = strdup(pos[1]))) {
        set_err(p, "pailfs: out of memory");
        return ENOMEM;
    }
    return finish(p, argv0);
}

int options_parse(int argc, char *const argv[], struct options *opts, char *errbuf, size_t errlen)
{
    memset(opts, 0, sizeof(*opts));
    opts->log_level = LOG_LVL_WARN;
    opts->metrics_interval_s = OPTIONS_DEFAULT_METRICS_INTERVAL_S;
    fs_config_defaults(&opts->fs);
    struct parse p = {
        .o = opts,
        .retries = 4,
        .connect_timeout_s = 10,
        .stall_timeout_s = 30,
        .err = errbuf,
        .errlen = errlen,
    };
    if (errlen)
        errbuf[0] = '\0';

    const char *pos[2];
    int npos = 0;
    int rc = parse_words(&p, argc, argv, pos, &npos);
    if (!rc && opts->action == OPTIONS_MOUNT)
        rc = mount_words(&p, pos, npos, argc > 0 ? argv[0] : NULL);
    if (rc) {
        options_free(opts);
        return rc;
    }
    return 0;
}

void options_free(struct options *opts)
{
    free(opts->bucket);
    free(opts->prefix);
    free(opts->mountpoint);
    free(opts->endpoint);
    free(opts->region);
    free(opts->profile);
    free(opts->passwd_file);
    free(opts->sse_c_key_file);
    free(opts->cafile);
    free(opts->cache_dir);
    free(opts->fsname);
    free(opts->subtype);
    free(opts->fuse_opts);
    free(opts->logfile);
    free(opts->metrics_file);
    free(opts->sse);
    free(opts->sse_kms_key_id);
    free(opts->storage_class);
    free(opts->mime_types);
    fuse_opt_free_args(&opts->fuse_args);
    memset(opts, 0, sizeof(*opts));
}

/* ---- help ----------------------------------------------------------------- */

void options_print_help(FILE *to)
{
    fputs("usage: pailfs [options] BUCKET[:/PREFIX] MOUNTPOINT\n"
          "       pailfs -h | --help | -V | --version\n"
          "       pailfs gzindex [-o options] BUCKET KEY... | s3://BUCKET/KEY...\n"
          "\n"
          "Mount an S3 bucket (AWS S3 or any S3-compatible store), or the part of it\n"
          "under PREFIX, as a directory.  Without -f, pailfs returns once the mount is\n"
          "live (status 0), or fails with one line on stderr saying why (status 1).\n"
          "Unmount with `fusermount3 -u MOUNTPOINT` (or umount as root).\n"
          "BUCKET may be an access point's alias, or its ARN\n"
          "arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME (aws-cn, aws-us-gov too), reached\n"
          "at its own endpoint and signed for REGION (with -o endpoint=URL: at\n"
          "NAME-ACCOUNT.HOST of URL).\n"
          "MOUNTPOINT may be /dev/fd/N: a /dev/fuse descriptor a privileged helper\n"
          "opened and mounted (mount(2) with fd=N,rootmode=40000,...) and passed\n"
          "open; pailfs then needs no privilege and the helper unmounts it.\n"
          "\n"
          "general:\n"
          "  -h, --help               print this help and exit\n"
          "  -V, --version            print the version and exit\n"
          "  -f                       stay in the foreground, logging to stderr\n"
          "                           (default: run in the background once mounted,\n"
          "                           logging to syslog)\n"
          "  -d                       log at debug level; implies -f\n"
          "  -s                       serve requests on one thread (default: several)\n"
          "  -o OPT[=VAL][,OPT...]    the options below; -o may be repeated, and a\n"
          "                           later value wins; '\\' escapes a comma\n"
          "\n"
          "mount:\n"
          "  -o ro                    read-only: every change fails with EROFS\n"
          "  -o rw                    read-write (default)\n"
          "  -o allow_other           let every user in (default: only the mounting user;\n"
          "                           non-root needs user_allow_other in /etc/fuse.conf)\n"
          "  -o allow_root            let the mounting user and root in\n"
          "  -o auto_unmount          unmount when pailfs exits, even if killed\n"
          "                           (uses fusermount3) (default: off)\n"
          "  -o cache_dir=PATH        the block cache and the staging of files being\n"
          "                           written (default:\n"
          "                           $XDG_CACHE_HOME/pailfs, else $HOME/.cache/pailfs,\n"
          "                           else /var/cache/pailfs for root)\n"
          "  -o rename_parallel=N     copies in flight while renaming a directory,\n"
          "                           1 to 64 (default 8)\n"
          "\n"
          "S3:\n"
          "  -o endpoint=URL          S3 endpoint, e.g. http://127.0.0.1:9000\n"
          "                           (default: AWS, https://s3.REGION.amazonaws.com)\n"
          "  -o region=NAME           signing region (default: AWS_REGION,\n"
          "                           AWS_DEFAULT_REGION, the profile's, on EC2 without\n"
          "                           endpoint= the instance's (IMDSv2), else us-east-1;\n"
          "                           corrected from the bucket's own region)\n"
          "  -o path_style            path-style addressing (default: automatic: path\n"
          "                           style for IP addresses, localhost and names that\n"
          "                           are not DNS-safe, virtual-hosted otherwise)\n"
          "  -o profile=NAME          profile of ~/.aws/credentials and ~/.aws/config\n"
          "                           (default: AWS_PROFILE, else default); it may give\n"
          "                           keys, role_arn + source_profile (STS AssumeRole),\n"
          "                           role_arn + web_identity_token_file, or a\n"
          "                           credential_process (run without a shell)\n"
          "  -o passwd_file=PATH      s3fs-style ACCESS_KEY:SECRET_KEY file, mode 600\n"
          "                           (default: none)\n"
          "  -o sse_c_key_file=PATH   SSE-C: encrypt and decrypt every object with the\n"
          "                           customer key in PATH (32 bytes, or their base64;\n"
          "                           mode 600, owned by the mounting user); turns the\n"
          "                           disk cache and local gzip indexes off (default:\n"
          "                           no SSE-C)\n"
          "  -o sse_c_cache           with sse_c_key_file: keep the disk cache and local\n"
          "                           gzip indexes (decrypted bytes on local disk)\n"
          "                           (default: off)\n"
          "  -o checksum=ALGO         checksum sent with every upload and checked on\n"
          "                           whole-object reads: crc32c, crc64nvme, sha256 or\n"
          "                           off (default crc32c); over https a crc makes\n"
          "                           uploads UNSIGNED-PAYLOAD (no SHA-256 pass)\n"
          "  -o public                send unsigned requests, for public buckets\n"
          "                           (default: signed)\n"
          "  -o cafile=PATH           PEM file of the CA certificates to trust for an\n"
          "                           https endpoint (default: the system's store)\n"
          "  -o no_verify_ssl         do not verify the endpoint's TLS certificate:\n"
          "                           unsafe, logged as a warning (default: verify)\n"
          "  -o retries=N             retries of a failed request after the first try,\n"
          "                           0 to 20 (default 4)\n"
          "  -o connect_timeout=S     seconds to connect, above 0 and at most 300\n"
          "                           (default 10)\n"
          "  -o stall_timeout=S       a request that moves no byte for S seconds is\n"
          "                           aborted and retried, 1 to 300 (default 30)\n"
          "  -o requester_pays        send x-amz-request-payer: requester on every\n"
          "                           request, for a requester-pays bucket (default off)\n"
          "\n"
          "new objects (copies keep the source's encryption and class, see pailfs(1)):\n"
          "  -o sse=ALG               server-side encryption of new objects and copies:\n"
          "                           AES256, aws:kms or aws:kms:dsse (default: none\n"
          "                           asked, the bucket's default applies)\n"
          "  -o sse_kms_key_id=ID     the KMS key (id, alias or ARN) for sse=aws:kms or\n"
          "                           aws:kms:dsse (default: the AWS managed key)\n"
          "  -o sse_bucket_key        ask for an S3 Bucket Key with SSE-KMS\n"
          "  -o storage_class=CLASS   storage class of new objects: STANDARD_IA,\n"
          "                           INTELLIGENT_TIERING, GLACIER_IR, ONEZONE_IA, ...\n"
          "                           (default: none asked, STANDARD)\n"
          "  -o mime_types=PATH       Content-Type of new files from their extension, by\n"
          "                           this mime.types file (default /etc/mime.types;\n"
          "                           application/octet-stream when not found); off:\n"
          "                           send no Content-Type (S3 then says\n"
          "                           binary/octet-stream)\n"
          "\n"
          "ownership and modes (modes are octal):\n"
          "  -o uid=N                 owner of every object, whatever its metadata says\n"
          "                           (default: x-amz-meta-uid, else the mounting user)\n"
          "  -o gid=N                 group of every object, likewise (default:\n"
          "                           x-amz-meta-gid, else the mounting user's group)\n"
          "  -o file_mode=MODE        permission bits of files without x-amz-meta-mode\n"
          "                           (default 0644)\n"
          "  -o dir_mode=MODE         permission bits of directories without\n"
          "                           x-amz-meta-mode (default 0755)\n"
          "  -o umask=MODE            bits cleared from every mode shown, metadata or\n"
          "                           not (default 0000)\n"
          "  -o compat_dir            empty keys of a listing are typed by a HEAD each,\n"
          "                           so old-style directory objects (key \"d\",\n"
          "                           application/x-directory) show as directories\n"
          "                           after listings too (a lookup finds them always)\n"
          "\n"
          "caching:\n"
          "  -o attr_ttl=SECONDS      how long attributes and names (a directory's\n"
          "                           listing among them) are trusted before S3 is\n"
          "                           asked again; fractions allowed (default 1)\n"
          "  -o neg_ttl=SECONDS       how long a missing name stays missing, and a\n"
          "                           listing proves absent what it lacks (default 1)\n"
          "  -o max_inodes=N          inodes kept for the kernel before it is asked to\n"
          "                           forget the oldest files' (default 20000)\n"
          "  -o list_page=N           keys asked per LIST page, 1 to 1000 (default\n"
          "                           1000; smaller pages are for tests)\n"
          "  -o cache_size=SIZE       bound of the disk cache of object blocks under\n"
          "                           cache_dir; 0 turns it off (default: the smaller of\n"
          "                           10G and 10% of the free space there)\n"
          "\n"
          "reading (sizes take a k, M, G or T suffix):\n"
          "  -o max_memory=SIZE       one bound for the mount's read and write buffers,\n"
          "                           gzip views' chunks and listings held (pailfs\n"
          "                           --stats shows each one's share); default: 1/8 of\n"
          "                           the cgroup's memory limit or the machine's memory,\n"
          "                           whichever is smaller, 16M to 256M\n"
          "  -o max_readahead=SIZE    read-ahead window of one file read sequentially;\n"
          "                           it starts at 1M and doubles up to this (default 64M)\n"
          "  -o part_size=SIZE        bytes per ranged GET of the read-ahead, and of the\n"
          "                           first multipart parts of a written file (default 8M;\n"
          "                           AWS refuses parts under 5M)\n"
          "  -o read_parallel=N       ranged GETs in flight for reads, 1 to 64 (default 8)\n"
          "\n"
          "writing:\n"
          "  -o max_inflight=N        parts of one file uploading at once, 1 to 64\n"
          "                           (default 8); write buffers count in max_memory\n"
          "  -o abort_stale_uploads=T at mount, abort multipart uploads under the prefix\n"
          "                           older than T (90m, 24h, 7d; default 24h; off)\n"
          "\n"
          "gzip views:\n"
          "  -o gunzip=MODE           encoding: objects stored with Content-Encoding gzip\n"
          "                           read decompressed (default); view: also every K.gz\n"
          "                           as K, decompressed; replace: K.gz listed only as K;\n"
          "                           off\n"
          "  -o gz_span=SIZE          decompressed bytes between access points of the\n"
          "                           index of a view (default 8M)\n"
          "  -o gz_workers=N          threads of the mount inflating ahead of sequential\n"
          "                           readers of views, shared by every view: 1 to 4,\n"
          "                           or 0 for one per core but one (default 0)\n"
          "  -o gz_size=HOW           estimate: a view's size is estimated until it was\n"
          "                           read once (default); exact: the first stat reads it\n"
          "  -o gz_index=WHERE        local: indexes of views kept in cache_dir (default);\n"
          "                           shared: also in the bucket under .pailfs/gzindex/,\n"
          "                           so other nodes reuse them\n"
          "\n"
          "logging:\n"
          "  -o log_level=LEVEL       error, warn, info or debug (default warn)\n"
          "  -o logfile=PATH          append the log to PATH instead of stderr or syslog;\n"
          "                           SIGHUP reopens it (for logrotate) (default: none)\n"
          "\n"
          "metrics:\n"
          "  -o metrics_file=PATH     write the metrics in Prometheus text format to PATH\n"
          "                           (replaced atomically; default: none)\n"
          "  -o metrics_interval=SECS how often metrics_file is rewritten (default 5)\n"
          "  pailfs --stats MOUNTPOINT  print the metrics of a running mount\n"
          "\n"
          "FUSE pass-through:\n"
          "  -o default_permissions   the kernel checks permissions (always on)\n"
          "  -o fsname=NAME           source shown by mount and df (default pailfs:BUCKET)\n"
          "  -o subtype=NAME          type shown as fuse.NAME (default pailfs)\n"
          "  -o nosuid, nodev, noexec, suid, dev, exec, noatime, atime\n"
          "                           mount flags (default: nosuid,nodev)\n"
          "  -o max_read=BYTES        largest read request (default: the kernel's)\n"
          "  -o debug                 libfuse's trace of every request (huge; implies\n"
          "                           -f; -d does not turn it on)\n"
          "\n"
          "accepted and ignored (mount(8), fstab and systemd add them):\n"
          "  _netdev nofail auto noauto user user=NAME nouser users owner group defaults\n"
          "  async x-* comment=*, and relatime norelatime strictatime nostrictatime\n"
          "  lazytime nolazytime diratime nodiratime (S3 keeps no access times)\n"
          "refused: sync (a file reaches S3 at close or fsync, never at each write)\n"
          "\n"
          "fstab (mount -t fuse.pailfs BUCKET MOUNTPOINT -o OPTS runs the same):\n"
          "  mybucket:/some/prefix /mnt/data fuse.pailfs "
          "_netdev,allow_other,endpoint=http://127.0.0.1:9000,path_style 0 0\n"
          "\n"
          "Credentials, from the first source found: -o passwd_file; AWS_ACCESS_KEY_ID\n"
          "and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); the shared files with\n"
          "-o profile or AWS_PROFILE; web identity (AWS_WEB_IDENTITY_TOKEN_FILE and\n"
          "AWS_ROLE_ARN); container credentials; instance metadata (IMDSv2).\n"
          "See pailfs(1).\n",
          to);
}
