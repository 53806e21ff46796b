"""``find``: the entries whose paths match glob patterns, with their
deleted / visible status, and the layers that hold matches
(``export --match``). Read-only, like :mod:`layerslayer.query`, whose helpers
it uses.

How a ``find`` runs
===================

1. **Patterns → candidate paths.** Every distinct path is stored once
   (``paths``), so patterns are first matched against paths, not against the
   millions of entry rows. Each pattern gets the cheapest plan that is sure
   to return a *superset* of its matches
   (:func:`layerslayer.globplan.plan_pattern`, whose module docstring lists
   the plans).

2. **Exact check.** Every candidate path is then tested with the very
   matcher :mod:`layerslayer.patterns` gives ``extract`` and ``export``, on the
   path's real value (non-UTF-8 names included), so **the plan never changes
   the result, only the speed** (the tests run every plan against a plain
   scan).

3. **Entries.** The matching path ids drive an index lookup of ``entries``
   (``entries_path``), then the platforms and images that hold each layer.
   When ``--image``/``--platform``/``--layer`` narrow the search to fewer
   entries than the paths would fetch, the scoped layers drive instead.

4. **Deleted / visible.** For the rows found, the whiteouts that could delete
   them (``dir/.wh.NAME`` of the path or an ancestor, ``.wh..wh..opq`` in an
   ancestor, a non-directory replacing an ancestor directory) and the other
   entries of the same path are looked up by key, and each row gets
   ``deleted`` (a *ghost*: removed by a later layer of that platform, still in
   its own blob), ``deleted_in_layer``, ``deleted_by``, ``recreated`` and
   ``visible`` (present in the final merged filesystem), with exactly the
   rules of the ``ghost_files`` and ``visible_files`` views (see
   ``layerslayer.migrations``) and of :mod:`layerslayer.overlay`, which states
   them once in Python (``tests/test_overlay.py`` holds all three together).

Whiteout markers themselves (``.wh.*``) are not files and never show up in
``find`` (``ls --layer N`` lists them).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .errors import UsageError
from .globplan import plan_pattern
from .oci import ENTRY_TYPES, TYPE_CODES, TYPE_LETTERS, is_whiteout
from .patterns import Pattern, compile_patterns, parse_pattern
from .presets import get_preset
from .query import (
    Hit,
    StatusReader,
    connection,
    no_gc,
    parse_size,
    platform_condition,
    resolve_images,
    resolve_layer,
    top_positions,
    without_gc,
)
from .store import path_from_row

__all__ = ["BATCH_ROWS", "FIELDS", "FindQuery", "LayerMatch", "find", "count", "layers_matching"]

# Matches worked out at a time (statuses, then entry columns) when --limit
# may stop early or the caller streams.
BATCH_ROWS = 4000

FIELDS = tuple(Hit("", "", "", 0, "", "", "file", 0, 0, 0, 0, "", "", 0, "", 0, 0).as_dict())

#: An entry's columns as find reads them (after the row's keys).
_ENTRY_COLUMNS = (
    'e.type, e.size, e.mode, e.uid, e.gid, e.uname, e.gname, e.mtime, e.linkname, e.whiteout, e."offset", '
    "e.header_size"
)


# ---------------------------------------------------------------------------
# find


def _combined_matcher(typed: list[Pattern], presets: list[tuple[list[Pattern], list[Pattern]]],
                      excluded: list[Pattern]) -> Callable[[str], bool]:
    """What ``find`` keeps: a typed pattern, or a preset's pattern outside
    that preset's own excludes; never a path ``--exclude`` names."""
    parts: list[Callable[[str], bool]] = []
    if typed:
        parts.append(compile_patterns(typed))
    for included, excludes in presets:
        inc = compile_patterns(included)
        if excludes:
            exc = compile_patterns(excludes)
            parts.append(lambda path, inc=inc, exc=exc: inc(path) and not exc(path))
        else:
            parts.append(inc)
    match = parts[0] if len(parts) == 1 else (lambda path: any(part(path) for part in parts))
    if not excluded:
        return match
    out = compile_patterns(excluded)
    return lambda path: match(path) and not out(path)


class FindQuery:
    """``find`` as a library call::

        q = FindQuery(db, ["*.pem", "id_rsa"], images=["nginx:latest"], deleted=True)
        for hit in q.hits(): ...
        q.count(); q.explain()

    ``db`` is an ``open_db()`` database (or an sqlite3 connection). Patterns
    follow :mod:`layerslayer.patterns`; ``presets`` adds the patterns of
    named presets (case-insensitive). ``types`` are ``find -type`` letters or
    entry type names. Raises :class:`UsageError` (exit 2) for bad input and
    :class:`~layerslayer.query.UnknownImage` for an ``--image`` that matches nothing.

    ``source`` picks what drives the row query instead of letting the cost
    estimate choose (the answer is the same): ``"paths"`` (the matching path
    ids), ``"layers"`` (the layers in scope, joined to those ids) or
    ``"layers-scan"`` (every entry of the layers in scope, matched in SQL).
    """

    #: What can drive the row query (``source``).
    SOURCES = ("paths", "layers", "layers-scan")

    def __init__(
        self,
        db,
        patterns: Sequence[str | Pattern] = (),
        *,
        ignore_case: bool = False,
        presets: Sequence[str] = (),
        images: Sequence[str] = (),
        platform: str | None = None,
        types: Sequence[str] = (),
        min_size: int | str | None = None,
        max_size: int | str | None = None,
        layer: str | None = None,
        deleted: bool = False,
        visible: bool = False,
        limit: int | None = None,
        exclude: Sequence[str] = (),
        with_secrets: bool = False,
        source: str | None = None,
    ):
        if source not in (None, *self.SOURCES):
            raise UsageError(f"source must be one of {', '.join(self.SOURCES)}, not {source!r}")
        self.source = source
        self.db = db
        self.conn = connection(db)
        parsed: list[Pattern] = []
        typed: list[Pattern] = []
        preset_parts: list[tuple[list[Pattern], list[Pattern]]] = []
        try:
            for p in patterns:
                typed.append(p if isinstance(p, Pattern) else parse_pattern(p, ignore_case))
            for name in presets:
                try:
                    preset = get_preset(name)
                except KeyError as e:
                    raise UsageError(e.args[0]) from None
                preset_parts.append(([parse_pattern(p, True) for p in preset.patterns],
                                     [parse_pattern(p, True) for p in preset.excludes]))
            excluded = [parse_pattern(p, ignore_case) for p in exclude]
            if with_secrets and not typed and not preset_parts:
                typed.append(parse_pattern("*"))  # every file with findings
        except ValueError as e:
            raise UsageError(str(e)) from None
        parsed = typed + [p for included, _ in preset_parts for p in included]
        if not parsed:
            raise UsageError("give at least one pattern or preset")
        try:
            self.matcher = _combined_matcher(typed, preset_parts, excluded)
        except re.error as e:
            raise UsageError(f"invalid pattern: {e}") from None
        self.with_secrets = with_secrets
        self.patterns = parsed
        self.plans = [plan_pattern(p) for p in parsed]
        self.types: list[int] = []
        for t in types:
            for part in str(t).split(","):
                part = part.strip()
                if not part:
                    continue
                name = TYPE_LETTERS.get(part, part)
                if name not in TYPE_CODES:
                    raise UsageError(f"invalid type {part!r}: use {'|'.join(TYPE_LETTERS)}")
                if TYPE_CODES[name] not in self.types:
                    self.types.append(TYPE_CODES[name])
        self.min_size = parse_size(min_size) if min_size is not None else None
        self.max_size = parse_size(max_size) if max_size is not None else None
        if deleted and visible:
            raise UsageError("deleted and visible exclude each other (a deleted file is not visible)")
        self.deleted = deleted
        self.visible = visible
        if limit is not None and limit < 0:
            raise UsageError("limit must be 0 or more")
        self.limit = limit
        # Scope
        self.image_ids = resolve_images(db, images) if images else None
        self.platform = platform
        self.platform_ids = self._platforms() if (images or platform) else None
        self.layer_id = resolve_layer(db, layer, self.platform_ids) if layer not in (None, "") else None
        self._ids: list[int] | None = None
        self._paths: dict[int, str] = {}          # path id → real path, of the matches
        self._source: tuple | None = None
        self._attest: list[int] | None = None
        self._platforms_seen: dict[int, tuple] = {}

    # -- scope
    def _platforms(self) -> list[int]:
        where, params = ["pf.attestation = 0"], []
        if self.image_ids is not None:
            where.append(f"pf.image_id IN ({','.join('?' * len(self.image_ids))})")
            params += self.image_ids
        if self.platform:
            cond, more = platform_condition(self.platform)
            where.append(cond)
            params += more
        ids = [r[0] for r in self.conn.execute(f"SELECT pf.id FROM platforms pf WHERE {' AND '.join(where)}", params)]
        if not ids and self.platform:
            known = sorted({r[0] for r in self.conn.execute(
                "SELECT platform FROM platforms pf WHERE attestation = 0"
                + (f" AND pf.image_id IN ({','.join('?' * len(self.image_ids))})" if self.image_ids else ""),
                self.image_ids or [],
            ) if r[0]})
            raise UsageError(f"no indexed platform {self.platform}" + (f" (indexed: {', '.join(known)})" if known else ""))
        return ids

    def _scoped_layers(self) -> list[int] | None:
        if self.platform_ids is None:
            return [self.layer_id] if self.layer_id is not None else None
        rows = self.conn.execute(
            "SELECT DISTINCT pl.layer_id FROM json_each(?) j CROSS JOIN platform_layers pl ON pl.platform_id = j.value",
            [json.dumps(self.platform_ids)],
        ).fetchall()
        layers = [r[0] for r in rows]
        if self.layer_id is not None:
            layers = [lid for lid in layers if lid == self.layer_id]
        return layers

    # -- candidate paths
    def path_ids(self) -> list[int]:
        """Ids of the distinct paths that match (candidates from the plans,
        checked exactly). Whiteout markers (``.wh.*``) are never files."""
        if self._ids is None:
            candidates: dict[int, tuple[str, bytes | None]] = {}
            if self.with_secrets:  # findings are few: they are the candidates
                plans = [("SELECT DISTINCT p.id, p.path, p.path_bytes FROM findings f "
                          "CROSS JOIN entries e ON e.layer_id = f.layer_id AND e.position = f.position "
                          "CROSS JOIN paths p ON p.id = e.path_id WHERE f.layer_id IS NOT NULL", [])]
            else:
                plans = [(plan.sql, plan.params) for plan in self.plans]
            for sql, params in plans:
                for pid, path, path_bytes in self.conn.execute(sql, params):
                    candidates[pid] = (path, path_bytes)
            match = self.matcher
            paths = self._paths
            for pid, (path, path_bytes) in candidates.items():
                real = path if path_bytes is None else path_from_row(path, path_bytes)
                if match(real) and not is_whiteout(real):
                    paths[pid] = real
            self._ids = sorted(paths)
        return self._ids

    def _choose_source(self) -> tuple:
        """("paths", ids) | ("layers", layers, ids) | ("layers-scan", layers): what drives the row query."""
        if self._source is not None:
            return self._source
        layers = self._scoped_layers()
        if self.source is not None:
            if self.source == "paths":
                self._source = ("paths", self.path_ids())
                return self._source
            if layers is None:
                layers = [r[0] for r in self.conn.execute("SELECT id FROM layers WHERE status = 'indexed'")]
            self._source = ("layers", layers, self.path_ids()) if self.source == "layers" else ("layers-scan", layers)
            return self._source
        layer_rows = None
        if layers is not None:
            layer_rows = self.conn.execute(
                "SELECT coalesce(sum(l.entries), 0) FROM json_each(?) j JOIN layers l ON l.id = j.value",
                [json.dumps(layers)],
            ).fetchone()[0]
        if layers is not None and not self.with_secrets and any(p.method == "scan" for p in self.plans):
            total_paths = self.conn.execute("SELECT coalesce(max(id), 0) FROM paths").fetchone()[0]
            if layer_rows < total_paths:
                self._source = ("layers-scan", layers)
                return self._source
        ids = self.path_ids()
        if layers is not None:
            total_entries, total_paths = self.conn.execute(
                "SELECT (SELECT coalesce(sum(entries), 0) FROM layers WHERE status = 'indexed'), "
                "(SELECT coalesce(max(id), 0) FROM paths)"
            ).fetchone()
            per_path = total_entries / total_paths if total_paths else 0
            if layer_rows < len(ids) * per_path:
                self._source = ("layers", layers, ids)
                return self._source
        self._source = ("paths", ids)
        return self._source

    def _attestations(self) -> list[int]:
        "Attestation platforms that have a layer stack (never, from our indexer; kept out if one does)."
        if self._attest is None:
            self._attest = [r[0] for r in self.conn.execute(
                "SELECT DISTINCT pl.platform_id FROM platforms pf JOIN platform_layers pl ON pl.platform_id = pf.id "
                "WHERE pf.attestation = 1"
            )]
        return self._attest

    def _sql(self, select: str) -> tuple[str, list]:
        """The row query: one row per (entry, platform holding its layer),
        scoped and filtered, reading only indexes unless a type or size filter
        needs the entry itself."""
        source = self._choose_source()
        params: list = [json.dumps(source[1])]
        where: list[str] = []
        if source[0] == "paths":
            head = "FROM json_each(?) j CROSS JOIN entries e ON e.path_id = j.value "
            if self.layer_id is not None:
                where.append("e.layer_id = ?")
                params.append(self.layer_id)
        else:
            head = "FROM json_each(?) jl CROSS JOIN entries e ON e.layer_id = jl.value "
            if source[0] == "layers":
                where.append("e.path_id IN (SELECT value FROM json_each(?))")
                params.append(json.dumps(source[2]))
            else:
                match = self.matcher
                self.conn.create_function(
                    "layerslayer_find_match", 2,
                    lambda path, path_bytes: 1 if match(path if path_bytes is None else path_from_row(path, path_bytes)) else 0,
                    deterministic=True,
                )
                head += "CROSS JOIN paths p ON p.id = e.path_id "
                where += ["e.whiteout NOT IN (1, 2)", "layerslayer_find_match(p.path, p.path_bytes)"]
        head += "CROSS JOIN platform_layers pl ON pl.layer_id = e.layer_id "
        if self.platform_ids is not None:
            where.append("pl.platform_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(self.platform_ids))
        attestations = self._attestations()
        if attestations:
            where.append(f"pl.platform_id NOT IN ({','.join(str(a) for a in attestations)})")
        if self.types:
            where.append(f"e.type IN ({','.join(str(t) for t in self.types)})")
        if self.with_secrets:
            where.append("EXISTS (SELECT 1 FROM findings f WHERE f.layer_id = e.layer_id AND f.position = e.position)")
        if self.min_size is not None:
            where.append("e.size >= ?")
            params.append(self.min_size)
        if self.max_size is not None:
            where.append("e.size <= ?")
            params.append(self.max_size)
        return f"SELECT {select} {head}" + (f"WHERE {' AND '.join(where)}" if where else ""), params

    def _no_rows(self) -> bool:
        source = self._choose_source()
        return not source[1] or (source[0] == "layers" and not source[2])

    def _rows(self, full: bool = False) -> list[tuple]:
        """(platform_id, layer_index, layer_id, position, path_id) of every
        match, in output order; with ``full``, followed by the entry's columns
        (:data:`_ENTRY_COLUMNS`), read in the same pass."""
        if self._no_rows():
            return []
        scan = self._choose_source()[0] == "layers-scan"
        columns = "pl.platform_id, pl.position, e.layer_id, e.position, e.path_id"
        if full:
            columns += ", " + _ENTRY_COLUMNS
        sql, params = self._sql(columns + (", p.path, p.path_bytes" if scan else ""))
        rows = self.conn.execute(sql, params).fetchall()
        if scan:
            paths = self._paths
            for row in rows:
                if row[4] not in paths:
                    paths[row[4]] = row[-2] if row[-1] is None else path_from_row(row[-2], row[-1])
            rows = [row[:-2] for row in rows]
        platforms = self._platform_info({row[0] for row in rows})
        order = sorted(platforms, key=lambda pid: (platforms[pid][2], platforms[pid][1], platforms[pid][0], pid))
        rank = {pid: n for n, pid in enumerate(order)}
        rows.sort(key=lambda row: (rank[row[0]], row[1], row[3]))
        return rows

    def _platform_info(self, platform_ids: Iterable[int]) -> dict[int, tuple]:
        "platform id → (platform, image id, image reference, image digest)."
        todo = [pid for pid in set(platform_ids) if pid not in self._platforms_seen]
        if todo:
            for pid, platform, image_id, reference, digest in self.conn.execute(
                "SELECT pf.id, pf.platform, i.id, i.reference, i.digest FROM json_each(?) j "
                "CROSS JOIN platforms pf ON pf.id = j.value CROSS JOIN images i ON i.id = pf.image_id",
                [json.dumps(todo)],
            ):
                self._platforms_seen[pid] = (platform or "", image_id, reference, digest)
        return self._platforms_seen

    def _selected(self, full: bool = False, step: int | None = None) -> Iterator[tuple[tuple, tuple]]:
        """(row, status) of each match kept by --deleted / --visible, in order,
        up to --limit; statuses are worked out ``step`` rows at a time."""
        rows = self._rows(full)
        status = StatusReader(self.conn)
        # Without a type, size or layer filter the rows hold every entry of
        # their paths in their platforms: the top entry of each is among them.
        complete = not (self.types or self.min_size is not None or self.max_size is not None or self.layer_id is not None)
        tops = top_positions(rows) if complete else None
        produced = 0
        limit = self.limit
        filtering = self.deleted or self.visible
        # In one go, unless --limit may stop early (or the caller streams).
        if step is None:
            step = BATCH_ROWS if limit is not None else max(len(rows), 1)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            if limit is not None and not filtering:
                chunk = chunk[: limit - produced]
            for row, state in zip(chunk, status.compute(chunk, self._paths, tops)):
                if (self.deleted and state[0] is None) or (self.visible and not state[3]):
                    continue
                yield row, state
                produced += 1
                if limit is not None and produced >= limit:
                    return

    def _entries(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
        "(layer id, position) → the entry's columns, each entry read once however many images hold it."
        packed = sorted({(layer_id << 32) | position for layer_id, position in keys})
        out: dict[tuple[int, int], tuple] = {}
        for start in range(0, len(packed), 50_000):
            for row in self.conn.execute(
                f"SELECT e.layer_id, e.position, {_ENTRY_COLUMNS} FROM json_each(?) j "
                "CROSS JOIN entries e ON e.layer_id = (j.value >> 32) AND e.position = (j.value & 4294967295)",
                [json.dumps(packed[start : start + 50_000])],
            ):
                out[(row[0], row[1])] = row[2:]
        return out

    def _layer_digests(self, layer_ids: Iterable[int]) -> dict[int, str]:
        return dict(self.conn.execute(
            "SELECT l.id, l.digest FROM json_each(?) j CROSS JOIN layers l ON l.id = j.value",
            [json.dumps(sorted(set(layer_ids)))],
        ).fetchall())

    def iter_hits(self, lean: bool = False) -> Iterator[Hit]:
        """The matching rows, ordered by image, platform, layer and tar position.

        ``lean``: for a caller that streams a big answer, hold as little as
        possible (the keys of the rows, then each batch's entry columns and
        status; about a third of the memory, a little slower)."""
        # Without --limit every row is wanted: its entry columns come with it
        # in one pass. With --limit they are read for the rows kept only.
        full = self.limit is None and not lean
        selected = self._selected(full, BATCH_ROWS * 10 if lean and self.limit is None else None)
        platforms = self._platforms_seen
        paths = self._paths
        types = ENTRY_TYPES
        digests: dict[int, str] = {}
        while True:
            batch = list(itertools.islice(selected, BATCH_ROWS))
            if not batch:
                return
            entries = None if full else self._entries((row[2], row[3]) for row, _ in batch)
            digests.update(self._layer_digests({row[2] for row, _ in batch} - digests.keys()))
            for row, (deleted_in, deleted_by, recreated, visible) in batch:
                platform_id, index, layer_id, position, path_id = row[:5]
                (type_code, size, mode, uid, gid, uname, gname, mtime, linkname, code, offset,
                 header_size) = row[5:] if entries is None else entries[(layer_id, position)]
                platform, image_id, image, image_digest = platforms[platform_id]
                yield Hit(
                    image, image_digest, platform, index, digests[layer_id], paths[path_id], types[type_code],
                    size, mode, uid, gid, uname, gname, mtime, linkname, offset, offset + header_size, "",
                    deleted_in is not None, deleted_in, deleted_by, recreated, visible,
                    image_id, platform_id, layer_id, position, path_id, code,
                )

    def hits(self) -> list[Hit]:
        "Every matching row (as :meth:`iter_hits`), built in one go."
        with no_gc():
            return list(self.iter_hits())

    def count(self) -> int:
        "How many rows :meth:`hits` would give (``--limit`` applies)."
        if self._no_rows():
            return 0
        if self.deleted or self.visible:
            with no_gc():
                return sum(1 for _ in self._selected())
        sql, params = self._sql("count(*)")
        n = self.conn.execute(sql, params).fetchone()[0]
        return min(n, self.limit) if self.limit is not None else n

    def missing_layers(self) -> dict[str, int]:
        """Layers of the searched images whose files cannot be in the answer,
        by status: ``failed``, ``pending`` (not indexed yet, or the run was
        interrupted) and ``foreign`` (non-distributable, never fetched); {}
        when every layer is indexed. ``--layer`` scopes it to that layer."""
        where = ["pf.attestation = 0", "l.status != 'indexed'"]
        params: list = []
        if self.platform_ids is not None:
            where.append("pl.platform_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(self.platform_ids))
        if self.layer_id is not None:
            where.append("l.id = ?")
            params.append(self.layer_id)
        rows = self.conn.execute(
            "SELECT l.status, count(DISTINCT l.id) FROM layers l JOIN platform_layers pl ON pl.layer_id = l.id "
            f"JOIN platforms pf ON pf.id = pl.platform_id WHERE {' AND '.join(where)} GROUP BY l.status",
            params,
        ).fetchall()
        return {status: n for status, n in rows if n}

    def explain(self) -> list[str]:
        "One line per pattern plan, then the entry source (for ``find --explain``)."
        lines = [plan.describe() for plan in self.plans]
        source = self._choose_source()
        if source[0] == "paths":
            lines.append(f"entries: by path id ({len(source[1])} matching paths)")
        elif source[0] == "layers":
            lines.append(f"entries: by layer ({len(source[1])} scoped layers, {len(source[2])} matching paths)")
        else:
            lines.append(f"entries: by layer ({len(source[1])} scoped layers), paths checked as they come")
        return lines


def find(db, patterns: Sequence[str | Pattern] = (), **options) -> list[Hit]:
    "``find`` as one call: the list of :class:`Hit` (options as :class:`FindQuery`)."
    return FindQuery(db, patterns, **options).hits()


def count(db, patterns: Sequence[str | Pattern] = (), **options) -> int:
    "``find --count`` as one call."
    return FindQuery(db, patterns, **options).count()


# ---------------------------------------------------------------------------
# export --match / extract --db: layers holding matches


@dataclass
class LayerMatch:
    """An indexed layer holding entries (not whiteout markers) that match.

    Also readable as a mapping (``m["digest"]``, ``m.get("size")``)."""

    digest: str
    media_type: str | None
    size: int | None
    matches: int           # matching entries in the layer
    last_offset: int       # header offset of the last matching entry (uncompressed tar)
    data_end: int          # end of the last matching entry's content: nothing after it is needed
    sources: list[tuple[str, str]] = field(default_factory=list)  # (registry, repository) to fetch it from

    def __getitem__(self, key: str):
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)


@without_gc
def layers_matching(
    db,
    patterns: Sequence[str | Pattern],
    *,
    ignore_case: bool = False,
    images: Sequence[str] = (),
    platform: str | None = None,
) -> list[LayerMatch]:
    """The indexed layers holding entries that match ``patterns`` (deleted ones
    included: their bytes are in the blob), ordered by layer id, with where
    to fetch each. ``images``/``platform`` narrow it like ``find``'s options."""
    q = FindQuery(db, patterns, ignore_case=ignore_case, images=images, platform=platform)
    conn = q.conn
    if q.platform_ids is None:
        ids = q.path_ids()
        if not ids:
            return []
        sql = (
            'SELECT l.id, l.digest, l.media_type, l.size, count(*), max(e."offset"), '
            'max(e."offset" + e.header_size + e.size) '
            "FROM json_each(?) j CROSS JOIN entries e ON e.path_id = j.value "
            "CROSS JOIN layers l ON l.id = e.layer_id "
            "WHERE e.whiteout NOT IN (1, 2) AND l.status = 'indexed' GROUP BY l.id ORDER BY l.id"
        )
        rows = conn.execute(sql, [json.dumps(ids)]).fetchall()
    else:
        keys = {(row[2], row[3]) for row, _ in q._selected()}  # each entry once, whatever the platforms
        per_layer: dict[int, list] = {}
        for (layer_id, _), (_, size, *_, offset, header_size) in q._entries(keys).items():
            agg = per_layer.setdefault(layer_id, [0, 0, 0])
            agg[0] += 1
            agg[1] = max(agg[1], offset)
            agg[2] = max(agg[2], offset + header_size + size)
        info = {r[0]: r[1:] for r in conn.execute(
            "SELECT l.id, l.digest, l.media_type, l.size FROM json_each(?) j CROSS JOIN layers l ON l.id = j.value",
            [json.dumps(sorted(per_layer))],
        )}
        rows = [(lid, *info[lid], *per_layer[lid]) for lid in sorted(per_layer)]
    out = []
    for layer_id, digest, media_type, size, matches, last_offset, data_end in rows:
        sources = [
            (r[0], r[1]) for r in conn.execute(
                "SELECT registry, repository FROM layer_sources WHERE layer_id = ? ORDER BY registry, repository",
                [layer_id],
            )
        ]
        out.append(LayerMatch(digest, media_type, size, matches, last_offset, data_end, sources))
    return out
