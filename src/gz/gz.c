/* gz.c — random access into gzip streams, inflated with ISA-L (or zlib).
 *
 * A gzip file is one or more members, each a deflate stream: a sequence of
 * blocks whose back-references reach up to 32 KiB into earlier output.  So
 * the byte at offset N of the output can only be produced by inflating
 * from the start — unless the decoder's state at some earlier point was
 * kept.  zlib's zran.c keeps, at deflate block boundaries, the bit offset
 * and the 32 KiB window, and resumes with inflatePrime + inflateSetDictionary.
 * That needs a decoder that stops at block boundaries (zlib's Z_BLOCK),
 * and zlib inflates at about a third of ISA-L's speed.
 *
 * ISA-L cannot stop at a block boundary, but it does not need to: its
 * whole decoder state is one plain struct (struct inflate_state, public in
 * igzip_lib.h) — bit buffer, the current block's Huffman tables, the
 * pending match, the gzip wrapper and CRC state, and the last 32 KiB of
 * output in tmp_out_buffer (so the caller's output buffer needs no
 * history).  Its only pointers are next_in and next_out.  A copy of that
 * struct taken between two isal_inflate() calls, plus the absolute offset
 * of next_in, resumes decoding anywhere, mid-block, byte-exact.  So:
 *
 *   - an access point is (compressed offset, decompressed offset, the
 *     decoder state), recorded every `span` bytes of output as a reader
 *     passes the end of the index; the state is stored zlib-compressed with
 *     its unused buffer space zeroed (about 16 KB; an 8 MiB span gives an
 *     index of about 0.7 % of a .gz of JSON lines);
 *   - a member's first byte is an access point that needs no state at all
 *     ("fresh"), which makes BGZF and pigz -i files cheap to index;
 *   - a read at offset N restores the last point at or before N and
 *     inflates at most one span to reach N;
 *   - the struct is ISA-L's own layout, so a saved index records its size,
 *     and every point carries the CRC of the first 4 KiB it produces,
 *     checked whenever it is used: an index from another ISA-L build is
 *     refused or caught, never trusted blindly.
 *
 * Built without ISA-L (./configure --without-isal), zlib inflates, at
 * about a third of the speed, and points are zran.c's: taken at deflate
 * block boundaries (inflate with Z_BLOCK, asked for only while a point is
 * wanted), each the bits left in the last byte and the 32 KiB window
 * (inflateGetDictionary), restored with inflatePrime and
 * inflateSetDictionary into a raw inflate.  A member resumed that way
 * cannot check its CRC at its end (its trailer is skipped); the 4 KiB
 * check of every point still guards the index.  The two builds' index
 * files differ and each refuses the other's.
 *
 * Multi-member files (cat a.gz b.gz, pigz, bgzip) are inflated member
 * after member; ISA-L with ISAL_GZIP checks each member's header, CRC and
 * size.  Bytes after the last member that are not a gzip header are
 * ignored, as gzip -d does, with one log line. */
#include "gz/gz.h"

#include <errno.h>
#ifdef HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define GZ_DEFAULT_SPAN (8ULL << 20)
#define GZ_IN_CHUNK (256u << 10)
#define GZ_SCRATCH (256u << 10)
#define GZ_OUT_STEP (1u << 20)
#define GZ_CHECK_LEN 4096u
#define GZ_MIN_SPAN (64u << 10)
#define GZ_MAGIC "PAILGZX1"
#ifdef HAVE_ISAL
/* what a saved index was made for: ISA-L's state layout, by its size */
#define GZ_ENGINE_TAG ((uint32_t)sizeof(struct inflate_state))
#else
#define GZ_ENGINE_TAG 0x7a6c6962u /* "zlib": zran-style window points */
#define GZ_WINDOW 32768u
#endif

enum { GZP_FRESH = 0, GZP_STATE = 1 };

/* deflate's densest code is a 258-byte match in 2 bits (a 1-bit length
 * code and a 1-bit distance code): at most 1032 bytes out per byte in.
 * Headers, trailers and block headers only lower it. */
#define GZ_MAX_RATIO 1032u
/* A point's decoder state before it is compressed (record_state). */
#ifdef HAVE_ISAL
#define GZ_STATE_RAW ((uLong)sizeof(struct inflate_state))
#else
#define GZ_STATE_RAW ((uLong)(2 + GZ_WINDOW))
#endif
#define GZ_FILE_HEAD 44u  /* magic .. n, before the points */
#define GZ_FILE_POINT 29u /* kind .. state_len, before a point's state */

struct gz_point {
    uint64_t in_off, out_off;
    uint8_t kind;
    /* GZP_STATE, zlib-compressed: ISA-L's struct inflate_state, or (zlib
     * build) the bits left in the byte before in_off, that byte, and the
     * window */
    unsigned char *state;
    uint32_t state_len;
    uint32_t check;     /* crc32 of the first check_len bytes after the point */
    uint32_t check_len; /* 0: not known yet */
};

struct gz_index {
    pthread_mutex_t lock;
    uint64_t comp_size, span;
    struct gz_point *pts; /* pts[0] is the fresh start; protected by lock */
    size_t n, cap;        /* protected by lock */
    bool complete;        /* protected by lock */
    uint64_t size;        /* protected by lock (when complete) */
    uint64_t damage;      /* protected by lock */
    bool warned_trailing; /* protected by lock */
};

struct gz_reader {
    struct gz_index *ix;
    gz_source_fn src;
    void *arg;
#ifdef HAVE_ISAL
    struct inflate_state *st;
    int st_error; /* isal_inflate's error, reported once the bytes
                   * it decoded before the damage are out; 0: none */
#else
    z_stream zs;
    bool zs_ready;    /* inflateInit2 done */
    bool raw_member;  /* resumed mid-member: raw deflate, trailer skipped */
    bool member_done; /* the current member's deflate stream ended */
    bool want_block;  /* stop at the next block boundary for a point */
#endif
    bool live;
    uint64_t out_pos; /* decompressed offset of the next byte out */
    unsigned char *in;
    uint64_t in_off; /* compressed offset of in[0] */
    size_t in_len;
    bool in_eof;
    unsigned char *scratch;
    /* the check of one point: filled when recording, compared when used */
    size_t check_pt; /* SIZE_MAX: none */
    bool check_verify;
    uint32_t check_crc, check_done, check_want;
};

bool gz_is_gzip(const void *head, size_t len)
{
    const unsigned char *p = head;
    return len >= 3 && p[0] == 0x1f && p[1] == 0x8b && p[2] == 8;
}

/* ---- the index ----------------------------------------------------------- */

static int ix_add(struct gz_index *ix, const struct gz_point *p)
{
    if (util_grow((void **)&ix->pts, &ix->cap, ix->n + 1, sizeof(*ix->pts)))
        return ENOMEM;
    ix->pts[ix->n++] = *p;
    return 0;
}

int gz_index_new(uint64_t comp_size, uint64_t span, struct gz_index **out)
{
    struct gz_index *ix = calloc(1, sizeof(*ix));
    if (!ix)
        return ENOMEM;
    pthread_mutex_init(&ix->lock, NULL);
    ix->comp_size = comp_size;
    ix->span = span ? span : GZ_DEFAULT_SPAN;
    if (ix->span < GZ_MIN_SPAN)
        ix->span = GZ_MIN_SPAN; /* a point's check ends before the next point */
    ix->damage = UINT64_MAX;
    struct gz_point start = {.kind = GZP_FRESH};
    if (ix_add(ix, &start)) {
        gz_index_free(ix);
        return ENOMEM;
    }
    *out = ix;
    return 0;
}

void gz_index_free(struct gz_index *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; i < ix->n; i++)
        free(ix->pts[i].state);
    free(ix->pts);
    pthread_mutex_destroy(&ix->lock);
    free(ix);
}

bool gz_index_size(struct gz_index *ix, uint64_t *size)
{
    pthread_mutex_lock(&ix->lock);
    bool done = ix->complete;
    if (done)
        *size = ix->size;
    pthread_mutex_unlock(&ix->lock);
    return done;
}

size_t gz_index_points(struct gz_index *ix)
{
    pthread_mutex_lock(&ix->lock);
    size_t n = ix->n;
    pthread_mutex_unlock(&ix->lock);
    return n;
}

uint64_t gz_index_damage(struct gz_index *ix)
{
    pthread_mutex_lock(&ix->lock);
    uint64_t d = ix->damage;
    pthread_mutex_unlock(&ix->lock);
    return d;
}

/* Index of the last point with out_off <= off (ix->lock held). */
static size_t point_at_or_before(const struct gz_index *ix, uint64_t off)
{
    size_t lo = 0, hi = ix->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (ix->pts[mid].out_off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

bool gz_index_next_point(struct gz_index *ix, uint64_t off, uint64_t *next)
{
    pthread_mutex_lock(&ix->lock);
    size_t i = point_at_or_before(ix, off);
    bool known = true;
    if (i + 1 < ix->n)
        *next = ix->pts[i + 1].out_off;
    else if (ix->complete && off < ix->size)
        *next = ix->size;
    else
        known = false;
    pthread_mutex_unlock(&ix->lock);
    return known;
}

bool gz_index_is_point(struct gz_index *ix, uint64_t off)
{
    pthread_mutex_lock(&ix->lock);
    bool is = ix->pts[point_at_or_before(ix, off)].out_off == off;
    pthread_mutex_unlock(&ix->lock);
    return is;
}

static void put64(struct buf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    buf_append(b, x, 8);
}

static void put32(struct buf *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    buf_append(b, x, 4);
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t gz_size_max(uint64_t comp_size)
{
    return comp_size > UINT64_MAX / GZ_MAX_RATIO ? UINT64_MAX : comp_size * GZ_MAX_RATIO;
}

/* The largest index gz_index_save can write for an object of comp_size
 * bytes, from the file's layout and how points are recorded:
 *   - a head of 44 bytes and a CRC of 4, the fresh point at 0 (29 bytes);
 *   - every other point 29 bytes and a state compress2() made of the raw
 *     state: at most compressBound(GZ_STATE_RAW) (87,407 bytes with
 *     ISA-L 2.30's 87,368-byte struct inflate_state; 32,793 with zlib);
 *   - a reader records a point once its output is a span past the last
 *     one (3/4 of a span at a member start), and a span is at least
 *     GZ_MIN_SPAN (64 KiB): at most one point per 48 KiB of output, and
 *     the output is at most gz_size_max(comp_size); twice that, since two
 *     readers passing the frontier at once can each leave one.
 * With ISA-L that is about 3,672 x comp_size + 171 KiB (a 30-byte .gz:
 * 171 KiB; a 1 MiB one: 3.6 GiB).  Generous for real objects (an index
 * is about 0.7 % of a .gz of JSON lines at the default span), since
 * refusing a true index would only cost rebuilding it; what it stops is
 * a forged index far larger than its object, before it is read. */
uint64_t gz_index_max_bytes(uint64_t comp_size)
{
    uint64_t point = GZ_FILE_POINT + compressBound(GZ_STATE_RAW);
    uint64_t gap = GZ_MIN_SPAN / 4 * 3;
    uint64_t out = gz_size_max(comp_size);
    uint64_t points = 2 * (out / gap + 1);
    uint64_t fixed = GZ_FILE_HEAD + 4 + GZ_FILE_POINT;
    if (out == UINT64_MAX || points > (UINT64_MAX - fixed) / point)
        return UINT64_MAX;
    return fixed + points * point;
}

/* Layout (little-endian): magic, u32 sizeof(struct inflate_state), u32 0,
 * u64 comp_size, u64 size, u64 span, u32 n, then per point: u8 kind,
 * u64 in_off, u64 out_off, u32 check, u32 check_len, u32 state_len,
 * state bytes; then u32 crc32 of everything before it. */
int gz_index_save(struct gz_index *ix, struct buf *out)
{
    size_t start = out->len;
    pthread_mutex_lock(&ix->lock);
    if (!ix->complete) {
        pthread_mutex_unlock(&ix->lock);
        return EAGAIN;
    }
    buf_append(out, GZ_MAGIC, 8);
    put32(out, GZ_ENGINE_TAG);
    put32(out, 0);
    put64(out, ix->comp_size);
    put64(out, ix->size);
    put64(out, ix->span);
    put32(out, (uint32_t)ix->n);
    for (size_t i = 0; i < ix->n; i++) {
        const struct gz_point *p = &ix->pts[i];
        buf_append(out, &p->kind, 1);
        put64(out, p->in_off);
        put64(out, p->out_off);
        put32(out, p->check);
        put32(out, p->check_len);
        put32(out, p->state_len);
        if (p->state_len)
            buf_append(out, p->state, p->state_len);
    }
    pthread_mutex_unlock(&ix->lock);
    if (!out->data)
        return ENOMEM;
    put32(out, (uint32_t)crc32(0, (const Bytef *)out->data + start, (uInt)(out->len - start)));
    return out->data ? 0 : ENOMEM;
}

/* The header of a saved index (len bytes at p, its crc32 included) of an
 * object of comp_size bytes: *size, *span, *n (its points).  0, or EINVAL
 * (not ours, damaged, of another engine or another object). */
static int load_header(const unsigned char *p, size_t len, uint64_t comp_size, uint64_t *size,
                       uint64_t *span, uint32_t *n)
{
    const unsigned char *end = p + len;
    if (len < 48 || len > gz_index_max_bytes(comp_size) || memcmp(p, GZ_MAGIC, 8) != 0 ||
        get32(end - 4) != (uint32_t)crc32(0, p, (uInt)(len - 4)) || get32(p + 8) != GZ_ENGINE_TAG ||
        get64(p + 16) != comp_size)
        return EINVAL;
    *size = get64(p + 24);
    *span = get64(p + 32);
    *n = get32(p + 40);
    /* a size no stream of comp_size bytes can have (2^64-1 was taken) */
    if (*size > gz_size_max(comp_size))
        return EINVAL;
    return 0;
}

/* The saved point at *p (moved past it, before `end`), after `prev` (NULL
 * for the first), in an object of comp_size bytes that inflate to `size`:
 * *pt, its state malloc'ed.  0, EINVAL (out of order or out of bounds), or
 * ENOMEM. */
static int load_point(const unsigned char **p, const unsigned char *end,
                      const struct gz_point *prev, uint64_t comp_size, uint64_t size,
                      struct gz_point *pt)
{
    const unsigned char *q = *p;
    if (end - q < 29)
        return EINVAL;
    pt->kind = q[0];
    pt->in_off = get64(q + 1);
    pt->out_off = get64(q + 9);
    pt->check = get32(q + 17);
    pt->check_len = get32(q + 21);
    pt->state_len = get32(q + 25);
    q += 29;
    bool ordered = !prev ? pt->out_off == 0 && pt->in_off == 0
                         : pt->out_off > prev->out_off && pt->in_off >= prev->in_off;
    if (pt->kind > GZP_STATE || (size_t)(end - q) < pt->state_len || !ordered ||
        pt->state_len > compressBound(GZ_STATE_RAW) || pt->in_off > comp_size ||
        pt->out_off > size || pt->check_len > GZ_CHECK_LEN ||
        (pt->kind == GZP_STATE) != (pt->state_len > 0))
        return EINVAL;
    if (pt->state_len) {
        pt->state = malloc(pt->state_len);
        if (!pt->state)
            return ENOMEM;
        memcpy(pt->state, q, pt->state_len);
        q += pt->state_len;
    }
    *p = q;
    return 0;
}

int gz_index_load(const void *data, size_t len, uint64_t comp_size, struct gz_index **out)
{
    uint64_t size, span;
    uint32_t n;
    int rc = load_header(data, len, comp_size, &size, &span, &n);
    if (rc)
        return rc;
    const unsigned char *p = (const unsigned char *)data + 44;        /* the points */
    const unsigned char *end = (const unsigned char *)data + len - 4; /* the crc32 */
    struct gz_index *ix;
    rc = gz_index_new(comp_size, span, &ix);
    if (rc)
        return rc;
    ix->n = 0; /* the points come from the file, the first included */
    for (uint32_t i = 0; i < n && !rc; i++) {
        struct gz_point pt = {0};
        rc = load_point(&p, end, i ? &ix->pts[ix->n - 1] : NULL, comp_size, size, &pt);
        if (!rc && (rc = ix_add(ix, &pt)))
            free(pt.state);
    }
    if (!rc && (p != end || ix->n == 0))
        rc = EINVAL;
    if (rc) {
        gz_index_free(ix);
        return rc;
    }
    ix->complete = true;
    ix->size = size;
    *out = ix;
    return 0;
}

/* ---- a reader ------------------------------------------------------------ */

static struct metrics_series inflated_metric = {
    .name = "pailfs_gzip_inflated_bytes_total",
    .help = "Bytes inflated from gzip objects (including what a seek inflates and skips).",
    .kind = METRICS_COUNTER,
};

void gz_metrics_init(void)
{
    metrics_register(&inflated_metric, 1);
}

int gz_reader_new(struct gz_index *ix, gz_source_fn src, void *arg, struct gz_reader **out)
{
    gz_metrics_init();
    struct gz_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return ENOMEM;
    r->ix = ix;
    r->src = src;
    r->arg = arg;
    r->check_pt = SIZE_MAX;
#ifdef HAVE_ISAL
    r->st = calloc(1, sizeof(*r->st)); /* long-code tables start zeroed */
    bool engine = r->st != NULL;
#else
    bool engine = inflateInit2(&r->zs, 31) == Z_OK;
    r->zs_ready = engine;
#endif
    r->in = malloc(GZ_IN_CHUNK);
    r->scratch = malloc(GZ_SCRATCH);
    if (!engine || !r->in || !r->scratch) {
        gz_reader_free(r);
        return ENOMEM;
    }
    *out = r;
    return 0;
}

void gz_reader_free(struct gz_reader *r)
{
    if (!r)
        return;
#ifdef HAVE_ISAL
    free(r->st);
#else
    if (r->zs_ready)
        inflateEnd(&r->zs);
#endif
    free(r->in);
    free(r->scratch);
    free(r);
}

bool gz_reader_at(const struct gz_reader *r, uint64_t *pos)
{
    *pos = r->out_pos;
    return r->live;
}

#ifdef HAVE_ISAL
#define IN_NEXT(r) ((r)->st->next_in)
#define IN_AVAIL(r) ((r)->st->avail_in)
#else
#define IN_NEXT(r) ((r)->zs.next_in)
#define IN_AVAIL(r) ((r)->zs.avail_in)
#endif

static uint64_t in_pos(const struct gz_reader *r)
{
    return r->in_off + (uint64_t)(IN_NEXT(r) - r->in);
}

/* Point the input at compressed offset `off` (nothing buffered). */
static void in_seek(struct gz_reader *r, uint64_t off)
{
    r->in_off = off;
    r->in_len = 0;
    r->in_eof = off >= r->ix->comp_size;
    IN_NEXT(r) = r->in;
    IN_AVAIL(r) = 0;
}

static int in_fill(struct gz_reader *r)
{
    uint64_t off = in_pos(r);
    size_t keep = IN_AVAIL(r); /* unread bytes move to the front */
    if (keep)
        memmove(r->in, IN_NEXT(r), keep);
    r->in_off = off;
    size_t got = 0;
    int rc = 0;
    if (!r->in_eof && keep < GZ_IN_CHUNK) {
        rc = r->src(r->arg, off + keep, r->in + keep, GZ_IN_CHUNK - keep, &got);
        if (!rc && got < GZ_IN_CHUNK - keep)
            r->in_eof = true;
    }
    r->in_len = keep + got;
    IN_NEXT(r) = r->in;
    IN_AVAIL(r) = (uint32_t)r->in_len;
    return rc;
}

static void damaged(struct gz_reader *r, const char *why)
{
    pthread_mutex_lock(&r->ix->lock);
    /* out_pos is where the decoder met the damage: decode() hands out what
     * a failing inflate call produced (and, with ISA-L, what it decoded
     * ahead) before it reports the error, so every reader stops at the
     * same place whatever the sizes of its calls.  Should one still stop
     * short, the furthest position wins: a reader must not fail reads of
     * bytes another reader already produced. */
    bool first = r->ix->damage == UINT64_MAX;
    if (first || r->out_pos > r->ix->damage)
        r->ix->damage = r->out_pos;
    pthread_mutex_unlock(&r->ix->lock);
    if (first)
        log_error("gzip stream damaged at decompressed offset %llu (compressed offset %llu): "
                  "%s",
                  (unsigned long long)r->out_pos, (unsigned long long)in_pos(r), why);
    r->live = false;
}

#ifdef HAVE_ISAL
/* ---- what a restored ISA-L state may hold --------------------------------
 *
 * A point's state comes back from an index file, and an index file may
 * come from the bucket (gz_index=shared): its bytes are anyone's who may
 * write there, and the 4 KiB check only runs after the decoder has.  ISA-L
 * trusts its state completely (its assembly decoder indexes the Huffman
 * tables and copies by the lengths and distances they give without a
 * bounds check; tests/fuzz/fuzz_gzindex found a forged state writing past
 * the output buffer).  So a restored state must be one ISA-L itself could
 * have left between two calls, in every field that steers a memory access:
 *
 *   - block_state: at a block boundary, in a block header, in a stored or
 *     a Huffman-coded block (record_state records nothing else);
 *   - wrapper_flag 1 (past the gzip header), crc_flag ISAL_GZIP;
 *   - no pending overflow copy or write (isal_inflate returns with none);
 *   - bits buffered in read_in 0..64; a stored block's remaining length
 *     0..65535; header bytes kept only in a block header, at most
 *     ISAL_DEF_MAX_HDR_SIZE; 0 <= tmp_out_processed <= tmp_out_valid <=
 *     the size of tmp_out_buffer;
 *   - in a coded block, every table entry the decoder can reach well
 *     formed: a code length it can consume, a symbol within the deflate
 *     alphabet (literal/length symbols 0..512 once ISA-L folds the extra
 *     length bits in, distance symbols 0..29 with their RFC 1951 count of
 *     extra bits), and a long-code hint whose range lies inside the long
 *     table.  The layouts are ISA-L 2.30's (the saved index records the
 *     struct's size, so another layout is refused before this). */

#define LIT_SYM_MASK 0x1ffffffu /* short literal entry: symbols, bits 0-24 */
#define LIT_HINT_FLAG (1u << 25)
#define LIT_MAX_SYM 512u
#define DIST_HINT_FLAG (1u << 10)

static bool lit_long_ok(uint16_t l)
{
    unsigned len = l >> 10;
    return len == 0 || (len >= 13 && len <= 21 && (l & 0x3ffu) <= LIT_MAX_SYM);
}

static bool lit_table_ok(const struct inflate_huff_code_large *t)
{
    const size_t n_long = sizeof(t->long_code_lookup) / sizeof(t->long_code_lookup[0]);
    for (size_t i = 0; i < sizeof(t->short_code_lookup) / sizeof(t->short_code_lookup[0]); i++) {
        uint32_t e = t->short_code_lookup[i];
        if (e & LIT_HINT_FLAG) { /* a long code: the next bits index the long table */
            unsigned max_len = e >> 26;
            size_t off = e & LIT_SYM_MASK;
            if (max_len < 13 || max_len > 21 || off + (1u << (max_len - 12)) > n_long)
                return false;
            for (size_t k = off; k < off + (1u << (max_len - 12)); k++)
                if (!lit_long_ok(t->long_code_lookup[k]))
                    return false;
        } else if (e >> 28) { /* 1 to 3 symbols packed in one code */
            unsigned len = e >> 28, count = (e >> 26) & 3;
            if (len > 12 || count == 0 || ((e & LIT_SYM_MASK) >> (8 * (count - 1))) > LIT_MAX_SYM)
                return false;
        } /* else: no code has these bits (the decoder reports an invalid symbol) */
    }
    return true;
}

/* A distance entry with a code: symbol 0..29, its extra bits, bit 9 clear. */
static bool dist_code_ok(uint16_t d)
{
    unsigned sym = d & 0x1fu, extra = (d >> 5) & 0xfu;
    return sym < 30 && extra == (sym < 4 ? 0 : (sym - 2) / 2) && !(d & (1u << 9));
}

static bool dist_table_ok(const struct inflate_huff_code_small *t)
{
    const size_t n_long = sizeof(t->long_code_lookup) / sizeof(t->long_code_lookup[0]);
    for (size_t i = 0; i < sizeof(t->short_code_lookup) / sizeof(t->short_code_lookup[0]); i++) {
        uint16_t d = t->short_code_lookup[i];
        unsigned len = d >> 11;
        if (len == 0) {
            if (d > 15) /* no code: at most the bits still needed */
                return false;
        } else if (d & DIST_HINT_FLAG) {
            size_t off = d & 0x1ffu;
            if (len < 11 || off + (1u << (len - 10)) > n_long)
                return false;
            for (size_t k = off; k < off + (1u << (len - 10)); k++) {
                uint16_t l = t->long_code_lookup[k];
                unsigned llen = l >> 10;
                if (llen == 0 ? l > 15 : llen < 11 || !dist_code_ok(l))
                    return false;
            }
        } else if (len > 10 || !dist_code_ok(d)) {
            return false;
        }
    }
    return true;
}

/* Whether st is a state isal_inflate may be resumed from (see above). */
static bool isal_state_ok(const struct inflate_state *st)
{
    enum isal_block_state b = st->block_state;
    if (b != ISAL_BLOCK_NEW_HDR && b != ISAL_BLOCK_HDR && b != ISAL_BLOCK_TYPE0 &&
        b != ISAL_BLOCK_CODED)
        return false;
    if (st->wrapper_flag != 1 || st->write_overflow_lits || st->write_overflow_len ||
        st->copy_overflow_length || st->copy_overflow_distance)
        return false;
    if (st->read_in_length < 0 || st->read_in_length > 64)
        return false;
    if (b == ISAL_BLOCK_TYPE0 && (st->type0_block_len < 0 || st->type0_block_len > 65535))
        return false;
    if (st->tmp_in_size < 0 ||
        (b == ISAL_BLOCK_HDR ? st->tmp_in_size > ISAL_DEF_MAX_HDR_SIZE : st->tmp_in_size != 0))
        return false;
    if (st->tmp_out_processed < 0 || st->tmp_out_processed > st->tmp_out_valid ||
        (size_t)st->tmp_out_valid > sizeof(st->tmp_out_buffer))
        return false;
    return b != ISAL_BLOCK_CODED ||
           (lit_table_ok(&st->lit_huff_code) && dist_table_ok(&st->dist_huff_code));
}

static int restore(struct gz_reader *r, const struct gz_point *p)
{
    r->live = false; /* the decoder is overwritten: a failed restore leaves nothing to resume */
    r->st_error = 0;
    if (p->kind == GZP_STATE) {
        uLongf n = sizeof(*r->st);
        if (uncompress((Bytef *)r->st, &n, p->state, p->state_len) != Z_OK || n != sizeof(*r->st) ||
            !isal_state_ok(r->st))
            return EIO;
        r->st->crc_flag = ISAL_GZIP;
    } else {
        isal_inflate_init(r->st);
        r->st->crc_flag = ISAL_GZIP;
    }
    in_seek(r, p->in_off);
    r->out_pos = p->out_off;
    r->live = true;
    return 0;
}

#else
static int restore(struct gz_reader *r, const struct gz_point *p)
{
    r->live = false; /* the decoder is reset: a failed restore leaves nothing to resume */
    r->member_done = false;
    r->want_block = false;
    if (p->kind == GZP_STATE) {
        /* [bits][the byte they are in][window], as record_state left it */
        unsigned char *w = malloc(2 + GZ_WINDOW);
        uLongf n = 2 + GZ_WINDOW;
        bool ok = w && uncompress(w, &n, p->state, p->state_len) == Z_OK && n >= 2 && w[0] <= 7;
        ok = ok && inflateReset2(&r->zs, -15) == Z_OK &&
             (!w[0] || inflatePrime(&r->zs, w[0], w[1] >> (8 - w[0])) == Z_OK) &&
             inflateSetDictionary(&r->zs, w + 2, (uInt)(n - 2)) == Z_OK;
        free(w);
        if (!ok)
            return EIO;
        r->raw_member = true;
    } else {
        if (inflateReset2(&r->zs, 31) != Z_OK)
            return EIO;
        r->raw_member = false;
    }
    in_seek(r, p->in_off);
    r->out_pos = p->out_off;
    r->live = true;
    return 0;
}

#endif

/* Start the check of point `pt`: verify (a point being used) or fill (a
 * point just recorded) the CRC of its first `len` bytes of output. */
static void check_begin(struct gz_reader *r, size_t pt, bool verify, uint32_t len)
{
    r->check_pt = pt;
    r->check_verify = verify;
    r->check_crc = 0;
    r->check_done = 0;
    r->check_want = len;
}

/* Add an access point at the current position whose state is `raw`
 * (stored zlib-compressed), unless another reader already passed here. */
static void add_state_point(struct gz_reader *r, const void *raw, size_t raw_len)
{
    uLongf n = compressBound(raw_len);
    unsigned char *z = malloc(n);
    if (z && compress2(z, &n, raw, raw_len, 6) == Z_OK) {
        struct gz_point p = {.in_off = in_pos(r),
                             .out_off = r->out_pos,
                             .kind = GZP_STATE,
                             .state = z,
                             .state_len = (uint32_t)n};
        pthread_mutex_lock(&r->ix->lock);
        bool frontier = r->out_pos > r->ix->pts[r->ix->n - 1].out_off;
        if (frontier && ix_add(r->ix, &p) == 0) {
            z = NULL;
            check_begin(r, r->ix->n - 1, false, GZ_CHECK_LEN);
        }
        pthread_mutex_unlock(&r->ix->lock);
    }
    free(z);
}

#ifdef HAVE_ISAL
/* Snapshot the decoder as an access point at the current position. */
static void record_state(struct gz_reader *r)
{
    if (r->st_error || !isal_state_ok(r->st))
        return; /* e.g. in a member's trailer: a later call will be a point */
    struct inflate_state *c = malloc(sizeof(*c));
    if (!c)
        return;
    *c = *r->st;
    c->next_in = NULL;
    c->next_out = NULL;
    c->avail_in = c->avail_out = 0;
    size_t valid = c->tmp_out_valid > 0 ? (size_t)c->tmp_out_valid : 0;
    if (valid < sizeof(c->tmp_out_buffer))
        memset(c->tmp_out_buffer + valid, 0, sizeof(c->tmp_out_buffer) - valid);
    size_t inv = c->tmp_in_size > 0 ? (size_t)c->tmp_in_size : 0;
    if (inv < sizeof(c->tmp_in_buffer))
        memset(c->tmp_in_buffer + inv, 0, sizeof(c->tmp_in_buffer) - inv);
    add_state_point(r, c, sizeof(*c));
    free(c);
}

#else
/* An access point here, at a deflate block boundary (inflate just
 * returned there with Z_BLOCK): the bits left in the last byte taken, that
 * byte, and the window of the last 32 KiB of output. */
static void record_state(struct gz_reader *r)
{
    unsigned bits = (unsigned)r->zs.data_type & 7;
    if (bits && IN_NEXT(r) == r->in)
        return; /* that byte left the buffer: the next boundary will do */
    r->want_block = false;
    unsigned char *w = malloc(2 + GZ_WINDOW);
    uInt wl = GZ_WINDOW;
    if (!w || inflateGetDictionary(&r->zs, w + 2, &wl) != Z_OK) {
        free(w);
        return;
    }
    w[0] = (unsigned char)bits;
    w[1] = bits ? IN_NEXT(r)[-1] : 0;
    add_state_point(r, w, 2 + wl);
    free(w);
}

#endif

static void record_fresh(struct gz_reader *r)
{
    struct gz_point p = {.in_off = in_pos(r), .out_off = r->out_pos, .kind = GZP_FRESH};
    pthread_mutex_lock(&r->ix->lock);
    if (r->out_pos > r->ix->pts[r->ix->n - 1].out_off && ix_add(r->ix, &p) == 0)
        check_begin(r, r->ix->n - 1, false, GZ_CHECK_LEN);
    pthread_mutex_unlock(&r->ix->lock);
}

/* Whether the index needs a point here: a member start once 3/4 of a span
 * past the last point (it costs no decoder state), any place once a whole
 * span past it.  Files of small members (bgzip) so get only free points. */
static bool wants_point(struct gz_reader *r, bool member_start)
{
    pthread_mutex_lock(&r->ix->lock);
    uint64_t gap = member_start ? r->ix->span / 4 * 3 : r->ix->span;
    bool want = !r->ix->complete && r->out_pos >= r->ix->pts[r->ix->n - 1].out_off + gap;
    pthread_mutex_unlock(&r->ix->lock);
    return want;
}

/* The index wants a point at the current position: ISA-L's state is a
 * point anywhere; zlib needs the next block boundary, where decode()
 * stops while want_block is set. */
static void point_wanted(struct gz_reader *r)
{
#ifdef HAVE_ISAL
    record_state(r);
#else
    r->want_block = true;
#endif
}

/* `want` cut so that the output stops where the index wants its next
 * point: points then land a span apart, not a span plus a read's size. */
static size_t point_room(struct gz_reader *r, size_t want)
{
    pthread_mutex_lock(&r->ix->lock);
    uint64_t at = r->ix->pts[r->ix->n - 1].out_off + r->ix->span;
    if (!r->ix->complete && at > r->out_pos && at - r->out_pos < want)
        want = (size_t)(at - r->out_pos);
    pthread_mutex_unlock(&r->ix->lock);
    return want;
}

/* Feed produced bytes to the pending check; EIO when a used point does
 * not produce what it produced when it was recorded. */
static int check_feed(struct gz_reader *r, const unsigned char *p, size_t n, bool at_end)
{
    if (r->check_pt == SIZE_MAX)
        return 0;
    size_t k = r->check_want - r->check_done < n ? r->check_want - r->check_done : n;
    r->check_crc = (uint32_t)crc32(r->check_crc, p, (uInt)k);
    r->check_done += (uint32_t)k;
    if (r->check_done < r->check_want && !at_end)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&r->ix->lock);
    struct gz_point *pt = &r->ix->pts[r->check_pt];
    uint64_t at = pt->out_off;
    if (r->check_verify) {
        if (pt->check != r->check_crc)
            rc = EIO;
    } else {
        pt->check = r->check_crc;
        pt->check_len = r->check_done;
    }
    pthread_mutex_unlock(&r->ix->lock);
    r->check_pt = SIZE_MAX;
    if (rc) {
        log_error("gzip index does not match the object at decompressed offset %llu",
                  (unsigned long long)at);
        r->live = false;
    }
    return rc;
}

/* The stream ended at the current position. */
static void stream_end(struct gz_reader *r)
{
    pthread_mutex_lock(&r->ix->lock);
    if (!r->ix->complete) {
        r->ix->complete = true;
        r->ix->size = r->out_pos;
    }
    pthread_mutex_unlock(&r->ix->lock);
}

/* Start decoding a member whose header is at the input (state reset,
 * the input kept). */
static int member_reset(struct gz_reader *r)
{
#ifdef HAVE_ISAL
    size_t keep = r->st->avail_in;
    unsigned char *next = r->st->next_in;
    isal_inflate_init(r->st);
    r->st->crc_flag = ISAL_GZIP;
    r->st->next_in = next;
    r->st->avail_in = (uint32_t)keep;
#else
    if (inflateReset2(&r->zs, 31) != Z_OK)
        return EIO;
    r->member_done = false;
#endif
    return 0;
}

/* A member ended: another one follows (the decoder is reset for it), or
 * the data ends here (*end), at the end of the object or where bytes that
 * are not a gzip header follow, which gzip -d ignores too. */
static int member_next(struct gz_reader *r, bool *end)
{
    if (IN_AVAIL(r) < 3 && !r->in_eof) {
        int rc = in_fill(r);
        if (rc)
            return rc;
    }
    if (IN_AVAIL(r) && !gz_is_gzip(IN_NEXT(r), IN_AVAIL(r))) {
        pthread_mutex_lock(&r->ix->lock);
        bool warn = !r->ix->warned_trailing;
        r->ix->warned_trailing = true;
        pthread_mutex_unlock(&r->ix->lock);
        if (warn)
            log_warn("gzip stream: %llu bytes after the last member ignored",
                     (unsigned long long)(r->ix->comp_size - in_pos(r)));
    }
    if (IN_AVAIL(r) == 0 || !gz_is_gzip(IN_NEXT(r), IN_AVAIL(r))) {
        stream_end(r);
        *end = true;
        return check_feed(r, NULL, 0, true);
    }
    int rc = member_reset(r);
    if (!rc && wants_point(r, true))
        record_fresh(r);
    return rc;
}

#ifdef HAVE_ISAL
/* After isal_inflate failed: up to `want` of the bytes it decoded before
 * the damage but did not hand out, into buf.  With little room in the
 * caller's buffer ISA-L decodes ahead into tmp_out_buffer (up to 64 KiB);
 * when it meets the damage there it still copies out what fits, sets
 * tmp_out_valid to the end of what it decoded and returns the error, so
 * [tmp_out_processed, tmp_out_valid) are right bytes still to come
 * (ISA-L 2.30's isal_inflate). */
static size_t held_output(struct gz_reader *r, unsigned char *buf, size_t want)
{
    struct inflate_state *st = r->st;
    int32_t from = st->tmp_out_processed, to = st->tmp_out_valid;
    if (from < 0 || to < from || (size_t)to > sizeof(st->tmp_out_buffer))
        return 0;
    size_t k = (size_t)(to - from) < want ? (size_t)(to - from) : want;
    memcpy(buf, st->tmp_out_buffer + from, k);
    st->tmp_out_processed += (int32_t)k;
    return k;
}

/* Inflate up to `want` bytes into buf.  *n bytes came out; *end: the
 * stream is over.  Handles refills and member boundaries.
 *
 * Damage: before invalid data, every byte decoded ahead of it comes out
 * first, and the call after the last of them fails.  So the damage is
 * where the data goes bad, the same for every reader, not where its
 * failing isal_inflate call happened to begin.  A failed CRC says only
 * that some byte of the member is wrong, not which: the call that met it
 * fails with its output.  Only a call that produces the member's last
 * byte meets the check, so no read that ends before where another
 * reader's failing call began can fail there. */
static int decode(struct gz_reader *r, unsigned char *buf, size_t want, size_t *n, bool *end)
{
    *n = 0;
    *end = false;
    for (;;) {
        struct inflate_state *st = r->st;
        uint32_t in_before = st->avail_in;
        size_t got;
        int rc = 0;
        if (r->st_error) {
            got = held_output(r, buf, want);
            if (!got) {
                damaged(r, "invalid deflate data");
                return EIO;
            }
        } else {
            if (st->block_state == ISAL_BLOCK_FINISH) {
                rc = member_next(r, end);
                if (rc || *end)
                    return rc;
            }
            if (st->avail_in == 0 && !r->in_eof) {
                rc = in_fill(r);
                if (rc)
                    return rc;
            }
            st->next_out = buf;
            st->avail_out = (uint32_t)want;
            in_before = st->avail_in;
            rc = isal_inflate(st);
            if (rc < 0 && rc != ISAL_END_INPUT && rc != ISAL_INCORRECT_CHECKSUM)
                r->st_error = rc; /* what it produced is right: that first */
            got = want - st->avail_out;
        }
        r->out_pos += got;
        metrics_add(&inflated_metric, (int64_t)got);
        if (rc == ISAL_INCORRECT_CHECKSUM) {
            r->out_pos -= got;
            damaged(r, "CRC or length check failed");
            return EIO;
        }
        if (got) {
            int crc = check_feed(r, buf, got, false);
            if (crc)
                return crc;
            *n = got;
            return 0;
        }
        if (r->st_error || st->block_state == ISAL_BLOCK_FINISH)
            continue;
        if (st->avail_in == in_before && r->in_eof) {
            damaged(r, "the compressed object ends in the middle of the stream");
            return EIO;
        }
    }
}

#else
/* A member decoded to its end: on to the next one (*end: there is none).
 * A member resumed in its middle was inflated raw, so its trailer (CRC and
 * size, which cannot be checked) is skipped first. */
static int member_after(struct gz_reader *r, bool *end)
{
    z_stream *zs = &r->zs;
    if (r->raw_member) {
        while (zs->avail_in < 8 && !r->in_eof) {
            int rc = in_fill(r);
            if (rc)
                return rc;
        }
        if (zs->avail_in < 8) {
            damaged(r, "the compressed object ends in the middle of the stream");
            return EIO;
        }
        zs->next_in += 8;
        zs->avail_in -= 8;
        r->raw_member = false;
    }
    return member_next(r, end);
}

/* Inflate up to `want` bytes into buf.  *n bytes came out; *end: the
 * stream is over.  Handles refills and member boundaries. */
static int decode(struct gz_reader *r, unsigned char *buf, size_t want, size_t *n, bool *end)
{
    *n = 0;
    *end = false;
    z_stream *zs = &r->zs;
    for (;;) {
        if (r->member_done) {
            int rc = member_after(r, end);
            if (rc || *end)
                return rc;
        }
        if (zs->avail_in == 0 && !r->in_eof) {
            int rc = in_fill(r);
            if (rc)
                return rc;
        }
        zs->next_out = buf;
        zs->avail_out = (uInt)want;
        uInt in_before = zs->avail_in;
        int zr = inflate(zs, r->want_block ? Z_BLOCK : Z_NO_FLUSH);
        size_t got = want - zs->avail_out;
        r->out_pos += got;
        bool crc_failed = zr == Z_DATA_ERROR && zs->msg && strstr(zs->msg, "check");
        if (zr == Z_STREAM_END) {
            r->member_done = true;
        } else if (zr == Z_MEM_ERROR || crc_failed || (zr != Z_OK && zr != Z_BUF_ERROR && !got)) {
            r->out_pos -= got; /* a failed CRC takes the whole call: see the ISA-L decode() */
            if (zr == Z_MEM_ERROR)
                return ENOMEM;
            damaged(r, crc_failed ? "CRC or length check failed" : "invalid deflate data");
            return EIO;
        } /* else what came out precedes invalid data and is right; the stream
           * stays in its error state, so the next call reports it there */
        bool boundary =
            r->want_block && !r->member_done && (zs->data_type & 128) && !(zs->data_type & 64);
        if (got) {
            /* what came out precedes the boundary: it belongs to the
             * previous point's check, never to the one recorded here */
            int crc = check_feed(r, buf, got, false);
            if (crc)
                return crc;
            if (boundary)
                record_state(r);
            *n = got;
            return 0;
        }
        if (boundary)
            record_state(r);
        if (r->member_done)
            continue;
        if (zs->avail_in == in_before && r->in_eof) {
            damaged(r, "the compressed object ends in the middle of the stream");
            return EIO;
        }
    }
}

#endif

/* Just restored to point `lo`: its first check_len bytes, decoded into
 * scratch and checked before any is used; those at or after `off` go to
 * dst (*got, at most len).  *end: the stream ended within them. */
static int read_checked(struct gz_reader *r, size_t lo, uint32_t check_len, uint64_t off,
                        unsigned char *dst, size_t len, size_t *got, bool *end)
{
    check_begin(r, lo, true, check_len);
    uint64_t from = r->out_pos;
    size_t have = 0;
    *end = false;
    while (r->check_pt != SIZE_MAX && !*end) {
        size_t n;
        int rc = decode(r, r->scratch + have, check_len - have, &n, end);
        if (rc)
            return rc;
        have += n;
    }
    if (off < from + have) {
        size_t k = (size_t)(from + have - off) < len ? (size_t)(from + have - off) : len;
        memcpy(dst, r->scratch + (off - from), k);
        *got = k;
    }
    return 0;
}

/* Restart the reader at the index point at or before `off`, unless it is
 * where the reader already is or behind it; the point's checked bytes
 * may already give some of the read (*got; *end: the stream ended). */
static int seek_point(struct gz_reader *r, uint64_t off, unsigned char *dst, size_t len,
                      size_t *got, bool *end)
{
    struct gz_index *ix = r->ix;
    pthread_mutex_lock(&ix->lock);
    size_t lo = point_at_or_before(ix, off);
    struct gz_point p = ix->pts[lo];
    pthread_mutex_unlock(&ix->lock);
    if (r->live && off >= r->out_pos && p.out_off <= r->out_pos)
        return 0; /* going on from where the reader is costs no more */
    int rc = restore(r, &p);
    if (rc) {
        log_error("gzip index point at %llu is corrupt", (unsigned long long)p.out_off);
        return rc;
    }
    r->check_pt = SIZE_MAX;
    return p.check_len ? read_checked(r, lo, p.check_len, off, dst, len, got, end) : 0;
}

/* Decode up to `off`, dropping the bytes (and recording the index points
 * passed).  *end: the stream ended first. */
static int skip_to(struct gz_reader *r, uint64_t off, bool *end)
{
    while (r->out_pos < off) {
        uint64_t gap = off - r->out_pos;
        size_t n;
        int rc = decode(r, r->scratch, point_room(r, gap < GZ_SCRATCH ? (size_t)gap : GZ_SCRATCH),
                        &n, end);
        if (rc || *end)
            return rc;
        if (wants_point(r, false))
            point_wanted(r);
    }
    return 0;
}

int gz_read(struct gz_reader *r, uint64_t off, void *dst, size_t len, size_t *got)
{
    struct gz_index *ix = r->ix;
    *got = 0;
    pthread_mutex_lock(&ix->lock);
    bool complete = ix->complete;
    uint64_t size = ix->size, damage = ix->damage, span = ix->span;
    pthread_mutex_unlock(&ix->lock);
    if (complete && off >= size)
        return 0;
    if (off >= damage)
        return EIO;
    unsigned char *out = dst;
    bool end = false;
    int rc = 0;
    if (!r->live || off < r->out_pos || off - r->out_pos > span)
        rc = seek_point(r, off, out, len, got, &end);
    if (!rc && !end)
        rc = skip_to(r, off, &end);
    while (!rc && !end && *got < len) {
        size_t want = point_room(r, len - *got < GZ_OUT_STEP ? len - *got : GZ_OUT_STEP), n;
        rc = decode(r, out + *got, want, &n, &end);
        if (rc)
            return rc; /* the read that reaches damage fails as a whole */
        *got += n;
        if (!end && wants_point(r, false))
            point_wanted(r);
    }
    return rc;
}
