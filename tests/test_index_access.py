"""Opening an index: reading commands never write,
and work on a read-only file system; an index of another schema version is
named as such; `index` refuses a DB path that reads as an image reference.

Read-only is proved the only way that holds for root: the index's directory is
mounted read-only for the command alone (tests/harness/readonly.py), and its
files are compared byte for byte before and after (no -wal or -shm appears).
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request

import pytest
from click.testing import CliRunner
from harness.builder import file, layer, push_image
from harness.readonly import readonly_argv, run_readonly, snapshot
from support.index import build_index

from layerslayer.cli import cli
from layerslayer.migrations import migrations

LAYSLAYER = [sys.executable, "-m", "layerslayer"]


@pytest.fixture(scope="module")
def image(registry):
    return push_image(registry, "t/index-access:1", layers=[layer([
        file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), file("root/.ssh/id_rsa", "KEY", mode=0o600),
    ])])


@pytest.fixture
def index(image, tmp_path):
    "A fresh index of `image` alone in its directory, closed cleanly (no -wal / -shm left)."
    directory = tmp_path / "ro"
    directory.mkdir()
    db = build_index(directory / "index.db", [image.ref]).path
    assert sorted(p.name for p in directory.iterdir()) == ["index.db"]
    return db


def one_line_error(proc, text: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: "), proc.stderr
    assert text in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------
# Read-only file system


def test_reading_commands_work_on_a_read_only_file_system(index, image):
    before = snapshot(index.parent)
    # The mount is really read-only, even for root.
    probe = run_readonly(index.parent, ["touch", str(index.parent / "probe")])
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr
    found = run_readonly(index.parent, [*LAYSLAYER, "find", str(index), "id_rsa", "--json"])
    assert found.returncode == 0, found.stderr
    assert [h["path"] for h in json.loads(found.stdout)] == ["root/.ssh/id_rsa"]
    listed = run_readonly(index.parent, [*LAYSLAYER, "ls", str(index), image.ref, "/etc", "--json"])
    assert listed.returncode == 0, listed.stderr
    assert [h["path"] for h in json.loads(listed.stdout)] == ["etc/passwd"]
    images = run_readonly(index.parent, [*LAYSLAYER, "images", str(index), "--json"])
    assert images.returncode == 0, images.stderr
    assert [i["reference"] for i in json.loads(images.stdout)] == [image.ref]
    assert snapshot(index.parent) == before


@pytest.mark.slow
def test_export_and_extract_read_an_index_on_a_read_only_file_system(index, image, tmp_path):
    "The other commands that read an index (export DB, extract --db DB, cat --db DB) write their files elsewhere."
    before = snapshot(index.parent)
    out = tmp_path / "out"
    exported = run_readonly(index.parent, [*LAYSLAYER, "export", str(index), "--match", "id_rsa", "--files",
                                           "-o", str(out / "export")])
    assert exported.returncode == 0, exported.stderr
    assert [p.read_text() for p in (out / "export").rglob("id_rsa")] == ["KEY"]
    extracted = run_readonly(index.parent, [*LAYSLAYER, "extract", image.ref, "/root/.ssh/id_rsa", "--db", str(index),
                                            "-o", str(out / "extract")])
    assert extracted.returncode == 0, extracted.stderr
    assert (out / "extract" / "root/.ssh/id_rsa").read_text() == "KEY"
    shown = run_readonly(index.parent, [*LAYSLAYER, "cat", image.ref, "/root/.ssh/id_rsa", "--db", str(index)])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "KEY"
    assert snapshot(index.parent) == before


def test_browse_serves_an_index_on_a_read_only_file_system(index):
    before = snapshot(index.parent)
    proc = subprocess.Popen(readonly_argv(index.parent, [*LAYSLAYER, "browse", str(index), "--port", "0"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"read-only at (http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(1) + "index/files_by_glob.json?pattern=id_rsa&_shape=array"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert [row["path"] for row in json.load(response)] == ["root/.ssh/id_rsa"]
        # The plugin knows the database for an index (its SQL functions and page).
        with urllib.request.urlopen(match.group(1) + "index/secrets.json?_shape=array", timeout=30) as response:
            assert "root/.ssh/id_rsa" in {row["path"] for row in json.load(response)}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert snapshot(index.parent) == before


def test_reading_commands_leave_a_writable_index_byte_for_byte(index, image):
    before = snapshot(index.parent)
    for args in (["find", str(index), "*"], ["ls", str(index), image.ref], ["images", str(index)]):
        result = subprocess.run([*LAYSLAYER, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert snapshot(index.parent) == before, args


@pytest.mark.parametrize("command", [["find", "{db}", "*"], ["ls", "{db}", "x"], ["images", "{db}"], ["browse", "{db}"]])
def test_reading_commands_leave_an_empty_file_alone(tmp_path, command):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    proc = subprocess.run([*LAYSLAYER, *[a.format(db=db) for a in command]], capture_output=True, text=True,
                          timeout=60)
    one_line_error(proc, "not a layerslayer index")
    assert db.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


# ---------------------------------------------------------------------------
# Schema versions


def add_future_migration(db) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES "
                     "('layerslayer', 'm999_from_the_future', '2030-01-01')")
    conn.close()


@pytest.mark.slow
def test_an_index_from_a_newer_version_is_named_and_never_written(index, image):
    add_future_migration(index)
    before = snapshot(index.parent)
    for args in (["images", str(index)], ["find", str(index), "*"], ["ls", str(index), image.ref],
                 ["browse", str(index), "--port", "0"]):
        proc = subprocess.run([*LAYSLAYER, *args], capture_output=True, text=True, timeout=60)
        one_line_error(proc, "written by a newer layerslayer (schema m999_from_the_future)")
    proc = subprocess.run([*LAYSLAYER, "index", str(index), image.ref], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "written by a newer layerslayer" in proc.stderr and "refusing to write to it" in proc.stderr
    assert snapshot(index.parent) == before


def test_an_older_index_is_not_migrated_by_reading_commands(index, image, monkeypatch):
    "A version with one more migration than the index: readers refuse (and say how to upgrade), `index --upgrade` does it."
    applied = []

    def m900_test_newer_column(db):
        applied.append(True)
        db.execute("CREATE TABLE m900_test (x)")

    monkeypatch.setattr(migrations, "_migrations", list(migrations._migrations))
    migrations(name="m900_test_newer_column")(m900_test_newer_column)
    before = snapshot(index.parent)
    runner = CliRunner()
    for args in (["images", str(index)], ["find", str(index), "*"], ["ls", str(index), image.ref]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert f"upgrade it with `layerslayer index {index} --upgrade`" in result.output
    assert snapshot(index.parent) == before and not applied
    result = runner.invoke(cli, ["index", str(index), "--upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output == f"Upgraded {index}: m900_test_newer_column\n" and applied == [True]
    result = runner.invoke(cli, ["find", str(index), "id_rsa"])
    assert result.exit_code == 0 and "root/.ssh/id_rsa" in result.output
    result = runner.invoke(cli, ["index", str(index), "--upgrade"])
    assert result.output == f"{index} is up to date\n"


# ---------------------------------------------------------------------------
# index DB REF: the arguments the wrong way round


@pytest.mark.parametrize("name", ["alpine", "nginx:latest", "localhost:5000/team/app"])
def test_index_refuses_a_db_path_that_reads_as_an_image_reference(tmp_path, image, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([*LAYSLAYER, "index", name, image.ref], capture_output=True, text=True, timeout=60)
    one_line_error(proc, "looks like an image reference, not an index file")
    assert "layerslayer index DB.db IMAGE" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_index_takes_a_db_path_with_a_suffix_or_that_exists(tmp_path, image, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myindex").write_bytes(b"")
    for name in ("images.sqlite", "myindex"):
        result = CliRunner().invoke(cli, ["index", name, image.ref])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.sqlite", "myindex"]
