"""`find`, `ls`, `images` and find.layers_matching against an index built by
indexing test images pushed to the real registry: pattern rules and plans,
case folding, every filter, ghost / visible files against hand-built whiteout
and opaque-directory layers (checked against the store's views too), presets,
output formats, odd names, exit statuses."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner
from harness.builder import (
    blockdev,
    build_image,
    chardev,
    dir_,
    fifo,
    file,
    hardlink,
    layer,
    opaque,
    push_image,
    push_index,
    symlink,
    whiteout,
)
from support.index import BuiltIndex, build_index

from layerslayer import find, globplan, query
from layerslayer.cli import cli
from layerslayer.patterns import compile_patterns, parse_pattern
from layerslayer.presets import PRESETS
from layerslayer.store import open_db, path_from_row

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 1700 + "\n"
NOT_UTF8 = "odd/\udcff\udcfe-not-utf8"  # b"odd/\xff\xfe-not-utf8" as tarstream decodes it

BASE = [
    dir_("etc"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    dir_("etc/ssh"), file("etc/ssh/sshd_config", "Port 22\n"), file("etc/ssh/ssh_host_rsa_key", KEY, mode=0o600),
    dir_("root", mode=0o700), dir_("root/.ssh", mode=0o700), file("root/.ssh/id_rsa", KEY, mode=0o600),
    dir_("app"), file("app/.env", "SECRET=1\n"), dir_("app/config"),
    file("app/config/server.PEM", "cert"), file("app/config/ca.pem", "ca"),
    dir_("usr"), dir_("usr/bin"), file("usr/bin/sudo", b"\x7fELF", mode=0o4755),
    symlink("usr/bin/sudoedit", "sudo"), hardlink("usr/bin/sudo2", "usr/bin/sudo"),
    chardev("dev/null", 1, 3), blockdev("dev/sda", 8, 0), fifo("run/pipe"),
    dir_("usr/lib"), file("usr/lib/big.bin", b"\0" * (2 << 20)), file("usr/lib/medium.bin", b"\0" * (600 << 10)),
    dir_("opt"), dir_("opt/data"), file("opt/data/creds.txt", "pw"),
    dir_("tmp"), file("tmp/x", "old"),
    dir_("home/u/.aws"), file("home/u/.aws/credentials", "[default]\n"), file("home/u/.bash_history", "ls\n"),
    dir_("srv/repo/.git"), file("srv/repo/.git/config", "[remote]\n"),
    file("odd/with space", "x"), file("odd/new\nline", "x"), file("odd/glob*?[x]", "x"),
    file(b"odd/\xff\xfe-not-utf8", "x"), file("odd/ÜBER.txt", "x"), file("odd/über.txt", "x"),
    file("odd/\u212aey.txt", "kelvin"), file("odd/data.bar", "x"),
]
# L1: a whiteout, an opaque directory re-populated in the same layer, and a
# path deleted and re-created by the same layer.
MIDDLE = [
    whiteout("app/.env"), opaque("etc/ssh"), file("etc/ssh/sshd_config", "Port 2222\n"),
    whiteout("tmp/x"), file("tmp/x", "new"), file("app/config/extra.key", "k"),
]
# L2: an overwrite, a whiteout of a directory, a file replacing a directory.
TOP = [
    file("etc/passwd", "root:x:0:0::/root:/bin/bash\n"), whiteout("root/.ssh"), file("opt/data", "now a file"),
    file("usr/lib/libfoo.so.1", b"\0" * (100 << 10)),
]


@pytest.fixture(scope="module")
def idx(registry, tmp_path_factory) -> BuiltIndex:
    "The pushed images and the index of all of them."
    tag = uuid.uuid4().hex[:8]
    base, middle, top = layer(BASE), layer(MIDDLE, compression="zstd"), layer(TOP)
    v2top = layer({"app/v2.txt": "v2"})
    repo = f"t/query-app-{tag}"
    v1 = push_image(registry, f"{repo}:v1", layers=[base, middle, top])
    v2 = push_image(registry, f"{repo}:v2", layers=[base, middle, v2top], media="docker")
    multi = push_index(registry, f"t/query-multi-{tag}:latest", images=[
        build_image([layer({"etc/platform": "amd64", "usr/bin/tool-amd64": "x"})], platform="linux/amd64"),
        build_image([layer({"etc/platform": "arm64", "usr/bin/tool-arm64": "x"})], platform="linux/arm64/v8"),
    ], attestation=True)
    nginx_name = f"qnginx{tag}"
    nginx = push_image(registry, f"library/{nginx_name}:latest", layers=[layer({
        "etc/nginx/nginx.conf": "events {}\n", "usr/share/nginx/html/index.html": "<h1>hi</h1>",
    })])
    return build_index(
        tmp_path_factory.mktemp("query") / "index.db", [v1.ref, v2.ref, multi.ref, nginx.ref, "--all-platforms"],
        host=registry.host, base=base, middle=middle, top=top, v2top=v2top, repo=repo, v1=v1, v2=v2, multi=multi,
        nginx_name=nginx_name, nginx=nginx, v1_ref=f"{registry.host}/{repo}:v1", v2_ref=f"{registry.host}/{repo}:v2",
    )


@pytest.fixture
def db(idx):
    database = open_db(idx.path, must_exist=True)
    yield database
    database.close()


def run(idx, *args):
    return CliRunner().invoke(cli, [args[0], str(idx.path), *[str(a) for a in args[1:]]])


def rows_of(result):
    return json.loads(result.output)


def keys(hits):
    return sorted((h.image, h.layer_index, h.path) for h in hits)


# ---------------------------------------------------------------------------
# Patterns: name vs path, globs, case


def test_name_patterns_match_the_file_name(db, idx):
    hits = find.find(db, ["id_rsa"], images=[idx.v1_ref])
    assert [(h.layer_index, h.path) for h in hits] == [(0, "root/.ssh/id_rsa")]
    assert {h.path for h in find.find(db, ["*.pem"])} == {"app/config/ca.pem"}  # server.PEM: case-sensitive
    assert {h.path for h in find.find(db, ["ssh"])} == {"etc/ssh"}
    assert find.find(db, ["root"], images=[idx.v1_ref])[0].path == "root"


def test_path_patterns_match_the_whole_path(db, idx):
    v1 = [idx.v1_ref]
    assert {h.path for h in find.find(db, ["/etc/ssh/*"], images=v1)} == {"etc/ssh/sshd_config", "etc/ssh/ssh_host_rsa_key"}
    assert {h.path for h in find.find(db, ["etc/ssh/*"], images=v1)} == {"etc/ssh/sshd_config", "etc/ssh/ssh_host_rsa_key"}
    # "*" crosses "/", as in find -path.
    assert {h.path for h in find.find(db, ["/home/*"], images=v1)} == {
        "home/u/.aws", "home/u/.aws/credentials", "home/u/.bash_history"}
    # A path pattern is anchored: "ssh/*" is not "etc/ssh/*".
    assert find.find(db, ["ssh/*"]) == []
    assert {h.path for h in find.find(db, ["./etc/passwd/"], images=v1)} == {"etc/passwd"}


def test_several_patterns_are_ored(db, idx):
    hits = find.find(db, ["id_rsa", "*.key", "/etc/passwd"], images=[idx.v1_ref])
    assert sorted({h.path for h in hits}) == ["app/config/extra.key", "etc/passwd", "root/.ssh/id_rsa"]


def test_case_folding(db, idx):
    assert {h.path for h in find.find(db, ["*.PEM"])} == {"app/config/server.PEM"}
    assert {h.path for h in find.find(db, ["*.pem"], ignore_case=True)} == {"app/config/server.PEM", "app/config/ca.pem"}
    assert {h.path for h in find.find(db, ["über.txt"])} == {"odd/über.txt"}
    assert {h.path for h in find.find(db, ["über.txt"], ignore_case=True)} == {"odd/über.txt", "odd/ÜBER.txt"}
    # Python's case folding: the Kelvin sign is a K.
    assert {h.path for h in find.find(db, ["key.txt"], ignore_case=True)} == {"odd/\u212aey.txt"}
    assert find.find(db, ["key.txt"]) == []
    assert {h.path for h in find.find(db, ["DATA.BAR"], ignore_case=True)} == {"odd/data.bar"}


def test_odd_names(db, idx):
    assert {h.path for h in find.find(db, ["with space"])} == {"odd/with space"}
    assert {h.path for h in find.find(db, ["new*"])} == {"odd/new\nline"}
    assert {h.path for h in find.find(db, ["odd/new?line"])} == {"odd/new\nline"}
    # Glob characters in names: put them in a set to match them literally.
    assert {h.path for h in find.find(db, ["glob[*][?][[]x]"])} == {"odd/glob*?[x]"}
    assert {h.path for h in find.find(db, ["glob*"])} == {"odd/glob*?[x]"}
    # Non-UTF-8: each undecodable byte is one character for ? and *.
    assert {h.path for h in find.find(db, ["??-not-utf8"])} == {NOT_UTF8}
    assert {h.path for h in find.find(db, ["*-not-utf8"])} == {NOT_UTF8}
    assert {h.path for h in find.find(db, [NOT_UTF8])} == {NOT_UTF8}
    hit = find.find(db, ["*-not-utf8"])[0]
    record = hit.as_dict()
    assert record["path"] == "odd/\\xff\\xfe-not-utf8"
    assert bytes.fromhex(record["path_hex"]) == b"odd/\xff\xfe-not-utf8"


ALL_PATTERNS = [
    "*", "*.pem", "*.PEM", "id_rsa", "ID_RSA", "etc/ssh/*", "/etc/*", "*passwd*", "*.c", "?", "s*", "sudo?",
    "[a-d]*", "[!a-d]*.txt", "*/.aws/credentials", "usr/*/sudo*", "*-not-utf8", "??-not-utf8", "key.txt",
    "über.txt", "ÜBER*", "glob[*]*", "new*", "*e*", ".env*", "*.so.*", "odd/*", "a", "ab", "tmp/x", "data.bar",
    "[[]*", "*]", "with space", "*i*", "*I*", "conf*", "*config*", "CONFIG", "*\u212a*", NOT_UTF8, "odd/?" + NOT_UTF8[5:],
]


@pytest.mark.parametrize("ignore_case", [False, True])
def test_every_plan_gives_what_a_full_scan_gives(db, ignore_case):
    "The SQL plan only narrows candidates: the result is what matching every path gives."
    conn = db.conn
    every = [(pid, path_from_row(path, raw)) for pid, path, raw in conn.execute("SELECT id, path, path_bytes FROM paths")]
    every = [(pid, path) for pid, path in every if not path.rpartition("/")[2].startswith(".wh.")]  # markers: not files
    methods = set()
    for text in ALL_PATTERNS:
        pattern = parse_pattern(text, ignore_case)
        match = compile_patterns([pattern])
        expected = sorted(pid for pid, path in every if match(path))
        q = find.FindQuery(db, [pattern])
        assert q.path_ids() == expected, (text, ignore_case, q.explain())
        methods.add(q.plans[0].method)
    assert methods >= ({"trigram", "prefix", "scan", "name", "path"} if not ignore_case else {"trigram", "scan", "name-i"})


@pytest.mark.parametrize("pattern,ignore_case,method", [
    ("*.pem", False, "trigram"),
    ("*passwd*", False, "trigram"),
    ("id_rsa", False, "name"),
    ("/etc/passwd", False, "path"),
    ("etc/ssh/*", False, "prefix"),
    (".env*", False, "prefix"),
    ("*.c", False, "scan"),
    ("DATA.BAR", True, "name-i"),
    ("ID_RSA", True, "trigram"),   # I, S fold to non-ASCII letters too: NOCASE cannot stand in
    (".ENV*", True, "prefix-i"),
    ("etc/ssh/*", True, "trigram"),
    ("*passwd*", True, "trigram"),
])
def test_plans(pattern, ignore_case, method):
    assert globplan.plan_pattern(pattern, ignore_case).method == method


# ---------------------------------------------------------------------------
# Deleted and visible (ghost files)


def _status(db, ref, pattern="*"):
    return {
        (h.layer_index, h.path): (h.deleted, h.deleted_in_layer, h.deleted_by, h.recreated, h.visible)
        for h in find.find(db, [pattern], images=[ref])
    }


def test_whiteouts_opaque_dirs_and_replaced_directories(db, idx):
    s = _status(db, idx.v1_ref)
    assert s[(0, "app/.env")] == (True, 1, "app/.wh..env", False, False)
    assert s[(0, "etc/ssh/sshd_config")] == (True, 1, "etc/ssh/.wh..wh..opq", True, False)
    assert s[(0, "etc/ssh/ssh_host_rsa_key")] == (True, 1, "etc/ssh/.wh..wh..opq", False, False)
    assert s[(1, "etc/ssh/sshd_config")] == (False, None, None, False, True)
    assert s[(0, "etc/ssh")] == (False, None, None, False, True)        # opaque hides the content, not the dir
    assert s[(0, "tmp/x")] == (True, 1, "tmp/.wh.x", True, False)        # deleted and re-created by layer 1
    assert s[(1, "tmp/x")] == (False, None, None, False, True)           # a whiteout spares its own layer
    assert s[(0, "etc/passwd")] == (False, None, None, False, False)     # overwritten: neither
    assert s[(2, "etc/passwd")] == (False, None, None, False, True)
    assert s[(0, "root/.ssh")] == (True, 2, "root/.wh..ssh", False, False)
    assert s[(0, "root/.ssh/id_rsa")] == (True, 2, "root/.wh..ssh", False, False)  # below a deleted dir
    assert s[(0, "opt/data/creds.txt")] == (True, 2, "opt/data", False, False)     # a file replaced its dir
    assert s[(0, "opt/data")] == (False, None, None, False, False)
    assert s[(2, "opt/data")] == (False, None, None, False, True)
    # Markers are not files.
    assert not any(".wh." in path for _, path in s)
    # The same base layer seen from v2, where nothing deletes root/.ssh.
    s2 = _status(db, idx.v2_ref, "id_rsa")
    assert s2 == {(0, "root/.ssh/id_rsa"): (False, None, None, False, True)}


def test_deleted_and_visible_filters(db, idx):
    v1 = [idx.v1_ref]
    deleted = {(h.layer_index, h.path) for h in find.find(db, ["*"], images=v1, deleted=True)}
    assert deleted == {
        (0, "app/.env"), (0, "etc/ssh/sshd_config"), (0, "etc/ssh/ssh_host_rsa_key"), (0, "tmp/x"),
        (0, "root/.ssh"), (0, "root/.ssh/id_rsa"), (0, "opt/data/creds.txt"),
    }
    assert find.count(db, ["id_rsa"], deleted=True) == 1  # v1 only
    assert {h.image for h in find.find(db, ["id_rsa"], visible=True)} == {idx.v2_ref}
    visible = find.find(db, ["*"], images=v1, visible=True)
    assert all(h.visible and not h.deleted for h in visible)
    assert len({h.path for h in visible}) == len(visible)  # one version of each path
    with pytest.raises(query.UsageError):
        find.find(db, ["*"], deleted=True, visible=True)


def test_statuses_agree_with_the_store_views(db, idx):
    "ghost_files and visible_files (layerslayer.migrations) define the rules; find and ls follow them."
    conn = db.conn
    ghosts = {
        (image, pos, path_from_row(path, raw), deleted_in, path_from_row(by, None), bool(recreated))
        for image, pos, path, raw, deleted_in, by, recreated in conn.execute(
            "SELECT image, layer_position, path, path_bytes, deleted_in_position, deleted_by, recreated FROM ghost_files")
    }
    mine = {
        (h.image, h.layer_index, h.path, h.deleted_in_layer, h.deleted_by, h.recreated)
        for h in find.find(db, ["*"], deleted=True)
    }
    assert mine == ghosts and mine
    visible = {
        (image, pos, path_from_row(path, raw))
        for image, pos, path, raw in conn.execute("SELECT image, layer_position, path, path_bytes FROM visible_files")
    }
    assert {(h.image, h.layer_index, h.path) for h in find.find(db, ["*"], visible=True)} == visible
    for ref in (idx.v1_ref, idx.v2_ref, idx.nginx.ref):
        listed = {(h.image, h.layer_index, h.path) for h in query.list_files(db, ref)}
        assert listed == {v for v in visible if v[0] == ref}


# ---------------------------------------------------------------------------
# Filters


def test_image_forms(db, idx):
    def images(spec):
        return {h.image for h in find.find(db, ["*"], images=[spec])}

    assert images(idx.v1_ref) == {idx.v1_ref}
    assert images(f"{idx.repo}:v1") == {idx.v1_ref}                  # no registry: any registry
    assert images(idx.repo) == {idx.v1_ref, idx.v2_ref}               # no tag: every tag
    assert images(f"{idx.host}/{idx.repo}") == {idx.v1_ref, idx.v2_ref}
    assert images(idx.v2.digest) == {idx.v2_ref}                      # image digest
    assert images(idx.v2.digest[:19]) == {idx.v2_ref}                 # a prefix
    assert images(idx.v2.digest.partition(":")[2][:16]) == {idx.v2_ref}  # bare hex
    assert images(f"{idx.repo}@{idx.v1.digest}") == {idx.v1_ref}
    multi = images(idx.multi.images[1].digest)                        # a platform manifest digest
    assert multi == {idx.multi.ref}
    nginx = f"{idx.host}/library/{idx.nginx_name}:latest"
    assert images(f"{idx.nginx_name}:latest") == {nginx}               # short form: library/ implied
    assert images(f"library/{idx.nginx_name}") == {nginx}
    assert {h.image for h in find.find(db, ["*"], images=[f"{idx.repo}:v1", f"{idx.nginx_name}"])} == {idx.v1_ref, nginx}
    for bad in ("nope:v1", f"{idx.repo}:v9", "sha256:" + "0" * 64, f"other.example/{idx.repo}:v1"):
        with pytest.raises(query.UnknownImage):
            find.find(db, ["*"], images=[bad])


def test_platform_filter(db, idx):
    arm = find.find(db, ["tool-*"], platform="linux/arm64")
    assert {(h.platform, h.path) for h in arm} == {("linux/arm64/v8", "usr/bin/tool-arm64")}
    assert find.find(db, ["tool-*"], platform="linux/arm64/v8") == arm
    assert {h.path for h in find.find(db, ["tool-*"], platform="linux/amd64")} == {"usr/bin/tool-amd64"}
    assert {h.platform for h in find.find(db, ["platform"])} == {"linux/amd64", "linux/arm64/v8"}  # attestations never
    with pytest.raises(query.UsageError, match="no indexed platform linux/s390x"):
        find.find(db, ["*"], platform="linux/s390x")


@pytest.mark.parametrize("letter,paths", [
    ("f", {"usr/bin/sudo"}), ("l", {"usr/bin/sudoedit"}), ("h", {"usr/bin/sudo2"}),
    ("c", {"dev/null"}), ("b", {"dev/sda"}), ("p", {"run/pipe"}), ("d", {"usr/bin"}),
])
def test_type_filter(db, idx, letter, paths):
    found = {h.path for h in find.find(db, ["usr/bin", "usr/bin/sudo*", "dev/*", "run/pipe"], types=[letter])}
    assert found == paths


def test_size_filters(db, idx):
    def sizes(**kw):
        return {h.path for h in find.find(db, ["usr/lib/*"], images=[idx.v1_ref], **kw)}

    assert sizes(min_size="1M") == {"usr/lib/big.bin"}
    assert sizes(min_size="1.5M") == {"usr/lib/big.bin"}
    assert sizes(min_size="512K", max_size="1M") == {"usr/lib/medium.bin"}
    assert sizes(max_size="100KiB", types=["f"]) == {"usr/lib/libfoo.so.1"}
    assert sizes(min_size=str(2 << 20)) == {"usr/lib/big.bin"}
    assert sizes(min_size=(2 << 20) + 1) == set()
    assert query.parse_size("10M") == 10_000_000 and query.parse_size("1.5G") == 1_500_000_000
    assert query.parse_size("10MiB") == 10 << 20 and query.parse_size("1.5Gi") == 3 << 29 and query.parse_size("2mb") == 2_000_000
    assert query.parse_size("512k") == 512_000 and query.parse_size("2KiB") == 2048 and query.parse_size("7") == 7
    for bad in ("10X", "", "-1", "M", "5i"):
        with pytest.raises(query.UsageError):
            query.parse_size(bad)


def test_layer_filter(db, idx):
    digest = idx.middle.digest
    hits = find.find(db, ["*"], layer=digest[:19])
    assert {h.layer_digest for h in hits} == {digest}
    assert {h.path for h in hits} == {"etc/ssh/sshd_config", "tmp/x", "app/config/extra.key"}
    assert {h.image for h in hits} == {idx.v1_ref, idx.v2_ref}       # a shared layer shows once per image
    assert find.find(db, ["*"], layer=digest.partition(":")[2][:8]) == hits
    with pytest.raises(query.UsageError, match="no layer"):
        find.find(db, ["*"], layer="sha256:" + "f" * 12)
    with pytest.raises(query.UsageError, match="not a layer digest"):
        find.find(db, ["*"], layer="xyz")


def test_limit_and_count(db, idx):
    assert len(find.find(db, ["*"], limit=3)) == 3
    assert find.count(db, ["*.pem"], ignore_case=True) == 4         # 2 files x (v1, v2)
    assert find.count(db, ["*"], deleted=True, limit=2) == 2
    assert find.count(db, ["nothing-like-this"]) == 0


def test_presets(db, idx):
    found = {h.path for h in find.find(db, [], presets=["secrets"], images=[idx.v1_ref])}
    assert {
        "root/.ssh/id_rsa", "etc/ssh/ssh_host_rsa_key", "app/.env", "app/config/server.PEM", "app/config/ca.pem",
        "app/config/extra.key", "home/u/.aws/credentials", "home/u/.bash_history", "srv/repo/.git",
    } <= found
    assert "etc/passwd" not in found
    ghosts = {h.path for h in find.find(db, [], presets=["secrets"], images=[idx.v1_ref], deleted=True)}
    assert ghosts == {"app/.env", "etc/ssh/ssh_host_rsa_key", "root/.ssh/id_rsa"}
    both = {h.path for h in find.find(db, ["passwd"], presets=["ssh"], images=[idx.v1_ref])}
    assert both == {"etc/passwd", "root/.ssh/id_rsa", "etc/ssh/ssh_host_rsa_key"}
    with pytest.raises(query.UsageError, match="unknown preset"):
        find.find(db, [], presets=["nope"])
    assert set(PRESETS) >= {"secrets"} and query.preset_patterns("secrets")[0] == "id_rsa"
    for preset in PRESETS.values():  # every pattern parses and plans
        for text in preset.patterns:
            assert globplan.plan_pattern(text, True).method != "scan" or text.startswith("*")


# ---------------------------------------------------------------------------
# layers_matching (export --match / extract --db)


def test_layers_matching(db, idx):
    matches = find.layers_matching(db, ["id_rsa", "*.key"])
    by_digest = {m.digest: m for m in matches}
    assert set(by_digest) == {idx.base.digest, idx.middle.digest}
    base = by_digest[idx.base.digest]
    assert base.matches == 1 and base.media_type.endswith("tar+gzip") and base.size == idx.base.size
    entry = [m for m in idx.base.members if m.path == "root/.ssh/id_rsa"][0]
    offsets = {h.path: (h.offset, h.data_offset) for h in find.find(db, ["id_rsa"], images=[idx.v1_ref])}
    assert base.last_offset == offsets["root/.ssh/id_rsa"][0]
    assert base.data_end == offsets["root/.ssh/id_rsa"][1] + len(entry.data)
    assert (idx.host, idx.repo) in base.sources
    assert base["digest"] == base.digest and base.get("matches") == 1
    # Scoped to images.
    assert find.layers_matching(db, ["*.pem"], ignore_case=True, images=[idx.nginx.ref]) == []
    scoped = find.layers_matching(db, ["id_rsa", "*.key"], images=[idx.v2_ref])
    assert [(m.digest, m.matches, m.last_offset, m.data_end) for m in scoped] == [
        (m.digest, m.matches, m.last_offset, m.data_end) for m in matches]


# ---------------------------------------------------------------------------
# ls and images


def test_ls_merged(db, idx):
    listed = {h.path: h.layer_index for h in query.list_files(db, idx.v1_ref)}
    assert listed["etc/passwd"] == 2 and listed["etc/ssh/sshd_config"] == 1 and listed["tmp/x"] == 1
    for gone in ("app/.env", "root/.ssh", "root/.ssh/id_rsa", "etc/ssh/ssh_host_rsa_key", "opt/data/creds.txt"):
        assert gone not in listed
    assert not any(".wh." in p for p in listed)
    under = [h.path for h in query.list_files(db, idx.v1_ref, "/etc/ssh")]
    assert under == ["etc/ssh", "etc/ssh/sshd_config"]
    assert [h.path for h in query.list_files(db, idx.v2_ref, "root/.ssh/")] == ["root/.ssh", "root/.ssh/id_rsa"]


def test_ls_one_layer(db, idx):
    top = query.list_files(db, idx.v1_ref, layer=-1)
    assert [(h.path, h.whiteout) for h in top] == [
        ("etc/passwd", ""), ("opt/data", ""), ("root/.wh..ssh", "whiteout"), ("usr/lib/libfoo.so.1", "")]
    middle = {h.path: h for h in query.list_files(db, idx.v1_ref, layer=idx.middle.digest[:15])}
    assert middle["etc/ssh/.wh..wh..opq"].whiteout == "opaque"
    base = {h.path: h for h in query.list_files(db, idx.v1_ref, layer=0)}
    assert base["app/.env"].deleted and base["app/.env"].deleted_in_layer == 1
    assert base["usr/bin/sudo"].mode_string == "-rwsr-xr-x"
    with pytest.raises(query.UsageError, match="no layer 7"):
        query.list_files(db, idx.v1_ref, layer=7)


def test_ls_cli(idx):
    result = run(idx, "ls", idx.v1_ref, "/etc")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["LAYER", "MODE", "OWNER", "SIZE", "MTIME", "PATH"]
    assert [line.split()[-1] for line in lines[1:]] == ["etc", "etc/passwd", "etc/ssh", "etc/ssh/sshd_config"]
    assert lines[2].split()[:3] == ["2", "-rw-r--r--", "root/root"]
    top = run(idx, "ls", idx.v1_ref, "--layer", "-1")
    assert "root/.wh..ssh  (whiteout: deletes root/.ssh)" in top.output
    middle = run(idx, "ls", idx.v1_ref, "--layer", "1")
    assert "etc/ssh/.wh..wh..opq  (opaque: hides lower etc/ssh/)" in middle.output
    base = run(idx, "ls", idx.v1_ref, "app", "--layer", "0", "--json")
    env = [r for r in rows_of(base) if r["path"] == "app/.env"][0]
    assert env["deleted"] is True and env["deleted_in_layer"] == 1
    missing = run(idx, "ls", idx.v1_ref, "/no/such")
    assert missing.exit_code == 1 and missing.stdout == "" and "no such path" in missing.stderr
    assert run(idx, "ls", "nope:v1").exit_code == 2
    assert run(idx, "ls", idx.v1_ref, "--layer", "9").exit_code == 2
    assert run(idx, "ls", idx.v1_ref, "--layer", "0", "--merged").exit_code == 2
    multi = run(idx, "ls", idx.multi.ref, "--platform", "linux/arm64", "--json")
    assert {r["path"] for r in rows_of(multi)} == {"etc/platform", "usr/bin/tool-arm64"}


def test_ls_depth(db, idx):
    def listed(*args, **kw):
        return [(h.path, h.implicit) for h in query.list_files(db, idx.v1_ref, *args, **kw)]

    assert listed("/etc", depth=1) == [("etc", False), ("etc/passwd", False), ("etc/ssh", False)]
    assert listed("/etc", depth=0) == [("etc", False)]
    assert listed("etc/", depth=9) == listed("etc")
    # The base layer lists dev/null, run/pipe, home/u/.aws, srv/repo/.git and
    # odd/* but no directory entry for dev, run, home, srv or odd: at the cut
    # they show as implicit directories rather than vanish.
    top = listed(depth=1)
    assert [p for p, _ in top] == sorted({p.split("/")[0] for p, _ in listed()})
    assert {p for p, implicit in top if implicit} == {"dev", "home", "odd", "run", "srv"}
    assert listed("/", depth=1) == top
    assert ("home/u", True) in listed("home", depth=2) and ("home/u/.aws", False) in listed("home", depth=2)
    assert all(p.count("/") <= 1 for p, _ in listed("etc", layer=0, depth=1))
    result = run(idx, "ls", idx.v1_ref, "--depth", "1")
    lines = {line.split()[-1]: line.split() for line in result.output.splitlines()[1:]}
    assert result.exit_code == 0 and lines["dev"][1:5] == ["d?????????", "-", "-", "-"]
    rows = {r["path"]: r for r in rows_of(run(idx, "ls", idx.v1_ref, "/", "-d", "1", "--json"))}
    assert rows["dev"]["implicit"] is True and rows["dev"]["type"] == "dir" and rows["dev"]["mtime"] is None
    assert rows["etc"]["implicit"] is False
    bad = run(idx, "ls", idx.v1_ref, "--depth", "-1")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_images(idx, tmp_path):
    result = run(idx, "images")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["REFERENCE", "DIGEST", "PLATFORMS", "LAYERS", "FILES", "SIZE", "INDEXED"]
    v1 = [line for line in lines if line.startswith(idx.v1_ref + " ")][0]
    assert v1.split()[1] == idx.v1.digest[:19] and v1.split()[3] == "3"
    multi = [line for line in lines if line.startswith(idx.multi.ref)][0]
    assert "linux/amd64, linux/arm64/v8" in multi and "attestation" not in result.output
    data = rows_of(run(idx, "images", "--json"))
    record = [r for r in data if r["reference"] == idx.v1_ref][0]
    assert record["digest"] == idx.v1.digest and record["layers"] == 3 and record["layers_indexed"] == 3
    assert record["files"] == len(BASE) + len(MIDDLE) + len(TOP)
    assert [p["platform"] for p in [r for r in data if r["reference"] == idx.multi.ref][0]["platforms"]] == [
        "linux/amd64", "linux/arm64/v8"]
    empty = tmp_path / "empty.db"
    open_db(empty).close()
    none = CliRunner().invoke(cli, ["images", str(empty)])
    assert none.exit_code == 1 and none.stdout == ""
    none_json = CliRunner().invoke(cli, ["images", str(empty), "--json"])
    assert none_json.exit_code == 1 and json.loads(none_json.stdout) == []


# ---------------------------------------------------------------------------
# The find command: formats and exit statuses


def test_find_table(idx):
    result = run(idx, "find", "id_rsa", "new*", "--image", idx.v1_ref)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["IMAGE", "PLATFORM", "LAYER", "MODE", "OWNER", "SIZE", "MTIME", "PATH"]
    assert len(lines) == 3  # the newline in a name stays on one line
    key = [line for line in lines if "id_rsa" in line][0]
    assert key.split()[:6] == [idx.v1_ref, "linux/amd64", "0", "-rw-------", "root/root", "1.7"]
    assert key.endswith("root/.ssh/id_rsa  (deleted in layer 2)")
    assert [line for line in lines if "new" in line][0].endswith("odd/new\\nline")
    link = run(idx, "find", "sudoedit", "--image", idx.v1_ref)
    assert link.output.splitlines()[1].endswith("usr/bin/sudoedit -> sudo")


def test_find_json_nl_csv(idx):
    args = ("find", "*.pem", "new*", "*-not-utf8", "-i", "--image", idx.v1_ref)
    records = rows_of(run(idx, *args, "--json"))
    assert {"image", "platform", "layer_index", "layer_digest", "path", "type", "size", "mode", "deleted"} <= set(records[0])
    assert sorted(r["path"] for r in records) == [
        "app/config/ca.pem", "app/config/server.PEM", "odd/\\xff\\xfe-not-utf8", "odd/new\nline"]
    pem = [r for r in records if r["path"] == "app/config/ca.pem"][0]
    assert pem["image"] == idx.v1_ref and pem["layer_index"] == 0 and pem["layer_digest"] == idx.base.digest
    assert pem["type"] == "file" and pem["size"] == 2 and pem["mode"] == 0o644 and pem["deleted"] is False
    lines = run(idx, *args, "--nl").output.splitlines()
    assert [json.loads(line) for line in lines] == records
    text = run(idx, *args, "--csv").output
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["path"] for r in parsed] == [r["path"] for r in records]
    assert parsed[0]["deleted"] in ("true", "false")
    count = run(idx, *args, "--count")
    assert count.exit_code == 0 and count.output == "4\n"


def test_find_exit_statuses(idx, tmp_path):
    none = run(idx, "find", "no-such-file")
    assert none.exit_code == 1 and none.stdout == ""
    for fmt, out in (("--json", "[]\n"), ("--nl", ""), ("--csv", ""), ("--count", "0\n")):
        result = run(idx, "find", "no-such-file", fmt)
        assert result.exit_code == 1 and result.stdout == out, fmt
    for args, message in [
        (("find", "x", "--image", "nope:v1"), "no indexed image matches 'nope:v1'"),
        (("find", "x", "--min-size", "ten"), "invalid size"),
        (("find", "x", "--type", "z"), "invalid type"),
        (("find", "--preset", "nope"), "unknown preset"),
        (("find", "x", "--deleted", "--visible"), "exclude each other"),
        (("find", "x", "--platform", "linux/s390x"), "no indexed platform"),
        (("find", "x", "--layer", "abcdef0123456789"), "no layer"),
        (("find", "[z-a]"), "invalid pattern"),
    ]:
        result = run(idx, *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == "" and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert run(idx, "find").exit_code == 2  # no pattern, no preset
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    for path in (text, foreign, tmp_path / "missing.db"):
        for command in (["find", str(path), "x"], ["ls", str(path), "a:b"], ["images", str(path)]):
            result = CliRunner().invoke(cli, command)
            assert result.exit_code == 2 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.output
    assert not (tmp_path / "missing.db").exists()
    assert sqlite3.connect(foreign).execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]


@pytest.mark.parametrize("args", [["find", "*"], ["find", "*", "--json"], ["find", "*", "--csv"], ["images"], ["ls", "v1"]])
def test_reader_gone_is_status_141_and_silent(idx, args):
    # `layerslayer find DB '*' | head -1`: the reader closes the pipe before
    # we are done. Like grep: no message, status 128 + SIGPIPE (not 1, which
    # means "nothing matched").
    command, *rest = args
    rest = [f"{idx.v1_ref}" if a == "v1" else a for a in rest]
    proc = subprocess.Popen([sys.executable, "-m", "layerslayer", command, str(idx.path), *rest],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and stderr == b""


def test_reading_an_index_never_loads_the_http_stack(idx):
    # find, ls and images start faster without requests and urllib3 (~0.1 s).
    code = (
        "import sys\nfrom layerslayer.cli import cli\n"
        f"for args in (['find', {str(idx.path)!r}, '*'], ['ls', {str(idx.path)!r}, {idx.v1_ref!r}], ['images', {str(idx.path)!r}]):\n"
        "    try:\n        cli.main(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
        "print('LOADED', sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[-1] == "LOADED []"


def test_list_presets():
    result = CliRunner().invoke(cli, ["find", "--list-presets"])
    assert result.exit_code == 0
    for name, preset in PRESETS.items():
        assert f"{name}: " in result.output
        assert " ".join(preset.patterns) in result.output


def _all_rows(db, patterns, **kw):
    return [h.as_dict() for h in find.find(db, patterns, **kw)]


@pytest.mark.parametrize("patterns,kw", [
    (["*"], {"images": ["VERSION1"]}),
    (["*"], {"images": ["VERSION1"], "deleted": True}),
    (["*.pem", "id_rsa", "etc/ssh/*"], {"ignore_case": True}),
    (["*"], {"layer": "BASE", "visible": True}),
    (["s*"], {"types": ["f"], "min_size": 1}),
])
def test_entry_sources_agree(db, idx, monkeypatch, patterns, kw):
    "Driving the entries by path ids, by scoped layers, or by layers with the matcher in SQL: same rows."
    kw = {k: ([idx.v1_ref] if v == ["VERSION1"] else idx.base.digest if v == "BASE" else v) for k, v in kw.items()}
    expected = _all_rows(db, patterns, **kw)
    assert expected
    for source in find.FindQuery.SOURCES:
        assert _all_rows(db, patterns, source=source, **kw) == expected, source
    # Deleters loaded layer by layer instead of by key, and small batches.
    monkeypatch.setattr(query, "DELETER_KEYS_MAX", 0)
    monkeypatch.setattr(query, "DELETERS_PER_PATH", 0)
    monkeypatch.setattr(find, "BATCH_ROWS", 3)
    assert _all_rows(db, patterns, **kw) == expected
    # Streamed lean (keys first, entry columns and statuses batch by batch).
    assert [h.as_dict() for h in find.FindQuery(db, patterns, **kw).iter_hits(lean=True)] == expected
