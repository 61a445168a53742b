/* s3.h — the S3 client: requests and responses of the S3 REST API.
 *
 * Every operation is a blocking call that signs its request (SigV4), sends it
 * through the HTTP engine, retries transient failures with exponential
 * backoff and full jitter, and maps the final outcome to an errno.  Calls are
 * thread-safe: many threads may use one client at once.
 *
 * Errors common to every operation (the function comments list the rest):
 *   ENOENT  404 (NoSuchKey, NoSuchBucket, NoSuchUpload — see err->code)
 *   EACCES  403 (AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId, …)
 *   EINVAL  400 other than the retried ones; a request we could not build
 *   ESTALE  412 PreconditionFailed (an If-Match did not hold)
 *   ENOSYS  501 NotImplemented
 *   ENOTSUP 405 MethodNotAllowed
 *   ENODATA 403 InvalidObjectState: the object is archived (GLACIER,
 *           DEEP_ARCHIVE, or an archive tier of INTELLIGENT_TIERING) and
 *           must be restored before it can be read; logged as such, once
 *           for a key asked again and again
 *   EPROTO  TLS failure (certificate refused), or a response we cannot parse
 *           or that gives a size beyond S3_MAX_OBJECT_SIZE
 *   EIO     retries exhausted (5xx, SlowDown, resets, timeouts, short
 *           bodies, server unreachable), an upload the server refused as
 *           corrupt (400 BadDigest, XAmzContentSHA256Mismatch: not retried,
 *           nothing was stored), a whole-object GET whose bytes do not
 *           match the checksum the server gave (logged), or any other
 *           failure
 *   ENOMEM
 * When `err` is not NULL it receives the details of the last attempt.
 * A request that finally fails is logged once with method, key, status, S3
 * error code and request id (404s only at debug level: lookups of missing
 * names are routine).  Secrets and signatures are never logged. */
#ifndef PAILFS_S3_H
#define PAILFS_S3_H

#include "http/http.h"
#include "util/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct s3_client;

enum s3_addressing {
    S3_ADDR_AUTO = 0, /* path style for IP addresses, localhost and names that
                       * are not DNS-safe; virtual-hosted style otherwise */
    S3_ADDR_PATH,
    S3_ADDR_VIRTUAL,
};

/* How new objects are stored: server-side encryption and storage class.
 * A field NULL (false) asks nothing of S3: its default (the bucket's
 * default encryption, STANDARD).  The strings are S3's own words:
 *   sse            "AES256", "aws:kms" or "aws:kms:dsse"
 *   sse_kms_key_id a KMS key id, alias or ARN (aws:kms and aws:kms:dsse only)
 *   sse_bucket_key an S3 Bucket Key for SSE-KMS
 *   storage_class  "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR", …
 * (checked by s3_sse_valid() / s3_storage_class_valid()). */
struct s3_object_policy {
    const char *sse;
    const char *sse_kms_key_id;
    bool sse_bucket_key;
    const char *storage_class;
};

/* Whether s is an encryption S3 takes in x-amz-server-side-encryption, a
 * storage class it takes in x-amz-storage-class for a new object, and
 * whether the encryption `sse` takes a KMS key id. */
bool s3_sse_valid(const char *s);
bool s3_sse_is_kms(const char *s);
bool s3_storage_class_valid(const char *s);

/* The checksum sent with every uploaded body (x-amz-checksum-*), and
 * checked on whole-object GETs whose answer carries one. */
enum s3_checksum {
    S3_CHECKSUM_CRC32C = 0, /* the default */
    S3_CHECKSUM_CRC64NVME,
    S3_CHECKSUM_SHA256,
    S3_CHECKSUM_OFF, /* none sent, none checked */
};

struct s3_config {
    const char *endpoint; /* "http://127.0.0.1:9000"; NULL → AWS by region */
    const char *region;   /* NULL → env, profile, (no endpoint) the EC2 instance
                           * metadata, else us-east-1 (then discovered); an
                           * access point ARN's bucket: its region, and a
                           * different one here is EINVAL */
    const char *bucket;   /* required: a name, an access point alias, or an
                           * access point ARN (arn:PARTITION:s3:REGION:
                           * ACCOUNT:accesspoint/NAME), reached at its own
                           * endpoint, or at NAME-ACCOUNT.HOST of `endpoint` */
    enum s3_addressing addressing;
    const char *profile;                    /* NULL → $AWS_PROFILE, else "default" */
    const char *passwd_file;                /* s3fs-style ACCESS:SECRET file, or NULL */
    bool public_bucket;                     /* send unsigned requests */
    bool unsigned_payload;                  /* UNSIGNED-PAYLOAD instead of the body's hash
                                             * (honoured over https only) */
    unsigned max_attempts;                  /* tries per request, first included; 0 → 5 */
    unsigned retry_base_ms;                 /* 0 → 200 */
    unsigned retry_cap_ms;                  /* 0 → 20,000 */
    unsigned credential_process_timeout_ms; /* 0 → 60,000 */
    enum s3_checksum checksum;
    const char *sse_c_key_file; /* SSE-C: a file of the 256-bit customer key
                                 * (32 raw bytes, or their base64), mode 600
                                 * and owned by us, checked like passwd_file;
                                 * NULL: no SSE-C */
    struct http_engine_options http;
    /* Every PutObject, CreateMultipartUpload and CopyObject asks for this
     * (see s3_put_opts.keep for what a copy keeps of its source). */
    struct s3_object_policy policy;
    bool requester_pays; /* x-amz-request-payer: requester on every request
                          * (signed): the bucket owner makes the reader pay */
};

/* Details of a failed request, for messages.  All strings NUL-terminated. */
struct s3_error {
    long status;       /* HTTP status; 0 when none arrived */
    int transport;     /* errno of the transport failure, or 0 */
    char code[64];     /* S3 error code, e.g. "NoSuchKey" */
    char message[768]; /* S3's message, libcurl's words, or ours */
    char request_id[96];
    char region[64]; /* a region hint from the server, if any */
};

/* SSE-C: with cfg->sse_c_key_file, every GetObject, HeadObject, PutObject,
 * CreateMultipartUpload and UploadPart carries
 * x-amz-server-side-encryption-customer-algorithm/-key/-key-MD5, and
 * CopyObject and UploadPartCopy carry them for the destination and as
 * x-amz-copy-source-server-side-encryption-customer-* for the source (one
 * key for the whole mount).  The key lives in the client only, wiped when
 * it is freed, and is never logged.
 *
 * Checksums (cfg->checksum, not OFF): PutObject and UploadPart send the
 * body's x-amz-checksum-<algorithm> (base64 of the big-endian value);
 * CreateMultipartUpload declares
 * x-amz-checksum-algorithm (CRC64NVME with x-amz-checksum-type
 * FULL_OBJECT, the only type S3 allows for it); each part's checksum
 * (ours, or for UploadPartCopy the one the server answers) goes into
 * CompleteMultipartUpload's <ChecksumX> elements.  A GET of a whole
 * object (no range) sends x-amz-checksum-mode: ENABLED and checks a
 * CRC32C, CRC32, CRC64NVME or SHA256 full-object value the answer carries
 * against the bytes (a composite value "xxx-N" of a multipart object
 * cannot be checked from the bytes: skipped). */

/* Create a client: resolves credentials (see s3_credentials_describe for the
 * chain) and starts its HTTP engine.  Does not contact the bucket: call
 * s3_head_bucket_limited() for that.  *out is freed with s3_client_free().
 * 0, EINVAL (bad config; `err->message` says why), EACCES (no usable
 * credentials, or an SSE-C key file that is unreadable, not ours, open
 * to others or not a key; message says which), ENOMEM, EIO. */
int s3_client_new(const struct s3_config *cfg, struct s3_client **out, struct s3_error *err);
void s3_client_free(struct s3_client *c);

/* The region requests are signed for (may change after a HeadBucket). */
const char *s3_client_region(struct s3_client *c);
/* Where the credentials came from ("passwd_file", "env", "profile:NAME",
 * "profile-assume-role:NAME", "profile-web-identity:NAME",
 * "profile-process:NAME", "web-identity", "container", "imds", "none") and the access key id (never
 * the secret).  The strings live as long as the client. */
void s3_client_credentials_info(struct s3_client *c, const char **source,
                                const char **access_key_id);

/* Bounds for one call that must answer quickly, such as the check before
 * mounting.  A zero field keeps the client's setting. */
struct s3_call_limits {
    unsigned max_attempts;   /* tries, first included; never more than the
                              * client's own max_attempts */
    long attempt_timeout_ms; /* each attempt, connecting included; a slower
                              * one fails with err->transport ETIMEDOUT */
    bool quiet;              /* do not log the final failure: the caller
                              * reports it in its own words */
};

/* HeadBucket within `limits` (NULL: none, the client's own settings).
 * Learns the bucket's region from x-amz-bucket-region and from 301
 * PermanentRedirect / 400 AuthorizationHeaderMalformed hints, and re-signs
 * for it.  ENOENT when the bucket does not exist.  With max_attempts 2 and
 * attempt_timeout_ms 5000 it returns in about 10.5 s at most, even when the
 * endpoint never answers.  Following a region hint is not counted as an
 * attempt (it happens at most once, and only after the server answered). */
int s3_head_bucket_limited(struct s3_client *c, const struct s3_call_limits *limits,
                           struct s3_error *err);

/* ---- objects ---------------------------------------------------------- */

struct s3_meta {
    char *name; /* lower case, without "x-amz-meta-" */
    char *value;
};

struct s3_object_info {
    uint64_t size;
    char etag[80];          /* with its quotes, as the server sent it */
    int64_t mtime;          /* Last-Modified, seconds since the epoch */
    char *content_type;     /* or NULL */
    char *content_encoding; /* or NULL */
    struct s3_meta *meta;
    size_t n_meta;
    /* How it is stored, as the answer says (NULL: not said; a HEAD of a
     * STANDARD object names no class).  Values with a control character
     * are refused as Content-Type is: they may be sent back on a copy. */
    char *sse;            /* x-amz-server-side-encryption */
    char *sse_kms_key_id; /* x-amz-server-side-encryption-aws-kms-key-id */
    bool sse_bucket_key;  /* x-amz-server-side-encryption-bucket-key-enabled: true */
    char *storage_class;  /* x-amz-storage-class */
};
/* The policy an object is stored with, pointing into *info (valid while
 * info is): what a copy of it passes as s3_put_opts.keep. */
struct s3_object_policy s3_object_info_policy(const struct s3_object_info *info);
/* Free what an s3_object_info points to; the struct itself is the caller's. */
void s3_object_info_clear(struct s3_object_info *info);

/* What a new object is created with. Any field may be NULL/0.
 *
 * Encryption and storage class: a new object gets the client's policy
 * (s3_config.policy).  An object that replaces or copies one whose policy
 * is known passes it as `keep` (from a HEAD: s3_object_info_policy), and
 * then (s3_policy_effective):
 *   - the encryption is the client's sse when set (a bucket policy may
 *     demand it), else the kept one: a copy never drops an object's SSE-KMS
 *     because the mount names none.  The KMS key id is the client's when
 *     set, else the kept one when the encryption is the same; the bucket
 *     key is asked when either asks it (for the same encryption);
 *   - the storage class is the kept one (NULL there: STANDARD, nothing
 *     sent), not the client's: storage_class= is for new objects. */
struct s3_put_opts {
    const char *content_type;
    const char *content_encoding;
    const struct s3_meta *meta;
    size_t n_meta;
    const struct s3_object_policy *keep; /* NULL: a new object */
    bool metadata_copied;                /* s3_copy_object only: directive COPY (the
                                          * source's type, encoding and metadata kept; the
                                          * three fields above unused), the policy sent */
};

/* HeadObject. Fills *info (clear it with s3_object_info_clear). */
int s3_head_object(struct s3_client *c, const char *key, struct s3_object_info *info,
                   struct s3_error *err);

/* Receives body bytes in order, on the HTTP engine thread: copy and return
 * quickly.  Return 0, or an errno to stop (the call then fails with it). */
typedef int (*s3_sink_fn)(void *arg, const void *data, size_t len);

#define S3_TO_END UINT64_MAX

/* The largest object S3 can store: 10,000 parts of 5 GiB (48.8 TiB; AWS
 * documents "50 TB" since 2025, 5 TB before).  A size above it from a server (a
 * listing's Size, a Content-Length, a Content-Range total) is not an
 * answer we can use: the call fails with EPROTO (EIO to a program) and
 * says so in the log.  Sizes are added to and multiplied further on (a
 * gzip view's size estimate, the bounds of its index); 2^64-1 would wrap. */
#define S3_MAX_OBJECT_SIZE (10000ULL * (5ULL << 30))

/* GetObject of bytes [offset, offset+length) (length S3_TO_END: to the end).
 * Exactly those bytes reach `sink`, in order, each once, even across retries
 * (a retry resumes where the last attempt stopped, pinned to the first
 * attempt's ETag) and even when the server ignores or widens the Range.
 * `if_match` (an ETag, or NULL) makes a changed object fail with ESTALE.
 * A range starting at or past the end yields no bytes and returns 0.
 * *info (may be NULL) receives the object's metadata; info->size is the
 * whole object's size. */
int s3_get_object(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const char *if_match, s3_sink_fn sink, void *sink_arg,
                  struct s3_object_info *info, struct s3_error *err);

/* Told once, as soon as a 2xx answer's headers are all in: the object's
 * metadata, info->size the whole object's size.  Runs on the HTTP engine
 * thread (before the first body byte reaches the sink), or on the caller's
 * when the body is empty: copy what is needed and return quickly; `info`
 * is valid only during the call. */
typedef void (*s3_info_fn)(void *arg, const struct s3_object_info *info);

/* s3_get_object(), with the answer's headers told to `on_info` before the
 * body arrives: a caller that wants the object's metadata (a HEAD's answer)
 * need not wait for the bytes, which go on to `sink` meanwhile.  Once told,
 * the request is pinned to the ETag told, across retries, whether or not
 * `if_match` was given: the bytes are of the version told, or the call
 * fails (ESTALE).  Nothing is told when the call fails before a 2xx answer
 * (ESTALE for a 412, ENOENT...), nor for a range past the end (416, which
 * returns 0 as s3_get_object does). */
int s3_get_object_told(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                       const char *if_match, s3_info_fn on_info, void *info_arg, s3_sink_fn sink,
                       void *sink_arg, struct s3_error *err);

/* s3_get_object() into memory, for the callers that want the bytes rather
 * than a stream (a symbolic link's target, a shared gzip index, a part to
 * copy, a gzip trailer).  The bytes are appended to *out, which may already
 * hold some (a second GET continuing a first); the caller owns *out and
 * frees it with buf_free(), on error too.  `max_len` bounds out->len after
 * the call: a body that would make it longer fails with EFBIG, the bytes
 * past it never stored (so asking for S3_TO_END is safe against an object
 * larger than the caller accepts).  On any error out->len is what it was
 * before the call.  0, EFBIG, ENOMEM, or an errno of s3_get_object (ESTALE
 * when if_match no longer matches, ENOENT...).  Fewer bytes than asked (the
 * object ends first) is 0: compare out->len when that matters. */
int s3_get_to_buf(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const char *if_match, struct buf *out, size_t max_len,
                  struct s3_object_info *info, struct s3_error *err);
/* The same into memory the caller owns, dst_len bytes at dst, without a
 * copy (a multi-GiB part's bytes go straight where they are used).  *got
 * receives how many bytes were stored, on error too (then meaningless but
 * never more than dst_len).  0, EFBIG (the body is longer than dst_len:
 * nothing past dst + dst_len is written), or an errno of s3_get_object. */
int s3_get_to_mem(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const char *if_match, void *dst, size_t dst_len, size_t *got,
                  struct s3_object_info *info, struct s3_error *err);

/* PutObject of `len` bytes from memory.  etag_out (80 bytes, may be NULL)
 * receives the new ETag. */
int s3_put_object(struct s3_client *c, const char *key, const void *data, size_t len,
                  const struct s3_put_opts *opts, char *etag_out, struct s3_error *err);

/* DeleteObject.  Deleting a missing key succeeds, as in S3. */
int s3_delete_object(struct s3_client *c, const char *key, struct s3_error *err);

/* DeleteObjects of up to 1000 keys in one request.  errs[i] (may be NULL)
 * receives 0 or the errno for keys[i].  Returns 0 when the request itself
 * succeeded (look at errs for single keys), EINVAL for n > 1000. */
int s3_delete_objects(struct s3_client *c, const char *const *keys, size_t n, int *errs,
                      struct s3_error *err);

/* CopyObject src → dst inside the bucket (objects up to 5 GiB).  With
 * `replace` NULL or replace->metadata_copied the metadata is copied
 * (directive COPY); otherwise it is replaced by *replace (directive
 * REPLACE), which is how metadata of an object is changed in place.  The
 * encryption and storage class are sent either way (as for a new object
 * given replace->keep): S3 does not keep the source's unless asked.  `src_if_match` (may be NULL)
 * guards the source.  A 200 response with an <Error> body is an error. */
int s3_copy_object(struct s3_client *c, const char *src_key, const char *dst_key,
                   const struct s3_put_opts *replace, const char *src_if_match, char *etag_out,
                   struct s3_error *err);

/* ---- listing ---------------------------------------------------------- */

struct s3_list_params {
    const char *prefix;             /* may be NULL */
    const char *delimiter;          /* may be NULL */
    const char *start_after;        /* may be NULL */
    const char *continuation_token; /* NULL for the first page */
    unsigned max_keys;              /* 0 → the server's default (1000) */
};

struct s3_list_entry {
    char *key;
    uint64_t size;
    char etag[80];
    int64_t mtime;
};

struct s3_list_page {
    struct s3_list_entry *entries;
    size_t n_entries;
    char **prefixes; /* common prefixes */
    size_t n_prefixes;
    bool truncated;
    char *next_token; /* continuation token when truncated */
    char **skipped;   /* keys and prefixes left out of the two lists
                       * above because their decoding holds a NUL
                       * byte, which no C string (no name, no key we
                       * could ask for) can hold; as the server sent
                       * them, still %-encoded, for messages */
    size_t n_skipped;
};
void s3_list_page_free(struct s3_list_page *page);

/* One page of ListObjectsV2.  Keys come back decoded (those that decode to a
 * NUL byte only in page->skipped).  A truncated page
 * without a continuation token, or one that repeats the token it was asked
 * with, is EPROTO (it would loop forever).  Every key and common prefix
 * returned begins with params->prefix: a page holding one that does not
 * (a server that ignored the prefix) is EIO, logged with the request id,
 * and none of it is returned. */
int s3_list_objects_v2(struct s3_client *c, const struct s3_list_params *params,
                       struct s3_list_page *page, struct s3_error *err);

/* ---- multipart -------------------------------------------------------- */

struct s3_part {
    int number; /* 1 … 10000 */
    char etag[80];
    char checksum[64]; /* base64 of the part's checksum, "" when none */
};

/* CreateMultipartUpload; *upload_id is malloc'ed (caller frees). */
int s3_create_multipart_upload(struct s3_client *c, const char *key, const struct s3_put_opts *opts,
                               char **upload_id, struct s3_error *err);
/* UploadPart; *out receives the part's number, ETag and checksum (what
 * CompleteMultipartUpload needs). */
int s3_upload_part(struct s3_client *c, const char *key, const char *upload_id, int part_number,
                   const void *data, size_t len, struct s3_part *out, struct s3_error *err);
/* UploadPartCopy of bytes [offset, offset+length) of src_key; *out as for
 * s3_upload_part, the checksum being the one the server computed and
 * answered ("" when it gave none).  (The new object's encryption and class
 * are the upload's, set at its creation.) */
int s3_upload_part_copy(struct s3_client *c, const char *key, const char *upload_id,
                        int part_number, const char *src_key, uint64_t offset, uint64_t length,
                        const char *src_if_match, struct s3_part *out, struct s3_error *err);
/* CompleteMultipartUpload with parts in ascending order.  A 200 response
 * with an <Error> body is an error (and retried when it is InternalError). */
int s3_complete_multipart_upload(struct s3_client *c, const char *key, const char *upload_id,
                                 const struct s3_part *parts, size_t n_parts, char *etag_out,
                                 struct s3_error *err);
/* AbortMultipartUpload.  ENOTSUP when the server refuses the verb. */
int s3_abort_multipart_upload(struct s3_client *c, const char *key, const char *upload_id,
                              struct s3_error *err);

struct s3_upload {
    char *key;
    char *upload_id;
    int64_t initiated;    /* seconds since the epoch, when initiated_known */
    bool initiated_known; /* false: no <Initiated>, or one we cannot read */
};

struct s3_upload_page {
    struct s3_upload *uploads;
    size_t n_uploads;
    bool truncated;
    char *next_key_marker;
    char *next_upload_id_marker;
};
void s3_upload_page_free(struct s3_upload_page *page);

/* One page of ListMultipartUploads under `prefix` (may be NULL), starting
 * after the markers (may be NULL).  Every upload's key begins with
 * `prefix`: a page holding one that does not is EIO, as for listings. */
int s3_list_multipart_uploads(struct s3_client *c, const char *prefix, const char *key_marker,
                              const char *upload_id_marker, struct s3_upload_page *page,
                              struct s3_error *err);

/* Words for an errno returned by this layer, with the S3 details, for one
 * line of a message: e.g. "403 AccessDenied: Access Denied (request id X)",
 * control characters escaped (util_escape).  Writes into buf (size n) and
 * returns it. */
const char *s3_error_describe(int rc, const struct s3_error *err, char *buf, size_t n);

#endif
