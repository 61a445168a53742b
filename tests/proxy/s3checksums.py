"""s3checksums.py: CRC-32C and CRC-64/NVME in plain Python, as S3 computes them.

Python's standard library has neither, and the tests must not depend on
packages from outside the image. Used by the proxy (to judge
x-amz-checksum-crc32c / -crc64nvme like S3) and by the integration tests (to
check the values pailfs sent). Table-driven, one byte at a time: about
10 MB/s, enough for test bodies.
"""

import base64
import ctypes
import ctypes.util


def _table(poly, width):
    mask = (1 << width) - 1
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c & mask)
    return table


_CRC32C = _table(0x82F63B78, 32)  # Castagnoli, reflected
_CRC64NVME = _table(0x9A6C9329AC4BC9B5, 64)  # 0xad93d23594c93659 reflected


def crc32c(data, crc=0):
    """CRC-32C of data (continued from a previous result): 0xE3069283 for
    b"123456789"."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc64nvme(data, crc=0):
    """CRC-64/NVME of data: 0xAE8B14860A799888 for b"123456789"."""
    crc ^= 0xFFFFFFFFFFFFFFFF
    table = _CRC64NVME
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _load_isal():
    name = ctypes.util.find_library("isal")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).crc32_iscsi
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_uint32
    fn.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32)
    return fn


_ISAL_CRC32_ISCSI = _load_isal()


def crc32c_fast(data):
    """crc32c(data) through ISA-L when the machine has it (the proxy judges
    multi-MiB parts; the pure version takes seconds for those), else the
    pure one. Checked against the pure one on first use."""
    data = bytes(data)
    if _ISAL_CRC32_ISCSI is None or len(data) >= 1 << 31:
        return crc32c(data)
    return _ISAL_CRC32_ISCSI(data, len(data), 0xFFFFFFFF) ^ 0xFFFFFFFF


def crc32c_b64(data, fast=False):
    """The x-amz-checksum-crc32c value of data: base64 of the big-endian CRC."""
    value = crc32c_fast(data) if fast else crc32c(data)
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def crc64nvme_b64(data):
    """The x-amz-checksum-crc64nvme value of data."""
    return base64.b64encode(crc64nvme(data).to_bytes(8, "big")).decode()


assert crc32c(b"123456789") == 0xE3069283
assert crc64nvme(b"123456789") == 0xAE8B14860A799888
assert _ISAL_CRC32_ISCSI is None or crc32c_fast(b"123456789") == 0xE3069283
