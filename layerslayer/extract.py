"""``extract`` as a library call: resolve the image, pick the layers, write the matches.

The machinery is in :mod:`extraction` (streaming, the index plan) and
:mod:`cat` (one file to a stream, links followed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from .cat import cat_file, cat_indexed, follow_links
from .download import default_extract_dir
from .errors import UsageError
from .extraction import ExtractReport, extract_files, plan_from_index, say_once
from .image import open_image
from .options import ClientOptions
from .patterns import parse_pattern
from .reference import parse_reference
from .safetree import DEFAULT_MAX_OUTPUT, WrittenEntry
from .save import select_layers


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
        raise UsageError("give at least one PATTERN")
    if stdout is not None and len(parsed) != 1:
        raise UsageError("--stdout writes one file: give exactly one PATTERN")
    ref = parse_reference(reference)
    client = (options or ClientOptions()).client(ref)
    _, image = open_image(client, ref, platform)
    layers = list(image.layers)
    merged = layer is None
    if layer is not None:
        layers = select_layers(layers, [layer])
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
