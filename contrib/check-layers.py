#!/usr/bin/env python3
"""check-layers.py — calls between the source files of pailfs go one way.

Reads the object files of a build (`nm`: the symbols each defines, T/D/B/R,
and those it uses, U), makes the graph of which file calls which, and checks
it against contrib/layers.txt, where the allowed order is written once:

  * every call from one group of files to another is one the table allows
    (a group listed as X allows X and its subgroups X.*);
  * no files call each other in a circle, in any group.

Edges listed as `allow` in the table are known exceptions and pass.
Usage: contrib/check-layers.py [BUILD_DIR [LAYERS_FILE]]  (default: build,
contrib/layers.txt).  Prints one line per problem and, last, "check-layers:
[  PASSED  ] 1 test(s)." or "[  FAILED  ] 1 test(s)." (the form the unit
test logs use, so contrib/test.sh counts it); exits 1 on a problem."""
import fnmatch
import os
import subprocess
import sys

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(top, "build"))
table = sys.argv[2] if len(sys.argv) > 2 else os.path.join(top, "contrib", "layers.txt")
src = os.path.join(top, "src")


def fail(msgs):
    for m in msgs:
        print("check-layers: " + m)
    print("check-layers: [  FAILED  ] 1 test(s).")
    sys.exit(1)


# ---- the table -----------------------------------------------------------
groups = []  # (name, [patterns], [groups it may call])
allowed_edges = set()
problems = []
logical = []  # (line number, text): an indented line continues the one before
for n, raw in enumerate(open(table), 1):
    text = raw.split("#", 1)[0].rstrip()
    if not text.strip():
        continue
    if text[0].isspace() and logical:
        logical[-1] = (logical[-1][0], logical[-1][1] + " " + text.strip())
    else:
        logical.append((n, text.strip()))
for n, line in logical:
    where = "%s:%d" % (os.path.relpath(table, top), n)
    if line.startswith("allow "):
        parts = line[6:].split()
        if len(parts) != 3 or parts[1] != "->":
            problems.append("%s: expected 'allow FILE -> FILE'" % where)
        else:
            allowed_edges.add((parts[0], parts[2]))
        continue
    if ":" not in line or "->" not in line:
        problems.append("%s: expected 'GROUP: FILES... -> GROUPS...'" % where)
        continue
    name, rest = line.split(":", 1)
    files, calls = rest.split("->", 1)
    groups.append((name.strip(), files.split(), calls.split()))
names = {g[0] for g in groups}


def covers(listed, name):
    """A listed group X stands for X and its subgroups X.*."""
    return name == listed or name.startswith(listed + ".")


for g in groups:
    for c in g[2]:
        if not any(covers(c, name) for name in names):
            problems.append("group %s may call %s, which the table does not define" % (g[0], c))
if problems:
    fail(problems)

# ---- the objects of the build ------------------------------------------------
objects = {}  # "fs/inode.c" -> path of its object
for dirpath, _, filenames in os.walk(os.path.join(build, "src")):
    for f in filenames:
        if not f.endswith(".o"):
            continue
        obj = os.path.join(dirpath, f)
        rel = os.path.relpath(obj, os.path.join(build, "src"))[:-2] + ".c"
        if os.path.exists(os.path.join(src, rel)):  # skip objects of removed files
            objects[rel] = obj
if not objects:
    fail(["no object files under %s/src: build first" % build])


def group_of(f):
    for name, pats, _ in groups:
        if any(fnmatch.fnmatchcase(f, p) for p in pats):
            return name
    return None


defined, used = {}, {}
for f, obj in objects.items():
    out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
    defined[f], used[f] = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBR":
            defined[f].add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            used[f].add(parts[1])
owner = {}
for f, syms in defined.items():
    for s in syms:
        owner[s] = f

edges = {}  # (from, to) -> symbols
for f in objects:
    if group_of(f) is None:
        problems.append("%s is in no group of %s" % (f, os.path.relpath(table, top)))
    for s in used[f]:
        t = owner.get(s)
        if t and t != f:
            edges.setdefault((f, t), []).append(s)
if problems:
    fail(problems)

# ---- calls between groups ---------------------------------------------------------
may = {g[0]: set(g[2]) for g in groups}
for (a, b), syms in sorted(edges.items()):
    ga, gb = group_of(a), group_of(b)
    if ga != gb and not any(covers(c, gb) for c in may[ga]) and (a, b) not in allowed_edges:
        problems.append("%s (%s) calls %s (%s): %s; the table lets %s call only: %s" % (
            a, ga, b, gb, ", ".join(sorted(syms)[:3]), ga, " ".join(sorted(may[ga])) or "nothing"))

# ---- cycles between files (Tarjan's strongly connected components) --------------
graph = {f: [] for f in objects}
for (a, b) in edges:
    if (a, b) not in allowed_edges:
        graph[a].append(b)
index, low, stack, on, comps = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in index:
        visit(v)
for comp in comps:
    # One circle through the component, to name the calls that close it.
    members = set(comp)
    path, seen, v = [comp[0]], {comp[0]}, comp[0]
    while True:
        nxt = sorted(w for w in graph[v] if w in members)
        back = [w for w in nxt if w in seen]
        w = back[0] if back else nxt[0]
        if w in seen:
            cycle = path[path.index(w):] + [w]
            break
        path.append(w)
        seen.add(w)
        v = w
    steps = ["%s -> %s (%s)" % (a, b, ", ".join(sorted(edges[(a, b)])[:2]))
             for a, b in zip(cycle, cycle[1:])]
    problems.append("files call each other in a circle: %s; break one of: %s" % (
        " -> ".join(cycle), "; ".join(steps)))

if problems:
    fail(problems)
print("check-layers: %d files, %d calls between them, %d known exception(s): one way" % (
    len(objects), len(edges), len(allowed_edges)))
print("check-layers: [  PASSED  ] 1 test(s).")
