"""Schema migrations for layerslayer indexes (sqlite-utils ``Migrations``).

``layerslayer.store.open_db()`` applies whatever is pending, so every command
works on an up-to-date schema. Migrations are append-only: never edit one that
has shipped, add the next ``mNNN_…``. Each runs literal SQL text, never SQL
built from Python values that may change later, so an index migrated today
gets the schema an index migrated at release did (tests/test_migrations.py
holds a hash of each shipped migration's SQL).

How the schema is laid out, and why
===================================

Tables
------
``images`` (one row per reference and resolved digest), ``platforms`` (one per
manifest under an image), ``history`` (config history, in order),
``layers`` (one per blob digest: a layer shared by many images is indexed once),
``layer_sources`` (registry/repository pairs a blob can be fetched from),
``platform_layers`` (the ordered stack of each platform), ``paths`` (every
distinct path once), ``entries`` (one row per tar entry, integer foreign keys
only, clustered by layer) and ``deletions`` (one row per entry that deletes
something from lower layers, with what it deletes precomputed).

``paths_fts`` is an FTS5 ``trigram`` index over ``paths.path``: external
content (the text lives in ``paths`` only), ``detail=none`` and
``columnsize=0`` (no token positions or sizes: about a third of the size of a
default index, 1.8x faster to fill). It is filled per layer with one
``INSERT … SELECT`` for the paths that layer added, never by a per-row
trigger. ``LIKE '%.pem'`` (case-insensitive) and ``GLOB '*.pem'``
(case-sensitive) on ``paths_fts.path`` use it and re-check each candidate;
``paths_fts MATCH`` takes trigrams joined by AND (``'pas AND swd'``), not
phrases (``'"passwd"'`` is an error with ``detail=none``). Patterns need a
literal run of three characters or more to gain anything. ``content='paths'``
is written with single quotes on purpose: Datasette only offers its search box
(which sends phrase queries) for ``content="..."``.

Non-UTF-8 names
---------------
Tar names are bytes. ``Entry.path`` carries bytes that are not valid UTF-8 as
lone surrogates (``errors="surrogateescape"``), which SQLite cannot store as
TEXT. ``paths.path`` therefore holds a display form in which every byte that is
not part of valid UTF-8 is written ``\\xNN`` (Python's ``backslashreplace``),
and ``paths.path_bytes`` holds the exact original bytes, only for those names
(NULL for the valid UTF-8 names that make up essentially every real layer).
The pair is unique (``paths_path`` is on ``path, ifnull(path_bytes, x'')``),
so a name that merely renders the same text stays apart, and the round trip is
lossless: ``path_bytes.decode("utf-8", "surrogateescape")`` when
``path_bytes`` is not NULL, else ``path`` (``store.path_from_row``). ``name``
is the basename in the same display form. ``linkname``, ``uname`` and
``gname`` are stored in the display form only.

Entry codes
-----------
``entries.type``: 0 dir, 1 file, 2 symlink, 3 hardlink, 4 char, 5 block,
6 fifo (0 and 1 take no bytes on disk). The views show the names.
``entries.header_size``: bytes from the entry's header to its content
(``data_offset = offset + header_size``, as the views show it).

``entries.whiteout`` (also ``deletions.kind``): 0 ordinary entry;
1 whiteout marker ``dir/.wh.NAME`` (deletes ``dir/NAME`` and everything below
it); 2 opaque marker ``dir/.wh..wh..opq`` (deletes everything below ``dir/``);
3 an ordinary non-directory at a path that is a directory in some other entry
of the index: it replaces that directory, so it hides whatever lower layers
hold below it (OCI "changeset over existing files": the old path is removed,
then recreated). Code 3 is kept up to date automatically: ``paths.kinds``
records whether a path was seen as a directory (1) and/or as a non-directory
(2), and the ``paths_kinds_changed`` trigger - which fires only for the rare
path that becomes both - flags the older entries. A directory is recognised
by its own tar entry: a lower layer holding ``a/b`` without an entry for
``a`` is not hidden by a later file ``a``. Only committed layers count: a
path that a failed layer added (paths are added while a layer streams) has no
kind (0) until a layer with it commits.

``deletions`` holds, per deleting entry, ``target`` (code 1: the path it
deletes, with everything below it), ``prefix`` (every path starting with it
is deleted: ``target/``, the opaque directory with its ``/`` - ``""`` at the
root -, or the replaced directory with its ``/``) and ``[lo, hi)``, a range of
``paths.path`` holding every victim (``hi`` is the blob ``x''`` - above any
text - for a root opaque marker). ``layer_deletions`` shows it with the
marker's path.

Layer stacks and the merged filesystem (OCI image-spec, layer.md)
------------------------------------------------------------------
Positions count from 0 (the base layer). For one platform's stack:

1. A whiteout ``dir/.wh.NAME`` at position q deletes ``dir/NAME`` and all its
   descendants from every layer at a position < q. It does not touch entries
   of its own layer ("whiteout files MUST only apply to resources in
   lower/parent layers"), so a layer may delete a path and recreate it.
2. An opaque marker ``dir/.wh..wh..opq`` at position q deletes everything
   below ``dir/`` (not ``dir`` itself) from positions < q, whatever the order
   of the marker and the entries inside the tar.
3. A non-directory at position q over a directory of a lower layer (code 3)
   deletes that directory's descendants from positions < q.
4. Otherwise the entry at the highest position wins (within one layer, the
   later tar entry); for directories the later entry replaces the attributes.
5. Markers (codes 1 and 2) are never part of the merged filesystem.

``ghost_files``: one row per entry (not a marker) of a platform's stack that
a later layer of that stack deletes by rule 1, 2 or 3: the secret that was
``rm``-ed in a later ``RUN`` but still sits in the lower blob. An entry deleted
and then re-created (by the deleting layer itself or a later one) is still a
ghost: its bytes are only in the lower blob, and the new file is a different
entry; ``recreated`` = 1 flags that case, and the new entry shows up in
``visible_files`` (unless deleted again). When several later layers delete the
same entry, the row names the first (``deleted_in_position``, ``deleted_by``,
``deletion`` = whiteout | opaque | replaced). Entries merely overwritten by a
later entry at the same path are neither ghosts nor visible.

``visible_files``: one row per entry present in the final merged filesystem
of each platform: not a marker, not superseded by a later entry at the same
path, not deleted by a later layer.

Entries of layers that are not indexed (yet) are absent from every view:
check ``image_layers.status`` before trusting ``visible_files`` or
``ghost_files`` for a whole platform.

Query plans
-----------
Join orders that matter are forced (``CROSS JOIN``, ``INDEXED BY``): with no
statistics SQLite assumes about ten rows per index key, and would otherwise
scan a layer by its primary key rather than probe ``entries_path``, or start
``ghost_files`` from every entry instead of from the few deletions.
``ghost_files`` runs from the deletions of the platforms asked for (filter it
by ``platform_id`` / ``image_id``; a filter on name or path is applied last);
``visible_files`` runs from the entries asked for (filter by name, path or
``path_id``: each row is then checked against the later entries at its path
and the later deletions - about 10 us a row). Do not ``ANALYZE``
(``store.optimize`` drops statistics): partial statistics were measured to
make a 6 ms query take 1.9 s.
"""

from sqlite_utils import Migrations

migrations = Migrations("layerslayer")

#: Entry type names by code, as stored in ``entries.type``.
ENTRY_TYPES = ("dir", "file", "symlink", "hardlink", "char", "block", "fifo")

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
CREATE TABLE deletions (
    layer_id INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
    target TEXT,
    prefix TEXT NOT NULL,
    lo TEXT NOT NULL,
    hi NOT NULL,
    PRIMARY KEY (layer_id, position)
) WITHOUT ROWID""",
    """
CREATE TRIGGER paths_kinds_changed AFTER UPDATE OF kinds ON paths
WHEN new.kinds = 3 AND old.kinds != 3
BEGIN
    UPDATE entries SET whiteout = 3
    WHERE path_id = new.id AND type != 0 AND whiteout = 0;
    INSERT OR IGNORE INTO deletions (layer_id, position, kind, target, prefix, lo, hi)
    SELECT layer_id, position, 3, NULL, new.path || '/', new.path || '/', new.path || '0'
    FROM entries WHERE path_id = new.id AND whiteout = 3;
END""",
]

# The views spell out everything (no SQL built from Python values) so that a
# shipped migration runs the same text forever. Recurring pieces, written out
# each time: the columns of ``files`` (from entries, paths and layers); the
# entry type names (``ENTRY_TYPES``); and "does deletions row d delete path
# P" as ``P >= d.lo AND P < d.hi AND (P = d.target OR substr(P, 1,
# length(d.prefix)) = d.prefix)``, whose [lo, hi) range test rejects almost
# every pair with two comparisons (whether d's layer is above P's is each
# view's own test).
#
# The join orders below are forced (CROSS JOIN, INDEXED BY): without
# statistics SQLite assumes ~10 rows per key of any index and would, say,
# scan a whole layer by its primary key instead of probing entries_path, or
# start ghost_files from all 5M entries instead of from the few deletions.
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
    CASE e.type WHEN 0 THEN 'dir' WHEN 1 THEN 'file' WHEN 2 THEN 'symlink' WHEN 3 THEN 'hardlink' WHEN 4 THEN 'char' WHEN 5 THEN 'block' WHEN 6 THEN 'fifo' END AS type,
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
    """
CREATE VIEW layer_deletions AS
SELECT
    d.layer_id AS layer_id,
    d.position AS position,
    d.kind AS kind,
    p.path AS marker_path,
    d.target AS target,
    d.prefix AS prefix
FROM deletions d
JOIN entries e ON e.layer_id = d.layer_id AND e.position = d.position
JOIN paths p ON p.id = e.path_id""",
    # Driven from the deletions (few), through the paths they cover (a range
    # of the paths_path index) to the entries of lower layers at those paths.
    """
CREATE VIEW ghost_files AS
SELECT
    pf.image_id AS image_id,
    i.reference AS image,
    pf.id AS platform_id,
    pf.platform AS platform,
    pl.position AS layer_position,
    e.layer_id AS layer_id,
    l.digest AS layer_digest,
    e.position AS position,
    e.path_id AS path_id,
    vp.path AS path,
    vp.name AS name,
    CASE e.type WHEN 0 THEN 'dir' WHEN 1 THEN 'file' WHEN 2 THEN 'symlink' WHEN 3 THEN 'hardlink' WHEN 4 THEN 'char' WHEN 5 THEN 'block' WHEN 6 THEN 'fifo' END AS type,
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
    vp.path_bytes AS path_bytes,
    dl.position AS deleted_in_position,
    wp.path AS deleted_by,
    CASE d.kind WHEN 1 THEN 'whiteout' WHEN 2 THEN 'opaque' ELSE 'replaced' END AS deletion,
    EXISTS (
        SELECT 1 FROM platform_layers rl
        CROSS JOIN entries r INDEXED BY entries_path
            ON r.path_id = e.path_id AND r.layer_id = rl.layer_id
        WHERE rl.platform_id = dl.platform_id AND rl.position >= dl.position
          AND r.whiteout NOT IN (1, 2)
    ) AS recreated
FROM platforms pf
CROSS JOIN images i ON i.id = pf.image_id
CROSS JOIN platform_layers dl ON dl.platform_id = pf.id
CROSS JOIN deletions d ON d.layer_id = dl.layer_id
CROSS JOIN paths vp ON vp.path >= d.lo AND vp.path < d.hi
CROSS JOIN platform_layers pl ON pl.platform_id = dl.platform_id AND pl.position < dl.position
CROSS JOIN entries e INDEXED BY entries_path ON e.path_id = vp.id AND e.layer_id = pl.layer_id
CROSS JOIN layers l ON l.id = e.layer_id
CROSS JOIN entries w ON w.layer_id = d.layer_id AND w.position = d.position
CROSS JOIN paths wp ON wp.id = w.path_id
WHERE (vp.path = d.target OR substr(vp.path, 1, length(d.prefix)) = d.prefix)
  AND e.whiteout NOT IN (1, 2)
  AND NOT EXISTS (
    SELECT 1 FROM platform_layers dl2
    CROSS JOIN deletions d2 ON d2.layer_id = dl2.layer_id
    WHERE dl2.platform_id = dl.platform_id
      AND dl2.position > pl.position AND dl2.position <= dl.position
      AND (dl2.position < dl.position OR d2.position < d.position)
      AND vp.path >= d2.lo AND vp.path < d2.hi AND (vp.path = d2.target OR substr(vp.path, 1, length(d2.prefix)) = d2.prefix)
  )""",
    # Driven from the entries asked for (by name, path, platform...): each is
    # checked against the later entries at its path and the later deletions.
    """
CREATE VIEW visible_files AS
SELECT f.*
FROM image_files f
WHERE f.whiteout = 0
  AND NOT EXISTS (
    SELECT 1 FROM platform_layers sl
    CROSS JOIN entries s INDEXED BY entries_path
        ON s.path_id = f.path_id AND s.layer_id = sl.layer_id
    WHERE sl.platform_id = f.platform_id AND sl.position >= f.layer_position
      AND (sl.position > f.layer_position OR s.position > f.position)
  )
  AND NOT EXISTS (
    SELECT 1 FROM platform_layers dl
    CROSS JOIN deletions d ON d.layer_id = dl.layer_id
    WHERE dl.platform_id = f.platform_id AND dl.position > f.layer_position
      AND f.path >= d.lo AND f.path < d.hi AND (f.path = d.target OR substr(f.path, 1, length(d.prefix)) = d.prefix)
  )""",
]


@migrations()
def m001_initial(db):
    "Tables, indexes, the paths_fts trigram index, and the views."
    for statement in M001_TABLES + M001_VIEWS:
        db.execute(statement.strip())


@migrations()
def m002_i16_checkpoints(db):
    "Checkpoints into big gzip layers, so one file can be read with one Range request."
    # One row per checkpoint (every few MiB of a layer's compressed bytes):
    # rowid rather than WITHOUT ROWID because each row carries a ~10 KB blob.
    db.execute(
        """
CREATE TABLE checkpoints (
    layer_id INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    uncompressed INTEGER NOT NULL, -- offset in the layer's tar stream
    bits INTEGER NOT NULL,         -- offset in the blob, in bits (a deflate block boundary)
    window BLOB NOT NULL,          -- the 32 KiB of tar stream before it, zlib-compressed
    UNIQUE (layer_id, uncompressed)
)""".strip()
    )


@migrations()
def m003_i12_layer_notes(db):
    """layers.note: what a researcher should know of a layer that is no error,
    e.g. its pax global headers (the runtime applies them to no entry, so the
    index does not either, but their records may hide a name)."""
    db.execute("ALTER TABLE layers ADD COLUMN note TEXT")


# --- m010_i15_secrets --------------------------------------------------------
# Content scanning (layerslayer.secretscan) and the image config.
#
# ``findings``: one row per secret found, either in a file of a layer
# (``layer_id`` + ``position`` of the entry, ``line``) or in a platform's
# config Env, Labels or a history step (``platform_id``, ``location`` = the
# variable / label name or the step's position). ``fingerprint`` is the first
# 32 hex digits of the SHA-256 of the value (the same key in 500 images is
# one secret), ``preview`` its first and last few characters; ``value`` is
# NULL unless indexed with ``--keep-values``. ``layers.scanned`` is the size
# cap a layer's files were scanned with (NULL: not scanned), so a layer is
# scanned once, whichever image brought it.
#
# ``finding_locations``: one row per finding and platform that holds it, with
# ``state``: ``visible`` (the file is in the merged filesystem), ``deleted``
# (a later layer deletes it: a ghost finding, whether or not re-created),
# ``overwritten`` (a later layer replaces the file), ``config`` (Env, label or
# build step: shipped with the image's metadata). Driven from the findings
# (few), like ``ghost_files`` is from the deletions.
#
# ``config`` (User, WorkingDir, Cmd and Entrypoint as JSON arrays, StopSignal),
# ``config_env`` (in order), ``config_labels`` and ``config_ports``
# (ExposedPorts): the image config of each platform, joined by platform_id.

M010_TABLES = [
    "ALTER TABLE layers ADD COLUMN scanned INTEGER",
    """
CREATE TABLE findings (
    id INTEGER PRIMARY KEY,
    layer_id INTEGER REFERENCES layers(id) ON DELETE CASCADE,
    position INTEGER,
    platform_id INTEGER REFERENCES platforms(id) ON DELETE CASCADE,
    source TEXT NOT NULL CHECK (source IN ('file', 'env', 'label', 'history')),
    location TEXT,
    line INTEGER,
    detector TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    preview TEXT NOT NULL,
    value TEXT,
    CHECK ((layer_id IS NULL) != (platform_id IS NULL))
)""",
    "CREATE INDEX findings_layer ON findings(layer_id, position) WHERE layer_id IS NOT NULL",
    "CREATE INDEX findings_platform ON findings(platform_id) WHERE platform_id IS NOT NULL",
    "CREATE INDEX findings_fingerprint ON findings(fingerprint)",
    """
CREATE TABLE config (
    platform_id INTEGER PRIMARY KEY REFERENCES platforms(id) ON DELETE CASCADE,
    user TEXT,
    working_dir TEXT,
    cmd TEXT,
    entrypoint TEXT,
    stop_signal TEXT
)""",
    """
CREATE TABLE config_env (
    platform_id INTEGER NOT NULL REFERENCES platforms(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (platform_id, position)
) WITHOUT ROWID""",
    """
CREATE TABLE config_labels (
    platform_id INTEGER NOT NULL REFERENCES platforms(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (platform_id, name)
) WITHOUT ROWID""",
    """
CREATE TABLE config_ports (
    platform_id INTEGER NOT NULL REFERENCES platforms(id) ON DELETE CASCADE,
    port TEXT NOT NULL,
    PRIMARY KEY (platform_id, port)
) WITHOUT ROWID""",
]

M010_VIEWS = [
    """
CREATE VIEW finding_locations AS
SELECT
    f.id AS finding_id,
    pf.image_id AS image_id,
    i.reference AS image,
    pf.id AS platform_id,
    pf.platform AS platform,
    'file' AS source,
    pl.position AS layer_position,
    l.digest AS layer_digest,
    p.path AS location,
    f.line AS line,
    f.detector AS detector,
    f.fingerprint AS fingerprint,
    f.preview AS preview,
    f.value AS value,
    CASE
        WHEN EXISTS (
            SELECT 1 FROM platform_layers dl
            CROSS JOIN deletions d ON d.layer_id = dl.layer_id
            WHERE dl.platform_id = pl.platform_id AND dl.position > pl.position
              AND p.path >= d.lo AND p.path < d.hi AND (p.path = d.target OR substr(p.path, 1, length(d.prefix)) = d.prefix)
        ) THEN 'deleted'
        WHEN EXISTS (
            SELECT 1 FROM platform_layers sl
            CROSS JOIN entries s INDEXED BY entries_path
                ON s.path_id = e.path_id AND s.layer_id = sl.layer_id
            WHERE sl.platform_id = pl.platform_id AND sl.position >= pl.position
              AND (sl.position > pl.position OR s.position > e.position)
        ) THEN 'overwritten'
        ELSE 'visible'
    END AS state
FROM findings f
CROSS JOIN entries e ON e.layer_id = f.layer_id AND e.position = f.position
CROSS JOIN paths p ON p.id = e.path_id
CROSS JOIN layers l ON l.id = f.layer_id
CROSS JOIN platform_layers pl INDEXED BY platform_layers_layer ON pl.layer_id = f.layer_id
CROSS JOIN platforms pf ON pf.id = pl.platform_id
CROSS JOIN images i ON i.id = pf.image_id
WHERE f.layer_id IS NOT NULL
UNION ALL
SELECT
    f.id, pf.image_id, i.reference, pf.id, pf.platform, f.source, NULL, NULL, f.location, f.line,
    f.detector, f.fingerprint, f.preview, f.value, 'config'
FROM findings f
CROSS JOIN platforms pf ON pf.id = f.platform_id
CROSS JOIN images i ON i.id = pf.image_id
WHERE f.platform_id IS NOT NULL""",
]


@migrations()
def m010_i15_secrets(db):
    "Findings of content scanning, layers.scanned, the image config tables, finding_locations."
    for statement in M010_TABLES + M010_VIEWS:
        db.execute(statement.strip())
