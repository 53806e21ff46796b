"""SQL functions for index connections (registered by ``prepare_connection``):
`find`'s pattern rules (:mod:`layerslayer.patterns`) and plan
(:func:`layerslayer.globplan.plan_pattern`) for the canned queries, display
helpers for views, and a search-box ``escape_fts`` for the trigram index."""

from __future__ import annotations

import functools
import re
import sqlite3

from .. import display, oci, patterns
from ..globplan import plan_pattern
from ..patterns import compile_patterns
from ..query import preset_patterns
from ..store import path_from_row


def truthy(value) -> bool:
    "A query parameter as a flag: set, and not 0/false/no/off."
    return bool(value) and str(value).strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=256)
def _matcher(pattern: str, ignore_case: bool):
    try:
        return compile_patterns([pattern], ignore_case=ignore_case)
    except (ValueError, re.error):  # a malformed glob matches nothing (page_notice says why)
        return None


@functools.lru_cache(maxsize=16)
def _preset_matcher(name: str):
    try:
        return compile_patterns(preset_patterns(name), ignore_case=True)
    except (KeyError, ValueError):  # an unknown preset, a pattern that does not compile
        return None


def usable_pattern(pattern) -> bool:
    "Is there a pattern to match (not empty, not only slashes and spaces)?"
    return isinstance(pattern, str) and bool(pattern.strip("/ "))


def _sql_match(pattern, path, path_bytes=None, ignore_case=0):
    """layerslayer_match(pattern, path[, path_bytes[, ignore_case]]): 1 when the
    path (its real bytes when path_bytes is set) matches the `find` pattern."""
    if not usable_pattern(pattern) or path is None:
        return None
    matcher = _matcher(pattern, truthy(ignore_case))
    if matcher is None:
        return None
    return 1 if matcher(path_from_row(path, path_bytes)) else 0


def _sql_preset(name, path, path_bytes=None):
    "layerslayer_preset(name, path[, path_bytes]): 1 when a pattern of `find --preset name` matches."
    matcher = _preset_matcher(str(name))
    if matcher is None or path is None:
        return None
    return 1 if matcher(path_from_row(path, path_bytes)) else 0


@functools.lru_cache(maxsize=256)
def plan_keys(pattern: str, ignore_case: bool = False) -> dict:
    """The keys of `find`'s plan for one pattern (``globplan.plan_pattern``), by the
    branch of :data:`.queries.CANDIDATES_SQL` that uses them; {} for an unusable pattern.

    name / name-i / path: exact B-tree lookups; path>= path< / name>= name< /
    name-i>= name-i<: ranges; trigram: a MATCH on paths_fts; scan: every path,
    narrowed by scan-name / scan-path LIKEs.
    """
    try:
        plan = plan_pattern(pattern, ignore_case)
    except ValueError:
        return {}
    method, params = plan.method, plan.params
    column = "path" if "WHERE path" in plan.sql else "name"
    if method in ("name", "path", "name-i", "trigram") and len(params) == 1:
        return {method: params[0]}
    if method in ("prefix", "prefix-i") and params:
        key = column if method == "prefix" else "name-i"
        return {f"{key}>=": params[0], f"{key}<": params[1] if len(params) > 1 else b""}
    if method == "scan" and len(params) == 1:
        return {"scan": 1, f"scan-{column}": params[0]}
    return {"scan": 1, "scan-path": "%"}


def _sql_plan(pattern, part, ignore_case=0):
    "layerslayer_plan(pattern, part[, ignore_case]): the key of one plan branch, NULL when unused."
    if not usable_pattern(pattern):
        return None
    return plan_keys(pattern, truthy(ignore_case)).get(part)


def _sql_path(text):
    "layerslayer_path(text): a path as the index stores it (no leading / or ./, no trailing /)."
    if not isinstance(text, str):
        return None
    path = text.strip()
    while path.startswith(("/", "./")):
        path = path[1:] if path.startswith("/") else path[2:]
    return path.rstrip("/") or None


def _sql_ext(name):
    "layerslayer_ext(name): the file extension in lower case, without the dot (NULL if none)."
    if not isinstance(name, str):
        return None
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext or "/" in ext or len(ext) > 16:
        return None
    return ext.lower()


def _sql_mode(type_, mode):
    "layerslayer_mode(type, mode): '-rwxr-xr-x'."
    if mode is None:
        return None
    try:
        return display.format_mode(int(mode), type_)
    except (TypeError, ValueError):
        return None


def ghost_extract_command(registry, repository, tag, digest, media_type, platform, position, path,
                          path_bytes=None) -> str | None:
    """layerslayer_extract_command(...): the `layerslayer extract` command that
    writes this one file from its layer (deleted files included, as --layer
    reads them), pinned to the image digest indexed."""
    if not (registry and repository and digest and isinstance(path, str)) or position is None:
        return None
    reference = display.pinned_reference(registry, repository, tag, digest)
    pattern = patterns.exact_pattern(path_from_row(path, path_bytes))
    chosen = platform if oci.is_index(media_type) else None
    command = display.extract_command(reference, int(position), pattern, chosen)
    return command if command.isprintable() else None  # nothing to paste that a terminal would act on


def trigram_escape_fts(query) -> str:
    """A MATCH expression for the trigram index of paths (Datasette's search box).

    The index is ``detail=none``: it answers single trigrams but no phrases,
    so each search word becomes its trigrams AND-ed: a path matches when it
    holds every trigram of every word (case-insensitive). Words shorter than
    three characters cannot be looked up and are left out.
    """
    words = [w.strip('"') for w in str(query or "").split()]
    terms = []
    for word in words:
        grams = []
        for i in range(len(word) - 2):
            gram = word[i : i + 3].replace('"', '""')
            if f'"{gram}"' not in grams:
                grams.append(f'"{gram}"')
        terms.extend(grams)
    if not terms:
        return '"\x01\x01\x01"'  # no trigram to look for: match nothing
    return " AND ".join(terms)


def register(conn: sqlite3.Connection, index: bool) -> None:
    "Add the functions to a connection; on an index's (``index``), also answer searches and refuse writes."
    conn.create_function("layerslayer_match", -1, _sql_match, deterministic=True)
    conn.create_function("layerslayer_preset", -1, _sql_preset, deterministic=True)
    conn.create_function("layerslayer_plan", -1, _sql_plan, deterministic=True)
    conn.create_function("layerslayer_path", 1, _sql_path, deterministic=True)
    conn.create_function("layerslayer_ext", 1, _sql_ext, deterministic=True)
    conn.create_function("layerslayer_mode", 2, _sql_mode, deterministic=True)
    conn.create_function("layerslayer_extract_command", 9, ghost_extract_command, deterministic=True)
    if index:
        # Datasette's search box quotes words as FTS phrases, which a detail=none
        # trigram index cannot answer; prepare_connection runs after Datasette's
        # own escape_fts (trylast) and this replaces it on index connections only.
        conn.create_function("escape_fts", 1, trigram_escape_fts, deterministic=True)
        conn.execute("PRAGMA query_only = 1")
