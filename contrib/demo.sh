#!/bin/sh
# demo.sh — install what is needed, build pailfs, start a local S3 server
# (s3rver, on 127.0.0.1) holding a demo bucket with sample files, mount it
# with pailfs and list it.  The server and the mount keep running in the
# background; how to stop them is printed at the end.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
contrib/install-deps.sh
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
mkdir -p build
(cd build && { [ -f Makefile ] || ../configure -q; } && make -s -j"$(nproc)" >/dev/null && make -s tests/s3drive >/dev/null)

state=${PAILFS_DEMO_DIR:-/tmp/pailfs-demo}
mkdir -p "$state"
if [ -f "$state/server.pid" ] && kill -0 "$(cat "$state/server.pid")" 2>/dev/null; then
    port=$(cat "$state/server.port")
else
    NODE_OPTIONS=--openssl-legacy-provider setsid node tests/s3server/launch.js \
        --dir "$state/data" --bucket demo --quiet > "$state/server.out" 2> "$state/server.log" &
    echo $! > "$state/server.pid"
    for _ in $(seq 100); do grep -q PORT "$state/server.out" 2>/dev/null && break; sleep 0.1; done
    port=$(sed -n 's/^PORT //p' "$state/server.out")
    echo "$port" > "$state/server.port"
fi
endpoint="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_EC2_METADATA_DISABLED=true
drive() { build/tests/s3drive --endpoint "$endpoint" --bucket demo "$@"; }

printf 'hello from pailfs\n' > "$state/hello.txt"
seq 1 100000 | sed 's/.*/{"n": &, "msg": "line &"}/' > "$state/events.jsonl"
gzip -kf "$state/events.jsonl"
drive put hello.txt "$state/hello.txt" >/dev/null
drive put logs/2026/events.jsonl.gz "$state/events.jsonl.gz" >/dev/null
drive put "docs/a file with spaces+plus.txt" "$state/hello.txt" >/dev/null

echo "== local S3 server: $endpoint, bucket demo (keys S3RVER/S3RVER)"
echo "== pailfs --version"; build/src/pailfs --version
mnt="$state/mnt"
fusermount3 -uz "$mnt" 2>/dev/null || true  # a mount left by an earlier run
mkdir -p "$mnt"
echo "== pailfs -o endpoint=$endpoint demo $mnt"
build/src/pailfs -o endpoint="$endpoint",cache_dir="$state/cache" demo "$mnt"
echo "== ls -lR $mnt"; ls -lR "$mnt" | sed 's/^/   /'
echo "== cat $mnt/hello.txt"; cat "$mnt/hello.txt"
echo "== echo ... > $mnt/notes/new.txt, then the key as S3 has it"
mkdir -p "$mnt/notes"
echo "written through pailfs" > "$mnt/notes/new.txt"
drive list --prefix notes/ | sed 's/^/   /'
echo "== unmount with: fusermount3 -u $mnt"
echo "== stop the server with: kill \$(cat $state/server.pid)"
