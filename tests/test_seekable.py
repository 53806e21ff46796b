"""Checkpoints into big gzip layers: recorded while indexing, then
`cat` and `extract --db` read one file with one Range request from the
checkpoint before it. Bytes are counted at the fault proxy."""

from __future__ import annotations

import gzip
import os
import random
import sqlite3
import tarfile
import zlib

import pytest
from click.testing import CliRunner
from harness.builder import compress, file, layer, push_image

from layerslayer import seekable
from layerslayer.cli import cli
from layerslayer.decompress import decompress
from layerslayer.errors import TarError

SPAN = 1 << 20


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def text(n: int, seed: int) -> bytes:
    "Compressible but not trivial bytes: words drawn at random (back references across blocks)."
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(4000)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def big_members(seed: int = 1) -> list:
    "About 12 MiB of gzip: noise (stored blocks) and text (Huffman blocks), a small file at the end."
    rng = random.Random(seed)
    members = []
    for i in range(12):
        members.append(file(f"data/noise{i:02}.bin", rng.randbytes(700_000)))
        members.append(file(f"data/text{i:02}.txt", text(600_000, seed + i)))
    members.append(file("usr/share/man/man1/tool.1", text(20_000, 99)))
    return members


@pytest.fixture(scope="module")
def big_image(registry):
    lay = layer(big_members())
    assert len(lay.blob) > seekable.DEFAULT_MIN_SIZE
    pushed = push_image(registry, "seek/big:v1", layers=[lay])
    return pushed, lay


@pytest.fixture(scope="module")
def big_db(big_image, tmp_path_factory):
    pushed, _ = big_image
    db = tmp_path_factory.mktemp("seek") / "big.db"
    result = run("index", db, pushed.ref, "--quiet", "--span", "1MiB", "--plain-http")
    assert result.exit_code == 0, result.output
    return db


def proxied(ref: str, proxy) -> str:
    return ref.replace(ref.split("/")[0], proxy.host, 1)


def members_bytes(lay, name: str) -> bytes:
    return next(m.data for m in lay.members if m.name == name)


# -- the library --------------------------------------------------------------------


def chunked(blob: bytes, n: int = 100_003):
    return [blob[i:i + n] for i in range(0, len(blob), n)]


@pytest.mark.parametrize("members", [1, 3])
def test_resume_from_every_checkpoint_gives_the_same_bytes(members):
    tar = b"".join(text(400_000, i) + random.Random(i).randbytes(300_000) for i in range(6))
    blob = compress(tar, "gzip", chunks=members)
    points: list[seekable.Checkpoint] = []
    out = b"".join(seekable.gunzip_checkpointed(chunked(blob), points, span=256 << 10))
    assert out == tar == b"".join(decompress(chunked(blob), "gzip"))
    assert len(points) >= len(blob) // (256 << 10) - members - 1
    for point in points:
        assert len(point.window) == seekable.WINDOW
        resumed = b"".join(seekable.inflate_from(chunked(blob[point.start:], 65_537), point))
        assert resumed == tar[point.out:], point


def test_checkpointed_inflate_refuses_truncated_and_corrupt_gzip():
    blob = gzip.compress(text(300_000, 5))
    with pytest.raises(TarError, match="truncated gzip stream"):
        b"".join(seekable.gunzip_checkpointed([blob[:-100]], []))
    bad = bytearray(blob)
    bad[200:260] = b"\xff" * 60
    with pytest.raises(TarError, match="corrupt gzip data"):
        b"".join(seekable.gunzip_checkpointed([bytes(bad)], []))


# -- index --------------------------------------------------------------------------


def test_index_records_checkpoints_every_span_small_and_in_one_pass(big_image, big_db):
    _, lay = big_image
    with sqlite3.connect(big_db) as conn:
        rows = conn.execute("SELECT uncompressed, bits, window FROM checkpoints ORDER BY uncompressed").fetchall()
    assert len(lay.blob) // SPAN - 2 <= len(rows) <= len(lay.blob) // SPAN + 1
    starts = [bits // 8 for _, bits, _ in rows]
    assert all(b - a >= SPAN for a, b in zip(starts, starts[1:]))
    # a window is at most 32 KiB (less when it compresses): <= 1 % of the blob with the 4 MiB default span
    assert sum(len(w) for _, _, w in rows) <= len(rows) * (seekable.WINDOW + 64)
    for out, _bits, window in rows:
        assert zlib.decompress(window) == lay.tar[out - seekable.WINDOW:out]


def test_small_layers_and_span_0_get_no_checkpoints(registry, big_image, tmp_path):
    small = push_image(registry, "seek/small:v1", layers=[layer({"etc/motd": "hi\n"})])
    db = tmp_path / "i.db"
    assert run("index", db, small.ref, "--quiet", "--plain-http").exit_code == 0
    assert run("index", db, big_image[0].ref, "--quiet", "--span", "0", "--plain-http").exit_code == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 0


@pytest.mark.parametrize("span", ["12K", "lots"])
def test_bad_span_is_one_line(span, tmp_path):
    result = run("index", tmp_path / "i.db", "localhost:1/x:y", "--span", span)
    assert result.exit_code == 2
    assert "--span" in result.output and "Traceback" not in result.output


# -- cat / extract ------------------------------------------------------------------


def test_cat_with_db_reads_one_range_from_the_checkpoint(big_image, big_db, fault_proxy):
    pushed, lay = big_image
    want = members_bytes(lay, "usr/share/man/man1/tool.1")
    fault_proxy.clear_records()
    result = run("cat", proxied(pushed.ref, fault_proxy), "/usr/share/man/man1/tool.1", "--db", big_db, "--plain-http")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == want
    gets = fault_proxy.find(r"/blobs/sha256:" + lay.digest[7:], "GET")
    assert len(gets) == 1 and gets[0].headers.get("Range")
    assert gets[0].bytes_sent <= SPAN + len(want) + (64 << 10)
    assert "digest cannot be" in result.stderr


def test_cat_without_db_streams_and_finds_the_same_file(big_image, fault_proxy):
    pushed, lay = big_image
    fault_proxy.clear_records()
    result = run("cat", proxied(pushed.ref, fault_proxy), "usr/share/man/man1/tool.1", "--plain-http")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == members_bytes(lay, "usr/share/man/man1/tool.1")
    assert fault_proxy.bytes_served(lay.digest) >= len(lay.blob) * 0.9


def test_extract_with_db_uses_the_checkpoint_for_files_in_the_middle(big_image, big_db, fault_proxy, tmp_path):
    pushed, lay = big_image
    fault_proxy.clear_records()
    out = tmp_path / "out"
    result = run("extract", proxied(pushed.ref, fault_proxy), "data/text05.txt", "data/noise06.bin",
                 "--db", big_db, "-o", out, "--plain-http")
    assert result.exit_code == 0, result.output
    assert (out / "data/text05.txt").read_bytes() == members_bytes(lay, "data/text05.txt")
    assert (out / "data/noise06.bin").read_bytes() == members_bytes(lay, "data/noise06.bin")
    served = fault_proxy.bytes_served(lay.digest)
    assert served <= 2 * SPAN + 1_300_000 + (64 << 10) < len(lay.blob) // 3
    assert len(fault_proxy.find(lay.digest, "GET")) == 1


def test_registry_ignoring_range_falls_back_and_says_so_once(big_image, big_db, fault_proxy, tmp_path):
    pushed, lay = big_image
    fault_proxy.ignore_range(times=None)
    result = run("extract", proxied(pushed.ref, fault_proxy), "usr/share/man/man1/tool.1",
                 "--db", big_db, "-o", tmp_path, "--plain-http")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "usr/share/man/man1/tool.1").read_bytes() == members_bytes(lay, "usr/share/man/man1/tool.1")
    assert result.stderr.count("ignores Range requests") == 1


def test_streaming_extract_says_once_that_the_registry_ignores_range(big_image, fault_proxy, tmp_path):
    pushed, lay = big_image
    fault_proxy.ignore_range(times=None)
    result = run("extract", proxied(pushed.ref, fault_proxy), "tool.1", "-o", tmp_path, "--plain-http")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "usr/share/man/man1/tool.1").read_bytes() == members_bytes(lay, "usr/share/man/man1/tool.1")
    assert result.stderr.count("ignores Range requests") == 1


def test_verify_reads_the_whole_layer(big_image, big_db, fault_proxy):
    pushed, lay = big_image
    fault_proxy.clear_records()
    result = run("cat", proxied(pushed.ref, fault_proxy), "/usr/share/man/man1/tool.1", "--db", big_db,
                 "--verify", "--plain-http")
    assert result.exit_code == 0, result.output
    assert fault_proxy.bytes_served(lay.digest) >= len(lay.blob)


def test_index_of_another_blob_is_caught_by_the_size_check(registry, big_image, big_db, tmp_path):
    "A checkpoint is trusted only as far as the entry it reaches has the size the index recorded."
    from layerslayer import store

    pushed, lay = big_image
    db = tmp_path / "copy.db"
    db.write_bytes(big_db.read_bytes())
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE entries SET size = size + 1 WHERE path_id = "
                     "(SELECT id FROM paths WHERE path = 'usr/share/man/man1/tool.1')")
    assert store  # the library writes; this test only damages a copy
    result = run("cat", pushed.ref, "/usr/share/man/man1/tool.1", "--db", db, "--plain-http")
    assert result.exit_code != 0
    assert "the index says" in result.output and "Traceback" not in result.output


# -- lazy-pull layers: files by their TOC offsets --------------------------------------


def lazy_files():
    from harness.lazy_layers import member

    rng = random.Random(3)
    return [
        member("etc", tarfile.DIRTYPE),
        member("usr/lib/big.so", data=rng.randbytes(3_000_000)),
        member("usr/share/man/man1/tool.1", data=text(20_000, 4)),
        member("usr/lib/more.so", data=rng.randbytes(2_000_000)),
        member("usr/bin/t", tarfile.SYMTYPE, linkname="../lib/big.so"),
    ]


@pytest.fixture(scope="module", params=["estargz", "zstd-chunked"])
def lazy_image(request, registry, tmp_path_factory):
    from harness.builder import raw_layer
    from harness.lazy_layers import build_estargz, build_zstd_chunked

    builder = build_estargz if request.param == "estargz" else build_zstd_chunked
    lazy = builder(lazy_files(), **({"chunk_size": 1 << 20} if request.param == "estargz" else {}))
    lay = raw_layer(lazy.blob, media_type=lazy.media_type, annotations=lazy.annotations, diff_id=lazy.diff_id)
    pushed = push_image(registry, f"seek/lazy-{request.param}:v1", layers=[lay])
    db = tmp_path_factory.mktemp("lazy") / "lazy.db"
    result = run("index", db, pushed.ref, "--quiet", "--plain-http")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT listed_via FROM layers").fetchone()[0] == f"{request.param}-toc"
    return pushed, lay, db, {m[0].name: m[1] for m in lazy_files()}


def test_cat_reads_a_lazy_layer_file_by_its_toc_offsets(lazy_image, fault_proxy):
    pushed, lay, db, data = lazy_image
    fault_proxy.clear_records()
    result = run("cat", proxied(pushed.ref, fault_proxy), "/usr/share/man/man1/tool.1", "--db", db, "--plain-http")
    assert result.exit_code == 0, result.output
    want = data["usr/share/man/man1/tool.1"]
    assert result.stdout_bytes == want
    served = fault_proxy.bytes_served(lay.digest)
    # the TOC (the blob's last 64 KiB) and the file's compressed chunk, nothing else
    assert served <= len(zlib.compress(want)) + 1024 + (64 << 10), served


def test_extract_reads_chunked_lazy_files_and_links_by_toc(lazy_image, fault_proxy, tmp_path):
    pushed, lay, db, data = lazy_image
    fault_proxy.clear_records()
    result = run("extract", proxied(pushed.ref, fault_proxy), "/usr/lib/big.so", "/usr/bin/t", "--db", db,
                 "-o", tmp_path, "--plain-http")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "usr/lib/big.so").read_bytes() == data["usr/lib/big.so"]
    assert os.readlink(tmp_path / "usr/bin/t") == "../lib/big.so"
    assert not (tmp_path / "usr/lib/more.so").exists()
    assert fault_proxy.bytes_served(lay.digest) <= 3_000_000 + 4096 + (64 << 10)


def test_extract_verify_of_a_lazy_layer_streams_it_and_finds_files_by_path(lazy_image, fault_proxy, tmp_path):
    "The index holds TOC offsets for such layers, not tar offsets: the streamed path matches by path."
    pushed, lay, db, data = lazy_image
    fault_proxy.clear_records()
    result = run("extract", proxied(pushed.ref, fault_proxy), "/usr/share/man/man1/tool.1", "/usr/bin/t",
                 "--db", db, "-o", tmp_path, "--verify", "--plain-http")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "usr/share/man/man1/tool.1").read_bytes() == data["usr/share/man/man1/tool.1"]
    assert os.readlink(tmp_path / "usr/bin/t") == "../lib/big.so"
    assert fault_proxy.bytes_served(lay.digest) >= lay.size


def test_a_lazy_chunk_that_does_not_match_its_digest_is_refused(lazy_image, fault_proxy, tmp_path):
    pushed, lay, db, data = lazy_image
    blob_size = lay.size
    fault_proxy.corrupt(lay.digest, offset=200_000, times=None)  # a chunk, not the TOC
    result = run("cat", proxied(pushed.ref, fault_proxy), "/usr/lib/big.so", "--db", db, "--plain-http")
    assert result.exit_code != 0
    assert ("does not match its digest" in result.output or "corrupt chunk" in result.output), result.output
    assert "Traceback" not in result.output and blob_size


@pytest.mark.parametrize("kind", ["estargz", "zstd-chunked"])
@pytest.mark.parametrize("damage", ["chunkDigest", "digest"])
def test_toc_chunk_and_file_digests_are_checked(kind, damage):
    from harness.lazy_layers import build_estargz, build_zstd_chunked

    from layerslayer import toc
    from layerslayer.errors import VerificationError

    lazy = (build_estargz if kind == "estargz" else build_zstd_chunked)(lazy_files())

    def fetch(start, end):
        return lazy.blob[start:end + 1]

    doc = toc.read_document(fetch, len(lazy.blob), lazy.annotations)
    chunks, digest = toc.file_chunks(doc, "usr/share/man/man1/tool.1")
    assert b"".join(toc.read_chunks(fetch, kind, chunks, digest, "x")) == dict(
        (m[0].name, m[1]) for m in lazy_files())["usr/share/man/man1/tool.1"]
    if damage == "chunkDigest":
        if not chunks[0].digest:
            chunks[0].digest = "sha256:" + "0" * 64  # zstd:chunked files of one chunk carry only "digest"
        else:
            chunks[0].digest = "sha256:" + "1" * 64
    else:
        digest = "sha256:" + "2" * 64
    with pytest.raises(VerificationError, match="does not match its digest"):
        b"".join(toc.read_chunks(fetch, kind, chunks, digest, "x"))
