"""One rule for `--layer N|DIGEST` and one for the default platform
(layerslayer.selectors): the rules themselves, then every command that takes
them against the real test registry, so the same text picks the same thing in
`ls`, `find --layer`, `save`, `extract` and `export`."""

from __future__ import annotations

import itertools
import json
import sqlite3
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from harness.builder import build_image, layer, push_image, push_index

from layerslayer.cli import cli
from layerslayer.errors import UsageError
from layerslayer.image import PlatformInfo
from layerslayer.query import platform_condition
from layerslayer.selectors import (
    LAYER_RULE,
    choose_platform,
    parse_layer_selector,
    platform_matches,
    select_layer,
    select_layers,
)


def stack_of(*digests: str) -> list:
    return [SimpleNamespace(digest=d) for d in digests]


A, B, C = "sha256:" + "ab" * 32, "sha256:" + "1234" + "c" * 60, "sha256:" + "abcd" + "e" * 60


# -- the layer rule -------------------------------------------------------------------------


@pytest.mark.parametrize("text,count,index,digest", [
    ("0", 3, 0, None), ("-1", 3, -1, None), (" 2 ", 3, 2, None), (7, None, 7, None),
    ("7", 3, 7, None),                      # too short for a digest prefix: an index, out of range
    ("12", None, 12, None),                 # no image to count in: still an index
    ("1234", 3, None, "1234"),              # all digits, no such layer: a digest prefix
    ("1234", None, None, "1234"),
    ("1234", 2000, 1234, None),             # an image with that layer: its index
    ("0002", 3, 2, None),
    ("ABCD", 3, None, "abcd"), ("sha256:1234", 3, None, "sha256:1234"),
])
def test_parse_layer_selector(text, count, index, digest):
    selector = parse_layer_selector(text, count)
    assert (selector.index, selector.digest) == (index, digest)


@pytest.mark.parametrize("bad", ["", "abc", "xyz", "12ab!", "md5:abcd", "sha256:", "sha256:ab", "-ab"])
def test_parse_layer_selector_refuses(bad):
    with pytest.raises(UsageError, match="is not a layer digest or index"):
        parse_layer_selector(bad, 3)


def test_select_layer():
    stack = stack_of(A, B, C)
    assert select_layer(stack, "0") is stack[0] and select_layer(stack, "-1") is stack[2]
    assert select_layer(stack, "1234") is stack[1]        # a digest prefix, not layer 1234
    assert select_layer(stack, "sha256:1234") is stack[1]
    assert select_layer(stack, "abcd") is stack[2]
    assert select_layer(stack, A) is stack[0]
    with pytest.raises(UsageError, match="more than one layer"):
        select_layer(stack_of(A, "sha256:" + "ab" * 31 + "cd"), "abab")
    with pytest.raises(UsageError, match="there is no layer 7: the image has 3 layer"):
        select_layer(stack, "7")
    with pytest.raises(UsageError, match="there is no layer -4"):
        select_layer(stack, -4)
    with pytest.raises(UsageError, match="the image has no layer 9999"):
        select_layer(stack, "9999")
    with pytest.raises(UsageError, match="the image has no layer sha384:abcd"):
        select_layer(stack, "sha384:abcd")
    assert select_layers(stack, ["-1", "abcd", "0"]) == [stack[2], stack[0]]     # each once, in the order asked
    rows = [(10, A), (11, B)]
    assert select_layer(rows, "1234", digest=lambda row: row[1]) == (11, B)


def test_the_rule_is_in_the_help_of_every_layer_option():
    for command in ("ls", "find", "save", "extract", "cat"):
        result = CliRunner().invoke(cli, [command, "--help"], terminal_width=400)
        assert "--layer N|DIGEST" in result.output, command
        assert " ".join(LAYER_RULE.split()) in " ".join(result.output.split()), command
    export = CliRunner().invoke(cli, ["export", "--help"])
    assert "--layer DIGEST" in export.output


# -- the platform rule ----------------------------------------------------------------------

INDEX = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]


@pytest.mark.parametrize("candidates,wanted,host,expected", [
    (INDEX, None, "linux/amd64", 0),
    (INDEX, None, "linux/arm64", 1),        # an arm64 host: the arm64/v8 image, not the first
    (INDEX, None, "linux/arm", 2),
    (INDEX, None, "linux/s390x", 0),        # no image for this machine: the first
    (["linux/arm64/v8"], None, "linux/amd64", 0),
    (INDEX, "linux/arm64", "linux/amd64", 1),
    (INDEX, "linux/arm64/v8", "linux/amd64", 1),
    (["linux/amd64", "linux/arm64"], "linux/arm64/v8", None, 1),   # arm64 implies v8
    (INDEX, "linux/arm/v6", None, None),
    (INDEX, "linux/s390x", "linux/s390x", None),
    ([], None, "linux/amd64", None),
    (["", "linux/arm64/v8"], None, "linux/arm64", 1),           # a platform never recorded
])
def test_choose_platform(candidates, wanted, host, expected):
    assert choose_platform(candidates, wanted, host=host) == expected


def test_platform_matches():
    assert platform_matches("linux/arm64/v8", "linux/arm64")
    assert platform_matches("linux/arm64", "linux/arm64/v8")
    assert not platform_matches("linux/arm/v7", "linux/arm/v6")
    assert not platform_matches("unknown", "linux/amd64")
    with pytest.raises(UsageError, match="invalid platform"):
        platform_matches("linux/amd64", "amd64")


# Platforms as images record them (os, architecture, variant): blank fields, arm64 with and without v8.
RECORDED = [("linux", "amd64", None), ("linux", "arm64", None), ("linux", "arm64", "v8"), ("linux", "arm64", ""),
            ("linux", "arm", "v6"), ("linux", "arm", "v7"), ("linux", "arm", None), ("windows", "amd64", None),
            ("linux", "386", None), ("", "", None), ("", "amd64", "v8"), (None, None, None), ("linux", "s390x", "")]
WANTED = ["linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm64/v9", "linux/arm", "linux/arm/v7",
          "linux/arm/v8", "windows/amd64", "unknown/unknown", "unknown/amd64", "unknown/amd64/v8", "linux/s390x"]


def test_find_platform_sql_agrees_with_platform_matches():
    "find --platform narrows in SQL (query.platform_condition): it picks what selectors.platform_matches picks."
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE platforms (id INTEGER PRIMARY KEY, os, architecture, variant, platform)")
    for os_name, arch, variant in RECORDED:
        db.execute("INSERT INTO platforms (os, architecture, variant, platform) VALUES (?, ?, ?, ?)",
                   [os_name, arch, variant, str(PlatformInfo(os_name, arch, variant, "", ""))])
    recorded = dict(db.execute("SELECT id, platform FROM platforms"))
    for wanted in WANTED:
        cond, params = platform_condition(wanted)
        in_sql = {row[0] for row in db.execute(f"SELECT id FROM platforms pf WHERE {cond}", params)}
        assert in_sql == {i for i, platform in recorded.items() if platform_matches(platform, wanted)}, wanted
    cond, params = platform_condition("linux/arm64/v8")
    assert len(db.execute(f"SELECT id FROM platforms pf WHERE {cond}", params).fetchall()) == 3


def test_ls_and_extract_pick_the_same_default_platform(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=[
        build_image([layer({"etc/platform": "amd64\n"})], platform="linux/amd64"),
        build_image([layer({"etc/platform": "arm64\n"})], platform="linux/arm64/v8"),
    ])
    db = tmp_path / "i.db"
    assert run("index", db, pushed.ref, "--all-platforms").exit_code == 0
    extracted = run("extract", pushed.ref, "/etc/platform", "--stdout")
    assert extracted.exit_code == 0, extracted.output
    listed = run("ls", db, pushed.ref, "/etc/platform", "--json")
    assert listed.exit_code == 0, listed.output
    layer_digest = json.loads(listed.stdout)[0]["layer_digest"]
    chosen = [img for img in pushed.images if img.layers[0].digest == layer_digest]
    assert chosen and chosen[0].layers[0].members[0].data.decode() == extracted.stdout


# -- every command, through the CLI ---------------------------------------------------------


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def digit_prefixed_layer(prefix_floor: int):
    "A layer whose digest's hex starts with 4 decimal digits forming a number >= prefix_floor."
    for n in itertools.count():
        candidate = layer({f"mid/file-{n}.txt": f"payload {n}\n"})
        head = candidate.digest.partition(":")[2][:4]
        if head.isdigit() and int(head) >= prefix_floor:
            return candidate


@pytest.fixture(scope="module")
def three_layers(registry, tmp_path_factory):
    "An image of three layers, the middle one's digest starting with 4 digits, and an index of it."
    layers = [layer({"base/a.txt": "a\n"}), digit_prefixed_layer(3), layer({"top/c.txt": "c\n"})]
    pushed = push_image(registry, f"t/selectors-{layers[1].digest[7:15]}:v1", layers=layers)
    db = tmp_path_factory.mktemp("selectors") / "i.db"
    assert run("index", db, pushed.ref).exit_code == 0
    return SimpleNamespace(ref=pushed.ref, layers=layers, db=db, middle=layers[1])


def middle_selectors(middle) -> list[str]:
    "Every way to name the middle layer: its index from the base and the top, and digest prefixes."
    hex_part = middle.digest.partition(":")[2]
    return ["1", "-2", hex_part[:4], hex_part[:12], middle.digest[:20], middle.digest]


def middle_paths(middle) -> set[str]:
    return {m.name for m in middle.members if m.type == "file"}


def test_ls_and_find_read_layer_selectors_alike(three_layers):
    img = three_layers
    for text in middle_selectors(img.middle):
        listed = run("ls", img.db, img.ref, "--layer", text, "--json")
        assert listed.exit_code == 0, (text, listed.output)
        assert {h["path"] for h in json.loads(listed.stdout)} >= middle_paths(img.middle), text
        assert {h["layer_digest"] for h in json.loads(listed.stdout)} == {img.middle.digest}, text
        found = run("find", img.db, "*", "--image", img.ref, "--layer", text, "--json")
        assert found.exit_code == 0, (text, found.output)
        assert {h["layer_digest"] for h in json.loads(found.stdout)} == {img.middle.digest}, text
    # Without one image to count in, an index cannot be read; a digest can.
    unscoped = run("find", img.db, "*", "--layer", "1")
    assert unscoped.exit_code == 2 and "layer 1 is an index" in unscoped.stderr
    by_digits = run("find", img.db, "*", "--layer", img.middle.digest[7:11], "--json")
    assert {h["layer_digest"] for h in json.loads(by_digits.stdout)} == {img.middle.digest}
    assert "there is no layer 7" in run("ls", img.db, img.ref, "--layer", "7").stderr


def test_find_in_one_image_reads_a_digest_in_that_image_as_ls_does(registry, tmp_path):
    "With --image, find --layer names a layer of that image's stack, as ls does, not any layer of the index."
    mine = push_image(registry, "t/selectors-mine:v1", layers=[layer({"mine.txt": "m\n"})])
    other = push_image(registry, "t/selectors-other:v1", layers=[layer({"other.txt": "o\n"})])
    db = tmp_path / "i.db"
    assert run("index", db, mine.ref, other.ref).exit_code == 0
    elsewhere = other.layers[0].digest[:19]
    listed = run("ls", db, mine.ref, "--layer", elsewhere)
    found = run("find", db, "*", "--image", mine.ref, "--layer", elsewhere)
    assert listed.exit_code == found.exit_code == 2, (listed.output, found.output)
    assert listed.stderr.splitlines()[-1] == found.stderr.splitlines()[-1], (listed.stderr, found.stderr)


def test_save_and_extract_read_layer_selectors_alike(three_layers, tmp_path):
    img = three_layers
    hex_part = img.middle.digest.partition(":")[2]
    for n, text in enumerate(middle_selectors(img.middle)):
        saved = run("save", img.ref, "--layer", text, "-o", tmp_path / f"save{n}")
        assert saved.exit_code == 0, (text, saved.output)
        assert [p.name.partition(".")[0] for p in (tmp_path / f"save{n}").rglob("*.tar.gz")] == [hex_part], text
        out = tmp_path / f"extract{n}"
        extracted = run("extract", img.ref, "*.txt", "--layer", text, "-o", out)
        assert extracted.exit_code == 0, (text, extracted.output)
        assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == middle_paths(img.middle), text


def test_export_reads_a_digest_and_refuses_an_index(three_layers, tmp_path):
    img = three_layers
    hex_part = img.middle.digest.partition(":")[2]
    for n, text in enumerate([hex_part[:4], hex_part[:12], img.middle.digest]):
        out = tmp_path / f"export{n}"
        exported = run("export", img.db, "--layer", text, "-o", out)
        assert exported.exit_code == 0, (text, exported.output)
        assert [p.name.partition(".")[0] for p in out.rglob("*.tar.gz")] == [hex_part], text
    for text in ("1", "-2"):
        refused = run("export", img.db, "--layer", text, "-o", tmp_path / "never")
        assert refused.exit_code == 2 and "is a layer index" in refused.output, refused.output
        assert not (tmp_path / "never").exists()

