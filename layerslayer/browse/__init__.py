"""Datasette plugin for layerslayer indexes: ``layerslayer browse`` (or a plain
``datasette index.db``, through the ``datasette`` entry point) shows the index
as a recon tool rather than a table dump.

This module holds only the hook implementations; each delegates to the module
that owns the job. What they add, only to databases that are layerslayer
indexes (recognised by their migrations record, :mod:`.databases`; other
databases in the same Datasette are left alone):

* metadata (:mod:`.metadata`): title, descriptions of every table, view and
  column people see, label columns, default sorts, facets (image, platform,
  type, file extension, :mod:`.facets`) and path search;
* canned queries (:mod:`.queries`): files by glob, the secrets preset, ghost
  files, largest files, shared layers, images that contain a path, findings;
* cells (:mod:`.render`): short digests with the full value on hover, human
  sizes, ``-rwxr-xr-x`` modes, ISO 8601 times, links file -> layer -> image,
  and a "view" link that fetches a file's contents (:mod:`.view`);
* pages (:mod:`.pages` and ``templates/``, which Datasette finds beside this
  package): an index's start page, and on the layer and image row pages which
  images use a layer and the exact ``layerslayer save`` / ``extract``
  commands that fetch it, an image's layers per platform;
* SQL functions (:mod:`.sqlfunctions`) for the queries, with ``find``'s
  pattern rules; read-only connections (``PRAGMA query_only``);
* routes (:mod:`.routes`): redirects by digest or reference, the file view.

:mod:`.server` is the ``browse`` command: it starts Datasette with this plugin.

Porting to Datasette 1.0 touches this module and :mod:`.metadata`: 1.0 has
no ``get_metadata`` hook (the same data is applied at ``startup`` instead,
see :mod:`.metadata`). Canned queries, cells, facets, routes and SQL functions
keep their hooks. Two things outside those files to check
then: the one ``ensure_permissions`` call (:func:`.databases.check_access`),
which 1.0's later alphas rework, and the block names ``templates/`` extends.
"""

from __future__ import annotations

from datasette import hookimpl

from ..display import human_size
from . import facets, metadata, pages, queries, render, routes, sqlfunctions
from .databases import is_index


@hookimpl(trylast=True)
def prepare_connection(conn, database, datasette):
    # trylast: the search box's escape_fts replaces Datasette's own (sqlfunctions.register).
    sqlfunctions.register(conn, index=is_index(datasette, database))


@hookimpl
def get_metadata(datasette, key, database, table):
    return metadata.plugin_metadata(datasette)


@hookimpl
def canned_queries(datasette, database, actor):
    if not is_index(datasette, database):
        return None
    return queries.canned_query_definitions()


@hookimpl(tryfirst=True)
def render_cell(row, value, column, table, database, datasette):
    # tryfirst: the path cells of an index carry the view link even when another plugin renders paths.
    return render.render_cell(row, value, column, table, database, datasette)


@hookimpl
def extra_template_vars(template, database, table, columns, view_name, request, datasette):
    return pages.template_vars(database, table, view_name, request, datasette)


@hookimpl(tryfirst=True)
def prepare_jinja2_environment(env, datasette):
    env.filters["layerslayer_size"] = human_size


@hookimpl
def register_facet_classes():
    return [facets.ExtensionFacet]


@hookimpl
def asgi_wrapper(datasette):
    return routes.ordered_columns(datasette)


@hookimpl
def register_routes(datasette):
    return routes.routes()
