"""List lazy-pull layers (eStargz, zstd:chunked) from their table of contents.

Both formats append a JSON table of contents (TOC) to an otherwise ordinary
compressed tar, so a layer can be listed with two HTTP Range requests (the
footer, then the TOC: ~1-2 % of the blob) instead of streaming all of it.

``fetch_range(start, end_inclusive) -> bytes`` is any callable returning
those bytes of the blob (the indexer passes ``RegistryClient.get_blob_range``
bound to a repository and digest).

Errors: :class:`TocError` (a :class:`~layerslayer.errors.TarError`) for
a footer/TOC we cannot read, :class:`~layerslayer.errors.VerificationError`
when the TOC does not match the digest its annotation promises. Either way
the layer can still be listed by streaming it (the blob digest then vouches
for the listing), which is what a caller should fall back to.

Entries carry ``offset`` = ``data_offset`` = the *compressed-blob* offset
the TOC records for the file's content (0 for entries without content): a
Range fetch from there is where the file's first chunk starts.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import zlib
from calendar import timegm
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .decompress import decompress
from .errors import TarError
from .oci import (
    DIGEST_ALGORITHMS,
    ESTARGZ_TOC_DIGEST,
    ZSTD_CHUNKED_MANIFEST_CHECKSUM,
    ZSTD_CHUNKED_MANIFEST_POSITION,
    toc_kind,
)
from .oci import ZSTD_CHUNKED_OLD_CHECKSUM as _OLD_ZSTD_CHECKSUM
from .oci import ZSTD_CHUNKED_OLD_POSITION as _OLD_ZSTD_POSITION
from .tarstream import Entry, TarReader, normalize_path
from .verify import Digester, check_bytes

__all__ = [
    "ESTARGZ_TOC_DIGEST",
    "ZSTD_CHUNKED_MANIFEST_POSITION",
    "ZSTD_CHUNKED_MANIFEST_CHECKSUM",
    "TocError",
    "toc_kind",
    "list_estargz",
    "list_zstd_chunked",
    "list_toc",
]

ESTARGZ_TOC_NAME = "stargz.index.json"
ESTARGZ_FOOTER_SIZE = 51
ESTARGZ_LEGACY_FOOTER_SIZE = 47

ZSTD_CHUNKED_FOOTER_SIZE = 64  # containers/storage
_OLD_ZSTD_FOOTER_SIZE = 40  # stargz-snapshotter
_ZSTD_CHUNKED_MAGIC = b"GNUlInUx"
_OLD_ZSTD_CHUNKED_MAGIC = b"GnUlInUx"
_MANIFEST_TYPE_CRFS = 1

#: First Range request: the blob's tail, big enough to often hold the TOC too.
TAIL_FETCH_SIZE = 64 << 10
#: Largest compressed TOC fetched, and largest TOC JSON accepted once
#: decompressed: what keeps ``index`` under 100 MB RSS on any TOC (the JSON
#: is held once, as text; its entries are read one by one, never all at
#: once). A bigger TOC (some 40,000 entries and more) is not an error: the
#: indexer lists the layer by streaming it instead.
MAX_TOC_COMPRESSED = 16 << 20
MAX_TOC_JSON = 16 << 20

FetchRange = Callable[[int, int], bytes]

_TOC_TYPES = {
    "reg": "file",
    "dir": "dir",
    "symlink": "symlink",
    "hardlink": "hardlink",
    "char": "char",
    "block": "block",
    "fifo": "fifo",
}


class TocError(TarError):
    "The lazy-pull footer or table of contents is missing or unreadable."


def list_toc(fetch_range: FetchRange, blob_size: int, annotations: dict) -> tuple[str, Iterator[Entry]]:
    """Dispatch on :func:`toc_kind`: returns (kind, entries). The TOC is
    fetched (and its digest checked) here; its entries are read as they are
    iterated, so a TocError may also come from the iteration."""
    kind = toc_kind(annotations)
    if kind == "estargz":
        return kind, iter_estargz(fetch_range, blob_size, annotations.get(ESTARGZ_TOC_DIGEST))
    if kind == "zstd-chunked":
        return kind, iter_zstd_chunked(fetch_range, blob_size, annotations)
    raise TocError("the layer has no table of contents annotation")


# --- fetching ---------------------------------------------------------------


def _fetch(fetch_range: FetchRange, start: int, end: int) -> bytes:
    data = fetch_range(start, end)
    if len(data) != end - start + 1:
        raise TocError(f"range {start}-{end} of the blob returned {len(data)} bytes")
    return bytes(data)


def _fetch_tail(fetch_range: FetchRange, blob_size: int, minimum: int) -> tuple[int, bytes]:
    if blob_size < minimum:
        raise TocError(f"blob of {blob_size} bytes is too small to hold a table of contents")
    start = max(0, blob_size - TAIL_FETCH_SIZE)
    return start, _fetch(fetch_range, start, blob_size - 1)


def _verify(data: bytes, expected: str, what: str, size: int | None = None) -> None:
    "``data`` against a digest the TOC or an annotation gives (hex in either case)."
    algorithm, _, hexdigest = expected.partition(":")
    if algorithm not in DIGEST_ALGORITHMS or not hexdigest:
        raise TocError(f"unsupported {what} digest {expected!r}")
    check_bytes(data, expected.lower(), f"{what} {expected}", size)


# --- eStargz ----------------------------------------------------------------


def _parse_estargz_footer(tail: bytes) -> tuple[int, int]:
    "(TOC offset, footer size) from the end of an eStargz (or legacy stargz) blob."
    for size in (ESTARGZ_FOOTER_SIZE, ESTARGZ_LEGACY_FOOTER_SIZE):
        if len(tail) < size:
            continue
        footer = tail[-size:]
        if footer[:3] != b"\x1f\x8b\x08" or not footer[3] & 0x04:  # gzip, deflate, FEXTRA
            continue
        (xlen,) = struct.unpack_from("<H", footer, 10)
        extra = footer[12 : 12 + xlen]
        if size == ESTARGZ_FOOTER_SIZE:
            # subfield SI1='S' SI2='G', LEN=22, "%016xSTARGZ"
            if xlen != 26 or extra[:2] != b"SG" or extra[2:4] != b"\x16\x00" or extra[20:26] != b"STARGZ":
                continue
            digits = extra[4:20]
        else:
            if xlen != 22 or extra[16:22] != b"STARGZ":
                continue
            digits = extra[:16]
        try:
            return int(digits, 16), size
        except ValueError:
            continue
    raise TocError("not an eStargz blob: no stargz footer at the end of the layer")


def list_estargz(fetch_range: FetchRange, blob_size: int, toc_digest: str | None) -> list[Entry]:
    """List an eStargz layer from its TOC, verified against ``toc_digest`` when given.

    The TOC (``stargz.index.json``, in the last gzip member before the
    footer) is itself a tar entry of the layer, so it is listed as well,
    exactly as streaming the blob would.
    """
    return list(iter_estargz(fetch_range, blob_size, toc_digest))


def iter_estargz(fetch_range: FetchRange, blob_size: int, toc_digest: str | None) -> Iterator[Entry]:
    ":func:`list_estargz` one entry at a time (the TOC is fetched and checked first)."
    text, header, toc_offset = _estargz_text(fetch_range, blob_size, toc_digest)
    header.offset = header.data_offset = toc_offset
    return itertools.chain(_entries_from_toc(_toc_items(text, "eStargz TOC"), "eStargz"), (header,))


def _estargz_document(fetch_range: FetchRange, blob_size: int, toc_digest: str | None) -> tuple[dict, Entry, int]:
    "The verified TOC of an eStargz blob, the tar entry holding it and its offset."
    text, header, toc_offset = _estargz_text(fetch_range, blob_size, toc_digest)
    return _load_json(text, "eStargz TOC"), header, toc_offset


def _estargz_text(fetch_range: FetchRange, blob_size: int, toc_digest: str | None) -> tuple[str, Entry, int]:
    "The verified TOC of an eStargz blob as text, the tar entry holding it and its offset."
    tail_start, tail = _fetch_tail(fetch_range, blob_size, ESTARGZ_LEGACY_FOOTER_SIZE)
    toc_offset, footer_size = _parse_estargz_footer(tail)
    toc_end = blob_size - footer_size  # exclusive
    if not 0 <= toc_offset < toc_end:
        raise TocError(f"eStargz footer points outside the blob (TOC offset {toc_offset})")
    if toc_end - toc_offset > MAX_TOC_COMPRESSED:
        raise TocError(f"eStargz TOC of {toc_end - toc_offset} bytes exceeds the {MAX_TOC_COMPRESSED} byte limit")
    if toc_offset >= tail_start:
        toc_gz = tail[toc_offset - tail_start : toc_end - tail_start]
    else:
        toc_gz = _fetch(fetch_range, toc_offset, toc_end - 1)

    try:
        reader = TarReader(decompress([toc_gz], "gzip"))
        entries = iter(reader)
        header = next(entries, None)
        if header is None or header.path != ESTARGZ_TOC_NAME or header.type != "file":
            raise TocError(f"eStargz TOC does not start with {ESTARGZ_TOC_NAME}")
        if header.size > MAX_TOC_JSON:
            raise TocError(f"eStargz TOC of {header.size} bytes exceeds the {MAX_TOC_JSON} byte limit")
        toc_json = reader.read()
        for _ in entries:  # the rest of the member: verifies its CRC
            pass
    except TocError:
        raise
    except TarError as e:
        raise TocError(f"eStargz TOC: {e}") from None
    if toc_digest:
        _verify(toc_json, toc_digest, "eStargz TOC")
    text = _text(toc_json, "eStargz TOC")
    del toc_json, toc_gz, tail
    return text, header, toc_offset


# --- zstd:chunked -----------------------------------------------------------


def _manifest_position(fetch_range: FetchRange, blob_size: int, annotations: dict) -> tuple[int, int, int]:
    value = annotations.get(ZSTD_CHUNKED_MANIFEST_POSITION) or annotations.get(_OLD_ZSTD_POSITION)
    if value:
        parts = str(value).split(":")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 4:
            raise TocError(f"bad zstd:chunked manifest position {value!r}")
        offset, length, uncompressed, kind = numbers
    else:
        _, tail = _fetch_tail(fetch_range, blob_size, _OLD_ZSTD_FOOTER_SIZE)
        if tail[-8:] == _ZSTD_CHUNKED_MAGIC and len(tail) >= ZSTD_CHUNKED_FOOTER_SIZE:
            footer = tail[-ZSTD_CHUNKED_FOOTER_SIZE:]
        elif tail[-8:] in (_OLD_ZSTD_CHUNKED_MAGIC, _ZSTD_CHUNKED_MAGIC):
            footer = tail[-_OLD_ZSTD_FOOTER_SIZE:]
        else:
            raise TocError("not a zstd:chunked blob: no manifest annotation and no footer")
        offset, length, uncompressed, kind = struct.unpack_from("<4Q", footer)
    if kind != _MANIFEST_TYPE_CRFS:
        raise TocError(f"unsupported zstd:chunked manifest type {kind}")
    if offset < 0 or length <= 0 or offset + length > blob_size:
        raise TocError(f"zstd:chunked manifest position {offset}:{length} is outside the blob")
    if length > MAX_TOC_COMPRESSED or uncompressed > MAX_TOC_JSON:
        raise TocError("zstd:chunked manifest exceeds the size limit")
    return offset, length, uncompressed


def list_zstd_chunked(fetch_range: FetchRange, blob_size: int, annotations: dict) -> list[Entry]:
    """List a zstd:chunked layer from its manifest (one Range request with the annotations).

    The manifest-checksum annotation (digest of the compressed manifest) is
    verified when present. Without the position annotation the footer is
    read first (two requests).
    """
    return list(iter_zstd_chunked(fetch_range, blob_size, annotations))


def iter_zstd_chunked(fetch_range: FetchRange, blob_size: int, annotations: dict) -> Iterator[Entry]:
    ":func:`list_zstd_chunked` one entry at a time (the manifest is fetched and checked first)."
    text, _ = _zstd_chunked_text(fetch_range, blob_size, annotations)
    return _entries_from_toc(_toc_items(text, "zstd:chunked manifest"), "zstd:chunked")


def _zstd_chunked_document(fetch_range: FetchRange, blob_size: int, annotations: dict) -> tuple[dict, int]:
    "The verified manifest of a zstd:chunked blob and its offset."
    text, offset = _zstd_chunked_text(fetch_range, blob_size, annotations)
    return _load_json(text, "zstd:chunked manifest"), offset


def _zstd_chunked_text(fetch_range: FetchRange, blob_size: int, annotations: dict) -> tuple[str, int]:
    "The verified manifest of a zstd:chunked blob as text, and its offset."
    annotations = annotations or {}
    offset, length, uncompressed = _manifest_position(fetch_range, blob_size, annotations)
    compressed = _fetch(fetch_range, offset, offset + length - 1)
    checksum = annotations.get(ZSTD_CHUNKED_MANIFEST_CHECKSUM) or annotations.get(_OLD_ZSTD_CHECKSUM)
    if checksum:
        _verify(compressed, checksum, "zstd:chunked manifest")
    limit = max(uncompressed, 1) if uncompressed else MAX_TOC_JSON
    parts = []
    size = 0
    try:
        for chunk in decompress([compressed], "zstd"):
            size += len(chunk)
            if size > limit:
                raise TocError("zstd:chunked manifest is bigger than its announced size")
            parts.append(chunk)
    except TocError:
        raise
    except TarError as e:
        raise TocError(f"zstd:chunked manifest: {e}") from None
    del compressed
    data = b"".join(parts)
    del parts
    text = _text(data, "zstd:chunked manifest")
    del data
    return text, offset


# --- TOC entries ------------------------------------------------------------


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TocError(f"{what} is not valid JSON: {' '.join(str(e).split())}") from None


def _load_json(text: str, what: str) -> dict:
    "A whole TOC as Python objects (for reading files by it; listing uses :func:`_toc_items`)."
    try:
        toc = json.loads(text)
    except ValueError as e:
        raise TocError(f"{what} is not valid JSON: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise TocError(f"{what} is JSON nested too deeply to be read") from None
    if not isinstance(toc, dict) or not isinstance(toc.get("entries"), list):
        raise TocError(f"{what} has no entries list")
    return toc


_SPACE = re.compile(r"[ \t\n\r]*")


def _toc_items(text: str, what: str) -> Iterator:
    """The items of the top-level ``entries`` list of a TOC, decoded one at a
    time (a TOC of tiny entries would take ~10x its size as Python objects
    all at once). Not valid JSON, no entries list, or two: TocError."""
    decode = json.JSONDecoder().raw_decode
    space = _SPACE.match

    def bad(message: str = "is not valid JSON") -> TocError:
        return TocError(f"{what} {message}")

    def value(i: int):
        try:
            return decode(text, i)
        except ValueError as e:
            raise TocError(f"{what} is not valid JSON: {' '.join(str(e).split())}") from None
        except RecursionError:
            raise TocError(f"{what} is JSON nested too deeply to be read") from None

    i = space(text, 0).end()
    if text[i : i + 1] != "{":
        raise bad("has no entries list")
    i = space(text, i + 1).end()
    found = False
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            key, i = value(i)
            i = space(text, i).end()
            if not isinstance(key, str) or text[i : i + 1] != ":":
                raise bad()
            i = space(text, i + 1).end()
            if key == "entries":
                if found or text[i : i + 1] != "[":
                    raise bad("has no entries list" if not found else "has two entries lists")
                found = True
                i = space(text, i + 1).end()
                if text[i : i + 1] == "]":
                    i += 1
                else:
                    while True:
                        item, i = value(i)
                        yield item
                        i = space(text, i).end()
                        if text[i : i + 1] == ",":
                            i = space(text, i + 1).end()
                        elif text[i : i + 1] == "]":
                            i += 1
                            break
                        else:
                            raise bad()
            else:
                _, i = value(i)
            i = space(text, i).end()
            if text[i : i + 1] == ",":
                i = space(text, i + 1).end()
            elif text[i : i + 1] == "}":
                i += 1
                break
            else:
                raise bad()
    if not found:
        raise bad("has no entries list")
    if space(text, i).end() != len(text):
        raise bad()


_RFC3339 = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?(?:([Zz])|([+-])(\d\d):(\d\d))$"
)


def _parse_time(value) -> float | int:
    "RFC 3339 (Go's time.Time JSON) to seconds since the epoch; 0 when absent."
    if not value:
        return 0
    m = _RFC3339.match(str(value).strip())
    if not m:
        return 0
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        seconds = timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return 0
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    if m.group(7) and int(m.group(7)[1:]):
        return seconds + float("0" + m.group(7))
    return seconds


def _int(entry: dict, *keys: str) -> int:
    for key in keys:
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TocError(f"TOC entry {entry.get('name')!r} has a non-integer {key}")
        return value
    return 0


def _str(entry: dict, key: str) -> str:
    value = entry.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TocError(f"TOC entry {entry.get('name')!r} has a non-string {key}")
    return value


def _entries_from_toc(items: Iterable, what: str) -> Iterator[Entry]:
    unames: dict[int, str] = {}
    gnames: dict[int, str] = {}
    for item in items:
        if not isinstance(item, dict):
            raise TocError(f"{what} TOC has a malformed entry")
        kind = item.get("type")
        if kind == "chunk":  # continuation of the previous regular file
            continue
        etype = _TOC_TYPES.get(kind)
        if etype is None:
            raise TocError(f"{what} TOC entry {item.get('name')!r} has unknown type {kind!r}")
        uid = _int(item, "uid", "UID")
        gid = _int(item, "gid", "GID")
        # eStargz writes userName/groupName only when they change for an id
        uname = _str(item, "userName")
        if uname:
            unames[uid] = uname
        else:
            uname = unames.get(uid, "")
        gname = _str(item, "groupName")
        if gname:
            gnames[gid] = gname
        else:
            gname = gnames.get(gid, "")
        path = normalize_path(_str(item, "name"))
        if not path:
            continue  # the root directory itself
        size = _int(item, "size") if etype == "file" else 0
        if size < 0:
            raise TocError(f"{what} TOC entry {path!r} has a negative size")
        linkname = _str(item, "linkName") if etype in ("symlink", "hardlink") else ""
        if etype == "hardlink":
            linkname = normalize_path(linkname)
        devices = etype in ("char", "block")
        offset = _int(item, "offset")
        yield (
            Entry(
                path,
                etype,
                size,
                _int(item, "mode") & 0o7777,
                uid,
                gid,
                uname,
                gname,
                _parse_time(item.get("modtime")),
                linkname,
                _int(item, "devMajor") if devices else 0,
                _int(item, "devMinor") if devices else 0,
                offset,
                offset,
            )
        )


# --- one file's content, exactly -----------------------------------------------


@dataclass
class TocDocument:
    "A lazy-pull layer's verified TOC and where its file data ends in the blob."

    kind: str
    toc: dict
    end: int

    def entries(self) -> list[Entry]:
        return list(_entries_from_toc(self.toc["entries"], "eStargz" if self.kind == "estargz" else "zstd:chunked"))


def read_document(fetch_range: FetchRange, blob_size: int, annotations: dict) -> TocDocument:
    "The TOC of a lazy-pull layer (:func:`toc_kind`), verified as :func:`list_toc` does."
    kind = toc_kind(annotations)
    if kind == "estargz":
        toc, _, end = _estargz_document(fetch_range, blob_size, annotations.get(ESTARGZ_TOC_DIGEST))
    elif kind == "zstd-chunked":
        toc, end = _zstd_chunked_document(fetch_range, blob_size, annotations)
    else:
        raise TocError("the layer has no table of contents annotation")
    return TocDocument(kind, toc, end)


@dataclass
class Chunk:
    start: int       # blob offset of its gzip member / zstd frame
    end: int         # blob offset where that member / frame ends (exclusive)
    size: int        # uncompressed bytes of the file in it
    digest: str      # chunkDigest, "" when the TOC has none


def file_chunks(doc: TocDocument, path: str) -> tuple[list[Chunk], str]:
    """The compressed chunks holding the regular file ``path`` and the file's
    digest ("" if the TOC gives none). TocError when the TOC does not hold it."""
    items = [item for item in doc.toc.get("entries", ()) if isinstance(item, dict)]
    starts = sorted({_int(item, "offset") for item in items if _int(item, "offset") > 0} | {doc.end})
    mine = [item for item in items if normalize_path(_str(item, "name")) == path and item.get("type") in ("reg", "chunk")]
    head = next((item for item in mine if item.get("type") == "reg"), None)
    if head is None:
        raise TocError(f"the TOC has no regular file {path!r}")
    size = _int(head, "size")
    chunks: list[Chunk] = []
    for item in mine:
        offset = _int(item, "offset")
        if not offset:
            continue
        chunk_offset = _int(item, "chunkOffset")
        chunk_size = _int(item, "chunkSize") or size - chunk_offset
        end = _int(item, "endOffset")
        if not end:
            later = [s for s in starts if s > offset]
            end = later[0] if later else doc.end
        if not (0 < offset < end <= doc.end) or chunk_size < 0 or chunk_offset + chunk_size > size:
            raise TocError(f"the TOC entry for {path!r} has impossible offsets")
        chunks.append(Chunk(offset, end, chunk_size, _str(item, "chunkDigest")))
    if sum(c.size for c in chunks) != size:
        raise TocError(f"the TOC chunks of {path!r} do not add up to its size")
    return chunks, _str(head, "digest")


def read_chunks(fetch_range: FetchRange, kind: str, chunks: list[Chunk], file_digest: str, what: str):
    """Yield a file's content chunk by chunk: one Range request per chunk,
    each chunk's digest checked, then the file's digest."""
    import io

    import zstandard

    whole = Digester(file_digest.lower()) if file_digest.startswith("sha256:") else None
    for chunk in chunks:
        raw = _fetch(fetch_range, chunk.start, chunk.end - 1)
        try:
            if kind == "estargz":
                data = zlib.decompressobj(31).decompress(raw, chunk.size)
            else:
                data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read(chunk.size)
        except (zlib.error, zstandard.ZstdError) as e:
            raise TocError(f"{what}: corrupt chunk at offset {chunk.start}: {e}") from None
        label = f"{what}: the chunk at offset {chunk.start}"
        if chunk.digest:
            _verify(data, chunk.digest, label, chunk.size)
        else:
            check_bytes(data, None, label, chunk.size)
        if whole is not None:
            whole.update(data)
        yield data
    if whole is not None:
        whole.check(f"{what}: the content {file_digest}")
