"""`browse`: view one file of an indexed layer (a Datasette plugin of its own).

A "view" link beside each regular file of the ``files`` table fetches the file
from a registry the layer was indexed from, the way ``cat --db`` does (TOC
offsets, a checkpoint and one Range request, or streaming up to it), with the
credentials ``browse`` was started with. Nothing is written to the index: it
is read through its own read-only connection. Text is shown escaped, anything
else as a hex dump of its first KiB; a download link gives the bytes.

Kept apart from :mod:`layerslayer.datasette_plugin` (it only adds to what that
plugin renders) so the two can change independently.
"""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import urllib.parse

import markupsafe
from datasette import hookimpl
from datasette.utils import await_me_maybe
from datasette.utils.asgi import Response

#: The most a view shows; a download gives up to DOWNLOAD_CAP.
VIEW_CAP = 1 << 20
DOWNLOAD_CAP = 64 << 20
HEX_BYTES = 1024

_options: dict[int, object] = {}  # id(datasette) -> ClientOptions browse was started with


def set_options(datasette, options) -> None:
    "Registry options (credentials, --plain-http) for the views served by ``datasette``."
    _options[id(datasette)] = options


def view_url(datasette, database: str, digest: str, offset: int) -> str:
    return datasette.urls.path(f"/-/layerslayer/{urllib.parse.quote(database, safe='')}/view/{digest}?offset={offset}")


@hookimpl(tryfirst=True)
def render_cell(row, value, column, table, database, datasette):
    from .datasette_plugin import is_index
    from .datasette_plugin import render_cell as plugin_render_cell

    if column == "listed_via" and table == "layers" and isinstance(value, str) and is_index(datasette, database):
        return _how_read(row, value, database, datasette)
    if column != "path" or not isinstance(value, str) or not is_index(datasette, database):
        return None
    keys = row.keys() if hasattr(row, "keys") else ()
    if not {"layer_digest", "offset", "type"} <= set(keys) or row["type"] != "file":
        return None
    # The main plugin's own rendering of the cell (a ghost row's copy-ready
    # command included), with the view link after it.
    shown = plugin_render_cell(row, value, column, table, database, datasette)
    href = view_url(datasette, database, row["layer_digest"], row["offset"])
    link = markupsafe.Markup(f' <a class="ll-view" href="{html.escape(href, quote=True)}" title="Show its contents">view</a>')

    async def inner():
        return (await await_me_maybe(shown) or markupsafe.escape(value)) + link

    return inner


def _how_read(row, listed_via: str, database: str, datasette):
    "How `cat --db` and the view read a file of this layer: by TOC, from checkpoints, or streaming."
    if listed_via.endswith("-toc"):
        return markupsafe.Markup(f"{html.escape(listed_via)} <small>(files read by TOC offsets)</small>")
    layer_id = row["id"] if "id" in row.keys() else None

    async def inner():
        count = 0
        if layer_id is not None:
            count = (await datasette.get_database(database).execute(
                "SELECT count(*) FROM checkpoints WHERE layer_id = ?", [layer_id])).single_value()
        how = f"{count} checkpoints: files read with one Range request" if count else "stream only"
        return markupsafe.Markup(f"{html.escape(listed_via)} <small>({how})</small>")
    return inner


CHECKPOINTS_METADATA = {
    "description": "Where inflating a big gzip layer can resume (see `layerslayer index --span`): "
                   "`cat --db`, `extract --db` and the view links read one file from the checkpoint before it.",
    "columns": {
        "layer_id": "The layer (layers.id).",
        "uncompressed": "Offset in the layer's tar stream where the checkpoint is.",
        "bits": "Offset in the compressed blob, in bits: a deflate block boundary.",
        "window": "The 32 KiB of tar stream before it (zlib-compressed), the dictionary inflating resumes with.",
    },
    "hidden": True,
}


@hookimpl
def get_metadata(datasette, key, database, table):
    from .datasette_plugin import index_databases

    return {"databases": {name: {"tables": {"checkpoints": CHECKPOINTS_METADATA}}
                          for name in index_databases(datasette)}}


@hookimpl
def register_routes(datasette):
    return [(r"^/-/layerslayer/(?P<database>[^/]+)/view/(?P<digest>[a-z0-9]+:[0-9a-f]+)$", view_file)]


class _Enough(Exception):
    "The cap was reached: stop reading."


class _Capped:
    def __init__(self, cap: int):
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False

    def write(self, data: bytes) -> None:
        room = self.cap - self.size
        self.parts.append(data[:room])
        self.size += min(len(data), room)
        if len(data) > room:
            self.truncated = True
            raise _Enough()

    def flush(self) -> None:
        pass


def read_indexed_file(db_file: str, digest: str, offset: int, options, cap: int) -> tuple[str, _Capped, list[str]]:
    """(path, content up to ``cap``, notes) of the entry at ``offset`` of layer
    ``digest``, fetched from a registry and image the index names."""
    from . import store
    from .catfile import cat_planned
    from .errors import LayerslayerError, NotFound
    from .extraction import LayerPlan
    from .image import open_image
    from .options import ClientOptions
    from .reference import Reference
    from .seekable import plan_seek

    conn = sqlite3.connect("file:" + urllib.parse.quote(db_file) + "?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA query_only = 1")
        row = conn.execute(
            'SELECT path, type, size FROM files WHERE layer_digest = ? AND "offset" = ?', [digest, offset]).fetchone()
        if row is None or row[1] != "file":
            raise NotFound(f"no regular file at offset {offset} of layer {digest} in this index")
        path = row[0]
        holders = store.images_with_layer(conn, digest)
        plan = LayerPlan({offset}, offset, paths={path})
        if (store.layer_listed_via(conn, digest) or "").endswith("-toc"):
            plan.toc = True
        checkpoints = store.layer_checkpoints(conn, digest)
        extents = store.entry_extents(conn, digest, [offset])
    finally:
        conn.close()
    if not holders:
        raise NotFound(f"the index knows no image holding layer {digest}")
    notes: list[str] = []
    options = options or ClientOptions()
    error: LayerslayerError | None = None
    for registry, repository, tag, manifest_digest in holders:
        try:
            client = options.client(registry)
            _, image = open_image(client, Reference(registry, repository, tag, manifest_digest))
            layer = next(lay for lay in image.layers if lay.digest == digest)
            if not plan.toc:
                plan.seek = plan_seek(checkpoints, extents, layer.size)
            out = _Capped(cap)
            try:
                report = cat_planned(client, repository, layer, plan, out, message=notes.append)
            except _Enough:
                report = None
            if report is not None:
                notes.append(f"{sum(r.fetched for r in report.layers):,} bytes of the layer fetched")
            return path, out, notes
        except LayerslayerError as failure:  # try the next image holding the layer
            error = failure
    raise error  # type: ignore[misc]


async def view_file(request, datasette):
    from .datasette_plugin import _check

    database = urllib.parse.unquote(request.url_vars["database"])
    digest = request.url_vars["digest"]
    refused = await _check(request, datasette, database, "layers")
    if refused is not None:
        return refused
    try:
        offset = int(request.args.get("offset", ""))
    except ValueError:
        return Response.html("offset must be a number", status=400)
    download = request.args.get("download") == "1"
    db_file = datasette.get_database(database).path
    from .errors import LayerslayerError, NotFound

    try:
        path, out, notes = await asyncio.to_thread(
            read_indexed_file, db_file, digest, offset, _options.get(id(datasette)),
            DOWNLOAD_CAP if download else VIEW_CAP)
    except LayerslayerError as error:
        status = 404 if isinstance(error, NotFound) else 502
        return Response.html(f"<p>Cannot read this file: {html.escape(str(error))}</p>", status=status)
    data = b"".join(out.parts)
    name = path.rpartition("/")[2]
    if download:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "file"
        return Response(data, content_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{safe}"'})
    try:
        text = data.decode("utf-8")
        binary = "\0" in text
    except UnicodeDecodeError:
        binary = True
    if binary:
        lines = []
        for at in range(0, min(len(data), HEX_BYTES), 16):
            piece = data[at:at + 16]
            printable = "".join(chr(b) if 32 <= b < 127 else "." for b in piece)
            lines.append(f"{at:08x}  {piece.hex(' '):<47}  {printable}")
        body = "\n".join(lines)
        what = f"binary: the first {min(len(data), HEX_BYTES):,} bytes in hex"
    else:
        body = text
        what = "text" + (f", the first {VIEW_CAP:,} bytes" if out.truncated else "")
    back = datasette.urls.table(database, "files")
    download_href = f"{request.path}?offset={offset}&download=1"
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(path)}</title></head><body>"
        f"<p><a href='{html.escape(back, quote=True)}'>files</a> / <code>{html.escape(path)}</code> "
        f"in layer <code>{html.escape(digest)}</code> ({html.escape(what)}) · "
        f"<a href='{html.escape(download_href, quote=True)}'>download</a></p>"
        + "".join(f"<p><small>{html.escape(note)}</small></p>" for note in notes)
        + f"<pre class='ll-file'>{html.escape(body)}</pre></body></html>"
    )
    return Response.html(page)
