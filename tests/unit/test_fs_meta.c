/* test_fs_meta.c — s3fs-compatible metadata, xattr encoding and name
 * checks of src/fs (meta.c); the name of an object version (path.c) and
 * the per-mount notes (once.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "fs/fs_private.h"

static void test_parse_time(void **state)
{
    (void)state;
    struct timespec t;
    assert_int_equal(fs_parse_time("1700000000", &t), 0);
    assert_int_equal(t.tv_sec, 1700000000);
    assert_int_equal(t.tv_nsec, 0);
    assert_int_equal(fs_parse_time("1700000000.5", &t), 0);
    assert_int_equal(t.tv_nsec, 500000000);
    assert_int_equal(fs_parse_time("1700000000.123456789123", &t), 0);
    assert_int_equal(t.tv_nsec, 123456789);
    assert_int_equal(fs_parse_time("", &t), EINVAL);
    assert_int_equal(fs_parse_time("12x", &t), EINVAL);
    assert_int_equal(fs_parse_time("12.", &t), EINVAL);
}

static void test_name_valid(void **state)
{
    (void)state;
    char long_name[257];
    memset(long_name, 'a', 256);
    long_name[256] = 0;
    assert_true(fs_name_valid("a b+%~;#?*é", strlen("a b+%~;#?*é")));
    assert_true(fs_name_valid(long_name, 255));
    assert_false(fs_name_valid(long_name, 256));
    assert_false(fs_name_valid("", 0));
    assert_false(fs_name_valid(".", 1));
    assert_false(fs_name_valid("..", 2));
    assert_true(fs_name_valid("...", 3));
    assert_false(fs_name_valid("a/b", 3));
}

static struct s3_meta meta_of[] = {
    {"mode", "33216"}, /* 0100700 */
    {"uid", "1000"},   {"gid", "1001"}, {"mtime", "1600000000.25"}, {"color", "blue"},
};

static void test_attr_from_head(void **state)
{
    (void)state;
    struct fs_config cfg;
    fs_config_defaults(&cfg);
    cfg.uid = 5;
    cfg.gid = 6;
    struct s3_object_info info = {.size = 42, .mtime = 1700000000, .meta = meta_of, .n_meta = 5};
    strcpy(info.etag, "\"e\"");
    struct fs_attr a;
    fs_attr_from_head(&cfg, &info, false, &a);
    assert_int_equal(a.mode, S_IFREG | 0700);
    assert_int_equal(a.uid, 1000);
    assert_int_equal(a.gid, 1001);
    assert_int_equal(a.size, 42);
    assert_int_equal(a.mtime.tv_sec, 1600000000);
    assert_int_equal(a.mtime.tv_nsec, 250000000);
    assert_true(a.has_meta);
    assert_string_equal(a.etag, "\"e\"");

    /* No metadata: the mount's defaults and Last-Modified. */
    info.n_meta = 0;
    fs_attr_from_head(&cfg, &info, false, &a);
    assert_int_equal(a.mode, S_IFREG | 0644);
    assert_int_equal(a.uid, 5);
    assert_int_equal(a.mtime.tv_sec, 1700000000);
    assert_false(a.has_meta);

    /* Forced owner and umask win over metadata. */
    cfg.force_uid = true;
    cfg.umask = 077;
    info.n_meta = 5;
    fs_attr_from_head(&cfg, &info, false, &a);
    assert_int_equal(a.uid, 5);
    assert_int_equal(a.gid, 1001);
    assert_int_equal(a.mode, S_IFREG | 0700);

    /* A symlink as s3fs stores it; a directory marker. */
    struct s3_meta lnk[] = {{"mode", "41471"}}; /* 0120777 */
    info.meta = lnk;
    info.n_meta = 1;
    fs_attr_from_head(&cfg, &info, false, &a);
    assert_true(S_ISLNK(a.mode));
    fs_attr_from_head(&cfg, &info, true, &a);
    assert_true(S_ISDIR(a.mode));
    assert_true(a.marker);
}

/* Old-style directory objects (issue 20): empty, and typed as a directory
 * by Content-Type or by x-amz-meta-mode; never an object with bytes. */
static void test_meta_old_dir(void **state)
{
    (void)state;
    char dir_mode[16];
    snprintf(dir_mode, sizeof(dir_mode), "%u", (unsigned)(S_IFDIR | 0755));
    struct s3_meta m_dir[] = {{"mode", dir_mode}};
    struct s3_meta m_file[] = {{"mode", "33188"}};
    struct s3_object_info info = {.size = 0, .content_type = "application/x-directory"};
    assert_true(fs_meta_old_dir(&info));
    info.content_type = "httpd/unix-directory";
    assert_true(fs_meta_old_dir(&info));
    info.content_type = "application/x-directory; charset=UTF-8";
    assert_true(fs_meta_old_dir(&info));
    info.size = 1; /* bytes a directory would hide */
    assert_false(fs_meta_old_dir(&info));
    info = (struct s3_object_info){.size = 0, .content_type = "binary/octet-stream"};
    assert_false(fs_meta_old_dir(&info));
    info.meta = m_dir;
    info.n_meta = 1;
    assert_true(fs_meta_old_dir(&info));
    info.meta = m_file;
    assert_false(fs_meta_old_dir(&info));
    info = (struct s3_object_info){.size = 0};
    assert_false(fs_meta_old_dir(&info)); /* an empty file */
}

static void test_meta_build_roundtrip(void **state)
{
    (void)state;
    struct fs_config cfg;
    fs_config_defaults(&cfg);
    struct fs_attr a = {.mode = S_IFREG | 0640, .uid = 7, .gid = 8};
    a.mtime.tv_sec = 1700000001;
    a.atime.tv_sec = 1700000002;
    a.ctime.tv_sec = 1700000003;
    a.ctime.tv_nsec = 5;
    struct s3_meta meta[FS_META_MAX];
    struct buf store = BUF_INIT;
    size_t n = fs_meta_build(&a, "x%7B%7D", meta, &store);
    assert_int_equal(n, 7);
    assert_string_equal(meta[0].name, "mode");
    assert_string_equal(meta[0].value, "33184");
    assert_string_equal(meta[1].value, "7");
    assert_string_equal(meta[3].value, "1700000001");
    assert_string_equal(meta[5].value, "1700000003.000000005");
    assert_string_equal(meta[6].name, "xattr");
    struct s3_object_info info = {.meta = meta, .n_meta = n};
    struct fs_attr b;
    fs_attr_from_head(&cfg, &info, false, &b);
    assert_int_equal(b.mode, a.mode);
    assert_int_equal(b.uid, 7);
    assert_int_equal(b.gid, 8);
    assert_int_equal(b.mtime.tv_sec, a.mtime.tv_sec);
    assert_int_equal(b.atime.tv_sec, a.atime.tv_sec);
    assert_int_equal(b.ctime.tv_nsec, 5);
    assert_int_equal(fs_meta_build(&a, NULL, meta, &store), 6);
    buf_free(&store);
}

static void test_xattr(void **state)
{
    (void)state;
    char *enc = NULL, *enc2 = NULL, *val = NULL, *names = NULL;
    size_t len;
    assert_int_equal(fs_xattr_get(NULL, "user.a", &val, &len), ENODATA);
    assert_int_equal(fs_xattr_set(NULL, "user.a", "v\0x", 3, 0, &enc), 0);
    assert_non_null(enc);
    /* s3fs's form: percent-encoded JSON with base64 values. */
    assert_string_equal(enc, "%7B%22user.a%22%3A%22dgB4%22%7D");
    assert_int_equal(fs_xattr_get(enc, "user.a", &val, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(val, "v\0x", 3);
    free(val);
    assert_int_equal(fs_xattr_set(enc, "user.a", "w", 1, XATTR_CREATE, &enc2), EEXIST);
    assert_int_equal(fs_xattr_set(enc, "user.b", "w", 1, XATTR_REPLACE, &enc2), ENODATA);
    assert_int_equal(fs_xattr_set(enc, "user.b", "", 0, XATTR_CREATE, &enc2), 0);
    assert_int_equal(fs_xattr_get(enc2, "user.b", &val, &len), 0);
    assert_int_equal(len, 0);
    free(val);
    assert_int_equal(fs_xattr_list(enc2, &names, &len), 0);
    assert_int_equal(len, strlen("user.a") + 1 + strlen("user.b") + 1);
    assert_string_equal(names, "user.a");
    assert_string_equal(names + 7, "user.b");
    free(names);
    free(enc);
    assert_int_equal(fs_xattr_set(enc2, "user.a", NULL, 0, 0, &enc), 0);
    free(enc2);
    assert_int_equal(fs_xattr_set(enc, "user.b", NULL, 0, 0, &enc2), 0);
    assert_null(enc2); /* nothing left: no header at all */
    assert_int_equal(fs_xattr_set(enc, "user.zz", NULL, 0, 0, &enc2), ENODATA);
    free(enc);
    assert_int_equal(fs_xattr_get("%7Bnot json", "user.a", &val, &len), EINVAL);
    /* Padding: 1 and 2 byte values. */
    assert_int_equal(fs_xattr_set(NULL, "user.p", "ab", 2, 0, &enc), 0);
    assert_int_equal(fs_xattr_get(enc, "user.p", &val, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(val, "ab", 2);
    free(val);
    free(enc);
}

/* The bytes of a version id are hashed into the names of gzip index files
 * on disk and in the bucket: they must never change. */
static void test_version_id(void **state)
{
    (void)state;
    struct fs fs = {0};
    fs.cfg.endpoint = "http://e";
    fs.cfg.bucket = "b";
    struct buf id = BUF_INIT, shared = BUF_INIT;
    assert_int_equal(fs_version_id(&fs, &id, "pre/a.gz", "\"t1\"", true), 0);
    assert_string_equal(id.data, "http://e\nb\npre/a.gz\n\"t1\"");
    assert_int_equal(fs_version_id(&fs, &shared, "pre/a.gz", "\"t1\"", false), 0);
    assert_string_equal(shared.data, "b\npre/a.gz\n\"t1\"");
    char hex[65];
    util_sha256_hex(id.data, id.len, hex);
    assert_memory_equal(hex, "e3807406b189c6cbb1cf32e4af488e81", 32);
    util_sha256_hex(shared.data, shared.len, hex);
    assert_memory_equal(hex, "4787d722b9e00607fe425c2a354711fa", 32);
    buf_free(&id);
    fs.cfg.endpoint = NULL; /* no endpoint: an empty first line */
    assert_int_equal(fs_version_id(&fs, &id, "k", "e", true), 0);
    assert_string_equal(id.data, "\nb\nk\ne");
    buf_free(&id);
    buf_free(&shared);
}

static void test_once(void **state)
{
    (void)state;
    struct fs a = {0}, b = {0};
    fs_once_init(&a.once);
    fs_once_init(&b.once);
    /* once per subject, kind and mount */
    assert_true(fs_once(&a, 'k', "x//y", UINT64_MAX));
    assert_false(fs_once(&a, 'k', "x//y", UINT64_MAX));
    assert_true(fs_once(&a, 'd', "x//y", UINT64_MAX));
    assert_true(fs_once(&b, 'k', "x//y", UINT64_MAX));
    assert_true(fs_once_noted(&a, 'k', "x//y"));
    assert_false(fs_once_noted(&a, 'n', "x//y"));
    /* a note that has run out is said again, and renewed */
    assert_true(fs_once(&a, 'x', "v", 0));
    assert_false(fs_once_noted(&a, 'x', "v"));
    assert_true(fs_once(&a, 'x', "v", 60000));
    assert_true(fs_once_noted(&a, 'x', "v"));
    assert_false(fs_once(&a, 'x', "v", 60000));
    fs_once_free(&a.once);
    fs_once_free(&b.once);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_time),     cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_attr_from_head), cmocka_unit_test(test_meta_build_roundtrip),
        cmocka_unit_test(test_xattr),          cmocka_unit_test(test_version_id),
        cmocka_unit_test(test_once),           cmocka_unit_test(test_meta_old_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
