/* main.c — the pailfs command: parse the command line, check what can be
 * checked before mounting, mount, serve until unmounted, clean up.
 *
 * Failing fast and plainly is the point of the order below.  Each check
 * that fails prints exactly one line on stderr starting "pailfs: " and the
 * command exits 1 with nothing mounted:
 *   1. the mount point exists and is a directory;
 *   2. FUSE is usable (/dev/fuse opens; fusermount3 exists when needed);
 *   3. an S3 client can be made (credentials found);
 *   4. HeadBucket answers — bounded to 2 attempts of 5 s each, so a
 *      black-holed endpoint fails in about 10 s, not minutes.
 *
 * Daemonising: the S3 client starts threads, and fork() keeps only the
 * calling thread.  So unless -f, pailfs forks FIRST; the parent waits on a
 * pipe for one status byte from the child and exits with it, which makes
 * `pailfs BUCKET /mnt` return only once the mount is live (0), or after the
 * child printed its one line to the inherited stderr (1).  The child makes
 * its own session, runs the checks, mounts, reports, then leaves the
 * terminal: "/" as its directory, /dev/null as stdin/stdout/stderr, syslog
 * for its log.
 *
 * The end: SIGINT, SIGTERM, SIGHUP (libfuse's handlers) and
 * `fusermount3 -u MOUNTPOINT` all end the session loop; then pending uploads
 * are finished (fs_shutdown), the mount is taken down and everything freed.
 * Exit 0, or 1 if an upload could not be finished. */
#include "options.h"

#include "fs/fs.h"
#include "s3/s3.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

/* The bucket check must end within 15 s whatever the endpoint does. */
#define CHECK_MAX_ATTEMPTS 2
#define CHECK_ATTEMPT_TIMEOUT_MS 5000L
#define LOOP_MAX_IDLE_THREADS 10

/* ---- libfuse's messages -------------------------------------------------- */

/* While fuse_session_new() and fuse_session_mount() run, libfuse's error is
 * kept to become the reason in our one line instead of a line of its own.
 * Only the main thread touches these, before the session loop starts. */
static bool fuse_capturing;
static char fuse_first_error[1024];
static bool fuse_trace; /* -o debug: libfuse's trace goes to stderr as it is */

static void fuse_log_handler(enum fuse_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void fuse_log_handler(enum fuse_log_level level, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (fuse_capturing && level <= FUSE_LOG_ERR) {
        if (!fuse_first_error[0]) {
            const char *text = strncmp(line, "fuse: ", 6) == 0 ? line + 6 : line;
            snprintf(fuse_first_error, sizeof(fuse_first_error), "%s", text);
        }
        return;
    }
    if (fuse_trace) {
        fprintf(stderr, "%s\n", line);
        return;
    }
    enum log_level ours = level <= FUSE_LOG_ERR       ? LOG_LVL_ERROR
                          : level == FUSE_LOG_WARNING ? LOG_LVL_WARN
                          : level == FUSE_LOG_DEBUG   ? LOG_LVL_DEBUG
                                                      : LOG_LVL_INFO;
    log_msg(ours, "libfuse: %s", line);
}

static void fuse_capture_start(void)
{
    fuse_first_error[0] = '\0';
    fuse_capturing = true;
}

/* Stop capturing; the reason for a failure: libfuse's words, else errno's. */
static const char *fuse_capture_end(int saved_errno)
{
    fuse_capturing = false;
    return fuse_first_error[0] ? fuse_first_error
           : saved_errno       ? strerror(saved_errno)
                               : "unknown error";
}

/* fusermount3, which libfuse runs to mount for a user who is not root,
 * writes its reason ("fusermount3: option allow_other only allowed if
 * 'user_allow_other' is set in /etc/fuse.conf") straight to the stderr it
 * inherits.  During the mount, fd 2 is an in-memory file instead, so that
 * line can become the reason in our one line.  Whatever else landed there
 * is passed on to the real stderr afterwards. */
struct stderr_catch {
    int saved; /* the real stderr, or -1 when nothing is caught */
    int mem;
};

static void stderr_catch_start(struct stderr_catch *c)
{
    c->saved = -1;
    c->mem = memfd_create("pailfs-stderr", MFD_CLOEXEC);
    if (c->mem < 0)
        return;
    fflush(stderr);
    c->saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    if (c->saved < 0 || dup2(c->mem, STDERR_FILENO) < 0) {
        if (c->saved >= 0)
            close(c->saved);
        c->saved = -1;
        close(c->mem);
    }
}

/* Restore stderr.  With `last_line` (size n), the last line caught, when it
 * is fusermount3's, is kept there instead of being passed on ("" when there
 * is none). */
static void stderr_catch_end(struct stderr_catch *c, char *last_line, size_t n)
{
    if (last_line && n)
        last_line[0] = '\0';
    if (c->saved < 0)
        return;
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    char text[8192];
    ssize_t len = pread(c->mem, text, sizeof(text) - 1, 0);
    close(c->mem);
    if (len <= 0)
        return;
    text[len] = '\0';
    while (len && text[len - 1] == '\n')
        text[--len] = '\0';
    char *last = strrchr(text, '\n');
    last = last ? last + 1 : text;
    if (last_line && n && strncmp(last, "fusermount", 10) == 0) {
        size_t l = strlen(last) < n - 1 ? strlen(last) : n - 1;
        memcpy(last_line, last, l);
        last_line[l] = '\0';
        *last = '\0';
    }
    if (*text) {
        size_t keep = strlen(text);
        ssize_t w = write(STDERR_FILENO, text, keep);
        (void)w;
        if (text[keep - 1] != '\n')
            w = write(STDERR_FILENO, "\n", 1);
    }
}

/* ---- checks ----------------------------------------------------------------- */

/* "/dev/fd/N": a privileged helper (mount.fuse3 -o drop_privileges, a
 * container's mounter) opened /dev/fuse, mounted it with mount(2) and
 * passed the descriptor; libfuse serves it as it is and leaves the unmount
 * to that helper (fuse_session_unmount does nothing for it). */
static bool is_fd_mountpoint(const char *mp)
{
    return strncmp(mp, "/dev/fd/", 8) == 0 && mp[8] &&
           strspn(mp + 8, "0123456789") == strlen(mp + 8) && strlen(mp + 8) < 8;
}

/* Check 1 for /dev/fd/N: N is open, is /dev/fuse (character device 10,229)
 * and mounted (the kernel answers poll() on a descriptor not mounted yet
 * with POLLERR).  *resolved is what libfuse is given: the same, or
 * /dev/fd/M for a copy above 2 when N is 0, 1 or 2, which the background
 * process points at /dev/null. */
static int check_fd_mountpoint(const char *mp, bool auto_unmount, char **resolved)
{
    if (auto_unmount) {
        fprintf(stderr,
                "pailfs: -o auto_unmount does not apply to %s: the helper that "
                "mounted it unmounts it\n",
                mp);
        return EINVAL;
    }
    int fd = atoi(mp + 8);
    struct stat st;
    if (fcntl(fd, F_GETFD) < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr,
                "pailfs: %s: descriptor %d is not open (the mounting helper must pass it "
                "open, without close-on-exec)\n",
                mp, fd);
        return EBADF;
    }
    if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != 10 || minor(st.st_rdev) != 229) {
        fprintf(stderr, "pailfs: %s: descriptor %d is not an open /dev/fuse\n", mp, fd);
        return ENOTTY;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))) {
        fprintf(stderr,
                "pailfs: %s: /dev/fuse descriptor %d is not mounted, or its mount is gone "
                "(mount(2) it first with -o fd=%d,rootmode=40000,user_id=UID,group_id=GID)\n",
                mp, fd, fd);
        return ENOTCONN;
    }
    if (fd <= STDERR_FILENO && (fd = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1)) < 0) {
        int e = errno;
        fprintf(stderr, "pailfs: %s: %s\n", mp, strerror(e));
        return e;
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "/dev/fd/%d", fd);
    *resolved = strdup(buf);
    return *resolved ? 0 : ENOMEM;
}

/* Check 1.  *resolved (caller frees) is the absolute path to mount on: the
 * daemon runs in "/" and must still find it to unmount. */
static int check_mountpoint(const struct options *o, char **resolved)
{
    const char *mp = o->mountpoint;
    if (is_fd_mountpoint(mp))
        return check_fd_mountpoint(mp, o->auto_unmount, resolved);
    struct stat st;
    if (stat(mp, &st) != 0) {
        int e = errno;
        if (e == ENOENT)
            fprintf(stderr, "pailfs: mount point %s does not exist\n", mp);
        else if (e == ENOTCONN)
            fprintf(stderr,
                    "pailfs: cannot use mount point %s: %s (a mount whose process died? "
                    "fusermount3 -u %s)\n",
                    mp, strerror(e), mp);
        else
            fprintf(stderr, "pailfs: cannot use mount point %s: %s\n", mp, strerror(e));
        return e;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "pailfs: mount point %s is not a directory\n", mp);
        return ENOTDIR;
    }
    char buf[PATH_MAX];
    if (!realpath(mp, buf)) {
        int e = errno;
        fprintf(stderr, "pailfs: cannot use mount point %s: %s\n", mp, strerror(e));
        return e;
    }
    *resolved = strdup(buf);
    return *resolved ? 0 : ENOMEM;
}

/* Where libfuse looks for fusermount3: its install directory, then PATH. */
static bool have_fusermount(void)
{
    if (access("/usr/bin/fusermount3", X_OK) == 0 || access("/bin/fusermount3", X_OK) == 0)
        return true;
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t n = strcspn(path, ":");
        char cand[PATH_MAX];
        if (n && n < sizeof(cand) - 13) {
            snprintf(cand, sizeof(cand), "%.*s/fusermount3", (int)n, path);
            if (access(cand, X_OK) == 0)
                return true;
        }
        path += n + (path[n] == ':');
    }
    return false;
}

/* Check 2.  libfuse mounts with mount(2) as root and through the setuid
 * fusermount3 otherwise (and always for auto_unmount). */
static int check_fuse(const struct options *o)
{
    if (is_fd_mountpoint(o->mountpoint))
        return 0;
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fprintf(stderr, "pailfs: FUSE is not available: cannot open /dev/fuse: %s%s\n", strerror(e),
                e == ENOENT ? " (is the fuse kernel module loaded?)" : "");
        return e;
    }
    close(fd);
    if ((geteuid() != 0 || o->auto_unmount) && !have_fusermount()) {
        fprintf(stderr, "pailfs: FUSE is not available: fusermount3 not found "
                        "(install the Debian package fuse3)\n");
        return ENOENT;
    }
    return 0;
}

/* A failure that never got an HTTP answer: nobody could be reached. */
static bool endpoint_unreachable(const struct s3_error *err)
{
    if (err->status)
        return false;
    switch (err->transport) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ETIMEDOUT:
    case ECONNRESET:
    case EIO: return true;
    default: return false;
    }
}

/* Checks 3 and 4.  On success *out is the client, the bucket answered and
 * the client signs for the bucket's region. */
static int check_bucket(const struct options *o, struct s3_client **out)
{
    struct s3_client *s3;
    struct s3_error err;
    char msg[1024];
    int rc = s3_client_new(&o->s3, &s3, &err);
    if (rc) {
        fprintf(stderr, "pailfs: %s\n", s3_error_describe(rc, &err, msg, sizeof(msg)));
        return rc;
    }
    struct s3_call_limits limits = {
        .max_attempts = CHECK_MAX_ATTEMPTS,
        .attempt_timeout_ms = CHECK_ATTEMPT_TIMEOUT_MS,
        /* our line below says it; the layer's own line too at info and debug */
        .quiet = log_get_level() < LOG_LVL_INFO,
    };
    rc = s3_head_bucket_limited(s3, &limits, &err);
    if (rc) {
        const char *b = o->bucket;
        s3_error_describe(rc, &err, msg, sizeof(msg));
        if (rc == ENOENT) {
            fprintf(stderr, "pailfs: bucket %s does not exist\n", b);
        } else if (rc == EACCES && o->s3.public_bucket) {
            fprintf(stderr,
                    "pailfs: access to bucket %s refused to unsigned requests "
                    "(-o public): %s\n",
                    b, msg);
        } else if (rc == EACCES) {
            const char *source, *akid;
            s3_client_credentials_info(s3, &source, &akid);
            fprintf(stderr, "pailfs: access to bucket %s refused for access key %s (from %s): %s\n",
                    b, akid, source, msg);
        } else if (!err.status && err.transport == EPROTO &&
                   (!o->endpoint || strncmp(o->endpoint, "https://", 8) == 0)) {
            fprintf(stderr,
                    "pailfs: TLS with endpoint %s failed: %s\n"
                    "pailfs: a server whose certificate is self-signed or from a private CA "
                    "needs -o cafile=PATH (its CA certificate, PEM)\n",
                    o->endpoint ? o->endpoint : "(AWS)", msg);
        } else if (endpoint_unreachable(&err)) {
            char aws[128];
            if (!o->endpoint)
                snprintf(aws, sizeof(aws), "https://s3.%s.amazonaws.com", s3_client_region(s3));
            fprintf(stderr, "pailfs: cannot reach endpoint %s for bucket %s: %s\n",
                    o->endpoint ? o->endpoint : aws, b, msg);
        } else {
            fprintf(stderr, "pailfs: cannot mount bucket %s: %s\n", b, msg);
        }
        s3_client_free(s3);
        return rc;
    }
    log_info("bucket %s: signing for region %s", o->bucket, s3_client_region(s3));
    *out = s3;
    return 0;
}

/* ---- background ------------------------------------------------------------- */

/* Fork.  The parent never returns: it exits with the status byte the child
 * writes to *status_fd (1 if the child ends without writing one).  The child
 * returns in a session of its own. */
static void fork_and_wait(int *status_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        fprintf(stderr, "pailfs: cannot start in the background: %s\n", strerror(errno));
        exit(1);
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "pailfs: cannot start in the background: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(p[1]);
        unsigned char status = 1;
        ssize_t n;
        do
            n = read(p[0], &status, 1);
        while (n < 0 && errno == EINTR);
        if (n != 1) {
            int ws = 0;
            status = 1;
            if (waitpid(pid, &ws, 0) == pid && WIFSIGNALED(ws))
                fprintf(stderr, "pailfs: the mounting process died of signal %d\n", WTERMSIG(ws));
        }
        _exit(status);
    }
    close(p[0]);
    setsid();
    *status_fd = p[1];
}

static void report_status(int *status_fd, unsigned char status)
{
    if (*status_fd < 0)
        return;
    ssize_t n;
    do
        n = write(*status_fd, &status, 1);
    while (n < 0 && errno == EINTR);
    close(*status_fd);
    *status_fd = -1;
}

/* After the mount is live and reported: leave the terminal behind. */
static void detach(void)
{
    if (chdir("/") != 0)
        log_warn("cannot change directory to /: %s", strerror(errno));
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    log_use_syslog(true);
}

/* ---- serving ---------------------------------------------------------------- */

/* The kernel reads ahead at most 128 KiB on a FUSE mount unless told
 * otherwise, which caps every read request at 128 KiB.  Raise it to 1 MiB
 * through the mount's bdi (root only; best effort).  The device number
 * comes from /proc/self/mountinfo: a stat() of the mount point would ask
 * this very process, which is not serving requests yet. */
static void raise_kernel_readahead(const char *mnt)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096], dev[64] = "";
    while (f && fgets(line, sizeof(line), f)) {
        char devno[64], point[4000];
        if (sscanf(line, "%*s %*s %63s %*s %3999s", devno, point) == 2 && strcmp(point, mnt) == 0)
            snprintf(dev, sizeof(dev), "%s", devno); /* the last mount there */
    }
    if (f)
        fclose(f);
    if (!*dev)
        return;
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
    FILE *ra = fopen(path, "w");
    if (!ra || fputs("1024\n", ra) < 0 || fclose(ra) != 0)
        log_debug("cannot raise %s (reads stay at 128 KiB per request)", path);
    else
        log_debug("kernel read-ahead of the mount raised to 1 MiB (%s)", path);
}

/* A descriptor of its own per worker thread (clone_fd) needs /dev/fuse
 * opened again, which a container given only /dev/fd/N often cannot: then
 * the threads share N rather than log a failure each. */
static int can_clone_fd(const struct options *o)
{
    if (!is_fd_mountpoint(o->mountpoint))
        return 1;
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* 0 when the loop ended by unmount or signal, else a negative errno. */
static int serve(struct fuse_session *se, const struct options *o)
{
    int rc;
    if (o->single_thread) {
        rc = fuse_session_loop(se);
    } else {
        struct fuse_loop_config *lc = fuse_loop_cfg_create();
        if (!lc)
            return -ENOMEM;
        fuse_loop_cfg_set_clone_fd(lc, can_clone_fd(o));
        fuse_loop_cfg_set_idle_threads(lc, LOOP_MAX_IDLE_THREADS);
        /* libfuse's default, 10 threads, made the 11th file read at once
         * wait for a thread while the others waited for their GETs */
        fuse_loop_cfg_set_max_threads(lc, FS_MAX_BACKGROUND + FS_LOOP_EXTRA_THREADS);
        rc = fuse_session_loop_mt(se, lc);
        fuse_loop_cfg_destroy(lc);
    }
    return rc > 0 ? 0 : rc; /* a positive value is the signal that ended it */
}

/* What a mount holds while it runs, taken down by unmount_all in the
 * reverse order. */
struct mount {
    struct s3_client *s3;
    struct fs *fs;
    struct fuse_session *se;
    bool handlers, mounted;
    char *mnt; /* the mount point, resolved */
};

/* The filesystem over the checked client; its failure said in one line. */
static int start_fs(struct options *o, struct mount *m)
{
    int rc = fs_new(&o->fs, m->s3, &m->fs);
    if (rc == ENOMEM)
        fprintf(stderr, "pailfs: cannot start the filesystem: %s\n", strerror(rc));
    else if (rc == EBUSY)
        fprintf(stderr,
                "pailfs: the block cache of bucket %s in %s is in use by another pailfs; "
                "give each mount of the same bucket its own -o cache_dir=\n",
                o->fs.bucket, o->fs.cache_dir);
    else if (rc)
        fprintf(stderr, "pailfs: cannot use cache directory %s: %s\n", o->fs.cache_dir,
                strerror(rc));
    return rc;
}

/* The FUSE session and its signal handlers (SIGHUP reopens a log file
 * instead of unmounting).  0, or 1 with the failure said. */
static int start_session(struct options *o, struct mount *m)
{
    fuse_capture_start();
    errno = 0;
    m->se =
        fuse_session_new(&o->fuse_args, fs_lowlevel_ops(), sizeof(struct fuse_lowlevel_ops), m->fs);
    const char *why = fuse_capture_end(errno);
    if (!m->se) {
        fprintf(stderr, "pailfs: cannot start FUSE: %s\n", why);
        return 1;
    }
    fs_set_session(m->fs, m->se);
    if (fuse_set_signal_handlers(m->se) != 0) {
        fprintf(stderr, "pailfs: cannot install signal handlers\n");
        return 1;
    }
    m->handlers = true;
    int rc;
    /* With a log file, SIGHUP is logrotate's "reopen", not an unmount. */
    if (o->logfile && (rc = log_reopen_on_signal(SIGHUP)) != 0) {
        fprintf(stderr, "pailfs: cannot install the SIGHUP handler: %s\n", strerror(rc));
        return 1;
    }
    return 0;
}

/* Mount, saying why not in the words of fusermount3 when it spoke.  0 or 1. */
static int mount_session(const struct options *o, struct mount *m)
{
    struct stderr_catch caught;
    char helper_said[1024];
    stderr_catch_start(&caught);
    fuse_capture_start();
    errno = 0;
    int rc = fuse_session_mount(m->se, m->mnt);
    const char *why = fuse_capture_end(errno);
    stderr_catch_end(&caught, rc != 0 ? helper_said : NULL, sizeof(helper_said));
    if (rc != 0) {
        fprintf(stderr, "pailfs: cannot mount on %s: %s\n", o->mountpoint,
                helper_said[0] ? helper_said : why);
        return 1;
    }
    m->mounted = true;
    return 0;
}

/* Mounted: report success (and leave the terminal), serve until unmounted,
 * finish the uploads.  The exit status. */
static int serve_mounted(const struct options *o, struct mount *m, int *status_fd)
{
    raise_kernel_readahead(m->mnt);
    const char *source, *akid;
    s3_client_credentials_info(m->s3, &source, &akid);
    log_info("mounted bucket %s%s%s on %s (region %s, credentials from %s)", o->bucket,
             o->prefix[0] ? ":/" : "", o->prefix, m->mnt, s3_client_region(m->s3), source);

    bool background = *status_fd >= 0;
    report_status(status_fd, 0);
    if (background)
        detach();
    int rc;
    if (o->metrics_file && (rc = metrics_writer_start(o->metrics_file, o->metrics_interval_s)) != 0)
        log_error("cannot start writing metrics to %s: %s", o->metrics_file, strerror(rc));

    rc = serve(m->se, o);
    int status = 0;
    if (rc < 0) {
        log_error("the FUSE session failed: %s", strerror(-rc));
        status = 1;
    }
    if (fs_shutdown(m->fs) != 0) {
        log_error("some files could not be stored in bucket %s (see the lines above)", o->bucket);
        status = 1;
    }
    metrics_writer_stop(); /* after the last uploads: their figures count */
    if (is_fd_mountpoint(m->mnt))
        log_info("session on %s ended (its mount is the helper's to take down)", m->mnt);
    else
        log_info("unmounting %s", m->mnt);
    return status;
}

static void unmount_all(struct mount *m)
{
    if (m->handlers)
        fuse_remove_signal_handlers(m->se);
    if (m->mounted)
        fuse_session_unmount(m->se);
    if (m->se)
        fuse_session_destroy(m->se);
    if (m->fs)
        fs_free(m->fs);
    s3_client_free(m->s3);
    free(m->mnt);
}

/* Check, mount, serve, clean up.  Returns the exit status. */
static int run(struct options *o, int status_fd)
{
    struct mount m = {0};
    int status = 1;
    if (!check_mountpoint(o, &m.mnt) && !check_fuse(o) && !check_bucket(o, &m.s3) &&
        !start_fs(o, &m) && !start_session(o, &m) && !mount_session(o, &m))
        status = serve_mounted(o, &m, &status_fd);
    report_status(&status_fd, 1); /* only if nothing was reported yet */
    metrics_writer_stop();
    log_reopen_stop();
    unmount_all(&m);
    return status;
}

static void gzindex_progress(void *arg, uint64_t done, uint64_t total)
{
    const char *key = arg;
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\rpailfs gzindex: %s: %llu of %llu MiB read", key,
                (unsigned long long)(done >> 20), (unsigned long long)(total >> 20));
}

/* What `pailfs gzindex` was given: -o options, passed on as a mount's, and
 * a bucket with keys, or s3://BUCKET/KEY words of one bucket. */
struct gzindex_args {
    const char *bucket;
    char *fargv[64]; /* the words options_parse reads */
    int fargc;
    const char *keys[256];
    int nkeys;
    char *owned[256]; /* copies of the s3:// words, which bucket and keys point into */
    int nowned;
};

/* Read the words of `pailfs gzindex` into *a (a->owned freed by the
 * caller).  0, or 1 with the problem said on stderr. */
static int gzindex_args(int argc, char **argv, struct gzindex_args *a)
{
    a->fargv[a->fargc++] = "pailfs";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc && a->fargc < 60) {
            a->fargv[a->fargc++] = argv[i];
            a->fargv[a->fargc++] = argv[++i];
        } else if (strncmp(argv[i], "s3://", 5) == 0 && a->nkeys < 256 && a->nowned < 256) {
            const char *bucket = a->bucket;
            char *b = strdup(argv[i] + 5), *slash = b ? strchr(b, '/') : NULL;
            if (!slash || !slash[1] || (bucket && strncmp(bucket, b, (size_t)(slash - b)) != 0) ||
                (bucket && bucket[slash - b])) {
                fprintf(stderr, "pailfs gzindex: %s: expected s3://BUCKET/KEY, one bucket\n",
                        argv[i]);
                free(b);
                return 1;
            }
            *slash = '\0';
            a->owned[a->nowned++] = b;
            a->bucket = bucket ? bucket : b;
            a->keys[a->nkeys++] = slash + 1;
        } else if (!a->bucket) {
            a->bucket = argv[i];
        } else if (a->nkeys < 256) {
            a->keys[a->nkeys++] = argv[i];
        }
    }
    if (!a->bucket || !a->nkeys) {
        fprintf(stderr, "usage: pailfs gzindex [-o OPTIONS] BUCKET KEY... | s3://BUCKET/KEY...\n");
        return 1;
    }
    a->fargv[a->fargc++] = "-f";
    a->fargv[a->fargc++] = (char *)a->bucket;
    a->fargv[a->fargc++] = "/";
    a->fargv[a->fargc] = NULL;
    return 0;
}

/* Build and store the index of each key, saying how each went.  0 when
 * every one was built, else 1. */
static int gzindex_build_all(struct options *o, struct s3_client *s3, const char *const *keys,
                             int nkeys)
{
    int status = 0;
    for (int i = 0; i < nkeys; i++) {
        uint64_t size = 0;
        size_t points = 0, bytes = 0;
        int rc = fs_gzindex_build(&o->fs, s3, keys[i], gzindex_progress, (void *)keys[i], &size,
                                  &points, &bytes);
        if (isatty(STDERR_FILENO))
            fputc('\n', stderr);
        if (rc) {
            fprintf(stderr, "pailfs gzindex: %s: %s\n", keys[i],
                    rc == ENOENT ? "no such object" : strerror(rc));
            status = 1;
        } else {
            printf("%s: %llu bytes decompressed, %zu access points, index %zu bytes%s\n", keys[i],
                   (unsigned long long)size, points, bytes,
                   o->fs.gz_index_shared ? " (stored in the bucket too)" : "");
        }
    }
    return status;
}

/* pailfs gzindex [-o OPTIONS] BUCKET KEY... | s3://BUCKET/KEY...: build and
 * store the gzip indexes of those objects ahead of time. */
static int gzindex_main(int argc, char **argv)
{
    struct gzindex_args a = {0};
    struct options o;
    char err[1024];
    int status = gzindex_args(argc, argv, &a);
    if (!status && options_parse(a.fargc, a.fargv, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        status = 1;
    } else if (!status) {
        log_set_level(o.log_level);
        struct s3_client *s3 = NULL;
        status = check_bucket(&o, &s3) == 0 ? gzindex_build_all(&o, s3, a.keys, a.nkeys) : 1;
        s3_client_free(s3);
        options_free(&o);
    }
    for (int i = 0; i < a.nowned; i++)
        free(a.owned[i]);
    return status;
}

/* ---- pailfs --stats MOUNTPOINT ------------------------------------------- */

/* The mount's figures come from the extended attribute FS_STATS_XATTR of
 * its root (src/fs answers it with the same text as metrics_file), so this
 * needs no socket and reaches exactly the process serving MOUNTPOINT. */
#define STATS_MAX 65536 /* XATTR_SIZE_MAX: the kernel passes no more */

static void print_human_bytes(long long v)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    double d = (double)v;
    int u = -1;
    while (d >= 1024 && u < 3) {
        d /= 1024;
        u++;
    }
    if (u >= 0)
        printf("  (%.1f %s)", d, units[u]);
}

/* One sample line "name{a="x",b="y"} 12" as a row of the table. */
static void print_stats_row(char *line)
{
    char *sp = strrchr(line, ' ');
    if (!sp)
        return;
    *sp = '\0';
    long long v = strtoll(sp + 1, NULL, 10);
    char *brace = strchr(line, '{');
    char labels[256] = "";
    if (brace) {
        *brace = '\0';
        size_t n = 0;
        for (char *c = brace + 1; *c && *c != '}' && n < sizeof(labels) - 1; c++) {
            if (*c == '"')
                continue;
            labels[n++] = *c == ',' ? ' ' : *c;
        }
        labels[n] = '\0';
    }
    const char *name = strncmp(line, "pailfs_", 7) == 0 ? line + 7 : line;
    printf("%-34s %-40s %16lld", name, labels, v);
    if (strstr(name, "bytes"))
        print_human_bytes(v);
    putchar('\n');
}

static int stats_main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: pailfs --stats MOUNTPOINT\n");
        return 1;
    }
    const char *mnt = argv[1];
    char *text = malloc(STATS_MAX + 1);
    if (!text) {
        fprintf(stderr, "pailfs: %s\n", strerror(ENOMEM));
        return 1;
    }
    ssize_t n = getxattr(mnt, FS_STATS_XATTR, text, STATS_MAX);
    if (n < 0) {
        int e = errno;
        if (e == ENODATA || e == ENOTSUP) /* no filesystem but pailfs has it */
            fprintf(stderr, "pailfs: %s is not the root of a pailfs mount\n", mnt);
        else
            fprintf(stderr, "pailfs: cannot read the statistics of %s: %s\n", mnt, strerror(e));
        free(text);
        return 1;
    }
    text[n] = '\0';
    printf("%-34s %-40s %16s\n", "METRIC", "LABELS", "VALUE");
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
        if (line[0] != '#')
            print_stats_row(line);
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    char err[1024];
    if (argc > 1 && strcmp(argv[1], "gzindex") == 0)
        return gzindex_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "--stats") == 0)
        return stats_main(argc - 1, argv + 1);
    if (options_parse(argc, argv, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (o.action == OPTIONS_HELP) {
        options_print_help(stdout);
        options_free(&o);
        return 0;
    }
    if (o.action == OPTIONS_VERSION) {
        printf("pailfs %s (libfuse %s)\n", PACKAGE_VERSION, fuse_pkgversion());
        options_free(&o);
        return 0;
    }
    log_set_level(o.log_level);
    int lrc = o.logfile ? log_use_file(o.logfile) : 0;
    if (lrc) {
        fprintf(stderr, "pailfs: cannot open log file %s: %s\n", o.logfile, strerror(lrc));
        options_free(&o);
        return 1;
    }
    fuse_trace = o.fuse_debug;
    fuse_set_log_func(fuse_log_handler);

    int status_fd = -1;
    if (!o.foreground)
        fork_and_wait(&status_fd); /* returns in the child only */
    int status = run(&o, status_fd);
    options_free(&o);
    return status;
}
