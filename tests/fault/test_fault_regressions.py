"""Bugs the fault suite's workload found in pailfs, each pinned by a small
direct test (the workload meets them only when the timing is unlucky)."""

import os

import pytest

from workload import MiB


@pytest.mark.core
def test_staged_new_file_with_a_hole(rig):
    """A new file whose first write lands more than one part past its end
    goes staged with no old object: the block map is empty, and staging
    used to memset a NULL map (UBSan: null pointer passed as argument 1;
    the sanitizer build then died at the write)."""
    m = rig.mount()
    tail, head = os.urandom(MiB), os.urandom(MiB)
    fd = os.open(m.p("holey.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        assert os.pwrite(fd, tail, 20 * MiB) == MiB
        assert os.pwrite(fd, head, 0) == MiB
    finally:
        os.close(fd)
    want = head + bytes(19 * MiB) + tail
    got = rig.s3.get_object(Bucket=rig.bucket, Key="holey.bin")["Body"].read()
    assert got == want


@pytest.mark.core
def test_copy_probe_precedes_the_first_part(rig):
    """An edit whose first part is local and whose later parts are copies:
    the once-per-mount check that the server implements UploadPartCopy
    copies one byte into part 1. It used to run when the first copy range
    was reached, after the real part 1 was already in flight; when the
    probe landed second, CompleteMultipartUpload failed with InvalidPart
    and close() with EIO, with no fault anywhere (seen in the workload's
    staged edit)."""
    old = os.urandom(24 * MiB)
    rig.s3.put_object(Bucket=rig.bucket, Key="edit.bin", Body=old)
    m = rig.mount()
    # The probe's first four attempts fail (500, retried with backoff), so
    # a part 1 sent before it would land first and be overwritten.
    rig.proxy.config(fail_next=[{"status": 500, "op": "UploadPartCopy",
                                 "count": 4}])
    patch = os.urandom(4096)
    fd = os.open(m.p("edit.bin"), os.O_RDWR)
    try:
        assert os.pwrite(fd, patch, 100) == len(patch)
    finally:
        os.close(fd)
    got = rig.s3.get_object(Bucket=rig.bucket, Key="edit.bin")["Body"].read()
    assert got == old[:100] + patch + old[100 + len(patch):]
    part1 = [r for r in rig.proxy.stats()["recent"]
             if r["key"] == "edit.bin" and r["op"] in ("UploadPart",
                                                       "UploadPartCopy")
             and "partNumber=1&" in r["query"] + "&"]
    ops = [(r["op"], r["copy_source_range"]) for r in part1]
    assert ops == [("UploadPartCopy", "bytes=0-0")] * 5 + \
        [("UploadPart", None)], ops


@pytest.mark.core
def test_failed_extending_staged_write_changes_nothing(rig):
    """A staged write that starts inside the old object and extends it by
    more than a block, whose fetch of the old bytes it partly overwrites
    fails: the write fails with EIO and fails the file (issue 17 item 2:
    a program that missed that error must not get 0 from close() for a
    file lacking bytes it wrote), so close() fails with EIO too and the
    object keeps its old bytes, none of the edit stored."""
    old = os.urandom(10 * MiB)
    rig.s3.put_object(Bucket=rig.bucket, Key="grow.bin", Body=old)
    m = rig.mount(opts=["retries=0"])
    first = os.urandom(4096)
    fd = os.open(m.p("grow.bin"), os.O_RDWR)
    try:
        assert os.pwrite(fd, first, 0) == len(first)  # staged, fetched block 0
        rig.proxy.config(fail_next=[{"status": 500, "op": "GetObject",
                                     "count": 1}])
        try:
            os.pwrite(fd, os.urandom(3 * MiB), 10 * MiB - 100)
            raise AssertionError("the write succeeded though its fetch failed")
        except OSError as e:
            assert e.errno == 5, e
        # sticky: the next write fails the same way
        try:
            os.pwrite(fd, b"x", 0)
            raise AssertionError("a write after the failed one succeeded")
        except OSError as e:
            assert e.errno == 5, e
    finally:
        try:
            os.close(fd)
            raise AssertionError("close() returned 0 after a failed write")
        except OSError as e:
            assert e.errno == 5, e
    got = rig.s3.get_object(Bucket=rig.bucket, Key="grow.bin")["Body"].read()
    assert len(got) == len(old)
    assert got == old
