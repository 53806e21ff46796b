"""Read-only queries over an index: ``find``, ``ls``, ``images``, and the
layers that hold matches (``export --match``).

Nothing here writes to the database (``store.py`` is the only writer).

How a ``find`` runs
===================

1. **Patterns → candidate paths.** Every distinct path is stored once
   (``paths``), so patterns are first matched against paths, not against the
   millions of entry rows. Each pattern gets the cheapest plan that is sure
   to return a *superset* of its matches (:func:`plan_pattern`):

   ============  ==============================================================
   ``name``      exact file name: ``paths.name = ?`` (B-tree ``paths_name``)
   ``name-i``    exact name with ``-i``: ``name = ? COLLATE NOCASE``
                 (``paths_name_nocase``)
   ``path``      exact path: ``paths.path = ?`` (``paths_path``)
   ``prefix``    literal head then only wildcards (``etc/ssh/*``, ``id_rsa*``):
                 a range ``>= 'etc/ssh/' AND < 'etc/ssh0'`` on ``path`` or ``name``
   ``trigram``   a literal run of >= 3 characters anywhere (``*.pem``,
                 ``*passwd*``): ``paths_fts MATCH '".pe" AND "pem"'`` on the FTS5
                 trigram index
   ``scan``      nothing else helps (``*.c``, ``?``): every path, pre-filtered
                 by a ``LIKE`` that cannot reject a match
   ============  ==============================================================

   The trigram index is case-insensitive (SQLite's default ``trigram``
   tokenizer folds case) and only narrows the candidates; ``MATCH`` is used
   rather than ``LIKE``/``GLOB`` on ``paths_fts`` because SQLite's own
   re-check of each candidate through the external-content table costs more
   than our check.

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
import itertools
import json
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from . import overlay
from .display import mode_string, printable  # noqa: F401  (the one escaper; callers may still say query.printable)
from .errors import UsageError
from .oci import DIGEST_ALGORITHMS, ENTRY_TYPES, OPAQUE, TYPE_CODES, TYPE_LETTERS, WHITEOUT, is_whiteout
from .patterns import Pattern, compile_patterns, glob_tokens, parse_pattern
from .presets import PRESETS, Preset, format_presets, get_preset
from .selectors import choose_platform, parse_layer_selector, select_layer
from .store import path_from_row, path_text

__all__ = [
    "UnknownImage", "Hit", "PathPlan", "FindQuery", "LayerMatch", "ImageSummary", "PlatformSummary",
    "find", "count", "plan_pattern", "layers_matching", "list_files", "list_images", "match_images",
    "parse_size", "PRESETS", "Preset", "preset_patterns", "format_presets", "TYPE_LETTERS",
]


class UnknownImage(UsageError):
    "An --image / REF that matches no indexed image (exit status 2)."


# Letters that Python's re.IGNORECASE (the -i of patterns.py) equates with a
# character outside ASCII: i/I ~ U+0130 U+0131, k/K ~ U+212A (Kelvin sign),
# s/S ~ U+017F (long s). COLLATE NOCASE and LIKE fold ASCII only, so they
# cannot stand in for -i when the pattern holds one of these.
_NOCASE_UNSAFE = frozenset("iIkKsS")
# The FTS5 trigram tokenizer folds K and long s to k and s, but not the two
# Turkish i's: trigrams holding i/I are looked up in every spelling.
_I_VARIANTS = ("i", "\u0130", "\u0131")
# Trigrams per pattern: enough to be selective, few enough to stay fast.
MAX_TRIGRAMS = 10
_BATCH = 4000
# Up to this many deleting entries (whiteouts, opaque markers, files over
# directories) in the layers involved (or 5 per path found, if more), all of
# them are loaded; beyond, only those at paths that could delete a match.
_DELETER_KEYS_MAX = 2_000
_DELETERS_PER_PATH = 5


def _conn(db) -> sqlite3.Connection:
    return getattr(db, "conn", db)


def _without_gc(fn):
    "Decorator: run ``fn`` under :func:`_no_gc`."
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _no_gc():
            return fn(*args, **kwargs)

    return wrapper


@contextmanager
def _no_gc():
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


def _is_surrogate(c: str) -> bool:
    return "\udc80" <= c <= "\udcff"


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
# Pattern plans


def _successor(text: str) -> str | None:
    "The smallest string greater than every string starting with ``text`` (None: no bound)."
    while text:
        last = ord(text[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return text[:-1] + chr(nxt)
        text = text[:-1]
    return None


def _ascii_lower(text: str) -> str:
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in text)


def _nocase_safe(text: str) -> bool:
    return text.isascii() and not (_NOCASE_UNSAFE & set(text))


def _runs(tokens, ignore_case: bool) -> list[str]:
    """Literal runs, split where the trigram index cannot be trusted: at
    wildcards, and with -i at characters outside ASCII."""
    runs, cur = [], []
    for kind, value in tokens:
        if kind == "lit" and not (ignore_case and not value.isascii()):
            cur.append(value)
        else:
            if cur:
                runs.append("".join(cur))
            cur = []
    if cur:
        runs.append("".join(cur))
    return runs


def _fts_term(trigram: str, ignore_case: bool) -> str:
    variants = [""]
    for c in trigram:
        options = _I_VARIANTS if ignore_case and c in "iI" else (c,)
        variants = [v + o for v in variants for o in options]
    quoted = ['"' + v.replace('"', '""') + '"' for v in variants]
    return quoted[0] if len(quoted) == 1 else "(" + " OR ".join(quoted) + ")"


def _fts_query(runs: list[str], ignore_case: bool) -> str | None:
    "An FTS5 MATCH expression (AND of trigrams) that every match satisfies, or None."
    trigrams: list[str] = []
    # Longest runs first: they are the most selective. Each run is tiled by
    # non-overlapping trigrams (plus its last one), which covers every character.
    for run in sorted((r for r in runs if len(r) >= 3), key=len, reverse=True):
        starts = list(range(0, len(run) - 2, 3))
        if starts[-1] != len(run) - 3:
            starts.append(len(run) - 3)
        for s in starts:
            tri = run[s : s + 3]
            if tri not in trigrams:
                trigrams.append(tri)
    if not trigrams:
        return None
    return " AND ".join(_fts_term(t, ignore_case) for t in trigrams[:MAX_TRIGRAMS])


def _like_superset(tokens, ignore_case: bool) -> str:
    """A LIKE pattern that every match satisfies (LIKE folds ASCII case, and a
    literal % or _ of the glob only widens it)."""
    out = []
    for kind, value in tokens:
        if kind == "any":
            out.append("%")
        elif kind in ("one", "set"):
            out.append("_")
        elif ignore_case and (not value.isascii() or value in _NOCASE_UNSAFE):
            out.append("_")
        else:
            out.append(value)
    return "".join(out)


_SELECT_PATHS = "SELECT id, path, path_bytes FROM paths"


@dataclass(frozen=True)
class PathPlan:
    """How the candidate paths of one pattern are found.

    ``sql`` returns ``(id, path, path_bytes)`` rows, a superset of the paths
    the pattern matches; ``method`` names the access path (see the module
    docstring) and ``detail`` the key used, for ``find --explain``."""

    pattern: Pattern
    method: str
    sql: str
    params: tuple
    detail: str

    def describe(self) -> str:
        return f"{self.pattern.text!r}: {self.method} ({self.detail})"


def plan_pattern(pattern: Pattern | str, ignore_case: bool = False) -> PathPlan:
    "The cheapest exact-superset plan for one pattern (see the module docstring)."
    p = pattern if isinstance(pattern, Pattern) else parse_pattern(pattern, ignore_case)
    col = "path" if p.path_mode else "name"
    ic = p.ignore_case
    if any(_is_surrogate(c) for c in p.glob):
        # Bytes that are not UTF-8: compared on their real value, path by path.
        return PathPlan(p, "scan", _SELECT_PATHS, (), "pattern holds bytes that are not UTF-8")
    tokens = glob_tokens(p.glob)
    literal = all(kind == "lit" for kind, _ in tokens)
    text = "".join(v for _, v in tokens) if literal else ""
    runs = _runs(tokens, ic)
    fts = _fts_query(runs, ic)

    def fts_plan() -> PathPlan:
        return PathPlan(
            p, "trigram",
            "SELECT p.id, p.path, p.path_bytes FROM paths_fts JOIN paths p ON p.id = paths_fts.rowid "
            "WHERE paths_fts MATCH ?",
            (fts,), f"paths_fts MATCH {fts}",
        )

    def scan_plan() -> PathPlan:
        like = _like_superset(tokens, ic)
        if like.strip("%") == "":
            return PathPlan(p, "scan", _SELECT_PATHS, (), "every path")
        # Names that are not UTF-8 are stored as \xNN text: ? and [...] may
        # stand for one of those bytes, so they are always checked.
        return PathPlan(
            p, "scan", f"{_SELECT_PATHS} WHERE {col} LIKE ? OR path_bytes IS NOT NULL", (like,),
            f"{col} LIKE {like!r}",
        )

    if literal:
        if not ic:
            return PathPlan(p, col, f"{_SELECT_PATHS} WHERE {col} = ?", (text,), f"{col} = {text!r}")
        name = text.rpartition("/")[2]
        if _nocase_safe(name):
            return PathPlan(
                p, "name-i", f"{_SELECT_PATHS} WHERE name = ? COLLATE NOCASE", (name,),
                f"name = {name!r} COLLATE NOCASE",
            )
        return fts_plan() if fts else scan_plan()

    # A literal head, then wildcards with no literal run of 3 after it: a range.
    head = []
    for kind, value in tokens:
        if kind != "lit":
            break
        head.append(value)
    prefix = "".join(head)
    tail_runs = _runs(tokens[len(head):], ic)
    tail_fts = any(len(r) >= 3 for r in tail_runs)
    if prefix and not tail_fts or (prefix and not fts):
        if not ic:
            hi = _successor(prefix)
            cond = f"{col} >= ?" + (f" AND {col} < ?" if hi is not None else "")
            params = (prefix, hi) if hi is not None else (prefix,)
            return PathPlan(p, "prefix", f"{_SELECT_PATHS} WHERE {cond}", params, f"{col} range from {prefix!r}")
        if not p.path_mode and _nocase_safe(prefix):
            lo = _ascii_lower(prefix)
            hi = _successor(lo)
            cond = "name >= ? COLLATE NOCASE" + (" AND name < ? COLLATE NOCASE" if hi is not None else "")
            params = (lo, hi) if hi is not None else (lo,)
            return PathPlan(p, "prefix-i", f"{_SELECT_PATHS} WHERE {cond}", params, f"name range from {lo!r} COLLATE NOCASE")
    if fts:
        return fts_plan()
    return scan_plan()


# ---------------------------------------------------------------------------
# Images, platforms, layers: what --image / --platform / --layer select


def _looks_like_domain(component: str) -> bool:
    from .reference import _looks_like_domain as looks

    return looks(component)


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
    from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES

    conn = _conn(db)
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
    if sep and _looks_like_domain(first):
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


def _resolve_images(db, specs: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for spec in specs:
        found = match_images(db, spec)
        if not found:
            raise UnknownImage(f"no indexed image matches {spec!r} (`layerslayer images DB` lists them)")
        ids += [i for i in found if i not in ids]
    return ids


def _platform_condition(wanted: str) -> tuple[str, list]:
    from .reference import parse_platform

    os_name, arch, variant = parse_platform(wanted)
    cond = "pf.os = ? AND pf.architecture = ?"
    params: list = [os_name, arch]
    if variant is not None:
        # arm64 images often omit the implied v8 variant.
        cond += " AND coalesce(pf.variant, CASE WHEN pf.architecture = 'arm64' THEN 'v8' END) = ?"
        params.append(variant)
    return f"(({cond}) OR pf.platform = ?)", params + [wanted]


def _resolve_layer(db, text: str | int, platform_ids: Sequence[int] | None = None) -> int:
    """The id of the indexed layer ``text`` selects (``selectors.parse_layer_selector``).

    With one platform in ``platform_ids``: a layer of its stack, by index or
    digest. Otherwise a digest (or unique hex prefix) anywhere in the index;
    an index then needs that one platform.
    """
    conn = _conn(db)
    if platform_ids is not None and len(platform_ids) == 1:
        stack = conn.execute(
            "SELECT l.id, l.digest FROM platform_layers pl JOIN layers l ON l.id = pl.layer_id "
            "WHERE pl.platform_id = ? ORDER BY pl.position",
            list(platform_ids),
        ).fetchall()
        if parse_layer_selector(text, len(stack)).index is not None:
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


FIELDS = tuple(Hit("", "", "", 0, "", "", "file", 0, 0, 0, 0, "", "", 0, "", 0, 0).as_dict())

#: An entry's columns as find reads them (after the row's keys).
_ENTRY_COLUMNS = (
    'e.type, e.size, e.mode, e.uid, e.gid, e.uname, e.gname, e.mtime, e.linkname, e.whiteout, e."offset", '
    "e.header_size"
)

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


def _tops(rows: Iterable[tuple]) -> dict[tuple[int, int], tuple[int, int]]:
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


class _Status:
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
        most = max(_DELETER_KEYS_MAX, _DELETERS_PER_PATH * len(paths))
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
        from :func:`_tops` when the caller holds every entry of those paths."""
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
    :class:`UnknownImage` for an ``--image`` that matches nothing.

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
        self.conn = _conn(db)
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
        self.image_ids = _resolve_images(db, images) if images else None
        self.platform = platform
        self.platform_ids = self._platforms() if (images or platform) else None
        self.layer_id = _resolve_layer(db, layer, self.platform_ids) if layer not in (None, "") else None
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
            cond, more = _platform_condition(self.platform)
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
        status = _Status(self.conn)
        # Without a type, size or layer filter the rows hold every entry of
        # their paths in their platforms: the top entry of each is among them.
        complete = not (self.types or self.min_size is not None or self.max_size is not None or self.layer_id is not None)
        tops = _tops(rows) if complete else None
        produced = 0
        limit = self.limit
        filtering = self.deleted or self.visible
        # In one go, unless --limit may stop early (or the caller streams).
        if step is None:
            step = _BATCH if limit is not None else max(len(rows), 1)
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
        selected = self._selected(full, _BATCH * 10 if lean and self.limit is None else None)
        platforms = self._platforms_seen
        paths = self._paths
        types = ENTRY_TYPES
        digests: dict[int, str] = {}
        while True:
            batch = list(itertools.islice(selected, _BATCH))
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
        with _no_gc():
            return list(self.iter_hits())

    def count(self) -> int:
        "How many rows :meth:`hits` would give (``--limit`` applies)."
        if self._no_rows():
            return 0
        if self.deleted or self.visible:
            with _no_gc():
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


@_without_gc
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


# ---------------------------------------------------------------------------
# ls


def _choose_image(db, ref: str) -> int:
    ids = _resolve_images(db, [ref])
    if len(ids) == 1:
        return ids[0]
    rows = _conn(db).execute(
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
    rows = _conn(db).execute(
        "SELECT id, platform FROM platforms WHERE image_id = ? AND attestation = 0 ORDER BY id", [image_id]
    ).fetchall()
    if not rows:
        raise UsageError("that image has no indexed platform")
    chosen = choose_platform([row[1] or "" for row in rows], wanted)
    if chosen is None:
        raise UsageError(f"no platform {wanted} indexed for that image (indexed: {', '.join(r[1] or '?' for r in rows)})")
    return rows[chosen]


@_without_gc
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
    conn = _conn(db)
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
        raise UsageError(f"layer(s) {which} of that image are not indexed: run `layerslayer index` again")
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
        params = [display, display + "/", _successor(display + "/")]
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
        _Status(conn).annotate(hits)
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
    conn = _conn(db)
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
