"""Writing tar entries under an output directory and nowhere else.

:class:`SafeTree` refuses (raises :class:`Refused`) what could land outside
its root or surprise whoever walks the result: absolute names, ``..``,
symbolic links that could lead outside, writes through a symbolic link,
devices and FIFOs, paths nested deeper than :data:`MAX_DEPTH`, and file
contents past the output cap (:class:`OutputCapReached`). What was written
and what was refused are recorded as :class:`WrittenEntry` and
:class:`RefusedEntry`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from . import tarstream
from .outdir import prepare_output_dir

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


def _set_mtime(set_times, mtime) -> None:
    "Give an extracted file its tar mtime, unless this platform cannot hold that time (or there is none)."
    if mtime is None:
        return
    try:
        set_times((mtime, mtime))
    except (OverflowError, ValueError):
        pass


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

    def __enter__(self) -> SafeTree:
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
                            self._made.add(tuple(parts[: i + 1]))  # noqa: B023  (_try_names calls open_it at once)
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
            raise Refused(f"{path} is already in the output directory (force=True replaces it)")
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
                                   f"({self.bytes_written} written; max_output raises it): extraction stopped")

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
