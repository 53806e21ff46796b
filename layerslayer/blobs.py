"""Getting bytes out: verified blob downloads, layer export, safe file extraction.

Downloads (``save``, ``export``, the interactive flow)
-------------------------------------------------------
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

Extraction (``extract``, ``export --files``)
---------------------------------------------
:func:`extract_files` streams layers (top layer first) and writes the entries
whose path matches the patterns (:mod:`layerslayer.patterns`) through
:class:`SafeTree`, which never writes outside its root directory.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

from . import tarstream
from .errors import AuthError, LayerslayerError, NetworkError, NotFound, RegistryError, UsageError, VerificationError
from .patterns import Pattern, compile_patterns, parse_pattern
from .reference import DOCKER_HUB
from .registry import RegistryClient, hasher_for, short_reason

try:  # POSIX: one process per .part file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("layerslayer")

DEFAULT_OUTPUT = Path("downloads")
PART_SUFFIX = ".part"
READ_CHUNK = 1 << 20
# Extraction reads the network in smaller pieces: when it stops early, little
# has been fetched past the last wanted entry.
EXTRACT_CHUNK = 256 * 1024

Progress = Callable[[int], None]  # called with the number of bytes just added


# -- layout ---------------------------------------------------------------------

_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")
_HEX = re.compile(r"^[0-9a-f]{32,128}$")


def extension_for(media_type: str | None) -> str:
    """File extension for a blob's media type: tar.gz, tar.zst, tar or json."""
    mt = (media_type or "").split(";", 1)[0].strip().lower()
    if mt.endswith("json") or "config" in mt:
        return "json"
    kind = tarstream.compression_of(mt)
    return {"gzip": "tar.gz", "zstd": "tar.zst", "none": "tar"}.get(kind, "tar.gz" if "gzip" in mt else "blob")


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
    algorithm, _, hex_part = digest.partition(":")
    if not _HEX.match(hex_part) or not algorithm.isalnum():
        raise UsageError(f"{digest!r} is not a valid blob digest")
    return Path(out_dir, registry, *components, f"{hex_part}.{extension_for(media_type)}")


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


def _digest_of(algorithm: str, hasher) -> str:
    return f"{algorithm}:{hasher.hexdigest()}"


def verify_file(path: str | os.PathLike, digest: str, size: int | None = None) -> bool:
    "True when the file's bytes have this digest (and size, when given)."
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
        return False
    hasher = hasher_for(digest)
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            hasher.update(chunk)
    return _digest_of(digest.partition(":")[0], hasher) == digest


class _PartFile:
    """``DEST.part``: appended to, hashed as it grows, renamed to DEST once verified."""

    def __init__(self, dest: Path, digest: str, size: int | None):
        self.dest = dest
        self.path = part_path(dest)
        self.digest = digest
        self.algorithm = digest.partition(":")[0]
        self.size = size
        self.hasher = hasher_for(digest)
        self.written = 0
        self.file: BinaryIO | None = None

    def open(self) -> "_PartFile":
        "Open (create) and lock the .part; hash what an earlier run left in it."
        from .outdir import OutputDirError

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
            self.hasher.update(chunk)
            self.written += len(chunk)
        if self.size is not None and self.written > self.size:
            log.debug("%s is longer than the blob: starting over", self.path)
            self.restart()
        return self

    def restart(self) -> None:
        assert self.file is not None
        self.file.truncate(0)
        self.hasher = hasher_for(self.digest)
        self.written = 0

    def write(self, chunk: bytes) -> None:
        assert self.file is not None
        if self.size is not None and self.written + len(chunk) > self.size:
            self.remove()
            raise VerificationError(f"blob {self.digest} is longer than the {self.size} bytes its descriptor says")
        self.file.write(chunk)
        self.hasher.update(chunk)
        self.written += len(chunk)

    def complete(self) -> bool:
        "True when the bytes so far are the whole blob (size and digest match)."
        if self.size is not None and self.written != self.size:
            return False
        return _digest_of(self.algorithm, self.hasher.copy()) == self.digest

    def finish(self) -> Path:
        "Verify, flush to disk, rename into place; on mismatch delete and raise."
        assert self.file is not None
        actual = _digest_of(self.algorithm, self.hasher.copy())
        if self.size is not None and self.written != self.size:
            self.remove()
            raise VerificationError(f"blob {self.digest} is {self.written} bytes, its descriptor says {self.size}; the download was deleted")
        if actual != self.digest:
            self.remove()
            raise VerificationError(f"blob {self.digest} does not match its digest (got {actual}); the download was deleted")
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


def _set_mtime(set_times, mtime) -> None:
    "Give an extracted file its tar mtime, unless this platform cannot hold that time (or there is none)."
    if mtime is None:
        return
    try:
        set_times((mtime, mtime))
    except (OverflowError, ValueError):
        pass


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

    def __enter__(self) -> "BlobSpool":
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
        if not part.complete():
            actual = _digest_of(part.algorithm, part.hasher.copy())
            part.remove()
            self._done = True
            if self.size is not None and part.written != self.size:
                raise VerificationError(f"blob {self.digest} is {part.written} bytes, its descriptor says {self.size}; the download was deleted")
            raise VerificationError(f"blob {self.digest} does not match its digest (got {actual}); the download was deleted")

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


# -- safe extraction ---------------------------------------------------------------

_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# What opening a symbolic link with O_NOFOLLOW fails with (Linux/macOS, FreeBSD).
_SYMLINK_ERRNOS = {errno.ELOOP, errno.EMLINK, errno.ENOTDIR}
_NAME_ERRNOS = {errno.EILSEQ, errno.EINVAL, errno.ENAMETOOLONG}


class Refused(Exception):
    "An entry that is not written; str() is why, in a few words."


class OutputCapReached(Refused):
    "Writing this entry would pass the output cap: extraction stops."


# Bounds on what one extraction writes (README, "Guarantees"): the total bytes
# of file contents (raise it with ``extract --max-output``), and how deep a
# path may nest (a hostile layer can hold a path of thousands of
# directories: tools that walk the result recursively fall over).
DEFAULT_MAX_OUTPUT = 10 * 1000**3  # "10G": decimal, as every size layerslayer reads or prints
MAX_DEPTH = 256


@dataclass
class WrittenEntry:
    path: str          # the path inside the image
    type: str
    size: int
    layer: int | None  # index of the layer in the image (None when unknown)
    digest: str        # the layer's digest
    written_as: str    # path relative to the output directory (differs from path when escaped)
    linkname: str = ""  # a symbolic link's target
    followed: str = ""  # with follow: the image path whose content replaced the link


@dataclass
class RefusedEntry:
    path: str
    type: str
    reason: str
    layer: int | None
    digest: str


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


def _components(path: str) -> list[str]:
    if path.startswith("/"):
        raise Refused("absolute path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused("path with a '..' component")
    if not parts:
        raise Refused("empty path")
    if len(parts) > MAX_DEPTH:
        raise Refused(f"nested {len(parts)} levels deep (more than {MAX_DEPTH})")
    return parts


def _check_symlink_target(target: str, parts: Sequence[str], what: str = "symbolic link") -> None:
    """Refuse a symbolic link at ``parts`` (its path under the output
    directory) whose target could resolve outside it: absolute, climbing
    above the root, or with ``..`` after a name. Every link in the tree
    passing this check where it lies (through directories that are not
    links, which :class:`SafeTree` ensures) keeps every chain of links inside."""
    if not target:
        raise Refused(f"{what} with an empty target")
    if target.startswith("/"):
        raise Refused(f"{what} to the absolute path {target} (outside the output directory)")
    pieces = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(pieces) and pieces[ups] == "..":
        ups += 1
    if ".." in pieces[ups:]:
        raise Refused(f"{what} to {target}: '..' after a name is not allowed (it could lead outside)")
    if ups > len(parts) - 1:
        raise Refused(f"{what} to {target} points outside the output directory")


def _truncate_utf8(data: bytes, limit: int) -> bytes:
    data = data[:limit]
    # do not cut a multi-byte UTF-8 sequence in half
    cut = len(data)
    while cut and (data[cut - 1] & 0xC0) == 0x80:
        cut -= 1
    if cut and data[cut - 1] >= 0xC0:
        data = data[: cut - 1]
    return data


class SafeTree:
    """Writes tar entries under ``root`` and nowhere else.

    Every directory on the way is opened relative to its parent with
    ``O_NOFOLLOW``: a path through a symbolic link (made by an earlier entry,
    an earlier run, or anyone) is refused, not followed. Absolute names and
    ``..`` components are refused; symbolic links must stay inside ``root``
    (relative, ``../`` only at the start, never above ``root``); hard links
    only to files this run wrote from the same layer; devices and FIFOs are
    not created; setuid/setgid bits are dropped unless ``keep_modes``. A name
    too long for the file system (or, on some systems, not valid UTF-8) is
    escaped deterministically, and the new name is reported. A file, link or
    symbolic link that was there before this tree was opened is not replaced
    unless ``force`` (what this run wrote may be: a later entry wins).

    Methods raise :class:`Refused` for an entry that is not written.
    """

    def __init__(self, root: str | os.PathLike, *, keep_modes: bool = False, force: bool = False,
                 max_bytes: int = DEFAULT_MAX_OUTPUT):
        from .outdir import prepare_output_dir

        self.root = prepare_output_dir(root)
        self.force = force
        self.max_bytes = max_bytes
        self.bytes_written = 0  # file contents, this run
        self._ours: set[tuple[str, ...]] = set()  # disk parts of the non-directories this run wrote
        self._made: set[tuple[str, ...]] = set()  # image parts of the directories this run created
        self.root_fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        self.keep_modes = keep_modes
        try:
            self.name_max = os.pathconf(self.root_fd, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            self.name_max = 255
        self._dirs: list[tuple[list[str], int, float]] = []  # deferred directory modes
        self._layer_written: dict[str, list[str]] = {}  # image path -> disk parts, current layer
        self.layer_files: list[list[str]] = []  # disk parts of non-directories written from the current layer
        self.modes_dropped: list[str] = []

    def close(self) -> None:
        """Apply directory modes and times (deepest first), then release the root.
        A directory that was there before is left as it was, unless ``force``."""
        for parts, mode, mtime in sorted(self._dirs, key=lambda item: -len(item[0])):
            if not self.force and tuple(parts) not in self._made:
                continue
            try:
                fd = self._open_dir(parts, create=False)
            except (Refused, OSError):
                continue
            try:
                os.fchmod(fd, mode)
                os.utime(fd, (mtime, mtime))
            except (OSError, OverflowError, ValueError):  # a time this platform cannot hold
                pass
            finally:
                os.close(fd)
        self._dirs.clear()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def __enter__(self) -> "SafeTree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def begin_layer(self) -> None:
        "Hard links only reach files written from the same layer."
        self._layer_written = {}
        self.layer_files = []

    # -- names --

    def _name(self, component: str, ascii_only: bool = False) -> str:
        raw = os.fsencode(component)
        name = component
        if ascii_only:
            name = raw.decode("utf-8", "backslashreplace")
            raw = name.encode()
        if len(raw) > self.name_max:
            tag = "~" + hashlib.sha256(os.fsencode(component)).hexdigest()[:16]
            name = os.fsdecode(_truncate_utf8(raw, self.name_max - len(tag) - 16)) + tag
        return name

    def _try_names(self, component: str, action: Callable[[str], object]):
        "Run action(name); when the file system rejects the name itself, retry it escaped."
        name = self._name(component)
        try:
            return name, action(name)
        except OSError as error:
            if error.errno not in (errno.EILSEQ, errno.EINVAL):
                raise
            escaped = self._name(component, ascii_only=True)
            if escaped == name:
                raise
            return escaped, action(escaped)

    # -- directories --

    def _open_dir(self, parts: Sequence[str], create: bool) -> int:
        "An fd for root/parts, never following a symbolic link; creates missing directories."
        fd = os.dup(self.root_fd)
        try:
            for i, component in enumerate(parts):
                def open_it(name: str, parent: int = fd) -> int:
                    try:
                        return os.open(name, _O_DIR, dir_fd=parent)
                    except FileNotFoundError:
                        if not create:
                            raise
                        try:
                            os.mkdir(name, 0o755, dir_fd=parent)
                            self._made.add(tuple(parts[: i + 1]))
                        except FileExistsError:
                            pass
                        return os.open(name, _O_DIR, dir_fd=parent)

                try:
                    _, child = self._try_names(component, open_it)
                except OSError as error:
                    if error.errno not in _SYMLINK_ERRNOS:
                        raise
                    where = "/".join(parts[: i + 1])
                    try:
                        st = os.stat(self._name(component), dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        raise Refused(f"{where} is not a directory")
                    if stat.S_ISLNK(st.st_mode):
                        raise Refused(f"it would be written through the symbolic link {where}")
                    raise Refused(f"{where} is not a directory")
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _disk_parts(self, parts: Sequence[str]) -> list[str]:
        return [self._name(p) for p in parts]

    def _clear_slot(self, parent_fd: int, parts: Sequence[str], path: str) -> None:
        """Make room for a non-directory: an old file or link is replaced (with
        ``force``, or when this run wrote it), never written through."""
        name = self._name(parts[-1])
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise Refused(f"a directory {path} is in the way")
        if not self.force and tuple(self._disk_parts(parts)) not in self._ours:
            raise Refused(f"{path} is already in the output directory (--force replaces it)")
        os.unlink(name, dir_fd=parent_fd)

    def _mode(self, entry: tarstream.Entry) -> int:
        mode = entry.mode & 0o7777
        if mode & 0o6000 and not self.keep_modes:
            self.modes_dropped.append(entry.path)
            mode &= ~0o6000
        return mode

    # -- entries --

    def write(self, entry: tarstream.Entry, content: Iterable[bytes] | None = None) -> str:
        """Write one entry; return its path relative to root as written.

        ``content`` yields a file's bytes (e.g. ``TarReader.iter_content()``).
        """
        if entry.absolute:
            raise Refused("absolute path")
        parts = _components(entry.path)
        kind = entry.type
        if kind in ("char", "block"):
            raise Refused("device files are not created")
        if kind == "fifo":
            raise Refused("FIFOs are not created")
        if kind == "dir":
            return self._write_dir(entry, parts)
        if kind == "symlink":
            return self._write_symlink(entry, parts)
        if kind == "hardlink":
            return self._write_hardlink(entry, parts)
        return self._write_file(entry, parts, content or ())

    def _write_dir(self, entry: tarstream.Entry, parts: list[str]) -> str:
        fd = self._open_dir(parts, create=True)
        os.close(fd)
        # Directories stay owner-accessible (u+rwx) so the tree can be cleaned up.
        self._dirs.append((list(parts), self._mode(entry) | 0o700, entry.mtime))
        return "/".join(self._disk_parts(parts))

    def _check_cap(self, size: int) -> None:
        if self.bytes_written + size > self.max_bytes:
            raise OutputCapReached(f"{size} more bytes would pass the output cap of {self.max_bytes} bytes "
                                   f"({self.bytes_written} written; --max-output raises it): extraction stopped")

    def _write_file(self, entry: tarstream.Entry, parts: list[str], content: Iterable[bytes]) -> str:
        # A sparse file's holes take no disk: the cap counts its stored fragments.
        self._check_cap(entry.size if entry.sparse is None else sum(length for _, length in entry.sparse))
        parent = self._open_dir(parts[:-1], create=True)
        try:
            mode = self._mode(entry)
            self._clear_slot(parent, parts, entry.path)
            name, fd = self._try_names(parts[-1], lambda n: os.open(n, _O_NEWFILE, 0o600, dir_fd=parent))
            try:
                with os.fdopen(fd, "wb", closefd=True) as f:
                    if entry.sparse is None:
                        for piece in content:
                            self._check_cap(len(piece))
                            f.write(piece)
                            self.bytes_written += len(piece)
                    else:  # holes stay holes (seek), the size is the logical one (as tarfile writes it)
                        for at, piece in tarstream.sparse_pieces(content, entry.sparse):
                            self._check_cap(len(piece))
                            f.seek(at)
                            f.write(piece)
                            self.bytes_written += len(piece)
                        f.truncate(entry.size)
                    f.flush()
                    os.fchmod(f.fileno(), mode)
                    _set_mtime(lambda t: os.utime(f.fileno(), t), entry.mtime)
            except BaseException:
                # A half-written file never stays behind (truncated stream, Ctrl-C).
                try:
                    os.unlink(name, dir_fd=parent)
                except OSError:
                    pass
                raise
        finally:
            os.close(parent)
        return self._remember(entry.path, parts, name)

    def place(self, temp: str | os.PathLike, path: str) -> str:
        """Move the complete file ``temp`` (in the root directory) to ``path``,
        through the same checks as :meth:`write`; return where it went."""
        parts = _components(path)
        parent = self._open_dir(parts[:-1], create=True)
        try:
            self._clear_slot(parent, parts, path)
            name, _ = self._try_names(
                parts[-1], lambda n: os.rename(os.path.basename(temp), n, src_dir_fd=self.root_fd, dst_dir_fd=parent))
        finally:
            os.close(parent)
        return self._remember(path, parts, name)

    def _write_symlink(self, entry: tarstream.Entry, parts: list[str]) -> str:
        target = entry.linkname
        _check_symlink_target(target, parts)
        parent = self._open_dir(parts[:-1], create=True)
        try:
            self._clear_slot(parent, parts, entry.path)
            name, _ = self._try_names(parts[-1], lambda n: os.symlink(target, n, dir_fd=parent))
            if os.utime in os.supports_follow_symlinks:
                try:
                    os.utime(name, (entry.mtime, entry.mtime), dir_fd=parent, follow_symlinks=False)
                except (OSError, OverflowError, ValueError):  # a time this platform cannot hold
                    pass
        finally:
            os.close(parent)
        return self._remember(entry.path, parts, name)

    def _write_hardlink(self, entry: tarstream.Entry, parts: list[str]) -> str:
        target = entry.linkname
        try:
            target_parts = _components(target)
        except Refused:
            raise Refused(f"hard link to {target or 'nothing'} (outside the output directory)")
        source = self._layer_written.get("/".join(target_parts))
        if source is None:
            raise Refused(f"hard link to {target}, which was not extracted (add it to the patterns)")
        source_parent = self._open_dir(source[:-1], create=False)
        try:
            st = os.stat(source[-1], dir_fd=source_parent, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                # A hard link to a symbolic link is that link again, somewhere
                # else: its target must be checked from the new place.
                link_target = os.fsdecode(os.readlink(source[-1], dir_fd=source_parent))
                _check_symlink_target(link_target, parts, f"hard link to {target}, a symbolic link")
            parent = self._open_dir(parts[:-1], create=True)
            try:
                self._clear_slot(parent, parts, entry.path)
                name, _ = self._try_names(
                    parts[-1],
                    lambda n: os.link(source[-1], n, src_dir_fd=source_parent, dst_dir_fd=parent, follow_symlinks=False),
                )
            finally:
                os.close(parent)
        finally:
            os.close(source_parent)
        return self._remember(entry.path, parts, name)

    def wrote_in_layer(self, path: str) -> bool:
        "True when a file, link or symlink at ``path`` was written from the current layer."
        try:
            return "/".join(_components(path)) in self._layer_written
        except Refused:
            return False

    def _remember(self, path: str, parts: list[str], name: str) -> str:
        disk = self._disk_parts(parts[:-1]) + [name]
        self._layer_written["/".join(parts)] = disk
        self._ours.add(tuple(disk))
        self.layer_files.append(disk)
        return "/".join(disk)

    def remove_layer_files(self) -> None:
        "Delete the files, links and symlinks written from the current layer."
        for disk in self.layer_files:
            try:
                parent = self._open_dir(disk[:-1], create=False)
            except (Refused, OSError):
                continue
            try:
                os.unlink(disk[-1], dir_fd=parent)
            except OSError:
                pass
            finally:
                os.close(parent)
            self._ours.discard(tuple(disk))
        self.layer_files = []
        self._layer_written = {}


# -- the merged view of a layer stack ------------------------------------------------

_SELF, _BELOW = 1, 2


class MergedView:
    """What lower layers still show once later layers are applied (top layer first).

    Feed every entry of a layer to :meth:`note`, then call :meth:`end_layer`;
    :meth:`hidden` tells whether an entry of a lower layer is "shadowed" (a
    later layer has that path, or a non-directory above it), "deleted" (a
    whiteout or an opaque directory in a later layer), or visible (None).
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
        return None

    def note(self, path: str, kind: str) -> None:
        parent, _, name = path.rpartition("/")
        if name == ".wh..wh..opq":
            if parent:
                self._pending.append((parent, _BELOW, True))
        elif name.startswith(".wh."):
            target = f"{parent}/{name[4:]}" if parent else name[4:]
            self._pending.append((target, _SELF | _BELOW, True))
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


# Ranged reads for extraction: the window grows with the offset (1/8 of what
# was read, between 1 MiB and 16 MiB), so stopping early wastes at most about
# an eighth of what was needed plus 1 MiB, and a full read of a 200 MB blob
# takes ~40 requests. One streaming GET would be cheaper in requests, but the
# registry then pushes megabytes into socket buffers we never read.
MIN_WINDOW = 1 << 20
MAX_WINDOW = 16 << 20
WINDOW_DIVISOR = 8


def ranged_chunks(client: RegistryClient, repository: str, digest: str, size: int,
                  chunk_size: int = EXTRACT_CHUNK, *, start: int = 0, window: int | None = None,
                  blob_size: int | None = None, on_whole: Callable[[str], None] | None = None) -> Iterator[bytes]:
    """A blob of known ``size`` read in growing ``Range`` windows (206 checked).

    A broken connection re-requests the rest of its window (up to
    ``client.retries`` times in a row); a registry that refuses ranges is
    read in one streaming GET instead (``on_whole`` hears why). With
    ``start``, bytes ``start`` to ``size - 1`` only; with ``window``, in
    windows of that size (one request when it covers them all). ``size``
    is where reading stops; ``blob_size`` (default ``size``) is the blob's
    declared size, which a registry sending the whole blob must not pass.
    """
    import requests

    offset = start
    failures = 0
    while offset < size:
        step = window or max(MIN_WINDOW, min(MAX_WINDOW, (offset - start) // WINDOW_DIVISOR))
        end = min(size, offset + step) - 1
        try:
            response = client.open_blob(repository, digest, start=offset, end=end)
        except RegistryError as error:
            if "Range" not in str(error) and "range" not in str(error):
                raise
            log.debug("%s: %s; reading it in one request", digest, error)
            if on_whole:
                on_whole(str(error))
            from .seekable import skip_bytes

            whole = size if blob_size is None else blob_size
            for chunk in skip_bytes(client.iter_blob(repository, digest, chunk_size=chunk_size, size=whole), offset):
                if offset + len(chunk) > size:
                    chunk = chunk[: size - offset]
                offset += len(chunk)
                if chunk:
                    yield chunk
                if offset >= size and size < whole:  # a part was asked for: the rest is not read
                    return
            return
        try:
            for chunk in response.iter_content(chunk_size):
                if not chunk:
                    continue
                if len(chunk) > end + 1 - offset:
                    chunk = chunk[: end + 1 - offset]
                offset += len(chunk)
                client.bytes_downloaded += len(chunk)
                failures = 0
                yield chunk
                if offset > end:
                    break
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
                requests.exceptions.Timeout) as error:
            failures += 1
            if failures >= client.retries:
                raise NetworkError(f"download of blob {digest} from {client.registry} broke at byte {offset}: "
                                   f"{short_reason(error)} (after {failures} attempts)")
            continue
        finally:
            response.close()
        if offset <= end:
            failures += 1
            if failures >= client.retries:
                raise NetworkError(f"{client.registry} sent a short range for blob {digest} at byte {offset}")


class LayerStream:
    """A layer's tar entries straight from the registry, hashed as they pass.

    ``complete`` is True once the blob was read to its end; :meth:`verify`
    then checks its digest and size. :meth:`close` stops the download.
    With a known ``size`` the blob is read in ranged windows
    (:func:`ranged_chunks`), so stopping early leaves little fetched for nothing.
    """

    def __init__(self, client: RegistryClient, repository: str, digest: str, media_type: str | None,
                 size: int | None = None, chunk_size: int = EXTRACT_CHUNK, *,
                 on_whole: Callable[[str], None] | None = None):
        self.digest = digest
        self.size = size
        self.hasher = hasher_for(digest)
        self.fetched = 0
        self.complete = False
        if size:
            self._raw = ranged_chunks(client, repository, digest, size, chunk_size, on_whole=on_whole)
        else:
            self._raw = client.iter_blob(repository, digest, chunk_size=chunk_size)
        self._counted = self._count()
        self.reader = tarstream.TarReader(tarstream.decompress(self._counted, tarstream.compression_of(media_type)))

    def _count(self) -> Iterator[bytes]:
        for chunk in self._raw:
            self.hasher.update(chunk)
            self.fetched += len(chunk)
            yield chunk
        self.complete = True

    def entries(self) -> Iterator[tarstream.Entry]:
        try:
            yield from self.reader
        except tarstream.TarError:
            # Corrupt data: was it damaged on the way (digest) or born that way?
            for _ in self._counted:
                pass
            self.verify()
            raise

    def drain(self) -> None:
        for _ in self._counted:
            pass

    def verify(self) -> None:
        if not self.complete:
            return
        actual = f"{self.digest.partition(':')[0]}:{self.hasher.hexdigest()}"
        if actual != self.digest:
            raise VerificationError(f"layer {self.digest} does not match its digest (got {actual})")
        if self.size and self.fetched != self.size:
            raise VerificationError(f"layer {self.digest} is {self.fetched} bytes, its descriptor says {self.size}")

    def verified(self) -> bool:
        "True when the blob was read to its end and matched its digest and size."
        if not self.complete:
            return False
        try:
            self.verify()
        except VerificationError:
            return False
        return True

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


def _layer_index(layer) -> int | None:
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
            if last[path] != offset:
                continue
            hidden = view.hidden(path) if view else None
            if view:
                view.note(path, kind)
            base = path.rpartition("/")[2]
            if base.startswith(".wh.") or not matcher(path):
                continue
            if hidden:
                if report is not None:
                    if hidden == "deleted":
                        report.note_deleted(path, _layer_index(layer))
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
                index = _layer_index(layer)
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
    from .seekable import SeekStream

    stop = layer.size if seek.end is None else seek.end + 1
    chunks = ranged_chunks(client, repository, layer.digest, stop, start=seek.start, window=stop - seek.start,
                           blob_size=layer.size, on_whole=on_whole)
    say("read part of a layer from an index checkpoint: sizes checked, the layer digest cannot be "
        "(--verify reads whole layers)")
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


def _toc_entries(client: RegistryClient, repository: str, layer, layer_plan: LayerPlan, report: ExtractReport,
                 message: Callable[[str], None] | None):
    """The planned entries of a layer listed from its TOC, each with a function
    giving its content (fetched by the TOC's offsets, chunk digests checked)."""
    from . import toc

    fetch = _Fetcher(client, repository, layer.digest)
    read = LayerRead(layer.digest, _layer_index(layer), 0, False)
    report.layers.append(read)
    if message:
        message("read files of a lazy-pull layer by their table of contents: chunk digests checked, "
                "the layer digest cannot be (--verify reads whole layers)")
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
    for entry, content in _toc_entries(client, repository, layer, layer_plan, report, message):
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
    index = _layer_index(layer)
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
    import posixpath

    started = time.monotonic()
    report = ExtractReport(None)
    wanted: Callable[[str], bool] = compile_patterns([pattern], ignore_case)
    candidates = list(reversed(list(layers)))
    try:
        for _hop in range(max_links + 1):
            follow: tuple[str, list] | None = None
            view = MergedView() if merged else None
            for position, layer in enumerate(candidates):
                index = _layer_index(layer)
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
                            stored = iter(lambda: spool.read(EXTRACT_CHUNK), b"")
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


# -- the index: which layers hold matches ---------------------------------------------
# Which layers hold matches comes from ``find.layers_matching`` (the same
# pattern semantics as ``find``); here only the per-layer plan for extract --db.


def index_rows(db, digest: str) -> list[tuple[str, str, int]] | None:
    "(path, type, offset) of every entry of an indexed layer, in tar order; None if not indexed."
    from .store import layer_status, path_from_row

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
    from .seekable import plan_seek
    from .store import entry_extents, layer_checkpoints, layer_listed_via

    for digest, layer_plan in plans.items():
        if (layer_listed_via(db, digest) or "").endswith("-toc"):
            layer_plan.toc = True
            continue
        rows = layer_checkpoints(db, digest)
        if rows and layer_plan.offsets:
            layer = layers.get(digest)
            layer_plan.seek = plan_seek(rows, entry_extents(db, digest, layer_plan.offsets), getattr(layer, "size", None))


# -- commands as library calls -----------------------------------------------------------


def _progress_context(factory, label: str, total: int | None):
    from contextlib import nullcontext

    return factory(label, total) if factory else nullcontext(None)


def select_layers(layers: Sequence, selectors: Iterable[str | int]) -> list:
    """Layers chosen by index (``0`` base, ``-1`` top) or digest (``sha256:…``, or a unique hex prefix)."""
    chosen = []
    for selector in selectors:
        text = str(selector).strip()
        layer = None
        if re.fullmatch(r"-?[0-9]+", text) and len(text) < 6:
            number = int(text)
            if not -len(layers) <= number < len(layers):
                raise UsageError(f"there is no layer {number}: the image has {len(layers)} layer(s), 0 to {len(layers) - 1}")
            layer = layers[number]
        else:
            hex_part = text.partition(":")[2] if ":" in text else text
            if not re.fullmatch(r"[0-9a-f]{4,128}", hex_part):
                raise UsageError(f"{text!r} is neither a layer index nor a layer digest")
            found = [candidate for candidate in layers if candidate.digest.partition(":")[2].startswith(hex_part)]
            if not found:
                raise UsageError(f"the image has no layer {text}")
            if len({candidate.digest for candidate in found}) > 1:
                raise UsageError(f"{text} matches more than one layer: give more digits")
            layer = found[0]
        if layer not in chosen:
            chosen.append(layer)
    return chosen


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
    from .image import open_image
    from .options import ClientOptions
    from .outdir import make_dirs_below, prepare_output_dir
    from .reference import parse_reference

    started = time.monotonic()
    out_dir = prepare_output_dir(DEFAULT_OUTPUT if out_dir is None else out_dir, link_ok=out_dir is not None)
    ref = parse_reference(reference)
    client = (options or ClientOptions()).client(ref)
    _, image = open_image(client, ref, platform)
    summary = SaveSummary()
    if format is not None:
        from . import layout

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
        config_type = "application/vnd.oci.image.config.v1+json"
        jobs.append((image.config_digest, config_type, None))
    for digest, media_type, size in jobs:
        dest = blob_path(out_dir, ref.registry, ref.repository, digest, media_type)
        make_dirs_below(out_dir, dest.parent)
        try:
            with _progress_context(progress_factory, digest.partition(":")[2][:12], size) as bar:
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
    layer: "LayerMatch"  # find.LayerMatch: digest, media_type, size, matches, last_offset, sources
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
    from .options import ClientOptions
    from .outdir import make_dirs_below, prepare_output_dir
    from .find import LayerMatch, layers_matching
    from .store import layer_sources, open_db

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
            hex_part = text.partition(":")[2] if ":" in text else text
            if not re.fullmatch(r"[0-9a-f]{4,128}", hex_part):
                raise UsageError(f"{text!r} is not a layer digest")
            rows = db.execute(
                "SELECT digest, media_type, size FROM layers WHERE substr(digest, instr(digest, ':') + 1, ?) = ?",
                [len(hex_part), hex_part],
            ).fetchall()
            if not rows:
                raise UsageError(f"the index has no layer {text}")
            if len(rows) > 1:
                raise UsageError(f"{text} matches more than one layer of the index: give more digits")
            if rows[0][0] not in {layer.digest for layer in selected}:
                selected.append(LayerMatch(rows[0][0], rows[0][1], rows[0][2], 0, 0, 0))
        sources = {layer.digest: layer.sources or layer_sources(db, layer.digest) for layer in selected}
        if format is not None:
            from .store import images_with_layer

            holders = {layer.digest: images_with_layer(db, layer.digest) for layer in selected}
    finally:
        db.close()
    out_dir = prepare_output_dir(DEFAULT_OUTPUT if out_dir is None else out_dir, link_ok=out_dir is not None)
    summary = ExportSummary()
    if format is not None:
        return export_images(selected, holders, format, out_dir, options, progress_factory, on_item, summary, started)
    clients: dict[str, RegistryClient] = {}
    for layer in selected:
        item = ExportItem(layer)
        summary.items.append(item)
        candidates = sources.get(layer.digest) or []
        if not candidates:
            item.error = LayerslayerError(f"the index does not say where layer {layer.digest} can be fetched from")
        for registry, repository in candidates:
            item.registry, item.repository, item.error = registry, repository, None
            client = clients.get(registry) or clients.setdefault(registry, options.client(registry))
            try:
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
                    with _progress_context(progress_factory, layer.digest.partition(":")[2][:12], layer.size) as bar:
                        item.download = download_blob(client, repository, layer.digest, dest, layer.size, progress=bar)
                break
            except LayerslayerError as error:
                item.error = error
                if not isinstance(error, (NotFound, AuthError)):
                    break  # a verification or network failure: not a reason to try elsewhere
        if on_item:
            on_item(item)
    summary.seconds = time.monotonic() - started
    return summary


def export_images(selected: Sequence, holders: dict, format: str, out_dir, options, progress_factory,  # noqa: A002
                  on_item: Callable[[ExportItem], None] | None, summary: ExportSummary, started: float) -> ExportSummary:
    """Write each image holding one of the ``selected`` layers (``holders``:
    digest -> [(registry, repository, tag, manifest digest)]) whole, in
    ``format``, under ``out_dir``: one item per layer, one layout per image."""
    from . import layout
    from .image import open_image
    from .reference import Reference

    writer = layout.writer_for(format)
    clients: dict[str, RegistryClient] = {}
    done: dict[str, LayerslayerError | None] = {}  # manifest digest -> the error writing it, if any
    for layer in selected:
        item = ExportItem(layer)
        summary.items.append(item)
        images = holders.get(layer.digest) or []
        if not images:
            item.error = LayerslayerError(f"the index knows no image holding layer {layer.digest}")
        for registry, repository, tag, manifest_digest in images:
            item.registry, item.repository = registry, repository
            if manifest_digest not in done:
                ref = Reference(registry, repository, tag, manifest_digest)
                client = clients.get(registry) or clients.setdefault(registry, options.client(registry))
                try:
                    _, image = open_image(client, ref)
                    target = Path(out_dir) / layout.default_name(ref, image, format)
                    summary.images.append(writer(client, ref, image, target, progress_factory=progress_factory))
                    done[manifest_digest] = None
                except LayerslayerError as error:
                    done[manifest_digest] = error
            item.error = done[manifest_digest]
            if item.error is None:
                break  # one image holding the layer is enough
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
    from .image import open_image
    from .options import ClientOptions
    from .reference import parse_reference

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
        from .store import open_db

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


def _exact_pattern(path: str) -> Pattern:
    "A pattern matching exactly this image path (glob characters put in sets)."
    return parse_pattern("/" + re.sub(r"([*?\[])", r"[\1]", path))


class _CappedOut:
    "A binary file that refuses to grow past ``room`` bytes."

    def __init__(self, f: BinaryIO, room: int):
        self.f, self.room, self.written = f, room, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.room:
            raise OutputCapReached("its content would pass the output cap (--max-output raises it)")
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
    from .store import open_db

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
        entries = _toc_entries(client, repository, layer, layer_plan, report, message)
    else:
        stream = open_layer(client, repository, layer, layer_plan, message=message)
        read = LayerRead(layer.digest, _layer_index(layer), 0, False)
        report.layers.append(read)
        entries = ((e, stream.reader.iter_content) for e in stream.entries() if e.offset in layer_plan.offsets)
    try:
        for entry, content in entries:
            if entry.type != "file":
                return None  # links and the rest: cat_file knows them
            for piece in content():
                out.write(piece)
            out.flush()
            report.written.append(WrittenEntry(entry.path, "file", entry.size, _layer_index(layer), layer.digest, ""))
            break
    finally:
        entries.close()
        if stream is not None:
            read.fetched = stream.fetched
            read.complete = stream.complete
            stream.close()
        report.seconds = time.monotonic() - started
    return report
