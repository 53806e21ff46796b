"""The OCI and Docker vocabulary (layerslayer/oci.py): each media type, digest
and whiteout rule as the specs and the runtimes state it."""

from __future__ import annotations

import pytest

from layerslayer import oci

LAYERS = {
    oci.OCI_LAYER: "none",
    oci.OCI_LAYER_GZIP: "gzip",
    oci.OCI_LAYER_ZSTD: "zstd",
    oci.OCI_NONDISTRIBUTABLE_LAYER_GZIP: "gzip",
    oci.DOCKER_LAYER: "gzip",
    oci.DOCKER_FOREIGN_LAYER: "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}


@pytest.mark.parametrize("media_type,compression", LAYERS.items())
def test_layer_types(media_type, compression):
    assert oci.is_layer(media_type) and oci.layer_compression(media_type) == compression
    assert not (oci.is_index(media_type) or oci.is_manifest(media_type) or oci.is_config(media_type))
    assert oci.is_foreign(media_type) == ("foreign" in media_type or "nondistributable" in media_type)
    assert oci.is_distributable(media_type) != oci.is_foreign(media_type)


def test_manifests_indexes_and_configs():
    for media_type in (oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST):
        assert oci.is_index(media_type) and not oci.is_manifest(media_type)
    for media_type in (oci.OCI_MANIFEST, oci.DOCKER_MANIFEST):
        assert oci.is_manifest(media_type) and not oci.is_index(media_type)
        assert media_type in oci.MANIFEST_ACCEPT
    assert oci.is_schema1(oci.DOCKER_SCHEMA1_SIGNED) and not oci.is_manifest(oci.DOCKER_SCHEMA1_SIGNED)
    for media_type in (oci.OCI_CONFIG, oci.DOCKER_CONFIG):
        assert oci.is_config(media_type) and not oci.is_layer(media_type)
    assert oci.layer_compression("application/octet-stream") == "auto"  # unknown: the bytes decide


def test_blob_extension():
    assert oci.blob_extension(oci.OCI_LAYER_ZSTD) == "tar.zst"
    assert oci.blob_extension("application/vnd.docker.image.rootfs.diff.tar") == "tar"
    assert oci.blob_extension(oci.DOCKER_LAYER) == "tar.gz"
    assert oci.blob_extension(oci.OCI_CONFIG) == "json"
    assert oci.blob_extension(oci.DOCKER_CONFIG) == "json"
    assert oci.blob_extension(None) == "blob"


def test_attestations_and_tocs():
    attestation = {"annotations": {oci.ATTESTATION_ANNOTATION: oci.ATTESTATION_REFERENCE_TYPE}}
    assert oci.is_attestation(attestation) and not oci.is_attestation({"platform": {"os": "linux"}})
    assert oci.toc_kind({oci.ESTARGZ_TOC_DIGEST: "sha256:" + "0" * 64}) == "estargz"
    assert oci.toc_kind({oci.ZSTD_CHUNKED_MANIFEST_POSITION: "1:2:3:1"}) == "zstd-chunked"
    assert oci.toc_kind({oci.ZSTD_CHUNKED_OLD_POSITION: "1:2:3:1"}) == "zstd-chunked"
    assert oci.toc_kind(None) is None and oci.toc_kind({"org.opencontainers.image.title": "x"}) is None


@pytest.mark.parametrize("text,valid,known", [
    ("sha256:" + "a" * 64, True, True),
    ("sha512:" + "0" * 128, True, True),
    ("sha256:" + "A" * 64, False, False),  # a known algorithm takes lowercase hex only
    ("sha256:" + "a" * 63, False, False),
    ("blake3:" + "a" * 64, True, False),  # the grammar allows others; we hash only the known three
    ("sha256", False, False),
    ("", False, False),
    (None, False, False),
])
def test_is_digest(text, valid, known):
    assert oci.is_digest(text) is valid
    assert oci.is_digest(text, known=True) is known


@pytest.mark.parametrize("path,code,target", [
    ("etc/.wh.passwd", oci.WHITEOUT, "etc/passwd"),
    (".wh.root", oci.WHITEOUT, "root"),
    ("var/cache/.wh..wh..opq", oci.OPAQUE, "var/cache"),
    (".wh..wh..opq", oci.OPAQUE, ""),  # at the root: empties the whole filesystem below
    ("etc/passwd", oci.ORDINARY, None),
    ("etc/x.wh.y", oci.ORDINARY, None),  # the prefix counts only at the start of the name
])
def test_whiteouts(path, code, target):
    assert oci.whiteout_code(path) == code
    assert oci.is_whiteout(path) == (code != oci.ORDINARY)
    assert oci.is_opaque_marker(path) == (code == oci.OPAQUE)
    if target is not None:
        assert oci.whiteout_target(path) == target
    if code == oci.WHITEOUT:
        assert oci.whiteout_marker(target) == path


def test_entry_types():
    assert [oci.TYPE_CODES[name] for name in oci.ENTRY_TYPES] == list(range(len(oci.ENTRY_TYPES)))
    assert set(oci.TYPE_LETTERS.values()) == set(oci.ENTRY_TYPES) == set(oci.MODE_CHARS)
