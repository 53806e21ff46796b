"""Images written in formats other tools load: an OCI image layout directory
(``skopeo copy oci:DIR ...``, crane, dive) or a docker-archive tar
(``docker load``, ``skopeo copy docker-archive:FILE ...``).

Both hold the platform manifest exactly as the registry served it (so its
digest is kept), the config and every layer, each blob verified against its
digest and size as it downloads (``download.download_blob``).
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .download import download_blob, progress_context
from .errors import LayerslayerError, UsageError
from .oci import OCI_INDEX
from .registry import RegistryClient

FORMATS = ("oci", "docker-archive")


@dataclass
class LayoutResult:
    path: Path
    blobs: list = field(default_factory=list)  # download.DownloadResult of each blob fetched

    @property
    def fetched(self) -> int:
        return sum(result.fetched for result in self.blobs)


def _blob_file(root: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return root / "blobs" / algorithm / hexdigest


def write_oci_layout(client: RegistryClient, ref, image, target: Path, *, progress_factory=None,
                     on_result: Callable | None = None) -> LayoutResult:
    """Write the platform ``image`` of ``ref`` as an OCI image layout at ``target``
    (a new or empty directory; an existing layout gains the image)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / "oci-layout").is_file():
        raise UsageError(f"{target} is not empty and not an OCI layout")
    foreign = [layer.digest for layer in image.layers if layer.foreign]
    if foreign:
        raise LayerslayerError(f"{ref.short} has {len(foreign)} foreign layer(s) the registry does not serve: "
                               "it cannot be written whole")
    manifest = client.get_manifest(ref.repository, image.manifest_digest)
    result = LayoutResult(target)
    (target / "blobs").mkdir(parents=True, exist_ok=True)
    blob = _blob_file(target, image.manifest_digest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(manifest.body)
    config_size = _config_size(manifest.body)
    for digest, size in [(image.config_digest, config_size)] + [(layer.digest, layer.size) for layer in image.layers]:
        dest = _blob_file(target, digest)
        with progress_context(progress_factory, digest.partition(":")[2][:12], size) as bar:
            download = download_blob(client, ref.repository, digest, dest, size, progress=bar)
        result.blobs.append(download)
        if on_result:
            on_result(download)
    (target / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    index_file = target / "index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    name = ref.tag or image.manifest_digest
    descriptor = {
        "mediaType": manifest.media_type or json.loads(manifest.body).get("mediaType"),
        "digest": image.manifest_digest,
        "size": len(manifest.body),
        "annotations": {"org.opencontainers.image.ref.name": name},
        "platform": {k: v for k, v in (("os", image.platform.os), ("architecture", image.platform.architecture),
                                        ("variant", image.platform.variant)) if v},
    }
    index["manifests"] = [m for m in index.get("manifests", [])
                          if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != name] + [descriptor]
    _atomic_write(index_file, json.dumps(index, indent=2).encode() + b"\n")
    return result


def write_docker_archive(client: RegistryClient, ref, image, target: Path, *, progress_factory=None,
                         on_result: Callable | None = None) -> LayoutResult:
    """Write the platform ``image`` of ``ref`` as a docker-archive tar at ``target``
    (``manifest.json`` + config + layer blobs as the registry serves them,
    which ``docker load`` and skopeo decompress)."""
    target = Path(target)
    if target.is_dir():
        raise UsageError(f"{target} is a directory: docker-archive writes a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".layerslayer-") as tmp:
        staged = write_oci_layout(client, ref, image, Path(tmp) / "layout", progress_factory=progress_factory,
                                  on_result=on_result)
        root = staged.path
        config_name = image.config_digest.partition(":")[2] + ".json"
        layer_names = [layer.digest.partition(":")[2] + "/layer.tar" for layer in image.layers]
        repo = ref.repository.removeprefix("library/") if ref.is_docker_hub else f"{ref.registry}/{ref.repository}"
        tags = [f"{repo}:{ref.tag}"] if ref.tag else []
        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]
        part = target.with_name(target.name + ".part")
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
            tar.add(_blob_file(root, image.config_digest), config_name)
            for layer, name in zip(image.layers, layer_names):
                tar.add(_blob_file(root, layer.digest), name)
        os.replace(part, target)
    staged.path = target
    return staged


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _config_size(manifest_body: bytes) -> int | None:
    try:
        size = json.loads(manifest_body)["config"]["size"]
    except (ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) and size >= 0 else None


def _atomic_write(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def writer_for(fmt: str) -> Callable:
    "The writer of format ``fmt`` (UsageError for an unknown one)."
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return write_oci_layout if fmt == "oci" else write_docker_archive


def default_name(ref, image, fmt: str) -> str:
    "``<repository>_<tag>`` (``/`` as ``_``), ``.oci`` or ``.tar``."
    base = ref.repository.replace("/", "_") + "_" + (ref.tag or image.manifest_digest.partition(":")[2][:12])
    return base + (".oci" if fmt == "oci" else ".tar")
