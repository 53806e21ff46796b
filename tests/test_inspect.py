"""`layerslayer inspect` against real registries (anonymous, Basic, Bearer)."""

import json

import pytest
from click.testing import CliRunner
from harness.builder import empty, layer, push_image, push_index, step

from layerslayer.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def inspect_json(*args):
    result = run("inspect", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("media", ["oci", "docker"])
def test_multi_arch_with_attestation(registry, unique_repo, media):
    pushed = push_index(
        registry, f"{unique_repo(media)}:latest",
        images=["linux/amd64", "linux/arm64/v8", "linux/arm/v7"], attestation=True, media=media,
    )
    data = inspect_json(pushed.ref, "--platform", "linux/arm64/v8")
    assert data["digest"] == pushed.digest
    assert data["media_type"] == pushed.media_type
    platforms = [(p["os"], p["architecture"], p["variant"], p["attestation"]) for p in data["platforms"]]
    assert platforms[:3] == [
        ("linux", "amd64", None, False),
        ("linux", "arm64", "v8", False),
        ("linux", "arm", "v7", False),
    ]
    attestations = [p for p in data["platforms"] if p["attestation"]]
    # BuildKit writes one attestation manifest per platform image.
    assert [p["digest"] for p in attestations] == [a.digest for a in pushed.attestations]
    arm64 = pushed.images[1]
    assert data["platform"]["architecture"] == "arm64"
    assert data["config_digest"] == arm64.config_digest
    assert [layer["digest"] for layer in data["layers"]] == [layer.digest for layer in arm64.layers]

    text = run("inspect", pushed.ref, "--platform", "linux/arm/v7")
    assert text.exit_code == 0, text.output
    assert "attestation manifest" in text.output
    assert "unknown/unknown" not in text.output
    assert "Platform:   linux/arm/v7" in text.output


def test_default_platform_is_host_or_first(registry, unique_repo):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/s390x", "linux/amd64"], attestation=True)
    data = inspect_json(pushed.ref)
    from layerslayer.reference import host_platform_string

    expected = "amd64" if host_platform_string() == "linux/amd64" else "s390x"
    assert data["platform"]["architecture"] == expected


def test_unknown_platform_lists_available(registry, unique_repo):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64"], attestation=True)
    result = run("inspect", pushed.ref, "--platform", "windows/amd64")
    assert result.exit_code == 1
    assert "has no platform windows/amd64 (available: linux/amd64)" in result.output
    bad = run("inspect", pushed.ref, "--platform", "linux")
    assert bad.exit_code == 2 and "invalid platform" in bad.output


@pytest.mark.parametrize(
    "media,compression,expected_type",
    [
        ("oci", "gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("oci", "zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("oci", "none", "application/vnd.oci.image.layer.v1.tar"),
        ("docker", "gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ],
)
def test_single_platform_history_alignment(registry, unique_repo, media, compression, expected_type):
    layers = [
        layer({"etc/os-release": "ID=test\n"}, compression=compression),
        layer({"app/main.py": "print('hi')\n" * 300}, compression=compression),
    ]
    history = [
        step("ADD rootfs.tar /"),
        empty("ENV PATH=/usr/bin"),
        empty("ARG VERSION=1"),
        step("COPY app /app"),
        empty('CMD ["python", "/app/main.py"]'),
    ]
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=layers, history=history, media=media, platform="linux/arm64/v8")
    data = inspect_json(pushed.ref)
    assert data["media_type"] == pushed.media_type
    assert data["platform"]["architecture"] == "arm64"
    assert data["platform"]["variant"] == "v8"
    assert [layer["media_type"] for layer in data["layers"]] == [expected_type] * 2
    assert [layer["size"] for layer in data["layers"]] == [layer.size for layer in pushed.layers]
    assert [(h["empty_layer"], h["layer_index"]) for h in data["history"]] == [
        (False, 0), (True, None), (True, None), (False, 1), (True, None),
    ]
    text = run("inspect", pushed.ref).output
    assert "[1] (metadata only) ENV PATH=/usr/bin" in text
    assert "[3] (layer 1) COPY app /app" in text


def test_by_digest_and_human_sizes(registry, unique_repo):
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[layer({"big": b"x" * 3000}, compression="none")])
    data = inspect_json(pushed.digest_ref)
    assert data["digest"] == pushed.digest
    text = run("inspect", pushed.digest_ref).output
    size = pushed.layers[0].size
    assert f"{size / 1000:.1f} KB" in text  # decimal units, as every command prints sizes


def test_image_not_found(registry, unique_repo):
    result = run("inspect", f"{registry.host}/{unique_repo()}:nope")
    assert result.exit_code == 1
    assert result.output.startswith("Error: image not found: ")
    assert result.output.count("\n") == 1


def test_network_down_names_host():
    result = run("inspect", "127.0.0.1:9/x:y", "--retries", "1")
    assert result.exit_code == 3
    assert result.output.strip() == "Error: cannot reach 127.0.0.1:9: connection refused (after 1 attempts)"


def test_debug_shows_traceback(registry, unique_repo):
    result = run("inspect", f"{registry.host}/{unique_repo()}:nope", "--debug")
    assert result.exit_code != 0
    assert result.exception is not None  # re-raised for the traceback


def test_basic_auth_from_docker_config(basic_registry, docker_config, unique_repo):
    pushed = push_index(basic_registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64"], attestation=True, media="docker")
    data = inspect_json(pushed.ref, "--platform", "linux/arm64")
    assert data["digest"] == pushed.digest
    assert data["config_digest"] == pushed.images[1].config_digest


def test_basic_auth_required(basic_registry, unique_repo):
    pushed = push_image(basic_registry, f"{unique_repo()}:v1")
    result = run("inspect", pushed.ref)
    assert result.exit_code == 1
    assert "authentication required" in result.output and "--username" in result.output
    wrong = run("inspect", pushed.ref, "--username", "alice", "--password", "wrong-password")
    assert wrong.exit_code == 1
    assert "authentication failed" in wrong.output
    assert "wrong-password" not in wrong.output
    ok = run("inspect", pushed.ref, "--username", "alice", "--password-stdin", input="s3cret-pa55\n")
    assert ok.exit_code == 0, ok.output


def test_bearer_anonymous_and_token_cache(token_registry, token_server, unique_repo):
    pushed = push_index(token_registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64"], attestation=True)
    token_server.clear()
    data = inspect_json(pushed.ref, "--platform", "linux/arm64")
    assert data["digest"] == pushed.digest
    # index, platform manifest and config share one pull token for the repository.
    assert len(token_server.requests) == 1
    assert token_server.scopes_asked() == [f"repository:{pushed.repository}:pull"]


def test_bearer_with_credentials_and_refused(token_registry, token_server, unique_repo):
    pushed = push_image(token_registry, f"{unique_repo()}:v1")
    ok = run("inspect", pushed.ref, "--username", "alice", "--password", "s3cret-pa55")
    assert ok.exit_code == 0, ok.output
    bad = run("inspect", pushed.ref, "--username", "alice", "--password", "nope-nope")
    assert bad.exit_code == 1
    assert "authentication failed" in bad.output and "nope-nope" not in bad.output
