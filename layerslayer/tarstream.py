"""Streaming tar header parsing.

The hot path of layerslayer: a layer blob arrives as ~1 MiB chunks, is
inflated into bounded decompressed chunks (:mod:`layerslayer.decompress`),
and a hand-written 512-byte header parser turns the tar stream into
:class:`Entry` records while skipping file contents without copying them.

Nothing here does I/O: callers pass any iterable of ``bytes``::

    for entry in iter_entries(client.iter_blob(repo, digest), layer_compression(media_type)):
        ...

    reader = TarReader(decompress(chunks, "gzip"))
    for entry in reader:
        if entry.path == "etc/passwd":
            data = reader.read()          # or reader.iter_content()

Notes for callers:

* ``Entry.mtime`` is an ``int`` for header times and a ``float`` when a pax
  record carries a fractional time (or one beyond 64 bits); ``None`` for a
  time beyond even a float's range.
* Paths that are not UTF-8 keep their bytes as surrogate escapes:
  ``os.fsencode(entry.path)`` gives the original name back.
* ``offset`` is where the entry's first header is (its pax / GNU long-name
  header when it has one, as ``tarfile`` reports), ``data_offset`` where its
  stored content starts, both in the uncompressed tar stream. For a sparse
  file the stored content is its data fragments one after another (a pax 1.0
  sparse map before them is not content: ``data_offset`` is after it), and
  ``Entry.sparse`` says where each fragment goes in the ``size`` bytes of the
  file; the rest are holes (zeros).
* The runtime is the truth: containerd and moby unpack layers with Go's
  ``archive/tar``, so its rules apply where tar readers disagree (README,
  "How layers are read"): a pax global header (``g``) changes no entry (its
  records are kept in ``TarReader.global_headers``); of several ``x`` headers
  before an entry only the last applies; a ``g`` header drops a pending
  ``x``/``L``/``K``; an old-style (typeflag NUL) entry whose name ends in
  ``/`` is a directory without data; extension headers followed by the end of
  the archive are no entry; pax records Go rejects (a NUL in a path, link
  path or owner name, malformed numbers or times) fail the layer.
* The magic bytes win over a declared compression (mislabelled layers exist).
* Iteration consumes the input to its end (``TarReader(drain=True)``), so a
  caller hashing the raw chunks has seen the whole blob when it finishes.

Hostile input is expected (layers come from anywhere): every limit below is
a module constant and every failure is a :class:`TarError` whose message is
one line.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .decompress import decompress, sniff_compression
from .errors import TarError
from .oci import is_opaque_marker, is_whiteout

__all__ = [
    "Entry",
    "TarReader",
    "iter_entries",
    "normalize_path",
    "MAX_EXTENSION_SIZE",
    "MAX_EXTENSION_CHAIN",
    "MAX_PATH_LENGTH",
    "MAX_GLOBAL_HEADERS",
    "name_budget",
    "MAX_ENTRY_SIZE",
]

# --- limits (hostile input) -------------------------------------------------

#: Largest pax extended header / GNU long name or long link data accepted.
MAX_EXTENSION_SIZE = 1 << 20
#: Most extension headers (pax x/g, GNU L/K) allowed in a row before an entry.
MAX_EXTENSION_CHAIN = 32
#: Longest path or link target accepted (bytes): PATH_MAX is 4 KiB on Linux,
#: so anything near this is hostile; a longer one fails the layer.
MAX_PATH_LENGTH = 64 << 10
#: Long names (GNU L/K, pax path/linkpath: anything a 512-byte header cannot
#: hold) a layer may carry in total: this floor, or this many times the
#: layer's compressed size if more (see :func:`name_budget`). A tiny layer of
#: huge compressed names would otherwise cost gigabytes of index.
NAME_BYTES_FLOOR = 16 << 20
NAME_BYTES_PER_BLOB_BYTE = 4
#: Global pax headers whose records are kept (``TarReader.global_headers``).
MAX_GLOBAL_HEADERS = 8
#: Largest entry size believed (1 TiB); anything bigger is a corrupt header.
MAX_ENTRY_SIZE = 1 << 40


@dataclass(slots=True)
class Entry:
    """One tar entry (a file, directory, link, device or fifo) of a layer."""

    path: str
    type: str  # "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo"
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    mtime: float | None = 0.0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    offset: int = 0
    data_offset: int = 0
    absolute: bool = False  # the member name started with "/" (extract refuses such entries)
    #: sparse files only: ((offset, length), ...) of the data fragments the
    #: stored content fills, in order; everything else in ``size`` is a hole
    sparse: tuple[tuple[int, int], ...] | None = None

    @property
    def whiteout(self) -> bool:
        "True for overlay whiteouts (opaque markers included), see :mod:`layerslayer.oci`."
        return is_whiteout(self.path)

    @property
    def opaque(self) -> bool:
        "True for the opaque-directory marker."
        return is_opaque_marker(self.path)


# --- tar --------------------------------------------------------------------

_ZERO_BLOCK = bytes(512)

_TYPES = {
    48: "file",  # '0'
    0: "file",  # '\0' (old regular file)
    55: "file",  # '7' contiguous file
    49: "hardlink",  # '1'
    50: "symlink",  # '2'
    51: "char",  # '3'
    52: "block",  # '4'
    53: "dir",  # '5'
    54: "fifo",  # '6'
    68: "dir",  # 'D' GNU dump dir (has data: the listing)
    83: "file",  # 'S' GNU old sparse file
}
# Types whose size field does not announce data (as GNU tar, Go and tarfile do).
_NO_DATA = frozenset(b"123456")
_EXTENSIONS = frozenset(b"xgXLK")
# name, mode+uid+gid, size, mtime, checksum, typeflag, uname+gname
_HEADER = struct.Struct("100s24s12s12s8sB108x64s183x")
_CACHE_MAX = 8192  # per-field parse caches are cleared past this many keys


def normalize_path(path: str) -> str:
    """Normalise a tar member name: no leading "./" or "/", no "//", no trailing "/".

    The root directory ("." / "./" / "/") becomes "".
    """
    while True:
        if path.startswith("./"):
            path = path[2:]
        elif path.startswith("/"):
            path = path[1:]
        else:
            break
    while "//" in path:
        path = path.replace("//", "/")
    path = path.rstrip("/")
    if path == ".":
        return ""
    return path


def _parse_number(field: bytes, what: str, offset: int) -> int:
    "Numeric header field: octal (NUL/space padded) or GNU base-256."
    if field and field[0] & 0x80:
        if field[0] == 0xFF:  # negative base-256
            return int.from_bytes(field, "big", signed=True)
        if field[0] == 0x80:
            return int.from_bytes(field[1:], "big")
        raise TarError(f"corrupt tar header at offset {offset}: bad {what} field")
    text = field.partition(b"\0")[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError(f"corrupt tar header at offset {offset}: bad {what} field") from None


def _checksum_value(field: bytes) -> int:
    "The stored checksum (octal), or -1 when the field is not a number."
    try:
        return int(field.partition(b"\0")[0], 8)
    except ValueError:
        return -1


def _checksum_key(field: bytes) -> int | float:
    """What the modular fast check subtracts from a header's adler32 sum.

    A header is valid when ``sum(header with the checksum field as 8 spaces)
    == stored``, i.e. ``sum(header) - sum(field) + 256 - stored == 0``.
    adler32 gives ``sum(header) mod 65521``, so the fast check is
    ``(adler - key) % 65521 == 0`` with ``key = sum(field) - 256 + stored``;
    a mismatch (or NaN for an unreadable field) takes the exact path.
    """
    stored = _checksum_value(field)
    if stored < 0:
        return float("nan")
    return sum(field) - 256 + stored


def _exact_checksums(hdr: bytes) -> tuple[int, int]:
    "(unsigned, signed) sums of a header with its checksum field read as spaces."
    raw = hdr[:148] + b"        " + hdr[156:]
    unsigned = sum(raw)
    signed = unsigned - 256 * sum(1 for b in raw if b > 127)
    return unsigned, signed


def _parse_pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    """Parse pax records (``LEN KEY=VALUE\\n``...) as Go's archive/tar does:
    values may hold any byte, newlines included, but an empty key, a NUL in a
    key, or a NUL in a path, link path or owner name value is an error; GNU
    sparse 0.0 ``GNU.sparse.offset``/``numbytes`` pairs become one
    ``GNU.sparse.map`` record (as 0.1 writes it)."""
    space = data.find(b" ", 0, 24)
    if space > 0 and data[-1:] == b"\n":
        try:
            length = int(data[:space])
        except ValueError:
            length = -1
        if length == len(data):  # a single record: the usual case
            key, eq, value = data[space + 1 : -1].partition(b"=")
            if eq and key and b"\0" not in data and key[:11] != b"GNU.sparse.":
                return {key: value}
    records: dict[bytes, bytes] = {}
    sparse_map: list[bytes] = []
    pos = 0
    n = len(data)
    while pos < n:
        space = data.find(b" ", pos, pos + 24)
        if space < 0:
            raise TarError(f"corrupt pax header at offset {offset}")
        digits = data[pos:space]
        if not digits.isdigit():
            raise TarError(f"corrupt pax header at offset {offset}")
        length = int(digits)
        end = pos + length
        if length < 5 or length <= space - pos + 1 or end > n or data[end - 1] != 0x0A:
            raise TarError(f"corrupt pax header at offset {offset}")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise TarError(f"corrupt pax header at offset {offset}")
        if key in _PAX_NAME_KEYS:
            if b"\0" in value:
                raise TarError(
                    f"corrupt pax header at offset {offset}: NUL byte in the {key.decode()} record "
                    "(the runtime rejects the layer)"
                )
        elif b"\0" in key:
            raise TarError(f"corrupt pax header at offset {offset}: NUL byte in a record name")
        if key == b"GNU.sparse.offset" or key == b"GNU.sparse.numbytes":
            if (key == b"GNU.sparse.offset") != (len(sparse_map) % 2 == 0) or b"," in value:
                raise TarError(f"corrupt pax header at offset {offset}: bad GNU sparse 0.0 map")
            sparse_map.append(value)
        else:
            records[key] = value
        pos = end
    if sparse_map:
        records[b"GNU.sparse.map"] = b",".join(sparse_map)
    return records


_PAX_NAME_KEYS = frozenset((b"path", b"linkpath", b"uname", b"gname"))


class TarReader:
    """Streaming tar parser over decompressed chunks.

    Iterate it for :class:`Entry` records. While an entry is current (between
    two ``next()`` calls) its content can be read with :meth:`read` or
    :meth:`iter_content`; whatever is not read is skipped without copying.

    With ``drain=True`` (the default) the input is consumed to its end after
    the end-of-archive marker, so a caller hashing the raw chunks sees every
    byte and the gzip/zstd trailers are verified.
    """

    def __init__(self, chunks: Iterable[bytes], *, drain: bool = True, max_name_bytes: int | None = None):
        self._it = iter(chunks)
        #: long names (see :data:`NAME_BYTES_FLOOR`) this layer may still carry
        self._name_budget = NAME_BYTES_FLOOR if max_name_bytes is None else max_name_bytes
        #: ``(offset, records)`` of the first :data:`MAX_GLOBAL_HEADERS` pax
        #: global headers: the runtime applies them to nothing, so neither do
        #: we, but a researcher may want to know they are there
        self.global_headers: list[tuple[int, dict[str, str]]] = []
        self.global_header_count = 0
        self._drain = drain
        self._buf = b""
        self._pos = 0  # position in _buf; may exceed len(_buf) while skipping
        self._base = 0  # stream offset of _buf[0]
        self._remaining = 0  # unread content bytes of the current entry
        self._pad = 0  # padding after the current entry's content
        self._content_end = 0  # stream offset where the current entry's content ends
        self._started = False
        self.entry: Entry | None = None  # the current entry

    # -- chunk plumbing --

    def _next_chunk(self) -> bytes | None:
        for chunk in self._it:
            if chunk:
                if not isinstance(chunk, bytes):
                    chunk = bytes(chunk)
                return chunk
        return None

    def _take(self, n: int) -> bytes:
        """Return the next ``n`` bytes after skipping to ``_pos`` (shorter at EOF)."""
        buf = self._buf
        pos = self._pos
        while pos >= len(buf):
            pos -= len(buf)
            self._base += len(buf)
            nxt = self._next_chunk()
            if nxt is None:
                self._buf = b""
                self._pos = 0
                if pos > 0 and self._base < self._content_end:
                    raise TarError(
                        f"truncated tar stream: entry at offset {self.entry.offset if self.entry else 0} "
                        f"needs {self._content_end - self._base} more bytes"
                    )
                return b""
            buf = nxt
        if pos + n <= len(buf):
            self._buf = buf
            self._pos = pos + n
            return buf[pos : pos + n]
        parts = [buf[pos:]]
        have = len(buf) - pos
        while True:
            self._base += len(buf)
            buf = self._next_chunk()
            if buf is None:
                self._buf = b""
                self._pos = 0
                return b"".join(parts)
            need = n - have
            if len(buf) >= need:
                parts.append(buf[:need])
                self._buf = buf
                self._pos = need
                return b"".join(parts)
            parts.append(buf)
            have += len(buf)

    # -- content of the current entry --

    def read(self, n: int = -1) -> bytes:
        "Read up to ``n`` bytes (all when n < 0) of the current entry's content."
        if n < 0 or n > self._remaining:
            n = self._remaining
        if n <= 0:
            return b""
        buf = self._buf
        pos = self._pos
        if pos + n <= len(buf):
            self._pos = pos + n
            self._remaining -= n
            return buf[pos : pos + n]
        parts = []
        want = n
        while want:
            if pos >= len(buf):
                self._base += len(buf)
                buf = self._next_chunk()
                pos = 0
                if buf is None:
                    self._buf = b""
                    self._pos = 0
                    raise TarError(
                        f"truncated tar stream: content of {self.entry.path if self.entry else '?'} is cut short"
                    )
                self._buf = buf
            step = min(want, len(buf) - pos)
            parts.append(buf[pos : pos + step] if (pos or step != len(buf)) else buf)
            pos += step
            want -= step
        self._pos = pos
        self._remaining -= n
        return b"".join(parts)

    def iter_content(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        "Yield the current entry's remaining content in pieces (no big copies)."
        while self._remaining:
            buf = self._buf
            pos = self._pos
            if pos >= len(buf):
                self._base += len(buf)
                nxt = self._next_chunk()
                if nxt is None:
                    self._buf = b""
                    self._pos = 0
                    raise TarError(
                        f"truncated tar stream: content of {self.entry.path if self.entry else '?'} is cut short"
                    )
                self._buf = buf = nxt
                self._pos = pos = 0
            step = min(self._remaining, len(buf) - pos, chunk_size)
            piece = buf if (pos == 0 and step == len(buf)) else buf[pos : pos + step]
            self._pos = pos + step
            self._remaining -= step
            yield piece

    # -- entries --

    def __iter__(self) -> Iterator[Entry]:
        if self._started:
            raise RuntimeError("a TarReader can only be iterated once")
        self._started = True
        return self._entries()

    def _end(self) -> None:
        self.entry = None
        self._remaining = self._pad = 0
        if self._drain:
            for _ in self._it:
                pass

    def _entries(self) -> Iterator[Entry]:
        adler32 = zlib.adler32
        types = _TYPES
        no_data = _NO_DATA
        max_size = MAX_ENTRY_SIZE
        normalize = normalize_path
        parse_number = _parse_number
        cache_max = _CACHE_MAX
        unpack_header = _HEADER.unpack
        chks: dict[bytes, int | float] = {}  # checksum field -> stored value + field byte sum - 256
        names: dict[bytes, tuple[str, str]] = {}  # uname+gname fields -> decoded
        ids: dict[bytes, tuple[int, int, int]] = {}  # mode+uid+gid fields -> numbers
        sizes: dict[bytes, int] = {}
        mtimes: dict[bytes, int] = {}
        first = True
        pax: dict[bytes, bytes] | None = None
        long_name: bytes | None = None
        long_link: bytes | None = None
        chain = 0  # extension headers seen in a row
        ext_start = -1  # offset of the first x/L/K header of the current entry

        while True:
            # -- the next header: skip what is left of the previous entry
            buf = self._buf
            pos = self._pos + self._remaining + self._pad
            if pos + 512 <= len(buf):
                hdr_off = self._base + pos
                hdr = buf[pos : pos + 512]
                self._pos = pos + 512
            else:
                self._content_end = self._base + self._pos + self._remaining
                hdr_off = self._base + pos
                self._pos = pos
                self._remaining = self._pad = 0
                hdr = self._take(512)
                if len(hdr) < 512:
                    # Extension headers then the end: no entry (Go's reader ends there too).
                    if hdr.strip(b"\0"):
                        if first:
                            raise TarError(_not_a_tar(hdr))
                        raise TarError(f"truncated tar stream: partial header at offset {hdr_off}")
                    self._end()  # archive without end-of-archive blocks: fine at a boundary
                    return

            # -- checksum: a cached modular check first (one adler32 call), then exact sums
            raw_name, f_ids, f_size, f_mtime, chk_field, typeflag, f_owner = unpack_header(hdr)
            k = chks.get(chk_field)
            if k is None:
                k = _checksum_key(chk_field)
                if len(chks) > cache_max:
                    chks.clear()
                chks[chk_field] = k
            if ((adler32(hdr, 0) & 0xFFFF) - k) % 65521:
                if hdr == _ZERO_BLOCK:
                    self._end()  # end of archive (a lone zero block is tolerated as well)
                    return
                stored = _checksum_value(chk_field)
                if stored < 0 or stored not in _exact_checksums(hdr):
                    if first:
                        raise TarError(_not_a_tar(hdr))
                    raise TarError(f"corrupt tar header at offset {hdr_off} (bad checksum)")
            first = False

            # -- size
            size = sizes.get(f_size)
            if size is None:
                size = parse_number(f_size, "size", hdr_off)
                if size < 0 or size > max_size:
                    raise TarError(f"corrupt tar header at offset {hdr_off}: impossible size {size}")
                if len(sizes) > cache_max:
                    sizes.clear()
                sizes[f_size] = size

            etype = types.get(typeflag)
            if etype is None:
                if typeflag in _EXTENSIONS:
                    # -- extension headers: pax x/X/g, GNU L/K
                    if ext_start < 0:
                        ext_start = hdr_off
                    chain += 1
                    if chain > MAX_EXTENSION_CHAIN:
                        raise TarError(
                            f"corrupt tar stream: more than {MAX_EXTENSION_CHAIN} extension headers in a row "
                            f"at offset {hdr_off}"
                        )
                    if size > MAX_EXTENSION_SIZE:
                        raise TarError(
                            f"corrupt tar stream: extension header of {size} bytes at offset {hdr_off} "
                            f"(limit {MAX_EXTENSION_SIZE})"
                        )
                    padded = (size + 511) & ~511
                    pos = self._pos
                    if pos + padded <= len(buf) and self._buf is buf:
                        data = buf[pos : pos + size]
                        self._pos = pos + padded
                    else:
                        self._content_end = self._base + pos + size
                        data = self._take(padded)[:size] if padded else b""
                        if len(data) < size:
                            raise TarError(
                                f"truncated tar stream: extension header at offset {hdr_off} is cut short"
                            )
                    self._remaining = self._pad = 0
                    if typeflag == 120 or typeflag == 88:  # 'x' / 'X': only the last one applies
                        pax = _parse_pax(data, hdr_off)
                    elif typeflag == 103:  # 'g'
                        # Go returns it as an entry of its own, which the
                        # runtimes skip: it changes no later entry and drops
                        # what extension headers came before it.
                        self._global_header(_parse_pax(data, hdr_off), hdr_off)
                        pax = long_name = long_link = None
                        chain = 0
                        ext_start = -1
                    elif typeflag == 76:  # 'L'
                        long_name = self._long_name(data.partition(b"\0")[0], hdr_off)
                    else:  # 'K'
                        long_link = self._long_name(data.partition(b"\0")[0], hdr_off)
                    continue
                if typeflag == 86:  # 'V' volume label: not a path
                    self._remaining = 0
                    self._pad = (size + 511) & ~511
                    continue
                etype = "file"  # unknown type: like tar, treat as a regular file

            # -- name
            if long_name is not None:
                raw_name = long_name
                long_name = None
            else:
                raw_name = raw_name.partition(b"\0")[0]
                if hdr[345]:
                    raw_name = _with_prefix(hdr, raw_name)
            name = raw_name.decode("utf-8", "surrogateescape")

            # -- mode, uid, gid
            numbers = ids.get(f_ids)
            if numbers is None:
                numbers = (
                    parse_number(f_ids[:8], "mode", hdr_off) & 0o7777,
                    parse_number(f_ids[8:16], "uid", hdr_off),
                    parse_number(f_ids[16:24], "gid", hdr_off),
                )
                if len(ids) > cache_max:
                    ids.clear()
                ids[f_ids] = numbers
            mode, uid, gid = numbers

            # -- mtime
            mtime = mtimes.get(f_mtime)
            if mtime is None:
                mtime = parse_number(f_mtime, "mtime", hdr_off)
                if len(mtimes) > cache_max:
                    mtimes.clear()
                mtimes[f_mtime] = mtime

            # -- owner names
            owner = names.get(f_owner)
            if owner is None:
                owner = (
                    f_owner[:32].partition(b"\0")[0].decode("utf-8", "surrogateescape"),
                    f_owner[32:].partition(b"\0")[0].decode("utf-8", "surrogateescape"),
                )
                if len(names) > cache_max:
                    names.clear()
                names[f_owner] = owner
            uname, gname = owner

            # -- links and devices
            linkname = ""
            devmajor = devminor = 0
            sparse = None
            if typeflag in no_data:
                data_size = 0
                if typeflag == 49 or typeflag == 50:
                    if long_link is not None:
                        linkname = long_link.decode("utf-8", "surrogateescape")
                    else:
                        linkname = hdr[157:257].partition(b"\0")[0].decode("utf-8", "surrogateescape")
                elif typeflag == 51 or typeflag == 52:
                    devmajor = parse_number(hdr[329:337], "devmajor", hdr_off)
                    devminor = parse_number(hdr[337:345], "devminor", hdr_off)
            elif typeflag == 83:  # GNU old sparse: real size in the header, maybe extra sparse blocks
                data_size = size
                size, sparse = self._old_sparse(hdr, hdr_off, data_size)
            else:
                data_size = size
            long_link = None
            data_off = hdr_off + 512

            # -- pax records override the header
            if pax is not None:
                name, linkname, size, data_size, uid, gid, uname, gname, mtime = _apply_pax(
                    pax, name, linkname, size, data_size, uid, gid, uname, gname, mtime, typeflag, hdr_off
                )
                if typeflag in no_data:
                    data_size = 0
                elif typeflag != 83 and (
                    b"GNU.sparse.map" in pax or b"GNU.sparse.major" in pax or b"GNU.sparse.minor" in pax
                ):
                    name, size, data_size, sparse = self._pax_sparse(pax, name, size, data_size, hdr_off)
                    if sparse is not None:
                        data_off = -1  # after the sparse map (pax 1.0): set below
                if len(name) > 256 or len(linkname) > 256:  # longer than a header holds
                    self._long_name(name.encode("utf-8", "surrogateescape"), hdr_off)
                    self._long_name(linkname.encode("utf-8", "surrogateescape"), hdr_off)
                pax = None
            if typeflag == 0 and name[-1:] == "/":
                etype = "dir"  # old-style directory: no data, whatever its size says (as Go reads it)
                data_size = 0
            if chain:
                chain = 0
                if ext_start >= 0:
                    hdr_off = ext_start
                    ext_start = -1
            if data_off < 0 or (typeflag == 83 and hdr[482]):
                data_off = self._base + self._pos

            self._remaining = data_size
            self._pad = -data_size & 511
            if etype != "file":
                size = 0

            # Numbers a database can hold (fast path: every ordinary header).
            if (uid | gid | devmajor | devminor) >> 31 or (mtime.__class__ is int and mtime >> 62):
                uid, gid, mtime = _storable_numbers(uid, gid, mtime, devmajor, devminor, hdr_off)

            # -- paths
            absolute = False
            if name[:1] in "./" or name[-1:] == "/" or "//" in name:
                absolute = name[:1] == "/"
                name = normalize(name)
                if not name:
                    continue  # the root directory itself
            if linkname and typeflag == 49:
                linkname = normalize(linkname)

            entry = Entry(
                name, etype, size, mode, uid, gid, uname, gname, mtime, linkname, devmajor, devminor, hdr_off, data_off,
                absolute, sparse,
            )
            self.entry = entry
            yield entry

    # -- the rare cases, out of the hot loop --

    def _long_name(self, name: bytes, hdr_off: int) -> bytes:
        "A GNU long name or link target, within the path limit and the layer's budget."
        if len(name) > MAX_PATH_LENGTH:
            raise TarError(f"corrupt tar stream: a path longer than {MAX_PATH_LENGTH} bytes at offset {hdr_off}")
        self._spend_name_bytes(len(name), hdr_off)
        return name

    def _spend_name_bytes(self, n: int, hdr_off: int) -> None:
        self._name_budget -= n
        if self._name_budget < 0:
            raise TarError(
                f"hostile layer: its long path names add up to more than the layer's budget at offset {hdr_off} "
                f"(at least {NAME_BYTES_FLOOR >> 20} MiB, or {NAME_BYTES_PER_BLOB_BYTE}x the layer's size)"
            )

    def _global_header(self, records: dict[bytes, bytes], hdr_off: int) -> None:
        self.global_header_count += 1
        if len(self.global_headers) < MAX_GLOBAL_HEADERS:
            self.global_headers.append((
                hdr_off,
                {k.decode("utf-8", "surrogateescape"): v[:1024].decode("utf-8", "surrogateescape")
                 for k, v in itertools.islice(records.items(), 64)},
            ))

    def _old_sparse(self, hdr: bytes, hdr_off: int, stored: int) -> tuple[int, tuple[tuple[int, int], ...]]:
        "(real size, data fragments) of a GNU old sparse ('S') header, reading its extension blocks."
        if hdr[257:265] != b"ustar  \0":
            raise TarError(f"corrupt tar header at offset {hdr_off}: a GNU sparse entry without the GNU magic")
        realsize = _parse_number(hdr[483:495], "realsize", hdr_off)
        fragments = []
        block, first, count, extended = hdr, 386, 4, hdr[482]
        blocks = 0
        while True:
            for i in range(count):
                at = first + 24 * i
                if block[at] == 0:  # the termination GNU tar, BSD tar and Go use
                    break
                fragments.append((_parse_number(block[at : at + 12], "sparse offset", hdr_off),
                                  _parse_number(block[at + 12 : at + 24], "sparse length", hdr_off)))
            if not extended:
                break
            blocks += 1
            if blocks > MAX_SPARSE_FRAGMENTS // 21:
                raise TarError(f"corrupt tar header at offset {hdr_off}: endless sparse map")
            block = self._take(512)
            if len(block) < 512:
                raise TarError(f"truncated tar stream: sparse map at offset {hdr_off} is cut short")
            first, count, extended = 0, 21, block[504]
        return realsize, _check_sparse(fragments, realsize, stored, hdr_off)

    def _pax_sparse(self, pax: dict[bytes, bytes], name: str, size: int, data_size: int, hdr_off: int):
        """GNU sparse in pax records (0.0, 0.1, 1.0), as Go reads it:
        ``(name, size, stored size, fragments)``; fragments None when not sparse."""
        major, minor = pax.get(b"GNU.sparse.major", b""), pax.get(b"GNU.sparse.minor", b"")
        if major == b"0" and minor in (b"0", b"1"):
            v1 = False
        elif major == b"1" and minor == b"0":
            v1 = True
        elif major or minor:
            return name, size, data_size, None  # a version Go does not know: an ordinary file
        elif pax.get(b"GNU.sparse.map"):
            v1 = False
        else:
            return name, size, data_size, None
        if pax.get(b"GNU.sparse.name"):
            name = pax[b"GNU.sparse.name"].decode("utf-8", "surrogateescape")
        real = pax.get(b"GNU.sparse.size") or pax.get(b"GNU.sparse.realsize")
        if real:
            size = _go_int(real, "GNU.sparse.size", hdr_off)
            if size < 0 or size > MAX_ENTRY_SIZE:
                raise TarError(f"corrupt pax header at offset {hdr_off}: impossible size {size}")
        if v1:
            numbers, used = self._sparse_map_v1(data_size, hdr_off)
            data_size -= used
        else:
            count = _go_int(pax.get(b"GNU.sparse.numblocks", b""), "GNU.sparse.numblocks", hdr_off)
            text = pax.get(b"GNU.sparse.map", b"")
            numbers = text.split(b",") if text else []
            if count < 0 or len(numbers) != 2 * count:
                raise TarError(f"corrupt pax header at offset {hdr_off}: bad GNU sparse map")
        values = [_go_int(x, "GNU sparse map", hdr_off) for x in numbers]
        fragments = _check_sparse(list(zip(values[0::2], values[1::2])), size, data_size, hdr_off)
        return name, size, data_size, fragments

    def _sparse_map_v1(self, data_size: int, hdr_off: int) -> tuple[list[bytes], int]:
        "The GNU sparse 1.0 map at the start of the data: (its numbers after the count, bytes it took)."
        text = b""
        used = 0
        need = 1  # newlines needed: the count, then two per fragment
        count = -1
        while True:
            if text.count(b"\n") >= need:
                lines = text.split(b"\n")
                if count < 0:
                    count = _go_int(lines[0], "GNU sparse map", hdr_off)
                    if count < 0 or count > MAX_SPARSE_FRAGMENTS:
                        raise TarError(f"corrupt tar stream: bad GNU sparse map at offset {hdr_off}")
                    need = 1 + 2 * count
                    continue
                return lines[1:need], used
            if used + 512 > data_size:
                raise TarError(f"corrupt tar stream: the GNU sparse map at offset {hdr_off} is cut short")
            block = self._take(512)
            if len(block) < 512:
                raise TarError(f"truncated tar stream: sparse map at offset {hdr_off} is cut short")
            text += block
            used += 512


#: Most data fragments a sparse file may list (a real map holds a handful).
MAX_SPARSE_FRAGMENTS = 1 << 16


def _check_sparse(fragments: list[tuple[int, int]], size: int, stored: int, hdr_off: int) -> tuple[tuple[int, int], ...]:
    """Go's validateSparseEntries (in order, not overlapping, inside the file),
    and the fragments fill exactly the ``stored`` bytes (Go's reader fails on
    content that is missing or left over, so the runtime rejects the layer)."""
    if len(fragments) > MAX_SPARSE_FRAGMENTS:
        raise TarError(f"corrupt tar header at offset {hdr_off}: more than {MAX_SPARSE_FRAGMENTS} sparse fragments")
    if size < 0:
        raise TarError(f"corrupt tar header at offset {hdr_off}: negative sparse size")
    end = 0
    for offset, length in fragments:
        if offset < 0 or length < 0 or offset < end or offset + length > size:
            raise TarError(f"corrupt tar header at offset {hdr_off}: bad sparse map")
        end = offset + length
    total = sum(length for _, length in fragments)
    if total != stored:
        raise TarError(f"corrupt tar stream: the sparse file at offset {hdr_off} stores {stored} bytes "
                       f"for fragments of {total} (the runtime rejects it)")
    return tuple(fragments)


def _go_int(value: bytes, what: str, hdr_off: int) -> int:
    "A decimal int64 as Go's strconv.ParseInt reads it (no spaces, no underscores): TarError otherwise."
    text = value[1:] if value[:1] in (b"+", b"-") else value
    if text.isdigit() and text.isascii():
        number = int(value)
        if -_INT64 <= number < _INT64:
            return number
    raise TarError(f"corrupt pax header at offset {hdr_off}: bad {what} {value[:40]!r} (the runtime rejects the layer)")


def _go_time(value: bytes, hdr_off: int) -> int | float:
    "A pax time as Go's parsePAXTime reads it: int64 seconds, then maybe '.' and digits."
    seconds, _, fraction = value.partition(b".")
    whole = _go_int(seconds, "time", hdr_off)
    if not fraction:
        return whole
    if not (fraction.isdigit() and fraction.isascii()):
        raise TarError(f"corrupt pax header at offset {hdr_off}: bad time {value[:40]!r} (the runtime rejects the layer)")
    nanos = int(fraction[:9].ljust(9, b"0"))
    return whole - nanos / 1e9 if seconds[:1] == b"-" else whole + nanos / 1e9


def _apply_pax(pax, name, linkname, size, data_size, uid, gid, uname, gname, mtime, typeflag, hdr_off):
    """Override header fields with pax records, as Go's mergePAX does: an
    empty value keeps the header's (except uname/gname: an empty one clears
    it, as POSIX, GNU tar and tarfile have it; runtimes never use the names);
    a malformed number or time fails the layer."""
    for key, value in pax.items():
        if not value:
            if key == b"uname":
                uname = ""
            elif key == b"gname":
                gname = ""
            continue
        if key == b"path":
            name = value.decode("utf-8", "surrogateescape")
        elif key == b"linkpath":
            if typeflag == 49 or typeflag == 50:
                linkname = value.decode("utf-8", "surrogateescape")
        elif key == b"mtime":
            mtime = _go_time(value, hdr_off)
        elif key == b"atime" or key == b"ctime":
            _go_time(value, hdr_off)  # unused, but Go rejects a bad one
        elif key == b"size":
            number = _go_int(value, "size", hdr_off)
            if number < 0 or number > MAX_ENTRY_SIZE:
                raise TarError(f"corrupt pax header at offset {hdr_off}: impossible size {number}")
            size = data_size = number
        elif key == b"uid":
            uid = _go_int(value, "uid", hdr_off)
        elif key == b"gid":
            gid = _go_int(value, "gid", hdr_off)
        elif key == b"uname":
            uname = value.decode("utf-8", "surrogateescape")
        elif key == b"gname":
            gname = value.decode("utf-8", "surrogateescape")
    return name, linkname, size, data_size, uid, gid, uname, gname, mtime


_INT64 = 1 << 63


def _storable_numbers(uid: int, gid: int, mtime, devmajor: int, devminor: int, hdr_off: int):
    """uid, gid and mtime as an index can store them: ids and times must fit
    64 bits (as Go's reader wants) and device numbers 31 (real ones are far
    smaller: anything else is a corrupt or hostile header, TarError)."""
    for what, number in (("uid", uid), ("gid", gid)):
        if not -_INT64 <= number < _INT64:
            raise TarError(f"corrupt header at offset {hdr_off}: impossible {what} {number}")
    for what, number in (("devmajor", devmajor), ("devminor", devminor)):
        if not 0 <= number < 1 << 31:
            raise TarError(f"corrupt header at offset {hdr_off}: impossible {what} {number}")
    if mtime.__class__ is int and not -_INT64 <= mtime < _INT64:  # Go's reader fails on it too
        raise TarError(f"corrupt header at offset {hdr_off}: impossible mtime {mtime}")
    return uid, gid, mtime


def _with_prefix(hdr: bytes, name: bytes) -> bytes:
    """The name with the header's prefix field, where Go's reader takes one:
    ustar/pax (155 bytes), star (131 bytes), and GNU headers written by a
    pre-1.8 Go whose atime/ctime fields do not parse (golang.org/issue/12594)."""
    magic = hdr[257:265]
    if magic[:6] == b"ustar\x00":
        prefix = hdr[345:476] if hdr[508:512] == b"tar\x00" else hdr[345:500]
    elif magic == b"ustar  \x00":
        for field in (hdr[345:357], hdr[357:369]):
            if field[0] and not _parses(field):
                break
        else:
            return name  # GNU atime/ctime: no prefix
        prefix = hdr[345:500]
        if not prefix.partition(b"\0")[0].isascii():
            return name
    else:
        return name  # v7: no prefix field
    prefix = prefix.partition(b"\0")[0]
    return prefix + b"/" + name if prefix else name


def _parses(field: bytes) -> bool:
    "Whether Go's parseNumeric reads a numeric field without an error."
    if field[0] & 0x80:
        return True  # base-256 (an overflow would fail, but not in a 12-byte time we keep)
    text = field.strip(b" \x00").partition(b"\x00")[0]
    return not text or (text.isdigit() and text.isascii() and b"8" not in text and b"9" not in text)


def _not_a_tar(head: bytes) -> str:
    kind = sniff_compression(head)
    if kind == "gzip":
        return "not a tar archive (the data is gzip-compressed once more)"
    if kind == "zstd":
        return "not a tar archive (the data is zstd-compressed once more)"
    return "not a tar archive"


def iter_entries(chunks: Iterable[bytes], compression: str = "auto", *, max_name_bytes: int | None = None) -> Iterator[Entry]:
    """Yield the entries of a (compressed) layer blob given as chunks."""
    return iter(TarReader(decompress(chunks, compression), max_name_bytes=max_name_bytes))


def name_budget(blob_size: int | None) -> int:
    """Long-name bytes a layer of ``blob_size`` compressed bytes may carry:
    :data:`NAME_BYTES_FLOOR` or :data:`NAME_BYTES_PER_BLOB_BYTE` times its size."""
    return max(NAME_BYTES_FLOOR, NAME_BYTES_PER_BLOB_BYTE * (blob_size or 0))



def sparse_pieces(content: Iterable[bytes], fragments: tuple[tuple[int, int], ...]) -> Iterator[tuple[int, bytes]]:
    """``(offset in the file, bytes)`` for the stored content of a sparse entry
    (``Entry.sparse``): each fragment's bytes go at its offset; the rest of the
    file (up to ``Entry.size``) is holes, i.e. zeros."""
    frags = iter(fragments)
    at, left = 0, 0
    for chunk in content:
        view = memoryview(chunk)
        while view:
            while not left:
                at, left = next(frags)
            piece = view[:left]
            yield at, bytes(piece)
            at += len(piece)
            left -= len(piece)
            view = view[len(piece):]


def sparse_bytes(content: Iterable[bytes], fragments: tuple[tuple[int, int], ...], size: int,
                 hole_chunk: int = 1 << 20) -> Iterator[bytes]:
    "The logical bytes of a sparse entry, holes as zeros (for a stream that cannot seek)."
    pos = 0
    for at, piece in sparse_pieces(content, fragments):
        while pos < at:
            n = min(at - pos, hole_chunk)
            yield bytes(n)
            pos += n
        yield piece
        pos += len(piece)
    while pos < size:
        n = min(size - pos, hole_chunk)
        yield bytes(n)
        pos += n
