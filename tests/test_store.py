"""The SQLite index: migrations, refusing foreign files, atomic layer writes,
concurrency, distinct paths + FTS, non-UTF-8 names, and the OCI semantics of
the ghost_files / visible_files views."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3

import pytest

from layerslayer import store
from layerslayer.image import HistoryStep, LayerInfo, PlatformInfo
from layerslayer.migrations import migrations
from layerslayer.reference import Reference
from layerslayer.store import LayerWriter, NotAnIndex, open_db
from layerslayer.tarstream import Entry

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def E(path: str, type: str = "file", size: int = 0, **kw) -> Entry:
    kw.setdefault("mode", 0o755 if type == "dir" else 0o644)
    kw.setdefault("uname", "root")
    kw.setdefault("gname", "root")
    kw.setdefault("mtime", 1700000000.0)
    kw.setdefault("offset", 0)
    kw.setdefault("data_offset", kw["offset"] + 512)
    return Entry(path=path, type=type, size=size, **kw)


def digest_of(entries) -> str:
    text = "\n".join(f"{e.path}|{e.type}|{e.size}|{e.linkname}" for e in entries)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def index_layer(db, entries, digest=None) -> str:
    digest = digest or digest_of(entries)
    with LayerWriter(db, digest) as writer:
        writer.add_many(entries)
        writer.commit(bytes_read=123)
    return digest


def make_image(db, layers, *, repo="team/app", tag="1", arch="amd64", index_order=None) -> int:
    """Index ``layers`` (lists of entries), build an image + platform stack; return platform_id."""
    digests = [digest_of(entries) for entries in layers]
    for i in index_order or range(len(layers)):
        if store.layer_status(db, digests[i]) != "indexed":
            index_layer(db, layers[i], digests[i])
    ref = Reference("registry.example", repo, tag)
    image_id = store.upsert_image(db, ref, "sha256:" + hashlib.sha256(repr(digests).encode()).hexdigest(), "application/vnd.oci.image.index.v1+json")
    platform = PlatformInfo("linux", arch, None, "sha256:" + hashlib.sha256((arch + repr(digests)).encode()).hexdigest(),
                            "application/vnd.oci.image.manifest.v1+json")
    platform_id = store.upsert_platform(db, image_id, platform, None)
    store.set_platform_layers(db, platform_id, [LayerInfo(i, d, GZ, 100) for i, d in enumerate(digests)], "registry.example", repo)
    return platform_id


@pytest.fixture
def db(tmp_path):
    database = open_db(tmp_path / "index.db")
    yield database
    database.close()


def rows(db, sql, params=()):
    return [tuple(r) for r in db.execute(sql, params).fetchall()]


def visible(db, platform_id):
    return sorted(
        (r[0], r[1])
        for r in db.execute(
            "SELECT layer_position, path FROM visible_files WHERE platform_id = ?", [platform_id]
        )
    )


def ghosts(db, platform_id):
    return sorted(
        rows(
            db,
            "SELECT layer_position, path, deleted_in_position, deleted_by, recreated "
            "FROM ghost_files WHERE platform_id = ?",
            [platform_id],
        )
    )


# ---------------------------------------------------------------------------
# Opening and migrations


def test_migrations_apply_once_and_are_recorded(tmp_path):
    path = tmp_path / "index.db"
    db = open_db(path)
    applied = rows(db, "SELECT migration_set, name FROM _sqlite_migrations")
    assert applied == [("layerslayer", m.name) for m in migrations._migrations]
    assert applied[0] == ("layerslayer", "m001_initial") and ("layerslayer", "m002_i16_checkpoints") in applied
    assert ("layerslayer", "m003_i12_layer_notes") in applied
    assert ("layerslayer", "m010_i15_secrets") in applied
    assert migrations.pending(db) == []
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    schema = store.schema_text(db)
    db.close()

    db = open_db(path, must_exist=True)
    assert rows(db, "SELECT migration_set, name FROM _sqlite_migrations") == applied
    assert store.schema_text(db) == schema
    db.close()


def test_reopen_keeps_data(tmp_path):
    path = tmp_path / "index.db"
    db = open_db(path)
    index_layer(db, [E("etc/passwd")])
    db.close()
    db = open_db(path)
    assert store.stats(db)["files"] == 1
    assert rows(db, "SELECT path FROM files") == [("etc/passwd",)]
    db.close()


def test_concurrent_first_open_migrates_once(tmp_path):
    path = str(tmp_path / "index.db")
    every = _open_and_count(tmp_path / "reference.db")  # how many migrations a fresh index records
    assert every == len(migrations._migrations)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        assert pool.map(_open_and_count, [path] * 4) == [every] * 4


def _open_and_count(path):
    db = open_db(path)
    try:
        return db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    finally:
        db.close()


def _assert_refused(path, match):
    before = path.read_bytes()
    siblings = set(os.listdir(path.parent))
    with pytest.raises(NotAnIndex, match=match) as info:
        open_db(path)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert set(os.listdir(path.parent)) == siblings  # no -wal / -shm / journal left behind


def test_foreign_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('mine')")
    conn.commit()
    conn.close()
    _assert_refused(path, "not a layerslayer index")


def test_sqlite_database_with_other_migrations_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT, applied_at TEXT)")
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name) VALUES ('llm', 'm001')")
    conn.commit()
    conn.close()
    _assert_refused(path, "not a layerslayer index")


@pytest.mark.parametrize("content", [b"hello, world\n" * 10, b"\x89PNG\r\n\x1a\n" + bytes(200), b"SQLite"])
def test_non_sqlite_file_is_refused_untouched(tmp_path, content):
    path = tmp_path / "index.db"
    path.write_bytes(content)
    _assert_refused(path, "not an SQLite database")


def test_large_non_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "index.db"
    path.write_bytes(b"not a database, just a long text file\n" * 200)
    _assert_refused(path, "not an SQLite database")


def test_corrupt_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "index.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    _assert_refused(path, "layerslayer index")


def test_must_exist(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(NotAnIndex, match="No layerslayer index at") as info:
        open_db(path, must_exist=True)
    assert info.value.exit_code == 2
    assert not path.exists()


def test_directory_is_refused(tmp_path):
    with pytest.raises(NotAnIndex, match="is a directory"):
        open_db(tmp_path)


def test_empty_file_becomes_an_index(tmp_path):
    path = tmp_path / "index.db"
    path.write_bytes(b"")
    db = open_db(path)
    assert migrations.pending(db) == []
    db.close()


# ---------------------------------------------------------------------------
# Images, platforms, history, stacks


def test_upserts_are_idempotent(db):
    ref = Reference("registry-1.docker.io", "library/nginx", "latest")
    a = store.upsert_image(db, ref, "sha256:" + "a" * 64, "application/vnd.oci.image.index.v1+json")
    b = store.upsert_image(db, ref, "sha256:" + "a" * 64, None)
    assert a == b
    assert rows(db, "SELECT reference, media_type FROM images") == [("nginx:latest", "application/vnd.oci.image.index.v1+json")]
    # a digest reference (no tag) is not duplicated either
    by_digest = Reference("registry-1.docker.io", "library/nginx", None, "sha256:" + "a" * 64)
    c = store.upsert_image(db, by_digest, "sha256:" + "a" * 64, None)
    assert store.upsert_image(db, by_digest, "sha256:" + "a" * 64, None) == c != a
    # the tag moving to a new digest is a new row; the old one stays
    assert store.upsert_image(db, ref, "sha256:" + "b" * 64, None) not in (a, c)

    platform = PlatformInfo("linux", "arm64", "v8", "sha256:" + "c" * 64, "application/vnd.oci.image.manifest.v1+json")
    p1 = store.upsert_platform(db, a, platform, None)
    att = PlatformInfo("unknown", "unknown", None, "sha256:" + "d" * 64, "application/vnd.oci.image.manifest.v1+json", attestation=True)
    p2 = store.upsert_platform(db, a, att, None)
    assert store.upsert_platform(db, a, platform, None) == p1 != p2
    assert rows(db, "SELECT platform, attestation FROM platforms ORDER BY id") == [("linux/arm64/v8", 0), ("attestation", 1)]

    steps = [HistoryStep(0, "2024-01-01T00:00:00Z", "ADD rootfs", None, False, 0), HistoryStep(1, None, "CMD sh", None, True, None)]
    store.replace_history(db, p1, steps)
    store.replace_history(db, p1, steps)
    assert rows(db, "SELECT position, created_by, empty_layer, layer_position FROM history") == [
        (0, "ADD rootfs", 0, 0),
        (1, "CMD sh", 1, None),
    ]
    assert store.stats(db)["platforms"] == 1  # attestations are not platforms


def test_set_platform_layers_statuses_and_sources(db):
    indexed = index_layer(db, [E("bin/sh")])
    failed = "sha256:" + "f" * 64
    store.mark_layer_failed(db, failed, "boom")
    foreign = LayerInfo(3, "sha256:" + "e" * 64, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", 10, urls=["https://example.com/x"])
    layers = [
        LayerInfo(0, indexed, GZ, 10),
        LayerInfo(1, "sha256:" + "1" * 64, GZ, 10),
        LayerInfo(2, failed, GZ, 10),
        foreign,
        LayerInfo(4, indexed, GZ, 10),  # the same blob twice in one stack
    ]
    assert foreign.foreign
    image_id = store.upsert_image(db, Reference("ghcr.io", "o/r", "1"), "sha256:" + "0" * 64, None)
    p1, p2 = (
        store.upsert_platform(db, image_id, PlatformInfo("linux", arch, None, "sha256:" + c * 64, "m"), None)
        for arch, c in (("amd64", "2"), ("arm64", "3"))
    )
    ids = store.set_platform_layers(db, p1, layers, "ghcr.io", "o/r")
    assert ids[0] == ids[4]
    assert [store.layer_status(db, layer.digest) for layer in layers] == ["indexed", "pending", "failed", "foreign", "indexed"]
    assert rows(db, "SELECT position FROM platform_layers WHERE platform_id = ?", [p1]) == [(0,), (1,), (2,), (3,), (4,)]
    assert store.layers_to_index(db, [layer.digest for layer in layers] + ["sha256:" + "9" * 64]) == [
        "sha256:" + "1" * 64,
        failed,
        "sha256:" + "9" * 64,
    ]
    assert foreign.digest in store.layers_to_index(db, [foreign.digest], include_foreign=True)
    # a second source for the same blob; a one-string form works too
    store.set_platform_layers(db, p2, layers[:2], "registry.example/team/app")
    assert store.layer_sources(db, indexed) == [("ghcr.io", "o/r"), ("registry.example", "team/app")]
    # failures never demote an indexed layer; failed layers keep their error until indexed
    store.mark_layer_failed(db, indexed, "late error")
    assert store.layer_status(db, indexed) == "indexed"
    assert rows(db, "SELECT error FROM layers WHERE digest = ?", [failed]) == [("boom",)]
    index_layer(db, [E("x")], failed)
    assert rows(db, "SELECT status, error, entries FROM layers WHERE digest = ?", [failed]) == [("indexed", None, 1)]
    assert rows(db, "SELECT urls FROM layers WHERE digest = ?", [foreign.digest]) == [('["https://example.com/x"]',)]


def test_stats(db):
    make_image(db, [[E("a", "dir"), E("a/b")], [E("a/c")]])
    st = store.stats(db)
    assert st == {"images": 1, "platforms": 1, "layers": 2, "layers_indexed": 2, "layers_failed": 0, "files": 3, "paths": 3}


# ---------------------------------------------------------------------------
# LayerWriter


def test_layer_writer_records_everything(db):
    entries = [
        E("usr", "dir"),
        E("usr/bin", "dir"),
        E("usr/bin/tool", "file", 1234, mode=0o4755, uid=1000, gid=100, uname="app", gname="users", mtime=1.5, offset=1024, data_offset=2048),
        E("usr/bin/link", "symlink", linkname="tool"),
        E("usr/bin/hard", "hardlink", linkname="usr/bin/tool"),
        E("dev/null", "char", devmajor=1, devminor=3),
        E("dev/sda", "block", devmajor=8, devminor=0),
        E("run/fifo", "fifo"),
    ]
    digest = index_layer(db, entries)
    got = rows(
        db,
        "SELECT layer_digest, position, path, name, type, size, mode, uid, gid, uname, gname, mtime, linkname, "
        "devmajor, devminor, whiteout, opaque, offset, data_offset FROM files ORDER BY position",
    )
    assert got[2] == (digest, 2, "usr/bin/tool", "tool", "file", 1234, 0o4755, 1000, 100, "app", "users", 1.5, "", 0, 0, 0, 0, 1024, 2048)
    assert [r[4] for r in got] == ["dir", "dir", "file", "symlink", "hardlink", "char", "block", "fifo"]
    assert got[5][13:15] == (1, 3) and got[6][13:15] == (8, 0)
    assert got[3][12] == "tool" and got[4][12] == "usr/bin/tool"
    assert rows(db, "SELECT status, entries, listed_via, bytes_read FROM layers") == [("indexed", 8, "stream", 123)]
    assert rows(db, "SELECT typeof(mtime) FROM files WHERE path = 'usr'") == [("real",)]


def test_empty_layer(db):
    digest = "sha256:" + "0" * 64
    with LayerWriter(db, digest, "estargz-toc") as writer:
        assert writer.commit(bytes_read=0) == 0
    assert rows(db, "SELECT status, entries, listed_via FROM layers") == [("indexed", 0, "estargz-toc")]


def test_layer_writer_batches(db):
    entries = [E(f"d/f{i:05d}") for i in range(2500)]
    with LayerWriter(db, "sha256:" + "b" * 64, batch_size=1000) as writer:
        for entry in entries:
            writer.add(entry)
        assert writer.commit() == 2500
    assert rows(db, "SELECT count(*), min(position), max(position) FROM entries") == [(2500, 0, 2499)]
    assert rows(db, "SELECT position FROM files WHERE path = 'd/f01234'") == [(1234,)]


def test_failure_while_staging_leaves_nothing(tmp_path):
    path = tmp_path / "index.db"
    db = open_db(path)
    digest = "sha256:" + "c" * 64
    image_id = store.upsert_image(db, Reference("r.example", "a", "1"), "sha256:" + "0" * 64, None)
    platform_id = store.upsert_platform(db, image_id, PlatformInfo("linux", "amd64", None, "sha256:" + "1" * 64, "m"), None)
    store.set_platform_layers(db, platform_id, [LayerInfo(0, digest, GZ, 1)], "r.example/a")

    def broken():
        for i in range(5000):
            yield E(f"f{i}")
        raise ConnectionError("download dropped")

    with pytest.raises(ConnectionError):
        with LayerWriter(db, digest, batch_size=1000) as writer:
            writer.add_many(broken())
            writer.commit()
    assert rows(db, "SELECT count(*) FROM entries") == [(0,)]
    assert rows(db, "SELECT count(*) FROM deletions") == [(0,)]
    assert store.layer_status(db, digest) == "pending"
    assert rows(db, "SELECT name FROM temp.sqlite_master") == []  # stage dropped
    assert not db.conn.in_transaction
    # Paths already added stay as unused dictionary words: no view lists them,
    # their FTS rows are consistent, and the next run reuses them.
    left = rows(db, "SELECT count(*) FROM paths")[0][0]
    assert 0 < left <= 5000
    assert rows(db, "SELECT count(*) FROM files") == [(0,)]
    db.execute("INSERT INTO paths_fts (paths_fts) VALUES ('integrity-check')")
    index_layer(db, [E(f"f{i}") for i in range(5000)], digest)
    assert rows(db, "SELECT count(*) FROM paths") == [(5000,)]
    assert rows(db, "SELECT count(*) FROM files WHERE path GLOB 'f*'") == [(5000,)]
    db.close()


def test_writer_thread_failure_reaches_the_caller_and_keeps_nothing(tmp_path):
    db = open_db(tmp_path / "index.db")
    index_layer(db, [E("etc", "dir"), E("etc/hosts")])
    before = rows(db, "SELECT * FROM entries"), rows(db, "SELECT * FROM layers")
    # A write error in the writer thread (disk full, say) on the 3rd batch.
    db.execute(
        "CREATE TEMP TRIGGER fail AFTER INSERT ON main.paths WHEN new.path = 'x/f2500' "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    digest = "sha256:" + "f" * 64
    with pytest.raises(sqlite3.DatabaseError, match="disk full"):
        with LayerWriter(db, digest, batch_size=1000) as writer:
            writer.add_many(E(f"x/f{i}") for i in range(10_000))
            writer.commit()
    db.execute("DROP TRIGGER temp.fail")
    assert (rows(db, "SELECT * FROM entries"), rows(db, "SELECT * FROM layers")) == before
    assert rows(db, "SELECT name FROM temp.sqlite_master") == []
    assert not db.conn.in_transaction
    db.execute("INSERT INTO paths_fts (paths_fts) VALUES ('integrity-check')")
    assert index_layer(db, [E(f"x/f{i}") for i in range(10_000)], digest) == digest
    assert rows(db, "SELECT count(*), max(position) FROM entries WHERE layer_id = "
                "(SELECT id FROM layers WHERE digest = ?)", [digest]) == [(10_000, 9_999)]
    db.close()


def test_staging_holds_the_write_lock_only_briefly(tmp_path):
    path = tmp_path / "index.db"
    db = open_db(path)
    other = open_db(path)
    # A few seconds at most: were the lock held while the layer streams, this
    # write would wait for a commit() that can only come after it.
    other.conn.execute("PRAGMA busy_timeout = 5000")
    with LayerWriter(db, "sha256:" + "d" * 64, batch_size=100) as writer:
        writer.add_many(E(f"f{i}") for i in range(1000))
        # another process/connection can write while this layer is staged
        store.mark_layer_failed(other, "sha256:" + "e" * 64, "x")
        # and readers see nothing of the staged layer
        assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
        writer.commit()
    assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 1000
    db.close()
    other.close()


def test_indexing_connection_stages_on_disk_with_the_same_guarantees(tmp_path):
    # tune_for_indexing: TEMP tables in a file and a small page cache, so
    # staging memory is bounded; staging still takes no lock and a layer
    # still commits (or fails) as a whole.
    path = tmp_path / "index.db"
    db = open_db(path)
    store.tune_for_indexing(db)
    assert db.execute("PRAGMA temp_store").fetchone()[0] == 1  # FILE
    assert db.execute("PRAGMA cache_size").fetchone()[0] == -store.INDEXING_CACHE_KIB
    other = open_db(path)
    other.conn.execute("PRAGMA busy_timeout = 5000")
    with pytest.raises(ConnectionError):
        with LayerWriter(db, "sha256:" + "a" * 64, batch_size=500) as writer:
            writer.add_many(E(f"x/f{i}") for i in range(3000))
            raise ConnectionError("download dropped")
    assert rows(db, "SELECT count(*) FROM entries") == [(0,)]
    assert store.layer_status(db, "sha256:" + "a" * 64) is None
    with LayerWriter(db, "sha256:" + "d" * 64, batch_size=500) as writer:
        writer.add_many(E(f"d/f{i:05d}") for i in range(20_000))
        store.mark_layer_failed(other, "sha256:" + "e" * 64, "x")
        assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
        assert writer.commit() == 20_000
    assert other.execute("SELECT count(*), max(position) FROM entries").fetchone() == (20_000, 19_999)
    assert other.execute("SELECT count(*) FROM paths_fts WHERE path GLOB '*f01234'").fetchone()[0] == 1
    db.close()
    other.close()


def test_path_kinds_across_batches_and_layers(db):
    # paths.kinds (1 directory, 2 anything else) decides which non-directories
    # replace a directory (whiteout code 3). The writer thread adds new paths
    # batch by batch; what the layer's later batches add to a path's kinds,
    # and what a new layer adds to an indexed path's, commits with the layer.
    with LayerWriter(db, "sha256:" + "1" * 64, batch_size=2) as writer:
        writer.add_many([E("a", "dir"), E("x"), E("y"), E("a")])  # "a" again, as a file, 2 batches later
        writer.commit()
    index_layer(db, [E("b", "dir")])
    index_layer(db, [E("b")])
    index_layer(db, [E("c")])
    index_layer(db, [E("c", "dir")])  # fires paths_kinds_changed: the earlier file at c is marked
    kinds = dict(rows(db, "SELECT path, kinds FROM paths"))
    assert kinds == {"a": 3, "x": 2, "y": 2, "b": 3, "c": 3}
    assert rows(db, "SELECT p.path, CASE e.type WHEN 0 THEN 'dir' ELSE 'file' END AS t, e.whiteout FROM entries e "
                "JOIN paths p ON p.id = e.path_id WHERE p.path IN ('a', 'b', 'c') ORDER BY p.path, t") == [
        ("a", "dir", 0), ("a", "file", 3), ("b", "dir", 0), ("b", "file", 3), ("c", "dir", 0), ("c", "file", 3),
    ]
    assert rows(db, "SELECT count(*) FROM deletions WHERE kind = 3") == [(3,)]


def test_a_failed_layer_changes_nothing_other_layers_mean(db):
    # The failed layer had "opt" as a directory. Its path stays in the
    # dictionary, but not that kind: a later file "opt" over a lower "opt/x"
    # is not taken for a file replacing a directory (no layer that counts
    # has "opt" as one), exactly as if the failed layer had never been tried.
    with pytest.raises(ConnectionError):
        with LayerWriter(db, "sha256:" + "f" * 64, batch_size=1) as writer:
            writer.add_many([E("opt", "dir"), E("opt/y")])
            writer._finish_batches()  # both batches stored: the paths are in
            raise ConnectionError("download dropped")
    assert rows(db, "SELECT path, kinds FROM paths ORDER BY path") == [("opt", 0), ("opt/y", 0)]
    make_image(db, [[E("opt/x")], [E("opt")]])
    assert rows(db, "SELECT path FROM ghost_files") == []
    assert rows(db, "SELECT path FROM visible_files ORDER BY path") == [("opt",), ("opt/x",)]


def test_a_failing_writer_statement_leaves_the_connection_usable(tmp_path):
    # An error inside the writer thread (here a uid no SQLite integer holds,
    # which tarstream would have refused) fails the layer, and the same
    # connection goes on: no transaction left open, nothing staged left.
    db = open_db(tmp_path / "index.db")
    digest = "sha256:" + "9" * 64
    with pytest.raises(OverflowError):
        with LayerWriter(db, digest, batch_size=2) as writer:
            writer.add_many([E("a"), E("b"), E("c", uid=2**70), E("d")])
            writer.commit()
    assert not db.conn.in_transaction
    assert rows(db, "SELECT name FROM temp.sqlite_master") == []
    store.mark_layer_failed(db, digest, "uid out of range")
    db.close()
    db = open_db(tmp_path / "index.db")
    assert store.layer_status(db, digest) == "failed"
    index_layer(db, [E("a"), E("b")], digest)
    assert store.layer_status(db, digest) == "indexed"
    db.close()


def test_ctrl_c_while_discarding_waits_for_the_writer_thread(tmp_path, monkeypatch):
    # A second Ctrl-C while the layer is being discarded must not leave the
    # writer thread running on the connection: discard() waits it out, drops
    # what was staged, then lets the interrupt through.
    db = open_db(tmp_path / "index.db")
    writer = LayerWriter(db, "sha256:" + "7" * 64, batch_size=100)
    writer.add_many(E(f"f{i}") for i in range(1000))
    thread = writer._thread
    real_join, calls = thread.join, []

    def join(timeout=None):
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_join(timeout)

    monkeypatch.setattr(thread, "join", join)
    with pytest.raises(KeyboardInterrupt):
        writer.discard()
    assert len(calls) >= 2 and not thread.is_alive()
    assert not db.conn.in_transaction
    assert rows(db, "SELECT name FROM temp.sqlite_master") == []
    assert rows(db, "SELECT count(*) FROM entries") == [(0,)]
    db.close()


def test_a_writer_thread_gone_cannot_hang_the_caller(tmp_path):
    # Were the writer thread to end without a word, handing it the next batch
    # must fail at once rather than wait forever on the full queue. A writer
    # flagged to stop (as discard() flags it) has such a thread: it returns at
    # its first batch.
    db = open_db(tmp_path / "index.db")
    with pytest.raises(RuntimeError, match="writer thread stopped"):
        with LayerWriter(db, "sha256:" + "8" * 64, batch_size=10) as writer:
            writer._stop = True
            writer.add_many(E(f"f{i}") for i in range(100))
    assert rows(db, "SELECT name FROM temp.sqlite_master") == []
    db.close()


def test_failure_during_commit_rolls_back_everything(db):
    index_layer(db, [E("etc", "dir"), E("etc/hosts")])
    before = store.schema_text(db), rows(db, "SELECT * FROM paths"), rows(db, "SELECT * FROM entries")
    db.execute(
        "CREATE TEMP TRIGGER fail AFTER INSERT ON main.entries WHEN new.position = 3 "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    digest = "sha256:" + "a" * 64
    with pytest.raises(sqlite3.DatabaseError, match="disk full"):
        with LayerWriter(db, digest) as writer:
            writer.add_many([E("etc", "dir"), E("etc/new1"), E("etc/new2"), E("etc/new3"), E("etc/hosts")])
            writer.commit()
    db.execute("DROP TRIGGER temp.fail")
    assert (store.schema_text(db), rows(db, "SELECT * FROM entries")) == before[::2]
    assert store.layer_status(db, digest) is None  # its row was part of the rolled-back transaction
    # etc/new* stay in the path dictionary, with no kind (nothing lists them:
    # no entry uses them); the others are unchanged.
    assert rows(db, "SELECT * FROM paths WHERE id <= 2") == before[1]
    assert rows(db, "SELECT DISTINCT kinds FROM paths WHERE id > 2") == [(0,)]
    assert rows(db, "SELECT count(*) FROM files WHERE path LIKE 'etc/new%'") == [(0,)]
    db.execute("INSERT INTO paths_fts (paths_fts) VALUES ('integrity-check')")
    # and the same layer indexes fine afterwards
    index_layer(db, [E("etc", "dir"), E("etc/new1")], digest)
    assert store.layer_status(db, digest) == "indexed"


def test_second_writer_for_an_indexed_layer_is_a_noop(tmp_path):
    path = tmp_path / "index.db"
    db1, db2 = open_db(path), open_db(path)
    digest = "sha256:" + "1" * 64
    w1, w2 = LayerWriter(db1, digest), LayerWriter(db2, digest)
    w1.add_many([E("a"), E("b")])
    w2.add_many([E("a"), E("b")])
    assert w1.commit() == 2
    assert w2.commit() == 2
    assert not w1.skipped and w2.skipped
    assert rows(db1, "SELECT count(*) FROM entries") == [(2,)]
    assert rows(db1, "SELECT name FROM temp.sqlite_master") == []
    assert rows(db2, "SELECT name FROM temp.sqlite_master") == []
    db1.close()
    db2.close()


def _index_in_process(path, digest, prefix, count, barrier):
    db = open_db(path)
    try:
        with LayerWriter(db, digest, batch_size=5000) as writer:
            writer.add_many(E(f"shared/{i}") if i % 2 else E(f"{prefix}/{i}") for i in range(count))
            barrier.wait(timeout=60)
            writer.commit(bytes_read=count)
            return writer.skipped
    finally:
        db.close()


@pytest.mark.slow
def test_two_processes_commit_concurrently(tmp_path):
    path = str(tmp_path / "index.db")
    open_db(path).close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.starmap(
                _index_in_process,
                [(path, "sha256:" + "1" * 64, "one", 20000, barrier), (path, "sha256:" + "2" * 64, "two", 20000, barrier)],
            )
        assert results == [False, False]
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:  # the same layer twice: indexed once
            results = pool.starmap(
                _index_in_process,
                [(path, "sha256:" + "3" * 64, "three", 20000, barrier), (path, "sha256:" + "3" * 64, "three", 20000, barrier)],
            )
        assert sorted(results) == [False, True]
    db = open_db(path)
    assert rows(db, "SELECT status, entries FROM layers ORDER BY digest") == [("indexed", 20000)] * 3
    assert rows(db, "SELECT count(*) FROM entries") == [(60000,)]
    assert rows(db, "SELECT count(*) FROM paths") == [(10000 * 4,)]  # shared/* stored once
    db.execute("INSERT INTO paths_fts (paths_fts) VALUES ('integrity-check')")
    db.close()


# ---------------------------------------------------------------------------
# Distinct paths and FTS


def test_shared_paths_are_stored_once(db):
    base = [E("etc", "dir"), E("etc/ssl", "dir"), E("etc/ssl/certs", "dir"), E("etc/ssl/certs/ca.pem"), E("etc/passwd")]
    index_layer(db, base)
    index_layer(db, base + [E("etc/ssl/private/server.PEM")])
    assert rows(db, "SELECT count(*) FROM paths") == [(6,)]
    assert rows(db, "SELECT count(*) FROM entries") == [(11,)]
    assert rows(db, "SELECT count(*) FROM files WHERE path = 'etc/passwd'") == [(2,)]
    db.execute("INSERT INTO paths_fts (paths_fts) VALUES ('integrity-check')")


def test_fts_finds_paths(db):
    index_layer(db, [E("etc/ssl/certs/ca.pem"), E("etc/ssl/private/server.PEM"), E("etc/passwd"), E("usr/bin/passwd"), E("usr/share/doc/x")])
    index_layer(db, [E("etc/passwd"), E("home/u/.ssh/id_rsa")])

    def fts(where, params=()):
        return sorted(r[0] for r in db.execute(f"SELECT path FROM paths_fts WHERE {where}", params))

    assert fts("path GLOB '*.pem'") == ["etc/ssl/certs/ca.pem"]  # GLOB is case-sensitive
    assert fts("path LIKE '%.pem'") == ["etc/ssl/certs/ca.pem", "etc/ssl/private/server.PEM"]
    assert fts("path GLOB '*passwd*'") == ["etc/passwd", "usr/bin/passwd"]
    assert fts("paths_fts.path GLOB ?", ["*/.ssh/id_*"]) == ["home/u/.ssh/id_rsa"]
    # detail=none: MATCH takes single trigrams (AND-ed), not phrases
    assert fts("paths_fts MATCH ?", ["rsa"]) == ["home/u/.ssh/id_rsa"]
    assert fts("paths_fts MATCH ?", ["pas AND swd"]) == ["etc/passwd", "usr/bin/passwd"]
    plan = " ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN SELECT rowid FROM paths_fts WHERE path GLOB '*.pem'"))
    assert "VIRTUAL TABLE INDEX" in plan


def test_find_queries_use_indexes(db):
    "The plans the find command relies on: no full scan of paths or entries."
    make_image(db, [[E("etc", "dir"), E("etc/ssh", "dir"), E("etc/ssh/sshd_config"), E("root/.ssh/id_rsa")]])

    def plan(sql):
        return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql))

    p = plan("SELECT * FROM image_files WHERE name = 'id_rsa'")
    assert "USING INDEX paths_name (name=?)" in p and "SCAN" not in p.replace("SCAN CONSTANT", "")
    p = plan("SELECT * FROM paths WHERE name = 'ID_RSA' COLLATE NOCASE")
    assert "paths_name_nocase" in p
    p = plan("SELECT * FROM image_files WHERE path GLOB 'etc/ssh/*'")
    assert "paths_path (path>? AND path<?)" in p
    p = plan("SELECT * FROM image_files WHERE path_id IN (SELECT rowid FROM paths_fts WHERE path GLOB '*.pem')")
    assert "VIRTUAL TABLE INDEX" in p and "entries_path" in p
    # ghost_files starts from the deletions, never from all entries
    p = plan("SELECT * FROM ghost_files WHERE platform_id = 1")
    assert "SCAN e" not in p and "SEARCH d USING PRIMARY KEY (layer_id=?)" in p
    assert "SEARCH e USING INDEX entries_path (path_id=? AND layer_id=?)" in p
    p = plan("SELECT * FROM visible_files WHERE name = 'id_rsa'")
    assert p.startswith("SEARCH p USING INDEX paths_name (name=?)") and "SCAN" not in p
    assert "SEARCH s USING COVERING INDEX entries_path (path_id=? AND layer_id=?)" in p


def test_optimize_drops_statistics(db):
    make_image(db, [[E("a")]])
    db.execute("ANALYZE")
    assert rows(db, "SELECT count(*) FROM sqlite_stat1")[0][0] > 0
    store.optimize(db)
    assert rows(db, "SELECT count(*) FROM sqlite_stat1") == [(0,)]


# ---------------------------------------------------------------------------
# Names that are not UTF-8


def test_non_utf8_names_round_trip(db):
    latin1 = b"etc/caf\xe9".decode("utf-8", "surrogateescape")
    literal = "etc/caf\\xe9"  # a valid name that renders the same
    mixed = b"opt/\xc3\xa9t\xe9/\xff\xfe".decode("utf-8", "surrogateescape")
    index_layer(db, [E(latin1), E(literal), E(mixed, linkname=latin1, uname="\udcff")])
    got = {r[0]: (r[1], r[2]) for r in db.execute("SELECT p.id, p.path, p.path_bytes FROM paths p")}
    assert sorted(got.values(), key=lambda v: (v[0], v[1] or b"")) == [
        ("etc/caf\\xe9", None),
        ("etc/caf\\xe9", b"etc/caf\xe9"),
        ("opt/ét\\xe9/\\xff\\xfe", b"opt/\xc3\xa9t\xe9/\xff\xfe"),
    ]
    back = sorted(store.path_from_row(path, raw) for path, raw in got.values())
    assert back == sorted([latin1, literal, mixed])
    assert os.fsencode(latin1) == b"etc/caf\xe9"
    assert rows(db, "SELECT name, linkname, uname FROM files WHERE path_bytes = ?", [b"opt/\xc3\xa9t\xe9/\xff\xfe"]) == [
        ("\\xff\\xfe", "etc/caf\\xe9", "\\xff")
    ]
    # indexing the same names again reuses the same rows
    index_layer(db, [E(latin1), E(literal), E(mixed)])
    assert rows(db, "SELECT count(*) FROM paths") == [(3,)]
    assert store.path_text(latin1) == ("etc/caf\\xe9", b"etc/caf\xe9")
    assert store.path_text("plain/é") == ("plain/é", None)


# ---------------------------------------------------------------------------
# OCI layer semantics: ghost_files and visible_files


def test_whiteout_of_a_file(db):
    pid = make_image(db, [
        [E("etc", "dir"), E("etc/secret.key"), E("etc/keep")],
        [E("etc", "dir"), E("etc/.wh.secret.key")],
    ])
    assert ghosts(db, pid) == [(0, "etc/secret.key", 1, "etc/.wh.secret.key", 0)]
    assert rows(db, "SELECT deletion, image, platform, size, whiteout FROM ghost_files") == [
        ("whiteout", "registry.example/team/app:1", "linux/amd64", 0, 0)
    ]
    assert rows(db, "SELECT kind, marker_path, target, prefix FROM layer_deletions") == [
        (1, "etc/.wh.secret.key", "etc/secret.key", "etc/secret.key/")
    ]
    assert visible(db, pid) == [(0, "etc/keep"), (1, "etc")]


def test_whiteout_of_a_directory_deletes_its_tree_not_its_siblings(db):
    pid = make_image(db, [
        [E("a", "dir"), E("a/b", "dir"), E("a/b/c", "dir"), E("a/b/c/deep"), E("a/bc"), E("a/b.txt"), E("a/b-x", "dir"), E("a/b-x/y")],
        [E("a/.wh.b")],
    ])
    assert [g[1] for g in ghosts(db, pid)] == ["a/b", "a/b/c", "a/b/c/deep"]
    assert [v[1] for v in visible(db, pid)] == ["a", "a/b-x", "a/b-x/y", "a/b.txt", "a/bc"]


def test_opaque_directory(db):
    pid = make_image(db, [
        [E("a", "dir"), E("a/x"), E("a/sub", "dir"), E("a/sub/y"), E("ab", "dir"), E("ab/z"), E("a.txt")],
        # the marker comes after the new content: its position in the tar does not matter
        [E("a", "dir"), E("a/new"), E("a/sub", "dir"), E("a/.wh..wh..opq")],
    ])
    assert ghosts(db, pid) == [
        (0, "a/sub", 1, "a/.wh..wh..opq", 1),
        (0, "a/sub/y", 1, "a/.wh..wh..opq", 0),
        (0, "a/x", 1, "a/.wh..wh..opq", 0),
    ]
    assert visible(db, pid) == [(0, "a.txt"), (0, "ab"), (0, "ab/z"), (1, "a"), (1, "a/new"), (1, "a/sub")]


def test_opaque_root(db):
    pid = make_image(db, [[E("bin", "dir"), E("bin/sh")], [E(".wh..wh..opq"), E("hello")]])
    assert [g[1] for g in ghosts(db, pid)] == ["bin", "bin/sh"]
    assert visible(db, pid) == [(1, "hello")]


def test_readd_after_delete(db):
    pid = make_image(db, [
        [E("app", "dir"), E("app/.env", size=10)],
        [E("app/.wh..env")],
        [E("app/.env", size=20)],
    ])
    assert ghosts(db, pid) == [(0, "app/.env", 1, "app/.wh..env", 1)]
    assert visible(db, pid) == [(0, "app"), (2, "app/.env")]
    assert rows(db, "SELECT size FROM visible_files WHERE path = 'app/.env'") == [(20,)]


def test_whiteout_and_new_file_in_the_same_layer(db):
    # OCI: whiteouts apply only to lower layers; the layer's own entries stay.
    pid = make_image(db, [
        [E("f", size=1), E("d", "dir"), E("d/old")],
        [E("f", size=2), E(".wh.f"), E("d/.wh..wh..opq"), E("d/new")],
    ])
    assert ghosts(db, pid) == [(0, "d/old", 1, "d/.wh..wh..opq", 0), (0, "f", 1, ".wh.f", 1)]
    assert visible(db, pid) == [(0, "d"), (1, "d/new"), (1, "f")]


def test_whiteout_does_not_apply_to_its_own_layer(db):
    pid = make_image(db, [[E("f"), E(".wh.f"), E("g")]])
    assert ghosts(db, pid) == []
    assert visible(db, pid) == [(0, "f"), (0, "g")]


def test_deleted_twice_reports_the_first_deletion_once(db):
    pid = make_image(db, [
        [E("s")],
        [E(".wh.s")],
        [E("s")],
        [E(".wh.s"), E(".wh..wh..opq")],
    ])
    assert ghosts(db, pid) == [(0, "s", 1, ".wh.s", 1), (2, "s", 3, ".wh.s", 0)]
    assert visible(db, pid) == []


@pytest.mark.parametrize("order", [None, [1, 0]], ids=["base-first", "top-first"])
def test_directory_replaced_by_a_symlink_hides_its_contents(db, order):
    pid = make_image(db, [
        [E("opt", "dir"), E("opt/app", "dir"), E("opt/app/secret.key"), E("opt/apps")],
        [E("opt/app", "symlink", linkname="/srv/app")],
    ], index_order=order)
    assert ghosts(db, pid) == [(0, "opt/app/secret.key", 1, "opt/app", 0)]
    assert rows(db, "SELECT deletion FROM ghost_files") == [("replaced",)]
    assert rows(db, "SELECT kind, marker_path, target, prefix FROM layer_deletions") == [(3, "opt/app", None, "opt/app/")]
    assert visible(db, pid) == [(0, "opt"), (0, "opt/apps"), (1, "opt/app")]
    assert rows(db, "SELECT whiteout, type FROM files WHERE path = 'opt/app' AND type = 'symlink'") == [(0, "symlink")]


def test_overwritten_and_duplicate_entries(db):
    pid = make_image(db, [[E("f", size=1), E("g", size=1), E("g", size=2)], [E("f", size=3)]])
    assert ghosts(db, pid) == []
    assert rows(db, "SELECT layer_position, path, size FROM visible_files WHERE platform_id = ? ORDER BY path", [pid]) == [
        (1, "f", 3),
        (0, "g", 2),
    ]


def test_stacks_are_per_platform(db):
    base = [E("etc", "dir"), E("etc/token")]
    top = [E("etc/.wh.token")]
    amd = make_image(db, [base, top], arch="amd64")
    arm = make_image(db, [base], arch="arm64")
    assert [g[1] for g in ghosts(db, amd)] == ["etc/token"]
    assert ghosts(db, arm) == []
    assert visible(db, arm) == [(0, "etc"), (0, "etc/token")]
    assert visible(db, amd) == [(0, "etc")]
    # the same layer twice in one stack: the upper copy supersedes the lower one
    twice = make_image(db, [base, base], repo="team/twice")
    assert visible(db, twice) == [(1, "etc"), (1, "etc/token")]


def test_image_views(db):
    pid = make_image(db, [[E("etc", "dir"), E("etc/os-release", size=5)], [E("etc/hosts")]])
    assert rows(db, "SELECT image, platform, position, status, entries FROM image_layers WHERE platform_id = ?", [pid]) == [
        ("registry.example/team/app:1", "linux/amd64", 0, "indexed", 2),
        ("registry.example/team/app:1", "linux/amd64", 1, "indexed", 1),
    ]
    assert rows(db, "SELECT image, platform, layer_position, path, size FROM image_files WHERE name = 'os-release'") == [
        ("registry.example/team/app:1", "linux/amd64", 0, "etc/os-release", 5)
    ]


# ---------------------------------------------------------------------------
# schema_text


def test_schema_text_is_stable(tmp_path):
    a = open_db(tmp_path / "a.db")
    b = open_db(tmp_path / "b.db")
    index_layer(b, [E("x")])
    text = store.schema_text(a)
    assert text == store.schema_text(b) == store.schema_text(a)
    assert text.startswith("CREATE TABLE images (")
    assert "paths_fts_data" not in text and "_sqlite_migrations" not in text
    assert "CREATE VIRTUAL TABLE paths_fts USING fts5(" in text
    order = [line.split()[2] if line.startswith("CREATE TABLE") else line.split()[2]
             for line in text.splitlines() if line.startswith(("CREATE TABLE", "CREATE VIEW"))]
    assert order == [
        "images", "platforms", "history", "layers", "layer_sources", "platform_layers", "paths", "entries",
        "deletions", "checkpoints", "findings", "config", "config_env", "config_labels", "config_ports",
        "files", "image_layers", "image_files", "layer_deletions", "ghost_files", "visible_files", "finding_locations",
    ]
    a.close()
    b.close()
