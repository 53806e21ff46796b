"""The canned queries of an index, as data: their SQL and the text the
database page shows for each. Pattern queries take their candidate paths from
the plan `find` picks (:func:`layerslayer.query.plan_pattern`) and check them
with `find`'s matcher, through the SQL functions of :mod:`.sqlfunctions`."""

from __future__ import annotations

import copy
import functools

from ..query import plan_pattern, preset_patterns

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
