"""The commands that fetch blobs, as library calls: ``save``, ``export``, ``extract``.

Each function takes Python values and returns a summary or report the
command prints; ``save`` and ``export`` collect the error of one blob while
the others go on. The machinery is below: :mod:`download` (verified blobs),
:mod:`extraction` (streaming extraction), :mod:`catfile` (one file to a
stream), :mod:`safetree` (the output directory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import layout
from .catfile import cat_file, cat_indexed, follow_links
from .download import DEFAULT_OUTPUT, DownloadResult, blob_path, default_extract_dir, download_blob, progress_context
from .errors import AuthError, LayerslayerError, NotFound, UsageError
from .extraction import ExtractReport, LayerPlan, extract_files, plan_from_index, say_once
from .image import open_image
from .oci import OCI_CONFIG
from .options import ClientOptions
from .outdir import make_dirs_below, prepare_output_dir
from .patterns import parse_pattern
from .reference import Reference, parse_reference
from .registry import RegistryClient
from .safetree import DEFAULT_MAX_OUTPUT, WrittenEntry
from .selectors import select_layer, select_layers

if TYPE_CHECKING:
    from .find import LayerMatch


@dataclass
class SaveSummary:
    results: list[DownloadResult] = field(default_factory=list)
    errors: list[LayerslayerError] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # layers not distributed by the registry
    seconds: float = 0.0
    written_to: Path | None = None  # with a format: the OCI layout directory / docker-archive file

    @property
    def bytes_fetched(self) -> int:
        return sum(result.fetched for result in self.results)

    @property
    def exit_code(self) -> int:
        return _error_exit(self.errors) if self.errors else 0


def _error_exit(errors: Sequence[LayerslayerError]) -> int:
    codes = [error.exit_code for error in errors]
    return 3 if 3 in codes else codes[0]


def save_image(
    reference: str,
    *,
    options=None,
    platform: str | None = None,
    layers: Sequence[str] = (),
    all_layers: bool = False,
    config: bool = False,
    out_dir: str | os.PathLike | None = None,
    progress_factory=None,
    on_result: Callable[[DownloadResult], None] | None = None,
    on_error: Callable[[str, LayerslayerError], None] | None = None,
    format: str | None = None,  # noqa: A002
) -> SaveSummary:
    """Save an image's layers (``layers`` selectors, or ``all_layers``) and/or
    its config blob under ``out_dir`` (default ``downloads``, which must not be
    a symbolic link). Errors on one blob are collected and the others go on;
    the summary has them. With ``format`` ("oci" or "docker-archive", see
    :mod:`layout`) the whole image is written in ``out_dir`` in that format
    instead (named by :func:`layout.default_name`)."""
    started = time.monotonic()
    out_dir = prepare_output_dir(DEFAULT_OUTPUT if out_dir is None else out_dir, link_ok=out_dir is not None)
    ref = parse_reference(reference)
    client = (options or ClientOptions()).client(ref)
    _, image = open_image(client, ref, platform)
    summary = SaveSummary()
    if format is not None:
        writer = layout.writer_for(format)
        if layers:
            raise UsageError("a format writes the whole image (loaders need every layer): drop the layer selection")
        target = Path(out_dir) / layout.default_name(ref, image, format)
        try:
            written = writer(client, ref, image, target, progress_factory=progress_factory, on_result=on_result)
        except LayerslayerError as error:
            summary.errors.append(error)
            if on_error:
                on_error(image.manifest_digest, error)
        else:
            summary.results = written.blobs
            summary.written_to = written.path
        summary.seconds = time.monotonic() - started
        return summary
    chosen = list(image.layers) if all_layers else select_layers(image.layers, layers)
    jobs: list[tuple[str, str, int | None]] = []
    for layer in chosen:
        if layer.foreign:
            summary.foreign.append(layer.digest)
            continue
        jobs.append((layer.digest, layer.media_type, layer.size))
    if config:
        jobs.append((image.config_digest, OCI_CONFIG, None))
    for digest, media_type, size in jobs:
        dest = blob_path(out_dir, ref.registry, ref.repository, digest, media_type)
        make_dirs_below(out_dir, dest.parent)
        try:
            with progress_context(progress_factory, digest.partition(":")[2][:12], size) as bar:
                result = download_blob(client, ref.repository, digest, dest, size, progress=bar)
        except LayerslayerError as error:
            summary.errors.append(error)
            if on_error:
                on_error(digest, error)
            continue
        summary.results.append(result)
        if on_result:
            on_result(result)
    summary.seconds = time.monotonic() - started
    return summary


@dataclass
class ExportItem:
    layer: LayerMatch  # find.LayerMatch: digest, media_type, size, matches, last_offset, sources
    registry: str = ""
    repository: str = ""
    download: DownloadResult | None = None   # whole blob
    files: ExtractReport | None = None        # --files
    error: LayerslayerError | None = None

    @property
    def fetched(self) -> int:
        if self.download:
            return self.download.fetched
        if self.files:
            return self.files.bytes_fetched
        return 0


@dataclass
class ExportSummary:
    items: list[ExportItem] = field(default_factory=list)
    seconds: float = 0.0
    images: list = field(default_factory=list)  # with a format: layout.LayoutResult of each image written

    @property
    def bytes_fetched(self) -> int:
        return sum(item.fetched for item in self.items) + sum(image.fetched for image in self.images)

    @property
    def errors(self) -> list[LayerslayerError]:
        return [item.error for item in self.items if item.error]

    @property
    def exit_code(self) -> int:
        if not self.items:
            return 1
        if self.errors:
            return _error_exit(self.errors)
        if any(item.files is not None and item.files.exit_status for item in self.items):
            return 1
        return 0


def export_layers(
    db_path: str | os.PathLike,
    *,
    patterns: Sequence[str] = (),
    digests: Sequence[str] = (),
    ignore_case: bool = False,
    files: bool = False,
    keep_modes: bool = False,
    out_dir: str | os.PathLike | None = None,
    options=None,
    progress_factory=None,
    on_item: Callable[[ExportItem], None] | None = None,
    format: str | None = None,  # noqa: A002
) -> ExportSummary:
    """Save the layers of the index that hold files matching ``patterns`` (or
    the layers named by ``digests``), each fetched from a registry and
    repository it was indexed from. With ``files``, write only the matching
    files, under ``out_dir/<registry>/<repository>/<digest hex>/``
    (``out_dir``: default ``downloads``, which must not be a symbolic link).
    With ``format`` ("oci" or "docker-archive"), write each indexed image
    holding one of those layers, whole, in that format (see :func:`export_images`)."""
    # The index modules load here, not with the module: start-up speed of ``save``.
    from .find import LayerMatch, layers_matching
    from .query import resolve_layer
    from .store import images_with_layer, layer_sources, open_db

    if files and not patterns:
        raise UsageError("files needs patterns to match")
    started = time.monotonic()
    options = options or ClientOptions()
    db = open_db(db_path, read_only=True)
    try:
        selected: list[LayerMatch] = []
        if patterns:
            selected = list(layers_matching(db, patterns, ignore_case=ignore_case))
        for text in digests:
            layer_id = resolve_layer(db, text)
            row = db.execute("SELECT digest, media_type, size FROM layers WHERE id = ?", [layer_id]).fetchone()
            if row[0] not in {layer.digest for layer in selected}:
                selected.append(LayerMatch(row[0], row[1], row[2], 0, 0, 0))
        sources = {layer.digest: layer.sources or layer_sources(db, layer.digest) for layer in selected}
        if format is not None:
            holders = {layer.digest: images_with_layer(db, layer.digest) for layer in selected}
    finally:
        db.close()
    out_dir = prepare_output_dir(DEFAULT_OUTPUT if out_dir is None else out_dir, link_ok=out_dir is not None)
    summary = ExportSummary()
    if format is not None:
        return export_images(selected, holders, format, out_dir, options, progress_factory, on_item, summary, started)

    def export_one(item: ExportItem, client: RegistryClient, source: tuple[str, str]) -> None:
        registry, repository = source
        layer = item.layer
        if files:
            target = blob_path(out_dir, registry, repository, layer.digest, layer.media_type)
            target = target.with_name(layer.digest.partition(":")[2])
            make_dirs_below(out_dir, target)
            plan = {layer.digest: LayerPlan(None, layer.last_offset)}  # type: ignore[arg-type]
            item.files = extract_files(
                client, repository, [layer], patterns, target, ignore_case=ignore_case,
                keep_modes=keep_modes, merged=False, plan=plan, force=True,  # a directory of its own per layer
            )
        else:
            dest = blob_path(out_dir, registry, repository, layer.digest, layer.media_type)
            make_dirs_below(out_dir, dest.parent)
            with progress_context(progress_factory, layer.digest.partition(":")[2][:12], layer.size) as bar:
                item.download = download_blob(client, repository, layer.digest, dest, layer.size, progress=bar)

    return _each_layer(selected, sources, "the index does not say where layer {} can be fetched from", export_one,
                       options, summary, started, on_item,
                       # a verification or network failure: not a reason to try elsewhere
                       try_next=lambda error: isinstance(error, (NotFound, AuthError)))


def export_images(selected: Sequence, holders: dict, format: str, out_dir, options, progress_factory,  # noqa: A002
                  on_item: Callable[[ExportItem], None] | None, summary: ExportSummary, started: float) -> ExportSummary:
    """Write each image holding one of the ``selected`` layers (``holders``:
    digest -> [(registry, repository, tag, manifest digest)]) whole, in
    ``format``, under ``out_dir``: one item per layer, one layout per image."""
    writer = layout.writer_for(format)
    done: dict[str, LayerslayerError | None] = {}  # manifest digest -> the error writing it, if any

    def write_image(item: ExportItem, client: RegistryClient, source: tuple[str, str, str | None, str]) -> None:
        registry, repository, tag, manifest_digest = source
        if manifest_digest not in done:
            ref = Reference(registry, repository, tag, manifest_digest)
            try:
                _, image = open_image(client, ref)
                target = Path(out_dir) / layout.default_name(ref, image, format)
                summary.images.append(writer(client, ref, image, target, progress_factory=progress_factory))
                done[manifest_digest] = None
            except LayerslayerError as error:
                done[manifest_digest] = error
        if done[manifest_digest] is not None:
            raise done[manifest_digest]  # one image holding the layer is enough: else the next is tried

    return _each_layer(selected, holders, "the index knows no image holding layer {}", write_image,
                       options, summary, started, on_item)


def _each_layer(selected: Sequence, sources: dict[str, list], nowhere: str, export_one: Callable,
                options, summary: ExportSummary, started: float, on_item: Callable[[ExportItem], None] | None, *,
                try_next: Callable[[LayerslayerError], bool] = lambda error: True) -> ExportSummary:
    """One item per selected layer: ``export_one(item, client, source)`` with
    each of the layer's ``sources`` (tuples of registry, repository, …) in
    turn until one works, or ``try_next(error)`` says that error is no reason
    to try the next; ``nowhere`` (formatted with the digest) is the error of a
    layer without sources."""
    clients: dict[str, RegistryClient] = {}
    for layer in selected:
        item = ExportItem(layer)
        summary.items.append(item)
        candidates = sources.get(layer.digest) or []
        if not candidates:
            item.error = LayerslayerError(nowhere.format(layer.digest))
        for source in candidates:
            registry, repository = source[0], source[1]
            item.registry, item.repository, item.error = registry, repository, None
            client = clients.get(registry) or clients.setdefault(registry, options.client(registry))
            try:
                export_one(item, client, source)
                break
            except LayerslayerError as error:
                item.error = error
                if not try_next(error):
                    break
        if on_item:
            on_item(item)
    summary.seconds = time.monotonic() - started
    return summary


def extract_image(
    reference: str,
    patterns: Sequence[str],
    *,
    options=None,
    platform: str | None = None,
    layer: str | None = None,
    out_dir: str | os.PathLike | None = None,
    stdout: BinaryIO | None = None,
    db_path: str | os.PathLike | None = None,
    ignore_case: bool = False,
    keep_modes: bool = False,
    verify: bool = False,
    force: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    follow: bool = False,
    on_written: Callable[[WrittenEntry], None] | None = None,
    message: Callable[[str], None] | None = None,
) -> ExtractReport:
    """``layerslayer extract``: resolve the image, pick the layers, write the matches.

    ``out_dir`` defaults to :func:`default_extract_dir` of the reference. A
    file already there is not replaced unless ``force``. With ``follow``,
    a matching symbolic link is not written: the content of the file it
    leads to inside the image is (see :func:`follow_links`).

    With ``stdout`` (a binary file), the one file matching the single pattern
    is written there instead (symbolic links followed inside the image).
    With ``db_path`` (an index holding every layer of the image) only the
    layers with visible matches are read, each up to its last match.
    """
    parsed = []
    for text in patterns:
        try:
            parsed.append(parse_pattern(text, ignore_case))
        except ValueError as error:
            raise UsageError(str(error))
    if not parsed:
        raise UsageError("give at least one pattern")
    if stdout is not None and len(parsed) != 1:
        raise UsageError("stdout writes one file: give exactly one pattern")
    ref = parse_reference(reference)
    client = (options or ClientOptions()).client(ref)
    _, image = open_image(client, ref, platform)
    layers = list(image.layers)
    merged = layer is None
    if layer is not None:
        layers = [select_layer(layers, layer)]
    skipped = [lay for lay in layers if lay.foreign]
    if skipped and message:
        message(f"{len(skipped)} foreign layer(s) are not distributed by the registry and were not read")
    layers = [lay for lay in layers if not lay.foreign]
    message = say_once(message)
    if stdout is not None:
        if db_path is not None and not verify:
            report = cat_indexed(client, ref.repository, layers, parsed[0], stdout, db_path, merged=merged, message=message)
            if report is not None:
                return report
        return cat_file(client, ref.repository, layers, parsed[0], stdout, merged=merged, verify=verify)
    if out_dir is None:
        out_dir = default_extract_dir(ref)
    plan = None
    report = ExtractReport(Path(out_dir))
    if db_path is not None:
        from .store import open_db  # only with an index: start-up speed

        db = open_db(db_path, read_only=True)
        try:
            plan = plan_from_index(db, layers, parsed, merged=merged, report=report)
        finally:
            db.close()
        if plan is None:
            report = ExtractReport(Path(out_dir))
            if message:
                message(f"{db_path} does not index every layer of {ref.short}: reading the layers instead")
    report = extract_files(
        client, ref.repository, layers, parsed, out_dir, keep_modes=keep_modes, merged=merged,
        plan=plan, verify=verify, force=force, max_output=max_output, follow=follow, report=report,
        on_written=on_written, message=message,
    )
    if follow:
        follow_links(client, ref.repository, layers, report, merged=merged, verify=verify, force=force,
                     max_output=max_output, on_written=on_written)
    return report
