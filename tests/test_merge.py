"""`layerslayer merge`: shards merged equal, row for row, the index one process builds."""

import sqlite3

import pytest
from click.testing import CliRunner
from harness.builder import dir_, file, layer, push_image, push_index
from harness.canon import canonical
from harness.catalog import push_catalog
from harness.dbrows import rows

from layerslayer.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def refs(registry):
    found, _ = push_catalog(registry, "merge", images=12, bases=2, base_files=5, base_bytes=20_000)
    # A path that is a directory in one shard and a file in another: the
    # 'replaces a directory' flag and its deletion must appear on merging.
    found.append(push_image(registry, "merge/dir-then-file:v1", layers=[layer([dir_("x"), dir_("x/y"), file("x/y/z", "1")])]).ref)
    found.append(push_image(registry, "merge/file-over-dir:v1", layers=[layer([dir_("x"), file("x/y", "now a file")])]).ref)
    found.append(push_image(registry, "merge/odd-names:v1", layers=[layer([file(b"odd/\xff\xfe-name", "x")])]).ref)
    found.append(push_index(registry, "merge/multi:v1", attestation=True).ref)
    return found


def index(db, refs, *extra):
    result = run("index", db, *refs, "--all-platforms", "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_merged_shards_equal_one_process(refs, tmp_path):
    whole = tmp_path / "whole.db"
    index(whole, refs)
    shards = [tmp_path / f"shard{i}.db" for i in range(3)]
    for i, shard in enumerate(shards):
        index(shard, refs[i::3])
    # A shard that overlaps another: its layers are not copied twice.
    index(shards[2], refs[:2])
    merged = tmp_path / "merged.db"
    result = run("merge", merged, *shards)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Merged 3 shards: ")
    expected = canonical(whole)
    got = canonical(merged)
    assert set(got) == set(expected)
    assert {"files", "image_files", "ghost_files", "visible_files", "layer_deletions", "entries", "paths"} <= set(got)
    for name in expected:
        assert got[name] == expected[name], name
    # The cases that need rebuilding, not copying, are really there.
    assert rows(merged, "SELECT count(*) FROM entries WHERE whiteout = 3")[0][0] == 2
    assert rows(merged, "SELECT count(*) FROM ghost_files")[0][0] > 0
    assert expected["paths_fts GLOB *.txt"]


def test_merge_is_idempotent_and_resumable(refs, tmp_path):
    shards = [tmp_path / f"shard{i}.db" for i in range(2)]
    for i, shard in enumerate(shards):
        index(shard, refs[i::2])
    once = tmp_path / "once.db"
    assert run("merge", once, *shards).exit_code == 0
    # Resumed: the first shard was merged, then the run stopped; merge all again.
    resumed = tmp_path / "resumed.db"
    assert run("merge", resumed, shards[0]).exit_code == 0
    again = run("merge", resumed, *shards)
    assert again.exit_code == 0, again.output
    assert canonical(resumed) == canonical(once)
    twice = run("merge", once, *shards)
    assert twice.stdout.splitlines()[-1] == "Merged 2 shards: 0 images, 0 platforms, 0 layers, 0 files added"
    assert canonical(once) == canonical(resumed)


def test_merge_refuses_other_schema_versions_and_non_indexes(refs, tmp_path):
    shard = tmp_path / "shard.db"
    index(shard, refs[:1])
    conn = sqlite3.connect(shard)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('layerslayer', 'm999_future', 'now')")
    conn.commit()
    conn.close()
    out = tmp_path / "out.db"
    result = run("merge", out, shard)
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "m999_future" in result.output and len(result.output.splitlines()) == 1
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    result = run("merge", out, other)
    assert result.exit_code == 2 and "not a layerslayer index" in result.output
    assert run("merge", out, tmp_path / "missing.db").exit_code == 2
    assert "is the index being merged into" in run("merge", out, out).output


def test_merge_copies_a_table_added_later_by_its_foreign_keys(refs, tmp_path):
    "A findings-like table of a later migration comes along with its layers."
    shard = tmp_path / "shard.db"
    index(shard, refs[:2])
    conn = sqlite3.connect(shard)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, layer_id INTEGER REFERENCES layers(id), "
                 "path_id INTEGER REFERENCES paths(id), note TEXT, UNIQUE (layer_id, path_id, note))")
    conn.execute("INSERT INTO notes (layer_id, path_id, note) SELECT e.layer_id, e.path_id, 'seen' FROM entries e")
    conn.commit()
    expected = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    conn.close()
    out = tmp_path / "out.db"
    sqlite3.connect(out).close()
    # The output has the table too (as it would after the same migration).
    assert run("index", out, "--upgrade").exit_code == 0  # reading commands never write
    conn = sqlite3.connect(out)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, layer_id INTEGER REFERENCES layers(id), "
                 "path_id INTEGER REFERENCES paths(id), note TEXT, UNIQUE (layer_id, path_id, note))")
    conn.commit()
    conn.close()
    for _ in range(2):
        assert run("merge", out, shard).exit_code == 0
    assert rows(out, "SELECT count(*) FROM notes")[0][0] == expected
    assert rows(out, "SELECT count(*) FROM notes n JOIN entries e ON e.layer_id = n.layer_id AND e.path_id = n.path_id")[0][0] == expected
