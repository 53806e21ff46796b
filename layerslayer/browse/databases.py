"""Which of Datasette's databases are layerslayer indexes, and whether a
request may read one: every hook asks this before it adds anything, so other
databases in the same Datasette are left alone."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse

from datasette.utils.asgi import Response

#: How the schema marks a layerslayer index (sqlite-utils Migrations("layerslayer")).
MIGRATIONS_TABLE = "_sqlite_migrations"
MIGRATION_SET = "layerslayer"

_index_cache: dict[tuple[int, str, str], tuple[bool, float]] = {}
_index_lock = threading.Lock()
NEGATIVE_TTL = 2.0  # a database may become an index while Datasette runs (`index` into it)


def file_is_index(path) -> bool:
    "True when the SQLite file at ``path`` holds a layerslayer index (opened read-only)."
    uri = "file:" + urllib.parse.quote(os.fspath(path)) + "?mode=ro"
    # immutable=1: a WAL index on a read-only file system opens no other way.
    return any(_uri_is_index(u) for u in (uri, uri + "&immutable=1"))


def _uri_is_index(uri: str) -> bool:
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error:
        return False
    try:
        conn.execute("PRAGMA busy_timeout = 2000")
        row = conn.execute(
            f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{MIGRATIONS_TABLE}'"
        ).fetchone()
        if not row:
            return False
        return conn.execute(
            f"SELECT 1 FROM [{MIGRATIONS_TABLE}] WHERE migration_set = ? LIMIT 1", [MIGRATION_SET]
        ).fetchone() is not None
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def is_index(datasette, database: str | None) -> bool:
    "Is Datasette's database ``database`` a layerslayer index? (cached; cheap)"
    if not database:
        return False
    db = datasette.databases.get(database)
    if db is None or db.is_memory or not db.path:
        return False
    key = (id(datasette), database, str(db.path))
    now = time.monotonic()
    with _index_lock:
        cached = _index_cache.get(key)
    if cached and (cached[0] or now - cached[1] < NEGATIVE_TTL):
        return cached[0]
    answer = file_is_index(db.path)
    with _index_lock:
        _index_cache[key] = (answer, now)
    return answer


def index_databases(datasette) -> list[str]:
    return [name for name in list(datasette.databases) if is_index(datasette, name)]


async def check_access(request, datasette, database: str, table: str) -> Response | None:
    """None when the request may read ``table`` of the index ``database``; else
    the 404 to answer (Datasette raises Forbidden itself when permission is refused)."""
    if database not in datasette.databases or not is_index(datasette, database):
        return Response.html("Not a layerslayer index", status=404)
    await datasette.ensure_permissions(
        request.actor, [("view-table", (database, table)), ("view-database", database), "view-instance"]
    )
    return None
