"""The Python API: each command as a call that takes Python values and returns results.

::

    import layerslayer

    with layerslayer.Index("images.db") as index:
        index.add("alpine:3.20")                     # index (talks to the registry)
        for hit in index.find("*.pem", "id_rsa"):    # reading: no network, no HTTP stack loaded
            print(hit.image, hit.layer_index, hit.path)

    report = layerslayer.inspect("alpine:3.20", platform="linux/arm64")
    data = layerslayer.cat("alpine:3.20", "/etc/os-release")

Errors are :class:`~layerslayer.errors.LayerslayerError` subclasses whose
``str()`` is one line naming the argument at fault; advice names the
argument that changes the outcome (``force=True replaces it``,
``ClientOptions.deadline``). The CLI prints the same errors, the advice in
its flags' words (:func:`~layerslayer.errors.cli_words`). Every call that
reaches a registry takes ``options``, a
:class:`~layerslayer.options.ClientOptions` (credentials, timeouts, plain
HTTP): the default is an anonymous HTTPS client.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import store
from .errors import NotFound, UsageError
from .find import FindQuery
from .findings import Secret, list_secrets
from .options import ClientOptions
from .query import Hit, ImageSummary, list_files, list_images

# For annotations only; the command-level operations are imported at run time by _operations().
if TYPE_CHECKING:
    import sqlite_utils

    from .extraction import ExtractReport
    from .image import InspectReport
    from .indexer import IndexSummary, Progress
    from .operations import ExportItem, ExportSummary, SaveSummary
    from .safetree import WrittenEntry

__all__ = ["Index", "cat", "extract", "inspect", "save"]


def _operations():
    "The module of the command-level operations that fetch blobs: the one place api.py imports it."
    # Imported on first use, for start-up speed: it loads the HTTP stack (requests),
    # which reading an index never needs.
    from . import operations

    return operations


class Index:
    """A layerslayer index: an SQLite file of images, layers and their file listings.

    ``Index(path)`` opens nothing yet. Reading (:meth:`find`, :meth:`ls`,
    :meth:`images`, :meth:`secrets`, :attr:`db`) opens the file read-only and
    never migrates it, so it may sit on a read-only file system; :meth:`add`
    creates the file if needed and brings its schema up to date first.
    ``options`` are used by the calls that reach a registry (:meth:`add`,
    :meth:`export`) unless they are given their own. Use it as a context
    manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike, *, options: ClientOptions | None = None):
        self.path = Path(path)
        self.options = options or ClientOptions()
        self._db: sqlite_utils.Database | None = None

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r})"

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        "Close the reading connection (the next read opens it again)."
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite_utils.Database:
        """The index as a read-only ``sqlite_utils.Database``, for SQL of your
        own (``index.db["layers"].count``, ``index.db.query(sql)``).
        Raises NotAnIndex when the file is missing, not an index, or of
        another schema version."""
        if self._db is None:
            self._db = store.open_db(self.path, read_only=True)
        return self._db

    # -- writing ---------------------------------------------------------------------

    def add(
        self,
        *refs: str,
        platform: str | None = None,
        all_platforms: bool = False,
        all_tags: bool = False,
        jobs: int = 2,
        page_size: int | None = None,
        span: int | None = None,
        scan: bool | None = None,
        scan_max_size: int | None = None,
        keep_values: bool = False,
        progress: Progress | None = None,
        options: ClientOptions | None = None,
    ) -> IndexSummary:
        """Index the images ``refs`` (``"alpine:3.20"``, ``"localhost:5000/app@sha256:…"``).

        Layers already in the index are not downloaded again. ``platform``
        (``"linux/arm64"``; default: this machine's, else the first) or
        ``all_platforms``; ``all_tags`` indexes every tag of each repository.
        ``scan`` (None: the layers streamed anyway; True: every layer; False:
        none) looks for secrets in files up to ``scan_max_size`` bytes, storing
        their values only with ``keep_values``. ``span``: compressed bytes
        between checkpoints in big gzip layers (0: none). An error on one image
        is recorded in the returned summary (``summary.ok``, ``summary.errors``)
        and the others go on."""
        if not refs:
            raise UsageError("give at least one image reference")
        # Imported here, for start-up speed: indexing loads the HTTP stack.
        from .indexer import index_images

        # None: the indexer's own default.
        given = {name: value for name, value in (("span", span), ("scan_max_size", scan_max_size)) if value is not None}
        self.close()  # the writer migrates the file; reading opens it afresh afterwards
        return index_images(
            self.path, refs, options=options or self.options, platform=platform, all_platforms=all_platforms,
            all_tags=all_tags, jobs=jobs, page_size=page_size, progress=progress, scan=scan, keep_values=keep_values,
            **given,
        )

    def upgrade(self) -> list[str]:
        "Bring an index made by an older layerslayer up to this version's schema; the migrations applied."
        from .indexer import upgrade_index  # for start-up speed, as in add()

        self.close()
        return upgrade_index(self.path)

    # -- reading ---------------------------------------------------------------------

    def query(self, *patterns: str, **filters) -> FindQuery:
        """The query behind :meth:`find` and :meth:`count`, for more: ``iter_hits()``
        streams the answer, ``missing_layers()`` says which layers it cannot
        cover, ``explain()`` how each pattern is looked up.

        Patterns without "/" match the file name, with "/" the whole path;
        ``*`` ``?`` ``[...]`` glob and ``*`` also matches "/". The ``filters``
        are :class:`~layerslayer.find.FindQuery`'s: ``ignore_case``,
        ``presets`` (named pattern sets such as ``"secrets"``), ``images``
        (references, repositories or digests), ``platform``, ``types``
        (``find -type`` letters or names), ``min_size``/``max_size`` (bytes, or
        text such as ``"10M"``), ``layer`` (a digest prefix), ``deleted`` (only
        entries a later layer deleted), ``visible`` (only those in the final
        filesystem), ``exclude``, ``with_secrets`` and ``limit``."""
        return FindQuery(self.db, patterns, **filters)

    def find(self, *patterns: str, **filters) -> list[Hit]:
        """The entries matching any of ``patterns``: one :class:`~layerslayer.query.Hit`
        per entry and image platform holding its layer (filters as :meth:`query`)."""
        return self.query(*patterns, **filters).hits()

    def count(self, *patterns: str, **filters) -> int:
        "How many hits :meth:`find` would return."
        return self.query(*patterns, **filters).count()

    def ls(
        self,
        ref: str,
        path: str | None = None,
        *,
        layer: int | str | None = None,
        platform: str | None = None,
        depth: int | None = None,
    ) -> list[Hit]:
        """The files of image ``ref`` at or below ``path``, sorted by path.

        Without ``layer``: the merged filesystem (whiteouts and opaque
        directories applied, the top copy of each path). With ``layer`` (an
        index, ``-1`` for the top, or a digest prefix): that layer's own
        entries, whiteout markers included. ``depth`` keeps that many levels
        below ``path``."""
        return list_files(self.db, ref, path, layer=layer, platform=platform, depth=depth)

    def images(self) -> list[ImageSummary]:
        "Every indexed image with its platforms, by reference."
        return list_images(self.db)

    def secrets(
        self,
        *,
        images: Sequence[str] = (),
        detectors: Sequence[str] = (),
        state: str | None = None,
        where: bool = False,
    ) -> list[Secret]:
        """The distinct secrets the index found (see ``add(scan=...)``), most widespread first.

        ``state``: ``"visible"``, ``"ghost"`` (only in deleted files) or
        ``"hidden"`` (only in overwritten files); ``where`` fills each
        secret's ``locations``."""
        return list_secrets(self.db, images=images, detectors=detectors, state=state, where=where)

    # -- fetching --------------------------------------------------------------------

    def export(
        self,
        *patterns: str,
        layers: Sequence[str] = (),
        files: bool = False,
        ignore_case: bool = False,
        keep_modes: bool = False,
        out_dir: str | os.PathLike | None = None,
        format: str | None = None,  # the CLI's word, as in save()
        progress_factory: Callable | None = None,
        on_item: Callable[[ExportItem], None] | None = None,
        options: ClientOptions | None = None,
    ) -> ExportSummary:
        """Save the indexed layers that hold files matching ``patterns`` (or
        the ``layers`` named by digest), each from a registry it was indexed
        from, verified, under ``out_dir`` (default ``downloads``). With
        ``files``, only the matching files; with ``format`` (``"oci"``,
        ``"docker-archive"``), each image holding such a layer, whole."""
        return _operations().export_layers(
            self.path, patterns=patterns, digests=layers, ignore_case=ignore_case, files=files,
            keep_modes=keep_modes, out_dir=out_dir, options=options or self.options,
            progress_factory=progress_factory, on_item=on_item, format=format,
        )


def _index_path(index: Index | str | os.PathLike | None) -> Path | None:
    if index is None:
        return None
    return index.path if isinstance(index, Index) else Path(index)


def inspect(ref: str, *, platform: str | None = None, options: ClientOptions | None = None) -> InspectReport:
    """Image ``ref``'s platforms, config, layers and build steps (``as_dict()``,
    ``as_text()``, and ``raw("manifest" | "config" | "index")`` for the exact bytes served)."""
    from .image import inspect_image  # for start-up speed: it loads the HTTP stack

    return inspect_image(ref, platform=platform, options=options)


def save(
    ref: str,
    *,
    layers: Sequence[str | int] = (),
    all_layers: bool = False,
    config: bool = False,
    platform: str | None = None,
    out_dir: str | os.PathLike | None = None,
    format: str | None = None,  # the CLI's word
    progress_factory: Callable | None = None,
    on_result: Callable | None = None,
    on_error: Callable | None = None,
    options: ClientOptions | None = None,
) -> SaveSummary:
    """Save image ``ref``'s ``layers`` (indexes, ``-1`` the top, or digest
    prefixes), or ``all_layers``, and/or its ``config`` under ``out_dir``
    (default ``downloads``), each verified by digest; an interrupted download
    resumes. With ``format`` (``"oci"``, ``"docker-archive"``) the whole image
    is written in that format instead. Errors on one blob are collected in the
    summary (``summary.errors``) and the others go on."""
    return _operations().save_image(
        ref, options=options, platform=platform, layers=layers, all_layers=all_layers,
        config=config, out_dir=out_dir, progress_factory=progress_factory, on_result=on_result, on_error=on_error,
        format=format,
    )


def extract(
    ref: str,
    *patterns: str,
    out_dir: str | os.PathLike | None = None,
    platform: str | None = None,
    layer: str | int | None = None,
    index: Index | str | os.PathLike | None = None,
    ignore_case: bool = False,
    keep_modes: bool = False,
    verify: bool = False,
    force: bool = False,
    max_output: int | None = None,
    follow: bool = False,
    on_written: Callable[[WrittenEntry], None] | None = None,
    message: Callable[[str], None] | None = None,
    options: ClientOptions | None = None,
) -> ExtractReport:
    """Write the files of image ``ref`` matching ``patterns`` under ``out_dir``
    (default: a fresh ``extracted/<registry>/<repository>/<tag>``), as the
    image's final filesystem shows them (``layer``: one layer's own files).

    Nothing is written outside ``out_dir``; links that lead out, devices and
    files already there (unless ``force``) are refused and listed in
    ``report.refused``. With ``index`` (an :class:`Index` or its path that
    holds the image) only the layers with matches are read."""
    extra = {"max_output": max_output} if max_output is not None else {}
    return _operations().extract_image(
        ref, patterns, options=options, platform=platform, layer=layer,
        out_dir=out_dir, db_path=_index_path(index), ignore_case=ignore_case, keep_modes=keep_modes, verify=verify,
        force=force, follow=follow, on_written=on_written, message=message, **extra,
    )


def cat(
    ref: str,
    path: str,
    *,
    out: BinaryIO | None = None,
    platform: str | None = None,
    layer: str | int | None = None,
    index: Index | str | os.PathLike | None = None,
    verify: bool = False,
    message: Callable[[str], None] | None = None,
    options: ClientOptions | None = None,
) -> bytes:
    """The content of file ``path`` of image ``ref`` (symbolic links followed
    inside the image). With ``out`` (a binary file) it is written there instead
    and ``b""`` returned. With ``index`` holding the image, only the layer with
    ``path`` is read, up to it; ``verify`` reads whole layers and checks their
    digests. Raises NotFound when the image has no such file."""
    buffer = io.BytesIO() if out is None else out
    report = _operations().extract_image(
        ref, [path], options=options, platform=platform, layer=layer,
        stdout=buffer, db_path=None if verify else _index_path(index), verify=verify, message=message,
    )
    if not report.written:
        why = f": {report.refused[0].reason}" if report.refused else ""
        raise NotFound(f"no file {path} in {ref}{why}")
    return buffer.getvalue() if out is None else b""
