"""Listings that stream (issue 22): a directory handle serves its listing as
the pages arrive, holds two pages at most, and its readdir offsets lead back
to the same place after the pages are let go (docs/SEMANTICS.md,
"Listings").

Every mount here asks for 10 keys a LIST page (-o list_page=10), so that a
few dozen keys make a listing of many pages; the requests are counted at
the proxy, and later pages are stalled there to see what arrives when.
"""

import ctypes
import ctypes.util
import os
import re
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import ops_of_mount as ops
from helpers import put
from mount import mounter, wait_until  # noqa: F401

PAGE = 10
STATS_XATTR = "user.pailfs.stats"


def _seed(s3, bucket, prefix, names):
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda n: put(s3, bucket, f"{prefix}/{n}", b"x"), names))


def _names(n):
    return [f"k{i:03d}" for i in range(n)]


# ---- libc's opendir/readdir/telldir/seekdir, as a C program calls them ----

class _Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir64.restype = ctypes.POINTER(_Dirent)
_libc.readdir64.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.closedir.argtypes = [ctypes.c_void_p]


class Dir:
    def __init__(self, path):
        self.d = _libc.opendir(path.encode())
        assert self.d, os.strerror(ctypes.get_errno())

    def read(self):
        """The next name other than . and .., or None at the end."""
        while True:
            ctypes.set_errno(0)
            e = _libc.readdir64(self.d)
            if not e:
                assert ctypes.get_errno() == 0, os.strerror(ctypes.get_errno())
                return None
            name = e.contents.d_name.decode()
            if name not in (".", ".."):
                return name

    def tell(self):
        return _libc.telldir(self.d)

    def seek(self, pos):
        _libc.seekdir(self.d, pos)

    def rest(self):
        out = []
        while (n := self.read()) is not None:
            out.append(n)
        return out

    def close(self):
        _libc.closedir(self.d)


def _listings_gauge(m):
    text = os.getxattr(m.path, STATS_XATTR).decode()
    got = re.search(r'^pailfs_memory_bytes\{use="listings"\} (\d+)$', text, re.M)
    assert got, text
    return int(got.group(1))


def test_first_entries_arrive_before_the_last_page(proxy, s3, bucket, mounter):
    names = _names(3 * PAGE)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": PAGE})
    os.stat(m.p("d"))  # the lookup: its first page, kept for the opendir
    # every page after the first waits 2.5 s at the "server"
    proxy.config(pspike=1, spike_ms=2500, only_path_regex="continuation-token")
    t0 = time.monotonic()
    d = Dir(m.p("d"))
    first = d.read()
    t_first = time.monotonic() - t0
    rest = d.rest()
    t_all = time.monotonic() - t0
    d.close()
    assert [first] + rest == names
    assert t_first < 1.5, t_first
    assert t_all >= 5.0, t_all  # the two stalled pages came after it


def test_ls_l_of_many_pages_lists_each_page_once(proxy, s3, bucket, mounter):
    names = _names(3 * PAGE + 5)
    _seed(s3, bucket, "d", names)
    # each request takes longer than attr_ttl: the lookup's page is still
    # the opendir's, the directory's own entry stays trusted while its
    # pages arrive, and the names of each page when `ls -l` asks for them
    # (before, ls -l turned into a LIST and a HEAD a name). Counted from
    # a page's arrival, its names stay trusted for attr_ttl: the time `ls`
    # may take between that and its opendir or stat. 2 s, not 1: once,
    # under ASan on a loaded machine, 1 s was not enough.
    m = mounter(attr_ttl=2, neg_ttl=2, opts={"list_page": PAGE})
    proxy.reset()
    proxy.config(latency_ms=2100)
    r = subprocess.run(["ls", "-l", m.p("d")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    listed = [line.split()[-1] for line in r.stdout.splitlines()
              if not line.startswith("total")]
    assert listed == names
    # the lookup's page is the opendir's first: 4 pages, 4 LISTs, no HEAD
    assert ops(proxy) == {"ListObjectsV2": 4}, ops(proxy)


def test_the_next_page_is_asked_before_readdir_asks_and_no_more(proxy, s3, bucket,
                                                                mounter):
    """A handle asks for the page after the one it serves as soon as that
    one arrives, so the server's work on it overlaps the reader's; and for
    one page only, whatever the reader does not take (the pages a handle
    holds stay bounded)."""
    names = _names(5 * PAGE)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": PAGE})
    os.stat(m.p("d"))  # the lookup: its first page, kept for the opendir
    proxy.reset()
    d = Dir(m.p("d"))
    assert d.read() == names[0]
    # the second page, not asked for by any readdir yet (the first page's
    # ten entries fit in one reply)
    assert wait_until(lambda: ops(proxy).get("ListObjectsV2", 0) == 1, 10), ops(proxy)
    time.sleep(1.0)
    assert ops(proxy) == {"ListObjectsV2": 1}, ops(proxy)  # and no third
    assert d.rest() == names[1:]
    d.close()
    assert ops(proxy) == {"ListObjectsV2": 4}, ops(proxy)  # each page once


def test_ls_l_asks_no_acl_of_each_entry(s3, bucket, mounter):
    """`ls -l` asks each entry's system.posix_acl_access and security.selinux
    until the device answers that it has none of that namespace (ENOTSUP),
    then never again on it: a few getxattr in all, not two FUSE round trips
    an entry (20,000 for 10,000 entries, which cost the CPU the server
    needs for its listing). Counted in libfuse's trace of each request."""
    names = _names(3 * PAGE)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts=["debug", f"list_page={PAGE}"])
    r = subprocess.run(["ls", "-l", m.p("d")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    listed = [line.split()[-1] for line in r.stdout.splitlines()
              if not line.startswith("total")]
    assert listed == names
    asked = len(re.findall(r"opcode: GETXATTR", m.stderr_text()))
    # the directory's own (ACL, default ACL, label), then one entry's
    assert asked <= 5, asked


def test_seekdir_back_gives_the_same_names(proxy, s3, bucket, mounter):
    names = _names(7 * PAGE + 3)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": PAGE})
    d = Dir(m.p("d"))
    told = []  # (telldir before the name, name)
    while True:
        pos = d.tell()
        n = d.read()
        if n is None:
            break
        told.append((pos, n))
    assert [n for _, n in told] == names
    proxy.reset()
    # back into the first page, long let go: listed again from its mark
    for i in (3, 0, 25, 71):
        d.seek(told[i][0])
        assert d.rest() == names[i:], i
    lists = ops(proxy).get("ListObjectsV2", 0)
    assert 0 < lists <= 4 * 8, ops(proxy)
    d.close()


def test_readdir_while_names_come_and_go(proxy, s3, bucket, mounter):
    names = _names(6 * PAGE)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": PAGE})
    d = Dir(m.p("d"))
    seen = [d.read() for _ in range(15)]
    # another client, and this mount, change the directory meanwhile: names
    # before the place read, and after it
    s3.delete_object(Bucket=bucket, Key="d/k055")
    put(s3, bucket, "d/k057a", b"new")
    put(s3, bucket, "d/k001a", b"new")
    os.unlink(m.p("d", "k003"))
    os.unlink(m.p("d", "k048"))
    seen += d.rest()
    d.close()
    # every name there all along, once; a name come or gone, at most once
    assert len(seen) == len(set(seen)), seen
    changed = {"k055", "k057a", "k001a", "k003", "k048"}
    assert {n for n in names if n not in changed} <= set(seen)
    # the pages after the place are listed after the changes
    assert "k057a" in seen and "k055" not in seen and "k048" not in seen
    # the names read already were not read again
    assert "k001a" not in seen and "k003" in seen


def test_held_pages_are_bounded(proxy, s3, bucket, mounter):
    names = _names(20 * PAGE)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": PAGE})
    dirs = [Dir(m.p("d")) for _ in range(3)]
    peak = 0
    for k in range(len(names)):
        for d in dirs:
            assert d.read() == names[k]
        if k % PAGE == 5:
            peak = max(peak, _listings_gauge(m))
    # three handles, two pages of 10 entries each at most (an entry is
    # about 250 bytes held), never the 200 names of the directory
    assert 0 < peak <= 3 * 2 * PAGE * 400, peak
    for d in dirs:
        assert d.read() is None
        d.close()
    # (the kernel sends a directory's release after close() has returned)
    assert wait_until(lambda: _listings_gauge(m) == 0, 10), _listings_gauge(m)


def _gauge(m, name):
    text = os.getxattr(m.path, STATS_XATTR).decode()
    got = re.search(rf"^{name} (\d+)$", text, re.M)
    assert got, text
    return int(got.group(1))


def test_inode_table_is_bounded(proxy, s3, bucket, mounter):
    names = _names(200)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": 50, "max_inodes": 40})
    r = subprocess.run(["ls", "-l", m.p("d")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 + len(names)
    # the kernel was handed 200 entries; it is asked to forget the oldest
    deadline = time.monotonic() + 10
    while _gauge(m, "pailfs_inodes") > 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gauge(m, "pailfs_inodes") <= 40
    # what they knew stays with their directory: a stat asks S3 nothing
    proxy.reset()
    assert all(os.stat(m.p("d", n)).st_size == 1 for n in names)
    assert ops(proxy) == {}, ops(proxy)


def test_names_expired_are_asked_again_by_their_page(proxy, s3, bucket, mounter):
    names = _names(3 * PAGE)
    _seed(s3, bucket, "d", names)
    m = mounter(attr_ttl=1, neg_ttl=1, opts={"list_page": PAGE})
    assert sorted(os.listdir(m.p("d"))) == names
    time.sleep(1.5)  # every name's trust ran out (a slow `ls -l` would get here)
    proxy.reset()
    # and a LIST takes longer than attr_ttl: a page asked again is trusted
    # from its arrival, or it would teach nothing
    proxy.config(latency_ms=1200)
    assert all(os.stat(m.p("d", n)).st_size == 1 for n in names)
    # each name's page is asked again, which answers its siblings: a LIST a
    # page, not a LIST and a HEAD a name (and one for "d" itself, whose
    # lookup is its first page, the root never having been listed)
    by_op = ops(proxy)
    assert by_op.get("HeadObject", 0) == 0, by_op
    # (with a LIST slower than attr_ttl, "d" and a page may each be asked
    # again once more while the stats go on)
    assert by_op.get("ListObjectsV2", 0) <= 2 * (3 + 1), by_op


# ---- a directory with a marker: its HEAD beside the second page ----------

def _seed_marked(s3, bucket, prefix, names):
    put(s3, bucket, f"{prefix}/", b"")  # the marker, as mkdir writes it
    _seed(s3, bucket, prefix, names)


def _ls_l(m, *parts):
    r = subprocess.run(["ls", "-l", m.p(*parts)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split()[-1] for line in r.stdout.splitlines() if not line.startswith("total")]


def test_ls_l_of_a_marked_directory_asks_its_second_page_beside_the_heads(
        proxy, s3, bucket, mounter):
    """The lookup of a directory of more than a page whose first page shows
    its marker asks for the second page at once, beside the marker's HEAD
    (which it waits for: the stored mode and owner), not after it; the
    opendir that follows takes that page: each page is asked once."""
    names = _names(3 * PAGE + 5)  # with the marker: pages of 10, 10, 10, 6
    _seed_marked(s3, bucket, "d", names)
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": PAGE})
    proxy.reset()
    # every HEAD is answered 1.5 s late
    proxy.config(pspike=1, spike_ms=1500, only_methods=["HEAD"])
    assert _ls_l(m, "d") == names
    assert ops(proxy) == {"ListObjectsV2": 4, "HeadObject": 1}, ops(proxy)
    recent = proxy.stats()["recent"]
    head = [r for r in recent if r["op"] == "HeadObject"]
    assert [r["key"] for r in head] == ["d/"], head
    pages = [r for r in recent if r["op"] == "ListObjectsV2"
             and "continuation-token" in (r["query"] or "")]
    assert len(pages) == 3, pages
    # the second page was asked before the HEAD was answered (at 1.5 s)
    assert pages[0]["time"] < head[0]["time"] + 1.0, (pages[0]["time"] - head[0]["time"])


def test_a_directorys_lookup_sends_a_head_only_for_a_marker(proxy, s3, bucket, mounter):
    """No HEAD for a directory without a marker, and no page asked ahead by
    its lookup (its opendir asks for the second page at once); a marked
    directory of one page costs its LIST and its marker's HEAD; a marked
    directory of more pages costs the second page too, asked beside the
    HEAD (docs/SEMANTICS.md, "Listings")."""
    _seed(s3, bucket, "bare", _names(3 * PAGE))
    _seed_marked(s3, bucket, "small", _names(3))
    _seed_marked(s3, bucket, "big", _names(3 * PAGE))
    m = mounter(attr_ttl=30, neg_ttl=30, opts={"list_page": PAGE})
    proxy.reset()
    assert stat.S_ISDIR(os.stat(m.p("bare")).st_mode)
    assert ops(proxy) == {"ListObjectsV2": 1}, ops(proxy)
    time.sleep(0.5)  # nothing more comes of it
    assert ops(proxy) == {"ListObjectsV2": 1}, ops(proxy)
    proxy.reset()
    assert stat.S_ISDIR(os.stat(m.p("small")).st_mode)
    time.sleep(0.5)
    assert ops(proxy) == {"ListObjectsV2": 1, "HeadObject": 1}, ops(proxy)
    proxy.reset()
    assert stat.S_ISDIR(os.stat(m.p("big")).st_mode)
    assert wait_until(lambda: ops(proxy).get("ListObjectsV2", 0) == 2, 10), ops(proxy)
    assert ops(proxy) == {"ListObjectsV2": 2, "HeadObject": 1}, ops(proxy)
    # and the listings that follow ask for each page once in all
    proxy.reset()
    assert sorted(os.listdir(m.p("bare"))) == _names(3 * PAGE)
    assert sorted(os.listdir(m.p("small"))) == _names(3)
    assert sorted(os.listdir(m.p("big"))) == _names(3 * PAGE)
    # bare: its two pages after the first; small: none; big (31 keys with
    # its marker: four pages): its last two
    assert ops(proxy) == {"ListObjectsV2": 2 + 0 + 2}, ops(proxy)


def test_a_marked_directorys_second_page_is_not_shown_after_a_change(
        proxy, s3, bucket, mounter):
    """The second page a lookup asked ahead is a listing read ahead like any
    other: a name this mount makes in the directory before the opendir
    spoils it, and the opendir lists again; one nobody opens within
    attr_ttl is dropped (the listing asked again when opened)."""
    names = _names(3 * PAGE)
    _seed_marked(s3, bucket, "d", names)
    _seed_marked(s3, bucket, "e", names)
    m = mounter(attr_ttl=1, neg_ttl=1, opts={"list_page": PAGE})
    assert stat.S_ISDIR(os.stat(m.p("d")).st_mode)
    with open(m.p("d", "k015a"), "wb") as f:  # lands in the second page
        f.write(b"new")
    assert sorted(os.listdir(m.p("d"))) == sorted(names + ["k015a"])
    assert stat.S_ISDIR(os.stat(m.p("e")).st_mode)
    time.sleep(2.5)  # its trust ran out, and it was dropped
    put(s3, bucket, "e/k025a", b"other")
    assert sorted(os.listdir(m.p("e"))) == sorted(names + ["k025a"])


def _ls_l_here():
    r = subprocess.run(["ls", "-l", "."], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split()[-1] for line in r.stdout.splitlines() if not line.startswith("total")]


@pytest.mark.parametrize("marked", [False, True], ids=["implicit", "marked"])
def test_a_second_ls_l_after_attr_ttl_lists_each_page_once(proxy, s3, bucket, mounter, marked):
    """`ls -l .` again in a directory once attr_ttl ran out (a shell that
    sits in it): the kernel looks up no name, it asks for the directory's
    attributes (getattr), whose refresh lists its first page; that page is
    the one the opendir that follows reads (held as a lookup's is), not
    thrown away and asked again: 4 pages, 4 LISTs (and the marker's HEAD,
    for a marked directory)."""
    names = _names(3 * PAGE + 5)
    (_seed_marked if marked else _seed)(s3, bucket, "d", names)
    m = mounter(attr_ttl=1, neg_ttl=1, opts={"list_page": PAGE})
    was = os.getcwd()
    os.chdir(m.p("d"))
    try:
        assert _ls_l_here() == names
        time.sleep(1.5)  # its attributes and its listing are no longer trusted
        proxy.reset()
        assert _ls_l_here() == names
    finally:
        os.chdir(was)
    by_op = ops(proxy)
    lists = [(r["op"], r["query"][:50]) for r in proxy.stats()["recent"]]
    assert by_op.pop("ListObjectsV2", 0) == 4, lists
    assert by_op == ({"HeadObject": 1} if marked else {}), by_op
