"""The OCI and Docker vocabulary: media types, digests, whiteouts, entry types.

Every module that needs to know what a media type, a digest or a whiteout
marker is asks here, so a new media type or a new rule is written in one
place (as ``pkg/v1/types`` in go-containerregistry). Standard library
imports only: every layer of the package may import this module.
"""

from __future__ import annotations

import re

# -- media types ----------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDISTRIBUTABLE_LAYER_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDISTRIBUTABLE_LAYER_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED})
#: The Accept header of a manifest request: every type we can read.
MANIFEST_ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST_LIST}, {DOCKER_MANIFEST}"

# Non-distributable ("foreign") layers live outside the registry (Windows base
# layers): their media types say so with one of these words.
_FOREIGN_MARKERS = ("foreign", "nondistributable")

#: ``vnd.docker.reference.type`` annotation of BuildKit's attestation manifests.
ATTESTATION_REFERENCE_TYPE = "attestation-manifest"
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


def _bare(media_type: str | None) -> str:
    "The media type without parameters, lower case."
    return (media_type or "").split(";", 1)[0].strip().lower()


def is_index(media_type: str | None) -> bool:
    "An OCI image index or a Docker manifest list (the image has platforms to choose from)."
    return bool(media_type) and ("image.index" in media_type or "manifest.list" in media_type)


def is_manifest(media_type: str | None) -> bool:
    "An OCI image manifest or a Docker schema 2 manifest (one platform's image)."
    return media_type in MANIFEST_TYPES


def is_schema1(media_type: str | None) -> bool:
    "A Docker schema 1 manifest (never supported by us: registries dropped it)."
    return media_type in SCHEMA1_TYPES


def is_config(media_type: str | None) -> bool:
    "An image config blob (JSON)."
    mt = _bare(media_type)
    return mt.endswith("json") or "config" in mt


def is_distributable(media_type: str | None) -> bool:
    "False for foreign / non-distributable layers, which the registry does not serve."
    return not is_foreign(media_type)


def is_foreign(media_type: str | None) -> bool:
    "A non-distributable layer (Windows base layers): recorded, never fetched."
    return any(marker in (media_type or "") for marker in _FOREIGN_MARKERS)


def is_attestation(descriptor: dict) -> bool:
    "A manifest descriptor of an index that is an attestation (SBOM, provenance), not a platform."
    annotations = descriptor.get("annotations") or {}
    return annotations.get(ATTESTATION_ANNOTATION) == ATTESTATION_REFERENCE_TYPE


def layer_compression(media_type: str | None) -> str:
    """A layer media type's compression: "gzip", "zstd", "none" (a plain tar)
    or "auto" (unknown: sniff the bytes)."""
    mt = _bare(media_type)
    if mt.endswith(("+gzip", ".gzip", "+gz", ".tgz", "tar.gz", "/gzip", "/x-gzip")):
        return "gzip"
    if mt.endswith(("+zstd", ".zstd", "tar.zst", "/zstd")):
        return "zstd"
    if mt.endswith((".tar", "/x-tar", "/tar", "layer.v1.tar")):
        return "none"
    return "auto"


def is_layer(media_type: str | None) -> bool:
    "A layer blob (a tar, compressed or not) rather than a config or a manifest."
    mt = _bare(media_type)
    return ".layer." in mt or ".rootfs." in mt


def blob_extension(media_type: str | None) -> str:
    "File extension for a blob of this media type: tar.gz, tar.zst, tar, json or blob."
    mt = _bare(media_type)
    if is_config(mt):
        return "json"
    kind = layer_compression(mt)
    return {"gzip": "tar.gz", "zstd": "tar.zst", "none": "tar"}.get(kind, "tar.gz" if "gzip" in mt else "blob")


# Layers with a table of contents, found by their descriptor's annotations.
ESTARGZ_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
ZSTD_CHUNKED_MANIFEST_POSITION = "io.github.containers.zstd-chunked.manifest-position"
ZSTD_CHUNKED_MANIFEST_CHECKSUM = "io.github.containers.zstd-chunked.manifest-checksum"
# Older containers/storage names (before the io.github prefix).
ZSTD_CHUNKED_OLD_POSITION = "io.containers.zstd-chunked.manifest-position"
ZSTD_CHUNKED_OLD_CHECKSUM = "io.containers.zstd-chunked.manifest-checksum"


def toc_kind(annotations: dict | None) -> str | None:
    """"estargz", "zstd-chunked" or None, from a layer descriptor's annotations."""
    if not annotations:
        return None
    if annotations.get(ESTARGZ_TOC_DIGEST):
        return "estargz"
    if annotations.get(ZSTD_CHUNKED_MANIFEST_POSITION) or annotations.get(ZSTD_CHUNKED_OLD_POSITION):
        return "zstd-chunked"
    return None


# -- digests --------------------------------------------------------------------

#: The algorithms we trust for a digest (nothing weaker than sha256).
DIGEST_ALGORITHMS = ("sha256", "sha384", "sha512")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def is_digest(text, *, known: bool = False) -> bool:
    """A digest by the OCI grammar (``algorithm:encoded``); the algorithms we
    know (sha256/384/512) must have the right number of lowercase hex digits.
    ``known=True`` also refuses every other algorithm (for digests we hash)."""
    if not isinstance(text, str) or not _DIGEST.match(text):
        return False
    algorithm, _, hex_part = text.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is not None:
        return len(hex_part) == expected and _LOWER_HEX.fullmatch(hex_part) is not None
    return not known


def digest_algorithm(digest: str) -> str:
    "``sha256`` of ``sha256:…``."
    return digest.partition(":")[0]


# -- whiteouts (OCI image-spec layer.md; what containerd and moby unpack) --------

WHITEOUT_PREFIX = ".wh."
#: In a directory, hides everything lower layers hold in it.
OPAQUE_MARKER = ".wh..wh..opq"

#: ``entries.whiteout`` codes (also ``deletions.kind``): see layerslayer.migrations.
ORDINARY, WHITEOUT, OPAQUE, REPLACES_DIRECTORY = 0, 1, 2, 3


def whiteout_code(path: str) -> int:
    """1 for a whiteout marker ``dir/.wh.NAME``, 2 for an opaque marker
    ``dir/.wh..wh..opq``, 0 for anything else (code 3 depends on other entries)."""
    name = path[path.rfind("/") + 1 :]
    if name[:4] != WHITEOUT_PREFIX:
        return ORDINARY
    return OPAQUE if name == OPAQUE_MARKER else WHITEOUT


def is_whiteout(path: str) -> bool:
    "True for any marker (``.wh.`` basename, opaque markers included)."
    return path[path.rfind("/") + 1 :].startswith(WHITEOUT_PREFIX)


def is_opaque_marker(path: str) -> bool:
    return path[path.rfind("/") + 1 :] == OPAQUE_MARKER


def whiteout_target(path: str) -> str:
    """The path a whiteout marker deletes: ``a/b`` for ``a/.wh.b``; for an
    opaque marker, the directory it empties (``a`` for ``a/.wh..wh..opq``,
    ``""`` at the root)."""
    parent, _, name = path.rpartition("/")
    if name == OPAQUE_MARKER:
        return parent
    lead = parent + "/" if parent else ""
    return lead + name[len(WHITEOUT_PREFIX):]


def whiteout_marker(path: str) -> str:
    "The marker that deletes ``path``: ``a/.wh.b`` for ``a/b``."
    parent, _, name = path.rpartition("/")
    return (parent + "/" if parent else "") + WHITEOUT_PREFIX + name


# -- entry types ----------------------------------------------------------------

#: ``entries.type`` codes are the positions in this tuple (the schema's order).
ENTRY_TYPES = ("dir", "file", "symlink", "hardlink", "char", "block", "fifo")
#: Type name → ``entries.type`` code.
TYPE_CODES = {name: code for code, name in enumerate(ENTRY_TYPES)}
#: ``--type`` letters (as in ``find -type``) → entry type names.
TYPE_LETTERS = {"f": "file", "d": "dir", "l": "symlink", "h": "hardlink", "c": "char", "b": "block", "p": "fifo"}
#: First character of ``ls -l`` for each type (hard links show ``h`` as in ``tar -tv``).
MODE_CHARS = {"dir": "d", "file": "-", "symlink": "l", "hardlink": "h", "char": "c", "block": "b", "fifo": "p"}
