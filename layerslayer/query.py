"""Read-only queries over an index, and what ``find`` and ``ls`` share:
which images, platforms and layers ``--image``/``--platform``/``--layer``
select, the result row (:class:`Hit`) and its deleted / visible status;
``ls`` and ``images``. ``find`` itself is :mod:`layerslayer.find`, its
pattern plans :mod:`layerslayer.globplan`.

Nothing here writes to the database (``store.py`` and ``merge.py`` are the
only writers).

Which images ``--image`` selects (:func:`match_images`)
-------------------------------------------------------
``registry/repo:tag`` as indexed (``localhost:5000/team/app:v1``), the short
Docker Hub form (``nginx:latest``, ``library/nginx:latest``,
``docker.io/library/nginx:latest``), a repository without tag (every tag
indexed), ``repo@sha256:…``, or a digest (``sha256:…``, a unique prefix will
do; image index digest or platform manifest digest). Without an explicit
registry host, the repository matches in any registry.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from . import overlay
from .display import mode_string
from .errors import UsageError
from .globplan import successor
from .oci import DIGEST_ALGORITHMS, ENTRY_TYPES, OPAQUE, WHITEOUT
from .presets import get_preset
from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES, looks_like_domain, parse_platform
from .selectors import choose_platform, parse_layer_selector, select_layer
from .store import path_from_row, path_text

__all__ = [
    "UnknownImage", "Hit", "ImageSummary", "PlatformSummary", "list_files", "list_images", "match_images",
    "parse_size", "preset_patterns", "DELETER_KEYS_MAX", "DELETERS_PER_PATH", "StatusReader", "connection",
    "no_gc", "platform_condition", "resolve_images", "resolve_layer", "top_positions", "without_gc",
]


class UnknownImage(UsageError):
    "An --image / REF that matches no indexed image (exit status 2)."


# Up to this many deleting entries (whiteouts, opaque markers, files over
# directories) in the layers involved (or 5 per path found, if more), all of
# them are loaded; beyond, only those at paths that could delete a match.
DELETER_KEYS_MAX = 2_000
DELETERS_PER_PATH = 5


def connection(db) -> sqlite3.Connection:
    "The sqlite3 connection of ``db`` (an ``open_db()`` database or a connection)."
    return getattr(db, "conn", db)


_Result = TypeVar("_Result")


def without_gc(fn: Callable[..., _Result]) -> Callable[..., _Result]:
    "Decorator: run ``fn`` under :func:`no_gc`."
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with no_gc():
            return fn(*args, **kwargs)

    return wrapper


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a result is built: the rows
    are plain tuples and slotted objects (no cycles; reference counting frees
    them), and collections triggered by allocating tens of thousands of them
    would cost as much as building them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------
# Sizes, modes, presets


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)b?\s*$", re.I)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str | int) -> int:
    """``10M`` → 10000000. The one size unit of every command (the sizes they
    print too, see :func:`layerslayer.display.human_size`): ``K``, ``M``,
    ``G``, ``T`` are powers of 1000, optionally followed by ``B``; ``Ki``,
    ``Mi``... (``KiB``, ``MiB``...) powers of 1024; any case; decimals
    allowed (``1.5G``); a plain number is bytes. UsageError on anything else."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match or (match.group(3) and not match.group(2)):
        raise UsageError(f"invalid size {text!r}: use bytes or a number with K, M, G or T (e.g. 10M, 1.5G, 2MiB)")
    base = 1024 if match.group(3) else 1000
    return int(float(match.group(1)) * base ** _POWERS[match.group(2).lower()])


def preset_patterns(name: str) -> list[str]:
    "The patterns of preset ``name`` (KeyError listing the presets if unknown)."
    return list(get_preset(name).patterns)


# ---------------------------------------------------------------------------
# Images, platforms, layers: what --image / --platform / --layer select


_HEX = re.compile(r"^[0-9a-f]+$")


def _digest_prefix(text: str) -> str | None:
    "'sha256:abcd…' or a bare hex string of >= 12 digits → a digest prefix to match; else None."
    text = text.strip().lower()
    if ":" in text:
        algorithm, _, hex_part = text.partition(":")
        if algorithm in DIGEST_ALGORITHMS and hex_part and _HEX.match(hex_part):
            return text
        return None
    if len(text) >= 12 and _HEX.match(text):
        return text
    return None


def _digest_condition(column: str, prefix: str) -> tuple[str, list]:
    if ":" in prefix:
        return f"substr({column}, 1, ?) = ?", [len(prefix), prefix]
    return f"substr({column}, instr({column}, ':') + 1, ?) = ?", [len(prefix), prefix]


def match_images(db, spec: str) -> list[int]:
    "Ids of the indexed images ``spec`` names (see the module docstring); [] if none."
    conn = connection(db)
    spec = spec.strip()
    if not spec:
        return []
    digest = _digest_prefix(spec)
    if digest is not None:
        cond_i, params_i = _digest_condition("i.digest", digest)
        cond_p, params_p = _digest_condition("pf.manifest_digest", digest)
        rows = conn.execute(
            f"SELECT DISTINCT i.id FROM images i LEFT JOIN platforms pf ON pf.image_id = i.id "
            f"WHERE {cond_i} OR {cond_p} ORDER BY i.id",
            params_i + params_p,
        ).fetchall()
        if rows:
            return [r[0] for r in rows]
    exact = conn.execute("SELECT id FROM images WHERE reference = ? ORDER BY id", [spec]).fetchall()
    if exact:
        return [r[0] for r in exact]
    name, _, at_digest = spec.partition("@")
    tag = None
    if name.rfind(":") > name.rfind("/"):
        name, _, tag = name.rpartition(":")
    first, sep, rest = name.partition("/")
    where, params = [], []
    if sep and looks_like_domain(first):
        registry = DOCKER_HUB if first in DOCKER_HUB_ALIASES else first
        repos = [rest, f"library/{rest}"] if registry == DOCKER_HUB and "/" not in rest else [rest]
        where.append("i.registry = ?")
        params.append(registry)
    else:
        repos = [name] if "/" in name else [name, f"library/{name}"]
    where.append(f"i.repository IN ({','.join('?' * len(repos))})")
    params += repos
    if tag:
        where.append("i.tag = ?")
        params.append(tag)
    if at_digest:
        cond_i, params_i = _digest_condition("i.digest", at_digest.lower())
        cond_p, params_p = _digest_condition("pf.manifest_digest", at_digest.lower())
        where.append(f"({cond_i} OR {cond_p})")
        params += params_i + params_p
    rows = conn.execute(
        "SELECT DISTINCT i.id FROM images i LEFT JOIN platforms pf ON pf.image_id = i.id "
        f"WHERE {' AND '.join(where)} ORDER BY i.id",
        params,
    ).fetchall()
    return [r[0] for r in rows]


def resolve_images(db, specs: Sequence[str]) -> list[int]:
    "Ids of the images ``specs`` name, in order, once each; UnknownImage for a spec that names none."
    ids: list[int] = []
    for spec in specs:
        found = match_images(db, spec)
        if not found:
            raise UnknownImage(f"no indexed image matches {spec!r} (Index.images() lists them)")
        ids += [i for i in found if i not in ids]
    return ids


def platform_condition(wanted: str) -> tuple[str, list]:
    """SQL over ``platforms pf`` true where ``selectors.platform_matches(pf.platform, wanted)`` is:
    the columns read as the platform string spells them (an empty os or
    architecture is ``unknown``, an empty variant none)."""
    os_name, arch, variant = parse_platform(wanted)
    cond = "coalesce(nullif(pf.os, ''), 'unknown') = ? AND coalesce(nullif(pf.architecture, ''), 'unknown') = ?"
    params: list = [os_name, arch]
    if variant is not None:
        # arm64 images often omit the implied v8 variant.
        cond += " AND coalesce(nullif(pf.variant, ''), CASE WHEN pf.architecture = 'arm64' THEN 'v8' END) = ?"
        params.append(variant)
    return f"(({cond}) OR pf.platform = ?)", params + [wanted]


def resolve_layer(db, text: str | int, platform_ids: Sequence[int] | None = None) -> int:
    """The id of the indexed layer ``text`` selects (``selectors.parse_layer_selector``).

    With one platform in ``platform_ids``: a layer of its stack, by index or
    digest, as ``ls`` reads it. Otherwise a digest (or unique hex prefix)
    anywhere in the index; an index then needs that one platform.
    """
    conn = connection(db)
    if platform_ids is not None and len(platform_ids) == 1:
        stack = conn.execute(
            "SELECT l.id, l.digest FROM platform_layers pl JOIN layers l ON l.id = pl.layer_id "
            "WHERE pl.platform_id = ? ORDER BY pl.position",
            list(platform_ids),
        ).fetchall()
        return select_layer(stack, text, digest=lambda row: row[1])[0]
    selector = parse_layer_selector(text)
    if selector.index is not None:
        raise UsageError(f"layer {selector.text} is an index, which needs the search narrowed to one image "
                         "platform; give the layer's digest otherwise")
    cond, params = _digest_condition("digest", selector.digest)
    rows = conn.execute(f"SELECT id, digest FROM layers WHERE {cond} LIMIT 2", params).fetchall()
    if not rows:
        raise UsageError(f"the index has no layer {selector.text}")
    if len(rows) > 1:
        raise UsageError(f"{selector.text} matches more than one layer of the index: give more digits")
    return rows[0][0]


# ---------------------------------------------------------------------------
# Result rows


@dataclass(slots=True)
class Hit:
    """One entry of one layer, as seen from one image platform."""

    image: str            # images.reference (the short form: nginx:latest, localhost:5000/a/b:v1)
    image_digest: str
    platform: str
    layer_index: int      # position in the platform's stack, 0 = base layer
    layer_digest: str
    path: str             # the real path (bytes that are not UTF-8 as surrogates, like tarstream.Entry)
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    mtime: float | None
    linkname: str
    offset: int           # header offset in the uncompressed tar stream
    data_offset: int      # content offset in the uncompressed tar stream
    whiteout: str = ""    # "" | "whiteout" | "opaque" (markers only appear in `ls --layer`)
    deleted: bool = False          # removed by a later layer of this platform (a ghost)
    deleted_in_layer: int | None = None
    deleted_by: str | None = None  # the marker (or replacing file) that removed it
    recreated: bool = False        # deleted, then the same path came back in a later layer
    visible: bool = False          # present in the platform's final merged filesystem
    image_id: int = 0
    platform_id: int = 0
    layer_id: int = 0
    position: int = 0              # position of the entry in its layer's tar
    path_id: int = 0
    code: int = 0                  # entries.whiteout: 1 marker, 2 opaque marker, 3 replaces a directory
    implicit: bool = False         # ls --depth: a directory with no tar entry of its own (mode, owner, time unknown)

    @property
    def mode_string(self) -> str:
        return "d?????????" if self.implicit else mode_string(self.type, self.mode)

    def as_dict(self) -> dict:
        "The JSON / CSV record (``path`` as text: bytes that are not UTF-8 as \\xNN, ``path_hex`` exact)."
        text, raw = path_text(self.path)
        deleted_by = path_text(self.deleted_by)[0] if self.deleted_by is not None else None
        return {
            "image": self.image,
            "image_digest": self.image_digest,
            "platform": self.platform,
            "layer_index": self.layer_index,
            "layer_digest": self.layer_digest,
            "path": text,
            "path_hex": raw.hex() if raw is not None else None,
            "type": self.type,
            "size": self.size,
            "mode": self.mode,
            "permissions": self.mode_string,
            "uid": self.uid,
            "gid": self.gid,
            "uname": self.uname,
            "gname": self.gname,
            "mtime": self.mtime,
            "linkname": self.linkname,
            "whiteout": self.whiteout or None,
            "deleted": self.deleted,
            "deleted_in_layer": self.deleted_in_layer,
            "deleted_by": deleted_by,
            "recreated": self.recreated,
            "visible": self.visible,
            "offset": self.offset,
            "data_offset": self.data_offset,
            "implicit": self.implicit,
        }



_ROW_COLUMNS = (
    'i.id, i.reference, i.digest, pf.id, pf.platform, pl.position, e.layer_id, l.digest, e.position, '
    'e.path_id, p.path, p.path_bytes, e.type, e.size, e.mode, e.uid, e.gid, e.uname, e.gname, e.mtime, '
    'e.linkname, e.whiteout, e."offset", e.header_size'
)


def _hit(row) -> Hit:
    (image_id, image, image_digest, platform_id, platform, layer_index, layer_id, layer_digest, position,
     path_id, path, path_bytes, type_code, size, mode, uid, gid, uname, gname, mtime, linkname, whiteout,
     offset, header_size) = row
    return Hit(
        image, image_digest, platform or "", layer_index, layer_digest,
        path if path_bytes is None else path_from_row(path, path_bytes),
        ENTRY_TYPES[type_code], size, mode, uid, gid, uname, gname, mtime, linkname, offset, offset + header_size,
        "whiteout" if whiteout == WHITEOUT else "opaque" if whiteout == OPAQUE else "",
        image_id=image_id, platform_id=platform_id, layer_id=layer_id, position=position, path_id=path_id,
        code=whiteout,
    )


# ---------------------------------------------------------------------------
# Deleted / visible


def top_positions(rows: Iterable[tuple]) -> dict[tuple[int, int], tuple[int, int]]:
    "(platform, path id) → the highest (layer index, position) among ``rows``."
    tops: dict[tuple[int, int], tuple[int, int]] = {}
    get = tops.get
    for row in rows:
        key = (row[0], row[4])
        here = (row[1], row[3])
        top = get(key)
        if top is None or here > top:
            tops[key] = here
    return tops


class StatusReader:
    """Deleted / visible for rows ``(platform_id, layer_index, layer_id,
    position, path_id)`` (read-only; caches across calls of one query)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.stacks: dict[int, list[int]] = {}                 # platform → layer id by position
        self.positions: dict[int, dict[int, list[int]]] = {}   # platform → layer id → positions
        self.occ: dict[tuple[int, int], int] = {}              # (path id, layer id) → last tar position
        self.occ_loaded: set[int] = set()
        self.deleters: dict[str, list[tuple[int, int, int, str]]] = {}  # real path → [(code, layer, tar pos, path)]
        self.keys_looked_up: set[str] = set()
        self.layers_loaded: set[int] = set()   # layers whose deleting entries are all loaded
        self.killers: dict[int, list[tuple[int, int, str]]] = {}  # path id → what may delete it
        self.deleters_indexed = -1
        self.deleter_rows = 0
        self.seen_deleters: set[tuple[int, int, int]] = set()
        self.self_or_below: dict[str, list] = {}  # code 1 targets: the path itself and below
        self.below: dict[str, list] = {}          # codes 2 and 3: below the directory ("" = root)

    def _index_deleters(self) -> None:
        "What each loaded deleting entry deletes, keyed for an ancestor walk."
        self.self_or_below, self.below = {}, {}
        for real, found in self.deleters.items():
            for code, layer_id, position, marker in found:
                target, prefix = overlay.scope(code, real)
                if target is not None:
                    self.self_or_below.setdefault(target, []).append((layer_id, position, marker))
                else:
                    self.below.setdefault(prefix[:-1], []).append((layer_id, position, marker))
        self.deleters_indexed = self.deleter_rows
        self.killers.clear()

    def _killers(self, path: str) -> list[tuple[int, int, str]]:
        "(layer id, tar position, deleting path) of every loaded entry that deletes ``path`` from lower layers."
        if not self.deleters:
            return []
        out = list(self.self_or_below.get(path, ()))
        below, self_or_below = self.below, self.self_or_below
        out += below.get("", ())
        cut = path.find("/")
        while cut != -1:
            ancestor = path[:cut]
            out += self_or_below.get(ancestor, ())
            out += below.get(ancestor, ())
            cut = path.find("/", cut + 1)
        return out

    def _load_stacks(self, platform_ids: Iterable[int]) -> None:
        todo = sorted(set(platform_ids) - self.stacks.keys())
        for pid in todo:
            self.stacks[pid] = []
            self.positions[pid] = {}
        for start in range(0, len(todo), 50_000):
            for pid, position, layer_id in self.conn.execute(
                "SELECT pl.platform_id, pl.position, pl.layer_id FROM json_each(?) j "
                "CROSS JOIN platform_layers pl ON pl.platform_id = j.value ORDER BY pl.platform_id, pl.position",
                [json.dumps(todo[start : start + 50_000])],
            ):
                stack = self.stacks[pid]
                while len(stack) < position:
                    stack.append(-1)
                stack.append(layer_id)
                self.positions[pid].setdefault(layer_id, []).append(position)

    def _load_occ(self, path_ids: Iterable[int]) -> None:
        todo = sorted(set(path_ids) - self.occ_loaded)
        self.occ_loaded.update(todo)
        occ = self.occ
        for start in range(0, len(todo), 50_000):
            for path_id, layer_id, position in self.conn.execute(
                "SELECT e.path_id, e.layer_id, max(e.position) FROM json_each(?) j "
                "CROSS JOIN entries e ON e.path_id = j.value GROUP BY e.path_id, e.layer_id",
                [json.dumps(todo[start : start + 50_000])],
            ):
                occ[(path_id, layer_id)] = position

    def _add_deleter(self, code: int, path: str, path_bytes, layer_id: int, position: int) -> None:
        real = path if path_bytes is None else path_from_row(path, path_bytes)
        self.deleters.setdefault(real, []).append((code, layer_id, position, real))
        self.seen_deleters.add((code, layer_id, position))
        self.deleter_rows += 1

    def _load_deleters(self, paths: set[str], layer_ids: set[int]) -> None:
        """Load the deleting entries (codes 1-3) that may delete ``paths`` in
        ``layer_ids``: every one of those layers (``entries_deletions``
        index; real layers hold a handful), or, when they hold many, only
        those at the paths that could delete ours (looked up by key)."""
        todo = sorted(layer_ids - self.layers_loaded)
        if not todo:
            return
        most = max(DELETER_KEYS_MAX, DELETERS_PER_PATH * len(paths))
        found = self.conn.execute(
            "SELECT e.whiteout, p.path, p.path_bytes, e.layer_id, e.position FROM json_each(?) j "
            "CROSS JOIN entries e ON e.layer_id = j.value AND e.whiteout > 0 "
            "CROSS JOIN paths p ON p.id = e.path_id LIMIT ?",
            [json.dumps(todo), most + 1],
        ).fetchall()
        if len(found) <= most:
            for code, path, path_bytes, layer_id, position in found:
                if (code, layer_id, position) not in self.seen_deleters:
                    self._add_deleter(code, path, path_bytes, layer_id, position)
            self.layers_loaded.update(todo)
            return
        keys = {key for p in paths for key, _ in overlay.deleter_keys(p)} - self.keys_looked_up
        if not keys:
            return
        self.keys_looked_up |= keys
        lookup = sorted({path_text(k)[0] for k in keys})
        for start in range(0, len(lookup), 20_000):
            for code, path, path_bytes, layer_id, position in self.conn.execute(
                "SELECT e.whiteout, p.path, p.path_bytes, e.layer_id, e.position FROM json_each(?) j "
                "CROSS JOIN paths p ON p.path = j.value "
                "CROSS JOIN entries e ON e.path_id = p.id WHERE e.whiteout > 0",
                [json.dumps(lookup[start : start + 20_000])],
            ):
                if layer_id not in self.layers_loaded and (code, layer_id, position) not in self.seen_deleters:
                    self._add_deleter(code, path, path_bytes, layer_id, position)

    def compute(self, rows: Sequence[tuple], paths: dict[int, str],
                tops: dict[tuple[int, int], tuple[int, int]] | None = None) -> list[tuple]:
        """For each row, ``(deleted_in_layer, deleted_by, recreated, visible)``
        (``deleted_in_layer`` None when not deleted). Rows are
        ``(platform_id, layer_index, layer_id, position, path_id, ...)`` of
        non-marker entries; ``paths`` maps their path ids to real paths.
        ``tops`` ((platform, path id) → top (layer index, position)) may come
        from :func:`top_positions` when the caller holds every entry of those paths."""
        if not rows:
            return []
        self._load_stacks(r[0] for r in rows)
        if tops is None:
            self._load_occ(r[4] for r in rows)
            tops = {}
        involved = {lid for pid in {r[0] for r in rows} for lid in self.positions[pid]}
        self._load_deleters({paths[r[4]] for r in rows}, involved)
        occ, stacks, positions = self.occ, self.stacks, self.positions
        killers_of = self.killers
        if self.deleter_rows != self.deleters_indexed:
            self._index_deleters()
        out = []
        for row in rows:
            platform_id, index, _, position, path_id = row[:5]
            key = (platform_id, path_id)
            top = tops.get(key)
            if top is None:
                top = (index, position)
                stack = stacks[platform_id]
                for q in range(len(stack) - 1, index - 1, -1):
                    found = occ.get((path_id, stack[q]))
                    if found is not None:
                        top = (q, found)
                        break
                tops[key] = top
            killers = killers_of.get(path_id)
            if killers is None:
                killers = killers_of[path_id] = self._killers(paths[path_id])
            if not killers:
                out.append((None, None, False, top == (index, position)))
                continue
            best = None
            if killers:
                where = positions[platform_id]
                for lid, tpos, marker in killers:
                    for q in where.get(lid, ()):
                        if q > index and (best is None or (q, tpos) < best[:2]):
                            best = (q, tpos, marker)
            if best is None:
                out.append((None, None, False, top == (index, position)))
            else:
                out.append((best[0], best[2], top[0] >= best[0], False))
        return out

    def annotate(self, hits: list[Hit]) -> None:
        "Set the status fields of ``hits`` (markers are left neither deleted nor visible)."
        real = [h for h in hits if not h.whiteout]
        rows = [(h.platform_id, h.layer_index, h.layer_id, h.position, h.path_id) for h in real]
        for h, (deleted_in, deleted_by, recreated, visible) in zip(real, self.compute(rows, {h.path_id: h.path for h in real})):
            h.deleted = deleted_in is not None
            h.deleted_in_layer, h.deleted_by, h.recreated, h.visible = deleted_in, deleted_by, recreated, visible


# ---------------------------------------------------------------------------
# ls


def _choose_image(db, ref: str) -> int:
    ids = resolve_images(db, [ref])
    if len(ids) == 1:
        return ids[0]
    rows = connection(db).execute(
        f"SELECT id, registry, repository, tag, reference, indexed_at FROM images WHERE id IN ({','.join('?' * len(ids))}) "
        "ORDER BY indexed_at DESC, id DESC",
        ids,
    ).fetchall()
    names = {(r[1], r[2], r[3]) for r in rows}
    if len(names) == 1:
        return rows[0][0]  # one tag indexed at several digests: the latest
    shown = ", ".join(sorted({r[4] for r in rows})[:5])
    raise UsageError(f"{ref!r} matches {len(names)} images ({shown}{', ...' if len(names) > 5 else ''}): name one")


def _choose_platform(db, image_id: int, wanted: str | None) -> tuple[int, str]:
    "(id, platform) of the image's platform to list: ``selectors.choose_platform`` over the indexed ones."
    rows = connection(db).execute(
        "SELECT id, platform FROM platforms WHERE image_id = ? AND attestation = 0 ORDER BY id", [image_id]
    ).fetchall()
    if not rows:
        raise UsageError("that image has no indexed platform")
    chosen = choose_platform([row[1] or "" for row in rows], wanted)
    if chosen is None:
        raise UsageError(f"no platform {wanted} indexed for that image (indexed: {', '.join(r[1] or '?' for r in rows)})")
    return rows[chosen]


@without_gc
def list_files(
    db,
    ref: str,
    path: str | None = None,
    *,
    layer: int | str | None = None,
    platform: str | None = None,
    depth: int | None = None,
) -> list[Hit]:
    """``ls``: the entries at or below ``path`` (every entry without it), sorted by path.

    ``depth`` keeps what is at most that many levels below ``path`` (``path``
    itself is level 0; without ``path``, top-level entries are level 1), plus
    an ``implicit`` row for each directory at those levels that has entries
    below it but no tar entry of its own, so nothing vanishes at the cut.

    With ``layer`` (an index, negative from the top, or a digest prefix) the
    raw entries of that one layer, whiteout markers included; otherwise the
    merged filesystem of the platform: layers applied in order, whiteouts and
    opaque directories honoured, the top entry of each path kept. Raises
    UnknownImage / UsageError for a bad REF, platform or layer.
    """
    conn = connection(db)
    image_id = _choose_image(db, ref)
    platform_id, _ = _choose_platform(db, image_id, platform)
    stack = conn.execute(
        "SELECT pl.position, l.id, l.digest, l.status FROM platform_layers pl JOIN layers l ON l.id = pl.layer_id "
        "WHERE pl.platform_id = ? ORDER BY pl.position",
        [platform_id],
    ).fetchall()
    if layer is not None:
        stack = [select_layer(stack, layer, digest=lambda row: row[2])]
    missing = [s for s in stack if s[3] != "indexed"]
    if missing:
        which = ", ".join(f"{s[0]} ({s[3]})" for s in missing)
        raise UsageError(f"layer(s) {which} of that image are not indexed: run Index.add again")
    prefix = None
    if path is not None:
        prefix = path.strip("/")
        while prefix.startswith("./"):
            prefix = prefix[2:].lstrip("/")
        prefix = prefix or None
    path_cond, params = "", []
    if prefix is not None:
        display = path_text(prefix)[0]
        path_cond = "(p.path = ? OR (p.path >= ? AND p.path < ?))"
        params = [display, display + "/", successor(display + "/")]
    if layer is None and path_cond:
        # Merged: deleting entries anywhere in the stack matter too.
        path_cond = f"(e.whiteout > 0 OR {path_cond})"
    per_layer = []
    for position, layer_id, _, _ in stack:
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM entries e JOIN paths p ON p.id = e.path_id JOIN layers l ON l.id = e.layer_id "
            "JOIN platform_layers pl ON pl.platform_id = ? AND pl.position = ? "
            "JOIN platforms pf ON pf.id = pl.platform_id JOIN images i ON i.id = pf.image_id "
            f"WHERE e.layer_id = ?{' AND ' + path_cond if path_cond else ''} ORDER BY e.position"
        )
        per_layer.append((position, [_hit(r) for r in conn.execute(sql, [platform_id, position, layer_id, *params])]))
    if layer is not None:
        hits = per_layer[0][1]
        StatusReader(conn).annotate(hits)
        hits.sort(key=lambda h: h.path)
    else:
        hits = _merge(per_layer, prefix)
    if depth is not None:
        hits = _cut(hits, prefix.count("/") + 1 if prefix is not None else 0, depth)
    return hits


def _cut(hits: list[Hit], top: int, depth: int) -> list[Hit]:
    """``hits`` (sorted by path) down to ``depth`` levels below level ``top``,
    with an implicit directory row for each directory within reach that only
    deeper entries imply (tars need not hold an entry for every directory)."""
    if depth < 0:
        raise UsageError("depth must be 0 or more")
    present = {h.path for h in hits}
    kept: list[Hit] = []
    implied: dict[str, Hit] = {}
    for h in hits:
        parts = h.path.split("/")
        if len(parts) - top <= depth:
            kept.append(h)
            continue
        for level in range(top + 1, top + depth + 1):
            directory = "/".join(parts[:level])
            if directory not in present and directory not in implied:
                implied[directory] = dataclasses.replace(
                    h, path=directory, type="dir", size=0, mode=0, uid=0, gid=0, uname="", gname="", mtime=None,
                    linkname="", whiteout="", deleted=False, deleted_in_layer=None, deleted_by=None, recreated=False,
                    offset=0, data_offset=0, position=-1, path_id=0, code=0, implicit=True,
                )
    if implied:
        kept = sorted([*kept, *implied.values()], key=lambda h: h.path)
    return kept


def _merge(layers: list[tuple[int, list[Hit]]], prefix: str | None) -> list[Hit]:
    "The merged filesystem at or below ``prefix`` (:func:`overlay.merge`; the visible_files view in SQL)."
    out = overlay.merge(hits for _, hits in layers)
    if prefix is not None:
        out = [h for h in out if h.path == prefix or h.path.startswith(prefix + "/")]
    for h in out:
        h.visible = True
    return out


# ---------------------------------------------------------------------------
# images


@dataclass
class PlatformSummary:
    platform: str
    manifest_digest: str
    config_digest: str | None
    created: str | None
    layers: int
    layers_indexed: int
    files: int
    size: int


@dataclass
class ImageSummary:
    reference: str
    registry: str
    repository: str
    tag: str | None
    digest: str
    media_type: str | None
    indexed_at: str | None
    platforms: list[PlatformSummary]

    @property
    def layers(self) -> int:
        return sum(p.layers for p in self.platforms)

    @property
    def layers_indexed(self) -> int:
        return sum(p.layers_indexed for p in self.platforms)

    @property
    def files(self) -> int:
        return sum(p.files for p in self.platforms)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.platforms)

    def as_dict(self) -> dict:
        return {
            "reference": self.reference, "registry": self.registry, "repository": self.repository,
            "tag": self.tag, "digest": self.digest, "media_type": self.media_type, "indexed_at": self.indexed_at,
            "platforms": [p.__dict__ for p in self.platforms],
            "layers": self.layers, "layers_indexed": self.layers_indexed, "files": self.files, "size": self.size,
        }


def list_images(db) -> list[ImageSummary]:
    "Every indexed image with its platforms (attestations left out), by reference."
    conn = connection(db)
    platforms: dict[int, list[PlatformSummary]] = {}
    for image_id, *values in conn.execute(
        "SELECT pf.image_id, pf.platform, pf.manifest_digest, pf.config_digest, pf.created, "
        "count(pl.layer_id), coalesce(sum(l.status = 'indexed'), 0), "
        "coalesce(sum(CASE WHEN l.status = 'indexed' THEN l.entries END), 0), coalesce(sum(l.size), 0) "
        "FROM platforms pf LEFT JOIN platform_layers pl ON pl.platform_id = pf.id "
        "LEFT JOIN layers l ON l.id = pl.layer_id WHERE pf.attestation = 0 GROUP BY pf.id ORDER BY pf.id"
    ):
        platforms.setdefault(image_id, []).append(PlatformSummary(*values))
    return [
        ImageSummary(*row[1:], platforms=platforms.get(row[0], []))
        for row in conn.execute(
            "SELECT id, reference, registry, repository, tag, digest, media_type, indexed_at FROM images "
            "ORDER BY reference, indexed_at, id"
        )
    ]
