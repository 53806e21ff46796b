"""`browse`: view one file of an indexed layer.

A "view" link beside each regular file of the ``files`` table fetches the file
from a registry the layer was indexed from, the way ``cat --db`` does (TOC
offsets, a checkpoint and one Range request, or streaming up to it), with the
credentials ``browse`` was started with. Nothing is written to the index: it
is read through its own read-only connection. Text is shown escaped, anything
else as a hex dump of its first KiB; a download link gives the bytes.

The package's ``render_cell`` adds the link (:func:`with_view_link`) and
``register_routes`` serves :func:`view_file`; the cat machinery is imported
when a file is first viewed, not when Datasette starts.
"""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import urllib.parse

import markupsafe
from datasette.utils import await_me_maybe
from datasette.utils.asgi import Response

from ..errors import LayerslayerError, NotFound
from .databases import check_access

#: The most a view shows; a download gives up to DOWNLOAD_CAP.
VIEW_CAP = 1 << 20
DOWNLOAD_CAP = 64 << 20
HEX_BYTES = 1024

_options: dict[int, object] = {}  # id(datasette) -> ClientOptions browse was started with


def set_options(datasette, options) -> None:
    "Registry options (credentials, --plain-http) for the views served by ``datasette``."
    _options[id(datasette)] = options


#: The view's route (``register_routes``): a database and a layer digest, the entry's offset as ``?offset=``.
ROUTE = r"^/-/layerslayer/(?P<database>[^/]+)/view/(?P<digest>[a-z0-9]+:[0-9a-f]+)$"


def view_url(datasette, database: str, digest: str, offset: int) -> str:
    return datasette.urls.path(f"/-/layerslayer/{urllib.parse.quote(database, safe='')}/view/{digest}?offset={offset}")


def has_view_link(row, value, column: str) -> bool:
    "Does this cell get a view link: the path of a regular file whose layer and offset the row gives?"
    if column != "path" or not isinstance(value, str):
        return False
    keys = row.keys() if hasattr(row, "keys") else ()
    return {"layer_digest", "offset", "type"} <= set(keys) and row["type"] == "file"


def with_view_link(row, value: str, database: str, datasette, shown):
    """The cell as the package renders it otherwise (``shown``, a ghost row's
    copy-ready command included), with the view link after it."""
    href = view_url(datasette, database, row["layer_digest"], row["offset"])
    link = markupsafe.Markup(f' <a class="ll-view" href="{html.escape(href, quote=True)}" title="Show its contents">view</a>')

    async def inner():
        return (await await_me_maybe(shown) or markupsafe.escape(value)) + link

    return inner


def listed_via_cell(row, listed_via: str, database: str, datasette):
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
    # Imported on the first view, not when Datasette starts: the download
    # machinery (and ``requests``) is needed only to fetch a file.
    from .. import store
    from ..catfile import cat_planned
    from ..extraction import LayerPlan
    from ..image import open_image
    from ..options import ClientOptions
    from ..reference import Reference
    from ..seekable import plan_seek

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
    database = urllib.parse.unquote(request.url_vars["database"])
    digest = request.url_vars["digest"]
    refused = await check_access(request, datasette, database, "layers")
    if refused is not None:
        return refused
    try:
        offset = int(request.args.get("offset", ""))
    except ValueError:
        return Response.html("offset must be a number", status=400)
    download = request.args.get("download") == "1"
    db_file = datasette.get_database(database).path
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
