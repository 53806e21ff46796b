"""Hostile layers and hostile manifests, end to end through the CLI against a real registry.

Layers: every kind of hostile blob sits in one image next to good layers; one
`layerslayer index` subprocess must fail each hostile layer with a recorded
one-line error, index the good ones, finish in bounded time and stay within a
bounded peak RSS (measured by the kernel: ``os.wait4`` rusage of the child).

Manifests: oversized, deeply nested, malformed, self-referencing, digests
that do not match, configs that are not JSON. ``inspect`` and ``index`` answer
with one clear line, never a traceback, never a hang.

The unit tests in test_tarstream.py cover the parser's limits one by one;
here the same inputs travel through the registry, the indexer and the store.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zlib

import pytest
import zstandard
from click.testing import CliRunner
from harness.builder import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    build_image,
    layer,
    push_blob,
    push_image,
    push_index,
    push_manifest,
    raw_layer,
    sha256_digest,
    tar_layer,
)
from harness.dbrows import rows
from harness.rawtar import END, MTIME, pad, pax_record, raw_header

from layerslayer.cli import cli

# Peak RSS allowed for `layerslayer index` over every hostile layer at once. A
# plain Python + layerslayer process is ~50 MB; the inputs below would need
# 256 MiB (gzip bomb), 4 GiB (zstd bomb) or 10 MiB (pax header) if anything
# were materialised.
MAX_RSS_MB = 100
# Wall-clock bound for the whole hostile run (it takes ~2 s on an idle 2-core machine).
MAX_SECONDS = 60



# -- hand-made tar pieces ----------------------------------------------------------




def good_tar(prefix: str, n: int = 5) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(n):
            data = f"{prefix} {i}\n".encode()
            info = tarfile.TarInfo(f"{prefix}/file{i}")
            info.size = len(data)
            info.mtime = MTIME
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bomb(inflated: int = 320 << 20) -> bytes:
    """A tar entry of ``inflated`` zero bytes, deflated at ~1010:1. After a full
    flush the deflater's state repeats, so the bomb is built from one 16 MiB
    unit without ever holding the inflated data."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    unit_size = 16 << 20
    zeros = bytes(unit_size)
    head = comp.compress(raw_header(b"bomb", inflated)) + comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    unit = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    return head + unit * (inflated // unit_size - 1) + comp.flush()


def zstd_bomb() -> bytes:
    "A 4 GiB entry of zeros in 64 zstd frames of 64 MiB each (~40000:1)."
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    return zstandard.ZstdCompressor().compress(raw_header(b"bomb", 1 << 32)) + frame * 64


def bad_checksum_tar() -> tuple[bytes, int]:
    raw = bytearray(good_tar("chk", 3))
    # Headers: [pax x][file0][data0][pax x][file1]...: corrupt the second real header.
    offsets = [i for i in range(0, len(raw), 512) if raw[i + 257 : i + 262] == b"ustar" and raw[i + 156] == ord("0")]
    second = offsets[1]
    raw[second + 3] ^= 0x20
    return bytes(raw), second


def hostile_layers() -> list[tuple[str, object, str]]:
    "(name, layer, expected substring of the recorded error)"
    plain = good_tar("plain", 20)
    corrupt = bytearray(gzip.compress(plain, mtime=0))
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 16] = b"\xff" * 16
    pax_10mb = raw_header(b"././@PaxHeader", 10 << 20, b"x") + b"x" * (10 << 20) + raw_header(b"after", 0) + END
    pax_rec = pax_record("path", "a" * 40)
    endless_pax = (raw_header(b"././@PaxHeader", len(pax_rec), b"x") + pad(pax_rec)) * 20_000
    long_name = b"n" * 300 + b"\0"
    endless_gnu = (raw_header(b"././@LongLink", len(long_name), b"L") + pad(long_name)) * 20_000
    negative = raw_header(b"negative", size_field=b"\xff" * 12) + END
    absurd = raw_header(b"absurd", size_field=b"\x80" + (1 << 60).to_bytes(11, "big")) + END
    pax_size = pax_record("size", "-123456789")
    pax_negative = raw_header(b"././@PaxHeader", len(pax_size), b"x") + pad(pax_size) + raw_header(b"f", 0) + END
    checksum, checksum_at = bad_checksum_tar()
    truncated = good_tar("cut", 3)
    bomb = gzip_bomb()
    assert len(bomb) * 1000 < 320 << 20  # at least 1000:1
    zbomb = zstd_bomb()
    assert len(zbomb) * 1000 < 1 << 32
    return [
        ("corrupt gzip", raw_layer(bytes(corrupt), media_type=OCI_LAYER_GZIP), "gzip"),
        ("gzip bomb", raw_layer(bomb, media_type=OCI_LAYER_GZIP), "decompression ratio exceeds 1000:1"),
        ("zstd bomb", raw_layer(zbomb, media_type=OCI_LAYER_ZSTD), "decompression ratio exceeds 1000:1"),
        ("10 MB pax header", tar_layer(pax_10mb, "gzip"), "extension header of 10485760 bytes"),
        ("endless pax chain", tar_layer(endless_pax, "gzip"), "more than 32 extension headers"),
        ("endless GNU long-name chain", tar_layer(endless_gnu, "zstd"), "more than 32 extension headers"),
        ("negative size", tar_layer(negative, "gzip"), "impossible size -1"),
        ("absurd size", tar_layer(absurd, "none"), "impossible size"),
        ("negative pax size", tar_layer(pax_negative, "gzip"), "impossible size"),
        ("bad checksum", tar_layer(checksum, "gzip"), f"offset {checksum_at} (bad checksum)"),
        ("random bytes as gzip", raw_layer(os.urandom(200_000), media_type=OCI_LAYER_GZIP), "not a tar archive"),
        ("random bytes after gzip magic", raw_layer(b"\x1f\x8b\x08\x00" + os.urandom(200_000), media_type=OCI_LAYER_GZIP), "gzip"),
        ("random bytes after zstd magic", raw_layer(b"\x28\xb5\x2f\xfd" + os.urandom(50_000), media_type=OCI_LAYER_ZSTD), "zstd"),
        ("random bytes as tar", raw_layer(os.urandom(100_000), media_type=OCI_LAYER), "not a tar archive"),
        ("truncated gzip", raw_layer(gzip.compress(plain, mtime=0)[:-200], media_type=OCI_LAYER_GZIP), "truncated"),
        ("truncated tar", tar_layer(truncated[: 5 * 512 + 3], "gzip"), "truncated tar stream"),
        ("empty blob", raw_layer(b"", media_type=OCI_LAYER_GZIP), None),  # an empty layer is legal: 0 entries
    ]


# Runs the command as a child of a small fresh Python process and reports the
# child's peak RSS from the kernel's rusage. (A child forked straight from
# pytest would inherit pytest's RSS high-water mark across fork + exec.)
_MEASURE = """
import json, resource, subprocess, sys, time
out, err, timeout, *cmd = sys.argv[1:]
started = time.monotonic()
with open(out, "wb") as stdout, open(err, "wb") as stderr:
    try:
        status = subprocess.run(cmd, stdout=stdout, stderr=stderr, timeout=float(timeout)).returncode
    except subprocess.TimeoutExpired:
        status = "timeout"
seconds = time.monotonic() - started
print(json.dumps({"status": status, "seconds": seconds,
                  "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_measured(args: list[str], tmp_path, timeout: float = MAX_SECONDS) -> tuple[int, str, str, float, float]:
    "Run the CLI in a fresh process; return (exit status, stdout, stderr, seconds, peak RSS in MB)."
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(out), str(err), str(timeout), sys.executable, "-m", "layerslayer", *args],
        capture_output=True, text=True, timeout=timeout + 30,
    )
    assert measured.returncode == 0, measured.stderr
    report = json.loads(measured.stdout)
    if report["status"] == "timeout":
        pytest.fail(f"layerslayer {' '.join(args[:2])} did not finish in {timeout}s")
    return report["status"], out.read_text(), err.read_text(), report["seconds"], report["rss_kb"] / 1024



# -- hostile layers ------------------------------------------------------------------


def test_hostile_layers_fail_alone_in_bounded_time_and_memory(registry, unique_repo, tmp_path, record_property):
    hostile = hostile_layers()
    good_first = layer({f"good/first/{i}": f"{i}" for i in range(30)})
    good_last = layer({f"good/last/{i}": f"{i}" for i in range(40)}, compression="zstd")
    layers = [good_first] + [lay for _, lay, _ in hostile] + [good_last]
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=layers)
    db = tmp_path / "hostile.db"

    status, out, err, seconds, rss_mb = run_measured(["index", str(db), pushed.ref, "--jobs", "2"], tmp_path)
    record_property("hostile_peak_rss_mb", round(rss_mb, 1))
    record_property("hostile_seconds", round(seconds, 2))
    print(f"hostile layers: {len(hostile)} inputs, {seconds:.2f}s, peak RSS {rss_mb:.1f} MB")

    assert status == 1, (out, err)
    assert "Traceback" not in out + err
    failing = [(name, lay, expected) for name, lay, expected in hostile if expected is not None]
    # The good layers and the empty blob (a legal layer of no entries) are indexed.
    assert f"3 indexed, 0 reused, {len(failing)} failed" in out, out
    layer_rows = {d: (s, e, n) for d, s, e, n in rows(db, "SELECT digest, status, error, entries FROM layers")}
    for name, lay, expected in failing:
        state, error, _ = layer_rows[lay.digest]
        assert state == "failed", name
        assert expected in error, (name, error)
        assert "\n" not in error and len(error) < 300, (name, error)
        assert f"failed   {lay.digest}: {error}" in err, name
        # Nothing of a failed layer reaches the index.
        assert rows(db, "SELECT count(*) FROM files WHERE layer_digest = ?", [lay.digest]) == [(0,)], name
    assert layer_rows[good_first.digest] == ("indexed", None, 30)
    assert layer_rows[good_last.digest] == ("indexed", None, 40)
    assert rows(db, "SELECT count(*) FROM files") == [(70,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]

    assert seconds < MAX_SECONDS
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.1f} MB"


def test_baseline_rss_of_a_plain_index_run(registry, unique_repo, tmp_path, record_property):
    "The reference point for the bound above: the same command over good layers only."
    lay = layer({f"good/{i}": os.urandom(2000) for i in range(200)})
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    status, out, err, seconds, rss_mb = run_measured(["index", str(tmp_path / "plain.db"), pushed.ref], tmp_path)
    record_property("baseline_peak_rss_mb", round(rss_mb, 1))
    print(f"baseline: {seconds:.2f}s, peak RSS {rss_mb:.1f} MB")
    assert status == 0, (out, err)
    assert rss_mb < MAX_RSS_MB


# -- hostile manifests ---------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments, exit_codes=(1, 3)):
    "A clean failure: exit status, exactly one line `Error: ...`, no traceback."
    assert result.exit_code in exit_codes, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert len(lines[0]) < 400
    return lines[0]


def index_error(db, ref, *fragments):
    "`index` records the image's error, prints it on one line, exits 1, no traceback."
    result = run("index", db, ref, "--retries", "1")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[-1].startswith("Indexed 0 images") or lines[-1].startswith("Indexed 1 image"), result.output
    problem = [line for line in lines[:-1] if line.strip()]
    assert len(problem) == 1, result.output
    for fragment in fragments:
        assert fragment in problem[0], (fragment, problem[0])
    return problem[0]


def serve_manifest(proxy, repository, reference, body: bytes, media_type=OCI_MANIFEST, headers=None):
    "The proxy answers GET/HEAD of this manifest with ``body`` (the registry never sees it)."
    return proxy.fail(200, f"/v2/{repository}/manifests/{reference}$", times=None, body=body,
                      headers={"Content-Type": media_type, **(headers or {})})


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


@pytest.fixture
def small_image(fault_proxy, unique_repo):
    return push_image(fault_proxy, f"{unique_repo()}:v1", layers=[layer({"etc/hostname": "box\n"})])


MALFORMED_MANIFESTS = {
    "oversized": None,  # built in the test (5 MiB)
    "deeply nested array": nested(200_000).encode(),
    "deeply nested object": ('{"schemaVersion": 2, "annotations": ' + nested(100_000, '{"a":', "}").replace('{"a":}', '{"a":1}') + "}").encode(),
    "not JSON": b"<html>502 Bad Gateway</html>",
    "not UTF-8": b'{"schemaVersion": 2, "layers": ["\xff\xfe"]}',
    "a JSON list": b"[1, 2, 3]",
    "layers not a list": json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": "sha256:" + "a" * 64},
                                     "layers": 5}).encode(),
    "layer size not a number": None,  # needs a real config: built in the test
    "config digest not a string": json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": 5}, "layers": []}).encode(),
    "config not an object": json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "sha256:" + "a" * 64, "layers": []}).encode(),
    "unknown media type": json.dumps({"schemaVersion": 2, "mediaType": "application/x-whatever"}).encode(),
    "schema 1": json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode(),
    "index manifests not a list": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": 7}).encode(),
    "index platform not an object": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 10, "platform": "linux/amd64"}]}).encode(),
    "index platform fields not strings": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 10,
         "platform": {"os": ["linux"], "architecture": {"x": 1}, "variant": 8}}]}).encode(),
    "index annotations not an object": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 10, "annotations": ["x"],
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode(),
    "index with only attestations": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 10,
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}]}).encode(),
    "path traversal digest": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:../../../../etc/passwd", "size": 10,
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode(),
    "weak digest algorithm": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "md5:" + "0" * 32, "size": 10,
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode(),
}


@pytest.mark.parametrize("case", list(MALFORMED_MANIFESTS))
def test_malformed_manifest_is_one_clear_line(fault_proxy, small_image, tmp_path, case):
    repo = small_image.repository
    body = MALFORMED_MANIFESTS[case]
    if case == "oversized":
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "pad": "x" * (5 << 20)}).encode()
    if case == "layer size not a number":
        manifest = dict(small_image.manifest)
        manifest["layers"] = [dict(manifest["layers"][0], size="huge")]
        body = json.dumps(manifest).encode()
    media_type = OCI_INDEX if b'"manifests"' in body[:200] else OCI_MANIFEST
    serve_manifest(fault_proxy, repo, "hostile", body, media_type)
    ref = f"{fault_proxy.host}/{repo}:hostile"
    started = time.monotonic()
    line = assert_one_line_error(run("inspect", ref, "--retries", "1"), exit_codes=(1, 2, 3))
    index_error(tmp_path / "i.db", ref)
    assert time.monotonic() - started < 20
    if case == "oversized":
        assert "4 MiB limit" in line
    if case in ("path traversal digest", "weak digest algorithm"):
        assert "digest" in line
        # Nothing was asked of the registry outside the repository's manifests and blobs.
        assert not fault_proxy.find("passwd") and not fault_proxy.find("md5")


def test_deeply_nested_config(fault_proxy, unique_repo, tmp_path):
    # A config of 150,000 nested arrays: valid JSON the registry stores as a blob.
    lay = layer({"x": "1"})
    built = build_image([lay])
    config = ('{"architecture": "amd64", "os": "linux", "history": ' + nested(150_000) + "}").encode()
    repo = unique_repo()
    push_blob(fault_proxy, repo, lay.blob)
    push_blob(fault_proxy, repo, config)
    manifest = dict(built.manifest, config={"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)})
    push_manifest(fault_proxy, repo, "v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    ref = f"{fault_proxy.host}/{repo}:v1"
    assert_one_line_error(run("inspect", ref), "config")
    index_error(tmp_path / "i.db", ref, "config")


@pytest.mark.parametrize("config", [b"\x00\xff not json at all", b"[1, 2, 3]", b'"a string"', b"{\"os\": \"linux\"", b""])
def test_config_that_is_not_a_json_object(registry, unique_repo, tmp_path, config):
    lay = layer({"x": "1"})
    built = build_image([lay])
    repo = unique_repo()
    push_blob(registry, repo, lay.blob)
    push_blob(registry, repo, config)
    manifest = dict(built.manifest, config={"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)})
    push_manifest(registry, repo, "v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    ref = f"{registry.host}/{repo}:v1"
    line = assert_one_line_error(run("inspect", ref), f"config {sha256_digest(config)}")
    assert line.endswith(("is not valid JSON", "is not a JSON object")), line
    assert index_error(tmp_path / "i.db", ref, f"config {sha256_digest(config)}").endswith(line[len("Error: "):])


def test_oversized_config(registry, unique_repo, tmp_path):
    lay = layer({"x": "1"})
    built = build_image([lay])
    config = json.dumps({"os": "linux", "architecture": "amd64", "pad": "x" * (9 << 20)}).encode()
    repo = unique_repo()
    push_blob(registry, repo, lay.blob)
    push_blob(registry, repo, config)
    manifest = dict(built.manifest, config={"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)})
    push_manifest(registry, repo, "v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    assert_one_line_error(run("inspect", f"{registry.host}/{repo}:v1"), "MiB limit")


def test_index_that_refers_to_itself(fault_proxy, unique_repo, tmp_path):
    """An index can only name itself through a registry that lies: the proxy
    answers the platform manifest's digest with the index again. The digest
    check stops it at once (no loop, no recursion)."""
    pushed = push_index(fault_proxy, f"{unique_repo()}:v1", images=["linux/amd64"])
    child = pushed.images[0].digest
    serve_manifest(fault_proxy, pushed.repository, child, pushed.index_bytes, OCI_INDEX)
    started = time.monotonic()
    assert_one_line_error(run("inspect", pushed.ref), "does not match its digest", exit_codes=(3,))
    assert_one_line_error(run("inspect", f"{fault_proxy.host}/{pushed.repository}@{child}"), "does not match its digest", exit_codes=(3,))
    index_error(tmp_path / "i.db", pushed.ref, "does not match its digest")
    assert time.monotonic() - started < 20
    # One request for the child per attempt to read it: no loop.
    assert fault_proxy.count(f"/manifests/{child}") <= 4


def test_index_that_names_an_index(registry, unique_repo, tmp_path):
    "A real nested index (index → index): reported, not followed."
    repo = unique_repo()
    inner = push_index(registry, f"{repo}:inner", images=["linux/amd64"])
    outer = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": inner.digest, "size": len(inner.index_bytes),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    push_manifest(registry, repo, "outer", json.dumps(outer).encode(), OCI_INDEX)
    ref = f"{registry.host}/{repo}:outer"
    assert_one_line_error(run("inspect", ref), "nested indexes are not followed")
    index_error(tmp_path / "i.db", ref, "nested indexes are not followed")


def test_manifest_digest_mismatch_by_digest_and_through_an_index(fault_proxy, unique_repo, tmp_path):
    pushed = push_index(fault_proxy, f"{unique_repo()}:v1", images=["linux/amd64"])
    child = pushed.images[0]
    fault_proxy.corrupt(f"/manifests/{child.digest}", times=None, offset=40)
    assert_one_line_error(run("inspect", pushed.ref), f"manifest {child.digest}", "does not match its digest", exit_codes=(3,))
    fault_proxy.corrupt(f"/manifests/{pushed.digest}", times=None, offset=40)
    assert_one_line_error(run("inspect", pushed.digest_ref), "does not match its digest", exit_codes=(3,))
    index_error(tmp_path / "i.db", pushed.digest_ref, "does not match its digest")


def test_manifest_by_tag_that_contradicts_docker_content_digest(fault_proxy, small_image, tmp_path):
    "By tag there is nothing to check against but the registry's own Docker-Content-Digest header."
    body = small_image.manifest_bytes + b"\n"  # still the same JSON, another digest
    serve_manifest(fault_proxy, small_image.repository, "v1", body, OCI_MANIFEST,
                   headers={"Docker-Content-Digest": small_image.digest})
    assert_one_line_error(run("inspect", small_image.ref), "does not match", exit_codes=(3,))
    index_error(tmp_path / "i.db", small_image.ref, "does not match")


def test_config_blob_that_does_not_match_its_digest(fault_proxy, small_image, tmp_path):
    fault_proxy.corrupt(f"/blobs/{small_image.config_digest}", times=None)
    assert_one_line_error(run("inspect", small_image.ref, "--retries", "1"), "does not match its digest", exit_codes=(3,))


def test_bad_layer_descriptors_fail_cleanly(fault_proxy, small_image, tmp_path):
    "Layer descriptors with impossible digests or sizes are refused before any blob request."
    manifest = dict(small_image.manifest)
    good = manifest["layers"][0]
    manifest["layers"] = [good, dict(good, digest="sha256:../../v2/_catalog"), dict(good, size=-5)]
    serve_manifest(fault_proxy, small_image.repository, "bad", json.dumps(manifest).encode())
    ref = f"{fault_proxy.host}/{small_image.repository}:bad"
    assert_one_line_error(run("inspect", ref), "digest")
    index_error(tmp_path / "i.db", ref, "digest")
    assert not fault_proxy.find("_catalog")
