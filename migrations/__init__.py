"""Schema migrations for layerslayer indexes (sqlite-utils ``Migrations``).

Installed as ``layerslayer.migrations``. ``layerslayer.store.open_db()``
applies whatever is pending, so every command works on an up-to-date schema.
Migrations are append-only: never edit one that has shipped, add ``m002_…``.

How the schema is laid out, and why
===================================

Tables
------
``images`` (one row per reference and resolved digest), ``platforms`` (one per
manifest under an image), ``history`` (config history, in order),
``layers`` (one per blob digest: a layer shared by many images is indexed once),
``layer_sources`` (registry/repository pairs a blob can be fetched from),
``platform_layers`` (the ordered stack of each platform), ``paths`` (every
distinct path once) and ``entries`` (one row per tar entry, with integer
foreign keys only, clustered by layer).

``paths_fts`` is an FTS5 ``trigram`` index over ``paths.path`` (external
content, ``detail=none``, ``columnsize=0``: no token positions or sizes are
stored; LIKE and GLOB still use it, and check every candidate row). It is filled per layer, with one
``INSERT … SELECT`` for the paths that layer added, never by a per-row trigger.
It accelerates ``LIKE '%pem%'`` / ``GLOB '*.pem'`` on ``paths_fts.path`` and
``paths_fts MATCH`` (patterns need a literal run of at least three characters).

Non-UTF-8 names
---------------
Tar names are bytes. ``Entry.path`` carries bytes that are not valid UTF-8 as
lone surrogates (``errors="surrogateescape"``), which SQLite cannot store as
TEXT. ``paths.path`` therefore holds a display form in which every byte that is
not part of valid UTF-8 is written ``\\xNN`` (Python's ``backslashreplace``),
and ``paths.path_bytes`` holds the exact original bytes, only for those names
(NULL for the valid UTF-8 names that make up essentially every real layer).
The pair is unique, so two names that render the same text stay apart, and
``os.fsdecode``-style round trips are lossless:
``path_bytes.decode("utf-8", "surrogateescape")`` if ``path_bytes`` is not
NULL, else ``path``. ``name`` is the basename of ``path`` in the same display
form. ``linkname``, ``uname`` and ``gname`` are stored in the display form
only.

Entry codes
-----------
``entries.type``: 0 dir, 1 file, 2 symlink, 3 hardlink, 4 char, 5 block,
6 fifo (0 and 1 take no bytes on disk). The views show the names.

``entries.whiteout``: 0 ordinary entry; 1 whiteout marker ``dir/.wh.NAME``
(deletes ``dir/NAME`` and everything below it in lower layers); 2 opaque
marker ``dir/.wh..wh..opq`` (deletes everything below ``dir/`` in lower
layers); 3 an ordinary non-directory entry at a path that is a directory in
some other entry of the index: it replaces that directory, so it hides
whatever lower layers hold below it (OCI "changeset over existing files":
the old path is removed, then recreated). Code 3 is maintained automatically
(``paths.kinds`` records whether a path was seen as a directory (1) and/or as
a non-directory (2); the ``paths_kinds_changed`` trigger, which fires only on
the rare row that becomes both, flags the older entries). A directory is
recognised by its own tar entry: a lower layer that holds ``a/b`` without an
entry for ``a`` is not hidden by a later file ``a``.

Layer stacks and the merged filesystem (OCI image-spec, layer.md)
------------------------------------------------------------------
Positions count from 0 (the base layer). For one platform's stack:

* A whiteout ``dir/.wh.NAME`` at position q deletes ``dir/NAME`` and all its
  descendants from every layer at a position < q. It does not touch entries
  of its own layer ("whiteout files MUST only apply to resources in
  lower/parent layers"), so a layer may delete a path and recreate it.
* An opaque marker ``dir/.wh..wh..opq`` at position q deletes everything
  below ``dir/`` (not ``dir`` itself) from positions < q, whatever the order
  of the marker and the entries inside the tar.
* A non-directory at position q over a directory of a lower layer (code 3)
  deletes that directory's descendants from positions < q.
* Otherwise the entry at the highest position wins (within one layer, the
  later tar entry); for directories the later entry replaces the attributes.
* Markers (codes 1 and 2) are never part of the merged filesystem.

``ghost_files``: one row per entry (non-marker) of a platform's stack that a
later layer of that stack deletes by rule 1, 2 or 3 above: the secret that was
``rm``-ed in a later ``RUN`` but still sits in the lower blob. An entry deleted
and then re-created by the deleting layer or a later one is still a ghost (its
bytes are only in the lower blob, and the new file is a different entry);
``recreated`` = 1 flags that case, and the new entry shows up in
``visible_files`` (unless deleted again). When several later layers delete the
same entry, the row names the first one (``deleted_in_position``,
``deleted_by``). Entries merely overwritten by a later version of the same path
are neither ghosts nor visible.

``visible_files``: one row per entry present in the final merged filesystem
of each platform: not a marker, not superseded by a later entry of the same
path, not deleted by a later layer. Entries of layers that are not indexed
(yet) are absent from every view: check ``image_layers.status`` before
trusting ``visible_files`` for a whole platform.
"""

from sqlite_utils import Migrations

migrations = Migrations("layerslayer")

#: Entry type names by code, as stored in ``entries.type``.
ENTRY_TYPES = ("dir", "file", "symlink", "hardlink", "char", "block", "fifo")

_TYPE_NAME_SQL = (
    "CASE {col} WHEN 0 THEN 'dir' WHEN 1 THEN 'file' WHEN 2 THEN 'symlink' "
    "WHEN 3 THEN 'hardlink' WHEN 4 THEN 'char' WHEN 5 THEN 'block' "
    "WHEN 6 THEN 'fifo' END"
)

M001_TABLES = [
    """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT,
    reference TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT,
    indexed_at TEXT,
    UNIQUE (registry, repository, tag, digest)
)""",
    """
CREATE TABLE platforms (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    manifest_digest TEXT NOT NULL,
    media_type TEXT,
    os TEXT,
    architecture TEXT,
    variant TEXT,
    platform TEXT,
    config_digest TEXT,
    created TEXT,
    attestation INTEGER NOT NULL DEFAULT 0,
    UNIQUE (image_id, manifest_digest)
)""",
    """
CREATE TABLE history (
    platform_id INTEGER NOT NULL REFERENCES platforms(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    created TEXT,
    created_by TEXT,
    comment TEXT,
    empty_layer INTEGER NOT NULL DEFAULT 0,
    layer_position INTEGER,
    PRIMARY KEY (platform_id, position)
) WITHOUT ROWID""",
    """
CREATE TABLE layers (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    media_type TEXT,
    size INTEGER,
    urls TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'indexed', 'failed', 'foreign')),
    listed_via TEXT,
    entries INTEGER,
    bytes_read INTEGER,
    error TEXT,
    indexed_at TEXT
)""",
    """
CREATE TABLE layer_sources (
    layer_id INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (layer_id, registry, repository)
) WITHOUT ROWID""",
    """
CREATE TABLE platform_layers (
    platform_id INTEGER NOT NULL REFERENCES platforms(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    layer_id INTEGER NOT NULL REFERENCES layers(id),
    PRIMARY KEY (platform_id, position)
) WITHOUT ROWID""",
    "CREATE INDEX platform_layers_layer ON platform_layers(layer_id, platform_id)",
    """
CREATE TABLE paths (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    path_bytes BLOB,
    kinds INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE UNIQUE INDEX paths_path ON paths(path, ifnull(path_bytes, x''))",
    "CREATE INDEX paths_name ON paths(name)",
    "CREATE INDEX paths_name_nocase ON paths(name COLLATE NOCASE)",
    """
CREATE VIRTUAL TABLE paths_fts USING fts5(
    path, content='paths', content_rowid='id', tokenize='trigram',
    detail=none, columnsize=0
)""",
    """
CREATE TABLE entries (
    layer_id INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    path_id INTEGER NOT NULL REFERENCES paths(id),
    type INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    uname TEXT NOT NULL,
    gname TEXT NOT NULL,
    mtime REAL,
    linkname TEXT NOT NULL,
    devmajor INTEGER NOT NULL,
    devminor INTEGER NOT NULL,
    whiteout INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    header_size INTEGER NOT NULL,
    PRIMARY KEY (layer_id, position)
) WITHOUT ROWID""",
    "CREATE INDEX entries_path ON entries(path_id, layer_id)",
    "CREATE INDEX entries_deletions ON entries(layer_id, whiteout) WHERE whiteout > 0",
    """
CREATE TRIGGER paths_kinds_changed AFTER UPDATE OF kinds ON paths
WHEN new.kinds = 3 AND old.kinds != 3
BEGIN
    UPDATE entries SET whiteout = 3
    WHERE path_id = new.id AND type != 0 AND whiteout = 0;
END""",
]

M001_VIEWS = [
    """
CREATE VIEW files AS
SELECT
    e.layer_id AS layer_id,
    l.digest AS layer_digest,
    e.position AS position,
    e.path_id AS path_id,
    p.path AS path,
    p.name AS name,
    """
    + _TYPE_NAME_SQL.format(col="e.type")
    + """ AS type,
    e.size AS size,
    e.mode AS mode,
    e.uid AS uid,
    e.gid AS gid,
    e.uname AS uname,
    e.gname AS gname,
    e.mtime AS mtime,
    e.linkname AS linkname,
    e.devmajor AS devmajor,
    e.devminor AS devminor,
    e.whiteout IN (1, 2) AS whiteout,
    e.whiteout = 2 AS opaque,
    e."offset" AS "offset",
    e."offset" + e.header_size AS data_offset,
    p.path_bytes AS path_bytes
FROM entries e
JOIN paths p ON p.id = e.path_id
JOIN layers l ON l.id = e.layer_id""",
    """
CREATE VIEW image_layers AS
SELECT
    i.id AS image_id,
    i.reference AS image,
    i.digest AS image_digest,
    pf.id AS platform_id,
    pf.platform AS platform,
    pl.position AS position,
    l.id AS layer_id,
    l.digest AS layer_digest,
    l.media_type AS media_type,
    l.size AS size,
    l.status AS status,
    l.entries AS entries,
    l.listed_via AS listed_via,
    l.error AS error
FROM images i
JOIN platforms pf ON pf.image_id = i.id
JOIN platform_layers pl ON pl.platform_id = pf.id
JOIN layers l ON l.id = pl.layer_id""",
    """
CREATE VIEW image_files AS
SELECT
    i.id AS image_id,
    i.reference AS image,
    pf.id AS platform_id,
    pf.platform AS platform,
    pl.position AS layer_position,
    f.*
FROM images i
JOIN platforms pf ON pf.image_id = i.id
JOIN platform_layers pl ON pl.platform_id = pf.id
JOIN files f ON f.layer_id = pl.layer_id""",
    # One row per deleting entry (codes 1-3) with what it deletes: ``target``
    # (the path itself, code 1 only) and ``prefix`` (its descendants, ending
    # in "/"; "" for an opaque marker at the root). [lo, hi) is a range of
    # paths.path that holds every victim, for an index range scan: text < any
    # blob, so x'' is an upper bound above all paths.
    """
CREATE VIEW layer_deletions AS
SELECT
    e.layer_id AS layer_id,
    e.position AS position,
    e.whiteout AS kind,
    p.path AS marker_path,
    CASE e.whiteout WHEN 1 THEN
        substr(p.path, 1, length(p.path) - length(p.name)) || substr(p.name, 5)
    END AS target,
    CASE e.whiteout
        WHEN 1 THEN substr(p.path, 1, length(p.path) - length(p.name)) || substr(p.name, 5) || '/'
        WHEN 2 THEN substr(p.path, 1, length(p.path) - length(p.name))
        ELSE p.path || '/'
    END AS prefix,
    CASE e.whiteout
        WHEN 1 THEN substr(p.path, 1, length(p.path) - length(p.name)) || substr(p.name, 5)
        WHEN 2 THEN substr(p.path, 1, length(p.path) - length(p.name))
        ELSE p.path || '/'
    END AS lo,
    CASE e.whiteout
        WHEN 1 THEN substr(p.path, 1, length(p.path) - length(p.name)) || substr(p.name, 5) || '0'
        WHEN 2 THEN CASE WHEN p.path = p.name THEN x''
            ELSE substr(p.path, 1, length(p.path) - length(p.name) - 1) || '0' END
        ELSE p.path || '0'
    END AS hi
FROM entries e
JOIN paths p ON p.id = e.path_id
WHERE e.whiteout > 0""",
    """
CREATE VIEW ghost_files AS
SELECT
    i.id AS image_id,
    i.reference AS image,
    pf.id AS platform_id,
    pf.platform AS platform,
    pl.position AS layer_position,
    f.*,
    dl.position AS deleted_in_position,
    d.marker_path AS deleted_by,
    EXISTS (
        SELECT 1 FROM platform_layers rl
        JOIN entries r ON r.layer_id = rl.layer_id AND r.path_id = f.path_id
        WHERE rl.platform_id = dl.platform_id AND rl.position >= dl.position
          AND r.whiteout NOT IN (1, 2)
    ) AS recreated
FROM platform_layers dl
JOIN layer_deletions d ON d.layer_id = dl.layer_id
JOIN platform_layers pl ON pl.platform_id = dl.platform_id AND pl.position < dl.position
JOIN paths vp ON vp.path >= d.lo AND vp.path < d.hi
JOIN files f ON f.path_id = vp.id AND f.layer_id = pl.layer_id
JOIN platforms pf ON pf.id = dl.platform_id
JOIN images i ON i.id = pf.image_id
WHERE (vp.path = d.target OR substr(vp.path, 1, length(d.prefix)) = d.prefix)
  AND f.whiteout = 0
  AND NOT EXISTS (
    SELECT 1 FROM platform_layers dl2
    JOIN layer_deletions d2 ON d2.layer_id = dl2.layer_id
    WHERE dl2.platform_id = dl.platform_id
      AND dl2.position > pl.position AND dl2.position <= dl.position
      AND (dl2.position < dl.position OR d2.position < d.position)
      AND (vp.path = d2.target OR substr(vp.path, 1, length(d2.prefix)) = d2.prefix)
  )""",
    """
CREATE VIEW visible_files AS
SELECT f.*
FROM image_files f
WHERE f.whiteout = 0
  AND NOT EXISTS (
    SELECT 1 FROM platform_layers sl
    JOIN entries s ON s.layer_id = sl.layer_id AND s.path_id = f.path_id
    WHERE sl.platform_id = f.platform_id AND sl.position >= f.layer_position
      AND (sl.position > f.layer_position OR s.position > f.position)
  )
  AND NOT EXISTS (
    SELECT 1 FROM platform_layers dl
    JOIN layer_deletions d ON d.layer_id = dl.layer_id
    WHERE dl.platform_id = f.platform_id AND dl.position > f.layer_position
      AND (f.path = d.target OR substr(f.path, 1, length(d.prefix)) = d.prefix)
  )""",
]


@migrations()
def m001_initial(db):
    "Tables, indexes, the paths_fts trigram index, and the views."
    for statement in M001_TABLES + M001_VIEWS:
        db.execute(statement.strip())
