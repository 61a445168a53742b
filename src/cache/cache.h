/* cache.h — the on-disk block cache.
 *
 * Blocks of objects are kept on local disk so that a re-read, even after
 * a remount, costs no GET.  A block is named by its object version — an
 * identity string the caller builds from (endpoint, bucket, key, ETag) —
 * and its number, so a block of a replaced object can never be served for
 * the new one: the new ETag names other files.  The blocks of an object
 * version share sparse files, 64 blocks to a file (no file per block).
 * Each block carries a CRC32C of every 4 KiB page of its bytes; a read
 * checks the pages it returns, and a block that fails is removed and
 * reported as missing.  A block is readable only once its bytes and
 * checksums are written, and a crash while one is written leaves a block
 * that fails its check (never served) or none.
 *
 * The total size is bounded: inserting evicts the least recently used
 * blocks first (use times are written beside the blocks every 30 seconds
 * and at close, so the order survives a restart); an evicted block's disk
 * space is given back at once (a hole punched in its file, or the file
 * removed with its last block).  The files of recently read blocks are
 * kept open (at most 1024 descriptors, and at most a quarter of the
 * process's RLIMIT_NOFILE at open) so a small read costs one preadv; a
 * removed file is closed once no read uses it, so no deleted file stays
 * open.  A cache directory belongs to one process at a time (a lock
 * file); a second process gets EBUSY.
 *
 * All functions are thread-safe.  Layer prefix: cache_. */
#ifndef PAILFS_CACHE_H
#define PAILFS_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cache;

/* Open (creating it if needed, mode 0700) the cache in `dir`, bounded by
 * `limit` bytes, and index what an earlier process left there.  `limit` 0
 * gives a cache that stores nothing.  `dir` must be private, as
 * util_private_dir() checks (another user could plant blocks): its lock
 * file is never followed if it is a symbolic link.  0, EBUSY (another
 * process holds `dir`; *owner gets its pid when known, else 0), EPERM or
 * ELOOP (`dir` is not private, or its lock file is a symbolic link:
 * logged), or the errno of creating or reading the directory. */
int cache_open(const char *dir, uint64_t limit, struct cache **out, pid_t *owner);
void cache_close(struct cache *c);

/* The default bound for a cache in `dir`: the smaller of 10 GiB and 10% of
 * the free space of its filesystem. */
uint64_t cache_default_limit(const char *dir);

/* Copy block `blockno` of object version `id` into buf (capacity cap; the
 * bytes past *len, up to cap, may be overwritten).  When buf is
 * page-aligned and cap holds the block's whole pages, it is read around
 * the page cache (O_DIRECT, where the filesystem allows it): blocks read
 * whole are a sequential reader's, written around it too.  0 (and *len),
 * ENOENT (not cached, or dropped because its checksum or size was wrong —
 * logged), or another errno of reading it. */
int cache_get(struct cache *c, const char *id, uint64_t blockno, void *buf, size_t cap,
              size_t *len);

/* Copy bytes [off, off + len) of block `blockno` of object version `id`
 * into buf (len bytes), reading and checking only the 4 KiB pages they
 * cover: what a small read of a big block costs.  0 and *got (len, or
 * fewer when the block ends first; 0 when off is at or past its end),
 * ENOENT (not cached, or dropped because a checksum or its size was wrong
 * — logged), or another errno of reading it. */
int cache_read(struct cache *c, const char *id, uint64_t blockno, uint64_t off, size_t len,
               void *buf, size_t *got);

/* The largest block the cache holds: 1 MiB. */
#define CACHE_MAX_BLOCK (1u << 20)

/* Store a block (replacing a copy already there).  0, ENOSPC (the disk is
 * full: the block is not kept, logged once), EFBIG (larger than the whole
 * cache, or than CACHE_MAX_BLOCK), or another errno.  Failures never
 * affect what the cache holds.  flags 0, or CACHE_STORE_DIRECT: the block
 * will not be read again soon (a sequential reader's): write it around
 * the page cache (O_DIRECT) when data is page-aligned and len a multiple
 * of 4 KiB, which saves copying it and keeps the page cache for what is
 * re-read; otherwise, or where the filesystem refuses O_DIRECT, through
 * the page cache as with 0. */
#define CACHE_STORE_DIRECT 1u
int cache_store(struct cache *c, const char *id, uint64_t blockno, const void *data, size_t len,
                unsigned flags);

/* The size of the checksummed pages of a block: 4 KiB. */
#define CACHE_PAGE_SIZE 4096u

/* cache_store(), with the page checksums the caller computed as the bytes
 * came, while they were in the CPU's cache (a 1 MiB block read back for
 * its CRCs comes from memory again: a sixth of a cold read's CPU, issue
 * 21).  page_crcs[i] is cache_crc32c() of the i-th CACHE_PAGE_SIZE bytes
 * of data (the last page may be short), from crc 0.  A wrong one is kept
 * as given: the block then fails its check when read (dropped, reported
 * missing), never served. */
int cache_store_summed(struct cache *c, const char *id, uint64_t blockno, const void *data,
                       size_t len, const uint32_t *page_crcs, unsigned flags);

/* CRC-32C (Castagnoli) of len bytes continued from `crc`, without the
 * customary inversions, as ISA-L's crc32_iscsi() computes it (the block
 * checksums): ISA-L's when built with it, else a table-driven C version,
 * so both builds read each other's cache.  cache_crc32c("123456789", 9, 0)
 * is 0x58e3fa20. */
uint32_t cache_crc32c(const void *data, size_t len, uint32_t crc);

/* Bytes the cache holds now. */
uint64_t cache_size(struct cache *c);
/* Its bound, as cache_open set it.  Test-only: tests/unit/test_cache.c
 * checks the bound it was given; nothing in pailfs calls it. */
uint64_t cache_limit(struct cache *c);

#endif
