"""Crawls on a Dask cluster: many images, each unique layer downloaded once.

The plan (``index --workers N`` or ``--scheduler ADDRESS``):

1. **Resolve** each reference to its manifests and configs (many small
   requests): one task per image, run on the workers.
2. The coordinator (this process) records images, platforms, history and
   layer stacks in the output index as the answers come, and works out the
   **unique layer digests not yet indexed** there.
3. **Index** those layers: one task per digest (the Dask key is the digest,
   so a layer is never queued twice). A worker streams the blob and writes
   the listing into **its own shard** (``OUT.shards/shard-HOST-PID.db``),
   never into a database another process writes over a network.
4. The coordinator **merges** the shards into the output as layers complete
   (``merge.merge_index``: each listing copied once, derived rows rebuilt),
   and once more at the end; shards fully merged are then deleted.

Faults: a worker killed mid-layer commits nothing for that layer (see
``store.LayerWriter``); Dask's scheduler reruns the task on another worker.
The crawl's state lives in the output: the index, plus shards not merged
yet. An interrupted crawl run again merges the shards left over, skips
every layer the index has, and goes on. A 429 or ``RateLimit-Remaining: 0``
seen by any worker pauses every worker's requests to that registry
(:class:`DaskPacer`, through the scheduler's metadata store).

Why Dask (distributed): pure Python and pip-installable, a ``LocalCluster``
of worker processes on one machine and the same code on a cluster started
with its own ``dask scheduler`` / ``dask worker`` commands; it reruns the
tasks of a dead worker by itself, and its scheduler's metadata store
(``Client.set_metadata``) carries the shared rate-limit pause. Ray does the same with a far heavier runtime (a wheel of
~70 MB, an object store, a dashboard) for what are small Python tasks;
Celery needs a broker (Redis) to run and gives no cluster-wide state or
task deduplication without more machinery.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import secretscan, seekable, store
from .display import human_size
from .errors import LayerslayerError, UsageError
from .indexer import IndexSummary, LayerJob, ScanPlan, check_index_choices, index_layer, load_image, record_image, record_platform
from .merge import merge_index
from .options import ClientOptions
from .pacing import Pacer
from .reference import Reference, parse_reference
from .registry import is_loopback

log = logging.getLogger("layerslayer")

SHARDS_SUFFIX = ".shards"
MERGE_EVERY = 2.0  # seconds between merges of the shards while the crawl runs
STATUS_EVERY = 0.5
#: Times a task may lose its worker before the crawl gives that layer up.
ALLOWED_FAILURES = 10
PAUSE_KEY = "layerslayer-pause"


@dataclass
class CrawlSettings:
    "What every task needs; sent to the workers (credentials only on a safe channel: see crawl())."

    options: ClientOptions
    platform: str | None
    all_platforms: bool
    shard_dir: str
    span: int = seekable.DEFAULT_SPAN  # checkpoints in big gzip layers, as index --span


# -- on the workers -------------------------------------------------------------------

_worker_state: dict = {}


class DaskPacer(Pacer):
    """A Pacer whose pauses reach every worker of the cluster through the
    scheduler's metadata store (``PAUSE_KEY``/host: when requests may go
    again; read at most every half second)."""

    REFRESH = 0.5

    def __init__(self):
        super().__init__()
        self._checked: dict[str, float] = {}

    @staticmethod
    def _dask():
        from distributed import get_client

        return get_client()

    def paused_until(self, host: str) -> float:
        now = time.monotonic()
        if now - self._checked.get(host, 0.0) >= self.REFRESH:
            self._checked[host] = now
            try:
                shared = float(self._dask().get_metadata([PAUSE_KEY, host], default=0.0))
            except Exception:  # outside a worker, or the scheduler is busy: our own view will do
                shared = 0.0
            super().pause(host, shared)
        return super().paused_until(host)

    def pause(self, host: str, until: float) -> None:
        if until > super().paused_until(host):
            super().pause(host, until)
            try:
                self._dask().set_metadata([PAUSE_KEY, host], until)
            except Exception:
                log.debug("could not share the pause for %s", host, exc_info=True)


def _client(settings: CrawlSettings, registry: str):
    "This worker process's registry client (one per registry, sharing the cluster's pacer)."
    clients = _worker_state.setdefault("clients", {})
    if registry not in clients:
        pacer = _worker_state.setdefault("pacer", DaskPacer())
        client = settings.options.client(registry)
        client.pacer = pacer
        clients[registry] = client
    return clients[registry]


def shard_path(shard_dir: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{socket.gethostname()}-{os.getpid()}")
    return Path(shard_dir) / f"shard-{name}.db"


def resolve_task(reference: str, settings: CrawlSettings) -> dict:
    "Resolve one image (a task): its platforms' manifests and configs."
    messages: list[str] = []
    try:
        ref = parse_reference(reference)
        resolved, images = load_image(_client(settings, ref.registry), ref, settings.platform, settings.all_platforms)
    except LayerslayerError as error:
        return {"reference": reference, "error": str(error)}
    return {"reference": reference, "ref": ref, "resolved": resolved, "images": images, "messages": messages}


def _shard(settings: CrawlSettings) -> Path:
    """This worker's shard, held open for the life of the process: then closing
    index_layer()'s own connection is not the last close, which in WAL mode
    would checkpoint and delete the WAL after every layer (13 ms a layer)."""
    path = shard_path(settings.shard_dir)
    keeper = _worker_state.get("shard")
    if keeper is not None and (keeper[0] != path or not path.exists()):  # a new crawl, or merged and deleted
        keeper[1].close()
        keeper = None
    if keeper is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        keeper = _worker_state["shard"] = (path, store.open_db(path))
    return path


def layer_task(job: LayerJob, settings: CrawlSettings) -> dict:
    "Index one layer into this worker's shard (a task)."
    path = _shard(settings)
    try:
        entries, nbytes = index_layer(path, _client(settings, job.registry), job, span=settings.span)
    except LayerslayerError as error:
        return {"digest": job.digest, "error": str(error)}
    return {"digest": job.digest, "entries": entries, "bytes": nbytes, "shard": str(path)}


# -- the coordinator ----------------------------------------------------------------


@dataclass
class CrawlStatus:
    "What a long crawl shows: rates, counts, bytes, ETA, failures, rate-limit waits."

    started: float = field(default_factory=time.monotonic)
    images_total: int = 0
    images_done: int = 0
    layers_done: int = 0
    layers_queued: int = 0
    layer_bytes: int = 0
    bytes_queued: int = 0  # compressed size of every layer queued
    bytes_done_queued: int = 0  # ... of those done
    failures: int = 0
    paused: dict[str, float] = field(default_factory=dict)  # registry -> seconds left

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    def eta(self) -> float | None:
        left = self.bytes_queued - self.bytes_done_queued
        if not self.bytes_done_queued or left <= 0:
            return None
        return left * self.elapsed / self.bytes_done_queued

    def as_line(self) -> str:
        eta = self.eta()
        parts = [
            f"images {self.images_done}/{self.images_total} ({self.images_done / self.elapsed:.1f}/s)",
            f"layers {self.layers_done} done, {self.layers_queued - self.layers_done} to go",
            f"{human_size(self.layer_bytes)} ({human_size(self.layer_bytes / self.elapsed)}/s)",
            f"ETA {_duration(eta)}" if eta is not None else "ETA -",
            f"{self.failures} failed",
        ]
        for host, seconds in self.paused.items():
            parts.append(f"rate limited by {host}: waiting {seconds:.0f}s")
        return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class CrawlSummary(IndexSummary):
    "An index summary plus the cluster's size and how long it took to start."

    workers: int = 0
    startup_seconds: float = 0.0

    def as_line(self) -> str:
        return (f"{super().as_line()} ({self.workers} worker{'s' if self.workers != 1 else ''}, "
                f"cluster ready in {self.startup_seconds:.1f}s)")


class CrawlProgress:
    "Receives the crawl's status and messages; the default is silent."

    def status(self, status: CrawlStatus) -> None: ...
    def message(self, text: str) -> None: ...


def default_shard_dir(db_path) -> Path:
    return Path(os.fspath(db_path) + SHARDS_SUFFIX)


def _shard_files(shard_dir: Path) -> list[Path]:
    return sorted(shard_dir.glob("shard-*.db")) if shard_dir.is_dir() else []


def _safe_for_credentials(scheduler: str) -> bool:
    "Only a TLS scheduler, or one on this machine, may carry a password to the workers."
    if scheduler.startswith("tls://"):
        return True
    address = re.sub(r"^[a-z]+://", "", scheduler)
    return is_loopback(address) or address.startswith(("inproc", "/"))


def crawl(
    db_path,
    references: Iterable[str | Reference],
    *,
    options: ClientOptions | None = None,
    platform: str | None = None,
    all_platforms: bool = False,
    all_tags: bool = False,
    page_size: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    shard_dir=None,
    progress: CrawlProgress | None = None,
    span: int = seekable.DEFAULT_SPAN,
    scan: bool | None = None,
    scan_max_size: int = secretscan.DEFAULT_MAX_SIZE,
    keep_values: bool = False,
) -> CrawlSummary:
    """Index images on a Dask cluster: a local one of ``workers`` processes,
    or the one whose scheduler is at ``scheduler``. Same result as
    ``indexer.index_images`` (``span``, ``scan``, ``scan_max_size`` and
    ``keep_values`` as there, except that ``scan=True`` does not re-scan
    layers indexed earlier without scanning); see the module's docstring
    for the plan."""
    options = options or ClientOptions()
    progress = progress or CrawlProgress()
    if (workers is None) == (scheduler is None):
        raise UsageError("a crawl needs either a number of workers or a scheduler address")
    check_index_choices(platform=platform, all_platforms=all_platforms, scan=scan, keep_values=keep_values)
    if scheduler and options.password and not _safe_for_credentials(scheduler):
        raise UsageError("a password is never sent to a remote scheduler in clear: use a tls:// scheduler, "
                         "or give the workers their own credentials (docker config.json)")
    shard_dir = Path(shard_dir) if shard_dir else default_shard_dir(db_path)
    shard_dir.mkdir(parents=True, exist_ok=True)
    settings = CrawlSettings(options, platform, all_platforms, str(shard_dir.resolve()), span)
    summary = CrawlSummary()
    started = time.monotonic()
    db = store.open_db(db_path)
    try:
        _merge_shards(db, _shard_files(shard_dir), progress)  # a crawl that was interrupted
        refs = [r if isinstance(r, Reference) else parse_reference(r) for r in references]
        if all_tags:
            refs = _expand_tags(refs, options, page_size, summary, progress)
        with _cluster(workers, scheduler) as client:
            summary.startup_seconds = time.monotonic() - started
            summary.workers = len(client.scheduler_info()["workers"])
            coordinator = _Coordinator(db, client, settings, summary, progress, shard_dir,
                                       scan=scan, scan_max_size=scan_max_size, keep_values=keep_values)
            coordinator.run(refs)
        merged = _merge_shards(db, _shard_files(shard_dir), progress)
        missing = sum(store.layer_status(db, digest) != "indexed" for digest in coordinator.done_digests)
        if coordinator.scanner is not None:
            found = store.count_findings(db, coordinator.platform_ids)
            summary.findings = found if (found or scan) else None
        if not missing and not scheduler:
            # Everything in them is in the index now, and their workers are
            # gone (a remote cluster's workers keep theirs open: merged again
            # next time, which adds nothing).
            for shard in merged:
                for suffix in ("", "-wal", "-shm"):
                    Path(str(shard) + suffix).unlink(missing_ok=True)
        if missing:
            message = (f"{missing} indexed layers are in shards this machine cannot see; "
                       f"copy the workers' {shard_dir.name} files here and run `layerslayer merge`")
            summary.errors.append(message)
            progress.message(message)
    finally:
        db.close()
    summary.seconds = time.monotonic() - started
    return summary


def _expand_tags(refs, options, page_size, summary, progress) -> list[Reference]:
    out = []
    for ref in refs:
        try:
            out += [ref.with_tag(tag) for tag in options.client(ref.registry).list_tags(ref.repository, page_size)]
        except LayerslayerError as error:
            summary.errors.append(f"{ref.short}: {error}")
            progress.message(f"{ref.short}: {error}")
    return out


def _merge_shards(db, shards: list[Path], progress: CrawlProgress) -> list[Path]:
    merged = []
    for shard in shards:
        try:
            merge_index(db, shard)
            merged.append(shard)
        except LayerslayerError as error:
            progress.message(f"{shard}: not merged ({error})")
    return merged


class _cluster:
    "A Dask client: on a LocalCluster of worker processes, or on an existing scheduler."

    def __init__(self, workers: int | None, scheduler: str | None):
        self.workers, self.scheduler = workers, scheduler
        self.cluster = self.client = None

    def __enter__(self):
        # Imported here, for start-up speed: dask and distributed load only when a crawl starts.
        import dask
        from distributed import Client, LocalCluster

        settings = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}
        if "forkserver" in multiprocessing.get_all_start_methods():
            # Workers forked from a clean server process: twice as fast to
            # start (and to restart after a crash) as spawned ones, and,
            # unlike a plain fork, without the coordinator's open SQLite
            # connection in them.
            settings["distributed.worker.multiprocessing-method"] = "forkserver"
        dask.config.set(settings)
        if self.scheduler:
            self.client = Client(self.scheduler, timeout="30s")
        else:
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.CRITICAL)
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class _Coordinator:
    def __init__(self, db, client, settings: CrawlSettings, summary: IndexSummary, progress: CrawlProgress,
                 shard_dir: Path, *, scan: bool | None = None, scan_max_size: int = secretscan.DEFAULT_MAX_SIZE,
                 keep_values: bool = False):
        self.db, self.client, self.settings = db, client, settings
        # Secrets as indexer.Indexer scans them: the workers scan the layers,
        # this process the configs and build steps it records.
        self.scan_plan = ScanPlan.of(scan, scan_max_size, keep_values)
        self.scanner = self.scan_plan.scanner
        self.platform_ids: list[int] = []
        self.summary, self.progress, self.shard_dir = summary, progress, shard_dir
        self.status = CrawlStatus()
        self.seen: set[str] = set()
        self.done_digests: list[str] = []
        self.to_merge: set[str] = set()
        self.registries: set[str] = set()
        self.sizes: dict[str, int] = {}

    def run(self, refs: list[Reference]) -> None:
        from distributed import as_completed

        self.status.images_total = len(refs)
        self.registries = {ref.registry for ref in refs}
        futures = [
            self.client.submit(resolve_task, str(ref), self.settings, key=f"resolve-{i}-{ref}", pure=False)
            for i, ref in enumerate(refs)
        ]
        pending = as_completed(futures)
        last_merge = last_status = time.monotonic()
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch_pauses, args=(stop,), daemon=True)
        watcher.start()
        try:
            for future in pending:
                kind = future.key.split("-", 1)[0] if isinstance(future.key, str) else ""
                try:
                    result = future.result()
                except Exception as error:  # the task itself broke, or lost its worker too often
                    result = {"error": f"{type(error).__name__}: {error}"}
                    if kind == "layer":
                        result["digest"] = future.key.split("-", 1)[1]
                    else:
                        result["reference"] = future.key.split("-", 2)[2]
                future.release()
                if kind == "resolve":
                    for job in self._record_image(result):
                        pending.add(self.client.submit(layer_task, job, self.settings, key=f"layer-{job.digest}", pure=False))
                else:
                    self._record_layer(result)
                now = time.monotonic()
                if now - last_merge >= MERGE_EVERY and self.to_merge:
                    _merge_shards(self.db, sorted(Path(p) for p in self.to_merge), self.progress)
                    self.to_merge.clear()
                    last_merge = now
                if now - last_status >= STATUS_EVERY:
                    self.progress.status(self.status)
                    last_status = now
        finally:
            stop.set()
        self.summary.bytes_downloaded = self.status.layer_bytes
        self.progress.status(self.status)

    def _watch_pauses(self, stop: threading.Event) -> None:
        "Show the registries' shared pauses (set by the workers) in the status."
        while not stop.wait(STATUS_EVERY):
            try:
                pauses = self.client.get_metadata([PAUSE_KEY], default={})
            except Exception:
                continue
            now = time.time()
            self.status.paused = {host: until - now for host, until in (pauses or {}).items() if until > now}
            if self.status.paused:
                self.progress.status(self.status)

    def _record_image(self, result: dict) -> list[LayerJob]:
        self.status.images_done += 1
        if "error" in result:
            text = result["reference"]
            message = f"{parse_reference(text).short if _parses(text) else text}: {result['error']}"
            self.summary.errors.append(message)
            self.status.failures += 1
            self.progress.message(message)
            return []
        ref: Reference = result["ref"]
        for message in result["messages"]:
            self.progress.message(message)
        image_id = record_image(self.db, ref, result["resolved"])
        self.summary.images += 1
        jobs = []
        for image in result["images"]:
            self.platform_ids.append(record_platform(self.db, image_id, ref, image, self.scanner, self.scan_plan.keep_values))
            self.summary.platforms += 1
            for layer in image.layers:
                if layer.foreign:
                    self.summary.layers_skipped += 1
                elif layer.digest in self.seen or store.layer_status(self.db, layer.digest) == "indexed":
                    self.summary.layers_reused += 1
                    self.seen.add(layer.digest)
                else:
                    self.seen.add(layer.digest)
                    jobs.append(LayerJob(layer.digest, layer.media_type, layer.size, layer.annotations, ref.registry,
                                         ref.repository, self.scan_plan.layer_cap(layer.annotations),
                                         self.scan_plan.keep_values))
                    self.sizes[layer.digest] = layer.size or 0
                    self.status.layers_queued += 1
                    self.status.bytes_queued += layer.size or 0
        return jobs

    def _record_layer(self, result: dict) -> None:
        digest = result["digest"]
        self.status.layers_done += 1
        self.status.bytes_done_queued += self.sizes.get(digest, 0)
        if "error" in result:
            store.mark_layer_failed(self.db, digest, result["error"])
            self.summary.layers_failed += 1
            self.summary.errors.append(f"layer {digest}: {result['error']}")
            self.status.failures += 1
            self.progress.message(f"layer {digest}: {result['error']}")
            return
        self.summary.layers_indexed += 1
        self.summary.files += result["entries"]
        self.summary.layer_bytes += result["bytes"]
        self.status.layer_bytes += result["bytes"]
        self.done_digests.append(digest)
        self.to_merge.add(result["shard"])


def _parses(text: str) -> bool:
    try:
        parse_reference(text)
        return True
    except LayerslayerError:
        return False
