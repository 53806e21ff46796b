"""Cells of an index in Datasette (``render_cell``): short digests with the full
value on hover, human sizes, ``-rwxr-xr-x`` modes, ISO 8601 times, links file ->
layer -> image, copy-ready commands; and the URLs of those pages."""

from __future__ import annotations

import functools
import html
import json
import urllib.parse

import markupsafe

from .. import display, oci
from . import view
from .databases import is_index
from .sqlfunctions import ghost_extract_command

DIGEST_COLUMNS = {"digest", "layer_digest", "image_digest", "manifest_digest", "config_digest"}
SIZE_COLUMNS = {"size", "bytes_read", "total_size"}


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
    return markupsafe.Markup(
        f'<span class="ll-size" title="{value:,} bytes" style="white-space:nowrap">{html.escape(display.human_size(value))}</span>'
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
        if column == "layer_id" and oci.is_digest(value.get("label")):
            return _digest_html(value["label"], layer_url(datasette, database, value["value"]))
        return None

    if column in DIGEST_COLUMNS and oci.is_digest(value):
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


def render_cell(row, value, column: str, table: str | None, database: str, datasette):
    """The ``render_cell`` hook's answer: None for other databases and for the
    cells Datasette shows as they are; a callable where the answer needs a query."""
    if not is_index(datasette, database):
        return None
    if column == "listed_via" and table == "layers" and isinstance(value, str):
        return view.listed_via_cell(row, value, database, datasette)
    shown = _index_cell(row, value, column, table, database, datasette)
    if view.has_view_link(row, value, column):
        return view.with_view_link(row, value, database, datasette, shown)
    return shown


def _index_cell(row, value, column: str, table: str | None, database: str, datasette):
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
