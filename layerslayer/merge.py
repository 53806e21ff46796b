"""Merging indexes: the shards of a crawl (``layerslayer merge``, and
``crawl`` when its workers write shards) into one index.

Next to :mod:`layerslayer.store`, whose write transaction and derived-row
rules it uses, this is the only module that writes SQL.
"""

from __future__ import annotations

import os
import sqlite3

from .errors import LayerslayerError
from .migrations import migrations
from .store import FILL_DELETIONS, NotAnIndex, write_transaction

__all__ = ["MergeError", "merge_index"]


class MergeError(LayerslayerError):
    "A shard that cannot be merged (another schema version, a table we do not know)."

    exit_code = 2


#: Tables merge_index() knows; any other table of the shard is copied
#: generically (see _merge_extra_table) when its foreign keys point at these.
_MERGE_KNOWN = {
    "images", "platforms", "history", "layers", "layer_sources", "platform_layers",
    "paths", "paths_fts", "entries", "deletions",
}
#: Id maps built while merging: table -> temp map (old id in the shard -> new id here).
_MERGE_MAPS = {"images": "merge_images", "platforms": "merge_platforms", "layers": "merge_layers", "paths": "merge_paths"}
_STATUS_RANK = "CASE {} WHEN 'foreign' THEN 0 WHEN 'pending' THEN 1 WHEN 'failed' THEN 2 ELSE 3 END"


def _applied_migrations(conn: sqlite3.Connection, schema: str) -> list[str]:
    table = migrations.migrations_table
    try:
        return sorted(r[0] for r in conn.execute(
            f"SELECT name FROM {schema}.[{table}] WHERE migration_set = ?", [migrations.name]))
    except sqlite3.DatabaseError:
        return []


def merge_index(db, shard_path) -> dict[str, int]:
    """Merge the index at ``shard_path`` into ``db``; return counts of what was added.

    Rows are matched by what they mean, never by id: images by (registry,
    repository, tag, digest), platforms by their image and manifest digest,
    layers by digest, paths by their bytes. A layer's entries are copied
    only if the shard indexed it and ``db`` has not: a layer is never copied
    twice, so merging is idempotent and shards may overlap. Derived rows
    (the ``whiteout = 3`` flags, ``deletions``, ``paths.kinds``, the FTS
    index) are rebuilt here exactly as ``LayerWriter`` builds them, so the
    result is the index one process would have built. Each shard merges in
    one transaction: an interrupted merge leaves it wholly merged or not at
    all, and running the merge again finishes the job. A shard written by
    another schema version (other migrations applied) is refused.
    """
    name = os.fspath(shard_path)
    if not os.path.isfile(name):
        raise NotAnIndex(f"No layerslayer index at {name}")
    conn: sqlite3.Connection = db.conn
    main_file = conn.execute("PRAGMA database_list").fetchone()[2]
    if main_file and os.path.exists(main_file) and os.path.samefile(main_file, name):
        raise MergeError(f"{name} is the index being merged into")
    if conn.in_transaction:
        raise RuntimeError("merge_index() needs a connection without an open transaction")
    try:
        conn.execute("ATTACH DATABASE ? AS shard", [name])
    except sqlite3.DatabaseError as e:
        raise NotAnIndex(f"Cannot open {name}: {e}") from None
    try:
        try:
            shard_tables = {r[0]: r[1] for r in conn.execute("SELECT name, sql FROM shard.sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            raise NotAnIndex(f"{name} is not a layerslayer index (not an SQLite database)") from None
        ours, theirs = _applied_migrations(conn, "main"), _applied_migrations(conn, "shard")
        if not theirs:
            raise NotAnIndex(f"{name} is not a layerslayer index")
        if ours != theirs:
            newer = sorted(set(theirs) - set(ours))
            raise MergeError(
                f"{name} has another schema version than the index it is merged into "
                + (f"(it has migrations this layerslayer does not know: {', '.join(newer)[:200]})" if newer
                   else f"(older: upgrade it first with Index({name!r}).upgrade())")
            )
        conn.execute("PRAGMA foreign_keys = OFF")  # every row below comes from a join with its parents
        try:
            with write_transaction(db):
                counts = _merge_attached(conn, shard_tables)
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
            for table in _MERGE_MAPS.values():
                conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
            conn.execute("DROP TABLE IF EXISTS temp.merge_copy")
    finally:
        conn.execute("DETACH DATABASE shard")
    return counts


def _merge_attached(conn: sqlite3.Connection, shard_tables: dict[str, str]) -> dict[str, int]:
    one = lambda sql, params=(): conn.execute(sql, params).fetchone()[0]  # noqa: E731
    counts = {}
    # images
    counts["images"] = conn.execute(
        "INSERT INTO images (registry, repository, tag, reference, digest, media_type, indexed_at) "
        "SELECT registry, repository, tag, reference, digest, media_type, indexed_at FROM shard.images s "
        "WHERE NOT EXISTS (SELECT 1 FROM images m WHERE m.registry = s.registry AND m.repository = s.repository "
        "AND m.tag IS s.tag AND m.digest = s.digest) ORDER BY id"
    ).rowcount
    conn.execute("CREATE TEMP TABLE merge_images (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
    conn.execute(
        "INSERT INTO temp.merge_images SELECT s.id, m.id FROM shard.images s JOIN images m "
        "ON m.registry = s.registry AND m.repository = s.repository AND m.tag IS s.tag AND m.digest = s.digest"
    )
    # platforms
    counts["platforms"] = conn.execute(
        "INSERT INTO platforms (image_id, manifest_digest, media_type, os, architecture, variant, platform, "
        "config_digest, created, attestation) "
        "SELECT mi.new, s.manifest_digest, s.media_type, s.os, s.architecture, s.variant, s.platform, "
        "s.config_digest, s.created, s.attestation FROM shard.platforms s JOIN temp.merge_images mi ON mi.old = s.image_id "
        "WHERE NOT EXISTS (SELECT 1 FROM platforms m WHERE m.image_id = mi.new AND m.manifest_digest = s.manifest_digest) "
        "ORDER BY s.id"
    ).rowcount
    conn.execute("CREATE TEMP TABLE merge_platforms (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
    conn.execute(
        "INSERT INTO temp.merge_platforms SELECT s.id, m.id FROM shard.platforms s "
        "JOIN temp.merge_images mi ON mi.old = s.image_id "
        "JOIN platforms m ON m.image_id = mi.new AND m.manifest_digest = s.manifest_digest"
    )
    # A platform first recorded without its config (not loaded) gains it, as upsert_platform does.
    conn.execute(
        "UPDATE platforms SET config_digest = coalesce(platforms.config_digest, s.config_digest), "
        "created = coalesce(platforms.created, s.created), media_type = coalesce(platforms.media_type, s.media_type) "
        "FROM temp.merge_platforms mp JOIN shard.platforms s ON s.id = mp.old WHERE platforms.id = mp.new"
    )
    conn.execute(
        "INSERT OR IGNORE INTO history (platform_id, position, created, created_by, comment, empty_layer, layer_position) "
        "SELECT mp.new, h.position, h.created, h.created_by, h.comment, h.empty_layer, h.layer_position "
        "FROM shard.history h JOIN temp.merge_platforms mp ON mp.old = h.platform_id"
    )
    # layers: new ones arrive unindexed; their entries are copied below.
    counts["layers"] = conn.execute(
        "INSERT INTO layers (digest, media_type, size, urls, status, error) "
        "SELECT digest, media_type, size, urls, CASE status WHEN 'indexed' THEN 'pending' ELSE status END, "
        "CASE status WHEN 'failed' THEN error END FROM shard.layers s "
        "WHERE NOT EXISTS (SELECT 1 FROM layers m WHERE m.digest = s.digest) ORDER BY id"
    ).rowcount
    conn.execute("CREATE TEMP TABLE merge_layers (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
    conn.execute("INSERT INTO temp.merge_layers SELECT s.id, m.id FROM shard.layers s JOIN layers m ON m.digest = s.digest")
    rank = _STATUS_RANK.format
    conn.execute(
        "UPDATE layers SET media_type = coalesce(layers.media_type, s.media_type), size = coalesce(layers.size, s.size), "
        "urls = coalesce(layers.urls, s.urls), "
        f"status = CASE WHEN layers.status != 'indexed' AND s.status != 'indexed' AND {rank('s.status')} > {rank('layers.status')} "
        "THEN s.status ELSE layers.status END, "
        f"error = CASE WHEN layers.status != 'indexed' AND s.status = 'failed' AND {rank('layers.status')} <= 2 THEN s.error ELSE layers.error END "
        "FROM temp.merge_layers ml JOIN shard.layers s ON s.id = ml.old WHERE layers.id = ml.new"
    )
    conn.execute(
        "INSERT OR IGNORE INTO layer_sources (layer_id, registry, repository) "
        "SELECT ml.new, s.registry, s.repository FROM shard.layer_sources s JOIN temp.merge_layers ml ON ml.old = s.layer_id"
    )
    conn.execute(
        "INSERT OR IGNORE INTO platform_layers (platform_id, position, layer_id) "
        "SELECT mp.new, s.position, ml.new FROM shard.platform_layers s "
        "JOIN temp.merge_platforms mp ON mp.old = s.platform_id JOIN temp.merge_layers ml ON ml.old = s.layer_id"
    )
    # The layers whose listing comes from this shard.
    conn.execute(
        "CREATE TEMP TABLE merge_copy AS SELECT s.id AS old, ml.new AS new FROM shard.layers s "
        "JOIN temp.merge_layers ml ON ml.old = s.id JOIN layers m ON m.id = ml.new "
        "WHERE s.status = 'indexed' AND m.status != 'indexed' ORDER BY s.id"
    )
    # paths those layers use, with their FTS rows (as LayerWriter adds them: kinds 0 first)
    before = one("SELECT ifnull(max(id), 0) FROM paths")
    conn.execute(
        "INSERT INTO paths (path, path_bytes, name, kinds) SELECT p.path, p.path_bytes, p.name, 0 FROM shard.paths p "
        "WHERE p.id IN (SELECT e.path_id FROM shard.entries e JOIN temp.merge_copy c ON e.layer_id = c.old) "
        "ORDER BY p.id ON CONFLICT DO NOTHING"
    )
    conn.execute("INSERT INTO paths_fts (rowid, path) SELECT id, path FROM paths WHERE id > ?", [before])
    conn.execute("CREATE TEMP TABLE merge_paths (old INTEGER PRIMARY KEY, new INTEGER NOT NULL, kinds INTEGER NOT NULL)")
    conn.execute(
        "INSERT INTO temp.merge_paths SELECT p.id, m.id, p.kinds FROM shard.paths p "
        "JOIN paths m ON m.path = p.path AND ifnull(m.path_bytes, x'') = ifnull(p.path_bytes, x'') "
        "WHERE p.id IN (SELECT e.path_id FROM shard.entries e JOIN temp.merge_copy c ON e.layer_id = c.old)"
    )
    # Kinds only grow; where a path becomes both a directory and not, the
    # paths_kinds_changed trigger flags the entries already here...
    conn.execute(
        "UPDATE paths SET kinds = paths.kinds | mp.kinds FROM temp.merge_paths mp "
        "WHERE paths.id = mp.new AND (paths.kinds | mp.kinds) != paths.kinds"
    )
    # ...and the entries copied now get the same flag as they arrive.
    counts["files"] = conn.execute(
        "INSERT INTO entries (layer_id, position, path_id, type, size, mode, uid, gid, uname, gname, mtime, linkname, "
        'devmajor, devminor, whiteout, "offset", header_size) '
        "SELECT c.new, e.position, mp.new, e.type, e.size, e.mode, e.uid, e.gid, e.uname, e.gname, e.mtime, e.linkname, "
        "e.devmajor, e.devminor, CASE WHEN e.type != 0 AND e.whiteout = 0 AND p.kinds = 3 THEN 3 ELSE e.whiteout END, "
        'e."offset", e.header_size FROM temp.merge_copy c JOIN shard.entries e ON e.layer_id = c.old '
        "JOIN temp.merge_paths mp ON mp.old = e.path_id JOIN paths p ON p.id = mp.new ORDER BY c.new, e.position"
    ).rowcount
    copied = [r[0] for r in conn.execute("SELECT new FROM temp.merge_copy")]
    for layer_id in copied:
        conn.execute(FILL_DELETIONS, [layer_id])
    conn.execute(
        "UPDATE layers SET status = 'indexed', entries = s.entries, listed_via = s.listed_via, bytes_read = s.bytes_read, "
        "indexed_at = s.indexed_at, error = NULL, note = s.note, scanned = s.scanned "
        "FROM temp.merge_copy c JOIN shard.layers s ON s.id = c.old WHERE layers.id = c.new"
    )
    counts["layers_indexed"] = len(copied)
    for table in sorted(set(shard_tables) - _MERGE_KNOWN):
        if table.startswith("sqlite_") or table == migrations.migrations_table or table.startswith("paths_fts_"):
            continue
        _merge_extra_table(conn, table, shard_tables[table])
    return counts


def _merge_extra_table(conn: sqlite3.Connection, table: str, sql: str | None) -> None:
    """Copy a table this code does not know (added by a later migration, e.g.
    findings) by its foreign keys: ids of images, platforms, layers and paths
    are translated; rows tied to a layer come only with that layer's listing."""
    if sql and "VIRTUAL TABLE" in sql.upper():
        raise MergeError(f"merge does not know how to merge the virtual table {table}")
    columns = [r[1] for r in conn.execute(f"PRAGMA shard.table_info([{table}])")]
    pk = [r[1] for r in conn.execute(f"PRAGMA shard.table_info([{table}])") if r[5]]
    fks = {r[3]: r[2] for r in conn.execute(f"PRAGMA shard.foreign_key_list([{table}])")}
    unknown = {col: parent for col, parent in fks.items() if parent not in _MERGE_MAPS}
    if unknown:
        raise MergeError(f"merge does not know how to merge table {table} (it refers to {', '.join(sorted(set(unknown.values())))})")
    # An INTEGER PRIMARY KEY is a fresh rowid here.
    keep = [c for c in columns if not (pk == [c] and c == "id")]
    select, joins, wheres = [], [], []
    for i, col in enumerate(keep):
        parent = fks.get(col)
        if parent is None:
            select.append(f"s.[{col}]")
            continue
        alias = f"m{i}"
        source = "temp.merge_copy" if parent == "layers" else f"temp.{_MERGE_MAPS[parent]}"
        # A NULL reference stays NULL (a finding is tied to a layer or to a
        # platform); a set one must be translated, or the row does not come.
        joins.append(f"LEFT JOIN {source} {alias} ON {alias}.old = s.[{col}]")
        wheres.append(f"(s.[{col}] IS NULL OR {alias}.new IS NOT NULL)")
        select.append(f"{alias}.new")
    conn.execute(
        f"INSERT OR IGNORE INTO main.[{table}] ({', '.join(f'[{c}]' for c in keep)}) "
        f"SELECT {', '.join(select)} FROM shard.[{table}] s {' '.join(joins)}"
        + (f" WHERE {' AND '.join(wheres)}" if wheres else "")
    )
