"""The harness itself works: registries, token server, builder, fault proxy.

Plain ``requests`` only; nothing from layerslayer.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from harness.builder import (
    ACCEPT_ALL,
    ATTESTATION_ANNOTATION,
    ATTESTATION_DIGEST_ANNOTATION,
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    IN_TOTO,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    blockdev,
    build_image,
    build_tar,
    chardev,
    compress,
    decompress,
    delete_manifest,
    dir_,
    empty,
    fifo,
    file,
    foreign_layer,
    get_blob,
    get_manifest,
    hardlink,
    layer,
    opaque,
    push_built,
    push_image,
    push_index,
    raw_layer,
    read_tar,
    sha256_digest,
    split_target,
    step,
    symlink,
    tar_layer,
    whiteout,
)
from harness.registry import PASSWORD, USERNAME, basic_auth_value
from harness.tokenserver import decode_jwt_claims
from harness.wait import wait_until


def challenge_params(header: str) -> dict[str, str]:
    """Parse `Bearer realm="..",service="..",scope=".."` (good enough for tests)."""
    _, _, rest = header.partition(" ")
    out = {}
    for part in rest.split('",'):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip().strip('"')
    return out


def sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


RICH_MEMBERS = [
    dir_("etc", mtime=1_600_000_000),
    file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", uid=0, gid=0),
    file("usr/bin/sudo", b"\x7fELF", mode=0o4755),
    file("home/bob/.env", b"SECRET=hunter2\n", uid=1000, gid=1000, uname="bob", gname="bob"),
    symlink("bin", "usr/bin"),
    hardlink("etc/passwd-", "etc/passwd"),
    chardev("dev/null", 1, 3),
    blockdev("dev/sda", 8, 0),
    fifo("run/initctl"),
    whiteout("etc/shadow"),
    opaque("var/cache/apt"),
    file("deep/" + "d" * 120 + "/file.txt", b"long"),
    file("odd/with space\nnewline*?[glob]", b"odd"),
    file(b"odd/latin1-\xe9\xff", b"bytes"),
    file("time/fractional", b"", mtime=1_700_000_000.5),
]


# -- registries -------------------------------------------------------------------------
def test_anonymous_registry_answers(registry):
    r = requests.get(f"{registry.url}/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert registry.host.startswith("127.0.0.1:") and registry.url == f"http://{registry.host}"
    assert registry.username is None and registry.token_server is None
    assert registry.auth_headers("x/y") == {}


def test_basic_challenge_and_response(basic_registry):
    r = requests.get(f"{basic_registry.url}/v2/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
    bad = requests.get(f"{basic_registry.url}/v2/", auth=(USERNAME, "wrong"))
    assert bad.status_code == 401
    ok = requests.get(f"{basic_registry.url}/v2/", auth=(basic_registry.username, basic_registry.password))
    assert ok.status_code == 200
    assert (basic_registry.username, basic_registry.password) == ("alice", "s3cret-pa55")
    assert basic_registry.auth_headers("a/b") == {"Authorization": basic_auth_value(USERNAME, PASSWORD)}


def test_token_challenge_flow(token_registry, token_server, unique_repo):
    repo = unique_repo()
    img = push_image(token_registry, f"{repo}:v1")
    assert token_server.requests == []  # harness pushes mint tokens in-process

    r = requests.get(f"{token_registry.url}/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert r.status_code == 401
    ch = challenge_params(r.headers["WWW-Authenticate"])
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    assert ch["realm"] == token_server.realm == f"{token_server.url}/token"
    assert ch["service"] == token_server.service
    assert ch["scope"] == f"repository:{repo}:pull"

    t = requests.get(ch["realm"], params={"service": ch["service"], "scope": ch["scope"]})
    assert t.status_code == 200
    body = t.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 60 and body["issued_at"].endswith("Z")
    claims = decode_jwt_claims(body["token"])
    assert claims["access"] == [{"type": "repository", "name": repo, "actions": ["pull"]}]
    assert claims["aud"] == token_server.service

    got = requests.get(f"{token_registry.url}/v2/{repo}/manifests/v1",
                       headers={"Accept": ACCEPT_ALL, "Authorization": f"Bearer {body['token']}"})
    assert got.status_code == 200
    assert got.headers["Docker-Content-Digest"] == img.digest

    [req] = token_server.requests
    assert req.user is None and req.status == 200 and req.scopes == [f"repository:{repo}:pull"]
    assert token_server.scopes_asked() == [f"repository:{repo}:pull"]


def test_anonymous_token_is_pull_only(token_registry, token_server, unique_repo):
    repo = unique_repo()
    scope = f"repository:{repo}:pull,push"
    anon = requests.get(token_server.realm, params={"service": token_server.service, "scope": scope}).json()
    assert decode_jwt_claims(anon["token"])["access"][0]["actions"] == ["pull"]
    refused = requests.post(f"{token_registry.url}/v2/{repo}/blobs/uploads/",
                            headers={"Authorization": f"Bearer {anon['token']}"})
    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]

    user = requests.get(token_server.realm, params={"service": token_server.service, "scope": scope},
                        auth=(USERNAME, PASSWORD)).json()
    assert decode_jwt_claims(user["token"])["access"][0]["actions"] == ["pull", "push"]
    accepted = requests.post(f"{token_registry.url}/v2/{repo}/blobs/uploads/",
                             headers={"Authorization": f"Bearer {user['token']}"})
    assert accepted.status_code == 202

    wrong = requests.get(token_server.realm, params={"service": token_server.service, "scope": scope},
                         auth=(USERNAME, "nope"))
    assert wrong.status_code == 401
    assert [r.user for r in token_server.requests] == [None, USERNAME, None]
    assert [r.status for r in token_server.requests] == [200, 200, 401]


def test_token_server_knobs(token_registry, token_server, unique_repo):
    repo = unique_repo()
    push_image(token_registry, f"{repo}:v1")
    params = {"service": token_server.service, "scope": f"repository:{repo}:pull"}
    url = f"{token_registry.url}/v2/{repo}/manifests/v1"

    token_server.expires_in = 2
    token_server.send_token = False
    body = requests.get(token_server.realm, params=params).json()
    assert body["expires_in"] == 2 and "token" not in body and "access_token" in body

    # A JWT already past exp + the registry's 60 s leeway is refused by the registry.
    token_server.jwt_lifetime = -120
    stale = requests.get(token_server.realm, params=params).json()["access_token"]
    r = requests.get(url, headers={"Accept": ACCEPT_ALL, "Authorization": f"Bearer {stale}"})
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]

    token_server.jwt_lifetime = None
    token_server.private_repos.add(repo)
    private = requests.get(token_server.realm, params=params).json()["access_token"]
    assert decode_jwt_claims(private)["access"] == []
    r = requests.get(url, headers={"Accept": ACCEPT_ALL, "Authorization": f"Bearer {private}"})
    assert r.status_code == 401

    token_server.fail_next = [503, 429]
    assert requests.get(token_server.realm, params=params).status_code == 503
    r = requests.get(token_server.realm, params=params)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert requests.get(token_server.realm, params=params).status_code == 200

    # POST form (OAuth2 style) works too, and multiple scopes are recorded.
    r = requests.post(token_server.realm, data={"service": token_server.service, "grant_type": "password",
                                                "scope": f"repository:{repo}:pull registry:catalog:*"},
                      auth=(USERNAME, PASSWORD))
    assert r.status_code == 200
    assert token_server.requests[-1].scopes == [f"repository:{repo}:pull", "registry:catalog:*"]
    assert len(token_server.requests) == 7


# -- builder: tar layers -------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_tar_builder_members(fmt):
    tar = build_tar(RICH_MEMBERS, fmt)
    members = {m.name: m for m in read_tar(tar)}
    assert members["etc/passwd"].isfile() and members["etc"].isdir()
    assert members["usr/bin/sudo"].mode == 0o4755
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["etc/passwd-"].islnk() and members["etc/passwd-"].linkname == "etc/passwd"
    assert members["dev/null"].ischr() and (members["dev/null"].devmajor, members["dev/null"].devminor) == (1, 3)
    assert members["dev/sda"].isblk() and members["run/initctl"].isfifo()
    assert "etc/.wh.shadow" in members and "var/cache/apt/.wh..wh..opq" in members
    assert members["home/bob/.env"].uname == "bob" and members["home/bob/.env"].uid == 1000
    assert "deep/" + "d" * 120 + "/file.txt" in members
    assert "odd/with space\nnewline*?[glob]" in members
    assert os.fsencode(b"odd/latin1-\xe9\xff".decode("utf-8", "surrogateescape")) == b"odd/latin1-\xe9\xff"
    assert b"odd/latin1-\xe9\xff".decode("utf-8", "surrogateescape") in members
    if fmt == "pax":
        assert members["time/fractional"].mtime == pytest.approx(1_700_000_000.5)
        assert b"hdrcharset=BINARY" in tar  # non-UTF-8 path kept as raw bytes in pax
    else:
        assert b"././@LongLink" in tar


def test_tar_builder_ustar_and_compact_specs():
    with pytest.raises(ValueError):
        build_tar([file("x" * 300)], "ustar")
    tar = build_tar({"a/": None, "a/b.txt": "hi", "c": b"\x00"}, "ustar")
    names = [(m.name, m.type) for m in read_tar(tar)]
    assert names == [("a", tarfile.DIRTYPE), ("a/b.txt", tarfile.REGTYPE), ("c", tarfile.REGTYPE)]
    tar2 = build_tar(["d/", ("e", b"1"), "f"])
    assert [m.name for m in read_tar(tar2)] == ["d", "e", "f"]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_compression_and_digests(compression):
    lay = layer(RICH_MEMBERS, compression, chunks=3)
    assert lay.digest == sha256(lay.blob) and lay.diff_id == sha256(lay.tar)
    assert decompress(lay.blob, compression) == lay.tar
    if compression == "gzip":
        assert lay.blob.count(b"\x1f\x8b\x08") >= 3  # three members
    if compression == "zstd":
        assert lay.blob.count(b"\x28\xb5\x2f\xfd") >= 3  # three frames
    assert lay.media_type_for("oci") == {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]
    raw = raw_layer(b"\x1f\x8bgarbage")
    assert raw.diff_id == raw.digest and raw.media_type_for("docker") == DOCKER_LAYER_GZIP
    bad = tar_layer(lay.tar[:700], "gzip")
    assert gzip.decompress(bad.blob) == lay.tar[:700] and bad.diff_id == sha256(lay.tar[:700])


# -- builder: pushing ------------------------------------------------------------------------
@pytest.mark.parametrize("media,compression", [("oci", "gzip"), ("oci", "zstd"), ("oci", "none"),
                                               ("docker", "gzip")])
def test_push_image_roundtrip(registry, unique_repo, media, compression):
    repo = unique_repo(media)
    layers = [layer(RICH_MEMBERS, compression), layer({"app/.env": "X=1"}, compression,
                                                      annotations={"org.example/note": "hi"})]
    img = push_image(registry, f"{repo}:v1", layers, media=media, platform="linux/arm64/v8",
                     history=[empty("ARG V=1"), "ADD rootfs /", empty("ENV A=1"), "COPY .env /app/",
                              empty('CMD ["sh"]')], tags=["latest"])
    assert img.ref == f"{registry.host}/{repo}:v1"
    assert img.digest_ref == f"{registry.host}/{repo}@{img.digest}"
    for ref in ("v1", "latest", img.digest):
        r = get_manifest(registry, repo, ref)
        assert r.status_code == 200
        assert r.headers["Content-Type"] == (OCI_MANIFEST if media == "oci" else DOCKER_MANIFEST)
        assert r.headers["Docker-Content-Digest"] == img.digest
        assert r.content == img.manifest_bytes
    m = img.manifest
    assert m["config"]["mediaType"] == (OCI_CONFIG if media == "oci" else DOCKER_CONFIG)
    assert m["layers"][1]["annotations"] == {"org.example/note": "hi"}
    cfg = json.loads(get_blob(registry, repo, img.config_digest).content)
    assert cfg == img.config
    assert (cfg["os"], cfg["architecture"], cfg["variant"]) == ("linux", "arm64", "v8")
    assert cfg["rootfs"]["diff_ids"] == [lay.diff_id for lay in layers]
    assert [h.get("empty_layer", False) for h in cfg["history"]] == [True, False, True, False, True]
    for lay, desc in zip(layers, m["layers"]):
        blob = get_blob(registry, repo, lay.digest)
        assert blob.content == lay.blob and desc["size"] == len(lay.blob)
        assert decompress(blob.content, compression) == lay.tar


@pytest.mark.integration
@pytest.mark.parametrize("flavour", ["basic_registry", "token_registry"])
def test_push_with_auth(flavour, request, unique_repo):
    reg = request.getfixturevalue(flavour)
    repo = unique_repo()
    img = push_image(reg, f"{repo}:v1", media="docker")
    assert requests.get(f"{reg.url}/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT_ALL}).status_code == 401
    r = get_manifest(reg, repo, "v1")
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == img.digest


def test_push_by_digest_only_and_delete(registry, unique_repo):
    repo = unique_repo()
    img = push_image(registry, repo)
    assert split_target(repo) == (repo, None) and img.tag is None and "@sha256:" in img.ref
    assert split_target("127.0.0.1:5000/a/b:c") == ("127.0.0.1:5000/a/b", "c")
    assert get_manifest(registry, repo, img.digest).status_code == 200
    delete_manifest(registry, repo, img.digest)
    assert get_manifest(registry, repo, img.digest).status_code == 404


def test_oci_manifest_needs_oci_accept(registry, unique_repo):
    repo = unique_repo()
    push_image(registry, f"{repo}:v1", media="oci")
    r = get_manifest(registry, repo, "v1", accept=DOCKER_MANIFEST)
    assert r.status_code == 404  # the seed tool's bug, reproduced by the real registry


@pytest.mark.parametrize("media", ["oci", "docker"])
def test_foreign_layer_not_pushed(registry, unique_repo, media):
    repo = unique_repo()
    base = layer({"Files/hello.txt": "windows"})
    ext = foreign_layer(base, ["https://example.invalid/layer.tar.gz"])
    img = push_image(registry, f"{repo}:v1", [layer({"a": "1"}), ext], media=media, platform="windows/amd64")
    desc = img.manifest["layers"][1]
    assert desc["urls"] == ["https://example.invalid/layer.tar.gz"]
    assert desc["mediaType"] == (DOCKER_FOREIGN_LAYER if media == "docker"
                                 else "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
    assert get_blob(registry, repo, ext.digest).status_code == 404
    assert img.config["rootfs"]["diff_ids"][1] == base.diff_id
    # The Docker foreign type is accepted in OCI manifests too (2.8 does not mind).
    img2 = push_image(registry, f"{repo}:v2", [foreign_layer(base, ["https://example.invalid/x"],
                                                             media_type=DOCKER_FOREIGN_LAYER)])
    assert get_manifest(registry, repo, "v2").status_code == 200 and img2.layers[0].push is False


@pytest.mark.parametrize("media", ["oci", "docker"])
def test_index_with_attestation_roundtrip(registry, unique_repo, media):
    repo = unique_repo(media)
    v7 = build_image([layer({"etc/arch": "armv7"}, "zstd" if media == "oci" else "gzip")],
                     history=[step("COPY arch /etc/arch")], media=media, platform="linux/arm/v7")
    idx = push_index(registry, f"{repo}:latest", images=["linux/amd64", "linux/arm64/v8", v7],
                     attestation=True, media=media)
    r = get_manifest(registry, repo, "latest")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == (OCI_INDEX if media == "oci" else DOCKER_MANIFEST_LIST)
    assert r.headers["Docker-Content-Digest"] == idx.digest and r.content == idx.index_bytes
    entries = r.json()["manifests"]
    plats = [(e["platform"]["os"], e["platform"]["architecture"], e["platform"].get("variant")) for e in entries]
    assert plats == [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"),
                     ("unknown", "unknown", None), ("unknown", "unknown", None), ("unknown", "unknown", None)]
    for img, entry in zip(idx.images, entries):
        assert entry["digest"] == img.digest
        got = get_manifest(registry, repo, img.digest)
        assert got.status_code == 200 and got.content == img.manifest_bytes
    for att, img, entry in zip(idx.attestations, idx.images, entries[3:]):
        assert entry["annotations"] == {ATTESTATION_DIGEST_ANNOTATION: img.digest,
                                        ATTESTATION_ANNOTATION: "attestation-manifest"}
        assert entry["mediaType"] == OCI_MANIFEST
        got = get_manifest(registry, repo, att.digest)
        assert got.status_code == 200 and got.json()["layers"][0]["mediaType"] == IN_TOTO
        stmt = json.loads(get_blob(registry, repo, att.layers[0].digest).content)
        assert stmt["subject"][0]["digest"]["sha256"] == img.digest.split(":")[1]
    v7_layer = idx.images[2].layers[0]
    tar = decompress(get_blob(registry, repo, v7_layer.digest).content, v7_layer.compression)
    assert [m.name for m in read_tar(tar)] == ["etc/arch"]
    assert idx.images[2].config["variant"] == "v7"


# -- catalog -------------------------------------------------------------------------------------
def test_catalog_pagination(registry, registry_factory, unique_repo):
    for i in range(3):
        push_image(registry, f"{unique_repo()}:v{i}")
    r = requests.get(f"{registry.url}/v2/_catalog", params={"n": 2})
    assert r.status_code == 200 and len(r.json()["repositories"]) == 2
    link = r.headers["Link"]
    assert link.startswith("</v2/_catalog?") and link.endswith('>; rel="next"')
    nxt = requests.get(urllib.parse.urljoin(registry.url, link[1:link.index(">")]))
    assert nxt.status_code == 200 and nxt.json()["repositories"]

    small = registry_factory("anonymous", catalog_max_entries=2)
    for name in ("a/one", "a/two", "a/three"):
        push_image(small, f"{name}:1")
    r = requests.get(f"{small.url}/v2/_catalog")
    assert r.json()["repositories"] == ["a/one", "a/three"] and 'rel="next"' in r.headers["Link"]
    # distribution 2.8 refuses n > maxentries (clients must cope) and ignores n on tags/list.
    assert requests.get(f"{small.url}/v2/_catalog", params={"n": 5}).status_code == 400


# -- fault proxy -----------------------------------------------------------------------------------
@pytest.fixture
def blob_image(registry, unique_repo):
    """An image with one ~200 KiB incompressible-ish layer, for body faults."""
    payload = hashlib.sha256(b"seed").digest() * 6400  # 204800 bytes
    lay = layer([file("big.bin", os.urandom(200_000) + payload)], "gzip")
    return push_image(registry, f"{unique_repo()}:v1", [lay])


def blob_path(img) -> str:
    return f"/v2/{img.repository}/blobs/{img.layers[0].digest}"


def test_proxy_passthrough_records_and_ranges(fault_proxy, registry, blob_image):
    img, lay = blob_image, blob_image.layers[0]
    r = requests.get(f"{fault_proxy.url}/v2/{img.repository}/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert r.status_code == 200 and r.content == img.manifest_bytes
    assert r.headers["Content-Type"] == OCI_MANIFEST and r.headers["Docker-Content-Digest"] == img.digest
    b = requests.get(fault_proxy.url + blob_path(img))
    assert b.content == lay.blob
    rng = requests.get(fault_proxy.url + blob_path(img), headers={"Range": "bytes=10-19"})
    assert rng.status_code == 206 and rng.content == lay.blob[10:20]
    assert rng.headers["Content-Range"] == f"bytes 10-19/{len(lay.blob)}"
    assert fault_proxy.count(r"/blobs/", "GET") == 2
    assert fault_proxy.bytes_served(r"/blobs/") == len(lay.blob) + 10
    rec = fault_proxy.find(r"/blobs/")[1]
    assert rec.headers["Range"] == "bytes=10-19" and rec.status == 206 and rec.fault is None
    # Upload Location headers point back at the proxy, so pushing through it works.
    up = requests.post(f"{fault_proxy.url}/v2/{img.repository}/blobs/uploads/")
    assert up.status_code == 202 and up.headers["Location"].startswith(fault_proxy.url)
    pushed = push_image(fault_proxy, f"{img.repository}:via-proxy")
    assert pushed.ref.startswith(fault_proxy.host)
    assert get_manifest(registry, img.repository, "via-proxy").status_code == 200


def test_proxy_status_faults(fault_proxy, blob_image):
    url = fault_proxy.url + blob_path(blob_image)
    f = fault_proxy.fail(429, r"/blobs/", times=2)
    for _ in range(2):
        r = requests.get(url)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert requests.get(url).status_code == 200 and f.hits == 2 and f.times == 0
    for status in (500, 502, 503, 504):
        fault_proxy.fail(status, r"/blobs/", method="GET")
        assert requests.head(url).status_code == 200  # method filter: HEAD untouched
        assert requests.get(url).status_code == status
    fault_proxy.fail(503, r"/manifests/", times=None, retry_after=7)
    for _ in range(3):
        r = requests.get(f"{fault_proxy.url}/v2/{blob_image.repository}/manifests/v1")
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    fault_proxy.clear_faults()
    assert requests.get(f"{fault_proxy.url}/v2/{blob_image.repository}/manifests/v1",
                        headers={"Accept": ACCEPT_ALL}).status_code == 200
    assert [r.fault for r in fault_proxy.find(r"/manifests/")] == ["status"] * 3 + [None]


def test_proxy_drop(fault_proxy, blob_image):
    fault_proxy.drop(r"/blobs/")
    with pytest.raises(requests.ConnectionError):
        requests.get(fault_proxy.url + blob_path(blob_image))
    [rec] = fault_proxy.find(r"/blobs/")
    assert rec.status is None and rec.fault == "drop"
    assert requests.get(fault_proxy.url + blob_path(blob_image)).status_code == 200


@pytest.mark.parametrize("kind", ["reset_mid_body", "truncate"])
def test_proxy_broken_bodies(fault_proxy, blob_image, kind):
    size = len(blob_image.layers[0].blob)
    getattr(fault_proxy, kind)(r"/blobs/", after=5000)
    got = bytearray()
    with pytest.raises(requests.RequestException):
        with requests.get(fault_proxy.url + blob_path(blob_image), stream=True) as r:
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == size
            for chunk in r.iter_content(1000):  # 5000 = 5 whole chunks: urllib3 drops a partial one
                got += chunk
    # A TCP RST may make the client's kernel drop bytes it had not read yet.
    assert len(got) == 5000 if kind == "truncate" else len(got) <= 5000
    assert bytes(got) == blob_image.layers[0].blob[:len(got)]
    assert fault_proxy.find(r"/blobs/")[0].bytes_sent == 5000
    fault_proxy.add_fault(kind, r"/blobs/")  # default cut: half the body
    with pytest.raises(requests.RequestException):
        requests.get(fault_proxy.url + blob_path(blob_image))
    assert fault_proxy.find(r"/blobs/")[1].bytes_sent == size // 2


def test_proxy_stall(fault_proxy, blob_image):
    fault_proxy.stall(r"/blobs/", seconds=1.5, after=100)
    t0 = time.monotonic()
    with pytest.raises(requests.ConnectionError):  # read timeout mid-body
        with requests.get(fault_proxy.url + blob_path(blob_image), stream=True, timeout=(2, 0.3)) as r:
            assert r.status_code == 200
            for _ in r.iter_content(1 << 16):
                pass
    assert time.monotonic() - t0 < 1.4
    fault_proxy.stall(r"/manifests/", seconds=1.5, before_headers=True)
    with pytest.raises(requests.Timeout):
        requests.get(f"{fault_proxy.url}/v2/{blob_image.repository}/manifests/v1", timeout=(2, 0.3))
    # then="continue": a slow but complete response.
    fault_proxy.stall(r"/blobs/", seconds=0.3, after=10, then="continue")
    r = requests.get(fault_proxy.url + blob_path(blob_image), timeout=5)
    assert r.content == blob_image.layers[0].blob


def test_proxy_corrupt(fault_proxy, blob_image):
    blob = blob_image.layers[0].blob
    fault_proxy.corrupt(r"/blobs/")
    r = requests.get(fault_proxy.url + blob_path(blob_image))
    assert r.status_code == 200 and len(r.content) == len(blob)
    diffs = [i for i, (a, b) in enumerate(zip(r.content, blob)) if a != b]
    assert diffs == [len(blob) // 2] and sha256(r.content) != blob_image.layers[0].digest
    fault_proxy.corrupt(r"/blobs/", offset=3)
    r = requests.get(fault_proxy.url + blob_path(blob_image), headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content[3] != blob[3] and r.content[:3] == blob[:3]


def test_proxy_redirect_to_cdn(make_fault_proxy, basic_registry, unique_repo):
    img = push_image(basic_registry, f"{unique_repo()}:v1")
    proxy = make_fault_proxy(basic_registry)
    proxy.redirect(r"/blobs/", times=None)
    url = f"{proxy.url}/v2/{img.repository}/blobs/{img.layers[0].digest}"
    # Without credentials the registry's 401 passes through and the fault stays armed.
    assert requests.get(url).status_code == 401
    r = requests.get(url, auth=(USERNAME, PASSWORD), allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"].startswith(proxy.cdn.url + "/cdn/")
    # A careless client forwarding Authorization is caught by the CDN's records...
    leaked = requests.get(r.headers["Location"], headers={"Authorization": basic_auth_value(USERNAME, PASSWORD)})
    assert leaked.content == img.layers[0].blob
    # ...requests itself strips it on a cross-origin redirect.
    followed = requests.get(url, auth=(USERNAME, PASSWORD))
    assert followed.status_code == 200 and followed.content == img.layers[0].blob
    assert proxy.cdn.authorization_headers == [basic_auth_value(USERNAME, PASSWORD), None]
    rng = requests.get(r.headers["Location"], headers={"Range": "bytes=5-"})
    assert rng.status_code == 206 and rng.content == img.layers[0].blob[5:]
    assert requests.get(r.headers["Location"], headers={"Range": "bytes=999999-"}).status_code == 416
    proxy.cdn.reject_authorization = True
    assert requests.get(r.headers["Location"], headers={"Authorization": "Bearer x"}).status_code == 400
    assert [rec.status for rec in proxy.find(r"/blobs/")] == [401, 307, 307]


def test_proxy_cdn_hostname(make_fault_proxy, registry, unique_repo):
    img = push_image(registry, f"{unique_repo()}:v1")
    proxy = make_fault_proxy(registry, cdn_host="localhost")
    proxy.redirect()
    r = requests.get(f"{proxy.url}/v2/{img.repository}/blobs/{img.layers[0].digest}", allow_redirects=False)
    assert urllib.parse.urlsplit(r.headers["Location"]).hostname == "localhost"


def test_proxy_in_front_of_token_registry(make_fault_proxy, token_registry, token_server, unique_repo):
    img = push_image(token_registry, f"{unique_repo()}:v1")
    proxy = make_fault_proxy(token_registry)
    assert proxy.token_server is token_server
    r = requests.get(f"{proxy.url}/v2/{img.repository}/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert r.status_code == 401 and challenge_params(r.headers["WWW-Authenticate"])["realm"] == token_server.realm


def test_proxy_upstream_down_is_502(make_fault_proxy):
    class Gone:
        url, host = "http://127.0.0.1:9", "127.0.0.1:9"  # discard port: nothing listens

    proxy = make_fault_proxy(Gone())
    r = requests.get(f"{proxy.url}/v2/")
    assert r.status_code == 502 and proxy.find("/v2/")[0].status == 502


# -- misc fixtures ------------------------------------------------------------------------------------
def test_docker_config_fixture(docker_config, basic_registry):
    assert os.environ["DOCKER_CONFIG"] == str(docker_config.dir)
    data = json.loads((docker_config.dir / "config.json").read_text())
    auth = base64.b64decode(data["auths"][basic_registry.host]["auth"]).decode()
    assert auth == f"{USERNAME}:{PASSWORD}"
    docker_config.make_credential_helper("harness", {"reg.example": ("bob", "pw")})
    docker_config.set_cred_helper("reg.example", "harness")
    out = subprocess.run(["docker-credential-harness", "get"], input="reg.example", capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout) == {"ServerURL": "reg.example", "Username": "bob", "Secret": "pw"}
    miss = subprocess.run(["docker-credential-harness", "get"], input="other", capture_output=True, text=True)
    assert miss.returncode == 1
    assert docker_config.helper_calls("harness") == ["reg.example", "other"]
    assert json.loads(docker_config.path.read_text())["credHelpers"] == {"reg.example": "harness"}


def test_docker_config_is_hermetic_by_default():
    d = os.environ["DOCKER_CONFIG"]
    assert os.path.isdir(d) and os.listdir(d) == []


def test_unique_repo(unique_repo):
    a, b = unique_repo(), unique_repo("Some App!")
    assert a != b and a.startswith("t/test-unique-repo-") and "-some-app-" in b
    rx = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*)*$")
    assert rx.match(a) and rx.match(b)


def test_compress_helper_roundtrip():
    data = os.urandom(3000)
    for c in ("gzip", "zstd", "none"):
        assert decompress(compress(data, c, chunks=4), c) == data
    assert sha256_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_push_built_reuses_blobs(registry, unique_repo):
    shared = layer({"shared.txt": "same"})
    repo = unique_repo()
    a = push_built(registry, f"{repo}:a", build_image([shared]))
    b = push_image(registry, f"{repo}:b", [shared, layer({"b": "b"})], media="docker")
    assert a.layers[0].digest == b.layers[0].digest
    assert io.BytesIO(get_blob(registry, repo, shared.digest).content).read() == shared.blob


# -- helpers for any test: wait_until, the seeded rng --------------------------------------------


def test_the_harness_never_imports_layerslayer():
    "It is an independent check of the client: importing every module of it loads no layerslayer."
    modules = sorted(p.stem for p in (Path(__file__).parent / "harness").glob("*.py") if p.stem != "__init__")
    code = (f"import sys\nfor m in {modules!r}:\n    __import__('harness.' + m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'layerslayer'))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_wait_until_returns_the_first_true_value():
    calls = []

    def third_time() -> list[int]:
        calls.append(1)
        return calls if len(calls) == 3 else []

    assert wait_until(third_time, timeout=5, interval=0.001) == [1, 1, 1]


def test_wait_until_names_what_it_waited_for():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"after 0.2 s for the moon"):
        wait_until(lambda: False, timeout=0.2, interval=0.05, what="the moon")
    assert 0.2 <= time.monotonic() - started < 2


def test_a_failing_randomised_test_gives_its_seed_and_the_seed_reproduces_it(tmp_path):
    (tmp_path / "test_draw.py").write_text("def test_draw(rng):\n    print('drew', rng.random())\n    assert False\n")
    # tests/conftest.py loaded as a plugin: its rng fixture and report hook, outside tests/ (and
    # without the installed plugins, which take seconds to load).
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-p", "no:cacheprovider", "test_draw.py"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), LAYERSLAYER_TEST_SEED="20240611",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120).stdout
    assert f"drew {random.Random(20240611).random()}\n" in out, out
    assert "rerun with LAYERSLAYER_TEST_SEED=20240611 to reproduce" in out, out
