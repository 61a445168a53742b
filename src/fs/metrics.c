/* metrics.c — the series of the filesystem (registered by fs_new), bumped
 * by the read and write paths and gzip views. */
#include "fs/fs_private.h"

#define MEM_HELP                                                                                   \
    "Memory counted against max_memory, by use (read: blocks of the read path; write: parts "      \
    "of files being written; gz: chunks gzip views inflated ahead; listings: pages held for "      \
    "directory readers and listings read ahead)."

struct metrics_series fs_metrics[FS_M_COUNT] = {
    [FS_M_READ_BYTES] = {.name = "pailfs_fuse_read_bytes_total",
                         .help = "Bytes returned to read requests of the mount.",
                         .kind = METRICS_COUNTER},
    [FS_M_WRITTEN_BYTES] = {.name = "pailfs_fuse_written_bytes_total",
                            .help = "Bytes accepted from write requests to the mount.",
                            .kind = METRICS_COUNTER},
    [FS_M_MEM_READ] = {.name = "pailfs_memory_bytes",
                       .help = MEM_HELP,
                       .kind = METRICS_GAUGE,
                       .labels = "use=\"read\""},
    [FS_M_MEM_WRITE] = {.name = "pailfs_memory_bytes",
                        .help = MEM_HELP,
                        .kind = METRICS_GAUGE,
                        .labels = "use=\"write\""},
    [FS_M_MEM_GZ] = {.name = "pailfs_memory_bytes",
                     .help = MEM_HELP,
                     .kind = METRICS_GAUGE,
                     .labels = "use=\"gz\""},
    [FS_M_MEM_LISTINGS] = {.name = "pailfs_memory_bytes",
                           .help = MEM_HELP,
                           .kind = METRICS_GAUGE,
                           .labels = "use=\"listings\""},
    [FS_M_MEM_LIMIT] = {.name = "pailfs_memory_limit_bytes",
                        .help = "The memory bound of the mount (max_memory): the sum of "
                                "pailfs_memory_bytes never passes it.",
                        .kind = METRICS_GAUGE},
    [FS_M_INODES] = {.name = "pailfs_inodes",
                     .help = "Inodes the mount keeps for the kernel (past max_inodes the "
                             "kernel is asked to forget the oldest files').",
                     .kind = METRICS_GAUGE},
    [FS_M_PARTS_INFLIGHT] = {.name = "pailfs_upload_parts_in_flight",
                             .help = "Multipart upload parts queued or being sent.",
                             .kind = METRICS_GAUGE},
    [FS_M_GZ_VIEWS] = {.name = "pailfs_gzip_views_opened_total",
                       .help = "Opens (by programs) of decompressed views of gzip objects.",
                       .kind = METRICS_COUNTER},
};
