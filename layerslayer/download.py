"""Verified blob downloads: where blobs are stored, resumable atomic downloads, a spool for a look inside.

Blobs land at ``DIR/<registry>/<repository>/<digest hex>.<ext>`` (see
:func:`blob_path`). Bytes stream into ``<final name>.part``; sha256 and size
are checked on the way; the ``.part`` is renamed to the final name only once
both match, so a file under its final name is always a complete, verified
blob. A mismatch deletes the ``.part`` and raises :class:`VerificationError`.
An interrupted download leaves its ``.part``: the next run hashes the bytes
already there and asks the registry for the rest with ``Range`` (the body is
trusted only on 206). An existing final file is re-hashed (about 1 GB/s) and
skipped when it matches, downloaded again when it does not.

:class:`BlobSpool` is for callers that look inside a layer while it streams
(peek, then "Download this layer?"): the stream is teed into the ``.part``, so
saving it afterwards never downloads it a second time.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import LayerslayerError, RegistryError, UsageError, VerificationError
from .oci import blob_extension, is_digest
from .outdir import OutputDirError
from .reference import DOCKER_HUB
from .registry import RegistryClient
from .verify import Digester

try:  # POSIX: one process per .part file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("layerslayer")

DEFAULT_OUTPUT = Path("downloads")
PART_SUFFIX = ".part"
READ_CHUNK = 1 << 20

Progress = Callable[[int], None]  # called with the number of bytes just added


# -- where blobs and extracted files go --------------------------------------------

_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")


def registry_dir_name(registry: str) -> str:
    "Docker Hub is stored as docker.io, as people write it; other hosts as host[:port]."
    return "docker.io" if registry == DOCKER_HUB else registry


def blob_path(out_dir: str | os.PathLike, registry: str, repository: str, digest: str, media_type: str | None) -> Path:
    """``out_dir/<registry>/<repository>/<digest hex>.<ext>``.

    Every command that saves blobs uses this layout. Registry, repository and
    digest are checked so that a hostile index or manifest cannot steer the
    file outside ``out_dir``.
    """
    registry = registry_dir_name(registry)
    if not _HOST.match(registry) or registry in (".", ".."):
        raise UsageError(f"cannot store blobs for registry {registry!r}: not a host[:port]")
    components = repository.split("/")
    if not repository or not all(_REPO_COMPONENT.match(c) for c in components):
        raise UsageError(f"cannot store blobs for repository {repository!r}: not a valid repository name")
    # Only digests we can check (sha256/384/512 in lowercase hex): a file name without "/" or "..".
    if not is_digest(digest, known=True):
        raise UsageError(f"{digest!r} is not a valid blob digest")
    hex_part = digest.partition(":")[2]
    return Path(out_dir, registry, *components, f"{hex_part}.{blob_extension(media_type)}")


DEFAULT_EXTRACT_ROOT = Path("extracted")


def default_extract_dir(ref) -> Path:
    """Where ``extract`` writes without ``-o``: a directory of the image's own,
    ``extracted/<registry>/<repository>/<tag>`` (``sha256-<hex>`` for a digest
    reference), never the current directory."""
    registry = registry_dir_name(ref.registry)
    version = ref.tag or (ref.digest or "latest").replace(":", "-")
    if not _HOST.match(registry) or not all(_REPO_COMPONENT.match(c) for c in ref.repository.split("/")) \
            or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|[a-z0-9]+-[0-9a-f]{32,128}", version):
        raise UsageError(f"cannot make a directory name for {ref}: give -o DIR")
    return Path(DEFAULT_EXTRACT_ROOT, registry, *ref.repository.split("/"), version)


def part_path(dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


# -- verified downloads ----------------------------------------------------------


@dataclass
class DownloadResult:
    path: Path
    digest: str
    size: int
    status: str  # "downloaded" | "resumed" | "skipped" (already there and verified)
    fetched: int  # bytes received from the registry for this blob

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"


def verify_file(path: str | os.PathLike, digest: str, size: int | None = None) -> bool:
    "True when the file's bytes have this digest (and size, when given)."
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
        return False
    digester = Digester(digest, size)
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            digester.update(chunk)
    return digester.matches()


class _PartFile:
    """``DEST.part``: appended to, hashed as it grows, renamed to DEST once verified."""

    def __init__(self, dest: Path, digest: str, size: int | None):
        self.dest = dest
        self.path = part_path(dest)
        self.digest = digest
        self.size = size
        self.digester = Digester(digest, size)
        self.file: BinaryIO | None = None

    @property
    def written(self) -> int:
        "Bytes in the .part so far."
        return self.digester.count

    def open(self) -> _PartFile:
        "Open (create) and lock the .part; hash what an earlier run left in it."
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a+b")
        except OSError as error:
            raise OutputDirError(f"cannot write {self.path}: {error.strerror or error}") from None
        if fcntl is not None:
            try:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.file.close()
                self.file = None
                raise LayerslayerError(f"another process is downloading {self.digest} into {self.path}")
        self.file.seek(0)
        while chunk := self.file.read(READ_CHUNK):
            self.digester.update(chunk)
        if self.size is not None and self.written > self.size:
            log.debug("%s is longer than the blob: starting over", self.path)
            self.restart()
        return self

    def restart(self) -> None:
        assert self.file is not None
        self.file.truncate(0)
        self.digester = Digester(self.digest, self.size)

    def write(self, chunk: bytes) -> None:
        "Append a chunk; one that would take the blob past its size deletes the .part and raises instead."
        assert self.file is not None
        self.digester.update(chunk)
        try:
            self.digester.check_not_longer()
        except VerificationError:
            self.remove()
            raise
        self.file.write(chunk)

    def complete(self) -> bool:
        "True when the bytes so far are the whole blob (size and digest match)."
        return self.digester.matches()

    def verify(self) -> None:
        "Raise VerificationError, the .part deleted, unless it holds the whole blob."
        try:
            self.digester.check(then="the download was deleted")
        except VerificationError:
            self.remove()
            raise

    def finish(self) -> Path:
        "Verify, flush to disk, rename into place; on mismatch delete and raise."
        assert self.file is not None
        self.verify()
        self.file.flush()
        os.fsync(self.file.fileno())
        os.replace(self.path, self.dest)
        self.close()
        return self.dest

    def close(self) -> None:
        if self.file is not None:
            self.file.close()  # releases the lock
            self.file = None

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.close()


def _blob_chunks(client: RegistryClient, repository: str, digest: str, part: _PartFile, chunk_size: int) -> Iterator[bytes]:
    """Network bytes from where ``part`` ends. A registry that refuses or
    ignores the Range request makes us start over from byte 0."""
    start = part.written
    chunks = client.iter_blob(repository, digest, start=start, chunk_size=chunk_size, size=part.size)
    if start:
        try:
            first = next(chunks)
        except StopIteration:
            return
        except RegistryError as error:
            log.debug("resuming %s at %d failed (%s): starting over", digest, start, error)
            part.restart()
            chunks = client.iter_blob(repository, digest, chunk_size=chunk_size, size=part.size)
        else:
            yield first
    yield from chunks


def download_blob(
    client: RegistryClient,
    repository: str,
    digest: str,
    dest: str | os.PathLike,
    size: int | None = None,
    progress: Progress | None = None,
    *,
    keep_partial: bool = True,
    chunk_size: int = READ_CHUNK,
) -> DownloadResult:
    """Download a blob to ``dest``, verified by digest and size.

    ``progress(n)`` is called with byte counts as they arrive (bytes already
    on disk from an earlier run count once, at the start). With
    ``keep_partial`` (the default) an interrupted download (network failure,
    Ctrl-C) leaves ``dest.part`` for the next run to resume; without it the
    ``.part`` is deleted. A verification failure always deletes it.
    """
    dest = Path(dest)
    if dest.exists():
        if verify_file(dest, digest, size):
            if progress:
                progress(dest.stat().st_size)
            return DownloadResult(dest, digest, dest.stat().st_size, "skipped", 0)
        log.warning("%s does not match %s: downloading it again", dest, digest)
        dest.unlink()
    part = _PartFile(dest, digest, size).open()
    fetched = 0
    try:
        status = "resumed" if part.written else "downloaded"
        if progress and part.written:
            progress(part.written)
        if not (part.written and part.complete()):
            for chunk in _blob_chunks(client, repository, digest, part, chunk_size):
                part.write(chunk)
                fetched += len(chunk)
                if progress:
                    progress(len(chunk))
        written = part.written
        path = part.finish()
        return DownloadResult(path, digest, written, status, fetched)
    except VerificationError:
        part.remove()
        raise
    except BaseException:
        if keep_partial:
            part.close()
        else:
            part.remove()
        raise


class BlobSpool:
    """Stream a blob once, for a look inside, while spooling it to disk.

    ::

        with BlobSpool(client, repo, layer.digest, blob_path(...), layer.size) as spool:
            for entry in tarstream.iter_entries(spool.chunks(), compression):
                show(entry)
            if ask("Download this layer?"):
                path = spool.keep()     # reads whatever the listing did not need, verifies, renames
            else:
                spool.discard()         # deletes the .part

    :meth:`chunks` yields the raw blob bytes; each is written to ``DEST.part``
    before it is yielded. When the stream ends its digest and size are checked
    (a mismatch deletes the ``.part`` and raises :class:`VerificationError`).
    Bytes a previous, interrupted run left in ``DEST.part`` are read from disk,
    not downloaded again; when ``DEST`` is already there and verified, the
    spool reads it and never touches the network (``discard()`` then leaves it
    alone).

    Leaving the ``with`` block without :meth:`keep` (an exception, Ctrl-C, or
    simply not keeping) deletes the ``.part`` -- no half-written file stays in
    the download folder -- unless ``keep_partial=True``, which leaves it for a
    later resume when the block is left by an exception.
    """

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        dest: str | os.PathLike,
        size: int | None = None,
        progress: Progress | None = None,
        *,
        keep_partial: bool = False,
        chunk_size: int = READ_CHUNK,
    ):
        self.client = client
        self.repository = repository
        self.digest = digest
        self.dest = Path(dest)
        self.size = size
        self.progress = progress
        self.keep_partial = keep_partial
        self.chunk_size = chunk_size
        self.fetched = 0  # bytes received from the registry
        self.path: Path | None = None  # set by keep()
        self._part: _PartFile | None = None
        self._existing = False  # DEST was already there, verified
        self._network: Iterator[bytes] | None = None
        self._consumer: Iterator[bytes] | None = None
        self._done = False  # keep() or discard() called

    def __enter__(self) -> BlobSpool:
        if self.dest.exists() and verify_file(self.dest, self.digest, self.size):
            self._existing = True
            return self
        if self.dest.exists():
            log.warning("%s does not match %s: replacing it", self.dest, self.digest)
            self.dest.unlink()
        self._part = _PartFile(self.dest, self.digest, self.size).open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close_streams()
        if self._done or self._part is None:
            return
        if exc_type is not None and self.keep_partial and not issubclass(exc_type, VerificationError):
            self._part.close()
        else:
            self._part.remove()

    @property
    def already_saved(self) -> bool:
        "True when DEST existed and matched: nothing is downloaded."
        return self._existing

    def _close_streams(self) -> None:
        for stream in (self._consumer, self._network):
            close = getattr(stream, "close", None)
            if close:
                close()

    def chunks(self) -> Iterator[bytes]:
        "The blob's bytes, from disk where we have them, else from the registry."
        if self._consumer is not None:
            raise RuntimeError("BlobSpool.chunks() can only be called once")
        self._consumer = self._chunks()
        return self._consumer

    def _chunks(self) -> Iterator[bytes]:
        if self._existing:
            with open(self.dest, "rb") as f:
                while chunk := f.read(self.chunk_size):
                    yield chunk
            return
        part = self._part
        if part is None:
            raise RuntimeError("use BlobSpool in a with block")
        # What an earlier run left in the .part: from disk.
        offset = 0
        have = part.written
        fd = part.file.fileno()
        while offset < have:
            chunk = os.pread(fd, min(self.chunk_size, have - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
            yield chunk
        if self.progress and have:
            self.progress(have)
        for chunk in self._network_chunks():
            yield chunk
        self._verify()

    def _network_chunks(self) -> Iterator[bytes]:
        "Network bytes, each written to the .part before it is handed on."
        part = self._part
        assert part is not None
        if part.written and part.complete():
            return
        if self._network is None:
            self._network = _blob_chunks(self.client, self.repository, self.digest, part, self.chunk_size)
        for chunk in self._network:
            part.write(chunk)
            self.fetched += len(chunk)
            if self.progress:
                self.progress(len(chunk))
            yield chunk

    def _verify(self) -> None:
        part = self._part
        assert part is not None
        try:
            part.verify()
        except VerificationError:
            self._done = True
            raise

    def keep(self) -> Path:
        "Read what is left of the blob, verify it, and move it to DEST."
        if self._existing:
            self._done = True
            self.path = self.dest
            return self.dest
        part = self._part
        if part is None or part.file is None:
            raise RuntimeError("this spool was already discarded")
        if self._consumer is not None:
            close = getattr(self._consumer, "close", None)
            if close:
                close()
        for _ in self._network_chunks():
            pass
        self._done = True
        self.path = part.finish()
        return self.path

    def discard(self) -> None:
        "Delete the .part (a DEST that was already there is left alone)."
        self._close_streams()
        self._done = True
        if self._part is not None:
            self._part.remove()



def progress_context(factory, label: str, total: int | None):
    "``factory(label, total)`` (a progress bar taking byte counts), or a context giving None without one."
    return factory(label, total) if factory else nullcontext(None)
