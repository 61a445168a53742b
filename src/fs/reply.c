/* reply.c — how an error reaches a program: the errno an operation replies
 * with (fs_reply_err, also the reply of success for operations that return
 * no data).  Every operation file calls it; it calls only libfuse. */
#include "fs/fs_private.h"

#include <errno.h>

void fs_reply_err(fuse_req_t req, int rc)
{
    if (rc == EPROTO || rc == EBADMSG || rc == ECANCELED)
        rc = EIO;
    fuse_reply_err(req, rc);
}
