/* fuzz_sigv4.c — SigV4's canonicaliser (src/s3/sigv4.c) and the key
 * encoder (util_pct_encode / util_pct_decode).
 *
 * The input is split at newlines: method, path, region, access key,
 * secret key, payload hash, eight bytes of time, then "name=value" query
 * lines up to an empty line, then "name:value" header lines.  Checked:
 * decoding what was encoded gives the bytes back, and the encoding holds
 * only unreserved characters and %XX; the canonical query is the pairs,
 * encoded and sorted; the canonical request and the signature do not
 * depend on the order the query and the headers came in. */
#include "fuzz.h"

#include <stdbool.h>
#include <string.h>

#include "s3/s3_private.h"

#define MAX_KV 16

static bool unreserved(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static bool upper_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static void check_encoding(const char *s, bool keep_slash)
{
    struct buf b = BUF_INIT;
    FUZZ_ASSERT(util_pct_encode(&b, s, strlen(s), keep_slash) == 0);
    char *enc = buf_steal(&b);
    FUZZ_ASSERT(enc);
    for (const char *p = enc; *p; p++) {
        if (*p == '%') {
            FUZZ_ASSERT(upper_hex(p[1]) && upper_hex(p[2]));
            p += 2;
        } else {
            FUZZ_ASSERT(unreserved(*p) || (keep_slash && *p == '/'));
        }
    }
    char *dec = NULL;
    FUZZ_ASSERT(util_pct_decode(enc, &dec) == 0 && strcmp(dec, s) == 0);
    free(dec);
    free(enc);
}

/* "name=value" (query) or "name:value" (header) into kv; the strings
 * point into `line`, which is cut at the separator. */
static void split_kv(char *line, char sep, struct s3_kv *kv)
{
    char *at = strchr(line, sep);
    if (at)
        *at++ = '\0';
    kv->name = line;
    kv->value = at ? at : "";
}

static char *sign(const struct s3_sign_input *in, char *canon_out, size_t canon_len)
{
    struct buf canon = BUF_INIT, auth = BUF_INIT;
    char sig[65];
    FUZZ_ASSERT(s3_canonical_request(&canon, in) == 0);
    FUZZ_ASSERT(s3_sigv4_authorization(&auth, in, sig) == 0);
    FUZZ_ASSERT(strlen(sig) == 64);
    for (int i = 0; i < 64; i++)
        FUZZ_ASSERT((sig[i] >= '0' && sig[i] <= '9') || (sig[i] >= 'a' && sig[i] <= 'f'));
    FUZZ_ASSERT(strncmp(auth.data, "AWS4-HMAC-SHA256 Credential=", 28) == 0);
    FUZZ_ASSERT(strstr(auth.data, sig) != NULL);
    snprintf(canon_out, canon_len, "%s", canon.data ? canon.data : "");
    buf_free(&canon);
    return buf_steal(&auth);
}

/* The canonical query's pairs: each name=value once, in strcmp order. */
static void check_query(const struct s3_kv *q, size_t n)
{
    struct buf b = BUF_INIT;
    FUZZ_ASSERT(s3_canonical_query(&b, q, n) == 0);
    char *s = buf_steal(&b);
    size_t pairs = 0;
    char *prev = NULL, *save = NULL;
    for (char *tok = strtok_r(s, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(tok, '=');
        FUZZ_ASSERT(eq && !strchr(eq + 1, '='));
        if (prev) {
            /* sorted by name, then value: compare the pair as (name, value) */
            char *peq = strchr(prev, '=');
            *peq = '\0';
            *eq = '\0';
            int c = strcmp(prev, tok);
            FUZZ_ASSERT(c < 0 || (c == 0 && strcmp(peq + 1, eq + 1) <= 0));
            *peq = '=';
            *eq = '=';
        }
        prev = tok;
        pairs++;
    }
    /* an empty name and value encode as "=", which strtok keeps */
    FUZZ_ASSERT(pairs == n);
    free(s);
}

static bool names_distinct(const struct s3_kv *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcasecmp(h[i].name, h[j].name) == 0)
                return false;
    return true;
}

FUZZ_TARGET(sigv4)
{
    struct fuzz_split sp = {data, data + size};
    char *f[7];
    for (int i = 0; i < 7; i++)
        f[i] = fuzz_field(&sp, '\n');
    for (int i = 0; i < 6; i++) {
        check_encoding(f[i], false);
        check_encoding(f[i], true);
    }
    int64_t t = 0;
    memcpy(&t, f[6], strlen(f[6]) < sizeof(t) ? strlen(f[6]) : sizeof(t));
    char date[17];
    s3_amz_date(t & 0x3ffffffffLL, date); /* years 1970 to 2514 */

    char *lines[2 * MAX_KV] = {0};
    struct s3_kv query[MAX_KV], headers[MAX_KV + 1];
    size_t nq = 0, nh = 0, nl = 0;
    bool in_headers = false;
    while (fuzz_more(&sp) && nl < 2 * MAX_KV) {
        char *line = lines[nl++] = fuzz_field(&sp, '\n');
        if (!in_headers && !*line) {
            in_headers = true;
        } else if (!in_headers && nq < MAX_KV) {
            split_kv(line, '=', &query[nq++]);
        } else if (in_headers && nh < MAX_KV) {
            split_kv(line, ':', &headers[nh++]);
        }
    }
    for (size_t i = 0; i < nq; i++)
        check_encoding(query[i].value, false);
    headers[nh++] = (struct s3_kv){"Host", "bucket.s3.amazonaws.com"}; /* always signed */
    check_query(query, nq);

    struct s3_sign_input in = {.method = f[0],
                               .canonical_uri = f[1],
                               .query = query,
                               .n_query = nq,
                               .headers = headers,
                               .n_headers = nh,
                               .payload_hash = f[5],
                               .region = f[2],
                               .service = "s3",
                               .amz_date = date,
                               .access_key = f[3],
                               .secret_key = f[4]};
    static char c1[1 << 16], c2[1 << 16];
    char *a1 = sign(&in, c1, sizeof(c1));
    if (names_distinct(headers, nh)) {
        /* the same request with its query and headers in reverse order */
        struct s3_kv rq[MAX_KV], rh[MAX_KV + 1];
        for (size_t i = 0; i < nq; i++)
            rq[i] = query[nq - 1 - i];
        for (size_t i = 0; i < nh; i++)
            rh[i] = headers[nh - 1 - i];
        struct s3_sign_input rev = in;
        rev.query = rq;
        rev.headers = rh;
        char *a2 = sign(&rev, c2, sizeof(c2));
        FUZZ_ASSERT(strcmp(c1, c2) == 0);
        FUZZ_ASSERT(strcmp(a1, a2) == 0);
        free(a2);
    }
    free(a1);
    for (size_t i = 0; i < nl; i++)
        free(lines[i]);
    for (int i = 0; i < 7; i++)
        free(f[i]);
    return 0;
}
