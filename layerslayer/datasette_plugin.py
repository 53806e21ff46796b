"""Datasette plugin for layerslayer indexes: ``layerslayer browse`` (or a plain
``datasette index.db``, through the ``datasette`` entry point) shows the index
as a recon tool rather than a table dump.

What it adds, only to databases that are layerslayer indexes (recognised by
their migrations record; other databases in the same Datasette are left
alone):

* metadata (``get_metadata``): title, descriptions of every table, view and
  column people see, label columns, default sorts, facets (image, platform,
  type, file extension) and path search;
* canned queries (``canned_queries``): files by glob, the secrets preset,
  ghost files, largest files, shared layers, images that contain a path;
* cells (``render_cell``): short digests with the full value on hover, human
  sizes, ``-rwxr-xr-x`` modes, ISO 8601 times, links file -> layer -> image;
* the layer and image row pages (``extra_template_vars`` + ``templates/row.html``):
  which images use a layer and the exact ``layerslayer save`` / ``extract``
  commands that fetch it; an image's layers, per platform;
* SQL functions (``prepare_connection``) for the queries, with ``find``'s
  pattern rules (``layerslayer.patterns``);
* read-only connections: ``PRAGMA query_only`` on every index connection.
"""

from __future__ import annotations

import copy
import functools
import html
import json
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path

import markupsafe
from datasette import hookimpl
from datasette.database import QueryInterrupted
from datasette.facets import Facet
from datasette.utils import escape_sqlite, path_with_added_args, path_with_removed_args
from datasette.utils.asgi import Response

from . import display
from .patterns import compile_patterns
from .store import path_from_row

TEMPLATES_DIR = str(Path(__file__).resolve().parent / "templates")

#: How the schema marks a layerslayer index (sqlite-utils Migrations("layerslayer")).
MIGRATIONS_TABLE = "_sqlite_migrations"
MIGRATION_SET = "layerslayer"

DIGEST_COLUMNS = {"digest", "layer_digest", "image_digest", "manifest_digest", "config_digest"}
SIZE_COLUMNS = {"size", "bytes_read", "total_size"}

# ---------------------------------------------------------------------------
# Which databases are indexes

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


# ---------------------------------------------------------------------------
# SQL functions


def _truthy(value) -> bool:
    return bool(value) and str(value).strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=256)
def _matcher(pattern: str, ignore_case: bool):
    try:
        return compile_patterns([pattern], ignore_case=ignore_case)
    except (ValueError, re.error):  # a malformed glob matches nothing (page_notice says why)
        return None


@functools.lru_cache(maxsize=16)
def _preset_matcher(name: str):
    try:
        return compile_patterns(preset_patterns(name), ignore_case=True)
    except (ImportError, AttributeError, KeyError, ValueError):
        return None


def _usable(pattern) -> bool:
    return isinstance(pattern, str) and bool(pattern.strip("/ "))


def _sql_match(pattern, path, path_bytes=None, ignore_case=0):
    """layerslayer_match(pattern, path[, path_bytes[, ignore_case]]): 1 when the
    path (its real bytes when path_bytes is set) matches the `find` pattern."""
    if not _usable(pattern) or path is None:
        return None
    matcher = _matcher(pattern, _truthy(ignore_case))
    if matcher is None:
        return None
    return 1 if matcher(path_from_row(path, path_bytes)) else 0


def _sql_preset(name, path, path_bytes=None):
    "layerslayer_preset(name, path[, path_bytes]): 1 when a pattern of `find --preset name` matches."
    matcher = _preset_matcher(str(name))
    if matcher is None or path is None:
        return None
    return 1 if matcher(path_from_row(path, path_bytes)) else 0


@functools.lru_cache(maxsize=256)
def plan_keys(pattern: str, ignore_case: bool = False) -> dict:
    """The keys of `find`'s plan for one pattern (``query.plan_pattern``), by the
    branch of :data:`CANDIDATES_SQL` that uses them; {} for an unusable pattern.

    name / name-i / path: exact B-tree lookups; path>= path< / name>= name< /
    name-i>= name-i<: ranges; trigram: a MATCH on paths_fts; scan: every path,
    narrowed by scan-name / scan-path LIKEs.
    """
    from .query import plan_pattern

    try:
        plan = plan_pattern(pattern, ignore_case)
    except ValueError:
        return {}
    method, params = plan.method, plan.params
    column = "path" if "WHERE path" in plan.sql else "name"
    if method in ("name", "path", "name-i", "trigram") and len(params) == 1:
        return {method: params[0]}
    if method in ("prefix", "prefix-i") and params:
        key = column if method == "prefix" else "name-i"
        return {f"{key}>=": params[0], f"{key}<": params[1] if len(params) > 1 else b""}
    if method == "scan" and len(params) == 1:
        return {"scan": 1, f"scan-{column}": params[0]}
    return {"scan": 1, "scan-path": "%"}


def _sql_plan(pattern, part, ignore_case=0):
    "layerslayer_plan(pattern, part[, ignore_case]): the key of one plan branch, NULL when unused."
    if not _usable(pattern):
        return None
    return plan_keys(pattern, _truthy(ignore_case)).get(part)


def _sql_path(text):
    "layerslayer_path(text): a path as the index stores it (no leading / or ./, no trailing /)."
    if not isinstance(text, str):
        return None
    path = text.strip()
    while path.startswith(("/", "./")):
        path = path[1:] if path.startswith("/") else path[2:]
    return path.rstrip("/") or None


def _sql_ext(name):
    "layerslayer_ext(name): the file extension in lower case, without the dot (NULL if none)."
    if not isinstance(name, str):
        return None
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext or "/" in ext or len(ext) > 16:
        return None
    return ext.lower()


def _sql_mode(type_, mode):
    "layerslayer_mode(type, mode): '-rwxr-xr-x'."
    if mode is None:
        return None
    try:
        return display.format_mode(int(mode), type_)
    except (TypeError, ValueError):
        return None


def ghost_extract_command(registry, repository, tag, digest, media_type, platform, position, path,
                          path_bytes=None) -> str | None:
    """layerslayer_extract_command(...): the `layerslayer extract` command that
    writes this one file from its layer (deleted files included, as --layer
    reads them), pinned to the image digest indexed."""
    if not (registry and repository and digest and isinstance(path, str)) or position is None:
        return None
    reference = display.pinned_reference(registry, repository, tag, digest)
    pattern = display.exact_pattern(path_from_row(path, path_bytes))
    chosen = platform if display.is_multi_platform(media_type) else None
    command = display.extract_command(reference, int(position), pattern, chosen)
    return command if command.isprintable() else None  # nothing to paste that a terminal would act on


def trigram_escape_fts(query) -> str:
    """A MATCH expression for the trigram index of paths (Datasette's search box).

    The index is ``detail=none``: it answers single trigrams but no phrases,
    so each search word becomes its trigrams AND-ed: a path matches when it
    holds every trigram of every word (case-insensitive). Words shorter than
    three characters cannot be looked up and are left out.
    """
    words = [w.strip('"') for w in str(query or "").split()]
    terms = []
    for word in words:
        grams = []
        for i in range(len(word) - 2):
            gram = word[i : i + 3].replace('"', '""')
            if f'"{gram}"' not in grams:
                grams.append(f'"{gram}"')
        terms.extend(grams)
    if not terms:
        return '"\x01\x01\x01"'  # no trigram to look for: match nothing
    return " AND ".join(terms)


@hookimpl(trylast=True)
def prepare_connection(conn, database, datasette):
    conn.create_function("layerslayer_match", -1, _sql_match, deterministic=True)
    conn.create_function("layerslayer_preset", -1, _sql_preset, deterministic=True)
    conn.create_function("layerslayer_plan", -1, _sql_plan, deterministic=True)
    conn.create_function("layerslayer_path", 1, _sql_path, deterministic=True)
    conn.create_function("layerslayer_ext", 1, _sql_ext, deterministic=True)
    conn.create_function("layerslayer_mode", 2, _sql_mode, deterministic=True)
    conn.create_function("layerslayer_extract_command", 9, ghost_extract_command, deterministic=True)
    if is_index(datasette, database):
        # Datasette's search box quotes words as FTS phrases, which a detail=none
        # trigram index cannot answer; this runs after Datasette's own
        # escape_fts (trylast) and replaces it on index connections only.
        conn.create_function("escape_fts", 1, trigram_escape_fts, deterministic=True)
        conn.execute("PRAGMA query_only = 1")


# ---------------------------------------------------------------------------
# Canned queries

# Columns every file listing shows, from a row ``f`` of image_files, and
# whether the entry is in the image's final filesystem.
FILE_COLUMNS = """
    f.path,
    f.type,
    f.size,
    f.mode,
    f.image,
    f.platform,
    f.layer_position AS layer,
    f.uid,
    f.gid,
    f.mtime,
    f.linkname,
    CASE
        WHEN EXISTS (SELECT 1 FROM visible_files v WHERE v.platform_id = f.platform_id
                     AND v.layer_id = f.layer_id AND v.position = f.position) THEN 'visible'
        WHEN EXISTS (SELECT 1 FROM ghost_files g WHERE g.platform_id = f.platform_id
                     AND g.layer_id = f.layer_id AND g.position = f.position) THEN 'deleted'
        ELSE 'overwritten'
    END AS state,
    f.layer_digest"""

FILE_ORDER = "ORDER BY f.image, f.platform, f.layer_position, f.path"

# Pattern queries stream their rows path by path, unsorted: a pattern such as
# *.py can match millions of entries, and sorting them (with their state)
# before the first 1,000 are shown takes a minute where streaming takes a
# second (5 million entries, 1 million paths).
STREAM_NOTE = "-- rows come path by path (unsorted), so broad patterns answer quickly"

IMAGE_FILTER = "(:image = '' OR instr(f.image, :image) > 0)"


#: How a pattern matches, in one sentence for people (the start page's find box, the glob query).
GLOB_HINT_HTML = (
    "A word without <code>* ? [</code> is an exact file name (<code>id_rsa</code> finds files "
    "named exactly that); <code>*key*</code> finds names containing <code>key</code>; with a "
    "<code>/</code> the pattern matches the whole path (<code>/etc/ssh/*</code>)."
)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def preset_patterns(name: str) -> list[str]:
    "The patterns of `find --preset NAME` (layerslayer.presets, through query.py: one source of truth)."
    from .query import preset_patterns as patterns_of

    return patterns_of(name)


def _inline(sql: str, params) -> str:
    "A plan's SQL with its parameters written in as literals."
    for param in params:
        literal = _sql_literal(param) if isinstance(param, str) else f"x'{bytes(param).hex()}'"
        sql = sql.replace("?", literal, 1)
    return sql


def secrets_sql(patterns: list[str]) -> str:
    """The secrets preset as one query: each pattern's candidate paths come from
    the plan `find` uses for it (``query.plan_pattern``, case-insensitive like
    the preset), and every candidate is checked with `find`'s matcher."""
    from .query import plan_pattern

    lookups = []
    for pattern in patterns:
        plan = plan_pattern(pattern, True)
        lookups.append(f"        SELECT id FROM ({_inline(plan.sql, plan.params)})  -- {pattern}")
    union = "\n        UNION\n".join(lookups)
    return f"""-- find --preset secrets ({len(lookups)} patterns, case-insensitive)
SELECT{FILE_COLUMNS}
FROM image_files f
WHERE f.whiteout = 0
  AND {IMAGE_FILTER}
  AND f.path_id IN (
    SELECT c.id FROM (
{union}
    ) c
    JOIN paths p ON p.id = c.id
    WHERE layerslayer_preset('secrets', p.path, p.path_bytes)
  )
{STREAM_NOTE}"""


#: Candidate paths for :pattern, by the plan `find` picks (each branch but one
#: looks up NULL, which costs nothing): a superset, checked exactly afterwards.
CANDIDATES_SQL = """
        SELECT id FROM paths WHERE name = layerslayer_plan(:pattern, 'name', :ignore_case)
        UNION ALL
        SELECT id FROM paths WHERE name = layerslayer_plan(:pattern, 'name-i', :ignore_case) COLLATE NOCASE
        UNION ALL
        SELECT id FROM paths WHERE path = layerslayer_plan(:pattern, 'path', :ignore_case)
        UNION ALL
        SELECT id FROM paths WHERE path >= layerslayer_plan(:pattern, 'path>=', :ignore_case)
                               AND path < layerslayer_plan(:pattern, 'path<', :ignore_case)
        UNION ALL
        SELECT id FROM paths WHERE name >= layerslayer_plan(:pattern, 'name>=', :ignore_case)
                               AND name < layerslayer_plan(:pattern, 'name<', :ignore_case)
        UNION ALL
        SELECT id FROM paths WHERE name >= layerslayer_plan(:pattern, 'name-i>=', :ignore_case) COLLATE NOCASE
                               AND name < layerslayer_plan(:pattern, 'name-i<', :ignore_case) COLLATE NOCASE
        UNION ALL
        SELECT rowid FROM paths_fts WHERE layerslayer_plan(:pattern, 'trigram', :ignore_case) IS NOT NULL
                                      AND paths_fts MATCH layerslayer_plan(:pattern, 'trigram', :ignore_case)
        UNION ALL
        SELECT id FROM paths WHERE layerslayer_plan(:pattern, 'scan', :ignore_case) IS NOT NULL
                               AND (name LIKE layerslayer_plan(:pattern, 'scan-name', :ignore_case)
                                    OR path LIKE layerslayer_plan(:pattern, 'scan-path', :ignore_case)
                                    OR path_bytes IS NOT NULL)"""


GLOB_SQL = f"""-- :pattern follows `layerslayer find`: without "/" it matches the file name,
-- with "/" the whole path (leading "/" optional); * ? [...] globs, case-sensitive
-- unless :ignore_case is 1 (find -i).
-- Candidate paths come from the plan `find` picks, then `find`'s matcher checks each.
SELECT{FILE_COLUMNS}
FROM image_files f
WHERE f.whiteout = 0
  AND {IMAGE_FILTER}
  AND f.path_id IN (
    SELECT c.id FROM ({CANDIDATES_SQL}
    ) c
    JOIN paths p ON p.id = c.id
    WHERE layerslayer_match(:pattern, p.path, p.path_bytes, :ignore_case)
  )
{STREAM_NOTE}"""


GHOST_SQL = """SELECT
    g.path,
    g.type,
    g.size,
    g.mode,
    g.image,
    g.platform,
    g.layer_position AS layer,
    g.deleted_in_position AS deleted_in_layer,
    layerslayer_extract_command(i.registry, i.repository, i.tag, i.digest, i.media_type, g.platform,
                                g.layer_position, g.path, g.path_bytes) AS extract,
    g.deleted_by,
    g.recreated,
    g.mtime,
    g.layer_digest
FROM ghost_files g
JOIN images i ON i.id = g.image_id
WHERE (:image = '' OR instr(g.image, :image) > 0)
ORDER BY g.image, g.platform, g.layer_position, g.path"""

LARGEST_SQL = f"""-- the biggest regular files first; a layer shared by several images shows once per image
WITH biggest AS (
    SELECT e.layer_id, e.position
    FROM entries e
    WHERE e.type = 1 AND e.whiteout != 1
      AND (:image = '' OR e.layer_id IN (
          SELECT il.layer_id FROM image_layers il WHERE instr(il.image, :image) > 0))
    ORDER BY e.size DESC
    LIMIT 200
)
SELECT{FILE_COLUMNS}
FROM biggest b
JOIN image_files f ON f.layer_id = b.layer_id AND f.position = b.position
WHERE {IMAGE_FILTER}
ORDER BY f.size DESC, f.image, f.platform, f.layer_position"""

SHARED_SQL = """SELECT
    l.digest AS layer_digest,
    l.size,
    l.status,
    l.entries,
    count(DISTINCT pf.image_id) AS image_count,
    json_group_array(DISTINCT i.reference) AS images
FROM layers l
JOIN platform_layers pl ON pl.layer_id = l.id
JOIN platforms pf ON pf.id = pl.platform_id
JOIN images i ON i.id = pf.image_id
WHERE (:image = '' OR l.id IN (
    SELECT il.layer_id FROM image_layers il WHERE instr(il.image, :image) > 0))
GROUP BY l.id
HAVING count(DISTINCT pf.image_id) > 1
ORDER BY image_count DESC, l.size DESC"""

IMAGES_WITH_PATH_SQL = f"""-- :path is an exact path inside the image; a leading "/" is optional
SELECT{FILE_COLUMNS}
FROM image_files f
WHERE f.whiteout = 0
  AND f.path_id IN (SELECT p.id FROM paths p WHERE p.path = layerslayer_path(:path))
{FILE_ORDER}"""


# What `layerslayer images` prints, per image: its platforms (attestations
# left out), layers (indexed/total when some are not indexed), files and size.
_IMAGE_LAYERS = """FROM platform_layers pl
         JOIN platforms pf ON pf.id = pl.platform_id AND pf.attestation = 0
         JOIN layers l ON l.id = pl.layer_id
         WHERE pf.image_id = i.id"""

IMAGES_SQL = f"""SELECT
    i.reference AS image,
    (SELECT group_concat(platform, ', ') FROM (
        SELECT pf.platform FROM platforms pf WHERE pf.image_id = i.id AND pf.attestation = 0 ORDER BY pf.id
    )) AS platforms,
    (SELECT CASE WHEN sum(l.status = 'indexed') = count(*) THEN CAST(count(*) AS TEXT)
                 ELSE sum(l.status = 'indexed') || '/' || count(*) END
        {_IMAGE_LAYERS}) AS layers,
    (SELECT ifnull(sum(CASE WHEN l.status = 'indexed' THEN l.entries END), 0) {_IMAGE_LAYERS}) AS files,
    (SELECT ifnull(sum(l.size), 0) {_IMAGE_LAYERS}) AS size,
    i.digest AS image_digest,
    i.indexed_at,
    i.id AS image_id
FROM images i
WHERE (:image = '' OR instr(i.reference, :image) > 0)
ORDER BY i.reference, i.indexed_at, i.id"""


def canned_query_definitions() -> dict:
    "The canned queries of an index, in the order the database page lists them (a fresh copy)."
    return copy.deepcopy(_canned_query_definitions())


@functools.lru_cache(maxsize=1)
def _canned_query_definitions() -> dict:
    queries = {
        "files_by_glob": {
            "title": "Files matching a glob",
            "description_html": (
                "Every indexed file whose name (pattern without <code>/</code>) or path "
                "(pattern with <code>/</code>) matches, in every image: the same rules as "
                "<code>layerslayer find</code>. " + GLOB_HINT_HTML + " "
                "<em>ignore_case</em> folds case (<code>find -i</code>). <em>image</em> optionally narrows to references "
                "containing that text. <em>state</em> says whether the file is in the image's "
                "final filesystem (<code>visible</code>), was removed by a later layer "
                "(<code>deleted</code>, still readable in its layer) or replaced by a later "
                "copy (<code>overwritten</code>)."
            ),
            "sql": GLOB_SQL,
            "params": ["pattern", "ignore_case", "image"],
            "hide_sql": True,
        },
        "secrets": {
            "title": "Secrets preset",
            "description_html": (
                "What <code>layerslayer find --preset secrets</code> finds: private keys, "
                "certificates and key stores, <code>.env</code> files, cloud and tool "
                "credentials, shell histories, <code>.git</code> directories and more, "
                "including files a later layer deleted."
            ),
            "sql": None,  # from the preset, below
            "params": ["image"],
            "hide_sql": True,
        },
        "deleted_files": {
            "title": "Ghost files (deleted by a later layer)",
            "description_html": (
                "Files that a later layer of the same image removed with a whiteout, an opaque "
                "directory or by replacing their directory. They are not in the running "
                "container but their bytes still sit in the earlier layer's blob: each row's "
                "<em>extract</em> is the command that writes it (copy it with its button). "
                "<em>recreated</em> = 1 when a later layer put a new file at the same path."
            ),
            "sql": GHOST_SQL,
            "params": ["image"],
            "hide_sql": True,
        },
        "largest_files": {
            "title": "Largest files",
            "description_html": (
                "The 200 biggest regular files across the index (or in the images whose "
                "reference contains <em>image</em>)."
            ),
            "sql": LARGEST_SQL,
            "params": ["image"],
            "hide_sql": True,
        },
        "shared_layers": {
            "title": "Layers shared by several images",
            "description_html": (
                "Layer blobs used by more than one image (indexed once, listed once). "
                "With <em>image</em>, only the layers that image shares with others."
            ),
            "sql": SHARED_SQL,
            "params": ["image"],
            "hide_sql": True,
        },
        "images_with_path": {
            "title": "Images that contain a path",
            "description_html": (
                "Every image and layer holding exactly this path, e.g. <code>/etc/passwd</code> "
                "or <code>/app/.env</code>, and whether it is still there in the final filesystem."
            ),
            "sql": IMAGES_WITH_PATH_SQL,
            "params": ["path"],
            "hide_sql": True,
        },
        "images_overview": {
            "title": "Images: platforms, layers, files and size",
            "description_html": (
                "What <code>layerslayer images</code> prints: every indexed image with its "
                "platforms, its layers (<em>indexed/total</em> when some are not indexed yet or "
                "failed), its file entries and the compressed size of its layers. Open an image "
                "for its layers and build steps."
            ),
            "sql": IMAGES_SQL,
            "params": ["image"],
            "hide_sql": True,
        },
    }
    queries.update(_SECRET_QUERIES)
    queries["secrets"]["sql"] = secrets_sql(preset_patterns("secrets"))
    return queries


# Canned queries over the findings of `index --scan` (finding_locations starts from the findings: fast).
_SECRET_COLUMNS = """
    l.image, l.platform, l.state, l.detector, l.preview, l.source,
    CASE WHEN l.source = 'file' THEN l.location || ifnull(':' || l.line, '') ELSE l.source || ' ' || l.location END
        AS location,
    l.layer_position, l.layer_digest, l.fingerprint"""
_SECRET_QUERIES = {
    "secrets_by_image": {
        "title": "Secrets found in file contents, config and build steps, by image",
        "description_html": (
            "Every secret <code>layerslayer index --scan</code> found, image by image: the detector, "
            "a redacted preview and where (a file and line, an Env variable, a label, a build step). "
            "<em>state</em>: <code>visible</code> in the final filesystem, <code>deleted</code> by a later "
            "layer (still in the blob), <code>overwritten</code>, or <code>config</code>. The same as "
            "<code>layerslayer secrets DB --where</code>."
        ),
        "sql": f"SELECT{_SECRET_COLUMNS}\nFROM finding_locations l\nWHERE (:image = '' OR instr(l.image, :image) > 0)\n"
               "ORDER BY l.image, l.platform, l.source != 'file', l.layer_position, l.location, l.line",
        "params": ["image"],
        "hide_sql": True,
    },
    "secrets_only_in_deleted_files": {
        "title": "Secrets only in deleted files",
        "description_html": (
            "Secrets that no image shows any more: every copy is in a file a later layer deleted, "
            "so only the earlier layer's blob holds it (<code>layerslayer secrets DB --ghost --where</code>). "
            "Fetch the file with <code>layerslayer extract REF PATH --layer N</code>."
        ),
        "sql": f"SELECT{_SECRET_COLUMNS}\nFROM finding_locations l\n"
               "WHERE l.fingerprint NOT IN (SELECT fingerprint FROM finding_locations WHERE state IN ('visible', 'config'))\n"
               "  AND l.fingerprint IN (SELECT fingerprint FROM finding_locations WHERE state = 'deleted')\n"
               "  AND (:image = '' OR instr(l.image, :image) > 0)\n"
               "ORDER BY l.image, l.platform, l.layer_position, l.location",
        "params": ["image"],
        "hide_sql": True,
    },
    "same_secret_in_several_images": {
        "title": "The same secret in several images",
        "description_html": (
            "Secrets (by fingerprint: a hash of the value) held by more than one image, most widespread "
            "first: a key baked into a base image, or copied from project to project."
        ),
        "sql": "SELECT l.fingerprint, min(l.detector) AS detector, min(l.preview) AS preview,\n"
               "    count(DISTINCT l.image_id) AS images, count(DISTINCT l.layer_digest) AS layers,\n"
               "    group_concat(DISTINCT l.image) AS image_list\n"
               "FROM finding_locations l\nGROUP BY l.fingerprint\nHAVING count(DISTINCT l.image_id) > 1\n"
               "ORDER BY images DESC, layers DESC, detector",
        "params": [],
        "hide_sql": True,
    },
}


@hookimpl
def canned_queries(datasette, database, actor):
    if not is_index(datasette, database):
        return None
    return canned_query_definitions()


# ---------------------------------------------------------------------------
# Metadata

FILE_VIEW_COLUMNS = {
    "image_id": "The image (images.id).",
    "image": "Image reference as indexed.",
    "platform_id": "The platform (platforms.id).",
    "platform": "os/architecture[/variant].",
    "layer_position": "Position of the layer in the platform's stack: 0 is the base layer.",
    "layer_id": "The layer (layers.id).",
    "layer_digest": "Digest of the layer blob that holds this entry.",
    "position": "Order of the entry inside its layer's tar stream.",
    "path_id": "The path (paths.id).",
    "path": "Path inside the image, without a leading /. Bytes that are not UTF-8 show as \\xNN.",
    "name": "Last component of the path.",
    "type": "dir, file, symlink, hardlink, char, block or fifo.",
    "size": "Content size in bytes (0 for anything but files).",
    "mode": "Permission bits, including setuid, setgid and sticky.",
    "uid": "Owner user id.",
    "gid": "Owner group id.",
    "uname": "Owner user name recorded in the tar.",
    "gname": "Owner group name recorded in the tar.",
    "mtime": "Modification time recorded in the tar (UTC).",
    "linkname": "Target of a symlink or hard link.",
    "devmajor": "Device major number (char and block devices).",
    "devminor": "Device minor number (char and block devices).",
    "whiteout": "1 for whiteout markers (.wh.NAME and .wh..wh..opq), which delete paths of lower layers.",
    "opaque": "1 for opaque-directory markers (.wh..wh..opq).",
    "offset": "Offset of the entry's tar header in the uncompressed layer stream.",
    "data_offset": "Offset of the entry's content in the uncompressed layer stream.",
    "path_bytes": "The exact bytes of the path when they are not valid UTF-8 (NULL otherwise).",
    "deleted_in_position": "Position of the layer that deleted this entry.",
    "deleted_by": "The whiteout or opaque marker (or replacing entry) that deleted it.",
    "recreated": "1 when that layer or a later one put a new entry at the same path.",
    "deletion": "How it was deleted: whiteout, opaque (directory) or replaced (its directory became a file).",
}


def _columns(*names: str, **overrides: str) -> dict:
    out = {name: FILE_VIEW_COLUMNS[name] for name in names if name in FILE_VIEW_COLUMNS}
    out.update(overrides)
    return out


_FILE_VIEW_NAMES = (
    "image_id", "image", "platform_id", "platform", "layer_position", "layer_id", "layer_digest", "position",
    "path_id", "path", "name", "type", "size", "mode", "uid", "gid", "uname", "gname", "mtime", "linkname",
    "devmajor", "devminor", "whiteout", "opaque", "offset", "data_offset", "path_bytes",
)

FILE_FACETS = ["image", "platform", "type", {"extension": "name"}]


def _search(fts_pk: str) -> dict:
    return {"fts_table": "paths_fts", "fts_pk": fts_pk}


def database_metadata() -> dict:
    "Metadata of one index database (tables, views, columns)."
    tables = {
        "images": {
            "description": "One row per image reference indexed, with the digest it resolved to. "
                           "A tag that moved gets a new row; the old one stays as history.",
            "label_column": "reference",
            "sort_desc": "indexed_at",
            "columns": {
                "id": "Row id (platforms.image_id points here).",
                "registry": "Registry host (registry-1.docker.io for Docker Hub).",
                "repository": "Repository name (library/nginx).",
                "tag": "Tag as asked for (empty when indexed by digest).",
                "reference": "The reference in its familiar form.",
                "digest": "Digest of the manifest or index the reference resolved to.",
                "media_type": "Media type of that manifest or index.",
                "indexed_at": "When it was last indexed (UTC).",
            },
        },
        "platforms": {
            "description": "The manifests under each image: one per platform (attestation manifests are "
                           "recorded but never indexed).",
            "label_column": "platform",
            "facets": ["platform", "attestation"],
            "columns": {
                "id": "Row id.",
                "image_id": "The image.",
                "manifest_digest": "Digest of this platform's image manifest.",
                "media_type": "Media type of the manifest.",
                "os": "Operating system.",
                "architecture": "CPU architecture.",
                "variant": "CPU variant (v7, v8...).",
                "platform": "os/architecture[/variant].",
                "config_digest": "Digest of the image config blob.",
                "created": "Creation time from the image config.",
                "attestation": "1 for attestation manifests (build provenance, SBOM).",
            },
        },
        "history": {
            "description": "Build steps from each platform's image config, in order, aligned with the layers "
                           "they produced.",
            "columns": {
                "platform_id": "The platform.",
                "position": "Step number, from 0.",
                "created": "When the step ran.",
                "created_by": "The Dockerfile instruction or command.",
                "comment": "Comment recorded by the builder.",
                "empty_layer": "1 when the step made no layer (ENV, CMD, ARG...).",
                "layer_position": "Position of the layer the step produced.",
            },
        },
        "layers": {
            "description": "One row per layer blob, whichever images use it: downloaded and indexed once. "
                           "Open a layer to see the images that use it and the commands that fetch it.",
            "label_column": "digest",
            "sort_desc": "size",
            "facets": ["status", "media_type"],
            "columns": {
                "id": "Row id (entries.layer_id points here).",
                "digest": "Digest of the (compressed) blob.",
                "media_type": "Media type: tar, tar+gzip or tar+zstd.",
                "size": "Compressed size of the blob.",
                "urls": "Foreign layers: where the blob lives outside the registry.",
                "status": "pending, indexed, failed or foreign (never downloaded).",
                "listed_via": "stream (whole blob read), estargz-toc or zstd-chunked-toc (table of contents only).",
                "entries": "Number of tar entries indexed.",
                "bytes_read": "Bytes downloaded to list it.",
                "error": "Why indexing failed.",
                "indexed_at": "When it was indexed (UTC).",
                "note": "Something unusual but no error, e.g. pax global headers (applied to no entry, as the runtime does).",
                "scanned": "Size cap its files were scanned for secrets with (index --scan); empty: not scanned.",
            },
        },
        "layer_sources": {
            "description": "Registries and repositories each layer blob can be fetched from.",
            "columns": {"layer_id": "The layer.", "registry": "Registry host.", "repository": "Repository."},
        },
        "platform_layers": {
            "description": "The ordered layer stack of each platform.",
            "columns": {
                "platform_id": "The platform.",
                "position": "0 is the base layer.",
                "layer_id": "The layer.",
            },
        },
        "paths": {
            "description": "Every distinct path once. Search finds paths containing all the words typed "
                           "(trigram index: words need at least 3 characters).",
            "label_column": "path",
            **_search("id"),
            "columns": {
                "id": "Row id (entries.path_id points here).",
                "path": FILE_VIEW_COLUMNS["path"],
                "name": FILE_VIEW_COLUMNS["name"],
                "path_bytes": FILE_VIEW_COLUMNS["path_bytes"],
                "kinds": "1: seen as a directory, 2: as something else, 3: both.",
            },
        },
        "entries": {
            "description": "One row per tar entry of each layer (raw codes: the files view reads better).",
            "columns": {
                "layer_id": "The layer.",
                "position": "Order inside the layer's tar stream.",
                "path_id": "The path.",
                "type": "0 dir, 1 file, 2 symlink, 3 hardlink, 4 char, 5 block, 6 fifo.",
                **_columns("size", "mode", "uid", "gid", "uname", "gname", "mtime", "linkname", "devmajor",
                           "devminor"),
                "whiteout": "0 ordinary entry, 1 whiteout marker, 2 opaque marker, 3 replaces a directory.",
                "offset": FILE_VIEW_COLUMNS["offset"],
                "header_size": "Bytes of tar headers before the content.",
            },
        },
        "files": {
            "description": "Every tar entry of every indexed layer, readable: path, type, size, mode, owner. "
                           "Filter by layer_id or layer_digest to list one layer.",
            **_search("path_id"),
            "facets": ["type", {"extension": "name"}],
            "columns": _columns(*_FILE_VIEW_NAMES),
        },
        "image_files": {
            "description": "Files with the image, platform and layer position they appear in "
                           "(a shared layer's files appear under each image).",
            **_search("path_id"),
            "facets": FILE_FACETS,
            "columns": _columns(*_FILE_VIEW_NAMES),
        },
        "visible_files": {
            "description": "The final filesystem of each image: what a container started from it sees "
                           "(later layers applied, whiteouts and opaque directories honoured).",
            **_search("path_id"),
            "facets": FILE_FACETS,
            "columns": _columns(*_FILE_VIEW_NAMES),
        },
        "ghost_files": {
            "description": "Files a later layer deleted: gone from the container, still inside the earlier "
                           "layer's blob. Recon gold.",
            **_search("path_id"),
            "facets": FILE_FACETS,
            "columns": _columns(*_FILE_VIEW_NAMES, "deleted_in_position", "deleted_by", "deletion", "recreated"),
        },
        "image_layers": {
            "description": "Each image's layers in order, with their status.",
            "facets": ["image", "platform", "status"],
            "columns": {
                "image_id": "The image (images.id).",
                "image": "Image reference.",
                "image_digest": "Digest the reference resolved to.",
                "platform_id": "The platform (platforms.id).",
                "layer_id": "The layer (layers.id).",
                "media_type": "Media type of the layer blob.",
                "platform": "os/architecture[/variant].",
                "position": "0 is the base layer.",
                "layer_digest": "Digest of the layer blob.",
                "size": "Compressed size.",
                "status": "pending, indexed, failed or foreign.",
                "entries": "Tar entries indexed.",
                "listed_via": "How it was listed.",
                "error": "Why indexing failed.",
            },
        },
        "layer_deletions": {
            "description": "Internal: what each whiteout, opaque marker or directory-replacing entry deletes "
                           "(used by ghost_files and visible_files).",
            "columns": {
                "layer_id": "The layer holding the deleting entry.",
                "position": "Its position in that layer's tar.",
                "kind": "1 whiteout marker, 2 opaque marker, 3 entry replacing a directory.",
                "marker_path": "Path of the deleting entry.",
                "target": "The path a whiteout deletes (with everything below it).",
                "prefix": "Paths starting with this are deleted.",
                "lo": "Lower bound of the deleted paths (for an index range scan).",
                "hi": "Upper bound of the deleted paths (exclusive).",
            },
        },
        "deletions": {
            "description": "Internal: what each whiteout, opaque marker or directory-replacing entry deletes, "
                           "kept as a table so ghost_files starts from the few deletions.",
            "hidden": True,
            "columns": {
                "layer_id": "The layer holding the deleting entry.",
                "position": "Its position in that layer's tar.",
                "kind": "1 whiteout marker, 2 opaque marker, 3 entry replacing a directory.",
                "target": "The path a whiteout deletes (with everything below it).",
                "prefix": "Paths starting with this are deleted.",
                "lo": "Lower bound of the deleted paths (for an index range scan).",
                "hi": "Upper bound of the deleted paths (exclusive).",
            },
        },
        "findings": {
            "description": "Secrets found by index --scan: in a file of a layer (layer_id, position, line) or in a "
                           "platform's config Env, Labels or build steps. Values only with --keep-values.",
            "facets": ["detector", "source"],
            "columns": {
                "id": "Finding id.",
                "layer_id": "The layer whose file holds it (file findings).",
                "position": "The entry's position in that layer's tar.",
                "platform_id": "The platform whose config or build steps hold it (config findings).",
                "source": "file, env, label or history.",
                "location": "Env variable or label name, or the build step's position (config findings).",
                "line": "Line in the file (1-based).",
                "detector": "What found it: private-key, aws-access-key-id, github-token, password-assignment...",
                "fingerprint": "SHA-256 of the value (32 hex digits): the same secret everywhere.",
                "preview": "First and last few characters of the value.",
                "value": "The value itself, only in an index built with --keep-values.",
            },
        },
        "finding_locations": {
            "description": "Each finding in each image platform that holds it, with its state: visible, deleted "
                           "(a ghost: gone from the container, still in the blob), overwritten, or config.",
            "facets": ["image", "detector", "state", "source"],
            "columns": {
                "finding_id": "The finding (findings.id).",
                "image_id": "The image (images.id).",
                "image": "Image reference.",
                "platform_id": "The platform (platforms.id).",
                "platform": "os/architecture[/variant].",
                "source": "file, env, label or history.",
                "layer_position": "Position of the layer in the image (file findings).",
                "layer_digest": "Digest of the layer blob (file findings).",
                "location": "Path of the file, Env variable or label name, or build step position.",
                "line": "Line in the file.",
                "detector": "What found it.",
                "fingerprint": "SHA-256 of the value (32 hex digits).",
                "preview": "First and last few characters of the value.",
                "value": "The value, only with --keep-values.",
                "state": "visible, deleted, overwritten or config.",
            },
        },
        "config": {
            "description": "Each platform's runtime config: user, working directory, entrypoint and command.",
            "columns": {
                "platform_id": "The platform (platforms.id).",
                "user": "User (config.User).",
                "working_dir": "WorkingDir.",
                "cmd": "Cmd, as a JSON array.",
                "entrypoint": "Entrypoint, as a JSON array.",
                "stop_signal": "StopSignal.",
            },
        },
        "config_env": {
            "description": "Each platform's Env, in order (values index --scan found secrets in are masked "
                           "unless --keep-values).",
            "facets": ["name"],
            "columns": {
                "platform_id": "The platform (platforms.id).",
                "position": "Order in Env.",
                "name": "Variable name.",
                "value": "Its value.",
            },
        },
        "config_labels": {
            "description": "Each platform's Labels.",
            "facets": ["name"],
            "columns": {"platform_id": "The platform (platforms.id).", "name": "Label key.", "value": "Label value."},
        },
        "config_ports": {
            "description": "Each platform's ExposedPorts.",
            "facets": ["port"],
            "columns": {"platform_id": "The platform (platforms.id).", "port": "Port and protocol, e.g. 8080/tcp."},
        },
        "paths_fts": {"hidden": True},
        MIGRATIONS_TABLE: {"hidden": True},
    }
    return {
        "description_html": (
            "Container image layers indexed by <code>layerslayer index</code>: every file of every "
            "layer, without the file contents. Start with a query below, or open "
            "<strong>images</strong> or <strong>layers</strong>."
        ),
        "tables": tables,
    }


INSTANCE_METADATA = {
    "title": "layerslayer",
    "description_html": (
        "Recon over container images: which images ship which files, what later layers deleted, "
        "and the commands that fetch any layer."
    ),
}


@hookimpl
def get_metadata(datasette, key, database, table):
    names = index_databases(datasette)
    if not names:
        return {}
    shared = database_metadata()
    metadata = {"databases": {name: shared for name in names}}
    if all(is_index(datasette, name) for name, db in datasette.databases.items()
           if not db.is_memory and db.path):
        metadata.update(INSTANCE_METADATA)
    return metadata


# ---------------------------------------------------------------------------
# Facets


class ExtensionFacet(Facet):
    """Facet by file extension: ``{"extension": "name"}`` groups rows by the
    extension of their ``name`` column (lower case); a value filters with
    ``name__endswith=.ext``."""

    type = "extension"

    async def suggest(self):
        return []

    async def facet_results(self):
        results, timed_out = [], []
        qs_pairs = self.get_querystring_pairs()
        facet_size = self.get_facet_size()
        for source_and_config in self.get_configs():
            config = source_and_config["config"]
            column = config.get("column") or config["simple"]
            sql = (
                f"SELECT layerslayer_ext({escape_sqlite(column)}) AS value, count(*) AS count "
                f"FROM ({self.sql}) WHERE value IS NOT NULL "
                f"GROUP BY value ORDER BY count DESC, value LIMIT {facet_size + 1}"
            )
            try:
                rows = await self.ds.execute(
                    self.database, sql, self.params, truncate=False,
                    custom_time_limit=self.ds.setting("facet_time_limit_ms"),
                )
            except QueryInterrupted:
                timed_out.append(f"{column} extension")
                continue
            arg = f"{column}__endswith"
            values = []
            for row in rows.rows[:facet_size]:
                suffix = "." + row["value"]
                selected = (arg, suffix) in qs_pairs
                if selected:
                    toggle = path_with_removed_args(self.request, {arg: suffix})
                else:
                    toggle = path_with_added_args(self.request, {arg: suffix})
                values.append({
                    "value": row["value"],
                    "label": suffix,
                    "count": row["count"],
                    "toggle_url": self.ds.absolute_url(self.request, self.ds.urls.path(toggle)),
                    "selected": selected,
                })
            results.append({
                "name": column,
                "type": self.type,
                "hideable": source_and_config["source"] != "metadata",
                "toggle_url": self.ds.urls.path(
                    path_with_removed_args(self.request, {"_facet_extension": column})
                ),
                "results": values,
                "truncated": len(rows) > facet_size,
            })
        return results, timed_out


@hookimpl
def register_facet_classes():
    return [ExtensionFacet]


# ---------------------------------------------------------------------------
# Cells


def _keys(row):
    try:
        return row.keys()
    except AttributeError:
        return ()


@functools.lru_cache(maxsize=64)
def _bases(datasette, database: str) -> dict[str, str]:
    """URL prefixes for one database, as plain strings (Datasette's URL
    strings are slow to build on; cells need thousands of links per page)."""
    quoted = urllib.parse.quote(database)
    return {
        "layers": str(datasette.urls.table(database, "layers")),
        "images": str(datasette.urls.table(database, "images")),
        "files": str(datasette.urls.table(database, "files")),
        "database": str(datasette.urls.database(database)),
        "layer_route": str(datasette.urls.path(f"/-/layerslayer/{quoted}/layer/")),
        "image_route": str(datasette.urls.path(f"/-/layerslayer/{quoted}/image")),
    }


def layer_url(datasette, database: str, layer_id=None, digest: str | None = None) -> str:
    "The layer's page: its row when the id is known, else a redirect by digest."
    bases = _bases(datasette, database)
    if layer_id is not None:
        return f"{bases['layers']}/{layer_id}"
    return bases["layer_route"] + urllib.parse.quote(digest or "", safe=":")


def image_url(datasette, database: str, image_id=None, reference: str | None = None) -> str:
    "The image's page: its row when the id is known, else a redirect by reference."
    bases = _bases(datasette, database)
    if image_id is not None:
        return f"{bases['images']}/{image_id}"
    return bases["image_route"] + "?" + urllib.parse.urlencode({"reference": reference or ""})


def path_url(datasette, database: str, path: str) -> str:
    "The images that contain this path (canned query)."
    return _bases(datasette, database)["database"] + "/images_with_path?" + urllib.parse.urlencode({"path": "/" + path})


def _digest_html(digest: str, href: str | None = None) -> markupsafe.Markup:
    short = html.escape(display.short_digest(digest))
    full = html.escape(digest, quote=True)
    inner = f'<code class="ll-digest" title="{full}" style="white-space:nowrap">{short}</code>'
    if href:
        return markupsafe.Markup(f'<a href="{html.escape(href, quote=True)}" title="{full}">{inner}</a>')
    return markupsafe.Markup(inner)


def _size_html(value: int) -> markupsafe.Markup:
    from .display import human_size

    return markupsafe.Markup(
        f'<span class="ll-size" title="{value:,} bytes" style="white-space:nowrap">{html.escape(human_size(value))}</span>'
    )


def _command_html(command: str, label: str = "copy") -> markupsafe.Markup:
    "A command to paste into a shell, with a button that copies it (templates' .ll-copy script)."
    quoted = html.escape(command, quote=True)
    return markupsafe.Markup(
        f'<code class="ll-command">{html.escape(command)}</code> '
        f'<button type="button" class="ll-copy" data-copy="{quoted}" title="{quoted}">{html.escape(label)}</button>'
    )


def render_value(row, value, column: str, table: str | None, database: str, datasette):
    """The HTML for one cell of an index, or None to leave it to Datasette."""
    keys = _keys(row)
    get = (lambda k: row[k] if k in keys else None)  # noqa: E731

    # Foreign keys that Datasette expanded to {"value": id, "label": label}.
    if isinstance(value, dict) and "value" in value:
        if column == "layer_id" and display.is_digest(value.get("label")):
            return _digest_html(value["label"], layer_url(datasette, database, value["value"]))
        return None

    if column in DIGEST_COLUMNS and display.is_digest(value):
        if column == "layer_digest" or (column == "digest" and table == "layers"):
            layer_id = get("layer_id") if column == "layer_digest" else get("id")
            return _digest_html(value, layer_url(datasette, database, layer_id, value))
        if column == "image_digest" or (column == "digest" and table == "images"):
            image_id = get("image_id") if column == "image_digest" else get("id")
            return _digest_html(value, image_url(datasette, database, image_id) if image_id is not None else None)
        return _digest_html(value)

    if column == "path_bytes" and isinstance(value, bytes):
        # The exact name, when it is not UTF-8 (Datasette cannot link blobs of views).
        shown = value.decode("utf-8", "backslashreplace")
        return markupsafe.Markup(
            f'<code title="{html.escape(value.hex(), quote=True)} (hex)">{html.escape(shown)}</code>'
        )

    if column in SIZE_COLUMNS and isinstance(value, int) and not isinstance(value, bool):
        return _size_html(value)

    if column == "mode" and isinstance(value, int):
        text = display.format_mode(value, get("type"))
        return markupsafe.Markup(f'<code class="ll-mode" title="{value:04o}" style="white-space:nowrap">{html.escape(text)}</code>')

    if column == "mtime":
        text = display.format_mtime(value)
        if text:
            return markupsafe.Markup(f'<time datetime="{text}" title="{value}" style="white-space:nowrap">{text}</time>')
        return None

    if table == "entries" and column == "type" and isinstance(value, int):
        return display.type_name(value) or None
    if table == "entries" and column == "whiteout" and isinstance(value, int) and value:
        return display.WHITEOUT_CODES.get(value)

    if column == "image" and isinstance(value, str) and value:
        href = image_url(datasette, database, get("image_id"), value)
        return markupsafe.Markup(f'<a href="{html.escape(href, quote=True)}">{html.escape(value)}</a>')

    if column == "images" and table is None and isinstance(value, str) and value.startswith("["):
        try:
            references = json.loads(value)
        except ValueError:
            return None
        links = [
            f'<a href="{html.escape(image_url(datasette, database, None, ref), quote=True)}">{html.escape(ref)}</a>'
            for ref in references if isinstance(ref, str)
        ]
        return markupsafe.Markup("<br>".join(links))

    if column == "path" and isinstance(value, str) and value:
        href = path_url(datasette, database, value)
        return markupsafe.Markup(
            f'<a class="ll-path" href="{html.escape(href, quote=True)}" '
            f'title="Images that contain /{html.escape(value, quote=True)}">{html.escape(value)}</a>'
        )

    if column == "extract" and table is None and isinstance(value, str) and value.startswith("layerslayer "):
        return _command_html(value)

    if table == "layers" and column == "entries" and isinstance(value, int) and get("id") is not None:
        href = _bases(datasette, database)["files"] + f"?layer_id={get('id')}&_sort=position"
        return markupsafe.Markup(f'<a href="{html.escape(href, quote=True)}" title="List them">{value:,}</a>')

    return None


@hookimpl
def render_cell(row, value, column, table, database, datasette):
    if not is_index(datasette, database):
        return None
    if table == "ghost_files" and column == "path" and isinstance(value, str) and value:
        # A callable, not a coroutine: Datasette calls it only when this hook's answer is used.
        return lambda: _ghost_path_cell(row, value, database, datasette)
    return render_value(row, value, column, table, database, datasette)


_image_rows: dict[tuple, tuple | None] = {}  # (datasette, database, image id) -> images row: never changes


async def _ghost_path_cell(row, value: str, database: str, datasette) -> markupsafe.Markup:
    "A ghost file's path, with the `extract` command that writes it."
    shown = render_value(row, value, "path", "ghost_files", database, datasette)
    keys = _keys(row)
    image_id = row["image_id"] if "image_id" in keys else None
    if image_id is None or "layer_position" not in keys:
        return shown
    key = (id(datasette), database, image_id)
    if key not in _image_rows:
        found = (await datasette.get_database(database).execute(
            "SELECT registry, repository, tag, digest, media_type FROM images WHERE id = ?", [image_id])).first()
        if len(_image_rows) > 4096:
            _image_rows.clear()
        _image_rows[key] = tuple(found) if found else None
    image = _image_rows[key]
    if image is None:
        return shown
    command = ghost_extract_command(*image, row["platform"] if "platform" in keys else None, row["layer_position"],
                                    value, row["path_bytes"] if "path_bytes" in keys else None)
    if command is None:
        return shown
    return markupsafe.Markup(f"{shown}<br>") + _command_html(command, "copy extract command")


# ---------------------------------------------------------------------------
# Layer and image pages


LAYER_USERS_SQL = """
SELECT i.id AS image_id, i.reference, i.registry, i.repository, i.tag, i.digest AS image_digest,
       i.media_type, pf.platform, pl.position
FROM platform_layers pl
JOIN platforms pf ON pf.id = pl.platform_id
JOIN images i ON i.id = pf.image_id
WHERE pl.layer_id = :id
ORDER BY i.reference, i.id, pf.platform
"""

IMAGE_LAYERS_SQL = """
SELECT pf.id AS platform_id, pf.platform, pf.manifest_digest, pl.position, l.id AS layer_id, l.digest,
       l.size, l.status, l.entries, l.error,
       (SELECT h.created_by FROM history h
        WHERE h.platform_id = pf.id AND h.layer_position = pl.position
        ORDER BY h.position LIMIT 1) AS created_by
FROM platforms pf
JOIN platform_layers pl ON pl.platform_id = pf.id
JOIN layers l ON l.id = pl.layer_id
WHERE pf.image_id = :id AND pf.attestation = 0
ORDER BY pf.platform, pf.id, pl.position
"""


def _row_id(request) -> int | None:
    pks = (request.url_vars or {}).get("pks") if request is not None else None
    try:
        return int(str(pks).split(",")[0])
    except (TypeError, ValueError):
        return None


async def layer_page(datasette, database: str, layer_id: int) -> dict | None:
    "What the layer page shows below the row: users, commands, sources."
    db = datasette.get_database(database)
    layer = (await db.execute("SELECT * FROM layers WHERE id = ?", [layer_id])).first()
    if layer is None:
        return None
    users = []
    for r in (await db.execute(LAYER_USERS_SQL, {"id": layer_id})).rows:
        reference = display.pinned_reference(r["registry"], r["repository"], r["tag"], r["image_digest"])
        platform = r["platform"] if display.is_multi_platform(r["media_type"]) else None
        users.append({
            "image": r["reference"],
            "image_url": image_url(datasette, database, r["image_id"]),
            "platform": r["platform"],
            "position": r["position"],
            "save": display.save_command(reference, layer["digest"], platform),
            "extract": display.extract_command(reference, r["position"], "*", platform,
                                               out_dir=layer["digest"].partition(":")[2][:12]),
        })
    sources = [
        f"{r['registry']}/{r['repository']}"
        for r in (await db.execute(
            "SELECT registry, repository FROM layer_sources WHERE layer_id = ? ORDER BY registry, repository",
            [layer_id])).rows
    ]
    files_url = datasette.urls.table(database, "files") + f"?layer_id={layer_id}&_sort=position"
    ghosts_url = datasette.urls.table(database, "ghost_files") + f"?layer_id={layer_id}"
    return {
        "digest": layer["digest"],
        "status": layer["status"],
        "error": layer["error"],
        "entries": layer["entries"],
        "files_url": files_url,
        "ghosts_url": ghosts_url,
        "users": users,
        "sources": sources,
    }


async def image_page(datasette, database: str, image_id: int) -> dict | None:
    "What the image page shows below the row: its layers, per platform."
    db = datasette.get_database(database)
    image = (await db.execute("SELECT * FROM images WHERE id = ?", [image_id])).first()
    if image is None:
        return None
    reference = display.pinned_reference(image["registry"], image["repository"], image["tag"], image["digest"])
    multi = display.is_multi_platform(image["media_type"])
    platforms: dict[int, dict] = {}
    for r in (await db.execute(IMAGE_LAYERS_SQL, {"id": image_id})).rows:
        platform = platforms.get(r["platform_id"])
        if platform is None:
            platform = platforms[r["platform_id"]] = {
                "platform": r["platform"],
                "manifest_digest": r["manifest_digest"],
                "save_all": display.save_all_command(reference, r["platform"] if multi else None),
                "layers": [],
            }
        platform["layers"].append({
            "position": r["position"],
            "digest": r["digest"],
            "short": display.short_digest(r["digest"]),
            "url": layer_url(datasette, database, r["layer_id"]),
            "size": r["size"],
            "status": r["status"],
            "entries": r["entries"],
            "error": r["error"],
            "created_by": r["created_by"],
        })
    base = datasette.urls.table
    return {
        "name": image["reference"],
        "reference": reference,
        "platforms": list(platforms.values()),
        "visible_url": base(database, "visible_files") + f"?image_id={image_id}",
        "ghosts_url": base(database, "ghost_files") + f"?image_id={image_id}",
        "files_url": base(database, "image_files") + f"?image_id={image_id}",
    }


STATS_SQL = """
SELECT
    (SELECT count(*) FROM images) AS images,
    (SELECT count(*) FROM platforms WHERE attestation = 0) AS platforms,
    (SELECT count(*) FROM layers) AS layers,
    (SELECT count(*) FROM layers WHERE status = 'indexed') AS layers_indexed,
    (SELECT count(*) FROM layers WHERE status = 'failed') AS layers_failed,
    (SELECT ifnull(sum(entries), 0) FROM layers WHERE status = 'indexed') AS files
"""


async def start_page(datasette, database: str) -> dict:
    "The start of an index (home and database pages): counts, find box, queries, links."
    stats = dict((await datasette.get_database(database).execute(STATS_SQL)).first())
    base = datasette.urls.database(database)
    queries = [
        {"title": query["title"], "url": f"{base}/{name}"}
        for name, query in canned_query_definitions().items()
    ]
    table = datasette.urls.table
    links = [
        {"label": "images", "url": f"{base}/images_overview"},
        {"label": "layers", "url": table(database, "layers")},
        # Views over every entry: counting their rows could take long on a big index.
        {"label": "final filesystems", "url": table(database, "visible_files") + "?_nocount=1"},
        {"label": "ghost files", "url": f"{base}/deleted_files"},
        {"label": "every file", "url": table(database, "image_files") + "?_nocount=1"},
        {"label": "paths (search)", "url": table(database, "paths")},
    ]
    return {
        **stats,
        "database": database,
        "glob_url": f"{base}/files_by_glob",
        "glob_hint": markupsafe.Markup(GLOB_HINT_HTML),
        "failed_url": table(database, "layers") + "?status=failed",
        "queries": queries,
        "links": links,
    }


def page_notice(request) -> str | None:
    """Why a search or pattern finds nothing when the reason is the input: a
    path-search word under 3 characters (the trigram index cannot look it
    up), an empty or malformed glob in *Files matching a glob*."""
    if request is None:
        return None
    search = " ".join(request.args.get(k) or "" for k in request.args.keys() if k == "_search" or k.startswith("_search_"))
    short = [w for w in (w.strip('"') for w in search.split()) if len(w) < 3]
    if short:
        words = ", ".join(repr(w) for w in short)
        if len(short) == len(search.split()):
            return (f"Path search finds nothing for {words}: it looks words up in a trigram index, so each "
                    "word needs at least 3 characters. For a short name use Files matching a glob "
                    "(e.g. ab for files named ab, *ab* for names containing it).")
        return f"Path search left out {words}: words need at least 3 characters (trigram index)."
    if request.path.rstrip("/").endswith("/files_by_glob") and "pattern" in request.args:
        pattern = request.args.get("pattern") or ""
        if not _usable(pattern):
            return "Type a pattern, e.g. *.pem, id_rsa or /etc/ssh/*."
        try:
            compile_patterns([pattern], ignore_case=_truthy(request.args.get("ignore_case")))
        except (ValueError, re.error) as error:
            reason = str(error).split(" at position")[0]  # a position in the regex, not in the pattern
            return f"No file can match {pattern!r}: it is not a valid glob ({reason})."
    return None


@hookimpl
def extra_template_vars(template, database, table, columns, view_name, request, datasette):
    if view_name == "index":
        async def home():
            names = index_databases(datasette)
            return {"layerslayer_home": {name: await start_page(datasette, name) for name in names}}

        return home
    if not is_index(datasette, database):
        return None
    if view_name == "database":
        async def database_page():
            return {"layerslayer_db": await start_page(datasette, database)}

        return database_page
    if view_name in ("table", "query"):  # a canned query's page is rendered by the table view
        return {"layerslayer_table": True, "layerslayer_notice": page_notice(request)}
    if view_name != "row" or table not in ("layers", "images"):
        return None
    row_id = _row_id(request)
    if row_id is None:
        return None

    async def row_page():
        if table == "layers":
            layer = await layer_page(datasette, database, row_id)
            title = f"Layer {display.short_digest(layer['digest'])}" if layer else None
            return {"layerslayer_layer": layer, "layerslayer_title": title}
        image = await image_page(datasette, database, row_id)
        return {"layerslayer_image": image, "layerslayer_title": f"Image {image['name']}" if image else None}

    return row_page


@hookimpl(tryfirst=True)
def prepare_jinja2_environment(env, datasette):
    """Put this package's templates (the layer and image panels of row.html)
    before Datasette's own; Datasette finds a plugin's templates by itself only
    when the plugin is a package (or on Python >= 3.12)."""
    from jinja2 import ChoiceLoader, FileSystemLoader

    loader = env.loader
    if isinstance(loader, ChoiceLoader) and loader.loaders and isinstance(loader.loaders[0], FileSystemLoader):
        searchpath = loader.loaders[0].searchpath
        if TEMPLATES_DIR not in searchpath:
            # After any --template-dir and other plugins, before Datasette's defaults (last).
            searchpath.insert(max(len(searchpath) - 1, 0), TEMPLATES_DIR)
    if getattr(env, "cache", None) is not None:
        env.cache.clear()
    from .display import human_size

    env.filters["layerslayer_size"] = human_size


# ---------------------------------------------------------------------------
# Redirects used by links in query results (which carry digests, not ids)


async def _check(request, datasette, database: str, table: str) -> Response | None:
    if database not in datasette.databases or not is_index(datasette, database):
        return Response.html("Not a layerslayer index", status=404)
    await datasette.ensure_permissions(
        request.actor, [("view-table", (database, table)), ("view-database", database), "view-instance"]
    )
    return None


async def _redirect_layer(request, datasette):
    # Routes match the raw (percent-encoded) path under a real server.
    database = urllib.parse.unquote(request.url_vars["database"])
    digest = urllib.parse.unquote(request.url_vars["digest"])
    refused = await _check(request, datasette, database, "layers")
    if refused is not None:
        return refused
    row = (await datasette.get_database(database).execute(
        "SELECT id FROM layers WHERE digest = ?", [digest])).first()
    if row is None:
        return Response.html(f"No layer {html.escape(digest)} in this index", status=404)
    return Response.redirect(layer_url(datasette, database, row["id"]))


async def _redirect_image(request, datasette):
    database = urllib.parse.unquote(request.url_vars["database"])
    reference = request.args.get("reference") or ""
    refused = await _check(request, datasette, database, "images")
    if refused is not None:
        return refused
    rows = (await datasette.get_database(database).execute(
        "SELECT id FROM images WHERE reference = ? ORDER BY id", [reference])).rows
    if len(rows) == 1:
        return Response.redirect(image_url(datasette, database, rows[0]["id"]))
    query = urllib.parse.urlencode({"reference": reference})
    return Response.redirect(datasette.urls.table(database, "images") + "?" + query)


# ---------------------------------------------------------------------------
# Column order of the file views

#: The file views, and the columns a recon user reads first; ids come last.
FILE_VIEWS = ("files", "image_files", "visible_files", "ghost_files")
FIRST_COLUMNS = ("path", "type", "size", "mode", "image", "platform", "layer_position", "mtime", "uname", "gname",
                 "linkname", "deleted_in_position", "deleted_by", "deletion", "recreated")
ID_COLUMNS = ("image_id", "platform_id", "layer_id", "position", "path_id")


def file_view_columns(columns) -> list[str]:
    "A file view's columns in reading order: FIRST_COLUMNS, the others as they come, ID_COLUMNS last."
    columns = list(columns)
    first = [c for c in FIRST_COLUMNS if c in columns]
    last = [c for c in ID_COLUMNS if c in columns]
    return first + [c for c in columns if c not in first and c not in last] + last


_VIEW_PATH = re.compile(r"^/(?P<database>[^/]+)/(?P<table>" + "|".join(FILE_VIEWS) + r")$")


async def _ordered_scope(datasette, scope: dict) -> dict:
    """An HTML page of a file view asked for without ``_col``/``_nocol``: the
    same request with ``_col`` listing every column in reading order (SQL views
    keep their defined order, which puts ids first). JSON and CSV are left as they are."""
    match = _VIEW_PATH.match(scope.get("path") or "")
    if match is None:
        return scope
    database = urllib.parse.unquote(match["database"])
    query = scope.get("query_string", b"").decode("latin-1")
    args = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(name in ("_col", "_nocol") for name, _ in args) or not is_index(datasette, database):
        return scope
    columns = await datasette.get_database(database).table_columns(match["table"])
    extra = urllib.parse.urlencode([("_col", c) for c in file_view_columns(columns)])
    return dict(scope, query_string=(f"{query}&{extra}" if query else extra).encode("latin-1"))


@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        async def ordered(scope, receive, send):
            if scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD"):
                scope = await _ordered_scope(datasette, scope)
            await app(scope, receive, send)

        return ordered

    return wrap


@hookimpl
def register_routes(datasette):
    return [
        (r"^/-/layerslayer/(?P<database>[^/]+)/layer/(?P<digest>[^/]+)$", _redirect_layer),
        (r"^/-/layerslayer/(?P<database>[^/]+)/image$", _redirect_image),
    ]
