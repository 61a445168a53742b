/* test_fs_budget.c — the one memory bound of a mount (src/fs/budget.c):
 * reserves no other use can take, SPARE leaving the reserve whole, NEED
 * using it, a waiter helped by another use's reclaimer, and the gauges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>

#include "fs/fs_private.h"

#define MiB (1ULL << 20)

/* Take 1 MiB at a time while the budget grants it: how many. */
static unsigned take_all(struct fs_budget *b, enum fs_use use, enum fs_take how)
{
    unsigned n = 0;
    while (n < 10000 && fs_budget_try(b, use, MiB, how))
        n++;
    return n;
}

static void test_reserves_rule(void **state)
{
    (void)state;
    uint64_t r[FS_USE_COUNT];
    fs_budget_reserves(256 * MiB, r);
    assert_int_equal(r[FS_USE_READ], 32 * MiB); /* capped at 32 MiB */
    assert_int_equal(r[FS_USE_WRITE], 32 * MiB);
    assert_int_equal(r[FS_USE_GZ], 0);
    assert_int_equal(r[FS_USE_LIST], 4 * MiB);
    fs_budget_reserves(16 * MiB, r);
    assert_int_equal(r[FS_USE_READ], 4 * MiB); /* a quarter */
    assert_int_equal(r[FS_USE_LIST], MiB / 2);
}

static void test_spare_need_and_reserves(void **state)
{
    (void)state;
    struct fs_budget *b;
    assert_int_equal(fs_budget_new(64 * MiB, &b), 0); /* reserves 16, 16, 0, 2 */
    assert_int_equal(metrics_get(&fs_metrics[FS_M_MEM_LIMIT]), 64 * MiB);
    /* read-ahead: 64 - (16 + 2) others' reserves - its own 16 */
    assert_int_equal(take_all(b, FS_USE_READ, FS_TAKE_SPARE), 30);
    assert_int_equal(fs_budget_spare(b, FS_USE_READ), 0);
    /* a read that waits may use the read reserve too */
    assert_int_equal(take_all(b, FS_USE_READ, FS_TAKE_NEED), 16);
    assert_int_equal(fs_budget_used(b, FS_USE_READ), 46 * MiB);
    assert_int_equal(metrics_get(&fs_metrics[FS_M_MEM_READ]), 46 * MiB);
    /* gzip views get nothing now: no reserve, no shared memory left */
    assert_false(fs_budget_try(b, FS_USE_GZ, MiB, FS_TAKE_SPARE));
    /* a writer still gets its whole reserve, and a listing its own */
    assert_int_equal(take_all(b, FS_USE_WRITE, FS_TAKE_NEED), 16);
    assert_int_equal(take_all(b, FS_USE_LIST, FS_TAKE_NEED), 2);
    /* and the sum is the limit exactly */
    uint64_t sum = 0;
    for (int u = 0; u < FS_USE_COUNT; u++)
        sum += fs_budget_used(b, (enum fs_use)u);
    assert_int_equal(sum, 64 * MiB);
    assert_int_equal(fs_budget_wait(b, FS_USE_WRITE, MiB, 50), ETIMEDOUT);
    /* memory given back is shared again */
    fs_budget_give(b, FS_USE_READ, 10 * MiB);
    assert_int_equal(take_all(b, FS_USE_GZ, FS_TAKE_SPARE), 10);
    assert_int_equal(metrics_get(&fs_metrics[FS_M_MEM_GZ]), 10 * MiB);
    fs_budget_free(b);
}

/* The read use gives back what it is asked for (as read.c's reclaimer
 * drops finished blocks). */
static struct fs_budget *reclaim_budget;
static uint64_t reclaimed;
static uint64_t give_back(void *arg, uint64_t want)
{
    (void)arg;
    fs_budget_give(reclaim_budget, FS_USE_READ, want);
    reclaimed += want;
    return want;
}

static void test_wait_asks_the_reclaimer(void **state)
{
    (void)state;
    struct fs_budget *b;
    assert_int_equal(fs_budget_new(64 * MiB, &b), 0);
    reclaim_budget = b;
    reclaimed = 0;
    fs_budget_set_reclaimer(b, FS_USE_READ, give_back, NULL);
    take_all(b, FS_USE_READ, FS_TAKE_NEED); /* 46 MiB: all but the others' reserves */
    assert_int_equal(take_all(b, FS_USE_WRITE, FS_TAKE_NEED), 16);
    assert_false(fs_budget_try(b, FS_USE_WRITE, 4 * MiB, FS_TAKE_NEED));
    /* past its reserve a writer waits; the readers' memory comes back */
    assert_int_equal(fs_budget_wait(b, FS_USE_WRITE, 4 * MiB, 1000), 0);
    assert_true(reclaimed >= 4 * MiB);
    assert_int_equal(fs_budget_used(b, FS_USE_WRITE), 20 * MiB);
    /* never more than asked of a use with nothing to give */
    fs_budget_force(b, FS_USE_GZ, MiB);
    assert_int_equal(fs_budget_used(b, FS_USE_GZ), MiB);
    fs_budget_give(b, FS_USE_GZ, 2 * MiB); /* more than held: clamps at 0 */
    assert_int_equal(fs_budget_used(b, FS_USE_GZ), 0);
    fs_budget_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserves_rule),
        cmocka_unit_test(test_spare_need_and_reserves),
        cmocka_unit_test(test_wait_asks_the_reclaimer),
    };
    return cmocka_run_group_tests_name("fs_budget", tests, NULL, NULL);
}
