"""Crafted layers that hide a secret behind a tar trick: the runtime (Go's
archive/tar, what containerd and moby unpack with) still unpacks the
secret, so `find --preset secrets`, `ls --merged` and `extract` must show it.

Each trick gets its own layer and its own top directory (t1/, t2/ ...), all
in one image pushed to the real registry and indexed once.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from harness.builder import push_image, tar_layer
from harness.dbrows import rows
from harness.rawtar import END, pad, pax_record, raw_header

from layerslayer.cli import cli

KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def entry(name: bytes, data: bytes = b"", typeflag: bytes = b"0", **kw) -> bytes:
    return raw_header(name, len(data), typeflag, **kw) + pad(data)


def ext(typeflag: bytes, body: bytes, name: bytes = b"././@PaxHeader") -> bytes:
    return raw_header(name, len(body), typeflag) + pad(body)


def secret(n: int) -> bytes:
    return entry(b"t%d/root/.ssh/id_rsa" % n, KEY)


TRICKS = {
    # 1. a pax global header naming every later entry innocent.txt (tarfile and
    #    the old index applied it: the secret became an "innocent.txt" row)
    "global header renames": ext(b"g", pax_record("path", "innocent.txt"), b"pax_global_header")
    + entry(b"t1/README", b"hello\n") + secret(1),
    # 2. two x headers: the first one's size made the next entries vanish as "data"
    "earlier x header": ext(b"x", pax_record("size", "2048")) + ext(b"x", pax_record("mtime", "1"))
    + secret(2) + entry(b"t2/filler", b"f" * 1500),
    # 3. an old-style directory whose size field claims the next headers as data
    "old-style directory with a size": raw_header(b"t3/", 1024, b"\0") + secret(3) + entry(b"t3/after", b"a"),
    # 4. a trailing extension header: the old index failed the whole layer
    "trailing extension header": secret(4) + ext(b"x", pax_record("comment", "bye")),
    # 5. an x header dropped by a g header after it: Go names the entry by its own header
    "x header before a global header": ext(b"x", pax_record("path", "t5/innocent.txt"))
    + ext(b"g", pax_record("comment", "reset")) + secret(5),
    # 6. the same path twice: the last copy is what the container gets
    "path twice": entry(b"t6/root/.ssh/id_rsa", b"decoy\n") + secret(6),
}


@pytest.fixture(scope="module")
def image(registry, tmp_path_factory):
    layers = [tar_layer(raw + END) for raw in TRICKS.values()]
    pushed = push_image(registry, "evasion/tricks:v1", layers=layers)
    db = tmp_path_factory.mktemp("evasion") / "e.db"
    result = run("index", db, pushed.ref)
    assert result.exit_code == 0, result.output
    return db, pushed


def test_find_preset_secrets_sees_every_hidden_key(image):
    db, _ = image
    result = run("find", db, "--preset", "secrets", "--nl")
    found = {json.loads(line)["path"] for line in result.stdout.splitlines()}
    for n in range(1, len(TRICKS) + 1):
        assert f"t{n}/root/.ssh/id_rsa" in found, n
    assert not any("innocent" in path for path in found)


def test_ls_merged_shows_every_hidden_key(image):
    db, pushed = image
    result = run("ls", db, pushed.ref, "--merged", "--nl")
    assert result.exit_code == 0, result.output
    listed = {json.loads(line)["path"]: json.loads(line) for line in result.stdout.splitlines()}
    for n in range(1, len(TRICKS) + 1):
        assert f"t{n}/root/.ssh/id_rsa" in listed, n
    assert listed["t3"]["type"] == "dir" and "t3/after" in listed
    assert listed["t2/filler"]["size"] == 1500
    assert listed["t6/root/.ssh/id_rsa"]["size"] == len(KEY)  # the last copy
    assert not any("innocent" in path for path in listed)


def test_find_shows_the_first_copy_of_a_path_twice_as_not_visible(image):
    db, _ = image
    result = run("find", db, "/t6/root/.ssh/id_rsa", "--nl")
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(h["size"], h["visible"]) for h in hits] == [(len(b"decoy\n"), False), (len(KEY), True)]
    visible = run("find", db, "/t6/root/.ssh/id_rsa", "--visible", "--nl")
    assert [json.loads(line)["size"] for line in visible.stdout.splitlines()] == [len(KEY)]


@pytest.mark.parametrize("with_db", [False, True])
def test_extract_writes_what_the_runtime_unpacks(image, tmp_path, with_db):
    db, pushed = image
    out = tmp_path / "out"
    args = ["extract", pushed.ref, "id_rsa", "-o", out] + (["--db", db] if with_db else [])
    result = run(*args)
    assert result.exit_code == 0, result.output
    for n in range(1, len(TRICKS) + 1):
        assert (out / f"t{n}/root/.ssh/id_rsa").read_bytes() == KEY, n
    # counted once; streamed without the index, each write is shown as it happens (the second replaces the first)
    assert "Wrote 6 of 6 matching entries" in result.stderr
    assert result.stdout.count("t6/root/.ssh/id_rsa") == (1 if with_db else 2), result.stdout
    # an exact path: the last copy, with or without the index, and on stdout
    exact = run("extract", pushed.ref, "/t6/root/.ssh/id_rsa", "-o", tmp_path / "exact", *(["--db", db] if with_db else []))
    assert exact.exit_code == 0, exact.output
    assert (tmp_path / "exact/t6/root/.ssh/id_rsa").read_bytes() == KEY
    cat = CliRunner().invoke(cli, ["extract", pushed.ref, "/t6/root/.ssh/id_rsa", "--stdout"])
    assert cat.exit_code == 0 and cat.stdout_bytes == KEY, cat.output


def test_global_header_is_noted_for_its_layer(registry, unique_repo, tmp_path):
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[tar_layer(TRICKS["global header renames"] + END)])
    result = run("index", tmp_path / "g.db", pushed.ref)
    assert result.exit_code == 0
    digest = pushed.image.layers[0].digest
    assert (f"layer {digest}: 1 pax global header(s), applied to no entry as the runtime does "
            "(offset 0: path='innocent.txt')") in result.output
    note = rows(tmp_path / "g.db", "SELECT note FROM layers WHERE digest = ?", [digest])[0][0]
    assert note.startswith("1 pax global header(s), applied to no entry") and "innocent.txt" in note
