"""The OCI whiteout / opaque-directory rules: layerslayer.overlay against every
place that applies them, on random layer stacks.

Hypothesis builds stacks of tar layers (files, directories, symlinks, hard
links, whiteouts, opaque markers - at the root too -, a path twice in one
layer, a directory replaced by a file and the other way round), indexes them
for real (tar bytes through ``tarstream`` into ``store.LayerWriter``), then
checks that ``find`` (status, ``--deleted``, ``--visible``), ``ls`` (merged
and one layer), the ``deletions`` table and the ``ghost_files`` /
``visible_files`` views all say what :mod:`layerslayer.overlay` says. On a
failure Hypothesis prints the falsifying stack and how to reproduce it.

``extract`` applies the rules too (``extraction.MergedView``, top layer
first): its plans for pattern ``*`` (``plan_extraction``) are
``overlay.merge``, except below a file ``a`` over a directory lower layers
only imply (``a/x`` without an ``a`` entry), which extract hides as
containerd does and the index keeps (see the overlay module's docstring).
"""

from __future__ import annotations

import functools
import hashlib
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerslayer import find, oci, overlay, query, store, tarstream
from layerslayer.extraction import plan_extraction
from layerslayer.image import LayerInfo, PlatformInfo
from layerslayer.indexer import write_listing
from layerslayer.patterns import parse_pattern
from layerslayer.reference import Reference

REPOSITORY = "team/app"
REF = f"registry.example/{REPOSITORY}:1"

NAMES = ("a", "b", "c")
KINDS = ("file", "dir", "symlink", "hardlink", "whiteout", "opaque")


@dataclass(frozen=True)
class Member:
    "One tar member of a generated layer."

    kind: str
    parent: tuple[str, ...]
    name: str

    @property
    def path(self) -> str:
        lead = "/".join(self.parent)
        lead = lead + "/" if lead else ""
        if self.kind == "whiteout":
            return lead + oci.WHITEOUT_PREFIX + self.name
        if self.kind == "opaque":
            return lead + oci.OPAQUE_MARKER
        return lead + self.name


members = st.builds(
    Member,
    kind=st.sampled_from(KINDS),
    parent=st.lists(st.sampled_from(NAMES), max_size=2).map(tuple),
    name=st.sampled_from(NAMES),
)
stacks = st.lists(st.lists(members, max_size=7), min_size=1, max_size=4)


def tar_bytes(layer: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in layer:
            info = tarfile.TarInfo(m.path)
            info.mtime = 1_700_000_000
            data = b""
            if m.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif m.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "elsewhere"
            elif m.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, "a"
            else:  # files, and markers as the runtimes write them: empty regular files
                data = m.path.encode()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Row:
    "An indexed entry as the overlay module sees it."

    path: str
    type: str
    code: int
    layer: int
    position: int


def index_stack(db, stack: list[list[Member]]) -> list[list[Row]]:
    """Index each layer's tar bytes and record one image with the stack;
    return the entries as indexed (tarstream's reading), bottom layer first."""
    listed, digests = [], []
    for layer in stack:
        blob = tar_bytes(layer)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        digests.append(digest)
        entries = list(tarstream.iter_entries([blob], "none"))
        listed.append(entries)
        if store.layer_status(db, digest) != "indexed":  # the same layer twice in a stack
            write_listing(db, digest, iter(entries), functools.partial(len, blob))
    image_id = store.upsert_image(db, Reference("registry.example", REPOSITORY, "1"), "sha256:" + "1" * 64, oci.OCI_MANIFEST)
    platform = PlatformInfo("linux", "amd64", None, "sha256:" + "2" * 64, oci.OCI_MANIFEST)
    platform_id = store.upsert_platform(db, image_id, platform, None)
    store.set_platform_layers(
        db, platform_id, [LayerInfo(i, d, oci.OCI_LAYER, 100) for i, d in enumerate(digests)], "registry.example", REPOSITORY
    )
    # Code 3 comes from the whole index: a path is a directory if any entry says so.
    directories = {e.path for entries in listed for e in entries if e.type == "dir"}
    return [
        [Row(e.path, e.type, overlay.entry_code(e.path, e.type, directories), i, p) for p, e in enumerate(entries)]
        for i, entries in enumerate(listed)
    ]


def expected_status(layers: list[list[Row]]) -> dict[tuple[int, int], tuple]:
    "(layer, position) → (deleted_in, deleted_by, recreated, visible) of every non-marker entry."
    out = {}
    for rows, statuses in zip(layers, overlay.statuses(layers)):
        for row, s in zip(rows, statuses):
            if not overlay.is_marker(row.code):
                out[(row.layer, row.position)] = (s.deleted_in, s.deleted_by, s.recreated, s.visible)
    return out


def hit_status(hits) -> dict[tuple[int, int], tuple]:
    return {(h.layer_index, h.position): (h.deleted_in_layer, h.deleted_by, h.recreated, h.visible) for h in hits}


def extract_plan(layers: list[list[Row]]) -> set[tuple[int, int]]:
    "(layer, position) of every entry ``plan_extraction`` writes for ``*`` (layers top first, offsets = positions)."
    layer_rows = [
        (SimpleNamespace(digest=f"layer-{i}", index=i), [(r.path, r.type, r.position) for r in rows])
        for i, rows in reversed(list(enumerate(layers)))
    ]
    plans = plan_extraction(layer_rows, [parse_pattern("*")])
    return {(int(digest.partition("-")[2]), offset) for digest, plan in plans.items() for offset in plan.offsets}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
@given(stack=stacks)
def test_every_consumer_agrees(stack):
    with tempfile.TemporaryDirectory() as tmp:
        db = store.open_db(Path(tmp) / "index.db")
        try:
            check_stack(db, stack)
        finally:
            db.close()


def check_stack(db, stack: list[list[Member]]) -> None:
    layers = index_stack(db, stack)
    want = expected_status(layers)

    # The store's codes (paths.kinds, the paths_kinds_changed trigger) are overlay.entry_code.
    codes = {
        (pos, p): code
        for pos, p, code in db.execute(
            "SELECT pl.position, e.position, e.whiteout FROM platform_layers pl JOIN entries e ON e.layer_id = pl.layer_id"
        )
    }
    assert codes == {(r.layer, r.position): r.code for rows in layers for r in rows}

    # The deletions table holds overlay.scope of every deleting entry.
    deletions = {
        (pos, p): (kind, target, prefix)
        for pos, p, kind, target, prefix in db.execute(
            "SELECT pl.position, d.position, d.kind, d.target, d.prefix FROM platform_layers pl "
            "JOIN deletions d ON d.layer_id = pl.layer_id"
        )
    }
    assert deletions == {
        (r.layer, r.position): (r.code, *overlay.scope(r.code, r.path)) for rows in layers for r in rows if r.code
    }

    # find: status of every entry, and the --deleted / --visible filters.
    hits = find.find(db, ["*"])
    assert hit_status(hits) == want
    deleted = find.find(db, ["*"], deleted=True)
    assert {(h.layer_index, h.position) for h in deleted} == {k for k, v in want.items() if v[0] is not None}
    visible = find.find(db, ["*"], visible=True)
    assert {(h.layer_index, h.position) for h in visible} == {k for k, v in want.items() if v[3]}

    # ls: the merged filesystem, and each layer's entries with their status.
    merged = overlay.merge(layers)
    assert [(h.layer_index, h.position) for h in query.list_files(db, REF)] == [(r.layer, r.position) for r in merged]
    assert {(r.layer, r.position) for r in merged} == {k for k, v in want.items() if v[3]}
    for i in range(len(layers)):
        one = [h for h in query.list_files(db, REF, layer=i) if not h.code or h.code == oci.REPLACES_DIRECTORY]
        assert hit_status(one) == {k: v for k, v in want.items() if k[0] == i}

    # extract: what plan_extraction writes for "*".
    extracted = extract_plan(layers)
    # Known difference (b): a file "a" over a directory lower layers only imply
    # ("a/x" but no "a" entry, so its code is 0): extract hides "a/x" as
    # containerd does, the index keeps it. Those entries are left out.
    files = [(r.layer, r.path + "/") for rows in layers for r in rows if r.code == oci.ORDINARY and r.type != "dir"]

    def below_an_implied_directory_replaced(key: tuple[int, int]) -> bool:
        row = layers[key[0]][key[1]]
        return any(layer > row.layer and row.path.startswith(prefix) for layer, prefix in files)

    assert {k for k in extracted if not below_an_implied_directory_replaced(k)} == {
        (r.layer, r.position) for r in merged if not below_an_implied_directory_replaced((r.layer, r.position))
    }

    # The SQL views Datasette users read.
    assert {tuple(r) for r in db.execute("SELECT layer_position, position FROM visible_files")} == {
        k for k, v in want.items() if v[3]
    }
    assert {
        (r[0], r[1]): (r[2], r[3], bool(r[4]), False)
        for r in db.execute("SELECT layer_position, position, deleted_in_position, deleted_by, recreated FROM ghost_files")
    } == {k: v for k, v in want.items() if v[0] is not None}


# -- examples worth naming (each also in reach of the random stacks) ------------------


def rows(*layers) -> list[list[Row]]:
    "Layers of (path, type) pairs; codes as the index gives them."
    directories = {path for layer in layers for path, type_ in layer if type_ == "dir"}
    return [
        [Row(path, type_, overlay.entry_code(path, type_, directories), i, p) for p, (path, type_) in enumerate(layer)]
        for i, layer in enumerate(layers)
    ]


def paths(entries) -> list[str]:
    return [e.path for e in entries]


def test_whiteout_deletes_the_path_and_below_from_lower_layers_only():
    layers = rows([("a", "dir"), ("a/x", "file"), ("b", "file")], [(".wh.a", "file"), ("a", "file"), ("b", "file")])
    # Layer 1 deletes layer 0's a (and a/x) and re-creates a in the same layer;
    # the first deleting entry in tar order is the one named.
    assert paths(overlay.merge(layers)) == ["a", "b"]
    s = overlay.statuses(layers)
    assert (s[0][1].deleted_in, s[0][1].deleted_by, s[0][1].recreated) == (1, ".wh.a", False)
    assert (s[0][0].deleted_in, s[0][0].recreated) == (1, True)
    assert not s[0][2].deleted and not s[0][2].visible  # merely overwritten
    assert s[1][1].visible and s[1][2].visible and not s[1][0].visible


def test_opaque_marker_empties_its_directory_whatever_its_tar_position():
    layers = rows([("d", "dir"), ("d/x", "file"), ("e", "file")], [("d/y", "file"), ("d/.wh..wh..opq", "file")])
    assert paths(overlay.merge(layers)) == ["d", "d/y", "e"]
    root = rows([("d", "dir"), ("e", "file")], [(".wh..wh..opq", "file"), ("f", "file")])
    assert paths(overlay.merge(root)) == ["f"]
    assert extract_plan(root) == {(1, 1)}  # extract applies it at the root too, as containerd and moby do


def test_a_file_over_a_directory_hides_what_was_below_it():
    layers = rows([("d", "dir"), ("d/x", "file")], [("d", "symlink")])
    assert layers[1][0].code == oci.REPLACES_DIRECTORY
    assert paths(overlay.merge(layers)) == ["d"]
    assert overlay.statuses(layers)[0][1].deleted_by == "d"


def test_a_file_over_a_directory_deletes_below_it_even_when_a_later_copy_wins():
    "Unpacked in tar order, the file replaces the directory (and what was below it) before the new directory is made."
    layers = rows([("d", "dir"), ("d/x", "file")], [("d", "file"), ("d", "dir")])
    assert paths(overlay.merge(layers)) == ["d"]
    assert extract_plan(layers) == {(1, 1)}


def test_a_directory_only_implied_by_lower_entries_is_not_replaced():
    "The index knows a directory by its own tar entry (see the overlay module's docstring)."
    layers = rows([("d/x", "file")], [("d", "file")])
    assert paths(overlay.merge(layers)) == ["d", "d/x"]


def test_scope_and_keys_agree():
    for marker, code in [("a/.wh.b", 1), (".wh.b", 1), ("a/.wh..wh..opq", 2), (".wh..wh..opq", 2), ("a/b", 3)]:
        target, prefix = overlay.scope(code, marker)
        for victim in ["a", "a/b", "a/b/c", "b", "b/c", "ab", "a/bc"]:
            deleted = victim == target or victim.startswith(prefix)
            assert overlay.deletes(code, marker, victim) == deleted
            if deleted:
                assert (marker, code) in overlay.deleter_keys(victim)
    with pytest.raises(ValueError):
        overlay.scope(0, "a")


def test_oci_entry_types_are_the_schema_codes():
    from layerslayer.migrations import ENTRY_TYPES

    assert oci.ENTRY_TYPES == ENTRY_TYPES
