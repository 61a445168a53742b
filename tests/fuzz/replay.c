/* replay.c — every fuzz target over its committed inputs, as a cmocka
 * program in `make check`: tests/fuzz/corpus/NAME (the seeds and what the
 * fuzzer kept, minimised) and tests/fuzz/regressions/NAME (each input that
 * once crashed or failed a check, kept after the fix).  Any compiler, any
 * build: with the sanitizer build a memory error in any input fails it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

int fuzz_xml(const uint8_t *data, size_t size);
int fuzz_sigv4(const uint8_t *data, size_t size);
int fuzz_creds(const uint8_t *data, size_t size);
int fuzz_options(const uint8_t *data, size_t size);
int fuzz_gzindex(const uint8_t *data, size_t size);
int fuzz_inflate(const uint8_t *data, size_t size);

struct target {
    const char *name;
    int (*run)(const uint8_t *, size_t);
};

static const struct target targets[] = {
    {"xml", fuzz_xml},         {"sigv4", fuzz_sigv4},     {"creds", fuzz_creds},
    {"options", fuzz_options}, {"gzindex", fuzz_gzindex}, {"inflate", fuzz_inflate},
};

/* Run t over every file in FUZZ_DIR/sub/NAME; the number run. */
static size_t replay_dir(const struct target *t, const char *sub)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%s/%s", FUZZ_DIR, sub, t->name);
    DIR *d = opendir(dir);
    if (!d) {
        assert_int_equal(errno, ENOENT); /* no regressions yet is fine */
        return 0;
    }
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *data;
        size_t len;
        int rc = util_read_file(path, 64u << 20, &data, &len);
        if (rc)
            fail_msg("%s: %s", path, strerror(rc));
        t->run((const uint8_t *)data, len);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

static void replay_target(void **state)
{
    const struct target *t = *state;
    size_t seeds = replay_dir(t, "corpus");
    size_t regressions = replay_dir(t, "regressions");
    print_message("%s: %zu corpus inputs, %zu regression inputs\n", t->name, seeds, regressions);
    assert_true(seeds > 0); /* a target without a corpus tests nothing here */
}

int main(void)
{
    struct CMUnitTest tests[sizeof(targets) / sizeof(targets[0])];
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
        tests[i] = (struct CMUnitTest){.name = targets[i].name,
                                       .test_func = replay_target,
                                       .initial_state = (void *)&targets[i]};
    return _cmocka_run_group_tests("fuzz replay", tests, sizeof(tests) / sizeof(tests[0]), NULL,
                                   NULL);
}
