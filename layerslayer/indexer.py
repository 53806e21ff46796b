"""Index images: resolve references, then stream each new layer's tar headers into the store.

Each layer digest is downloaded and indexed once, whichever image it came
from. A layer's rows commit together with its ``indexed`` status (see
store.LayerWriter), so a killed run leaves nothing half done and the next
run picks up where it stopped. Failed layers keep their error and are tried
again by the next run.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import secretscan, seekable, store, tarstream, toc
from .decompress import decompress, sniff_compression
from .display import human_size
from .errors import LayerslayerError, UsageError, VerificationError
from .image import LayerInfo, PlatformImage, ResolvedImage, check_single_platform, load_platform, resolve, select_platform
from .oci import layer_compression
from .options import ClientOptions
from .reference import Reference, parse_reference
from .registry import RegistryClient
from .verify import Digester

log = logging.getLogger("layerslayer")

# Chunks read ahead of the parser by the download thread (1 MiB each): enough
# to keep the network busy while we inflate, small enough for constant memory.
PREFETCH_CHUNKS = 8


@dataclass
class LayerJob:
    digest: str
    media_type: str
    size: int
    annotations: dict
    registry: str
    repository: str
    scan_max_size: int | None = None  # scan file contents up to this size (None: no scanning)
    keep_values: bool = False  # store the secret values found, not only fingerprints
    scan_only: bool = False  # the layer is indexed already: only scan it


@dataclass
class ScanPlan:
    """How a run scans for secrets (see :func:`index_images`): ``scan`` True
    scans every layer (a lazy-pull one is then streamed, and a layer indexed
    earlier without scanning is streamed once more); None (the default) scans
    what is streamed anyway, and nothing without the fast prefilter; False
    nothing. ``scanner`` scans configs and build steps (None: no scanning)."""

    scan: bool | None
    max_size: int | None
    keep_values: bool
    scanner: secretscan.Scanner | None

    @classmethod
    def of(cls, scan: bool | None, max_size: int, keep_values: bool) -> ScanPlan:
        if scan is None and not secretscan.fast_prefilter():
            scan = False
        scanning = scan is not False
        return cls(scan, max_size if scanning else None, keep_values,
                   secretscan.Scanner(max_size) if scanning else None)

    def layer_cap(self, annotations: dict | None) -> int | None:
        "The scan cap for a layer's files: None for a lazy-pull layer listed from its TOC by default."
        if self.scan is None and toc.toc_kind(annotations) is not None:
            return None
        return self.max_size


@dataclass
class IndexSummary:
    images: int = 0  # image references worked on, recorded or failed
    images_failed: int = 0  # of those, the ones that failed or lost a layer
    platforms: int = 0
    layers_indexed: int = 0
    layers_reused: int = 0
    layers_failed: int = 0
    layers_skipped: int = 0  # foreign layers: recorded, never fetched
    files: int = 0
    findings: int | None = None  # secrets found by content scanning (None: not scanning)
    layer_bytes: int = 0  # layer blob bytes fetched (0 when every layer was already indexed)
    bytes_downloaded: int = 0  # everything: manifests, configs, tokens' bodies, layers
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    layers_left: int = 0  # after an interruption: layers queued and not indexed

    @property
    def ok(self) -> bool:
        return self.layers_failed == 0 and not self.errors

    def as_line(self) -> str:
        parts = [
            f"{self.images} image{'s' if self.images != 1 else ''}"
            + (f" ({self.images_failed} failed)" if self.images_failed else ""),
            f"{self.platforms} platform{'s' if self.platforms != 1 else ''}",
            f"layers: {self.layers_indexed} indexed, {self.layers_reused} reused, {self.layers_failed} failed",
        ]
        if self.layers_skipped:
            parts.append(f"{self.layers_skipped} foreign skipped")
        parts.append(f"{self.files:,} files")
        if self.findings is not None:
            parts.append(f"{self.findings} secret finding{'s' if self.findings != 1 else ''}")
        parts += [f"{human_size(self.layer_bytes)} of layers downloaded", f"{self.seconds:.1f}s"]
        return "Indexed " + ", ".join(parts)

    def as_interrupted_line(self) -> str:
        "What an interrupted run kept: every layer counted as indexed is committed; the rest waits for the next run."
        left = self.layers_left
        return (
            f"Kept: {self.as_line()[len('Indexed '):]}; "
            f"{left} layer{'s' if left != 1 else ''} not indexed (run the same command again to resume)"
        )


class Interrupted(KeyboardInterrupt):
    "Ctrl-C during :func:`index_images`; ``summary`` says what was kept (committed before it)."

    def __init__(self, summary: IndexSummary):
        super().__init__()
        self.summary = summary


class Progress:
    "Receives progress events; the CLI draws them on a terminal. The default is silent."

    def layer_started(self, job: LayerJob) -> None: ...
    def layer_advanced(self, job: LayerJob, nbytes: int, entries: int) -> None: ...
    def layer_finished(self, job: LayerJob, entries: int, error: str | None) -> None: ...
    def message(self, text: str) -> None: ...


def _prefetch(chunks: Iterable[bytes], depth: int = PREFETCH_CHUNKS,
              cancel: threading.Event | None = None) -> Iterator[bytes]:
    """Read an iterable in its own thread: the network keeps flowing while we parse.
    ``cancel`` set: Cancelled within 0.2 s, even while the server sends nothing."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def reader():
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                buffer.put(chunk)
            buffer.put(done)
        except BaseException as error:  # handed to the consumer thread
            buffer.put(error)

    thread = threading.Thread(target=reader, daemon=True, name="layerslayer-download")
    thread.start()
    try:
        while True:
            try:
                item = buffer.get(timeout=0.2)
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    raise Cancelled() from None
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Unblock the reader if it is waiting on a full queue. One stuck in a
        # read from a server that sends nothing is left behind (a daemon
        # thread, told to stop): Ctrl-C must not wait for the server.
        deadline = time.monotonic() + 1.0
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class VerifiedStream:
    "Counts and hashes blob bytes as they pass (a :class:`verify.Digester`), so the digest is checked at the end."

    def __init__(self, chunks: Iterable[bytes], digest: str, on_bytes: Callable[[int], None] = lambda n: None):
        self.chunks = chunks
        self.digest = digest
        self.digester = Digester(digest)
        self.on_bytes = on_bytes

    @property
    def size(self) -> int:
        "Bytes read so far."
        return self.digester.count

    def __iter__(self) -> Iterator[bytes]:
        update, on_bytes = self.digester.update, self.on_bytes
        for chunk in self.chunks:
            update(chunk)
            on_bytes(len(chunk))
            yield chunk

    def verify(self, expected_size: int | None) -> None:
        self.digester.size = expected_size
        self.digester.check()


class Cancelled(Exception):
    "Raised inside a worker when the run is interrupted; never recorded as a failure."


def index_layer(
    db_path: Path | str,
    client: RegistryClient,
    job: LayerJob,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    span: int = seekable.DEFAULT_SPAN,
) -> tuple[int, int]:
    """Index one layer; return (entries, layer bytes downloaded). Raises on failure.

    A gzip layer of at least ``seekable.DEFAULT_MIN_SIZE`` bytes also gets a
    checkpoint about every ``span`` compressed bytes (0: none), in the same pass.
    """
    progress = progress or Progress()
    cancel = cancel or threading.Event()
    db = store.open_db(db_path)
    try:
        store.tune_for_indexing(db)
        # Scanning needs every file's bytes: a lazy-pull layer is then streamed, not listed from its TOC.
        if toc.toc_kind(job.annotations) is not None and job.scan_max_size is None:
            try:
                return _index_from_toc(db, client, job, progress)
            except (toc.TocError, VerificationError) as error:
                # The blob's own digest still vouches for a streamed listing.
                progress.message(f"layer {job.digest}: table of contents unusable ({error}); streaming the blob instead")
        entries = 0

        def on_bytes(n: int) -> None:
            if cancel.is_set():
                raise Cancelled()
            progress.layer_advanced(job, n, entries)

        def counted(stream: Iterable[tarstream.Entry]) -> Iterator[tarstream.Entry]:
            nonlocal entries
            for entry in stream:
                entries += 1
                yield entry

        # Download and hash in one thread, inflate and parse in this one,
        # SQLite's work in the LayerWriter's (a fourth thread for inflating
        # was measured: +0.6 s CPU in GIL hand-offs and no faster on 2 cores).
        blob = VerifiedStream(client.iter_blob(job.repository, job.digest, size=job.size or None), job.digest, on_bytes)
        chunks = _prefetch(blob, cancel=cancel)

        def finish() -> int:
            for _ in chunks:  # what follows the end-of-archive marker still counts for the digest
                pass
            blob.verify(job.size)
            return blob.size

        points: list[seekable.Checkpoint] = []
        reader = tarstream.TarReader(_inflate(chunks, job, span, points), max_name_bytes=tarstream.name_budget(job.size))

        def note() -> str | None:
            if not reader.global_header_count:
                return None
            text = global_headers_note(reader)
            progress.message(f"layer {job.digest}: {text}")
            return text

        if job.scan_max_size is None:
            return write_listing(db, job.digest, counted(reader), finish, checkpoints=points, note=note), blob.size
        scanner = secretscan.Scanner(job.scan_max_size)
        if job.scan_only:
            found: list = []
            for _ in scanned_entries(reader, scanner, lambda position, fs: found.extend((position, f) for f in fs)):
                pass
            finish()
            _report_truncated(scanner, job, progress)
            store.replace_layer_findings(db, job.digest, found, scanned=job.scan_max_size, keep_values=job.keep_values)
            return 0, blob.size
        with store.LayerWriter(db, job.digest, scanned=job.scan_max_size, keep_values=job.keep_values) as writer:
            entries_read = counted(scanned_entries(reader, scanner, writer.add_findings))
            return _write_entries(writer, entries_read, finish, points, note, lambda: _report_truncated(scanner, job, progress)), blob.size
    finally:
        db.close()


def _inflate(chunks: Iterable[bytes], job: LayerJob, span: int, points: list) -> Iterator[bytes]:
    "The layer's tar stream; with checkpoints appended to ``points`` where they pay (see seekable)."
    compression = layer_compression(job.media_type)
    if not span or (job.size or 0) < seekable.DEFAULT_MIN_SIZE or compression not in ("gzip", "auto"):
        return decompress(chunks, compression)
    it = iter(chunks)
    head = b""
    pending = []
    for chunk in it:
        pending.append(chunk)
        head += chunk[:2]
        if len(head) >= 2:
            break
    source = itertools.chain(pending, it)
    if sniff_compression(head[:2] + b"\0\0") != "gzip" or not seekable.available():
        return decompress(source, compression)
    return seekable.gunzip_checkpointed(source, points, span)


def global_headers_note(reader: tarstream.TarReader) -> str:
    """A line on the pax global headers of a layer: the runtime applies them
    to no entry, so neither does the index, but they are unusual (``git
    archive`` writes one; an evasion may hide names in one)."""
    shown = "; ".join(
        f"offset {offset}: " + ", ".join(f"{key}={value!r}" for key, value in records.items())
        for offset, records in reader.global_headers
    )
    more = reader.global_header_count - len(reader.global_headers)
    return (f"{reader.global_header_count} pax global header(s), applied to no entry as the runtime does "
            f"({shown}{f'; {more} more' if more else ''})")


def _report_truncated(scanner: secretscan.Scanner, job: LayerJob, progress: Progress) -> None:
    if scanner.truncated:
        progress.message(
            f"layer {job.digest}: secret scanning stopped short (more than {secretscan.MAX_HITS_PER_FILE:,} "
            f"candidates in a file, {secretscan.MAX_FINDINGS_PER_FILE} findings in a file or "
            f"{secretscan.MAX_LINES:,} lines in the layer); what was found is kept"
        )


def scanned_entries(reader: tarstream.TarReader, scanner: secretscan.Scanner,
                    on_findings: Callable[[int, list], None]) -> Iterator[tarstream.Entry]:
    """The entries of a layer; each regular file up to the scanner's size cap
    is read while it is the current entry (the same single pass, one file in
    memory at a time) and scanned, and ``on_findings(position, findings)``
    hears of what it holds."""
    wants = scanner.wants
    scan = scanner.scan_file
    sniff = secretscan.TEXT_SNIFF
    is_text = secretscan.looks_like_text
    for position, entry in enumerate(reader):
        if entry.type == "file" and wants(entry.size):
            data = reader.read(sniff)
            if is_text(data):  # a binary file's rest is skipped, not copied
                rest = reader.read()
                findings = scan(entry.path, data + rest if rest else data)
                if findings:
                    on_findings(position, findings)
        yield entry


def write_listing(db, digest: str, entries: Iterable[tarstream.Entry], finish: Callable[[], int],
                  listed_via: str = "stream", checkpoints: list | None = None,
                  note: Callable[[], str | None] | None = None) -> int:
    """Store a layer's entries as they stream; return the entry count.

    ``entries`` is consumed here (a caller may show each one as it passes);
    then ``finish()`` must read the rest of the blob, check its digest (raise
    on a mismatch) and return the number of blob bytes read. The rows commit
    with the layer's ``indexed`` status only after that, in one transaction;
    on any exception no entry of the layer is kept (see store.LayerWriter).
    ``note()``, called once the entries are read, gives ``layers.note``.
    """
    with store.LayerWriter(db, digest, listed_via=listed_via) as writer:
        return _write_entries(writer, entries, finish, checkpoints, note)


def _write_entries(writer: store.LayerWriter, entries: Iterable[tarstream.Entry], finish: Callable[[], int],
                   checkpoints: list | None, note: Callable[[], str | None] | None,
                   after_read: Callable[[], None] | None = None) -> int:
    "The body of :func:`write_listing` on an open writer (scanning indexers open it themselves)."
    writer.add_many(entries)
    bytes_read = finish()
    if after_read:
        after_read()
    writer.checkpoints = [(p.out, p.bits, seekable.pack_window(p.window)) for p in checkpoints or ()]
    return writer.commit(bytes_read=bytes_read, note=note() if note else None)


def record_image(db, ref: Reference, resolved: ResolvedImage) -> int:
    """Record an image (and its attestation manifests, never indexed); return its id."""
    image_id = store.upsert_image(db, ref, resolved.digest, resolved.media_type)
    for platform in resolved.platforms:
        if platform.attestation:
            # Recorded so nobody mistakes it for an "unknown/unknown" image; never indexed.
            store.upsert_platform(db, image_id, platform, None)
    return image_id


def record_platform(db, image_id: int, ref: Reference, image: PlatformImage,
                    scanner: secretscan.Scanner | None = None, keep_values: bool = False) -> int:
    """Record a platform image: its row, config, build steps and layer stack;
    return its id. With a ``scanner``, its config Env, Labels and build steps
    are scanned for secrets too, and (unless ``keep_values``) the values
    found are stored masked by their redacted preview there as well."""
    config, history, found = image.config, image.history, []
    if scanner is not None:
        found = [
            (source, name, finding)
            for source, name, text in secretscan.config_texts(image.config)
            for finding in scanner.scan_text(text)
        ]
        if found and not keep_values:
            config, history = secretscan.mask_config(config, history, [f for _, _, f in found])
    platform_id = store.upsert_platform(db, image_id, image.platform, image)
    store.replace_history(db, platform_id, history)
    store.replace_config(db, platform_id, config)
    store.set_platform_layers(db, platform_id, image.layers, ref.registry, ref.repository)
    if scanner is not None:
        store.replace_platform_findings(db, platform_id, found, keep_values=keep_values)
    return platform_id


def load_image(client: RegistryClient, ref: Reference, platform: str | None,
               all_platforms: bool) -> tuple[ResolvedImage, list[PlatformImage]]:
    """Resolve a reference and load the platforms to index (the one asked for,
    or all); a ``platform`` the image lacks is an error, as in inspect and save."""
    resolved = resolve(client, ref)
    if not resolved.is_index:
        wanted = [resolved.platforms[0]]
    elif all_platforms:
        wanted = resolved.real_platforms
    else:
        wanted = [select_platform(resolved, platform)]
    images = [load_platform(client, resolved, info) for info in wanted]
    check_single_platform(resolved, images[0], platform)
    return resolved, images


def _index_from_toc(db, client: RegistryClient, job: LayerJob, progress: Progress) -> tuple[int, int]:
    "List a lazy-pull layer from its table of contents: two Range requests, not the blob."
    fetched = 0

    def fetch_range(start: int, end: int) -> bytes:
        nonlocal fetched
        data = client.get_blob_range(job.repository, job.digest, start, end)
        fetched += len(data)
        progress.layer_advanced(job, len(data), 0)
        return data

    kind, entries = toc.list_toc(fetch_range, job.size, job.annotations)
    with store.LayerWriter(db, job.digest, listed_via=f"{kind}-toc") as writer:
        for entry in entries:
            writer.add(entry)
        return writer.commit(bytes_read=fetched), fetched


class Indexer:
    "Resolve references into the store, then index every layer not indexed yet."

    def __init__(
        self,
        db_path: Path | str,
        *,
        options: ClientOptions | None = None,
        platform: str | None = None,
        all_platforms: bool = False,
        jobs: int = 2,
        progress: Progress | None = None,
        span: int = seekable.DEFAULT_SPAN,
        scan: bool | None = None,
        scan_max_size: int = secretscan.DEFAULT_MAX_SIZE,
        keep_values: bool = False,
    ):
        self.db_path = Path(db_path)
        self.span = span
        self.scan_plan = ScanPlan.of(scan, scan_max_size, keep_values)
        self.scanner = self.scan_plan.scanner
        self.platform_ids: list[int] = []
        self.options = options or ClientOptions()
        self.platform = platform
        self.all_platforms = all_platforms
        self.jobs = jobs
        self.progress = progress or Progress()
        self.summary = IndexSummary()
        self._clients: dict[str, RegistryClient] = {}
        self._jobs: dict[str, LayerJob] = {}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._recorded: set[str] = set()  # references recorded
        self._failed: set[str] = set()  # references that failed
        self._layers_of: dict[str, set[str]] = {}  # reference → its layer digests
        self._failed_layers: set[str] = set()
        self.db = store.open_db(self.db_path)

    def client(self, registry: str) -> RegistryClient:
        if registry not in self._clients:
            self._clients[registry] = self.options.client(registry)
        return self._clients[registry]

    # -- resolving -------------------------------------------------------

    def add_reference(self, ref: Reference) -> None:
        "Record an image, its platforms, history and layer stacks; queue its new layers."
        resolved, images = load_image(self.client(ref.registry), ref, self.platform, self.all_platforms)
        image_id = record_image(self.db, ref, resolved)
        self._recorded.add(ref.short)
        self.summary.images += 1
        for image in images:
            self.platform_ids.append(record_platform(self.db, image_id, ref, image, self.scanner, self.scan_plan.keep_values))
            self.summary.platforms += 1
            for layer in image.layers:
                self._layers_of.setdefault(ref.short, set()).add(layer.digest)
                self._queue_layer(layer, ref)

    def _queue_layer(self, layer: LayerInfo, ref: Reference) -> None:
        if layer.foreign:
            self.summary.layers_skipped += 1
            return
        if layer.digest in self._jobs:
            self.summary.layers_reused += 1
            return
        job = LayerJob(layer.digest, layer.media_type, layer.size, layer.annotations, ref.registry, ref.repository,
                       self.scan_plan.layer_cap(layer.annotations), self.scan_plan.keep_values)
        if store.layer_status(self.db, layer.digest) == "indexed":
            scanned = store.layer_scanned(self.db, layer.digest)
            if self.scan_plan.scan is not True or (scanned is not None and scanned >= self.scan_plan.max_size):
                self.summary.layers_reused += 1
                self._jobs[layer.digest] = None  # seen: counts as reused next time too
                return
            job.scan_only = True  # listed already, never scanned (or with a smaller cap): scan it now
        self._jobs[layer.digest] = job

    # -- indexing --------------------------------------------------------

    def _run_job(self, job: LayerJob) -> None:
        self.progress.layer_started(job)
        client = self.client(job.registry)
        try:
            count, nbytes = index_layer(self.db_path, client, job, self.progress, self._cancel, span=self.span)
        except Cancelled:
            return
        except LayerslayerError as error:
            self._fail(job, str(error))
            return
        except Exception as error:  # a bug must not lose the other layers' work
            self._fail(job, f"{type(error).__name__}: {error}")
            return
        with self._lock:
            self.summary.layers_indexed += 1
            self.summary.files += count
            self.summary.layer_bytes += nbytes
        self.progress.layer_finished(job, count, None)

    def _fail(self, job: LayerJob, message: str) -> None:
        db = store.open_db(self.db_path)
        try:
            store.mark_layer_failed(db, job.digest, message)
        finally:
            db.close()
        with self._lock:
            self._failed_layers.add(job.digest)
            self.summary.layers_failed += 1
            self.summary.errors.append(f"layer {job.digest}: {message}")
        self.progress.layer_finished(job, 0, message)

    def run_layers(self) -> None:
        pending = [job for job in self._jobs.values() if job is not None]
        # Biggest first: the long downloads start early and the pool drains evenly.
        pending.sort(key=lambda job: -job.size)
        if self.jobs == 1 or len(pending) <= 1:
            for job in pending:
                self._run_job(job)
        else:
            pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="layerslayer-index")
            try:
                list(pool.map(self._run_job, pending))
            except BaseException:
                # Ctrl-C: stop the workers at their next chunk; nothing half-indexed commits.
                self._cancel.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
        for digest in [job.digest for job in pending]:
            self._jobs[digest] = None

    def count_images(self) -> None:
        "Fill the summary's image counts (an image fails when resolving it or one of its layers failed)."
        failed = self._failed | {ref for ref, digests in self._layers_of.items() if digests & self._failed_layers}
        self.summary.images = len(self._recorded | self._failed)
        self.summary.images_failed = len(failed)
        queued = sum(1 for job in self._jobs.values() if job is not None)  # run_layers clears them when done
        self.summary.layers_left = max(0, queued - self.summary.layers_indexed - self.summary.layers_failed)

    def bytes_downloaded(self) -> int:
        return sum(client.bytes_downloaded for client in self._clients.values())

    def close(self) -> None:
        self.db.close()


def _guarded(indexer: Indexer, ref: Reference, work: Callable):
    "Run one image's work; a failure is recorded in the summary and the other images go on."
    try:
        return work()
    except LayerslayerError as error:
        message = str(error)
    except Exception as error:  # a bug on one image must not lose the others' work
        log.debug("unexpected error on %s", ref.short, exc_info=True)
        message = f"unexpected error ({type(error).__name__}: {error})"
    indexer.summary.errors.append(f"{ref.short}: {message}")
    indexer._failed.add(ref.short)
    indexer.progress.message(f"{ref.short}: {message}")
    return None


def expand_tags(indexer: Indexer, ref: Reference, page_size: int | None = None) -> list[Reference]:
    client = indexer.client(ref.registry)
    return [ref.with_tag(tag) for tag in client.list_tags(ref.repository, page_size)]


INDEX_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def check_index_path(db_path: Path | str) -> None:
    """Refuse to create an index whose name reads as an image reference
    (``index alpine images.db``, arguments swapped): UsageError with a hint.
    An existing file, or a name ending in .db/.sqlite/.sqlite3, is fine."""
    name = os.fspath(db_path)
    if os.path.exists(name) or name.lower().endswith(INDEX_SUFFIXES):
        return
    try:
        parse_reference(name)
    except LayerslayerError:
        return
    raise UsageError(
        f"{name!r} looks like an image reference, not an index file (it does not exist); the index comes "
        f"first: Index('DB.db').add(IMAGE, ...); to create an index with that name, end it in .db "
        f"or create the file first"
    )


def upgrade_index(db_path: Path | str) -> list[str]:
    "Bring an existing index up to this version's schema; the names of the migrations applied."
    db = store.open_db(db_path, must_exist=True)
    db.close()
    return db.migrated


def check_index_choices(*, platform: str | None, all_platforms: bool, scan: bool | None, keep_values: bool,
                        jobs: int = 1) -> None:
    "The arguments :func:`index_images` refuses (choices that exclude each other, no worker): UsageError naming them."
    if jobs < 1:
        raise UsageError("jobs must be 1 or more")
    if platform and all_platforms:
        raise UsageError("platform and all_platforms exclude each other")
    if keep_values and scan is False:
        raise UsageError("keep_values and scan=False exclude each other")


def index_images(
    db_path: Path | str,
    references: Iterable[str | Reference],
    *,
    options: ClientOptions | None = None,
    platform: str | None = None,
    all_platforms: bool = False,
    all_tags: bool = False,
    jobs: int = 2,
    page_size: int | None = None,
    progress: Progress | None = None,
    span: int = seekable.DEFAULT_SPAN,
    scan: bool | None = None,
    scan_max_size: int = secretscan.DEFAULT_MAX_SIZE,
    keep_values: bool = False,
) -> IndexSummary:
    """Index images by reference. Errors on one image are recorded in the
    summary and the others go on; the summary says what happened. ``span``:
    compressed bytes between checkpoints in big gzip layers (0: none). Ctrl-C
    raises :class:`Interrupted` (a KeyboardInterrupt) whose ``summary`` says
    what was kept.

    File contents up to ``scan_max_size`` bytes, config Env/Labels and build
    steps are scanned for secrets (layerslayer.secretscan) as layers stream:
    by default (``scan=None``) the layers that are streamed anyway;
    ``scan=True`` also streams lazy-pull layers (listed from their TOC
    otherwise) and layers indexed earlier without scanning; ``scan=False``
    scans nothing. The values found are stored only with ``keep_values``."""
    started = time.monotonic()
    check_index_choices(platform=platform, all_platforms=all_platforms, scan=scan, keep_values=keep_values, jobs=jobs)
    check_index_path(db_path)
    indexer = Indexer(db_path, options=options, platform=platform, all_platforms=all_platforms, jobs=jobs,
                      progress=progress, span=span, scan=scan, scan_max_size=scan_max_size, keep_values=keep_values)
    try:
        refs = [r if isinstance(r, Reference) else parse_reference(r) for r in references]
        for ref in refs:
            # _guarded calls its work at once, inside this iteration
            targets = _guarded(indexer, ref, lambda: expand_tags(indexer, ref, page_size) if all_tags else [ref]) or []  # noqa: B023
            for target in targets:
                _guarded(indexer, target, lambda: indexer.add_reference(target))  # noqa: B023
        indexer.run_layers()
        if indexer.scanner is not None:
            found = store.count_findings(indexer.db, indexer.platform_ids)
            indexer.summary.findings = found if (found or scan) else None
    except KeyboardInterrupt:
        indexer.count_images()
        indexer.summary.seconds = time.monotonic() - started
        raise Interrupted(indexer.summary) from None
    finally:
        indexer.summary.bytes_downloaded = indexer.bytes_downloaded()
        indexer.close()
    indexer.count_images()
    indexer.summary.seconds = time.monotonic() - started
    return indexer.summary


def catalog_references(options: ClientOptions, registry: str, *, limit: int | None = None, page_size: int | None = None) -> list[Reference]:
    "Every tag of every repository in a registry's _catalog (up to ``limit`` repositories)."
    client = options.client(registry)
    refs = []
    for count, repository in enumerate(client.catalog(page_size)):
        if limit is not None and count >= limit:
            break
        for tag in client.list_tags(repository, page_size):
            refs.append(Reference(registry, repository, tag))
    return refs
