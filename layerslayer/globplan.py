"""Glob pattern → SQL plan: where ``find`` looks for the paths one pattern
may match.

Every distinct path is stored once (``paths``), so patterns are first matched
against paths, not against the millions of entry rows. Each pattern gets the
cheapest plan that is sure to return a *superset* of its matches
(:func:`plan_pattern`):

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

Every candidate is then checked with the exact matcher
(:mod:`layerslayer.find`), so the plan never changes the result, only the
speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .patterns import Pattern, glob_tokens, parse_pattern

__all__ = ["PathPlan", "plan_pattern", "successor"]


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


def _is_surrogate(c: str) -> bool:
    return "\udc80" <= c <= "\udcff"


def successor(text: str) -> str | None:
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
            hi = successor(prefix)
            cond = f"{col} >= ?" + (f" AND {col} < ?" if hi is not None else "")
            params = (prefix, hi) if hi is not None else (prefix,)
            return PathPlan(p, "prefix", f"{_SELECT_PATHS} WHERE {cond}", params, f"{col} range from {prefix!r}")
        if not p.path_mode and _nocase_safe(prefix):
            lo = _ascii_lower(prefix)
            hi = successor(lo)
            cond = "name >= ? COLLATE NOCASE" + (" AND name < ? COLLATE NOCASE" if hi is not None else "")
            params = (lo, hi) if hi is not None else (lo,)
            return PathPlan(p, "prefix-i", f"{_SELECT_PATHS} WHERE {cond}", params, f"name range from {lo!r} COLLATE NOCASE")
    if fts:
        return fts_plan()
    return scan_plan()
