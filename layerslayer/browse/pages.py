"""The pages the templates (``templates/``) add to: an index's start (counts,
find box, queries, links), the layer and image panels of their row pages, and
the notice that says why a search finds nothing."""

from __future__ import annotations

import re

import markupsafe

from .. import display, oci
from ..patterns import compile_patterns
from .databases import index_databases, is_index
from .queries import GLOB_HINT_HTML, canned_query_definitions
from .render import image_url, layer_url
from .sqlfunctions import truthy, usable_pattern

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
        platform = r["platform"] if oci.is_index(r["media_type"]) else None
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
    multi = oci.is_index(image["media_type"])
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
        if not usable_pattern(pattern):
            return "Type a pattern, e.g. *.pem, id_rsa or /etc/ssh/*."
        try:
            compile_patterns([pattern], ignore_case=truthy(request.args.get("ignore_case")))
        except (ValueError, re.error) as error:
            reason = str(error).split(" at position")[0]  # a position in the regex, not in the pattern
            return f"No file can match {pattern!r}: it is not a valid glob ({reason})."
    return None


def template_vars(database: str | None, table: str | None, view_name: str, request, datasette):
    """What ``extra_template_vars`` adds to a page: the start of every index on
    the home page, an index's start on its database page, notices on table and
    query pages, the layer and image panels on their row pages (``row.html``)."""
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
