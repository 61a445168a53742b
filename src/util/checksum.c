/* checksum.c — CRC-32C, CRC-64/NVME and base64, for the block cache's
 * checksums and for S3's x-amz-checksum-* headers.
 *
 * CRC-32C is ISA-L's crc32_iscsi() when pailfs is built with ISA-L (a few
 * cycles per 64 bytes), else a slicing-by-8 table in C that computes the
 * same value, so both builds read each other's cache.  Its convention is
 * ISA-L's: no inversions, the caller passes the running value (the block
 * cache starts from 0; S3's CRC32C starts from ~0 and inverts the end).
 *
 * CRC-64/NVME (the "Rocksoft" polynomial, reflected, init and xorout all
 * ones) has no routine in the ISA-L that pailfs links, so it is a
 * slicing-by-8 table here. */
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#ifdef HAVE_ISAL
#include <isa-l/crc.h>
#endif

/* ---- CRC-32C ------------------------------------------------------------ */

#ifdef HAVE_ISAL
uint32_t util_crc32c(const void *data, size_t len, uint32_t crc)
{
    return crc32_iscsi((unsigned char *)data, (int)len, crc);
}
#else
static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc32c_table[t][n] =
                (crc32c_table[t - 1][n] >> 8) ^ crc32c_table[0][crc32c_table[t - 1][n] & 0xff];
}

uint32_t util_crc32c(const void *data, size_t len, uint32_t crc)
{
    pthread_once(&crc32c_once, crc32c_init);
    const unsigned char *p = data;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
              crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
              crc32c_table[3][p[4]] ^ crc32c_table[2][p[5]] ^ crc32c_table[1][p[6]] ^
              crc32c_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p++) & 0xff];
    return crc;
}
#endif

/* ---- CRC-64/NVME -------------------------------------------------------- */

#define CRC64NVME_POLY 0x9a6c9329ac4bc9b5ULL /* 0xad93d23594c93659 reflected */

static uint64_t crc64_table[8][256];
static pthread_once_t crc64_once = PTHREAD_ONCE_INIT;

static void crc64_init(void)
{
    for (uint64_t n = 0; n < 256; n++) {
        uint64_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ CRC64NVME_POLY : c >> 1;
        crc64_table[0][n] = c;
    }
    for (int n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc64_table[t][n] =
                (crc64_table[t - 1][n] >> 8) ^ crc64_table[0][crc64_table[t - 1][n] & 0xff];
}

uint64_t util_crc64nvme(const void *data, size_t len, uint64_t crc)
{
    pthread_once(&crc64_once, crc64_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (len >= 8) {
        uint64_t v = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
                     (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
                     (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
        v ^= crc;
        crc = crc64_table[7][v & 0xff] ^ crc64_table[6][(v >> 8) & 0xff] ^
              crc64_table[5][(v >> 16) & 0xff] ^ crc64_table[4][(v >> 24) & 0xff] ^
              crc64_table[3][(v >> 32) & 0xff] ^ crc64_table[2][(v >> 40) & 0xff] ^
              crc64_table[1][(v >> 48) & 0xff] ^ crc64_table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc64_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

/* ---- base64 ------------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t util_base64_encode(const void *data, size_t len, char *out)
{
    const unsigned char *p = data;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64chars[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64chars, c) : NULL;
    return p ? (int)(p - b64chars) : -1;
}

int util_base64_decode(const char *text, size_t text_len, unsigned char *out, size_t cap,
                       size_t *len_out)
{
    if (text_len % 4)
        return EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < text_len; i += 4) {
        bool last = i + 4 == text_len;
        int pad = last ? (text[i + 3] == '=') + (text[i + 3] == '=' && text[i + 2] == '=') : 0;
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = k >= 4 - pad ? 0 : b64_value(text[i + k]);
            if (v[k] < 0)
                return EINVAL;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t n = 3 - (size_t)pad;
        if (o + n > cap)
            return EINVAL;
        for (size_t k = 0; k < n; k++)
            out[o++] = (unsigned char)(w >> (16 - 8 * k));
    }
    *len_out = o;
    return 0;
}
