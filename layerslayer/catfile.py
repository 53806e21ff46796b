"""One file's content out of an image (``extract --stdout``, ``extract --follow``).

:func:`cat_file` streams layers top first and writes the first matching
file, links followed inside the image, only once its layer's digest has been
checked; :func:`cat_indexed` and :func:`cat_planned` read only as far as an
index says the file is; :func:`follow_links` writes, in place of symbolic
links :func:`extraction.extract_files` left pending, the files they lead to.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from . import tarstream
from .extraction import (
    EXTRACT_CHUNK,
    ExtractReport,
    LayerPlan,
    LayerRead,
    LayerStream,
    MergedView,
    layer_index,
    open_layer,
    plan_from_index,
    toc_entries,
)
from .patterns import Pattern, compile_patterns, escape, parse_pattern
from .registry import RegistryClient
from .safetree import DEFAULT_MAX_OUTPUT, OutputCapReached, Refused, RefusedEntry, SafeTree, WrittenEntry


def cat_file(
    client: RegistryClient,
    repository: str,
    layers: Sequence,
    pattern: str | Pattern,
    out: BinaryIO,
    *,
    ignore_case: bool = False,
    merged: bool = True,
    max_links: int = 16,
    verify: bool = False,
) -> ExtractReport:
    """Write the content of the first file matching ``pattern`` (top layer first) to ``out``.

    A path present twice in that layer gives its last copy, as the runtime
    unpacks it: the layer is read to its end (spooled to a temporary file),
    and its digest is checked before anything reaches ``out``.

    Symbolic links are followed inside the image (an absolute target means
    the image's root), hard links to their target in the same layer.
    Nothing reaches ``out`` before the layer's digest has been checked, so
    ``verify`` changes nothing here (it is accepted for symmetry with
    :func:`extract_files`).
    """
    started = time.monotonic()
    report = ExtractReport(None)
    wanted: Callable[[str], bool] = compile_patterns([pattern], ignore_case)
    candidates = list(reversed(list(layers)))
    try:
        for _hop in range(max_links + 1):
            follow: tuple[str, list] | None = None
            view = MergedView() if merged else None
            for layer in candidates:
                index = layer_index(layer)
                stream = LayerStream(client, repository, layer.digest, layer.media_type, layer.size)
                read = LayerRead(layer.digest, index, 0, False)
                report.layers.append(read)
                found: tarstream.Entry | None = None
                spool = None
                try:
                    for entry in stream.entries():
                        if found is not None:
                            # A later copy of the same path in this layer wins (as the
                            # runtime unpacks it): read the layer to its end.
                            if entry.path != found.path:
                                continue
                        else:
                            hidden = view.hidden(entry.path) if view else None
                            if view:
                                view.note(entry.path, entry.type)
                            if entry.whiteout or hidden or not wanted(entry.path):
                                continue
                        found = entry
                        if entry.type == "file":
                            if spool is None:
                                spool = tempfile.TemporaryFile()
                            spool.seek(0)
                            spool.truncate()
                            for piece in stream.reader.iter_content():  # stored bytes: holes come later
                                spool.write(piece)
                    stream.verify()  # the layer was read to its end: its digest is checked before any output
                    if found is None:
                        pass
                    elif found.type == "file":
                        spool.seek(0)
                        if found.sparse is None:
                            shutil.copyfileobj(spool, out, EXTRACT_CHUNK)
                        else:  # a sparse file: its logical bytes, holes as zeros
                            stored = iter(lambda: spool.read(EXTRACT_CHUNK), b"")  # noqa: B023  (drained on the next line)
                            for piece in tarstream.sparse_bytes(stored, found.sparse, found.size):
                                out.write(piece)
                        out.flush()
                        report.written.append(WrittenEntry(found.path, "file", found.size, index, layer.digest, ""))
                    elif found.type == "symlink":
                        base = "" if found.linkname.startswith("/") else posixpath.dirname(found.path)
                        target = posixpath.normpath(posixpath.join("/", base, found.linkname)).lstrip("/")
                        follow = (target, candidates)
                    elif found.type == "hardlink":
                        follow = (found.linkname, [layer])
                    else:
                        what = {"dir": "is a directory", "fifo": "is a FIFO"}.get(found.type, "is a device file")
                        report.refused.append(RefusedEntry(found.path, found.type, f"{found.path} {what}", index, layer.digest))
                finally:
                    if spool is not None:
                        spool.close()
                    read.fetched = stream.fetched
                    read.complete = stream.complete
                    stream.close()
                if found is not None:
                    break
                if view:
                    view.end_layer()
            if follow is None:
                break
            target, candidates = follow
            if not target:
                report.refused.append(RefusedEntry(str(pattern), "symlink", "the link points at the root directory", None, ""))
                break
            wanted = lambda path, target=target: path == target  # noqa: E731
        else:
            report.refused.append(RefusedEntry(str(pattern), "symlink", f"more than {max_links} links in a row", None, ""))
    finally:
        report.seconds = time.monotonic() - started
    return report



def _exact_pattern(path: str) -> Pattern:
    "A pattern matching exactly this image path (glob characters put in sets)."
    return parse_pattern("/" + escape(path))


class _CappedOut:
    "A binary file that refuses to grow past ``room`` bytes."

    def __init__(self, f: BinaryIO, room: int):
        self.f, self.room, self.written = f, room, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.room:
            raise OutputCapReached("its content would pass the output cap (max_output raises it)")
        self.written += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def follow_links(client: RegistryClient, repository: str, layers: Sequence, report: ExtractReport, *,
                 merged: bool = True, verify: bool = False, force: bool = False, max_output: int = DEFAULT_MAX_OUTPUT,
                 on_written: Callable[[WrittenEntry], None] | None = None) -> None:
    """Write, in place of each symbolic link :func:`extract_files` left pending
    (``follow=True``), the content of the file it leads to inside the image,
    followed as ``extract --stdout`` does (through chains; an absolute target
    means the image's root). The content goes to a temporary file in the
    output directory and is renamed into place when complete, through the
    same checks as any file; a link that leads to no file is refused."""
    pending = [w for w in report.written if w.type == "symlink" and not w.written_as]
    if not pending or report.out_dir is None:
        return
    room = max_output - sum(w.size for w in report.written if w.type == "file")
    with SafeTree(report.out_dir, force=force) as tree:
        for written in pending:
            report.written.remove(written)
            fd, temp = tempfile.mkstemp(prefix=".layerslayer-follow-", dir=tree.root)
            try:
                with os.fdopen(fd, "wb") as f:
                    out = _CappedOut(f, room)
                    found = cat_file(client, repository, layers, _exact_pattern(written.path), out,
                                     merged=merged, verify=verify)
                if not found.written:
                    why = found.refused[0].reason if found.refused else "it leads to nothing in the image"
                    raise Refused(f"symbolic link to {written.linkname} not followed: {why}")
                os.chmod(temp, 0o644)
                written.written_as = tree.place(temp, written.path)
            except Refused as why:
                report.refused.append(RefusedEntry(written.path, "symlink", str(why), written.layer, written.digest))
                if isinstance(why, OutputCapReached):
                    report.capped = True
                    break
                continue
            finally:
                if os.path.exists(temp):
                    os.unlink(temp)
            room -= out.written
            written.followed = found.written[0].path
            written.type, written.size = "file", out.written
            report.written.append(written)
            if on_written:
                on_written(written)


def cat_indexed(client: RegistryClient, repository: str, layers: Sequence, pattern: Pattern, out: BinaryIO,
                db_path, *, merged: bool = True, message: Callable[[str], None] | None = None) -> ExtractReport | None:
    """:func:`cat_file` for one regular file that the index at ``db_path``
    places: its layer is read only up to it (from a checkpoint when there is
    one). None when the index cannot say (a layer not indexed, no match, a
    link): then :func:`cat_file` reads the layers."""
    from .store import open_db  # only with an index: start-up speed

    started = time.monotonic()
    db = open_db(db_path, read_only=True)
    try:
        plans = plan_from_index(db, layers, [pattern], merged=merged)
    finally:
        db.close()
    if not plans:
        if plans is None and message:
            message(f"{db_path} does not index every layer of the image: reading the layers instead")
        return None
    digest, layer_plan = next(iter(plans.items()))  # the top layer holding a match
    layer = next(lay for lay in layers if lay.digest == digest)
    return cat_planned(client, repository, layer, layer_plan, out, message=message, started=started)


def cat_planned(client: RegistryClient, repository: str, layer, layer_plan: LayerPlan, out: BinaryIO, *,
                message: Callable[[str], None] | None = None, started: float | None = None) -> ExtractReport | None:
    """Write the first regular file of ``layer_plan`` to ``out``, reading the
    layer as the plan allows (TOC offsets, a checkpoint, or streaming up to
    it). None when the planned entry is not a regular file."""
    started = time.monotonic() if started is None else started
    report = ExtractReport(None)
    stream = None
    if layer_plan.toc:
        entries = toc_entries(client, repository, layer, layer_plan, report, message)
    else:
        stream = open_layer(client, repository, layer, layer_plan, message=message)
        read = LayerRead(layer.digest, layer_index(layer), 0, False)
        report.layers.append(read)
        entries = ((e, stream.reader.iter_content) for e in stream.entries() if e.offset in layer_plan.offsets)
    try:
        for entry, content in entries:
            if entry.type != "file":
                return None  # links and the rest: cat_file knows them
            for piece in content():
                out.write(piece)
            out.flush()
            report.written.append(WrittenEntry(entry.path, "file", entry.size, layer_index(layer), layer.digest, ""))
            break
    finally:
        entries.close()
        if stream is not None:
            read.fetched = stream.fetched
            read.complete = stream.complete
            stream.close()
        report.seconds = time.monotonic() - started
    return report
