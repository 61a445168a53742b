/* test_races.c — the two data races of the code audit (issue 17, items 10
 * and 11), made deterministic: each test runs the racing action at exactly
 * the moment the old code was exposed to it, instead of hoping a thread
 * lands in a window a few instructions wide.
 *
 * How: the program links the real src/libpailfs.a with the linker's --wrap
 * (Makefile.am: tests_unit_test_races_LDFLAGS), so calls from the library
 * to log_msg, time, pthread_mutex_unlock and libfuse's reply functions come
 * here first.  Production code is unchanged.  The S3 server is a small
 * HTTP/1.1 loop on 127.0.0.1 in this program (serve_one), answering as each
 * test scripts it; the FUSE requests are fake ones (struct fake_req), whose
 * replies the wrapped fuse_reply_* record.
 *
 * - Item 10: two places logged a file's name by passing in->path without
 *   fs->lock, which guards it (a rename frees it under the lock): the last
 *   close of a file whose store failed (src/fs/release.c; before:
 *   fs_op_release in src/fs/file.c) and a stream turning staged
 *   (to_staged, src/fs/write.c).
 *   The wrapped log_msg renames the file (rename(2) through the operations
 *   table) after the caller passed the name and before it is formatted;
 *   the old code is then a heap-use-after-free every time (ASan; without
 *   ASan the line shows a freed name).
 * - Item 11 (src/s3/client.c fix_skew): after a RequestTimeTooSkewed answer
 *   the client stores the clock skew under c->mutex and logs it.  The old
 *   code read c->clock_skew again after unlocking.  The wrapped unlock lets
 *   a second thread meet its own RequestTimeTooSkewed (another skew) right
 *   after the first thread's unlock; the first thread must still log its
 *   own server's skew.  Before: it logged the other thread's. */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs.h" /* fs_new, fs_lowlevel_ops: the operations as FUSE calls them */
#include "s3/s3.h"
#include "util/util.h"

/* ---- the S3 server: one request per connection, answered by a script -- */

struct answer {
    int status;
    const char *extra; /* more header lines, each ending in \r\n, or "" */
    const char *body;  /* XML or "" */
};

/* The test's script: what to answer to METHOD TARGET (the target is the
 * path and query, e.g. "/bucket/key"). */
typedef void (*answer_fn)(const char *method, const char *target, struct answer *a, char *extra_buf,
                          size_t extra_size);

struct server {
    int fd;
    int port;
    answer_fn answer;
    pthread_t thread;
    _Atomic bool stop;
};

/* Read one request (headers and a Content-Length body), answer it, close. */
static void serve_one(struct server *s, int c)
{
    char req[65536];
    size_t got = 0;
    char *end = NULL;
    while (!end && got < sizeof(req) - 1) {
        ssize_t n = recv(c, req + got, sizeof(req) - 1 - got, 0);
        if (n <= 0)
            return;
        got += (size_t)n;
        req[got] = '\0';
        end = strstr(req, "\r\n\r\n");
    }
    if (!end)
        return;
    size_t clen = 0, have = got - (size_t)(end + 4 - req);
    for (char *h = strstr(req, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
        if (strncasecmp(h + 2, "content-length:", 15) == 0)
            clen = strtoul(h + 17, NULL, 10);
    char sink[65536];
    while (have < clen) { /* the body, read and dropped */
        ssize_t n = recv(c, sink, sizeof(sink), 0);
        if (n <= 0)
            return;
        have += (size_t)n;
    }
    char method[16] = "", target[4096] = "";
    if (sscanf(req, "%15s %4095s", method, target) != 2)
        return;
    char extra[512] = "";
    struct answer a = {404, "", ""};
    s->answer(method, target, &a, extra, sizeof(extra));
    bool head = strcmp(method, "HEAD") == 0;
    char hdr[1024];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d X\r\nContent-Type: application/xml\r\n"
                     "Content-Length: %zu\r\nx-amz-request-id: test\r\n%sConnection: close\r\n\r\n",
                     a.status, strlen(a.body), a.extra);
    ssize_t w = send(c, hdr, (size_t)n, MSG_NOSIGNAL);
    if (w == n && !head && a.body[0])
        w = send(c, a.body, strlen(a.body), MSG_NOSIGNAL);
    (void)w;
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    while (!atomic_load(&s->stop)) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        serve_one(s, c);
        shutdown(c, SHUT_WR);
        close(c);
    }
    return NULL;
}

static void server_start(struct server *s, answer_fn answer)
{
    memset(s, 0, sizeof(*s));
    s->answer = answer;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, len), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &len), 0);
    s->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
    atomic_store(&s->stop, true);
    int c = socket(AF_INET, SOCK_STREAM, 0); /* wakes the accept */
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)s->port)};
    (void)connect(c, (struct sockaddr *)&sa, sizeof(sa));
    close(c);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static struct s3_client *client_new(const struct server *s, char *endpoint, size_t size)
{
    snprintf(endpoint, size, "http://127.0.0.1:%d", s->port);
    struct s3_config cfg = {
        .endpoint = endpoint,
        .region = "us-east-1",
        .bucket = "bucket",
        .addressing = S3_ADDR_PATH,
        .public_bucket = true, /* unsigned: no credentials needed */
        .max_attempts = 1,
    };
    struct s3_client *c = NULL;
    struct s3_error err = {0};
    assert_int_equal(s3_client_new(&cfg, &c, &err), 0);
    return c;
}

/* ---- the log, seen through --wrap=log_msg ------------------------------ */

/* Who is calling: the tests name their threads (0: nobody in particular). */
static _Thread_local int role;
enum { ROLE_NONE, ROLE_A, ROLE_B };

#define MAX_LINES 64
static pthread_mutex_t lines_lock = PTHREAD_MUTEX_INITIALIZER;
static char lines[MAX_LINES][512]; /* protected by lines_lock */
static int line_roles[MAX_LINES];  /* protected by lines_lock */
static int n_lines;                /* protected by lines_lock */

/* Run just before a message whose format holds `log_hook_on` is
 * formatted, once; the caller's arguments are already taken. */
static const char *_Atomic log_hook_on;
static void (*log_hook)(void);

void __real_log_msg(enum log_level level, const char *fmt, ...);
void __wrap_log_msg(enum log_level level, const char *fmt, ...);
void __wrap_log_msg(enum log_level level, const char *fmt, ...)
{
    const char *on = atomic_load(&log_hook_on);
    if (on && strstr(fmt, on) && atomic_compare_exchange_strong(&log_hook_on, &on, NULL))
        log_hook();
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap); /* ASan checks every %s read here */
    va_end(ap);
    pthread_mutex_lock(&lines_lock);
    if (n_lines < MAX_LINES) {
        snprintf(lines[n_lines], sizeof(lines[0]), "%s", msg);
        line_roles[n_lines++] = role;
    }
    pthread_mutex_unlock(&lines_lock);
    __real_log_msg(level, "%s", msg);
}

static void lines_reset(void)
{
    pthread_mutex_lock(&lines_lock);
    n_lines = 0;
    pthread_mutex_unlock(&lines_lock);
}

/* The first line logged by `who` holding `what`, copied into out (or ""). */
static void line_find(int who, const char *what, char *out, size_t size)
{
    out[0] = '\0';
    pthread_mutex_lock(&lines_lock);
    for (int i = 0; i < n_lines && !out[0]; i++)
        if (line_roles[i] == who && strstr(lines[i], what))
            snprintf(out, size, "%s", lines[i]);
    pthread_mutex_unlock(&lines_lock);
}

/* ---- libfuse, seen through --wrap: fake requests ----------------------- */

struct fake_req {
    bool replied;
    int err;
    struct fuse_entry_param e;
    struct fuse_file_info fi;
};

static struct fs *the_fs;

void *__wrap_fuse_req_userdata(fuse_req_t req);
void *__wrap_fuse_req_userdata(fuse_req_t req)
{
    (void)req;
    return the_fs;
}

const struct fuse_ctx *__wrap_fuse_req_ctx(fuse_req_t req);
const struct fuse_ctx *__wrap_fuse_req_ctx(fuse_req_t req)
{
    (void)req;
    static struct fuse_ctx ctx;
    ctx.uid = getuid();
    ctx.gid = getgid();
    ctx.pid = getpid();
    ctx.umask = 022;
    return &ctx;
}

static int replied(fuse_req_t req, int err)
{
    struct fake_req *r = (struct fake_req *)req;
    r->replied = true;
    r->err = err;
    return 0;
}

int __wrap_fuse_reply_err(fuse_req_t req, int err);
int __wrap_fuse_reply_err(fuse_req_t req, int err)
{
    return replied(req, err);
}

void __wrap_fuse_reply_none(fuse_req_t req);
void __wrap_fuse_reply_none(fuse_req_t req)
{
    replied(req, 0);
}

int __wrap_fuse_reply_entry(fuse_req_t req, const struct fuse_entry_param *e);
int __wrap_fuse_reply_entry(fuse_req_t req, const struct fuse_entry_param *e)
{
    ((struct fake_req *)req)->e = *e;
    return replied(req, 0);
}

int __wrap_fuse_reply_create(fuse_req_t req, const struct fuse_entry_param *e,
                             const struct fuse_file_info *fi);
int __wrap_fuse_reply_create(fuse_req_t req, const struct fuse_entry_param *e,
                             const struct fuse_file_info *fi)
{
    ((struct fake_req *)req)->e = *e;
    ((struct fake_req *)req)->fi = *fi;
    return replied(req, 0);
}

int __wrap_fuse_reply_open(fuse_req_t req, const struct fuse_file_info *fi);
int __wrap_fuse_reply_open(fuse_req_t req, const struct fuse_file_info *fi)
{
    ((struct fake_req *)req)->fi = *fi;
    return replied(req, 0);
}

int __wrap_fuse_reply_attr(fuse_req_t req, const struct stat *attr, double timeout);
int __wrap_fuse_reply_attr(fuse_req_t req, const struct stat *attr, double timeout)
{
    (void)attr;
    (void)timeout;
    return replied(req, 0);
}

int __wrap_fuse_reply_write(fuse_req_t req, size_t count);
int __wrap_fuse_reply_write(fuse_req_t req, size_t count)
{
    (void)count;
    return replied(req, 0);
}

int __wrap_fuse_lowlevel_notify_inval_inode(struct fuse_session *se, fuse_ino_t ino, off_t off,
                                            off_t len);
int __wrap_fuse_lowlevel_notify_inval_inode(struct fuse_session *se, fuse_ino_t ino, off_t off,
                                            off_t len)
{
    (void)se, (void)ino, (void)off, (void)len;
    return 0;
}

/* ---- item 10: a rename while the last close logs the file's name ------- */

/* Every name is missing, every listing empty, every store refused. */
static void answer_refusing_stores(const char *method, const char *target, struct answer *a,
                                   char *extra, size_t size)
{
    (void)extra, (void)size;
    if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
        a->status = 403;
        a->body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>"
                  "<Message>stores are refused here</Message></Error>";
    } else if (strcmp(method, "GET") == 0 && strstr(target, "list-type=2")) {
        a->status = 200;
        a->body = "<?xml version=\"1.0\"?><ListBucketResult><Name>bucket</Name>"
                  "<KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>";
    } else if (strcmp(method, "GET") == 0 && strstr(target, "uploads")) {
        a->status = 200;
        a->body = "<?xml version=\"1.0\"?><ListMultipartUploadsResult><Bucket>bucket</Bucket>"
                  "<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
    } else {
        a->status = 404;
        if (strcmp(method, "HEAD") != 0)
            a->body = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>";
    }
}

struct rename_call {
    struct fake_req req;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done; /* protected by lock */
};
static struct rename_call the_rename;

static void *rename_a_to_b(void *arg)
{
    struct rename_call *rc = arg;
    fs_lowlevel_ops()->rename((fuse_req_t)&rc->req, FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "b", 0);
    pthread_mutex_lock(&rc->lock);
    rc->done = true;
    pthread_cond_broadcast(&rc->cond);
    pthread_mutex_unlock(&rc->lock);
    return NULL;
}

static pthread_t rename_thread;

/* The log hook: rename a → b in another thread and wait for it.  Should
 * the logging thread hold fs->lock (it must not: no I/O or logging under
 * it, but a wrong fix might), the rename waits for it; after 10 s the log
 * goes on and the rename finishes later. */
static void rename_now(void)
{
    pthread_mutex_lock(&the_rename.lock);
    assert_int_equal(pthread_create(&rename_thread, NULL, rename_a_to_b, &the_rename), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (!the_rename.done)
        if (pthread_cond_timedwait(&the_rename.cond, &the_rename.lock, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&the_rename.lock);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* An fs over the test's server, as FUSE would see it; no block cache, no
 * sweep of stale uploads. */
struct mount {
    struct server srv;
    struct s3_client *s3;
    char endpoint[64];
    char dir[32];
    char cache_dir[64];
};

static void mount_start(struct mount *m, answer_fn answer)
{
    server_start(&m->srv, answer);
    m->s3 = client_new(&m->srv, m->endpoint, sizeof(m->endpoint));
    snprintf(m->dir, sizeof(m->dir), "/tmp/test_races-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->cache_dir, sizeof(m->cache_dir), "%s/cache", m->dir);
    struct fs_config cfg;
    fs_config_defaults(&cfg);
    cfg.bucket = "bucket";
    cfg.prefix = "";
    cfg.endpoint = m->endpoint;
    cfg.cache_dir = m->cache_dir;
    cfg.cache_size = 0;
    cfg.cache_size_set = true;
    cfg.abort_stale_uploads = 0;
    cfg.part_size = 5 << 20; /* S3's smallest part */
    assert_int_equal(fs_new(&cfg, m->s3, &the_fs), 0);
    lines_reset();
}

static void mount_stop(struct mount *m)
{
    (void)fs_shutdown(the_fs);
    fs_free(the_fs);
    the_fs = NULL;
    s3_client_free(m->s3);
    server_stop(&m->srv);
    nftw(m->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* create(2) of a new file "a" in the root, open for writing: its inode,
 * and *fi its handle. */
static fuse_ino_t create_a(struct fuse_file_info *fi)
{
    struct fake_req create = {0};
    *fi = (struct fuse_file_info){.flags = O_WRONLY | O_CREAT | O_TRUNC};
    fs_lowlevel_ops()->create((fuse_req_t)&create, FUSE_ROOT_ID, "a", S_IFREG | 0644, fi);
    assert_true(create.replied);
    assert_int_equal(create.err, 0);
    *fi = create.fi;
    return create.e.ino;
}

/* Arm the log hook: the next message whose format holds `what` renames
 * a -> b before it is formatted. */
static void rename_when_logged(const char *what)
{
    memset(&the_rename, 0, sizeof(the_rename));
    pthread_mutex_init(&the_rename.lock, NULL);
    pthread_cond_init(&the_rename.cond, NULL);
    log_hook = rename_now;
    atomic_store(&log_hook_on, what);
}

/* The hook ran, and the rename succeeded. */
static void rename_done(void)
{
    assert_null(atomic_load(&log_hook_on));
    pthread_join(rename_thread, NULL);
    assert_true(the_rename.req.replied);
    assert_int_equal(the_rename.req.err, 0);
    pthread_mutex_destroy(&the_rename.lock);
    pthread_cond_destroy(&the_rename.cond);
}

/* Item 10.  A new file "a" is written; its store is refused, so its last
 * close (release) logs "a: data written was not stored".  Just as that
 * message is formatted, "a" is renamed to "b" (a new file is renamed in
 * the mount's table only: rename_in_table frees in->path).  Before: the
 * release passed in->path to the log after unlocking fs->lock, so the
 * message read the freed name (ASan: heap-use-after-free in the printf of
 * the log).  Now the name is copied under the lock: the line names "a",
 * the name the file had when the close began, and the rename succeeds. */
static void test_release_log_races_rename(void **state)
{
    (void)state;
    struct mount m;
    mount_start(&m, answer_refusing_stores);
    const struct fuse_lowlevel_ops *ops = fs_lowlevel_ops();
    struct fuse_file_info fi;
    fuse_ino_t ino = create_a(&fi);
    struct fake_req write = {0};
    ops->write((fuse_req_t)&write, ino, "some bytes", 10, 0, &fi);
    assert_int_equal(write.err, 0);

    rename_when_logged("data written was not stored");
    struct fake_req release = {0};
    ops->release((fuse_req_t)&release, ino, &fi); /* stores (refused) and logs */
    assert_true(release.replied);
    rename_done();
    char line[512];
    line_find(ROLE_NONE, ": data written was not stored", line, sizeof(line));
    char *end = strstr(line, ": data written was not stored");
    assert_non_null(end);
    *end = '\0';
    assert_string_equal(line, "a"); /* the file's name when the close began */
    mount_stop(&m);
}

/* A server that takes multipart uploads and copies, and has no object
 * (every GET of an object and HEAD is 404; a listing is empty). */
static void answer_multipart(const char *method, const char *target, struct answer *a, char *extra,
                             size_t size)
{
    (void)extra, (void)size;
    static const char etag[] = "ETag: \"0123456789abcdef0123456789abcdef-2\"\r\n";
    if (strcmp(method, "POST") == 0 && strstr(target, "?uploads")) {
        a->status = 200;
        a->body = "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><Bucket>bucket"
                  "</Bucket><Key>a</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>";
    } else if (strcmp(method, "PUT") == 0 && strstr(target, "partNumber=")) {
        a->status = 200;
        a->extra = "ETag: \"0123456789abcdef0123456789abcdef\"\r\n";
    } else if (strcmp(method, "POST") == 0 && strstr(target, "uploadId=")) {
        a->status = 200;
        a->body = "<?xml version=\"1.0\"?><CompleteMultipartUploadResult><Bucket>bucket"
                  "</Bucket><Key>a</Key><ETag>\"0123456789abcdef0123456789abcdef-2\"</ETag>"
                  "</CompleteMultipartUploadResult>";
    } else if (strcmp(method, "PUT") == 0) { /* a copy (the rename) or a whole object */
        a->status = 200;
        a->extra = etag;
        a->body = "<?xml version=\"1.0\"?><CopyObjectResult><LastModified>"
                  "2026-12-07T00:00:00.000Z</LastModified><ETag>"
                  "\"0123456789abcdef0123456789abcdef-2\"</ETag></CopyObjectResult>";
    } else if (strcmp(method, "DELETE") == 0) {
        a->status = 204;
    } else if (strcmp(method, "HEAD") == 0 && strcmp(target, "/bucket/a") == 0) {
        a->status = 200; /* the rename reads what its copy keeps (metadata, encryption) */
        a->extra = etag;
    } else {
        answer_refusing_stores(method, target, a, extra, size);
    }
}

/* Item 10, the write path.  A new file "a" streams its first 5 MiB part
 * to a multipart upload, then is written before what was sent: to_staged
 * completes the upload as a checkpoint and logs (at debug level) that it
 * did, naming the file.  Just as that message is formatted, "a" is renamed
 * to "b" (a copy and a delete, then rename_in_table frees in->path).
 * Before: to_staged passed in->path without fs->lock (ASan:
 * heap-use-after-free in the printf of the log).  Now it passes a key
 * taken under the lock: the line names "a". */
static void test_staging_log_races_rename(void **state)
{
    (void)state;
    struct mount m;
    mount_start(&m, answer_multipart);
    const struct fuse_lowlevel_ops *ops = fs_lowlevel_ops();
    struct fuse_file_info fi;
    fuse_ino_t ino = create_a(&fi);
    size_t len = 6 << 20;
    char *data = malloc(len);
    assert_non_null(data);
    memset(data, 'x', len);
    struct fake_req write = {0};
    ops->write((fuse_req_t)&write, ino, data, len, 0, &fi); /* part 1 goes */
    assert_int_equal(write.err, 0);

    enum log_level level = log_get_level();
    log_set_level(LOG_LVL_DEBUG);
    rename_when_logged("written out of order after parts were sent");
    struct fake_req back = {0};
    ops->write((fuse_req_t)&back, ino, "y", 1, 0, &fi); /* before what was sent */
    log_set_level(level);
    rename_done();
    char line[512];
    line_find(ROLE_NONE, ": written out of order", line, sizeof(line));
    char *end = strstr(line, ": written out of order");
    assert_non_null(end);
    *end = '\0';
    assert_string_equal(line, "a"); /* the file's name when the write began */

    struct fake_req release = {0};
    ops->release((fuse_req_t)&release, ino, &fi);
    assert_true(release.replied);
    free(data);
    mount_stop(&m);
}

/* ---- item 11: two threads correcting the clock skew at once ------------ */

/* DeleteObject: the server's clock for each thread's first request is in
 * its Date header, A's an hour ahead, B's two hours behind; the retries
 * with the corrected clock are answered 204. */
#define SKEW_A 3600
#define SKEW_B (-7200)

static _Atomic bool a_answered, b_answered; /* the skewed answer is on its way */
static _Atomic int a_asked, b_asked;

static void answer_skewed(const char *method, const char *target, struct answer *a, char *extra,
                          size_t size)
{
    (void)method;
    bool is_a = strstr(target, "skew-a") != NULL;
    if (atomic_fetch_add(is_a ? &a_asked : &b_asked, 1) == 0) {
        time_t t = time(NULL) + (is_a ? SKEW_A : SKEW_B);
        struct tm tm;
        gmtime_r(&t, &tm);
        char date[64];
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        snprintf(extra, size, "Date: %s\r\n", date);
        a->status = 403;
        a->extra = extra;
        a->body = "<?xml version=\"1.0\"?><Error><Code>RequestTimeTooSkewed</Code>"
                  "<Message>The difference between the request time and the current time "
                  "is too large.</Message></Error>";
        atomic_store(is_a ? &a_answered : &b_answered, true);
    } else {
        a->status = 204; /* deleted */
    }
}

/* The moment: the first unlock by thread A after it called time() once
 * its request was answered, which is fix_skew's (lock; clock_skew =
 * date - time(NULL); unlock).  Then thread B meets its own skewed answer
 * and stores its skew, while A waits; B signals after its own unlock. */
static _Thread_local bool time_seen;
static _Atomic bool a_fired, b_fired;
static pthread_mutex_t b_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t b_cond = PTHREAD_COND_INITIALIZER;
static bool b_stored; /* protected by b_lock */
static struct s3_client *skew_client;
static pthread_t b_thread;

time_t __real_time(time_t *t);
time_t __wrap_time(time_t *t);
time_t __wrap_time(time_t *t)
{
    if ((role == ROLE_A && atomic_load(&a_answered)) ||
        (role == ROLE_B && atomic_load(&b_answered)))
        time_seen = true;
    return __real_time(t);
}

static int delete_key(const char *key)
{
    return s3_delete_object(skew_client, key, NULL);
}

static void *thread_b(void *arg)
{
    (void)arg;
    role = ROLE_B;
    int rc = delete_key("skew-b");
    role = ROLE_NONE;
    return (void *)(intptr_t)rc;
}

int __real_pthread_mutex_unlock(pthread_mutex_t *m);
int __wrap_pthread_mutex_unlock(pthread_mutex_t *m);
int __wrap_pthread_mutex_unlock(pthread_mutex_t *m)
{
    int rc = __real_pthread_mutex_unlock(m);
    if (!time_seen)
        return rc;
    time_seen = false;
    bool no = false;
    if (role == ROLE_A && atomic_compare_exchange_strong(&a_fired, &no, true)) {
        /* A has stored its skew and let go of the mutex: B now stores its own */
        if (pthread_create(&b_thread, NULL, thread_b, NULL) != 0)
            abort();
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&b_lock);
        while (!b_stored)
            if (pthread_cond_timedwait(&b_cond, &b_lock, &until) == ETIMEDOUT)
                break;
        __real_pthread_mutex_unlock(&b_lock);
    } else if (role == ROLE_B && atomic_compare_exchange_strong(&b_fired, &no, true)) {
        pthread_mutex_lock(&b_lock);
        b_stored = true;
        pthread_cond_broadcast(&b_cond);
        __real_pthread_mutex_unlock(&b_lock);
    }
    return rc;
}

/* The skew in "local clock is N s off the server's", or INT64_MIN. */
static int64_t logged_skew(int who)
{
    char line[512];
    line_find(who, "local clock is ", line, sizeof(line));
    const char *p = strstr(line, "local clock is ");
    return p ? -strtoll(p + 15, NULL, 10) : INT64_MIN;
}

/* Item 11.  Thread A's DELETE is answered RequestTimeTooSkewed by a server
 * an hour ahead; right after A stored that skew and unlocked c->mutex,
 * thread B's DELETE is answered the same by a server two hours behind, and
 * B stores its skew.  A's warning must name A's skew.  Before: A read
 * c->clock_skew again after unlocking and logged B's (-7200 for 3600). */
static void test_skew_log_races_another_skew(void **state)
{
    (void)state;
    struct server srv;
    server_start(&srv, answer_skewed);
    char endpoint[64];
    skew_client = client_new(&srv, endpoint, sizeof(endpoint));
    lines_reset();
    atomic_store(&a_answered, false);
    atomic_store(&b_answered, false);
    atomic_store(&a_asked, 0);
    atomic_store(&b_asked, 0);
    atomic_store(&a_fired, false);
    atomic_store(&b_fired, false);
    b_stored = false;
    role = ROLE_A;
    int rc = delete_key("skew-a");
    role = ROLE_NONE;
    assert_int_equal(rc, 0); /* the retry, with the corrected clock */
    assert_true(atomic_load(&a_fired));
    void *b_rc = NULL;
    pthread_join(b_thread, &b_rc);
    assert_int_equal((int)(intptr_t)b_rc, 0);
    assert_true(atomic_load(&b_fired));
    int64_t a = logged_skew(ROLE_A), b = logged_skew(ROLE_B);
    print_message("thread A logged a skew of %lld s (its server: %d), thread B %lld s (%d)\n",
                  (long long)a, SKEW_A, (long long)b, SKEW_B);
    /* the Date header has whole seconds; a second may pass in between */
    assert_true(a >= SKEW_A - 2 && a <= SKEW_A + 2);
    assert_true(b >= SKEW_B - 2 && b <= SKEW_B + 2);
    s3_client_free(skew_client);
    server_stop(&srv);
}

/* An argument runs only the tests whose names match it (cmocka's pattern,
 * e.g. "*skew*"): under ASan a report ends the program. */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LVL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_release_log_races_rename),
        cmocka_unit_test(test_staging_log_races_rename),
        cmocka_unit_test(test_skew_log_races_another_skew),
    };
    return cmocka_run_group_tests_name("races", tests, NULL, NULL);
}
