#!/bin/sh
# install-deps.sh — install everything pailfs needs to build and test, from
# Debian's packages and the npm registry.  Safe to run again: apt-get and
# npm ci skip what is already there.  Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."

PKGS="build-essential autoconf automake libtool pkg-config
      libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev libxml2-dev zlib1g-dev
      libisal-dev libjson-c-dev uthash-dev libcmocka-dev
      python3 python3-pytest python3-botocore python3-boto3 ca-certificates
      pigz tabix gztool isal valgrind openssl clang-format rsync"
command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The local S3 server used by the tests, pinned by its package-lock.json.
if [ ! -d tests/s3server/node_modules/@20minutes/s3rver ]; then
    echo "install-deps: npm ci in tests/s3server"
    (cd tests/s3server && npm ci --no-audit --no-fund --loglevel=error)
fi
