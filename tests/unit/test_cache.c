/* test_cache.c — the on-disk block cache (src/cache): round trips, misses,
 * the file format (blocks in slots of sparse files, 64 to a file), the
 * size bound and LRU eviction (holes punched), LRU order across a reopen
 * (use times in the records), damaged, torn and truncated blocks, a
 * writer killed mid-block, the directory lock, limit 0, EFBIG, files of
 * older formats, and many threads at once.
 *
 * Every test works in its own mkdtemp directory, removed afterwards. */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"
#include "util/util.h"

#define HDR 4096               /* bytes of record in front of each block's data */
#define SLOT (HDR + (1 << 20)) /* a block's place in its file */
#define PER_FILE 64            /* blocks of one file */
#define PAGE 4096              /* bytes covered by one CRC32C */
#define DLEN 1000              /* data bytes of the small blocks used below */
#define ENTRY (DLEN + HDR)

struct fixture {
    char dir[64];
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/pailfs-cache-test-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Data of block `no` of object `id`: recognisable, different per block. */
static void fill(unsigned char *buf, size_t len, const char *id, uint64_t no)
{
    uint32_t x = (uint32_t)(no * 2654435761u) ^ (uint32_t)strlen(id) ^ (uint32_t)id[0] << 8;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
}

static int put_block(struct cache *c, const char *id, uint64_t no, size_t len)
{
    unsigned char *d = malloc(len ? len : 1);
    assert_non_null(d);
    fill(d, len, id, no);
    int rc = cache_store(c, id, no, d, len, 0);
    free(d);
    return rc;
}

/* 0 when block (id, no) is cached with the right bytes; else the errno
 * of cache_get (fails the test when it returns wrong bytes). */
static int get_block(struct cache *c, const char *id, uint64_t no, size_t want_len)
{
    size_t cap = want_len + 4096, len = 12345;
    unsigned char *got = malloc(cap), *want = malloc(want_len ? want_len : 1);
    assert_non_null(got);
    assert_non_null(want);
    int rc = cache_get(c, id, no, got, cap, &len);
    if (rc == 0) {
        assert_int_equal(len, want_len);
        fill(want, want_len, id, no);
        assert_memory_equal(got, want, want_len);
    }
    free(got);
    free(want);
    return rc;
}

/* The names of the regular files in dir, other than ".lock", sorted, one
 * string joined by spaces; also how many and their total size. */
static int list_files(const char *dir, char *out, size_t cap, uint64_t *total)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[256];
    int n = 0;
    uint64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode) ||
            strcmp(de->d_name, ".lock") == 0)
            continue;
        assert_true(n < 256);
        names[n++] = strdup(de->d_name);
        sum += (uint64_t)st.st_size;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    if (out) {
        *out = 0;
        for (int i = 0; i < n; i++) {
            if (i)
                strncat(out, " ", cap - strlen(out) - 1);
            strncat(out, names[i], cap - strlen(out) - 1);
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    if (total)
        *total = sum;
    return n;
}

/* Where block `no` of object `id` lives: its file and the offset of its
 * slot (the record; the data follows it). */
struct loc {
    char path[256];
    off_t off;
};

static void blk_loc(const char *dir, const char *id, uint64_t no, struct loc *l)
{
    char hex[65];
    util_sha256_hex(id, strlen(id), hex);
    snprintf(l->path, sizeof(l->path), "%s/%.32s-%llu.blk3", dir, hex,
             (unsigned long long)(no / PER_FILE));
    l->off = (off_t)((no % PER_FILE) * SLOT);
}

/* Whether the slot at l holds a record (the magic: presence on disk,
 * without a read through the cache, which would change the LRU order). */
static bool present(const struct loc *l)
{
    char magic[8] = "";
    int fd = open(l->path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = pread(fd, magic, 8, l->off);
    close(fd);
    return n == 8 && memcmp(magic, "PAILBLK3", 8) == 0;
}

static uint32_t le32(const unsigned char *p);

/* The blocks on disk, whatever the index says: every slot of every
 * "*.blk3" file whose record is whole (magic and record CRC right); how
 * many, and their bytes (record and data) in *total.  Also the disk space
 * the files take in *alloc (st_blocks), when asked. */
static int disk_blocks(const char *dir, uint64_t *total, uint64_t *alloc)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    uint64_t sum = 0, space = 0;
    unsigned char *rec = malloc(HDR);
    assert_non_null(rec);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 5, ".blk3") != 0)
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY);
        assert_true(fd >= 0);
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        space += (uint64_t)st.st_blocks * 512;
        for (off_t off = 0; off < st.st_size; off += SLOT) {
            if (pread(fd, rec, HDR, off) != HDR || memcmp(rec, "PAILBLK3", 8) != 0 ||
                cache_crc32c(rec + 28, HDR - 28, 0) != le32(rec + 24))
                continue;
            n++;
            sum += HDR + le32(rec + 36);
        }
        close(fd);
    }
    closedir(d);
    free(rec);
    if (total)
        *total = sum;
    if (alloc)
        *alloc = space;
    return n;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* File mtimes keep the LRU order across a reopen; a coarse clock (one
 * tick per jiffy) can give two quick uses the same time.  Space them. */
static void tick(void)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* ---- round trips ----------------------------------------------------- */

/* The block checksum is ISA-L's crc32_iscsi in either build: a known
 * value, a bitwise reference over odd lengths and alignments, and
 * continuation across a split. */
static uint32_t crc32c_bitwise(const unsigned char *p, size_t n, uint32_t crc)
{
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
    }
    return crc;
}

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(cache_crc32c("123456789", 9, 0), 0x58e3fa20u);
    assert_int_equal(cache_crc32c("123456789", 9, 0xffffffffu), 0x1cf96d7cu);
    unsigned char buf[5000];
    unsigned seed = 9;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)rand_r(&seed);
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; n < 300; n += 7)
            assert_int_equal(cache_crc32c(buf + off, n, 0x1234u),
                             crc32c_bitwise(buf + off, n, 0x1234u));
    uint32_t whole = cache_crc32c(buf, sizeof(buf), 0);
    assert_int_equal(cache_crc32c(buf + 1001, sizeof(buf) - 1001, cache_crc32c(buf, 1001, 0)),
                     whole);
    assert_int_equal(whole, crc32c_bitwise(buf, sizeof(buf), 0));
}

static void test_put_get_round_trip(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    pid_t owner = -1;
    assert_int_equal(cache_open(f->dir, 16 << 20, &c, &owner), 0);
    assert_non_null(c);
    assert_int_equal(cache_limit(c), 16 << 20);
    assert_int_equal(cache_size(c), 0);

    assert_int_equal(put_block(c, "obj-a", 0, DLEN), 0);
    assert_int_equal(get_block(c, "obj-a", 0, DLEN), 0);
    assert_int_equal(cache_size(c), ENTRY);
    /* a whole 1 MiB block, a short one and an empty one */
    assert_int_equal(put_block(c, "obj-a", 1, 1 << 20), 0);
    assert_int_equal(put_block(c, "obj-a", 2, 7), 0);
    assert_int_equal(put_block(c, "obj-a", 3, 0), 0);
    assert_int_equal(get_block(c, "obj-a", 1, 1 << 20), 0);
    assert_int_equal(get_block(c, "obj-a", 2, 7), 0);
    assert_int_equal(get_block(c, "obj-a", 3, 0), 0);
    assert_int_equal(cache_size(c), ENTRY + (1 << 20) + HDR + 7 + HDR + 0 + HDR);
    /* a get again gives the same bytes */
    assert_int_equal(get_block(c, "obj-a", 1, 1 << 20), 0);
    uint64_t total = 0;
    assert_int_equal(disk_blocks(f->dir, &total, NULL), 4);
    assert_int_equal(total, cache_size(c));
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 1); /* one file for the four */
    cache_close(c);
}

static void flip_byte(const char *path, off_t at);

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The format on disk (cache.c's opening comment): "<32 hex>-<n>.blk3",
 * 64 blocks to a file, block k of a file at k * (4 KiB + 1 MiB), a 4 KiB
 * record before its data. */
static void test_file_format(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const char *id = "endpoint\nbucket\nkey\n\"etag\"";
    const size_t len = 2 * PAGE + 100; /* two whole pages and a short one */
    assert_int_equal(cache_open(f->dir, 4 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, id, 69, len), 0); /* file 1, slot 5 */
    char names[512];
    assert_int_equal(list_files(f->dir, names, sizeof(names), NULL), 1);
    assert_int_equal(strlen(names), 32 + strlen("-1.blk3"));
    for (int i = 0; i < 32; i++)
        assert_non_null(strchr("0123456789abcdef", names[i]));
    assert_string_equal(names + 32, "-1.blk3");
    struct loc l;
    blk_loc(f->dir, id, 69, &l);
    assert_int_equal(l.off, 5 * SLOT);

    unsigned char raw[HDR + 3 * PAGE], want[3 * PAGE];
    int fd = open(l.path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 5 * SLOT + HDR + len);    /* slots 0-4 are holes */
    assert_true((uint64_t)st.st_blocks * 512 < 64 * 1024); /* sparse */
    assert_int_equal(pread(fd, raw, sizeof(raw), l.off), HDR + len);
    close(fd);
    fill(want, len, id, 69);
    assert_memory_equal(raw, "PAILBLK3", 8);
    assert_true(raw[8] | raw[9] | raw[10] | raw[11]); /* a use time, seconds */
    assert_int_equal(le32(raw + 24), crc32c_bitwise(raw + 28, HDR - 28, 0));
    assert_int_equal(le32(raw + 28), 69);
    assert_int_equal(le32(raw + 32), 0);
    assert_int_equal(le32(raw + 36), len);
    assert_int_equal(le32(raw + 40), PAGE);
    assert_int_equal(le32(raw + 44), 3);
    assert_int_equal(le32(raw + 48), crc32c_bitwise(want, PAGE, 0));
    assert_int_equal(le32(raw + 52), crc32c_bitwise(want + PAGE, PAGE, 0));
    assert_int_equal(le32(raw + 56), crc32c_bitwise(want + 2 * PAGE, 100, 0));
    for (size_t i = 60; i < HDR; i++)
        assert_int_equal(raw[i], 0);
    assert_memory_equal(raw + HDR, want, len);
    /* blocks 0..63 share file 0, 64.. file 1 */
    assert_int_equal(put_block(c, id, 63, 10), 0);
    assert_int_equal(put_block(c, id, 64, 10), 0);
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 2);
    blk_loc(f->dir, id, 63, &l);
    assert_true(present(&l));
    assert_string_equal(l.path + strlen(l.path) - 7, "-0.blk3");
    cache_close(c);
}

/* Blocks of formats 1 ("*.blk", one CRC per block) and 2 ("*.blk2", one
 * file per block, written as "*.tmp.*" first) are removed at open, never
 * read as blocks of this format, even one with a valid format 2 header. */
static void test_old_format_removed_at_open(void **state)
{
    struct fixture *f = *state;
    const char *olds[] = {"0123456789abcdef0123456789abcdef-0.blk",
                          "0123456789abcdef0123456789abcdef-0.blk2",
                          "0123456789abcdef0123456789abcdef-1.blk2.tmp.1f2e3d"};
    char path[256];
    for (size_t i = 0; i < sizeof(olds) / sizeof(*olds); i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, olds[i]);
        FILE *fp = fopen(path, "w");
        assert_non_null(fp);
        fputs(i ? "PAILBLK2 and some bytes" : "PAILBLK1 and some bytes", fp);
        fclose(fp);
    }
    /* a whole block of format 2, named as the block it would be */
    char hex[65];
    util_sha256_hex("obj", 3, hex);
    snprintf(path, sizeof(path), "%s/%.32s-0.blk2", f->dir, hex);
    unsigned char blk[HDR + DLEN] = {0};
    memcpy(blk, "PAILBLK2", 8);
    blk[12] = DLEN & 0xff;
    blk[13] = DLEN >> 8;
    blk[17] = PAGE >> 8;
    blk[20] = 1;
    fill(blk + HDR, DLEN, "obj", 0);
    uint32_t crc = crc32c_bitwise(blk + HDR, DLEN, 0);
    memcpy(blk + 24, &crc, 4); /* little-endian machines only: a test */
    crc = crc32c_bitwise(blk + 12, HDR - 12, 0);
    memcpy(blk + 8, &crc, 4);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(blk, 1, sizeof(blk), fp), sizeof(blk));
    fclose(fp);

    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 0);
    assert_int_equal(cache_size(c), 0);
    assert_int_equal(get_block(c, "obj", 0, DLEN), ENOENT);
    cache_close(c);
}

/* cache_read returns any range of a block, checking only the pages it
 * covers: every alignment of start and end against the pages, ranges
 * clipped at the block's end, and at or past it. */
static void test_read_ranges(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t len = 5 * PAGE + 777;
    unsigned char *want = malloc(len), *got = malloc(len + 2 * PAGE);
    assert_non_null(want);
    assert_non_null(got);
    fill(want, len, "obj", 3);
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, "obj", 3, len), 0);
    const uint64_t offs[] = {
        0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, 4 * PAGE + 5, 5 * PAGE, 5 * PAGE + 776};
    const size_t lens[] = {1, 100, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE + 17, len};
    for (size_t i = 0; i < sizeof(offs) / sizeof(*offs); i++)
        for (size_t j = 0; j < sizeof(lens) / sizeof(*lens); j++) {
            size_t n = 999999;
            memset(got, 0xee, len + 2 * PAGE);
            assert_int_equal(cache_read(c, "obj", 3, offs[i], lens[j], got, &n), 0);
            size_t expect = len - offs[i] < lens[j] ? len - offs[i] : lens[j];
            assert_int_equal(n, expect);
            assert_memory_equal(got, want + offs[i], expect);
            assert_int_equal(got[expect], 0xee); /* nothing written past it */
        }
    size_t n = 1;
    assert_int_equal(cache_read(c, "obj", 3, len, 10, got, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(cache_read(c, "obj", 3, len + 5000, 10, got, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(cache_read(c, "obj", 4, 0, 10, got, &n), ENOENT);
    cache_close(c);
    free(want);
    free(got);
}

/* A damaged page is found by any read that covers it (a whole get, or a
 * range touching one byte of it); the block is then dropped.  A range
 * that does not cover it reads right. */
static void test_damaged_page_found_by_range_read(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t len = 1 << 20;
    unsigned char *want = malloc(len), *got = malloc(len);
    assert_non_null(want);
    assert_non_null(got);
    fill(want, len, "obj", 0);
    assert_int_equal(cache_open(f->dir, 4 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, "obj", 0, len), 0);
    struct loc l;
    blk_loc(f->dir, "obj", 0, &l);
    flip_byte(l.path, l.off + HDR + 100 * PAGE + 7); /* page 100 */
    size_t n = 0;
    assert_int_equal(cache_read(c, "obj", 0, 99 * PAGE, PAGE, got, &n), 0);
    assert_int_equal(n, PAGE);
    assert_memory_equal(got, want + 99 * PAGE, PAGE);
    assert_int_equal(cache_read(c, "obj", 0, 101 * PAGE + 3, 10, got, &n), 0);
    assert_memory_equal(got, want + 101 * PAGE + 3, 10);
    assert_true(present(&l));
    /* one byte of the damaged page, not the damaged byte itself */
    assert_int_equal(cache_read(c, "obj", 0, 100 * PAGE + 4000, 1, got, &n), ENOENT);
    assert_false(present(&l));
    assert_int_equal(cache_size(c), 0);
    assert_int_equal(cache_read(c, "obj", 0, 0, PAGE, got, &n), ENOENT);
    /* a damaged page CRC in the record is found too (the record's CRC) */
    assert_int_equal(put_block(c, "obj", 0, len), 0);
    flip_byte(l.path, l.off + 48 + 4 * 200);
    assert_int_equal(cache_read(c, "obj", 0, 0, 1, got, &n), ENOENT);
    assert_false(present(&l));
    /* and by a whole get */
    assert_int_equal(put_block(c, "obj", 0, len), 0);
    flip_byte(l.path, l.off + HDR + len - 1);
    assert_int_equal(get_block(c, "obj", 0, len), ENOENT);
    assert_false(present(&l));
    cache_close(c);
    free(want);
    free(got);
}

struct empty_id_arg {
    struct cache *c;
    int rc;
};

static void *empty_id_thread(void *p)
{
    struct empty_id_arg *a = p;
    char buf[16];
    size_t len = 0;
    a->rc = cache_store(a->c, "", 0, "empty", 5, 0);
    if (!a->rc)
        a->rc = cache_get(a->c, "", 0, buf, sizeof(buf), &len);
    if (!a->rc && (len != 5 || memcmp(buf, "empty", 5) != 0))
        a->rc = EIO;
    return NULL;
}

static void test_miss_is_enoent(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(get_block(c, "obj-a", 0, DLEN), ENOENT);
    assert_int_equal(put_block(c, "obj-a", 0, DLEN), 0);
    assert_int_equal(get_block(c, "obj-a", 1, DLEN), ENOENT);  /* other block */
    assert_int_equal(get_block(c, "obj-b", 0, DLEN), ENOENT);  /* other object */
    assert_int_equal(get_block(c, "obj-a ", 0, DLEN), ENOENT); /* one byte more */
    assert_int_equal(get_block(c, "obj-", 0, DLEN), ENOENT);
    /* a new ETag is another identity: never the old blocks */
    assert_int_equal(put_block(c, "ep\nb\nkey\n\"v1\"", 0, DLEN), 0);
    assert_int_equal(get_block(c, "ep\nb\nkey\n\"v2\"", 0, DLEN), ENOENT);
    assert_int_equal(get_block(c, "ep\nb\nkey\n\"v1\"", 0, DLEN), 0);
    assert_int_equal(get_block(c, "obj-a", 0, DLEN), 0);
    /* a fresh thread's first name is of an empty identity: still hashed */
    pthread_t t;
    struct empty_id_arg arg = {c, -1};
    assert_int_equal(pthread_create(&t, NULL, empty_id_thread, &arg), 0);
    pthread_join(t, NULL);
    assert_int_equal(arg.rc, 0);
    cache_close(c);
}

/* cache.h: "Store a block (replacing a copy already there)". */
static void test_put_replaces(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(cache_store(c, "obj", 0, "old bytes", 9, 0), 0);
    assert_int_equal(cache_store(c, "obj", 0, "the new bytes", 13, 0), 0);
    char buf[64];
    size_t len = 0;
    assert_int_equal(cache_get(c, "obj", 0, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 13);
    assert_memory_equal(buf, "the new bytes", 13);
    assert_int_equal(cache_size(c), HDR + 13);
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 1);
    cache_close(c);
}

/* ---- the bound ------------------------------------------------------- */

static void test_bound_evicts_oldest_first(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const uint64_t limit = 4 * ENTRY + ENTRY / 2; /* room for 4 blocks */
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    for (uint64_t no = 0; no < 6; no++) {
        assert_int_equal(put_block(c, "obj", no, DLEN), 0);
        assert_true(cache_size(c) <= limit);
    }
    assert_int_equal(cache_size(c), 4 * ENTRY);
    uint64_t total = 0;
    assert_int_equal(disk_blocks(f->dir, &total, NULL), 4);
    assert_int_equal(total, 4 * ENTRY);
    /* 0 and 1 went first */
    assert_int_equal(get_block(c, "obj", 0, DLEN), ENOENT);
    assert_int_equal(get_block(c, "obj", 1, DLEN), ENOENT);
    /* a get makes 2 the most recent: 3 is evicted next, then 4 */
    assert_int_equal(get_block(c, "obj", 2, DLEN), 0);
    assert_int_equal(put_block(c, "obj", 6, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 3, DLEN), ENOENT);
    assert_int_equal(put_block(c, "obj", 7, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 4, DLEN), ENOENT);
    assert_int_equal(get_block(c, "obj", 2, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 5, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 6, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 7, DLEN), 0);
    assert_int_equal(cache_size(c), 4 * ENTRY);
    assert_int_equal(disk_blocks(f->dir, &total, NULL), 4);
    assert_int_equal(total, 4 * ENTRY);
    /* a big block evicts as many as it needs, oldest first: 4 2 5 6 7
     * is the order, and 3 blocks must go for 3 entries' worth */
    assert_int_equal(put_block(c, "big", 0, 3 * ENTRY - HDR), 0);
    assert_int_equal(cache_size(c), ENTRY + 3 * ENTRY);
    assert_int_equal(get_block(c, "big", 0, 3 * ENTRY - HDR), 0);
    assert_int_equal(get_block(c, "obj", 7, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 6, DLEN), ENOENT);
    assert_int_equal(disk_blocks(f->dir, &total, NULL), 2);
    assert_int_equal(total, cache_size(c));
    cache_close(c);
}

static void test_limit_zero_stores_nothing(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 0, &c, NULL), 0);
    assert_int_equal(cache_limit(c), 0);
    assert_int_equal(put_block(c, "obj", 0, DLEN), 0);
    assert_int_equal(put_block(c, "obj", 1, 0), 0);
    assert_int_equal(get_block(c, "obj", 0, DLEN), ENOENT);
    assert_int_equal(get_block(c, "obj", 1, 0), ENOENT);
    assert_int_equal(cache_size(c), 0);
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 0);
    cache_close(c);
}

static void test_larger_than_limit_is_efbig(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const uint64_t limit = HDR + 2000;
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    assert_int_equal(put_block(c, "small", 0, DLEN), 0);
    assert_int_equal(put_block(c, "obj", 0, limit - HDR + 1), EFBIG);
    assert_int_equal(put_block(c, "obj", 1, 1 << 20), EFBIG);
    /* nothing changed: the small block is still there */
    assert_int_equal(cache_size(c), ENTRY);
    assert_int_equal(get_block(c, "small", 0, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 0, limit - HDR + 1), ENOENT);
    /* exactly the limit fits (evicting the small one) */
    assert_int_equal(put_block(c, "obj", 2, limit - HDR), 0);
    assert_int_equal(cache_size(c), limit);
    assert_int_equal(get_block(c, "obj", 2, limit - HDR), 0);
    assert_int_equal(get_block(c, "small", 0, DLEN), ENOENT);
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 1);
    cache_close(c);
}

/* ---- reopen ---------------------------------------------------------- */

static void test_reopen_keeps_blocks_and_lru_order(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const uint64_t limit = 4 * ENTRY;
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    for (uint64_t no = 0; no < 4; no++) {
        assert_int_equal(put_block(c, "obj", no, DLEN), 0);
        tick();
    }
    /* use 0 and then 2: the order from least recent is now 1 3 0 2 */
    assert_int_equal(get_block(c, "obj", 0, DLEN), 0);
    tick();
    assert_int_equal(get_block(c, "obj", 2, DLEN), 0);
    tick();
    cache_close(c);

    c = NULL;
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    assert_int_equal(cache_size(c), 4 * ENTRY);
    struct loc p[4];
    for (int no = 0; no < 4; no++)
        blk_loc(f->dir, "obj", (uint64_t)no, &p[no]);
    /* (presence checked on disk: a get would change the order) */
    assert_int_equal(put_block(c, "new", 0, DLEN), 0); /* evicts 1 */
    assert_false(present(&p[1]));
    assert_true(present(&p[0]) && present(&p[2]) && present(&p[3]));
    assert_int_equal(put_block(c, "new", 1, DLEN), 0); /* evicts 3 */
    assert_false(present(&p[3]));
    assert_true(present(&p[0]) && present(&p[2]));
    assert_int_equal(put_block(c, "new", 2, DLEN), 0); /* evicts 0 */
    assert_false(present(&p[0]));
    assert_true(present(&p[2]));
    assert_int_equal(get_block(c, "obj", 2, DLEN), 0);
    assert_int_equal(get_block(c, "new", 0, DLEN), 0);
    assert_int_equal(cache_size(c), 4 * ENTRY);
    cache_close(c);
}

/* The use times of blocks in many files (more than one batch of the
 * flush at close, which holds each file open while it writes) all reach
 * the records: a reopen with room for 10 keeps the 10 used last. */
static void test_reopen_order_across_many_files(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    char id[32];
    assert_int_equal(cache_open(f->dir, 200 * ENTRY, &c, NULL), 0);
    for (int i = 0; i < 150; i++) {
        snprintf(id, sizeof(id), "obj-%d", i);
        assert_int_equal(put_block(c, id, 0, DLEN), 0);
    }
    for (int i = 149; i >= 0; i--) { /* obj-0 used last */
        snprintf(id, sizeof(id), "obj-%d", i);
        assert_int_equal(get_block(c, id, 0, DLEN), 0);
    }
    cache_close(c);
    c = NULL;
    assert_int_equal(cache_open(f->dir, 10 * ENTRY, &c, NULL), 0);
    assert_int_equal(cache_size(c), 10 * ENTRY);
    for (int i = 0; i < 150; i++) {
        snprintf(id, sizeof(id), "obj-%d", i);
        struct loc l;
        blk_loc(f->dir, id, 0, &l);
        assert_int_equal(present(&l), i < 10);
    }
    cache_close(c);
}

static void test_reopen_with_smaller_limit_trims(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    for (uint64_t no = 0; no < 5; no++) {
        assert_int_equal(put_block(c, "obj", no, DLEN), 0);
        tick();
    }
    assert_int_equal(get_block(c, "obj", 1, DLEN), 0); /* 0 2 3 4 1 */
    tick();
    cache_close(c);
    struct loc p[5];
    for (int no = 0; no < 5; no++)
        blk_loc(f->dir, "obj", (uint64_t)no, &p[no]);

    c = NULL;
    assert_int_equal(cache_open(f->dir, 2 * ENTRY + 10, &c, NULL), 0);
    assert_int_equal(cache_size(c), 2 * ENTRY); /* trimmed at open */
    uint64_t total = 0;
    assert_int_equal(disk_blocks(f->dir, &total, NULL), 2);
    assert_int_equal(total, 2 * ENTRY);
    assert_true(present(&p[4]) && present(&p[1]));
    assert_false(present(&p[0]) || present(&p[2]) || present(&p[3]));
    assert_int_equal(get_block(c, "obj", 4, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 1, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 0, DLEN), ENOENT);
    cache_close(c);
}

/* What a crash (or a hand) can leave in the directory is cleaned at open:
 * a slot with a record that is no block's (torn, or a use time written
 * after its block went) is punched, a file with no block left is removed,
 * and so is anything of the older formats; good blocks stay. */
static void test_leftovers_cleaned_at_open(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, "obj", 0, DLEN), 0);
    cache_close(c);
    struct loc l0, l1, l9;
    blk_loc(f->dir, "obj", 0, &l0);
    blk_loc(f->dir, "obj", 1, &l1);
    blk_loc(f->dir, "obj", 9 * PER_FILE, &l9);
    /* slot 1: half a record */
    int fd = open(l1.path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "PAILBLK3 torn", 13, l1.off), 13);
    close(fd);
    /* a file made, nothing written in it; and a leftover of format 2 */
    fd = open(l9.path, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s/x.tmp", f->dir);
    FILE *fp = fopen(tmp, "w");
    assert_non_null(fp);
    fputs("half a block", fp);
    fclose(fp);

    c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_false(exists(tmp));
    assert_false(exists(l9.path));
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 1);
    assert_true(present(&l0));
    unsigned char rec[16];
    memset(rec, 1, sizeof(rec));
    fd = open(l1.path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, rec, sizeof(rec), l1.off), 13);
    close(fd);
    for (size_t i = 0; i < 13; i++)
        assert_int_equal(rec[i], 0); /* punched */
    assert_int_equal(cache_size(c), ENTRY);
    assert_int_equal(get_block(c, "obj", 0, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 1, DLEN), ENOENT);
    cache_close(c);
}

/* ---- damage ---------------------------------------------------------- */

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

static void test_damaged_block_dropped(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    for (uint64_t no = 0; no < 5; no++)
        assert_int_equal(put_block(c, "obj", no, DLEN), 0);
    struct loc p[5];
    for (int no = 0; no < 5; no++)
        blk_loc(f->dir, "obj", (uint64_t)no, &p[no]);
    flip_byte(p[0].path, p[0].off + HDR + 500);                          /* the data */
    flip_byte(p[1].path, p[1].off + HDR + DLEN - 1);                     /* its last byte */
    flip_byte(p[2].path, p[2].off + 25);                                 /* the record's checksum */
    flip_byte(p[3].path, p[3].off + 0);                                  /* the magic */
    assert_int_equal(truncate(p[4].path, p[4].off + HDR + DLEN - 1), 0); /* a byte short */
    for (uint64_t no = 0; no < 5; no++) {
        assert_int_equal(get_block(c, "obj", no, DLEN), ENOENT);
        assert_false(present(&p[no]));
    }
    assert_int_equal(cache_size(c), 0);
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 0); /* its last block took the file */
    /* and it can be stored again */
    assert_int_equal(put_block(c, "obj", 0, DLEN), 0);
    assert_int_equal(get_block(c, "obj", 0, DLEN), 0);
    cache_close(c);
}

/* A record whose length, block number or end is wrong: the block is
 * dropped (and a record of another block in its slot is not it). */
static void test_damaged_length_and_truncated_record(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    for (uint64_t no = 0; no < 4; no++)
        assert_int_equal(put_block(c, "obj", no, DLEN), 0);
    struct loc p[4];
    for (int no = 0; no < 4; no++)
        blk_loc(f->dir, "obj", (uint64_t)no, &p[no]);
    flip_byte(p[0].path, p[0].off + 37); /* the length (and so the record's CRC) */
    /* block 1's slot gets block 2's record and data: a whole block, the wrong one */
    unsigned char *slot = malloc(HDR + DLEN);
    assert_non_null(slot);
    int fd = open(p[1].path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, slot, HDR + DLEN, p[2].off), HDR + DLEN);
    assert_int_equal(pwrite(fd, slot, HDR + DLEN, p[1].off), HDR + DLEN);
    close(fd);
    free(slot);
    assert_int_equal(truncate(p[3].path, p[3].off + 10), 0); /* half a record */
    assert_int_equal(get_block(c, "obj", 0, DLEN), ENOENT);
    assert_int_equal(get_block(c, "obj", 1, DLEN), ENOENT);
    assert_int_equal(get_block(c, "obj", 3, DLEN), ENOENT);
    assert_false(present(&p[0]) || present(&p[1]) || present(&p[3]));
    assert_int_equal(get_block(c, "obj", 2, DLEN), 0);
    assert_int_equal(cache_size(c), ENTRY);
    cache_close(c);
}

static void test_damage_found_after_reopen(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, "obj", 0, DLEN), 0);
    assert_int_equal(put_block(c, "obj", 1, DLEN), 0);
    cache_close(c);
    struct loc p0;
    blk_loc(f->dir, "obj", 0, &p0);
    flip_byte(p0.path, p0.off + HDR + 3);
    c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(get_block(c, "obj", 0, DLEN), ENOENT);
    assert_false(present(&p0));
    assert_int_equal(get_block(c, "obj", 1, DLEN), 0);
    assert_int_equal(cache_size(c), ENTRY);
    cache_close(c);
}

/* ---- crash safety --------------------------------------------------------- */

/* Punch [off, off + len) of a file: what never reached the disk. */
static void punch(const char *path, off_t off, off_t len)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len), 0);
    close(fd);
}

/* Nothing is fsync'd: a crash can leave a record whose data never reached
 * the disk, or only part of it, or half a record.  Such a block fails its
 * check — by a whole read, a range read, and after a reopen — and is never
 * served; its slot is given back. */
static void test_torn_block_never_served(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t len = 1 << 20;
    unsigned char *got = malloc(len);
    assert_non_null(got);
    assert_int_equal(cache_open(f->dir, 16 << 20, &c, NULL), 0);
    for (uint64_t no = 0; no < 5; no++)
        assert_int_equal(put_block(c, "obj", no, len), 0);
    struct loc p[5];
    for (int no = 0; no < 5; no++)
        blk_loc(f->dir, "obj", (uint64_t)no, &p[no]);
    punch(p[0].path, p[0].off + HDR, (off_t)len);                      /* no data at all */
    punch(p[1].path, p[1].off + HDR + (off_t)len / 2, (off_t)len / 2); /* half of it */
    punch(p[2].path, p[2].off + HDR + 77 * PAGE, PAGE);                /* one page */
    punch(p[3].path, p[3].off + 1024, 3072); /* the end of the record (of its page CRCs) */
    assert_int_equal(get_block(c, "obj", 0, len), ENOENT);
    size_t n = 0;
    assert_int_equal(cache_read(c, "obj", 1, len - 10, 10, got, &n), ENOENT);
    assert_int_equal(cache_read(c, "obj", 2, 77 * PAGE + 5, 1, got, &n), ENOENT);
    assert_int_equal(cache_read(c, "obj", 3, 0, 1, got, &n), ENOENT);
    for (int no = 0; no < 4; no++)
        assert_false(present(&p[no]));
    assert_int_equal(get_block(c, "obj", 4, len), 0);
    assert_int_equal(cache_size(c), HDR + len);
    /* the same after a restart: the record is whole, the data is not */
    assert_int_equal(put_block(c, "obj", 0, len), 0);
    cache_close(c);
    punch(p[0].path, p[0].off + HDR + PAGE, PAGE);
    c = NULL;
    assert_int_equal(cache_open(f->dir, 16 << 20, &c, NULL), 0);
    assert_int_equal(get_block(c, "obj", 0, len), ENOENT);
    assert_false(present(&p[0]));
    assert_int_equal(get_block(c, "obj", 4, len), 0);
    cache_close(c);
    free(got);
}

/* A process killed while it stores blocks (a write cut anywhere, evictions
 * under way): after a restart every block either reads back exactly as
 * stored or is missing, and the index counts what the disk holds. */
static void test_writer_killed_mid_block(void **state)
{
    struct fixture *f = *state;
    const size_t len = 1 << 20;
    for (int round = 0; round < 4; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct cache *c = NULL;
            if (cache_open(f->dir, 24 << 20, &c, NULL) != 0)
                _exit(1);
            unsigned char *d = malloc(len);
            for (uint64_t i = 0; d; i++) {
                uint64_t no = (i * 7 + (uint64_t)round) % 100;
                fill(d, len, "obj", no);
                cache_store(c, "obj", no, d, len, i % 2 ? CACHE_STORE_DIRECT : 0);
            }
            _exit(2);
        }
        struct timespec ts = {0, (long)(40 + 37 * round) * 1000 * 1000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st));
    }
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 24 << 20, &c, NULL), 0);
    unsigned char *got = malloc(len), *want = malloc(len);
    assert_non_null(got);
    assert_non_null(want);
    int hits = 0;
    for (uint64_t no = 0; no < 100; no++) {
        size_t n = 0;
        int rc = cache_get(c, "obj", no, got, len, &n);
        assert_true(rc == 0 || rc == ENOENT);
        if (rc)
            continue;
        hits++;
        fill(want, len, "obj", no);
        assert_int_equal(n, len);
        assert_memory_equal(got, want, len);
    }
    assert_true(hits > 0);
    uint64_t total = 0;
    assert_int_equal(disk_blocks(f->dir, &total, NULL), hits);
    assert_int_equal(total, cache_size(c));
    assert_true(cache_size(c) <= 24 << 20);
    cache_close(c);
    free(got);
    free(want);
}

/* Evicting a block gives its disk space back (a hole), not only when its
 * file goes. */
static void test_eviction_gives_space_back(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t len = 256 << 10;
    const uint64_t limit = 4 * (HDR + len);
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    for (uint64_t no = 0; no < 40; no++)
        assert_int_equal(put_block(c, "obj", no, len), 0);
    uint64_t total = 0, alloc = 0;
    assert_int_equal(disk_blocks(f->dir, &total, &alloc), 4);
    assert_int_equal(total, limit);
    assert_true(alloc <= limit + 64 * 1024); /* the file's own metadata, at most */
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 1);
    cache_close(c);
}

/* Block files of this process that are open, and of those how many are
 * deleted (unlinked while open). */
static int open_blocks(int *deleted)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    *deleted = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char link[300], target[512];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
        ssize_t l = readlink(link, target, sizeof(target) - 1);
        if (l <= 0)
            continue;
        target[l] = 0;
        if (!strstr(target, ".blk3"))
            continue;
        n++;
        if (strstr(target, "(deleted)"))
            (*deleted)++;
    }
    closedir(d);
    return n;
}

/* Files of blocks read are kept open, but never more than a quarter of
 * RLIMIT_NOFILE (64 here), and never once their last block is evicted,
 * damaged or replaced (no deleted file stays open, so the disk space is
 * given back).  100 objects of one block each: 100 files. */
static void test_open_files_bounded_and_released(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const uint64_t limit = 100 * ENTRY;
    struct rlimit was, now;
    char id[32];
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
    now = was;
    now.rlim_cur = 256;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &now), 0);
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "obj-%d", i);
        assert_int_equal(put_block(c, id, 0, DLEN), 0);
    }
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "obj-%d", i);
        assert_int_equal(get_block(c, id, 0, DLEN), 0);
    }
    int deleted = -1;
    int n = open_blocks(&deleted);
    assert_true(n > 0 && n <= 64);
    assert_int_equal(deleted, 0);
    /* reads again, from the open files: the same bytes */
    for (int i = 99; i >= 90; i--) {
        snprintf(id, sizeof(id), "obj-%d", i);
        assert_int_equal(get_block(c, id, 0, DLEN), 0);
    }
    /* evict everything: no file it held open stays open once removed */
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "other-%d", i);
        assert_int_equal(put_block(c, id, 0, DLEN), 0);
    }
    n = open_blocks(&deleted);
    assert_int_equal(deleted, 0);
    assert_true(n <= 64);
    assert_int_equal(list_files(f->dir, NULL, 0, NULL), 100);
    /* a replaced block is read from its new bytes */
    assert_int_equal(get_block(c, "other-5", 0, DLEN), 0);
    assert_int_equal(cache_store(c, "other-5", 0, "new bytes", 9, 0), 0);
    char buf[DLEN];
    size_t len = 0;
    assert_int_equal(cache_get(c, "other-5", 0, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 9);
    assert_memory_equal(buf, "new bytes", 9);
    open_blocks(&deleted);
    assert_int_equal(deleted, 0);
    cache_close(c);
    assert_int_equal(open_blocks(&deleted), 0);
}

/* CACHE_STORE_DIRECT stores the same bytes as flags 0: a page-aligned
 * whole block (written around the page cache), and blocks it cannot write
 * that way (short, unaligned), which are written plainly. */
static void test_store_direct(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t big = 1 << 20;
    unsigned char *a = NULL;
    assert_int_equal(posix_memalign((void **)&a, 4096, big + 4096), 0);
    assert_int_equal(cache_open(f->dir, 8 << 20, &c, NULL), 0);
    fill(a, big, "obj", 0);
    assert_int_equal(cache_store(c, "obj", 0, a, big, CACHE_STORE_DIRECT), 0);
    assert_int_equal(get_block(c, "obj", 0, big), 0);
    fill(a, DLEN, "obj", 1); /* not whole pages */
    assert_int_equal(cache_store(c, "obj", 1, a, DLEN, CACHE_STORE_DIRECT), 0);
    assert_int_equal(get_block(c, "obj", 1, DLEN), 0);
    fill(a + 1, 2 * PAGE, "obj", 2); /* not page-aligned */
    assert_int_equal(cache_store(c, "obj", 2, a + 1, 2 * PAGE, CACHE_STORE_DIRECT), 0);
    assert_int_equal(get_block(c, "obj", 2, 2 * PAGE), 0);
    assert_int_equal(cache_size(c), 3 * HDR + big + DLEN + 2 * PAGE);
    cache_close(c);
    free(a);
}

/* A whole get into a page-aligned buffer with room for whole pages reads
 * around the page cache (O_DIRECT): the same bytes, for a whole block and
 * a short one (its last page read whole, past the block's end), the
 * bytes past the block untouched beyond cap, and damage found as on the
 * plain path, also in a block written through the page cache just now. */
static void test_get_direct(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t big = 1 << 20;
    unsigned char *a = NULL, *want = malloc(big);
    assert_non_null(want);
    assert_int_equal(posix_memalign((void **)&a, 4096, big), 0);
    assert_int_equal(cache_open(f->dir, 8 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, "obj", 0, big), 0);
    assert_int_equal(put_block(c, "obj", 1, DLEN), 0);
    size_t n = 0;
    for (int round = 0; round < 2; round++) { /* from the page cache, then the disk */
        memset(a, 0xee, big);
        assert_int_equal(cache_get(c, "obj", 0, a, big, &n), 0);
        assert_int_equal(n, big);
        fill(want, big, "obj", 0);
        assert_memory_equal(a, want, big);
        memset(a, 0xee, big);
        assert_int_equal(cache_get(c, "obj", 1, a, big, &n), 0);
        assert_int_equal(n, DLEN);
        fill(want, DLEN, "obj", 1);
        assert_memory_equal(a, want, DLEN);
        assert_int_equal(a[PAGE], 0xee); /* only the block's page */
        int fd = open(f->dir, O_RDONLY);
        assert_true(fd >= 0);
        syncfs(fd);
        close(fd);
    }
    /* a short block whose page does not fit in cap: read plainly */
    assert_int_equal(cache_get(c, "obj", 1, a, DLEN, &n), 0);
    assert_int_equal(n, DLEN);
    assert_memory_equal(a, want, DLEN);
    struct loc l;
    blk_loc(f->dir, "obj", 0, &l);
    flip_byte(l.path, l.off + HDR + 200 * PAGE + 1);
    assert_int_equal(cache_get(c, "obj", 0, a, big, &n), ENOENT);
    assert_false(present(&l));
    cache_close(c);
    free(a);
    free(want);
}

/* A block stored with the page CRCs its caller computed reads back as
 * one stored plainly, for a whole block and a short one whose CRCs were
 * made piece by piece as bytes would arrive; a wrong CRC is kept as given,
 * so the block fails its check and is never served. */
static void test_store_summed(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t big = 1 << 20;
    uint32_t crcs[(1 << 20) / CACHE_PAGE_SIZE];
    unsigned char *a = NULL;
    assert_int_equal(posix_memalign((void **)&a, 4096, big), 0);
    assert_int_equal(cache_open(f->dir, 8 << 20, &c, NULL), 0);
    fill(a, big, "obj", 0);
    for (size_t p = 0; p < big / PAGE; p++)
        crcs[p] = cache_crc32c(a + p * PAGE, PAGE, 0);
    assert_int_equal(cache_store_summed(c, "obj", 0, a, big, crcs, CACHE_STORE_DIRECT), 0);
    assert_int_equal(get_block(c, "obj", 0, big), 0);
    /* a short block, its CRCs continued over pieces of 1000 bytes (as a
     * GET brings them), across page ends */
    const size_t short_len = 3 * PAGE + 123;
    fill(a, short_len, "obj", 1);
    for (size_t at = 0; at < short_len;) {
        size_t piece_end = at + 1000 < short_len ? at + 1000 : short_len;
        while (at < piece_end) {
            size_t p = at / PAGE, in = at % PAGE;
            size_t k = PAGE - in < piece_end - at ? PAGE - in : piece_end - at;
            crcs[p] = cache_crc32c(a + at, k, in ? crcs[p] : 0);
            at += k;
        }
    }
    assert_int_equal(cache_store_summed(c, "obj", 1, a, short_len, crcs, 0), 0);
    assert_int_equal(get_block(c, "obj", 1, short_len), 0);
    size_t got = 0;
    unsigned char one[100];
    assert_int_equal(cache_read(c, "obj", 1, 3 * PAGE + 5, sizeof(one), one, &got), 0);
    assert_int_equal(got, sizeof(one));
    fill(a, short_len, "obj", 1);
    assert_memory_equal(one, a + 3 * PAGE + 5, sizeof(one));
    /* a wrong CRC of page 3: stored, then found damaged */
    fill(a, big, "obj", 2);
    for (size_t p = 0; p < big / PAGE; p++)
        crcs[p] = cache_crc32c(a + p * PAGE, PAGE, 0);
    crcs[3] ^= 1;
    assert_int_equal(cache_store_summed(c, "obj", 2, a, big, crcs, 0), 0);
    assert_int_equal(cache_read(c, "obj", 2, 0, PAGE, a, &got), 0); /* page 0 is right */
    assert_int_equal(cache_read(c, "obj", 2, 3 * PAGE, PAGE, a, &got), ENOENT);
    assert_int_equal(get_block(c, "obj", 2, big), ENOENT); /* dropped */
    cache_close(c);
    free(a);
}

/* A whole block is checked with one CRC of all its bytes against its
 * page CRCs combined (cache.c, block_ok): still every page, in its place.
 * Two of its pages swapped on disk (each still matching a CRC of the
 * record, but not its own), a byte of its short last page, or of its
 * first page changed: each is found, with O_DIRECT and without. */
static void test_whole_block_check_finds_each_page(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const size_t big = 1 << 20, len = 5 * PAGE + 77;
    unsigned char *a = NULL, p1[PAGE], p2[PAGE];
    assert_int_equal(posix_memalign((void **)&a, 4096, big), 0);
    assert_int_equal(cache_open(f->dir, 64 << 20, &c, NULL), 0);
    struct loc l;
    for (int direct = 0; direct < 2; direct++) {
        for (int damage = 0; damage < 3; damage++) {
            uint64_t no = (uint64_t)(direct * 3 + damage);
            assert_int_equal(put_block(c, "obj", no, len), 0);
            assert_int_equal(get_block(c, "obj", no, len), 0);
            blk_loc(f->dir, "obj", no, &l);
            if (damage == 0) {
                int fd = open(l.path, O_RDWR);
                assert_true(fd >= 0);
                off_t at = l.off + HDR;
                assert_int_equal(pread(fd, p1, PAGE, at + PAGE), PAGE);
                assert_int_equal(pread(fd, p2, PAGE, at + 3 * PAGE), PAGE);
                assert_int_equal(pwrite(fd, p2, PAGE, at + PAGE), PAGE);
                assert_int_equal(pwrite(fd, p1, PAGE, at + 3 * PAGE), PAGE);
                close(fd);
            } else {
                flip_byte(l.path, l.off + HDR + (damage == 1 ? 5 * PAGE + 76 : 0));
            }
            size_t n = 0;
            unsigned char *buf = direct ? a : a + 1; /* O_DIRECT only when aligned */
            assert_int_equal(cache_get(c, "obj", no, buf, big - 1, &n), ENOENT);
            assert_false(present(&l));
        }
    }
    cache_close(c);
    free(a);
}

/* ---- ownership of the directory -------------------------------------- */

static void test_second_open_is_ebusy(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL, *c2 = (struct cache *)0x1;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, "obj", 0, DLEN), 0);
    pid_t owner = 0;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c2, &owner), EBUSY);
    assert_ptr_equal(c2, (struct cache *)0x1); /* untouched */
    assert_int_equal(owner, getpid());
    assert_int_equal(cache_open(f->dir, 1 << 20, &c2, NULL), EBUSY);
    /* the refusal changed nothing */
    assert_int_equal(get_block(c, "obj", 0, DLEN), 0);
    cache_close(c);
    c2 = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c2, &owner), 0);
    assert_int_equal(owner, 0);
    assert_int_equal(get_block(c2, "obj", 0, DLEN), 0);
    cache_close(c2);
}

static void test_open_creates_dir_and_reports_errors(void **state)
{
    struct fixture *f = *state;
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/blocks-b-00", f->dir);
    struct cache *c = NULL;
    assert_int_equal(cache_open(sub, 1 << 20, &c, NULL), 0);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    cache_close(c);
    /* a path under a regular file */
    char file[128], under[160];
    snprintf(file, sizeof(file), "%s/plain", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(under, sizeof(under), "%s/x", file);
    c = NULL;
    assert_int_equal(cache_open(under, 1 << 20, &c, NULL), ENOTDIR);
    assert_null(c);
}

/* Issue 17 item 5: each thread remembered the hash of the last identity
 * it named, but an identity of 1536 bytes or more updated only the hash,
 * so the next request for the object named before it got the long one's
 * blocks, with valid checksums.  A key of about 1.4 KB makes such an
 * identity; a listing can carry one. */
static void test_long_identity_does_not_alias(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    assert_int_equal(cache_open(f->dir, 1 << 20, &c, NULL), 0);
    const char *a = "https://s3.example\nbucket\nshort/key\n\"etag-a\"";
    char b[2100];
    int n = snprintf(b, sizeof(b), "https://s3.example\nbucket\n");
    memset(b + n, 'k', 1400); /* a 1.4 KB key */
    snprintf(b + n + 1400, sizeof(b) - (size_t)n - 1400, "\n\"etag-b\"%0600d", 0);
    assert_true(strlen(b) >= 1536);
    for (uint64_t no = 0; no < 2; no++)
        assert_int_equal(put_block(c, a, no, DLEN), 0);
    assert_int_equal(put_block(c, b, 0, DLEN + 17), 0);
    /* the same thread, straight after the long identity: A's own bytes */
    assert_int_equal(get_block(c, a, 0, DLEN), 0);
    assert_int_equal(get_block(c, b, 0, DLEN + 17), 0);
    assert_int_equal(get_block(c, a, 1, DLEN), 0);
    /* and the long one after a short one, and again */
    assert_int_equal(get_block(c, b, 0, DLEN + 17), 0);
    assert_int_equal(get_block(c, b, 0, DLEN + 17), 0);
    assert_int_equal(get_block(c, a, 0, DLEN), 0);
    cache_close(c);
}

/* Issue 17 item 6: a cache directory another user owns or can write in
 * was used as found (they could plant blocks), and .lock was opened
 * without O_NOFOLLOW and truncated, so a link planted there clobbered
 * the file it pointed at. */
static void test_open_refuses_what_others_could_plant(void **state)
{
    struct fixture *f = *state;
    char sub[128], lock[160], victim[128], link[128];
    snprintf(sub, sizeof(sub), "%s/blocks-b-00", f->dir);
    snprintf(lock, sizeof(lock), "%s/.lock", sub);
    snprintf(victim, sizeof(victim), "%s/victim", f->dir);
    snprintf(link, sizeof(link), "%s/blocks-link", f->dir);
    FILE *fp = fopen(victim, "w");
    assert_non_null(fp);
    fputs("precious\n", fp);
    fclose(fp);
    struct cache *c = NULL;

    /* a link at .lock: refused, the victim intact */
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(symlink(victim, lock), 0);
    assert_int_equal(cache_open(sub, 1 << 20, &c, NULL), ELOOP);
    assert_null(c);
    char text[32] = "";
    fp = fopen(victim, "r");
    assert_non_null(fp);
    assert_non_null(fgets(text, sizeof(text), fp));
    fclose(fp);
    assert_string_equal(text, "precious\n");
    assert_int_equal(unlink(lock), 0);

    /* writable by others, or by the group */
    assert_int_equal(chmod(sub, 0777), 0);
    assert_int_equal(cache_open(sub, 1 << 20, &c, NULL), EPERM);
    assert_int_equal(chmod(sub, 0770), 0);
    assert_int_equal(cache_open(sub, 1 << 20, &c, NULL), EPERM);
    assert_null(c);
    struct stat st;
    assert_int_equal(lstat(lock, &st), -1); /* nothing made in it */
    assert_int_equal(chmod(sub, 0700), 0);

    /* owned by another user (the tests run as root, which can chown) */
    if (geteuid() == 0) {
        assert_int_equal(chown(sub, 65534, 65534), 0);
        assert_int_equal(cache_open(sub, 1 << 20, &c, NULL), EPERM);
        assert_null(c);
        assert_int_equal(chown(sub, 0, 0), 0);
    }

    /* the directory itself a link to a private one */
    assert_int_equal(symlink(sub, link), 0);
    assert_int_equal(cache_open(link, 1 << 20, &c, NULL), ELOOP);
    assert_null(c);

    /* and the private directory itself is fine, made 0700 when missing */
    assert_int_equal(cache_open(sub, 1 << 20, &c, NULL), 0);
    assert_int_equal(put_block(c, "obj", 0, DLEN), 0);
    cache_close(c);
    c = NULL;
    char fresh[128];
    snprintf(fresh, sizeof(fresh), "%s/blocks-new", f->dir);
    mode_t old = umask(0);
    assert_int_equal(cache_open(fresh, 1 << 20, &c, NULL), 0);
    umask(old);
    assert_int_equal(stat(fresh, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    cache_close(c);
}

static void test_default_limit(void **state)
{
    struct fixture *f = *state;
    struct statvfs sv;
    assert_int_equal(statvfs(f->dir, &sv), 0);
    uint64_t tenth = (uint64_t)sv.f_bavail * sv.f_frsize / 10;
    uint64_t lim = cache_default_limit(f->dir);
    assert_true(lim <= 10ULL << 30);
    assert_true(lim <= tenth + (tenth >> 6) + (1 << 20)); /* free space moves */
    assert_true(lim >= (tenth < (10ULL << 30) ? tenth - (tenth >> 6) : 10ULL << 30) ||
                lim == 10ULL << 30);
}

/* ---- threads ----------------------------------------------------------- */

struct worker_arg {
    struct cache *c;
    int id;
    int wrong;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    char id[16];
    unsigned char buf[DLEN + 64], want[DLEN];
    snprintf(id, sizeof(id), "obj-%d", a->id);
    for (int round = 0; round < 300; round++) {
        uint64_t no = (uint64_t)((round * 7 + a->id) % 23);
        size_t len = 0;
        int rc = cache_get(a->c, id, no, buf, sizeof(buf), &len);
        if (rc == 0) {
            fill(want, DLEN, id, no);
            if (len != DLEN || memcmp(buf, want, DLEN) != 0)
                a->wrong++;
        } else if (rc != ENOENT) {
            a->wrong++;
        } else {
            fill(want, DLEN, id, no);
            rc = cache_store(a->c, id, no, want, DLEN, 0);
            if (rc != 0)
                a->wrong++;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const uint64_t limit = 20 * ENTRY;
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    pthread_t t[6];
    struct worker_arg a[6];
    for (int i = 0; i < 6; i++) {
        a[i] = (struct worker_arg){.c = c, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &a[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].wrong, 0);
    }
    assert_true(cache_size(c) <= limit);
    uint64_t total = 0;
    int n = disk_blocks(f->dir, &total, NULL);
    assert_int_equal(total, cache_size(c));
    assert_int_equal((uint64_t)n * ENTRY, total);
    cache_close(c);
}

/* Many writers and a bound of a few blocks: blocks are evicted while
 * others are still being written.  Afterwards the directory must hold
 * exactly what the index counts, within the bound. */
#define BIG (64 * 1024)

static void *writer(void *p)
{
    struct worker_arg *a = p;
    char id[16];
    unsigned char *d = malloc(BIG);
    snprintf(id, sizeof(id), "w-%d", a->id);
    for (uint64_t no = 0; d && no < 150; no++) {
        fill(d, BIG, id, no);
        if (cache_store(a->c, id, no, d, BIG, 0) != 0)
            a->wrong++;
    }
    free(d);
    return NULL;
}

static void test_threads_bound_on_disk(void **state)
{
    struct fixture *f = *state;
    struct cache *c = NULL;
    const uint64_t limit = 4 * (BIG + HDR);
    assert_int_equal(cache_open(f->dir, limit, &c, NULL), 0);
    pthread_t t[6];
    struct worker_arg a[6];
    for (int i = 0; i < 6; i++) {
        a[i] = (struct worker_arg){.c = c, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, writer, &a[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].wrong, 0);
    }
    assert_true(cache_size(c) <= limit);
    uint64_t total = 0, alloc = 0;
    int n = disk_blocks(f->dir, &total, &alloc);
    /* no file the index forgot (a block evicted while being written) */
    assert_int_equal(total, cache_size(c));
    assert_true(total <= limit);
    assert_true(n <= 4);
    assert_true(alloc <= limit + 6 * 64 * 1024); /* evicted slots given back */
    cache_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test_setup_teardown(test_put_get_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_format_removed_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_page_found_by_range_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_miss_is_enoent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_replaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bound_evicts_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_zero_stores_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_larger_than_limit_is_efbig, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_blocks_and_lru_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_order_across_many_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_with_smaller_limit_trims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leftovers_cleaned_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_block_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_length_and_truncated_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage_found_after_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_block_never_served, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_killed_mid_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_gives_space_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_files_bounded_and_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_direct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_direct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_summed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_block_check_finds_each_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_is_ebusy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_creates_dir_and_reports_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_identity_does_not_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_what_others_could_plant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_bound_on_disk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
