/* test_retry.c — the retry policy: what is retried, the full-jitter bounds,
 * the retry budget, and errno mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "s3/s3_private.h"

static void test_retryable(void **state)
{
    (void)state;
    assert_true(s3_retryable(500, "InternalError", 0));
    assert_true(s3_retryable(503, "SlowDown", 0));
    assert_true(s3_retryable(502, "", 0));
    assert_true(s3_retryable(504, "", 0));
    assert_true(s3_retryable(400, "RequestTimeout", 0));
    assert_true(s3_retryable(200, "InternalError", 0)); /* error inside a 200 body */
    assert_true(s3_retryable(0, "", ECONNRESET));
    assert_true(s3_retryable(0, "", ECONNREFUSED));
    assert_true(s3_retryable(0, "", ETIMEDOUT));
    assert_false(s3_retryable(403, "AccessDenied", 0));
    assert_false(s3_retryable(403, "SignatureDoesNotMatch", 0));
    assert_false(s3_retryable(404, "NoSuchKey", 0));
    assert_false(s3_retryable(412, "PreconditionFailed", 0));
    assert_false(s3_retryable(400, "InvalidArgument", 0));
    assert_false(s3_retryable(0, "", EPROTO));  /* TLS refusal */
    assert_false(s3_retryable(0, "", ECANCELED));
}

static void test_backoff_full_jitter(void **state)
{
    (void)state;
    struct s3_retry_policy p = {5, 200, 20000};
    /* the ceiling doubles from base and stops at cap */
    assert_int_equal(s3_backoff_ms(&p, 1, UINT64_MAX - 0), UINT64_MAX % 201);
    uint64_t max1 = 0, max3 = 0, max20 = 0;
    for (uint64_t r = 0; r < 100000; r += 7) {
        uint64_t b1 = s3_backoff_ms(&p, 1, r * 2654435761u);
        uint64_t b3 = s3_backoff_ms(&p, 3, r * 2654435761u);
        uint64_t b20 = s3_backoff_ms(&p, 20, r * 2654435761u);
        max1 = b1 > max1 ? b1 : max1;
        max3 = b3 > max3 ? b3 : max3;
        max20 = b20 > max20 ? b20 : max20;
    }
    assert_true(max1 <= 200 && max1 > 150);
    assert_true(max3 <= 800 && max3 > 600);
    assert_true(max20 <= 20000 && max20 > 15000);
    assert_int_equal(s3_backoff_ms(&p, 2, 0), 0);
    struct s3_retry_policy z = {5, 0, 0};
    assert_int_equal(s3_backoff_ms(&z, 3, 12345), 0);
}

static void test_budget(void **state)
{
    (void)state;
    struct s3_retry_budget b;
    s3_budget_init(&b);
    int taken = 0;
    while (s3_budget_take(&b, S3_BUDGET_RETRY_COST))
        taken++;
    assert_int_equal(taken, S3_BUDGET_MAX / S3_BUDGET_RETRY_COST);
    assert_false(s3_budget_take(&b, 1));
    s3_budget_give(&b, 3);
    assert_false(s3_budget_take(&b, S3_BUDGET_RETRY_COST));
    assert_true(s3_budget_take(&b, 3));
    s3_budget_give(&b, 100000);
    assert_int_equal(b.tokens, S3_BUDGET_MAX);
    pthread_mutex_destroy(&b.mutex);
}

static void test_errno_mapping(void **state)
{
    (void)state;
    assert_int_equal(s3_status_to_errno(200, ""), 0);
    assert_int_equal(s3_status_to_errno(204, ""), 0);
    assert_int_equal(s3_status_to_errno(404, "NoSuchKey"), ENOENT);
    assert_int_equal(s3_status_to_errno(403, "AccessDenied"), EACCES);
    assert_int_equal(s3_status_to_errno(412, ""), ESTALE);
    assert_int_equal(s3_status_to_errno(501, ""), ENOSYS);
    assert_int_equal(s3_status_to_errno(405, ""), ENOTSUP);
    assert_int_equal(s3_status_to_errno(400, "InvalidArgument"), EINVAL);
    assert_int_equal(s3_status_to_errno(503, "SlowDown"), EIO);
    assert_int_equal(s3_status_to_errno(500, ""), EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retryable),
        cmocka_unit_test(test_backoff_full_jitter),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_errno_mapping),
    };
    return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
