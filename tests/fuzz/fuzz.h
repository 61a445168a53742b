/* fuzz.h — what every fuzz target in tests/fuzz shares.
 *
 * A target is one function over an input of any bytes.  Built with
 * --enable-fuzzing it is libFuzzer's LLVMFuzzerTestOneInput; in the replay
 * program (tests/fuzz/replay, part of `make check`) it is fuzz_NAME, run
 * over the committed corpus and the regression inputs.  A target checks
 * what must hold of the code under test (round trips, agreement with a
 * reference, the documented return codes), not only that it did not
 * crash: FUZZ_ASSERT aborts, which libFuzzer reports as a crash and saves
 * the input. */
#ifndef PAILFS_FUZZ_H
#define PAILFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#ifdef FUZZ_REPLAY
#define FUZZ_TARGET(name)                                                                          \
    int fuzz_##name(const uint8_t *data, size_t size);                                             \
    int fuzz_##name(const uint8_t *data, size_t size)
#else
#define FUZZ_TARGET(name)                                                                          \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                                  \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
#endif

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A cursor that splits an input into fields: bytes up to the next `sep`
 * (or the end), as a NUL-terminated copy the caller frees. */
struct fuzz_split {
    const uint8_t *p, *end;
};

static inline char *fuzz_field(struct fuzz_split *s, uint8_t sep)
{
    const uint8_t *q = s->p;
    while (q < s->end && *q != sep)
        q++;
    size_t n = (size_t)(q - s->p);
    char *out = malloc(n + 1);
    if (!out)
        abort();
    for (size_t i = 0; i < n; i++)
        out[i] = (char)s->p[i];
    out[n] = '\0';
    s->p = q < s->end ? q + 1 : q;
    return out;
}

/* Log lines (a damaged stream logs one per index) go nowhere: each input
 * would print them, and the fuzzer would spend its time writing. */
static inline void fuzz_quiet_logs(void)
{
    static int done;
    if (!done) {
        done = 1;
        log_use_file("/dev/null");
    }
}

static inline int fuzz_more(const struct fuzz_split *s)
{
    return s->p < s->end;
}

/* Compressed bytes from memory, as a gz_source_fn (src/gz/gz.h). */
struct fuzz_mem {
    const uint8_t *p;
    size_t n;
};

static inline int fuzz_mem_source(void *arg, uint64_t off, void *buf, size_t len, size_t *got)
{
    const struct fuzz_mem *m = arg;
    size_t k = off >= m->n ? 0 : (m->n - (size_t)off < len ? m->n - (size_t)off : len);
    memcpy(buf, m->p + off, k);
    *got = k;
    return 0;
}

#endif
