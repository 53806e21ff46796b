"""Streaming decompression of layer blobs: gzip (isal) and zstd (zstandard), bounded.

A blob arrives as chunks of compressed bytes; :func:`decompress` yields
decompressed chunks of at most :data:`OUTPUT_CHUNK_SIZE` bytes, whatever the
input, and stops a stream whose inflated/compressed ratio passes
:data:`MAX_RATIO` (a bomb). The magic bytes win over a declared compression
(mislabelled layers exist). Every failure is a :class:`TarError` whose
message is one line.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import isal.igzip_lib as _igzip_lib
import zstandard

from .errors import TarError

#: The decompression-ratio guard only looks once this much has been inflated.
RATIO_CHECK_AFTER = 256 << 20
#: Inflated/compressed ratio above which a stream is treated as a bomb.
MAX_RATIO = 1000
#: Upper bound of each decompressed chunk handed to the tar parser.
OUTPUT_CHUNK_SIZE = 256 << 10  # small enough to stay in L2 while the parser reads it

_GZIP_MAGIC = b"\x1f\x8b"
_IgzipDecompressor = _igzip_lib.IgzipDecompressor
_DECOMP_GZIP = _igzip_lib.DECOMP_GZIP
_GZIP_FEED = 64 << 10  # compressed bytes per decompress() call
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff_compression(head: bytes) -> str:
    """Guess the compression from the first bytes of a blob."""
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    if head[:4] == _ZSTD_MAGIC:
        return "zstd"
    if len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50:
        return "zstd"  # starts with a skippable frame (zstd:chunked metadata)
    return "none"


def decompress(chunks: Iterable[bytes], compression: str = "auto") -> Iterator[bytes]:
    """Yield the decompressed bytes of a blob given as compressed chunks.

    ``compression`` is "gzip", "zstd", "none" or "auto". The magic bytes are
    always checked: when they contradict the declared compression (registries
    do mislabel layers), the sniffed compression wins. Chunks yielded are at
    most :data:`OUTPUT_CHUNK_SIZE` bytes, so a bomb never materialises a big
    buffer; the inflated/compressed ratio is guarded (:data:`MAX_RATIO`).
    """
    if compression not in ("auto", "gzip", "zstd", "none"):
        raise ValueError(f"unknown compression {compression!r}")
    it = iter(chunks)
    pending: list[bytes] = []
    have = 0
    for chunk in it:
        if chunk:
            pending.append(chunk)
            have += len(chunk)
            if have >= 4:
                break
    if not pending:
        return iter(())
    head = b"".join(pending)[:4] if len(pending) > 1 else pending[0][:4]
    sniffed = sniff_compression(head)
    kind = compression
    if kind == "auto" or kind != sniffed:
        kind = sniffed
    source = itertools.chain(pending, it)
    if kind == "gzip":
        return _gunzip(source)
    if kind == "zstd":
        return _unzstd(source)
    return _passthrough(source)


def _passthrough(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if chunk:
            yield chunk


def _bomb(inflated: int, consumed: int) -> TarError:
    return TarError(
        f"decompression ratio exceeds {MAX_RATIO}:1 (gzip bomb?) "
        f"after {inflated} bytes inflated from {consumed}"
    )


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Inflate a (possibly multi-member) gzip stream with isal.

    Input is fed in slices of :data:`_GZIP_FEED` bytes (memoryviews, no
    copies) so the ratio guard knows closely how much input produced the
    output; output comes in pieces of at most :data:`OUTPUT_CHUNK_SIZE`.
    """
    new = _IgzipDecompressor
    flag = _DECOMP_GZIP
    error = _igzip_lib.IsalError
    feed = _GZIP_FEED
    out_max = OUTPUT_CHUNK_SIZE
    check_after = RATIO_CHECK_AFTER
    max_ratio = MAX_RATIO
    d = new(flag=flag)
    in_member = False  # bytes of the current member have been fed
    garbage = False  # trailing non-gzip data after a complete member: ignored (as gzip -d does)
    consumed = 0
    total_out = 0
    members = 0
    for chunk in chunks:
        if garbage or not chunk:
            continue
        view = memoryview(chunk)
        start = 0
        end = len(chunk)
        while start < end:
            data = view[start : start + feed]
            start += len(data)
            while True:
                if not in_member:
                    if data[0] == 0:  # zero padding after a member
                        data = memoryview(bytes(data).lstrip(b"\0"))
                        if not data:
                            break
                    if members and data[0] != 0x1F:
                        garbage = True
                        start = end
                        break
                    in_member = True
                consumed += len(data)
                try:
                    out = d.decompress(data, out_max)
                    while True:
                        if out:
                            total_out += len(out)
                            if total_out > check_after and total_out > max_ratio * consumed:
                                raise _bomb(total_out, consumed)
                            yield out
                        if d.eof or d.needs_input:
                            break
                        out = d.decompress(b"", out_max)
                except error as e:
                    raise TarError(f"corrupt gzip data: {_one_line(e)}") from None
                if not d.eof:
                    break
                members += 1
                data = d.unused_data
                consumed -= len(data)
                d = new(flag=flag)
                in_member = False
                if not data:
                    break
    if in_member:
        raise TarError("truncated gzip stream: the blob ends in the middle of compressed data")


# zstd frame walking: the zstandard stream reader silently stops at a
# truncated frame, so the compressed bytes are followed frame by frame
# (headers only, block contents are skipped) to know whether the input
# ended on a frame boundary.
_ZS_MAGIC, _ZS_SKIPSIZE, _ZS_FHD, _ZS_BLOCK = range(4)
_DID_SIZES = (0, 1, 2, 4)


class _ZstdSource:
    "File-like view of an iterator of compressed chunks for zstandard's stream_reader."

    __slots__ = ("_it", "_buf", "_pos", "consumed", "_state", "_need", "_pending", "_skip", "_checksum")

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.consumed = 0
        self._state = _ZS_MAGIC
        self._need = 4
        self._pending = b""
        self._skip = 0
        self._checksum = 0

    def read(self, size: int = -1) -> bytes:
        buf = self._buf
        if self._pos >= len(buf):
            for chunk in self._it:
                if chunk:
                    buf = self._buf = bytes(chunk) if not isinstance(chunk, bytes) else chunk
                    self._pos = 0
                    break
            else:
                self._buf = b""
                self._pos = 0
                return b""
        pos = self._pos
        if size is None or size < 0 or size >= len(buf) - pos:
            piece = buf[pos:] if pos else buf
            self._buf = b""
            self._pos = 0
        else:
            piece = buf[pos : pos + size]
            self._pos = pos + size
        self.consumed += len(piece)
        self._walk(piece)
        return piece

    def at_boundary(self) -> bool:
        return self._state == _ZS_MAGIC and not self._pending and not self._skip

    def _walk(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            want = self._need - len(self._pending)
            piece = data[pos : pos + want]
            pos += len(piece)
            if len(piece) < want:
                self._pending += piece
                return
            field = self._pending + piece if self._pending else piece
            self._pending = b""
            self._advance(field, self.consumed - n + pos - len(field))

    def _advance(self, field: bytes, offset: int) -> None:
        state = self._state
        if state == _ZS_BLOCK:
            h = int.from_bytes(field, "little")
            btype = (h >> 1) & 3
            if btype == 3:
                raise TarError("corrupt zstd data: reserved block type")
            self._skip = 1 if btype == 1 else h >> 3
            if h & 1:  # last block of the frame
                self._skip += 4 if self._checksum else 0
                self._state, self._need = _ZS_MAGIC, 4
        elif state == _ZS_MAGIC:
            magic = int.from_bytes(field, "little")
            if magic == 0xFD2FB528:
                self._state, self._need = _ZS_FHD, 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = _ZS_SKIPSIZE, 4
            else:
                raise TarError(f"corrupt zstd data: no frame magic at compressed offset {offset}")
        elif state == _ZS_SKIPSIZE:
            self._skip = int.from_bytes(field, "little")
            self._state, self._need = _ZS_MAGIC, 4
        else:  # frame header descriptor
            fhd = field[0]
            if fhd & 0x08:
                raise TarError("corrupt zstd data: reserved bit set in frame header")
            single = (fhd >> 5) & 1
            fcs = fhd >> 6
            self._checksum = (fhd >> 2) & 1
            fcs_size = (single, 2, 4, 8)[fcs]
            self._skip = (0 if single else 1) + _DID_SIZES[fhd & 3] + fcs_size
            self._state, self._need = _ZS_BLOCK, 3


def _unzstd(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a multi-frame zstd stream (skippable frames allowed)."""
    source = _ZstdSource(chunks)
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=1 << 20, read_across_frames=True)
    out_max = OUTPUT_CHUNK_SIZE
    check_after = RATIO_CHECK_AFTER
    max_ratio = MAX_RATIO
    total_out = 0
    try:
        while True:
            out = reader.read(out_max)
            if not out:
                break
            total_out += len(out)
            if total_out > check_after and total_out > max_ratio * source.consumed:
                raise _bomb(total_out, source.consumed)
            yield out
        # the reader may stop before trailing skippable frames: walk them too
        while source.read(1 << 20):
            pass
    except zstandard.ZstdError as e:
        raise TarError(f"corrupt zstd data: {_one_line(e)}") from None
    if not source.at_boundary():
        raise TarError("truncated zstd stream: the blob ends in the middle of a frame")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
