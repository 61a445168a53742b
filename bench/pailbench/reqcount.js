// reqcount.js: count the S3 requests s3rver receives, by type, for bench/run.
//
// Loaded into the rig's s3rver with `node --require` (NODE_OPTIONS, set by
// reqcount.py), before launch.js runs: it wraps http.Server's emit so that
// every 'request' event is classified and counted in the server's own
// process, before s3rver sees it. No hop is added and no byte is copied, so
// the loopback throughput workloads are measured as before; and since the
// count is taken at the server, it is the same behind --wan's byte-forwarding
// proxy as without it.
//
// A request is counted when it arrives, before its answer is sent: a client
// holding an answer always finds its request counted. Requests whose
// User-Agent carries "pailbench-check" come from the harness itself (fixture
// uploads, result checks) and are kept apart, never in the counts.
//
// GET /__bench__/counts answers {"types": {...}, "ops": {...}, "harness": n}
// as counted since the start (never reset: the harness takes differences).
// The path cannot clash with S3: "_" is not legal in a bucket name.

'use strict';

const http = require('http');
const https = require('https');

const CONTROL_PATH = '/__bench__/counts';
const HARNESS_AGENT = 'pailbench-check';

const counts = { types: {}, ops: {}, harness: 0 };

// Bucket-level GET subresources that read a configuration, not a listing.
const BUCKET_CONFIG = ['location', 'acl', 'policy', 'cors', 'lifecycle', 'website',
  'tagging', 'versioning', 'logging', 'notification', 'encryption', 'replication',
  'accelerate', 'requestPayment', 'object-lock', 'ownershipControls'];

/**
 * [type, S3 operation] of one request; type is what the report shows.
 * PUT: PutObject, UploadPart, CopyObject, UploadPartCopy (every request that
 * writes object data, all billed at S3's PUT tier). DELETE: DeleteObject and
 * DeleteObjects (one request, however many keys). LIST: ListObjects(V2),
 * ListObjectVersions. other: multipart create/complete/abort/list, bucket
 * requests (HeadBucket, GetBucketLocation, ...), ACLs, tags.
 */
function classify(req) {
  const [path, query = ''] = req.url.split('?', 2);
  const q = new URLSearchParams(query);
  const rest = path.replace(/^\/+/, '');
  const slash = rest.indexOf('/');
  const onObject = slash >= 0 && slash < rest.length - 1;
  const has = (name) => q.has(name);
  const copy = req.headers['x-amz-copy-source'] !== undefined;
  switch (req.method) {
    case 'GET':
      if (!onObject) {
        if (has('uploads')) return ['other', 'ListMultipartUploads'];
        if (BUCKET_CONFIG.some(has)) return ['other', 'GetBucketConfig'];
        if (has('versions')) return ['LIST', 'ListObjectVersions'];
        return ['LIST', q.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects'];
      }
      if (has('uploadId')) return ['other', 'ListParts'];
      if (has('acl') || has('tagging')) return ['other', 'GetObjectConfig'];
      return ['GET', 'GetObject'];
    case 'HEAD':
      return onObject ? ['HEAD', 'HeadObject'] : ['other', 'HeadBucket'];
    case 'PUT':
      if (!onObject) return ['other', 'PutBucket'];
      if (has('uploadId')) return ['PUT', copy ? 'UploadPartCopy' : 'UploadPart'];
      if (has('acl') || has('tagging')) return ['other', 'PutObjectConfig'];
      return ['PUT', copy ? 'CopyObject' : 'PutObject'];
    case 'POST':
      if (!onObject && has('delete')) return ['DELETE', 'DeleteObjects'];
      if (has('uploads')) return ['other', 'CreateMultipartUpload'];
      if (has('uploadId')) return ['other', 'CompleteMultipartUpload'];
      return ['other', 'Post'];
    case 'DELETE':
      if (!onObject) return ['other', 'DeleteBucket'];
      if (has('uploadId')) return ['other', 'AbortMultipartUpload'];
      return ['DELETE', 'DeleteObject'];
    default:
      return ['other', req.method];
  }
}

function bump(map, key) {
  map[key] = (map[key] || 0) + 1;
}

// https.Server does not inherit from http.Server (bench/run --https): both
// are wrapped, each around its own emit.
function countRequests(proto) {
  const emit = proto.emit;
  proto.emit = function emitCounted(event, req, res) {
    if (event === 'request' && answerOrCount(req, res)) return true;
    return emit.apply(this, arguments);
  };
}

// The control request is answered here (true); any other is counted.
function answerOrCount(req, res) {
  if (req.url === CONTROL_PATH) {
    const body = JSON.stringify(counts);
    res.writeHead(200, { 'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return true;
  }
  if ((req.headers['user-agent'] || '').includes(HARNESS_AGENT)) {
    counts.harness++;
  } else {
    const [type, op] = classify(req);
    bump(counts.types, type);
    bump(counts.ops, op);
  }
  return false;
}

countRequests(http.Server.prototype);
countRequests(https.Server.prototype);
