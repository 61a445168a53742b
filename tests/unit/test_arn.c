/* test_arn.c — access point ARNs: the strict parser and the endpoint host
 * it gives (src/s3/client.c, s3_access_point_parse/_host).  An ARN is a
 * user's word that becomes a host name and a signing scope: anything but
 * the documented form is refused with a reason.  Mounting through an
 * access point is tested in tests/integration/test_s3_access_point.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "s3/s3_private.h"

static void expect_host(const char *arn, const char *host)
{
    struct s3_access_point ap;
    const char *why = NULL;
    int rc = s3_access_point_parse(arn, &ap, &why);
    if (rc)
        fail_msg("%s refused: %s", arn, why);
    struct buf b = BUF_INIT;
    assert_int_equal(s3_access_point_host(&ap, &b), 0);
    assert_string_equal(b.data, host);
    buf_free(&b);
}

static void test_good(void **state)
{
    (void)state;
    expect_host("arn:aws:s3:us-west-2:123456789012:accesspoint/test",
                "test-123456789012.s3-accesspoint.us-west-2.amazonaws.com");
    expect_host("arn:aws-cn:s3:cn-north-1:000000000000:accesspoint/my-ap-1",
                "my-ap-1-000000000000.s3-accesspoint.cn-north-1.amazonaws.com.cn");
    expect_host("arn:aws-us-gov:s3:us-gov-west-1:123456789012:accesspoint/abc",
                "abc-123456789012.s3-accesspoint.us-gov-west-1.amazonaws.com");
    /* 50 characters, the longest name */
    expect_host("arn:aws:s3:eu-west-1:123456789012:accesspoint/"
                "a234567890123456789012345678901234567890123456789z",
                "a234567890123456789012345678901234567890123456789z-123456789012"
                ".s3-accesspoint.eu-west-1.amazonaws.com");
    struct s3_access_point ap;
    const char *why = NULL;
    assert_int_equal(
        s3_access_point_parse("arn:aws:s3:ap-south-1:210987654321:accesspoint/x1y", &ap, &why), 0);
    assert_string_equal(ap.partition, "aws");
    assert_string_equal(ap.region, "ap-south-1");
    assert_string_equal(ap.account, "210987654321");
    assert_string_equal(ap.name, "x1y");
}

static void expect_bad(const char *arn, const char *reason_part)
{
    struct s3_access_point ap;
    const char *why = NULL;
    if (s3_access_point_parse(arn, &ap, &why) != EINVAL)
        fail_msg("%s accepted", arn);
    assert_non_null(why);
    if (!strstr(why, reason_part))
        fail_msg("%s: reason \"%s\" does not say \"%s\"", arn, why, reason_part);
}

static void test_bad(void **state)
{
    (void)state;
    expect_bad("", "not an ARN");
    expect_bad("mybucket", "not an ARN");
    expect_bad("ARN:aws:s3:us-west-2:123456789012:accesspoint/test", "not an ARN");
    expect_bad("arn:", "partition");
    expect_bad("arn:aws-iso:s3:us-iso-east-1:123456789012:accesspoint/test", "partition");
    expect_bad("arn:aws:s3-outposts:us-west-2:123456789012:outpost/op-1/accesspoint/a", "Outposts");
    expect_bad("arn:aws:s3-object-lambda:us-west-2:123456789012:accesspoint/test", "service");
    expect_bad("arn:aws:s3::123456789012:accesspoint/mfzwi23gnjvgw.mrap", "multi-Region");
    /* the region goes into a host name and the signing scope */
    expect_bad("arn:aws:s3:US-WEST-2:123456789012:accesspoint/test", "region");
    expect_bad("arn:aws:s3:us-west-2.evil.com:123456789012:accesspoint/test", "region");
    expect_bad("arn:aws:s3:us-west-2/x:123456789012:accesspoint/test", "region");
    expect_bad("arn:aws:s3:-us-west-2:123456789012:accesspoint/test", "region");
    expect_bad("arn:aws:s3:cn-north-1:123456789012:accesspoint/test", "partition");
    expect_bad("arn:aws-cn:s3:us-west-2:123456789012:accesspoint/test", "partition");
    expect_bad("arn:aws-us-gov:s3:us-east-1:123456789012:accesspoint/test", "partition");
    expect_bad(
        "arn:aws:s3:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1:accesspoint/t",
        "region");
    /* the account: exactly 12 digits */
    expect_bad("arn:aws:s3:us-west-2:12345678901:accesspoint/test", "12 digits");
    expect_bad("arn:aws:s3:us-west-2:1234567890123:accesspoint/test", "12 digits");
    expect_bad("arn:aws:s3:us-west-2:12345678901a:accesspoint/test", "12 digits");
    expect_bad("arn:aws:s3:us-west-2::accesspoint/test", "12 digits");
    expect_bad("arn:aws:s3:us-west-2:123456789012", "12 digits");
    /* the resource */
    expect_bad("arn:aws:s3:us-west-2:123456789012:", "accesspoint/NAME");
    expect_bad("arn:aws:s3:us-west-2:123456789012:bucket/test", "accesspoint/NAME");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint:test", "accesspoint/NAME");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/ab", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/"
               "a23456789012345678901234567890123456789012345678901",
               "name"); /* 51 */
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/Test", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/-test", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/test-", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/te.st", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/test/object/k", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/test:x", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/te\nst", "name");
    expect_bad("arn:aws:s3:us-west-2:123456789012:accesspoint/te%2fst", "name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests_name("arn", tests, NULL, NULL);
}
