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
    assert_false(s3_retryable(0, "", EPROTO)); /* TLS refusal */
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
    /* a body S3 received damaged: a failed write, not a bad request */
    assert_int_equal(s3_status_to_errno(400, "BadDigest"), EIO);
    assert_int_equal(s3_status_to_errno(400, "XAmzContentSHA256Mismatch"), EIO);
    assert_int_equal(s3_status_to_errno(400, "InvalidRequest"), EINVAL);
    assert_false(s3_retryable(400, "BadDigest", 0));
    assert_int_equal(s3_status_to_errno(403, "AccessDenied"), EACCES);
    assert_int_equal(s3_status_to_errno(412, ""), ESTALE);
    assert_int_equal(s3_status_to_errno(501, ""), ENOSYS);
    assert_int_equal(s3_status_to_errno(405, ""), ENOTSUP);
    assert_int_equal(s3_status_to_errno(400, "InvalidArgument"), EINVAL);
    assert_int_equal(s3_status_to_errno(503, "SlowDown"), EIO);
    assert_int_equal(s3_status_to_errno(500, ""), EIO);
}

/* 403 InvalidObjectState (an archived object) is ENODATA, not EACCES. */
static void test_archived_errno(void **state)
{
    (void)state;
    assert_int_equal(s3_status_to_errno(403, "InvalidObjectState"), ENODATA);
    assert_int_equal(s3_status_to_errno(403, "AccessDenied"), EACCES);
    assert_int_equal(s3_status_to_errno(403, ""), EACCES);
}

/* What a new object or a copy asks for: the rule of struct s3_put_opts. */
static void test_policy_effective(void **state)
{
    (void)state;
    const struct s3_object_policy none = {0};
    const struct s3_object_policy kms = {.sse = "aws:kms",
                                         .sse_kms_key_id = "K1",
                                         .sse_bucket_key = true,
                                         .storage_class = "STANDARD_IA"};
    const struct s3_object_policy mount_kms = {.sse = "aws:kms", .storage_class = "GLACIER_IR"};
    const struct s3_object_policy mount_aes = {.sse = "AES256"};
    /* a new object: the mount's */
    struct s3_object_policy p = s3_policy_effective(&mount_kms, NULL);
    assert_string_equal(p.sse, "aws:kms");
    assert_null(p.sse_kms_key_id);
    assert_string_equal(p.storage_class, "GLACIER_IR");
    /* no sse= on the mount: the source's encryption, key and class kept */
    p = s3_policy_effective(&none, &kms);
    assert_string_equal(p.sse, "aws:kms");
    assert_string_equal(p.sse_kms_key_id, "K1");
    assert_true(p.sse_bucket_key);
    assert_string_equal(p.storage_class, "STANDARD_IA");
    /* the mount's aws:kms without a key keeps the source's key; the
     * source's class wins over the mount's (which is for new objects) */
    p = s3_policy_effective(&mount_kms, &kms);
    assert_string_equal(p.sse_kms_key_id, "K1");
    assert_string_equal(p.storage_class, "STANDARD_IA");
    /* another encryption on the mount: no key of the source's */
    p = s3_policy_effective(&mount_aes, &kms);
    assert_string_equal(p.sse, "AES256");
    assert_null(p.sse_kms_key_id);
    assert_false(p.sse_bucket_key);
    /* a kept STANDARD, or none said, stays STANDARD: nothing sent */
    const struct s3_object_policy std = {.storage_class = "STANDARD"};
    assert_null(s3_policy_effective(&mount_kms, &std).storage_class);
    assert_null(s3_policy_effective(&mount_kms, &none).storage_class);
    /* a source's encryption that is no encryption S3 takes is not sent back */
    const struct s3_object_policy odd = {.sse = "rot13", .sse_kms_key_id = "K"};
    p = s3_policy_effective(&none, &odd);
    assert_null(p.sse);
    assert_null(p.sse_kms_key_id);
    assert_true(s3_sse_valid("aws:kms:dsse") && !s3_sse_valid("AWS:KMS") && !s3_sse_valid(NULL));
    assert_true(s3_storage_class_valid("DEEP_ARCHIVE") && !s3_storage_class_valid("standard"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retryable),      cmocka_unit_test(test_backoff_full_jitter),
        cmocka_unit_test(test_budget),         cmocka_unit_test(test_errno_mapping),
        cmocka_unit_test(test_archived_errno), cmocka_unit_test(test_policy_effective),
    };
    return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
