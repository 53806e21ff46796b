"""layerslayer.tarstream against the stdlib's tarfile, chunking, and hostile input."""

from __future__ import annotations

import gzip
import io
import os
import random
import struct
import tarfile
import time
import zlib

import pytest
import zstandard
from harness.rawtar import MTIME, pad, pax_record, raw_header

from layerslayer import decompress as decompress_module
from layerslayer.decompress import decompress
from layerslayer.oci import layer_compression as compression_of
from layerslayer.tarstream import (
    Entry,
    TarError,
    TarReader,
    iter_entries,
    normalize_path,
)

TYPE_NAMES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}


# --- building archives ------------------------------------------------------


def _info(name, type=tarfile.REGTYPE, data=b"", **kw) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.size = len(data) if type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    ti.mtime = kw.pop("mtime", MTIME)
    ti.mode = kw.pop("mode", 0o644)
    ti.uname = kw.pop("uname", "root")
    ti.gname = kw.pop("gname", "root")
    for key, value in kw.items():
        setattr(ti, key, value)
    return ti, data


def make_tar(members, format=tarfile.PAX_FORMAT, pax_headers=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=format, pax_headers=pax_headers, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def common_members(long_names=True, long_links=True):
    rng = random.Random(7)
    members = [
        _info("./", tarfile.DIRTYPE, mode=0o755),
        _info("./etc/", tarfile.DIRTYPE, mode=0o755),
        _info("./etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        _info("etc/shadow", data=b"root:*:19000:0:99999:7:::\n", mode=0o640, gid=42, gname="shadow"),
        _info("usr/bin/sudo", data=os.urandom(3000), mode=0o4755),
        _info("tmp", tarfile.DIRTYPE, mode=0o1777),
        _info("usr/bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox", mode=0o777),
        _info("usr/bin/sudoedit", tarfile.LNKTYPE, linkname="./usr/bin/sudo"),
        _info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        _info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660),
        _info("run/initctl", tarfile.FIFOTYPE, mode=0o600),
        _info("etc/.wh.secret.env", data=b""),
        _info("var/cache/.wh..wh..opq", data=b""),
        _info("home/user/my file with spaces.txt", data=b"x" * 1000),
        _info("home/user/new\nline", data=b"n"),
        _info("home/user/glob*?[chars]", data=b"g" * 511),
        _info("home/user/exact512", data=b"e" * 512),
        _info("home/user/exact513", data=b"f" * 513),
        _info("home/user/big.bin", data=bytes(rng.getrandbits(8) for _ in range(70_000)), uid=1000, gid=1000,
              uname="user", gname="users"),
        _info("home/user/empty", data=b""),
        _info("opt/ümlaut/ünïcödé.txt", data=b"u"),
        _info("weird/" + os.fsdecode(b"latin1-\xe9\xff-name"), data=b"raw bytes"),
        _info("old/mtime", data=b"m", mtime=0),
    ]
    if long_names:
        members += [
            _info("a" * 99 + "/" + "b" * 50, data=b"long1"),  # > 100: ustar prefix or pax path
            _info("deep/" + "/".join([f"segment{i:02d}" for i in range(30)]) + "/file.txt", data=b"long2"),  # > 255
            _info("d/" + "x" * 150 + "/", tarfile.DIRTYPE, mode=0o755),
        ]
    if long_links:
        members += [
            _info("links/longsym", tarfile.SYMTYPE, linkname="../" * 60 + "target", mode=0o777),
            _info("links/longhard", tarfile.LNKTYPE, linkname="deep/" + "/".join([f"segment{i:02d}" for i in range(30)]) + "/file.txt"),
        ]
    return members


def expected_entries(raw: bytes) -> list[tuple]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            path = normalize_path(m.name)
            if not path:
                continue
            etype = TYPE_NAMES.get(m.type, "file")
            linkname = m.linkname
            if etype == "hardlink":
                linkname = normalize_path(linkname)
            out.append(
                (
                    path,
                    etype,
                    m.size if etype == "file" else 0,
                    m.mode & 0o7777,
                    m.uid,
                    m.gid,
                    m.uname,
                    m.gname,
                    m.mtime,
                    linkname if etype in ("symlink", "hardlink") else "",
                    m.devmajor if etype in ("char", "block") else 0,
                    m.devminor if etype in ("char", "block") else 0,
                    m.offset,
                    m.offset_data,
                )
            )
    return out


def as_tuple(e: Entry) -> tuple:
    return (
        e.path, e.type, e.size, e.mode, e.uid, e.gid, e.uname, e.gname, e.mtime,
        e.linkname, e.devmajor, e.devminor, e.offset, e.data_offset,
    )


def chunked(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def random_chunks(data: bytes, seed: int):
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 100, 511, 512, 513, 1000, 4096, 70000])
        yield data[i : i + n]
        i += n


def gzip_members(data: bytes, cuts) -> bytes:
    "Multi-member gzip with member boundaries at arbitrary (non tar-aligned) offsets."
    out = b""
    prev = 0
    for cut in list(cuts) + [len(data)]:
        out += gzip.compress(data[prev:cut])
        prev = cut
    return out


def skippable(payload: bytes, magic=0x184D2A50) -> bytes:
    return struct.pack("<II", magic, len(payload)) + payload


def zstd_frames(data: bytes, cuts, skip_between=True) -> bytes:
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    out = skippable(b"leading metadata") if skip_between else b""
    prev = 0
    for cut in list(cuts) + [len(data)]:
        out += cctx.compress(data[prev:cut])
        if skip_between:
            out += skippable(b"x" * (cut % 50), magic=0x184D2A5E)
        prev = cut
    return out


def listing(data: bytes, compression="auto", chunk=1 << 20):
    return [as_tuple(e) for e in iter_entries(chunked(data, chunk), compression)]


# --- comparison with tarfile ------------------------------------------------

FORMATS = {
    "pax": (tarfile.PAX_FORMAT, dict(long_names=True, long_links=True)),
    "gnu": (tarfile.GNU_FORMAT, dict(long_names=True, long_links=True)),
    "ustar": (tarfile.USTAR_FORMAT, None),
}


def ustar_members():
    # ustar: names up to 255 via the prefix field, links up to 100, ASCII-safe
    members = [m for m in common_members(long_names=False, long_links=False)]
    members.append(_info("p" * 120 + "/" + "n" * 90, data=b"prefix"))
    members.append(_info("usr/" + "q" * 140 + "/file", data=b"prefix2"))
    return members


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_matches_tarfile(fmt):
    format, opts = FORMATS[fmt]
    members = ustar_members() if opts is None else common_members(**opts)
    raw = make_tar(members, format=format)
    expected = expected_entries(raw)
    assert len(expected) == len(members) - 1  # "./" root skipped
    assert listing(raw, "none") == expected
    if fmt == "ustar":
        assert any(len(e[0]) > 100 for e in expected)
        assert raw[257:263] == b"ustar\x00"


def test_long_names_really_long():
    raw = make_tar(common_members(), format=tarfile.PAX_FORMAT)
    paths = [e[0] for e in listing(raw)]
    assert max(len(p) for p in paths) > 255
    gnu = make_tar(common_members(), format=tarfile.GNU_FORMAT)
    assert b"././@LongLink" in gnu
    assert [e[0] for e in listing(gnu)] == paths


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_base256_numbers(fmt):
    members = [
        _info("big/uid", data=b"1", uid=0o7777777 + 5, gid=0o7777777 + 9),
        _info("big/mtime", data=b"2", mtime=0o77777777777 + 1),
        _info("neg/mtime", data=b"3", mtime=-1000),
    ]
    raw = make_tar(members, format=fmt)
    got = listing(raw)
    assert got == expected_entries(raw)
    assert got[0][4] == 0o7777777 + 5 and got[0][5] == 0o7777777 + 9
    assert got[1][8] == 0o77777777777 + 1
    assert got[2][8] == -1000
    if fmt == tarfile.GNU_FORMAT:
        assert b"\x80\x00\x00\x00" in raw  # really base-256 encoded


def test_base256_size_and_signed_checksum():
    content = b"z" * 700
    size_field = b"\x80" + (700).to_bytes(11, "big")
    raw = raw_header(b"base256-size", size_field=size_field) + pad(content)
    raw += raw_header(b"\xe9\xe8-signed-sum", 3, signed_sum=True) + pad(b"abc") + bytes(1024)
    got = list(iter_entries([raw]))
    assert [(e.path, e.size) for e in got] == [("base256-size", 700), (os.fsdecode(b"\xe9\xe8-signed-sum"), 3)]
    assert [as_tuple(e) for e in got] == expected_entries(raw)


def test_gnu_sparse_old_format():
    # 'S': size field = stored bytes, real size at offset 483
    h = bytearray(raw_header(b"sparse.img", 1024, b"S", magic=b"ustar  \0"))
    h[386:398] = b"%011o\0" % 0  # one sparse map entry: offset 0
    h[398:410] = b"%011o\0" % 1024  # numbytes 1024
    h[483:495] = b"%011o\0" % 1_000_000  # real size
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    raw = bytes(h) + b"s" * 1024 + raw_header(b"after", 2) + pad(b"ok") + bytes(1024)
    got = list(iter_entries([raw]))
    assert [(e.path, e.type, e.size) for e in got] == [("sparse.img", "file", 1_000_000), ("after", "file", 2)]
    assert got[1].data_offset == 512 + 1024 + 512


def test_unknown_types_are_skipped_correctly():
    raw = raw_header(b"dumpdir", 600, b"D") + pad(b"d" * 600)
    raw += raw_header(b"weird", 5, b"Z") + pad(b"zzzzz")
    raw += raw_header(b"volume", 0, b"V")
    raw += raw_header(b"after", 2) + pad(b"ok") + bytes(1024)
    got = [(e.path, e.type, e.size) for e in iter_entries([raw])]
    assert got == [("dumpdir", "dir", 0), ("weird", "file", 5), ("after", "file", 2)]


def test_v7_header_and_old_directory():
    raw = raw_header(b"v7file", 3, b"\0", magic=bytes(8)) + pad(b"abc")
    raw += raw_header(b"v7dir/", 0, b"\0", magic=bytes(8))
    raw += raw_header(b"ignored-prefix", 0, b"0", magic=b"ustar  \0", prefix=b"0000000\x000000000\x00")
    # a GNU header whose atime/ctime do not parse was written by a pre-1.8 Go
    # with a prefix there: Go's reader (the runtime) uses it
    raw += raw_header(b"name", 0, b"0", magic=b"ustar  \0", prefix=b"go17-prefix")
    got = [(e.path, e.type, e.size) for e in iter_entries([raw + bytes(1024)])]
    assert got == [("v7file", "file", 3), ("v7dir", "dir", 0), ("ignored-prefix", "file", 0),
                   ("go17-prefix/name", "file", 0)]


def test_global_pax_header_changes_no_entry():
    # tarfile applies global records to later entries; Go's reader (the
    # runtimes') returns them as an entry of their own, which containerd and
    # moby skip: no later name, owner or time changes. The records stay visible.
    members = [_info("a", data=b"1"), _info("b", data=b"22", uname="local")]
    raw = make_tar(members, pax_headers={"comment": "built by test", "uname": "globaluser", "mtime": "123.5",
                                         "path": "innocent.txt"})
    assert b"g" == raw[156:157]
    reader = TarReader([raw])
    got = [as_tuple(e) for e in reader]
    assert [(e[0], e[6], e[8]) for e in got] == [("a", "root", MTIME), ("b", "local", MTIME)]
    assert [e[12:] for e in got] == [e[12:] for e in expected_entries(raw)]  # offsets as tarfile's
    assert reader.global_header_count == 1
    assert reader.global_headers == [(0, {"comment": "built by test", "uname": "globaluser", "mtime": "123.5",
                                          "path": "innocent.txt"})]


def _ext(typeflag: bytes, body: bytes, name: bytes = b"././@PaxHeader") -> bytes:
    return raw_header(name, len(body), typeflag) + pad(body)


def _entry(name: bytes, data: bytes = b"", typeflag: bytes = b"0", **kw) -> bytes:
    return raw_header(name, len(data), typeflag, **kw) + pad(data)


def test_runtime_rules_for_extension_headers():
    secret = _entry(b"root/.ssh/id_rsa", b"KEY")
    # only the last of several x headers applies: an earlier size record
    # must not make entries vanish, an earlier path must not rename
    raw = _ext(b"x", pax_record("size", "1024") + pax_record("path", "decoy")) + _ext(b"x", pax_record("mtime", "5"))
    got = [(e.path, e.size, e.mtime) for e in iter_entries([raw + secret + _entry(b"after", b"ok") + bytes(1024)])]
    assert got == [("root/.ssh/id_rsa", 3, 5), ("after", 2, MTIME)]
    # a g header drops the x / L headers before it (Go starts afresh after it)
    raw = _ext(b"x", pax_record("path", "innocent.txt")) + _ext(b"L", b"also-innocent\0", b"././@LongLink")
    raw += _ext(b"g", pax_record("comment", "hi")) + secret + bytes(1024)
    assert [e.path for e in iter_entries([raw])] == ["root/.ssh/id_rsa"]
    # an extension header followed by the end is no entry, and no error
    for end in (b"", bytes(512), bytes(1024)):
        assert [e.path for e in iter_entries([secret + _ext(b"x", pax_record("path", "p")) + end])] == ["root/.ssh/id_rsa"]
        assert list(iter_entries([_ext(b"L", b"name\0", b"././@LongLink") + end])) == []
    # a layer of only a global header (git archive of an empty tree) is empty
    reader = TarReader([_ext(b"g", pax_record("comment", "0123abcd"), b"pax_global_header") + bytes(1024)])
    assert list(reader) == [] and reader.global_headers == [(0, {"comment": "0123abcd"})]


def test_old_style_directory_has_no_data():
    # typeflag NUL and a name ending in "/" is a directory, whatever its size
    # field says (Go): the next header is not swallowed as "data"
    raw = raw_header(b"etc/", 1024, b"\0") + _entry(b"etc/shadow", b"root:x") + _entry(b"b", b"bb") + bytes(1024)
    got = [(e.path, e.type, e.size) for e in iter_entries([raw])]
    assert got == [("etc", "dir", 0), ("etc/shadow", "file", 6), ("b", "file", 2)]
    # the same through a pax path
    raw = _ext(b"x", pax_record("path", "var/")) + raw_header(b"x", 512, b"\0") + _entry(b"s", b"s") + bytes(1024)
    assert [(e.path, e.type) for e in iter_entries([raw])] == [("var", "dir"), ("s", "file")]
    # '0' with a trailing slash is a regular file with data (as Go reads it)
    raw = raw_header(b"odd/", 3, b"0") + pad(b"abc") + _entry(b"n", b"") + bytes(1024)
    assert [(e.path, e.type, e.size) for e in iter_entries([raw])] == [("odd", "file", 3), ("n", "file", 0)]


def test_pax_field_rules():
    def one(*records):
        raw = _ext(b"x", b"".join(pax_record(k, v) for k, v in records)) + _entry(b"f", b"abc") + bytes(1024)
        return list(iter_entries([raw]))[0]

    # empty uname/gname clear the header's; other empty values keep it
    e = one(("uname", ""), ("gname", ""), ("path", ""), ("mtime", ""))
    assert (e.uname, e.gname, e.path, e.mtime) == ("", "", "f", MTIME)
    assert one(("mtime", "-1.5")).mtime == -1.5
    assert one(("mtime", "12.")).mtime == 12
    for bad in ("1.0e999", "9" * 400, "12a", " 12", "1_000", "1.-5", str(2**63)):
        with pytest.raises(TarError, match="bad time .*the runtime rejects the layer"):
            one(("mtime", bad))
    for key in ("uid", "gid", "size"):
        with pytest.raises(TarError, match=f"bad {key}"):
            one((key, "x12"))
    with pytest.raises(TarError, match="bad time"):
        one(("atime", "yesterday"))
    for key in ("path", "linkpath", "uname", "gname"):
        with pytest.raises(TarError, match=f"NUL byte in the {key} record"):
            one((key, "a\0b"))
    with pytest.raises(TarError, match="NUL byte in the path record"):  # in a global header too
        list(iter_entries([_ext(b"g", pax_record("path", "a\0b")) + bytes(1024)]))


def test_path_length_and_name_budget():
    from layerslayer.tarstream import MAX_PATH_LENGTH, NAME_BYTES_FLOOR, name_budget

    ok = b"d/" * (MAX_PATH_LENGTH // 2 - 1) + b"ok"
    assert len(ok) == MAX_PATH_LENGTH
    for kind in (b"L", b"K"):
        long_ok = _ext(kind, ok + b"\0", b"././@LongLink")
        assert len(list(iter_entries([long_ok + _entry(b"x", typeflag=b"2" if kind == b"K" else b"0") + bytes(1024)]))) == 1
        with pytest.raises(TarError, match=f"a path longer than {MAX_PATH_LENGTH} bytes"):
            list(iter_entries([_ext(kind, ok + b"x\0", b"././@LongLink") + _entry(b"x") + bytes(1024)]))
    with pytest.raises(TarError, match=f"a path longer than {MAX_PATH_LENGTH} bytes"):
        list(iter_entries([_ext(b"x", pax_record("path", ok.decode() + "x")) + _entry(b"x") + bytes(1024)]))
    # names within the limit, but too many of them for the layer
    one = _ext(b"x", pax_record("path", ok.decode())) + _entry(b"x")
    raw = one * 4 + bytes(1024)
    assert len(list(iter_entries([raw], max_name_bytes=4 * MAX_PATH_LENGTH))) == 4
    with pytest.raises(TarError, match="long path names add up to more than the layer's budget"):
        list(iter_entries([raw], max_name_bytes=3 * MAX_PATH_LENGTH))
    assert name_budget(1000) == NAME_BYTES_FLOOR and name_budget(1 << 30) == 4 << 30


def test_pax_overrides_and_fractional_mtime():
    ti, data = _info("x", data=b"abc")
    ti.pax_headers = {
        "path": "./pax/path/ünï",
        "uid": "123456789",
        "gid": "987654321",
        "uname": "pax-user",
        "gname": "pax-group",
        "mtime": "1700000000.123456789",
        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
        "LIBARCHIVE.creationtime": "1",
    }
    raw = make_tar([(ti, data)])
    got = list(iter_entries([raw]))
    assert [as_tuple(e) for e in got] == expected_entries(raw)
    e = got[0]
    assert e.path == "pax/path/ünï" and e.uid == 123456789 and e.gid == 987654321
    assert e.uname == "pax-user" and e.gname == "pax-group"
    assert abs(e.mtime - 1700000000.123456789) < 1e-6


def test_numbers_an_index_cannot_hold():
    # Ids beyond 64 bits, device numbers beyond 31: a corrupt or hostile
    # header, said so (an index could not store them); a time beyond 64 bits
    # is kept as a float. Ordinary big values pass unchanged.
    def one(pax=None, **kw):
        ti, data = _info("x", data=b"abc", **kw)
        ti.pax_headers = pax or {}
        return list(iter_entries([make_tar([(ti, data)])]))

    e = one({"uid": str(2**63 - 1), "gid": str(2**40), "mtime": str(2**63 - 1)})[0]
    assert e.uid == 2**63 - 1 and e.gid == 2**40 and e.mtime == 2**63 - 1
    for key in ("uid", "gid", "mtime"):  # beyond 64 bits: Go's reader fails on it too
        with pytest.raises(TarError, match=f"bad {'time' if key == 'mtime' else key}"):
            one({key: str(2**64)})
    ti, _ = _info("dev/big", type=tarfile.CHRTYPE, devmajor=2**40, devminor=1)
    raw = make_tar([(ti, b"")], format=tarfile.GNU_FORMAT)  # base-256 device numbers
    with pytest.raises(TarError, match="impossible devmajor"):
        list(iter_entries([raw]))
    ti, _ = _info("dev/ok", type=tarfile.CHRTYPE, devmajor=4095, devminor=2**20 - 1)
    assert [(e.devmajor, e.devminor) for e in iter_entries([make_tar([(ti, b"")])])] == [(4095, 2**20 - 1)]


def test_non_utf8_names_are_lossless():
    raw_name = b"bin/\xff\xfe-not-utf8"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        raw = make_tar([_info(os.fsdecode(raw_name), data=b"1")], format=fmt)
        (e,) = iter_entries([raw])
        assert os.fsencode(e.path) == raw_name


def test_whiteouts_and_properties():
    raw = make_tar(common_members())
    by_path = {e.path: e for e in iter_entries([raw])}
    assert by_path["etc/.wh.secret.env"].whiteout
    assert not by_path["etc/.wh.secret.env"].opaque
    assert by_path["var/cache/.wh..wh..opq"].opaque and by_path["var/cache/.wh..wh..opq"].whiteout
    assert not by_path["etc/passwd"].whiteout
    assert by_path["usr/bin/sudoedit"].linkname == "usr/bin/sudo"  # hardlink target normalised
    assert by_path["usr/bin/sh"].linkname == "/bin/busybox"  # symlink target as is
    assert by_path["usr/bin/sudo"].mode == 0o4755
    assert by_path["tmp"].mode == 0o1777


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("./etc/passwd", "etc/passwd"),
        ("/etc/passwd", "etc/passwd"),
        ("/././/etc//x/", "etc/x"),
        ("././a", "a"),
        ("./", ""),
        (".", ""),
        ("/", ""),
        ("a//b///c", "a/b/c"),
        ("dir/", "dir"),
        ("../escape", "../escape"),
        ("a/./b", "a/./b"),
    ],
)
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == expected


def test_empty_archives():
    assert listing(b"") == []
    assert listing(bytes(1024)) == []
    assert listing(bytes(10240)) == []
    assert listing(gzip.compress(bytes(10240))) == []
    assert listing(gzip.compress(b"")) == []
    assert listing(make_tar([])) == []
    assert listing(zstandard.ZstdCompressor().compress(make_tar([]))) == []


def test_end_of_archive_variants():
    body = raw_header(b"one", 3) + pad(b"abc")
    assert [e[0] for e in listing(body)] == ["one"]  # no zero blocks at all
    assert [e[0] for e in listing(body + bytes(512))] == ["one"]  # a lone zero block then EOF
    assert [e[0] for e in listing(body + bytes(300))] == ["one"]  # a short run of zeros
    # a zero block ends the archive even when data follows (as tarfile does)
    assert [e[0] for e in listing(body + bytes(512) + raw_header(b"hidden", 0))] == ["one"]
    # data after the end-of-archive is ignored but consumed (drained)
    consumed = []

    def spy(data):
        for c in chunked(data, 100):
            consumed.append(len(c))
            yield c

    data = body + bytes(1024) + b"trailing junk" * 100
    assert [e.path for e in TarReader(spy(data))] == ["one"]
    assert sum(consumed) == len(data)


# --- compression ------------------------------------------------------------


def test_compression_of():
    assert compression_of("application/vnd.oci.image.layer.v1.tar+gzip") == "gzip"
    assert compression_of("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert compression_of("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") == "gzip"
    assert compression_of("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip") == "gzip"
    assert compression_of("application/vnd.oci.image.layer.v1.tar+zstd") == "zstd"
    assert compression_of("application/vnd.oci.image.layer.v1.tar") == "none"
    assert compression_of("application/vnd.docker.image.rootfs.diff.tar") == "none"
    assert compression_of("application/octet-stream") == "auto"
    assert compression_of("") == "auto"
    assert compression_of(None) == "auto"


def test_all_compressions_agree():
    raw = make_tar(common_members())
    expected = expected_entries(raw)
    cuts = [1, 700, 5000, 40000, len(raw) - 3]
    variants = {
        "plain": raw,
        "gzip": gzip.compress(raw),
        "gzip-multi": gzip_members(raw, cuts),
        "zstd": zstandard.ZstdCompressor().compress(raw),
        "zstd-multi": zstd_frames(raw, cuts),
    }
    for name, blob in variants.items():
        for compression in ("auto", {"plain": "none"}.get(name, name.split("-")[0])):
            assert listing(blob, compression) == expected, (name, compression)
        # the declared compression is only a hint: mislabelled blobs still work
        assert listing(blob, "gzip" if "zstd" in name else "zstd") == expected, name
        assert b"".join(decompress(chunked(blob, 333))) == raw, name


def test_gzip_trailing_zero_padding_and_garbage():
    raw = make_tar(common_members())
    expected = expected_entries(raw)
    assert listing(gzip.compress(raw) + bytes(4096)) == expected
    assert listing(gzip.compress(raw) + b"garbage after the last member") == expected


@pytest.mark.parametrize("size", [1, 2, 7, 511, 512, 513, 4096, 65537, 1 << 20])
@pytest.mark.parametrize("kind", ["plain", "gzip", "zstd"])
def test_chunk_boundaries(size, kind):
    raw = make_tar(common_members())
    blob = {"plain": raw, "gzip": gzip_members(raw, [3, 1000, 9000]), "zstd": zstd_frames(raw, [3, 1000, 9000])}[kind]
    if size < 64 and kind != "plain":
        blob_chunks = list(chunked(blob, size))
    else:
        blob_chunks = chunked(blob, size)
    got = [as_tuple(e) for e in iter_entries(blob_chunks)]
    assert got == expected_entries(raw)


@pytest.mark.parametrize("size", [1, 3, 511, 513, 4096])
def test_decompressed_chunk_boundaries(size):
    "The parser itself fed awkward decompressed chunk sizes (every header straddles)."
    raw = make_tar(common_members())
    assert [as_tuple(e) for e in TarReader(chunked(raw, size))] == expected_entries(raw)


@pytest.mark.parametrize("seed", range(5))
def test_random_chunking(seed):
    raw = make_tar(common_members(), format=tarfile.GNU_FORMAT)
    assert [as_tuple(e) for e in TarReader(random_chunks(raw, seed))] == expected_entries(raw)


def test_decompressed_chunks_are_bounded():
    raw = make_tar([_info("zeros", data=bytes(5 << 20))])
    for blob in (gzip.compress(raw), zstandard.ZstdCompressor().compress(raw)):
        sizes = [len(c) for c in decompress([blob])]
        assert max(sizes) <= decompress_module.OUTPUT_CHUNK_SIZE
        assert sum(sizes) == len(raw)


# --- reading contents -------------------------------------------------------


def contents_by_tarfile(raw: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw), encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            if m.isreg():
                out[normalize_path(m.name)] = tf.extractfile(m).read()
    return out


@pytest.mark.parametrize("size", [1, 511, 513, 1 << 20])
def test_read_contents(size):
    raw = make_tar(common_members())
    want = contents_by_tarfile(raw)
    reader = TarReader(chunked(raw, size))
    got = {}
    for i, e in enumerate(reader):
        if e.type != "file":
            assert reader.read() == b""
            continue
        if i % 3 == 0:
            got[e.path] = reader.read()
        elif i % 3 == 1:
            parts = [reader.read(1), reader.read(7), reader.read(600)]
            got[e.path] = b"".join(parts) + reader.read(-1)
        else:
            got[e.path] = b"".join(reader.iter_content(chunk_size=1000))
        assert reader.read() == b""  # nothing left
    assert got == want


def test_read_some_skip_rest():
    raw = make_tar(common_members())
    reader = TarReader(chunked(raw, 4096))
    seen = []
    for e in reader:
        if e.path == "home/user/big.bin":
            seen.append(reader.read(10))
    assert seen == [contents_by_tarfile(raw)["home/user/big.bin"][:10]]


def test_read_through_gzip_with_bomb_free_bounded_chunks():
    data = os.urandom(3 << 20)
    raw = make_tar([_info("a/blob", data=data), _info("a/after", data=b"after")])
    reader = TarReader(decompress(chunked(gzip.compress(raw, 1), 1 << 20)))
    got = {}
    for e in reader:
        pieces = list(reader.iter_content())
        assert all(len(p) <= 1 << 20 for p in pieces)
        got[e.path] = b"".join(pieces)
    assert got == {"a/blob": data, "a/after": b"after"}


# --- hostile input ----------------------------------------------------------


def _error(data, compression="auto", chunk=1 << 20) -> str:
    t0 = time.monotonic()
    with pytest.raises(TarError) as info:
        for _ in iter_entries(chunked(data, chunk), compression):
            pass
    assert time.monotonic() - t0 < 10
    message = str(info.value)
    assert "\n" not in message
    return message


def test_random_bytes_are_not_a_tar():
    assert _error(os.urandom(10_000)) == "not a tar archive"
    assert _error(b"hello world, definitely not a tar") == "not a tar archive"
    assert _error(random.Random(1).randbytes(513)) == "not a tar archive"


def test_double_compressed_is_explained():
    raw = make_tar(common_members())
    assert "gzip-compressed once more" in _error(gzip.compress(gzip.compress(raw)))


def test_bad_checksum():
    raw = bytearray(make_tar(common_members(), format=tarfile.GNU_FORMAT))
    first = bytearray(raw)
    first[0] ^= 0x01
    assert _error(bytes(first)) == "not a tar archive"
    offsets = [e[12] for e in expected_entries(bytes(raw))]
    second = offsets[2]
    raw[second + 10] ^= 0x20
    assert _error(bytes(raw)) == f"corrupt tar header at offset {second} (bad checksum)"


def test_truncated_streams():
    raw = make_tar(common_members())
    big = [e for e in expected_entries(raw) if e[0] == "home/user/big.bin"][0]
    cut_content = raw[: big[13] + 1000]
    assert _error(cut_content).startswith("truncated tar stream")
    cut_header = raw[: big[12] + 100]
    assert _error(cut_header).startswith("truncated tar stream")
    assert _error(gzip.compress(raw)[:-100]).startswith("truncated gzip stream")
    assert _error(gzip.compress(raw)[:5000]).startswith(("truncated gzip stream", "truncated tar stream"))
    assert _error(zstd_frames(raw, [20000])[:-30]).startswith("truncated zstd stream")
    assert _error(zstandard.ZstdCompressor().compress(raw)[:3000]).startswith("truncated zstd stream")
    # EOF right after an extension header: no entry, no error (Go's reader);
    # but an extension header cut short is
    assert listing(raw_header(b"././@PaxHeader", 20, b"x") + pad(b"20 path=abcdefghijk\n")) == []
    assert "is cut short" in _error(raw_header(b"././@PaxHeader", 20, b"x") + b"20 path=abc")


def test_corrupt_gzip():
    raw = make_tar(common_members())
    blob = bytearray(gzip.compress(raw))
    blob[len(blob) // 2 : len(blob) // 2 + 8] = b"\xff" * 8
    assert _error(bytes(blob)).startswith(("corrupt gzip data", "truncated"))
    crc = bytearray(gzip.compress(raw))
    crc[-8] ^= 0xFF
    assert _error(bytes(crc)).startswith("corrupt gzip data")
    assert _error(b"\x1f\x8b\x08\x00" + b"\xee" * 100).startswith("corrupt gzip data")


def test_corrupt_zstd():
    raw = make_tar(common_members())
    blob = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    blob[len(blob) // 2 : len(blob) // 2 + 16] = b"\x00" * 16
    assert _error(bytes(blob)).startswith("corrupt zstd data")
    assert _error(b"\x28\xb5\x2f\xfd" + b"\xff" * 100).startswith("corrupt zstd data")


def test_gzip_bomb_is_stopped():
    # A tar entry of 320 MiB of zeros at deflate's best ratio (~1010:1 here).
    # After a full flush the deflater's state is all zeros again, so the
    # compressed form of 16 MiB of zeros repeats byte for byte: the bomb is
    # built from one unit without compressing (or holding) 320 MiB.
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(16 << 20)
    head = comp.compress(raw_header(b"bomb", 320 << 20)) + comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    unit = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH) == unit
    blob = head + unit * 19 + comp.flush()
    assert len(blob) * 1000 < 320 << 20
    message = _error(blob)
    assert message.startswith("decompression ratio exceeds 1000:1 (gzip bomb?)")


def test_zstd_bomb_is_stopped():
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    blob = zstandard.ZstdCompressor().compress(raw_header(b"bomb", 1 << 32)) + frame * 64
    assert _error(blob).startswith("decompression ratio exceeds 1000:1")


def test_ratio_guard_spares_normal_layers(monkeypatch):
    monkeypatch.setattr(decompress_module, "RATIO_CHECK_AFTER", 1 << 20)
    raw = make_tar([_info("text", data=b"hello world " * 300_000)])
    assert [e[0] for e in listing(gzip.compress(raw))] == ["text"]


def test_huge_pax_header():
    raw = raw_header(b"././@PaxHeader", 10 << 20, b"x") + bytes(10 << 20)
    t0 = time.monotonic()
    message = _error(raw)
    assert "extension header of 10485760 bytes" in message
    assert time.monotonic() - t0 < 1


def test_endless_pax_chain():
    record = b"30 path=aaaaaaaaaaaaaaaaaaaaa\n"
    assert len(record) == 30
    raw = b"".join(raw_header(b"././@PaxHeader", len(record), b"x") + pad(record) for _ in range(40))
    assert "more than 32 extension headers" in _error(raw + raw_header(b"f", 0) + bytes(1024))
    # 32 in a row is still fine
    ok = b"".join(raw_header(b"././@PaxHeader", len(record), b"x") + pad(record) for _ in range(32))
    assert [e.path for e in iter_entries([ok + raw_header(b"f", 0) + bytes(1024)])] == ["a" * 21]


def test_endless_gnu_longname_chain():
    name = b"n" * 200 + b"\0"
    raw = b"".join(raw_header(b"././@LongLink", len(name), b"L", magic=b"ustar  \0") + pad(name) for _ in range(40))
    assert "more than 32 extension headers" in _error(raw)


def test_corrupt_pax_records():
    for body in (b"99 path=short\n", b"abc path=x\n", b"10 pathx\n\n", b"5 a=b\n"):
        raw = raw_header(b"././@PaxHeader", len(body), b"x") + pad(body) + raw_header(b"f", 0) + bytes(1024)
        assert _error(raw).startswith("corrupt pax header at offset 0")


def test_negative_and_absurd_sizes():
    negative = raw_header(b"neg", size_field=b"\xff" * 12) + bytes(1024)
    assert "impossible size -1" in _error(negative)
    absurd = raw_header(b"absurd", size_field=b"\x80" + (1 << 41).to_bytes(11, "big")) + bytes(1024)
    assert "impossible size" in _error(absurd)
    bad_octal = raw_header(b"bad", size_field=b"12345678zz\0\0") + bytes(1024)
    assert "bad size field" in _error(bad_octal)
    pax_size = pax_record("size", "-123456789")
    raw = raw_header(b"././@PaxHeader", len(pax_size), b"x") + pad(pax_size) + raw_header(b"f", 0) + bytes(1024)
    assert "impossible size" in _error(raw)


def test_errors_are_layerslayer_errors():
    from layerslayer.errors import LayerslayerError

    assert issubclass(TarError, LayerslayerError)
    assert TarError("x").exit_code == 1


def test_reader_iterates_once():
    reader = TarReader([make_tar(common_members())])
    list(reader)
    with pytest.raises(RuntimeError):
        iter(reader)



# --- archives written by GNU tar ----------------------------------------------


@pytest.mark.parametrize(
    "fmt,sparse",
    [("posix", False), ("posix", True), ("gnu", False), ("gnu", True), ("oldgnu", True), ("ustar", False), ("v7", False)],
)
def test_gnu_tar_archives(tmp_path, fmt, sparse):
    import subprocess

    root = tmp_path / "root"
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/sub/file.txt").write_bytes(b"hello\n")
    (root / "dir/exec").write_bytes(b"#!/bin/sh\n")
    (root / "dir/exec").chmod(0o755)
    os.symlink("sub/file.txt", root / "dir/link")
    os.link(root / "dir/sub/file.txt", root / "dir/hardlink")
    if fmt != "v7":
        os.mkfifo(root / "dir/fifo")
    (root / "dir/.wh..wh..opq").write_bytes(b"")
    if fmt not in ("ustar", "v7"):
        (root / ("dir/" + "long-name-" * 15)).write_bytes(b"long")
        (root / "dir/ünïcödé").write_bytes(b"u")
    with open(root / "dir/sparse.img", "wb") as f:
        f.seek(5 << 20)
        f.write(b"data in the middle")
        f.truncate(12 << 20)
    archive = tmp_path / "out.tar"
    cmd = ["tar", f"--format={fmt}", "-C", str(root), "-cf", str(archive)]
    if sparse:
        cmd.append("--sparse")
    subprocess.run(cmd + ["."], check=True, capture_output=True)
    raw = archive.read_bytes()
    got = [as_tuple(e) for e in TarReader(chunked(raw, 1000))]
    expected = expected_entries(raw)
    assert [g[:12] for g in got] == [e[:12] for e in expected]
    by_path = {g[0]: g for g in got}
    assert by_path["dir/sparse.img"][1:3] == ("file", 12 << 20)
    assert by_path["dir/link"][9] == "sub/file.txt"
    if fmt != "v7":
        assert by_path["dir/fifo"][1] == "fifo"
    if not sparse:
        assert [g[12:] for g in got] == [e[12:] for e in expected]
