/* main.c — the pailfs command.
 *
 * pailfs mounts an S3 bucket as a directory.  This stage of the program has
 * the S3 client underneath but not yet the FUSE mount: `pailfs --version`
 * and `pailfs --help` work, and `pailfs BUCKET MOUNTPOINT` checks that the
 * bucket can be reached with the credentials found, then says plainly that
 * mounting is not available in this build. */
#include "s3/s3.h"
#include "util/util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pailfs [options] BUCKET[:/PREFIX] MOUNTPOINT\n"
            "\n"
            "Mount an S3 bucket (AWS S3 or any S3-compatible store) as a directory.\n"
            "\n"
            "options:\n"
            "  -h, --help            print this help and exit\n"
            "  -V, --version         print the version and exit\n"
            "  -f                    stay in the foreground\n"
            "  -d                    debug log (implies -f)\n"
            "  -o endpoint=URL       S3 endpoint (default: AWS, by region)\n"
            "  -o region=NAME        signing region (default: AWS_REGION, profile, us-east-1;\n"
            "                        corrected from the bucket's own region)\n"
            "  -o path_style         path-style addressing (automatic for IPs, localhost)\n"
            "  -o profile=NAME       profile in ~/.aws/credentials and ~/.aws/config\n"
            "  -o passwd_file=PATH   s3fs-style ACCESS_KEY:SECRET_KEY file (mode 600)\n"
            "  -o public             send unsigned requests (public buckets)\n"
            "  -o retries=N          retries after the first attempt (default 4)\n"
            "  -o connect_timeout=S  connect timeout in seconds (default 10)\n"
            "  -o log_level=LEVEL    error, warn, info or debug (default warn)\n"
            "\n"
            "Credentials, in this order: passwd_file, AWS_ACCESS_KEY_ID and\n"
            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), the shared files with\n"
            "AWS_PROFILE or -o profile=, web identity (AWS_WEB_IDENTITY_TOKEN_FILE and\n"
            "AWS_ROLE_ARN), container credentials, instance metadata (IMDSv2).\n"
            "See pailfs(1).\n");
}

struct cli {
    struct s3_config s3;
    char *bucket;
    const char *mountpoint;
    char *opts_copy;
};

static int parse_o(struct cli *cli, const char *arg)
{
    free(cli->opts_copy);
    cli->opts_copy = strdup(arg);
    if (!cli->opts_copy)
        return ENOMEM;
    char *save = NULL;
    for (char *o = strtok_r(cli->opts_copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(o, '=');
        const char *v = eq ? eq + 1 : NULL;
        if (eq)
            *eq = '\0';
        if (strcmp(o, "endpoint") == 0 && v)
            cli->s3.endpoint = v;
        else if (strcmp(o, "region") == 0 && v)
            cli->s3.region = v;
        else if (strcmp(o, "path_style") == 0 && !v)
            cli->s3.addressing = S3_ADDR_PATH;
        else if (strcmp(o, "profile") == 0 && v)
            cli->s3.profile = v;
        else if (strcmp(o, "passwd_file") == 0 && v)
            cli->s3.passwd_file = v;
        else if (strcmp(o, "public") == 0 && !v)
            cli->s3.public_bucket = true;
        else if (strcmp(o, "retries") == 0 && v)
            cli->s3.max_attempts = (unsigned)strtoul(v, NULL, 10) + 1;
        else if (strcmp(o, "connect_timeout") == 0 && v)
            cli->s3.http.connect_timeout_ms = strtol(v, NULL, 10) * 1000;
        else if (strcmp(o, "log_level") == 0 && v) {
            enum log_level lvl;
            if (log_level_parse(v, &lvl)) {
                fprintf(stderr, "pailfs: log_level must be error, warn, info or debug\n");
                return EINVAL;
            }
            log_set_level(lvl);
        } else {
            fprintf(stderr, "pailfs: unknown option -o %s%s%s\n", o, v ? "=" : "", v ? v : "");
            return EINVAL;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cli cli = {0};
    int c;
    while ((c = getopt_long(argc, argv, "hVfdo:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("pailfs %s\n", PACKAGE_VERSION);
            return 0;
        case 'f':
            break;
        case 'd':
            log_set_level(LOG_LVL_DEBUG);
            break;
        case 'o':
            if (parse_o(&cli, optarg))
                return 1;
            break;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (argc - optind != 2) {
        usage(stderr);
        return 1;
    }
    cli.bucket = strdup(argv[optind]);
    cli.mountpoint = argv[optind + 1];
    if (!cli.bucket)
        return 1;
    char *colon = strchr(cli.bucket, ':');
    if (colon)
        *colon = '\0';
    cli.s3.bucket = cli.bucket;

    struct s3_client *s3;
    struct s3_error err;
    char msg[512];
    int rc = s3_client_new(&cli.s3, &s3, &err);
    if (rc) {
        fprintf(stderr, "pailfs: %s\n", s3_error_describe(rc, &err, msg, sizeof(msg)));
        return 1;
    }
    rc = s3_head_bucket(s3, &err);
    if (rc) {
        const char *src, *ak;
        s3_client_credentials_info(s3, &src, &ak);
        if (rc == ENOENT)
            fprintf(stderr, "pailfs: bucket %s does not exist\n", cli.bucket);
        else if (rc == EACCES)
            fprintf(stderr, "pailfs: access to bucket %s refused for access key %s (from %s): %s\n",
                    cli.bucket, ak, src, s3_error_describe(rc, &err, msg, sizeof(msg)));
        else
            fprintf(stderr, "pailfs: cannot reach bucket %s: %s\n", cli.bucket,
                    s3_error_describe(rc, &err, msg, sizeof(msg)));
        s3_client_free(s3);
        return 1;
    }
    fprintf(stderr,
            "pailfs: bucket %s is reachable (region %s), but this build cannot mount it "
            "yet: the FUSE layer is not built\n",
            cli.bucket, s3_client_region(s3));
    s3_client_free(s3);
    free(cli.bucket);
    free(cli.opts_copy);
    return 2;
}
