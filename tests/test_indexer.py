"""`layerslayer index` against a real registry: every tar flavour, dedup,
resume after SIGKILL, corrupt layers, --all-tags, --catalog, lazy-pull TOCs."""

import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time

import pytest
from click.testing import CliRunner
from harness.builder import (
    blockdev,
    chardev,
    dir_,
    fifo,
    file,
    foreign_layer,
    hardlink,
    layer,
    opaque,
    push_image,
    push_index,
    raw_layer,
    read_tar,
    symlink,
    tar_layer,
    whiteout,
)
from harness.dbrows import rows
from harness.lazy_layers import build_estargz, build_zstd_chunked, member
from harness.wait import wait_until

from layerslayer.cli import cli
from layerslayer.store import path_from_row
from layerslayer.tarstream import normalize_path

TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}


def index(db, *args):
    return CliRunner().invoke(cli, ["index", str(db), *[str(a) for a in args]])



def layer_files(db, digest):
    "What the index holds for a layer, in tar order, in tarfile's terms."
    return [
        (path_from_row(path, path_bytes), type_, size, mode, uid, gid, uname, gname, int(mtime), linkname)
        for path, path_bytes, type_, size, mode, uid, gid, uname, gname, mtime, linkname in rows(
            db,
            "SELECT path, path_bytes, type, size, mode, uid, gid, uname, gname, mtime, linkname "
            "FROM files WHERE layer_digest = ? ORDER BY position",
            [digest],
        )
    ]


def tarfile_view(tar: bytes):
    expected = []
    for info in read_tar(tar):
        path = normalize_path(info.name)
        if not path:
            continue
        linkname = normalize_path(info.linkname) if info.type == tarfile.LNKTYPE else info.linkname
        expected.append((
            path, TYPES[info.type], info.size if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0,
            info.mode & 0o7777, info.uid, info.gid, info.uname, info.gname, int(info.mtime), linkname,
        ))
    return expected


ODD_MEMBERS = [
    dir_("etc"),
    file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    file("usr/bin/sudo", b"\x7fELF", mode=0o4755, uid=0, gid=0),
    dir_("usr/share/" + "d" * 120),
    file("usr/share/" + "d" * 120 + "/" + "f" * 150, b"long"),
    symlink("bin", "usr/bin"),
    symlink("etc/link-" + "l" * 40, "/" + "t" * 200),
    hardlink("etc/passwd.bak", "etc/passwd"),
    chardev("dev/null", 1, 3),
    blockdev("dev/sda", 8, 0),
    fifo("run/pipe"),
    whiteout("etc/shadow"),
    opaque("var/cache"),
    file("odd/with space", b"x"),
    file("odd/new\nline", b"x"),
    file("odd/glob*?[x]", b"x"),
    file(b"odd/\xff\xfe-not-utf8", b"x"),
    file("odd/ünïcödé", b"x"),
    file("big/uid", b"x", uid=3_000_000, gid=2_500_000, uname="someone", gname="group"),
]


@pytest.mark.parametrize("fmt", ["pax", "gnu", "ustar"])
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_every_tar_flavour_matches_tarfile(registry, unique_repo, tmp_path, fmt, compression):
    members = ODD_MEMBERS
    if fmt == "ustar":  # ustar cannot hold long link targets, non-UTF-8 or > 8-digit ids
        members = [m for m in ODD_MEMBERS if not (m.path.startswith(("etc/link-", "big/", "odd/\udcff")) or "f" * 150 in m.path)]
    lay = layer(members, compression=compression, format=fmt)
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    db = tmp_path / "index.db"
    result = index(db, pushed.ref)
    assert result.exit_code == 0, result.output
    assert layer_files(db, lay.digest) == tarfile_view(lay.tar)
    assert rows(db, "SELECT status, entries, listed_via FROM layers WHERE digest = ?", [lay.digest]) == [
        ("indexed", len(tarfile_view(lay.tar)), "stream")
    ]


def test_whiteouts_flagged(registry, unique_repo, tmp_path):
    lay = layer([file("a/b", "1"), whiteout("etc/shadow"), opaque("var/cache")])
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    db = tmp_path / "index.db"
    assert index(db, pushed.ref).exit_code == 0
    assert rows(db, "SELECT path, whiteout, opaque FROM files ORDER BY position") == [
        ("a/b", 0, 0), ("etc/.wh.shadow", 1, 0), ("var/cache/.wh..wh..opq", 1, 1),
    ]


def test_multi_member_gzip_and_multi_frame_zstd(registry, unique_repo, tmp_path):
    gz = layer({f"f{i}": f"{i}" * 1000 for i in range(30)}, compression="gzip", chunks=4)
    zs = layer({f"g{i}": f"{i}" * 1000 for i in range(30)}, compression="zstd", chunks=4)
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[gz, zs])
    db = tmp_path / "index.db"
    assert index(db, pushed.ref).exit_code == 0
    assert rows(db, "SELECT count(*) FROM files") == [(60,)]


def test_history_platforms_and_layers_recorded(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"], attestation=True)
    db = tmp_path / "index.db"
    result = index(db, pushed.ref, "--all-platforms")
    assert result.exit_code == 0, result.output
    platforms = rows(db, "SELECT platform, attestation FROM platforms ORDER BY id")
    assert sorted(platforms) == [("attestation", 1), ("attestation", 1), ("linux/amd64", 0), ("linux/arm64/v8", 0)]
    assert "2 platforms" in result.output
    # Attestation manifests' blobs are never downloaded or indexed as filesystems.
    attestation_layers = {layer.digest for a in pushed.attestations for layer in a.layers}
    indexed = {d for (d,) in rows(db, "SELECT digest FROM layers")}
    assert not attestation_layers & indexed


def test_shared_layer_downloaded_once(fault_proxy, unique_repo, tmp_path):
    base = layer({f"usr/lib/lib{i}.so": os.urandom(2000) for i in range(50)})
    one = push_image(fault_proxy, f"{unique_repo('one')}:v1", layers=[base, layer({"app/one": "1"})])
    two = push_image(fault_proxy, f"{unique_repo('two')}:v1", layers=[base, layer({"app/two": "2"})])
    db = tmp_path / "index.db"
    fault_proxy.clear_records()
    first = index(db, one.ref)
    assert first.exit_code == 0 and "2 indexed, 0 reused" in first.output
    second = index(db, two.ref)
    assert second.exit_code == 0, second.output
    assert "1 indexed, 1 reused" in second.output
    assert fault_proxy.count(f"/blobs/{base.digest}", method="GET") == 1
    # Re-indexing everything downloads no layer bytes at all.
    fault_proxy.clear_records()
    again = index(db, one.ref, two.ref)
    assert "0 indexed, 4 reused" in again.output and "0.0 B of layers downloaded" in again.output
    layer_digests = {layer.digest for layer in one.layers + two.layers}
    assert sum(fault_proxy.bytes_served(f"/blobs/{d}") for d in layer_digests) == 0


def test_corrupt_layer_fails_alone_and_is_retried(registry, unique_repo, tmp_path):
    good = layer({"ok/file": "fine"})
    bad = raw_layer(b"\x1f\x8b\x08\x00" + os.urandom(3000))
    not_tar = tar_layer(os.urandom(4096), compression="gzip")
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[good, bad, not_tar])
    db = tmp_path / "index.db"
    result = index(db, pushed.ref)
    assert result.exit_code == 1
    assert "1 indexed, 0 reused, 2 failed" in result.output
    status = dict(rows(db, "SELECT digest, status FROM layers"))
    assert status == {good.digest: "indexed", bad.digest: "failed", not_tar.digest: "failed"}
    errors = dict(rows(db, "SELECT digest, error FROM layers WHERE status = 'failed'"))
    assert all(errors.values()) and all("\n" not in e for e in errors.values())
    assert "Traceback" not in result.output
    # The next run retries only the failed layers.
    again = index(db, pushed.ref)
    assert again.exit_code == 1 and "0 indexed, 1 reused, 2 failed" in again.output


def test_digest_mismatch_is_a_failure(fault_proxy, unique_repo, tmp_path):
    lay = layer({"x": os.urandom(5000)}, compression="none")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.corrupt("/blobs/" + lay.digest, times=None, offset=700)
    db = tmp_path / "index.db"
    result = index(db, pushed.ref)
    assert result.exit_code == 1
    assert rows(db, "SELECT status FROM layers") == [("failed",)]
    assert "does not match its digest" in rows(db, "SELECT error FROM layers")[0][0]
    assert rows(db, "SELECT count(*) FROM entries") == [(0,)]


def test_foreign_layers_recorded_not_fetched(registry, unique_repo, tmp_path):
    foreign = foreign_layer(layer({"Windows/System32/x.dll": "x"}), urls=["https://example.invalid/base"])
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[foreign, layer({"app": "1"})], media="docker")
    db = tmp_path / "index.db"
    result = index(db, pushed.ref)
    assert result.exit_code == 0, result.output
    assert "1 foreign skipped" in result.output
    assert rows(db, "SELECT status FROM layers WHERE digest = ?", [foreign.digest]) == [("foreign",)]


def test_all_tags(registry, unique_repo, tmp_path):
    repo = unique_repo()
    for tag in ("v1", "v2", "v3"):
        push_image(registry, f"{repo}:{tag}", layers=[layer({f"{tag}.txt": tag})])
    db = tmp_path / "index.db"
    result = index(db, f"{registry.host}/{repo}", "--all-tags", "--page-size", "2")
    assert result.exit_code == 0, result.output
    assert sorted(t for (t,) in rows(db, "SELECT tag FROM images")) == ["v1", "v2", "v3"]


def test_catalog_with_pagination(registry_factory, tmp_path):
    reg = registry_factory("anonymous", catalog_max_entries=2)
    for repo in ("c/a", "c/b", "c/c"):
        for tag in ("t1", "t2"):
            push_image(reg, f"{repo}:{tag}", layers=[layer({f"{repo}/{tag}": "x"})])
    db = tmp_path / "index.db"
    result = index(db, reg.host, "--catalog", "--page-size", "2")
    assert result.exit_code == 0, result.output
    assert "6 images" in result.output
    assert len(rows(db, "SELECT DISTINCT repository FROM images")) == 3
    limited = tmp_path / "limited.db"
    assert index(limited, reg.host, "--catalog", "--limit", "1", "--page-size", "2").exit_code == 0
    assert rows(limited, "SELECT DISTINCT repository FROM images") == [("c/a",)]


def test_catalog_takes_hosts_only(tmp_path):
    result = index(tmp_path / "x.db", "localhost:5000/repo", "--catalog")
    assert result.exit_code == 2


def lazy_members():
    return [
        member("etc", tarfile.DIRTYPE),
        member("etc/hosts", data=b"127.0.0.1 localhost\n"),
        member("usr/bin/tool", data=os.urandom(2_000_000), mode=0o755),
        member("usr/bin/t", tarfile.SYMTYPE, linkname="tool"),
        member("home/u/.ssh/id_rsa", data=b"-----BEGIN OPENSSH PRIVATE KEY-----", mode=0o600, uid=1000, gid=1000),
    ]


@pytest.mark.parametrize("builder,listed_via", [(build_estargz, "estargz-toc"), (build_zstd_chunked, "zstd-chunked-toc")])
def test_lazy_pull_layers_listed_from_toc(fault_proxy, unique_repo, tmp_path, builder, listed_via):
    lazy = builder(lazy_members())
    lay = raw_layer(lazy.blob, media_type=lazy.media_type, annotations=lazy.annotations, diff_id=lazy.diff_id)
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    db = tmp_path / "index.db"
    fault_proxy.clear_records()
    result = index(db, pushed.ref)
    assert result.exit_code == 0, result.output
    paths = {p for (p,) in rows(db, "SELECT path FROM files")}
    assert {"etc/hosts", "usr/bin/tool", "usr/bin/t", "home/u/.ssh/id_rsa"} <= paths
    assert rows(db, "SELECT listed_via FROM layers") == [(listed_via,)]
    blob_gets = fault_proxy.find("/blobs/" + lay.digest, method="GET")
    assert blob_gets and all(r.headers.get("Range") for r in blob_gets)
    assert len(blob_gets) <= 2
    assert fault_proxy.bytes_served("/blobs/" + lay.digest) < lay.size * 0.1


def test_lazy_toc_digest_mismatch_falls_back_to_streaming(registry, unique_repo, tmp_path):
    lazy = build_estargz(lazy_members())
    annotations = dict(lazy.annotations)
    annotations["containerd.io/snapshot/stargz/toc.digest"] = "sha256:" + "0" * 64
    lay = raw_layer(lazy.blob, media_type=lazy.media_type, annotations=annotations, diff_id=lazy.diff_id)
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    db = tmp_path / "index.db"
    result = index(db, pushed.ref)
    assert result.exit_code == 0, result.output
    assert "table of contents unusable" in result.output
    # The blob digest vouches for the streamed listing instead.
    assert rows(db, "SELECT status, listed_via FROM layers") == [("indexed", "stream")]
    assert ("home/u/.ssh/id_rsa",) in rows(db, "SELECT path FROM files")


def test_resume_after_sigkill_mid_layer(fault_proxy, unique_repo, tmp_path):
    small = layer({"small/file": "s"})
    big = layer({f"data/{i}": os.urandom(4096) for i in range(400)}, compression="gzip")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[small, big])
    db = tmp_path / "index.db"
    # Stall the big blob half way, so the run is certainly mid-layer when killed.
    fault_proxy.stall("/blobs/" + big.digest, seconds=30, after=big.size // 2)
    process = subprocess.Popen(
        [sys.executable, "-m", "layerslayer", "index", str(db), pushed.ref, "--jobs", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    wait_until(lambda: fault_proxy.bytes_served("/blobs/" + big.digest) >= big.size // 2, 20,
               what="half the big layer served")
    time.sleep(0.3)  # for the client to take in what it received
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    # Nothing of the big layer is visible; the small one may or may not have been committed.
    assert rows(db, "SELECT status FROM layers WHERE digest = ?", [big.digest]) in ([("pending",)], [])
    assert rows(db, "SELECT count(*) FROM files WHERE layer_digest = ?", [big.digest]) == [(0,)]
    fault_proxy.clear_faults()
    result = index(db, pushed.ref)
    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT count(*) FROM files WHERE layer_digest = ?", [big.digest]) == [(400,)]
    assert rows(db, "SELECT count(*) FROM files WHERE layer_digest = ?", [small.digest]) == [(1,)]


def test_two_processes_one_database(registry, unique_repo, tmp_path):
    shared = layer({f"shared/{i}": os.urandom(1000) for i in range(200)})
    refs = [
        push_image(registry, f"{unique_repo(str(n))}:v1", layers=[shared, layer({f"own/{n}/{i}": str(i) for i in range(100)})]).ref
        for n in range(4)
    ]
    db = tmp_path / "index.db"
    procs = [
        subprocess.Popen([sys.executable, "-m", "layerslayer", "index", str(db), *refs[i::2]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
    assert rows(db, "SELECT count(*) FROM images") == [(4,)]
    assert rows(db, "SELECT count(*) FROM layers WHERE status = 'indexed'") == [(5,)]
    assert rows(db, "SELECT count(*) FROM files") == [(600,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_summary_line_and_quiet(registry, unique_repo, tmp_path):
    pushed = push_image(registry, f"{unique_repo()}:v1")
    result = index(tmp_path / "i.db", pushed.ref, "--quiet")
    assert result.exit_code == 0
    assert result.output.startswith("Indexed 1 image, 1 platform, layers: 1 indexed, 0 reused, 0 failed")


def test_unknown_image_recorded_as_error(registry, unique_repo, tmp_path):
    good = push_image(registry, f"{unique_repo()}:v1")
    result = index(tmp_path / "i.db", f"{registry.host}/{unique_repo()}:missing", good.ref)
    assert result.exit_code == 1
    assert "image not found" in result.output
    assert "Indexed 2 images (1 failed), 1 platform" in result.output


def test_not_an_index_database(tmp_path):
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    result = index(db, "localhost:5000/x:y")
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert db.read_bytes() == before
