"""The SQLite index: opening it, migrating it, and every write to it.

This is the only module that writes SQL, with ``merge.py`` (merging the
shards of a crawl), which builds on it. Reads live elsewhere (``query.py``,
``find.py``); the schema and the semantics of its views are documented in
``layerslayer.migrations``.

Concurrency model: any number of processes (and threads, each with its own
connection from :func:`open_db`) may index into the same file. While a layer
streams in, a writer thread adds its new distinct paths (and their FTS rows)
in short transactions of their own and stages its entries in a TEMP table,
which takes no lock on the main database; the entries then move to the main
tables in one short ``BEGIN IMMEDIATE`` transaction together with the layer's
``indexed`` status, so a killed run never leaves a half-indexed layer (see
:class:`LayerWriter`). No transaction is ever held open while a blob
downloads. WAL mode lets readers (``find``, Datasette) run during indexing,
and ``busy_timeout`` makes writers queue rather than fail.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import queue
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from . import __version__
from .errors import LayerslayerError
from .migrations import migrations
from .oci import OPAQUE, OPAQUE_MARKER, TYPE_CODES, WHITEOUT, WHITEOUT_PREFIX

__all__ = [
    "NotAnIndex",
    "SchemaMismatch",
    "open_db",
    "upsert_image",
    "upsert_platform",
    "replace_history",
    "set_platform_layers",
    "layer_status",
    "layers_to_index",
    "layer_sources",
    "LayerWriter",
    "tune_for_indexing",
    "mark_layer_failed",
    "schema_text",
    "stats",
    "optimize",
    "path_text",
    "path_from_row",
    "TYPE_CODES",
    "replace_config",
    "replace_platform_findings",
    "replace_layer_findings",
    "layer_scanned",
    "count_findings",
    "write_transaction",
    "FILL_DELETIONS",
]

BUSY_TIMEOUT_MS = 30_000
CACHE_KIB = 65_536
#: Page cache of a connection that indexes layers (see :func:`tune_for_indexing`).
INDEXING_CACHE_KIB = 8_192


class NotAnIndex(LayerslayerError):
    "The database file is missing, not SQLite, or not a layerslayer index."

    exit_code = 2


class SchemaMismatch(NotAnIndex):
    "The index's schema is not this version's: a newer layerslayer migrated it, or it awaits migrations."


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------
# Opening


def open_db(path, *, must_exist: bool = False, read_only: bool = False) -> sqlite_utils.Database:
    """Open (creating if needed) the index at ``path`` and migrate it.

    WAL journal, ``busy_timeout`` 30 s, foreign keys on. Raises
    :class:`NotAnIndex` - without writing a byte to the file - when ``path``
    is not an SQLite database, is an SQLite database of something else (it
    has tables but no layerslayer migrations record), or is missing while
    ``must_exist`` is true. ``":memory:"`` gives a private in-memory index.
    Raises :class:`SchemaMismatch`, writing nothing, when a newer layerslayer
    migrated the index further than this version knows.

    ``read_only`` (the reading commands): the file must exist and already be
    an index of this version's schema; it is opened with ``query_only``,
    never switched to WAL nor migrated, so it may sit on a read-only file or
    file system (see :func:`_open_read_only`). An older schema is refused
    with the command that upgrades it.
    """
    name = os.fspath(path)
    memory = name == ":memory:"
    if not memory:
        size = _stat_index(name, must_exist or read_only)
        if read_only:
            if not size:
                raise NotAnIndex(f"{name} is empty, not a layerslayer index (create one with Index.add)")
            return _open_read_only(name)
    try:
        # A LayerWriter hands its connection to its writer thread for a while.
        db = sqlite_utils.Database(sqlite3.connect(name, check_same_thread=False))
    except sqlite3.Error as e:
        raise NotAnIndex(f"Cannot open {name}: {e}") from None
    conn = db.conn
    try:
        _set_up(conn)
        _check_is_ours(conn, name)
        _check_schema(db, name, writing=True)
        if not memory:
            _retry_while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            # In WAL mode NORMAL never corrupts the index; a power cut may
            # lose the last layers committed, which the next run redoes.
            conn.execute("PRAGMA synchronous = NORMAL")
        db.migrated = _retry_while_locked(lambda: _migrate(db))  # names of the migrations applied
    except BaseException as e:
        conn.close()
        raise _as_not_an_index(e, name) from None
    return db


def _stat_index(name: str, must_exist: bool) -> int | None:
    "The size of the file at ``name`` (None if there is none), checked with a stat() alone."
    if os.path.isdir(name):
        raise NotAnIndex(f"{name} is a directory, not a layerslayer index")
    if not os.path.exists(name):
        if must_exist:
            raise NotAnIndex(f"No layerslayer index at {name} (create one with Index.add)")
        return None
    # Never open() and close() the file ourselves: closing *any*
    # descriptor of a database file drops every POSIX lock this
    # process holds on it, those of other threads' SQLite connections
    # included - another process then checkpoints and deletes the WAL
    # under them and their commits are lost ("How To Corrupt An SQLite
    # Database", 2.2.1). SQLite itself checks the header below; only
    # a stat() here. An empty file is an empty database; anything
    # shorter than SQLite's smallest page is not a database at all.
    try:
        size = os.stat(name).st_size
    except OSError as e:
        raise NotAnIndex(f"Cannot read {name}: {e.strerror or e}") from None
    if 0 < size < 512:
        raise NotAnIndex(f"{name} is not a layerslayer index (not an SQLite database)")
    return size


def _set_up(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    # TEMP tables and sorts stay in memory, and a big page cache keeps the
    # path indexes hot for queries; connections that index layers trade
    # both for bounded memory (tune_for_indexing).
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")


def _as_not_an_index(e: BaseException, name: str) -> BaseException:
    "What an error met while opening ``name`` means to the user."
    if isinstance(e, sqlite3.DatabaseError):
        if "file is not a database" in str(e):
            return NotAnIndex(f"{name} is not a layerslayer index (not an SQLite database)")
        return NotAnIndex(f"{name} is not a usable layerslayer index: {e}")
    return e


def _open_read_only(name: str) -> sqlite_utils.Database:
    """``name`` opened for reading: ``query_only``, never switched to WAL nor
    migrated. SQLite opens a write-protected file read-only by itself
    (``mode=rw``); as the last connection to close it then tidies away the
    WAL files, so the directory is left as it was. Where SQLite cannot open
    the file that way, ``mode=ro``; and a WAL index on a read-only file system
    (whose ``-shm`` file cannot be created) as ``immutable=1``, which takes no
    lock and creates no file (nothing can change the file there)."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(name))
    for attempt in (uri + "?mode=rw", uri + "?mode=ro", uri + "?mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(attempt, uri=True, check_same_thread=False)
        except sqlite3.OperationalError:
            continue
        db = sqlite_utils.Database(conn)
        try:
            conn.execute("PRAGMA query_only = 1")
            _set_up(conn)
            _check_is_ours(conn, name, empty_ok=False)
            _check_schema(db, name, writing=False)
            db.immutable = "immutable=1" in attempt  # browse serves such a file immutable too
            return db
        except sqlite3.OperationalError as e:
            conn.close()
            if "unable to open" in str(e) or "readonly" in str(e):
                continue
            raise _as_not_an_index(e, name) from None
        except BaseException as e:
            conn.close()
            raise _as_not_an_index(e, name) from None
    raise NotAnIndex(f"Cannot open {name} for reading")


def _check_schema(db: sqlite_utils.Database, name: str, *, writing: bool) -> None:
    """SchemaMismatch when the index records migrations this version does not
    know (a newer layerslayer wrote it), or, for a reader, lacks some."""
    applied = [m.name for m in migrations.applied(db)]
    known = [m.name for m in migrations._migrations]
    unknown = [m for m in applied if m not in known]
    if unknown:
        action = "refusing to write to it" if writing else "cannot read it"
        raise SchemaMismatch(
            f"{name} was written by a newer layerslayer (schema {', '.join(unknown)}); this version "
            f"({__version__}) {action}: upgrade layerslayer"
        )
    pending = [m for m in known if m not in applied]
    if pending and not writing:
        raise SchemaMismatch(
            f"{name} was made by an older layerslayer (schema lacks {', '.join(pending)}); "
            f"upgrade it with Index({name!r}).upgrade()"
        )


def tune_for_indexing(db: sqlite_utils.Database) -> None:
    """Set up a fresh connection that will stage and commit layers.

    Staged rows go to a TEMP table on disk (``temp_store = FILE``): SQLite
    keeps only its small temp page cache in memory and the OS buffers the
    rest, so staging memory stays bounded however big the layer. The main
    page cache is smaller than a reader's (8 MB: measured no slower for a
    66,000-entry layer than 16 MB, and 8 MB less peak RSS): a layer's commit
    spills to the WAL when it outgrows it. Call it before any TEMP table
    exists (changing ``temp_store`` drops them).
    """
    conn = db.conn
    conn.execute("PRAGMA temp_store = FILE")
    conn.execute(f"PRAGMA cache_size = -{INDEXING_CACHE_KIB}")


def _check_is_ours(conn: sqlite3.Connection, name: str, empty_ok: bool = True) -> None:
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as e:
        if "file is not a database" in str(e):
            raise NotAnIndex(f"{name} is not a layerslayer index (not an SQLite database)") from None
        raise NotAnIndex(f"{name} is not a layerslayer index ({e})") from None
    if not tables:
        if empty_ok:
            return  # a new, empty database: ours to initialise
        raise NotAnIndex(f"{name} is an empty database, not a layerslayer index (create one with Index.add)")
    if migrations.migrations_table in tables:
        row = conn.execute(
            f"SELECT 1 FROM [{migrations.migrations_table}] WHERE migration_set = ? LIMIT 1",
            [migrations.name],
        ).fetchone()
        if row:
            return
    raise NotAnIndex(
        f"{name} is an SQLite database but not a layerslayer index; refusing to modify it"
    )


def _retry_while_locked(step):
    """Run ``step`` again while SQLite answers "database is locked" at once.

    busy_timeout does not cover every case: switching a new file to WAL, or
    a first open racing another process's, can fail immediately (SQLite
    skips the busy handler where waiting could dead-lock). Bounded by the
    same busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return step()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _migrate(db: sqlite_utils.Database) -> list[str]:
    "Apply what is pending (taking the write lock only then); the names applied."
    pending = [m.name for m in migrations.pending(db)]
    if pending:
        _apply_migrations(db)
    return pending


def _apply_migrations(db: sqlite_utils.Database) -> None:
    # Serialise concurrent first opens: take the write lock, then apply what
    # is still pending (another process may have migrated meanwhile).
    # Migrations.apply() nests its per-migration transactions as savepoints.
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        migrations.apply(db)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction (or a savepoint inside the caller's)."""
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --------------------------------------------------------------------------
# Text that SQLite can store


def path_text(path: str) -> tuple[str, bytes | None]:
    """``(display text, original bytes or None)`` for a surrogateescape'd str.

    Valid UTF-8 names come back unchanged with ``None``; others get every
    undecodable byte written as ``\\xNN`` and their exact bytes.
    """
    if path.isascii():
        return path, None
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace"), raw


def path_from_row(path: str, path_bytes: bytes | None) -> str:
    "The inverse of :func:`path_text`: the str ``Entry.path`` had (surrogateescape)."
    if path_bytes is None:
        return path
    return bytes(path_bytes).decode("utf-8", "surrogateescape")


def _text(value) -> str:
    if value is None:
        return ""
    if value.__class__ is not str:
        value = str(value)
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------
# Images, platforms, history, stacks


def upsert_image(db, ref, digest: str, media_type: str | None) -> int:
    """Record ``ref`` resolved to ``digest``; return ``images.id``.

    One row per (registry, repository, tag, digest): a tag that moves to a new
    digest gets a new row and the old one stays, as history.
    """
    registry = ref.registry
    repository = ref.repository
    tag = getattr(ref, "tag", None)
    display = getattr(ref, "short", None) or getattr(ref, "display", None) or str(ref)
    with write_transaction(db) as conn:
        row = conn.execute(
            "SELECT id FROM images WHERE registry = ? AND repository = ? "
            "AND tag IS ? AND digest = ?",
            [registry, repository, tag, digest],
        ).fetchone()
        if row:
            conn.execute(
                "UPDATE images SET reference = ?, media_type = coalesce(?, media_type), "
                "indexed_at = ? WHERE id = ?",
                [display, media_type, _now(), row[0]],
            )
            return row[0]
        cur = conn.execute(
            "INSERT INTO images (registry, repository, tag, reference, digest, "
            "media_type, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [registry, repository, tag, display, digest, media_type, _now()],
        )
        return cur.lastrowid


def _attr(obj, name, default=None):
    return getattr(obj, name, default) if obj is not None else default


def upsert_platform(db, image_id: int, platform, platform_image=None) -> int:
    """Record one manifest of an image; return ``platforms.id``.

    ``platform`` is an ``image.PlatformInfo``; ``platform_image`` (an
    ``image.PlatformImage``, or None for attestations and platforms not
    loaded) adds the config digest and creation time.
    """
    manifest_digest = _attr(platform_image, "manifest_digest") or platform.digest
    config_digest = _attr(platform_image, "config_digest")
    created = _attr(platform_image, "created")
    if created is not None and not isinstance(created, str):
        created = str(created)
    attestation = 1 if _attr(platform, "attestation", False) else 0
    values = {
        "media_type": _attr(platform, "media_type"),
        "os": _attr(platform, "os"),
        "architecture": _attr(platform, "architecture"),
        "variant": _attr(platform, "variant"),
        "platform": str(platform),
        "config_digest": config_digest,
        "created": created,
        "attestation": attestation,
    }
    with write_transaction(db) as conn:
        row = conn.execute(
            "SELECT id FROM platforms WHERE image_id = ? AND manifest_digest = ?",
            [image_id, manifest_digest],
        ).fetchone()
        if row:
            conn.execute(
                "UPDATE platforms SET media_type = coalesce(:media_type, media_type), "
                "os = :os, architecture = :architecture, variant = :variant, "
                "platform = :platform, config_digest = coalesce(:config_digest, config_digest), "
                "created = coalesce(:created, created), attestation = :attestation "
                "WHERE id = :id",
                {**values, "id": row[0]},
            )
            return row[0]
        cur = conn.execute(
            "INSERT INTO platforms (image_id, manifest_digest, media_type, os, "
            "architecture, variant, platform, config_digest, created, attestation) "
            "VALUES (:image_id, :manifest_digest, :media_type, :os, :architecture, "
            ":variant, :platform, :config_digest, :created, :attestation)",
            {**values, "image_id": image_id, "manifest_digest": manifest_digest},
        )
        return cur.lastrowid


def replace_history(db, platform_id: int, steps) -> None:
    "Replace the config history of a platform with ``steps`` (``image.HistoryStep``)."
    rows = []
    for i, step in enumerate(steps):
        created = _attr(step, "created")
        rows.append(
            (
                platform_id,
                _attr(step, "index", i) if _attr(step, "index") is not None else i,
                None if created is None else str(created),
                _attr(step, "created_by"),
                _attr(step, "comment"),
                1 if _attr(step, "empty_layer", False) else 0,
                _attr(step, "layer_index"),
            )
        )
    with write_transaction(db) as conn:
        conn.execute("DELETE FROM history WHERE platform_id = ?", [platform_id])
        conn.executemany(
            "INSERT INTO history (platform_id, position, created, created_by, comment, "
            "empty_layer, layer_position) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _split_registry_repo(registry_repo) -> tuple[str, str] | None:
    if not registry_repo:
        return None
    if isinstance(registry_repo, (tuple, list)):
        return tuple(registry_repo)  # type: ignore[return-value]
    registry, _, repository = str(registry_repo).partition("/")
    if not repository:
        raise ValueError(f"expected 'registry/repository', got {registry_repo!r}")
    return registry, repository


def set_platform_layers(db, platform_id: int, layers, registry, repository=None) -> list[int]:
    """Set the ordered layer stack of a platform; return the ``layers.id`` list.

    Ensures a ``layers`` row per digest: new ones are ``pending``, or
    ``foreign`` for non-distributable layers; existing rows keep their status
    (an ``indexed`` layer is never touched) except that a layer known only as
    foreign becomes ``pending`` once a distributable descriptor names it.
    ``registry`` and ``repository`` (or one "registry/repository" string)
    are remembered in ``layer_sources`` as a place to fetch the blobs from.
    """
    source = (registry, repository) if repository else _split_registry_repo(registry)
    ids = []
    with write_transaction(db) as conn:
        for layer in layers:
            urls = _attr(layer, "urls")
            status = "foreign" if _attr(layer, "foreign", False) else "pending"
            conn.execute(
                "INSERT INTO layers (digest, media_type, size, urls, status) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET "
                "media_type = coalesce(layers.media_type, excluded.media_type), "
                "size = coalesce(layers.size, excluded.size), "
                "urls = coalesce(layers.urls, excluded.urls), "
                "status = CASE WHEN layers.status = 'foreign' AND excluded.status = 'pending' "
                "THEN 'pending' ELSE layers.status END",
                [
                    layer.digest,
                    _attr(layer, "media_type"),
                    _attr(layer, "size"),
                    json.dumps(list(urls)) if urls else None,
                    status,
                ],
            )
            ids.append(
                conn.execute("SELECT id FROM layers WHERE digest = ?", [layer.digest]).fetchone()[0]
            )
        conn.execute("DELETE FROM platform_layers WHERE platform_id = ?", [platform_id])
        conn.executemany(
            "INSERT INTO platform_layers (platform_id, position, layer_id) VALUES (?, ?, ?)",
            [(platform_id, position, layer_id) for position, layer_id in enumerate(ids)],
        )
        if source:
            conn.executemany(
                "INSERT OR IGNORE INTO layer_sources (layer_id, registry, repository) "
                "VALUES (?, ?, ?)",
                [(layer_id, *source) for layer_id in dict.fromkeys(ids)],
            )
    return ids


# --------------------------------------------------------------------------
# Layer status


def layer_status(db, digest: str) -> str | None:
    "``pending`` | ``indexed`` | ``failed`` | ``foreign``, or None if unknown."
    row = db.execute("SELECT status FROM layers WHERE digest = ?", [digest]).fetchone()
    return row[0] if row else None


def layer_listed_via(db, digest: str) -> str | None:
    "How an indexed layer was listed: ``stream``, ``estargz-toc``, ``zstd-chunked-toc`` (None if unknown)."
    row = db.execute("SELECT listed_via FROM layers WHERE digest = ?", [digest]).fetchone()
    return row[0] if row else None


def layer_checkpoints(db, digest: str) -> list[tuple[int, int, bytes]]:
    "(uncompressed offset, bit offset, packed window) of a layer's checkpoints, in order."
    return [tuple(row) for row in db.execute(
        "SELECT c.uncompressed, c.bits, c.window FROM checkpoints c JOIN layers l ON l.id = c.layer_id "
        "WHERE l.digest = ? ORDER BY c.uncompressed", [digest])]


def entry_extents(db, digest: str, offsets: Iterable[int]) -> dict[int, tuple[int, int]]:
    "Header offset -> (header size, content size) of the entries of a layer at ``offsets``."
    return {offset: (header_size or 0, size or 0) for offset, header_size, size in db.execute(
        'SELECT e."offset", e.header_size, e.size FROM entries e JOIN layers l ON l.id = e.layer_id '
        'WHERE l.digest = ? AND e."offset" IN (SELECT value FROM json_each(?))',
        [digest, json.dumps(sorted(offsets))])}


def layers_to_index(db, digests: Iterable[str], *, include_foreign: bool = False) -> list[str]:
    """The digests (in order, without repeats) that still need indexing.

    That is every digest not ``indexed``: ``pending``, ``failed`` (retried)
    and unknown ones; ``foreign`` ones only with ``include_foreign``.
    """
    wanted = list(dict.fromkeys(digests))
    status: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for digest, st in db.execute(
            f"SELECT digest, status FROM layers WHERE digest IN ({marks})", chunk
        ):
            status[digest] = st
    skip = {"indexed"} if include_foreign else {"indexed", "foreign"}
    return [d for d in wanted if status.get(d) not in skip]


def images_with_layer(db, digest: str) -> list[tuple[str, str, str | None, str]]:
    "(registry, repository, tag, platform manifest digest) of each indexed image whose stack holds ``digest``."
    return [tuple(row) for row in db.execute(
        "SELECT DISTINCT i.registry, i.repository, i.tag, p.manifest_digest FROM layers l "
        "JOIN platform_layers pl ON pl.layer_id = l.id JOIN platforms p ON p.id = pl.platform_id "
        "JOIN images i ON i.id = p.image_id WHERE l.digest = ? ORDER BY i.registry, i.repository, i.tag",
        [digest])]


def layer_sources(db, digest: str) -> list[tuple[str, str]]:
    "(registry, repository) pairs the blob ``digest`` was seen in."
    return [
        (r[0], r[1])
        for r in db.execute(
            "SELECT s.registry, s.repository FROM layer_sources s "
            "JOIN layers l ON l.id = s.layer_id WHERE l.digest = ? "
            "ORDER BY s.registry, s.repository",
            [digest],
        )
    ]


def mark_layer_failed(db, digest: str, error: str) -> None:
    """Record that indexing ``digest`` failed (it is retried on the next run).

    An ``indexed`` layer stays indexed.
    """
    with write_transaction(db) as conn:
        conn.execute(
            "INSERT INTO layers (digest, status, error) VALUES (?, 'failed', ?) "
            "ON CONFLICT (digest) DO UPDATE SET status = 'failed', error = excluded.error "
            "WHERE layers.status != 'indexed'",
            [digest, str(error)],
        )


# --------------------------------------------------------------------------
# Entries


# Rows arrive in ``incoming`` a batch at a time: ``tw`` packs type code |
# whiteout code << 3 and ``dev`` packs devmajor << 32 | devminor (fewer
# parameters to bind per row). Once their paths have ids, they move to the
# stage, keyed by tar position.
_INCOMING_COLUMNS = (
    "path TEXT, path_bytes BLOB, name TEXT, tw INTEGER, size INTEGER, mode INTEGER, "
    "uid INTEGER, gid INTEGER, uname TEXT, gname TEXT, mtime REAL, linkname TEXT, "
    "dev INTEGER, off INTEGER, header_size INTEGER"
)
_INCOMING_INSERT = "INSERT INTO {} VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_STAGE_COLUMNS = (
    "position INTEGER PRIMARY KEY, path_id INTEGER, new_kinds INTEGER, tw INTEGER, size INTEGER, mode INTEGER, "
    "uid INTEGER, gid INTEGER, uname TEXT, gname TEXT, mtime REAL, linkname TEXT, "
    "dev INTEGER, off INTEGER, header_size INTEGER"
)
# kind of an entry for paths.kinds: 1 directory, 2 anything else.
_KIND = "CASE {} & 7 WHEN 0 THEN 1 ELSE 2 END"

_stage_numbers = itertools.count(1)

# One deletions row per deleting entry of the layer just written (codes 1-3,
# see layerslayer.migrations): ``target`` and ``prefix`` are overlay.scope in
# SQL (tests/test_overlay.py holds them to it); ``d`` is the entry's directory
# with its trailing "/" ("" at the root).
FILL_DELETIONS = """
INSERT OR IGNORE INTO deletions (layer_id, position, kind, target, prefix, lo, hi)
SELECT layer_id, position, whiteout,
    CASE whiteout WHEN 1 THEN d || substr(name, 5) END,
    CASE whiteout WHEN 1 THEN d || substr(name, 5) || '/' WHEN 2 THEN d ELSE path || '/' END,
    CASE whiteout WHEN 1 THEN d || substr(name, 5) WHEN 2 THEN d ELSE path || '/' END,
    CASE whiteout WHEN 1 THEN d || substr(name, 5) || '0'
        WHEN 2 THEN CASE WHEN d = '' THEN x'' ELSE substr(d, 1, length(d) - 1) || '0' END
        ELSE path || '0' END
FROM (
    SELECT e.layer_id, e.position, e.whiteout, p.path, p.name,
        substr(p.path, 1, length(p.path) - length(p.name)) AS d
    FROM entries e INDEXED BY entries_deletions
    JOIN paths p ON p.id = e.path_id
    WHERE e.layer_id = ? AND e.whiteout > 0
)
"""

def _entry_rows(entries: Iterable) -> list[tuple]:
    "Entries as ``incoming`` rows."
    rows = []
    append = rows.append
    codes = TYPE_CODES
    for e in entries:
        path = e.path
        path_bytes = None
        if not path.isascii():
            path, path_bytes = path_text(path)
        name = path[path.rfind("/") + 1 :]
        tw = codes[e.type]
        if name[:4] == WHITEOUT_PREFIX:  # oci.whiteout_code, inlined: this loop runs for every entry indexed
            tw |= (OPAQUE if name == OPAQUE_MARKER else WHITEOUT) << 3
        dev = 0
        if tw == 4 or tw == 5:
            dev = (e.devmajor << 32) | e.devminor
        uname = e.uname
        gname = e.gname
        linkname = e.linkname
        if not (uname.isascii() and gname.isascii() and linkname.isascii()):
            uname, gname, linkname = _text(uname), _text(gname), _text(linkname)
        offset = e.offset
        append((path, path_bytes, name, tw, e.size, e.mode, e.uid, e.gid, uname, gname, e.mtime, linkname,
                dev, offset, e.data_offset - offset))
    return rows


class LayerWriter:
    """Store a layer's entries as they stream, then commit them atomically.

    ::

        with LayerWriter(db, digest, "stream") as writer:
            writer.add_many(iter_entries(chunks))
            writer.commit(bytes_read=n)

    Entries are handed over in batches of ``batch_size`` to a writer thread,
    so SQLite's work (which runs without the GIL) overlaps the caller's
    download and parsing. For each batch the writer thread adds the paths
    the index does not know yet, with their FTS rows, in a short
    ``BEGIN IMMEDIATE`` transaction of its own, then stages the entries with
    their path ids in a TEMP table (which takes no lock). ``commit()`` then
    runs one ``BEGIN IMMEDIATE`` transaction: the entries, what changed in
    the paths' kinds, the deletions and the layer's ``indexed`` status. So
    the write lock is only ever held for short moments, never while a blob
    downloads.

    Distinct paths are a shared dictionary: a layer that fails (or a run
    killed mid-layer) may leave paths that no entry uses; they are harmless
    (nothing lists a path without an entry) and reused by the next run. A
    layer's entries, and everything derived from them, commit with its
    status or not at all. If another process indexed the layer meanwhile,
    the staged rows are dropped and ``skipped`` is set. Leaving the ``with``
    block without ``commit()`` (an exception, a cancelled download) discards
    everything staged.

    Entries are duck-typed ``tarstream.Entry`` objects (``path``, ``type``,
    ``size``, ``mode``, ``uid``, ``gid``, ``uname``, ``gname``, ``mtime``,
    ``linkname``, ``devmajor``, ``devminor``, ``offset``, ``data_offset``); the
    whiteout kind is derived from the basename of ``path``. The connection
    belongs to the writer until ``commit()`` or ``discard()`` returns, and
    must not be shared by two writers: give each its own :func:`open_db`.
    """

    def __init__(self, db, digest: str, listed_via: str = "stream", *, batch_size: int = 5_000,
                 scanned: int | None = None, keep_values: bool = False):
        self.db = db
        # Content scanning (see add_findings): the size cap used, None when not scanning.
        self.scanned = scanned
        self.keep_values = keep_values
        self._findings: list[tuple] = []
        self.conn: sqlite3.Connection = db.conn
        self.digest = digest
        self.listed_via = listed_via
        self.batch_size = batch_size
        self.count = 0
        self.skipped = False
        #: (uncompressed offset, bit offset, packed window) rows committed with the layer
        self.checkpoints: list[tuple[int, int, bytes]] = []
        self._closed = False
        self._batch: list = []
        number = next(_stage_numbers)
        self._stage = f"temp.layerslayer_stage_{number}"
        self._incoming = f"temp.layerslayer_incoming_{number}"
        self._kinds = f"temp.layerslayer_kinds_{number}"
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=1)  # batches in flight: bounded memory
        self._error: BaseException | None = None
        self._stop = False
        try:
            self._run(f"CREATE TEMP TABLE {self._stage[5:]} ({_STAGE_COLUMNS})")
            self._run(f"CREATE TEMP TABLE {self._incoming[5:]} ({_INCOMING_COLUMNS})")
            self._run(f"CREATE TEMP TABLE {self._kinds[5:]} (path_id INTEGER PRIMARY KEY, kinds INTEGER NOT NULL)")
        except BaseException:
            self._drop()
            raise

    # -- context manager
    def __enter__(self) -> LayerWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._closed:
            self.discard()

    # -- staging
    def _run(self, sql: str, params: Any = None, many: bool = False) -> None:
        # Statements on TEMP tables: commit the implicit transaction the
        # sqlite3 module opens, so nothing stays open between batches.
        conn = self.conn
        outer = conn.in_transaction
        try:
            if many:
                conn.executemany(sql, params)
            elif params is None:
                conn.execute(sql)
            else:
                conn.execute(sql, params)
        except BaseException:
            if not outer and conn.in_transaction:
                conn.rollback()
            raise
        if not outer and conn.in_transaction:
            conn.commit()

    def add(self, entry) -> None:
        "Stage one entry."
        self.add_many((entry,))

    def add_findings(self, position: int, findings: Iterable) -> None:
        """Record secrets found in the content of the entry at ``position``
        (``secretscan.Finding``s); they commit with the layer. Findings are
        few, so they wait in memory."""
        self._findings.extend(_finding_rows(findings, self.keep_values, position=position))

    def add_many(self, entries: Iterable) -> None:
        "Stage entries (any iterable; consumed lazily)."
        if self._closed:
            raise RuntimeError("LayerWriter is closed")
        batch = self._batch
        append = batch.append
        limit = self.batch_size
        for e in entries:
            append(e)
            if len(batch) >= limit:
                self._flush()
                batch = self._batch
                append = batch.append

    def _flush(self) -> None:
        if self._error is not None:
            raise self._error
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_batches, daemon=True, name="layerslayer-writer")
            self._thread.start()
        self._hand_over((self.count, batch))
        self.count += len(batch)

    def _hand_over(self, item) -> None:
        "Queue ``item`` for the writer thread, waiting while it is busy (not after it is gone)."
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise self._error or RuntimeError("the layer writer thread stopped") from None

    def _write_batches(self) -> None:
        """The writer thread: store the batches handed over until told to stop.
        Batches that queued up while it was busy are stored together: one
        transaction for their paths instead of several."""
        get = self._queue.get
        while True:
            item = get()
            if item is None or self._stop:
                return
            last = False
            try:
                first_position, entries = item
                while not self._queue.empty():
                    item = get()
                    if item is None:
                        last = True
                        break
                    entries = entries + item[1]
                if self._error is None and not self._stop:
                    self._store_batch(first_position, entries)
            except BaseException as error:  # handed to the caller's thread
                if self._error is None:
                    self._error = error
            if last:
                return

    def _store_batch(self, first_position: int, entries: list) -> None:
        conn = self.conn
        incoming = self._incoming
        self._run(_INCOMING_INSERT.format(incoming), _entry_rows(entries), many=True)
        with write_transaction(self.db):
            before = conn.execute("SELECT ifnull(max(id), 0) FROM paths").fetchone()[0]
            # A new path has no kind until a layer with it commits (commit()):
            # a layer that fails leaves it unused and without a kind.
            conn.execute(
                f"INSERT INTO paths (path, path_bytes, name, kinds) "
                f"SELECT path, path_bytes, name, 0 FROM {incoming} WHERE true ON CONFLICT DO NOTHING"
            )
            conn.execute("INSERT INTO paths_fts (rowid, path) SELECT id, path FROM paths WHERE id > ?", [before])
        # new_kinds: the kind this entry adds to its path, if the path lacks
        # it (kinds only ever grow, so commit() need look at no other entry).
        self._run(
            f"INSERT INTO {self._stage} SELECT ? + i.rowid - 1, p.id, "
            f"CASE WHEN p.kinds & {_KIND.format('i.tw')} THEN 0 ELSE {_KIND.format('i.tw')} END, "
            "i.tw, i.size, i.mode, i.uid, i.gid, i.uname, i.gname, i.mtime, i.linkname, i.dev, i.off, i.header_size "
            f"FROM {incoming} i JOIN paths p ON p.path = i.path AND ifnull(p.path_bytes, x'') = ifnull(i.path_bytes, x'')",
            [first_position],
        )
        # ...collected per path as they come, so commit() has no sorting to do.
        self._run(
            f"INSERT INTO {self._kinds} (path_id, kinds) SELECT path_id, new_kinds FROM {self._stage} "
            "WHERE position >= ? AND new_kinds != 0 "
            "ON CONFLICT (path_id) DO UPDATE SET kinds = kinds | excluded.kinds",
            [first_position],
        )
        self._run(f"DELETE FROM {incoming}")

    def _finish_batches(self) -> None:
        "Wait for the writer thread to store what it was given (or stop it); re-raise its error."
        if self._thread is not None:
            self._hand_over(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    # -- finishing
    def commit(self, bytes_read: int | None = None, note: str | None = None) -> int:
        """Move the staged rows into the index; return the layer's entry count.

        ``note`` goes to ``layers.note`` (something unusual but not an error).

        A no-op (``skipped`` = True, returning the recorded count) when the
        layer is already ``indexed``.
        """
        if self._closed:
            raise RuntimeError("LayerWriter is closed")
        self._flush()
        self._finish_batches()
        conn = self.conn
        if conn.in_transaction:
            raise RuntimeError("LayerWriter.commit() needs a connection without an open transaction")
        staged = conn.execute(f"SELECT count(*) FROM {self._stage}").fetchone()[0]
        if staged != self.count:  # every staged row found its path: anything else is a bug
            raise RuntimeError(f"{self.count - staged} entries of layer {self.digest} lost their path while staging")
        # Every row below comes from a join with its parents, so foreign key
        # checks would only cost two lookups per entry; they are off for the
        # transaction (the pragma is a no-op inside one) and back on after.
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            return self._commit(conn, self._stage, bytes_read, note)
        finally:
            conn.execute("PRAGMA foreign_keys = ON")

    def _commit(self, conn: sqlite3.Connection, stage: str, bytes_read: int | None, note: str | None = None) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT id, status, entries FROM layers WHERE digest = ?", [self.digest]
            ).fetchone()
            if row and row[1] == "indexed":
                conn.execute("ROLLBACK")
                self.skipped = True
                self._drop()
                return row[2] or 0
            if row:
                layer_id = row[0]
            else:
                layer_id = conn.execute(
                    "INSERT INTO layers (digest, status) VALUES (?, 'pending')", [self.digest]
                ).lastrowid
            # Record the kinds (directory / not) this layer adds to its paths,
            # which fires paths_kinds_changed where a path becomes both.
            conn.execute(
                f"UPDATE paths SET kinds = paths.kinds | k.kinds FROM {self._kinds} AS k "
                "WHERE paths.id = k.path_id AND (paths.kinds | k.kinds) != paths.kinds"
            )
            conn.execute(
                "INSERT INTO entries (layer_id, position, path_id, type, size, mode, uid, gid, "
                'uname, gname, mtime, linkname, devmajor, devminor, whiteout, "offset", '
                "header_size) "
                "SELECT ?, s.position, s.path_id, s.tw & 7, s.size, s.mode, s.uid, s.gid, "
                "s.uname, s.gname, s.mtime, s.linkname, s.dev >> 32, s.dev & 4294967295, "
                "CASE WHEN s.tw BETWEEN 1 AND 7 AND p.kinds = 3 THEN 3 ELSE s.tw >> 3 END, "
                "s.off, s.header_size "
                f"FROM {stage} s JOIN paths p ON p.id = s.path_id ORDER BY s.position",
                [layer_id],
            )
            conn.execute(FILL_DELETIONS, [layer_id])
            if self.checkpoints:
                conn.execute("DELETE FROM checkpoints WHERE layer_id = ?", [layer_id])
                conn.executemany(
                    "INSERT INTO checkpoints (layer_id, uncompressed, bits, window) VALUES (?, ?, ?, ?)",
                    [(layer_id, out, bits, window) for out, bits, window in self.checkpoints],
                )
            conn.execute("DELETE FROM findings WHERE layer_id = ?", [layer_id])
            if self._findings:
                conn.executemany(_INSERT_FINDING, [(layer_id, None, *row) for row in self._findings])
            conn.execute(
                "UPDATE layers SET status = 'indexed', entries = ?, listed_via = ?, "
                "bytes_read = ?, indexed_at = ?, error = NULL, note = ?, scanned = ? WHERE id = ?",
                [self.count, self.listed_via, bytes_read, _now(), note, self.scanned, layer_id],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._drop()
        return self.count

    def discard(self) -> None:
        "Drop everything staged; the index keeps no entry of the layer."
        self._batch.clear()
        self._stop = True
        interrupted = None
        thread = self._thread
        if thread is not None:
            # Only once the writer thread is gone is the connection ours again
            # (a second Ctrl-C must not leave it running under us).
            while True:
                try:
                    try:
                        self._queue.put_nowait(None)
                    except queue.Full:
                        pass
                    thread.join(0.5)
                    if not thread.is_alive():
                        break
                except KeyboardInterrupt as error:
                    interrupted = error
            self._thread = None
        if self.conn.in_transaction:
            self.conn.rollback()
        if not self._closed:
            self._drop()
        if interrupted is not None:
            raise interrupted

    def _drop(self) -> None:
        self._closed = True
        for table in (self._stage, self._incoming, self._kinds):
            try:
                self._run(f"DROP TABLE IF EXISTS {table}")
            except sqlite3.Error:
                pass


# --------------------------------------------------------------------------
# Image config and findings of content scanning (layerslayer.secretscan)

_INSERT_FINDING = (
    "INSERT INTO findings (layer_id, platform_id, position, source, location, line, detector, "
    "fingerprint, preview, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _finding_rows(findings: Iterable, keep_values: bool, *, position=None, source="file", location=None) -> list[tuple]:
    "Rows for _INSERT_FINDING after its layer_id and platform_id."
    return [
        (position, source, location, f.line or None, f.detector, f.fingerprint, f.preview,
         _text(f.value) if keep_values else None)
        for f in findings
    ]


def layer_scanned(db, digest: str) -> int | None:
    "The size cap a layer's files were scanned with; None when not scanned (or unknown)."
    row = db.execute("SELECT scanned FROM layers WHERE digest = ?", [digest]).fetchone()
    return row[0] if row else None


def replace_layer_findings(db, digest: str, findings: Iterable[tuple[int, Any]], *, scanned: int,
                           keep_values: bool = False) -> None:
    """Record the findings of scanning an already indexed layer again
    (``(position, Finding)`` pairs) and mark it scanned with cap ``scanned``."""
    rows = [row for position, finding in findings for row in _finding_rows([finding], keep_values, position=position)]
    with write_transaction(db) as conn:
        row = conn.execute("SELECT id FROM layers WHERE digest = ? AND status = 'indexed'", [digest]).fetchone()
        if row is None:
            return
        conn.execute("DELETE FROM findings WHERE layer_id = ?", [row[0]])
        conn.executemany(_INSERT_FINDING, [(row[0], None, *r) for r in rows])
        conn.execute("UPDATE layers SET scanned = ? WHERE id = ?", [scanned, row[0]])


def replace_platform_findings(db, platform_id: int, findings: Iterable[tuple[str, str, Any]], *,
                              keep_values: bool = False) -> None:
    "Replace the config/history findings of a platform: ``(source, location, Finding)``."
    rows = []
    for source, location, finding in findings:
        rows += _finding_rows([finding], keep_values, source=source, location=_text(location))
    with write_transaction(db) as conn:
        conn.execute("DELETE FROM findings WHERE platform_id = ?", [platform_id])
        conn.executemany(_INSERT_FINDING, [(None, platform_id, *r) for r in rows])


def _json_list(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    return json.dumps([_text(v) for v in value] if isinstance(value, list) else _text(value), ensure_ascii=False)


def count_findings(db, platform_ids: Iterable[int]) -> int:
    "Findings in the files of these platforms' layers and in their configs."
    ids = sorted(set(platform_ids))
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return db.execute(
        f"SELECT (SELECT count(*) FROM findings WHERE layer_id IN "
        f"(SELECT layer_id FROM platform_layers WHERE platform_id IN ({marks}))) + "
        f"(SELECT count(*) FROM findings WHERE platform_id IN ({marks}))",
        ids + ids,
    ).fetchone()[0]


def replace_config(db, platform_id: int, config: dict) -> None:
    """Store a platform's image config (``config.config`` of the config blob):
    User, WorkingDir, Cmd, Entrypoint, StopSignal, Env, Labels, ExposedPorts.
    Values of the wrong type (hostile configs) are stored as text."""
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict):
        inner = {}
    env = inner.get("Env") if isinstance(inner.get("Env"), list) else []
    labels = inner.get("Labels") if isinstance(inner.get("Labels"), dict) else {}
    ports = inner.get("ExposedPorts") if isinstance(inner.get("ExposedPorts"), dict) else {}
    optional = lambda key: None if inner.get(key) in (None, "") else _text(inner.get(key))  # noqa: E731
    with write_transaction(db) as conn:
        for table in ("config", "config_env", "config_labels", "config_ports"):
            conn.execute(f"DELETE FROM {table} WHERE platform_id = ?", [platform_id])
        conn.execute(
            "INSERT INTO config (platform_id, user, working_dir, cmd, entrypoint, stop_signal) VALUES (?, ?, ?, ?, ?, ?)",
            [platform_id, optional("User"), optional("WorkingDir"), _json_list(inner.get("Cmd")),
             _json_list(inner.get("Entrypoint")), optional("StopSignal")],
        )
        conn.executemany(
            "INSERT INTO config_env (platform_id, position, name, value) VALUES (?, ?, ?, ?)",
            [(platform_id, n, _text(str(e).partition("=")[0]), _text(str(e).partition("=")[2]) if "=" in str(e) else None)
             for n, e in enumerate(env)],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO config_labels (platform_id, name, value) VALUES (?, ?, ?)",
            [(platform_id, _text(k), _text(v)) for k, v in labels.items()],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO config_ports (platform_id, port) VALUES (?, ?)",
            [(platform_id, _text(p)) for p in ports],
        )


# --------------------------------------------------------------------------
# Reporting


_FTS_SHADOW_SUFFIXES = ("_data", "_idx", "_docsize", "_config", "_content")


def schema_text(db) -> str:
    """The schema as SQL: each table followed by its indexes and triggers,
    then the views, in creation order. FTS shadow tables, SQLite's internal
    tables and the migrations bookkeeping table are left out."""
    rows = db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE sql IS NOT NULL ORDER BY rowid"
    ).fetchall()
    fts = {r[1] for r in rows if r[0] == "table" and "VIRTUAL TABLE" in r[3].upper()}
    skip = {migrations.migrations_table}

    def hidden(table_name: str) -> bool:
        if table_name in skip or table_name.startswith("sqlite_"):
            return True
        return any(
            table_name == f + suffix for f in fts for suffix in _FTS_SHADOW_SUFFIXES
        )

    out = []
    for type_, name, _, sql in rows:
        if type_ != "table" or hidden(name):
            continue
        out.append(sql.strip() + ";")
        for t2, _, tbl2, sql2 in rows:
            if t2 in ("index", "trigger") and tbl2 == name:
                out.append(sql2.strip() + ";")
    for type_, _, _, sql in rows:
        if type_ == "view":
            out.append(sql.strip() + ";")
    return "\n\n".join(out) + "\n"


def stats(db) -> dict[str, int]:
    """Counts for a summary line: images, platforms (not attestations),
    layers (all / indexed / failed), files (entry rows) and distinct paths."""
    one = lambda sql: db.execute(sql).fetchone()[0] or 0  # noqa: E731
    return {
        "images": one("SELECT count(*) FROM images"),
        "platforms": one("SELECT count(*) FROM platforms WHERE attestation = 0"),
        "layers": one("SELECT count(*) FROM layers"),
        "layers_indexed": one("SELECT count(*) FROM layers WHERE status = 'indexed'"),
        "layers_failed": one("SELECT count(*) FROM layers WHERE status = 'failed'"),
        "files": one("SELECT sum(entries) FROM layers WHERE status = 'indexed'"),
        "paths": one("SELECT max(id) FROM paths"),
    }


def optimize(db) -> None:
    """Checkpoint the WAL and drop planner statistics, if any.

    The views and the queries of ``query.py`` and ``find.py`` are written for SQLite's
    default estimates (join orders forced where it matters). Statistics
    gathered with ``ANALYZE`` - the approximate ``PRAGMA analysis_limit`` kind
    especially - were measured to turn a 6 ms ``etc/ssh/*`` lookup on 5M rows
    into 1.9 s, so none are kept."""
    with write_transaction(db) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            conn.execute("DELETE FROM sqlite_stat1")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
