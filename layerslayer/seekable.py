"""Checkpoints into gzip layers: enter a deflate stream in the middle.

gzip cannot be entered at an arbitrary byte, only at a deflate *block
boundary*, and only with the 32 KiB of output that precede it (back
references reach that far). While a layer is indexed we inflate it with
zlib's ``Z_BLOCK`` stops (the approach of zlib's examples/zran.c): every
``span`` bytes of compressed input we stop at the next block boundary and
record a :class:`Checkpoint` (bit offset in the blob, offset in the tar
stream, the window before it). Later one Range request from a checkpoint's
byte gets any file after it: :func:`inflate_from` primes a raw inflater with
the leftover bits and the window and carries on.

Why our own zlib calls: isal (our usual inflater) does not stop at block
boundaries through its Python API; indexed_gzip and rapidgzip want a
seekable file (they call ``seek`` on the input), which a streamed download
is not; Python's ``zlib`` module has no ``Z_BLOCK``. So zlib's C API is
driven through ctypes: the zlib-ng library shipped by the ``zlib-ng``
package (about isal's speed, measured in ``bench/bench_checkpoints.py``),
or the system's libz when that package is missing (slower).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .decompress import MAX_RATIO, OUTPUT_CHUNK_SIZE, RATIO_CHECK_AFTER, decompress
from .errors import TarError, VerificationError
from .registry import skip_bytes
from .tarstream import TarReader

#: Compressed bytes between two checkpoints.
DEFAULT_SPAN = 4 << 20
#: Layers smaller than this get no checkpoints: fetching them whole is cheap.
DEFAULT_MIN_SIZE = 8 << 20
WINDOW = 32 << 10

_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR = 0, 1, -5
_Z_NO_FLUSH, _Z_BLOCK = 0, 5


@dataclass(frozen=True)
class Checkpoint:
    """Where inflating can resume: ``bits`` into the blob, ``out`` into the tar
    stream, with the (uncompressed) ``window`` of output before it."""

    bits: int
    out: int
    window: bytes

    @property
    def start(self) -> int:
        "The first blob byte to fetch to resume here."
        return self.bits // 8


class _ZStream(ctypes.Structure):
    # zlib's z_stream on LP64; zlib-ng's zng_stream is the same up to
    # data_type (its adler is 32 bits), so this size is enough for both.
    _fields_ = [
        ("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint), ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p), ("avail_out", ctypes.c_uint), ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p), ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p), ("opaque", ctypes.c_void_p), ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong), ("reserved", ctypes.c_ulong),
    ]


class _Zlib:
    "The few inflate calls we need, from zlib-ng's native API or the system's libz."

    def __init__(self):
        self.lib = None
        self.name = "none"
        try:
            from zlib_ng import zlib_ng as _module

            lib = ctypes.CDLL(_module.__file__)
            prefix = "zng_"
            self._init2 = lambda s, bits: lib.zng_inflateInit2(s, bits)
            self.name = "zlib-ng"
        except (ImportError, OSError, AttributeError):
            found = ctypes.util.find_library("z")
            if not found:
                return
            lib = ctypes.CDLL(found)
            prefix = ""
            lib.zlibVersion.restype = ctypes.c_char_p
            version = lib.zlibVersion()
            size = ctypes.sizeof(_ZStream)
            self._init2 = lambda s, bits: lib.inflateInit2_(s, bits, version, size)
            self.name = "zlib"
        pointer = ctypes.POINTER(_ZStream)
        self.inflate = getattr(lib, prefix + "inflate")
        self.inflate.argtypes = [pointer, ctypes.c_int]
        self.end = getattr(lib, prefix + "inflateEnd")
        self.end.argtypes = [pointer]
        self.reset2 = getattr(lib, prefix + "inflateReset2")
        self.reset2.argtypes = [pointer, ctypes.c_int]
        self.prime = getattr(lib, prefix + "inflatePrime")
        self.prime.argtypes = [pointer, ctypes.c_int, ctypes.c_int]
        self.set_dictionary = getattr(lib, prefix + "inflateSetDictionary")
        self.set_dictionary.argtypes = [pointer, ctypes.c_char_p, ctypes.c_uint]
        self.lib = lib

    def init(self, stream: _ZStream, window_bits: int) -> None:
        if self._init2(ctypes.byref(stream), window_bits) != _Z_OK:
            raise MemoryError("inflateInit2 failed")


_zlib: _Zlib | None = None


def _lib() -> _Zlib:
    global _zlib
    if _zlib is None:
        _zlib = _Zlib()
    return _zlib


def available() -> bool:
    "True when a zlib with the block-level API could be loaded."
    return _lib().lib is not None


def library_name() -> str:
    return _lib().name


def _error(stream: _ZStream, rc: int) -> TarError:
    message = stream.msg.decode("utf-8", "replace") if stream.msg else f"zlib error {rc}"
    return TarError(f"corrupt gzip data: {message}")


class _Inflater:
    "One z_stream with an output buffer; fed chunk by chunk."

    def __init__(self, window_bits: int):
        self.z = _lib()
        self.stream = _ZStream()
        self.ref = ctypes.byref(self.stream)
        self.z.init(self.stream, window_bits)
        self.out = ctypes.create_string_buffer(OUTPUT_CHUNK_SIZE)
        self.out_addr = ctypes.addressof(self.out)

    def close(self) -> None:
        if self.ref is not None:
            self.z.end(self.ref)
            self.ref = None


def _window_of(recent: list[bytes]) -> bytes:
    data = b"".join(recent[-2:]) if len(recent) > 1 else recent[0] if recent else b""
    if len(data) < WINDOW and len(recent) > 2:
        data = b"".join(recent)
    return data[-WINDOW:]


def gunzip_checkpointed(chunks: Iterable[bytes], points: list[Checkpoint], span: int = DEFAULT_SPAN) -> Iterator[bytes]:
    """Inflate a (possibly multi-member) gzip stream like ``decompress.decompress``
    and append a :class:`Checkpoint` to ``points`` about every ``span``
    compressed bytes (at the first block boundary after it)."""
    inflater = _Inflater(31)
    z = inflater.z
    stream = inflater.stream
    ref = inflater.ref
    inflate = z.inflate
    string_at = ctypes.string_at
    out_addr = inflater.out_addr
    out_size = OUTPUT_CHUNK_SIZE
    base_in = 0  # blob offset where the current member starts
    base_out = 0
    last_point = 0  # blob offset of the last checkpoint
    recent: list[bytes] = []  # the last outputs, at least WINDOW bytes of them
    recent_size = 0
    in_member = False
    garbage = False
    members = 0
    total_out = 0
    try:
        for chunk in chunks:
            if garbage or not chunk:
                continue
            if not isinstance(chunk, bytes):
                chunk = bytes(chunk)
            data = chunk
            pos = 0
            while pos < len(data):
                if not in_member:
                    if data[pos] == 0:  # zero padding after a member
                        stripped = len(data) - len(data[pos:].lstrip(b"\0"))
                        base_in += stripped - pos
                        pos = stripped
                        if pos >= len(data):
                            break
                    if members and data[pos] != 0x1F:
                        garbage = True
                        break
                    in_member = True
                keep = data  # the buffer must outlive the calls that read it
                stream.next_in = ctypes.cast(ctypes.c_char_p(keep), ctypes.c_void_p).value + pos
                stream.avail_in = len(data) - pos
                while True:
                    stream.next_out = out_addr
                    stream.avail_out = out_size
                    consumed = base_in + stream.total_in
                    flush = _Z_BLOCK if consumed - last_point >= span else _Z_NO_FLUSH
                    rc = inflate(ref, flush)
                    if rc == _Z_BUF_ERROR and stream.avail_in == 0:
                        pos = len(data)
                        break  # no output pending: next chunk
                    if rc != _Z_OK and rc != _Z_STREAM_END:
                        raise _error(stream, rc)
                    produced = out_size - stream.avail_out
                    if produced:
                        piece = string_at(out_addr, produced)
                        total_out += produced
                        if total_out > RATIO_CHECK_AFTER and total_out > MAX_RATIO * (base_in + stream.total_in):
                            raise TarError(f"decompression ratio exceeds {MAX_RATIO}:1 (gzip bomb?) "
                                           f"after {total_out} bytes inflated from {base_in + stream.total_in}")
                        recent.append(piece)
                        recent_size += produced
                        while recent_size - len(recent[0]) >= WINDOW:
                            recent_size -= len(recent.pop(0))
                        yield piece
                    if flush == _Z_BLOCK and rc == _Z_OK and stream.data_type & 128 and not stream.data_type & 64:
                        at = base_in + stream.total_in
                        out_at = base_out + stream.total_out
                        if out_at >= WINDOW:
                            points.append(Checkpoint(at * 8 - (stream.data_type & 7), out_at, _window_of(recent)))
                        last_point = at
                    if rc == _Z_STREAM_END:
                        used = len(data) - pos - stream.avail_in
                        pos += used
                        base_in += stream.total_in
                        base_out += stream.total_out
                        members += 1
                        in_member = False
                        z.reset2(ref, 31)
                        break
                    if stream.avail_out == 0 or (flush == _Z_BLOCK and stream.avail_in):
                        continue
                    if stream.avail_in == 0:
                        pos = len(data)
                        break
        if in_member:
            raise TarError("truncated gzip stream: the blob ends in the middle of compressed data")
    finally:
        inflater.close()


def inflate_from(chunks: Iterable[bytes], point: Checkpoint | None) -> Iterator[bytes]:
    """The tar stream from ``point.out`` on, given the blob's bytes from
    ``point.start`` on (``point`` None: the whole blob from its start)."""
    if point is None:
        yield from decompress(chunks, "gzip")
        return
    inflater = _Inflater(-15)
    z = inflater.z
    stream = inflater.stream
    ref = inflater.ref
    out_addr = inflater.out_addr
    used = point.bits % 8  # bits of the first byte that belong to the previous block
    first = True
    raw = True  # inside a deflate stream (else: a trailer and maybe another member)
    gzip_mode = False  # the raw stream we resumed in ended: later members are read as gzip
    skip = 0  # trailer bytes still to skip
    try:
        if point.window:
            z.set_dictionary(ref, point.window, len(point.window))
        for chunk in chunks:
            if not chunk:
                continue
            if not isinstance(chunk, bytes):
                chunk = bytes(chunk)
            if first:
                first = False
                if used:
                    z.prime(ref, 8 - used, chunk[0] >> used)
                    chunk = chunk[1:]
                    if not chunk:
                        continue
            data = chunk
            pos = 0
            while pos < len(data):
                if not raw:
                    if skip:
                        step = min(skip, len(data) - pos)
                        skip -= step
                        pos += step
                        continue
                    if data[pos] == 0:
                        pos += 1
                        continue
                    if data[pos] != 0x1F:
                        return  # trailing garbage, as gzip -d ignores it
                    z.reset2(ref, 31)
                    gzip_mode = raw = True
                stream.next_in = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value + pos
                stream.avail_in = len(data) - pos
                while True:
                    stream.next_out = out_addr
                    stream.avail_out = OUTPUT_CHUNK_SIZE
                    rc = z.inflate(ref, _Z_NO_FLUSH)
                    if rc == _Z_BUF_ERROR and stream.avail_in == 0:
                        pos = len(data)
                        break
                    if rc != _Z_OK and rc != _Z_STREAM_END:
                        raise _error(stream, rc)
                    produced = OUTPUT_CHUNK_SIZE - stream.avail_out
                    if produced:
                        yield ctypes.string_at(out_addr, produced)
                    if rc == _Z_STREAM_END:
                        pos = len(data) - stream.avail_in
                        skip = 0 if gzip_mode else 8  # a raw stream leaves the member's CRC and size
                        raw = False
                        break
                    if stream.avail_out == 0:
                        continue
                    pos = len(data)
                    break
    finally:
        inflater.close()


def pack_window(window: bytes) -> bytes:
    "A checkpoint's window as stored: zlib-compressed."
    return zlib.compress(window, 6)


def unpack_window(stored: bytes) -> bytes:
    return zlib.decompress(stored)


# -- reading one part of a layer from a checkpoint ------------------------------------


@dataclass
class SeekPlan:
    """Which blob bytes hold a run of entries, and where inflating resumes."""

    point: Checkpoint
    start: int          # first blob byte to fetch
    end: int | None     # last blob byte to fetch (inclusive); None: the blob's end
    first: int          # tar offset of the first entry wanted (its first header)
    sizes: dict[int, int]  # header offset -> content size, as indexed


#: Compressed bytes fetched past the checkpoint that closes the run: zlib may
#: look a few bytes ahead before it hands out the last block's output.
END_SLACK = 64


def plan_seek(rows: list[tuple[int, int, bytes]], extents: dict[int, tuple[int, int]],
              blob_size: int | None) -> SeekPlan | None:
    """From a layer's checkpoint rows (see store.layer_checkpoints) and the
    entries wanted (header offset -> (header size, content size)): the Range
    to fetch, or None when no checkpoint comes before the first entry."""
    if not rows or not extents:
        return None
    first = min(extents)
    last_end = max(offset + header + -(-size // 512) * 512 for offset, (header, size) in extents.items())
    before = [row for row in rows if row[0] <= first]
    if not before:
        return None
    out, bits, window = before[-1]
    point = Checkpoint(bits, out, unpack_window(window))
    after = [row for row in rows if row[0] >= last_end]
    end = None
    if after:
        end = (after[0][1] + 7) // 8 + END_SLACK
        if blob_size and end >= blob_size - 1:
            end = None
    return SeekPlan(point, point.start, end, first, {offset: size for offset, (_, size) in extents.items()})


class SeekStream:
    """A run of a layer's entries read from a checkpoint (the blob's bytes from
    ``plan.start`` on, as ``chunks``). Looks like ``extraction.LayerStream`` to the
    extraction code: ``entries()`` (offsets in the whole tar stream),
    ``reader``, ``fetched``, ``complete`` (never: the digest cannot be checked),
    ``verify()`` (checks what can be: each entry's size against the index)."""

    def __init__(self, chunks: Iterable[bytes], plan: SeekPlan, digest: str):
        self.plan = plan
        self.digest = digest
        self.fetched = 0
        self.complete = False
        self._raw = chunks
        self._counted = self._count()
        tar = skip_bytes(inflate_from(self._counted, plan.point), plan.first - plan.point.out)
        self.reader = TarReader(tar, drain=False)

    def _count(self) -> Iterator[bytes]:
        for chunk in self._raw:
            self.fetched += len(chunk)
            yield chunk

    def entries(self):
        base = self.plan.first
        for entry in self.reader:
            entry.offset += base
            entry.data_offset += base
            expected = self.plan.sizes.get(entry.offset)
            if expected is not None and expected != entry.size:
                raise VerificationError(
                    f"layer {self.digest}: the entry at offset {entry.offset} is {entry.size} bytes, the index says "
                    f"{expected} (was the index made from another blob?)")
            yield entry

    def drain(self) -> None:
        pass

    def verify(self) -> None:
        pass

    def close(self) -> None:
        self._counted.close()
        close = getattr(self._raw, "close", None)
        if close:
            close()
