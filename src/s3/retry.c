/* retry.c — which failures are retried, how long to wait, and a retry
 * budget.
 *
 * The policy follows the AWS SDKs' "standard" retry mode: throttling (503
 * SlowDown), server errors (500, 502, 503, 504, InternalError even inside a
 * 200 body), RequestTimeout, and transport failures (refused or reset
 * connections, timeouts, short bodies) are retried; other 4xx never are.
 * The wait before retry n is drawn uniformly from [0, min(cap, base·2^(n-1))]
 * ("full jitter"), which spreads clients apart after a shared outage.  A
 * token bucket shared by the whole client limits how much retrying it does
 * when everything fails, so a dead server is not hammered. */
#include "s3/s3_private.h"

#include <errno.h>
#include <string.h>

bool s3_retryable(long status, const char *code, int transport)
{
    if (transport) {
        switch (transport) {
        case ECONNREFUSED:
        case ECONNRESET:
        case ETIMEDOUT:
        case EHOSTUNREACH: return true;
        default: /* TLS refusals, cancellations, our own aborts */ return false;
        }
    }
    if (code && (strcmp(code, "InternalError") == 0 || strcmp(code, "SlowDown") == 0 ||
                 strcmp(code, "RequestTimeout") == 0 || strcmp(code, "ServiceUnavailable") == 0 ||
                 strcmp(code, "Throttling") == 0 || strcmp(code, "ThrottlingException") == 0 ||
                 strcmp(code, "RequestTimeTooSkewed") == 0))
        return true;
    return status == 500 || status == 502 || status == 503 || status == 504 || status == 429;
}

uint64_t s3_backoff_ms(const struct s3_retry_policy *p, unsigned retry, uint64_t rnd)
{
    uint64_t ceiling = p->base_ms;
    for (unsigned i = 1; i < retry && ceiling < p->cap_ms; i++)
        ceiling *= 2;
    if (ceiling > p->cap_ms)
        ceiling = p->cap_ms;
    return ceiling ? rnd % (ceiling + 1) : 0;
}

void s3_budget_init(struct s3_retry_budget *b)
{
    pthread_mutex_init(&b->mutex, NULL);
    b->tokens = b->max_tokens = S3_BUDGET_MAX;
}

bool s3_budget_take(struct s3_retry_budget *b, int cost)
{
    pthread_mutex_lock(&b->mutex);
    bool ok = b->tokens >= cost;
    if (ok)
        b->tokens -= cost;
    pthread_mutex_unlock(&b->mutex);
    return ok;
}

void s3_budget_give(struct s3_retry_budget *b, int amount)
{
    pthread_mutex_lock(&b->mutex);
    b->tokens += amount;
    if (b->tokens > b->max_tokens)
        b->tokens = b->max_tokens;
    pthread_mutex_unlock(&b->mutex);
}

int s3_status_to_errno(long status, const char *code)
{
    if (status >= 200 && status < 300)
        return 0;
    switch (status) {
    case 404: return ENOENT;
    case 403: return code && strcmp(code, "InvalidObjectState") == 0 ? ENODATA : EACCES;
    case 412: return ESTALE;
    case 501: return ENOSYS;
    case 405: return ENOTSUP;
    case 400:
        /* the body arrived corrupt: nothing stored, a failed write (EIO)
         * rather than a request we built wrong */
        if (code &&
            (strcmp(code, "BadDigest") == 0 || strcmp(code, "XAmzContentSHA256Mismatch") == 0))
            return EIO;
        return EINVAL;
    case 409:
    case 411:
    case 413:
    case 416: return EINVAL;
    default: (void)code; return EIO;
    }
}
