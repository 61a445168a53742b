#!/bin/sh
# test.sh — install what is needed, build pailfs three times (a plain -Werror
# build, an ASan+UBSan build, and one without ISA-L, inflating with zlib),
# check that calls between source files go one way (contrib/layers.txt),
# and run every test: the cmocka unit tests of all three builds (with the
# fuzz targets replayed over their corpora and regression inputs), the pytest
# integration suite (against a real local S3 server behind the
# signature-judging proxy) and the fault suite (tests/fault: a mixed
# workload under injected faults, outages, a kill and a full cache disk; a
# few minutes) with the sanitizer build, so a memory error anywhere under
# real traffic fails the run, plus valgrind over the plain build, and the
# gzip view tests again with the zlib build. Then the core of both suites
# (the tests marked `core`: namespace, reads, writes, gzip views, fault
# regressions; about two minutes) runs a second time against moto, an
# independent S3 implementation (`moto_server`, on PATH or in
# /root/.pyenv/shims), behind the same proxy; where moto_server is absent
# or does not run, that step is skipped and says why (tests/README.md, "Two
# servers").
# Ends with one line: "N passed, N failed".
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

contrib/install-deps.sh

[ -x configure ] && [ configure -nt configure.ac ] || autoreconf -fi >/dev/null 2>&1
if [ -f config.status ]; then
    echo "test.sh: the source tree is configured in place; run 'make distclean' first" >&2
    exit 2
fi

jobs=$(nproc 2>/dev/null || echo 2)
build() { # dir, configure args...
    dir=$1; shift
    mkdir -p "$dir"
    (cd "$dir" && { [ -f Makefile ] || "$top/configure" -q "$@"; } && make -s -j"$jobs" >/dev/null)
}
build build
build build-asan --enable-sanitizers
build build-zlib --without-isal

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
# Calls between source files go one way (contrib/layers.txt); one test.
echo "== layers (contrib/check-layers.py over build)"
/usr/bin/python3 contrib/check-layers.py build >build/check-layers.log 2>&1 || status=1
cat build/check-layers.log
# The layout .clang-format fixes, over all of src; one test.
echo "== layout (clang-format --dry-run -Werror over src)"
if clang-format --dry-run -Werror src/*.[ch] src/*/*.[ch] >build/clang-format.log 2>&1; then
    echo "clang-format: [  PASSED  ] 1 test(s)." >>build/clang-format.log
else
    status=1
    echo "clang-format: [  FAILED  ] 1 test(s). (run clang-format -i on the files named)" \
        >>build/clang-format.log
fi
cat build/clang-format.log
for dir in build build-asan build-zlib; do
    echo "== unit tests ($dir)"
    (cd "$dir" && make -s -j"$jobs" check >/dev/null 2>&1) || status=1
    cat "$dir"/tests/unit/*.log "$dir"/tests/fuzz/replay.log || true
done

echo "== integration and fault tests (build-asan)"
PAILFS_BUILD_DIR="$top/build-asan" PAILFS_VALGRIND_BUILD="$top/build" /usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=25 \
    tests/integration tests/fault 2>&1 | tee build-asan/pytest.log || status=1
# The fault suite's table (docs/RELIABILITY.md quotes it).
[ -f build-asan/fault-table.md ] && cat build-asan/fault-table.md

echo "== gzip views inflated with zlib (build-zlib)"
PAILFS_BUILD_DIR="$top/build-zlib" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    tests/integration/test_mount_gzip.py 2>&1 | tee build-zlib/pytest.log || status=1

# The core again against moto (PAILFS_TEST_SERVER=moto, tests marked
# `core`); -rs lists the tests skipped there and why.
moto_log=
rm -f build-asan/moto-pytest.log
moto_missing=$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, "tests"); import rig
print(rig.moto_server()[1] or "")')
if [ -n "$moto_missing" ]; then
    echo "== core suite against moto: skipped: $moto_missing"
else
    echo "== core suite against moto (build-asan)"
    moto_log=build-asan/moto-pytest.log
    PAILFS_TEST_SERVER=moto PAILFS_BUILD_DIR="$top/build-asan" /usr/bin/python3 -m pytest -q \
        -p no:cacheprovider -rs -m core tests/integration tests/fault 2>&1 | tee "$moto_log" || status=1
fi

# One summary over all runners.
/usr/bin/python3 - build/check-layers.log build/clang-format.log \
    build/tests/unit/*.log build-asan/tests/unit/*.log build-zlib/tests/unit/*.log \
    build/tests/fuzz/replay.log build-asan/tests/fuzz/replay.log build-zlib/tests/fuzz/replay.log \
    build-asan/pytest.log build-zlib/pytest.log $moto_log <<'PY'
import re, sys
passed = failed = 0
for path in sys.argv[1:]:
    try:
        text = open(path, errors="replace").read()
    except OSError:
        failed += 1  # the test program never ran
        continue
    if path.endswith("pytest.log"):
        last = [l for l in text.splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
        line = last[-1] if last else ""
        for n, what in re.findall(r"(\d+) (passed|failed|errors?)", line):
            if what == "passed":
                passed += int(n)
            else:
                failed += int(n)
        if not last:
            failed += 1  # pytest did not finish
    else:
        m = re.search(r"\[  PASSED  \] (\d+) test", text)
        f = re.search(r"\[  FAILED  \] (\d+) test", text)
        passed += int(m.group(1)) if m else 0
        failed += int(f.group(1)) if f else 0
        if not m and not f:
            failed += 1  # the test program died before its summary
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
[ $? -eq 0 ] || status=1
exit $status
