"""Streaming extraction: layers read from the registry, matching entries written through a :class:`SafeTree`.

:func:`extract_files` streams layers (top layer first) and writes the entries
whose path matches the patterns (:mod:`layerslayer.patterns`); :class:`MergedView`
keeps the result the image's final file system. With a :class:`LayerPlan`
from the index (:func:`plan_from_index`) only the planned entries are read,
each layer up to its last one, from a gzip checkpoint or by a lazy-pull
layer's table of contents when the index has one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import tarstream, toc
from .decompress import decompress
from .errors import LayerslayerError, TarError
from .oci import is_whiteout, layer_compression, whiteout_code
from .overlay import scope
from .patterns import Pattern, compile_patterns, parse_pattern
from .registry import RegistryClient
from .safetree import DEFAULT_MAX_OUTPUT, OutputCapReached, Refused, RefusedEntry, SafeTree, WrittenEntry
from .seekable import SeekStream, plan_seek
from .verify import Digester

# Extraction reads the network in smaller pieces than a download: when it
# stops early, little has been fetched past the last wanted entry.
EXTRACT_CHUNK = 256 * 1024


@dataclass
class LayerRead:
    digest: str
    layer: int | None
    fetched: int       # blob bytes received
    complete: bool     # read to its end (then its digest was verified)


@dataclass
class ExtractReport:
    out_dir: Path | None
    written: list[WrittenEntry] = field(default_factory=list)
    refused: list[RefusedEntry] = field(default_factory=list)
    deleted: list[tuple[str, int | None]] = field(default_factory=list)  # matches a later layer deleted
    shadowed: int = 0   # matches hidden by a newer version in a later layer
    modes_dropped: list[str] = field(default_factory=list)  # setuid/setgid bits removed
    layers: list[LayerRead] = field(default_factory=list)
    seconds: float = 0.0
    capped: bool = False  # stopped at the output cap

    @property
    def bytes_fetched(self) -> int:
        return sum(layer.fetched for layer in self.layers)

    def note_deleted(self, path: str, layer: int | None) -> None:
        "Record a match a later layer deleted (once per path; a known layer wins)."
        for i, (known, where) in enumerate(self.deleted):
            if known == path:
                if where is None and layer is not None:
                    self.deleted[i] = (path, layer)
                return
        self.deleted.append((path, layer))

    @property
    def escaped(self) -> list[WrittenEntry]:
        return [w for w in self.written if w.written_as and w.written_as != w.path]

    @property
    def exit_status(self) -> int:
        "0: every match written; 1: nothing matched, or some matches were not written."
        return 0 if self.written and not self.refused else 1



# -- the merged view of a layer stack ------------------------------------------------

_SELF, _BELOW = 1, 2


class MergedView:
    """What lower layers still show once later layers are applied (top layer first).

    Feed every entry of a layer to :meth:`note`, then call :meth:`end_layer`;
    :meth:`hidden` tells whether an entry of a lower layer is "shadowed" (a
    later layer has that path, or a non-directory above it), "deleted" (a
    whiteout or an opaque directory in a later layer, the root included), or
    visible (None). Markers reach what :func:`overlay.scope` says; unlike the
    index, a non-directory hides everything below its path even where lower
    layers only imply that directory (as containerd unpacks it).
    """

    def __init__(self) -> None:
        self.covered: dict[str, int] = {}
        self.deleted: set[str] = set()  # paths covered by whiteouts / opaque dirs
        self._pending: list[tuple[str, int, bool]] = []

    def hidden(self, path: str) -> str | None:
        covered = self.covered
        if covered.get(path, 0) & _SELF:
            return "deleted" if path in self.deleted else "shadowed"
        cut = path.rfind("/")
        while cut > 0:
            ancestor = path[:cut]
            if covered.get(ancestor, 0) & _BELOW:
                return "deleted" if ancestor in self.deleted else "shadowed"
            cut = ancestor.rfind("/")
        if path and covered.get("", 0) & _BELOW:  # an opaque marker at the root
            return "deleted"
        return None

    def note(self, path: str, kind: str) -> None:
        code = whiteout_code(path)
        if code:
            target, prefix = scope(code, path)
            if target is not None:  # a whiteout: its target and everything below it
                self._pending.append((target, _SELF | _BELOW, True))
            else:  # an opaque marker: everything below its directory ("" for the root), not the directory
                self._pending.append((prefix[:-1], _BELOW, True))
        elif kind == "dir":
            self._pending.append((path, _SELF, False))
        else:
            self._pending.append((path, _SELF | _BELOW, False))

    def end_layer(self) -> None:
        for path, flags, by_whiteout in self._pending:
            old = self.covered.get(path, 0)
            if by_whiteout and not old & flags == flags:
                self.deleted.add(path)
            self.covered[path] = old | flags
        self._pending = []


# -- streaming a layer -------------------------------------------------------------


class LayerStream:
    """A layer's tar entries straight from the registry, hashed as they pass.

    ``complete`` is True once the blob was read to its end; :meth:`verify`
    then checks its digest and size. :meth:`close` stops the download.
    With a known ``size`` the blob is read in ranged windows
    (:meth:`RegistryClient.iter_blob_ranges`), so stopping early leaves
    little fetched for nothing.
    """

    def __init__(self, client: RegistryClient, repository: str, digest: str, media_type: str | None,
                 size: int | None = None, chunk_size: int = EXTRACT_CHUNK, *,
                 on_whole: Callable[[str], None] | None = None):
        self.digest = digest
        self.size = size
        self.digester = Digester(digest, size)
        self.complete = False
        if size:
            self._raw = client.iter_blob_ranges(repository, digest, size, chunk_size=chunk_size, on_whole=on_whole)
        else:
            self._raw = client.iter_blob(repository, digest, chunk_size=chunk_size)
        self._counted = self._count()
        self.reader = tarstream.TarReader(decompress(self._counted, layer_compression(media_type)))

    @property
    def fetched(self) -> int:
        "Blob bytes received so far."
        return self.digester.count

    def _count(self) -> Iterator[bytes]:
        update = self.digester.update
        for chunk in self._raw:
            update(chunk)
            yield chunk
        self.complete = True

    def entries(self) -> Iterator[tarstream.Entry]:
        try:
            yield from self.reader
        except TarError:
            # Corrupt data: was it damaged on the way (digest) or born that way?
            for _ in self._counted:
                pass
            self.verify()
            raise

    def drain(self) -> None:
        for _ in self._counted:
            pass

    def verify(self) -> None:
        "Once the blob was read to its end: raise VerificationError unless it has its digest and size."
        if self.complete:
            self.digester.check()

    def verified(self) -> bool:
        "True when the blob was read to its end and matched its digest and size."
        return self.complete and self.digester.matches()

    def close(self) -> None:
        self._counted.close()
        self._raw.close()


def _add_note(error: LayerslayerError, note: str) -> None:
    "Append to an error's one line (it keeps its class and exit status)."
    error.args = (f"{error}; {note}",) + error.args[1:]


# -- extraction ---------------------------------------------------------------------


@dataclass
class LayerPlan:
    """From the index: which entries of one layer to write and where to stop.

    ``offsets`` are the header offsets of the entries to write (None: every
    entry matching the patterns); nothing after ``last_offset`` is read.
    """

    offsets: set[int] | None
    last_offset: int
    seek: object = None  # a seekable.SeekPlan when the index has checkpoints before these entries
    paths: set[str] = field(default_factory=set)  # the paths of those entries
    toc: bool = False  # listed from its table of contents: each file is read by its TOC offsets


def layer_index(layer) -> int | None:
    index = getattr(layer, "index", None)
    return index if isinstance(index, int) and index >= 0 else None


def plan_extraction(layer_rows: Sequence[tuple[object, Iterable[tuple[str, str, int]]]], patterns: Sequence[Pattern],
                    merged: bool = True, report: ExtractReport | None = None) -> dict[str, LayerPlan]:
    """Decide from index rows which entries to write: ``layer_rows`` is
    ``[(layer, [(path, type, offset), ...]), ...]`` top layer first.
    Layers absent from the result hold nothing to write."""
    matcher = compile_patterns(patterns)
    view = MergedView() if merged else None
    plans: dict[str, LayerPlan] = {}
    for layer, rows in layer_rows:
        offsets: set[int] = set()
        paths: set[str] = set()
        last = {path: offset for path, _, offset in rows}  # a path twice in a layer: the last copy wins
        for path, kind, offset in rows:
            hidden = view.hidden(path) if view else None
            if view:  # every copy: a file replacing a directory deletes below it even when a later copy wins
                view.note(path, kind)
            if last[path] != offset:
                continue
            if is_whiteout(path) or not matcher(path):
                continue
            if hidden:
                if report is not None:
                    if hidden == "deleted":
                        report.note_deleted(path, layer_index(layer))
                    else:
                        report.shadowed += 1
                continue
            offsets.add(offset)
            paths.add(path)
        if view:
            view.end_layer()
        if offsets:
            plans[layer.digest] = LayerPlan(offsets, max(offsets), paths=paths)
    return plans


def extract_files(
    client: RegistryClient,
    repository: str,
    layers: Sequence,
    patterns: Sequence[str | Pattern],
    out_dir: str | os.PathLike,
    *,
    ignore_case: bool = False,
    keep_modes: bool = False,
    merged: bool = True,
    plan: dict[str, LayerPlan] | None = None,
    verify: bool = False,
    force: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    follow: bool = False,
    report: ExtractReport | None = None,
    on_written: Callable[[WrittenEntry], None] | None = None,
    message: Callable[[str], None] | None = None,
) -> ExtractReport:
    """Write the entries of ``layers`` whose paths match ``patterns`` under ``out_dir``.

    ``layers`` are in image order (objects with ``digest``, ``media_type``,
    ``size`` and ``index``, like :class:`image.LayerInfo`); they are read top
    layer first. With ``merged`` (the default) the result is the image's
    final file system: a path written from a later layer is not overwritten
    by an older version, and files deleted by a later layer are not written
    (they are listed in ``report.deleted``). When every pattern names one
    exact path, reading stops as soon as the last of them is written. With a
    ``plan`` (from the index, see :func:`plan_extraction`) only the planned
    entries are written and each layer is read only up to its last one
    (from the checkpoint before its first one when the plan has one, see
    :func:`open_layer`). ``verify`` reads every layer it opens to its end to
    check its digest. ``message`` hears about partial reads once.
    A file already in ``out_dir`` is not replaced (it is refused) unless ``force``.
    Extraction stops (the entry is refused) before file contents would pass
    ``max_output`` bytes in all; paths nested deeper than :data:`MAX_DEPTH`
    are refused. With ``follow``, matching symbolic links are not written
    but listed in ``report.written`` with an empty ``written_as``, for
    :func:`follow_links`.
    """
    started = time.monotonic()
    parsed = [p if isinstance(p, Pattern) else parse_pattern(p, ignore_case) for p in patterns]
    matcher = compile_patterns(parsed)
    literals = {p.literal_path for p in parsed}
    remaining: set[str] | None = None if (None in literals or plan is not None) else set(literals)
    report = report or ExtractReport(Path(out_dir))
    view = MergedView() if merged and plan is None else None
    with SafeTree(out_dir, keep_modes=keep_modes, force=force, max_bytes=max_output) as tree:
        try:
            for layer in reversed(list(layers)):
                if remaining is not None and not remaining:
                    break
                layer_plan = plan.get(layer.digest) if plan is not None else None
                if plan is not None and layer_plan is None:
                    continue
                index = layer_index(layer)
                if layer_plan is not None and layer_plan.toc and not verify:
                    tree.begin_layer()
                    _extract_by_toc(client, repository, layer, layer_plan, tree, report, on_written, message)
                    continue
                stream = open_layer(client, repository, layer, layer_plan, verify=verify, message=message)
                read = LayerRead(layer.digest, index, 0, False)
                report.layers.append(read)
                tree.begin_layer()
                stop = False
                try:
                    for entry in stream.entries():
                        path = entry.path
                        if layer_plan is not None:
                            if layer_plan.toc:  # TOC offsets are not tar offsets: match by path, read it all
                                if path in layer_plan.paths:
                                    _write_one(tree, entry, stream, layer, report, on_written)
                                continue
                            if (entry.offset in layer_plan.offsets) if layer_plan.offsets is not None else (
                                not entry.whiteout and matcher(path)
                            ):
                                _write_one(tree, entry, stream, layer, report, on_written, follow)
                                if report.capped:
                                    stop = True
                                    break
                            if entry.offset >= layer_plan.last_offset and not verify:
                                break  # the rest of this layer holds nothing we want
                            continue
                        hidden = view.hidden(path) if view else None
                        if view:
                            view.note(path, entry.type)
                        if entry.whiteout or not matcher(path):
                            continue
                        if hidden:
                            if hidden == "deleted":
                                report.note_deleted(path, index)
                            else:
                                report.shadowed += 1
                        else:
                            _write_one(tree, entry, stream, layer, report, on_written, follow)
                            if report.capped:
                                stop = True
                                break
                        if remaining is not None:
                            remaining.discard(path)
                            # A later copy of the path in this layer would win
                            # (as the runtime unpacks it): finish the layer first.
                            stop = not remaining
                    if (verify or stop) and not stream.complete:
                        stream.drain()
                    stream.verify()
                except BaseException as error:
                    # The stream failed (damaged or cut on the way, Ctrl-C): unless the
                    # blob was read to its end and matched its digest, what this layer
                    # gave us cannot be trusted, and nothing of it stays.
                    if not stream.verified():
                        removed = [w for w in report.written if w.digest == layer.digest]
                        tree.remove_layer_files()
                        report.written = [w for w in report.written if w.digest != layer.digest]
                        if removed and isinstance(error, LayerslayerError):
                            _add_note(error, f"the {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} written "
                                             f"from layer {layer.digest} were removed")
                    raise
                finally:
                    read.fetched = stream.fetched
                    read.complete = stream.complete
                    stream.close()
                if stop:
                    break
                if view:
                    view.end_layer()
                    if remaining:
                        for path in list(remaining):
                            if view.hidden(path) == "deleted":
                                report.note_deleted(path, None)
                                remaining.discard(path)
                            elif view.hidden(path):
                                remaining.discard(path)
        finally:
            report.modes_dropped.extend(tree.modes_dropped)
            report.seconds = time.monotonic() - started
    return report


def open_layer(client: RegistryClient, repository: str, layer, layer_plan: LayerPlan | None = None, *,
               verify: bool = False, message: Callable[[str], None] | None = None):
    """A :class:`LayerStream`, or with a plan that has a checkpoint (and no
    ``verify``) a ``seekable.SeekStream`` over one Range request from the
    checkpoint to the end of the planned entries."""
    say = message or (lambda text: None)

    def on_whole(why: str) -> None:
        say(f"{client.registry} ignores Range requests: reading layers from their start instead")

    seek = layer_plan.seek if layer_plan is not None and not verify else None
    if seek is None or not layer.size:
        return LayerStream(client, repository, layer.digest, layer.media_type, layer.size, on_whole=on_whole)
    stop = layer.size if seek.end is None else seek.end + 1
    chunks = client.iter_blob_ranges(repository, layer.digest, stop, chunk_size=EXTRACT_CHUNK, start=seek.start,
                                     window=stop - seek.start, blob_size=layer.size, on_whole=on_whole)
    say("read part of a layer from an index checkpoint: sizes checked, the layer digest cannot be "
        "(verify=True reads whole layers)")
    return SeekStream(chunks, seek, layer.digest)


class _Fetcher:
    "``fetch_range`` for the toc module, counting the bytes."

    def __init__(self, client: RegistryClient, repository: str, digest: str):
        self.client, self.repository, self.digest = client, repository, digest
        self.fetched = 0

    def __call__(self, start: int, end: int) -> bytes:
        data = self.client.get_blob_range(self.repository, self.digest, start, end)
        self.fetched += len(data)
        return data


def toc_entries(client: RegistryClient, repository: str, layer, layer_plan: LayerPlan, report: ExtractReport,
                 message: Callable[[str], None] | None):
    """The planned entries of a layer listed from its TOC, each with a function
    giving its content (fetched by the TOC's offsets, chunk digests checked)."""
    fetch = _Fetcher(client, repository, layer.digest)
    read = LayerRead(layer.digest, layer_index(layer), 0, False)
    report.layers.append(read)
    if message:
        message("read files of a lazy-pull layer by their table of contents: chunk digests checked, "
                "the layer digest cannot be (verify=True reads whole layers)")
    try:
        doc = toc.read_document(fetch, layer.size, layer.annotations or {})
        what = f"layer {layer.digest}"
        for entry in doc.entries():
            if entry.path not in layer_plan.paths or entry.offset not in layer_plan.offsets:
                continue
            if entry.type == "file" and entry.size:
                chunks, digest = toc.file_chunks(doc, entry.path)
                yield entry, lambda chunks=chunks, digest=digest: toc.read_chunks(fetch, doc.kind, chunks, digest, what)
            else:
                yield entry, lambda: iter(())
    finally:
        read.fetched = fetch.fetched


def _extract_by_toc(client: RegistryClient, repository: str, layer, layer_plan: LayerPlan, tree: SafeTree,
                    report: ExtractReport, on_written, message) -> None:
    for entry, content in toc_entries(client, repository, layer, layer_plan, report, message):
        _write_one(tree, entry, _Content(content), layer, report, on_written)


class _Content:
    "What :func:`_write_one` reads a file's content from (``stream.reader.iter_content()``)."

    def __init__(self, content: Callable[[], Iterator[bytes]]):
        self.reader = self
        self.iter_content = content


def say_once(message: Callable[[str], None] | None) -> Callable[[str], None]:
    "``message`` that says each distinct text only once (a no-op for None)."
    if message is None:
        return lambda text: None
    seen: set[str] = set()

    def say(text: str) -> None:
        if text not in seen:
            seen.add(text)
            message(text)
    return say


def _write_one(tree: SafeTree, entry: tarstream.Entry, stream: LayerStream, layer, report: ExtractReport,
               on_written: Callable[[WrittenEntry], None] | None, follow: bool = False) -> None:
    index = layer_index(layer)
    if follow and entry.type == "symlink":  # written later by follow_links, as the file it leads to
        report.written.append(WrittenEntry(entry.path, "symlink", 0, index, layer.digest, "", entry.linkname))
        return
    again = tree.wrote_in_layer(entry.path)
    try:
        written_as = tree.write(entry, stream.reader.iter_content() if entry.type == "file" else None)
    except OutputCapReached as why:
        report.refused.append(RefusedEntry(entry.path, entry.type, str(why), index, layer.digest))
        report.capped = True
        return
    except Refused as why:
        report.refused.append(RefusedEntry(entry.path, entry.type, str(why), index, layer.digest))
        return
    except OSError as error:
        report.refused.append(RefusedEntry(entry.path, entry.type, f"cannot write it: {error.strerror or error}", index, layer.digest))
        return
    written = WrittenEntry(entry.path, entry.type, entry.size, index, layer.digest, written_as,
                           entry.linkname if entry.type == "symlink" else "")
    if again:  # an earlier copy of the path in this layer, now replaced: listed once
        report.written = [w for w in report.written if not (w.path == entry.path and w.digest == layer.digest)]
    report.written.append(written)
    if on_written:
        on_written(written)


# -- the index: which layers hold matches ---------------------------------------------
# Which layers hold matches comes from ``find.layers_matching`` (the same
# pattern semantics as ``find``); here only the per-layer plan for extract --db.


def index_rows(db, digest: str) -> list[tuple[str, str, int]] | None:
    "(path, type, offset) of every entry of an indexed layer, in tar order; None if not indexed."
    from .store import layer_status, path_from_row  # only with an index: start-up speed

    if layer_status(db, digest) != "indexed":
        return None
    return [
        (path_from_row(path, path_bytes), kind, offset)
        for path, path_bytes, kind, offset in db.execute(
            'SELECT path, path_bytes, type, "offset" FROM files WHERE layer_digest = ? ORDER BY position', [digest]
        )
    ]


def plan_from_index(db, layers: Sequence, patterns: Sequence[str | Pattern], *, ignore_case: bool = False,
                    merged: bool = True, report: ExtractReport | None = None) -> dict[str, LayerPlan] | None:
    """:func:`plan_extraction` from the index; None when one of the layers is not indexed."""
    parsed = [p if isinstance(p, Pattern) else parse_pattern(p, ignore_case) for p in patterns]
    stack = []
    for layer in reversed(list(layers)):
        rows = index_rows(db, layer.digest)
        if rows is None:
            return None
        stack.append((layer, rows))
    plans = plan_extraction(stack, parsed, merged=merged, report=report)
    add_seek_plans(db, plans, {layer.digest: layer for layer in layers})
    return plans


def add_seek_plans(db, plans: dict[str, LayerPlan], layers: dict) -> None:
    "Give each plan whose layer has checkpoints before its entries the Range to read them with."
    from .store import entry_extents, layer_checkpoints, layer_listed_via  # only with an index: start-up speed

    for digest, layer_plan in plans.items():
        if (layer_listed_via(db, digest) or "").endswith("-toc"):
            layer_plan.toc = True
            continue
        rows = layer_checkpoints(db, digest)
        if rows and layer_plan.offsets:
            layer = layers.get(digest)
            layer_plan.seek = plan_seek(rows, entry_extents(db, digest, layer_plan.offsets), getattr(layer, "size", None))
