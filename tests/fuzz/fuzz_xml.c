/* fuzz_xml.c — every S3 XML response parser (src/s3/xml.c) and the STS
 * parser (src/s3/creds.c) over the same bytes, as a server might send
 * them.  Each must return one of its documented codes, and what it returns
 * with 0 must be whole: strings terminated within their fields, every
 * listed key and upload present, every DeleteObjects key given an errno. */
#include "fuzz.h"

#include <errno.h>
#include <string.h>

#include "s3/s3_private.h"

static int one_of(int rc, int a, int b, int c)
{
    return rc == a || rc == b || rc == c;
}

/* Prefixes the client's check of a page (s3_list_page_outside and
 * s3_upload_page_outside, issue 17 item 1) is tried against: what it
 * returns must be exactly the first string of the page outside the prefix. */
static const char *const prefixes[] = {"", "d/", "p/", "some/deep/directory/"};
#define N_PREFIXES (sizeof(prefixes) / sizeof(prefixes[0]))

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

FUZZ_TARGET(xml)
{
    static int ready;
    if (!ready) {
        s3_xml_init();
        ready = 1;
    }
    const char *x = (const char *)data;

    struct s3_error e;
    memset(&e, 0, sizeof(e)); /* callers start from a zeroed error */
    int rc = s3_xml_parse_error(x, size, &e);
    FUZZ_ASSERT(one_of(rc, 0, ENOENT, EPROTO) || rc == ENOMEM);
    if (rc == 0) {
        FUZZ_ASSERT(memchr(e.code, 0, sizeof(e.code)));
        FUZZ_ASSERT(memchr(e.message, 0, sizeof(e.message)));
        FUZZ_ASSERT(memchr(e.request_id, 0, sizeof(e.request_id)));
        FUZZ_ASSERT(memchr(e.region, 0, sizeof(e.region)));
    }

    struct s3_list_page page;
    rc = s3_xml_parse_list_v2(x, size, &page);
    FUZZ_ASSERT(one_of(rc, 0, EPROTO, ENOMEM) || rc == EBADMSG);
    if (rc == 0) {
        for (size_t i = 0; i < page.n_entries; i++) {
            FUZZ_ASSERT(page.entries[i].key != NULL);
            FUZZ_ASSERT(memchr(page.entries[i].etag, 0, sizeof(page.entries[i].etag)));
            /* no size S3 cannot hold (issue 17 item 9: 2^64-1 looped) */
            FUZZ_ASSERT(page.entries[i].size <= S3_MAX_OBJECT_SIZE);
            /* an ETag goes back as If-Match: never with CR, LF, … */
            FUZZ_ASSERT(!util_has_control(page.entries[i].etag));
        }
        for (size_t i = 0; i < page.n_prefixes; i++)
            FUZZ_ASSERT(page.prefixes[i] != NULL);
        for (size_t p = 0; p < N_PREFIXES; p++) {
            const char *first = NULL;
            for (size_t i = 0; i < page.n_entries && !first; i++)
                if (!starts(page.entries[i].key, prefixes[p]))
                    first = page.entries[i].key;
            for (size_t i = 0; i < page.n_prefixes && !first; i++)
                if (!starts(page.prefixes[i], prefixes[p]))
                    first = page.prefixes[i];
            FUZZ_ASSERT(s3_list_page_outside(&page, prefixes[p]) == first);
        }
        for (size_t i = 0; i < page.n_skipped; i++)
            FUZZ_ASSERT(page.skipped[i] && strstr(page.skipped[i], "%00"));
        /* a truncated page without a token is the client's EPROTO
         * (s3_list_objects_v2), not the parser's */
    } else {
        FUZZ_ASSERT(page.n_entries == 0 && page.n_prefixes == 0 && page.n_skipped == 0 &&
                    !page.next_token);
    }
    s3_list_page_free(&page);

    char *upload_id = NULL;
    rc = s3_xml_parse_upload_id(x, size, &upload_id);
    FUZZ_ASSERT(one_of(rc, 0, EPROTO, ENOMEM));
    FUZZ_ASSERT((rc == 0) == (upload_id != NULL));
    free(upload_id);

    char etag[80];
    memset(etag, 0x5a, sizeof(etag));
    rc = s3_xml_parse_etag(x, size, etag);
    FUZZ_ASSERT(one_of(rc, 0, EPROTO, ENOMEM) || rc == EBADMSG);
    if (rc == 0)
        FUZZ_ASSERT(memchr(etag, 0, sizeof(etag)) && !util_has_control(etag));

    static const char *const keys[] = {"a", "dir/b c", "a", "\xc3\xa9", ""};
    int errs[5] = {-1, -1, -1, -1, -1};
    rc = s3_xml_parse_delete_result(x, size, keys, 5, errs);
    FUZZ_ASSERT(one_of(rc, 0, EPROTO, ENOMEM));
    for (int i = 0; i < 5; i++)
        FUZZ_ASSERT(errs[i] >= 0);

    struct s3_upload_page up;
    rc = s3_xml_parse_list_uploads(x, size, &up);
    FUZZ_ASSERT(one_of(rc, 0, EPROTO, ENOMEM));
    if (rc == 0) {
        for (size_t i = 0; i < up.n_uploads; i++)
            FUZZ_ASSERT(up.uploads[i].key && up.uploads[i].upload_id);
        for (size_t p = 0; p < N_PREFIXES; p++) {
            const char *first = NULL;
            for (size_t i = 0; i < up.n_uploads && !first; i++)
                if (!starts(up.uploads[i].key, prefixes[p]))
                    first = up.uploads[i].key;
            FUZZ_ASSERT(s3_upload_page_outside(&up, prefixes[p]) == first);
        }
    } else {
        FUZZ_ASSERT(up.n_uploads == 0);
    }
    s3_upload_page_free(&up);

    struct s3_credentials cr;
    struct s3_error se = {0};
    rc = s3_creds_parse_sts(x, size, &cr, &se);
    FUZZ_ASSERT(one_of(rc, 0, EACCES, EPROTO) || rc == ENOMEM);
    if (rc == 0)
        FUZZ_ASSERT(cr.access_key && cr.secret_key);
    s3_credentials_clear(&cr);
    return 0;
}
