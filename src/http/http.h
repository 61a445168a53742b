/* http.h — the HTTP engine: one thread drives libcurl's multi interface.
 *
 * Requests are submitted from any thread and complete through a callback
 * run on the engine thread; http_perform() wraps that into a blocking call.
 * Connections are reused across requests (keep-alive) and bounded in number.
 * Bodies stream through callbacks, so an object never has to sit whole in
 * memory.  Callbacks run on the engine thread and must not block on disk or
 * on other requests: copy and return.
 *
 * Knows only libcurl and src/util.  Functions return 0 or a positive errno. */
#ifndef PAILFS_HTTP_H
#define PAILFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct curl_slist;
struct http_engine;

struct http_engine_options {
    unsigned max_connections; /* total open connections; 0 → 64 */
    long connect_timeout_ms;  /* 0 → 10,000 */
    long stall_timeout_s;     /* abort a transfer that moves < 1 B/s this long; 0 → 30 */
    const char *cafile;       /* CA bundle for TLS peer verification, or NULL */
    bool no_verify_ssl;       /* turn TLS verification off (loudly) */
};

struct http_request;

/* Called on the engine thread for every response header, with the name and
 * value trimmed; `status` already holds the response's status code.  Return
 * 0, or an errno to abort the transfer (it then completes with that errno). */
typedef int (*http_header_fn)(struct http_request *req, const char *name, const char *value);
/* Called on the engine thread with each piece of the response body. Return 0
 * or an errno to abort the transfer. */
typedef int (*http_body_fn)(struct http_request *req, const void *data, size_t len);
/* Called once on the engine thread when the request has finished, either way.
 * After it returns, the engine never touches `req` again. */
typedef void (*http_done_fn)(struct http_request *req);

/* One request.  The submitter fills the "in" fields and keeps the struct (and
 * everything it points to) alive until on_done has run. */
struct http_request {
    /* in */
    const char *method;         /* "GET", "PUT", "POST", "HEAD", "DELETE" */
    const char *url;            /* already encoded */
    struct curl_slist *headers; /* "Name: value" lines; owned by the submitter */
    const void *body;           /* request body, or NULL */
    size_t body_len;
    http_header_fn on_header; /* may be NULL */
    http_body_fn on_body;     /* may be NULL: the body is discarded */
    http_done_fn on_done;     /* required for http_submit */
    void *arg;                /* for the callbacks */
    long timeout_ms;          /* the whole request, connecting included, ends
                               * with ETIMEDOUT after this long; 0 → only the
                               * engine's connect and stall timeouts */

    /* out, valid in on_done */
    long status;          /* HTTP status, 0 if none was received */
    int error;            /* 0 once a whole response arrived, else an errno
                           * (see http_perform for the values) */
    char error_text[256]; /* libcurl's words for `error` */
    uint64_t body_bytes;  /* response body bytes received */

    /* private to the engine */
    size_t upload_off;
    int abort_errno;
    struct http_request *next, *prev; /* queue, then the running list */
    void *easy;
    void *waiter; /* http_perform's */
};

/* Start an engine and its thread.  *out is owned by the caller and released
 * with http_engine_free().  0, ENOMEM, or EIO if libcurl could not start. */
int http_engine_new(const struct http_engine_options *opts, struct http_engine **out);

/* Stop the thread; requests still in flight complete with ECANCELED first.
 * Must not be called from an engine callback. */
void http_engine_free(struct http_engine *eng);

/* Queue a request; it completes through req->on_done.  0, or ECANCELED when
 * the engine is shutting down (on_done is then not called). */
int http_submit(struct http_engine *eng, struct http_request *req);

/* Submit and wait for completion.  Returns req->error: 0 when a response
 * arrived whole (whatever its status), else ECONNREFUSED (could not connect),
 * EHOSTUNREACH (name did not resolve), ETIMEDOUT (connect timeout or stalled
 * transfer), ECONNRESET (connection broken, short or missing body), EPROTO
 * (TLS failure: certificate refused, handshake), the errno a callback
 * aborted with, ECANCELED (engine stopping) or EIO (anything else).
 * on_done must be NULL: http_perform uses it. */
int http_perform(struct http_engine *eng, struct http_request *req);

#endif
