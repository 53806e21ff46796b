"""A canonical dump of an index: every user-visible table and view, ids replaced by what they mean.

Two indexes built in different orders (one process, or shards merged) hold
the same facts under different row ids and times. ``canonical(path)`` maps
``id`` / ``image_id`` / ``platform_id`` / ``layer_id`` / ``path_id`` to the
natural keys (other tables' own row ids, e.g. findings', are dropped) (image: registry, repository, tag, digest; platform: its image
and manifest digest; layer: digest; path: text and bytes), drops
``indexed_at``, and returns ``{relation: sorted rows}``. The FTS index is
represented by its integrity check and the paths a few trigram queries find.
Plain sqlite3: the harness never imports layerslayer.
"""

from __future__ import annotations

import sqlite3

HIDDEN_SUFFIXES = ("_data", "_idx", "_docsize", "_config", "_content")
FTS_PROBES = ("*.txt", "*etc*", "*conf*", "*bin/*")


def canonical(path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        images = {r[0]: ("image", *r[1:]) for r in conn.execute("SELECT id, registry, repository, tag, digest FROM images")}
        platforms = {r[0]: ("platform", images[r[1]], r[2]) for r in conn.execute("SELECT id, image_id, manifest_digest FROM platforms")}
        layers = {r[0]: ("layer", r[1]) for r in conn.execute("SELECT id, digest FROM layers")}
        paths = {r[0]: ("path", r[1], r[2]) for r in conn.execute("SELECT id, path, path_bytes FROM paths")}
        maps = {"image_id": images, "platform_id": platforms, "layer_id": layers, "path_id": paths}
        own = {"images": images, "platforms": platforms, "layers": layers, "paths": paths}
        relations = conn.execute(
            "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name").fetchall()
        fts = {name for name, type_, sql in relations if sql and "VIRTUAL TABLE" in sql.upper()}
        out: dict[str, list] = {}
        for name, _type, _sql in relations:
            if name.startswith("sqlite_") or name == "_sqlite_migrations" or name in fts:
                continue
            if any(name == f + s for f in fts for s in HIDDEN_SUFFIXES):
                continue
            cursor = conn.execute(f"SELECT * FROM [{name}]")
            columns = [d[0] for d in cursor.description]
            rows = []
            for row in cursor:
                item = []
                for col, value in zip(columns, row):
                    if col == "indexed_at":
                        continue
                    if (col == "id" and name not in own) or col == "finding_id":
                        continue  # a row id of its own (findings): the row's other columns say what it is
                    if col == "id" and name in own:
                        value = own[name][value]
                    elif col in maps and value is not None:
                        value = maps[col][value]
                    item.append(value)
                rows.append(tuple(item))
            out[name] = sorted(rows, key=repr)
        for name in fts:
            conn.execute(f"INSERT INTO [{name}]([{name}], rank) VALUES ('integrity-check', 1)")
            for probe in FTS_PROBES:
                found = conn.execute(f"SELECT rowid FROM [{name}] WHERE path GLOB ?", [probe]).fetchall()
                out[f"{name} GLOB {probe}"] = sorted((paths[r[0]] for r in found), key=repr)
        return out
    finally:
        conn.close()
