"""Third-party tar files as layers: Go's archive/tar test data and CPython's testtar.tar.

Every file is pushed as a layer to the real registry and indexed; each entry
is compared field by field with what Go's reader returns for it, as written
in Go's own ``src/archive/tar/reader_test.go`` (transcribed below, with the
file names; they are facts about those files), or, for the files Go's
reader test does not list, with Python's ``tarfile`` plus the runtime rules
(README, "How layers are read"). A file Go's reader rejects must fail its
layer with one clear recorded error. The files are read from where the
distribution installs them (tests/harness/corpus.py), never copied here.

Our model differs from Go's ``Header`` on purpose, in ways that do not
change what a container sees: modes keep the permission bits only, a
directory's size is 0, device numbers only for device entries, names lose
a trailing "/" (and "./"), and pax global headers are no entries (the
runtimes skip them; the index notes them for the layer).
"""

from __future__ import annotations

import bz2
import hashlib
import io
import os
import tarfile

import pytest
from click.testing import CliRunner
from harness.builder import push_image, tar_layer
from harness.corpus import cpython_testtar, go_testdata
from harness.dbrows import rows

from layerslayer.cli import cli

GO = go_testdata()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def f(path, size=0, mode=0, uid=0, gid=0, uname="", gname="", mtime=0, type="file", linkname=""):
    "An expected entry: (path, type, size, mode, uid, gid, uname, gname, mtime, linkname)."
    return (path, type, size, mode, uid, gid, uname, gname, mtime, linkname)


PAX_LONG = "".join(str(i) for i in range(1, 101))

# From Go 1.19 src/archive/tar/reader_test.go, TestReader: file -> entries
# (or the error Go's reader returns: ours must fail the layer), with the MD5
# of each entry's content where Go checks it.
GO_EXPECTED: dict[str, list | str] = {
    "gnu.tar": [
        f("small.txt", 5, 0o640, 73025, 5000, "dsymonds", "eng", 1244428340),
        f("small2.txt", 11, 0o640, 73025, 5000, "dsymonds", "eng", 1244436044),
    ],
    "sparse-formats.tar": [
        f("sparse-gnu", 200, 0o644, 1000, 1000, "david", "david", 1392395740),
        f("sparse-posix-0.0", 200, 0o644, 1000, 1000, "david", "david", 1392342187),
        f("sparse-posix-0.1", 200, 0o644, 1000, 1000, "david", "david", 1392340456),
        f("sparse-posix-1.0", 200, 0o644, 1000, 1000, "david", "david", 1392337404),
        f("end", 4, 0o644, 1000, 1000, "david", "david", 1392398319),
    ],
    "star.tar": [
        f("small.txt", 5, 0o640, 73025, 5000, "dsymonds", "eng", 1244592783),
        f("small2.txt", 11, 0o640, 73025, 5000, "dsymonds", "eng", 1244592783),
    ],
    "v7.tar": [
        f("small.txt", 5, 0o444, 73025, 5000, "", "", 1244593104),
        f("small2.txt", 11, 0o444, 73025, 5000, "", "", 1244593104),
    ],
    "pax.tar": [
        f("a/" + PAX_LONG, 7, 0o664, 1000, 1000, "shane", "shane", 1350244992.023960108),
        f("a/b", 0, 0o777, 1000, 1000, "shane", "shane", 1350266320.910238425, "symlink", PAX_LONG),
    ],
    "pax-bad-hdr-file.tar": "corrupt pax header",  # ErrHeader
    "pax-bad-hdr-large.tar.bz2": "extension header of 1048577 bytes",  # ErrFieldTooLong
    "pax-bad-mtime-file.tar": "bad time",  # ErrHeader
    "pax-pos-size-file.tar": [f("foo", 999, 0o640, 319973, 5000, "joetsai", "eng", 1442282516)],
    "pax-records.tar": [f("file", uname="long" * 10)],
    # Go returns the two global headers as entries of their own; the runtimes skip them
    "pax-global-records.tar": [f("file1"), f("file2"), f("file3"), f("file4", mtime=1400000000)],
    "nil-uid.tar": [f("P1050238.JPG.log", 14, 0o664, 0, 0, "eyefi", "eyefi", 1365454838)],
    "xattrs.tar": [
        f("small.txt", 5, 0o644, 1000, 10, "alex", "wheel", 1386065770.44825232),
        f("small2.txt", 11, 0o644, 1000, 10, "alex", "wheel", 1386065770.449252304),
    ],
    "gnu-multi-hdrs.tar": [f("GNU2/GNU2/long-path-name", type="symlink", linkname="GNU4/GNU4/long-linkpath-name")],
    "gnu-incremental.tar": [
        f("test2", 0, 0o755, 1000, 1000, "rawr", "dsnet", 1441973427, "dir"),  # 'D' (a dump dir): 16877 & 0o7777
        f("test2/foo", 64, 0o644, 1000, 1000, "rawr", "dsnet", 1441973363),
        f("test2/sparse", 536870912, 0o644, 1000, 1000, "rawr", "dsnet", 1441973427),
    ],
    "pax-multi-hdrs.tar": [f("bar", type="symlink", linkname="PAX4/PAX4/long-linkpath-name")],
    "gnu-long-nul.tar": [f("0123456789", 0, 0o644, 1000, 1000, "rawr", "dsnet", 1486082191)],
    "gnu-utf8.tar": [f("☺☻☹" * 18, 0, 0o644, 1000, 1000, "☺", "⚹", 0)],
    "gnu-not-utf8.tar": [f(os.fsdecode(b"hi\x80\x81\x82\x83bye"), 0, 0o644, 1000, 1000, "rawr", "dsnet", 0)],
    "pax-nul-xattrs.tar": "NUL byte in a record name",  # ErrHeader
    "pax-nul-path.tar": "NUL byte in the path record",  # ErrHeader
    "neg-size.tar": "bad size field",  # ErrHeader
    "issue10968.tar": "not a tar archive",  # ErrHeader
    "issue11169.tar": "corrupt pax header",  # ErrHeader
    "issue12435.tar": "bad size field",  # ErrHeader
    "invalid-go17.tar": [f("a" * 97 + "/foo", uid=0o10000000)],
    "ustar-file-devs.tar": [f("file", 0, 0o644)],  # Devmajor/Devminor 1/1: kept for devices only
    "gnu-nil-sparse-data.tar": [f("sparse.db", 1000)],
    "gnu-nil-sparse-hole.tar": [f("sparse.db", 1000)],
    "pax-nil-sparse-data.tar": [f("sparse.db", 1000)],
    "pax-nil-sparse-hole.tar": [f("sparse.db", 1000)],
    "trailing-slash.tar": [f("/".join(["123456789"] * 30), type="dir")],
    # TestReadTruncation: {pax, 0, io.EOF}: an x header then the end is no entry (tarfile cannot open it)
    "pax-path-hdr.tar": [],
    # writer_test.go, the headers these two were written from (6e10 bytes, six 512-byte fragments)
    "gnu-sparse-big.tar": [f("gnu-sparse", 60_000_000_000)],
    "pax-sparse-big.tar": [f("pax-sparse", 60_000_000_000)],
}
GO_MD5 = {
    ("gnu.tar", "small.txt"): "e38b27eaccb4391bdec553a7f3ae6b2f",
    ("gnu.tar", "small2.txt"): "c65bd2e50a56a2138bf1716f2fd56fe9",
    **{("sparse-formats.tar", name): "6f53234398c2449fe67c1812d993012f"
       for name in ("sparse-gnu", "sparse-posix-0.0", "sparse-posix-0.1", "sparse-posix-1.0")},
    ("sparse-formats.tar", "end"): "b0061974914468de549a2af8ced10316",
    ("pax-pos-size-file.tar", "foo"): "0afb597b283fe61b5d4879669a350556",
}
# Files of Go's test data its reader test does not list: tarfile is the reference.
TARFILE_REFERENCE = [
    "file-and-dir.tar", "hardlink.tar", "hdr-only.tar", "ustar.tar", "ustar-file-reg.tar", "writer.tar",

]
# Cut short in Go's test data (they are the heads of 16 GiB archives): Go's reader fails on them too.
TRUNCATED = {"writer-big.tar": "truncated tar stream", "writer-big-long.tar": "truncated tar stream"}
SPARSE = ["sparse-formats.tar", "gnu-incremental.tar", "gnu-nil-sparse-data.tar", "gnu-nil-sparse-hole.tar",
          "pax-nil-sparse-data.tar", "pax-nil-sparse-hole.tar", "gnu-sparse-big.tar", "pax-sparse-big.tar"]


def go_tar(name: str) -> bytes:
    data = (GO / name).read_bytes()
    return bz2.decompress(data) if name.endswith(".bz2") else data


TYPES = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
         tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block"}


def tarfile_entries(raw: bytes) -> list[tuple]:
    "What tarfile lists, in our model (see the module docstring)."
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw), encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            kind = TYPES.get(m.type, "file")
            path = m.name.rstrip("/")
            path = path[2:] if path.startswith("./") else path
            link = m.linkname if kind in ("symlink", "hardlink") else ""
            if kind == "hardlink":
                link = link[2:] if link.startswith("./") else link  # a path in the layer, like the name
            out.append(f(path, m.size if kind == "file" else 0, m.mode & 0o7777, m.uid, m.gid, m.uname, m.gname,
                         m.mtime, kind, link))
    return out


def test_the_corpus_is_big_enough():
    names = {p.name for p in GO.iterdir() if p.name.endswith((".tar", ".tar.bz2"))}
    covered = set(GO_EXPECTED) | set(TARFILE_REFERENCE) | set(TRUNCATED)
    assert covered <= names and len(covered) >= 30
    # every sparse, pax, GNU long-name and "issue" file of Go's test data is covered
    for name in names:
        if any(word in name for word in ("sparse", "pax", "gnu", "issue", "long")):
            assert name in covered, name


@pytest.fixture(scope="module")
def indexed(registry, tmp_path_factory):
    "Every corpus file as one layer of one image, indexed once: (db, {file: layer}, index output)."
    files = [*GO_EXPECTED, *TARFILE_REFERENCE, *TRUNCATED]
    layers = {name: tar_layer(go_tar(name), compression="gzip") for name in files}
    pushed = push_image(registry, "corpus/go:v1", layers=list(layers.values()))
    db = tmp_path_factory.mktemp("corpus") / "go.db"
    result = run("index", db, pushed.ref)
    assert "Traceback" not in result.output
    return db, layers, result, pushed


def stored_entries(db, digest: str) -> list[tuple]:
    found = rows(db, "SELECT path, path_bytes, type, size, mode, uid, gid, uname, gname, mtime, linkname "
                     "FROM files WHERE layer_digest = ? ORDER BY position", [digest])
    from layerslayer.store import path_from_row

    return [(path_from_row(p, pb), *rest) for p, pb, *rest in found]


def same(got: list[tuple], expected: list[tuple]) -> bool:
    if len(got) != len(expected):
        return False
    for g, e in zip(got, expected):
        if g[:8] != e[:8] or g[9] != e[9] or g[8] != pytest.approx(e[8], abs=1e-6):
            return False
    return True


@pytest.mark.parametrize("name", sorted(GO_EXPECTED))
def test_go_reader_expectations(indexed, name):
    db, layers, _, _ = indexed
    digest = layers[name].digest
    expected = GO_EXPECTED[name]
    (status, error), = rows(db, "SELECT status, error FROM layers WHERE digest = ?", [digest])
    if isinstance(expected, str):
        assert status == "failed" and expected in error, (status, error)
        assert "\n" not in error and len(error) < 300
        assert rows(db, "SELECT count(*) FROM files WHERE layer_digest = ?", [digest]) == [(0,)]
    else:
        assert (status, error) == ("indexed", None)
        got = stored_entries(db, digest)
        assert same(got, expected), (got, expected)


@pytest.mark.parametrize("name", TARFILE_REFERENCE)
def test_files_go_does_not_list_match_tarfile(indexed, name):
    db, layers, _, _ = indexed
    assert rows(db, "SELECT status FROM layers WHERE digest = ?", [layers[name].digest]) == [("indexed",)]
    got = stored_entries(db, layers[name].digest)
    assert same(got, tarfile_entries(go_tar(name))), got


def test_truncated_files_fail_their_layer(indexed):
    db, layers, result, _ = indexed
    for name, fragment in TRUNCATED.items():
        (status, error), = rows(db, "SELECT status, error FROM layers WHERE digest = ?", [layers[name].digest])
        assert status == "failed" and fragment in error, (name, error)
    failing = sum(isinstance(e, str) for e in GO_EXPECTED.values()) + len(TRUNCATED)
    assert f"{failing} failed" in result.output
    # the global headers Go reports as entries are noted for their layer
    note = f"layer {layers['pax-global-records.tar'].digest}: 2 pax global header(s), applied to no entry"
    assert note in result.output and "path='global1'" in result.output


def sparse_members(raw: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return [m for m in tf.getmembers() if m.isreg()]


def assert_same_file(ours, reference, member: tarfile.TarInfo) -> None:
    "Byte-identical, read sparsely: the data fragments, samples of the holes, the size; holes stay holes."
    assert ours.stat().st_size == reference.stat().st_size == member.size
    if member.size <= 1 << 20:
        assert ours.read_bytes() == reference.read_bytes()
        return
    with open(ours, "rb") as a, open(reference, "rb") as b:
        for offset, length in (member.sparse or [(0, member.size)]):
            for at in range(offset, offset + length, 1 << 20):
                n = min(1 << 20, offset + length - at)
                assert os.pread(a.fileno(), n, at) == os.pread(b.fileno(), n, at)
        for at in range(0, member.size, max(1, member.size // 97)):
            assert os.pread(a.fileno(), 64, at) == os.pread(b.fileno(), 64, at)
    assert ours.stat().st_blocks * 512 < 16 << 20, "holes were written as data"


def tarfile_extract(raw: bytes, out) -> None:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        tf.extractall(out, members=[m for m in tf.getmembers() if m.isreg()])


# What Go's writer test (writer_test.go) wrote into these sparse files. tarfile
# reads a GNU pax 1.0 sparse file that also has a pax "size" record wrongly
# (the map text lands in the file, the size is the stored one): for those
# three, Go's content is the reference.
DIGITS = b"0123456789"
BIG_FRAGMENT = bytes(412) + DIGITS * 10  # the last 512 bytes before each multiple of 1e10
GO_CONTENT = {
    "pax-nil-sparse-data.tar": DIGITS * 100,
    "pax-nil-sparse-hole.tar": bytes(1000),
    "gnu-nil-sparse-data.tar": DIGITS * 100,
    "gnu-nil-sparse-hole.tar": bytes(1000),
}
TARFILE_WRONG = {"pax-nil-sparse-data.tar", "pax-nil-sparse-hole.tar", "pax-sparse-big.tar"}


def assert_big_sparse(ours) -> None:
    assert ours.stat().st_size == 60_000_000_000
    with open(ours, "rb") as a:
        for k in range(1, 7):
            at = k * 10_000_000_000 - 512
            assert os.pread(a.fileno(), 512, at) == BIG_FRAGMENT
            assert os.pread(a.fileno(), 4096, at - 5_000_000_000) == bytes(4096)
    assert ours.stat().st_blocks * 512 < 16 << 20, "holes were written as data"


@pytest.mark.parametrize("name", SPARSE)
def test_extract_sparse_files_with_holes(indexed, name, tmp_path):
    _, layers, _, pushed = indexed
    raw = go_tar(name)
    position = list(layers).index(name)
    result = run("extract", pushed.ref, "*", "--layer", position, "-o", tmp_path / "ours")
    assert result.exit_code in (0, 1), result.output  # 1: a directory or link refused is fine here
    if name in GO_CONTENT:
        assert (tmp_path / "ours/sparse.db").read_bytes() == GO_CONTENT[name]
    if name.endswith("-sparse-big.tar"):
        assert_big_sparse(tmp_path / "ours" / GO_EXPECTED[name][0][0])
    if name in TARFILE_WRONG:
        return
    tarfile_extract(raw, tmp_path / "ref")
    members = sparse_members(raw)
    assert any(m.sparse for m in members)
    # our names are Go's (tarfile reads gnu-incremental.tar's atime field as a prefix)
    ours = [e[0] for e in GO_EXPECTED[name] if e[1] == "file"]
    assert len(ours) == len(members)
    for path, member in zip(ours, members):
        assert_same_file(tmp_path / "ours" / path, tmp_path / "ref" / member.name, member)
        if (name, path) in GO_MD5:
            assert hashlib.md5((tmp_path / "ours" / path).read_bytes()).hexdigest() == GO_MD5[(name, path)]


def test_extract_stdout_of_sparse_files_matches_go(indexed):
    _, layers, _, pushed = indexed
    position = list(layers).index("sparse-formats.tar")
    for (name, path), md5 in GO_MD5.items():
        if name != "sparse-formats.tar":
            continue
        result = CliRunner().invoke(cli, ["extract", pushed.ref, path, "--layer", str(position), "--stdout"])
        assert result.exit_code == 0, result.output
        assert hashlib.md5(result.stdout_bytes).hexdigest() == md5, path


def test_cpython_testtar(registry, unique_repo, tmp_path):
    raw = cpython_testtar().read_bytes()
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[tar_layer(raw)])
    db = tmp_path / "py.db"
    result = run("index", db, pushed.ref)
    assert result.exit_code == 0, result.output
    assert "pax global header(s), applied to no entry" in result.output
    got = {e[0]: e for e in stored_entries(db, pushed.image.layers[0].digest)}
    expected = {e[0]: e for e in tarfile_entries(raw)}
    assert got.keys() == expected.keys()
    # Where tarfile differs, on purpose: it applies the pax global header
    # (uname=foo, gname=bar) to later entries, the runtime does not.
    differ = {path for path in got if not same([got[path]], [expected[path]])}
    assert differ == {"pax/regtype1", "pax/regtype2", os.fsdecode(b"pax/bad-pax-\xe4\xf6\xfc")}
    for path in differ:
        g, e = got[path], expected[path]
        assert g[:6] == e[:6] and g[8:] == e[8:] and g[6:8] != e[6:8]
    assert got["pax/regtype1"][6:8] == ("tarfile", "tarfile")  # the x header's own, not the global "foo"/"bar"
    # every sparse file extracts byte for byte as tarfile writes it
    result = run("extract", pushed.ref, "*", "-o", tmp_path / "ours")
    assert "Traceback" not in result.output
    tarfile_extract(raw, tmp_path / "ref")
    members = sparse_members(raw)
    assert sum(1 for m in members if m.sparse) == 4
    for member in members:
        assert_same_file(tmp_path / "ours" / member.name, tmp_path / "ref" / member.name, member)
