/* s3_private.h — the S3 layer's pure parts, shared by its .c files and its
 * unit tests.  Not an interface for other layers: they include s3.h only. */
#ifndef PAILFS_S3_PRIVATE_H
#define PAILFS_S3_PRIVATE_H

#include "s3/s3.h"
#include "util/util.h"

#include <pthread.h>

/* ---- SigV4, hashes and dates (sigv4.c) ---------------------------------- */

/* URI encoding and decoding are util_pct_encode / util_pct_decode. */

struct s3_kv {
    const char *name;
    const char *value;
};

struct s3_sign_input {
    const char *method;
    const char *canonical_uri; /* the encoded path exactly as sent */
    const struct s3_kv *query; /* raw (unencoded) names and values */
    size_t n_query;
    const struct s3_kv *headers; /* every header to sign, any case, raw values */
    size_t n_headers;
    const char *payload_hash; /* hex SHA-256 or "UNSIGNED-PAYLOAD" */
    const char *region;
    const char *service;  /* "s3" */
    const char *amz_date; /* "20130524T000000Z" */
    const char *access_key;
    const char *secret_key;
};

/* The canonical query string: names and values encoded, sorted. */
int s3_canonical_query(struct buf *out, const struct s3_kv *query, size_t n);
/* The canonical request (for tests and for debugging signature mismatches). */
int s3_canonical_request(struct buf *out, const struct s3_sign_input *in);
/* The Authorization header value ("AWS4-HMAC-SHA256 Credential=…").
 * signature_out (65 bytes, may be NULL) receives the hex signature. */
int s3_sigv4_authorization(struct buf *out, const struct s3_sign_input *in, char *signature_out);

/* Base64 MD5 of data into b64 (25 bytes). */
void s3_md5_base64(const void *data, size_t len, char *b64);
/* The ETag S3 gives an object completed from `parts` (whose ETags are the
 * parts' MD5s): "md5(binary part MD5s)-N", with quotes, into out (80
 * bytes).  0, EINVAL (an ETag that is not an MD5), ENOMEM. */
int s3_multipart_etag(const struct s3_part *parts, size_t n, char *out);
/* "YYYYMMDDTHHMMSSZ" for t into out (17 bytes). */
void s3_amz_date(int64_t t, char *out);

/* ---- metrics (metrics.c) --------------------------------------------- */

/* Register the layer's series (once per process).  Called by s3_client_new. */
void s3_metrics_init(void);
/* The index of an operation name ("GetObject"), for s3_metrics_attempt. */
unsigned s3_metrics_op(const char *op);
/* Count one attempt that was sent: its answer's status (0: none came), the
 * S3 error code when known (NULL or ""), request body bytes sent, and
 * whether it retried an earlier attempt. */
void s3_metrics_attempt(unsigned op, long status, const char *code, size_t sent, bool retry);
/* Count response body bytes as they arrive. */
void s3_metrics_received(size_t n);

/* ---- XML (xml.c) ------------------------------------------------------ */

/* libxml2's global state, set up once before any thread parses: its lazy
 * first-use setup is not thread-safe (two threads parsing their first
 * responses at once leaked its encoding table).  Called by s3_client_new. */
void s3_xml_init(void);

/* A size the server sent (decimal digits only) into *out: 0, or EPROTO
 * when it is not a number or exceeds S3_MAX_OBJECT_SIZE. */
int s3_parse_size(const char *text, uint64_t *out);
/* Append s with &, <, >, ", ' escaped. */
int s3_xml_escape(struct buf *out, const char *s);
/* If the document is an <Error>, fill err->code/message/request_id/region and
 * return 0; else ENOENT (not an error document) or EPROTO (not XML). */
int s3_xml_parse_error(const char *xml, size_t len, struct s3_error *err);
/* A ListObjectsV2 page.  0, EPROTO (not such a document), EBADMSG (an
 * ETag in it holds a control character: refused, see etag_field), ENOMEM;
 * on error *page is empty. */
int s3_xml_parse_list_v2(const char *xml, size_t len, struct s3_list_page *page);
/* UploadId of an InitiateMultipartUploadResult (caller frees). */
int s3_xml_parse_upload_id(const char *xml, size_t len, char **upload_id);
/* ETag of a CopyObjectResult, CopyPartResult or CompleteMultipartUploadResult
 * into etag (80 bytes). EPROTO when there is none, EBADMSG when it holds a
 * control character. */
int s3_xml_parse_etag(const char *xml, size_t len, char *etag);
/* The text of the top-level child `element` of an answer (a
 * CopyPartResult's <ChecksumCRC32C>) into out (n bytes): 0 with "" when
 * there is none, EBADMSG when it is not short base64 (it would go back
 * into a request of ours), EPROTO (not XML), ENOMEM. */
int s3_xml_parse_checksum(const char *xml, size_t len, const char *element, char *out, size_t n);
/* A DeleteResult: errs[i] gets EACCES/EIO/… for keys[i] named in an <Error>. */
int s3_xml_parse_delete_result(const char *xml, size_t len, const char *const *keys, size_t n,
                               int *errs);
int s3_xml_parse_list_uploads(const char *xml, size_t len, struct s3_upload_page *page);
struct s3_credentials; /* creds.c's; filled here as plain values */
/* The values of an STS AssumeRoleWithWebIdentity answer into *out (zeroed
 * first), unchecked: whether they make credentials is creds.c's to say
 * (s3_creds_parse_sts).  0, EACCES (an <Error>, in *err when not NULL),
 * EPROTO or ENOMEM; on every return *out may hold strings, which the
 * caller frees with s3_credentials_clear. */
int s3_xml_parse_sts(const char *xml, size_t len, struct s3_credentials *out, struct s3_error *err);

/* ---- encryption and storage class (client.c) --------------------------- */

/* What a new object is stored with, from the mount's policy and the kept
 * one of the object it replaces or copies (NULL: none), by the rule told
 * at struct s3_put_opts.  The strings point into *mount and *keep. */
struct s3_object_policy s3_policy_effective(const struct s3_object_policy *mount,
                                            const struct s3_object_policy *keep);

/* ---- region names and listings (client.c) ------------------------------ */

/* Whether r can be a region name: 1 to 32 characters of [a-z0-9-], neither
 * end a hyphen ("us-east-1", "cn-northwest-1").  A region is put into the
 * endpoint's host name (s3.REGION.amazonaws.com) and the signature's scope,
 * so a hint from a server that is anything else ("evil.com/x",
 * "us-east-1.attacker") is refused, never followed. */
bool s3_region_valid(const char *r);
/* An S3 access point, from its ARN
 * "arn:PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME". */
struct s3_access_point {
    char partition[16]; /* "aws", "aws-cn" or "aws-us-gov" */
    char region[33];    /* s3_region_valid, and of the partition */
    char account[13];   /* 12 digits */
    char name[51];      /* 3 to 50 of [a-z0-9-], no '-' at either end */
};
/* Parse an access point ARN strictly (a user's word that becomes a host
 * name and a signing scope): 0, or EINVAL with *why a static reason.
 * Multi-Region (no region), Outposts and Object Lambda ARNs are EINVAL. */
int s3_access_point_parse(const char *arn, struct s3_access_point *out, const char **why);
/* Append the host of its endpoint to out:
 * "NAME-ACCOUNT.s3-accesspoint.REGION.amazonaws.com" (".com.cn" in
 * aws-cn).  0 or ENOMEM. */
int s3_access_point_host(const struct s3_access_point *ap, struct buf *out);
/* The first key or common prefix of `page` that does not begin with
 * `prefix`, or NULL when all do (always NULL for a NULL or "" prefix).  A
 * server that ignores the prefix it was asked for must not make callers
 * show, copy, delete or abort keys outside it (issue 17 item 1). */
const char *s3_list_page_outside(const struct s3_list_page *page, const char *prefix);
/* The same for the uploads of a ListMultipartUploads page. */
const char *s3_upload_page_outside(const struct s3_upload_page *page, const char *prefix);

/* ---- credentials (creds.c) -------------------------------------------- */

struct s3_credentials {
    char *access_key;
    char *secret_key;
    char *session_token; /* or NULL */
    int64_t expiration;  /* seconds since the epoch; 0 = does not expire */
};
void s3_credentials_clear(struct s3_credentials *cr);

/* Read a file that holds a secret (passwd_file, sse_c_key_file), at most
 * `max` bytes: it must be owned by the effective user and closed to group
 * and others (no bit of 077), as ssh asks of its keys.  `what` names the
 * option in messages.  0 with *text (NUL-terminated; free it with
 * util_wipe_free) and *len, or EACCES with `why` (size why_len) saying
 * what is wrong and how to fix it. */
int s3_secret_file_read(const char *what, const char *path, size_t max, char **text, size_t *len,
                        char *why, size_t why_len);
/* The SSE-C key from the bytes of a key file: exactly 32 bytes are the
 * key itself; anything else, trimmed of white space, must be the base64 of
 * 32 bytes.  0, or EINVAL with *why set to a static reason. */
#define S3_SSE_C_KEY_LEN 32
int s3_sse_c_parse_key(const char *data, size_t len, unsigned char key[S3_SSE_C_KEY_LEN],
                       const char **why);

/* Parse an s3fs password file's text: lines "ACCESS:SECRET" or
 * "BUCKET:ACCESS:SECRET" (a bucket line wins for that bucket); '#' comments.
 * 0, or EINVAL with *why set to a static reason. */
int s3_creds_parse_passwd(const char *text, const char *bucket, struct s3_credentials *out,
                          const char **why);
/* Read `profile` from the AWS shared credentials file text and config file
 * text (either may be NULL).  Fills what it finds: keys into *out, region
 * into *region (malloc'ed, may stay NULL), web identity settings into
 * *role_arn / *token_file (malloc'ed or NULL).  0 when the profile exists in
 * either file, else ENOENT. */
struct s3_profile {
    struct s3_credentials creds;
    char *region;
    char *role_arn;
    char *web_identity_token_file;
    char *role_session_name;
    char *source_profile;     /* role_arn assumed with this profile's keys */
    char *external_id;        /* AssumeRole's ExternalId */
    char *duration_seconds;   /* AssumeRole's DurationSeconds, as written */
    char *mfa_serial;         /* refused: a mount cannot ask for a code */
    char *credential_source;  /* refused: not supported */
    char *credential_process; /* a command printing credentials as JSON */
};
void s3_profile_clear(struct s3_profile *p);
int s3_creds_parse_profile(const char *credentials_text, const char *config_text,
                           const char *profile, struct s3_profile *out);
/* Parse the JSON of the container endpoint or IMDS (AccessKeyId,
 * SecretAccessKey, Token, Expiration).  0 or EPROTO. */
int s3_creds_parse_json(const char *json, size_t len, struct s3_credentials *out);
/* The largest output read from a credential_process. */
#define S3_PROCESS_OUTPUT_MAX (64u << 10)
/* Parse what a credential_process printed, strictly: one JSON object with
 * "Version": 1, non-empty string AccessKeyId and SecretAccessKey, an
 * optional string SessionToken and an optional ISO 8601 Expiration that
 * must be after `now` (seconds since the epoch); nothing but white space
 * after it; no control character in any value (they go into headers);
 * at most S3_PROCESS_OUTPUT_MAX bytes.  0, or EPROTO with *why a static
 * reason (naming a field, never a value), or ENOMEM; *out holds nothing
 * on error. */
int s3_creds_parse_process(const char *json, size_t len, int64_t now, struct s3_credentials *out,
                           const char **why);
/* Split a credential_process command into words as a POSIX shell would
 * split it, without running a shell or expanding anything: words are
 * separated by blanks; '...' is literal; in "..." a backslash escapes
 * only $ ` " \ and newline; elsewhere a backslash escapes the next
 * character.  *argv_out is a NULL-terminated array (free it with
 * s3_creds_free_words).  0, EINVAL (no word, an unterminated quote, a
 * trailing backslash; *why says which) or ENOMEM. */
int s3_creds_split_command(const char *cmd, char ***argv_out, const char **why);
void s3_creds_free_words(char **argv);
/* Parse STS AssumeRoleWithWebIdentity XML (s3_xml_parse_sts) into
 * credentials: 0, EACCES (an <Error>), EPROTO (unreadable, or without both
 * keys) or ENOMEM; *out holds nothing on error. */
int s3_creds_parse_sts(const char *xml, size_t len, struct s3_credentials *out,
                       struct s3_error *err);

/* The provider chain: passwd_file → env → profile → web identity →
 * container → IMDSv2.  A profile gives, first configured first: role_arn
 * assumed (STS AssumeRole, signed with the credentials of its
 * source_profile, itself resolved the same way, 5 hops at most),
 * role_arn with web_identity_token_file, keys, credential_process (run
 * without a shell, its output read by s3_creds_parse_process, killed
 * after 60 s).  On success *out holds credentials and *source names
 * where from ("profile:NAME" etc., static or in `source_buf`).  On failure
 * EACCES with `why` (size n) saying what was tried and what failed. */
struct s3_creds_request {
    const char *passwd_file;
    const char *bucket;
    const char *profile;
    const char *region; /* for the STS endpoint, may be NULL */
    struct http_engine *http;
    unsigned process_timeout_ms; /* a credential_process's bound; 0 → 60,000 */
};
int s3_creds_resolve(const struct s3_creds_request *rq, struct s3_credentials *out, char *source,
                     size_t source_len, char *why, size_t why_len);
/* Fetch fresh credentials from the same refreshable source (web-identity,
 * container, imds, and a profile's assumed role, web identity or
 * credential_process: "profile-assume-role:NAME", "profile-web-identity:NAME",
 * "profile-process:NAME").  0, or an errno with `why` set. */
int s3_creds_refresh(const struct s3_creds_request *rq, const char *source,
                     struct s3_credentials *out, char *why, size_t why_len);
/* Region from AWS_REGION, AWS_DEFAULT_REGION or the profile's config; NULL if
 * none (malloc'ed). */
char *s3_creds_default_region(const char *profile);
/* The region the EC2 instance metadata service (IMDSv2) names for this
 * machine (/latest/meta-data/placement/region), as it sent it, unchecked
 * (malloc'ed; the caller checks it with s3_region_valid); NULL when the
 * service is disabled (AWS_EC2_METADATA_DISABLED) or does not answer
 * within about a second. */
char *s3_creds_imds_region(void);

/* ---- retries (retry.c) ------------------------------------------------ */

struct s3_retry_policy {
    unsigned max_attempts;
    unsigned base_ms;
    unsigned cap_ms;
};

/* Should a request that ended this way be tried again?  status is the HTTP
 * status (0: none), code the S3 error code ("" if none), transport the
 * transport errno (0: a response arrived). */
bool s3_retryable(long status, const char *code, int transport);
/* Full-jitter backoff before retry number `retry` (1 = first retry):
 * a value in [0, min(cap, base · 2^(retry-1))], scaled from rnd. */
uint64_t s3_backoff_ms(const struct s3_retry_policy *p, unsigned retry, uint64_t rnd);

/* A token bucket shared by a client's requests so that a dead server does
 * not multiply load: each retry spends tokens (more for transport failures),
 * each success puts some back.  When empty, failures are not retried. */
struct s3_retry_budget {
    pthread_mutex_t mutex;
    int tokens; /* protected by mutex */
    int max_tokens;
};
#define S3_BUDGET_MAX 500
#define S3_BUDGET_RETRY_COST 5
#define S3_BUDGET_TIMEOUT_COST 10
void s3_budget_init(struct s3_retry_budget *b);
/* Take the cost of one retry; false (nothing taken) when there is not enough. */
bool s3_budget_take(struct s3_retry_budget *b, int cost);
/* Put tokens back (after a success), up to the maximum. */
void s3_budget_give(struct s3_retry_budget *b, int amount);

/* The errno for a final HTTP status and S3 code. */
int s3_status_to_errno(long status, const char *code);

#endif
