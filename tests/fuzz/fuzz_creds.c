/* fuzz_creds.c — the credential file and endpoint parsers (src/s3/creds.c):
 * an s3fs password file, the AWS shared credentials and config files (INI,
 * through inih) and the JSON of the container and instance metadata
 * endpoints, and a credential_process's output and command.  The input is
 * split at NUL bytes: password file, credentials file, config file, profile
 * name (also split as a credential_process command and parsed as an access
 * point ARN), JSON (also read as a
 * credential_process's output).  Checked: only the documented
 * return codes; with 0, the keys are there and non-empty where the
 * contract says so, an access key from a password file holds no ':'. */
#include "fuzz.h"

#include <errno.h>
#include <string.h>

#include "s3/s3_private.h"

FUZZ_TARGET(creds)
{
    struct fuzz_split sp = {data, data + size};
    char *passwd = fuzz_field(&sp, 0), *credentials = fuzz_field(&sp, 0);
    char *config = fuzz_field(&sp, 0), *profile = fuzz_field(&sp, 0);
    const uint8_t *json = sp.p;
    size_t json_len = (size_t)(sp.end - sp.p);

    struct s3_credentials cr;
    const char *why = NULL;
    const char *buckets[] = {NULL, "fuzzbucket", ""};
    for (int i = 0; i < 3; i++) {
        int rc = s3_creds_parse_passwd(passwd, buckets[i], &cr, &why);
        FUZZ_ASSERT(rc == 0 || rc == EINVAL || rc == ENOMEM);
        if (rc == 0) {
            FUZZ_ASSERT(cr.access_key && *cr.access_key && cr.secret_key && *cr.secret_key);
            FUZZ_ASSERT(!strchr(cr.access_key, ':') && !strchr(cr.access_key, '\n'));
            FUZZ_ASSERT(!strchr(cr.secret_key, '\n'));
            FUZZ_ASSERT(!cr.session_token);
        } else if (rc == EINVAL) {
            FUZZ_ASSERT(why && *why);
            FUZZ_ASSERT(!cr.access_key && !cr.secret_key);
        }
        s3_credentials_clear(&cr);
    }

    const char *profiles[] = {profile, "default"};
    for (int i = 0; i < 2; i++) {
        struct s3_profile p;
        int rc = s3_creds_parse_profile(credentials, config, profiles[i], &p);
        FUZZ_ASSERT(rc == 0 || rc == ENOENT || rc == ENOMEM);
        if (rc == ENOENT)
            FUZZ_ASSERT(!p.creds.access_key && !p.creds.secret_key && !p.region && !p.role_arn);
        s3_profile_clear(&p);
        rc = s3_creds_parse_profile(NULL, credentials, profiles[i], &p);
        FUZZ_ASSERT(rc == 0 || rc == ENOENT || rc == ENOMEM);
        s3_profile_clear(&p);
    }

    /* the same bytes as a credential_process's output, and its command */
    int rc = s3_creds_parse_process((const char *)json, json_len, 1700000000, &cr, &why);
    FUZZ_ASSERT(rc == 0 || rc == EPROTO || rc == ENOMEM);
    if (rc == 0) {
        FUZZ_ASSERT(cr.access_key && *cr.access_key && cr.secret_key && *cr.secret_key);
        FUZZ_ASSERT(!strpbrk(cr.access_key, "\r\n") && !strpbrk(cr.secret_key, "\r\n"));
        FUZZ_ASSERT(cr.expiration == 0 || cr.expiration > 1700000000);
    } else {
        FUZZ_ASSERT(!cr.access_key && !cr.secret_key && !cr.session_token);
        FUZZ_ASSERT(rc != EPROTO || (why && *why));
    }
    s3_credentials_clear(&cr);
    char **words = NULL;
    rc = s3_creds_split_command(profile, &words, &why);
    FUZZ_ASSERT(rc == 0 || rc == EINVAL || rc == ENOMEM);
    FUZZ_ASSERT(rc == 0 ? words && words[0] : !words);
    s3_creds_free_words(words);

    /* the profile name as an access point ARN: accepted ones make a host
     * of [a-z0-9.-] only */
    struct s3_access_point ap;
    rc = s3_access_point_parse(profile, &ap, &why);
    FUZZ_ASSERT(rc == 0 || (rc == EINVAL && why && *why));
    if (rc == 0) {
        struct buf host = BUF_INIT;
        FUZZ_ASSERT(s3_access_point_host(&ap, &host) == 0);
        FUZZ_ASSERT(strspn(host.data, "abcdefghijklmnopqrstuvwxyz0123456789.-") == host.len);
        FUZZ_ASSERT(strlen(ap.account) == 12 && s3_region_valid(ap.region));
        buf_free(&host);
    }

    rc = s3_creds_parse_json((const char *)json, json_len, &cr);
    FUZZ_ASSERT(rc == 0 || rc == EPROTO || rc == ENOMEM);
    if (rc == 0)
        FUZZ_ASSERT(cr.access_key && cr.secret_key);
    else
        FUZZ_ASSERT(!cr.access_key && !cr.secret_key && !cr.session_token);
    s3_credentials_clear(&cr);

    free(passwd);
    free(credentials);
    free(config);
    free(profile);
    return 0;
}
