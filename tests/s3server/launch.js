#!/usr/bin/env node
// launch.js: start the pinned s3rver (@20minutes/s3rver, see package.json)
// as a local S3 server for the pailfs integration tests.
//
// The package has no usable CLI, so this script builds the server through
// require() and reports the port it got on stdout as one line "PORT <n>",
// which the Python side (tests/rig.py) waits for. It then runs until SIGTERM
// or SIGINT and closes the listening socket before exiting.
//
// Signatures are NOT judged here (allowMismatchedSignatures): s3rver's own
// SigV4 check is unreliable; tests/proxy/s3proxy.py in front of it is the judge.
// s3rver still requires a known access key: its built-in one is S3RVER/S3RVER,
// and --access-key AK:SECRET adds more.
//
// Where s3rver and AWS's documentation disagree, AWS wins: aws-fixes.js
// patches s3rver's modules (listing order and paging, XML escaping, key
// storage, conditional requests, copy sources, multipart uploads, ranges) and
// must be installed before s3rver is required. See the comment on each patch.
//
// --no-abort keeps s3rver's refusals of AbortMultipartUpload and ListParts
// (405 MethodNotAllowed) and ListMultipartUploads (501 NotImplemented), to
// emulate servers without them. --min-part-size N changes the smallest part
// size CompleteMultipartUpload accepts for all but the last part (AWS: 5 MiB).
//
// --tls-cert PEM --tls-key PEM serve https instead of http (s3rver's own
// TLS: no proxy hop in front, for bench/run --https).
//
// Usage: node launch.js --dir DIR [--port 0] [--bucket NAME]...
//                       [--access-key AK:SECRET]... [--no-abort]
//                       [--min-part-size BYTES] [--tls-cert PEM --tls-key PEM]
//                       [--quiet]

'use strict';

const fs = require('fs');
const path = require('path');

function usage(message) {
  if (message) process.stderr.write(`launch.js: ${message}\n`);
  process.stderr.write(
    'usage: node launch.js --dir DIR [--port N] [--bucket NAME]... ' +
      '[--access-key AK:SECRET]... [--no-abort] [--min-part-size BYTES] ' +
      '[--tls-cert PEM --tls-key PEM] [--quiet]\n',
  );
  process.exit(2);
}

// Minimal argument parser: the few flags above, nothing else.
function parseArgs(argv) {
  const opts = {
    dir: null,
    port: 0,
    buckets: [],
    keys: [],
    quiet: false,
    noAbort: false,
    minPartSize: undefined,
    tlsCert: null,
    tlsKey: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--dir':
        opts.dir = value();
        break;
      case '--port':
        opts.port = Number(value());
        if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)
          usage('bad --port');
        break;
      case '--bucket':
        opts.buckets.push(value());
        break;
      case '--access-key': {
        const pair = value();
        const colon = pair.indexOf(':');
        if (colon <= 0) usage('--access-key wants AK:SECRET');
        opts.keys.push([pair.slice(0, colon), pair.slice(colon + 1)]);
        break;
      }
      case '--quiet':
        opts.quiet = true;
        break;
      case '--no-abort':
        opts.noAbort = true;
        break;
      case '--min-part-size':
        opts.minPartSize = Number(value());
        if (!Number.isInteger(opts.minPartSize) || opts.minPartSize < 0)
          usage('bad --min-part-size');
        break;
      case '--tls-cert':
        opts.tlsCert = value();
        break;
      case '--tls-key':
        opts.tlsKey = value();
        break;
      case '-h':
      case '--help':
        usage();
        break;
      default:
        usage(`unknown argument ${arg}`);
    }
  }
  if (!opts.dir) usage('--dir is required');
  if (!opts.tlsCert !== !opts.tlsKey) usage('--tls-cert and --tls-key go together');
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const log = opts.quiet ? () => {} : (m) => process.stderr.write(`${m}\n`);

  fs.mkdirSync(opts.dir, { recursive: true });

  // Before s3rver is required: see aws-fixes.js.
  const awsFixes = require('./aws-fixes');
  awsFixes.install({
    refuseAbort: opts.noAbort,
    minPartSize: opts.minPartSize,
  });
  const S3rver = require('@20minutes/s3rver');
  awsFixes.verify();
  if (opts.keys.length) {
    // Extra key pairs go onto s3rver's single built-in account.
    const { DUMMY_ACCOUNT } = require('@20minutes/s3rver/lib/models/account');
    for (const [ak, secret] of opts.keys) DUMMY_ACCOUNT.createKeyPair(ak, secret);
  }

  const server = new S3rver({
    address: '127.0.0.1',
    port: opts.port,
    directory: path.resolve(opts.dir),
    silent: true,
    allowMismatchedSignatures: true,
    // Path-style only: never take the Host header for a bucket name.
    vhostBuckets: false,
    configureBuckets: opts.buckets.map((name) => ({ name, configs: [] })),
    // s3rver serves https when given both (it passes them to https.createServer)
    ...(opts.tlsCert && {
      cert: fs.readFileSync(opts.tlsCert),
      key: fs.readFileSync(opts.tlsKey),
    }),
  });

  const { port } = await server.run();
  // The one line the launcher waits for; write it synchronously so it
  // leaves the process even if stdout is a pipe.
  fs.writeSync(1, `PORT ${port}\n`);
  log(`s3rver listening on 127.0.0.1:${port}, data in ${opts.dir}`);

  let closing = false;
  const shutdown = (signal) => {
    if (closing) return;
    closing = true;
    log(`launch.js: ${signal}, closing`);
    // Keep-alive sockets would hold close() open; end them first.
    if (server.httpServer.closeAllConnections) {
      server.httpServer.closeAllConnections();
    }
    server.close().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`launch.js: close failed: ${err.message}\n`);
        process.exit(1);
      },
    );
    // Never hang on shutdown.
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`launch.js: ${err.stack || err}\n`);
  process.exit(1);
});
