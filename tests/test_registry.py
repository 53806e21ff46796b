"""The registry client against a real registry, with faults from the proxy."""

import time

import pytest
from harness.builder import layer, push_image

from layerslayer.auth import Credentials
from layerslayer.errors import AuthError, NetworkError, NotFound, RegistryError, VerificationError
from layerslayer.oci import MANIFEST_ACCEPT
from layerslayer.registry import RegistryClient


def client_for(reg, **kw):
    return RegistryClient(reg.host, **kw)


def test_accept_header_lists_all_manifest_types(fault_proxy, unique_repo):
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1")
    client_for(fault_proxy).get_manifest(pushed.repository, "v1")
    accept = fault_proxy.find("/manifests/")[-1].headers["Accept"]
    for media_type in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ):
        assert media_type in accept
    assert accept == MANIFEST_ACCEPT


def test_manifest_by_tag_and_digest(registry, unique_repo):
    pushed = push_image(registry, f"{unique_repo()}:v1")
    client = client_for(registry)
    by_tag = client.get_manifest(pushed.repository, "v1")
    assert by_tag.digest == pushed.digest and by_tag.body == pushed.manifest_bytes
    by_digest = client.get_manifest(pushed.repository, pushed.digest)
    assert by_digest.media_type == pushed.media_type


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retries_transient_statuses(fault_proxy, unique_repo, status):
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1")
    fault_proxy.clear_records()
    fault_proxy.fail(status, "/manifests/", times=2, retry_after=0 if status == 429 else None)
    manifest = client_for(fault_proxy).get_manifest(pushed.repository, "v1")
    assert manifest.digest == pushed.digest
    assert fault_proxy.count("/manifests/") == 3


def test_honours_retry_after(fault_proxy, unique_repo):
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1")
    fault_proxy.fail(429, "/manifests/", times=1, retry_after=1)
    started = time.monotonic()
    client_for(fault_proxy).get_manifest(pushed.repository, "v1")
    assert time.monotonic() - started >= 0.95


def test_dropped_connection_is_retried(fault_proxy, unique_repo):
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1")
    fault_proxy.drop("/manifests/", times=2)
    assert client_for(fault_proxy).get_manifest(pushed.repository, "v1").digest == pushed.digest


def test_gives_up_after_bounded_attempts(fault_proxy, unique_repo):
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1")
    fault_proxy.clear_records()
    fault_proxy.fail(503, "/manifests/", times=None)
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        client_for(fault_proxy, retries=4).get_manifest(pushed.repository, "v1")
    assert "HTTP 503" in str(info.value) and "after retries" in str(info.value)
    assert fault_proxy.count("/manifests/") == 4
    assert time.monotonic() - started < 10


def test_blob_stream_resumes_after_reset(fault_proxy, unique_repo):
    big = layer({"data.bin": bytes(range(256)) * 8192}, compression="none")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[big])
    fault_proxy.clear_records()
    fault_proxy.reset_mid_body("/blobs/" + big.digest, after=300_000)
    data = b"".join(client_for(fault_proxy).iter_blob(pushed.repository, big.digest, chunk_size=65536))
    assert data == big.blob
    ranges = [r.headers.get("Range") for r in fault_proxy.find("/blobs/" + big.digest)]
    assert ranges[0] is None and ranges[1].startswith("bytes=")


def test_blob_range_needs_206(registry, unique_repo):
    lay = layer({"a": b"0123456789" * 100}, compression="none")
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    client = client_for(registry)
    assert client.get_blob_range(pushed.repository, lay.digest, 10, 19) == lay.blob[10:20]


def test_redirect_to_other_host_drops_authorization(basic_registry, make_fault_proxy, unique_repo):
    proxy = make_fault_proxy(basic_registry, cdn_host="localhost")
    lay = layer({"secret/file": b"s" * 5000})
    pushed = push_image(proxy, f"{unique_repo()}:v1", layers=[lay])
    proxy.redirect("/blobs/" + lay.digest, times=None)
    client = client_for(proxy, credentials=Credentials("alice", "s3cret-pa55"))
    data = b"".join(client.iter_blob(pushed.repository, lay.digest))
    assert data == lay.blob
    assert proxy.cdn.records, "the blob must have come from the CDN"
    assert proxy.cdn.authorization_headers == [None] * len(proxy.cdn.records)
    # ...while the registry itself did get credentials.
    assert proxy.find("/blobs/" + lay.digest)[-1].headers.get("Authorization", "").startswith("Basic ")


def test_manifest_digest_mismatch(fault_proxy, unique_repo):
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1")
    fault_proxy.corrupt("/manifests/" + pushed.digest)
    with pytest.raises((VerificationError, RegistryError)):
        client_for(fault_proxy).get_manifest(pushed.repository, pushed.digest)


def test_not_found(registry, unique_repo):
    with pytest.raises(NotFound) as info:
        client_for(registry).get_manifest(unique_repo(), "v1", display="x/y:v1")
    assert str(info.value) == "image not found: x/y:v1"


def test_bearer_token_refreshed_on_401(token_registry, token_server, unique_repo):
    pushed = push_image(token_registry, f"{unique_repo()}:v1")
    client = client_for(token_registry)
    # Tokens the registry rejects (expired long ago) while we believe them valid.
    token_server.jwt_lifetime = -3600
    with pytest.raises(AuthError):
        client.get_manifest(pushed.repository, "v1")
    token_server.jwt_lifetime = None
    asked = len(token_server.requests)
    assert client.get_manifest(pushed.repository, "v1").digest == pushed.digest
    assert len(token_server.requests) == asked + 1
    # ...and the fresh token is reused.
    client.get_manifest(pushed.repository, pushed.digest)
    assert len(token_server.requests) == asked + 1


def test_anonymous_token_for_private_repo_refused(token_registry, token_server, unique_repo):
    pushed = push_image(token_registry, f"{unique_repo()}:v1")
    token_server.private_repos.add(pushed.repository)
    with pytest.raises(AuthError) as info:
        client_for(token_registry).get_manifest(pushed.repository, "v1")
    assert "--username" in str(info.value)
    creds = Credentials("alice", "s3cret-pa55")
    assert client_for(token_registry, credentials=creds).get_manifest(pushed.repository, "v1").digest == pushed.digest


def test_access_token_field_accepted(token_registry, token_server, unique_repo):
    pushed = push_image(token_registry, f"{unique_repo()}:v1")
    token_server.send_token = False
    assert client_for(token_registry).get_manifest(pushed.repository, "v1").digest == pushed.digest


def test_token_file_used_as_bearer(token_registry, token_server, unique_repo, tmp_path):
    pushed = push_image(token_registry, f"{unique_repo()}:v1")
    token_file = tmp_path / "token.txt"
    token_file.write_text(token_server.mint([f"repository:{pushed.repository}:pull"]) + "\n")
    token_server.clear()
    client = client_for(token_registry, token_file=token_file)
    assert client.get_manifest(pushed.repository, "v1").digest == pushed.digest
    assert token_server.requests == []


def test_stale_token_file_refreshed_0600(token_registry, token_server, unique_repo, tmp_path):
    import stat

    pushed = push_image(token_registry, f"{unique_repo()}:v1")
    token_file = tmp_path / "token.txt"
    token_file.write_text("stale-token")
    client = client_for(token_registry, token_file=token_file)
    assert client.get_manifest(pushed.repository, "v1").digest == pushed.digest
    assert token_file.read_text() != "stale-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_tags_and_catalog_paginate(registry_factory, make_fault_proxy):
    reg = registry_factory("anonymous", catalog_max_entries=2)
    for repo in ("p/a", "p/b", "p/c"):
        for tag in ("t1", "t2", "t3"):
            push_image(reg, f"{repo}:{tag}")
    proxy = make_fault_proxy(reg)
    client = client_for(proxy)
    # distribution 2.8 ignores ?n= for tags (it pages only the catalog).
    assert sorted(client.list_tags("p/a", page_size=2)) == ["t1", "t2", "t3"]
    assert list(client.catalog(page_size=2)) == ["p/a", "p/b", "p/c"]
    catalog_requests = proxy.find("/v2/_catalog")
    assert len(catalog_requests) == 2, [r.path for r in catalog_requests]
    assert "last=" in catalog_requests[1].path
