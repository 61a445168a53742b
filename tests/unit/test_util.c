/* test_util.c — buffers, growable arrays, SHA-256 hex, time parsing, file
 * reading, metrics and log files, and private directories from src/util. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

static void test_buf(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_printf(&b, "%d,", i), 0);
    assert_int_equal(b.len, strlen(b.data));
    assert_memory_equal(b.data, "0,1,2,", 6);
    assert_string_equal(b.data + b.len - 4, "999,");
    assert_int_equal(buf_append(&b, "\0x", 2), 0);
    assert_int_equal(b.data[b.len], 0);
    buf_clear(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    char *s = buf_steal(&b);
    assert_string_equal(s, "");
    free(s);
    assert_null(b.data);
    s = buf_steal(&b); /* an empty buffer still yields a string */
    assert_string_equal(s, "");
    free(s);
}

static void test_dates(void **state)
{
    (void)state;
    int64_t t;
    assert_int_equal(util_parse_iso8601("2013-05-24T00:00:00Z", &t), 0);
    assert_int_equal(t, 1369353600);
    assert_int_equal(util_parse_iso8601("2013-05-24T00:00:00.123Z", &t), 0);
    assert_int_equal(t, 1369353600);
    assert_int_equal(util_parse_iso8601("yesterday", &t), EINVAL);
    assert_int_equal(util_parse_http_date("Fri, 24 May 2013 00:00:00 GMT", &t), 0);
    assert_int_equal(t, 1369353600);
    assert_int_equal(util_parse_http_date("garbage", &t), EINVAL);
}

/* Offsets as other servers write them (issue 17 item 8): each is the same
 * instant, 2013-05-24T00:00:00Z; one read as unknown once counted as 1970. */
static void test_dates_with_offsets(void **state)
{
    (void)state;
    static const char *const same[] = {
        "2013-05-24T00:00:00",
        "2013-05-24T00:00:00+00:00",
        "2013-05-24T02:00:00+02:00",
        "2013-05-24T02:00:00.5+0200",
        "2013-05-24T02:00:00+02",
        "2013-05-23T18:30:00-0530",
        "2013-05-23T18:30:00.123456-05:30",
        "2013-05-24T05:45:00+05:45",
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        int64_t t = -1;
        if (util_parse_iso8601(same[i], &t) != 0 || t != 1369353600)
            fail_msg("%s: got %lld", same[i], (long long)t);
    }
    static const char *const bad[] = {
        "2013-05-24T00:00:00+2",      "2013-05-24T00:00:00+02:",     "2013-05-24T00:00:00+02:0",
        "2013-05-24T00:00:00+020",    "2013-05-24T00:00:00+24:00",   "2013-05-24T00:00:00+02:60",
        "2013-05-24T00:00:00Zjunk",   "2013-05-24T00:00:00+02:00 ",  "2013-05-24T00:00:00+",
        "2013-05-24T00:00:00 +02:00", "2013-05-24T00:00:00+0200:00",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t t = 42;
        if (util_parse_iso8601(bad[i], &t) != EINVAL || t != 42)
            fail_msg("%s: accepted as %lld", bad[i], (long long)t);
    }
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/pailfs-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello\n", 6), 6);
    close(fd);
    char *data;
    size_t len;
    assert_int_equal(util_read_file(path, 100, &data, &len), 0);
    assert_int_equal(len, 6);
    assert_string_equal(data, "hello\n");
    free(data);
    assert_int_equal(util_read_file(path, 3, &data, &len), EFBIG);
    unlink(path);
    assert_int_equal(util_read_file(path, 100, &data, &len), ENOENT);
}

static void test_trim_and_prefix(void **state)
{
    (void)state;
    char s[] = " \t x y \n";
    assert_string_equal(util_trim(s), "x y");
    assert_true(util_istarts("X-Amz-Meta-Mode", "x-amz-meta-"));
    assert_false(util_istarts("x-amz", "x-amz-meta-"));
    enum log_level l;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOG_LVL_DEBUG);
    assert_int_equal(log_level_parse("loud", &l), EINVAL);
}

/* ---- untrusted text: escaping and control characters --------------------- */

/* Issue 17 item 7: keys with a newline or an escape sequence were logged
 * raw.  Every control character and the backslash come out escaped, UTF-8
 * stays, and a cut never splits an escape. */
static void test_escape(void **state)
{
    (void)state;
    char out[UTIL_ESCAPED_SIZE(64)];
    assert_string_equal(util_escape(out, sizeof(out), "a\nb\x1b[31mc"), "a\\nb\\x1b[31mc");
    assert_string_equal(util_escape(out, sizeof(out), "\r\t\x01\x7f\\x"), "\\r\\t\\x01\\x7f\\\\x");
    assert_string_equal(util_escape(out, sizeof(out), "caf\xc3\xa9 \"q\" 100%"),
                        "caf\xc3\xa9 \"q\" 100%");
    assert_string_equal(util_escape(out, sizeof(out), ""), "");
    /* the worst case fits UTIL_ESCAPED_SIZE exactly */
    char worst[17];
    memset(worst, 0x1b, 16);
    worst[16] = '\0';
    char big[UTIL_ESCAPED_SIZE(16)];
    util_escape(big, sizeof(big), worst);
    assert_int_equal(strlen(big), 64);
    /* cut whole: 5 bytes hold "ab" and not half of "\x01" */
    char small[5];
    assert_string_equal(util_escape(small, sizeof(small), "ab\001cd"), "ab");
    assert_string_equal(util_escape(small, 1, "abc"), "");
    assert_string_equal(util_escape(small, sizeof(small), "abcdef"), "abcd");
}

static void test_has_control(void **state)
{
    (void)state;
    assert_false(util_has_control("\"d41d8cd98f00b204e9800998ecf8427e\""));
    assert_false(util_has_control("text/plain; charset=utf-8\tx\xc3\xa9"));
    assert_false(util_has_control(""));
    assert_true(util_has_control("\"abc\"\r\nX-Injected: 1"));
    assert_true(util_has_control("a\nb"));
    assert_true(util_has_control("a\rb"));
    assert_true(util_has_control("\x1b[2J"));
    assert_true(util_has_control("del\x7f"));
}

/* %00 decodes to a NUL, which a C string cannot hold: cut there, the key
 * "dir/a%00/../../x" would read as "dir/a".  EILSEQ, not a short string. */
static void test_pct_decode(void **state)
{
    (void)state;
    char *d = NULL;
    assert_int_equal(util_pct_decode("a%20b%2Bc%C3%A9+", &d), 0);
    assert_string_equal(d, "a b+c\xc3\xa9+");
    free(d);
    d = NULL;
    assert_int_equal(util_pct_decode("dir/a%00/../../x", &d), EILSEQ);
    assert_null(d);
    assert_int_equal(util_pct_decode("%00", &d), EILSEQ);
    assert_int_equal(util_pct_decode("bad%2", &d), EINVAL);
    assert_int_equal(util_pct_decode("bad%zz", &d), EINVAL);
    assert_int_equal(util_pct_decode("bad%", &d), EINVAL);
    assert_null(d);
    assert_int_equal(util_pct_decode("", &d), 0);
    assert_string_equal(d, "");
    free(d);
}

/* ---- metrics ------------------------------------------------------------ */

static struct metrics_series t_series[] = {
    {.name = "t_requests_total",
     .help = "Requests.",
     .kind = METRICS_COUNTER,
     .labels = "op=\"Get\"",
     .sparse = true},
    {.name = "t_bytes", .help = "Bytes held.", .kind = METRICS_GAUGE},
    {.name = "t_requests_total",
     .help = "Requests.",
     .kind = METRICS_COUNTER,
     .labels = "op=\"Put\"",
     .sparse = true},
};

static void test_metrics_format(void **state)
{
    (void)state;
    metrics_register(t_series, 3);
    metrics_register(t_series, 3); /* a second time: no duplicates */
    struct buf b = BUF_INIT;
    assert_int_equal(metrics_format(&b), 0);
    /* sparse series at 0 are left out; HELP and TYPE stay */
    assert_string_equal(b.data, "# HELP t_requests_total Requests.\n"
                                "# TYPE t_requests_total counter\n"
                                "# HELP t_bytes Bytes held.\n"
                                "# TYPE t_bytes gauge\n"
                                "t_bytes 0\n");
    metrics_add(&t_series[2], 3);
    metrics_add(&t_series[0], 1);
    metrics_add(&t_series[1], 4096);
    metrics_add(&t_series[1], -1024);
    buf_clear(&b);
    assert_int_equal(metrics_format(&b), 0);
    /* one block per name, even when its series were registered apart */
    assert_string_equal(b.data, "# HELP t_requests_total Requests.\n"
                                "# TYPE t_requests_total counter\n"
                                "t_requests_total{op=\"Get\"} 1\n"
                                "t_requests_total{op=\"Put\"} 3\n"
                                "# HELP t_bytes Bytes held.\n"
                                "# TYPE t_bytes gauge\n"
                                "t_bytes 3072\n");
    metrics_set(&t_series[1], 7);
    assert_int_equal(metrics_get(&t_series[1]), 7);

    char dir[] = "/tmp/pailfs-metrics-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/m.prom", dir);
    assert_int_equal(metrics_write_file(path), 0);
    char *data;
    size_t len;
    assert_int_equal(util_read_file(path, 1 << 20, &data, &len), 0);
    buf_clear(&b);
    metrics_format(&b);
    assert_string_equal(data, b.data);
    free(data);
    unlink(path);
    char bad[80];
    snprintf(bad, sizeof(bad), "%s/no/m.prom", dir);
    assert_int_equal(metrics_write_file(bad), ENOENT);

    /* the writer thread writes at once and at stop */
    assert_int_equal(metrics_writer_start(path, 3600), 0);
    assert_int_equal(metrics_writer_start(path, 3600), EALREADY);
    metrics_add(&t_series[0], 41);
    metrics_writer_stop();
    assert_int_equal(util_read_file(path, 1 << 20, &data, &len), 0);
    assert_non_null(strstr(data, "t_requests_total{op=\"Get\"} 42\n"));
    free(data);
    unlink(path);
    rmdir(dir);
    buf_free(&b);
}

/* ---- the log file -------------------------------------------------------- */

static void test_log_file_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/pailfs-log-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64], rotated[64];
    snprintf(path, sizeof(path), "%s/p.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/p.log.1", dir);
    assert_int_equal(log_reopen(), EINVAL); /* no file yet */
    assert_int_equal(log_use_file(path), 0);
    log_set_level(LOG_LVL_INFO);
    log_error("first %d", 1);
    assert_int_equal(rename(path, rotated), 0);
    log_warn("second");
    assert_int_equal(log_reopen_on_signal(SIGUSR1), 0);
    assert_int_equal(raise(SIGUSR1), 0);
    char *data = NULL;
    size_t len;
    for (int i = 0; i < 500 && util_read_file(path, 1 << 20, &data, &len) != 0; i++)
        util_sleep_ms(10);
    log_reopen_stop();
    log_info("third");
    free(data);
    assert_int_equal(util_read_file(rotated, 1 << 20, &data, &len), 0);
    /* time stamp, name, level, message; one line each */
    assert_non_null(strstr(data, "Z pailfs error: first 1\n"));
    assert_non_null(strstr(data, "Z pailfs warn: second\n"));
    assert_null(strstr(data, "third"));
    assert_int_equal(data[4], '-');
    free(data);
    assert_int_equal(util_read_file(path, 1 << 20, &data, &len), 0);
    assert_non_null(strstr(data, "pailfs info: log file "));
    assert_non_null(strstr(data, " reopened\n"));
    assert_non_null(strstr(data, "Z pailfs info: third\n"));
    assert_null(strstr(data, "second"));
    free(data);
    unlink(path);
    unlink(rotated);
    rmdir(dir);
}

/* ---- files no other user may plant (issue 17 item 6) --------------------- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void assert_file_is(const char *path, const char *text)
{
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(util_read_file(path, 1 << 20, &data, &len), 0);
    assert_string_equal(data, text);
    free(data);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_private_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/pailfs-priv-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char d[64], slash[64], link[64], file[64];
    snprintf(d, sizeof(d), "%s/d", dir);
    snprintf(slash, sizeof(slash), "%s/d//", dir);
    snprintf(link, sizeof(link), "%s/link", dir);
    snprintf(file, sizeof(file), "%s/file", dir);
    struct stat st;

    /* missing: ENOENT without make, nothing made; made 0700 with it */
    assert_int_equal(util_private_dir(d, false), ENOENT);
    assert_int_equal(lstat(d, &st), -1);
    mode_t old = umask(0);
    assert_int_equal(util_private_dir(d, true), 0);
    umask(old);
    assert_int_equal(lstat(d, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(util_private_dir(d, false), 0);
    assert_int_equal(util_private_dir(slash, true), 0);

    /* readable by others is fine (not asked); writable is not, and it is
     * never changed */
    assert_int_equal(chmod(d, 0755), 0);
    assert_int_equal(util_private_dir(d, true), 0);
    assert_int_equal(chmod(d, 0777), 0);
    assert_int_equal(util_private_dir(d, true), EPERM);
    assert_int_equal(chmod(d, 01777), 0); /* sticky, like /tmp itself */
    assert_int_equal(util_private_dir(d, true), EPERM);
    assert_int_equal(chmod(d, 0770), 0);
    assert_int_equal(util_private_dir(slash, false), EPERM);
    assert_int_equal(lstat(d, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0770);
    assert_int_equal(chmod(d, 0700), 0);

    /* owned by another user (the tests run as root, which can chown) */
    if (geteuid() == 0) {
        assert_int_equal(chown(d, 65534, 65534), 0);
        assert_int_equal(util_private_dir(d, true), EPERM);
        assert_int_equal(chown(d, 0, 0), 0);
        assert_int_equal(util_private_dir(d, true), 0);
    }

    /* a symbolic link to a private directory, with or without a slash */
    assert_int_equal(symlink(d, link), 0);
    assert_int_equal(util_private_dir(link, true), ELOOP);
    char link_slash[70];
    snprintf(link_slash, sizeof(link_slash), "%s/", link);
    assert_int_equal(util_private_dir(link_slash, false), ELOOP);

    /* not a directory; under a file */
    write_text(file, "x");
    assert_int_equal(util_private_dir(file, true), ENOTDIR);
    char under[80];
    snprintf(under, sizeof(under), "%s/x", file);
    assert_int_equal(util_private_dir(under, true), ENOTDIR);

    unlink(file);
    unlink(link);
    rmdir(d);
    rmdir(dir);
}

/* The temporary file was "<path>.tmp.<pid>", opened O_CREAT|O_TRUNC: a link
 * planted at that name, in a shared directory, truncated and overwrote
 * whatever it pointed at. */
static void test_metrics_tmp_never_follows(void **state)
{
    (void)state;
    char dir[] = "/tmp/pailfs-mtmp-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64], victim[64], planted[96];
    snprintf(path, sizeof(path), "%s/m.prom", dir);
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    snprintf(planted, sizeof(planted), "%s.tmp.%ld", path, (long)getpid());
    write_text(victim, "precious\n");
    assert_int_equal(symlink(victim, planted), 0);
    assert_int_equal(metrics_write_file(path), 0);
    assert_file_is(victim, "precious\n");
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(lstat(planted, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    /* a link planted at the final name is replaced, not followed */
    unlink(path);
    assert_int_equal(symlink(victim, path), 0);
    assert_int_equal(metrics_write_file(path), 0);
    assert_file_is(victim, "precious\n");
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(count_entries(dir), 3); /* no temporary file left */
    unlink(path);
    unlink(planted);
    unlink(victim);
    rmdir(dir);
}

/* The log file was opened without O_NOFOLLOW: lines went to whatever a
 * link planted at its name pointed at. */
static void test_log_file_never_follows(void **state)
{
    (void)state;
    char dir[] = "/tmp/pailfs-llnk-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64], victim[64];
    snprintf(path, sizeof(path), "%s/p.log", dir);
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    write_text(victim, "precious\n");
    assert_int_equal(symlink(victim, path), 0);
    assert_int_equal(log_use_file(path), ELOOP);
    log_error("a line that must not reach the victim");
    assert_file_is(victim, "precious\n");
    unlink(path);
    unlink(victim);
    rmdir(dir);
}

/* What a log line quotes (a key, a server's message) cannot start another
 * line or drive the terminal: the whole message is escaped. */
static void test_log_line_escaped(void **state)
{
    (void)state;
    char dir[] = "/tmp/pailfs-log-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/e.log", dir);
    assert_int_equal(log_use_file(path), 0);
    log_set_level(LOG_LVL_WARN);
    log_warn("listing: skipping key \"%s\": %s", "k\nfake 2026 pailfs error: x\x1b[31m", "why");
    char *data = NULL;
    size_t len;
    assert_int_equal(util_read_file(path, 1 << 20, &data, &len), 0);
    assert_non_null(strstr(data,
                           " pailfs warn: listing: skipping key \"k\\nfake 2026 pailfs error: "
                           "x\\x1b[31m\": why\n"));
    assert_null(memchr(data, 0x1b, len));
    assert_int_equal(strchr(data, '\n') - data, (long)len - 1); /* one line */
    free(data);
    unlink(path);
    rmdir(dir);
}

/* util_grow: doubling from 16, the elements kept, a large jump at once. */
static void test_grow(void **state)
{
    (void)state;
    uint32_t *a = NULL;
    size_t cap = 0;
    assert_int_equal(util_grow((void **)&a, &cap, 0, sizeof(*a)), 0);
    assert_null(a); /* nothing needed, nothing allocated */
    assert_int_equal(cap, 0);
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal(util_grow((void **)&a, &cap, i + 1, sizeof(*a)), 0);
        assert_true(cap >= i + 1);
        a[i] = i * 7;
    }
    assert_int_equal(cap, 1024); /* 16, 32, ... 1024 */
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(a[i], i * 7);
    uint32_t *before = a;
    assert_int_equal(util_grow((void **)&a, &cap, 1024, sizeof(*a)), 0);
    assert_ptr_equal(a, before); /* room enough: untouched */
    assert_int_equal(util_grow((void **)&a, &cap, 5000, sizeof(*a)), 0);
    assert_int_equal(cap, 8192); /* doubled until it holds 5000 */
    assert_int_equal(a[999], 999 * 7);
    free(a);
}

/* util_grow refuses a size that would wrap instead of allocating a small
 * block, and leaves the array as it was. */
static void test_grow_overflow(void **state)
{
    (void)state;
    char *a = NULL;
    size_t cap = 0;
    assert_int_equal(util_grow((void **)&a, &cap, 10, 1), 0);
    assert_int_equal(cap, 16);
    char *before = a;
    /* elements of 2^32 bytes: 2^32 of them would wrap a 64-bit size_t */
    assert_int_equal(util_grow((void **)&a, &cap, (size_t)1 << 32, (size_t)1 << 32), ENOMEM);
    assert_ptr_equal(a, before);
    assert_int_equal(cap, 16);
    /* a count whose doubling would wrap */
    assert_int_equal(util_grow((void **)&a, &cap, SIZE_MAX, 1), ENOMEM);
    assert_int_equal(util_grow((void **)&a, &cap, SIZE_MAX / 2 + 2, 1), ENOMEM);
    assert_ptr_equal(a, before);
    assert_int_equal(cap, 16);
    free(a);
}

/* util_sha256_hex: the FIPS 180-2 vectors, lower case, NUL-terminated. */
static void test_sha256_hex(void **state)
{
    (void)state;
    char hex[65];
    memset(hex, 'x', sizeof(hex));
    util_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    util_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    util_sha256_hex("a\0b", 3, hex); /* bytes, not a C string */
    assert_string_equal(hex, "59b271ae1bbcb1d31d41929817f4b16fb439eb4f31520b5ad1d5ce98920a7138");
}

/* mime.types: types by extension, any case, first line wins, bad lines
 * and oversized extensions skipped. */
static void test_mime_types(void **state)
{
    (void)state;
    static const char text[] = "# comment\n"
                               "text/csv\t\tcsv\n"
                               "application/x-first  dup Two\n"
                               "application/x-second dup\n"
                               "not-a-type  bad\n"
                               "text/\x01x  ctl\n"
                               "a/b  this-extension-is-far-too-long-to-be-kept-here\n"
                               "image/png png # trailing comment\n"
                               "text/plain";
    struct util_mime *m = NULL;
    assert_int_equal(util_mime_parse(text, sizeof(text) - 1, &m), 0);
    assert_string_equal(util_mime_lookup(m, "a.csv"), "text/csv");
    assert_string_equal(util_mime_lookup(m, "dir.d/B.CSV"), "text/csv");
    assert_string_equal(util_mime_lookup(m, "x.dup"), "application/x-first");
    assert_string_equal(util_mime_lookup(m, "x.two"), "application/x-first");
    assert_string_equal(util_mime_lookup(m, "p.png"), "image/png");
    assert_null(util_mime_lookup(m, "x.bad"));
    assert_null(util_mime_lookup(m, "x.ctl"));
    assert_null(util_mime_lookup(m, "x.this-extension-is-far-too-long-to-be-kept-here"));
    assert_null(util_mime_lookup(m, "noext"));
    assert_null(util_mime_lookup(m, ".csv")); /* a dot file has no extension */
    assert_null(util_mime_lookup(m, "a.csv/"));
    assert_null(util_mime_lookup(m, "csv.d/file"));
    assert_null(util_mime_lookup(NULL, "a.csv"));
    util_mime_free(m);
    assert_int_equal(util_mime_load("/nonexistent/mime.types", &m), ENOENT);
}

/* ---- streaming copies (issue 21) ------------------------------------------ */

/* util_copy_stream copies exactly n bytes, whatever the alignment of either
 * side and whatever is left after the 64-byte steps, and writes nothing
 * before or after the destination range. */
static void test_copy_stream(void **state)
{
    (void)state;
    enum { MAX = 70000, PAD = 64 };
    unsigned char *src = malloc(MAX + 32), *dst = malloc(MAX + 2 * PAD + 32);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < MAX + 32; i++)
        src[i] = (unsigned char)(i * 131 + 7);
    static const size_t sizes[] = {0,    1,    15,   16,   63,   64,    65,    4095,
                                   4096, 4097, 4111, 4160, 4161, 65536, 65557, 69999};
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        for (size_t doff = 0; doff < 17; doff += 3) {
            for (size_t soff = 0; soff < 17; soff += 5) {
                size_t n = sizes[si];
                memset(dst, 0xa5, MAX + 2 * PAD + 32);
                util_copy_stream(dst + PAD + doff, src + soff, n);
                if (n)
                    assert_memory_equal(dst + PAD + doff, src + soff, n);
                for (size_t i = 0; i < PAD + doff; i++)
                    assert_int_equal(dst[i], 0xa5);
                for (size_t i = PAD + doff + n; i < MAX + 2 * PAD + 32; i++)
                    assert_int_equal(dst[i], 0xa5);
            }
        }
    }
    free(src);
    free(dst);
}

/* ---- checksums and base64 (issue 20) ------------------------------------ */

static void test_crc32c_vectors(void **state)
{
    (void)state;
    /* the check value of CRC-32C: ISA-L's convention, then S3's */
    assert_int_equal(util_crc32c("123456789", 9, 0), 0x58e3fa20u);
    assert_int_equal(~util_crc32c("123456789", 9, ~0u), 0xe3069283u);
    /* continued in pieces, the same value */
    uint32_t c = util_crc32c("1234", 4, ~0u);
    assert_int_equal(~util_crc32c("56789", 5, c), 0xe3069283u);
    /* RFC 3720 B.4: 32 bytes of zeros */
    unsigned char zeros[32] = {0};
    assert_int_equal(~util_crc32c(zeros, 32, ~0u), 0x8a9136aau);
    assert_int_equal(~util_crc32c("", 0, ~0u), 0u);
}

static void test_crc64nvme_vectors(void **state)
{
    (void)state;
    assert_true(util_crc64nvme("123456789", 9, 0) == 0xae8b14860a799888ULL);
    uint64_t c = util_crc64nvme("12345", 5, 0);
    assert_true(util_crc64nvme("6789", 4, c) == 0xae8b14860a799888ULL);
    assert_true(util_crc64nvme("", 0, 0) == 0);
    /* longer than the 8-byte steps, with a tail: same as byte by byte */
    char buf[1000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (char)(i * 7 + 3);
    uint64_t whole = util_crc64nvme(buf, sizeof(buf), 0), bytes = 0;
    for (size_t i = 0; i < sizeof(buf); i++)
        bytes = util_crc64nvme(buf + i, 1, bytes);
    assert_true(whole == bytes);
}

static void test_base64(void **state)
{
    (void)state;
    char out[64];
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(util_base64_encode(plain[i], strlen(plain[i]), out), strlen(enc[i]));
        assert_string_equal(out, enc[i]);
        unsigned char back[16];
        size_t n = 99;
        assert_int_equal(util_base64_decode(enc[i], strlen(enc[i]), back, sizeof(back), &n), 0);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(back, plain[i], n);
    }
    unsigned char b[8];
    size_t n;
    assert_int_equal(util_base64_decode("Zm9", 3, b, sizeof(b), &n), EINVAL);      /* length */
    assert_int_equal(util_base64_decode("Zm9*", 4, b, sizeof(b), &n), EINVAL);     /* alphabet */
    assert_int_equal(util_base64_decode("Z===", 4, b, sizeof(b), &n), EINVAL);     /* padding */
    assert_int_equal(util_base64_decode("Zg==Zg==", 8, b, sizeof(b), &n), EINVAL); /* inner pad */
    assert_int_equal(util_base64_decode("Zm9vYmFy", 8, b, 5, &n), EINVAL);         /* too long */
}

/* ---- sysmem.c: the default of max_memory --------------------------------- */

/* Write `text` to root/rel, making its directories. */
static void put_file(const char *root, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Write `len` bytes (NULs allowed) to root/rel, which put_file made. */
static void put_bytes(const char *root, const char *rel, const char *bytes, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

static void rm_tree(const char *root)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void test_mem_default_rule(void **state)
{
    (void)state;
    const uint64_t M = 1ULL << 20, G = 1ULL << 30;
    assert_int_equal(util_mem_default(0), 16 * M);           /* the floor */
    assert_int_equal(util_mem_default(100 * M), 16 * M);     /* 12.5M: the floor */
    assert_int_equal(util_mem_default(1 * G), 128 * M);      /* an eighth */
    assert_int_equal(util_mem_default(2 * G), 256 * M);      /* an eighth, at the ceiling */
    assert_int_equal(util_mem_default(64 * G), 256 * M);     /* the ceiling */
    assert_int_equal(util_mem_default(UINT64_MAX), 256 * M); /* nothing known */
}

static void test_cgroup_v2_limit(void **state)
{
    (void)state;
    char root[] = "/tmp/pailfs-cg-XXXXXX";
    assert_non_null(mkdtemp(root));
    put_file(root, "proc/self/cgroup", "0::/job.slice/pailfs.scope\n");
    put_file(root, "proc/meminfo", "MemTotal:       16307336 kB\nMemFree: 1 kB\n");
    put_file(root, "sys/fs/cgroup/job.slice/pailfs.scope/memory.max", "2147483648\n");
    put_file(root, "sys/fs/cgroup/job.slice/memory.max", "max\n");
    assert_int_equal(util_cgroup_mem_limit(root), 2ULL << 30);
    assert_int_equal(util_mem_total(root), 16307336ULL << 10);
    assert_int_equal(util_mem_available(root), 2ULL << 30);
    assert_int_equal(util_mem_default(util_mem_available(root)), 256ULL << 20);
    /* a parent's smaller limit applies to its children */
    put_file(root, "sys/fs/cgroup/job.slice/memory.max", "1073741824");
    assert_int_equal(util_cgroup_mem_limit(root), 1ULL << 30);
    /* no limit anywhere: the machine's memory */
    put_file(root, "sys/fs/cgroup/job.slice/memory.max", "max\n");
    put_file(root, "sys/fs/cgroup/job.slice/pailfs.scope/memory.max", "max\n");
    assert_int_equal(util_cgroup_mem_limit(root), UINT64_MAX);
    assert_int_equal(util_mem_available(root), 16307336ULL << 10);
    rm_tree(root);
}

static void test_cgroup_v1_limit(void **state)
{
    (void)state;
    char root[] = "/tmp/pailfs-cg-XXXXXX";
    assert_non_null(mkdtemp(root));
    put_file(root, "proc/self/cgroup", "12:pids:/x\n4:cpu,memory:/docker/abc\n1:name=systemd:/\n");
    put_file(root, "proc/meminfo", "MemTotal: 4194304 kB\n");
    put_file(root, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "536870912\n");
    put_file(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    assert_int_equal(util_cgroup_mem_limit(root), 512ULL << 20);
    assert_int_equal(util_mem_default(util_mem_available(root)), 64ULL << 20);
    rm_tree(root);
}

/* What the files say is data: anything odd adds no limit, and never
 * leads outside the cgroup tree. */
static void test_cgroup_untrusted(void **state)
{
    (void)state;
    char root[] = "/tmp/pailfs-cg-XXXXXX";
    assert_non_null(mkdtemp(root));
    put_file(root, "sys/fs/cgroup/memory.max", "1048576\n"); /* where ".." would lead */
    put_file(root, "sys/fs/cgroup/ok/memory.max", "1048576\n");
    const char *paths[] = {"0::/a/../..\n", "0::/a/./b\n", "0::relative\n", "0::\n",
                           "0::/a\x01z\n",  "garbage\n",   "0:/ok\n",       ""};
    for (size_t i = 0; i < sizeof(paths) / sizeof(*paths); i++) {
        put_file(root, "proc/self/cgroup", paths[i]);
        if (util_cgroup_mem_limit(root) != UINT64_MAX)
            fail_msg("%s: a limit was found", paths[i]);
    }
    put_file(root, "proc/self/cgroup", "0::/ok\n");
    assert_int_equal(util_cgroup_mem_limit(root), 1048576);
    /* a NUL byte anywhere: not text, no limit (each of the three files) */
    put_bytes(root, "proc/self/cgroup", "0::/ok\n\0\n", 9);
    assert_int_equal(util_cgroup_mem_limit(root), UINT64_MAX);
    put_file(root, "proc/self/cgroup", "0::/ok\n");
    put_bytes(root, "sys/fs/cgroup/ok/memory.max", "1048576\0\n", 9);
    assert_int_equal(util_cgroup_mem_limit(root), UINT64_MAX);
    put_bytes(root, "proc/meminfo", "MemTotal: 4 kB\n\0\n", 17);
    assert_int_equal(util_mem_total(root), UINT64_MAX);
    put_file(root, "proc/meminfo", "MemTotal: 4 kB\n");
    assert_int_equal(util_mem_total(root), 4096);
    const char *values[] = {"12abc\n",    "-5\n",  " \n",        "99999999999999999999999\n",
                            "0x100000\n", "1e9\n", "1048576 2\n"};
    for (size_t i = 0; i < sizeof(values) / sizeof(*values); i++) {
        put_file(root, "sys/fs/cgroup/ok/memory.max", values[i]);
        if (util_cgroup_mem_limit(root) != UINT64_MAX)
            fail_msg("memory.max %s: taken as a limit", values[i]);
    }
    const char *meminfo[] = {"MemTotal: lots kB\n", "MemTotal: 100 MB\n", "Free: 1 kB\n",
                             "XMemTotal: 100 kB\n", "MemTotal: 99999999999999999999 kB\n"};
    for (size_t i = 0; i < sizeof(meminfo) / sizeof(*meminfo); i++) {
        put_file(root, "proc/meminfo", meminfo[i]);
        if (util_mem_total(root) != UINT64_MAX)
            fail_msg("meminfo %s: taken", meminfo[i]);
    }
    rm_tree(root);
    /* nothing there at all */
    assert_int_equal(util_mem_available("/nonexistent-pailfs-root"), UINT64_MAX);
}

/* util_deadline_ms: now (CLOCK_REALTIME) plus ms, tv_nsec normalised, for
 * amounts that carry into the seconds and ones that do not. */
static void test_deadline_ms(void **state)
{
    (void)state;
    static const uint64_t amounts[] = {0, 1, 20, 999, 1000, 1001, 1999, 250000, 3600u * 1000u};
    for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]); i++) {
        struct timespec before, after;
        clock_gettime(CLOCK_REALTIME, &before);
        struct timespec d = util_deadline_ms(amounts[i]);
        clock_gettime(CLOCK_REALTIME, &after);
        assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
        int64_t d_ns = (int64_t)d.tv_sec * 1000000000LL + d.tv_nsec;
        int64_t lo = (int64_t)before.tv_sec * 1000000000LL + before.tv_nsec;
        int64_t hi = (int64_t)after.tv_sec * 1000000000LL + after.tv_nsec;
        int64_t ms_ns = (int64_t)amounts[i] * 1000000LL;
        assert_true(d_ns >= lo + ms_ns);
        assert_true(d_ns <= hi + ms_ns);
    }
}

struct waker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool woken;
};

static void *wake_soon(void *arg)
{
    struct waker *w = arg;
    util_sleep_ms(20);
    pthread_mutex_lock(&w->lock);
    w->woken = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* util_cond_wait_ms: ETIMEDOUT after the time when nobody signals (not
 * before it, nor seconds after); 0, long before its time, when another
 * thread signals. */
static void test_cond_wait_ms(void **state)
{
    (void)state;
    struct waker w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    pthread_mutex_lock(&w.lock);
    uint64_t t0 = util_now_ms();
    int rc;
    do /* a spurious wake-up returns 0 early: wait again, as callers do */
        rc = util_cond_wait_ms(&w.cond, &w.lock, 120);
    while (rc == 0 && util_now_ms() - t0 < 120);
    uint64_t took = util_now_ms() - t0;
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(took >= 119); /* the two clocks' milliseconds may round apart */
    assert_true(took < 2000);

    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wake_soon, &w), 0);
    t0 = util_now_ms();
    rc = 0;
    while (!w.woken && rc == 0)
        rc = util_cond_wait_ms(&w.cond, &w.lock, 10000);
    took = util_now_ms() - t0;
    pthread_mutex_unlock(&w.lock);
    pthread_join(th, NULL);
    assert_int_equal(rc, 0);
    assert_true(w.woken);
    assert_true(took < 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_mime_types),
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_grow_overflow),
        cmocka_unit_test(test_sha256_hex),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_dates_with_offsets),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_trim_and_prefix),
        cmocka_unit_test(test_metrics_format),
        cmocka_unit_test(test_log_file_reopen),
        cmocka_unit_test(test_private_dir),
        cmocka_unit_test(test_metrics_tmp_never_follows),
        cmocka_unit_test(test_log_file_never_follows),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_has_control),
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_log_line_escaped),
        cmocka_unit_test(test_copy_stream),
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_deadline_ms),
        cmocka_unit_test(test_cond_wait_ms),
        cmocka_unit_test(test_crc64nvme_vectors),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_mem_default_rule),
        cmocka_unit_test(test_cgroup_v2_limit),
        cmocka_unit_test(test_cgroup_v1_limit),
        cmocka_unit_test(test_cgroup_untrusted),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
