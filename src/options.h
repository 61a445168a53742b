/* options.h — the command line: `pailfs [options] BUCKET[:/PREFIX] MOUNTPOINT`
 * turned into the settings of every layer.
 *
 * options_parse() is a pure function of argv and the environment (HOME,
 * XDG_CACHE_HOME and the working directory, for default and relative
 * paths): it prints nothing, touches no global state and does no I/O, so
 * the whole grammar is unit-tested (tests/unit/test_options.c).  The same
 * grammar serves a person at a shell and mount.fuse3, which runs
 * `pailfs BUCKET MOUNTPOINT -o rw,OPTS…` for an fstab line of type
 * fuse.pailfs: options may follow the positional arguments, and the options
 * that mount(8), fstab and systemd add are accepted and ignored.
 *
 * Every -o option, its default and its meaning are listed by
 * options_print_help() and in man/pailfs.1; keep the three in step. */
#ifndef PAILFS_OPTIONS_H
#define PAILFS_OPTIONS_H

#include "fs/fs.h" /* defines FUSE_USE_VERSION before <fuse_lowlevel.h> */
#include "s3/s3.h"
#include "util/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum options_action {
    OPTIONS_MOUNT = 0, /* mount BUCKET on MOUNTPOINT */
    OPTIONS_HELP,      /* -h, --help: print options_print_help() and exit 0 */
    OPTIONS_VERSION,   /* -V, --version: print the version and exit 0 */
};

/* Limits the values are checked against (also quoted in the help). */
#define OPTIONS_MAX_RETRIES 20
#define OPTIONS_MAX_CONNECT_TIMEOUT_S 300
#define OPTIONS_MAX_STALL_TIMEOUT_S 300
#define OPTIONS_MAX_TTL_S 1e9
#define OPTIONS_MAX_RENAME_PARALLEL 64
#define OPTIONS_MAX_READ_PARALLEL 64
#define OPTIONS_MAX_METRICS_INTERVAL_S 3600
#define OPTIONS_DEFAULT_METRICS_INTERVAL_S 5
#define OPTIONS_DEFAULT_MIME_TYPES "/etc/mime.types"

/* Everything the command line says.  Filled by options_parse(), released by
 * options_free().  The const char * fields of s3 and fs point into strings
 * this struct owns, so they live until options_free(). */
struct options {
    enum options_action action;

    char *bucket;     /* never empty */
    char *prefix;     /* "" or "a/b": no leading or trailing '/' */
    char *mountpoint; /* as given (main resolves it), or "/dev/fd/N" */

    bool foreground;          /* -f, -d or -o debug */
    bool single_thread;       /* -s */
    bool fuse_debug;          /* -o debug: libfuse's own trace of every request */
    bool auto_unmount;        /* -o auto_unmount (needs fusermount3, even as root) */
    bool log_level_given;     /* -d or -o log_level= */
    enum log_level log_level; /* default LOG_LVL_WARN */

    char *logfile;               /* -o logfile=: absolute path, or NULL */
    char *metrics_file;          /* -o metrics_file=: absolute path, or NULL */
    unsigned metrics_interval_s; /* -o metrics_interval=, default 5 */

    struct s3_config s3; /* bucket, endpoint, region, credentials, retries */
    struct fs_config fs; /* from fs_config_defaults(), then the options */

    /* argv for fuse_session_new(): the program name, then one -o with
     * fsname= (default pailfs:BUCKET), subtype= (default pailfs),
     * default_permissions, ro when read-only, and the pass-through options
     * (allow_other, nosuid, max_read=, …) in the order given. */
    struct fuse_args fuse_args;

    /* storage behind the pointers above */
    char *endpoint, *region, *profile, *passwd_file, *cache_dir, *cafile;
    char *sse_c_key_file;
    char *fsname, *subtype;
    char *fuse_opts;                            /* the pass-through options, comma-separated */
    char *sse, *sse_kms_key_id, *storage_class; /* NULL: not given */
    char *mime_types;                           /* NULL: mime_types=off */
};

/* Parse `argc` arguments of argv (argv[0] the program name) into *opts.
 *
 * Returns 0 when *opts is complete: opts->action says whether to mount or to
 * print the help or the version (-h and -V win over whatever follows them;
 * then the rest of the line is not checked).  Returns EINVAL for a command
 * line that is wrong, with one line in errbuf (size errlen, no newline)
 * starting "pailfs: " that names the problem, e.g.
 *   pailfs: unknown option -o NAME
 *   pailfs: bad value 'abc' for -o uid: expected a numeric user id
 *   pailfs: option -o ro takes no value
 *   pailfs: option -o uid needs a value (-o uid=VALUE)
 * and ENOMEM when memory ran out (errbuf says so too).  On any error *opts
 * holds nothing that needs freeing; options_free() is still safe on it. */
int options_parse(int argc, char *const argv[], struct options *opts, char *errbuf, size_t errlen);

/* Release what *opts owns and zero it.  Safe to call twice. */
void options_free(struct options *opts);

/* The --help text: usage, every option with its default, grouped, and the
 * credential chain in brief. */
void options_print_help(FILE *to);

#endif
