/* metrics.c — what the S3 client counts: requests by operation and HTTP
 * status, bytes sent and received, retries and throttles.
 *
 * One series per (operation, status) pair is made up front, so counting a
 * response is an array index and one relaxed atomic add; the pairs never
 * seen stay out of the printed text (sparse).  A status outside the table
 * counts as "other", and an attempt that got no HTTP answer at all
 * (connection refused, reset, timed out) as "none". */
#include "s3/s3_private.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const char *const op_names[] = {
    "HeadBucket",
    "HeadObject",
    "GetObject",
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "CopyObject",
    "ListObjectsV2",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListMultipartUploads",
    "other",
};
#define N_OPS (sizeof(op_names) / sizeof(op_names[0]))

static const long statuses[] = {200, 204, 206, 301, 304, 307, 400, 403, 404, 405,
                                409, 412, 416, 429, 500, 501, 502, 503, 504};
#define N_STATUSES (sizeof(statuses) / sizeof(statuses[0]))
#define ST_OTHER N_STATUSES
#define ST_NONE (N_STATUSES + 1)
#define N_STATUS_SLOTS (N_STATUSES + 2)

static struct metrics_series requests[N_OPS][N_STATUS_SLOTS];
static char request_labels[N_OPS][N_STATUS_SLOTS][64];

static struct metrics_series totals[] = {
#define M_SENT 0
    {.name = "pailfs_s3_sent_bytes_total",
     .help = "Bytes of request bodies sent to S3, every attempt included.",
     .kind = METRICS_COUNTER},
#define M_RECEIVED 1
    {.name = "pailfs_s3_received_bytes_total",
     .help = "Bytes of response bodies received from S3 (objects, listings, error documents).",
     .kind = METRICS_COUNTER},
#define M_RETRIES 2
    {.name = "pailfs_s3_retries_total",
     .help = "Attempts of S3 requests that were retries of a failed attempt.",
     .kind = METRICS_COUNTER},
#define M_THROTTLES 3
    {.name = "pailfs_s3_throttles_total",
     .help = "S3 answers asking to slow down (503, 429, SlowDown, Throttling).",
     .kind = METRICS_COUNTER},
};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void register_all(void)
{
    for (size_t o = 0; o < N_OPS; o++) {
        for (size_t s = 0; s < N_STATUS_SLOTS; s++) {
            char status[16];
            if (s < N_STATUSES)
                snprintf(status, sizeof(status), "%ld", statuses[s]);
            else
                snprintf(status, sizeof(status), "%s", s == ST_OTHER ? "other" : "none");
            snprintf(request_labels[o][s], sizeof(request_labels[o][s]), "op=\"%s\",status=\"%s\"",
                     op_names[o], status);
            requests[o][s] = (struct metrics_series){
                .name = "pailfs_s3_requests_total",
                .help = "HTTP requests (attempts) sent to S3, by operation and HTTP status "
                        "(none: no answer).",
                .kind = METRICS_COUNTER,
                .labels = request_labels[o][s],
                .sparse = true,
            };
        }
        metrics_register(requests[o], N_STATUS_SLOTS);
    }
    metrics_register(totals, sizeof(totals) / sizeof(totals[0]));
}

void s3_metrics_init(void)
{
    pthread_once(&once, register_all);
}

unsigned s3_metrics_op(const char *op)
{
    for (unsigned i = 0; i < N_OPS - 1; i++)
        if (strcmp(op, op_names[i]) == 0)
            return i;
    return N_OPS - 1;
}

void s3_metrics_attempt(unsigned op, long status, const char *code, size_t sent, bool retry)
{
    size_t s = ST_NONE;
    if (status) {
        s = ST_OTHER;
        for (size_t i = 0; i < N_STATUSES; i++)
            if (statuses[i] == status)
                s = i;
    }
    metrics_add(&requests[op < N_OPS ? op : N_OPS - 1][s], 1);
    if (sent)
        metrics_add(&totals[M_SENT], (int64_t)sent);
    if (retry)
        metrics_add(&totals[M_RETRIES], 1);
    if (status == 503 || status == 429 ||
        (code && (strcmp(code, "SlowDown") == 0 || strcmp(code, "Throttling") == 0 ||
                  strcmp(code, "ThrottlingException") == 0)))
        metrics_add(&totals[M_THROTTLES], 1);
}

void s3_metrics_received(size_t n)
{
    metrics_add(&totals[M_RECEIVED], (int64_t)n);
}
