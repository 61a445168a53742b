/* xml.c — S3's XML responses, read with libxml2's streaming reader.
 *
 * Servers disagree on namespaces (AWS uses the 2006-03-01 S3 namespace,
 * others none or their own), so elements are matched by local name only.
 * One walker turns a document into three events — element start, element
 * text, element end — each with the element's depth; every parser below is a
 * small state machine over those events.  Nothing builds a DOM, so a large
 * listing costs memory only for what it returns.  Parsers fill plain values
 * and judge nothing else: whether an STS answer makes usable credentials is
 * creds.c's to say, so this file calls nothing of creds.c (and creds.c
 * calls it). */
#include "s3/s3_private.h"

#include <errno.h>
#include <libxml/xmlreader.h>
#include <stdlib.h>
#include <string.h>

struct xml_events {
    void *arg;
    /* name is the local name, depth 0 for the root */
    int (*start)(void *arg, const char *name, int depth);
    int (*text)(void *arg, const char *name, int depth, const char *text);
    int (*end)(void *arg, const char *name, int depth);
};

#define XML_MAX_DEPTH 16

static int xml_walk(const char *xml, size_t len, const struct xml_events *ev)
{
    if (len > INT32_MAX)
        return EPROTO;
    xmlTextReaderPtr r = xmlReaderForMemory(
        xml, (int)len, NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!r)
        return EPROTO;
    char stack[XML_MAX_DEPTH][64];
    int rc = 0, ret, seen_root = 0;
    struct buf text = BUF_INIT;
    while (rc == 0 && (ret = xmlTextReaderRead(r)) == 1) {
        int type = xmlTextReaderNodeType(r);
        int depth = xmlTextReaderDepth(r);
        if (depth < 0 || depth >= XML_MAX_DEPTH)
            continue; /* nothing S3 sends is that deep */
        if (type == XML_READER_TYPE_ELEMENT) {
            const char *name = (const char *)xmlTextReaderConstLocalName(r);
            snprintf(stack[depth], sizeof(stack[depth]), "%s", name ? name : "");
            buf_clear(&text);
            seen_root = 1;
            if (ev->start)
                rc = ev->start(ev->arg, stack[depth], depth);
            if (!rc && xmlTextReaderIsEmptyElement(r)) {
                if (ev->text)
                    rc = ev->text(ev->arg, stack[depth], depth, "");
                if (!rc && ev->end)
                    rc = ev->end(ev->arg, stack[depth], depth);
            }
        } else if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA ||
                   type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE) {
            const char *v = (const char *)xmlTextReaderConstValue(r);
            if (v)
                rc = buf_puts(&text, v);
        } else if (type == XML_READER_TYPE_END_ELEMENT) {
            const char *name = stack[depth];
            if (ev->text)
                rc = ev->text(ev->arg, name, depth, text.data ? text.data : "");
            buf_clear(&text);
            if (!rc && ev->end)
                rc = ev->end(ev->arg, name, depth);
        }
    }
    if (rc == 0 && (ret != 0 || !seen_root))
        rc = EPROTO;
    buf_free(&text);
    xmlFreeTextReader(r);
    return rc;
}

int s3_xml_escape(struct buf *out, const char *s)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        switch (*s) {
        case '&': rc = buf_puts(out, "&amp;"); break;
        case '<': rc = buf_puts(out, "&lt;"); break;
        case '>': rc = buf_puts(out, "&gt;"); break;
        case '"': rc = buf_puts(out, "&quot;"); break;
        case '\'': rc = buf_puts(out, "&apos;"); break;
        default: rc = buf_append(out, s, 1);
        }
    }
    return rc;
}

static void copy_field(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src);
}

void s3_xml_init(void)
{
    xmlInitParser();
}

/* ---- <Error> ------------------------------------------------------------ */

struct error_state {
    struct s3_error *err;
    bool is_error;
};

static int error_start(void *arg, const char *name, int depth)
{
    struct error_state *st = arg;
    if (depth == 0)
        st->is_error = strcmp(name, "Error") == 0;
    return 0;
}

static int error_text(void *arg, const char *name, int depth, const char *text)
{
    struct error_state *st = arg;
    if (!st->is_error || depth != 1)
        return 0;
    if (strcmp(name, "Code") == 0)
        copy_field(st->err->code, sizeof(st->err->code), text);
    else if (strcmp(name, "Message") == 0)
        copy_field(st->err->message, sizeof(st->err->message), text);
    else if (strcmp(name, "RequestId") == 0)
        copy_field(st->err->request_id, sizeof(st->err->request_id), text);
    else if (strcmp(name, "Region") == 0)
        copy_field(st->err->region, sizeof(st->err->region), text);
    return 0;
}

int s3_xml_parse_error(const char *xml, size_t len, struct s3_error *err)
{
    struct error_state st = {err, false};
    struct xml_events ev = {&st, error_start, error_text, NULL};
    int rc = xml_walk(xml, len, &ev);
    if (rc)
        return rc;
    return st.is_error ? 0 : ENOENT;
}

/* ---- ListObjectsV2 ------------------------------------------------------ */

struct list_state {
    struct s3_list_page *page;
    size_t cap_entries, cap_prefixes, cap_skipped;
    struct s3_list_entry cur;
    char *cur_prefix;
    bool url_encoded;
    bool in_contents, in_prefixes;
};

/* An ETag is sent back as a header (If-Match, x-amz-copy-source-if-match):
 * one with a control character, such as the CR LF that "&#13;&#10;" decodes
 * to, would end that header and start one of the server's choosing. */
static int etag_field(char *dst, const char *text)
{
    if (util_has_control(text))
        return EBADMSG;
    copy_field(dst, 80, text);
    return 0;
}

static int list_start(void *arg, const char *name, int depth)
{
    struct list_state *st = arg;
    if (depth != 1)
        return 0;
    if (strcmp(name, "Contents") == 0) {
        st->in_contents = true;
        memset(&st->cur, 0, sizeof(st->cur));
    } else if (strcmp(name, "CommonPrefixes") == 0) {
        st->in_prefixes = true;
        st->cur_prefix = NULL;
    }
    return 0;
}

int s3_parse_size(const char *text, uint64_t *out)
{
    uint64_t v = 0;
    if (!*text)
        return EPROTO;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || v > (S3_MAX_OBJECT_SIZE - (uint64_t)(*p - '0')) / 10)
            return EPROTO;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 0;
}

static int list_text(void *arg, const char *name, int depth, const char *text)
{
    struct list_state *st = arg;
    struct s3_list_page *pg = st->page;
    if (depth == 1) {
        if (strcmp(name, "IsTruncated") == 0)
            pg->truncated = strcmp(text, "true") == 0;
        else if (strcmp(name, "NextContinuationToken") == 0) {
            free(pg->next_token);
            if (!(pg->next_token = strdup(text)))
                return ENOMEM;
        } else if (strcmp(name, "EncodingType") == 0)
            st->url_encoded = strcmp(text, "url") == 0;
        return 0;
    }
    if (depth != 2)
        return 0;
    if (st->in_contents) {
        if (strcmp(name, "Key") == 0) {
            free(st->cur.key);
            if (!(st->cur.key = strdup(text)))
                return ENOMEM;
        } else if (strcmp(name, "Size") == 0) {
            if (s3_parse_size(text, &st->cur.size)) {
                /* (the key and the text are the server's: not logged raw) */
                log_error("a listing gives an object a size that is not a number of at most "
                          "S3's largest object (48.8 TiB): the listing is refused");
                return EPROTO;
            }
        } else if (strcmp(name, "ETag") == 0) {
            return etag_field(st->cur.etag, text);
        } else if (strcmp(name, "LastModified") == 0) {
            util_parse_iso8601(text, &st->cur.mtime);
        }
    } else if (st->in_prefixes && strcmp(name, "Prefix") == 0) {
        free(st->cur_prefix);
        if (!(st->cur_prefix = strdup(text)))
            return ENOMEM;
    }
    return 0;
}

static int list_end(void *arg, const char *name, int depth)
{
    struct list_state *st = arg;
    struct s3_list_page *pg = st->page;
    if (depth != 1)
        return 0;
    if (st->in_contents && strcmp(name, "Contents") == 0) {
        st->in_contents = false;
        if (!st->cur.key)
            return EPROTO;
        if (util_grow((void **)&pg->entries, &st->cap_entries, pg->n_entries + 1,
                      sizeof(*pg->entries)))
            return ENOMEM;
        pg->entries[pg->n_entries++] = st->cur;
        memset(&st->cur, 0, sizeof(st->cur));
    } else if (st->in_prefixes && strcmp(name, "CommonPrefixes") == 0) {
        st->in_prefixes = false;
        if (!st->cur_prefix)
            return 0;
        if (util_grow((void **)&pg->prefixes, &st->cap_prefixes, pg->n_prefixes + 1,
                      sizeof(*pg->prefixes)))
            return ENOMEM;
        pg->prefixes[pg->n_prefixes++] = st->cur_prefix;
        st->cur_prefix = NULL;
    }
    return 0;
}

/* With encoding-type=url, keys and prefixes arrive %-encoded (with '+' for
 * space on some servers? No: S3 encodes space as %20 or '+'; we decode both
 * only when the server said it encoded).  0, EPROTO (a malformed escape),
 * EILSEQ (it decodes to a NUL byte: *s is left as sent) or ENOMEM. */
static int decode_in_place(char **s)
{
    char *plus = strdup(*s), *d;
    if (!plus)
        return ENOMEM;
    for (char *p = plus; *p; p++)
        if (*p == '+')
            *p = ' ';
    int rc = util_pct_decode(plus, &d);
    free(plus);
    if (rc)
        return rc == EINVAL ? EPROTO : rc;
    free(*s);
    *s = d;
    return 0;
}

/* A key or prefix whose decoding holds a NUL cannot be a C string: cut at
 * the NUL, "dir/a%00/../../x" would be shown (and copied, and deleted) as
 * "dir/a", another object.  It goes to page->skipped, as sent, for the
 * caller to report like any name it cannot show.  Takes `as_sent` on 0. */
static int skip_key(struct list_state *st, char *as_sent)
{
    struct s3_list_page *pg = st->page;
    if (util_grow((void **)&pg->skipped, &st->cap_skipped, pg->n_skipped + 1, sizeof(*pg->skipped)))
        return ENOMEM;
    pg->skipped[pg->n_skipped++] = as_sent;
    return 0;
}

static int decode_entries(struct list_state *st)
{
    struct s3_list_page *pg = st->page;
    size_t kept = 0, i = 0;
    int rc = 0;
    for (; i < pg->n_entries; i++) {
        rc = decode_in_place(&pg->entries[i].key);
        if (rc == EILSEQ && (rc = skip_key(st, pg->entries[i].key)) == 0)
            continue;
        if (rc)
            break;
        pg->entries[kept++] = pg->entries[i];
    }
    for (; i < pg->n_entries; i++) /* after an error: keep the rest for freeing */
        pg->entries[kept++] = pg->entries[i];
    pg->n_entries = kept;
    return rc;
}

static int decode_prefixes(struct list_state *st)
{
    struct s3_list_page *pg = st->page;
    size_t kept = 0, i = 0;
    int rc = 0;
    for (; i < pg->n_prefixes; i++) {
        rc = decode_in_place(&pg->prefixes[i]);
        if (rc == EILSEQ && (rc = skip_key(st, pg->prefixes[i])) == 0)
            continue;
        if (rc)
            break;
        pg->prefixes[kept++] = pg->prefixes[i];
    }
    for (; i < pg->n_prefixes; i++)
        pg->prefixes[kept++] = pg->prefixes[i];
    pg->n_prefixes = kept;
    return rc;
}

int s3_xml_parse_list_v2(const char *xml, size_t len, struct s3_list_page *page)
{
    memset(page, 0, sizeof(*page));
    struct list_state st = {.page = page};
    struct xml_events ev = {&st, list_start, list_text, list_end};
    int rc = xml_walk(xml, len, &ev);
    free(st.cur.key);
    free(st.cur_prefix);
    if (rc == 0 && st.url_encoded)
        rc = decode_entries(&st);
    if (rc == 0 && st.url_encoded)
        rc = decode_prefixes(&st);
    if (rc)
        s3_list_page_free(page);
    return rc;
}

void s3_list_page_free(struct s3_list_page *page)
{
    for (size_t i = 0; i < page->n_entries; i++)
        free(page->entries[i].key);
    free(page->entries);
    for (size_t i = 0; i < page->n_prefixes; i++)
        free(page->prefixes[i]);
    free(page->prefixes);
    for (size_t i = 0; i < page->n_skipped; i++)
        free(page->skipped[i]);
    free(page->skipped);
    free(page->next_token);
    memset(page, 0, sizeof(*page));
}

/* ---- single values ------------------------------------------------------ */

struct one_value {
    const char *want;
    int depth;
    char *value;
};

static int one_text(void *arg, const char *name, int depth, const char *text)
{
    struct one_value *st = arg;
    if (depth == st->depth && strcmp(name, st->want) == 0 && !st->value)
        if (!(st->value = strdup(text)))
            return ENOMEM;
    return 0;
}

static int find_value(const char *xml, size_t len, const char *want, int depth, char **out)
{
    struct one_value st = {want, depth, NULL};
    struct xml_events ev = {&st, NULL, one_text, NULL};
    int rc = xml_walk(xml, len, &ev);
    if (rc == 0 && !st.value)
        rc = EPROTO;
    if (rc) {
        free(st.value);
        return rc;
    }
    *out = st.value;
    return 0;
}

int s3_xml_parse_upload_id(const char *xml, size_t len, char **upload_id)
{
    return find_value(xml, len, "UploadId", 1, upload_id);
}

int s3_xml_parse_etag(const char *xml, size_t len, char *etag)
{
    char *v;
    int rc = find_value(xml, len, "ETag", 1, &v);
    if (rc)
        return rc;
    rc = etag_field(etag, v);
    free(v);
    return rc;
}

int s3_xml_parse_checksum(const char *xml, size_t len, const char *element, char *out, size_t n)
{
    char *v = NULL;
    out[0] = '\0';
    int rc = find_value(xml, len, element, 1, &v);
    if (rc == EPROTO)
        return 0; /* none in the answer */
    if (rc)
        return rc;
    /* it goes back into the Complete document: base64 only, and short */
    size_t vl = strlen(v);
    rc = vl < n && strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
                       vl
             ? 0
             : EBADMSG;
    if (!rc)
        memcpy(out, v, vl + 1);
    free(v);
    return rc;
}

/* ---- DeleteResult ------------------------------------------------------- */

struct delete_state {
    const char *const *keys;
    size_t n;
    int *errs;
    bool in_error;
    char *key;
    char code[64];
};

static int delete_start(void *arg, const char *name, int depth)
{
    struct delete_state *st = arg;
    if (depth == 1 && strcmp(name, "Error") == 0) {
        st->in_error = true;
        free(st->key);
        st->key = NULL;
        st->code[0] = '\0';
    }
    return 0;
}

static int delete_text(void *arg, const char *name, int depth, const char *text)
{
    struct delete_state *st = arg;
    if (!st->in_error || depth != 2)
        return 0;
    if (strcmp(name, "Key") == 0) {
        free(st->key);
        if (!(st->key = strdup(text)))
            return ENOMEM;
    } else if (strcmp(name, "Code") == 0) {
        copy_field(st->code, sizeof(st->code), text);
    }
    return 0;
}

static int delete_end(void *arg, const char *name, int depth)
{
    struct delete_state *st = arg;
    if (depth != 1 || !st->in_error || strcmp(name, "Error") != 0)
        return 0;
    st->in_error = false;
    int e = strcmp(st->code, "AccessDenied") == 0 ? EACCES : EIO;
    for (size_t i = 0; st->key && i < st->n; i++)
        if (strcmp(st->keys[i], st->key) == 0 && st->errs)
            st->errs[i] = e;
    return 0;
}

int s3_xml_parse_delete_result(const char *xml, size_t len, const char *const *keys, size_t n,
                               int *errs)
{
    if (errs)
        memset(errs, 0, n * sizeof(*errs));
    struct delete_state st = {.keys = keys, .n = n, .errs = errs};
    struct xml_events ev = {&st, delete_start, delete_text, delete_end};
    int rc = xml_walk(xml, len, &ev);
    free(st.key);
    return rc;
}

/* ---- ListMultipartUploads ----------------------------------------------- */

struct uploads_state {
    struct s3_upload_page *page;
    size_t cap;
    bool in_upload;
    struct s3_upload cur;
};

static int uploads_start(void *arg, const char *name, int depth)
{
    struct uploads_state *st = arg;
    if (depth == 1 && strcmp(name, "Upload") == 0) {
        st->in_upload = true;
        memset(&st->cur, 0, sizeof(st->cur));
    }
    return 0;
}

static int set_str(char **dst, const char *text)
{
    free(*dst);
    return (*dst = strdup(text)) ? 0 : ENOMEM;
}

static int uploads_text(void *arg, const char *name, int depth, const char *text)
{
    struct uploads_state *st = arg;
    struct s3_upload_page *pg = st->page;
    if (depth == 1) {
        if (strcmp(name, "IsTruncated") == 0)
            pg->truncated = strcmp(text, "true") == 0;
        else if (strcmp(name, "NextKeyMarker") == 0)
            return set_str(&pg->next_key_marker, text);
        else if (strcmp(name, "NextUploadIdMarker") == 0)
            return set_str(&pg->next_upload_id_marker, text);
        return 0;
    }
    if (depth != 2 || !st->in_upload)
        return 0;
    if (strcmp(name, "Key") == 0)
        return set_str(&st->cur.key, text);
    if (strcmp(name, "UploadId") == 0)
        return set_str(&st->cur.upload_id, text);
    if (strcmp(name, "Initiated") == 0)
        st->cur.initiated_known = util_parse_iso8601(text, &st->cur.initiated) == 0;
    return 0;
}

static int uploads_end(void *arg, const char *name, int depth)
{
    struct uploads_state *st = arg;
    struct s3_upload_page *pg = st->page;
    if (depth != 1 || !st->in_upload || strcmp(name, "Upload") != 0)
        return 0;
    st->in_upload = false;
    if (!st->cur.key || !st->cur.upload_id)
        return EPROTO;
    if (util_grow((void **)&pg->uploads, &st->cap, pg->n_uploads + 1, sizeof(*pg->uploads)))
        return ENOMEM;
    pg->uploads[pg->n_uploads++] = st->cur;
    memset(&st->cur, 0, sizeof(st->cur));
    return 0;
}

int s3_xml_parse_list_uploads(const char *xml, size_t len, struct s3_upload_page *page)
{
    memset(page, 0, sizeof(*page));
    struct uploads_state st = {.page = page};
    struct xml_events ev = {&st, uploads_start, uploads_text, uploads_end};
    int rc = xml_walk(xml, len, &ev);
    free(st.cur.key);
    free(st.cur.upload_id);
    if (rc)
        s3_upload_page_free(page);
    return rc;
}

void s3_upload_page_free(struct s3_upload_page *page)
{
    for (size_t i = 0; i < page->n_uploads; i++) {
        free(page->uploads[i].key);
        free(page->uploads[i].upload_id);
    }
    free(page->uploads);
    free(page->next_key_marker);
    free(page->next_upload_id_marker);
    memset(page, 0, sizeof(*page));
}

/* ---- STS AssumeRoleWithWebIdentity -------------------------------------- */

struct sts_state {
    struct s3_credentials *cr;
    struct s3_error *err;
    bool is_error;
    bool in_creds;
};

static int sts_start(void *arg, const char *name, int depth)
{
    struct sts_state *st = arg;
    if (depth == 0)
        st->is_error = strcmp(name, "ErrorResponse") == 0 || strcmp(name, "Error") == 0;
    if (strcmp(name, "Credentials") == 0)
        st->in_creds = true;
    return 0;
}

static int sts_text(void *arg, const char *name, int depth, const char *text)
{
    struct sts_state *st = arg;
    if (st->is_error) {
        if (st->err && strcmp(name, "Code") == 0)
            copy_field(st->err->code, sizeof(st->err->code), text);
        else if (st->err && strcmp(name, "Message") == 0)
            copy_field(st->err->message, sizeof(st->err->message), text);
        return 0;
    }
    if (!st->in_creds)
        return 0;
    if (strcmp(name, "AccessKeyId") == 0)
        return set_str(&st->cr->access_key, text);
    if (strcmp(name, "SecretAccessKey") == 0)
        return set_str(&st->cr->secret_key, text);
    if (strcmp(name, "SessionToken") == 0)
        return set_str(&st->cr->session_token, text);
    if (strcmp(name, "Expiration") == 0)
        util_parse_iso8601(text, &st->cr->expiration);
    return 0;
}

static int sts_end(void *arg, const char *name, int depth)
{
    struct sts_state *st = arg;
    if (strcmp(name, "Credentials") == 0)
        st->in_creds = false;
    return 0;
}

int s3_xml_parse_sts(const char *xml, size_t len, struct s3_credentials *out, struct s3_error *err)
{
    memset(out, 0, sizeof(*out));
    struct sts_state st = {.cr = out, .err = err};
    struct xml_events ev = {&st, sts_start, sts_text, sts_end};
    int rc = xml_walk(xml, len, &ev);
    return rc == 0 && st.is_error ? EACCES : rc;
}
