"""Requests the package answers itself: redirects used by links in query
results (which carry digests and references, not row ids), the file view,
and the column order of the file views' HTML pages."""

from __future__ import annotations

import html
import re
import urllib.parse

from datasette.utils.asgi import Response

from . import view
from .databases import check_access, is_index
from .render import image_url, layer_url


async def _redirect_layer(request, datasette):
    # Routes match the raw (percent-encoded) path under a real server.
    database = urllib.parse.unquote(request.url_vars["database"])
    digest = urllib.parse.unquote(request.url_vars["digest"])
    refused = await check_access(request, datasette, database, "layers")
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
    refused = await check_access(request, datasette, database, "images")
    if refused is not None:
        return refused
    rows = (await datasette.get_database(database).execute(
        "SELECT id FROM images WHERE reference = ? ORDER BY id", [reference])).rows
    if len(rows) == 1:
        return Response.redirect(image_url(datasette, database, rows[0]["id"]))
    query = urllib.parse.urlencode({"reference": reference})
    return Response.redirect(datasette.urls.table(database, "images") + "?" + query)


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


def ordered_columns(datasette):
    "The ``asgi_wrapper``: HTML pages of the file views with their columns in reading order."
    def wrap(app):
        async def ordered(scope, receive, send):
            if scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD"):
                scope = await _ordered_scope(datasette, scope)
            await app(scope, receive, send)

        return ordered

    return wrap


def routes() -> list:
    "The routes ``register_routes`` adds: redirects by digest and reference, and the file view."
    return [
        (r"^/-/layerslayer/(?P<database>[^/]+)/layer/(?P<digest>[^/]+)$", _redirect_layer),
        (r"^/-/layerslayer/(?P<database>[^/]+)/image$", _redirect_image),
        (view.ROUTE, view.view_file),
    ]
