/* reply.c — how an error reaches a program: the one reply of a failed
 * FUSE operation.  Every operation file calls it; it calls only libfuse. */
#include "fs/fs_private.h"

#include <errno.h>

void fs_reply_err(fuse_req_t req, int rc)
{
    if (rc == EPROTO || rc == EBADMSG || rc == ECANCELED)
        rc = EIO;
    fuse_reply_err(req, rc);
}
