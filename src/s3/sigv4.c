/* sigv4.c — AWS Signature Version 4 for S3, header form.
 *
 * The idea: the server rebuilds a canonical form of the request (method,
 * encoded path, sorted encoded query, sorted signed headers, payload hash),
 * hashes it, and checks an HMAC chain keyed by the secret and scoped to the
 * date, region and service.  We build exactly the same canonical request.
 * S3's rules differ from other services in two ways that matter: the path is
 * encoded once and never normalised (`a//b` and `./` stay as they are), and
 * the payload hash is sent in x-amz-content-sha256 and signed. */
#include "s3/s3_private.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char hexlow[] = "0123456789abcdef";

static void to_hex(const unsigned char *bin, size_t n, char *hex)
{
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = hexlow[bin[i] >> 4];
        hex[2 * i + 1] = hexlow[bin[i] & 15];
    }
    hex[2 * n] = '\0';
}

void s3_md5_base64(const void *data, size_t len, char *b64)
{
    unsigned char md[16];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL);
    EVP_EncodeBlock((unsigned char *)b64, md, 16);
}

int s3_multipart_etag(const struct s3_part *parts, size_t n, char *out)
{
    unsigned char *bin = malloc(n ? n * 16 : 1);
    if (!bin)
        return ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *e = parts[i].etag;
        if (*e == '"')
            e++;
        for (int k = 0; k < 16; k++) {
            unsigned v;
            if (sscanf(e + 2 * k, "%2x", &v) != 1) {
                free(bin);
                return EINVAL; /* not an MD5: the server's ETags are opaque */
            }
            bin[i * 16 + (size_t)k] = (unsigned char)v;
        }
    }
    unsigned char md[16];
    unsigned int mdlen = 0;
    EVP_Digest(bin, n * 16, md, &mdlen, EVP_md5(), NULL);
    free(bin);
    int pos = snprintf(out, 80, "\"");
    for (int k = 0; k < 16; k++)
        pos += snprintf(out + pos, (size_t)(80 - pos), "%02x", md[k]);
    snprintf(out + pos, (size_t)(80 - pos), "-%zu\"", n);
    return 0;
}

void s3_amz_date(int64_t t, char *out)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* ---- canonical request ------------------------------------------------- */

struct enc_pair {
    char *name;
    char *value;
};

static int cmp_pair(const void *a, const void *b)
{
    const struct enc_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static char *encode_dup(const char *s)
{
    struct buf b = BUF_INIT;
    if (util_pct_encode(&b, s ? s : "", s ? strlen(s) : 0, false))
        return NULL;
    return buf_steal(&b);
}

int s3_canonical_query(struct buf *out, const struct s3_kv *query, size_t n)
{
    if (n == 0)
        return 0;
    struct enc_pair *pairs = calloc(n, sizeof(*pairs));
    if (!pairs)
        return ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        pairs[i].name = encode_dup(query[i].name);
        pairs[i].value = encode_dup(query[i].value);
        if (!pairs[i].name || !pairs[i].value)
            rc = ENOMEM;
    }
    if (!rc) {
        qsort(pairs, n, sizeof(*pairs), cmp_pair);
        for (size_t i = 0; i < n && !rc; i++)
            rc = buf_printf(out, "%s%s=%s", i ? "&" : "", pairs[i].name, pairs[i].value);
    }
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].name);
        free(pairs[i].value);
    }
    free(pairs);
    return rc;
}

struct canon_header {
    char *name;        /* lower case */
    const char *value; /* raw */
};

static int cmp_header(const void *a, const void *b)
{
    return strcmp(((const struct canon_header *)a)->name, ((const struct canon_header *)b)->name);
}

/* Value with leading/trailing spaces trimmed and inner runs collapsed. */
static int append_header_value(struct buf *out, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    bool space = false;
    int rc = 0;
    for (; *v && !rc; v++) {
        if (*v == ' ' || *v == '\t') {
            space = true;
            continue;
        }
        if (space)
            rc = buf_append(out, " ", 1);
        space = false;
        if (!rc)
            rc = buf_append(out, v, 1);
    }
    return rc;
}

/* Sorted, lower-cased headers; caller frees each name and the array. */
static int sorted_headers(const struct s3_sign_input *in, struct canon_header **out)
{
    struct canon_header *h = calloc(in->n_headers ? in->n_headers : 1, sizeof(*h));
    if (!h)
        return ENOMEM;
    for (size_t i = 0; i < in->n_headers; i++) {
        h[i].name = strdup(in->headers[i].name);
        if (!h[i].name) {
            while (i--)
                free(h[i].name);
            free(h);
            return ENOMEM;
        }
        for (char *p = h[i].name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        h[i].value = in->headers[i].value;
    }
    qsort(h, in->n_headers, sizeof(*h), cmp_header);
    *out = h;
    return 0;
}

static int signed_headers_list(struct buf *out, const struct canon_header *h, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = buf_printf(out, "%s%s", i ? ";" : "", h[i].name);
    return rc;
}

int s3_canonical_request(struct buf *out, const struct s3_sign_input *in)
{
    struct canon_header *h;
    int rc = sorted_headers(in, &h);
    if (rc)
        return rc;
    rc = buf_printf(out, "%s\n%s\n", in->method, in->canonical_uri);
    if (!rc)
        rc = s3_canonical_query(out, in->query, in->n_query);
    if (!rc)
        rc = buf_puts(out, "\n");
    for (size_t i = 0; i < in->n_headers && !rc; i++) {
        rc = buf_printf(out, "%s:", h[i].name);
        if (!rc)
            rc = append_header_value(out, h[i].value);
        if (!rc)
            rc = buf_puts(out, "\n");
    }
    if (!rc)
        rc = buf_puts(out, "\n");
    if (!rc)
        rc = signed_headers_list(out, h, in->n_headers);
    if (!rc)
        rc = buf_printf(out, "\n%s", in->payload_hash);
    for (size_t i = 0; i < in->n_headers; i++)
        free(h[i].name);
    free(h);
    return rc;
}

static void hmac(const void *key, size_t keylen, const char *msg, unsigned char out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &len);
}

int s3_sigv4_authorization(struct buf *out, const struct s3_sign_input *in, char *signature_out)
{
    struct buf canon = BUF_INIT, sts = BUF_INIT, key0 = BUF_INIT, sh = BUF_INIT;
    struct canon_header *h = NULL;
    char date[9], canon_hash[65], sig[65];
    unsigned char k1[32], k2[32], k3[32], k4[32], s[32];
    int rc = s3_canonical_request(&canon, in);
    if (rc)
        goto out;
    memcpy(date, in->amz_date, 8);
    date[8] = '\0';
    util_sha256_hex(canon.data, canon.len, canon_hash);
    rc = buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", in->amz_date, date,
                    in->region, in->service, canon_hash);
    if (!rc)
        rc = buf_printf(&key0, "AWS4%s", in->secret_key);
    if (rc)
        goto out;
    hmac(key0.data, key0.len, date, k1);
    hmac(k1, 32, in->region, k2);
    hmac(k2, 32, in->service, k3);
    hmac(k3, 32, "aws4_request", k4);
    hmac(k4, 32, sts.data, s);
    to_hex(s, 32, sig);
    if ((rc = sorted_headers(in, &h)))
        goto out;
    if ((rc = signed_headers_list(&sh, h, in->n_headers)))
        goto out;
    rc = buf_printf(out,
                    "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, "
                    "SignedHeaders=%s, Signature=%s",
                    in->access_key, date, in->region, in->service, sh.data, sig);
    if (!rc && signature_out)
        memcpy(signature_out, sig, 65);
out:
    if (h) {
        for (size_t i = 0; i < in->n_headers; i++)
            free(h[i].name);
        free(h);
    }
    if (key0.data)
        memset(key0.data, 0, key0.len);
    memset(k1, 0, sizeof(k1));
    memset(k4, 0, sizeof(k4));
    buf_free(&key0);
    buf_free(&canon);
    buf_free(&sts);
    buf_free(&sh);
    return rc;
}
