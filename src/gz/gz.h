/* gz.h — gzip objects read decompressed, at any offset.
 *
 * The gzip view layer knows nothing of S3: compressed bytes come from a
 * callback.  A gz_index holds the access points of one object version
 * (where decompression can resume without starting from byte 0) and is
 * shared by every reader of that version; a gz_reader is one cursor (one
 * open file).  How access points work is explained at the top of gz.c. */
#ifndef PAILFS_GZ_H
#define PAILFS_GZ_H

#include "util/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Compressed bytes [off, off+len) into buf; *got < len only at the end of
 * the object.  Called on the thread that called gz_read().  0 or errno. */
typedef int (*gz_source_fn)(void *arg, uint64_t off, void *buf, size_t len, size_t *got);

/* Whether these first bytes of an object are a gzip header (1f 8b 08). */
bool gz_is_gzip(const void *head, size_t len);

struct gz_index;

/* An empty index for a compressed object of comp_size bytes, with an
 * access point every `span` bytes of output (0: the default, 8 MiB).
 * *out is freed with gz_index_free.  0 or ENOMEM. */
int gz_index_new(uint64_t comp_size, uint64_t span, struct gz_index **out);
void gz_index_free(struct gz_index *ix);
/* The decompressed size, once some reader reached the end (or the index
 * was loaded complete). */
bool gz_index_size(struct gz_index *ix, uint64_t *size);
/* Access points recorded so far. */
size_t gz_index_points(struct gz_index *ix);
/* Serialise a complete index (EAGAIN while incomplete) into *out
 * (appended; caller frees with buf_free).  0, EAGAIN, ENOMEM. */
int gz_index_save(struct gz_index *ix, struct buf *out);
/* An index from gz_index_save's bytes, for an object of comp_size bytes.
 * EINVAL when the bytes are corrupt, foreign, of another object size, of
 * an incompatible inflater build, longer than gz_index_max_bytes or with
 * a size beyond gz_size_max.  *out as for gz_index_new. */
int gz_index_load(const void *data, size_t len, uint64_t comp_size, struct gz_index **out);
/* The most bytes a gzip object of comp_size bytes can decompress to:
 * deflate's limit of 1032 bytes out per byte in (saturating). */
uint64_t gz_size_max(uint64_t comp_size);
/* The longest index gz_index_save can write for an object of comp_size
 * bytes (how it is reckoned is said in gz.c): a longer one is forged or
 * foreign, and can be refused before it is read. */
uint64_t gz_index_max_bytes(uint64_t comp_size);
/* A damaged stream: the decompressed offset up to which the data came out
 * right before a reader met the damage (the furthest such offset any
 * reader reached), or UINT64_MAX.  Reads at or past it fail with EIO. */
uint64_t gz_index_damage(struct gz_index *ix);

/* The first access point after decompressed offset `off` into *next, or
 * the end of the data when the index is complete and no point follows.
 * false when neither is known yet (`off` is past the index's frontier). */
bool gz_index_next_point(struct gz_index *ix, uint64_t off, uint64_t *next);
/* Whether an access point sits exactly at `off`: a reader starts there
 * without inflating anything before it. */
bool gz_index_is_point(struct gz_index *ix, uint64_t off);

struct gz_reader;

/* A cursor over the object of `ix`, reading compressed bytes through
 * src(arg, ...).  The index must outlive the reader.  0 or ENOMEM. */
int gz_reader_new(struct gz_index *ix, gz_source_fn src, void *arg, struct gz_reader **out);
void gz_reader_free(struct gz_reader *r);
/* Decompressed bytes [off, off+len) into dst; *got < len only at the end
 * of the data (0 past it).  A read is served from the nearest access point
 * at or before `off`, inflating at most one span before it, or from the
 * cursor when it is already there; access points are recorded as output
 * passes the end of the index.  Not thread-safe for one reader.
 * 0, EIO (corrupt or truncated stream, or an index that does not match
 * the object; logged once with the offset), the source's errno, ENOMEM. */
int gz_read(struct gz_reader *r, uint64_t off, void *dst, size_t len, size_t *got);
/* Where this reader's cursor stands: true and *pos when a read at *pos
 * continues without restoring an access point. */
bool gz_reader_at(const struct gz_reader *r, uint64_t *pos);
/* Register the layer's metric (bytes inflated by every reader) with
 * util's registry now rather than at the first reader.  Thread-safe. */
void gz_metrics_init(void);

#endif
