/* test_options.c — the command-line grammar (src/options.c): every option,
 * every kind of bad value with its exact message, the fstab argument order
 * that mount.fuse3 uses, BUCKET:/PREFIX forms, ignored helper options, and
 * the FUSE arguments that come out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "options.h"

static char err[1024];

/* Parse the NULL-terminated argument list (argv[0] "pailfs" is added). */
static int parse_v(struct options *o, va_list ap)
{
    char *argv[64] = {"pailfs"};
    int argc = 1;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 63)
        argv[argc++] = (char *)a;
    argv[argc] = NULL;
    memset(err, 'x', sizeof(err) - 1);
    err[sizeof(err) - 1] = '\0';
    return options_parse(argc, argv, o, err, sizeof(err));
}

static int parse(struct options *o, ...)
{
    va_list ap;
    va_start(ap, o);
    int rc = parse_v(o, ap);
    va_end(ap);
    return rc;
}

/* Parse "b /mnt -o OPT" and return the result (0 or EINVAL). */
static int parse_o(struct options *o, const char *opt)
{
    return parse(o, "b", "/mnt", "-o", opt, NULL);
}

/* The -o list handed to FUSE (argv[2]), after checking the argv's shape. */
static const char *fuse_o(const struct options *o)
{
    assert_int_equal(o->fuse_args.argc, 3);
    assert_string_equal(o->fuse_args.argv[0], "pailfs");
    assert_string_equal(o->fuse_args.argv[1], "-o");
    return o->fuse_args.argv[2];
}

/* The error a single bad -o option produces. */
static void assert_o_error(const char *opt, const char *message)
{
    struct options o;
    assert_int_equal(parse_o(&o, opt), EINVAL);
    assert_string_equal(err, message);
    assert_null(o.bucket); /* nothing is left to free */
    options_free(&o);
}

static int setup_env(void **state)
{
    (void)state;
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    setenv("HOME", "/home/u", 1);
    return 0;
}

/* ---- positional arguments ------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "mybucket", "/mnt/data", NULL), 0);
    assert_int_equal(o.action, OPTIONS_MOUNT);
    assert_string_equal(o.bucket, "mybucket");
    assert_string_equal(o.prefix, "");
    assert_string_equal(o.mountpoint, "/mnt/data");
    assert_false(o.foreground);
    assert_false(o.single_thread);
    assert_false(o.fuse_debug);
    assert_false(o.auto_unmount);
    assert_false(o.log_level_given);
    assert_int_equal(o.log_level, LOG_LVL_WARN);

    assert_string_equal(o.s3.bucket, "mybucket");
    assert_null(o.s3.endpoint);
    assert_null(o.s3.region);
    assert_null(o.s3.profile);
    assert_null(o.s3.passwd_file);
    assert_int_equal(o.s3.addressing, S3_ADDR_AUTO);
    assert_false(o.s3.public_bucket);
    assert_int_equal(o.s3.max_attempts, 5); /* retries 4 */
    assert_int_equal(o.s3.http.connect_timeout_ms, 10000);
    assert_int_equal(o.s3.http.stall_timeout_s, 30);

    /* what --help promises */
    assert_string_equal(o.fs.bucket, "mybucket");
    assert_string_equal(o.fs.prefix, "");
    assert_false(o.fs.read_only);
    assert_int_equal(o.fs.uid, getuid());
    assert_int_equal(o.fs.gid, getgid());
    assert_false(o.fs.force_uid);
    assert_false(o.fs.force_gid);
    assert_int_equal(o.fs.file_mode, 0644);
    assert_int_equal(o.fs.dir_mode, 0755);
    assert_int_equal(o.fs.umask, 0);
    assert_true(o.fs.attr_ttl == 1.0);
    assert_true(o.fs.neg_ttl == 1.0);
    assert_int_equal(o.fs.rename_parallel, 8);
    assert_string_equal(o.fs.cache_dir, "/xdg/pailfs");

    assert_string_equal(fuse_o(&o), "fsname=pailfs:mybucket,subtype=pailfs,default_permissions");
    options_free(&o);
    options_free(&o); /* twice is fine */
}

static void test_bucket_prefix_forms(void **state)
{
    (void)state;
    static const struct {
        const char *arg, *bucket, *prefix;
    } cases[] = {
        {"b", "b", ""},
        {"b:", "b", ""},
        {"b:/", "b", ""},
        {"b:///", "b", ""},
        {"b:/a", "b", "a"},
        {"b:/a/", "b", "a"},
        {"b:/a/b/c/", "b", "a/b/c"},
        {"b://a//b//", "b", "a//b"}, /* only the ends are stripped */
        {"b:a/b", "b", "a/b"},
        {"my.bucket-1:/x y/z", "my.bucket-1", "x y/z"},
        {"b:/a:b", "b", "a:b"},
        /* an access point ARN keeps its five colons (the S3 layer checks it) */
        {"arn:aws:s3:us-west-2:123456789012:accesspoint/ap",
         "arn:aws:s3:us-west-2:123456789012:accesspoint/ap", ""},
        {"arn:aws:s3:us-west-2:123456789012:accesspoint/ap:/p/q/",
         "arn:aws:s3:us-west-2:123456789012:accesspoint/ap", "p/q"},
        {"arn:aws:s3", "arn:aws:s3", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct options o;
        assert_int_equal(parse(&o, cases[i].arg, "/mnt", NULL), 0);
        assert_string_equal(o.bucket, cases[i].bucket);
        assert_string_equal(o.prefix, cases[i].prefix);
        assert_string_equal(o.fs.prefix, cases[i].prefix);
        assert_string_equal(o.s3.bucket, cases[i].bucket);
        options_free(&o);
    }
}

static void test_bad_positionals(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, ":/prefix", "/mnt", NULL), EINVAL);
    assert_string_equal(err, "pailfs: empty bucket name in ':/prefix' (expected BUCKET[:/PREFIX])");
    assert_int_equal(parse(&o, "", "/mnt", NULL), EINVAL);
    assert_string_equal(err, "pailfs: empty bucket name in '' (expected BUCKET[:/PREFIX])");
    assert_int_equal(parse(&o, "b", "", NULL), EINVAL);
    assert_string_equal(err, "pailfs: empty mount point");
    assert_int_equal(parse(&o, NULL), EINVAL);
    assert_string_equal(err, "pailfs: missing BUCKET and MOUNTPOINT (usage: pailfs [options] "
                             "BUCKET[:/PREFIX] MOUNTPOINT; see pailfs --help)");
    assert_int_equal(parse(&o, "b", NULL), EINVAL);
    assert_string_equal(err, "pailfs: missing MOUNTPOINT (usage: pailfs [options] "
                             "BUCKET[:/PREFIX] MOUNTPOINT; see pailfs --help)");
    assert_int_equal(parse(&o, "-f", "b", "-o", "ro", NULL), EINVAL);
    assert_string_equal(err, "pailfs: missing MOUNTPOINT (usage: pailfs [options] "
                             "BUCKET[:/PREFIX] MOUNTPOINT; see pailfs --help)");
    assert_int_equal(parse(&o, "b", "/mnt", "extra", NULL), EINVAL);
    assert_string_equal(err, "pailfs: unexpected argument 'extra' (usage: pailfs [options] "
                             "BUCKET[:/PREFIX] MOUNTPOINT)");
    options_free(&o);
}

/* ---- flags and argument order --------------------------------------------- */

static void test_flags(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "-f", "b", "/m", NULL), 0);
    assert_true(o.foreground);
    assert_false(o.log_level_given);
    options_free(&o);

    assert_int_equal(parse(&o, "-d", "b", "/m", NULL), 0);
    assert_true(o.foreground); /* -d implies -f */
    assert_true(o.log_level_given);
    assert_int_equal(o.log_level, LOG_LVL_DEBUG);
    assert_false(o.fuse_debug); /* libfuse's trace only with -o debug */
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions");
    options_free(&o);

    assert_int_equal(parse(&o, "-s", "b", "/m", NULL), 0);
    assert_true(o.single_thread);
    assert_false(o.foreground);
    options_free(&o);

    assert_int_equal(parse(&o, "-fs", "b", "/m", NULL), 0);
    assert_true(o.single_thread);
    assert_true(o.foreground);
    options_free(&o);

    /* a cluster ending in o takes the next word; -oVALUE is attached */
    assert_int_equal(parse(&o, "-fo", "ro", "b", "/m", NULL), 0);
    assert_true(o.foreground);
    assert_true(o.fs.read_only);
    options_free(&o);
    assert_int_equal(parse(&o, "-oro,uid=5", "b", "/m", NULL), 0);
    assert_true(o.fs.read_only);
    assert_int_equal(o.fs.uid, 5);
    options_free(&o);

    /* log_level= and -d: the later one wins */
    assert_int_equal(parse(&o, "-d", "-o", "log_level=error", "b", "/m", NULL), 0);
    assert_int_equal(o.log_level, LOG_LVL_ERROR);
    assert_true(o.foreground);
    options_free(&o);
    assert_int_equal(parse(&o, "-o", "log_level=error", "-d", "b", "/m", NULL), 0);
    assert_int_equal(o.log_level, LOG_LVL_DEBUG);
    options_free(&o);

    /* after --, everything is positional */
    assert_int_equal(parse(&o, "--", "-b", "-m", NULL), 0);
    assert_string_equal(o.bucket, "-b");
    assert_string_equal(o.mountpoint, "-m");
    options_free(&o);
}

static void test_unknown_flags(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "-x", "b", "/m", NULL), EINVAL);
    assert_string_equal(err, "pailfs: unknown option -x");
    assert_int_equal(parse(&o, "-fx", "b", "/m", NULL), EINVAL);
    assert_string_equal(err, "pailfs: unknown option -x");
    assert_int_equal(parse(&o, "--foreground", "b", "/m", NULL), EINVAL);
    assert_string_equal(err, "pailfs: unknown option --foreground");
    assert_int_equal(parse(&o, "b", "/m", "-o", NULL), EINVAL);
    assert_string_equal(err, "pailfs: option -o needs an argument (-o opt[=val],...)");
    options_free(&o);
}

static void test_help_version(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "--help", NULL), 0);
    assert_int_equal(o.action, OPTIONS_HELP);
    options_free(&o);
    assert_int_equal(parse(&o, "-h", NULL), 0);
    assert_int_equal(o.action, OPTIONS_HELP);
    options_free(&o);
    assert_int_equal(parse(&o, "-fh", "whatever", NULL), 0);
    assert_int_equal(o.action, OPTIONS_HELP);
    options_free(&o);
    /* -h wins over what follows it, not over what came before */
    assert_int_equal(parse(&o, "b", "/m", "-h", "-o", "bogus", NULL), 0);
    assert_int_equal(o.action, OPTIONS_HELP);
    options_free(&o);
    assert_int_equal(parse(&o, "-o", "bogus", "-h", NULL), EINVAL);
    assert_string_equal(err, "pailfs: unknown option -o bogus");
    assert_int_equal(parse(&o, "-V", NULL), 0);
    assert_int_equal(o.action, OPTIONS_VERSION);
    options_free(&o);
    assert_int_equal(parse(&o, "--version", "b", NULL), 0);
    assert_int_equal(o.action, OPTIONS_VERSION);
    options_free(&o);
}

/* mount -t fuse.pailfs mybucket:/some/prefix /mnt/data -o _netdev,… makes
 * mount.fuse3 run this (it strips _netdev, nofail, auto, noauto, user,
 * users, nouser and adds dev,suid as root); mount(8) may pass more. */
static void test_fstab_form(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "mybucket:/some/prefix", "/mnt/data", "-o",
                           "rw,allow_other,endpoint=http://127.0.0.1:9000,path_style,dev,suid",
                           NULL),
                     0);
    assert_string_equal(o.bucket, "mybucket");
    assert_string_equal(o.prefix, "some/prefix");
    assert_string_equal(o.mountpoint, "/mnt/data");
    assert_string_equal(o.s3.endpoint, "http://127.0.0.1:9000");
    assert_int_equal(o.s3.addressing, S3_ADDR_PATH);
    assert_false(o.fs.read_only);
    assert_false(o.foreground);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:mybucket,subtype=pailfs,default_permissions,"
                                    "allow_other,dev,suid");
    options_free(&o);

    /* everything fstab, mount(8) and systemd may add, unstripped */
    assert_int_equal(parse(&o, "b", "/m", "-o",
                           "rw,_netdev,nofail,auto,noauto,user,nouser,users,owner,group,"
                           "defaults,async,x-systemd.automount,x-systemd.idle-timeout=60,"
                           "x-gvfs-show,comment=systemd.automount,user=alice,relatime,"
                           "norelatime,strictatime,nostrictatime,lazytime,nolazytime,"
                           "diratime,nodiratime",
                           NULL),
                     0);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions");
    options_free(&o);

    /* options first, or split over several -o, or between the positionals */
    assert_int_equal(parse(&o, "-o", "ro", "b:/p", "-o", "uid=7", "/m", "-o", "gid=8", NULL), 0);
    assert_true(o.fs.read_only);
    assert_int_equal(o.fs.uid, 7);
    assert_int_equal(o.fs.gid, 8);
    assert_string_equal(o.prefix, "p");
    assert_string_equal(o.mountpoint, "/m");
    options_free(&o);

    /* mount.fuse3 -o drop_privileges passes the mount as /dev/fd/N */
    assert_int_equal(parse(&o, "b", "/dev/fd/3", "-o", "rw", NULL), 0);
    assert_string_equal(o.mountpoint, "/dev/fd/3");
    options_free(&o);
}

/* ---- each -o option --------------------------------------------------------- */

static void test_s3_options(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "b", "/m", "-o",
                           "endpoint=https://s3.example.com:8443/base,region=eu-west-1,"
                           "profile=work,passwd_file=/etc/passwd-s3fs,public,retries=0,"
                           "connect_timeout=2.5",
                           NULL),
                     0);
    assert_string_equal(o.s3.endpoint, "https://s3.example.com:8443/base");
    assert_string_equal(o.s3.region, "eu-west-1");
    assert_string_equal(o.s3.profile, "work");
    assert_string_equal(o.s3.passwd_file, "/etc/passwd-s3fs");
    assert_true(o.s3.public_bucket);
    assert_int_equal(o.s3.max_attempts, 1);
    assert_int_equal(o.s3.http.connect_timeout_ms, 2500);
    assert_int_equal(o.s3.addressing, S3_ADDR_AUTO);
    options_free(&o);

    assert_int_equal(parse_o(&o, "retries=20,connect_timeout=300,path_style,stall_timeout=300"), 0);
    assert_int_equal(o.s3.max_attempts, 21);
    assert_int_equal(o.s3.http.connect_timeout_ms, 300000);
    assert_int_equal(o.s3.http.stall_timeout_s, 300);
    assert_int_equal(o.s3.addressing, S3_ADDR_PATH);
    options_free(&o);

    /* the last value wins */
    assert_int_equal(parse(&o, "b", "/m", "-o", "region=a", "-o", "region=b,region=c", NULL), 0);
    assert_string_equal(o.s3.region, "c");
    options_free(&o);
}

/* ---- how new objects are stored (issue 20) ----------------------------------- */

static void test_object_policy_options(void **state)
{
    (void)state;
    struct options o;
    /* nothing asked by default; Content-Type from /etc/mime.types */
    assert_int_equal(parse_o(&o, "ro"), 0);
    assert_null(o.s3.policy.sse);
    assert_null(o.s3.policy.sse_kms_key_id);
    assert_false(o.s3.policy.sse_bucket_key);
    assert_null(o.s3.policy.storage_class);
    assert_false(o.s3.requester_pays);
    assert_string_equal(o.fs.mime_types, "/etc/mime.types");
    options_free(&o);

    assert_int_equal(parse_o(&o, "sse=aws:kms,sse_kms_key_id=arn:aws:kms:us-east-1:1:key/ab-cd,"
                                 "sse_bucket_key,storage_class=GLACIER_IR,requester_pays,"
                                 "mime_types=off"),
                     0);
    assert_string_equal(o.s3.policy.sse, "aws:kms");
    assert_string_equal(o.s3.policy.sse_kms_key_id, "arn:aws:kms:us-east-1:1:key/ab-cd");
    assert_true(o.s3.policy.sse_bucket_key);
    assert_string_equal(o.s3.policy.storage_class, "GLACIER_IR");
    assert_true(o.s3.requester_pays);
    assert_null(o.fs.mime_types);
    options_free(&o);

    assert_int_equal(parse_o(&o, "sse=AES256,storage_class=STANDARD_IA,mime_types=m.types"), 0);
    assert_string_equal(o.s3.policy.sse, "AES256");
    assert_string_equal(o.s3.policy.storage_class, "STANDARD_IA");
    assert_true(o.fs.mime_types[0] == '/'); /* anchored to the working directory */
    assert_non_null(strstr(o.fs.mime_types, "/m.types"));
    options_free(&o);

    assert_int_equal(parse_o(&o, "sse=aws:kms:dsse,sse_kms_key_id=alias/mine"), 0);
    assert_string_equal(o.s3.policy.sse, "aws:kms:dsse");
    assert_string_equal(o.s3.policy.sse_kms_key_id, "alias/mine");
    options_free(&o);
}

static void test_object_policy_bad_values(void **state)
{
    (void)state;
    assert_o_error(
        "sse=aes256",
        "pailfs: bad value 'aes256' for -o sse: expected AES256, aws:kms or aws:kms:dsse");
    assert_o_error("sse=", "pailfs: bad value '' for -o sse: expected AES256, aws:kms or "
                           "aws:kms:dsse");
    assert_o_error("sse=aws:kms:", "pailfs: bad value 'aws:kms:' for -o sse: expected AES256, "
                                   "aws:kms or aws:kms:dsse");
    assert_o_error("sse_kms_key_id=a b",
                   "pailfs: bad value 'a b' for -o sse_kms_key_id: expected a KMS key id, alias or "
                   "ARN (printable, no blanks, at most 2048 characters)");
    assert_o_error("sse_kms_key_id=",
                   "pailfs: bad value '' for -o sse_kms_key_id: expected a KMS key id, alias or "
                   "ARN (printable, no blanks, at most 2048 characters)");
    assert_o_error("storage_class=standard_ia",
                   "pailfs: bad value 'standard_ia' for -o storage_class: expected an S3 storage "
                   "class such as STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, "
                   "GLACIER_IR, GLACIER or DEEP_ARCHIVE");
    assert_o_error("mime_types=", "pailfs: bad value '' for -o mime_types: expected off, or the "
                                  "path of a mime.types file");
    assert_o_error("requester_pays=yes", "pailfs: option -o requester_pays takes no value");
    assert_o_error("sse_bucket_key=1", "pailfs: option -o sse_bucket_key takes no value");
    assert_o_error("sse", "pailfs: option -o sse needs a value (-o sse=VALUE)");
    /* a KMS key or bucket key without a KMS encryption would be refused by
     * S3 at the first write, long after mounting */
    assert_o_error("sse_kms_key_id=k",
                   "pailfs: option -o sse_kms_key_id needs -o sse=aws:kms or -o sse=aws:kms:dsse");
    assert_o_error("sse=AES256,sse_kms_key_id=k",
                   "pailfs: option -o sse_kms_key_id needs -o sse=aws:kms or -o sse=aws:kms:dsse");
    assert_o_error("sse=AES256,sse_bucket_key",
                   "pailfs: option -o sse_bucket_key needs -o sse=aws:kms or -o sse=aws:kms:dsse");
    /* a key id with a control character never reaches a header */
    struct options o;
    assert_int_equal(parse_o(&o, "sse=aws:kms,sse_kms_key_id=a\x01b"), EINVAL);
    assert_non_null(strstr(err, "for -o sse_kms_key_id"));
    options_free(&o);
    char longkey[2060];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    struct buf b = BUF_INIT;
    assert_int_equal(buf_printf(&b, "sse=aws:kms,sse_kms_key_id=%s", longkey), 0);
    assert_int_equal(parse_o(&o, b.data), EINVAL);
    options_free(&o);
    buf_free(&b);
}

static void test_relative_paths_become_absolute(void **state)
{
    (void)state;
    char cwd[PATH_MAX], want[PATH_MAX + 32];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    struct options o;
    assert_int_equal(parse_o(&o, "passwd_file=creds,cache_dir=c/d"), 0);
    snprintf(want, sizeof(want), "%s/creds", cwd);
    assert_string_equal(o.s3.passwd_file, want);
    snprintf(want, sizeof(want), "%s/c/d", cwd);
    assert_string_equal(o.fs.cache_dir, want);
    options_free(&o);
    /* the mount point is kept as given; main resolves it */
    assert_int_equal(parse(&o, "b", "rel/mnt", NULL), 0);
    assert_string_equal(o.mountpoint, "rel/mnt");
    options_free(&o);
}

static void test_mount_options(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse_o(&o, "ro"), 0);
    assert_true(o.fs.read_only);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions,ro");
    options_free(&o);

    assert_int_equal(parse_o(&o, "ro,rw"), 0); /* mount.fuse3 puts rw first; last wins */
    assert_false(o.fs.read_only);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions");
    options_free(&o);

    assert_int_equal(parse_o(&o, "rw,ro"), 0);
    assert_true(o.fs.read_only);
    options_free(&o);

    assert_int_equal(parse_o(&o, "allow_root,auto_unmount,cache_dir=/var/tmp/pc,"
                                 "rename_parallel=64"),
                     0);
    assert_true(o.auto_unmount);
    assert_string_equal(o.fs.cache_dir, "/var/tmp/pc");
    assert_int_equal(o.fs.rename_parallel, 64);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions,"
                                    "allow_root,auto_unmount");
    options_free(&o);

    assert_int_equal(parse_o(&o, "allow_other,allow_other"), 0);
    assert_string_equal(fuse_o(&o),
                        "fsname=pailfs:b,subtype=pailfs,default_permissions,allow_other");
    options_free(&o);
}

static void test_ownership_options(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse_o(&o, "uid=1000,gid=0,umask=022,file_mode=0600,dir_mode=7777"), 0);
    assert_int_equal(o.fs.uid, 1000);
    assert_true(o.fs.force_uid);
    assert_int_equal(o.fs.gid, 0);
    assert_true(o.fs.force_gid);
    assert_int_equal(o.fs.umask, 022);
    assert_int_equal(o.fs.file_mode, 0600);
    assert_int_equal(o.fs.dir_mode, 07777);
    options_free(&o);

    assert_int_equal(parse_o(&o, "uid=4294967294,umask=0,file_mode=0"), 0);
    assert_int_equal(o.fs.uid, 4294967294u);
    assert_false(o.fs.force_gid);
    assert_int_equal(o.fs.umask, 0);
    assert_int_equal(o.fs.file_mode, 0);
    options_free(&o);
}

static void test_cache_options(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse_o(&o, "attr_ttl=0.25,neg_ttl=0"), 0);
    assert_true(o.fs.attr_ttl == 0.25);
    assert_true(o.fs.neg_ttl == 0.0);
    options_free(&o);
    assert_int_equal(parse_o(&o, "attr_ttl=.5,neg_ttl=30."), 0);
    assert_true(o.fs.attr_ttl == 0.5);
    assert_true(o.fs.neg_ttl == 30.0);
    options_free(&o);
    assert_int_equal(parse_o(&o, "attr_ttl=3600"), 0);
    assert_true(o.fs.attr_ttl == 3600.0);
    options_free(&o);
}

static void test_write_options(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse_o(&o, "part_size=4k,max_inflight=16"), 0);
    assert_int_equal(o.fs.part_size, 4096);
    assert_int_equal(o.fs.max_inflight, 16);
    assert_int_equal(o.fs.abort_stale_uploads, 86400); /* default 24 h */
    options_free(&o);
    static const struct {
        const char *v;
        uint64_t s;
    } durations[] = {{"3600", 3600}, {"90m", 5400}, {"24h", 86400},
                     {"7d", 604800}, {"2s", 2},     {"off", 0}};
    for (size_t i = 0; i < sizeof(durations) / sizeof(*durations); i++) {
        char opt[64];
        snprintf(opt, sizeof(opt), "abort_stale_uploads=%s", durations[i].v);
        assert_int_equal(parse_o(&o, opt), 0);
        assert_int_equal(o.fs.abort_stale_uploads, durations[i].s);
        options_free(&o);
    }
    static const char *bad[] = {"abort_stale_uploads=0",
                                "abort_stale_uploads=5x",
                                "abort_stale_uploads=-1",
                                "abort_stale_uploads=h",
                                "abort_stale_uploads=99999d",
                                "max_inflight=0",
                                "max_inflight=65",
                                "part_size=4095"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(parse_o(&o, bad[i]), EINVAL);
}

static void test_gz_workers(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse_o(&o, "gunzip=view"), 0);
    assert_int_equal(o.fs.gz_workers, 0); /* one per core */
    options_free(&o);
    assert_int_equal(parse_o(&o, "gz_workers=3"), 0);
    assert_int_equal(o.fs.gz_workers, 3);
    options_free(&o);
    static const char *bad[] = {"gz_workers=5", "gz_workers=-1", "gz_workers=two", "gz_workers="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(parse_o(&o, bad[i]), EINVAL);
}

/* Every whole-number option takes its least and greatest value, stores
 * it where the mount reads it, and refuses one past either end. */
static void test_whole_number_bounds(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        unsigned long long min, max;
        size_t offset; /* where it lands in struct options */
        unsigned plus; /* what parsing adds (retries: attempts) */
    } cases[] = {
        {"retries", 0, 20, offsetof(struct options, s3.max_attempts), 1},
        {"stall_timeout", 1, 300, offsetof(struct options, s3.http.stall_timeout_s), 0},
        {"metrics_interval", 1, 3600, offsetof(struct options, metrics_interval_s), 0},
        {"rename_parallel", 1, 64, offsetof(struct options, fs.rename_parallel), 0},
        {"read_parallel", 1, 64, offsetof(struct options, fs.read_parallel), 0},
        {"gz_workers", 0, 4, offsetof(struct options, fs.gz_workers), 0},
        {"list_page", 1, 1000, offsetof(struct options, fs.list_page), 0},
        {"max_inodes", 16, 100000000, offsetof(struct options, fs.max_inodes), 0},
        {"max_inflight", 1, 64, offsetof(struct options, fs.max_inflight), 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        unsigned long long ends[] = {cases[i].min, cases[i].max};
        for (size_t e = 0; e < 2; e++) {
            char opt[64];
            snprintf(opt, sizeof(opt), "%s=%llu", cases[i].name, ends[e]);
            struct options o;
            assert_int_equal(parse_o(&o, opt), 0);
            unsigned got;
            memcpy(&got, (char *)&o + cases[i].offset, sizeof(got));
            assert_int_equal(got, ends[e] + cases[i].plus);
            options_free(&o);
        }
        char below[64], above[64];
        snprintf(below, sizeof(below), "%s=%lld", cases[i].name, (long long)cases[i].min - 1);
        snprintf(above, sizeof(above), "%s=%llu", cases[i].name, cases[i].max + 1);
        struct options o;
        assert_int_equal(parse_o(&o, below), EINVAL);
        assert_int_equal(parse_o(&o, above), EINVAL);
    }
}

static void test_log_level(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum log_level level;
    } levels[] = {{"error", LOG_LVL_ERROR},
                  {"warn", LOG_LVL_WARN},
                  {"info", LOG_LVL_INFO},
                  {"debug", LOG_LVL_DEBUG}};
    for (size_t i = 0; i < 4; i++) {
        char opt[32];
        snprintf(opt, sizeof(opt), "log_level=%s", levels[i].name);
        struct options o;
        assert_int_equal(parse_o(&o, opt), 0);
        assert_int_equal(o.log_level, levels[i].level);
        assert_true(o.log_level_given);
        assert_false(o.foreground); /* only -d implies -f */
        options_free(&o);
    }
}

static void test_log_and_metrics_files(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "b", "/mnt", NULL), 0);
    assert_null(o.logfile);
    assert_null(o.metrics_file);
    assert_int_equal(o.metrics_interval_s, 5);
    options_free(&o);

    char cwd[PATH_MAX], want[PATH_MAX + 32];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(parse_o(&o, "logfile=/var/log/p.log,metrics_file=m.prom,metrics_interval=60"),
                     0);
    assert_string_equal(o.logfile, "/var/log/p.log");
    snprintf(want, sizeof(want), "%s/m.prom", cwd); /* a daemon runs in "/" */
    assert_string_equal(o.metrics_file, want);
    assert_int_equal(o.metrics_interval_s, 60);
    assert_false(o.foreground);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions");
    options_free(&o);

    assert_o_error("metrics_interval=0", "pailfs: bad value '0' for -o metrics_interval: expected "
                                         "a whole number of seconds from 1 to 3600");
    assert_o_error("metrics_interval=3601", "pailfs: bad value '3601' for -o metrics_interval: "
                                            "expected a whole number of seconds from 1 to 3600");
    assert_o_error("logfile=", "pailfs: bad value '' for -o logfile: expected a file path");
    assert_o_error("metrics_file=",
                   "pailfs: bad value '' for -o metrics_file: expected a file path");
}

static void test_fuse_passthrough(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse_o(&o, "default_permissions,nosuid,nodev,noexec,suid,dev,exec,"
                                 "noatime,atime,max_read=131072"),
                     0);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions,"
                                    "nosuid,nodev,noexec,suid,dev,exec,noatime,atime,"
                                    "max_read=131072");
    options_free(&o);

    assert_int_equal(parse_o(&o, "fsname=s3:data,subtype=s3"), 0);
    assert_string_equal(fuse_o(&o), "fsname=s3:data,subtype=s3,default_permissions");
    options_free(&o);

    /* a comma inside a value: escaped with '\' on the way in and out */
    assert_int_equal(parse_o(&o, "fsname=a\\,b"), 0);
    assert_string_equal(fuse_o(&o), "fsname=a\\,b,subtype=pailfs,default_permissions");
    options_free(&o);

    assert_int_equal(parse_o(&o, "debug"), 0);
    assert_true(o.fuse_debug);
    assert_true(o.foreground);
    assert_false(o.log_level_given);
    assert_string_equal(fuse_o(&o), "fsname=pailfs:b,subtype=pailfs,default_permissions,debug");
    options_free(&o);

    /* empty items are skipped */
    assert_int_equal(parse_o(&o, ",ro,,"), 0);
    assert_true(o.fs.read_only);
    options_free(&o);
}

static void test_cache_dir_default(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "b", "/m", NULL), 0);
    assert_string_equal(o.fs.cache_dir, "/xdg/pailfs");
    options_free(&o);

    setenv("XDG_CACHE_HOME", "relative", 1); /* ignored, as the XDG spec says */
    assert_int_equal(parse(&o, "b", "/m", NULL), 0);
    assert_string_equal(o.fs.cache_dir, "/home/u/.cache/pailfs");
    options_free(&o);

    unsetenv("XDG_CACHE_HOME");
    assert_int_equal(parse(&o, "b", "/m", NULL), 0);
    assert_string_equal(o.fs.cache_dir, "/home/u/.cache/pailfs");
    options_free(&o);

    unsetenv("HOME");
    int rc = parse(&o, "b", "/m", NULL);
    if (geteuid() == 0) {
        assert_int_equal(rc, 0);
        assert_string_equal(o.fs.cache_dir, "/var/cache/pailfs");
    } else {
        assert_int_equal(rc, EINVAL);
        assert_string_equal(err, "pailfs: no cache directory: HOME is not set; give -o "
                                 "cache_dir=PATH");
    }
    options_free(&o);
    assert_int_equal(parse_o(&o, "cache_dir=/c"), 0); /* needs no HOME */
    assert_string_equal(o.fs.cache_dir, "/c");
    options_free(&o);
    setup_env(NULL);
}

/* ---- refusals ----------------------------------------------------------------- */

static void test_unknown_option(void **state)
{
    (void)state;
    assert_o_error("bogus", "pailfs: unknown option -o bogus");
    /* the name only: the value of a mistyped option may be a secret */
    assert_o_error("secret_key=AKIAWHATEVER", "pailfs: unknown option -o secret_key");
    assert_o_error("ro,big_writes", "pailfs: unknown option -o big_writes");
    assert_o_error("RO", "pailfs: unknown option -o RO");
    assert_o_error("=5", "pailfs: unknown option -o ");
    assert_o_error("xsystemd", "pailfs: unknown option -o xsystemd");
}

static void test_value_presence(void **state)
{
    (void)state;
    assert_o_error("ro=1", "pailfs: option -o ro takes no value");
    assert_o_error("path_style=yes", "pailfs: option -o path_style takes no value");
    assert_o_error("allow_other=", "pailfs: option -o allow_other takes no value");
    assert_o_error("_netdev=1", "pailfs: option -o _netdev takes no value");
    assert_o_error("uid", "pailfs: option -o uid needs a value (-o uid=VALUE)");
    assert_o_error("endpoint", "pailfs: option -o endpoint needs a value (-o endpoint=VALUE)");
    assert_o_error("attr_ttl", "pailfs: option -o attr_ttl needs a value (-o attr_ttl=VALUE)");
}

static void test_bad_values(void **state)
{
    (void)state;
    static const struct {
        const char *opt, *message;
    } cases[] = {
        {"uid=abc", "pailfs: bad value 'abc' for -o uid: expected a numeric user id"},
        {"uid=12x", "pailfs: bad value '12x' for -o uid: expected a numeric user id"},
        {"uid=-1", "pailfs: bad value '-1' for -o uid: expected a numeric user id"},
        {"uid= 5", "pailfs: bad value ' 5' for -o uid: expected a numeric user id"},
        {"uid=", "pailfs: bad value '' for -o uid: expected a numeric user id"},
        {"uid=4294967295", "pailfs: bad value '4294967295' for -o uid: expected a numeric user id"},
        {"uid=99999999999999999999999",
         "pailfs: bad value '99999999999999999999999' for -o uid: expected a numeric user id"},
        {"gid=root", "pailfs: bad value 'root' for -o gid: expected a numeric group id"},
        {"umask=8", "pailfs: bad value '8' for -o umask: expected an octal mode of at most 07777"},
        {"umask=010000",
         "pailfs: bad value '010000' for -o umask: expected an octal mode of at most 07777"},
        {"file_mode=rw",
         "pailfs: bad value 'rw' for -o file_mode: expected an octal mode of at most 07777"},
        {"dir_mode=0755 ",
         "pailfs: bad value '0755 ' for -o dir_mode: expected an octal mode of at most 07777"},
        {"attr_ttl=-1", "pailfs: bad value '-1' for -o attr_ttl: expected a number of seconds, "
                        "0 or more (fractions allowed)"},
        {"attr_ttl=1e3", "pailfs: bad value '1e3' for -o attr_ttl: expected a number of "
                         "seconds, 0 or more (fractions allowed)"},
        {"attr_ttl=inf", "pailfs: bad value 'inf' for -o attr_ttl: expected a number of "
                         "seconds, 0 or more (fractions allowed)"},
        {"attr_ttl=nan", "pailfs: bad value 'nan' for -o attr_ttl: expected a number of "
                         "seconds, 0 or more (fractions allowed)"},
        {"attr_ttl=.", "pailfs: bad value '.' for -o attr_ttl: expected a number of seconds, "
                       "0 or more (fractions allowed)"},
        {"neg_ttl=1s", "pailfs: bad value '1s' for -o neg_ttl: expected a number of seconds, "
                       "0 or more (fractions allowed)"},
        {"neg_ttl=0x10", "pailfs: bad value '0x10' for -o neg_ttl: expected a number of "
                         "seconds, 0 or more (fractions allowed)"},
        {"retries=21", "pailfs: bad value '21' for -o retries: expected a whole number from 0 "
                       "to 20"},
        {"retries=-1", "pailfs: bad value '-1' for -o retries: expected a whole number from 0 "
                       "to 20"},
        {"retries=4 ", "pailfs: bad value '4 ' for -o retries: expected a whole number from 0 "
                       "to 20"},
        {"connect_timeout=0", "pailfs: bad value '0' for -o connect_timeout: expected a number "
                              "of seconds above 0 and at most 300"},
        {"connect_timeout=301", "pailfs: bad value '301' for -o connect_timeout: expected a "
                                "number of seconds above 0 and at most 300"},
        {"stall_timeout=0", "pailfs: bad value '0' for -o stall_timeout: expected a whole "
                            "number of seconds from 1 to 300"},
        {"stall_timeout=1.5", "pailfs: bad value '1.5' for -o stall_timeout: expected a whole "
                              "number of seconds from 1 to 300"},
        {"stall_timeout=301", "pailfs: bad value '301' for -o stall_timeout: expected a whole "
                              "number of seconds from 1 to 300"},
        {"log_level=verbose", "pailfs: bad value 'verbose' for -o log_level: expected error, "
                              "warn, info or debug"},
        {"log_level=WARN", "pailfs: bad value 'WARN' for -o log_level: expected error, warn, "
                           "info or debug"},
        {"endpoint=127.0.0.1:9000", "pailfs: bad value '127.0.0.1:9000' for -o endpoint: "
                                    "expected an http:// or https:// URL such as "
                                    "http://127.0.0.1:9000"},
        {"endpoint=http://", "pailfs: bad value 'http://' for -o endpoint: expected an http:// "
                             "or https:// URL such as http://127.0.0.1:9000"},
        {"endpoint=ftp://h", "pailfs: bad value 'ftp://h' for -o endpoint: expected an http:// "
                             "or https:// URL such as http://127.0.0.1:9000"},
        {"region=", "pailfs: bad value '' for -o region: expected a region name such as "
                    "eu-west-1"},
        {"region=eu west", "pailfs: bad value 'eu west' for -o region: expected a region name "
                           "such as eu-west-1"},
        {"profile=", "pailfs: bad value '' for -o profile: expected a profile name"},
        {"passwd_file=", "pailfs: bad value '' for -o passwd_file: expected a file path"},
        {"cache_dir=", "pailfs: bad value '' for -o cache_dir: expected a directory path"},
        {"rename_parallel=0", "pailfs: bad value '0' for -o rename_parallel: expected a whole "
                              "number from 1 to 64"},
        {"rename_parallel=65", "pailfs: bad value '65' for -o rename_parallel: expected a whole "
                               "number from 1 to 64"},
        {"max_read=0", "pailfs: bad value '0' for -o max_read: expected a positive number of "
                       "bytes"},
        {"max_read=1k", "pailfs: bad value '1k' for -o max_read: expected a positive number of "
                        "bytes"},
        {"fsname=", "pailfs: bad value '' for -o fsname: expected a name"},
        {"subtype=a/b", "pailfs: bad value 'a/b' for -o subtype: expected a name of letters, "
                        "digits, '-', '_' or '.'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_o_error(cases[i].opt, cases[i].message);
}

static void test_refused_combinations(void **state)
{
    (void)state;
    assert_o_error("allow_other,allow_root",
                   "pailfs: options -o allow_other and -o allow_root exclude each other");
    assert_o_error("sync", "pailfs: option -o sync is not supported: a file reaches S3 when it "
                           "is closed or fsync'ed, never at each write (use fsync)");
    /* the first error is the one reported */
    assert_o_error("uid=x,bogus", "pailfs: bad value 'x' for -o uid: expected a numeric user id");
}

static void test_small_errbuf(void **state)
{
    (void)state;
    char *argv[] = {"pailfs", "-o", "bogus_option_with_a_long_name", "b", "/m", NULL};
    char small[16];
    struct options o;
    assert_int_equal(options_parse(5, argv, &o, small, sizeof(small)), EINVAL);
    assert_string_equal(small, "pailfs: unknown");
    assert_int_equal(options_parse(5, argv, &o, NULL, 0), EINVAL);
}

/* What the error quotes of an argument stays one line of text (found by
 * tests/fuzz/fuzz_options: "-o \1\n" gave a message with a newline). */
static void test_error_quotes_no_control_characters(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "b", "/m", "-o", "\x01\n\x1b[2J", NULL), EINVAL);
    assert_string_equal(err, "pailfs: unknown option -o \\x01\\n\\x1b[2J");
    assert_int_equal(parse(&o, "b", "/m", "x\ty\x7f", NULL), EINVAL);
    assert_non_null(strstr(err, "'x\\ty\\x7f'"));
}

static void test_help_text_lists_every_option(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    options_print_help(f);
    fclose(f);
    static const char *const names[] = {
        "-f ",
        "-d ",
        "-s ",
        "--help",
        "--version",
        "ro ",
        "rw ",
        "allow_other",
        "allow_root",
        "auto_unmount",
        "cache_dir=",
        "rename_parallel=",
        "endpoint=",
        "region=",
        "path_style",
        "profile=",
        "passwd_file=",
        "public",
        "retries=",
        "connect_timeout=",
        "stall_timeout=",
        "requester_pays",
        "sse=",
        "sse_kms_key_id=",
        "sse_bucket_key",
        "storage_class=",
        "mime_types=",
        "uid=",
        "gid=",
        "file_mode=",
        "dir_mode=",
        "umask=",
        "attr_ttl=",
        "neg_ttl=",
        "log_level=",
        "logfile=",
        "metrics_file=",
        "metrics_interval=",
        "--stats",
        "default_permissions",
        "fsname=",
        "subtype=",
        "nosuid",
        "nodev",
        "noexec",
        "noatime",
        "max_read=",
        "debug ",
        "_netdev",
        "nofail",
        "x-*",
        "sync",
        "fuse.pailfs",
        "(default 8)",
        "(default 4)",
        "(default 10)",
        "(default 0644)",
        "(default 0755)",
        "(default 0000)",
        "(default warn)",
        "(default pailfs:BUCKET)",
        "(default pailfs)",
        "AWS_ACCESS_KEY_ID",
        "IMDSv2",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!strstr(text, names[i]))
            fail_msg("--help does not mention '%s'", names[i]);
    }
    free(text);
}

/* ---- SSE-C and checksums (issue 20) ------------------------------------- */

static void test_checksum_option(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "b", "/mnt", NULL), 0);
    assert_int_equal(o.s3.checksum, S3_CHECKSUM_CRC32C); /* the default */
    options_free(&o);
    static const struct {
        const char *opt;
        enum s3_checksum want;
    } ok[] = {
        {"checksum=crc32c", S3_CHECKSUM_CRC32C},
        {"checksum=crc64nvme", S3_CHECKSUM_CRC64NVME},
        {"checksum=sha256", S3_CHECKSUM_SHA256},
        {"checksum=off", S3_CHECKSUM_OFF},
        {"checksum=off,checksum=sha256", S3_CHECKSUM_SHA256}, /* a later value wins */
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(parse_o(&o, ok[i].opt), 0);
        assert_int_equal(o.s3.checksum, ok[i].want);
        options_free(&o);
    }
    assert_o_error("checksum=md5",
                   "pailfs: bad value 'md5' for -o checksum: expected crc32c, crc64nvme, sha256 "
                   "or off");
    assert_o_error("checksum=CRC32C", "pailfs: bad value 'CRC32C' for -o checksum: expected "
                                      "crc32c, crc64nvme, sha256 or off");
    assert_o_error("checksum", "pailfs: option -o checksum needs a value (-o checksum=VALUE)");
}

static void test_sse_c_options(void **state)
{
    (void)state;
    struct options o;
    /* no SSE-C: the cache as configured */
    assert_int_equal(parse_o(&o, "cache_size=1G"), 0);
    assert_null(o.s3.sse_c_key_file);
    assert_true(o.fs.cache_size == (1ULL << 30));
    assert_false(o.fs.gz_index_no_local);
    options_free(&o);
    /* a key file: absolute path kept; disk cache and local gz indexes off,
     * even when a cache size is given */
    assert_int_equal(parse_o(&o, "sse_c_key_file=/etc/k,cache_size=1G"), 0);
    assert_string_equal(o.s3.sse_c_key_file, "/etc/k");
    assert_true(o.fs.cache_size_set);
    assert_true(o.fs.cache_size == 0);
    assert_true(o.fs.gz_index_no_local);
    options_free(&o);
    /* a relative path is made absolute against the working directory */
    char cwd[PATH_MAX], want[PATH_MAX + 8];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(want, sizeof(want), "%s/k", cwd);
    assert_int_equal(parse_o(&o, "sse_c_key_file=k"), 0);
    assert_string_equal(o.s3.sse_c_key_file, want);
    options_free(&o);
    /* opted in: the cache stays */
    assert_int_equal(parse_o(&o, "sse_c_key_file=/etc/k,sse_c_cache,cache_size=1G"), 0);
    assert_true(o.fs.cache_size == (1ULL << 30));
    assert_false(o.fs.gz_index_no_local);
    options_free(&o);
    assert_o_error("sse_c_cache", "pailfs: option -o sse_c_cache needs -o sse_c_key_file");
    assert_o_error("sse_c_cache=1", "pailfs: option -o sse_c_cache takes no value");
    assert_o_error("sse_c_key_file=",
                   "pailfs: bad value '' for -o sse_c_key_file: expected a file path");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup_env),
        cmocka_unit_test_setup(test_whole_number_bounds, setup_env),
        cmocka_unit_test_setup(test_bucket_prefix_forms, setup_env),
        cmocka_unit_test_setup(test_bad_positionals, setup_env),
        cmocka_unit_test_setup(test_flags, setup_env),
        cmocka_unit_test_setup(test_unknown_flags, setup_env),
        cmocka_unit_test_setup(test_help_version, setup_env),
        cmocka_unit_test_setup(test_fstab_form, setup_env),
        cmocka_unit_test_setup(test_s3_options, setup_env),
        cmocka_unit_test_setup(test_object_policy_options, setup_env),
        cmocka_unit_test_setup(test_object_policy_bad_values, setup_env),
        cmocka_unit_test_setup(test_relative_paths_become_absolute, setup_env),
        cmocka_unit_test_setup(test_mount_options, setup_env),
        cmocka_unit_test_setup(test_ownership_options, setup_env),
        cmocka_unit_test_setup(test_cache_options, setup_env),
        cmocka_unit_test_setup(test_write_options, setup_env),
        cmocka_unit_test_setup(test_gz_workers, setup_env),
        cmocka_unit_test_setup(test_log_level, setup_env),
        cmocka_unit_test_setup(test_log_and_metrics_files, setup_env),
        cmocka_unit_test_setup(test_fuse_passthrough, setup_env),
        cmocka_unit_test_setup(test_cache_dir_default, setup_env),
        cmocka_unit_test_setup(test_unknown_option, setup_env),
        cmocka_unit_test_setup(test_value_presence, setup_env),
        cmocka_unit_test_setup(test_bad_values, setup_env),
        cmocka_unit_test_setup(test_refused_combinations, setup_env),
        cmocka_unit_test_setup(test_small_errbuf, setup_env),
        cmocka_unit_test_setup(test_error_quotes_no_control_characters, setup_env),
        cmocka_unit_test_setup(test_help_text_lists_every_option, setup_env),
        cmocka_unit_test_setup(test_checksum_option, setup_env),
        cmocka_unit_test_setup(test_sse_c_options, setup_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
