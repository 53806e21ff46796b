"""eStargz and zstd:chunked listing from the table of contents (layerslayer.toc)."""

from __future__ import annotations

import gzip
import os
import tarfile

import pytest
from harness.lazy_layers import (
    ESTARGZ_TOC_DIGEST,
    ZSTD_CHECKSUM,
    ZSTD_POSITION,
    build_estargz,
    build_zstd_chunked,
    member,
)

from layerslayer import toc as toc_module
from layerslayer.errors import LayerslayerError, TarError, VerificationError
from layerslayer.tarstream import iter_entries
from layerslayer.toc import TocError, list_estargz, list_toc, list_zstd_chunked, toc_kind

MTIME = 1_700_000_000


def members():
    return [
        member("./", tarfile.DIRTYPE),
        member("./etc/", tarfile.DIRTYPE),
        member("./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
        member("etc/shadow", data=b"root:*:1:0:::::\n", mode=0o640, gid=42, gname="shadow"),
        member("usr/bin/sudo", data=os.urandom(5000), mode=0o4755),
        member("usr/bin/sudoedit", tarfile.LNKTYPE, linkname="./usr/bin/sudo"),
        member("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox", mode=0o777),
        member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        member("dev/sda", tarfile.BLKTYPE, devmajor=8, mode=0o660),
        member("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        member("home/user/", tarfile.DIRTYPE, uid=1000, gid=1000, uname="user", gname="users"),
        member("home/user/.env", data=b"SECRET=1\n", uid=1000, gid=1000, uname="user", gname="users"),
        member("home/user/notes", data=b"n" * 3000, uid=1000, gid=1000, uname="user", gname="users"),
        member("home/user/empty", data=b"", uid=1000, gid=1000, uname="user", gname="users"),
        member("etc/.wh.old.conf"),
        member("var/.wh..wh..opq"),
        member("opt/big.bin", data=os.urandom(150_000)),  # several chunks with a small chunk_size
        member("opt/" + "long-" * 40 + "name.txt", data=b"long"),
        member("opt/ünïcödé glob*?[x].txt", data=b"u"),
        member("old/epoch", data=b"e", mtime=0),
    ]


def key(e, with_names=True):
    return (e.path, e.type, e.size, e.mode, e.uid, e.gid) + ((e.uname, e.gname) if with_names else ()) + (
        e.mtime, e.linkname, e.devmajor, e.devminor)


def streamed(blob: bytes):
    return list(iter_entries([blob]))


# --- eStargz ----------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_estargz_round_trip(legacy):
    layer = build_estargz(members(), chunk_size=64 << 10, legacy_footer=legacy)
    calls = []
    got = list_estargz(layer.fetcher(calls), layer.size, layer.annotations[ESTARGZ_TOC_DIGEST])
    assert [key(e) for e in got] == [key(e) for e in streamed(layer.blob)]
    assert len(calls) <= 2
    assert calls[-1][1] == layer.size - 1
    paths = [e.path for e in got]
    assert paths[-1] == "stargz.index.json"
    assert paths.count("opt/big.bin") == 1  # chunk entries are not listed
    by_path = {e.path: e for e in got}
    assert by_path["usr/bin/sudoedit"].linkname == "usr/bin/sudo"
    assert by_path["home/user/notes"].uname == "user"  # carried over from the first entry of uid 1000
    assert by_path["opt/big.bin"].offset > 0 and by_path["opt/big.bin"].offset == by_path["opt/big.bin"].data_offset
    assert by_path["dev/null"].offset == 0


def test_estargz_is_a_valid_gzip_tar():
    layer = build_estargz(members(), chunk_size=64 << 10)
    import hashlib

    assert "sha256:" + hashlib.sha256(gzip.decompress(layer.blob)).hexdigest() == layer.diff_id
    with tarfile.open(fileobj=__import__("io").BytesIO(layer.blob)) as tf:
        assert "stargz.index.json" in tf.getnames()


def test_estargz_big_toc_takes_two_requests(monkeypatch):
    monkeypatch.setattr(toc_module, "TAIL_FETCH_SIZE", 100)
    layer = build_estargz(members())
    calls = []
    got = list_estargz(layer.fetcher(calls), layer.size, layer.annotations[ESTARGZ_TOC_DIGEST])
    assert len(calls) == 2
    assert calls[0] == (layer.size - 100, layer.size - 1)
    assert len(got) == len(members())  # minus "./", plus stargz.index.json


def test_estargz_small_toc_takes_one_request():
    layer = build_estargz(members()[:5])
    calls = []
    list_estargz(layer.fetcher(calls), layer.size, None)
    assert len(calls) == 1


def test_estargz_fetches_a_small_part_of_the_blob(monkeypatch):
    monkeypatch.setattr(toc_module, "TAIL_FETCH_SIZE", 51)
    files = [member(f"data/file{i:04d}.bin", data=os.urandom(20_000)) for i in range(200)]
    layer = build_estargz(files)
    calls = []
    assert len(list_estargz(layer.fetcher(calls), layer.size, layer.annotations[ESTARGZ_TOC_DIGEST])) == 201
    fetched = sum(end - start + 1 for start, end in calls)
    assert fetched < layer.size * 0.02


def test_estargz_digest_mismatch():
    layer = build_estargz(members())
    with pytest.raises(VerificationError) as info:
        list_estargz(layer.fetcher(), layer.size, "sha256:" + "0" * 64)
    assert f"eStargz TOC sha256:{'0' * 64} does not match its digest" in str(info.value)
    assert info.value.exit_code == 3


def test_estargz_tampered_toc():
    layer = build_estargz(members())
    # swap the TOC for a different one (same footer offset): the annotation catches it
    other = build_estargz(members()[:3])
    assert layer.annotations[ESTARGZ_TOC_DIGEST] != other.annotations[ESTARGZ_TOC_DIGEST]
    with pytest.raises(VerificationError):
        list_estargz(layer.fetcher(), layer.size, other.annotations[ESTARGZ_TOC_DIGEST])


def test_estargz_bad_footer_and_toc():
    layer = build_estargz(members())
    plain = gzip.compress(b"not an estargz blob" * 100)
    with pytest.raises(TocError, match="no stargz footer"):
        list_estargz(lambda s, e: plain[s : e + 1], len(plain), None)
    with pytest.raises(TocError, match="too small"):
        list_estargz(lambda s, e: b"x" * (e - s + 1), 10, None)
    # a footer pointing at the wrong place
    from harness.lazy_layers import estargz_footer

    bad = layer.blob[:-51] + estargz_footer(3)
    with pytest.raises(TocError, match="eStargz TOC: "):
        list_estargz(lambda s, e: bad[s : e + 1], len(bad), None)
    bad = layer.blob[:-51] + estargz_footer(len(layer.blob) + 10)
    with pytest.raises(TocError, match="outside the blob"):
        list_estargz(lambda s, e: bad[s : e + 1], len(bad), None)
    # a registry answering with the wrong number of bytes
    with pytest.raises(TocError, match="returned"):
        list_estargz(lambda s, e: layer.blob[s:e], layer.size, None)


def test_estargz_garbage_json():
    import json
    import zlib

    from harness.lazy_layers import estargz_footer

    for payload in (b"{not json", json.dumps({"version": 1}).encode(), json.dumps({"entries": [{"type": "weird", "name": "x"}]}).encode()):
        ti = tarfile.TarInfo("stargz.index.json")
        ti.size = len(payload)
        tar = ti.tobuf(tarfile.USTAR_FORMAT) + payload + bytes(-len(payload) % 512) + bytes(1024)
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        toc_gz = comp.compress(tar) + comp.flush()
        blob = gzip.compress(bytes(1024)) + toc_gz
        blob += estargz_footer(len(blob) - len(toc_gz))
        with pytest.raises(TocError):
            list_estargz(lambda s, e: blob[s : e + 1], len(blob), None)  # noqa: B023  (the fetch is used during this call only)


# --- zstd:chunked -----------------------------------------------------------


def test_zstd_chunked_round_trip():
    layer = build_zstd_chunked(members())
    calls = []
    got = list_zstd_chunked(layer.fetcher(calls), layer.size, layer.annotations)
    # containers/storage's TOC has no user/group names
    assert [key(e, False) for e in got] == [key(e, False) for e in streamed(layer.blob)]
    assert len(calls) == 1
    by_path = {e.path: e for e in got}
    big = by_path["opt/big.bin"]
    assert big.offset > 0
    # the offset is where the file's own zstd frame starts in the blob
    import zstandard

    frame = layer.blob[big.offset :]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame)[:100] == _content(layer.blob, "opt/big.bin")[:100]


def _content(blob, path):
    from layerslayer.decompress import decompress
    from layerslayer.tarstream import TarReader

    reader = TarReader(decompress([blob]))
    for e in reader:
        if e.path == path:
            return reader.read()
    raise KeyError(path)


def test_zstd_chunked_is_a_valid_zstd_tar():
    import hashlib
    import io

    import zstandard

    layer = build_zstd_chunked(members())
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(layer.blob), read_across_frames=True).read()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
    assert len(streamed(layer.blob)) == len(members()) - 1


def test_zstd_chunked_footer_without_annotations():
    layer = build_zstd_chunked(members(), with_annotations=False)
    calls = []
    got = list_zstd_chunked(layer.fetcher(calls), layer.size, {})
    assert [key(e, False) for e in got] == [key(e, False) for e in streamed(layer.blob)]
    assert len(calls) == 2


def test_zstd_chunked_old_annotation_keys():
    layer = build_zstd_chunked(members())
    old = {
        "io.containers.zstd-chunked.manifest-position": layer.annotations[ZSTD_POSITION],
        "io.containers.zstd-chunked.manifest-checksum": layer.annotations[ZSTD_CHECKSUM],
    }
    assert toc_kind(old) == "zstd-chunked"
    assert len(list_zstd_chunked(layer.fetcher(), layer.size, old)) == len(members()) - 1


def test_zstd_chunked_checksum_mismatch():
    layer = build_zstd_chunked(members())
    annotations = dict(layer.annotations)
    annotations[ZSTD_CHECKSUM] = "sha256:" + "1" * 64
    with pytest.raises(VerificationError, match=f"zstd:chunked manifest sha256:{'1' * 64} does not match its digest"):
        list_zstd_chunked(layer.fetcher(), layer.size, annotations)


def test_zstd_chunked_bad_positions():
    layer = build_zstd_chunked(members())
    for value in ("1:2:3", "a:b:c:d", f"{layer.size}:10:10:1", "0:10:10:2"):
        annotations = dict(layer.annotations, **{ZSTD_POSITION: value})
        with pytest.raises(TocError):
            list_zstd_chunked(layer.fetcher(), layer.size, annotations)
    # pointing at compressed file data instead of the manifest: not a valid manifest
    annotations = {ZSTD_POSITION: f"0:{layer.size // 2}:1000000:1"}
    with pytest.raises(TocError):
        list_zstd_chunked(layer.fetcher(), layer.size, annotations)
    # no annotations and no footer
    import zstandard

    plain = zstandard.ZstdCompressor().compress(os.urandom(4096))
    with pytest.raises(TocError, match="no manifest annotation and no footer"):
        list_zstd_chunked(lambda s, e: plain[s : e + 1], len(plain), {})


# --- dispatch -----------------------------------------------------------------


def test_toc_kind():
    assert toc_kind(None) is None
    assert toc_kind({}) is None
    assert toc_kind({"org.opencontainers.image.title": "x"}) is None
    assert toc_kind({ESTARGZ_TOC_DIGEST: "sha256:abc"}) == "estargz"
    assert toc_kind({ZSTD_POSITION: "1:2:3:1"}) == "zstd-chunked"


def test_list_toc_dispatch():
    for layer, kind in ((build_estargz(members()), "estargz"), (build_zstd_chunked(members()), "zstd-chunked")):
        got_kind, entries = list_toc(layer.fetcher(), layer.size, layer.annotations)
        assert got_kind == kind
        assert {e.path for e in entries} >= {"etc/passwd", "opt/big.bin", "var/.wh..wh..opq"}
    with pytest.raises(TocError):
        list_toc(lambda s, e: b"", 100, {})


def test_errors_hierarchy():
    assert issubclass(TocError, TarError) and issubclass(TocError, LayerslayerError)


def test_rfc3339_parsing():
    parse = toc_module._parse_time
    assert parse("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse("2023-11-14T23:13:20+01:00") == 1_700_000_000
    assert parse("2023-11-14T22:13:20.5Z") == 1_700_000_000.5
    assert parse("2023-11-14T22:13:20.000000000Z") == 1_700_000_000
    assert parse("") == 0 and parse(None) == 0 and parse("garbage") == 0
    assert parse("0001-01-01T00:00:00Z") == -62135596800
