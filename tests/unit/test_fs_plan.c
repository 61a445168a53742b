/* test_fs_plan.c — the part-size schedule of streamed files and the part
 * plan of edited objects (src/fs/plan.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_private.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define TiB (1ULL << 40)

static void test_schedule_default_reaches_5tib(void **state)
{
    (void)state;
    uint64_t first = 8 * MiB, total = 0, prev = 0;
    for (unsigned n = 1; n <= FS_MAX_PARTS; n++) {
        uint64_t s = fs_part_size(first, n);
        assert_true(s >= prev);            /* never shrinks */
        assert_true(s <= FS_MAX_PART);
        assert_true(s >= FS_MIN_PART);
        if (n <= 1000)
            assert_int_equal(s, first);   /* small files keep small parts */
        total += s;
        prev = s;
    }
    assert_true(total >= 5 * TiB);
    assert_int_equal(total, fs_stream_max_size(first));
    assert_int_equal(fs_part_size(first, 1001), 16 * MiB);
    assert_int_equal(fs_part_size(first, 10000), 4 * GiB);
    /* AWS's smallest part still reaches 4.99 TiB; 6 MiB passes 5 TiB */
    assert_true(fs_stream_max_size(6 * MiB) >= 5 * TiB);
}

static void test_schedule_caps_at_5gib(void **state)
{
    (void)state;
    assert_int_equal(fs_part_size(64 * MiB, 10000), FS_MAX_PART);
    assert_int_equal(fs_part_size(FS_MAX_PART, 1), FS_MAX_PART);
    assert_int_equal(fs_part_size(1, 1), 1);
    assert_int_equal(fs_part_size(0, 1), 1);
    assert_int_equal(fs_part_size(4096, 3500), 4096 * 8);
    /* a tiny first part (the rig's server has no minimum) still lets a
     * file of more than 10,000 first parts fit */
    assert_true(fs_stream_max_size(4096) > 10000ULL * 4096 * 50);
}

/* Every plan: covers [0,size) in order, each part but the last >= min,
 * copy parts only inside copy runs, local parts <= cap. */
static void check_plan(const struct fs_run *runs, size_t n_runs, const struct fs_part_plan *p,
                       size_t n, uint64_t min_part, uint64_t cap)
{
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(p[i].off, off);
        assert_true(p[i].len > 0);
        if (i + 1 < n)
            assert_true(p[i].len >= min_part);
        if (p[i].copy) {
            assert_true(p[i].len <= FS_MAX_PART);
            bool inside = false;
            for (size_t r = 0; r < n_runs; r++)
                if (runs[r].copy && runs[r].off <= p[i].off &&
                    p[i].off + p[i].len <= runs[r].off + runs[r].len)
                    inside = true;
            assert_true(inside);
        } else {
            assert_true(p[i].len <= (cap < 2 * min_part ? 2 * min_part : cap));
        }
        off += p[i].len;
    }
    uint64_t size = n_runs ? runs[n_runs - 1].off + runs[n_runs - 1].len : 0;
    assert_int_equal(off, size);
}

static void test_plan_small_edit_in_middle(void **state)
{
    (void)state;
    /* 40 MiB object, 1 MiB block 20 changed */
    struct fs_run runs[] = {{0, 20 * MiB, true}, {20 * MiB, MiB, false},
                            {21 * MiB, 19 * MiB, true}};
    struct fs_part_plan *p;
    size_t n;
    assert_int_equal(fs_plan_parts(runs, 3, 5 * MiB, 16 * MiB, &p, &n), 0);
    check_plan(runs, 3, p, n, 5 * MiB, 16 * MiB);
    assert_int_equal(n, 3);
    assert_true(p[0].copy);
    assert_int_equal(p[0].len, 20 * MiB);
    assert_false(p[1].copy); /* the changed MiB borrows 4 MiB of the copy run */
    assert_int_equal(p[1].len, 5 * MiB);
    assert_true(p[2].copy);
    assert_int_equal(p[2].off, 25 * MiB);
    uint64_t copied = 0;
    for (size_t i = 0; i < n; i++)
        copied += p[i].copy ? p[i].len : 0;
    assert_int_equal(copied, 35 * MiB);
    free(p);
}

static void test_plan_append_and_short_copy(void **state)
{
    (void)state;
    struct fs_part_plan *p;
    size_t n;
    /* append: 40 MiB kept, 3 bytes added → copy + a tiny last part */
    struct fs_run a[] = {{0, 40 * MiB, true}, {40 * MiB, 3, false}};
    assert_int_equal(fs_plan_parts(a, 2, 5 * MiB, 16 * MiB, &p, &n), 0);
    check_plan(a, 2, p, n, 5 * MiB, 16 * MiB);
    assert_int_equal(n, 2);
    assert_true(p[0].copy);
    assert_false(p[1].copy);
    assert_int_equal(p[1].len, 3);
    free(p);
    /* a copy run shorter than a part becomes local */
    struct fs_run b[] = {{0, MiB, false}, {MiB, 3 * MiB, true}, {4 * MiB, MiB, false}};
    assert_int_equal(fs_plan_parts(b, 3, 5 * MiB, 16 * MiB, &p, &n), 0);
    check_plan(b, 3, p, n, 5 * MiB, 16 * MiB);
    assert_int_equal(n, 1);
    assert_false(p[0].copy);
    free(p);
    /* local run too short, and the copy run after it would be left too
     * short to copy: all of it goes local */
    struct fs_run c[] = {{0, 2 * MiB, false}, {2 * MiB, 7 * MiB, true}};
    assert_int_equal(fs_plan_parts(c, 2, 5 * MiB, 16 * MiB, &p, &n), 0);
    check_plan(c, 2, p, n, 5 * MiB, 16 * MiB);
    assert_int_equal(n, 1);
    assert_int_equal(p[0].len, 9 * MiB);
    free(p);
    /* truncated down: one copy run only */
    struct fs_run d[] = {{0, 20 * MiB, true}};
    assert_int_equal(fs_plan_parts(d, 1, 5 * MiB, 16 * MiB, &p, &n), 0);
    assert_int_equal(n, 1);
    assert_true(p[0].copy);
    free(p);
    /* nothing at all */
    assert_int_equal(fs_plan_parts(NULL, 0, 5 * MiB, 16 * MiB, &p, &n), 0);
    assert_int_equal(n, 0);
    free(p);
}

static void test_plan_large_runs_split(void **state)
{
    (void)state;
    struct fs_part_plan *p;
    size_t n;
    /* 12 GiB kept, then 100 MiB local: copies split under 5 GiB, locals
     * balanced under the cap */
    struct fs_run a[] = {{0, 12 * GiB, true}, {12 * GiB, 100 * MiB, false}};
    assert_int_equal(fs_plan_parts(a, 2, 5 * MiB, 16 * MiB, &p, &n), 0);
    check_plan(a, 2, p, n, 5 * MiB, 16 * MiB);
    assert_int_equal(n, 3 + 7);
    free(p);
    /* runs that are not contiguous are refused */
    struct fs_run bad[] = {{0, MiB, false}, {2 * MiB, MiB, false}};
    assert_int_equal(fs_plan_parts(bad, 2, 5 * MiB, 16 * MiB, &p, &n), EINVAL);
    /* more than 10,000 parts */
    struct fs_run big[] = {{0, 20000 * 16 * MiB, false}};
    assert_int_equal(fs_plan_parts(big, 1, 5 * MiB, 16 * MiB, &p, &n), E2BIG);
}

/* Random run layouts: the plan's invariants always hold. */
static void test_plan_random_layouts(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (int iter = 0; iter < 2000; iter++) {
        struct fs_run runs[12];
        size_t nr = (size_t)(rand_r(&seed) % 12) + 1;
        uint64_t off = 0;
        for (size_t i = 0; i < nr; i++) {
            uint64_t len = (uint64_t)(rand_r(&seed) % 40) * MiB / 2 + (uint64_t)(rand_r(&seed) % 3);
            runs[i] = (struct fs_run){off, len, rand_r(&seed) % 2 == 0};
            off += len;
        }
        struct fs_part_plan *p;
        size_t n;
        assert_int_equal(fs_plan_parts(runs, nr, 5 * MiB, 8 * MiB, &p, &n), 0);
        check_plan(runs, nr, p, n, 5 * MiB, 8 * MiB);
        free(p);
    }
}

/* Runs that no correct caller makes (the staged-mode bug of issue 17
 * item 2: a block map longer than the file gave runs whose lengths wrapped
 * around 2^64) are refused, and a huge run is refused without its parts
 * ever being made.  Before: the wrapped run below planned 0 local parts
 * (its bytes silently dropped) and returned 0. */
static void test_plan_refuses_wrapped_and_huge_runs(void **state)
{
    (void)state;
    struct fs_part_plan *p = NULL;
    size_t n = 0;
    /* 10 MiB kept, then a "local run" of 2^64 - 1.5 MiB */
    struct fs_run wrapped[] = {{0, 10 * MiB, true},
                               {10 * MiB, UINT64_MAX - 3 * MiB / 2 + 1, false}};
    assert_int_equal(fs_plan_parts(wrapped, 2, 5 * MiB, 16 * MiB, &p, &n), EINVAL);
    /* a single run as long as can be: far more than 10,000 parts */
    struct fs_run huge[] = {{0, UINT64_MAX, false}};
    assert_int_equal(fs_plan_parts(huge, 1, 5 * MiB, 16 * MiB, &p, &n), E2BIG);
    struct fs_run huge_copy[] = {{0, UINT64_MAX, true}};
    assert_int_equal(fs_plan_parts(huge_copy, 1, 5 * MiB, 16 * MiB, &p, &n), E2BIG);
    /* 16 TiB of local bytes: 10^6 parts of 16 MiB, refused */
    struct fs_run far[] = {{0, 16 * TiB, false}};
    assert_int_equal(fs_plan_parts(far, 1, 5 * MiB, 16 * MiB, &p, &n), E2BIG);
    /* runs must start at 0 */
    struct fs_run late[] = {{MiB, MiB, false}};
    assert_int_equal(fs_plan_parts(late, 1, 5 * MiB, 16 * MiB, &p, &n), EINVAL);
    /* 5 TiB in 10,000 copy parts is still a plan, split exactly */
    struct fs_run max[] = {{0, 5 * TiB - 7, true}};
    assert_int_equal(fs_plan_parts(max, 1, 5 * MiB, 16 * MiB, &p, &n), 0);
    check_plan(max, 1, p, n, 5 * MiB, 16 * MiB);
    assert_int_equal(n, 1024);
    free(p);
}

/* The block map: states by block, runs merged, memory by edits only. */
static void test_blkmap_states_and_runs(void **state)
{
    (void)state;
    struct fs_blkmap m = {0};
    uint64_t end;
    /* an old object of 10 blocks, the file 12 blocks long */
    assert_int_equal(fs_blkmap_set(&m, 0, 10, FS_BLK_ABSENT), 0);
    assert_int_equal(fs_blkmap_resize(&m, 12), 0);
    assert_int_equal(m.n_blk, 12);
    assert_int_equal(m.n, 2);
    assert_int_equal(fs_blkmap_get(&m, 9, &end), FS_BLK_ABSENT);
    assert_int_equal(end, 10);
    assert_int_equal(fs_blkmap_get(&m, 10, &end), FS_BLK_DIRTY);
    assert_int_equal(end, 12);
    /* block 3 fetched, block 4 written: a run split in three, then four */
    assert_int_equal(fs_blkmap_set(&m, 3, 4, FS_BLK_CLEAN), 0);
    assert_int_equal(fs_blkmap_set(&m, 4, 5, FS_BLK_DIRTY), 0);
    assert_int_equal(m.n, 5);
    assert_int_equal(fs_blkmap_get(&m, 2, &end), FS_BLK_ABSENT);
    assert_int_equal(end, 3);
    assert_int_equal(fs_blkmap_get(&m, 3, &end), FS_BLK_CLEAN);
    assert_int_equal(end, 4);
    assert_int_equal(fs_blkmap_get(&m, 4, &end), FS_BLK_DIRTY);
    assert_int_equal(end, 5);
    assert_int_equal(fs_blkmap_get(&m, 5, &end), FS_BLK_ABSENT);
    assert_int_equal(end, 10);
    /* runs for a file of 11.5 blocks whose old object was 10 blocks */
    struct fs_run *r;
    size_t nr;
    assert_int_equal(fs_blkmap_resize(&m, 12), 0);
    assert_int_equal(fs_blkmap_runs(&m, 11 * MiB + MiB / 2, MiB, 10, &r, &nr), 0);
    assert_int_equal(nr, 4);
    assert_true(r[0].copy); /* 0-3: ABSENT and CLEAN are the old bytes */
    assert_int_equal(r[0].off, 0);
    assert_int_equal(r[0].len, 4 * MiB);
    assert_false(r[1].copy); /* 4 */
    assert_int_equal(r[1].len, MiB);
    assert_true(r[2].copy); /* 5-9 */
    assert_int_equal(r[2].len, 5 * MiB);
    assert_false(r[3].copy); /* 10, 11 (half) */
    assert_int_equal(r[3].off, 10 * MiB);
    assert_int_equal(r[3].len, MiB + MiB / 2);
    free(r);
    /* a map that does not cover exactly the size is refused */
    assert_int_equal(fs_blkmap_runs(&m, 12 * MiB + 1, MiB, 10, &r, &nr), EINVAL);
    assert_int_equal(fs_blkmap_runs(&m, 11 * MiB, MiB, 10, &r, &nr), EINVAL);
    /* cut inside the dirty block 4, grown again: the new blocks are DIRTY */
    assert_int_equal(fs_blkmap_resize(&m, 5), 0);
    assert_int_equal(m.n, 3);
    assert_int_equal(fs_blkmap_resize(&m, 7), 0);
    assert_int_equal(m.n, 3);
    assert_int_equal(fs_blkmap_get(&m, 6, &end), FS_BLK_DIRTY);
    assert_int_equal(end, 7);
    assert_int_equal(fs_blkmap_get(&m, 4, &end), FS_BLK_DIRTY);
    assert_int_equal(end, 7);
    /* stored: everything CLEAN is one run */
    assert_int_equal(fs_blkmap_set(&m, 0, m.n_blk, FS_BLK_CLEAN), 0);
    assert_int_equal(m.n, 1);
    assert_int_equal(fs_blkmap_get(&m, 6, &end), FS_BLK_CLEAN);
    assert_int_equal(end, 7);
    fs_blkmap_free(&m);
    assert_int_equal(m.n_blk, 0);
}

/* A byte written 4 TiB out: a few runs, whatever the distance. */
static void test_blkmap_far_write_is_small(void **state)
{
    (void)state;
    struct fs_blkmap m = {0};
    uint64_t far = 4 * TiB / MiB; /* block of the byte */
    assert_int_equal(fs_blkmap_set(&m, 0, 1, FS_BLK_ABSENT), 0);
    assert_int_equal(fs_blkmap_set(&m, far, far + 1, FS_BLK_DIRTY), 0);
    assert_int_equal(m.n_blk, far + 1);
    assert_int_equal(m.n, 2); /* the hole is DIRTY like the byte: one run */
    assert_true(m.cap <= 16); /* util_grow's first size, not a run per block */
    uint64_t end;
    assert_int_equal(fs_blkmap_get(&m, far / 2, &end), FS_BLK_DIRTY);
    assert_int_equal(end, far + 1);
    struct fs_run *r;
    size_t nr;
    assert_int_equal(fs_blkmap_runs(&m, 4 * TiB + 1, MiB, 1, &r, &nr), 0);
    assert_int_equal(nr, 2);
    assert_int_equal(r[1].off + r[1].len, 4 * TiB + 1);
    free(r);
    fs_blkmap_free(&m);
}

/* Random edits against a byte-per-block model. */
static void test_blkmap_random_against_model(void **state)
{
    (void)state;
    unsigned seed = 777;
    for (int iter = 0; iter < 300; iter++) {
        struct fs_blkmap m = {0};
        enum fs_blk model[200];
        uint64_t n = 0;
        for (int op = 0; op < 40; op++) {
            uint64_t a = (uint64_t)(rand_r(&seed) % 200), b = (uint64_t)(rand_r(&seed) % 200);
            if (a > b) {
                uint64_t t = a;
                a = b;
                b = t;
            }
            if (rand_r(&seed) % 5 == 0) {
                assert_int_equal(fs_blkmap_resize(&m, b), 0);
                for (uint64_t i = n; i < b; i++)
                    model[i] = FS_BLK_DIRTY;
                n = b;
            } else {
                enum fs_blk st = (enum fs_blk)(rand_r(&seed) % 3);
                assert_int_equal(fs_blkmap_set(&m, a, b, st), 0);
                for (uint64_t i = n; i < a; i++)
                    model[i] = FS_BLK_DIRTY;
                for (uint64_t i = a; i < b; i++)
                    model[i] = st;
                if (b > n)
                    n = b;
            }
            assert_int_equal(m.n_blk, n);
            size_t runs = 0;
            for (uint64_t i = 0; i < n; i++) {
                uint64_t end;
                assert_int_equal(fs_blkmap_get(&m, i, &end), model[i]);
                uint64_t e = i;
                while (e < n && model[e] == model[i])
                    e++;
                assert_int_equal(end, e);
                runs += i == 0 || model[i] != model[i - 1];
            }
            assert_int_equal(m.n, runs); /* neighbours always merged */
        }
        fs_blkmap_free(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_default_reaches_5tib),
        cmocka_unit_test(test_schedule_caps_at_5gib),
        cmocka_unit_test(test_plan_small_edit_in_middle),
        cmocka_unit_test(test_plan_append_and_short_copy),
        cmocka_unit_test(test_plan_large_runs_split),
        cmocka_unit_test(test_plan_random_layouts),
        cmocka_unit_test(test_plan_refuses_wrapped_and_huge_runs),
        cmocka_unit_test(test_blkmap_states_and_runs),
        cmocka_unit_test(test_blkmap_far_write_is_small),
        cmocka_unit_test(test_blkmap_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
