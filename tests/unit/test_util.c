/* test_util.c — buffers, time parsing and file reading from src/util. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    assert_int_equal(util_parse_iso8601("2013-05-24T00:00:00+02:00", &t), EINVAL);
    assert_int_equal(util_parse_http_date("Fri, 24 May 2013 00:00:00 GMT", &t), 0);
    assert_int_equal(t, 1369353600);
    assert_int_equal(util_parse_http_date("garbage", &t), EINVAL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_trim_and_prefix),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
