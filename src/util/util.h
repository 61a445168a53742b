/* util.h — the helpers layer: logging, metrics, growable buffers and
 * arrays, time, hashing and small string helpers.  Knows only libc (and
 * OpenSSL's EVP for the hash).  Every symbol carries a `util_`, `log_`,
 * `metrics_` or `buf_` prefix.  Functions return 0 or a positive errno
 * unless said. */
#ifndef PAILFS_UTIL_H
#define PAILFS_UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* ---- logging ---------------------------------------------------------- */

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Set the most verbose level that is printed (default LOG_LVL_WARN).
 * Thread-safe; may be called at any time. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parse "error", "warn", "info" or "debug".  Returns 0 or EINVAL. */
int log_level_parse(const char *name, enum log_level *out);

/* Send lines to syslog (ident "pailfs" with the pid, facility LOG_DAEMON,
 * priority from the level) instead of stderr; false goes back to stderr.
 * For a daemon whose stderr is gone.  Turning it on is safe while other
 * threads log; turn it off only while none does. */
void log_use_syslog(bool on);

/* Print one line, prefixed with time, level and "pailfs", to the log file
 * (log_use_file), else to syslog (log_use_syslog), else to stderr.
 * Never pass a secret to it: nothing here can redact. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write lines to the file at `path` (appended to, created 0640) instead of
 * stderr or syslog, each with its time stamp.  A symbolic link at `path` is
 * never followed (ELOOP), here or at log_reopen; a file there that is not
 * the caller's (EPERM) or not a regular file (EINVAL) is refused.  0 or the errno of opening
 * it; on error the destination is unchanged.  Call before threads log. */
int log_use_file(const char *path);

/* Open the log file's path again (after logrotate renamed it): lines go to
 * the new file from now on, and no line is lost or split between the two.
 * 0, EINVAL (no log file in use) or the errno of opening it (logged; the
 * old file stays in use).  Thread-safe; not async-signal-safe. */
int log_reopen(void);

/* Make signal `signo` call log_reopen(): its handler only writes a byte to a
 * pipe (async-signal-safe) and a thread of ours reopens.  Call after every
 * other handler for signo is in place (it replaces them).  0 or errno. */
int log_reopen_on_signal(int signo);
/* Restore the default action of that signal and end the thread. */
void log_reopen_stop(void);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LVL_DEBUG)                                                      \
            log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

/* ---- metrics ------------------------------------------------------------ */

/* Counters and gauges any layer may bump from any thread, including the
 * read path at tens of thousands of calls a second: a bump is one relaxed
 * atomic add on a static variable, no lock, no allocation.  Each layer
 * owns the series it counts (static `struct metrics_series`, named
 * pailfs_<layer>_..., counters ending in _total) and hands them once to
 * metrics_register(); metrics_format() prints every registered series in
 * the Prometheus text format, and a writer thread can dump that to a file.
 * The relaxed order is enough: each value is read on its own, never as a
 * snapshot consistent with another. */
enum metrics_kind { METRICS_COUNTER, METRICS_GAUGE };

struct buf;

struct metrics_series {
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]*; one name, one help and kind */
    const char *help; /* one line, no backslash */
    enum metrics_kind kind;
    const char *labels; /* NULL, or `op="GetObject",status="200"` (no braces) */
    bool sparse;        /* not printed while 0: one of many label combinations */
    _Atomic int64_t value;
    struct metrics_series *next; /* the registry's list; set by metrics_register */
    bool registered;             /* the registry's; set by metrics_register */
};

static inline void metrics_add(struct metrics_series *s, int64_t n)
{
    atomic_fetch_add_explicit(&s->value, n, memory_order_relaxed);
}

static inline void metrics_set(struct metrics_series *s, int64_t v)
{
    atomic_store_explicit(&s->value, v, memory_order_relaxed);
}

static inline int64_t metrics_get(struct metrics_series *s)
{
    return atomic_load_explicit(&s->value, memory_order_relaxed);
}

/* Add `n` series to the registry (those already in it are skipped, so a
 * layer may call this from every constructor).  The series must live as
 * long as the process: they are never removed.  Thread-safe. */
void metrics_register(struct metrics_series *series, size_t n);

/* Append every registered series to `out` in the Prometheus text
 * exposition format (version 0.0.4): for each name, in the order first
 * registered, "# HELP", "# TYPE" and its samples.  0 or ENOMEM. */
int metrics_format(struct buf *out);

/* Write metrics_format() to `path` through a temporary file in the same
 * directory and rename(2), so a reader never sees a partial file.  The
 * temporary file is a new one (O_EXCL, O_NOFOLLOW) under a random name, so
 * nothing planted in a shared directory is followed or overwritten.  0 or
 * errno (the temporary file is removed). */
int metrics_write_file(const char *path);

/* Start a thread that calls metrics_write_file(path) now and every
 * `interval_s` seconds (at least 1); a failure is logged once until a
 * write works again.  `path` is copied.  0, EALREADY (one is running) or
 * errno. */
int metrics_writer_start(const char *path, unsigned interval_s);
/* Write the file one last time and end the thread; nothing if none runs. */
void metrics_writer_stop(void);

/* ---- growable byte buffer -------------------------------------------- */

/* A byte buffer that is always NUL-terminated (data[len] == 0) once it holds
 * anything, so text can be used as a C string.  The struct is owned by the
 * caller; buf_free() releases the bytes. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Make room for `extra` more bytes (plus the NUL).  0 or ENOMEM. */
int buf_reserve(struct buf *b, size_t extra);
/* Append bytes / a C string / formatted text.  0 or ENOMEM. */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Forget the contents, keep the memory. */
void buf_clear(struct buf *b);
/* Release the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Hand the bytes to the caller (who frees them) and empty the buffer.
 * Never NULL: an empty buffer yields "" (malloc'ed), or NULL on ENOMEM. */
char *buf_steal(struct buf *b);

/* ---- growable array ---------------------------------------------------- */

/* Make the array *p of *cap elements of `elem` bytes hold at least `need`
 * elements: nothing when it already does, else realloc to the capacity
 * doubled (from 16) until it suffices.  The caller keeps its count of used
 * elements; the first *cap elements are kept.  0, or ENOMEM (the memory
 * failed, or need * elem would not fit in a size_t) with *p and *cap
 * unchanged.  Call it as util_grow((void **)&arr, &cap, n + 1, sizeof(*arr)). */
int util_grow(void **p, size_t *cap, size_t need, size_t elem);

/* ---- copies ----------------------------------------------------------- */

/* memcpy(dst, src, n) for a destination that is not read again soon (a
 * part buffer filled a MiB at a time and hashed and sent after it is
 * full): on x86-64, streaming stores that go to memory without first
 * reading each line into the cache, so the copy moves half the bytes
 * memcpy does and leaves the caches to what is read next.  Everywhere
 * else, and for the unaligned head and tail of dst, memcpy.  The bytes are
 * visible to other threads once it returns (a store fence ends it), as a
 * memcpy's are after the usual lock or queue hand-off. */
void util_copy_stream(void *dst, const void *src, size_t n);

/* ---- threads ---------------------------------------------------------- */

/* pthread_create(t, NULL, fn, arg), the new thread with SIGINT, SIGTERM,
 * SIGHUP and SIGQUIT blocked.  libfuse's handlers only mark the session as
 * exited, and its loop notices when the main thread's wait is interrupted:
 * taken by any other thread, the signal would leave the main thread
 * waiting until the next request came, maybe never.  0 or an errno. */
int util_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* ---- time ------------------------------------------------------------- */

/* Monotonic clock in milliseconds. */
uint64_t util_now_ms(void);
/* Sleep for `ms` milliseconds (restarts on EINTR). */
void util_sleep_ms(uint64_t ms);
/* The CLOCK_REALTIME time `ms` milliseconds from now (tv_nsec below one
 * second): the deadline pthread_cond_timedwait takes on a condition made
 * with default attributes, as every one in pailfs is (none is set to
 * CLOCK_MONOTONIC).  For a wait that goes on to the same deadline. */
struct timespec util_deadline_ms(uint64_t ms);
/* Wait on `cond` (`mutex` held, as pthread_cond_timedwait) for at most `ms`
 * milliseconds: 0 when woken (or woken spuriously: check the predicate) or
 * ETIMEDOUT.  A condition with default attributes. */
int util_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mutex, uint64_t ms);
/* Parse an ISO 8601 time such as "2013-05-24T00:00:00Z",
 * "2013-05-24T00:00:00.000Z" or "2013-05-24T02:00:00+02:00" (offsets
 * "+HH:MM", "+HHMM", "+HH"; none means UTC) to seconds since the epoch.
 * 0, or EINVAL with *out unchanged. */
int util_parse_iso8601(const char *s, int64_t *out);
/* Parse an RFC 1123 HTTP date ("Fri, 24 May 2013 00:00:00 GMT"). 0 or EINVAL */
int util_parse_http_date(const char *s, int64_t *out);

/* ---- hashing ---------------------------------------------------------- */

/* SHA-256 of `len` bytes of data, as 64 lower-case hex digits and a NUL
 * into out.  Thread-safe (OpenSSL EVP). */
void util_sha256_hex(const void *data, size_t len, char out[65]);

/* CRC-32C (Castagnoli) of len bytes continued from `crc`, without the
 * customary inversions, as ISA-L's crc32_iscsi() computes it (ISA-L's when
 * built with it, else a table-driven C version giving the same values):
 * util_crc32c("123456789", 9, 0) is 0x58e3fa20, and the standard CRC32C
 * (S3's) is ~util_crc32c(data, len, ~0u): 0xe3069283 for "123456789". */
uint32_t util_crc32c(const void *data, size_t len, uint32_t crc);
/* CRC-64/NVME (S3's CRC64NVME) of len bytes continued from `crc`, which
 * is 0 for the first piece and the previous result for the next (the
 * inversions are inside): util_crc64nvme("123456789", 9, 0) is
 * 0xae8b14860a799888. */
uint64_t util_crc64nvme(const void *data, size_t len, uint64_t crc);
/* Base64 (RFC 4648, with padding) of len bytes into out, which holds
 * 4 * ((len + 2) / 3) + 1 bytes; returns the length written before the NUL. */
size_t util_base64_encode(const void *data, size_t len, char *out);
/* Decode text_len bytes of padded base64 into out (at most cap bytes);
 * *len_out receives the count.  0, or EINVAL (not base64, or longer than
 * cap) with out's contents unspecified. */
int util_base64_decode(const char *text, size_t text_len, unsigned char *out, size_t cap,
                       size_t *len_out);

/* ---- strings ---------------------------------------------------------- */

/* strdup that aborts on ENOMEM would hide errors; this one returns NULL. */
char *util_strndup(const char *s, size_t n);
/* Trim ASCII whitespace at both ends in place; returns s. */
char *util_trim(char *s);
/* Case-insensitive "does s start with prefix". */
bool util_istarts(const char *s, const char *prefix);
/* Copy the text s into out (n bytes, n > 0; always NUL-terminated) with
 * every control character (bytes below 0x20, and 0x7f) and the backslash
 * written as an escape: \n \r \t \\ or \xHH.  Text from outside (an S3
 * key, an ETag, a server's message, a command-line argument) then stays one
 * line, cannot drive a terminal, and reads back unambiguously ("\x1b" in
 * the output is the ESC byte, "\\x1b" the four characters).  Bytes from
 * 0x80 on (UTF-8) are kept.  What does not fit is cut, never inside an
 * escape.  Returns out. */
char *util_escape(char *out, size_t n, const char *s);
/* The size util_escape needs never to cut a text of `len` bytes. */
#define UTIL_ESCAPED_SIZE(len) (4 * (size_t)(len) + 1)
/* Whether s holds a control character other than a tab (a byte below 0x20,
 * or 0x7f): text that must never go into an HTTP header value, where CR
 * or LF would end the header and start another.  A tab may (HTTP allows
 * it inside a value, and it ends nothing). */
bool util_has_control(const char *s);
/* Constant-time-ish wipe of a secret before free. */
void util_wipe_free(char *secret);
/* A uniformly distributed random 64-bit number (not for cryptography). */
uint64_t util_random_u64(void);
/* Append `len` bytes of s to out, percent-encoding every byte but
 * A-Z a-z 0-9 - . _ ~ (and '/' when keep_slash) with upper-case hex, as
 * SigV4's UriEncode does.  0 or ENOMEM. */
int util_pct_encode(struct buf *out, const char *s, size_t len, bool keep_slash);
/* Decode the %XX escapes of s into *out (caller frees).  0, EINVAL (a
 * malformed escape), EILSEQ (an escape decodes to a NUL byte: a C string
 * would end there, so that "dir/a%00/../../x" would read as "dir/a") or
 * ENOMEM; *out is set only on 0. */
int util_pct_decode(const char *s, char **out);
/* Read a whole file (at most `max` bytes) into *out (caller frees).
 * 0, ENOENT, EACCES, EFBIG (larger than max), or another errno. */
int util_read_file(const char *path, size_t max, char **out, size_t *len_out);

/* ---- the memory this process may use (sysmem.c) ------------------------- */

/* The default of max_memory for a process that may use `avail` bytes: an
 * eighth of it, at least UTIL_MEM_DEFAULT_MIN, at most UTIL_MEM_DEFAULT_MAX
 * (UINT64_MAX, nothing known: the maximum). */
#define UTIL_MEM_DEFAULT_MIN (16ULL << 20)
#define UTIL_MEM_DEFAULT_MAX (256ULL << 20)
uint64_t util_mem_default(uint64_t avail);
/* The least memory limit of the cgroup this process runs in and of its
 * parents (v2 memory.max, v1 memory.limit_in_bytes), found through
 * /proc/self/cgroup; UINT64_MAX when there is none or nothing could be
 * read.  Files are read under `root` ("" for the real ones; tests give a
 * tree of their own) and treated as untrusted (sysmem.c says how). */
uint64_t util_cgroup_mem_limit(const char *root);
/* MemTotal of root/proc/meminfo in bytes, or UINT64_MAX. */
uint64_t util_mem_total(const char *root);
/* The smaller of the two. */
uint64_t util_mem_available(const char *root);

/* ---- file types (mime.c) ------------------------------------------------- */

/* A mime.types table: "type ext ext…" lines, '#' comments.  Lines whose
 * type is not "top/sub" of token characters, and extensions over 32
 * bytes or with blanks or control characters, are skipped; the first line
 * naming an extension wins.  *out is freed with util_mime_free.
 * 0 or ENOMEM. */
struct util_mime;
int util_mime_parse(const char *text, size_t len, struct util_mime **out);
/* util_mime_parse of a file of at most 4 MiB: 0, ENOMEM, or the errno of
 * reading it (ENOENT, EACCES, EFBIG…). */
int util_mime_load(const char *path, struct util_mime **out);
/* The type of a file name (a path: its last component) by its extension,
 * any case: "a/b.CSV" → "text/csv"; NULL when it has none or m is NULL.
 * The string lives as long as m. */
const char *util_mime_lookup(const struct util_mime *m, const char *name);
void util_mime_free(struct util_mime *m);

/* ---- private files ------------------------------------------------------ */

/* Make sure `path` is a directory no other user can plant files in or
 * change, as OpenSSH wants of its own files: a directory (not a symbolic
 * link to one), owned by this process's effective uid, not writable by its
 * group or by others.  With `make`, a missing one is created, mode 0700;
 * an existing one is never changed.  Only `path` itself is checked, not its
 * parents (a cache under the sticky /tmp is fine).  A refusal is logged as
 * one error line naming the path and why.  0; ELOOP (a symbolic link),
 * ENOTDIR (not a directory), EPERM (owned by another user, or writable by
 * group or others); ENOENT (missing, without `make`); or the errno of
 * mkdir or lstat. */
int util_private_dir(const char *path, bool make);
/* mkdir -p (for the cache directory): missing parents made with `mode`,
 * the last directory checked (or made) by util_private_dir().  0, or the
 * errno (ENOTDIR when a part is not a directory; EPERM or ELOOP when the
 * last is not private: logged). */
int util_make_dirs(const char *path, mode_t mode);

#endif
