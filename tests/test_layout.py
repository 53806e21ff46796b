"""`save --format oci|docker-archive`: output that other tools load,
checked by skopeo (a Debian package) reading it back."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile

import pytest
from click.testing import CliRunner
from harness.builder import layer, push_image

from layerslayer.cli import cli

SKOPEO = shutil.which("skopeo")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def skopeo(*args) -> subprocess.CompletedProcess:
    assert SKOPEO, "skopeo is part of the set-up (apt-get install skopeo)"
    return subprocess.run([SKOPEO, "--insecure-policy", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def image(registry):
    layers = [layer({"etc/os-release": "ID=demo\n"}), layer({"app/main.py": "print('hi')\n", "app/.env": "K=v\n"}, "zstd"),
              layer({"etc/motd": "welcome\n"})]
    return push_image(registry, "layout/app:1.0", layers=layers)


def test_save_oci_layout_is_read_back_by_skopeo(image, tmp_path):
    result = run("save", image.ref, "--format", "oci", "-o", tmp_path, "--plain-http")
    assert result.exit_code == 0, result.output
    layout = tmp_path / "layout_app_1.0.oci"
    assert f"wrote    {layout} (oci)" in result.output
    index = json.loads((layout / "index.json").read_text())
    [descriptor] = index["manifests"]
    assert descriptor["digest"] == image.image.digest  # the manifest as the registry served it
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    inspected = skopeo("inspect", f"oci:{layout}:1.0")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Layers"] == [lay.digest for lay in image.image.layers]
    copied = skopeo("copy", f"oci:{layout}:1.0", f"dir:{tmp_path / 'copy'}")
    assert copied.returncode == 0, copied.stderr
    for lay in image.image.layers:
        assert (tmp_path / "copy" / lay.digest.partition(":")[2]).read_bytes() == lay.blob


def test_save_docker_archive_is_read_back_by_skopeo(image, tmp_path):
    result = run("save", image.ref, "--format", "docker-archive", "-o", tmp_path, "--plain-http")
    assert result.exit_code == 0, result.output
    archive = tmp_path / "layout_app_1.0.tar"
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [f"{image.ref.split('/')[0]}/layout/app:1.0"]
    assert len(manifest[0]["Layers"]) == 3
    copied = skopeo("copy", f"docker-archive:{archive}", f"oci:{tmp_path / 'back'}:x")
    assert copied.returncode == 0, copied.stderr
    inspected = skopeo("inspect", "--config", f"oci:{tmp_path / 'back'}:x")
    assert inspected.returncode == 0, inspected.stderr
    config = json.loads(inspected.stdout)
    assert config["rootfs"]["diff_ids"] == [lay.diff_id for lay in image.image.layers]


def test_format_writes_whole_images_only(image, tmp_path):
    result = run("save", image.ref, "--format", "oci", "--layer", "0", "-o", tmp_path, "--plain-http")
    assert result.exit_code == 2
    assert "whole image" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("fmt", ["oci", "docker-archive"])
def test_export_format_writes_the_images_holding_matching_layers(image, registry, tmp_path, fmt):
    other = push_image(registry, "layout/other:2", layers=[layer({"srv/readme": "nothing here\n"})])
    db = tmp_path / "i.db"
    assert run("index", db, image.ref, other.ref, "--quiet", "--plain-http").exit_code == 0
    out = tmp_path / "out"
    result = run("export", db, "--match", ".env", "--format", fmt, "-o", out, "--plain-http")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["layout_app_1.0" + (".oci" if fmt == "oci" else ".tar")]
    source = f"oci:{out / written[0]}:1.0" if fmt == "oci" else f"docker-archive:{out / written[0]}"
    inspected = skopeo("inspect", "--config", source)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["rootfs"]["diff_ids"] == [lay.diff_id for lay in image.image.layers]
