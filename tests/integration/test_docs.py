"""The documentation kept in step with the code: every -o option of the
table in src/options.c (o_table) is in man/pailfs.1, with its default, and
in `pailfs --help`; the README links only files that exist; docs/IAM.md's
policies are valid JSON naming every S3 permission the client's calls need.

The option list is read from the table itself, so an option added to the
code without its documentation fails here."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from drive import ROOT
from mount import PAILFS

OPTIONS_C = ROOT / "src" / "options.c"
MAN = ROOT / "man" / "pailfs.1"
README = ROOT / "README.md"
IAM = ROOT / "docs" / "IAM.md"
CLIENT_C = ROOT / "src" / "s3" / "client.c"


def option_table():
    """[(name, kind, setter)] of o_table in src/options.c."""
    text = OPTIONS_C.read_text()
    body = text[text.index("o_table[] = {"):]
    body = body[:body.index("\n};")]
    rows = re.findall(r'\{"([^"]+)",\s*O_(FLAG|VALUE),\s*(\w+)', body)
    assert len(rows) > 40, "cannot read o_table"
    return rows


def man_text():
    """man/pailfs.1 with the font escapes taken out."""
    t = MAN.read_text()
    t = re.sub(r"\\f[BIRP]", "", t)
    return t.replace("\\-", "-").replace("\\(em", "-")


def man_items():
    """{tag line: body} of every .TP item of the man page."""
    items, lines = {}, man_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i] == ".TP" and i + 1 < len(lines):
            tag, body = lines[i + 1], []
            i += 2
            while i < len(lines) and not re.match(r"\.(TP|SS|SH|PP)\b",
                                                   lines[i]):
                body.append(lines[i])
                i += 1
            items[tag] = " ".join(body)
        else:
            i += 1
    return items


def word(name):
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")


# Options that are accepted and ignored, or refused: the man page lists
# them in one paragraph, with no default to give.
NO_DEFAULT = {"o_ignore", "o_sync"}


def test_every_option_is_in_the_man_page():
    text = man_text()
    missing = []
    for name, kind, _ in option_table():
        pattern = rf"(?<![\w-]){re.escape(name)}=" if kind == "VALUE" \
            else word(name)
        if not re.search(pattern, text):
            missing.append(name)
    assert missing == [], f"man/pailfs.1 does not document: {missing}"


def test_every_option_has_its_default_in_the_man_page():
    items = man_items()
    no_default = []
    for name, kind, setter in option_table():
        if setter in NO_DEFAULT and name != "default_permissions":
            continue
        tags = [t for t in items if "-o" in t and word(name).search(t)]
        if not tags:
            no_default.append(f"{name} (no item of its own)")
            continue
        body = " ".join(items[t] for t in tags)
        if not re.search(r"[Dd]efault|[Aa]lways on", body):
            no_default.append(name)
    assert no_default == [], f"man/pailfs.1 gives no default for {no_default}"


def test_every_option_is_in_help():
    r = subprocess.run([str(PAILFS), "--help"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    missing = [name for name, _, _ in option_table()
               if not word(name).search(r.stdout)]
    assert missing == [], f"pailfs --help does not mention: {missing}"


@pytest.mark.parametrize("section", ["CREDENTIALS", "EXIT STATUS", "GZIP",
                                     "EXAMPLES", "WRITING"])
def test_man_page_sections(section):
    assert re.search(rf'^\.SH "?{section}"?$', MAN.read_text(), re.M)


def test_man_page_examples_cover_aws_minio_fstab():
    ex = man_text().split(".SH EXAMPLES", 1)[1].split(".SH", 1)[0]
    assert "instance role" in ex
    assert re.search(r"endpoint=http[^ ]*,path_style", ex)
    assert "fuse.pailfs" in ex and "_netdev" in ex
    # every example command line parses: options, then two arguments
    for line in ex.splitlines():
        if line.startswith("pailfs -"):
            args = line.split("&")[0].split()
            assert len([a for a in args[1:] if not a.startswith("-")
                        and args[args.index(a) - 1] != "-o"]) == 2, line


def test_man_page_renders_without_warnings():
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 127:
        pytest.skip("groff not installed")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_readme_links_exist():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [l for l in links if not re.match(r"[a-z]+://", l)]
    assert local, "README links nothing"
    missing = [l for l in local if not (ROOT / l).exists()]
    # docs/RELIABILITY.md is written on another branch
    missing = [l for l in missing if l != "docs/RELIABILITY.md"]
    assert missing == [], f"README links missing files: {missing}"
    for doc in ("docs/SEMANTICS.md", "docs/BENCHMARKS.md",
                "docs/RELIABILITY.md", "docs/IAM.md"):
        assert f"]({doc})" in text, doc


# The IAM action each S3 operation src/s3/client.c sends needs (AWS's
# "Actions, resources, and condition keys for Amazon S3").
IAM_ACTION = {
    "HeadBucket": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CopyObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
READ_ONLY_OPS = {"HeadBucket", "ListObjectsV2", "HeadObject", "GetObject"}


def iam_policies():
    """{heading: policy} of the ```json blocks of docs/IAM.md."""
    out, heading, block = {}, None, None
    for line in IAM.read_text().splitlines():
        if block is not None:
            if line.startswith("```"):
                out[heading] = json.loads("\n".join(block))
                block = None
            else:
                block.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```json"):
            block = []
    return out


def actions_of(policy):
    acts = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        a = st["Action"]
        acts |= set([a] if isinstance(a, str) else a)
    return acts


def test_iam_policies_cover_every_operation_the_client_sends():
    ops = set(re.findall(r'req_init\(&req, "(\w+)"', CLIENT_C.read_text()))
    assert ops, "no operations found in src/s3/client.c"
    unknown = ops - IAM_ACTION.keys()
    assert unknown == set(), f"IAM.md's table lacks {unknown}"
    policies = iam_policies()
    assert len(policies) >= 3, list(policies)
    for title, policy in policies.items():
        assert policy["Version"] == "2012-10-17"
        acts = actions_of(policy)
        ro = "read-only" in title.lower()
        need = {IAM_ACTION[o] for o in ops if not ro or o in READ_ONLY_OPS}
        assert need <= acts, f"{title}: lacks {need - acts}"
        if ro:
            assert acts == need, f"{title}: more than reading needs: " \
                f"{acts - need}"
        doc = IAM.read_text()
        for op in ops:
            assert op in doc, f"docs/IAM.md does not mention {op}"
