/* test_sigv4.c — SigV4 signing checked against AWS's published examples for
 * S3 (the "Examples: Signature Calculations" in the S3 API reference, all
 * with AKIAIOSFODNN7EXAMPLE, us-east-1 and 20130524T000000Z), plus the URI
 * encoding rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "s3/s3_private.h"

#define AK "AKIAIOSFODNN7EXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define HOST "examplebucket.s3.amazonaws.com"
#define DATE "20130524T000000Z"

static void sign(const char *method, const char *uri, const struct s3_kv *q, size_t nq,
                 const struct s3_kv *h, size_t nh, const char *hash, char *sig,
                 struct buf *auth)
{
    struct s3_sign_input in = {method, uri, q, nq, h, nh, hash, "us-east-1", "s3", DATE, AK, SK};
    assert_int_equal(s3_sigv4_authorization(auth, &in, sig), 0);
}

static void test_get_object_with_range(void **state)
{
    (void)state;
    struct s3_kv h[] = {{"Host", HOST},
                        {"Range", "bytes=0-9"},
                        {"x-amz-content-sha256", EMPTY_SHA},
                        {"x-amz-date", DATE}};
    struct s3_sign_input in = {"GET", "/test.txt", NULL, 0, h, 4, EMPTY_SHA,
                               "us-east-1", "s3", DATE, AK, SK};
    struct buf canon = BUF_INIT, auth = BUF_INIT;
    assert_int_equal(s3_canonical_request(&canon, &in), 0);
    assert_string_equal(canon.data, "GET\n/test.txt\n\n"
                                    "host:examplebucket.s3.amazonaws.com\n"
                                    "range:bytes=0-9\n"
                                    "x-amz-content-sha256:" EMPTY_SHA "\n"
                                    "x-amz-date:20130524T000000Z\n\n"
                                    "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA);
    char sig[65];
    sign("GET", "/test.txt", NULL, 0, h, 4, EMPTY_SHA, sig, &auth);
    assert_string_equal(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    assert_string_equal(auth.data,
                        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/"
                        "s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;"
                        "x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd"
                        "91039c6036bdb41");
    buf_free(&canon);
    buf_free(&auth);
}

static void test_put_object(void **state)
{
    (void)state;
    const char *payload = "Welcome to Amazon S3.";
    char hash[65];
    util_sha256_hex(payload, strlen(payload), hash);
    assert_string_equal(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    /* the key is "test$file.text": '$' must be encoded once */
    struct buf uri = BUF_INIT, auth = BUF_INIT;
    assert_int_equal(buf_puts(&uri, "/"), 0);
    assert_int_equal(util_pct_encode(&uri, "test$file.text", 14, true), 0);
    assert_string_equal(uri.data, "/test%24file.text");
    struct s3_kv h[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                        {"Host", HOST},
                        {"x-amz-date", DATE},
                        {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                        {"x-amz-content-sha256", hash}};
    char sig[65];
    sign("PUT", uri.data, NULL, 0, h, 5, hash, sig, &auth);
    assert_string_equal(sig, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    assert_non_null(strstr(auth.data, "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;"
                                      "x-amz-storage-class,"));
    buf_free(&uri);
    buf_free(&auth);
}

static void test_get_bucket_lifecycle(void **state)
{
    (void)state;
    struct s3_kv q[] = {{"lifecycle", ""}};
    struct s3_kv h[] = {{"Host", HOST}, {"x-amz-date", DATE}, {"x-amz-content-sha256", EMPTY_SHA}};
    struct buf auth = BUF_INIT;
    char sig[65];
    sign("GET", "/", q, 1, h, 3, EMPTY_SHA, sig, &auth);
    assert_string_equal(sig, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    buf_free(&auth);
}

static void test_list_objects(void **state)
{
    (void)state;
    /* given out of order: the canonical query sorts them */
    struct s3_kv q[] = {{"prefix", "J"}, {"max-keys", "2"}};
    struct s3_kv h[] = {{"Host", HOST}, {"x-amz-date", DATE}, {"x-amz-content-sha256", EMPTY_SHA}};
    struct buf auth = BUF_INIT, cq = BUF_INIT;
    assert_int_equal(s3_canonical_query(&cq, q, 2), 0);
    assert_string_equal(cq.data, "max-keys=2&prefix=J");
    char sig[65];
    sign("GET", "/", q, 2, h, 3, EMPTY_SHA, sig, &auth);
    assert_string_equal(sig, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    buf_free(&auth);
    buf_free(&cq);
}

static void test_uri_encode_rules(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    const char *key = "a b+c%d~e/f//g_h-i.j;k#l?m*n\xc3\xa9";
    assert_int_equal(util_pct_encode(&b, key, strlen(key), true), 0);
    assert_string_equal(b.data, "a%20b%2Bc%25d~e/f//g_h-i.j%3Bk%23l%3Fm%2An%C3%A9");
    buf_clear(&b);
    assert_int_equal(util_pct_encode(&b, "x/y=z&", 6, false), 0);
    assert_string_equal(b.data, "x%2Fy%3Dz%26");
    buf_free(&b);
    char *d;
    assert_int_equal(util_pct_decode("a%20b%2Bc%C3%A9+", &d), 0);
    assert_string_equal(d, "a b+c\xc3\xa9+");
    free(d);
    assert_int_equal(util_pct_decode("bad%2", &d), EINVAL);
    assert_int_equal(util_pct_decode("bad%zz", &d), EINVAL);
}

/* Issue 17 item 7: a region hint from the server went into the endpoint's
 * host name and the signature's scope as it came. */
static void test_region_names(void **state)
{
    (void)state;
    static const char *const good[] = {"us-east-1",
                                       "eu-central-2",
                                       "cn-northwest-1",
                                       "us-gov-west-1",
                                       "garage",
                                       "a",
                                       "abcdefghijklmnopqrstuvwxyz012345"};
    static const char *const bad[] = {
        "",          "evil.com/x", "us-east-1.attacker",
        "US-EAST-1", "us east",    "us-east-1\r\nX: 1",
        "-us",       "us-",        "abcdefghijklmnopqrstuvwxyz0123456",
        "eu_west",   "a:1"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(s3_region_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(s3_region_valid(bad[i]));
}

static void test_query_values_encoded_and_sorted(void **state)
{
    (void)state;
    struct s3_kv q[] = {{"uploadId", "a/b+c=="}, {"partNumber", "10"}, {"uploads", ""}};
    struct buf b = BUF_INIT;
    assert_int_equal(s3_canonical_query(&b, q, 3), 0);
    assert_string_equal(b.data, "partNumber=10&uploadId=a%2Fb%2Bc%3D%3D&uploads=");
    buf_free(&b);
}

static void test_header_values_trimmed(void **state)
{
    (void)state;
    struct s3_kv h[] = {{"X-Amz-Meta-A", "  two   spaces  "}, {"Host", "h"}};
    struct s3_sign_input in = {"GET", "/", NULL, 0, h, 2, EMPTY_SHA, "us-east-1", "s3", DATE,
                               AK, SK};
    struct buf canon = BUF_INIT;
    assert_int_equal(s3_canonical_request(&canon, &in), 0);
    assert_non_null(strstr(canon.data, "\nhost:h\nx-amz-meta-a:two spaces\n\nhost;x-amz-meta-a\n"));
    buf_free(&canon);
}

static void test_amz_date_and_md5(void **state)
{
    (void)state;
    char d[17], m[25];
    s3_amz_date(1369353600, d);
    assert_string_equal(d, "20130524T000000Z");
    s3_md5_base64("", 0, m);
    assert_string_equal(m, "1B2M2Y8AsgTpgAmY7PhCfg==");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_object_with_range),
        cmocka_unit_test(test_put_object),
        cmocka_unit_test(test_get_bucket_lifecycle),
        cmocka_unit_test(test_list_objects),
        cmocka_unit_test(test_uri_encode_rules),
        cmocka_unit_test(test_query_values_encoded_and_sorted),
        cmocka_unit_test(test_header_values_trimmed),
        cmocka_unit_test(test_amz_date_and_md5),
        cmocka_unit_test(test_region_names),
    };
    return cmocka_run_group_tests_name("sigv4", tests, NULL, NULL);
}
