// aws-fixes.js: make the pinned s3rver (@20minutes/s3rver 4.0.4) answer like
// AWS S3 where the pailfs tests depend on it.
//
// Project rule: where s3rver and AWS's documentation disagree, AWS wins. The
// fixes live here, never in node_modules (a clean `npm ci` must reproduce the
// rig): install() replaces exported functions and prototype methods of
// s3rver's own modules, reached through require() of their files. Node caches
// modules, so the replacements are what s3rver's routes see, PROVIDED install()
// runs before '@20minutes/s3rver' itself is required: lib/routes.js and
// lib/middleware/website.js capture some functions when they load (website.js
// destructures getObject; routes.js passes bucketExists by reference, and
// controllers/object.js destructures utils.xmlBodyParser). launch.js therefore
// calls install() first; install() refuses to run if s3rver's entry module is
// already loaded, and verify() checks the routes took the patches.
//
// Every patch below names the s3rver behaviour it replaces and the AWS
// behaviour it restores.

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const fsp = fs.promises;
const path = require('path');
const { pipeline, Transform } = require('stream');

const S3RVER_DIR = path.dirname(
  require.resolve('@20minutes/s3rver/package.json'),
);
const lib = (name) => require(path.join(S3RVER_DIR, 'lib', name));

const NS = 'http://s3.amazonaws.com/doc/2006-03-01/';
const MIB = 1024 * 1024;
const MAX_KEY_BYTES = 1024;

let installed = null; // the options install() ran with

// --------------------------------------------------------------------------
// Helpers shared by the patches
// --------------------------------------------------------------------------

/** Byte-wise (UTF-8) comparison: the order S3 lists keys in. */
function compareKeys(a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * S3's encoding-type=url: every byte percent-encoded except A-Z a-z 0-9 and
 * - _ . / * (so a key stays readable as a path), a space as '+'. This is the
 * form botocore undoes with unquote_plus.
 */
function s3UrlEncode(value) {
  let out = '';
  for (const byte of Buffer.from(String(value), 'utf8')) {
    const ch = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_./*]/.test(ch)) out += ch;
    else if (byte === 0x20) out += '+';
    else out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

function s3Error(code, message, detail) {
  const S3Error = lib('models/error');
  return new S3Error(code, message, detail);
}

function noSuchUpload(uploadId) {
  return s3Error(
    'NoSuchUpload',
    'The specified upload does not exist. The upload ID may be invalid, or ' +
      'the upload may have been aborted or completed.',
    { UploadId: uploadId },
  );
}

function noSuchKey(key) {
  return s3Error('NoSuchKey', 'The specified key does not exist.', {
    Key: key,
  });
}

function preconditionFailed(condition) {
  return s3Error(
    'PreconditionFailed',
    'At least one of the pre-conditions you specified did not hold',
    { Condition: condition },
  );
}

/** ETags of an If-Match / If-None-Match header, unquoted; '*' kept. */
function parseEtagList(header) {
  return String(header)
    .split(',')
    .map((tag) => tag.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1'))
    .filter(Boolean);
}

function etagMatches(header, etag) {
  const tags = parseEtagList(header);
  const bare = String(etag).replace(/^"(.*)"$/, '$1');
  return tags.includes('*') || tags.includes(bare);
}

function httpDate(value) {
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/**
 * RFC 7232 preconditions in the order AWS documents for GetObject/HeadObject
 * and, with the x-amz-copy-source-if-* names, for CopyObject/UploadPartCopy.
 * Returns null (go ahead), or [status, condition header that failed].
 * names: {ifMatch, ifUnmodifiedSince, ifNoneMatch, ifModifiedSince}.
 */
function evaluatePreconditions(headers, names, etag, lastModified) {
  // Last-Modified has one-second resolution; compare at that resolution.
  const modified = Math.floor(new Date(lastModified).getTime() / 1000) * 1000;
  const get = (name) => headers[name];
  if (get(names.ifMatch) !== undefined) {
    if (!etagMatches(get(names.ifMatch), etag)) return [412, names.ifMatch];
  } else if (get(names.ifUnmodifiedSince) !== undefined) {
    const since = httpDate(get(names.ifUnmodifiedSince));
    if (since !== null && modified > since) {
      return [412, names.ifUnmodifiedSince];
    }
  }
  if (get(names.ifNoneMatch) !== undefined) {
    if (etagMatches(get(names.ifNoneMatch), etag)) {
      return [304, names.ifNoneMatch];
    }
  } else if (get(names.ifModifiedSince) !== undefined) {
    const since = httpDate(get(names.ifModifiedSince));
    if (since !== null && modified <= since) {
      return [304, names.ifModifiedSince];
    }
  }
  return null;
}

const GET_CONDITIONS = {
  ifMatch: 'if-match',
  ifUnmodifiedSince: 'if-unmodified-since',
  ifNoneMatch: 'if-none-match',
  ifModifiedSince: 'if-modified-since',
};
const COPY_CONDITIONS = {
  ifMatch: 'x-amz-copy-source-if-match',
  ifUnmodifiedSince: 'x-amz-copy-source-if-unmodified-since',
  ifNoneMatch: 'x-amz-copy-source-if-none-match',
  ifModifiedSince: 'x-amz-copy-source-if-modified-since',
};

/**
 * A Range header the way S3 reads it (RFC 7233, one range only):
 * null = no usable range (answer the whole object with 200: absent, other
 * units, several ranges, or last < first), 'unsatisfiable' (416), or
 * {start, end} with end inclusive and clamped to the object.
 */
function parseRange(header, size) {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    if (size === 0) return null;
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  if (m[2] !== '' && Number(m[2]) < start) return null;
  if (start >= size) return 'unsatisfiable';
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return { start, end };
}

/**
 * x-amz-copy-source as AWS reads it: "[/]bucket/key[?versionId=...]", the
 * bucket and key percent-decoded once with decodeURIComponent semantics (a
 * '+' is a literal plus; %2B too). The versionId is ignored (no versioning).
 */
function parseCopySource(header) {
  let source = String(header || '');
  const q = source.indexOf('?');
  if (q !== -1) source = source.slice(0, q);
  if (source.startsWith('/')) source = source.slice(1);
  const slash = source.indexOf('/');
  const invalid = () =>
    s3Error('InvalidArgument', 'Invalid copy source object key', {
      ArgumentName: 'x-amz-copy-source',
      ArgumentValue: header,
    });
  if (slash <= 0 || slash === source.length - 1) throw invalid();
  try {
    return {
      bucket: decodeURIComponent(source.slice(0, slash)),
      key: decodeURIComponent(source.slice(slash + 1)),
    };
  } catch (err) {
    throw invalid();
  }
}

/** Reads a request body completely (as bytes, then UTF-8). */
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// --------------------------------------------------------------------------
// Reversible on-disk key encoding (FilesystemStore)
// --------------------------------------------------------------------------
//
// s3rver: getResourcePath() does path.join(bucket, ...key.split('/')), so
//   path.join normalises the key: "a//b" and "a/b", "dir/./dot" and
//   "dir/dot", "dir/../x" and "x", "/leading" and "leading" share one file.
// AWS: a key is an opaque string; all of those are distinct objects.
//
// Here every '/'-separated segment becomes one path component that is never
// "", "." or "..": '%' is written as %25, an empty segment as a lone '%', a
// segment "." or ".." with its dots as %2E, and the marker "._S3rver_" (s3rver
// names its files "<last segment>._S3rver_<resource>") as "._%533rver_", so a
// directory can never be mistaken for, or collide with, a resource file.
// Segments longer than SEGMENT_CHUNK bytes (file names stop at 255) are split
// into several components, each but the last ending in "%~".

const MARKER = '._S3rver_';
const OBJECT_SUFFIX = MARKER + 'object';
const CONTINUED = '%~';
const SEGMENT_CHUNK = 200;

function encodeSegment(segment) {
  if (segment === '') return ['%'];
  const escaped = segment.replace(/%/g, '%25').split(MARKER).join('._%533rver_');
  const dots = (s) => (s === '.' || s === '..' ? s.replace(/\./g, '%2E') : s);
  if (Buffer.byteLength(escaped) <= SEGMENT_CHUNK) return [dots(escaped)];
  const chunks = [];
  let current = '';
  for (const token of escaped.match(/%[0-9A-F]{2}|[\s\S]/gu)) {
    if (Buffer.byteLength(current + token) > SEGMENT_CHUNK) {
      chunks.push(current + CONTINUED);
      current = '';
    }
    current += token;
  }
  chunks.push(dots(current));
  return chunks;
}

function decodeSegment(encoded) {
  if (encoded === '%') return '';
  return encoded.replace(/%([0-9A-F]{2})/g, (_, hex) =>
    String.fromCharCode(parseInt(hex, 16)),
  );
}

/** Key -> list of path components. */
function encodeKey(key) {
  return String(key).split('/').flatMap(encodeSegment);
}

/**
 * Path components -> the key (or, for the components of a directory, the
 * key prefix every key below it starts with).
 */
function decodeComponents(components, isDirectory = false) {
  const segments = [];
  let pending = '';
  for (const component of components) {
    if (component.endsWith(CONTINUED)) {
      pending += component.slice(0, -CONTINUED.length);
    } else {
      segments.push(decodeSegment(pending + component));
      pending = '';
    }
  }
  if (pending) return segments.map((s) => s + '/').join('') + decodeSegment(pending);
  return isDirectory
    ? segments.map((s) => s + '/').join('')
    : segments.join('/');
}

// --------------------------------------------------------------------------
// FilesystemStore patches
// --------------------------------------------------------------------------

function patchStore(opts) {
  const FilesystemStore = lib('stores/filesystem');
  const S3Object = lib('models/object');
  const { ensureDir } = lib('utils');
  const proto = FilesystemStore.prototype;

  // s3rver: encodeKeyPath/decodeKeyPath are the identity on Linux, so keys
  //   are folded by path normalisation (see above).
  // AWS: keys are stored and returned byte for byte.
  FilesystemStore.encodeKeyPath = (key) => encodeKey(key).join('/');
  FilesystemStore.decodeKeyPath = (keyPath) =>
    decodeComponents(keyPath.split('/'));

  // Same fix where the paths are built. Bucket-level resources (key '' or
  // undefined: cors.xml, website.xml, the uploads directory) stay at the
  // bucket's root as before; no key encodes to a name starting with MARKER.
  proto.getResourcePath = function getResourcePath(bucket, key, resource) {
    if (key === undefined || key === '') {
      return path.join(this.rootDirectory, bucket, MARKER + resource);
    }
    const components = encodeKey(key);
    const last = components.pop();
    return path.join(
      this.rootDirectory,
      bucket,
      ...components,
      last + MARKER + resource,
    );
  };

  proto.tempPath = async function tempPath(bucket) {
    const dir = this.getResourcePath(bucket, undefined, 'tmp');
    await ensureDir(dir);
    return path.join(dir, crypto.randomBytes(12).toString('hex'));
  };

  // s3rver: for a Buffer body, putContent() resolves before the data is
  //   written. Here it resolves once the file is complete, for any body.
  proto.putContent = function putContent(filePath, content) {
    return new Promise((resolve, reject) => {
      const md5 = crypto.createHash('md5');
      let size = 0;
      const source = Buffer.isBuffer(content)
        ? require('stream').Readable.from([content])
        : content;
      pipeline(
        source,
        new Transform({
          transform(chunk, encoding, callback) {
            md5.update(chunk);
            size += chunk.length;
            callback(null, chunk);
          },
        }),
        fs.createWriteStream(filePath),
        (err) => (err ? reject(err) : resolve([size, md5.digest('hex')])),
      );
    });
  };

  /** Write a small file atomically (temp file, then rename). */
  proto.writeAtomic = async function writeAtomic(bucket, target, data) {
    const tmp = await this.tempPath(bucket);
    try {
      await fsp.writeFile(tmp, data);
      await fsp.rename(tmp, target);
    } finally {
      await fsp.unlink(tmp).catch(() => {});
    }
  };

  // s3rver: metadata.json and the .md5 file are rewritten in place, so a
  //   concurrent HEAD/GET can read a half-written JSON file (500).
  // AWS: a PUT is atomic; readers see the old or the new object.
  proto.putMetadata = async function putMetadata(bucket, key, metadata, md5) {
    // What s3rver keeps: its allowed headers and x-amz-meta-*.
    const json = {};
    for (const name of Object.keys(metadata || {})) {
      if (S3Object.ALLOWED_METADATA.includes(name) || name.startsWith('x-amz-meta-')) {
        json[name] = metadata[name];
      }
    }
    if (md5) {
      await this.writeAtomic(
        bucket,
        this.getResourcePath(bucket, key, 'object.md5'),
        md5,
      );
    }
    await this.writeAtomic(
      bucket,
      this.getResourcePath(bucket, key, 'metadata.json'),
      JSON.stringify(json, null, 2),
    );
  };

  // Run fn until a concurrent deleteObject() stops pruning the directory
  // it needs (ENOENT right after ensureDir).
  async function withDirectory(dir, fn) {
    for (let attempt = 0; ; attempt++) {
      await ensureDir(dir);
      try {
        return await fn();
      } catch (err) {
        if (err.code !== 'ENOENT' || attempt >= 5) throw err;
      }
    }
  }

  // s3rver: the object file is written in place (readers see a torn object
  //   while a PUT runs) and its directory may be pruned under it by a
  //   concurrent delete (500).
  // AWS: a PUT replaces the object atomically. Here the data goes to a temp
  //   file first and is renamed into place. opts.etag overrides the stored
  //   ETag (multipart objects).
  proto.putObject = async function putObject(object, options = {}) {
    const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
    const tmp = await this.tempPath(object.bucket);
    try {
      const [size, md5] = await this.putContent(tmp, object.content);
      const etag = options.etag || md5;
      await withDirectory(path.dirname(objectPath), async () => {
        await this.putMetadata(object.bucket, object.key, object.metadata, etag);
        await fsp.rename(tmp, objectPath);
      });
      return { size, md5: etag };
    } finally {
      await fsp.unlink(tmp).catch(() => {});
    }
  };

  // s3rver: copyObject() copies in place and, copying an object onto itself
  //   (metadata REPLACE), keeps its Last-Modified.
  // AWS: the copy is a new object: new Last-Modified, written atomically;
  //   its ETag is the MD5 of its data (a multipart source's "-N" ETag does
  //   not carry over to the single-part copy).
  proto.copyObject = async function copyObject(
    srcBucket,
    srcKey,
    destBucket,
    destKey,
    replacementMetadata,
  ) {
    const srcPath = this.getResourcePath(srcBucket, srcKey, 'object');
    const destPath = this.getResourcePath(destBucket, destKey, 'object');
    const srcMeta = await this.getMetadata(srcBucket, srcKey);
    const tmp = await this.tempPath(destBucket);
    try {
      await fsp.copyFile(srcPath, tmp);
      let md5 = srcMeta.etag.replace(/"/g, '');
      if (md5.includes('-')) {
        md5 = await new Promise((resolve, reject) => {
          const hash = crypto.createHash('md5');
          fs.createReadStream(tmp)
            .on('data', (chunk) => hash.update(chunk))
            .on('end', () => resolve(hash.digest('hex')))
            .on('error', reject);
        });
      }
      const metadata = replacementMetadata || srcMeta;
      await withDirectory(path.dirname(destPath), async () => {
        await this.putMetadata(destBucket, destKey, metadata, md5);
        await fsp.rename(tmp, destPath);
      });
    } finally {
      await fsp.unlink(tmp).catch(() => {});
    }
    return this.getMetadata(destBucket, destKey);
  };

  // s3rver: deleteObject() prunes directories by path.join of the raw key
  //   (normalised, see above) with a readdir-then-rm race, and leaves the
  //   object's tagging behind.
  // AWS: the object and its tags go; nothing else changes. Here only the
  //   key's own encoded directories are pruned, with rmdir (which refuses a
  //   non-empty directory).
  proto.deleteObject = async function deleteObject(bucket, key) {
    for (const resource of ['object', 'object.md5', 'metadata.json', 'tagging.xml']) {
      await fsp.unlink(this.getResourcePath(bucket, key, resource)).catch((err) => {
        if (err.code !== 'ENOENT' && err.code !== 'ENOTDIR') throw err;
      });
    }
    const components = encodeKey(key);
    components.pop();
    const bucketPath = this.getBucketPath(bucket);
    while (components.length) {
      try {
        await fsp.rmdir(path.join(bucketPath, ...components));
      } catch (err) {
        break; // not empty (or gone): stop pruning
      }
      components.pop();
    }
  };

  /**
   * Every key of the bucket that starts with prefix, sorted as S3 sorts
   * them (by UTF-8 bytes). Directories that cannot hold such a key are not
   * entered.
   */
  proto.listKeys = async function listKeys(bucket, prefix = '') {
    const keys = [];
    const walk = async (dir, components) => {
      let entries;
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return;
        throw err;
      }
      for (const entry of entries) {
        if (entry.isDirectory()) {
          if (entry.name.includes(MARKER)) continue; // uploads, tmp
          const below = components.concat(entry.name);
          const keyPrefix = decodeComponents(below, true);
          if (!keyPrefix.startsWith(prefix) && !prefix.startsWith(keyPrefix)) {
            continue;
          }
          await walk(path.join(dir, entry.name), below);
        } else if (entry.name.endsWith(OBJECT_SUFFIX)) {
          const last = entry.name.slice(0, -OBJECT_SUFFIX.length);
          if (last === '' || last.includes(MARKER)) continue;
          const key = decodeComponents(components.concat(last));
          if (key.startsWith(prefix)) keys.push(key);
        }
      }
    };
    await walk(this.getBucketPath(bucket), []);
    const sortable = keys.map((key) => [Buffer.from(key, 'utf8'), key]);
    sortable.sort((a, b) => Buffer.compare(a[0], b[0]));
    return sortable.map(([, key]) => key);
  };

  /**
   * One listing page with S3's semantics, in one pass over the sorted keys:
   * keys after `marker` (a marker that is itself a common prefix skips every
   * key under it), rolled up into common prefixes by `delimiter`, keys and
   * prefixes together counted against maxKeys. items: [{key} | {prefix}].
   */
  proto.listPage = async function listPage(bucket, options) {
    const { prefix = '', delimiter = '', marker = '', maxKeys = 1000 } = options;
    const keys = await this.listKeys(bucket, prefix);
    let skipUnder = null;
    if (delimiter && marker.startsWith(prefix)) {
      const idx = marker.indexOf(delimiter, prefix.length);
      if (idx !== -1 && idx + delimiter.length === marker.length) {
        skipUnder = marker;
      }
    }
    const markerBytes = Buffer.from(marker, 'utf8');
    const items = [];
    let lastPrefix = null;
    let isTruncated = false;
    for (const key of keys) {
      if (marker && Buffer.compare(Buffer.from(key, 'utf8'), markerBytes) <= 0) {
        continue;
      }
      if (skipUnder !== null && key.startsWith(skipUnder)) continue;
      let common = null;
      if (delimiter) {
        const idx = key.indexOf(delimiter, prefix.length);
        if (idx !== -1) common = key.slice(0, idx + delimiter.length);
      }
      if (common !== null && common === lastPrefix) continue;
      if (items.length >= maxKeys) {
        isTruncated = true;
        break;
      }
      if (common !== null) {
        items.push({ prefix: common });
        lastPrefix = common;
      } else {
        items.push({ key });
      }
    }
    return { items, isTruncated };
  };

  // s3rver: listObjects() walks directories in readdir order, so "a/x"
  //   comes before "a-b", a page stops early or skips keys, and a prefix
  //   holding only deeper keys never shows. Kept for s3rver's own callers
  //   (DeleteBucket), on top of listPage().
  proto.listObjects = async function listObjects(bucket, options = {}) {
    const { items, isTruncated } = await this.listPage(bucket, {
      prefix: options.prefix || '',
      delimiter: options.delimiter || '',
      marker: options.startAfter || '',
      maxKeys: options.maxKeys === undefined ? 1000 : options.maxKeys,
    });
    const objects = [];
    for (const item of items) {
      if (item.key === undefined) continue;
      const metadata = await this.getMetadata(bucket, item.key).catch(() => null);
      if (metadata) objects.push(new S3Object(bucket, item.key, null, metadata));
    }
    return {
      objects,
      commonPrefixes: items.filter((i) => i.prefix !== undefined).map((i) => i.prefix),
      isTruncated,
    };
  };

  // ---- multipart uploads --------------------------------------------------

  proto.uploadDir = function uploadDir(bucket, uploadId) {
    return path.join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId);
  };

  /** The upload's {key, metadata, initiated}, or null if there is none. */
  proto.getUpload = async function getUpload(bucket, uploadId) {
    if (!/^[0-9a-f]{32}$/.test(String(uploadId))) return null;
    const dir = this.uploadDir(bucket, uploadId);
    try {
      const [key, metadata, stat] = await Promise.all([
        fsp.readFile(path.join(dir, 'key'), 'utf8'),
        fsp.readFile(path.join(dir, 'metadata'), 'utf8').then(JSON.parse),
        fsp.stat(path.join(dir, 'key')),
      ]);
      // "initiated": the ISO time, then a sort key that orders uploads
      // begun within the same millisecond.
      const [initiated, order] = (
        await fsp
          .readFile(path.join(dir, 'initiated'), 'utf8')
          .catch(() => stat.mtime.toISOString())
      ).split('\n');
      return { uploadId, key, metadata, initiated, order: order || initiated };
    } catch (err) {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
      throw err;
    }
  };

  let uploadSequence = 0;
  // s3rver: no record of when an upload began (ListMultipartUploads needs
  //   it). The upload directory gets an "initiated" file.
  proto.initiateUpload = async function initiateUpload(bucket, key, uploadId, metadata) {
    const dir = this.uploadDir(bucket, uploadId);
    await ensureDir(dir);
    await Promise.all([
      fsp.writeFile(path.join(dir, 'key'), key),
      fsp.writeFile(path.join(dir, 'metadata'), JSON.stringify(metadata)),
      fsp.writeFile(
        path.join(dir, 'initiated'),
        `${new Date().toISOString()}\n` +
          `${String(Date.now()).padStart(16, '0')}.${String(uploadSequence++).padStart(9, '0')}`,
      ),
    ]);
  };

  // s3rver: putPart() creates the upload directory if it is missing, so a
  //   part sent to an aborted, completed or invented upload is accepted.
  // AWS: 404 NoSuchUpload. The part lands atomically, or not at all.
  proto.putPart = async function putPart(bucket, uploadId, partNumber, content) {
    const dir = this.uploadDir(bucket, uploadId);
    const tmp = await this.tempPath(bucket);
    try {
      const [size, md5] = await this.putContent(tmp, content);
      try {
        await fsp.writeFile(path.join(dir, `${partNumber}.md5`), md5);
        await fsp.rename(tmp, path.join(dir, String(partNumber)));
      } catch (err) {
        if (err.code === 'ENOENT') throw noSuchUpload(uploadId);
        throw err;
      }
      return { size, md5 };
    } finally {
      await fsp.unlink(tmp).catch(() => {});
    }
  };

  /** [{number, size, etag, lastModified}] of an upload's parts, by number. */
  proto.listUploadParts = async function listUploadParts(bucket, uploadId) {
    const dir = this.uploadDir(bucket, uploadId);
    const names = (await fsp.readdir(dir)).filter((n) => /^\d+$/.test(n));
    const parts = await Promise.all(
      names.map(async (name) => {
        const [stat, md5] = await Promise.all([
          fsp.stat(path.join(dir, name)),
          fsp.readFile(path.join(dir, `${name}.md5`), 'utf8'),
        ]);
        return {
          number: Number(name),
          size: stat.size,
          etag: md5.trim(),
          lastModified: stat.mtime,
        };
      }),
    );
    return parts.sort((a, b) => a.number - b.number);
  };

  // s3rver: putObjectMultipart() takes the key from the upload and
  //   concatenates whatever part files the numbers name, ignoring ETags,
  //   order and size, and stores the plain MD5 as the ETag.
  // AWS: checked by completeMultipartUpload (below); the ETag is the MD5 of
  //   the concatenated binary part MD5s followed by "-<number of parts>".
  proto.putObjectMultipart = async function putObjectMultipart(bucket, uploadId, parts, key) {
    const upload = await this.getUpload(bucket, uploadId);
    if (!upload) throw noSuchUpload(uploadId);
    const dir = this.uploadDir(bucket, uploadId);
    const { concatStreams } = lib('utils');
    const digest = crypto.createHash('md5');
    for (const part of parts) digest.update(Buffer.from(part.etag, 'hex'));
    const etag = `${digest.digest('hex')}-${parts.length}`;
    const object = new S3Object(
      bucket,
      key === undefined ? upload.key : key,
      concatStreams(parts.map((p) => fs.createReadStream(path.join(dir, String(p.number))))),
      upload.metadata,
    );
    const result = await this.putObject(object, { etag });
    await fsp.rm(dir, { recursive: true, force: true });
    return result;
  };

  proto.abortUpload = async function abortUpload(bucket, uploadId) {
    await fsp.rm(this.uploadDir(bucket, uploadId), { recursive: true, force: true });
  };

  proto.listUploads = async function listUploads(bucket) {
    const root = this.getResourcePath(bucket, undefined, 'uploads');
    let ids;
    try {
      ids = await fsp.readdir(root);
    } catch (err) {
      if (err.code === 'ENOENT') return [];
      throw err;
    }
    const uploads = (await Promise.all(ids.map((id) => this.getUpload(bucket, id)))).filter(
      Boolean,
    );
    // S3: by key, then uploads of one key by when they were initiated.
    return uploads.sort(
      (a, b) =>
        compareKeys(a.key, b.key) ||
        a.order.localeCompare(b.order) ||
        a.uploadId.localeCompare(b.uploadId),
    );
  };

  void opts;
}

// --------------------------------------------------------------------------
// XML in and out
// --------------------------------------------------------------------------

function patchXml() {
  // s3rver: every text value of a response (listings, errors) goes through
  //   he.escape() in a tagValueProcessor and then through fast-xml-parser's
  //   builder, which escapes it again: a key "a&b" comes back as
  //   "a&amp;amp;b", "'" and "`" as "&amp;#x27;" and "&amp;#x60;".
  // AWS: each value escaped exactly once. he.escape is only used by s3rver
  //   for those processors (he.decode, used to parse, is untouched), so it
  //   becomes the identity and the builder does the one escaping.
  const he = require(require.resolve('he', { paths: [S3RVER_DIR] }));
  he.escape = (value) => String(value);

  // s3rver: request XML (DeleteObjects, CompleteMultipartUpload) is parsed
  //   with fast-xml-parser's defaults, which turn "007" into 7, "1e3" into
  //   1000 and trim " a " to "a" (DeleteObjects then deletes the wrong key),
  //   and the body is decoded chunk by chunk (a multibyte character split
  //   across chunks is mangled).
  // AWS: keys are taken verbatim. Values stay strings, untrimmed; character
  //   references (&#x41;) are decoded.
  const utils = lib('utils');
  const { XMLParser, XMLValidator } = require(
    require.resolve('fast-xml-parser', { paths: [S3RVER_DIR] }),
  );
  utils.xmlBodyParser = async function xmlBodyParser(ctx) {
    const xml = await readBody(ctx.req);
    if (XMLValidator.validate(xml) !== true) {
      throw s3Error(
        'MalformedXML',
        'The XML you provided was not well-formed or did not validate ' +
          'against our published schema.',
      );
    }
    ctx.request.body = new XMLParser({
      parseTagValue: false,
      trimValues: false,
      htmlEntities: true,
      ignoreAttributes: true,
      ignoreDeclaration: true,
    }).parse(xml);
  };
}

function malformedXml() {
  return s3Error(
    'MalformedXML',
    'The XML you provided was not well-formed or did not validate against ' +
      'our published schema.',
  );
}

// --------------------------------------------------------------------------
// Controllers: buckets
// --------------------------------------------------------------------------

function patchBucketController() {
  const bucketCtrl = lib('controllers/bucket');
  const { DUMMY_ACCOUNT } = lib('models/account');
  const owner = () => ({ ID: DUMMY_ACCOUNT.id, DisplayName: DUMMY_ACCOUNT.displayName });

  const makeToken = (bucket, marker) =>
    Buffer.from(JSON.stringify({ b: bucket, m: marker }), 'utf8').toString('base64');
  const readToken = (bucket, token) => {
    try {
      const parsed = JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
      if (parsed.b === bucket && typeof parsed.m === 'string') return parsed.m;
    } catch (err) {
      // fall through
    }
    throw s3Error('InvalidArgument', 'The continuation token provided is incorrect', {
      ArgumentName: 'continuation-token',
    });
  };

  // s3rver (ListObjects V1 and V2): keys come in directory-walk order, not
  //   S3's; a common prefix holding only deeper keys is lost; common
  //   prefixes neither count against max-keys nor in KeyCount; a page
  //   ending in a common prefix makes the next page repeat it or lose keys;
  //   NextMarker is the last key even when the last entry was a prefix;
  //   encoding-type is ignored; continuation tokens need DES (OpenSSL
  //   legacy provider); HEAD on a bucket lists the whole bucket.
  // AWS: keys sorted by UTF-8 bytes; keys and common prefixes interleaved
  //   in that order and counted together (KeyCount = both); paging resumes
  //   after the last entry, skipping every key of a common prefix already
  //   returned; NextMarker (V1, with a delimiter) is the last entry;
  //   encoding-type=url encodes Key, Prefix, Delimiter, StartAfter, Marker,
  //   NextMarker and CommonPrefixes/Prefix and is echoed as EncodingType;
  //   HeadBucket answers 200 with x-amz-bucket-region and no body.
  bucketCtrl.getBucket = async function getBucket(ctx) {
    const bucket = ctx.params.bucket;
    if (ctx.method === 'HEAD') {
      ctx.set('x-amz-bucket-region', 'us-east-1');
      ctx.status = 200;
      ctx.body = '';
      return;
    }
    const q = ctx.query;
    const v2 = q['list-type'] === '2';
    let maxKeys = 1000;
    if (q['max-keys'] !== undefined) {
      if (!/^-?\d+$/.test(q['max-keys'])) {
        throw s3Error('InvalidArgument', 'Provided max-keys not an integer or within integer range', {
          ArgumentName: 'max-keys',
          ArgumentValue: q['max-keys'],
        });
      }
      const n = Number(q['max-keys']);
      if (n < 0 || n > 2147483647) {
        throw s3Error('InvalidArgument', 'Argument maxKeys must be an integer between 0 and 2147483647', {
          ArgumentName: 'maxKeys',
          ArgumentValue: n,
        });
      }
      maxKeys = Math.min(1000, n);
    }
    const encodingType = q['encoding-type'];
    if (encodingType !== undefined && encodingType !== 'url') {
      throw s3Error('InvalidArgument', 'Invalid Encoding Method specified in Request', {
        ArgumentName: 'encoding-type',
        ArgumentValue: encodingType,
      });
    }
    const enc = encodingType === 'url' ? s3UrlEncode : (value) => value;
    const prefix = q.prefix || '';
    const delimiter = q.delimiter || '';

    let marker = '';
    if (v2) {
      if ('marker' in q) {
        throw s3Error('InvalidArgument', 'Marker unsupported with REST.GET.BUCKET in list-type=2', {
          ArgumentName: 'marker',
        });
      }
      if ('continuation-token' in q) {
        marker = readToken(bucket, q['continuation-token']);
      } else {
        marker = q['start-after'] || '';
      }
    } else {
      if ('continuation-token' in q) {
        throw s3Error('InvalidArgument', 'continuation-token only supported in REST.GET.BUCKET with list-type=2', {
          ArgumentName: 'continuation-token',
        });
      }
      if ('start-after' in q) {
        throw s3Error('InvalidArgument', 'startAfter only supported in REST.GET.BUCKET with list-type=2', {
          ArgumentName: 'start-after',
        });
      }
      marker = q.marker || '';
    }

    const { items, isTruncated } =
      maxKeys === 0
        ? { items: [], isTruncated: false }
        : await ctx.store.listPage(bucket, { prefix, delimiter, marker, maxKeys });
    const contents = [];
    for (const item of items) {
      if (item.key === undefined) continue;
      const meta = await ctx.store.getMetadata(bucket, item.key).catch(() => null);
      if (!meta) continue; // deleted meanwhile
      contents.push({
        Key: enc(item.key),
        LastModified: new Date(meta['last-modified']).toISOString(),
        ETag: meta.etag,
        Size: Number(meta['content-length']),
        Owner: !v2 || q['fetch-owner'] === 'true' ? owner() : undefined,
        StorageClass: 'STANDARD',
      });
    }
    const commonPrefixes = items
      .filter((item) => item.prefix !== undefined)
      .map((item) => ({ Prefix: enc(item.prefix) }));
    const last = items.length ? items[items.length - 1] : null;
    const lastEntry = last ? (last.key !== undefined ? last.key : last.prefix) : undefined;

    const result = {
      '@': { xmlns: NS },
      Name: bucket,
      Prefix: enc(prefix),
    };
    if (v2) {
      Object.assign(result, {
        Delimiter: delimiter ? enc(delimiter) : undefined,
        MaxKeys: q['max-keys'] || 1000,
        EncodingType: encodingType,
        KeyCount: contents.length + commonPrefixes.length,
        IsTruncated: isTruncated,
        ContinuationToken: q['continuation-token'],
        NextContinuationToken: isTruncated ? makeToken(bucket, lastEntry) : undefined,
        StartAfter: q['start-after'] !== undefined ? enc(q['start-after']) : undefined,
      });
    } else {
      Object.assign(result, {
        Marker: enc(marker),
        NextMarker: isTruncated && delimiter ? enc(lastEntry) : undefined,
        MaxKeys: q['max-keys'] || 1000,
        Delimiter: delimiter ? enc(delimiter) : undefined,
        IsTruncated: isTruncated,
        EncodingType: encodingType,
      });
    }
    result.Contents = contents;
    result.CommonPrefixes = commonPrefixes;
    ctx.body = { ListBucketResult: result };
  };
}

// --------------------------------------------------------------------------
// Controllers: objects
// --------------------------------------------------------------------------

function checkKeyLength(key) {
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
    throw s3Error('KeyTooLongError', 'Your key is too long', {
      Size: Buffer.byteLength(key, 'utf8'),
      MaxSizeAllowed: MAX_KEY_BYTES,
    });
  }
}

/**
 * AWS conditional writes (PutObject, CompleteMultipartUpload):
 * If-None-Match: * fails with 412 when the key exists; If-Match needs the
 * key to exist (404 NoSuchKey) with a matching ETag (412).
 */
async function checkWriteConditions(ctx, bucket, key) {
  const noneMatch = ctx.headers['if-none-match'];
  const match = ctx.headers['if-match'];
  if (noneMatch === undefined && match === undefined) return;
  if (noneMatch !== undefined && noneMatch.trim() !== '*') {
    throw s3Error('NotImplemented', 'A header you provided implies functionality that is not implemented', {
      Header: 'If-None-Match',
    });
  }
  const meta = await ctx.store.getMetadata(bucket, key).catch((err) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
    throw err;
  });
  if (noneMatch !== undefined && meta) throw preconditionFailed('If-None-Match');
  if (match !== undefined) {
    if (!meta) throw noSuchKey(key);
    if (!etagMatches(match, meta.etag)) throw preconditionFailed('If-Match');
  }
}

/** Metadata of the copy source, after its preconditions (all 412). */
async function copySourceMetadata(ctx) {
  const source = parseCopySource(ctx.headers['x-amz-copy-source']);
  if (!(await ctx.store.getBucket(source.bucket))) {
    throw s3Error('NoSuchBucket', 'The specified bucket does not exist', {
      BucketName: source.bucket,
    });
  }
  const meta = await ctx.store.getMetadata(source.bucket, source.key).catch((err) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
    throw err;
  });
  if (!meta) throw noSuchKey(source.key);
  const failed = evaluatePreconditions(ctx.headers, COPY_CONDITIONS, meta.etag, meta['last-modified']);
  if (failed) throw preconditionFailed(failed[1]);
  return { ...source, meta };
}

function checkPartNumber(value) {
  const n = /^\d+$/.test(String(value)) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 10000)) {
    throw s3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', {
      ArgumentName: 'partNumber',
      ArgumentValue: value,
    });
  }
  return n;
}

async function requireUpload(ctx) {
  const upload = await ctx.store.getUpload(ctx.params.bucket, ctx.query.uploadId);
  // An upload belongs to one key: the same ID under another key is unknown.
  if (!upload || upload.key !== ctx.params.key) throw noSuchUpload(ctx.query.uploadId);
  return upload;
}

function patchObjectController(opts) {
  const objectCtrl = lib('controllers/object');
  const S3Object = lib('models/object');
  const { aws4SignatureBodyParser } = lib('signature/v4');
  const { capitalizeHeader } = lib('utils');
  const { DUMMY_ACCOUNT } = lib('models/account');
  const owner = () => ({ ID: DUMMY_ACCOUNT.id, DisplayName: DUMMY_ACCOUNT.displayName });

  // s3rver (GetObject/HeadObject): "bytes=0-0" answers the whole object,
  //   "bytes=-N" is read as "0-N", a start past the end answers 416 without
  //   Content-Range; If-Match and If-Unmodified-Since are ignored;
  //   If-Modified-Since is compared at millisecond resolution.
  // AWS: RFC 7233 ranges (one range; a syntactically invalid or multiple
  //   range is ignored and the whole object sent with 200; unsatisfiable ->
  //   416 InvalidRange with "Content-Range: bytes */N"); preconditions per
  //   RFC 7232 as the GetObject docs describe: If-Match ('*' matches any
  //   object) and If-Unmodified-Since -> 412 PreconditionFailed, If-None-Match
  //   and If-Modified-Since -> 304, evaluated before the range.
  objectCtrl.getObject = async function getObject(ctx) {
    const { bucket, key } = ctx.params;
    // The data file is opened first and its size and date taken from the
    // open file, so a PUT replacing the object meanwhile (a rename) cannot
    // make the body disagree with Content-Length.
    let handle;
    try {
      handle = await fsp.open(ctx.store.getResourcePath(bucket, key, 'object'), 'r');
    } catch (err) {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') throw noSuchKey(key);
      throw err;
    }
    let streaming = false;
    try {
      const stat = await handle.stat();
      const meta = await ctx.store.getMetadata(bucket, key).catch((err) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') throw noSuchKey(key);
        throw err;
      });
      meta['content-length'] = stat.size;
      meta['last-modified'] = stat.mtime.toUTCString();
      const object = new S3Object(bucket, key, null, meta);

      const failed = evaluatePreconditions(ctx.headers, GET_CONDITIONS, meta.etag, meta['last-modified']);
      if (failed && failed[0] === 412) throw preconditionFailed(failed[1]);
      if (failed) {
        ctx.set('ETag', meta.etag);
        ctx.set('Last-Modified', meta['last-modified']);
        ctx.status = 304;
        return;
      }

      const size = stat.size;
      const range = parseRange(ctx.headers.range, size);
      if (range === 'unsatisfiable') {
        // Answered here, not thrown: s3rver's error handler would drop the
        // Content-Range header AWS sends with a 416.
        const err = s3Error('InvalidRange', 'The requested range is not satisfiable', {
          RangeRequested: ctx.get('range'),
          ActualObjectSize: size,
        });
        ctx.status = err.status;
        ctx.type = 'application/xml';
        ctx.set('Content-Range', `bytes */${size}`);
        ctx.body = err.toXML();
        return;
      }

      ctx.set('Accept-Ranges', 'bytes');
      for (const name of Object.keys(object.metadata)) {
        if (name === 'content-length') continue;
        ctx.set(capitalizeHeader(name), object.metadata[name]);
      }
      if (range) {
        ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
        ctx.status = 206;
        ctx.length = range.end - range.start + 1;
      } else {
        ctx.status = 200;
        ctx.length = size;
      }
      if (ctx.method === 'HEAD') return;
      ctx.body = handle.createReadStream(range ? { start: range.start, end: range.end } : {});
      streaming = true; // the stream closes the file
    } finally {
      if (!streaming) await handle.close();
    }
  };

  // s3rver (PutObject): ignores If-None-Match and If-Match.
  // AWS conditional writes: If-None-Match: * -> 412 when the key exists;
  //   If-Match -> 404 NoSuchKey without an object, 412 on another ETag.
  const originalPutObject = objectCtrl.putObject;
  objectCtrl.putObject = async function putObject(ctx) {
    checkKeyLength(ctx.params.key);
    await checkWriteConditions(ctx, ctx.params.bucket, ctx.params.key);
    return originalPutObject(ctx);
  };

  // s3rver (CopyObject): x-amz-copy-source is decoded with decodeURI, so
  //   "%2B" stays "%2B" and a key with '+' (or any of ;/?:@&=+$,#) is never
  //   found; x-amz-copy-source-if-* are ignored; a "?versionId=" suffix
  //   becomes part of the key.
  // AWS: bucket and key decoded once (decodeURIComponent semantics; a raw
  //   '+' is a plus); versionId ignored here (no versioning); the four
  //   copy-source conditions fail with 412 PreconditionFailed.
  objectCtrl.putObjectCopy = async function putObjectCopy(ctx) {
    const destBucket = ctx.params.bucket;
    const destKey = ctx.params.key;
    checkKeyLength(destKey);
    const source = await copySourceMetadata(ctx);
    const directive = ctx.headers['x-amz-metadata-directive'];
    if (directive !== undefined && directive !== 'COPY' && directive !== 'REPLACE') {
      throw s3Error('InvalidArgument', 'Unknown metadata directive.', {
        ArgumentName: 'x-amz-metadata-directive',
        ArgumentValue: directive,
      });
    }
    const replace = directive === 'REPLACE';
    if (source.bucket === destBucket && source.key === destKey && !replace) {
      throw s3Error(
        'InvalidRequest',
        'This copy request is illegal because it is trying to copy an object ' +
          "to itself without changing the object's metadata, storage class, " +
          'website redirect location or encryption attributes.',
      );
    }
    const metadata = await ctx.store.copyObject(
      source.bucket,
      source.key,
      destBucket,
      destKey,
      replace ? ctx.headers : null,
    );
    ctx.body = {
      CopyObjectResult: {
        '@': { xmlns: NS },
        LastModified: new Date(metadata['last-modified']).toISOString(),
        ETag: metadata.etag,
      },
    };
  };

  // s3rver (CreateMultipartUpload): no key length check. AWS: keys are at
  //   most 1024 bytes (KeyTooLongError).
  const originalInitiate = objectCtrl.initiateMultipartUpload;
  objectCtrl.initiateMultipartUpload = async function initiateMultipartUpload(ctx) {
    checkKeyLength(ctx.params.key);
    await originalInitiate(ctx);
    ctx.body.InitiateMultipartUploadResult['@'] = { xmlns: NS };
  };

  // s3rver (UploadPart): any upload ID and part number are accepted (the
  //   upload directory is created on demand). AWS: an unknown upload, or
  //   one of another key, is 404 NoSuchUpload; part numbers are 1..10000.
  objectCtrl.uploadPart = async function uploadPart(ctx) {
    const partNumber = checkPartNumber(ctx.query.partNumber);
    await requireUpload(ctx);
    aws4SignatureBodyParser(ctx);
    const { md5 } = await ctx.store.putPart(
      ctx.params.bucket,
      ctx.query.uploadId,
      partNumber,
      ctx.request.body,
    );
    ctx.etag = md5;
    ctx.body = '';
  };

  // s3rver (UploadPartCopy): copy source decoded with decodeURI (see
  //   CopyObject), its conditions ignored, "bytes=0-0" copies the whole
  //   object, and the upload is not checked.
  // AWS: as CopyObject for the source; x-amz-copy-source-range
  //   "bytes=first-last" within the object (else 400 InvalidArgument);
  //   unknown upload 404 NoSuchUpload.
  objectCtrl.uploadPartCopy = async function uploadPartCopy(ctx) {
    const partNumber = checkPartNumber(ctx.query.partNumber);
    await requireUpload(ctx);
    const source = await copySourceMetadata(ctx);
    const size = Number(source.meta['content-length']);
    let streamOpts = {};
    const rangeHeader = ctx.headers['x-amz-copy-source-range'];
    if (rangeHeader !== undefined) {
      const m = /^bytes=(\d+)-(\d+)$/.exec(rangeHeader);
      if (!m) {
        throw s3Error(
          'InvalidArgument',
          'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy',
          { ArgumentName: 'x-amz-copy-source-range', ArgumentValue: rangeHeader },
        );
      }
      const start = Number(m[1]);
      const end = Number(m[2]);
      if (start > end || end >= size) {
        throw s3Error('InvalidArgument', `Range specified is not valid for source object of size: ${size}`, {
          ArgumentName: 'x-amz-copy-source-range',
          ArgumentValue: rangeHeader,
        });
      }
      streamOpts = { start, end };
    }
    const content = fs.createReadStream(
      ctx.store.getResourcePath(source.bucket, source.key, 'object'),
      streamOpts,
    );
    const { md5 } = await ctx.store.putPart(ctx.params.bucket, ctx.query.uploadId, partNumber, content);
    ctx.body = {
      CopyPartResult: {
        '@': { xmlns: NS },
        LastModified: new Date().toISOString(),
        ETag: JSON.stringify(md5),
      },
    };
  };

  // s3rver (CompleteMultipartUpload): an unknown or completed upload is a
  //   500; the part list is not checked (missing parts, wrong ETags, order,
  //   part sizes); the key stored at initiation is used, not the URL's;
  //   the ETag is the MD5 of the data; If-None-Match/If-Match ignored.
  // AWS: 404 NoSuchUpload; 400 InvalidPart for a part not uploaded or with
  //   another ETag; 400 InvalidPartOrder unless part numbers ascend; 400
  //   EntityTooSmall for a part under 5 MiB that is not the last; the ETag
  //   is md5(concatenated binary part MD5s) + "-N"; conditional writes as
  //   for PutObject.
  objectCtrl.completeMultipartUpload = async function completeMultipartUpload(ctx) {
    const { bucket, key } = ctx.params;
    const uploadId = ctx.query.uploadId;
    await requireUpload(ctx);
    await lib('utils').xmlBodyParser(ctx);
    const doc = ctx.request.body && ctx.request.body.CompleteMultipartUpload;
    if (!doc || !doc.Part) throw malformedXml();
    const requested = [].concat(doc.Part).map((part) => {
      if (!part || part.PartNumber === undefined || part.ETag === undefined) throw malformedXml();
      return {
        number: Number(String(part.PartNumber).trim()),
        etag: String(part.ETag).trim().replace(/"/g, ''),
      };
    });
    for (let i = 1; i < requested.length; i++) {
      if (!(requested[i].number > requested[i - 1].number)) {
        throw s3Error(
          'InvalidPartOrder',
          'The list of parts was not in ascending order. Parts must be ordered by part number.',
          { UploadId: uploadId },
        );
      }
    }
    const stored = new Map(
      (await ctx.store.listUploadParts(bucket, uploadId)).map((p) => [p.number, p]),
    );
    const parts = requested.map((want) => {
      const have = stored.get(want.number);
      if (!have || have.etag !== want.etag) {
        throw s3Error(
          'InvalidPart',
          'One or more of the specified parts could not be found.  The part ' +
            'may not have been uploaded, or the specified entity tag may not ' +
            "match the part's entity tag.",
          { UploadId: uploadId, PartNumber: want.number, ETag: want.etag },
        );
      }
      return have;
    });
    parts.slice(0, -1).forEach((part) => {
      if (part.size < opts.minPartSize) {
        throw s3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size', {
          ProposedSize: part.size,
          MinSizeAllowed: opts.minPartSize,
          PartNumber: part.number,
          ETag: part.etag,
        });
      }
    });
    await checkWriteConditions(ctx, bucket, key);
    const { md5 } = await ctx.store.putObjectMultipart(bucket, uploadId, parts, key);
    ctx.body = {
      CompleteMultipartUploadResult: {
        '@': { xmlns: NS },
        Location: `${ctx.origin}/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`,
        Bucket: bucket,
        Key: key,
        ETag: JSON.stringify(md5),
      },
    };
  };

  // s3rver (DeleteObjects): no Quiet mode, no limit on the number of keys,
  //   keys deleted in parallel (racing over shared directories).
  // AWS: at most 1000 keys (else 400 MalformedXML); <Quiet>true</Quiet>
  //   reports only errors; a key that does not exist counts as deleted.
  objectCtrl.deleteMultipleObjects = async function deleteMultipleObjects(ctx) {
    await lib('utils').xmlBodyParser(ctx);
    const doc = ctx.request.body && ctx.request.body.Delete;
    if (!doc || !doc.Object) throw malformedXml();
    const objects = [].concat(doc.Object);
    if (objects.length > 1000) throw malformedXml();
    const keys = objects.map((o) => {
      if (!o || o.Key === undefined) throw malformedXml();
      return String(o.Key);
    });
    const quiet = String(doc.Quiet || '').trim().toLowerCase() === 'true';
    for (const key of keys) {
      if (await ctx.store.existsObject(ctx.params.bucket, key)) {
        await ctx.store.deleteObject(ctx.params.bucket, key);
      }
    }
    ctx.body = {
      DeleteResult: {
        '@': { xmlns: NS },
        Deleted: quiet ? [] : keys.map((key) => ({ Key: key })),
      },
    };
  };

  // ---- operations s3rver lacks (not installed with refuseAbort) ----------

  // s3rver: AbortMultipartUpload answers 405 MethodNotAllowed.
  // AWS: the upload and its parts are removed, 204; unknown upload 404
  //   NoSuchUpload.
  objectCtrl.abortMultipartUpload = async function abortMultipartUpload(ctx) {
    await requireUpload(ctx);
    await ctx.store.abortUpload(ctx.params.bucket, ctx.query.uploadId);
    ctx.status = 204;
  };

  // s3rver: ListParts answers 405 MethodNotAllowed.
  // AWS: the parts uploaded so far, by number, paged by part-number-marker
  //   and max-parts.
  objectCtrl.listParts = async function listParts(ctx) {
    const upload = await requireUpload(ctx);
    const marker = Number(ctx.query['part-number-marker'] || 0);
    const maxParts = Math.min(1000, Number(ctx.query['max-parts'] || 1000));
    const all = (await ctx.store.listUploadParts(ctx.params.bucket, upload.uploadId)).filter(
      (p) => p.number > marker,
    );
    const page = all.slice(0, maxParts);
    const truncated = all.length > page.length;
    ctx.body = {
      ListPartsResult: {
        '@': { xmlns: NS },
        Bucket: ctx.params.bucket,
        Key: upload.key,
        UploadId: upload.uploadId,
        Initiator: owner(),
        Owner: owner(),
        StorageClass: 'STANDARD',
        PartNumberMarker: marker,
        NextPartNumberMarker: page.length ? page[page.length - 1].number : marker,
        MaxParts: maxParts,
        IsTruncated: truncated,
        Part: page.map((p) => ({
          PartNumber: p.number,
          LastModified: p.lastModified.toISOString(),
          ETag: JSON.stringify(p.etag),
          Size: p.size,
        })),
      },
    };
  };

  // s3rver: ListMultipartUploads answers 501 NotImplemented.
  // AWS: uploads in progress sorted by key, then initiation time; prefix,
  //   delimiter, key-marker, upload-id-marker, max-uploads, encoding-type;
  //   NextKeyMarker/NextUploadIdMarker when truncated.
  objectCtrl.listMultipartUploads = async function listMultipartUploads(ctx) {
    const q = ctx.query;
    const prefix = q.prefix || '';
    const delimiter = q.delimiter || '';
    const keyMarker = q['key-marker'] || '';
    const idMarker = keyMarker ? q['upload-id-marker'] || '' : '';
    let maxUploads = 1000;
    if (q['max-uploads'] !== undefined) {
      const n = /^\d+$/.test(q['max-uploads']) ? Number(q['max-uploads']) : NaN;
      if (!(n >= 0 && n <= 2147483647)) {
        throw s3Error('InvalidArgument', 'Argument max-uploads must be an integer between 0 and 2147483647', {
          ArgumentName: 'max-uploads',
          ArgumentValue: q['max-uploads'],
        });
      }
      maxUploads = Math.min(1000, n);
    }
    const encodingType = q['encoding-type'];
    if (encodingType !== undefined && encodingType !== 'url') {
      throw s3Error('InvalidArgument', 'Invalid Encoding Method specified in Request', {
        ArgumentName: 'encoding-type',
        ArgumentValue: encodingType,
      });
    }
    const enc = encodingType === 'url' ? s3UrlEncode : (value) => value;
    const uploads = (await ctx.store.listUploads(ctx.params.bucket)).filter((u) =>
      u.key.startsWith(prefix),
    );
    let start = 0;
    if (keyMarker) {
      const sameKey = uploads.filter((u) => u.key === keyMarker);
      const at = idMarker ? sameKey.findIndex((u) => u.uploadId === idMarker) : -1;
      start = uploads.findIndex((u) => compareKeys(u.key, keyMarker) > 0 ||
        (at !== -1 && u.key === keyMarker && sameKey.indexOf(u) > at));
      if (start === -1) start = uploads.length;
    }
    const items = [];
    let lastPrefix = null;
    let truncated = false;
    for (const upload of uploads.slice(start)) {
      let common = null;
      if (delimiter) {
        const idx = upload.key.indexOf(delimiter, prefix.length);
        if (idx !== -1) common = upload.key.slice(0, idx + delimiter.length);
      }
      if (common !== null && common === lastPrefix) continue;
      if (items.length >= maxUploads) {
        truncated = true;
        break;
      }
      if (common !== null) {
        items.push({ prefix: common });
        lastPrefix = common;
      } else {
        items.push({ upload });
      }
    }
    const last = items.length ? items[items.length - 1] : null;
    ctx.body = {
      ListMultipartUploadsResult: {
        '@': { xmlns: NS },
        Bucket: ctx.params.bucket,
        KeyMarker: enc(keyMarker),
        UploadIdMarker: idMarker,
        NextKeyMarker: truncated
          ? enc(last.upload ? last.upload.key : last.prefix)
          : undefined,
        NextUploadIdMarker: truncated && last.upload ? last.upload.uploadId : undefined,
        Delimiter: delimiter ? enc(delimiter) : undefined,
        Prefix: enc(prefix),
        MaxUploads: maxUploads,
        EncodingType: encodingType,
        IsTruncated: truncated,
        Upload: items
          .filter((i) => i.upload)
          .map(({ upload }) => ({
            Key: enc(upload.key),
            UploadId: upload.uploadId,
            Initiator: owner(),
            Owner: owner(),
            StorageClass: 'STANDARD',
            Initiated: upload.initiated,
          })),
        CommonPrefixes: items.filter((i) => i.prefix).map((i) => ({ Prefix: enc(i.prefix) })),
      },
    };
  };
}

// --------------------------------------------------------------------------
// Routing
// --------------------------------------------------------------------------

function wrapHandler(router, path_, method, wrap) {
  const layer = router.stack.find(
    (l) => l.path === path_ && l.methods.includes(method) && l.opts.end,
  );
  if (!layer) throw new Error(`aws-fixes: no ${method} ${path_} route in s3rver`);
  const i = layer.stack.length - 1;
  const original = layer.stack[i];
  layer.stack[i] = wrap(original);
  layer.stack[i].awsFixes = true;
}

function patchRoutes(opts) {
  const objectCtrl = lib('controllers/object');
  const router = lib('routes');

  // s3rver: routes '/:bucket/:key+' through path-to-regexp, which matches no
  //   empty path segment ("a//b", "/leading", "x//" answer a bare 404), and
  //   decodes the key with '+' turned into a space.
  // AWS: the key is the rest of the path after "/bucket/", percent-decoded
  //   once; '+' is a literal plus, empty segments are part of the key.
  //   Before routing, the key is re-encoded as one path segment (its '/' as
  //   %2F), which the router decodes back to exactly the key.
  const routes = router.routes.bind(router); // Router.prototype.routes
  router.routes = function awsRoutes() {
    const dispatch = routes();
    const fixed = function awsKeyPath(ctx, next) {
      const m = /^\/([^/]+)\/([\s\S]+)$/.exec(ctx.path);
      if (m) {
        let key;
        try {
          key = decodeURIComponent(m[2]);
        } catch (err) {
          throw s3Error('InvalidURI', "Couldn't parse the specified URI.", {
            URI: ctx.path,
          });
        }
        ctx.path = `/${m[1]}/${encodeURIComponent(key)}`;
      }
      return dispatch(ctx, next);
    };
    fixed.router = dispatch.router;
    return fixed;
  };

  if (opts.refuseAbort) return; // keep s3rver's 405 / 501 refusals

  wrapHandler(router, '/:bucket/:key+', 'DELETE', (original) =>
    function deleteObjectOrUpload(ctx, next) {
      return ctx.params.queryMethod === 'uploadId'
        ? objectCtrl.abortMultipartUpload(ctx)
        : original(ctx, next);
    },
  );
  wrapHandler(router, '/:bucket/:key+', 'GET', (original) =>
    function getObjectOrParts(ctx, next) {
      return ctx.params.queryMethod === 'uploadId'
        ? objectCtrl.listParts(ctx)
        : original(ctx, next);
    },
  );
  wrapHandler(router, '/:bucket', 'GET', (original) =>
    function getBucketOrUploads(ctx, next) {
      return ctx.params.queryMethod === 'uploads'
        ? objectCtrl.listMultipartUploads(ctx)
        : original(ctx, next);
    },
  );
}

// --------------------------------------------------------------------------
// Entry points
// --------------------------------------------------------------------------

/**
 * Apply every patch. Must run before '@20minutes/s3rver' is required.
 * options: refuseAbort (keep s3rver's 405 for AbortMultipartUpload and
 * ListParts and 501 for ListMultipartUploads), minPartSize (bytes; AWS's
 * 5 MiB by default).
 */
function install(options = {}) {
  if (installed) return;
  const entry = require.resolve('@20minutes/s3rver');
  if (require.cache[entry] || require.cache[path.join(S3RVER_DIR, 'lib', 'routes.js')]) {
    throw new Error('aws-fixes: install() must run before s3rver is required');
  }
  const opts = {
    refuseAbort: Boolean(options.refuseAbort),
    minPartSize: options.minPartSize === undefined ? 5 * MIB : Number(options.minPartSize),
  };
  // Order matters: utils and the XML escaping before the controllers (which
  // destructure utils), the controllers before routes.js and website.js
  // (which capture controller functions).
  patchXml();
  patchStore(opts);
  patchBucketController();
  patchObjectController(opts);
  patchRoutes(opts);
  installed = opts;
}

/** Throw unless s3rver runs with the patches (call after requiring it). */
function verify() {
  if (!installed) throw new Error('aws-fixes: not installed');
  const router = lib('routes');
  const checks = {
    'FilesystemStore.listPage': typeof lib('stores/filesystem').prototype.listPage === 'function',
    'router.routes': router.routes.name === 'awsRoutes',
    'xmlBodyParser': lib('utils').xmlBodyParser.name === 'xmlBodyParser' &&
      !lib('utils').xmlBodyParser.toString().includes('tagValueProcessor'),
    'he.escape': require(require.resolve('he', { paths: [S3RVER_DIR] })).escape('&') === '&',
  };
  if (!installed.refuseAbort) {
    checks['abort/list routes'] = router.stack.filter((l) =>
      l.stack.some((fn) => fn.awsFixes)).length === 3;
  }
  const failed = Object.keys(checks).filter((name) => !checks[name]);
  if (failed.length) throw new Error(`aws-fixes: not in effect: ${failed.join(', ')}`);
}

module.exports = {
  install,
  verify,
  // exported for tests and reuse
  encodeKey,
  decodeComponents,
  s3UrlEncode,
  parseRange,
  parseCopySource,
};
