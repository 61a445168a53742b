/* fuzz_options.c — the command line parser (src/options.c).  The input is
 * split at NUL bytes into arguments after "pailfs".  Checked: 0, EINVAL or
 * ENOMEM only; an error is one line starting "pailfs: "; a mount has a
 * bucket, a prefix with no '/' at either end and a mount point; the same
 * line parsed twice gives the same answer; options_free is safe twice. */
#include "fuzz.h"

#include <errno.h>
#include <string.h>

#include "options.h"

#define MAX_ARGS 64

static int parse(int argc, char *const *argv, struct options *o, char *err, size_t n)
{
    char *copy[MAX_ARGS + 2];
    for (int i = 0; i < argc; i++)
        copy[i] = argv[i];
    copy[argc] = NULL;
    memset(err, 'x', n - 1);
    err[n - 1] = '\0';
    return options_parse(argc, copy, o, err, n);
}

FUZZ_TARGET(options)
{
    struct fuzz_split sp = {data, data + size};
    char *argv[MAX_ARGS + 2] = {"pailfs"};
    int argc = 1;
    while (fuzz_more(&sp) && argc <= MAX_ARGS)
        argv[argc++] = fuzz_field(&sp, 0);

    static char e1[512], e2[512];
    struct options o1, o2;
    int rc = parse(argc, argv, &o1, e1, sizeof(e1));
    FUZZ_ASSERT(rc == 0 || rc == EINVAL || rc == ENOMEM);
    if (rc) {
        FUZZ_ASSERT(strncmp(e1, "pailfs: ", 8) == 0);
        FUZZ_ASSERT(!strchr(e1, '\n'));
    } else if (o1.action == OPTIONS_MOUNT) {
        FUZZ_ASSERT(o1.bucket && *o1.bucket && o1.mountpoint && o1.prefix);
        size_t pl = strlen(o1.prefix);
        FUZZ_ASSERT(pl == 0 || (o1.prefix[0] != '/' && o1.prefix[pl - 1] != '/'));
    }
    int rc2 = parse(argc, argv, &o2, e2, sizeof(e2));
    FUZZ_ASSERT(rc2 == rc);
    if (rc)
        FUZZ_ASSERT(strcmp(e1, e2) == 0);
    else
        FUZZ_ASSERT(o1.action == o2.action);
    options_free(&o1);
    options_free(&o1);
    options_free(&o2);
    for (int i = 1; i < argc; i++)
        free(argv[i]);
    return 0;
}
