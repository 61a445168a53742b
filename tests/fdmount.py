#!/usr/bin/python3
"""fdmount.py: mount FUSE the way a privileged helper does for a FUSE
server without privileges, then run that server on the descriptor.

    fdmount.py [--uid UID] [--gid GID] [--opts EXTRA] MOUNTPOINT -- CMD...

It opens /dev/fuse, mounts it on MOUNTPOINT with mount(2) (type
fuse.pailfs, data "fd=N,rootmode=40000,user_id=UID,group_id=GID,
default_permissions" plus EXTRA), and execs CMD with the descriptor left
open; every "{fd}" in CMD's words becomes N (pailfs BUCKET /dev/fd/{fd}).
The mount stays when CMD ends: whoever ran this unmounts it (umount(8) or
fusermount3 -u), as a container's mounter would. Needs CAP_SYS_ADMIN (root).
Exit 2 with one line on stderr when the mount fails. For the integration
tests (test_mount_fd.py) and as the recipe's working example (README.md).
"""

import argparse
import ctypes
import ctypes.util
import os
import sys

MS_NOSUID = 2
MS_NODEV = 4


def mount_fuse(mountpoint, uid, gid, extra):
    """Open /dev/fuse and mount it on mountpoint; the descriptor."""
    fd = os.open("/dev/fuse", os.O_RDWR)
    data = f"fd={fd},rootmode=40000,user_id={uid},group_id={gid}," \
        "default_permissions"
    if extra:
        data += "," + extra
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_char_p]
    if libc.mount(b"pailfs", os.fsencode(mountpoint), b"fuse.pailfs",
                  MS_NOSUID | MS_NODEV, data.encode()) != 0:
        e = ctypes.get_errno()
        os.close(fd)
        raise OSError(e, f"mount {mountpoint}: {os.strerror(e)}")
    return fd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uid", type=int, default=os.getuid())
    ap.add_argument("--gid", type=int, default=os.getgid())
    ap.add_argument("--opts", default="")
    ap.add_argument("mountpoint")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    try:
        fd = mount_fuse(a.mountpoint, a.uid, a.gid, a.opts)
    except OSError as e:
        print(f"fdmount: {e}", file=sys.stderr)
        return 2
    os.set_inheritable(fd, True)  # the one thing the command inherits
    os.execvp(cmd[0], [w.replace("{fd}", str(fd)) for w in cmd])


if __name__ == "__main__":
    sys.exit(main())
