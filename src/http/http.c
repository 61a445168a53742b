/* http.c — the engine thread around curl_multi.
 *
 * Submitters push requests onto a mutex-protected queue and wake the thread
 * with curl_multi_wakeup().  The thread moves queued requests into the multi
 * handle, drives transfers with curl_multi_perform()/curl_multi_poll(), and
 * completes finished ones through their on_done callback.  The multi handle
 * owns the connection pool, so easy handles come and go while connections
 * stay open; a small free list of easy handles saves their setup cost. */
#include "http/http.h"

#include "util/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define EASY_POOL_MAX 32

struct http_engine {
    CURLM *multi;
    pthread_t thread;
    struct http_engine_options opts;
    char *cafile;

    pthread_mutex_t mutex;
    struct http_request *queue_head; /* protected by mutex */
    struct http_request *queue_tail; /* protected by mutex */
    bool stopping;                   /* protected by mutex */

    /* engine thread only */
    CURL *easy_pool[EASY_POOL_MAX];
    int easy_pool_len;
    struct http_request *running; /* doubly linked through next/prev */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_global(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- callbacks from libcurl (engine thread) --------------------------- */

static size_t cb_header(char *line, size_t size, size_t nitems, void *userp)
{
    struct http_request *req = userp;
    size_t len = size * nitems;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* A new status line: 100 Continue or a redirect may come before. */
        const char *sp = memchr(line, ' ', len);
        req->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon || !req->on_header)
        return len;
    char name[128];
    size_t nlen = (size_t)(colon - line);
    if (nlen >= sizeof(name))
        return len; /* no header we care about is that long */
    memcpy(name, line, nlen);
    name[nlen] = '\0';
    char *value = util_strndup(colon + 1, len - nlen - 1);
    if (!value) {
        req->abort_errno = ENOMEM;
        return 0;
    }
    int rc = req->on_header(req, util_trim(name), util_trim(value));
    free(value);
    if (rc) {
        req->abort_errno = rc;
        return 0;
    }
    return len;
}

static size_t cb_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_request *req = userp;
    size_t len = size * nmemb;
    req->body_bytes += len;
    if (req->on_body) {
        int rc = req->on_body(req, data, len);
        if (rc) {
            req->abort_errno = rc;
            return 0;
        }
    }
    return len;
}

static size_t cb_upload(char *dst, size_t size, size_t nitems, void *userp)
{
    struct http_request *req = userp;
    size_t want = size * nitems;
    size_t left = req->body_len - req->upload_off;
    if (want > left)
        want = left;
    memcpy(dst, (const char *)req->body + req->upload_off, want);
    req->upload_off += want;
    return want;
}

/* libcurl rewinds the upload when it must resend on a fresh connection. */
static int cb_seek(void *userp, curl_off_t offset, int origin)
{
    struct http_request *req = userp;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > req->body_len)
        return CURL_SEEKFUNC_FAIL;
    req->upload_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static int curl_code_to_errno(CURLcode code)
{
    switch (code) {
    case CURLE_OK: return 0;
    case CURLE_COULDNT_CONNECT: return ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return EHOSTUNREACH;
    case CURLE_OPERATION_TIMEDOUT: return ETIMEDOUT;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return ECONNRESET;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER: return EPROTO;
    case CURLE_OUT_OF_MEMORY: return ENOMEM;
    default: return EIO;
    }
}

/* ---- engine thread ---------------------------------------------------- */

static CURL *easy_get(struct http_engine *eng)
{
    if (eng->easy_pool_len > 0) {
        CURL *e = eng->easy_pool[--eng->easy_pool_len];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

static void easy_put(struct http_engine *eng, CURL *e)
{
    if (eng->easy_pool_len < EASY_POOL_MAX)
        eng->easy_pool[eng->easy_pool_len++] = e;
    else
        curl_easy_cleanup(e);
}

static void request_finish(struct http_request *req, int error, const char *text)
{
    req->error = error;
    if (text && !req->error_text[0])
        snprintf(req->error_text, sizeof(req->error_text), "%s", text);
    req->on_done(req);
}

static int easy_setup(struct http_engine *eng, CURL *e, struct http_request *req)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PRIVATE, req);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_HTTPHEADER, req->headers);
    SET(CURLOPT_HEADERFUNCTION, cb_header);
    SET(CURLOPT_HEADERDATA, req);
    SET(CURLOPT_WRITEFUNCTION, cb_body);
    SET(CURLOPT_WRITEDATA, req);
    SET(CURLOPT_ERRORBUFFER, req->error_text);
    SET(CURLOPT_CONNECTTIMEOUT_MS, eng->opts.connect_timeout_ms);
    SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SET(CURLOPT_LOW_SPEED_TIME, eng->opts.stall_timeout_s);
    if (req->timeout_ms > 0) /* curl connects within the smaller of the two */
        SET(CURLOPT_TIMEOUT_MS, req->timeout_ms);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_PATH_AS_IS, 1L); /* S3 keys may hold "./" and "../": never squash them */
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    /* Bigger socket reads and writes: fewer callbacks per MiB moved.  The
     * upload buffer no bigger than the CPU's L2 cache: libcurl copies the
     * body into it (cb_upload) and send() copies it out again at once,
     * from the cache when it fits.  Over http a 1 MiB one made the engine
     * thread spend 15 % more per GiB written than 128-512 KiB did, and
     * 64 KiB cost more again in calls; over https (TLS reads it in 16 KiB
     * records) the size made no difference (issue 21). */
    SET(CURLOPT_BUFFERSIZE, 256L * 1024);
    SET(CURLOPT_UPLOAD_BUFFERSIZE, 256L * 1024);
    if (eng->cafile)
        SET(CURLOPT_CAINFO, eng->cafile);
    if (eng->opts.no_verify_ssl) {
        SET(CURLOPT_SSL_VERIFYPEER, 0L);
        SET(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    const char *m = req->method;
    if (strcmp(m, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "PUT") == 0 || strcmp(m, "POST") == 0) {
        req->upload_off = 0;
        SET(CURLOPT_UPLOAD, 1L);
        SET(CURLOPT_READFUNCTION, cb_upload);
        SET(CURLOPT_READDATA, req);
        SET(CURLOPT_SEEKFUNCTION, cb_seek);
        SET(CURLOPT_SEEKDATA, req);
        SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
        if (m[1] == 'O') /* POST: an upload with a custom verb */
            SET(CURLOPT_CUSTOMREQUEST, "POST");
    } else if (strcmp(m, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, m);
    }
#undef SET
    return rc == CURLE_OK ? 0 : EINVAL;
}

static void engine_start_queued(struct http_engine *eng)
{
    pthread_mutex_lock(&eng->mutex);
    struct http_request *list = eng->queue_head;
    eng->queue_head = eng->queue_tail = NULL;
    pthread_mutex_unlock(&eng->mutex);

    while (list) {
        struct http_request *req = list;
        list = req->next;
        req->next = NULL;
        CURL *e = easy_get(eng);
        if (!e) {
            request_finish(req, ENOMEM, "out of memory");
            continue;
        }
        int rc = easy_setup(eng, e, req);
        if (rc == 0 && curl_multi_add_handle(eng->multi, e) != CURLM_OK)
            rc = EIO;
        if (rc) {
            easy_put(eng, e);
            request_finish(req, rc, "could not start the transfer");
            continue;
        }
        req->easy = e;
        req->prev = NULL;
        req->next = eng->running;
        if (eng->running)
            eng->running->prev = req;
        eng->running = req;
    }
}

static void running_unlink(struct http_engine *eng, struct http_request *req)
{
    if (req->prev)
        req->prev->next = req->next;
    else
        eng->running = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->next = req->prev = NULL;
    req->easy = NULL;
}

static void engine_reap(struct http_engine *eng)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(eng->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode code = msg->data.result;
        struct http_request *req = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&req);
        curl_multi_remove_handle(eng->multi, e);
        running_unlink(eng, req);
        int err = req->abort_errno ? req->abort_errno : curl_code_to_errno(code);
        /* libcurl 7.88 refuses a response header line over 100 KiB as
         * CURLE_OUT_OF_MEMORY (its header buffer has that bound), with no
         * message.  Once a status line came, that is the server's fault. */
        if (code == CURLE_OUT_OF_MEMORY && req->status && !req->abort_errno) {
            err = EPROTO;
            snprintf(req->error_text, sizeof(req->error_text),
                     "a response header over libcurl's 100 KiB bound");
        }
        if (err && !req->error_text[0])
            snprintf(req->error_text, sizeof(req->error_text), "%s", curl_easy_strerror(code));
        easy_put(eng, e);
        request_finish(req, err, NULL);
    }
}

/* Complete everything still queued or running with ECANCELED. */
static void engine_cancel_all(struct http_engine *eng)
{
    pthread_mutex_lock(&eng->mutex);
    struct http_request *list = eng->queue_head;
    eng->queue_head = eng->queue_tail = NULL;
    pthread_mutex_unlock(&eng->mutex);
    for (; list;) {
        struct http_request *req = list;
        list = req->next;
        request_finish(req, ECANCELED, "pailfs is shutting down");
    }
    while (eng->running) {
        struct http_request *req = eng->running;
        CURL *e = req->easy;
        curl_multi_remove_handle(eng->multi, e);
        running_unlink(eng, req);
        easy_put(eng, e);
        request_finish(req, ECANCELED, "pailfs is shutting down");
    }
}

static void *engine_main(void *arg)
{
    struct http_engine *eng = arg;
    for (;;) {
        pthread_mutex_lock(&eng->mutex);
        bool stop = eng->stopping;
        pthread_mutex_unlock(&eng->mutex);
        if (stop)
            break;
        engine_start_queued(eng);
        int still;
        curl_multi_perform(eng->multi, &still);
        engine_reap(eng);
        curl_multi_poll(eng->multi, NULL, 0, 1000, NULL);
    }
    engine_cancel_all(eng);
    return NULL;
}

/* ---- public ----------------------------------------------------------- */

int http_engine_new(const struct http_engine_options *opts, struct http_engine **out)
{
    pthread_once(&curl_once, curl_global);
    if (curl_init_result != CURLE_OK)
        return EIO;
    struct http_engine *eng = calloc(1, sizeof(*eng));
    if (!eng)
        return ENOMEM;
    if (opts)
        eng->opts = *opts;
    eng->opts.cafile = NULL;
    if (!eng->opts.max_connections)
        eng->opts.max_connections = 64;
    if (!eng->opts.connect_timeout_ms)
        eng->opts.connect_timeout_ms = 10000;
    if (!eng->opts.stall_timeout_s)
        eng->opts.stall_timeout_s = 30;
    if (opts && opts->cafile && !(eng->cafile = strdup(opts->cafile))) {
        free(eng);
        return ENOMEM;
    }
    eng->multi = curl_multi_init();
    if (!eng->multi) {
        free(eng->cafile);
        free(eng);
        return EIO;
    }
    curl_multi_setopt(eng->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)eng->opts.max_connections);
    curl_multi_setopt(eng->multi, CURLMOPT_MAXCONNECTS, (long)eng->opts.max_connections);
    pthread_mutex_init(&eng->mutex, NULL);
    int rc = util_thread_start(&eng->thread, engine_main, eng);
    if (rc) {
        curl_multi_cleanup(eng->multi);
        pthread_mutex_destroy(&eng->mutex);
        free(eng->cafile);
        free(eng);
        return rc;
    }
    *out = eng;
    return 0;
}

void http_engine_free(struct http_engine *eng)
{
    if (!eng)
        return;
    pthread_mutex_lock(&eng->mutex);
    eng->stopping = true;
    pthread_mutex_unlock(&eng->mutex);
    curl_multi_wakeup(eng->multi);
    pthread_join(eng->thread, NULL);
    for (int i = 0; i < eng->easy_pool_len; i++)
        curl_easy_cleanup(eng->easy_pool[i]);
    curl_multi_cleanup(eng->multi);
    pthread_mutex_destroy(&eng->mutex);
    free(eng->cafile);
    free(eng);
}

int http_submit(struct http_engine *eng, struct http_request *req)
{
    req->status = 0;
    req->error = 0;
    req->error_text[0] = '\0';
    req->body_bytes = 0;
    req->abort_errno = 0;
    req->next = NULL;
    pthread_mutex_lock(&eng->mutex);
    if (eng->stopping) {
        pthread_mutex_unlock(&eng->mutex);
        return ECANCELED;
    }
    if (eng->queue_tail)
        eng->queue_tail->next = req;
    else
        eng->queue_head = req;
    eng->queue_tail = req;
    pthread_mutex_unlock(&eng->mutex);
    curl_multi_wakeup(eng->multi);
    return 0;
}

struct perform_wait {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool done;
};

static void perform_done(struct http_request *req)
{
    struct perform_wait *w = req->waiter;
    pthread_mutex_lock(&w->mutex);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

int http_perform(struct http_engine *eng, struct http_request *req)
{
    struct perform_wait w = {.done = false};
    pthread_mutex_init(&w.mutex, NULL);
    pthread_cond_init(&w.cond, NULL);
    req->on_done = perform_done;
    req->waiter = &w;
    int rc = http_submit(eng, req);
    if (rc == 0) {
        pthread_mutex_lock(&w.mutex);
        while (!w.done)
            pthread_cond_wait(&w.cond, &w.mutex);
        pthread_mutex_unlock(&w.mutex);
        rc = req->error;
    }
    req->waiter = NULL;
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mutex);
    return rc;
}
