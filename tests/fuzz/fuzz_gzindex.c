/* fuzz_gzindex.c — the gzip index loader (gz_index_load) and what a
 * reader does with the points it loads.
 *
 * An index file can come from the bucket (gz_index=shared), so its bytes
 * are anyone's who may write there.  The target first builds a real
 * index: a reader inflates a two-member stream of 400 KiB of text with an
 * access point every 64 KiB, and the index is saved.  Then, by the first
 * input byte:
 *   - even: the rest of the input is an index file, its header (magic,
 *     inflater tag, object size) and its CRC fixed up on request, so that
 *     the loader's field checks are reached rather than stopped at the CRC;
 *   - odd: the real index with one point's decoder state changed: the
 *     state is decompressed, bytes of it XORed with the input, compressed
 *     again, the file's CRC made right — a forged state that passes every
 *     outer check.
 * An index that loads is then read through, over the real stream.
 * Checked: the loader returns 0 or EINVAL, and what it loads claims no
 * size beyond deflate's 1032:1 of the object; reads return 0 or EIO and
 * never more than asked; the real index loads and reads back exactly. */
#include "fuzz.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

#include "gz/gz.h"

#define SPAN (64u << 10)
#define TEXT_LEN (400u << 10)
#define HEAD 44u  /* magic, tag, 0, comp_size, size, span, n */
#define POINT 29u /* kind, in_off, out_off, check, check_len, state_len */
#define STATE_MAX (256u << 10)

static struct {
    uint8_t *gz, *text;
    size_t gz_len;
    struct buf index;
} ref;

static void gzip_member(const uint8_t *d, size_t n)
{
    z_stream z = {0};
    FUZZ_ASSERT(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    size_t cap = deflateBound(&z, n);
    ref.gz = realloc(ref.gz, ref.gz_len + cap);
    FUZZ_ASSERT(ref.gz);
    z.next_in = (Bytef *)d;
    z.avail_in = (uInt)n;
    z.next_out = ref.gz + ref.gz_len;
    z.avail_out = (uInt)cap;
    FUZZ_ASSERT(deflate(&z, Z_FINISH) == Z_STREAM_END);
    ref.gz_len += cap - z.avail_out;
    deflateEnd(&z);
}

static void read_all(struct gz_index *ix, uint8_t *out, size_t cap, size_t *n)
{
    struct fuzz_mem m = {ref.gz, ref.gz_len};
    struct gz_reader *r;
    FUZZ_ASSERT(gz_reader_new(ix, fuzz_mem_source, &m, &r) == 0);
    FUZZ_ASSERT(gz_read(r, 0, out, cap, n) == 0);
    gz_reader_free(r);
}

/* The reference stream and its saved index, made once. */
static void setup(void)
{
    if (ref.text)
        return;
    fuzz_quiet_logs();
    static const char *words[] = {"{\"id\": ",   "\"name\": \"", "alpha", "beta", "gamma",
                                  "\", \"n\": ", "}\n",          "delta", " ",    "0.5"};
    ref.text = malloc(TEXT_LEN);
    FUZZ_ASSERT(ref.text);
    uint32_t s = 1;
    for (size_t i = 0; i < TEXT_LEN;) {
        s = s * 1103515245u + 12345u;
        const char *w = words[(s >> 16) % 10];
        char num[16];
        if ((s >> 8) % 3 == 0) {
            snprintf(num, sizeof(num), "%u", (s >> 4) % 100000);
            w = num;
        }
        for (size_t k = 0; w[k] && i < TEXT_LEN; k++)
            ref.text[i++] = (uint8_t)w[k];
    }
    gzip_member(ref.text, 300u << 10);
    gzip_member(ref.text + (300u << 10), TEXT_LEN - (300u << 10));

    struct gz_index *ix;
    FUZZ_ASSERT(gz_index_new(ref.gz_len, SPAN, &ix) == 0);
    static uint8_t out[TEXT_LEN + 1];
    size_t n;
    read_all(ix, out, sizeof(out), &n);
    FUZZ_ASSERT(n == TEXT_LEN && memcmp(out, ref.text, n) == 0);
    FUZZ_ASSERT(gz_index_points(ix) >= 4);
    FUZZ_ASSERT(gz_index_save(ix, &ref.index) == 0);
    gz_index_free(ix);

    /* the saved index loads, and reads back exactly, from its points */
    FUZZ_ASSERT(gz_index_load(ref.index.data, ref.index.len, ref.gz_len, &ix) == 0);
    struct fuzz_mem m = {ref.gz, ref.gz_len};
    struct gz_reader *r;
    FUZZ_ASSERT(gz_reader_new(ix, fuzz_mem_source, &m, &r) == 0);
    for (size_t off = TEXT_LEN - 100; off > 52111; off -= 52111) {
        FUZZ_ASSERT(gz_read(r, off, out, 100, &n) == 0);
        FUZZ_ASSERT(n == 100 && memcmp(out, ref.text + off, 100) == 0);
    }
    gz_reader_free(r);
    gz_index_free(ix);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void fix_crc(uint8_t *f, size_t len)
{
    wr32(f + len - 4, (uint32_t)crc32(0, f, (uInt)(len - 4)));
}

/* Load the index in f and read through it: the documented codes only. */
static void try_index(const uint8_t *f, size_t len, uint32_t seed)
{
    struct gz_index *ix;
    int rc = gz_index_load(f, len, ref.gz_len, &ix);
    FUZZ_ASSERT(rc == 0 || rc == EINVAL);
    if (rc)
        return;
    /* no size the stream cannot have (2^64-1 was taken), and no index
     * longer than one the object could need (issue 17 item 4) */
    uint64_t sz;
    FUZZ_ASSERT(gz_index_size(ix, &sz) && sz <= gz_size_max(ref.gz_len));
    FUZZ_ASSERT(len <= gz_index_max_bytes(ref.gz_len));
    struct fuzz_mem m = {ref.gz, ref.gz_len};
    struct gz_reader *r;
    FUZZ_ASSERT(gz_reader_new(ix, fuzz_mem_source, &m, &r) == 0);
    static uint8_t out[2 * SPAN];
    for (int i = 0; i < 6; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t off = (seed >> 4) % (TEXT_LEN + SPAN), want = 1 + (seed >> 12) % sizeof(out), n;
        rc = gz_read(r, off, out, want, &n);
        FUZZ_ASSERT(rc == 0 || rc == EIO);
        FUZZ_ASSERT(n <= want);
    }
    gz_reader_free(r);
    gz_index_free(ix);
}

/* The real index with point k's state XORed with `x` (xn bytes, each
 * applied at an offset the byte before it picks). */
static void forge_state(unsigned k, const uint8_t *x, size_t xn, uint32_t seed)
{
    const uint8_t *f = (const uint8_t *)ref.index.data;
    uint32_t n = rd32(f + 40);
    const uint8_t *p = f + HEAD, *pt = NULL;
    unsigned states = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t state_len = rd32(p + 25);
        if (state_len && states++ == k % 64)
            pt = p;
        p += POINT + state_len;
    }
    if (!pt) { /* fewer state points than k: take the last one */
        p = f + HEAD;
        for (uint32_t i = 0; i < n; i++) {
            if (rd32(p + 25))
                pt = p;
            p += POINT + rd32(p + 25);
        }
    }
    FUZZ_ASSERT(pt);
    uint32_t old_len = rd32(pt + 25);
    static uint8_t state[STATE_MAX];
    uLongf sn = sizeof(state);
    FUZZ_ASSERT(uncompress(state, &sn, pt + POINT, old_len) == Z_OK);
    for (size_t i = 0; i + 2 < xn; i += 3)
        state[((size_t)x[i] << 8 | x[i + 1]) * 131 % sn] ^= x[i + 2];
    uLongf zn = compressBound(sn);
    uint8_t *z = malloc(zn);
    FUZZ_ASSERT(z && compress2(z, &zn, state, sn, 1) == Z_OK);

    size_t before = (size_t)(pt + POINT - f), after = ref.index.len - before - old_len;
    size_t len = before + zn + after;
    uint8_t *out = malloc(len);
    FUZZ_ASSERT(out);
    memcpy(out, f, before);
    wr32(out + before - 4, (uint32_t)zn);
    memcpy(out + before, z, zn);
    memcpy(out + before + zn, f + before + old_len, after);
    fix_crc(out, len);
    try_index(out, len, seed ^ (uint32_t)rd64(pt + 9));
    free(z);
    free(out);
}

FUZZ_TARGET(gzindex)
{
    setup();
    if (size < 2)
        return 0;
    uint8_t mode = data[0];
    uint32_t seed = data[1];
    if (mode & 1) {
        forge_state(mode >> 1, data + 2, size - 2, seed);
        return 0;
    }
    size_t len = size - 1;
    uint8_t *f = malloc(len ? len : 1);
    FUZZ_ASSERT(f);
    memcpy(f, data + 1, len);
    if (len >= HEAD + 4) {
        const uint8_t *real = (const uint8_t *)ref.index.data;
        if (mode & 2)
            memcpy(f, real, 24); /* magic, inflater tag, 0, object size */
        if (mode & 4)
            fix_crc(f, len);
    }
    try_index(f, len, seed);
    free(f);
    return 0;
}
