"""Build eStargz and zstd:chunked layer blobs for tests (pure Python).

The layouts follow the public writers:

* eStargz (containerd/stargz-snapshotter ``estargz``): a gzip tar where each
  regular file's content (in chunks of ``chunk_size``) starts a new gzip
  member, the TOC ``stargz.index.json`` is a tar entry alone in the last
  member before a 51-byte footer (an empty gzip member whose Extra field is
  ``SG`` + len 22 + ``%016xSTARGZ`` holding the TOC offset), and the layer
  annotation ``containerd.io/snapshot/stargz/toc.digest`` is the sha256 of
  the TOC JSON. ``legacy_footer=True`` writes the old 47-byte stargz footer.
* zstd:chunked (containers/storage ``pkg/chunked``): a multi-frame zstd tar
  where each file's content is its own frame (the TOC records ``offset`` and
  ``endOffset`` of that frame), followed by skippable frames holding the
  zstd-compressed manifest (TOC), the tar-split data and a 64-byte footer;
  annotations ``io.github.containers.zstd-chunked.manifest-position``
  (``offset:length:uncompressed:1``), ``...manifest-checksum`` (digest of the
  compressed manifest) and ``...tarsplit-position``.

Both blobs are also ordinary gzip / zstd tar layers: streaming them gives
the same entries (plus ``stargz.index.json`` for eStargz), which is what a
registry, docker or podman without lazy pulling sees.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

import zstandard

ESTARGZ_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
ESTARGZ_UNCOMPRESSED_SIZE = "io.containers.estargz.uncompressed-size"
ZSTD_POSITION = "io.github.containers.zstd-chunked.manifest-position"
ZSTD_CHECKSUM = "io.github.containers.zstd-chunked.manifest-checksum"
ZSTD_TARSPLIT_POSITION = "io.github.containers.zstd-chunked.tarsplit-position"

GZIP_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"


@dataclass
class LazyBlob:
    blob: bytes
    media_type: str
    annotations: dict[str, str]
    diff_id: str  # sha256 of the uncompressed tar
    toc_json: bytes
    digest: str = field(init=False)
    size: int = field(init=False)

    def __post_init__(self):
        self.digest = "sha256:" + hashlib.sha256(self.blob).hexdigest()
        self.size = len(self.blob)

    def descriptor(self) -> dict:
        "An OCI layer descriptor for a manifest."
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": dict(self.annotations),
        }

    def fetcher(self, calls: list | None = None):
        "A fetch_range(start, end_inclusive) over the blob, recording calls."

        def fetch_range(start: int, end: int) -> bytes:
            if calls is not None:
                calls.append((start, end))
            assert 0 <= start <= end < len(self.blob), (start, end, len(self.blob))
            return self.blob[start : end + 1]

        return fetch_range


def member(name, type=tarfile.REGTYPE, data=b"", **kw) -> tuple[tarfile.TarInfo, bytes]:
    "A (TarInfo, content) pair with sane defaults (root-owned, fixed mtime)."
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.size = len(data) if type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    ti.mtime = kw.pop("mtime", 1_700_000_000)
    ti.mode = kw.pop("mode", 0o755 if type == tarfile.DIRTYPE else 0o644)
    ti.uname = kw.pop("uname", "root")
    ti.gname = kw.pop("gname", "root")
    for key, value in kw.items():
        setattr(ti, key, value)
    return ti, data


_TYPES = {
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.DIRTYPE: "dir",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def _rfc3339(mtime) -> str:
    if not mtime:
        return ""
    return datetime.fromtimestamp(int(mtime), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _header(ti: tarfile.TarInfo) -> bytes:
    # Go's archive/tar writes USTAR when it can and PAX otherwise; tarfile's
    # PAX format does the same in practice (pax records only when needed).
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- eStargz ----------------------------------------------------------------


def estargz_footer(toc_offset: int, legacy: bool = False) -> bytes:
    "The 51-byte eStargz footer (or the 47-byte legacy stargz one)."
    if legacy:
        extra = b"%016xSTARGZ" % toc_offset
    else:
        subfield = b"%016xSTARGZ" % toc_offset
        extra = b"SG" + struct.pack("<H", len(subfield)) + subfield
    header = b"\x1f\x8b\x08\x04" + b"\x00\x00\x00\x00" + b"\x00\xff" + struct.pack("<H", len(extra)) + extra
    empty_stored_block = b"\x01\x00\x00\xff\xff"
    footer = header + empty_stored_block + struct.pack("<II", 0, 0)
    assert len(footer) == (47 if legacy else 51)
    return footer


class _GzipMembers:
    "Writes a gzip stream as members that can be closed and reopened at will."

    def __init__(self, level: int):
        self.out = bytearray()
        self.level = level
        self.gz = None
        self.crc = 0
        self.length = 0
        self.diff = hashlib.sha256()
        self.uncompressed = 0

    def open(self):
        if self.gz is None:
            self.gz = zlib.compressobj(self.level, zlib.DEFLATED, 31)

    def close(self):
        if self.gz is not None:
            self.out += self.gz.flush()
            self.gz = None

    def write(self, data: bytes):
        self.open()
        self.diff.update(data)
        self.uncompressed += len(data)
        self.out += self.gz.compress(data)


def build_estargz(members, *, chunk_size: int = 4 << 20, level: int = 6, legacy_footer: bool = False) -> LazyBlob:
    """An eStargz blob from (TarInfo, data) pairs, as estargz.Writer.AppendTar lays it out."""
    w = _GzipMembers(level)
    toc_entries: list[dict] = []
    last_uname: dict[int, str] = {}
    last_gname: dict[int, str] = {}

    def name_if_changed(names, ident, name):
        if not name or names.get(ident) == name:
            return None
        names[ident] = name
        return name

    for ti, data in members:
        ent: dict = {"name": ti.name, "type": _TYPES[ti.type]}
        if ti.mode:
            ent["mode"] = ti.mode
        if ti.uid:
            ent["uid"] = ti.uid
        if ti.gid:
            ent["gid"] = ti.gid
        uname = name_if_changed(last_uname, ti.uid, ti.uname)
        if uname:
            ent["userName"] = uname
        gname = name_if_changed(last_gname, ti.gid, ti.gname)
        if gname:
            ent["groupName"] = gname
        modtime = _rfc3339(ti.mtime)
        if modtime:
            ent["modtime"] = modtime
        if ti.type in (tarfile.LNKTYPE, tarfile.SYMTYPE):
            ent["linkName"] = ti.linkname
        if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            if ti.devmajor:
                ent["devMajor"] = ti.devmajor
            if ti.devminor:
                ent["devMinor"] = ti.devminor
        w.write(_header(ti))
        if ti.isreg():
            if ti.size:
                ent["size"] = ti.size
            ent["digest"] = _sha256(data)
        if ti.isreg() and ti.size > 0:
            written = 0
            while written < ti.size:
                w.close()  # file data starts a new gzip member
                n = min(chunk_size, ti.size - written)
                if ti.size - written >= chunk_size:
                    ent["chunkSize"] = chunk_size
                ent["offset"] = len(w.out)
                if written:
                    ent["chunkOffset"] = written
                piece = data[written : written + n]
                w.write(piece)
                ent["chunkDigest"] = _sha256(piece)
                toc_entries.append(ent)
                written += n
                ent = {"name": ti.name, "type": "chunk"}
            w.write(bytes(-ti.size % 512))  # tar padding, in the content's member
        else:
            toc_entries.append(ent)

    # the TOC: its own gzip member, a tar with stargz.index.json and the end-of-archive
    w.close()
    toc_offset = len(w.out)
    toc_json = json.dumps({"version": 1, "entries": toc_entries}, indent="\t").encode()
    toc_header = tarfile.TarInfo("stargz.index.json")
    toc_header.size = len(toc_json)
    toc_header.mode = 0
    toc_header.mtime = 0
    toc_header.uname = toc_header.gname = ""
    w.write(toc_header.tobuf(tarfile.USTAR_FORMAT))
    w.write(toc_json + bytes(-len(toc_json) % 512))
    w.write(bytes(1024))
    w.close()
    blob = bytes(w.out) + estargz_footer(toc_offset, legacy_footer)
    annotations = {
        ESTARGZ_TOC_DIGEST: _sha256(toc_json),
        ESTARGZ_UNCOMPRESSED_SIZE: str(w.uncompressed),
    }
    return LazyBlob(blob, GZIP_MEDIA_TYPE, annotations, "sha256:" + w.diff.hexdigest(), toc_json)


# --- zstd:chunked -----------------------------------------------------------

_CRC64_TABLE: list[int] = []


def _crc64_iso(data: bytes) -> int:
    "CRC-64/GO-ISO, the checksum tar-split records for file payloads."
    if not _CRC64_TABLE:
        poly = 0xD800000000000000
        for i in range(256):
            crc = i
            for _ in range(8):
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
            _CRC64_TABLE.append(crc)
    crc = 0xFFFFFFFFFFFFFFFF
    table = _CRC64_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def skippable_frame(payload: bytes, magic: int = 0x184D2A50) -> bytes:
    return struct.pack("<II", magic, len(payload)) + payload


def build_zstd_chunked(members, *, level: int = 3, with_annotations: bool = True) -> LazyBlob:
    """A zstd:chunked blob from (TarInfo, data) pairs, as containers/storage writes it."""
    cctx = zstandard.ZstdCompressor(level=level)
    out = bytearray()
    frame = bytearray()  # uncompressed bytes of the zstd frame being written
    diff = hashlib.sha256()
    tarsplit = io.BytesIO()
    position = 0

    def split(entry: dict):
        nonlocal position
        entry["position"] = position
        position += 1
        tarsplit.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")

    def restart():
        if frame:
            out.extend(cctx.compress(bytes(frame)))
            frame.clear()
        return len(out)

    metadata: list[dict] = []
    pending_padding = b""
    for ti, data in members:
        raw = pending_padding + _header(ti)
        pending_padding = b""
        frame.extend(raw)
        diff.update(raw)
        split({"type": 2, "payload": base64.b64encode(raw).decode()})
        ent: dict = {"type": _TYPES[ti.type], "name": ti.name}
        if ti.type in (tarfile.LNKTYPE, tarfile.SYMTYPE):
            ent["linkName"] = ti.linkname
        if ti.mode:
            ent["mode"] = ti.mode
        if ti.isreg() and ti.size:
            ent["size"] = ti.size
        if ti.uid:
            ent["uid"] = ti.uid
        if ti.gid:
            ent["gid"] = ti.gid
        modtime = _rfc3339(ti.mtime)
        if modtime:
            ent["modtime"] = modtime
        if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            if ti.devmajor:
                ent["devMajor"] = ti.devmajor
            if ti.devminor:
                ent["devMinor"] = ti.devminor
        if ti.isreg() and data:
            start = restart()
            frame.extend(data)
            diff.update(data)
            end = restart()
            ent["digest"] = _sha256(data)
            ent["offset"] = start
            ent["endOffset"] = end
            pending_padding = bytes(-len(data) % 512)
        split(
            {
                "type": 1,
                "name": ti.name,
                "size": len(data) if ti.isreg() else 0,
                "payload": base64.b64encode(struct.pack(">Q", _crc64_iso(data))).decode() if data else None,
            }
        )
        metadata.append(ent)
    tail = pending_padding + bytes(1024)
    frame.extend(tail)
    diff.update(tail)
    split({"type": 2, "payload": base64.b64encode(tail).decode()})
    restart()

    tarsplit_raw = tarsplit.getvalue()
    tarsplit_compressed = cctx.compress(tarsplit_raw)
    manifest = json.dumps(
        {"version": 1, "entries": metadata, "tarSplitDigest": _sha256(tarsplit_compressed)},
        separators=(",", ":"),
    ).encode()
    compressed_manifest = cctx.compress(manifest)
    manifest_offset = len(out) + 8
    out += skippable_frame(compressed_manifest)
    tarsplit_offset = manifest_offset + len(compressed_manifest) + 8
    out += skippable_frame(tarsplit_compressed)
    footer = struct.pack(
        "<7Q",
        manifest_offset,
        len(compressed_manifest),
        len(manifest),
        1,
        tarsplit_offset,
        len(tarsplit_compressed),
        len(tarsplit_raw),
    ) + b"GNUlInUx"
    out += skippable_frame(footer)
    annotations = {}
    if with_annotations:
        annotations = {
            ZSTD_CHECKSUM: _sha256(compressed_manifest),
            ZSTD_POSITION: f"{manifest_offset}:{len(compressed_manifest)}:{len(manifest)}:1",
            ZSTD_TARSPLIT_POSITION: f"{tarsplit_offset}:{len(tarsplit_compressed)}:{len(tarsplit_raw)}",
        }
    return LazyBlob(bytes(out), ZSTD_MEDIA_TYPE, annotations, "sha256:" + diff.hexdigest(), manifest)
