/* test_creds.c — the credential file parsers: s3fs passwd files, the AWS
 * shared credentials and config files, and the JSON of container/IMDS
 * endpoints.  The chain's network sources are tested against local
 * stand-ins in tests/integration/test_s3_creds.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3/s3_private.h"

static void test_passwd_plain_and_bucket_lines(void **state)
{
    (void)state;
    struct s3_credentials cr;
    const char *why = NULL;
    assert_int_equal(s3_creds_parse_passwd("# comment\nAK1:SK1\n", "b", &cr, &why), 0);
    assert_string_equal(cr.access_key, "AK1");
    assert_string_equal(cr.secret_key, "SK1");
    s3_credentials_clear(&cr);
    /* a line for this bucket wins over the general line, wherever it is */
    assert_int_equal(
        s3_creds_parse_passwd("AK1:SK1\nother:AK2:SK2\nmine:AK3:SK3\n", "mine", &cr, &why), 0);
    assert_string_equal(cr.access_key, "AK3");
    assert_string_equal(cr.secret_key, "SK3");
    s3_credentials_clear(&cr);
    /* secrets may contain '/' and '+' */
    assert_int_equal(s3_creds_parse_passwd("AK:wJal/K7+MDENG", NULL, &cr, &why), 0);
    assert_string_equal(cr.secret_key, "wJal/K7+MDENG");
    s3_credentials_clear(&cr);
}

static void test_passwd_bad(void **state)
{
    (void)state;
    struct s3_credentials cr;
    const char *why = NULL;
    assert_int_equal(s3_creds_parse_passwd("justonefield\n", NULL, &cr, &why), EINVAL);
    assert_non_null(why);
    why = NULL;
    assert_int_equal(s3_creds_parse_passwd("other:AK:SK\n", "mine", &cr, &why), EINVAL);
    assert_non_null(strstr(why, "bucket"));
    assert_int_equal(s3_creds_parse_passwd("AK:\n", NULL, &cr, &why), EINVAL);
    assert_int_equal(s3_creds_parse_passwd("", NULL, &cr, &why), EINVAL);
}

static const char *CREDENTIALS = "[default]\n"
                                 "aws_access_key_id = AKDEFAULT\n"
                                 "aws_secret_access_key = SKDEFAULT\n"
                                 "\n"
                                 "[work]\n"
                                 "aws_access_key_id=AKWORK\n"
                                 "aws_secret_access_key=SKWORK\n"
                                 "aws_session_token=TOKWORK\n";
static const char *CONFIG = "[default]\n"
                            "region = eu-central-1\n"
                            "[profile work]\n"
                            "region = us-west-2\n"
                            "s3 =\n"
                            "  max_concurrent_requests = 20\n"
                            "[profile onlyconfig]\n"
                            "aws_access_key_id = AKCONF\n"
                            "aws_secret_access_key = SKCONF\n"
                            "[profile wi]\n"
                            "role_arn = arn:aws:iam::123456789012:role/r\n"
                            "web_identity_token_file = /var/run/token\n"
                            "[work]\n"
                            "region = wrong-because-config-needs-profile-prefix\n";

static void test_profile_default(void **state)
{
    (void)state;
    struct s3_profile p;
    assert_int_equal(s3_creds_parse_profile(CREDENTIALS, CONFIG, "default", &p), 0);
    assert_string_equal(p.creds.access_key, "AKDEFAULT");
    assert_string_equal(p.creds.secret_key, "SKDEFAULT");
    assert_null(p.creds.session_token);
    assert_string_equal(p.region, "eu-central-1");
    s3_profile_clear(&p);
}

static void test_profile_named(void **state)
{
    (void)state;
    struct s3_profile p;
    assert_int_equal(s3_creds_parse_profile(CREDENTIALS, CONFIG, "work", &p), 0);
    assert_string_equal(p.creds.access_key, "AKWORK");
    assert_string_equal(p.creds.session_token, "TOKWORK");
    assert_string_equal(p.region, "us-west-2");
    s3_profile_clear(&p);
    assert_int_equal(s3_creds_parse_profile(CREDENTIALS, CONFIG, "onlyconfig", &p), 0);
    assert_string_equal(p.creds.access_key, "AKCONF");
    s3_profile_clear(&p);
    assert_int_equal(s3_creds_parse_profile(CREDENTIALS, CONFIG, "wi", &p), 0);
    assert_null(p.creds.access_key);
    assert_string_equal(p.role_arn, "arn:aws:iam::123456789012:role/r");
    assert_string_equal(p.web_identity_token_file, "/var/run/token");
    s3_profile_clear(&p);
    assert_int_equal(s3_creds_parse_profile(CREDENTIALS, CONFIG, "missing", &p), ENOENT);
    assert_int_equal(s3_creds_parse_profile(NULL, NULL, "default", &p), ENOENT);
}

static void test_json(void **state)
{
    (void)state;
    const char *j = "{\"Code\":\"Success\",\"LastUpdated\":\"2012-04-26T16:39:16Z\","
                    "\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIAJ\",\"SecretAccessKey\":\"S/K\","
                    "\"Token\":\"T==\",\"Expiration\":\"2017-05-17T15:09:54Z\"}";
    struct s3_credentials cr;
    assert_int_equal(s3_creds_parse_json(j, strlen(j), &cr), 0);
    assert_string_equal(cr.access_key, "ASIAJ");
    assert_string_equal(cr.secret_key, "S/K");
    assert_string_equal(cr.session_token, "T==");
    assert_int_equal(cr.expiration, 1495033794);
    s3_credentials_clear(&cr);
    assert_int_equal(s3_creds_parse_json("{\"AccessKeyId\":\"A\"}", 19, &cr), EPROTO);
    assert_int_equal(s3_creds_parse_json("[1,2", 4, &cr), EPROTO);
    assert_int_equal(s3_creds_parse_json("null", 4, &cr), EPROTO);
}

/* ---- SSE-C key files (issue 20) ------------------------------------------ */

static void test_sse_c_key_parse(void **state)
{
    (void)state;
    unsigned char key[S3_SSE_C_KEY_LEN], want[S3_SSE_C_KEY_LEN];
    for (int i = 0; i < S3_SSE_C_KEY_LEN; i++)
        want[i] = (unsigned char)(i * 9 + 1);
    const char *why = NULL;
    /* 32 raw bytes, whatever they are (a newline among them too) */
    want[5] = '\n';
    assert_int_equal(s3_sse_c_parse_key((const char *)want, 32, key, &why), 0);
    assert_memory_equal(key, want, 32);
    /* base64 of 32 bytes, with a trailing newline and spaces */
    char b64[64];
    util_base64_encode(want, 32, b64);
    char text[80];
    snprintf(text, sizeof(text), "  %s\n", b64);
    memset(key, 0, sizeof(key));
    assert_int_equal(s3_sse_c_parse_key(text, strlen(text), key, &why), 0);
    assert_memory_equal(key, want, 32);
    /* refused: short, long, base64 of 31 or 33 bytes, not base64 */
    assert_int_equal(s3_sse_c_parse_key("abc", 3, key, &why), EINVAL);
    assert_non_null(strstr(why, "32 bytes"));
    char raw33[33] = {0};
    assert_int_equal(s3_sse_c_parse_key(raw33, 33, key, &why), EINVAL);
    util_base64_encode(want, 31, b64);
    assert_int_equal(s3_sse_c_parse_key(b64, strlen(b64), key, &why), EINVAL);
    util_base64_encode(raw33, 33, b64);
    assert_int_equal(s3_sse_c_parse_key(b64, strlen(b64), key, &why), EINVAL);
    assert_int_equal(
        s3_sse_c_parse_key("%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%", 44, key, &why), EINVAL);
}

static void test_secret_file_checks(void **state)
{
    (void)state;
    char path[] = "/tmp/pailfs-test-secret-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "secret\n", 7), 7);
    close(fd);
    char *text = NULL, why[512];
    size_t len = 0;
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(
        s3_secret_file_read("sse_c_key_file", path, 100, &text, &len, why, sizeof(why)), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(text, "secret\n", 7);
    util_wipe_free(text);
    /* open to the group: refused, saying how to fix it */
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(
        s3_secret_file_read("sse_c_key_file", path, 100, &text, &len, why, sizeof(why)), EACCES);
    assert_non_null(strstr(why, "sse_c_key_file"));
    assert_non_null(strstr(why, "mode 640"));
    assert_non_null(strstr(why, "chmod 600"));
    /* someone else's file: refused (root can make one) */
    assert_int_equal(chmod(path, 0600), 0);
    if (geteuid() == 0 && chown(path, 4321, (gid_t)-1) == 0) {
        assert_int_equal(
            s3_secret_file_read("passwd_file", path, 100, &text, &len, why, sizeof(why)), EACCES);
        assert_non_null(strstr(why, "uid 4321"));
    }
    unlink(path);
    assert_int_equal(
        s3_secret_file_read("sse_c_key_file", path, 100, &text, &len, why, sizeof(why)), EACCES);
    assert_non_null(strstr(why, "No such file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passwd_plain_and_bucket_lines),
        cmocka_unit_test(test_passwd_bad),
        cmocka_unit_test(test_profile_default),
        cmocka_unit_test(test_profile_named),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_sse_c_key_parse),
        cmocka_unit_test(test_secret_file_checks),
    };
    return cmocka_run_group_tests_name("creds", tests, NULL, NULL);
}
