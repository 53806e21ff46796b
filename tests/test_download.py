"""`save`, verified downloads and spools (layerslayer.download) against a real
registry, with faults (corruption, dropped connections) from the proxy."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness.builder import layer, push_image

from layerslayer import tarstream
from layerslayer.cli import cli
from layerslayer.download import BlobSpool, blob_path, download_blob, part_path, verify_file
from layerslayer.errors import UsageError, VerificationError
from layerslayer.registry import RegistryClient


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def noise(n: int, seed: int = 1) -> bytes:
    "Incompressible bytes (gzip cannot shrink them), reproducible."
    return random.Random(seed).randbytes(n)


def client_for(reg, **kw) -> RegistryClient:
    return RegistryClient(reg.host, plain_http=True, **kw)


def blob_gets(proxy, digest: str) -> list:
    return [r for r in proxy.find(f"/blobs/{digest}", "GET")]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- layout --------------------------------------------------------------------------


def test_blob_layout():
    digest = "sha256:" + "ab" * 32
    assert blob_path("d", "127.0.0.1:5000", "team/app", digest, "application/vnd.oci.image.layer.v1.tar+gzip") == Path(
        "d", "127.0.0.1:5000", "team", "app", "ab" * 32 + ".tar.gz"
    )
    assert blob_path("d", "registry-1.docker.io", "library/nginx", digest, None).parts[1] == "docker.io"
    # the extension of each media type: tests/test_oci.py (oci.blob_extension)
    for repository in ("../evil", "team/../../x", "/abs", "Team/App"):
        with pytest.raises(UsageError):
            blob_path("d", "host:5000", repository, digest, None)
    with pytest.raises(UsageError):
        blob_path("d", "host:5000", "team/app", "sha256:../../x", None)


# -- save ------------------------------------------------------------------------------


@pytest.fixture
def three_blob_image(fault_proxy, unique_repo):
    layers = [
        layer({"etc/os-release": "ID=test\n", "big.bin": noise(2_600_000)}),
        layer({"app/main.py": "print('hi')\n"}, compression="zstd"),
        layer({"app/data.txt": "plain\n"}, compression="none"),
    ]
    return push_image(fault_proxy, f"{unique_repo()}:v1", layers=layers)


def test_save_all_and_config_layout_and_bytes(fault_proxy, three_blob_image, tmp_path):
    pushed = three_blob_image
    out = tmp_path / "dl"
    result = run("save", pushed.ref, "--all", "--config", "-o", out)
    assert result.exit_code == 0, result.output
    base = out / pushed.host / pushed.repository
    for lay, ext in zip(pushed.layers, ("tar.gz", "tar.zst", "tar")):
        saved = base / f"{lay.digest[7:]}.{ext}"
        assert saved.read_bytes() == lay.blob
        assert f"saved    {saved}" in result.stdout
    config = base / f"{pushed.config_digest[7:]}.json"
    assert config.read_bytes() == pushed.config_bytes
    assert not list(out.rglob("*.part"))
    assert "Saved 4 blob(s)" in result.stderr


def test_save_skips_verified_file_and_replaces_a_bad_one(fault_proxy, three_blob_image, tmp_path):
    pushed = three_blob_image
    out = tmp_path / "dl"
    assert run("save", pushed.ref, "--layer", "0", "--layer", "-1", "-o", out).exit_code == 0
    top, base_layer = pushed.layers[-1], pushed.layers[0]
    fault_proxy.clear_records()
    result = run("save", pushed.ref, "--layer", "0", "--layer", top.digest[:19], "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("(already saved, verified)") == 2
    assert not blob_gets(fault_proxy, base_layer.digest) and not blob_gets(fault_proxy, top.digest)
    # A file that does not match (same size, one byte changed) is downloaded again.
    saved = blob_path(out, pushed.host, pushed.repository, base_layer.digest, base_layer.media_type_for("oci"))
    data = bytearray(saved.read_bytes())
    data[100] ^= 1
    saved.write_bytes(bytes(data))
    result = run("save", pushed.ref, "--layer", "0", "-o", out)
    assert result.exit_code == 0, result.output
    assert saved.read_bytes() == base_layer.blob
    assert len(blob_gets(fault_proxy, base_layer.digest)) == 1


def test_save_digest_mismatch_deletes_temp_file(fault_proxy, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    fault_proxy.corrupt(f"/blobs/{lay.digest}", times=None)
    out = tmp_path / "dl"
    result = run("save", pushed.ref, "--layer", "0", "-o", out)
    assert result.exit_code == 3, result.output
    assert f"blob {lay.digest} does not match its digest" in result.stderr
    assert "the download was deleted" in result.stderr
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_save_resumes_after_dropped_connection(fault_proxy, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = blob_path(tmp_path, pushed.host, pushed.repository, lay.digest, lay.media_type_for("oci"))
    # First run: the connection drops after 2.2 MB and there are no retries.
    # (What was received in the last, incomplete 1 MiB read is lost.)
    fault_proxy.truncate(f"/blobs/{lay.digest}", after=2_200_000)
    result = run("save", pushed.ref, "--layer", "0", "-o", tmp_path, "--retries", "1")
    assert result.exit_code == 3, result.output
    assert not dest.exists()
    kept = part_path(dest).stat().st_size
    assert 1 << 20 <= kept <= 2_200_000
    assert lay.blob.startswith(part_path(dest).read_bytes())
    # Next run: only the rest is asked for (and trusted because the answer is 206).
    fault_proxy.clear_records()
    result = run("save", pushed.ref, "--layer", "0", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert f"resumed  {dest}" in result.stdout
    gets = blob_gets(fault_proxy, lay.digest)
    assert len(gets) == 1
    assert gets[0].headers["Range"] == f"bytes={kept}-"
    assert gets[0].status == 206 and gets[0].bytes_sent == lay.size - kept
    assert dest.read_bytes() == lay.blob and not part_path(dest).exists()


def test_resume_of_a_bad_part_fails_verification_then_starts_over(registry, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = tmp_path / "blob.tar.gz"
    part_path(dest).write_bytes(b"\0" * 1000)  # not the blob's first bytes
    client = client_for(registry)
    with pytest.raises(VerificationError):
        download_blob(client, pushed.repository, lay.digest, dest, lay.size)
    assert not part_path(dest).exists() and not dest.exists()
    result = download_blob(client, pushed.repository, lay.digest, dest, lay.size)
    assert result.status == "downloaded" and dest.read_bytes() == lay.blob


def test_download_blob_library(registry, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = tmp_path / "x" / "blob.tar.gz"
    seen = []
    result = download_blob(client_for(registry), pushed.repository, lay.digest, dest, lay.size, progress=seen.append)
    assert (result.status, result.size, result.fetched) == ("downloaded", lay.size, lay.size)
    assert sum(seen) == lay.size and verify_file(dest, lay.digest, lay.size)
    again = download_blob(client_for(registry), pushed.repository, lay.digest, dest, lay.size)
    assert again.skipped and again.fetched == 0
    # A wrong size in the descriptor is a verification failure too.
    with pytest.raises(VerificationError, match="bytes"):
        download_blob(client_for(registry), pushed.repository, lay.digest, tmp_path / "y.tar.gz", lay.size - 1)
    assert not (tmp_path / "y.tar.gz").exists() and not part_path(tmp_path / "y.tar.gz").exists()


def test_interrupted_download_keeps_resumable_part(registry, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = tmp_path / "blob.tar.gz"

    def interrupt(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_blob(client_for(registry), pushed.repository, lay.digest, dest, lay.size, progress=interrupt)
    assert part_path(dest).exists() and not dest.exists()
    with pytest.raises(KeyboardInterrupt):
        download_blob(client_for(registry), pushed.repository, lay.digest, tmp_path / "b2", lay.size,
                      progress=interrupt, keep_partial=False)
    assert not part_path(tmp_path / "b2").exists()


def test_save_usage_errors(three_blob_image, tmp_path):
    assert run("save", three_blob_image.ref, "-o", tmp_path).exit_code == 2
    result = run("save", three_blob_image.ref, "--layer", "7", "-o", tmp_path)
    assert result.exit_code == 2 and "there is no layer 7" in result.output
    assert run("save", "Not A Reference", "--all").exit_code == 2
    assert "Exit status" in run("save", "--help").output


# -- spooling (peek, then maybe keep) -------------------------------------------------------


def test_spool_peek_then_keep_downloads_once(fault_proxy, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = tmp_path / "blob.tar.gz"
    fault_proxy.clear_records()
    with BlobSpool(client_for(fault_proxy), pushed.repository, lay.digest, dest, lay.size) as spool:
        names = [e.path for e in tarstream.iter_entries(spool.chunks(), "gzip")]
        assert names == ["etc/os-release", "big.bin"]
        assert part_path(dest).exists()
        assert spool.keep() == dest
    assert dest.read_bytes() == lay.blob and not part_path(dest).exists()
    assert len(blob_gets(fault_proxy, lay.digest)) == 1
    assert fault_proxy.bytes_served(f"/blobs/{lay.digest}") == lay.size


def test_spool_partial_peek_then_keep_reads_the_rest_once(fault_proxy, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = tmp_path / "blob.tar.gz"
    fault_proxy.clear_records()
    with BlobSpool(client_for(fault_proxy), pushed.repository, lay.digest, dest, lay.size, chunk_size=4096) as spool:
        first = next(iter(tarstream.iter_entries(spool.chunks(), "gzip")))
        assert first.path == "etc/os-release"
        spool.keep()
    assert dest.read_bytes() == lay.blob
    assert len(blob_gets(fault_proxy, lay.digest)) == 1


def test_spool_discard_and_interrupt_leave_nothing(registry, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = tmp_path / "blob.tar.gz"
    with BlobSpool(client_for(registry), pushed.repository, lay.digest, dest, lay.size) as spool:
        list(tarstream.iter_entries(spool.chunks(), "gzip"))
        spool.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with BlobSpool(client_for(registry), pushed.repository, lay.digest, dest, lay.size, chunk_size=4096) as spool:
            for _ in spool.chunks():
                raise KeyboardInterrupt  # Ctrl-C while peeking
    assert list(tmp_path.iterdir()) == []
    # Leaving the block without keep() is a "no".
    with BlobSpool(client_for(registry), pushed.repository, lay.digest, dest, lay.size) as spool:
        list(spool.chunks())
    assert list(tmp_path.iterdir()) == []


def test_spool_reuses_saved_blob_and_verifies(fault_proxy, three_blob_image, tmp_path):
    pushed = three_blob_image
    lay = pushed.layers[0]
    dest = tmp_path / "blob.tar.gz"
    dest.write_bytes(lay.blob)
    fault_proxy.clear_records()
    with BlobSpool(client_for(fault_proxy), pushed.repository, lay.digest, dest, lay.size) as spool:
        assert spool.already_saved
        assert b"".join(spool.chunks()) == lay.blob
        spool.discard()  # never deletes a file that was already saved
    assert dest.exists() and not blob_gets(fault_proxy, lay.digest)
    fault_proxy.corrupt(f"/blobs/{lay.digest}")
    other = tmp_path / "other.tar.gz"
    with pytest.raises(VerificationError):
        with BlobSpool(client_for(fault_proxy), pushed.repository, lay.digest, other, lay.size) as spool:
            for _ in spool.chunks():
                pass
    assert not other.exists() and not part_path(other).exists()
