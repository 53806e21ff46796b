"""Facets of the file views beyond Datasette's own (``register_facet_classes``)."""

from __future__ import annotations

from datasette.database import QueryInterrupted
from datasette.facets import Facet
from datasette.utils import escape_sqlite, path_with_added_args, path_with_removed_args


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
