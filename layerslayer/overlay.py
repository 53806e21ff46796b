"""The OCI layer rules: what a stack of layers leaves in the merged filesystem.

One home for the whiteout and opaque-directory rules (OCI image-spec
``layer.md``, as containerd and moby apply them). ``ls`` (merged), ``find``'s
deleted / visible status and the interactive flow use these functions; the
``deletions`` table (``store.FILL_DELETIONS``) and the ``ghost_files`` /
``visible_files`` views are the same rules in SQL, for speed and for Datasette
users, and ``tests/test_overlay.py`` checks them against this module on random
layer stacks.

An entry is anything with ``path`` (normalised: no leading ``/``, no trailing
``/``) and ``code``, its ``entries.whiteout`` code (:func:`entry_code`):

0. an ordinary entry;
1. a whiteout marker ``dir/.wh.NAME``: deletes ``dir/NAME`` and everything
   below it;
2. an opaque marker ``dir/.wh..wh..opq``: deletes everything below ``dir/``
   (not ``dir`` itself);
3. a non-directory at a path that is a directory elsewhere: it replaces that
   directory, so it deletes everything below it.

A deleting entry at layer q acts on layers below q only, whatever its place in
its own tar ("whiteout files MUST only apply to resources in lower/parent
layers"), so a layer may delete a path and create it again. Otherwise the
entry at the highest (layer, tar position) of a path wins, and markers are
never part of the merged filesystem.

Where the index differs from the runtime: containerd also replaces a
directory that lower layers only imply (``a/b`` without an entry for ``a``)
when a later layer writes a file ``a``; the index only knows a directory from
its own tar entry in some layer (code 3 comes from ``paths.kinds``), and these
functions take the same ``directories`` for that reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .oci import (
    OPAQUE,
    OPAQUE_MARKER,
    ORDINARY,
    REPLACES_DIRECTORY,
    WHITEOUT,
    WHITEOUT_PREFIX,
    whiteout_code,
)

E = TypeVar("E")


def entry_code(path: str, type_: str, directories: set[str] | frozenset[str] = frozenset()) -> int:
    """``entries.whiteout`` of an entry: 1 whiteout, 2 opaque marker, 3 a
    non-directory at one of ``directories``, else 0."""
    code = whiteout_code(path)
    if code == ORDINARY and type_ != "dir" and path in directories:
        return REPLACES_DIRECTORY
    return code


def is_marker(code: int) -> bool:
    "Whiteout and opaque markers (codes 1, 2) are instructions, never files."
    return code == WHITEOUT or code == OPAQUE


def scope(code: int, path: str) -> tuple[str | None, str]:
    """What a deleting entry at ``path`` deletes from lower layers, as
    ``(target, prefix)``: the path ``target`` (None: no single path) and every
    path starting with ``prefix``. The ``deletions`` table stores the same two
    columns."""
    if code == WHITEOUT:
        parent, _, name = path.rpartition("/")
        target = (parent + "/" if parent else "") + name[len(WHITEOUT_PREFIX):]
        return target, target + "/"
    if code == OPAQUE:
        parent = path.rpartition("/")[0]
        return None, parent + "/" if parent else ""
    if code == REPLACES_DIRECTORY:
        return None, path + "/"
    raise ValueError(f"entry code {code} deletes nothing")


def deletes(code: int, deleter: str, path: str) -> bool:
    "Does the deleting entry (``code``, at ``deleter``) delete ``path`` from lower layers?"
    target, prefix = scope(code, path=deleter)
    return path == target or path.startswith(prefix)


def deleter_keys(path: str) -> list[tuple[str, int]]:
    """(path, code) of every entry that would delete ``path`` from a lower
    layer: ``.wh.`` markers of the path and its ancestors (1), opaque markers
    in its ancestor directories (2), non-directories replacing an ancestor
    directory (3)."""
    parts = path.split("/")
    keys = []
    for k in range(len(parts)):
        parent = "/".join(parts[:k])
        lead = parent + "/" if parent else ""
        keys.append((lead + WHITEOUT_PREFIX + parts[k], WHITEOUT))
        keys.append((lead + OPAQUE_MARKER, OPAQUE))
        if parent:
            keys.append((parent, REPLACES_DIRECTORY))
    return keys


@dataclass
class Status:
    """Where an entry stands in its stack. ``deleted_in``: the layer index of
    the first deleting entry above it (None: not deleted), ``deleted_by`` that
    entry's path; ``recreated``: deleted, and an entry at the same path sits in
    that layer or higher; ``visible``: in the merged filesystem. Markers and
    entries merely overwritten are neither deleted nor visible."""

    deleted_in: int | None = None
    deleted_by: str | None = None
    recreated: bool = False
    visible: bool = False

    @property
    def deleted(self) -> bool:
        return self.deleted_in is not None


def statuses(layers: Sequence[Sequence]) -> list[list[Status]]:
    """The :class:`Status` of every entry of ``layers`` (bottom layer first,
    each in tar order), in the same shape. (Plain loops: a reference for the
    SQL views and for tests, not for millions of rows.)"""
    deleters = [[(e.code, e.path) for e in layer if e.code] for layer in layers]
    top: dict[str, tuple[int, int]] = {}
    for i, layer in enumerate(layers):
        for position, e in enumerate(layer):
            if not is_marker(e.code):
                top[e.path] = (i, position)
    out = []
    for i, layer in enumerate(layers):
        row = []
        for position, e in enumerate(layer):
            status = Status()
            if not is_marker(e.code):
                killer = next(
                    ((j, path) for j in range(i + 1, len(layers)) for code, path in deleters[j] if deletes(code, path, e.path)),
                    None,
                )
                if killer is not None:
                    status.deleted_in, status.deleted_by = killer
                    status.recreated = top[e.path][0] >= killer[0]
                else:
                    status.visible = top[e.path] == (i, position)
            row.append(status)
        out.append(row)
    return out


def merge(layers: Iterable[Iterable[E]]) -> list[E]:
    """The merged filesystem: the entries of ``layers`` (bottom layer first,
    each in tar order) that survive, sorted by path. Each layer first deletes
    what its deleting entries reach in the layers below, then adds its own
    entries (a later one at the same path replacing an earlier one)."""
    state: dict[str, E] = {}
    for layer in layers:
        layer = list(layer)
        targets: set[str] = set()
        prefixes: list[str] = []
        for e in layer:
            if e.code:
                target, prefix = scope(e.code, e.path)
                if target is not None:
                    targets.add(target)
                prefixes.append(prefix)
        if prefixes and state:
            starts = tuple(prefixes)
            state = {k: v for k, v in state.items() if k not in targets and not k.startswith(starts)}
        for e in layer:
            if not is_marker(e.code):
                state[e.path] = e
    return sorted(state.values(), key=lambda e: e.path)
