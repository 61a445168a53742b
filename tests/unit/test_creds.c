/* test_creds.c — the credential file parsers: s3fs passwd files, the AWS
 * shared credentials and config files, the JSON of container/IMDS
 * endpoints, and a credential_process's output and command words
 * (src/s3/creds.c).  The chain's network sources are tested against local
 * stand-ins in tests/integration/test_s3_creds.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
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

/* ---- credential_process output ---- */

#define NOW 1700000000 /* 2023-11-14T22:13:20Z */

static int process(const char *json, struct s3_credentials *cr, const char **why)
{
    return s3_creds_parse_process(json, strlen(json), NOW, cr, why);
}

static void test_process_good(void **state)
{
    (void)state;
    struct s3_credentials cr;
    const char *why = NULL;
    const char *j = "{\"Version\": 1, \"AccessKeyId\": \"ASIAPROC\", \"SecretAccessKey\": "
                    "\"s/e+c\", \"SessionToken\": \"tok==\", \"Expiration\": "
                    "\"2023-11-14T23:13:20Z\"}\n";
    assert_int_equal(process(j, &cr, &why), 0);
    assert_string_equal(cr.access_key, "ASIAPROC");
    assert_string_equal(cr.secret_key, "s/e+c");
    assert_string_equal(cr.session_token, "tok==");
    assert_int_equal(cr.expiration, NOW + 3600); /* refreshed before then */
    s3_credentials_clear(&cr);
    /* long-lived keys: no token, no expiration (never refreshed) */
    assert_int_equal(
        process("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SK\"}", &cr, &why), 0);
    assert_null(cr.session_token);
    assert_int_equal(cr.expiration, 0);
    s3_credentials_clear(&cr);
    /* an offset, fractions, unknown members */
    assert_int_equal(process("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SK\","
                             "\"Expiration\":\"2023-11-15T01:13:20.5+02:00\",\"Other\":[1]}",
                             &cr, &why),
                     0);
    assert_int_equal(cr.expiration, NOW + 3600);
    s3_credentials_clear(&cr);
}

static void expect_process_refused(const char *json, size_t len, const char *says)
{
    struct s3_credentials cr;
    const char *why = NULL;
    int rc = s3_creds_parse_process(json, len, NOW, &cr, &why);
    if (rc != EPROTO)
        fail_msg("accepted (%d): %.200s", rc, json);
    assert_null(cr.access_key);
    assert_null(cr.secret_key);
    assert_null(cr.session_token);
    if (!why || !strstr(why, says))
        fail_msg("%.200s: reason \"%s\" does not say \"%s\"", json, why ? why : "", says);
    /* the reason never holds a value (the secret is "SECRET" below) */
    assert_null(strstr(why, "SECRET"));
}

static void refused(const char *json, const char *says)
{
    expect_process_refused(json, strlen(json), says);
}

static void test_process_bad(void **state)
{
    (void)state;
    refused("", "not a JSON object");
    refused("not json", "not a JSON object");
    refused("[1]", "not a JSON object");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"",
            "not a JSON object");
    refused("{'Version':1,'AccessKeyId':'AK','SecretAccessKey':'SECRET'}", "not a JSON object");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\",}",
            "not a JSON object");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"} {}",
            "JSON object");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"}garbage",
            "JSON object");
    /* Version */
    refused("{\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"}", "Version");
    refused("{\"Version\":2,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"}", "Version");
    refused("{\"Version\":\"1\",\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"}", "Version");
    refused("{\"Version\":1.5,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"}", "Version");
    /* missing or unusable fields */
    refused("{\"Version\":1,\"SecretAccessKey\":\"SECRET\"}", "no AccessKeyId");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\"}", "no SecretAccessKey");
    refused("{\"Version\":1,\"AccessKeyId\":\"\",\"SecretAccessKey\":\"SECRET\"}", "AccessKeyId");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"\"}", "SecretAccessKey");
    refused("{\"Version\":1,\"AccessKeyId\":7,\"SecretAccessKey\":\"SECRET\"}", "AccessKeyId");
    refused("{\"Version\":1,\"AccessKeyId\":null,\"SecretAccessKey\":\"SECRET\"}", "AccessKeyId");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":[\"SECRET\"]}",
            "SecretAccessKey");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\","
            "\"SessionToken\":5}",
            "SessionToken");
    /* a value that would end a header and start another */
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\\r\\nX-Evil: 1\",\"SecretAccessKey\":\"SECRET\"}",
            "AccessKeyId");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\","
            "\"SessionToken\":\"t\\nx\"}",
            "SessionToken");
    refused("{\"Version\":1,\"AccessKeyId\":\"A\\u0000K\",\"SecretAccessKey\":\"SECRET\"}",
            "AccessKeyId");
    /* Expiration: a time, and not past (a lying process) */
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\","
            "\"Expiration\":\"tomorrow\"}",
            "ISO 8601");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\","
            "\"Expiration\":1700003600}",
            "Expiration");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\","
            "\"Expiration\":\"2023-11-14T22:13:20Z\"}",
            "already expired");
    refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\","
            "\"Expiration\":\"2001-01-01T00:00:00Z\"}",
            "already expired");
    /* huge output: refused by size before parsing, even when it is JSON */
    size_t n = S3_PROCESS_OUTPUT_MAX + 100;
    char *big = malloc(n + 1);
    assert_non_null(big);
    int k = snprintf(big, n + 1, "{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"");
    memset(big + k, 'S', n - (size_t)k - 2);
    memcpy(big + n - 2, "\"}", 3);
    expect_process_refused(big, n, "more than 64 KiB");
    free(big);
    /* a NUL inside the given length */
    expect_process_refused("{\"Version\":1,\"AccessKeyId\":\"AK\",\"SecretAccessKey\":\"SECRET\"}"
                           "\0junk",
                           62, "JSON object");
}

/* ---- credential_process command words ---- */

static void expect_words(const char *cmd, const char *const *want, size_t n)
{
    char **argv = NULL;
    const char *why = NULL;
    int rc = s3_creds_split_command(cmd, &argv, &why);
    if (rc)
        fail_msg("%s refused: %s", cmd, why);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], want[i]);
    }
    assert_null(argv[n]);
    s3_creds_free_words(argv);
}

static void test_split_command(void **state)
{
    (void)state;
    expect_words("/usr/bin/get-creds", (const char *[]){"/usr/bin/get-creds"}, 1);
    expect_words("  tool  --profile   x\t", (const char *[]){"tool", "--profile", "x"}, 3);
    expect_words("tool 'a b' \"c d\" e\\ f", (const char *[]){"tool", "a b", "c d", "e f"}, 4);
    /* no expansion, no shell: $HOME, ;, | and * are plain characters */
    expect_words("tool $HOME ; rm -rf * | x",
                 (const char *[]){"tool", "$HOME", ";", "rm", "-rf", "*", "|", "x"}, 8);
    expect_words("tool 'it'\\''s' \"q\\\"uote\\\\ \\n\"",
                 (const char *[]){"tool", "it's", "q\"uote\\ \\n"}, 3);
    expect_words("tool '' x\"\"y", (const char *[]){"tool", "", "xy"}, 3);
    expect_words("sh -c 'echo \"{}\"'", (const char *[]){"sh", "-c", "echo \"{}\""}, 3);

    const char *bad[] = {"", "   ", "tool 'open", "tool \"open", "tool end\\"};
    const char *says[] = {"empty", "empty", "'", "\"", "backslash"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char **argv = (char **)1;
        const char *why = NULL;
        assert_int_equal(s3_creds_split_command(bad[i], &argv, &why), EINVAL);
        assert_null(argv);
        if (!strstr(why, says[i]))
            fail_msg("%s: \"%s\" does not say \"%s\"", bad[i], why, says[i]);
    }
}

static void test_profile_role_and_process_keys(void **state)
{
    (void)state;
    const char *config = "[profile src]\n"
                         "aws_access_key_id = AKSRC\n"
                         "aws_secret_access_key = SKSRC\n"
                         "[profile role]\n"
                         "role_arn = arn:aws:iam::123456789012:role/r\n"
                         "source_profile = src\n"
                         "role_session_name = sess\n"
                         "external_id = ext-1\n"
                         "duration_seconds = 1800\n"
                         "[profile proc]\n"
                         "credential_process = /bin/get-creds --x 'a b'\n";
    struct s3_profile p;
    assert_int_equal(s3_creds_parse_profile(NULL, config, "role", &p), 0);
    assert_string_equal(p.role_arn, "arn:aws:iam::123456789012:role/r");
    assert_string_equal(p.source_profile, "src");
    assert_string_equal(p.role_session_name, "sess");
    assert_string_equal(p.external_id, "ext-1");
    assert_string_equal(p.duration_seconds, "1800");
    assert_null(p.credential_process);
    assert_null(p.creds.access_key);
    s3_profile_clear(&p);
    assert_int_equal(s3_creds_parse_profile(NULL, config, "proc", &p), 0);
    assert_string_equal(p.credential_process, "/bin/get-creds --x 'a b'");
    s3_profile_clear(&p);
}

/* The shared files as the AWS tools read them, with no limit on a line
 * (inih cut lines at 200 bytes: a real session token is 400 to 1000). */
static void test_profile_long_lines_and_ini_forms(void **state)
{
    (void)state;
    char token[1201], cmd[700], name[120];
    memset(token, 'T', 1200);
    token[1200] = '\0';
    snprintf(cmd, sizeof(cmd), "/opt/tools/bin/get-credentials --role %0*d --format json", 600, 7);
    memset(name, 'n', 100);
    snprintf(name + 100, 20, "-profile");
    size_t n = 4000;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n,
             "\xEF\xBB\xBF# a comment\n"
             "; another\n"
             "[default]\r\n"
             "aws_access_key_id = AK ; inline comment\r\n"
             "aws_secret_access_key: SK;not-a-comment\n"
             "aws_session_token = %s\n"
             "s3 =\n"
             "  max_concurrent_requests = 20\n"
             "region=eu-west-1\n"
             "[profile %s]\n"
             "credential_process = %s\n"
             "no separator line\n",
             token, name, cmd);
    struct s3_profile p;
    assert_int_equal(s3_creds_parse_profile(NULL, text, "default", &p), 0);
    assert_string_equal(p.creds.access_key, "AK");
    assert_string_equal(p.creds.secret_key, "SK;not-a-comment");
    assert_string_equal(p.creds.session_token, token);
    assert_string_equal(p.region, "eu-west-1");
    s3_profile_clear(&p);
    assert_int_equal(s3_creds_parse_profile(NULL, text, name, &p), 0);
    assert_string_equal(p.credential_process, cmd);
    s3_profile_clear(&p);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_process_good),
        cmocka_unit_test(test_process_bad),
        cmocka_unit_test(test_split_command),
        cmocka_unit_test(test_profile_role_and_process_keys),
        cmocka_unit_test(test_profile_long_lines_and_ini_forms),
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
