"""From a reference to platforms, manifests, config, layers and build steps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .display import human_size, printable
from .errors import NotFound, RegistryError, UsageError
from .oci import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, SCHEMA1_TYPES, is_attestation, is_digest, is_foreign
from .options import ClientOptions
from .reference import Reference, parse_reference
from .registry import Manifest, RegistryClient, load_json
from .selectors import choose_platform, platform_matches

MAX_CONFIG_BYTES = 8 * 1024 * 1024


@dataclass
class PlatformInfo:
    os: str
    architecture: str
    variant: str | None
    digest: str
    media_type: str
    size: int | None = None
    attestation: bool = False
    annotations: dict = field(default_factory=dict)
    os_version: str | None = None

    def __str__(self) -> str:
        if self.attestation:
            return "attestation"
        parts = [self.os or "unknown", self.architecture or "unknown"]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    def as_dict(self) -> dict:
        return {
            "os": self.os,
            "architecture": self.architecture,
            "variant": self.variant,
            "digest": self.digest,
            "media_type": self.media_type,
            "size": self.size,
            "attestation": self.attestation,
        }


@dataclass
class LayerInfo:
    index: int
    digest: str
    media_type: str
    size: int
    annotations: dict = field(default_factory=dict)
    urls: list = field(default_factory=list)

    @property
    def foreign(self) -> bool:
        "Non-distributable layers (Windows base layers) live elsewhere: never fetched."
        return is_foreign(self.media_type)

    def as_dict(self) -> dict:
        data = {"index": self.index, "digest": self.digest, "media_type": self.media_type, "size": self.size}
        if self.foreign:
            data["foreign"] = True
            data["urls"] = self.urls
        if self.annotations:
            data["annotations"] = self.annotations
        return data


@dataclass
class HistoryStep:
    index: int
    created: str | None
    created_by: str
    comment: str | None
    empty_layer: bool
    layer_index: int | None

    def as_dict(self) -> dict:
        return {
            "index": self.index,
            "created": self.created,
            "created_by": self.created_by,
            "comment": self.comment,
            "empty_layer": self.empty_layer,
            "layer_index": self.layer_index,
        }


@dataclass
class ResolvedImage:
    reference: Reference
    digest: str
    media_type: str
    platforms: list[PlatformInfo]
    manifest: Manifest
    is_index: bool

    @property
    def real_platforms(self) -> list[PlatformInfo]:
        return [p for p in self.platforms if not p.attestation]


@dataclass
class PlatformImage:
    platform: PlatformInfo
    manifest_digest: str
    media_type: str
    config_digest: str
    config: dict
    layers: list[LayerInfo]
    history: list[HistoryStep]
    manifest_body: bytes = field(default=b"", repr=False)  # the exact bytes served (inspect --raw)
    config_body: bytes = field(default=b"", repr=False)

    @property
    def created(self) -> str | None:
        return self.config.get("created")

    def runtime_config(self) -> dict:
        """The config's runtime settings (``config.config``): User, WorkingDir,
        Entrypoint, Cmd, Env, Labels, ExposedPorts, as found (absent ones left out)."""
        inner = self.config.get("config")
        if not isinstance(inner, dict):
            return {}
        keys = ("User", "WorkingDir", "Entrypoint", "Cmd", "Env", "Labels", "ExposedPorts", "StopSignal")
        return {key: inner[key] for key in keys if inner.get(key) not in (None, "", [], {})}


# Manifests come from registries we do not control: every field read below is
# checked for its type, so a hostile one ends in RegistryError (one line), never
# in a TypeError traceback, a request for a made-up path or a weak hash.


def valid_digest(value) -> bool:
    "sha256/sha384/sha512 with the right number of lowercase hex digits."
    return is_digest(value, known=True)


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _optional_str(value) -> bool:
    return value is None or isinstance(value, str)


def _bad_digest(where: str, value) -> RegistryError:
    shown = repr(value)[:80]
    return RegistryError(f"{where} has an invalid digest {shown} (expected sha256:<64 hex digits>)")


def _checked_descriptors(descriptors, where: str, list_name: str, entry_name: str) -> list[dict]:
    """Descriptors from a manifest or index, each checked: an object with a
    valid digest and, when present, a string mediaType, a size and string
    annotations. Anything else is a RegistryError naming ``where``."""
    if not isinstance(descriptors, list):
        raise RegistryError(f"{where} has no {list_name}")
    for descriptor in descriptors:
        if not isinstance(descriptor, dict):
            raise RegistryError(f"{where} has a malformed {entry_name}")
        if not valid_digest(descriptor.get("digest")):
            raise _bad_digest(f"a {entry_name} of {where}", descriptor.get("digest"))
        if (
            not _optional_str(descriptor.get("mediaType"))
            or not (descriptor.get("size") is None or _is_size(descriptor.get("size")))
            or not _is_str_map(descriptor.get("annotations") or {})
        ):
            raise RegistryError(f"{where} has a malformed {entry_name} for {descriptor['digest']}")
    return descriptors


def resolve(client: RegistryClient, ref: Reference) -> ResolvedImage:
    "Fetch the manifest or index a reference names and list its platforms."
    manifest = client.get_manifest(ref.repository, ref.reference, display=ref.short)
    data = manifest.json
    media_type = manifest.media_type or data.get("mediaType") or ""
    if media_type in SCHEMA1_TYPES or data.get("schemaVersion") == 1:
        raise RegistryError(f"{ref.short} uses the deprecated Docker schema 1 manifest format, which layerslayer does not read")
    if media_type in INDEX_TYPES or (not media_type and "manifests" in data):
        platforms = []
        where = f"index {manifest.digest} of {ref.short}"
        for descriptor in _checked_descriptors(data.get("manifests"), where, "manifest list", "platform entry"):
            plat = descriptor.get("platform") or {}
            if not isinstance(plat, dict) or not all(
                _optional_str(plat.get(key)) for key in ("os", "architecture", "variant", "os.version")
            ):
                raise RegistryError(f"{where} has a malformed platform entry for {descriptor['digest']}")
            platforms.append(
                PlatformInfo(
                    os=str(plat.get("os") or ""),
                    architecture=str(plat.get("architecture") or ""),
                    variant=plat.get("variant"),
                    digest=descriptor["digest"],
                    media_type=descriptor.get("mediaType") or "",
                    size=descriptor.get("size"),
                    attestation=is_attestation(descriptor),
                    annotations=descriptor.get("annotations") or {},
                    os_version=plat.get("os.version"),
                )
            )
        return ResolvedImage(ref, manifest.digest, media_type or OCI_INDEX, platforms, manifest, True)
    if media_type in MANIFEST_TYPES or "layers" in data:
        # A single-platform image: its platform is in the config, read on demand.
        platform = PlatformInfo("", "", None, manifest.digest, media_type, len(manifest.body))
        return ResolvedImage(ref, manifest.digest, media_type, [platform], manifest, False)
    raise RegistryError(f"{ref.short} has unsupported manifest media type {media_type or 'unknown'!r}")



def select_platform(resolved: ResolvedImage, wanted: str | None = None) -> PlatformInfo:
    "The platform asked for, else the host's when present, else the first real one (``selectors.choose_platform``)."
    candidates = resolved.real_platforms
    if not resolved.is_index:
        return resolved.platforms[0]
    if not candidates:
        raise NotFound(f"{resolved.reference.short} has no platform images (only attestations)")
    chosen = choose_platform([str(p) for p in candidates], wanted)
    if chosen is None:
        available = ", ".join(str(p) for p in candidates)
        raise NotFound(f"{resolved.reference.short} has no platform {wanted} (available: {available})")
    return candidates[chosen]


def align_history(config: dict, layer_count: int) -> list[HistoryStep]:
    "Config history with the index of the layer each non-empty step produced."
    history = config.get("history") or []
    steps = []
    layer_index = 0
    for position, entry in enumerate(history if isinstance(history, list) else []):
        if not isinstance(entry, dict):
            continue
        empty = bool(entry.get("empty_layer"))
        produced = None
        if not empty and layer_index < layer_count:
            produced = layer_index
            layer_index += 1
        created, comment = entry.get("created"), entry.get("comment")
        steps.append(
            HistoryStep(
                index=position,
                created=None if created is None else str(created),
                created_by=str(entry.get("created_by") or ""),
                comment=None if comment is None else str(comment),
                empty_layer=empty,
                layer_index=produced,
            )
        )
    return steps


def load_platform(client: RegistryClient, resolved: ResolvedImage, platform: PlatformInfo) -> PlatformImage:
    "Fetch the platform's manifest (unless we have it) and its config."
    ref = resolved.reference
    if platform.attestation:
        raise UsageError(f"{platform.digest} is an attestation manifest, not a platform image")
    if resolved.is_index:
        manifest = client.get_manifest(ref.repository, platform.digest, display=f"{ref.short} ({platform})")
    else:
        manifest = resolved.manifest
    data = manifest.json
    if manifest.media_type in INDEX_TYPES or "manifests" in data:
        raise RegistryError(f"{ref.short}: platform entry {platform.digest} is itself an index (nested indexes are not followed)")
    config_descriptor = data.get("config")
    if not isinstance(config_descriptor, dict) or "digest" not in config_descriptor:
        raise RegistryError(f"manifest {manifest.digest} of {ref.short} has no config")
    config_digest = config_descriptor["digest"]
    if not valid_digest(config_digest):
        raise _bad_digest(f"the config entry of manifest {manifest.digest} of {ref.short}", config_digest)
    where = f"manifest {manifest.digest} of {ref.short}"
    descriptors = _checked_descriptors(data.get("layers") or [], where, "layer list", "layer entry")
    for descriptor in descriptors:
        urls = descriptor.get("urls") or []
        if not (isinstance(urls, list) and all(isinstance(url, str) for url in urls)):
            raise RegistryError(f"{where} has a malformed entry for layer {descriptor['digest']}")
    config_size = config_descriptor.get("size")
    config_bytes = client.get_blob(ref.repository, config_digest, max_size=MAX_CONFIG_BYTES,
                                   size=config_size if _is_size(config_size) and config_size else None)
    config = load_json(config_bytes, f"config {config_digest} of {ref.short}")
    if not isinstance(config, dict):
        raise RegistryError(f"config {config_digest} of {ref.short} is not a JSON object")
    layers = []
    for index, descriptor in enumerate(descriptors):
        layers.append(
            LayerInfo(
                index=index,
                digest=descriptor["digest"],
                media_type=descriptor.get("mediaType") or "",
                size=int(descriptor.get("size") or 0),
                annotations=descriptor.get("annotations") or {},
                urls=descriptor.get("urls") or [],
            )
        )
    if not resolved.is_index:
        platform.os = str(config.get("os") or "")
        platform.architecture = str(config.get("architecture") or "")
        variant = config.get("variant")
        platform.variant = str(variant) if variant not in (None, "") else None
    return PlatformImage(
        platform=platform,
        manifest_digest=manifest.digest,
        media_type=manifest.media_type,
        config_digest=config_digest,
        config=config,
        layers=layers,
        history=align_history(config, len(layers)),
        manifest_body=manifest.body,
        config_body=config_bytes,
    )



def open_image(client: RegistryClient, ref: Reference, platform: str | None = None) -> tuple[ResolvedImage, PlatformImage]:
    "Resolve a reference and load the chosen platform (checked for single-platform images too)."
    resolved = resolve(client, ref)
    chosen = select_platform(resolved, platform)
    image = load_platform(client, resolved, chosen)
    check_single_platform(resolved, image, platform)
    return resolved, image


def check_single_platform(resolved: ResolvedImage, image: PlatformImage, platform: str | None) -> None:
    "A single-platform image is no answer to a --platform it is not (an index was checked by select_platform)."
    if platform and not resolved.is_index and not platform_matches(str(image.platform), platform):
        raise NotFound(f"{resolved.reference.short} has no platform {platform} (available: {image.platform})")


@dataclass
class InspectReport:
    resolved: ResolvedImage
    image: PlatformImage

    def as_dict(self) -> dict:
        resolved, image = self.resolved, self.image
        return {
            "reference": str(resolved.reference),
            "digest": resolved.digest,
            "media_type": resolved.media_type,
            "platforms": [p.as_dict() for p in resolved.platforms],
            "platform": image.platform.as_dict() | {"name": str(image.platform)},
            "manifest_digest": image.manifest_digest,
            "config_digest": image.config_digest,
            "created": image.created,
            "config": image.runtime_config(),
            "layers": [layer.as_dict() for layer in image.layers],
            "history": [step.as_dict() for step in image.history],
        }

    def raw(self, what: str) -> bytes:
        "The exact bytes the registry served for the ``manifest``, ``config`` or ``index``."
        if what == "index":
            if not self.resolved.is_index:
                raise UsageError(f"{self.resolved.reference.short} is a single-platform image: it has no index, only a manifest")
            return self.resolved.manifest.body
        if what == "manifest":
            return self.image.manifest_body
        if what == "config":
            return self.image.config_body
        raise UsageError(f"raw takes 'manifest', 'config' or 'index', not {what!r}")

    def as_text(self) -> str:
        resolved, image = self.resolved, self.image
        lines = [
            f"Reference:  {resolved.reference}",
            f"Digest:     {resolved.digest}",
            f"Media type: {resolved.media_type}",
        ]
        if resolved.is_index:
            lines.append("Platforms:")
            width = max(len(str(p)) for p in resolved.platforms)
            for number, plat in enumerate(resolved.platforms):
                chosen = "*" if plat.digest == image.platform.digest else " "
                label = "attestation manifest" if plat.attestation else str(plat)
                lines.append(f" {chosen}[{number}] {label:<{max(width, 20)}}  {plat.digest}")
        lines += [
            f"Platform:   {image.platform}",
            f"Manifest:   {image.manifest_digest}",
            f"Config:     {image.config_digest}",
        ]
        if image.created:
            lines.append(f"Created:    {image.created}")
        lines += _config_lines(image.runtime_config())
        total = sum(layer.size for layer in image.layers)
        lines.append(f"Layers ({len(image.layers)}, {human_size(total)}):")
        for layer in image.layers:
            note = "  (foreign: not distributed by this registry)" if layer.foreign else ""
            lines.append(f"  [{layer.index}] {layer.digest}  {human_size(layer.size):>9}  {layer.media_type}{note}")
        lines.append(f"Build steps ({len(image.history)}):")
        for step in image.history:
            where = f"layer {step.layer_index}" if step.layer_index is not None else "metadata only"
            created_by = " ".join(step.created_by.split())
            lines.append(f"  [{step.index}] ({where}) {created_by}")
        return "\n".join(printable(line) for line in lines)


def _config_lines(runtime: dict) -> list[str]:
    "The runtime config for `inspect`, every value escaped (configs are untrusted text)."
    def text(value) -> str:
        return printable(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))

    lines = []
    for key, label in (("User", "User"), ("WorkingDir", "WorkingDir"), ("Entrypoint", "Entrypoint"), ("Cmd", "Cmd"),
                       ("StopSignal", "StopSignal")):
        if key in runtime:
            lines.append(f"{label + ':':<12}{text(runtime[key])}")
    ports = runtime.get("ExposedPorts")
    if isinstance(ports, dict):
        lines.append(f"{'Ports:':<12}{' '.join(printable(str(p)) for p in ports)}")
    env = runtime.get("Env")
    if isinstance(env, list):
        lines.append(f"Env ({len(env)}):")
        lines += [f"  {text(entry)}" for entry in env]
    labels = runtime.get("Labels")
    if isinstance(labels, dict):
        lines.append(f"Labels ({len(labels)}):")
        lines += [f"  {printable(str(k))}={text(v)}" for k, v in labels.items()]
    return lines


def inspect_image(reference: str, *, platform: str | None = None, options=None) -> InspectReport:
    "Everything `layerslayer inspect` shows, as data."
    ref = parse_reference(reference)
    client = (options or ClientOptions()).client(ref)
    resolved, image = open_image(client, ref, platform)
    return InspectReport(resolved, image)
