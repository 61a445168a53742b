#!/usr/bin/python3
"""s3proxy.py: a signature-judging, fault-injecting HTTP proxy in front of s3rver.

The pailfs integration tests point pailfs at this proxy instead of at the local
S3 server (s3rver). The proxy plays two roles:

* Judge of SigV4 signatures, as AWS S3 would be. s3rver's own check is
  unreliable, so it runs with allowMismatchedSignatures and this proxy
  recomputes every signature with botocore's S3SigV4Auth over the canonical
  request that S3 itself would build (key decoded once and re-encoded, no
  path normalisation, only the signed headers). It also checks the
  x-amz-content-sha256 header against the body it received. Rejections are
  S3-style XML errors with an x-amz-request-id header.
* Fault injector: 503 SlowDown, 500 InternalError, connection resets and
  truncated bodies with seeded probabilities, added latency, and a queue of
  scripted errors ("fail_next"). Counters and the last requests can be read
  back by the tests.

Control API on the same port (not signed, not counted; underscores are not
legal in bucket names, so no clash with S3 paths):
  GET  /__proxy__/stats   counters, config and recent requests as JSON
  GET  /__proxy__/config  the current fault configuration
  POST /__proxy__/config  JSON object with any of: p503 p500 preset ptruncate
                          ignore_range latency_ms pspike spike_ms seed
                          only_methods only_ops only_path_regex fail_next
                          upstream_error stall_body flip_body
  POST /__proxy__/reset   zero the counters and clear every fault

Usage:
  /usr/bin/python3 s3proxy.py --upstream http://127.0.0.1:PORT --port 0 \\
      --access-key S3RVER --secret-key S3RVER [--region us-east-1] [--seed N]
      [--fixup copy-source-if-match]
Prints "PORT <n>" on stdout once listening. With --tls-cert and --tls-key
(PEM files) it listens with TLS instead, for tests of certificate checks;
a client that refuses the certificate never reaches the judge.

Fix-ups make an upstream that deviates from AWS answer like AWS, where a
test would otherwise pass for the wrong reason (tests/README.md, "Two
servers"):
  copy-source-if-match  moto copies although x-amz-copy-source-if-match
              does not match (CopyObject, UploadPartCopy); AWS answers 412
              PreconditionFailed. The proxy HEADs the source upstream first
              (signed with its first key) and answers the 412 itself.

How a request goes: signature judged (on headers only, so that with
"Expect: 100-continue" a refused request never sends its body), body read
and hashed, then possibly a fault, then forwarded. Refused requests are never
faulted (latency aside) nor forwarded. Faults:
  fail_next   list of {"status", "code", "message", "count", "method", "op",
              "path_regex"} answered in order to the matching requests;
              an entry with "body" (str), "headers" (dict) or
              "content_length" (a lie: the connection closes after the
              body) is sent as given instead of an error document, to
              play a broken server (truncated XML, a 200 with an error
              body, huge headers, a listing that never ends)
  p503/p500   answer SlowDown / InternalError instead of forwarding
  preset      forward, send the headers and half the body, then TCP RST
  ptruncate   forward, send the headers and half the body, then close (FIN)
              (for answers without a body both drop the whole answer)
  ignore_range  probability (true = 1) that a request's Range header is
              dropped before forwarding, so the upstream answers 200 with the
              whole object, as servers that ignore ranges do (only requests
              with a Range header; may combine with preset/ptruncate)
  latency_ms  delay before the first byte of every answer
  pspike/spike_ms  probability that an answer is instead delayed spike_ms
              before its first byte (a latency spike: longer than a
              client's stall timeout, the request has already been carried
              out upstream when the client gives up); counted as "spike"
  only_methods / only_ops / only_path_regex restrict the random faults;
  the regex is searched in "/bucket/key?query" as received
One seeded random number is drawn per request eligible for random faults,
and, while 0 < ignore_range < 1, a second one per eligible ranged request,
and, while 0 < pspike < 1, one more per eligible request.
upstream_error says what a client sees while s3rver is down: "reset"
(connection dropped) or "503" (ServiceUnavailable).

Stats: requests_total, by_op, by_status ("0" = no answer, the connection was
dropped), faults (fail_next, 503, 500, reset, truncate, ignore_range, spike),
sig_rejections (every refusal by S3 error code: signature, body hash,
digests), upstream_errors, connections (client connections that carried S3
requests), bytes_in/out (request and response bodies), config, and recent:
the last 200 requests (method, path, query, op, bucket, key, range,
range_ignored, copy_source, status, fault, sig_error, headers: every
request header as [name, value] as parsed, body: a CompleteMultipartUpload's
XML, ...). Counters are
settled before the answer's first byte leaves, so a client that has its
answer finds it counted.

Body digests: Content-MD5 and x-amz-checksum-sha256/sha1/crc32/crc32c/
crc64nvme must match the body (400 InvalidDigest / BadDigest), an
x-amz-sdk-checksum-algorithm needs its x-amz-checksum-* header (400
InvalidRequest), and DeleteObjects must carry Content-MD5 or a checksum
header (400 InvalidRequest), as on AWS.

SSE-C, as S3 enforces it: the proxy remembers which keys were written
through it with x-amz-server-side-encryption-customer-* headers (and the
key's MD5). A GET or HEAD of such an object without them is 400
InvalidRequest, with another key 403 AccessDenied; with SSE-C headers on an
object written in clear, 400 InvalidRequest; a CopyObject/UploadPartCopy of
one without x-amz-copy-source-server-side-encryption-customer-* is 400
InvalidRequest; UploadPart of an upload created with SSE-C must repeat its
key. Inconsistent SSE-C headers (algorithm not AES256, a key that is not 32
bytes, a wrong key MD5) are 400 InvalidArgument.

flip_body (config, or null): {"count": N, "op": OP, "path_regex": RE}
flips one bit in the middle of the body of the next N matching requests,
after the payload hash was judged and before the checksums are: the
answer is then S3's 400 BadDigest when the request carries a checksum
(counted in faults as "flip_body").

Not judged: the chunk signatures of STREAMING-* payloads (passed on as
they are), x-amz-security-token values. Path style is what is needed;
Host "bucket.localhost" is taken as virtual-hosted style. An access point
is played as the bucket NAME-ACCOUNT (Host NAME-ACCOUNT.localhost): a copy
source in the access point's ARN form (ARN/object/KEY) is forwarded as
/NAME-ACCOUNT/KEY (recent[].copy_source keeps what the client sent).

Request bodies are buffered (their hash is only known at the end); responses
are streamed downstream in chunks, so large GETs cost no memory.
"""

import argparse
import base64
import binascii
import collections
import datetime
import email.utils
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
import xml.sax.saxutils
import zlib
from pathlib import Path
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
import s3checksums  # noqa: E402

CONTROL_PREFIX = "/__proxy__/"
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
# Payload hash values that are not a hash of the body.
SPECIAL_PAYLOADS = (
    "UNSIGNED-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
)
MAX_SKEW_SECONDS = 15 * 60  # S3 answers RequestTimeTooSkewed past this
STREAM_CHUNK = 256 * 1024
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
    "upgrade", "expect",
}


# --------------------------------------------------------------------------
# SigV4 verification
# --------------------------------------------------------------------------

class SigError(Exception):
    """A request S3 would refuse: HTTP status, S3 error code, message, extras."""

    def __init__(self, status, code, message, extra=None, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}  # more XML elements
        self.headers = headers or {}  # more response headers


class VerifyResult:
    """What the verifier found out about one request."""

    def __init__(self):
        self.access_key = None
        self.payload_hash = None  # value to check the body against, or None
        self.canonical_request = None
        self.string_to_sign = None
        self.expected_signature = None
        self.presigned = False


def s3_canonical_uri(raw_path):
    """S3's canonical URI: the path decoded once, then re-encoded per SigV4.

    Every byte but A-Z a-z 0-9 - . _ ~ is percent-encoded and '/' is kept.
    Unlike other services, S3 neither normalises the path (a//b and ./ stay)
    nor encodes it twice. A '+' in a path is a literal plus.
    """
    decoded = unquote_to_bytes(raw_path or "/")
    return quote(decoded, safe="/") or "/"


def _decode_query_part(text):
    # A '+' in a query string means a space to S3 and to s3rver (form
    # decoding), so a client must send a literal plus as %2B.
    return unquote_to_bytes(text.replace("+", " "))


def parse_query(raw_query):
    """Query string as a list of (key, value) byte strings, in order."""
    pairs = []
    for part in (raw_query or "").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((_decode_query_part(key), _decode_query_part(value)))
    return pairs


def s3_canonical_query(pairs, drop=()):
    """SigV4 canonical query: encoded key=value pairs, sorted, '&'-joined."""
    encoded = sorted(
        (quote(k, safe=""), quote(v, safe=""))
        for k, v in pairs
        if k.decode("utf-8", "replace") not in drop
    )
    return "&".join(f"{k}={v}" for k, v in encoded)


class _S3Verifier(S3SigV4Auth):
    """botocore's S3 signer, fed with exactly what the client signed.

    The AWSRequest handed to it carries a URL whose path and query are
    already in S3's canonical form (so botocore's own unnormalised S3 path
    handling and its URL query splitting leave them as they are), the
    x-amz-content-sha256 value as received, and only the headers the client
    listed in SignedHeaders with their received values.
    """

    def __init__(self, credentials, region, service, signed_headers,
                 payload_hash):
        super().__init__(credentials, service, region)
        self._signed = signed_headers  # list of (lowercase name, value)
        self._payload_hash = payload_hash

    def headers_to_sign(self, request):
        # botocore would add Host and skip User-Agent/Expect; S3 signs exactly
        # the headers named in SignedHeaders.
        headers = HTTPHeaders()
        for name, value in self._signed:
            headers[name] = value
        return headers

    def payload(self, request):
        return self._payload_hash

    def canonical_query_string(self, request):
        # The URL query is already canonical; never re-split params.
        return urlsplit(request.url).query

    def verify(self, method, canonical_uri, canonical_query, timestamp):
        url = "http://s3.invalid" + canonical_uri
        if canonical_query:
            url += "?" + canonical_query
        request = AWSRequest(method=method, url=url)
        request.headers["X-Amz-Content-SHA256"] = self._payload_hash
        request.context["timestamp"] = timestamp
        canonical = self.canonical_request(request)
        string_to_sign = self.string_to_sign(request, canonical)
        return canonical, string_to_sign, self.signature(string_to_sign,
                                                         request)


def _parse_amz_date(text):
    try:
        return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def _parse_authorization(value):
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != SIGV4_ALGORITHM:
        if algorithm == "AWS":
            raise SigError(400, "InvalidRequest",
                           "The authorization mechanism you have provided is "
                           "not supported. Please use AWS4-HMAC-SHA256.")
        raise SigError(400, "InvalidArgument", "Unsupported Authorization Type",
                       {"ArgumentName": "Authorization",
                        "ArgumentValue": value})
    fields = {}
    for component in rest.split(","):
        name, sep, val = component.strip().partition("=")
        if sep:
            fields[name.strip()] = val.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in fields:
            raise SigError(400, "AuthorizationHeaderMalformed",
                           "The authorization header is malformed; missing "
                           f"{name}.")
    return fields["Credential"], fields["SignedHeaders"], fields["Signature"]


def verify_sigv4(method, raw_target, headers, secrets, region=None, now=None):
    """Check one request's SigV4 signature the way S3 does.

    method: "GET", ...; raw_target: the request target as received
    ("/bucket/key?query"); headers: list of (name, value) pairs as received;
    secrets: {access_key: secret_key}; region: the only region accepted
    (None: any); now: a datetime for the clock-skew and expiry checks (None:
    skip them, as for published test vectors).

    Returns a VerifyResult, or raises SigError with S3's status and code.
    The body hash is not checked here (see VerifyResult.payload_hash).
    """
    result = VerifyResult()
    if raw_target.startswith(("http://", "https://")):
        parts = urlsplit(raw_target)
        raw_path, raw_query = parts.path or "/", parts.query
    else:
        raw_path, _, raw_query = raw_target.partition("?")
    pairs = parse_query(raw_query)
    query = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
             for k, v in pairs}
    lower = collections.defaultdict(list)
    for name, value in headers:
        lower[name.lower()].append(value)

    def header(name):
        values = lower.get(name)
        return ",".join(values) if values else None

    authorization = header("authorization")
    presigned = "X-Amz-Algorithm" in query or "X-Amz-Credential" in query
    if authorization and presigned:
        raise SigError(400, "InvalidArgument",
                       "Only one auth mechanism allowed; only the "
                       "X-Amz-Algorithm query parameter, Signature query "
                       "string parameter or the Authorization header should "
                       "be specified")
    if not authorization and not presigned:
        if "Signature" in query or "AWSAccessKeyId" in query:
            raise SigError(400, "InvalidRequest",
                           "The authorization mechanism you have provided is "
                           "not supported. Please use AWS4-HMAC-SHA256.")
        raise SigError(403, "AccessDenied", "Access Denied")

    if presigned:
        result.presigned = True
        needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
                  "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")
        if any(n not in query for n in needed) or \
                query["X-Amz-Algorithm"] != SIGV4_ALGORITHM:
            raise SigError(400, "AuthorizationQueryParametersError",
                           "Query-string authentication version 4 requires "
                           "the X-Amz-Algorithm, X-Amz-Credential, "
                           "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
                           "and X-Amz-Expires parameters.")
        credential = query["X-Amz-Credential"]
        signed_names = query["X-Amz-SignedHeaders"]
        signature = query["X-Amz-Signature"]
        timestamp = query["X-Amz-Date"]
        # Presigned URLs carry no body hash unless the header says otherwise.
        payload_hash = header("x-amz-content-sha256") or "UNSIGNED-PAYLOAD"
    else:
        credential, signed_names, signature = _parse_authorization(
            authorization)
        timestamp = header("x-amz-date")
        if timestamp is None and header("date") is not None:
            try:
                parsed = email.utils.parsedate_to_datetime(header("date"))
                timestamp = parsed.strftime("%Y%m%dT%H%M%SZ")
            except (TypeError, ValueError):
                timestamp = None
        payload_hash = header("x-amz-content-sha256")

    scope = credential.split("/")
    if len(scope) != 5:
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; the "
                       "Credential is mal-formed; expecting "
                       "\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
    access_key, scope_date, scope_region, scope_service, terminator = scope
    result.access_key = access_key
    if access_key not in secrets:
        raise SigError(403, "InvalidAccessKeyId",
                       "The AWS Access Key Id you provided does not exist in "
                       "our records.", {"AWSAccessKeyId": access_key})
    if scope_service != "s3" or terminator != "aws4_request":
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; incorrect "
                       f"service \"{scope_service}\" or terminator "
                       f"\"{terminator}\". This endpoint belongs to \"s3\".")
    if region is not None and scope_region != region:
        # The header is the only hint a HEAD request gets (no body).
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; the region "
                       f"'{scope_region}' is wrong; expecting '{region}'",
                       {"Region": region}, {"x-amz-bucket-region": region})

    when = _parse_amz_date(timestamp)
    if when is None:
        raise SigError(403, "AccessDenied",
                       "AWS authentication requires a valid Date or "
                       "x-amz-date header")
    if timestamp[:8] != scope_date:
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; Invalid "
                       "credential date. Date is not the same as X-Amz-Date.")
    if now is not None:
        if presigned:
            try:
                expires = int(query["X-Amz-Expires"])
            except ValueError:
                expires = -1
            if expires < 0 or expires > 604800:
                raise SigError(400, "AuthorizationQueryParametersError",
                               "X-Amz-Expires must be between 0 and 604800 "
                               "seconds")
            if now > when + datetime.timedelta(seconds=expires):
                raise SigError(403, "AccessDenied", "Request has expired")
        elif abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
            raise SigError(403, "RequestTimeTooSkewed",
                           "The difference between the request time and the "
                           "current time is too large.",
                           {"RequestTime": timestamp,
                            "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "MaxAllowedSkewMilliseconds": "900000"})

    if payload_hash is None:
        raise SigError(400, "InvalidRequest",
                       "Missing required header for this request: "
                       "x-amz-content-sha256")
    if payload_hash not in SPECIAL_PAYLOADS and \
            not re.fullmatch(r"[0-9a-fA-F]{64}", payload_hash):
        raise SigError(400, "InvalidArgument",
                       "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                       "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 "
                       "value.", {"ArgumentName": "x-amz-content-sha256",
                                  "ArgumentValue": payload_hash})

    names = [n.strip().lower() for n in signed_names.split(";") if n.strip()]
    if "host" not in names:
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; SignedHeaders "
                       "must include host.")
    unsigned = sorted(n for n in lower
                      if n.startswith("x-amz-") and n not in names)
    if unsigned and not presigned:
        raise SigError(403, "AccessDenied",
                       "There were headers present in the request which "
                       "were not signed", {"HeadersNotSigned":
                                           ", ".join(unsigned)})
    signed = []
    for name in names:
        # A signed header that is absent signs as empty (and will not match).
        for value in lower.get(name, [""]):
            signed.append((name, value))

    verifier = _S3Verifier(Credentials(access_key, secrets[access_key]),
                           scope_region, scope_service, signed, payload_hash)
    canonical_query = s3_canonical_query(
        pairs, drop=("X-Amz-Signature",) if presigned else ())
    canonical, string_to_sign, expected = verifier.verify(
        method, s3_canonical_uri(raw_path), canonical_query, timestamp)
    result.canonical_request = canonical
    result.string_to_sign = string_to_sign
    result.expected_signature = expected
    if not _constant_time_equal(expected, signature.strip().lower()):
        raise SigError(403, "SignatureDoesNotMatch",
                       "The request signature we calculated does not match "
                       "the signature you provided. Check your key and "
                       "signing method.",
                       {"AWSAccessKeyId": access_key,
                        "StringToSign": string_to_sign,
                        "SignatureProvided": signature,
                        "StringToSignBytes": _hex_bytes(string_to_sign),
                        "CanonicalRequest": canonical,
                        "CanonicalRequestBytes": _hex_bytes(canonical)})
    result.payload_hash = None if payload_hash in SPECIAL_PAYLOADS \
        else payload_hash.lower()
    return result


_CHECKSUMS = {
    "x-amz-checksum-sha256": ("SHA256", lambda b: hashlib.sha256(b).digest()),
    "x-amz-checksum-sha1": ("SHA1", lambda b: hashlib.sha1(b).digest()),
    "x-amz-checksum-crc32": ("CRC32",
                             lambda b: zlib.crc32(b).to_bytes(4, "big")),
    "x-amz-checksum-crc32c": (
        "CRC32C", lambda b: s3checksums.crc32c_fast(b).to_bytes(4, "big")),
    "x-amz-checksum-crc64nvme": (
        "CRC64NVME", lambda b: s3checksums.crc64nvme(b).to_bytes(8, "big")),
}


def check_body_digests(op, headers, body):
    """Check Content-MD5 and x-amz-checksum-* against the body, as S3 does.

    Also enforces S3's rule that DeleteObjects carries Content-MD5 (or an
    x-amz-checksum-* header). Raises SigError on a refusal.
    """
    lower = {name.lower(): value.strip() for name, value in headers}
    md5 = lower.get("content-md5")
    if md5 is not None:
        try:
            digest = base64.b64decode(md5, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != 16:
            raise SigError(400, "InvalidDigest",
                           "The Content-MD5 you specified was invalid.",
                           {"Content-MD5": md5})
        if digest != hashlib.md5(body).digest():
            raise SigError(400, "BadDigest",
                           "The Content-MD5 you specified did not match what "
                           "we received.",
                           {"ExpectedDigest": digest.hex(),
                            "CalculatedDigest": hashlib.md5(body).hexdigest()})
    for header, (name, compute) in _CHECKSUMS.items():
        if header in lower and \
                lower[header] != base64.b64encode(compute(body)).decode():
            raise SigError(400, "BadDigest",
                           f"The {name} you specified did not match the "
                           "calculated checksum.")
    algo = lower.get("x-amz-sdk-checksum-algorithm")
    if algo and op in ("PutObject", "UploadPart") and \
            f"x-amz-checksum-{algo.lower()}" not in lower:
        raise SigError(400, "InvalidRequest",
                       f"x-amz-sdk-checksum-algorithm specified {algo} but "
                       "no x-amz-checksum header was sent for it.")
    if op == "DeleteObjects" and md5 is None and \
            not any(h.startswith("x-amz-checksum-") for h in lower):
        raise SigError(400, "InvalidRequest",
                       "Missing required header for this request: "
                       "Content-MD5")


# SSE-C: S3 stores an object encrypted with the customer key it was written
# with and keeps only the key's MD5; every read, and every copy of it as a
# source, must carry that key again. The proxy plays this part (s3rver does
# not encrypt): it remembers, per bucket and key written through it, the key
# MD5 (None for an object written without SSE-C) and refuses as S3 does.
_SSE_C = "x-amz-server-side-encryption-customer-"
_SSE_C_SRC = "x-amz-copy-source-server-side-encryption-customer-"
SSE_C_MISSING = ("The object was stored using a form of Server Side "
                 "Encryption. The correct parameters must be provided to "
                 "retrieve the object.")


def sse_c_key_md5(lower, prefix):
    """The key MD5 of a request's SSE-C headers (with `prefix`), None when it
    has none; SigError (400 InvalidArgument) when they are incomplete or
    inconsistent, as S3 answers."""
    algo = lower.get(prefix + "algorithm")
    key = lower.get(prefix + "key")
    md5 = lower.get(prefix + "key-md5")
    if algo is None and key is None and md5 is None:
        return None
    if algo != "AES256":
        raise SigError(400, "InvalidArgument", "The encryption algorithm "
                       "specified is not valid.")
    try:
        raw = base64.b64decode(key or "", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SigError(400, "InvalidArgument", "The secret key was invalid "
                       "for the specified algorithm.")
    if md5 != base64.b64encode(hashlib.md5(raw).digest()).decode():
        raise SigError(400, "InvalidArgument", "The calculated MD5 hash of "
                       "the key did not match the hash that was provided.")
    return md5


def _copy_source_key(value):
    """("bucket", "key") of an x-amz-copy-source value."""
    path = unquote(value.split("?", 1)[0]).lstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key


def _constant_time_equal(a, b):
    return hmac.compare_digest(a.encode(), b.encode())


def _hex_bytes(text):
    return " ".join(f"{b:02x}" for b in text.encode("utf-8"))


# --------------------------------------------------------------------------
# Request classification
# --------------------------------------------------------------------------

OPS = (
    "GetObject", "PutObject", "HeadObject", "HeadBucket", "ListObjectsV2",
    "ListObjects", "DeleteObject", "DeleteObjects", "CopyObject",
    "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
    "CompleteMultipartUpload", "AbortMultipartUpload", "ListMultipartUploads",
    "Other",
)
# Query keys that turn an object or bucket request into another operation.
_OBJECT_SUBRESOURCES = {"acl", "tagging", "torrent", "restore", "select",
                        "attributes", "legal-hold", "retention", "uploads",
                        "uploadId"}
_BUCKET_SUBRESOURCES = _OBJECT_SUBRESOURCES | {
    "accelerate", "analytics", "cors", "delete", "encryption",
    "intelligent-tiering", "inventory", "lifecycle", "location", "logging",
    "metrics", "notification", "object-lock", "ownershipControls", "policy",
    "policyStatus", "publicAccessBlock", "replication", "requestPayment",
    "versioning", "versions", "website"}


def classify(method, bucket, key, query_keys, has_copy_source):
    """The S3 operation of a request, one of OPS."""
    q = set(query_keys)
    if not bucket:
        return "Other"
    if key:
        if method == "GET":
            return "Other" if q & _OBJECT_SUBRESOURCES else "GetObject"
        if method == "HEAD":
            return "HeadObject"
        if method == "PUT":
            if "uploadId" in q and "partNumber" in q:
                return "UploadPartCopy" if has_copy_source else "UploadPart"
            if q & _OBJECT_SUBRESOURCES:
                return "Other"
            return "CopyObject" if has_copy_source else "PutObject"
        if method == "POST":
            if "uploads" in q:
                return "CreateMultipartUpload"
            if "uploadId" in q:
                return "CompleteMultipartUpload"
            return "Other"
        if method == "DELETE":
            if "uploadId" in q:
                return "AbortMultipartUpload"
            return "Other" if q & _OBJECT_SUBRESOURCES else "DeleteObject"
        return "Other"
    if method == "GET":
        if "uploads" in q:
            return "ListMultipartUploads"
        if q & _BUCKET_SUBRESOURCES:
            return "Other"
        return "ListObjectsV2" if "list-type" in q else "ListObjects"
    if method == "HEAD":
        return "HeadBucket"
    if method == "POST" and "delete" in q:
        return "DeleteObjects"
    return "Other"


# --------------------------------------------------------------------------
# Shared state: fault configuration, random source, counters
# --------------------------------------------------------------------------

class ProxyState:
    """Everything the handler threads share, behind one lock."""

    CONFIG_KEYS = ("p503", "p500", "preset", "ptruncate", "ignore_range",
                   "latency_ms", "pspike", "spike_ms", "seed", "only_methods", "only_ops",
                   "only_path_regex", "fail_next", "upstream_error", "stall_body",
                   "require_sse", "require_request_payer", "inject_headers", "flip_body")

    def __init__(self, seed, recent_max=200):
        self.lock = threading.Lock()
        self.recent_max = recent_max
        self.default_seed = seed
        self._reset_config()
        self._reset_counters()
        # SSE-C: (bucket, key) -> key MD5 or None (written in clear);
        # uploads: (bucket, key) -> key MD5 of the CreateMultipartUpload.
        # Not cleared by reset: it is what the bucket holds.
        self.sse_c_objects = {}
        self.sse_c_uploads = {}

    def sse_c_check(self, op, bucket, key, lower):
        """Refuse, as S3 does, a request that reads or copies an SSE-C
        object without its key, or with another key (SigError)."""
        md5 = sse_c_key_md5(lower, _SSE_C)
        with self.lock:
            stored = self.sse_c_objects.get((bucket, key), "unknown")
            upload = self.sse_c_uploads.get((bucket, key), "unknown")
        if op in ("GetObject", "HeadObject") and stored != "unknown":
            if stored is not None and md5 is None:
                raise SigError(400, "InvalidRequest", SSE_C_MISSING)
            if stored is not None and md5 != stored:
                raise SigError(403, "AccessDenied", "Access Denied")
            if stored is None and md5 is not None:
                raise SigError(400, "InvalidRequest", "The encryption "
                               "parameters are not applicable to this "
                               "object.")
        if op == "UploadPart" and upload != "unknown" and md5 != upload:
            raise SigError(400, "InvalidRequest", "The multipart upload "
                           "initiate requested encryption. Subsequent part "
                           "requests must include the appropriate encryption "
                           "parameters." if md5 is None else "The provided "
                           "encryption parameters did not match the ones "
                           "used originally.")
        if op in ("CopyObject", "UploadPartCopy"):
            src = _copy_source_key(lower.get("x-amz-copy-source", ""))
            src_md5 = sse_c_key_md5(lower, _SSE_C_SRC)
            with self.lock:
                src_stored = self.sse_c_objects.get(src, "unknown")
            if src_stored not in ("unknown", None) and src_md5 is None:
                raise SigError(400, "InvalidRequest", SSE_C_MISSING)
            if src_stored not in ("unknown", None) and src_md5 != src_stored:
                raise SigError(403, "AccessDenied", "Access Denied")
            if op == "UploadPartCopy" and upload != "unknown" and \
                    md5 != upload:
                raise SigError(400, "InvalidRequest", "The provided "
                               "encryption parameters did not match the "
                               "ones used originally.")
        return md5

    def sse_c_written(self, op, bucket, key, md5):
        """After a successful write: what the key now holds."""
        with self.lock:
            if op in ("PutObject", "CopyObject"):
                self.sse_c_objects[(bucket, key)] = md5
            elif op == "CreateMultipartUpload":
                self.sse_c_uploads[(bucket, key)] = md5
            elif op == "CompleteMultipartUpload":
                self.sse_c_objects[(bucket, key)] = \
                    self.sse_c_uploads.pop((bucket, key), None)
            elif op == "DeleteObject":
                self.sse_c_objects.pop((bucket, key), None)

    def take_flip(self, method, op, target):
        """Whether to flip a byte of this request's body (fault flip_body)."""
        with self.lock:
            spec = self.config.get("flip_body")
            if not spec or spec.get("count", 1) <= 0:
                return False
            if spec.get("op") and spec["op"] != op:
                return False
            if spec.get("path_regex") and \
                    not re.search(spec["path_regex"], target):
                return False
            spec["count"] = spec.get("count", 1) - 1
            self.counters["faults"]["flip_body"] += 1
            return True

    def _reset_config(self):
        self.config = {
            "p503": 0.0, "p500": 0.0, "preset": 0.0, "ptruncate": 0.0,
            "ignore_range": 0.0, "latency_ms": 0, "pspike": 0.0,
            "spike_ms": 0, "seed": self.default_seed,
            "only_methods": None, "only_ops": None, "only_path_regex": None,
            "fail_next": [],
            "flip_body": None,
            # what a client sees when the upstream is down: "reset" (the
            # connection is aborted) or "503" (SlowDown-style 503 answer)
            "upstream_error": "reset",
            # {"after": N, "ms": M, "path_regex": R}: a GetObject answer
            # whose path matches R pauses M ms once N body bytes are out
            "stall_body": None,
            # the bucket policy (see POLICY below)
            "require_sse": None, "require_request_payer": False,
            "inject_headers": [],
        }
        self.path_re = None
        self.rng = random.Random(self.default_seed)

    def _reset_counters(self):
        self.counters = {
            "requests_total": 0,
            "by_op": collections.Counter(),
            "by_status": collections.Counter(),
            "faults": collections.Counter(),
            "sig_rejections": collections.Counter(),
            "upstream_errors": 0,
            "connections": 0,
            "bytes_in": 0,
            "bytes_out": 0,
        }
        self.recent = collections.deque(maxlen=self.recent_max)

    def reset(self):
        with self.lock:
            self._reset_config()
            self._reset_counters()

    def update_config(self, new):
        """Apply a JSON config update; raise ValueError on bad input."""
        unknown = set(new) - set(self.CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        with self.lock:
            cfg = dict(self.config)
            for name in ("p503", "p500", "preset", "ptruncate"):
                if name in new:
                    value = float(new[name])
                    if not 0.0 <= value <= 1.0:
                        raise ValueError(f"{name} must be within [0, 1]")
                    cfg[name] = value
            if cfg["p503"] + cfg["p500"] + cfg["preset"] + cfg["ptruncate"] \
                    > 1.0 + 1e-9:
                raise ValueError("fault probabilities add up to more than 1")
            if "ignore_range" in new:
                value = new["ignore_range"]
                value = float(value) if value not in (True, False) \
                    else float(bool(value))
                if not 0.0 <= value <= 1.0:
                    raise ValueError("ignore_range must be within [0, 1] "
                                     "(or true/false)")
                cfg["ignore_range"] = value
            if "latency_ms" in new:
                cfg["latency_ms"] = max(0, int(new["latency_ms"]))
            if "pspike" in new:
                value = float(new["pspike"])
                if not 0.0 <= value <= 1.0:
                    raise ValueError("pspike must be within [0, 1]")
                cfg["pspike"] = value
            if "spike_ms" in new:
                cfg["spike_ms"] = max(0, int(new["spike_ms"]))
            if "only_methods" in new:
                m = new["only_methods"]
                cfg["only_methods"] = [x.upper() for x in m] if m else None
            if "only_ops" in new:
                ops = new["only_ops"]
                if ops and set(ops) - set(OPS):
                    raise ValueError(f"unknown ops {set(ops) - set(OPS)}")
                cfg["only_ops"] = list(ops) if ops else None
            path_re = self.path_re
            if "only_path_regex" in new:
                cfg["only_path_regex"] = new["only_path_regex"] or None
                path_re = re.compile(cfg["only_path_regex"]) \
                    if cfg["only_path_regex"] else None
            if "fail_next" in new:
                entries = new["fail_next"] or []
                for e in entries:
                    if "status" not in e:
                        raise ValueError("fail_next entries need a status")
                    if e.get("path_regex"):
                        re.compile(e["path_regex"])
                cfg["fail_next"] = [dict(e) for e in entries]
            if "flip_body" in new:
                spec = new["flip_body"]
                if spec is not None:
                    if not isinstance(spec, dict) or \
                            set(spec) - {"count", "op", "path_regex"}:
                        raise ValueError("flip_body is null or an object "
                                         "with count, op, path_regex")
                    if spec.get("path_regex"):
                        re.compile(spec["path_regex"])
                    spec = dict(spec)
                cfg["flip_body"] = spec
            if "upstream_error" in new:
                if new["upstream_error"] not in ("reset", "503"):
                    raise ValueError("upstream_error is 'reset' or '503'")
                cfg["upstream_error"] = new["upstream_error"]
            if "stall_body" in new:
                stall = new["stall_body"]
                if stall:
                    stall = {"after": max(0, int(stall["after"])),
                             "ms": max(0, int(stall["ms"])),
                             "path_regex": stall.get("path_regex") or None}
                    if stall["path_regex"]:
                        re.compile(stall["path_regex"])
                cfg["stall_body"] = stall or None
            if "require_sse" in new:
                value = new["require_sse"]
                if value is not None and not isinstance(value, str):
                    raise ValueError("require_sse is an encryption name or null")
                cfg["require_sse"] = value or None
            if "require_request_payer" in new:
                cfg["require_request_payer"] = bool(new["require_request_payer"])
            if "inject_headers" in new:
                entries = new["inject_headers"] or []
                for e in entries:
                    if not isinstance(e.get("headers"), dict):
                        raise ValueError("inject_headers entries need headers")
                    re.compile(e.get("path_regex") or "")
                cfg["inject_headers"] = [dict(e) for e in entries]
            if "seed" in new:
                cfg["seed"] = new["seed"]
                self.rng = random.Random(new["seed"])
            self.config = cfg
            self.path_re = path_re

    def policy_refusal(self, op, headers):
        """The bucket policy's verdict on a request: None (allowed) or the
        message of a 403 AccessDenied."""
        cfg = self.config
        if cfg["require_request_payer"] and \
                (headers.get("x-amz-request-payer") or "").lower() != "requester":
            return "requester pays: the request does not accept the charges"
        want = cfg["require_sse"]
        if want and op in SSE_POLICY_OPS and \
                headers.get("x-amz-server-side-encryption") != want:
            return f"bucket policy: {op} without x-amz-server-side-encryption: {want}"
        return None

    def injected_headers(self, method, op, target):
        """Response headers to add to a forwarded answer (first match)."""
        for e in self.config["inject_headers"]:
            if e.get("ops") and op not in e["ops"]:
                continue
            if e.get("path_regex") and not re.search(e["path_regex"], target):
                continue
            return list(e["headers"].items())
        return []

    def _matches_filter(self, method, op, target):
        cfg = self.config
        if cfg["only_methods"] and method not in cfg["only_methods"]:
            return False
        if cfg["only_ops"] and op not in cfg["only_ops"]:
            return False
        if self.path_re and not self.path_re.search(target):
            return False
        return True

    def choose_fault(self, method, op, target):
        """Decide the fault for one signed-and-accepted request.

        Returns (kind, detail): kind is None, "fail_next", "503", "500",
        "reset" or "truncate". A fail_next entry wins over the random
        faults; each request eligible for random faults draws exactly one
        number from the seeded generator, so a seed replays the same faults
        for the same sequence of eligible requests.
        """
        with self.lock:
            for i, entry in enumerate(self.config["fail_next"]):
                if entry.get("method") and entry["method"].upper() != method:
                    continue
                if entry.get("op") and entry["op"] != op:
                    continue
                if entry.get("path_regex") and \
                        not re.search(entry["path_regex"], target):
                    continue
                left = int(entry.get("count", 1)) - 1
                if left > 0:
                    self.config["fail_next"][i] = dict(entry, count=left)
                else:
                    del self.config["fail_next"][i]
                return "fail_next", entry
            cfg = self.config
            total = cfg["p503"] + cfg["p500"] + cfg["preset"] + \
                cfg["ptruncate"]
            if total <= 0 or not self._matches_filter(method, op, target):
                return None, None
            r = self.rng.random()
            for kind, p in (("503", cfg["p503"]), ("500", cfg["p500"]),
                            ("reset", cfg["preset"]),
                            ("truncate", cfg["ptruncate"])):
                if r < p:
                    return kind, None
                r -= p
            return None, None

    def choose_ignore_range(self, method, op, target):
        """Whether to drop the Range header of this (ranged) request.

        Draws from the seeded generator only while 0 < ignore_range < 1, so
        turning the option on at 0 or 1 never shifts the other faults.
        """
        with self.lock:
            p = self.config["ignore_range"]
            if p <= 0 or not self._matches_filter(method, op, target):
                return False
            return p >= 1 or self.rng.random() < p

    def choose_spike(self, method, op, target):
        """Whether this request's answer gets a latency spike (drawn like
        choose_ignore_range: only while 0 < pspike < 1)."""
        with self.lock:
            p = self.config["pspike"]
            if p <= 0 or self.config["spike_ms"] <= 0 or \
                    not self._matches_filter(method, op, target):
                return False
            return p >= 1 or self.rng.random() < p

    def latency(self, spike=False):
        with self.lock:
            ms = self.config["spike_ms"] if spike else self.config["latency_ms"]
            return ms / 1000.0

    def upstream_error_mode(self):
        with self.lock:
            return self.config["upstream_error"]

    # Bookkeeping of one request, in three steps so that the counters are
    # settled before the client sees the first byte of the answer: a test
    # that reads the stats right after its response never races the proxy.

    def begin(self, rec):
        with self.lock:
            self.counters["requests_total"] += 1
            self.counters["by_op"][rec["op"]] += 1
            self.recent.append(rec)

    def settle(self, rec, status):
        """Count the answer (status 0: none, the connection was dropped)."""
        with self.lock:
            if rec["status"] is not None:
                return
            rec["status"] = status
            c = self.counters
            c["by_status"][str(status)] += 1
            if rec["fault"]:
                c["faults"][rec["fault"]] += 1
            if rec["range_ignored"]:
                c["faults"]["ignore_range"] += 1
            if rec["spike"]:
                c["faults"]["spike"] += 1
            if rec["sig_error"]:
                c["sig_rejections"][rec["sig_error"]] += 1
            if rec["upstream_error"]:
                c["upstream_errors"] += 1

    def add_bytes(self, rec, bytes_in=0, bytes_out=0):
        with self.lock:
            rec["bytes_in"] += bytes_in
            rec["bytes_out"] += bytes_out
            self.counters["bytes_in"] += bytes_in
            self.counters["bytes_out"] += bytes_out

    def upstream_failed_midway(self, rec):
        with self.lock:
            if not rec["upstream_error"]:
                rec["upstream_error"] = True
                self.counters["upstream_errors"] += 1

    def count_connection(self):
        with self.lock:
            self.counters["connections"] += 1

    def snapshot(self):
        with self.lock:
            c = self.counters
            return {
                "requests_total": c["requests_total"],
                "by_op": dict(c["by_op"]),
                "by_status": dict(c["by_status"]),
                "faults": dict(c["faults"]),
                "sig_rejections": dict(c["sig_rejections"]),
                "upstream_errors": c["upstream_errors"],
                "connections": c["connections"],
                "bytes_in": c["bytes_in"],
                "bytes_out": c["bytes_out"],
                "config": json.loads(json.dumps(self.config)),
                "recent": [dict(r) for r in self.recent],
            }


# --------------------------------------------------------------------------
# HTTP handling
# --------------------------------------------------------------------------

# POLICY: the bucket policies the proxy can play, as config keys.
#   require_sse  "aws:kms" (or any value): PutObject, CreateMultipartUpload
#                and CopyObject without x-amz-server-side-encryption equal
#                to it are refused, 403 AccessDenied (the policy AWS
#                documents: Deny s3:PutObject unless the header is aws:kms;
#                CopyObject and CreateMultipartUpload are s3:PutObject).
#   require_request_payer  true: every request without
#                x-amz-request-payer: requester is refused, 403 AccessDenied
#                (a requester-pays bucket, asked by someone not its owner).
#   inject_headers  list of {"path_regex", "ops", "headers": {name: value}}:
#                the first matching entry's headers are added to a 2xx
#                answer, to play what s3rver does not store (the object's
#                x-amz-server-side-encryption, KMS key id, storage class).
# Refusals count in stats()["sig_rejections"]["AccessDenied"].
SSE_POLICY_OPS = ("PutObject", "CreateMultipartUpload", "CopyObject")


ACCESS_POINT_SOURCE = re.compile(
    r"^/?arn(?::|%3A)[^:%]+(?::|%3A)s3(?::|%3A)[^:%]+(?::|%3A)(\d{12})(?::|%3A)"
    r"accesspoint(?:/|%2F)([a-z0-9-]+)(?:/|%2F)object(?:/|%2F)(.*)$", re.I)


def access_point_copy_source(value):
    """A copy through an access point names its source by the object's ARN
    (ARN/object/KEY); the rig plays the access point NAME of ACCOUNT as the
    bucket NAME-ACCOUNT (virtual host NAME-ACCOUNT.localhost), so s3rver
    gets /NAME-ACCOUNT/KEY. Any other value passes unchanged."""
    m = ACCESS_POINT_SOURCE.match(value)
    return f"/{m.group(2)}-{m.group(1)}/{m.group(3)}" if m else value


def error_xml(code, message, request_id, extra=None):
    esc = xml.sax.saxutils.escape
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
             f"<Code>{esc(code)}</Code>", f"<Message>{esc(message)}</Message>"]
    for name, value in (extra or {}).items():
        parts.append(f"<{name}>{esc(str(value))}</{name}>")
    parts.append(f"<RequestId>{request_id}</RequestId>")
    parts.append(f"<HostId>{request_id}</HostId></Error>")
    return "".join(parts).encode("utf-8")


class _Abort(Exception):
    """Stop handling this connection now (after a deliberate fault)."""


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonS3"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this

    # Set on the class by make_server().
    state = None
    upstream = None  # (host, port)
    secrets = None
    region = None
    max_body = None
    verbose = False

    # Python answers "100 Continue" itself while parsing; defer that until
    # the signature has been judged, as S3 does.
    def handle_expect_100(self):
        self._expect_continue = True
        return True

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("s3proxy: %s - %s\n" % (self.address_string(),
                                                     fmt % args))

    def setup(self):
        super().setup()
        self._up = None  # persistent connection to the upstream
        self._expect_continue = False
        self._connection_counted = False  # counted at its first S3 request

    def finish(self):
        try:
            super().finish()
        finally:
            self._close_upstream()

    def _close_upstream(self):
        if self._up is not None:
            self._up.close()
            self._up = None

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except _Abort:
            self.close_connection = True
        except (ConnectionError, socket.timeout, BrokenPipeError):
            self.close_connection = True

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    # -- control API --------------------------------------------------------

    def _control(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self._expect_continue and length:
            self.send_response_only(100)
            self.end_headers()
        body = self.rfile.read(length) if length else b""
        name = self.path[len(CONTROL_PREFIX):].split("?")[0].strip("/")
        try:
            if self.command == "GET" and name == "stats":
                payload = self.state.snapshot()
            elif self.command == "GET" and name == "config":
                payload = self.state.snapshot()["config"]
            elif self.command == "POST" and name == "config":
                self.state.update_config(json.loads(body or b"{}"))
                payload = {"ok": True, "config": self.state.snapshot()["config"]}
            elif self.command == "POST" and name == "reset":
                self.state.reset()
                payload = {"ok": True}
            else:
                return self._send_simple(404, {"error": "no such control"})
        except (ValueError, TypeError, re.error) as exc:
            return self._send_simple(400, {"error": str(exc)})
        return self._send_simple(200, payload)

    def _send_simple(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- S3 requests --------------------------------------------------------

    def _dispatch(self):
        try:
            if self.path.startswith(CONTROL_PREFIX):
                return self._control()
            return self._proxy()
        finally:
            self._expect_continue = False

    def _split_target(self):
        """(bucket, key, path, raw_query) of the request, path style first."""
        target = self.path
        if target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            target = parts.path + ("?" + parts.query if parts.query else "")
        path, _, raw_query = target.partition("?")
        # Virtual-hosted style for Host: bucket.localhost[:port].
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        vhost_bucket = host[:-len(".localhost")] \
            if host.endswith(".localhost") else None
        decoded = unquote_to_bytes(path).decode("utf-8", "replace")
        if vhost_bucket:
            bucket, key = vhost_bucket, decoded[1:]
            raw_bucket, raw_key = vhost_bucket, path[1:]
        else:
            bucket, _, key = decoded[1:].partition("/")
            raw_bucket, sep, raw_key = path[1:].partition("/")
            if not sep:
                return bucket, key, path, raw_query
        # Forwarded as received (s3rver, patched by aws-fixes.js, takes the
        # key from the raw path as S3 does, empty segments included).
        return bucket, key, "/" + raw_bucket + "/" + raw_key, raw_query

    def _proxy(self):
        start = time.monotonic()
        if not self._connection_counted:
            self._connection_counted = True
            self.state.count_connection()
        method = self.command
        bucket, key, upstream_path, raw_query = self._split_target()
        query_keys = [k.decode("utf-8", "replace")
                      for k, _ in parse_query(raw_query)]
        op = classify(method, bucket, key, query_keys,
                      "x-amz-copy-source" in self.headers)
        target = upstream_path + ("?" + raw_query if raw_query else "")
        rec = {
            "time": time.time(), "method": method, "path": upstream_path,
            "query": raw_query, "op": op, "bucket": bucket, "key": key,
            "range": self.headers.get("Range"), "range_ignored": False,
            "spike": False,
            "copy_source": self.headers.get("x-amz-copy-source"),
            "copy_source_range": self.headers.get("x-amz-copy-source-range"),
            "content_length": None, "status": None, "fault": None,
            "sig_error": None, "upstream_error": False,
            "bytes_in": 0, "bytes_out": 0, "ms": None,
            "headers": [[k, v] for k, v in self.headers.items()],
        }
        self._request_id = uuid.uuid4().hex[:16].upper()
        self.state.begin(rec)
        try:
            self._proxy_inner(method, op, target, rec)
        finally:
            self.state.settle(rec, 0)  # no-op unless no answer was sent
            rec["ms"] = round((time.monotonic() - start) * 1000, 1)

    def _read_body(self, rec):
        """Read the request body; None (and closed connection) if refused."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            rec["sig_error"] = "MissingContentLength"
            self._reply_error(411, "MissingContentLength",
                              "You must provide the Content-Length HTTP "
                              "header.", rec, close=True)
            return None
        length_text = self.headers.get("Content-Length")
        try:
            length = int(length_text) if length_text else 0
        except ValueError:
            length = -1
        if length < 0:
            rec["sig_error"] = "InvalidArgument"
            self._reply_error(400, "InvalidArgument", "Bad Content-Length",
                              rec, close=True)
            return None
        rec["content_length"] = length
        if length > self.max_body:
            rec["sig_error"] = "EntityTooLarge"
            self._reply_error(400, "EntityTooLarge",
                              "Your proposed upload exceeds the maximum "
                              "allowed object size.", rec, close=True)
            return None
        if self._expect_continue:
            # Like S3, say 100 Continue even for an empty body: botocore,
            # for one, mis-parses the next answer on the connection if a
            # final status comes instead.
            self.send_response_only(100)
            self.end_headers()
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise _Abort()  # client went away mid-body
        self.state.add_bytes(rec, bytes_in=length)
        return body

    def _proxy_inner(self, method, op, target, rec):
        # 1. Judge the signature (header-level checks need no body).
        try:
            verdict = verify_sigv4(
                method, self.path, list(self.headers.items()), self.secrets,
                region=self.region,
                now=datetime.datetime.now(datetime.timezone.utc))
        except SigError as err:
            rec["sig_error"] = err.code
            # Refused before the body: with Expect: 100-continue the body is
            # never sent, so the connection cannot be reused.
            close = self._expect_continue
            if not close and not self._drain_body():
                close = True
            self._reply_error(err.status, err.code, err.message, rec,
                              extra=err.extra, close=close,
                              headers=err.headers)
            return
        body = self._read_body(rec)
        if body is None:
            return
        # 2. The body must hash to the signed x-amz-content-sha256.
        if verdict.payload_hash is not None:
            actual = hashlib.sha256(body).hexdigest()
            if actual != verdict.payload_hash:
                rec["sig_error"] = "XAmzContentSHA256Mismatch"
                self._reply_error(400, "XAmzContentSHA256Mismatch",
                                  "The provided 'x-amz-content-sha256' header "
                                  "does not match what was computed.", rec,
                                  extra={"ClientComputedContentSHA256":
                                         verdict.payload_hash,
                                         "S3ComputedContentSHA256": actual})
                return
        if op == "CompleteMultipartUpload":  # small XML, for the tests
            rec["body"] = body[:65536].decode("utf-8", "replace")
        # 2a. flip_body: a byte of the body goes bad on the way, after the
        # payload hash was judged (as if the signature had not covered it,
        # UNSIGNED-PAYLOAD over TLS): only a checksum can catch it now.
        if body and self.state.take_flip(method, op, target):
            rec["fault"] = "flip_body"
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0x01]) + \
                body[middle + 1:]
        # 2b. Content-MD5 and x-amz-checksum-* must match it too, and
        # SSE-C objects want their key (a bucket's own rule in S3).
        lower = {name.lower(): value.strip()
                 for name, value in self.headers.items()}
        try:
            check_body_digests(op, list(self.headers.items()), body)
            sse_c_md5 = self.state.sse_c_check(op, rec["bucket"], rec["key"],
                                               lower)
        except SigError as err:
            rec["sig_error"] = err.code
            self._reply_error(err.status, err.code, err.message, rec,
                              extra=err.extra)
            return
        # 2c. The bucket policy (POLICY): a 403 AccessDenied as S3 gives.
        refusal = self.state.policy_refusal(
            op, {k.lower(): v for k, v in self.headers.items()})
        if refusal:
            rec["sig_error"] = "AccessDenied"
            self._reply_error(403, "AccessDenied", refusal, rec)
            return
        # 3. Scripted or random faults that replace the answer.
        fault, detail = self.state.choose_fault(method, op, target)
        rec["spike"] = self.state.choose_spike(method, op, target)
        if fault == "fail_next" and any(
                k in detail for k in ("body", "headers", "content_length")):
            rec["fault"] = "fail_next"
            self._reply_raw(int(detail["status"]), detail.get("body", ""),
                            detail.get("headers") or {},
                            detail.get("content_length"), rec)
            return
        if fault == "fail_next":
            rec["fault"] = "fail_next"
            status = int(detail["status"])
            code = detail.get("code") or http.client.responses.get(
                status, "Error").replace(" ", "")
            self._reply_error(status, code, detail.get(
                "message", f"Injected {code}"), rec)
            return
        if fault == "503":
            rec["fault"] = "503"
            self._reply_error(503, "SlowDown", "Please reduce your request "
                              "rate.", rec)
            return
        if fault == "500":
            rec["fault"] = "500"
            self._reply_error(500, "InternalError", "We encountered an "
                              "internal error. Please try again.", rec)
            return
        # 3b. Fix-ups of an upstream that deviates from AWS.
        if "copy-source-if-match" in self.fixups and \
                self._copy_source_changed(method):
            self._reply_error(412, "PreconditionFailed", "At least one of "
                              "the pre-conditions you specified did not "
                              "hold", rec, extra={
                                  "Condition": "x-amz-copy-source-If-Match"})
            return
        # 4. Forward; "reset" and "truncate" spoil the answer on its way back.
        rec["fault"] = fault
        if self.headers.get("Range") is not None and \
                self.state.choose_ignore_range(method, op, target):
            rec["range_ignored"] = True
        self._forward(method, target, body, rec, fault)
        if rec["status"] is not None and 200 <= rec["status"] < 300:
            self.state.sse_c_written(op, rec["bucket"], rec["key"], sse_c_md5)

    def _copy_source_changed(self, method):
        """True when this copy names an x-amz-copy-source-if-match that the
        source's ETag (HEAD upstream) does not satisfy, as AWS judges it: one
        of the listed ETags, or "*". A missing source is the upstream's to
        report (NoSuchKey)."""
        source = self.headers.get("x-amz-copy-source")
        wanted = self.headers.get("x-amz-copy-source-if-match")
        if method != "PUT" or source is None or wanted is None:
            return False
        path = "/" + source.partition("?")[0].lstrip("/")
        access_key, secret = next(iter(self.secrets.items()))
        url = "http://%s:%d%s" % (self.upstream + (path,))
        req = AWSRequest(method="HEAD", url=url)
        S3SigV4Auth(Credentials(access_key, secret), "s3",
                    self.region or "us-east-1").add_auth(req)
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.request("HEAD", path, headers=dict(req.headers.items()))
            resp = conn.getresponse()
            resp.read()
            etag = resp.getheader("ETag")
        finally:
            conn.close()
        if resp.status != 200 or etag is None:
            return False
        listed = [t.strip() for t in wanted.split(",")]
        return "*" not in listed and etag not in listed

    def _drain_body(self):
        """Read and drop a refused request's body; False if too big."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return False
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return False
        if length > self.max_body:
            return False
        while length > 0:
            chunk = self.rfile.read(min(length, STREAM_CHUNK))
            if not chunk:
                raise _Abort()
            length -= len(chunk)
        return True

    def _reply_error(self, status, code, message, rec, extra=None,
                     close=False, headers=None):
        body = error_xml(code, message, self._request_id, extra)
        self._delay(rec)
        self.state.settle(rec, status)
        self.send_response_only(status)
        self.send_header("x-amz-request-id", self._request_id)
        self.send_header("x-amz-id-2", self._request_id)
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", "AmazonS3")
        self.send_header("Content-Type", "application/xml")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.command == "HEAD":
            # S3 sends no body on HEAD, errors included.
            self.send_header("Content-Length", "0")
            body = b""
        else:
            self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", "1")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.state.add_bytes(rec, bytes_out=len(body))
        self.wfile.write(body)

    def _reply_raw(self, status, body, headers, content_length, rec):
        """A scripted answer of any shape, for hostile-server tests: body
        as given (a str), extra headers, and possibly a Content-Length that
        lies (then the connection is closed after the body)."""
        body = body.encode() if isinstance(body, str) else bytes(body)
        self._delay(rec)
        self.state.settle(rec, status)
        self.send_response_only(status)
        self.send_header("x-amz-request-id", self._request_id)
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", "AmazonS3")
        for name, value in headers.items():
            self.send_header(name, value)
        if content_length is None:
            content_length = len(body)
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Content-Length", str(int(content_length)))
        self.end_headers()
        if self.command != "HEAD":
            self.state.add_bytes(rec, bytes_out=len(body))
            self.wfile.write(body)
        self.wfile.flush()

    def _delay(self, rec):
        seconds = self.state.latency(rec.get("spike", False))
        if seconds > 0:
            time.sleep(seconds)

    def _upstream_request(self, method, target, headers, body):
        """Send to the upstream and return its response.

        A reused keep-alive connection may have been closed by the upstream
        meanwhile; then (and only then, before any answer came) the request
        is sent once more on a fresh connection.
        """
        for attempt in (0, 1):
            reused = self._up is not None
            if self._up is None:
                self._up = http.client.HTTPConnection(*self.upstream,
                                                      timeout=300)
            try:
                self._up.putrequest(method, target, skip_host=True,
                                    skip_accept_encoding=True)
                for name, value in headers:
                    self._up.putheader(name, value)
                self._up.endheaders(body if body else None)
                return self._up.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError, http.client.CannotSendRequest):
                self._close_upstream()
                if not reused or attempt:
                    raise
            except Exception:
                self._close_upstream()
                raise
        raise AssertionError("unreachable")

    def _forward(self, method, target, body, rec, fault):
        headers = [("Host", "%s:%d" % self.upstream)]
        for name, value in self.headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in ("host", "content-length"):
                continue
            if lname == "range" and rec["range_ignored"]:
                continue  # the ignore_range fault
            if lname == "x-amz-copy-source":
                value = access_point_copy_source(value)
            headers.append((name, value))
        if body or method in ("PUT", "POST"):
            headers.append(("Content-Length", str(len(body))))
        try:
            resp = self._upstream_request(method, target, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            rec["upstream_error"] = True
            self.log_message("upstream failed: %r", exc)
            if self.state.upstream_error_mode() == "503":
                self._reply_error(503, "ServiceUnavailable", "Please reduce "
                                  "your request rate.", rec)
                return
            self.state.settle(rec, 0)
            self._abort_connection()
            return

        # Response headers, passed on minus hop-by-hop ones.
        out_headers = []
        has_request_id = False
        for name, value in resp.getheaders():
            lname = name.lower()
            if lname in HOP_BY_HOP:
                continue
            if lname == "x-amz-request-id":
                has_request_id = True
            out_headers.append((name, value))
        if 200 <= resp.status < 300:
            out_headers += self.state.injected_headers(method, rec["op"], target)
        if not has_request_id:
            out_headers.append(("x-amz-request-id", self._request_id))
            out_headers.append(("x-amz-id-2", self._request_id))
        if rec["op"] == "HeadBucket" and self.region and \
                resp.getheader("x-amz-bucket-region") is None:
            out_headers.append(("x-amz-bucket-region", self.region))
        length_text = resp.getheader("Content-Length")
        no_body = method == "HEAD" or resp.status in (204, 304) or \
            100 <= resp.status < 200
        length = int(length_text) if length_text is not None else None
        chunked = not no_body and length is None
        if chunked:
            out_headers.append(("Transfer-Encoding", "chunked"))

        self._delay(rec)
        self.state.settle(rec, resp.status)
        self.send_response_only(resp.status, resp.reason)
        for name, value in out_headers:
            self.send_header(name, value)

        if fault in ("reset", "truncate"):
            # Send all headers, then half the body, then kill the connection:
            # RST for "reset", FIN for "truncate". An answer without a body
            # (HEAD, 204, empty object) is dropped whole instead, since its
            # headers alone would be a complete answer.
            if no_body or not length:
                self._headers_buffer = []
            else:
                self.end_headers()
                self._copy_body(resp, length // 2, rec)
            self._close_upstream()  # the rest of the body is never read
            if fault == "reset":
                self._abort_connection()
            else:
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise _Abort()
            return

        self.end_headers()
        if no_body:
            resp.read()
        elif chunked:
            while True:
                chunk = resp.read(STREAM_CHUNK)
                if not chunk:
                    break
                self.state.add_bytes(rec, bytes_out=len(chunk))
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        else:
            sent = self._copy_body(resp, length, rec)
            if sent != length:
                # Upstream died mid-body: pass the breakage on.
                self.state.upstream_failed_midway(rec)
                self._close_upstream()
                self._abort_connection()
            resp.read()  # marks the response done, so the connection is reusable
        if resp.will_close:
            self._close_upstream()

    def _stall_point(self, rec):
        """Body bytes after which this answer pauses (stall_body), the
        pause in seconds; (None, 0) when it does not."""
        stall = self.state.config.get("stall_body")
        if not stall or rec["op"] != "GetObject":
            return None, 0
        if stall["path_regex"] and not re.search(stall["path_regex"], rec["path"]):
            return None, 0
        return stall["after"], stall["ms"] / 1000.0

    def _copy_body(self, resp, limit, rec):
        """Copy up to limit bytes of the upstream body downstream."""
        sent = 0
        stall_at, stall_s = self._stall_point(rec)
        while sent < limit:
            if stall_at is not None and sent >= stall_at:
                self.wfile.flush()
                time.sleep(stall_s)
                stall_at = None
            step = STREAM_CHUNK if stall_at is None else min(STREAM_CHUNK, stall_at - sent)
            try:
                chunk = resp.read(min(step, limit - sent))
            except (OSError, http.client.HTTPException):
                break
            if not chunk:
                break
            # Counted before it is written, so that a client holding the
            # last byte always finds it in the stats.
            self.state.add_bytes(rec, bytes_out=len(chunk))
            self.wfile.write(chunk)
            sent += len(chunk)
        return sent

    def _abort_connection(self):
        """Close the client connection with a TCP RST (SO_LINGER 0)."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        raise _Abort()


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    tls_context = None  # an ssl.SSLContext to listen with TLS

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls_context is not None:
            # The handshake happens in the handler's thread (first read), so
            # a client that hangs up on our certificate stalls nobody.
            sock = self.tls_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # Client-side disconnects are normal here (faults); stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, _Abort, socket.timeout,
                            ssl.SSLError)):
            return
        super().handle_error(request, client_address)


FIXUPS = ("copy-source-if-match",)


def make_server(upstream_url, port, secrets, region=None, seed=0,
                max_body=256 * 1024 * 1024, verbose=False, host="127.0.0.1",
                fixups=()):
    """Build (not start) a proxy server; returns (server, state)."""
    parts = urlsplit(upstream_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("upstream must be http://HOST:PORT")
    state = ProxyState(seed)
    handler = type("BoundProxyHandler", (ProxyHandler,), {
        "state": state,
        "upstream": (parts.hostname, parts.port or 80),
        "secrets": dict(secrets),
        "region": region,
        "max_body": max_body,
        "verbose": verbose,
        "fixups": frozenset(fixups),
    })
    return ProxyServer((host, port), handler), state


def main(argv=None, listening=None):
    """The proxy of the command line argv; listening(port) is told once it
    listens (None: print "PORT <port>")."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True,
                    help="s3rver base URL, http://127.0.0.1:PORT")
    ap.add_argument("--port", type=int, default=0, help="0 = a free port")
    ap.add_argument("--access-key", action="append", required=True,
                    help="accepted access key (repeatable, pairs with "
                         "--secret-key in order)")
    ap.add_argument("--secret-key", action="append", required=True)
    ap.add_argument("--region", default="us-east-1",
                    help="the only region accepted in Credential scopes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-body", type=int, default=256 * 1024 * 1024)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--tls-cert", help="listen with TLS: certificate (PEM)")
    ap.add_argument("--tls-key", help="listen with TLS: private key (PEM)")
    ap.add_argument("--fixup", action="append", default=[], choices=FIXUPS,
                    help="make the upstream answer like AWS where it does "
                         "not (repeatable)")
    args = ap.parse_args(argv)
    if len(args.access_key) != len(args.secret_key):
        ap.error("give one --secret-key per --access-key")
    server, _ = make_server(args.upstream, args.port,
                            dict(zip(args.access_key, args.secret_key)),
                            region=args.region, seed=args.seed,
                            max_body=args.max_body, verbose=args.verbose,
                            fixups=args.fixup)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.tls_context = ctx

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if listening:
        listening(server.server_address[1])
    else:
        print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# --------------------------------------------------------------------------
# The fork server: the tests' proxies started without an interpreter each
# --------------------------------------------------------------------------

def fork_server():
    """s3proxy.py --fork-server: starts proxies by fork(), for tests/rig.py.

    A proxy started as a program of its own pays for its interpreter and
    its imports (botocore's signer above all: about 0.3 s of CPU), and the
    integration suite starts one for each test. This process pays that
    once. It has no thread (fork() copies only the calling one), prints
    READY, then reads one request a line on stdin, JSON {"argv": [the
    proxy's arguments], "env": {...}, "log": path}, and forks; the child
    becomes that proxy (main), its stderr appended to the log. Each
    request is answered with one line: "PORT <port> <pid>" once the child
    listens, or "EXIT <pid>" when it ended before (its log says why). The
    kernel reaps the children (SIGCHLD ignored): the rig watches each
    through a pidfd. A child gets SIGTERM when this process ends, and this
    process when its own parent does (the rig's prctl). Ends at EOF."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("READY", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _forked_proxy(req, w)  # never returns
        os.close(w)
        with os.fdopen(r, "rb") as said:
            answer = said.readline().decode().strip()
        print(answer or f"EXIT {pid}", flush=True)
    return 0


def _forked_proxy(req, ready_fd):
    """In the forked child: become the proxy `req` describes; tell its port
    on ready_fd once it listens; never return."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        log = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 2)
        os.close(devnull)
        os.close(log)
        os.environ.clear()
        os.environ.update(req["env"])

        def listening(port):
            os.write(ready_fd, f"PORT {port} {os.getpid()}\n".encode())
            os.close(ready_fd)

        code = main(req["argv"], listening)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    sys.exit(fork_server() if sys.argv[1:] == ["--fork-server"] else main())
