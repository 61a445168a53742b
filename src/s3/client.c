/* client.c — the S3 client: one request loop and the operations built on it.
 *
 * Every operation fills a `struct s3_req` and hands it to s3_execute(), the
 * only place that talks to the HTTP engine.  It signs each attempt afresh
 * (date, credentials, region may change between attempts), routes the
 * response body (to the caller's sink for a successful GET, to a buffer
 * otherwise), turns the outcome into an errno, and decides whether to try
 * again: transient failures are retried with backoff inside a client-wide
 * retry budget; a region hint or a skewed clock is corrected once; a GET
 * that broke midway resumes where it stopped, pinned to the ETag it started
 * with so that bytes of two versions are never mixed. */
#include "s3/s3_private.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define RESP_BODY_MAX (64u << 20) /* a listing page or an error document */
#define MAX_QUERY 8
#define MAX_HEADERS 56 /* 32 metadata; the type, copy, policy, SSE-C and checksum headers */
#define CREDS_REFRESH_BEFORE_S 300
#define CREDS_REFRESH_RETRY_MS 10000
#define GOT_ALL_BYTES EALREADY /* private: the sink window is full */

struct s3_client {
    struct http_engine *http;
    char *scheme;    /* "http" or "https" */
    char *host;      /* "host[:port]" of the endpoint */
    char *base_path; /* path prefix of the endpoint, "" usually */
    bool endpoint_from_region;
    char *bucket;
    bool path_style;
    bool access_point; /* bucket is an access point ARN: host is its
                        * endpoint, paths hold no bucket, the region is
                        * the ARN's and no server hint changes it */
    bool public_bucket;
    bool unsigned_payload;
    bool requester_pays;
    struct s3_object_policy policy; /* strings owned here */
    struct s3_retry_policy retry;
    struct s3_retry_budget budget;
    struct s3_creds_request creds_rq; /* strings owned here */
    char creds_source[320];           /* "profile-assume-role:NAME": NAME is read back
                                       * to refresh (s3_creds_refresh) */
    char *access_key_id_shown;        /* for messages; never the secret */
    atomic_bool warned_range;
    pthread_mutex_t archived_lock;
    char *archived_told; /* the last key logged as archived; protected by archived_lock */
    enum s3_checksum checksum;
    bool sse_c;                 /* send the customer key (SSE-C) */
    char sse_c_key_b64[48];     /* secret: wiped at free, never logged */
    char sse_c_key_md5_b64[32]; /* base64 of its MD5 */

    pthread_mutex_t mutex;
    pthread_cond_t refreshed;
    char region[64];              /* protected by mutex */
    char *region_host;            /* protected by mutex (default endpoint) */
    struct s3_credentials creds;  /* protected by mutex */
    bool refreshing;              /* protected by mutex */
    uint64_t last_refresh_try_ms; /* protected by mutex */
    int64_t clock_skew;           /* server minus local, seconds; protected by mutex */
};

/* One logical request, possibly several attempts. */
struct s3_req {
    const char *op;
    unsigned op_index; /* for metrics: s3_metrics_op(op) */
    const char *method;
    const char *key; /* NULL: the bucket itself */
    struct s3_kv query[MAX_QUERY];
    size_t n_query;
    struct s3_kv headers[MAX_HEADERS];
    size_t n_headers;
    char *owned[MAX_HEADERS]; /* header names we allocated */
    size_t n_owned;
    const void *body;
    size_t body_len;
    bool body_may_be_error;       /* a 200 may carry an <Error> */
    char payload_hash[65];        /* hex SHA-256 of the body, once known */
    char checksum[64];            /* base64 of the body's x-amz-checksum-* */
    bool unsigned_body;           /* signed as UNSIGNED-PAYLOAD (body_unsigned) */
    struct s3_call_limits limits; /* zero: the client's settings */

    /* GET: the window of the object wanted, delivered to sink */
    s3_sink_fn sink;
    void *sink_arg;
    uint64_t want_off, want_len; /* want_len S3_TO_END: to the end */
    uint64_t delivered;
    char pinned_etag[80]; /* ETag of the first response */
    bool ranged;
    s3_info_fn on_info; /* told the headers once, before the body */
    void *info_arg;
    bool info_told;
    struct whole_sum *sum; /* a whole-object GET's checksum, or NULL */

    /* results */
    struct buf resp;             /* body of a non-GET or error response */
    char request_id[96];         /* of the last attempt's answer */
    struct s3_object_info *info; /* filled from headers, may be NULL */
    char etag[80];
    char bucket_region[64];
};

/* What one attempt saw. */
struct s3_attempt {
    struct s3_client *c;
    struct s3_req *req;
    long status;
    int64_t server_date;
    uint64_t content_length;
    bool have_length;
    uint64_t range_start, range_total;
    bool have_range, have_total;
    bool size_refused; /* a size beyond S3_MAX_OBJECT_SIZE */
    uint64_t pos;      /* object offset of the next body byte */
    bool to_sink;
    struct s3_object_info info;
    size_t meta_cap;
    char request_id[96];
    bool sent;         /* it reached http_perform: count it */
    char sum_name[24]; /* a full-object x-amz-checksum-* of the answer */
    char sum_value[64];
    const char *refused; /* a header whose value we refused */
};

/* ---- endpoint and addressing ------------------------------------------- */

static bool host_is_ip_or_localhost(const char *host)
{
    if (host[0] == '[')
        return true; /* IPv6 literal */
    size_t n = strcspn(host, ":");
    if (n == 9 && strncmp(host, "localhost", 9) == 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)host[i]) && host[i] != '.')
            return false;
    return true;
}

static bool dns_safe_bucket(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || strchr(b, '.'))
        return false; /* dots break TLS wildcard certificates */
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '-'))
            return false;
    return b[0] != '-' && b[n - 1] != '-';
}

static int parse_endpoint(struct s3_client *c, const char *endpoint, struct s3_error *err)
{
    const char *p = strstr(endpoint, "://");
    if (!p || (strncmp(endpoint, "http", 4) != 0) || (p - endpoint != 4 && p - endpoint != 5)) {
        snprintf(err->message, sizeof(err->message),
                 "endpoint %s must start with http:// or https://", endpoint);
        return EINVAL;
    }
    c->scheme = util_strndup(endpoint, (size_t)(p - endpoint));
    const char *host = p + 3;
    size_t hlen = strcspn(host, "/?#");
    if (hlen == 0) {
        snprintf(err->message, sizeof(err->message), "endpoint %s has no host", endpoint);
        return EINVAL;
    }
    c->host = util_strndup(host, hlen);
    const char *path = host + hlen;
    size_t plen = strcspn(path, "?#");
    while (plen && path[plen - 1] == '/')
        plen--;
    c->base_path = util_strndup(path, plen);
    if (!c->scheme || !c->host || !c->base_path)
        return ENOMEM;
    if (strcmp(c->scheme, "https") != 0 && strcmp(c->scheme, "http") != 0) {
        snprintf(err->message, sizeof(err->message),
                 "endpoint %s must start with http:// or https://", endpoint);
        return EINVAL;
    }
    return 0;
}

bool s3_region_valid(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > 32 || r[0] == '-' || r[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '-'))
            return false;
    return true;
}

/* One field of an ARN, up to the next ':' (the last field: to the end),
 * copied into out (size n).  false when it does not fit. */
static bool arn_field(const char **p, char *out, size_t n, bool last)
{
    size_t len = last ? strlen(*p) : strcspn(*p, ":");
    if (len >= n || (!last && (*p)[len] != ':'))
        return false;
    memcpy(out, *p, len);
    out[len] = '\0';
    *p += len + !last;
    return true;
}

/* An access point's name: 3 to 50 of [a-z0-9-], a letter or digit at
 * each end (the rules of CreateAccessPoint). */
static bool access_point_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n < 3 || n > 50 || name[0] == '-' || name[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) || name[i] == '-'))
            return false;
    return true;
}

/* Whether `region` belongs to `partition`: China's regions are cn-*, the
 * GovCloud ones us-gov-*, and the commercial partition has neither. */
static bool region_in_partition(const char *partition, const char *region)
{
    bool cn = strncmp(region, "cn-", 3) == 0, gov = strncmp(region, "us-gov-", 7) == 0;
    if (strcmp(partition, "aws-cn") == 0)
        return cn;
    if (strcmp(partition, "aws-us-gov") == 0)
        return gov;
    return !cn && !gov;
}

int s3_access_point_parse(const char *arn, struct s3_access_point *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    char service[16], resource[80];
    const char *p = arn;
    if (strncmp(p, "arn:", 4) != 0) {
        *why = "not an ARN (arn:PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME)";
        return EINVAL;
    }
    p += 4;
    if (!arn_field(&p, out->partition, sizeof(out->partition), false) ||
        (strcmp(out->partition, "aws") != 0 && strcmp(out->partition, "aws-cn") != 0 &&
         strcmp(out->partition, "aws-us-gov") != 0)) {
        *why = "the partition is not aws, aws-cn or aws-us-gov";
        return EINVAL;
    }
    if (!arn_field(&p, service, sizeof(service), false) || strcmp(service, "s3") != 0) {
        *why = "the service is not s3 (Outposts and Object Lambda access points are not "
               "supported)";
        return EINVAL;
    }
    if (!arn_field(&p, out->region, sizeof(out->region), false) || !out->region[0]) {
        *why = out->region[0] ? "the region is not a region name"
                              : "no region (multi-Region access points are not supported)";
        return EINVAL;
    }
    if (!s3_region_valid(out->region) || !region_in_partition(out->partition, out->region)) {
        *why = "the region is not a region name of the ARN's partition";
        return EINVAL;
    }
    bool digits = arn_field(&p, out->account, sizeof(out->account), false);
    for (size_t i = 0; digits && i < 12; i++)
        digits = isdigit((unsigned char)out->account[i]) != 0;
    if (!digits || strlen(out->account) != 12) {
        *why = "the account is not 12 digits";
        return EINVAL;
    }
    if (!arn_field(&p, resource, sizeof(resource), true) ||
        strncmp(resource, "accesspoint/", 12) != 0) {
        *why = "the resource is not accesspoint/NAME";
        return EINVAL;
    }
    size_t nlen = strlen(resource + 12);
    if (nlen < sizeof(out->name))
        memcpy(out->name, resource + 12, nlen + 1);
    if (nlen >= sizeof(out->name) || !access_point_name_valid(out->name)) {
        *why = "the access point name is not 3 to 50 of a-z, 0-9 and '-' (not at either end)";
        return EINVAL;
    }
    return 0;
}

int s3_access_point_host(const struct s3_access_point *ap, struct buf *out)
{
    return buf_printf(out, "%s-%s.s3-accesspoint.%s.amazonaws.com%s", ap->name, ap->account,
                      ap->region, strcmp(ap->partition, "aws-cn") == 0 ? ".cn" : "");
}

/* `region` is the configured one, or a server's hint that passed
 * s3_region_valid. */
static int set_region_locked(struct s3_client *c, const char *region)
{
    if (region != c->region) /* s3_client_new passes c->region to remake the host */
        snprintf(c->region, sizeof(c->region), "%s", region);
    if (!c->endpoint_from_region)
        return 0;
    struct buf b = BUF_INIT;
    if (buf_printf(&b, "s3.%s.amazonaws.com", region))
        return ENOMEM;
    free(c->region_host);
    c->region_host = buf_steal(&b);
    return c->region_host ? 0 : ENOMEM;
}

/* URL and canonical URI for a request; host is what goes in Host. */
static int build_target(struct s3_client *c, const struct s3_req *req, struct buf *url,
                        struct buf *path, struct buf *host)
{
    pthread_mutex_lock(&c->mutex);
    const char *h = c->endpoint_from_region ? c->region_host : c->host;
    int rc = c->path_style || c->access_point ? buf_puts(host, h)
                                              : buf_printf(host, "%s.%s", c->bucket, h);
    pthread_mutex_unlock(&c->mutex);
    if (!rc)
        rc = buf_puts(path, c->base_path);
    if (!rc && c->path_style) {
        rc = buf_puts(path, "/");
        if (!rc)
            rc = util_pct_encode(path, c->bucket, strlen(c->bucket), false);
        if (!rc && req->key)
            rc = buf_puts(path, "/");
    } else if (!rc) {
        rc = buf_puts(path, "/");
    }
    if (!rc && req->key)
        rc = util_pct_encode(path, req->key, strlen(req->key), true);
    if (!rc)
        rc = buf_printf(url, "%s://%s%s", c->scheme, host->data, path->data);
    if (!rc && req->n_query) {
        rc = buf_puts(url, "?");
        if (!rc)
            rc = s3_canonical_query(url, req->query, req->n_query);
    }
    return rc;
}

/* ---- credentials -------------------------------------------------------- */

/* Copy the current credentials for one signature, refreshing them first
 * when they are about to expire.  One thread refreshes; the others keep
 * signing with the old ones while those are still valid. */
static int creds_snapshot(struct s3_client *c, struct s3_credentials *out, struct s3_error *err)
{
    pthread_mutex_lock(&c->mutex);
    for (;;) {
        int64_t now = (int64_t)time(NULL);
        bool expiring = c->creds.expiration && c->creds.expiration - now < CREDS_REFRESH_BEFORE_S;
        bool expired = c->creds.expiration && c->creds.expiration <= now;
        if (expiring && !c->refreshing &&
            (expired || util_now_ms() - c->last_refresh_try_ms >= CREDS_REFRESH_RETRY_MS)) {
            c->refreshing = true;
            c->last_refresh_try_ms = util_now_ms();
            pthread_mutex_unlock(&c->mutex);
            struct s3_credentials fresh;
            char why[512] = "";
            int rc = s3_creds_refresh(&c->creds_rq, c->creds_source, &fresh, why, sizeof(why));
            pthread_mutex_lock(&c->mutex);
            c->refreshing = false;
            if (rc == 0) {
                s3_credentials_clear(&c->creds);
                c->creds = fresh;
                log_info("credentials from %s refreshed", c->creds_source);
            } else {
                log_warn("could not refresh credentials: %s", why);
            }
            pthread_cond_broadcast(&c->refreshed);
            continue;
        }
        if (expired && c->refreshing) {
            pthread_cond_wait(&c->refreshed, &c->mutex);
            continue;
        }
        break;
    }
    int rc = 0;
    memset(out, 0, sizeof(*out));
    out->access_key = strdup(c->creds.access_key);
    out->secret_key = strdup(c->creds.secret_key);
    if (c->creds.session_token)
        out->session_token = strdup(c->creds.session_token);
    if (!out->access_key || !out->secret_key || (c->creds.session_token && !out->session_token))
        rc = ENOMEM;
    pthread_mutex_unlock(&c->mutex);
    if (rc) {
        s3_credentials_clear(out);
        snprintf(err->message, sizeof(err->message), "out of memory");
    }
    return rc;
}

/* ---- checksums ----------------------------------------------------------- */

static void req_header(struct s3_req *req, const char *name, const char *value);

/* How each algorithm is named in headers and in CompleteMultipartUpload's
 * document, by enum s3_checksum. */
static const struct {
    const char *header;  /* x-amz-checksum-… */
    const char *algo;    /* x-amz-checksum-algorithm's value */
    const char *element; /* <Part>'s child */
} checksum_names[] = {
    [S3_CHECKSUM_CRC32C] = {"x-amz-checksum-crc32c", "CRC32C", "ChecksumCRC32C"},
    [S3_CHECKSUM_CRC64NVME] = {"x-amz-checksum-crc64nvme", "CRC64NVME", "ChecksumCRC64NVME"},
    [S3_CHECKSUM_SHA256] = {"x-amz-checksum-sha256", "SHA256", "ChecksumSHA256"},
};

/* The big-endian bytes of a CRC, in base64, as S3 writes checksums. */
static void crc_base64(uint64_t v, int bytes, char *out)
{
    unsigned char be[8];
    for (int i = 0; i < bytes; i++)
        be[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    util_base64_encode(be, (size_t)bytes, out);
}

static void hex_of(const unsigned char *bin, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[bin[i] >> 4];
        hex[2 * i + 1] = digits[bin[i] & 15];
    }
    hex[2 * n] = '\0';
}

/* Whether an upload body goes unsigned (x-amz-content-sha256:
 * UNSIGNED-PAYLOAD), as the AWS SDKs send it: over https, where TLS guards
 * the bytes on the way and the x-amz-checksum-* that S3 checks guards them
 * end to end.  It saves a SHA-256 pass over every byte written, the
 * largest single cost of a write (issue 21).  Over http the signed hash
 * stays: a CRC stops a flipped bit, not someone on the path who rewrites
 * the body and its CRC.  With checksum=off the hash is the only check, and
 * with sha256 it is the checksum's own digest, so both are signed. */
static bool body_unsigned(const struct s3_client *c)
{
    return (c->checksum == S3_CHECKSUM_CRC32C || c->checksum == S3_CHECKSUM_CRC64NVME) &&
           strcmp(c->scheme, "https") == 0;
}

/* Bytes of the body checksummed and hashed together: the piece is still
 * in the CPU's cache for the second walk, so the body is read from memory
 * once, not once per digest.  The SHA-256 walks it first: it is slow
 * enough (1.4 GB/s) that the CPU's prefetch hides the reads from memory,
 * where the CRC (10 GB/s and more) would stall on them; hashed in this
 * order a body cost 0.03-0.05 core-s/GiB less (issue 21). */
#define BODY_PIECE (64u << 10)

/* An upload body's x-amz-checksum-* value (base64, into b64, 64 bytes)
 * and, when payload_hex is not NULL, the hex SHA-256 the signature needs
 * (65 bytes), in one walk over the body.  With SHA256 the checksum is that
 * same digest. */
static void body_checksum(enum s3_checksum algo, const void *data, size_t len, char *b64,
                          char *payload_hex)
{
    const char *p = data ? data : "";
    bool sha = algo == S3_CHECKSUM_SHA256 || payload_hex;
    EVP_MD_CTX *ctx = sha ? EVP_MD_CTX_new() : NULL;
    if (ctx && !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    uint32_t crc32c = ~0u;
    uint64_t crc64 = 0;
    for (size_t off = 0; off < len;) {
        size_t n = len - off < BODY_PIECE ? len - off : BODY_PIECE;
        if (ctx)
            EVP_DigestUpdate(ctx, p + off, n);
        if (algo == S3_CHECKSUM_CRC32C)
            crc32c = util_crc32c(p + off, n, crc32c);
        else if (algo == S3_CHECKSUM_CRC64NVME)
            crc64 = util_crc64nvme(p + off, n, crc64);
        off += n;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool have_md = ctx && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32;
    EVP_MD_CTX_free(ctx);
    if (algo == S3_CHECKSUM_CRC32C)
        crc_base64(~crc32c, 4, b64);
    else if (algo == S3_CHECKSUM_CRC64NVME)
        crc_base64(crc64, 8, b64);
    else if (algo == S3_CHECKSUM_SHA256 && have_md)
        util_base64_encode(md, 32, b64);
    if (payload_hex && have_md)
        hex_of(md, 32, payload_hex); /* else wire_sign hashes the body itself */
}

/* The checksum of a body we send (PutObject, UploadPart):
 * x-amz-checksum-<algo>.  Not x-amz-sdk-checksum-algorithm: AWS documents
 * it as adding nothing outside its SDKs, and some S3-compatible stores
 * refuse it on UploadPart.  Nothing when the mount's checksum is off.  The
 * body's signed SHA-256 is computed in the same pass, unless the body goes
 * unsigned (body_unsigned) or unsigned at all (a public bucket). */
static void add_checksum_headers(struct s3_client *c, struct s3_req *req)
{
    if (c->checksum == S3_CHECKSUM_OFF)
        return;
    req->unsigned_body = body_unsigned(c);
    bool want_hash = !req->unsigned_body && !c->public_bucket;
    body_checksum(c->checksum, req->body, req->body_len, req->checksum,
                  want_hash ? req->payload_hash : NULL);
    req_header(req, checksum_names[c->checksum].header, req->checksum);
}

/* CreateMultipartUpload declares the algorithm of the parts' checksums;
 * CRC64NVME exists only as a full-object checksum (S3 combines the parts'
 * CRCs into the whole object's), the others are composite, S3's default. */
static void add_checksum_algorithm(struct s3_client *c, struct s3_req *req)
{
    if (c->checksum == S3_CHECKSUM_OFF)
        return;
    req_header(req, "x-amz-checksum-algorithm", checksum_names[c->checksum].algo);
    if (c->checksum == S3_CHECKSUM_CRC64NVME)
        req_header(req, "x-amz-checksum-type", "FULL_OBJECT");
}

/* SSE-C: the customer key of the object written or read. */
static void add_sse_c_headers(struct s3_client *c, struct s3_req *req)
{
    if (!c->sse_c)
        return;
    req_header(req, "x-amz-server-side-encryption-customer-algorithm", "AES256");
    req_header(req, "x-amz-server-side-encryption-customer-key", c->sse_c_key_b64);
    req_header(req, "x-amz-server-side-encryption-customer-key-md5", c->sse_c_key_md5_b64);
}

/* SSE-C of a copy's source (the mount has one key: the same). */
static void add_sse_c_copy_source_headers(struct s3_client *c, struct s3_req *req)
{
    if (!c->sse_c)
        return;
    req_header(req, "x-amz-copy-source-server-side-encryption-customer-algorithm", "AES256");
    req_header(req, "x-amz-copy-source-server-side-encryption-customer-key", c->sse_c_key_b64);
    req_header(req, "x-amz-copy-source-server-side-encryption-customer-key-md5",
               c->sse_c_key_md5_b64);
}

/* The key file named by cfg->sse_c_key_file, checked like passwd_file,
 * into the header values; the raw key and the file's text are wiped. */
static int client_sse_c(struct s3_client *c, const struct s3_config *cfg, struct s3_error *err)
{
    if (!cfg->sse_c_key_file)
        return 0;
    char *text = NULL;
    size_t len = 0;
    int rc = s3_secret_file_read("sse_c_key_file", cfg->sse_c_key_file, 4096, &text, &len,
                                 err->message, sizeof(err->message));
    if (rc)
        return rc;
    unsigned char key[S3_SSE_C_KEY_LEN], md[EVP_MAX_MD_SIZE];
    const char *why = "";
    rc = s3_sse_c_parse_key(text, len, key, &why);
    util_wipe_free(text);
    if (rc) {
        snprintf(err->message, sizeof(err->message), "sse_c_key_file %s: %s", cfg->sse_c_key_file,
                 why);
        return EACCES;
    }
    unsigned int n = 0;
    EVP_Digest(key, sizeof(key), md, &n, EVP_md5(), NULL);
    util_base64_encode(key, sizeof(key), c->sse_c_key_b64);
    util_base64_encode(md, 16, c->sse_c_key_md5_b64);
    explicit_bzero(key, sizeof(key));
    c->sse_c = true;
    if (strcmp(c->scheme, "https") != 0)
        log_warn("sse_c_key_file: the endpoint is plain http, so the SSE-C key crosses the "
                 "network unencrypted (AWS refuses SSE-C over http)");
    return 0;
}

/* A whole-object GET's running checksum, of the algorithm the answer
 * names (x-amz-checksum-mode: ENABLED asked for it). */
enum sum_algo { SUM_NONE, SUM_CRC32C, SUM_CRC32, SUM_CRC64NVME, SUM_SHA256 };

struct whole_sum {
    enum sum_algo algo; /* SUM_NONE: the answer gave none we can check */
    char name[24];      /* as in the header: "crc32c" */
    char expected[64];
    uint32_t crc32;
    uint64_t crc64;
    EVP_MD_CTX *sha;
};

/* The algorithm the first answer names, before any byte is counted (a
 * later attempt resumes with a Range and carries none). */
static void sum_pick(struct s3_req *req, const struct s3_attempt *a)
{
    struct whole_sum *s = req->sum;
    if (!s || s->algo != SUM_NONE || !a->sum_name[0] || req->delivered)
        return;
    enum sum_algo algo = strcasecmp(a->sum_name, "crc32c") == 0      ? SUM_CRC32C
                         : strcasecmp(a->sum_name, "crc32") == 0     ? SUM_CRC32
                         : strcasecmp(a->sum_name, "crc64nvme") == 0 ? SUM_CRC64NVME
                         : strcasecmp(a->sum_name, "sha256") == 0    ? SUM_SHA256
                                                                     : SUM_NONE;
    if (algo == SUM_SHA256) {
        s->sha = EVP_MD_CTX_new();
        if (!s->sha || !EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL)) {
            EVP_MD_CTX_free(s->sha);
            s->sha = NULL;
            return; /* not checked: no memory for it */
        }
    }
    s->algo = algo;
    s->crc32 = algo == SUM_CRC32C ? ~0u : (uint32_t)crc32(0, NULL, 0);
    snprintf(s->name, sizeof(s->name), "%s", a->sum_name);
    snprintf(s->expected, sizeof(s->expected), "%s", a->sum_value);
}

static void sum_update(struct whole_sum *s, const void *data, size_t n)
{
    switch (s->algo) {
    case SUM_CRC32C: s->crc32 = util_crc32c(data, n, s->crc32); break;
    case SUM_CRC32:
        for (size_t done = 0; done < n;) { /* zlib takes a uInt length */
            uInt step = n - done > (1u << 30) ? 1u << 30 : (uInt)(n - done);
            s->crc32 = (uint32_t)crc32(s->crc32, (const Bytef *)data + done, step);
            done += step;
        }
        break;
    case SUM_CRC64NVME: s->crc64 = util_crc64nvme(data, n, s->crc64); break;
    case SUM_SHA256: EVP_DigestUpdate(s->sha, data, n); break;
    case SUM_NONE: break;
    }
}

/* After a whole-object GET: EIO (logged) when the bytes delivered do not
 * match the checksum the server gave for them. */
static int sum_check(const struct s3_req *req, struct s3_error *err)
{
    struct whole_sum *s = req->sum;
    if (!s || s->algo == SUM_NONE)
        return 0;
    char got[64] = "";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    switch (s->algo) {
    case SUM_CRC32C: crc_base64(~s->crc32, 4, got); break;
    case SUM_CRC32: crc_base64(s->crc32, 4, got); break;
    case SUM_CRC64NVME: crc_base64(s->crc64, 8, got); break;
    case SUM_SHA256:
        EVP_DigestFinal_ex(s->sha, md, &n);
        util_base64_encode(md, n, got);
        break;
    case SUM_NONE: break;
    }
    if (strcmp(got, s->expected) == 0)
        return 0;
    char shown[UTIL_ESCAPED_SIZE(64)];
    log_error("GetObject %s: the bytes received do not match the object's %s checksum "
              "(server %s, computed %s, request id %s); refusing them",
              req->key, s->name, util_escape(shown, sizeof(shown), s->expected), got,
              req->request_id[0] ? req->request_id : "none");
    if (err)
        snprintf(err->message, sizeof(err->message),
                 "the bytes received do not match the object's %s checksum", s->name);
    return EIO;
}

/* ---- response handling (HTTP engine thread) ----------------------------- */

static int parse_content_range(const char *v, struct s3_attempt *a)
{
    /* "bytes 0-9/44", or "bytes *\/44" when the range was unsatisfiable */
    if (strncmp(v, "bytes ", 6) != 0)
        return 0;
    v += 6;
    char *end;
    if (*v != '*') {
        a->range_start = strtoull(v, &end, 10);
        a->have_range = end != v;
        v = strchr(v, '/');
    } else {
        v++;
    }
    if (v && *v == '/' && v[1] != '*') {
        if (s3_parse_size(v + 1, &a->range_total)) {
            a->size_refused = true;
            return EPROTO;
        }
        a->have_total = true;
    }
    return 0;
}

static int add_meta(struct s3_attempt *a, const char *name, const char *value)
{
    struct s3_object_info *in = &a->info;
    if (util_grow((void **)&in->meta, &a->meta_cap, in->n_meta + 1, sizeof(*in->meta)))
        return ENOMEM;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return ENOMEM;
    }
    for (char *p = n; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    in->meta[in->n_meta].name = n;
    in->meta[in->n_meta].value = v;
    in->n_meta++;
    return 0;
}

/* Values we keep and may send back in a header of our own (an ETag as
 * If-Match, the type, encoding and metadata of a copied object): a control
 * character in one would end that header and start another. */
static bool header_kept(const char *name)
{
    return strcasecmp(name, "ETag") == 0 || strcasecmp(name, "Content-Type") == 0 ||
           strcasecmp(name, "Content-Encoding") == 0 || util_istarts(name, "x-amz-meta-") ||
           util_istarts(name, "x-amz-server-side-encryption") ||
           strcasecmp(name, "x-amz-storage-class") == 0;
}

/* The object's encryption and storage class, kept for its copies. */
static int on_policy_header(struct s3_attempt *a, const char *name, const char *value)
{
    char **slot = strcasecmp(name, "x-amz-server-side-encryption") == 0 ? &a->info.sse
                  : strcasecmp(name, "x-amz-server-side-encryption-aws-kms-key-id") == 0
                      ? &a->info.sse_kms_key_id
                  : strcasecmp(name, "x-amz-storage-class") == 0 ? &a->info.storage_class
                                                                 : NULL;
    if (strcasecmp(name, "x-amz-server-side-encryption-bucket-key-enabled") == 0)
        a->info.sse_bucket_key = strcasecmp(value, "true") == 0;
    if (!slot)
        return 0;
    free(*slot);
    *slot = strdup(value);
    return *slot ? 0 : ENOMEM;
}

static int on_header(struct http_request *hr, const char *name, const char *value)
{
    struct s3_attempt *a = hr->arg;
    a->status = hr->status;
    if (header_kept(name) && util_has_control(value)) {
        a->refused = strcasecmp(name, "ETag") == 0       ? "ETag"
                     : util_istarts(name, "x-amz-meta-") ? "x-amz-meta-*"
                     : util_istarts(name, "x-amz-server-side-encryption")
                         ? "x-amz-server-side-encryption*"
                     : strcasecmp(name, "x-amz-storage-class") == 0 ? "x-amz-storage-class"
                                                                    : "Content-Type or -Encoding";
        return EPROTO; /* the whole answer is refused: the operation fails */
    }
    if (strcasecmp(name, "ETag") == 0)
        snprintf(a->info.etag, sizeof(a->info.etag), "%s", value);
    else if (strcasecmp(name, "Content-Length") == 0) {
        if (s3_parse_size(value, &a->content_length)) {
            a->size_refused = true;
            return EPROTO;
        }
        a->have_length = true;
    } else if (strcasecmp(name, "Content-Range") == 0)
        return parse_content_range(value, a);
    else if (strcasecmp(name, "Last-Modified") == 0)
        util_parse_http_date(value, &a->info.mtime);
    else if (strcasecmp(name, "Date") == 0)
        util_parse_http_date(value, &a->server_date);
    else if (strcasecmp(name, "Content-Type") == 0) {
        free(a->info.content_type);
        a->info.content_type = strdup(value);
    } else if (strcasecmp(name, "Content-Encoding") == 0) {
        free(a->info.content_encoding);
        a->info.content_encoding = strdup(value);
    } else if (strcasecmp(name, "x-amz-request-id") == 0)
        snprintf(a->request_id, sizeof(a->request_id), "%s", value);
    else if (strcasecmp(name, "x-amz-bucket-region") == 0)
        snprintf(a->req->bucket_region, sizeof(a->req->bucket_region), "%s", value);
    else if (util_istarts(name, "x-amz-meta-"))
        return add_meta(a, name + 11, value);
    else if (util_istarts(name, "x-amz-checksum-") && strcasecmp(name, "x-amz-checksum-type") &&
             !strchr(value, '-')) { /* "xxx-N": composite, not checkable from the bytes */
        snprintf(a->sum_name, sizeof(a->sum_name), "%s", name + 15);
        snprintf(a->sum_value, sizeof(a->sum_value), "%s", value);
    } else
        return on_policy_header(a, name, value);
    return 0;
}

/* A 2xx answer's headers, told to the caller once (req->on_info): its
 * metadata with the whole object's size.  From then on the request is
 * pinned to the ETag told, so that a retry cannot bring another version's
 * bytes under what was told. */
static void tell_info(struct s3_attempt *a)
{
    struct s3_req *req = a->req;
    if (!req->on_info || req->info_told)
        return;
    if (a->have_total)
        a->info.size = a->range_total;
    else if (a->have_length)
        a->info.size = a->content_length;
    req->info_told = true;
    if (!req->pinned_etag[0] && a->info.etag[0])
        snprintf(req->pinned_etag, sizeof(req->pinned_etag), "%s", a->info.etag);
    req->on_info(req->info_arg, &a->info);
}

/* Deliver the part of [pos, pos+len) that lies inside the wanted window. */
static int sink_window(struct s3_attempt *a, const char *data, size_t len)
{
    struct s3_req *req = a->req;
    uint64_t want = req->want_off + req->delivered;
    uint64_t end = req->want_len == S3_TO_END ? UINT64_MAX : req->want_off + req->want_len;
    uint64_t pos = a->pos;
    a->pos += len;
    if (pos + len <= want)
        return 0;
    if (pos > want)
        return EPROTO; /* a gap: the server started after what we asked */
    size_t skip = (size_t)(want - pos);
    size_t n = len - skip;
    if (end - want < n)
        n = (size_t)(end - want);
    if (n) {
        int rc = req->sink(req->sink_arg, data + skip, n);
        if (rc)
            return rc;
        if (req->sum)
            sum_update(req->sum, data + skip, n);
        req->delivered += n;
    }
    /* Once every byte wanted is in, the transfer stops only if this answer
     * goes on past them (a server that ignored the Range): one that ends
     * here is read to its end, which keeps its connection for the next
     * request (stopping early closes it: a connection, and over TLS a
     * handshake, per ranged GET).  Bytes past the window that arrive later
     * stop it then, with n == 0. */
    return want + n >= end && pos + len > end ? GOT_ALL_BYTES : 0;
}

static int on_body(struct http_request *hr, const void *data, size_t len)
{
    struct s3_attempt *a = hr->arg;
    struct s3_req *req = a->req;
    s3_metrics_received(len);
    if (!a->to_sink && a->pos == 0 && req->resp.len == 0) {
        /* first body bytes: decide where they go */
        a->status = hr->status;
        a->to_sink = req->sink && (a->status == 200 || a->status == 206);
        if (a->to_sink) {
            a->pos = a->status == 206 && a->have_range ? a->range_start : 0;
            if (req->ranged &&
                (a->status == 200 ||
                 (a->have_range && a->range_start != req->want_off + req->delivered)) &&
                !atomic_exchange(&a->c->warned_range, true))
                log_warn("the server did not honour a Range request exactly (asked from byte "
                         "%llu, got %s from %llu); using only the bytes asked for",
                         (unsigned long long)(req->want_off + req->delivered),
                         a->status == 200 ? "the whole object" : "a range",
                         (unsigned long long)a->pos);
            sum_pick(req, a);
            tell_info(a);
        }
    }
    if (a->to_sink)
        return sink_window(a, data, len);
    if (req->resp.len + len > RESP_BODY_MAX)
        return EFBIG;
    return buf_append(&req->resp, data, len);
}

/* ---- one attempt -------------------------------------------------------- */

/* The last line of defence against header injection: whatever a value's
 * origin, one holding CR, LF (or any control character but a tab) is never
 * sent.  EINVAL then. */
static int add_header(struct curl_slist **list, const char *name, const char *value)
{
    if (util_has_control(name) || util_has_control(value))
        return EINVAL;
    struct buf b = BUF_INIT;
    int rc = buf_printf(&b, "%s: %s", name, value);
    if (rc)
        return rc;
    struct curl_slist *n = curl_slist_append(*list, b.data);
    explicit_bzero(b.data, b.len); /* it may be a secret: an SSE-C key */
    buf_free(&b);
    if (!n)
        return ENOMEM;
    *list = n;
    return 0;
}

static void attempt_clear(struct s3_attempt *a)
{
    s3_object_info_clear(&a->info);
}

/* What one attempt sends, built in steps (wire_headers, wire_sign,
 * wire_list) and freed by wire_free, which wipes the secret parts first. */
struct s3_wire {
    struct buf url, path, host, auth, range;
    struct s3_credentials cr;
    struct s3_kv hdrs[MAX_HEADERS + 8];
    size_t nh;
    char date[17], hash[65];
    struct curl_slist *list;
};

static void wire_free(struct s3_wire *w)
{
    if (w->cr.secret_key)
        s3_credentials_clear(&w->cr);
    if (w->auth.data)
        memset(w->auth.data, 0, w->auth.len);
    /* the header lines hold the SSE-C key, when there is one */
    for (struct curl_slist *l = w->list; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(w->list);
    buf_free(&w->auth);
    buf_free(&w->url);
    buf_free(&w->path);
    buf_free(&w->host);
    buf_free(&w->range);
}

/* The headers the request itself asks for: host, the caller's, and for a
 * GET the part of the window still wanted and the ETag it is pinned to. */
static int wire_headers(const struct s3_client *c, const struct s3_req *req, struct s3_wire *w)
{
    w->hdrs[w->nh++] = (struct s3_kv){"host", w->host.data};
    for (size_t i = 0; i < req->n_headers; i++)
        w->hdrs[w->nh++] = req->headers[i];
    /* on every request, signed with the rest: a requester-pays bucket
     * refuses any request that does not accept the charges */
    if (c->requester_pays)
        w->hdrs[w->nh++] = (struct s3_kv){"x-amz-request-payer", "requester"};
    if (!req->sink)
        return 0;
    uint64_t from = req->want_off + req->delivered;
    if (req->ranged || req->delivered) {
        int rc;
        if (req->want_len == S3_TO_END)
            rc = buf_printf(&w->range, "bytes=%llu-", (unsigned long long)from);
        else
            rc = buf_printf(&w->range, "bytes=%llu-%llu", (unsigned long long)from,
                            (unsigned long long)(req->want_off + req->want_len - 1));
        if (rc)
            return rc;
        w->hdrs[w->nh++] = (struct s3_kv){"range", w->range.data};
    }
    if (req->pinned_etag[0])
        w->hdrs[w->nh++] = (struct s3_kv){"if-match", req->pinned_etag};
    return 0;
}

/* SigV4 (none for a public bucket): the date, corrected by the clock skew
 * learnt from the server, the payload hash and the session token join the
 * headers, and the Authorization value goes into w->auth. */
static int wire_sign(struct s3_client *c, const struct s3_req *req, struct s3_wire *w,
                     struct s3_error *err)
{
    pthread_mutex_lock(&c->mutex);
    int64_t now = (int64_t)time(NULL) + c->clock_skew;
    char region[64];
    snprintf(region, sizeof(region), "%s", c->region);
    pthread_mutex_unlock(&c->mutex);
    s3_amz_date(now, w->date);
    if (c->public_bucket)
        return 0;
    int rc = creds_snapshot(c, &w->cr, err);
    if (rc)
        return rc;
    if (req->unsigned_body || (c->unsigned_payload && strcmp(c->scheme, "https") == 0))
        snprintf(w->hash, sizeof(w->hash), "UNSIGNED-PAYLOAD");
    else if (req->payload_hash[0]) /* computed with the checksum */
        memcpy(w->hash, req->payload_hash, sizeof(w->hash));
    else
        util_sha256_hex(req->body ? req->body : "", req->body_len, w->hash);
    w->hdrs[w->nh++] = (struct s3_kv){"x-amz-date", w->date};
    w->hdrs[w->nh++] = (struct s3_kv){"x-amz-content-sha256", w->hash};
    if (w->cr.session_token)
        w->hdrs[w->nh++] = (struct s3_kv){"x-amz-security-token", w->cr.session_token};
    struct s3_sign_input in = {
        .method = req->method,
        .canonical_uri = w->path.data,
        .query = req->query,
        .n_query = req->n_query,
        .headers = w->hdrs,
        .n_headers = w->nh,
        .payload_hash = w->hash,
        .region = region,
        .service = "s3",
        .amz_date = w->date,
        .access_key = w->cr.access_key,
        .secret_key = w->cr.secret_key,
    };
    return s3_sigv4_authorization(&w->auth, &in, NULL);
}

/* Whether the request names its own Content-Type (curl would add a form
 * type to a POST that does not; checksum and SSE-C headers do not count). */
static bool has_content_type(const struct s3_req *req)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcasecmp(req->headers[i].name, "content-type") == 0)
            return true;
    return false;
}

/* curl's header list: every header, each refused if it holds a control
 * character (add_header), then Authorization and two headers curl would
 * otherwise add on its own. */
static int wire_list(const struct s3_req *req, struct s3_wire *w, struct s3_error *err)
{
    int rc = 0;
    for (size_t i = 0; i < w->nh && !rc; i++)
        if ((rc = add_header(&w->list, w->hdrs[i].name, w->hdrs[i].value)) == EINVAL)
            snprintf(err->message, sizeof(err->message),
                     "refused to send the %s header: its value holds a control character",
                     w->hdrs[i].name);
    if (!rc && w->auth.len)
        rc = add_header(&w->list, "Authorization", w->auth.data);
    if (!rc) /* no 100-continue round trip; S3 answers errors promptly anyway */
        rc = add_header(&w->list, "Expect", "");
    if (!rc && strcmp(req->method, "POST") == 0 && !has_content_type(req))
        rc = add_header(&w->list, "Content-Type", "");
    return rc;
}

/* What http_perform's `t` means for the window of a GET. */
static int transfer_result(const struct s3_req *req, const struct s3_attempt *a, int t)
{
    if (t == GOT_ALL_BYTES)
        t = 0; /* we stopped reading because we had every byte we wanted */
    if (t == 0 && a->to_sink && req->want_len != S3_TO_END && req->delivered < req->want_len) {
        /* the body ended early but curl saw no error: the object is shorter
         * than the range (fine) unless the headers promised more */
        uint64_t total = a->have_total
                             ? a->range_total
                             : (a->status == 200 && a->have_length ? a->content_length : 0);
        if (req->want_off + req->delivered < total)
            t = ECONNRESET;
    }
    return t;
}

/* Send it; a transport failure is described in err.  0 or its errno. */
static int wire_send(struct s3_client *c, struct s3_req *req, struct s3_attempt *a,
                     const struct s3_wire *w, struct s3_error *err)
{
    struct http_request hr = {
        .method = req->method,
        .url = w->url.data,
        .headers = w->list,
        .body = req->body,
        .body_len = req->body_len,
        .on_header = on_header,
        .on_body = on_body,
        .arg = a,
        .timeout_ms = req->limits.attempt_timeout_ms,
    };
    log_debug("%s %s %s", req->op, req->method, w->url.data);
    a->sent = true;
    int t = http_perform(c->http, &hr);
    a->status = hr.status;
    t = transfer_result(req, a, t);
    if (t && a->refused) {
        err->transport = t;
        snprintf(err->message, sizeof(err->message),
                 "refused the answer: its %s header holds a control character", a->refused);
    } else if (t) {
        err->transport = t;
        snprintf(err->message, sizeof(err->message), "%s",
                 a->size_refused    ? "the answer gives a size beyond S3's largest object: refused"
                 : hr.error_text[0] ? hr.error_text
                                    : strerror(t));
    }
    return t;
}

/* One try of the request: build its target and headers, sign, send. */
static int run_attempt(struct s3_client *c, struct s3_req *req, struct s3_attempt *a,
                       struct s3_error *err)
{
    struct s3_wire w;
    memset(&w, 0, sizeof(w));
    memset(a, 0, sizeof(*a));
    a->c = c;
    a->req = req;
    buf_clear(&req->resp);
    int rc = build_target(c, req, &w.url, &w.path, &w.host);
    if (!rc)
        rc = wire_headers(c, req, &w);
    if (!rc)
        rc = wire_sign(c, req, &w, err);
    if (!rc)
        rc = wire_list(req, &w, err);
    if (!rc)
        rc = wire_send(c, req, a, &w, err);
    wire_free(&w);
    return rc;
}

/* ---- the request loop --------------------------------------------------- */

static int code_to_errno(const char *code)
{
    if (strcmp(code, "NoSuchKey") == 0 || strcmp(code, "NoSuchUpload") == 0 ||
        strcmp(code, "NoSuchBucket") == 0)
        return ENOENT;
    if (strcmp(code, "AccessDenied") == 0)
        return EACCES;
    if (strcmp(code, "InvalidObjectState") == 0)
        return ENODATA;
    if (strcmp(code, "PreconditionFailed") == 0)
        return ESTALE;
    if (strcmp(code, "NotImplemented") == 0)
        return ENOSYS;
    return EIO;
}

static const char *status_code_name(long status)
{
    switch (status) {
    case 301: return "PermanentRedirect";
    case 400: return "BadRequest";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 412: return "PreconditionFailed";
    case 416: return "InvalidRange";
    case 500: return "InternalError";
    case 501: return "NotImplemented";
    case 503: return "ServiceUnavailable";
    default: return "";
    }
}

static void count_attempt(const struct s3_req *req, const struct s3_attempt *a, const char *code,
                          unsigned attempt)
{
    if (a->sent)
        s3_metrics_attempt(req->op_index, a->status, code, req->body_len, attempt > 1);
}

static void log_failure(const struct s3_req *req, int rc, const struct s3_error *err)
{
    /* a missing name is routine, a changed object is the caller's to
     * report, and a sink that stopped the transfer (ECANCELED: the reader
     * went away) is no failure at all */
    enum log_level lvl =
        (rc == ENOENT || rc == ESTALE || rc == ECANCELED) ? LOG_LVL_DEBUG : LOG_LVL_ERROR;
    if (lvl == LOG_LVL_DEBUG && log_get_level() < LOG_LVL_DEBUG)
        return;
    if (err->status)
        log_msg(lvl, "%s %s: HTTP %ld %s: %s (request id %s)", req->op,
                req->key ? req->key : "(bucket)", err->status, err->code[0] ? err->code : "-",
                err->message, err->request_id[0] ? err->request_id : "none");
    else
        log_msg(lvl, "%s %s: %s", req->op, req->key ? req->key : "(bucket)", err->message);
}

/* A GET of an archived object (403 InvalidObjectState): one line that says
 * what to do, not repeated while the same key is asked again (a program
 * retrying its read, the read-ahead's parallel GETs). */
static void log_archived(struct s3_client *c, const struct s3_req *req, const struct s3_error *err)
{
    const char *key = req->key ? req->key : "(bucket)";
    pthread_mutex_lock(&c->archived_lock);
    bool told = c->archived_told && strcmp(c->archived_told, key) == 0;
    if (!told) {
        free(c->archived_told);
        c->archived_told = strdup(key);
    }
    pthread_mutex_unlock(&c->archived_lock);
    if (!told)
        log_error("%s %s: the object is archived (InvalidObjectState) and must be restored "
                  "before it can be read (aws s3api restore-object); reads fail with ENODATA "
                  "(request id %s)",
                  req->op, key, err->request_id[0] ? err->request_id : "none");
}

/* The answer came but its body could not be read (EPROTO from the XML
 * parsers) or holds a value we refuse (EBADMSG: an ETag with a control
 * character): say so once, with the request id, and return EPROTO for
 * both, or rc. */
static int unreadable(const struct s3_req *req, int rc, struct s3_error *err)
{
    if (rc == EBADMSG) {
        log_error("%s %s: refused the server's answer: an ETag in it holds a control "
                  "character (request id %s)",
                  req->op, req->key ? req->key : "(bucket)",
                  req->request_id[0] ? req->request_id : "none");
        if (err)
            snprintf(err->message, sizeof(err->message),
                     "%s answer with a control character in an ETag", req->op);
        return EPROTO;
    }
    if (rc != EPROTO)
        return rc;
    log_error("%s %s: unreadable response from the server (request id %s)", req->op,
              req->key ? req->key : "(bucket)", req->request_id[0] ? req->request_id : "none");
    if (err)
        snprintf(err->message, sizeof(err->message), "unreadable %s response", req->op);
    return rc;
}

/* A 2xx answer: the object's metadata and ETag go to the caller. */
static void take_answer(struct s3_req *req, struct s3_attempt *a)
{
    if (req->info) {
        s3_object_info_clear(req->info);
        *req->info = a->info;
        memset(&a->info, 0, sizeof(a->info));
        if (a->have_total)
            req->info->size = a->range_total;
        else if (a->have_length)
            req->info->size = a->content_length;
    }
    snprintf(req->etag, sizeof(req->etag), "%s", a->info.etag[0] ? a->info.etag : req->etag);
    if (req->info && !req->etag[0])
        snprintf(req->etag, sizeof(req->etag), "%s", req->info->etag);
}

/* A 416 to a GET: nothing at or past that offset, an empty read. */
static void take_empty_range(struct s3_req *req, struct s3_attempt *a)
{
    if (req->info) {
        s3_object_info_clear(req->info);
        *req->info = a->info;
        memset(&a->info, 0, sizeof(a->info));
        req->info->size = a->have_total ? a->range_total : 0;
    }
}

/* An answer that is an error: its code, message and region hint into err
 * (from the error document, else from the status), and the errno. */
static int answer_errno(const struct s3_req *req, const struct s3_attempt *a, bool body_error,
                        struct s3_error *err)
{
    if (!body_error && req->resp.len)
        s3_xml_parse_error(req->resp.data, req->resp.len, err);
    if (!err->code[0])
        snprintf(err->code, sizeof(err->code), "%s", status_code_name(a->status));
    if (!err->message[0])
        snprintf(err->message, sizeof(err->message), "%s",
                 strcmp(req->method, "HEAD") == 0 ? "(a HEAD response has no body)"
                                                  : "(no error document)");
    if (req->bucket_region[0] && !err->region[0])
        snprintf(err->region, sizeof(err->region), "%s", req->bucket_region);
    return body_error ? code_to_errno(err->code) : s3_status_to_errno(a->status, err->code);
}

enum region_step { REGION_AS_IS, REGION_RETRY, REGION_REFUSED };

/* A region hint in a 301, 307 or 400: re-sign for the bucket's region,
 * once (REGION_RETRY when it differs from ours), or refuse a hint that is
 * no region name (REGION_REFUSED, logged). */
static enum region_step follow_region(struct s3_client *c, const struct s3_req *req, long status,
                                      const struct s3_error *err, bool *region_fixed)
{
    if (*region_fixed || !err->region[0] || (status != 301 && status != 400 && status != 307) ||
        c->access_point)
        return REGION_AS_IS;
    if (!s3_region_valid(err->region)) {
        log_error("%s %s: refused the server's region hint \"%s\": not a region name "
                  "(request id %s)",
                  req->op, req->key ? req->key : "(bucket)", err->region,
                  err->request_id[0] ? err->request_id : "none");
        return REGION_REFUSED;
    }
    pthread_mutex_lock(&c->mutex);
    bool differs = strcmp(c->region, err->region) != 0;
    if (differs) {
        log_info("bucket %s is in region %s (was signing for %s)", c->bucket, err->region,
                 c->region);
        set_region_locked(c, err->region);
    }
    pthread_mutex_unlock(&c->mutex);
    *region_fixed = true;
    return differs ? REGION_RETRY : REGION_AS_IS;
}

/* RequestTimeTooSkewed with the server's Date: sign with its clock from
 * now on.  True when corrected (retry at once). */
static bool fix_skew(struct s3_client *c, const struct s3_error *err, int64_t server_date)
{
    if (strcmp(err->code, "RequestTimeTooSkewed") != 0 || !server_date)
        return false;
    /* Copied under the lock: another thread meeting the same answer may be
     * writing c->clock_skew at this moment. */
    pthread_mutex_lock(&c->mutex);
    int64_t skew = c->clock_skew = server_date - (int64_t)time(NULL);
    pthread_mutex_unlock(&c->mutex);
    log_warn("local clock is %lld s off the server's; correcting", (long long)-skew);
    return true;
}

/* Whether a failed attempt is tried again: a retryable failure, attempts
 * and the retry budget left; then waits the backoff.  False: give up. */
static bool retry_wait(struct s3_client *c, const struct s3_req *req, int t, long status,
                       const struct s3_error *err, unsigned attempt, unsigned max_attempts)
{
    if (t && t != ECONNREFUSED && t != ECONNRESET && t != ETIMEDOUT && t != EHOSTUNREACH)
        return false; /* our own abort, a TLS refusal, a cancellation */
    if (!s3_retryable(t ? 0 : status, err->code, t) || attempt >= max_attempts)
        return false;
    int cost =
        (t == ETIMEDOUT || t == ECONNREFUSED) ? S3_BUDGET_TIMEOUT_COST : S3_BUDGET_RETRY_COST;
    if (!s3_budget_take(&c->budget, cost)) {
        log_debug("retry budget exhausted; not retrying %s", req->op);
        return false;
    }
    uint64_t wait = s3_backoff_ms(&c->retry, attempt, util_random_u64());
    log_debug("%s %s: attempt %u failed (%s%s%ld %s); retrying in %llu ms", req->op,
              req->key ? req->key : "(bucket)", attempt, t ? strerror(t) : "", t ? " " : "HTTP ",
              status, err->code, (unsigned long long)wait);
    util_sleep_ms(wait);
    return true;
}

/* The request, tried until it is answered, fails for good, or runs out
 * of attempts; a region hint and a clock correction retry at once without
 * counting as attempts. */
static int s3_execute(struct s3_client *c, struct s3_req *req, struct s3_error *err_out)
{
    struct s3_error local;
    struct s3_error *err = err_out ? err_out : &local;
    bool region_fixed = false, skew_fixed = false;
    unsigned attempt = 0;
    unsigned max_attempts = c->retry.max_attempts;
    if (req->limits.max_attempts && req->limits.max_attempts < max_attempts)
        max_attempts = req->limits.max_attempts;
    int rc;
    for (;;) {
        struct s3_attempt a;
        memset(err, 0, sizeof(*err));
        attempt++;
        int t = run_attempt(c, req, &a, err);
        err->status = a.status;
        snprintf(err->request_id, sizeof(err->request_id), "%s", a.request_id);
        snprintf(req->request_id, sizeof(req->request_id), "%s", a.request_id);
        bool ok = t == 0 && a.status >= 200 && a.status < 300;
        /* 200 OK with <Error>: CopyObject, Complete… */
        bool body_error = ok && req->body_may_be_error && req->resp.len &&
                          s3_xml_parse_error(req->resp.data, req->resp.len, err) == 0;
        if ((ok && !body_error) || (t == 0 && a.status == 416 && req->sink)) {
            if (ok && req->sink) {
                sum_pick(req, &a); /* an empty body: nothing was counted */
                tell_info(&a);     /* an empty body: told here, on the caller's thread */
            }
            if (ok)
                take_answer(req, &a);
            else
                take_empty_range(req, &a);
            count_attempt(req, &a, NULL, attempt);
            attempt_clear(&a);
            if (ok)
                s3_budget_give(&c->budget, attempt > 1 ? S3_BUDGET_RETRY_COST : 1);
            return 0;
        }
        if (t == 0)
            rc = answer_errno(req, &a, body_error, err);
        else
            rc = t == EPROTO || t == ENOMEM || t == ECANCELED ? t : EIO;
        count_attempt(req, &a, err->code, attempt);
        /* Pin a GET to the ETag of the first response, whatever happened. */
        if (req->sink && !req->pinned_etag[0] && a.info.etag[0] && req->delivered)
            snprintf(req->pinned_etag, sizeof(req->pinned_etag), "%s", a.info.etag);
        attempt_clear(&a);
        enum region_step r = follow_region(c, req, a.status, err, &region_fixed);
        if (r == REGION_REFUSED) {
            rc = EPROTO;
            break;
        }
        if (r == REGION_RETRY) {
            attempt--;
            continue;
        }
        if (!skew_fixed && fix_skew(c, err, a.server_date)) {
            skew_fixed = true;
            attempt--;
            continue;
        }
        if (!retry_wait(c, req, t, a.status, err, attempt, max_attempts))
            break;
    }
    if (rc == ENODATA)
        log_archived(c, req, err);
    else if (!req->limits.quiet)
        log_failure(req, rc, err);
    return rc;
}

static void req_init(struct s3_req *req, const char *op, const char *method, const char *key)
{
    memset(req, 0, sizeof(*req));
    req->op = op;
    req->op_index = s3_metrics_op(op);
    req->method = method;
    req->key = key;
}

static void req_query(struct s3_req *req, const char *name, const char *value)
{
    if (req->n_query < MAX_QUERY)
        req->query[req->n_query++] = (struct s3_kv){name, value ? value : ""};
}

static void req_header(struct s3_req *req, const char *name, const char *value)
{
    if (req->n_headers < MAX_HEADERS)
        req->headers[req->n_headers++] = (struct s3_kv){name, value};
}

static void req_free(struct s3_req *req)
{
    buf_free(&req->resp);
    for (size_t i = 0; i < req->n_owned; i++)
        free(req->owned[i]);
}

/* ---- public ------------------------------------------------------------- */

const char *s3_error_describe(int rc, const struct s3_error *err, char *buf, size_t n)
{
    char raw[1024];
    if (!err)
        snprintf(raw, sizeof(raw), "%s", strerror(rc));
    else if (err->status)
        snprintf(raw, sizeof(raw), "HTTP %ld %s: %s (request id %s)", err->status,
                 err->code[0] ? err->code : "-", err->message[0] ? err->message : strerror(rc),
                 err->request_id[0] ? err->request_id : "none");
    else
        snprintf(raw, sizeof(raw), "%s", err->message[0] ? err->message : strerror(rc));
    /* the code, message and request id are the server's words: one line of
     * plain text, whatever they hold */
    return util_escape(buf, n, raw);
}

void s3_object_info_clear(struct s3_object_info *info)
{
    free(info->content_type);
    free(info->content_encoding);
    free(info->sse);
    free(info->sse_kms_key_id);
    free(info->storage_class);
    for (size_t i = 0; i < info->n_meta; i++) {
        free(info->meta[i].name);
        free(info->meta[i].value);
    }
    free(info->meta);
    memset(info, 0, sizeof(*info));
}

/* Where requests to an access point go: with no endpoint= its own
 * endpoint (s3_access_point_host); with one, NAME-ACCOUNT.ENDPOINT-HOST,
 * as the AWS SDKs do; always virtual-hosted style, signed for the ARN's
 * region.  EINVAL (err says why) for a bad ARN, a region= that is not
 * the ARN's, path style, or an endpoint given as an IP address. */
static int access_point_target(struct s3_client *c, const struct s3_config *cfg,
                               struct s3_error *err)
{
    struct s3_access_point ap;
    const char *why = "";
    if (s3_access_point_parse(cfg->bucket, &ap, &why)) {
        snprintf(err->message, sizeof(err->message), "bad access point ARN %s: %s", cfg->bucket,
                 why);
        return EINVAL;
    }
    if (cfg->region && *cfg->region && strcmp(cfg->region, ap.region) != 0) {
        snprintf(err->message, sizeof(err->message),
                 "region=%s, but access point %s is in region %s (leave region= out)", cfg->region,
                 ap.name, ap.region);
        return EINVAL;
    }
    if (cfg->addressing == S3_ADDR_PATH) {
        snprintf(err->message, sizeof(err->message),
                 "an access point cannot be reached with path-style requests: its name is "
                 "part of the host name");
        return EINVAL;
    }
    c->access_point = true;
    set_region_locked(c, ap.region);
    struct buf host = BUF_INIT;
    int rc;
    if (cfg->endpoint && *cfg->endpoint) {
        if ((rc = parse_endpoint(c, cfg->endpoint, err)))
            return rc;
        if (host_is_ip_or_localhost(c->host) && strncmp(c->host, "localhost", 9) != 0) {
            snprintf(err->message, sizeof(err->message),
                     "endpoint %s is an IP address, but an access point is reached at "
                     "%s-%s.HOST: give the endpoint by host name",
                     cfg->endpoint, ap.name, ap.account);
            return EINVAL;
        }
        rc = buf_printf(&host, "%s-%s.%s", ap.name, ap.account, c->host);
        free(c->host);
    } else {
        c->scheme = strdup("https");
        c->base_path = strdup("");
        rc = s3_access_point_host(&ap, &host);
    }
    c->host = rc ? NULL : buf_steal(&host);
    buf_free(&host);
    return c->scheme && c->base_path && c->host ? 0 : ENOMEM;
}

/* On EC2 with nothing naming a region, the instance's own (it saves a
 * redirect, and STS is asked in that region); a name that is not a
 * region is refused, never put into a host name. */
static char *imds_region(void)
{
    char *r = s3_creds_imds_region();
    if (r && !s3_region_valid(r)) {
        log_warn("refused the region the instance metadata gave: not a region name");
        free(r);
        r = NULL;
    } else if (r) {
        log_info("region %s, from the instance metadata", r);
    }
    return r;
}

/* Where requests go: the region (configured, else the profile's or the
 * environment's, else with AWS's endpoint the instance metadata's, else
 * us-east-1), the endpoint (configured, else AWS's for
 * that region) and path or virtual-host addressing.  0, EINVAL (a bad
 * endpoint; err says why) or ENOMEM. */
static int client_target(struct s3_client *c, const struct s3_config *cfg, struct s3_error *err)
{
    if (strncmp(cfg->bucket, "arn:", 4) == 0)
        return access_point_target(c, cfg, err);
    char *region =
        cfg->region && *cfg->region ? strdup(cfg->region) : s3_creds_default_region(cfg->profile);
    if (!region && !(cfg->endpoint && *cfg->endpoint))
        region = imds_region();
    set_region_locked(c, region ? region : "us-east-1");
    free(region);

    if (cfg->endpoint && *cfg->endpoint) {
        int rc = parse_endpoint(c, cfg->endpoint, err);
        if (rc)
            return rc;
    } else {
        c->endpoint_from_region = true;
        c->scheme = strdup("https");
        c->host = strdup("s3.amazonaws.com");
        c->base_path = strdup("");
        set_region_locked(c, c->region);
        if (!c->scheme || !c->host || !c->base_path || !c->region_host)
            return ENOMEM;
    }
    switch (cfg->addressing) {
    case S3_ADDR_PATH: c->path_style = true; break;
    case S3_ADDR_VIRTUAL: c->path_style = false; break;
    default:
        c->path_style = (!c->endpoint_from_region && host_is_ip_or_localhost(c->host)) ||
                        !dns_safe_bucket(c->bucket);
    }
    return 0;
}

/* The credentials, through the provider chain (none for a public bucket),
 * and what refreshing them later needs.  0, ENOMEM, or the chain's errno
 * with err->message saying what was tried. */
static int client_credentials(struct s3_client *c, const struct s3_config *cfg,
                              struct s3_error *err)
{
    c->creds_rq.http = c->http;
    c->creds_rq.bucket = c->bucket;
    c->creds_rq.process_timeout_ms = cfg->credential_process_timeout_ms;
    if (cfg->passwd_file && !(c->creds_rq.passwd_file = strdup(cfg->passwd_file)))
        return ENOMEM;
    if (cfg->profile && !(c->creds_rq.profile = strdup(cfg->profile)))
        return ENOMEM;
    if (!(c->creds_rq.region = strdup(c->region)))
        return ENOMEM;
    if (c->public_bucket) {
        snprintf(c->creds_source, sizeof(c->creds_source), "none");
        return 0;
    }
    char why[768];
    int rc = s3_creds_resolve(&c->creds_rq, &c->creds, c->creds_source, sizeof(c->creds_source),
                              why, sizeof(why));
    if (rc) {
        snprintf(err->message, sizeof(err->message), "%s", why);
        return rc;
    }
    return (c->access_key_id_shown = strdup(c->creds.access_key)) ? 0 : ENOMEM;
}

/* The mount's encryption and storage class, checked and copied.  0,
 * EINVAL (err says which value) or ENOMEM. */
static int client_policy(struct s3_client *c, const struct s3_object_policy *p,
                         struct s3_error *err)
{
    const char *bad =
        p->sse && !s3_sse_valid(p->sse)                                 ? "encryption"
        : p->storage_class && !s3_storage_class_valid(p->storage_class) ? "storage class"
        : p->sse_kms_key_id && !s3_sse_is_kms(p->sse) ? "KMS key id without aws:kms"
        : p->sse_kms_key_id && (!*p->sse_kms_key_id || util_has_control(p->sse_kms_key_id))
            ? "KMS key id"
            : NULL;
    if (bad) {
        snprintf(err->message, sizeof(err->message), "bad %s for new objects", bad);
        return EINVAL;
    }
    c->policy.sse_bucket_key = p->sse_bucket_key;
    if ((p->sse && !(c->policy.sse = strdup(p->sse))) ||
        (p->sse_kms_key_id && !(c->policy.sse_kms_key_id = strdup(p->sse_kms_key_id))) ||
        (p->storage_class && !(c->policy.storage_class = strdup(p->storage_class))))
        return ENOMEM;
    return 0;
}

int s3_client_new(const struct s3_config *cfg, struct s3_client **out, struct s3_error *err_out)
{
    s3_xml_init();
    s3_metrics_init();
    struct s3_error local;
    struct s3_error *err = err_out ? err_out : &local;
    memset(err, 0, sizeof(*err));
    if (!cfg->bucket || !*cfg->bucket) {
        snprintf(err->message, sizeof(err->message), "no bucket given");
        return EINVAL;
    }
    struct s3_client *c = calloc(1, sizeof(*c));
    if (!c)
        return ENOMEM;
    pthread_mutex_init(&c->mutex, NULL);
    pthread_cond_init(&c->refreshed, NULL);
    s3_budget_init(&c->budget);
    c->retry.max_attempts = cfg->max_attempts ? cfg->max_attempts : 5;
    c->retry.base_ms = cfg->retry_base_ms ? cfg->retry_base_ms : 200;
    c->retry.cap_ms = cfg->retry_cap_ms ? cfg->retry_cap_ms : 20000;
    c->public_bucket = cfg->public_bucket;
    c->unsigned_payload = cfg->unsigned_payload;
    c->requester_pays = cfg->requester_pays;
    pthread_mutex_init(&c->archived_lock, NULL);
    c->checksum = cfg->checksum <= S3_CHECKSUM_OFF ? cfg->checksum : S3_CHECKSUM_CRC32C;
    int rc = (c->bucket = strdup(cfg->bucket)) ? 0 : ENOMEM;
    if (!rc)
        rc = client_policy(c, &cfg->policy, err);
    if (!rc)
        rc = client_target(c, cfg, err);
    if (rc)
        goto fail;
    if (cfg->http.no_verify_ssl)
        log_warn("TLS certificate verification is OFF (no_verify_ssl): anyone on the path "
                 "can read and change your data");
    if ((rc = http_engine_new(&cfg->http, &c->http))) {
        snprintf(err->message, sizeof(err->message), "cannot start the HTTP engine: %s",
                 strerror(rc));
        goto fail;
    }
    if ((rc = client_credentials(c, cfg, err)))
        goto fail;
    if ((rc = client_sse_c(c, cfg, err)))
        goto fail;
    *out = c;
    return 0;
fail:
    s3_client_free(c);
    return rc;
}

void s3_client_free(struct s3_client *c)
{
    if (!c)
        return;
    http_engine_free(c->http);
    s3_credentials_clear(&c->creds);
    free((char *)c->creds_rq.passwd_file);
    free((char *)c->creds_rq.profile);
    free((char *)c->creds_rq.region);
    free(c->access_key_id_shown);
    free(c->scheme);
    free(c->host);
    free(c->base_path);
    free(c->region_host);
    free(c->bucket);
    free((char *)c->policy.sse);
    free((char *)c->policy.sse_kms_key_id);
    free((char *)c->policy.storage_class);
    free(c->archived_told);
    pthread_mutex_destroy(&c->archived_lock);
    explicit_bzero(c->sse_c_key_b64, sizeof(c->sse_c_key_b64));
    pthread_mutex_destroy(&c->mutex);
    pthread_cond_destroy(&c->refreshed);
    pthread_mutex_destroy(&c->budget.mutex);
    free(c);
}

const char *s3_client_region(struct s3_client *c)
{
    /* the array lives as long as the client; a concurrent region change
     * rewrites it with a string of the same kind */
    return c->region;
}

void s3_client_credentials_info(struct s3_client *c, const char **source,
                                const char **access_key_id)
{
    *source = c->creds_source;
    *access_key_id = c->access_key_id_shown ? c->access_key_id_shown : "";
}

int s3_head_bucket_limited(struct s3_client *c, const struct s3_call_limits *limits,
                           struct s3_error *err)
{
    struct s3_req req;
    req_init(&req, "HeadBucket", "HEAD", NULL);
    if (limits)
        req.limits = *limits;
    int rc = s3_execute(c, &req, err);
    /* A failed answer's bad hint was refused and logged by s3_execute (a
     * redirect) or not followed at all (any other status). */
    if (req.bucket_region[0] && !s3_region_valid(req.bucket_region)) {
        if (rc == 0)
            log_warn("bucket %s: refused the server's region hint \"%s\": not a region name "
                     "(requests stay signed as before)",
                     c->bucket, req.bucket_region);
    } else if (req.bucket_region[0] && !c->access_point) {
        pthread_mutex_lock(&c->mutex);
        if (strcmp(req.bucket_region, c->region) != 0) {
            log_info("bucket %s is in region %s", c->bucket, req.bucket_region);
            set_region_locked(c, req.bucket_region);
        }
        pthread_mutex_unlock(&c->mutex);
    }
    req_free(&req);
    return rc;
}

int s3_head_object(struct s3_client *c, const char *key, struct s3_object_info *info,
                   struct s3_error *err)
{
    struct s3_req req;
    req_init(&req, "HeadObject", "HEAD", key);
    add_sse_c_headers(c, &req);
    memset(info, 0, sizeof(*info));
    req.info = info;
    int rc = s3_execute(c, &req, err);
    req_free(&req);
    return rc;
}

static int get_object(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                      const char *if_match, s3_info_fn on_info, void *info_arg, s3_sink_fn sink,
                      void *sink_arg, struct s3_object_info *info, struct s3_error *err)
{
    if (info)
        memset(info, 0, sizeof(*info));
    if (length == 0)
        return 0;
    struct s3_req req;
    req_init(&req, "GetObject", "GET", key);
    req.sink = sink;
    req.sink_arg = sink_arg;
    req.want_off = offset;
    req.want_len = length;
    req.ranged = offset != 0 || length != S3_TO_END;
    req.info = info;
    req.on_info = on_info;
    req.info_arg = info_arg;
    if (if_match)
        snprintf(req.pinned_etag, sizeof(req.pinned_etag), "%s", if_match);
    add_sse_c_headers(c, &req);
    struct whole_sum sum = {0};
    if (!req.ranged && c->checksum != S3_CHECKSUM_OFF) {
        req.sum = &sum; /* the whole object: its checksum can be checked */
        req_header(&req, "x-amz-checksum-mode", "ENABLED");
    }
    int rc = s3_execute(c, &req, err);
    if (!rc)
        rc = sum_check(&req, err);
    EVP_MD_CTX_free(sum.sha);
    req_free(&req);
    return rc;
}

int s3_get_object(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const char *if_match, s3_sink_fn sink, void *sink_arg,
                  struct s3_object_info *info, struct s3_error *err)
{
    return get_object(c, key, offset, length, if_match, NULL, NULL, sink, sink_arg, info, err);
}

int s3_get_object_told(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                       const char *if_match, s3_info_fn on_info, void *info_arg, s3_sink_fn sink,
                       void *sink_arg, struct s3_error *err)
{
    return get_object(c, key, offset, length, if_match, on_info, info_arg, sink, sink_arg, NULL,
                      err);
}

/* Where s3_get_to_buf and s3_get_to_mem put the body: appended to `b`, or
 * copied to mem[len...] when b is NULL; never past `max` bytes in all.
 * Too long a body stops the transfer with ECANCELED, which s3_execute
 * neither retries nor logs as a failure (any other errno would come back
 * as EIO), and `over` turns it into EFBIG for the caller. */
struct get_sink {
    struct buf *b;
    char *mem;
    size_t len;
    size_t max;
    bool over;
};

static int get_sink_fn(void *arg, const void *data, size_t len)
{
    struct get_sink *g = arg;
    if (len > g->max - g->len) {
        g->over = true;
        return ECANCELED;
    }
    if (g->b) {
        int rc = buf_append(g->b, data, len);
        if (rc)
            return rc;
    } else {
        memcpy(g->mem + g->len, data, len);
    }
    g->len += len;
    return 0;
}

int s3_get_to_buf(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const char *if_match, struct buf *out, size_t max_len,
                  struct s3_object_info *info, struct s3_error *err)
{
    size_t had = out->len;
    if (had > max_len)
        return EFBIG;
    struct get_sink g = {.b = out, .len = had, .max = max_len};
    int rc = s3_get_object(c, key, offset, length, if_match, get_sink_fn, &g, info, err);
    if (g.over)
        rc = EFBIG;
    if (rc && out->data) { /* the bytes of a failed call are dropped */
        out->len = had;
        out->data[had] = '\0';
    }
    return rc;
}

int s3_get_to_mem(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const char *if_match, void *dst, size_t dst_len, size_t *got,
                  struct s3_object_info *info, struct s3_error *err)
{
    struct get_sink g = {.mem = dst, .max = dst_len};
    int rc = s3_get_object(c, key, offset, length, if_match, get_sink_fn, &g, info, err);
    if (g.over)
        rc = EFBIG;
    *got = g.len;
    return rc;
}

/* ---- encryption and storage class of new objects ----------------------- */

bool s3_sse_valid(const char *s)
{
    return s && (strcmp(s, "AES256") == 0 || s3_sse_is_kms(s));
}

bool s3_sse_is_kms(const char *s)
{
    return s && (strcmp(s, "aws:kms") == 0 || strcmp(s, "aws:kms:dsse") == 0);
}

bool s3_storage_class_valid(const char *s)
{
    /* the classes PutObject takes (OUTPOSTS and EXPRESS_ONEZONE belong to
     * other kinds of bucket; REDUCED_REDUNDANCY is deprecated but taken) */
    static const char *const classes[] = {
        "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
        "GLACIER",  "DEEP_ARCHIVE",       "GLACIER_IR",  "SNOW",       "EXPRESS_ONEZONE",
    };
    for (size_t i = 0; s && i < sizeof(classes) / sizeof(classes[0]); i++)
        if (strcmp(s, classes[i]) == 0)
            return true;
    return false;
}

struct s3_object_policy s3_object_info_policy(const struct s3_object_info *info)
{
    return (struct s3_object_policy){.sse = info->sse,
                                     .sse_kms_key_id = info->sse_kms_key_id,
                                     .sse_bucket_key = info->sse_bucket_key,
                                     .storage_class = info->storage_class};
}

struct s3_object_policy s3_policy_effective(const struct s3_object_policy *mount,
                                            const struct s3_object_policy *keep)
{
    struct s3_object_policy out = {0};
    const char *kept_sse = keep && s3_sse_valid(keep->sse) ? keep->sse : NULL;
    out.sse = mount->sse ? mount->sse : kept_sse;
    bool same = out.sse && kept_sse && strcmp(out.sse, kept_sse) == 0;
    if (s3_sse_is_kms(out.sse)) {
        out.sse_kms_key_id = mount->sse_kms_key_id ? mount->sse_kms_key_id
                             : same                ? keep->sse_kms_key_id
                                                   : NULL;
        out.sse_bucket_key =
            (mount->sse && mount->sse_bucket_key) || (same && keep->sse_bucket_key);
    }
    if (keep) /* a kept STANDARD (no class said) stays STANDARD */
        out.storage_class = keep->storage_class && strcmp(keep->storage_class, "STANDARD") != 0
                                ? keep->storage_class
                                : NULL;
    else
        out.storage_class = mount->storage_class;
    return out;
}

/* The encryption and storage class headers of a PutObject,
 * CreateMultipartUpload or CopyObject (s3_policy_effective).  A kept value
 * was checked when its answer was read (no control character); one that is
 * no encryption S3 takes is left out rather than sent back. */
static void add_object_policy_headers(const struct s3_client *c, struct s3_req *req,
                                      const struct s3_put_opts *o)
{
    struct s3_object_policy p = s3_policy_effective(&c->policy, o ? o->keep : NULL);
    if (p.sse)
        req_header(req, "x-amz-server-side-encryption", p.sse);
    if (p.sse_kms_key_id)
        req_header(req, "x-amz-server-side-encryption-aws-kms-key-id", p.sse_kms_key_id);
    if (p.sse_bucket_key)
        req_header(req, "x-amz-server-side-encryption-bucket-key-enabled", "true");
    if (p.storage_class)
        req_header(req, "x-amz-storage-class", p.storage_class);
}

/* Headers for what a new object is created with. */
static int put_opts_headers(struct s3_req *req, const struct s3_put_opts *o)
{
    if (!o)
        return 0;
    if (o->content_type)
        req_header(req, "content-type", o->content_type);
    if (o->content_encoding)
        req_header(req, "content-encoding", o->content_encoding);
    for (size_t i = 0; i < o->n_meta; i++) {
        if (req->n_owned == MAX_HEADERS - 24)
            return EINVAL; /* more metadata than one request can carry here */
        struct buf name = BUF_INIT;
        if (buf_printf(&name, "x-amz-meta-%s", o->meta[i].name))
            return ENOMEM;
        req->owned[req->n_owned++] = name.data;
        req_header(req, name.data, o->meta[i].value);
    }
    return 0;
}

int s3_put_object(struct s3_client *c, const char *key, const void *data, size_t len,
                  const struct s3_put_opts *opts, char *etag_out, struct s3_error *err)
{
    struct s3_req req;
    req_init(&req, "PutObject", "PUT", key);
    req.body = data;
    req.body_len = len;
    add_sse_c_headers(c, &req);
    add_checksum_headers(c, &req);
    int rc = put_opts_headers(&req, opts);
    add_object_policy_headers(c, &req, opts);
    if (!rc)
        rc = s3_execute(c, &req, err);
    if (!rc && etag_out)
        snprintf(etag_out, 80, "%s", req.etag);
    req_free(&req);
    return rc;
}

int s3_delete_object(struct s3_client *c, const char *key, struct s3_error *err)
{
    struct s3_req req;
    req_init(&req, "DeleteObject", "DELETE", key);
    int rc = s3_execute(c, &req, err);
    if (rc == ENOENT && !(err && strcmp(err->code, "NoSuchBucket") == 0))
        rc = 0; /* some servers answer 404 where S3 answers 204 */
    req_free(&req);
    return rc;
}

int s3_delete_objects(struct s3_client *c, const char *const *keys, size_t n, int *errs,
                      struct s3_error *err)
{
    if (n > 1000)
        return EINVAL;
    if (errs)
        memset(errs, 0, n * sizeof(*errs));
    if (n == 0)
        return 0;
    struct buf body = BUF_INIT;
    int rc = buf_puts(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                             "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                             "<Quiet>true</Quiet>");
    for (size_t i = 0; i < n && !rc; i++) {
        rc = buf_puts(&body, "<Object><Key>");
        if (!rc)
            rc = s3_xml_escape(&body, keys[i]);
        if (!rc)
            rc = buf_puts(&body, "</Key></Object>");
    }
    if (!rc)
        rc = buf_puts(&body, "</Delete>");
    if (rc) {
        buf_free(&body);
        return rc;
    }
    char md5[25];
    s3_md5_base64(body.data, body.len, md5);
    struct s3_req req;
    req_init(&req, "DeleteObjects", "POST", NULL);
    req_query(&req, "delete", "");
    req_header(&req, "content-md5", md5);
    req_header(&req, "content-type", "application/xml");
    req.body = body.data;
    req.body_len = body.len;
    rc = s3_execute(c, &req, err);
    if (!rc && req.resp.len)
        rc = unreadable(
            &req, s3_xml_parse_delete_result(req.resp.data, req.resp.len, keys, n, errs), err);
    req_free(&req);
    buf_free(&body);
    return rc;
}

/* The new object's ETag from a CopyObject or Complete answer into etag_out
 * (80 bytes), or "" when it has none or one we refuse (logged): the object
 * is stored either way, only its ETag is not known. */
static void etag_known(const struct s3_req *req, char *etag_out)
{
    int rc = s3_xml_parse_etag(req->resp.data, req->resp.len, etag_out);
    if (rc == EBADMSG)
        unreadable(req, rc, NULL);
    if (rc)
        etag_out[0] = '\0';
}

/* x-amz-copy-source: "/BUCKET/KEY", or through an access point the
 * object's ARN "ARN/object/KEY", as S3 asks, encoded but for '/'. */
static int copy_source(struct buf *b, struct s3_client *c, const char *src_key)
{
    if (c->access_point) {
        int rc = util_pct_encode(b, c->bucket, strlen(c->bucket), true);
        if (!rc)
            rc = buf_puts(b, "/object/");
        return rc ? rc : util_pct_encode(b, src_key, strlen(src_key), true);
    }
    int rc = buf_puts(b, "/");
    if (!rc)
        rc = util_pct_encode(b, c->bucket, strlen(c->bucket), false);
    if (!rc)
        rc = buf_puts(b, "/");
    if (!rc)
        rc = util_pct_encode(b, src_key, strlen(src_key), true);
    return rc;
}

int s3_copy_object(struct s3_client *c, const char *src_key, const char *dst_key,
                   const struct s3_put_opts *replace, const char *src_if_match, char *etag_out,
                   struct s3_error *err)
{
    struct s3_req req;
    struct buf src = BUF_INIT;
    req_init(&req, "CopyObject", "PUT", dst_key);
    req.body_may_be_error = true;
    int rc = copy_source(&src, c, src_key);
    if (!rc) {
        bool copied = !replace || replace->metadata_copied;
        req_header(&req, "x-amz-copy-source", src.data);
        req_header(&req, "x-amz-metadata-directive", copied ? "COPY" : "REPLACE");
        if (src_if_match)
            req_header(&req, "x-amz-copy-source-if-match", src_if_match);
        add_sse_c_headers(c, &req);
        add_sse_c_copy_source_headers(c, &req);
        rc = copied ? 0 : put_opts_headers(&req, replace);
        add_object_policy_headers(c, &req, replace);
    }
    if (!rc)
        rc = s3_execute(c, &req, err);
    if (!rc && etag_out)
        etag_known(&req, etag_out);
    req_free(&req);
    buf_free(&src);
    return rc;
}

const char *s3_list_page_outside(const struct s3_list_page *page, const char *prefix)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; plen && i < page->n_entries; i++)
        if (strncmp(page->entries[i].key, prefix, plen) != 0)
            return page->entries[i].key;
    for (size_t i = 0; plen && i < page->n_prefixes; i++)
        if (strncmp(page->prefixes[i], prefix, plen) != 0)
            return page->prefixes[i];
    return NULL;
}

const char *s3_upload_page_outside(const struct s3_upload_page *page, const char *prefix)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; plen && i < page->n_uploads; i++)
        if (strncmp(page->uploads[i].key, prefix, plen) != 0)
            return page->uploads[i].key;
    return NULL;
}

/* A listing that holds `key` outside the `prefix` asked for: one line with
 * the request id, and EIO for the whole page, before any caller acts on
 * any of it.  (The key is the server's: log lines escape it.) */
static int outside_prefix(const struct s3_req *req, const char *prefix, const char *key,
                          struct s3_error *err)
{
    log_error("%s: the server answered a listing of \"%s\" with key \"%s\" (request id %s); "
              "refusing the listing",
              req->op, prefix, key, req->request_id[0] ? req->request_id : "none");
    if (err)
        snprintf(err->message, sizeof(err->message), "%s listed a key outside its prefix", req->op);
    return EIO;
}

int s3_list_objects_v2(struct s3_client *c, const struct s3_list_params *p,
                       struct s3_list_page *page, struct s3_error *err)
{
    memset(page, 0, sizeof(*page));
    struct s3_req req;
    char maxkeys[16];
    req_init(&req, "ListObjectsV2", "GET", NULL);
    req_query(&req, "list-type", "2");
    req_query(&req, "encoding-type", "url");
    if (p->prefix && *p->prefix)
        req_query(&req, "prefix", p->prefix);
    if (p->delimiter && *p->delimiter)
        req_query(&req, "delimiter", p->delimiter);
    if (p->start_after && *p->start_after)
        req_query(&req, "start-after", p->start_after);
    if (p->continuation_token)
        req_query(&req, "continuation-token", p->continuation_token);
    if (p->max_keys) {
        snprintf(maxkeys, sizeof(maxkeys), "%u", p->max_keys);
        req_query(&req, "max-keys", maxkeys);
    }
    int rc = s3_execute(c, &req, err);
    if (!rc) {
        rc = unreadable(&req, s3_xml_parse_list_v2(req.resp.data, req.resp.len, page), err);
    }
    const char *outside = rc ? NULL : s3_list_page_outside(page, p->prefix);
    if (outside) {
        rc = outside_prefix(&req, p->prefix, outside, err);
        s3_list_page_free(page);
    }
    if (!rc && page->truncated &&
        (!page->next_token || !*page->next_token ||
         (p->continuation_token && strcmp(page->next_token, p->continuation_token) == 0))) {
        log_error("ListObjectsV2 %s: the server returned a truncated page without a new "
                  "continuation token; stopping rather than looping",
                  p->prefix ? p->prefix : "");
        s3_list_page_free(page);
        rc = EPROTO;
    }
    req_free(&req);
    return rc;
}

int s3_create_multipart_upload(struct s3_client *c, const char *key, const struct s3_put_opts *opts,
                               char **upload_id, struct s3_error *err)
{
    struct s3_req req;
    req_init(&req, "CreateMultipartUpload", "POST", key);
    req_query(&req, "uploads", "");
    add_sse_c_headers(c, &req);
    add_checksum_algorithm(c, &req);
    int rc = put_opts_headers(&req, opts);
    add_object_policy_headers(c, &req, opts);
    if (!rc)
        rc = s3_execute(c, &req, err);
    if (!rc)
        rc = unreadable(&req, s3_xml_parse_upload_id(req.resp.data, req.resp.len, upload_id), err);
    req_free(&req);
    return rc;
}

int s3_upload_part(struct s3_client *c, const char *key, const char *upload_id, int part_number,
                   const void *data, size_t len, struct s3_part *out, struct s3_error *err)
{
    struct s3_req req;
    char num[16];
    snprintf(num, sizeof(num), "%d", part_number);
    req_init(&req, "UploadPart", "PUT", key);
    req_query(&req, "partNumber", num);
    req_query(&req, "uploadId", upload_id);
    req.body = data;
    req.body_len = len;
    add_sse_c_headers(c, &req);
    add_checksum_headers(c, &req);
    memset(out, 0, sizeof(*out));
    out->number = part_number;
    int rc = s3_execute(c, &req, err);
    if (!rc) {
        if (!req.etag[0])
            rc = EPROTO;
        else
            snprintf(out->etag, sizeof(out->etag), "%s", req.etag);
        snprintf(out->checksum, sizeof(out->checksum), "%s", req.checksum);
    }
    req_free(&req);
    return rc;
}

int s3_upload_part_copy(struct s3_client *c, const char *key, const char *upload_id,
                        int part_number, const char *src_key, uint64_t offset, uint64_t length,
                        const char *src_if_match, struct s3_part *out, struct s3_error *err)
{
    memset(out, 0, sizeof(*out));
    out->number = part_number;
    if (length == 0)
        return EINVAL;
    struct s3_req req;
    struct buf src = BUF_INIT;
    char num[16], range[64];
    snprintf(num, sizeof(num), "%d", part_number);
    snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)offset,
             (unsigned long long)(offset + length - 1));
    req_init(&req, "UploadPartCopy", "PUT", key);
    req.body_may_be_error = true;
    req_query(&req, "partNumber", num);
    req_query(&req, "uploadId", upload_id);
    int rc = copy_source(&src, c, src_key);
    if (!rc) {
        req_header(&req, "x-amz-copy-source", src.data);
        req_header(&req, "x-amz-copy-source-range", range);
        if (src_if_match)
            req_header(&req, "x-amz-copy-source-if-match", src_if_match);
        add_sse_c_headers(c, &req);
        add_sse_c_copy_source_headers(c, &req);
        rc = s3_execute(c, &req, err);
    }
    if (!rc)
        rc = unreadable(&req, s3_xml_parse_etag(req.resp.data, req.resp.len, out->etag), err);
    /* the server computes a copied part's checksum; Complete must name it */
    if (!rc && c->checksum != S3_CHECKSUM_OFF)
        rc = unreadable(&req,
                        s3_xml_parse_checksum(req.resp.data, req.resp.len,
                                              checksum_names[c->checksum].element, out->checksum,
                                              sizeof(out->checksum)),
                        err);
    req_free(&req);
    buf_free(&src);
    return rc;
}

/* NoSuchUpload from a Complete can mean that an earlier attempt did
 * complete it (the connection broke before the answer arrived, and the
 * retry found the upload gone).  The object then carries exactly the ETag
 * those parts make; any other object, or none, means it did not land. */
static bool complete_landed(struct s3_client *c, const char *key, const struct s3_part *parts,
                            size_t n_parts, char *etag_out)
{
    char want[80];
    if (s3_multipart_etag(parts, n_parts, want))
        return false;
    struct s3_object_info info = {0};
    bool landed = s3_head_object(c, key, &info, NULL) == 0 && strcmp(info.etag, want) == 0;
    s3_object_info_clear(&info);
    if (landed) {
        log_info("%s: CompleteMultipartUpload answered NoSuchUpload, but the object with "
                 "its parts' ETag is there: an earlier attempt completed it",
                 key);
        if (etag_out)
            snprintf(etag_out, 80, "%s", want);
    }
    return landed;
}

/* A part's <ChecksumX> in the Complete document, when it has one. */
static int complete_part_checksum(struct s3_client *c, struct buf *body, const struct s3_part *p)
{
    if (c->checksum == S3_CHECKSUM_OFF || !p->checksum[0])
        return 0;
    const char *el = checksum_names[c->checksum].element;
    int rc = buf_printf(body, "<%s>", el);
    if (!rc)
        rc = s3_xml_escape(body, p->checksum);
    if (!rc)
        rc = buf_printf(body, "</%s>", el);
    return rc;
}

int s3_complete_multipart_upload(struct s3_client *c, const char *key, const char *upload_id,
                                 const struct s3_part *parts, size_t n_parts, char *etag_out,
                                 struct s3_error *err)
{
    struct buf body = BUF_INIT;
    int rc = buf_puts(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                             "<CompleteMultipartUpload "
                             "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < n_parts && !rc; i++) {
        rc = buf_printf(&body, "<Part><PartNumber>%d</PartNumber><ETag>", parts[i].number);
        if (!rc)
            rc = s3_xml_escape(&body, parts[i].etag);
        if (!rc)
            rc = buf_puts(&body, "</ETag>");
        if (!rc)
            rc = complete_part_checksum(c, &body, &parts[i]);
        if (!rc)
            rc = buf_puts(&body, "</Part>");
    }
    if (!rc)
        rc = buf_puts(&body, "</CompleteMultipartUpload>");
    struct s3_req req;
    req_init(&req, "CompleteMultipartUpload", "POST", key);
    req_query(&req, "uploadId", upload_id);
    req_header(&req, "content-type", "application/xml");
    req.body = body.data;
    req.body_len = body.len;
    req.body_may_be_error = true;
    if (!rc)
        rc = s3_execute(c, &req, err);
    if (!rc && etag_out)
        etag_known(&req, etag_out);
    req_free(&req);
    buf_free(&body);
    if (rc == ENOENT && complete_landed(c, key, parts, n_parts, etag_out))
        rc = 0;
    return rc;
}

int s3_abort_multipart_upload(struct s3_client *c, const char *key, const char *upload_id,
                              struct s3_error *err)
{
    struct s3_req req;
    req_init(&req, "AbortMultipartUpload", "DELETE", key);
    req_query(&req, "uploadId", upload_id);
    int rc = s3_execute(c, &req, err);
    req_free(&req);
    return rc;
}

int s3_list_multipart_uploads(struct s3_client *c, const char *prefix, const char *key_marker,
                              const char *upload_id_marker, struct s3_upload_page *page,
                              struct s3_error *err)
{
    memset(page, 0, sizeof(*page));
    struct s3_req req;
    req_init(&req, "ListMultipartUploads", "GET", NULL);
    req_query(&req, "uploads", "");
    if (prefix && *prefix)
        req_query(&req, "prefix", prefix);
    if (key_marker && *key_marker)
        req_query(&req, "key-marker", key_marker);
    if (upload_id_marker && *upload_id_marker)
        req_query(&req, "upload-id-marker", upload_id_marker);
    int rc = s3_execute(c, &req, err);
    if (!rc)
        rc = unreadable(&req, s3_xml_parse_list_uploads(req.resp.data, req.resp.len, page), err);
    const char *outside = rc ? NULL : s3_upload_page_outside(page, prefix);
    if (outside) {
        rc = outside_prefix(&req, prefix, outside, err);
        s3_upload_page_free(page);
    }
    /* A truncated page must move the markers on, or the caller would loop. */
    if (!rc && page->truncated &&
        (!page->next_key_marker || !*page->next_key_marker ||
         (key_marker && strcmp(page->next_key_marker, key_marker) == 0 &&
          strcmp(page->next_upload_id_marker ? page->next_upload_id_marker : "",
                 upload_id_marker ? upload_id_marker : "") == 0))) {
        log_error("ListMultipartUploads: the server returned a truncated page without new "
                  "markers; stopping rather than looping");
        s3_upload_page_free(page);
        rc = EPROTO;
    }
    req_free(&req);
    return rc;
}
