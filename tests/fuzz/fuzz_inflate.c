/* fuzz_inflate.c — the gzip view's inflater (src/gz) on any stream.
 *
 * The first input byte steers the read sizes and offsets; the rest is the
 * compressed object.  A reader reads it front to back (up to 4 MiB of
 * output, recording access points every 64 KiB); zlib decodes the same
 * bytes member after member with the same rule for what follows the last
 * member.  Checked:
 *   - gz_read returns 0 or EIO, never more than asked;
 *   - the two decoders agree on every byte both produced;
 *   - where zlib decodes the whole stream cleanly, the view holds exactly
 *     zlib's bytes and no error;
 *   - reads at offsets out of order, through the access points the first
 *     pass recorded, give the same bytes as the first pass. */
#include "fuzz.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <zlib.h>

#include "gz/gz.h"

#define OUT_CAP (4u << 20)
#define SPAN (64u << 10)

/* zlib's reading of the object: members one after another while a gzip
 * header follows the last; *clean when the data ended where it may. */
static size_t zlib_reference(const uint8_t *d, size_t n, uint8_t *out, size_t cap, bool *clean)
{
    z_stream z = {0};
    *clean = false;
    FUZZ_ASSERT(inflateInit2(&z, 31) == Z_OK);
    z.next_in = (Bytef *)d;
    z.avail_in = (uInt)n;
    size_t have = 0;
    while (have < cap) {
        z.next_out = out + have;
        z.avail_out = (uInt)(cap - have);
        int zr = inflate(&z, Z_NO_FLUSH);
        have = cap - z.avail_out;
        if (zr == Z_STREAM_END) {
            if (gz_is_gzip(z.next_in, z.avail_in)) {
                inflateReset(&z);
                continue;
            }
            *clean = true;
            break;
        }
        if (zr != Z_OK)
            break; /* damaged, or the input ended inside a member */
    }
    inflateEnd(&z);
    return have;
}

static uint32_t next_rand(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

FUZZ_TARGET(inflate)
{
    fuzz_quiet_logs();
    if (size < 1)
        return 0;
    uint32_t seed = data[0];
    struct fuzz_mem m = {data + 1, size - 1};
    static uint8_t view[OUT_CAP], ref[OUT_CAP], part[OUT_CAP];

    struct gz_index *ix;
    struct gz_reader *r;
    FUZZ_ASSERT(gz_index_new(m.n, SPAN, &ix) == 0);
    FUZZ_ASSERT(gz_reader_new(ix, fuzz_mem_source, &m, &r) == 0);
    size_t step = 1 + (size_t)(seed * 4099u) % (3 * SPAN), pos = 0;
    int rc = 0;
    bool ended = false;
    while (pos < OUT_CAP) {
        size_t want = OUT_CAP - pos < step ? OUT_CAP - pos : step, got = 0;
        rc = gz_read(r, pos, view + pos, want, &got);
        FUZZ_ASSERT(rc == 0 || rc == EIO);
        FUZZ_ASSERT(got <= want);
        if (rc)
            break;
        pos += got;
        if (got < want) {
            ended = true;
            break;
        }
    }

    bool clean;
    size_t zn = zlib_reference(m.p, m.n, ref, OUT_CAP, &clean);
    size_t common = pos < zn ? pos : zn;
    FUZZ_ASSERT(memcmp(view, ref, common) == 0);
    if (clean && zn < OUT_CAP) {
        FUZZ_ASSERT(rc == 0 && ended && pos == zn);
        uint64_t sz;
        FUZZ_ASSERT(gz_index_size(ix, &sz) && sz == zn);
    }

    /* out of order, through the points, by a second reader */
    if (pos > 0) {
        struct gz_reader *r2;
        FUZZ_ASSERT(gz_reader_new(ix, fuzz_mem_source, &m, &r2) == 0);
        for (int i = 0; i < 8; i++) {
            size_t off = next_rand(&seed) % pos;
            size_t len = 1 + next_rand(&seed) % (2 * SPAN), got = 0;
            if (len > OUT_CAP)
                len = OUT_CAP;
            int rc2 = gz_read(r2, off, part, len, &got);
            FUZZ_ASSERT(rc2 == 0 || rc2 == EIO);
            if (off + len <= pos)
                FUZZ_ASSERT(rc2 == 0 && got == len);
            if (rc2 == 0) {
                size_t k = off + got <= pos ? got : pos - off;
                FUZZ_ASSERT(memcmp(part, view + off, k) == 0);
            }
        }
        gz_reader_free(r2);
    }
    gz_reader_free(r);
    gz_index_free(ix);
    return 0;
}
