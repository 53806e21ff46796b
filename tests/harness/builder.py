"""Build container images from compact specs and push them with plain requests.

Layers::

    lay = layer([
        dir_("etc"),
        file("etc/passwd", b"root:x:0:0::/root:/bin/sh\\n", mode=0o644),
        file("usr/bin/sudo", b"\\x7fELF", mode=0o4755),
        symlink("bin", "usr/bin"),
        hardlink("etc/passwd.bak", "etc/passwd"),
        chardev("dev/null", 1, 3), blockdev("dev/sda", 8, 0), fifo("run/pipe"),
        whiteout("etc/shadow"),            # -> etc/.wh.shadow
        opaque("var/cache"),               # -> var/cache/.wh..wh..opq
        file(b"odd/\\xff\\xfe-not-utf8", b"x"),
        file("a" * 150, b"long name"),
    ], compression="zstd", format="pax")
    # or a dict: layer({"app/.env": "SECRET=1", "app/": None}) (None = directory)
    bad = raw_layer(b"not a tar", media_type=OCI_LAYER_GZIP)     # exact blob bytes
    ext = foreign_layer(layer({"x": b"1"}), urls=["https://example.invalid/x"])

Images and indexes::

    img = push_image(registry, "team/app:v1", layers=[lay], history=[
        empty("ARG VERSION=1"), "COPY . /app", empty('CMD ["/app"]')],
        media="oci", platform="linux/amd64")
    img.digest, img.manifest, img.config, img.layers[0].digest, img.layers[0].blob
    idx = push_index(registry, "team/multi:latest",
                     images=["linux/amd64", "linux/arm64/v8", build_image([...], platform="linux/arm/v7")],
                     attestation=True, media="oci")
    idx.digest, idx.images[1].digest, idx.attestations[0].digest

A history entry is a ``str`` (a step that produced the next layer), a ``dict``
(copied as is: created_by, empty_layer, comment, created, author) or
``empty(...)`` / ``step(...)``. ``history=None`` makes one step per layer plus a
trailing empty CMD step. History is not checked against the layers on purpose:
tests may build mismatched images.

``registry`` is anything with ``.url``, ``.host`` and ``.auth_headers(repo)``
(a :class:`harness.registry.Registry` or a :class:`harness.proxy.FaultProxy`).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import posixpath
import tarfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import zstandard

# -- media types ------------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"  # BuildKit's name for it
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
ACCEPT_ALL = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

LAYER_MEDIA_TYPES: dict[tuple[str, str], str] = {
    ("oci", "gzip"): OCI_LAYER_GZIP, ("oci", "zstd"): OCI_LAYER_ZSTD, ("oci", "none"): OCI_LAYER,
    ("docker", "gzip"): DOCKER_LAYER_GZIP, ("docker", "zstd"): DOCKER_LAYER_ZSTD,
    ("docker", "none"): DOCKER_LAYER,
}
# distribution 2.8 only skips the blob-existence check for these (per manifest kind).
FOREIGN_MEDIA_TYPES = {"oci": OCI_NONDISTRIBUTABLE_GZIP, "docker": DOCKER_FOREIGN_LAYER}

ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_DIGEST_ANNOTATION = "vnd.docker.reference.digest"
DEFAULT_MTIME = 1_700_000_000  # 2023-11-14, fixed so blobs are reproducible
DEFAULT_CREATED = "2024-01-01T00:00:00Z"
TAR_FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- tar members ------------------------------------------------------------------
Name = str | bytes


@dataclass
class TarMember:
    """One tar entry. ``bytes`` names/link targets are written byte-exact."""

    name: Name
    type: str = "file"  # file | dir | symlink | hardlink | char | block | fifo
    data: bytes = b""
    mode: int | None = None  # default 0o644 file, 0o755 dir, 0o777 symlink, 0o666 devices
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"
    mtime: float = DEFAULT_MTIME  # a float becomes a pax "mtime" record in pax format
    linkname: Name = ""
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] | None = None  # extra pax records (pax format only)

    @property
    def path(self) -> str:
        """Name as text (surrogateescape for non-UTF-8 bytes), like tarstream.Entry.path."""
        return _text(self.name)


_TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_DEFAULT_MODES = {"file": 0o644, "dir": 0o755, "symlink": 0o777, "hardlink": 0o644,
                  "char": 0o666, "block": 0o660, "fifo": 0o644}


def _text(name: Name) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def file(name: Name, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> TarMember:
    return TarMember(name, "file", _bytes(data), mode, **kw)


def dir_(name: Name, mode: int = 0o755, **kw: Any) -> TarMember:
    return TarMember(name, "dir", b"", mode, **kw)


def symlink(name: Name, target: Name, **kw: Any) -> TarMember:
    return TarMember(name, "symlink", linkname=target, **kw)


def hardlink(name: Name, target: Name, **kw: Any) -> TarMember:
    return TarMember(name, "hardlink", linkname=target, **kw)


def chardev(name: Name, major: int, minor: int, **kw: Any) -> TarMember:
    return TarMember(name, "char", devmajor=major, devminor=minor, **kw)


def blockdev(name: Name, major: int, minor: int, **kw: Any) -> TarMember:
    return TarMember(name, "block", devmajor=major, devminor=minor, **kw)


def fifo(name: Name, **kw: Any) -> TarMember:
    return TarMember(name, "fifo", **kw)


def whiteout(path: Name, **kw: Any) -> TarMember:
    """``dir/.wh.NAME``: deletes ``dir/NAME`` from lower layers."""
    p = _text(path).rstrip("/")
    parent, base = posixpath.split(p)
    return TarMember(posixpath.join(parent, ".wh." + base), "file", b"", 0o644, **kw)


def opaque(dirpath: Name, **kw: Any) -> TarMember:
    """``dir/.wh..wh..opq``: hides everything lower layers had under ``dir``."""
    return TarMember(posixpath.join(_text(dirpath).rstrip("/"), ".wh..wh..opq"), "file", b"", 0o644, **kw)


MemberSpec = TarMember | str | bytes | tuple


def _member(spec: MemberSpec) -> TarMember:
    if isinstance(spec, TarMember):
        return spec
    if isinstance(spec, (str, bytes)):
        # A bare name: "dir/" is a directory, anything else an empty file.
        slash = "/" if isinstance(spec, str) else b"/"
        return dir_(spec.rstrip(slash)) if spec.endswith(slash) else file(spec)  # type: ignore[arg-type]
    if isinstance(spec, tuple) and len(spec) == 2:
        return file(spec[0], spec[1])
    raise TypeError(f"bad tar member spec: {spec!r}")


def members_of(spec: Iterable[MemberSpec] | Mapping[Name, bytes | str | None]) -> list[TarMember]:
    """Normalise a compact spec: list of members/tuples/names, or {name: data|None(dir)}."""
    if isinstance(spec, Mapping):
        return [dir_(_text(n).rstrip("/")) if d is None else file(n, d) for n, d in spec.items()]
    return [_member(s) for s in spec]


def build_tar(spec: Iterable[MemberSpec] | Mapping[Name, bytes | str | None], format: str = "pax") -> bytes:  # noqa: A002
    """Uncompressed tar stream via ``tarfile`` (pax / gnu / ustar)."""
    buf = io.BytesIO()
    # surrogateescape lets bytes names round-trip: pax marks them hdrcharset=BINARY,
    # gnu/ustar write the raw bytes.
    with tarfile.TarFile(fileobj=buf, mode="w", format=TAR_FORMATS[format],
                         encoding="utf-8", errors="surrogateescape") as tf:
        for m in members_of(spec):
            ti = tarfile.TarInfo(m.path)
            ti.type = _TYPES[m.type]
            ti.mode = _DEFAULT_MODES[m.type] if m.mode is None else m.mode
            ti.uid, ti.gid, ti.uname, ti.gname = m.uid, m.gid, m.uname, m.gname
            ti.mtime = m.mtime
            ti.linkname = _text(m.linkname)
            ti.devmajor, ti.devminor = m.devmajor, m.devminor
            if m.pax:
                ti.pax_headers = dict(m.pax)
            if m.type == "file":
                ti.size = len(m.data)
                tf.addfile(ti, io.BytesIO(m.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


# -- compression ----------------------------------------------------------------------
def compress(data: bytes, compression: str = "gzip", *, chunks: int = 1) -> bytes:
    """gzip / zstd / none. ``chunks > 1`` splits the stream into that many
    independently compressed members (multi-member gzip, multi-frame zstd), as
    pigz, eStargz and zstd:chunked produce."""
    if compression == "none":
        return data
    step = max(1, -(-len(data) // max(1, chunks)))
    parts = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
    if compression == "gzip":
        return b"".join(gzip.compress(p, compresslevel=6, mtime=0) for p in parts)
    if compression == "zstd":
        cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
        return b"".join(cctx.compress(p) for p in parts)
    raise ValueError(f"unknown compression {compression!r}")


def decompress(blob: bytes, compression: str) -> bytes:
    """Inverse of :func:`compress` (multi-member gzip / multi-frame zstd too)."""
    if compression == "none":
        return blob
    if compression == "gzip":
        return gzip.decompress(blob)
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)
        return reader.read()
    raise ValueError(f"unknown compression {compression!r}")


def read_tar(tar: bytes) -> list[tarfile.TarInfo]:
    """Members of a tar stream, names decoded with surrogateescape (for assertions)."""
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        return tf.getmembers()


# -- layers ---------------------------------------------------------------------------
@dataclass
class Layer:
    """A layer blob plus what tests need to assert on it."""

    blob: bytes                      # exact bytes pushed; digest = sha256(blob)
    tar: bytes | None                # uncompressed tar (None for raw layers)
    compression: str                 # gzip | zstd | none | raw
    media_type: str | None = None    # None: derived from compression + manifest kind
    annotations: dict[str, str] = field(default_factory=dict)
    urls: list[str] | None = None    # foreign layers
    members: list[TarMember] | None = None
    diff_id_override: str | None = None
    push: bool = True                # False for foreign layers: the blob never reaches the registry

    @property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)

    @property
    def diff_id(self) -> str:
        if self.diff_id_override:
            return self.diff_id_override
        return sha256_digest(self.tar if self.tar is not None else self.blob)

    def __repr__(self) -> str:  # blobs can be large: keep pytest output readable
        extra = f" urls={self.urls}" if self.urls is not None else ""
        return (f"<Layer {self.digest[:19]}… {self.compression} {self.size} B"
                f"{'' if self.members is None else f' {len(self.members)} members'}{extra}>")

    def media_type_for(self, media: str) -> str:
        if self.media_type:
            return self.media_type
        if self.urls is not None:
            return FOREIGN_MEDIA_TYPES[media]
        return LAYER_MEDIA_TYPES[(media, "gzip" if self.compression == "raw" else self.compression)]

    def descriptor(self, media: str) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type_for(media), "digest": self.digest, "size": self.size}
        if self.urls is not None:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


def layer(spec: Iterable[MemberSpec] | Mapping[Name, bytes | str | None], compression: str = "gzip", *,
          format: str = "pax", media_type: str | None = None,  # noqa: A002
          annotations: Mapping[str, str] | None = None, chunks: int = 1) -> Layer:
    members = members_of(spec)
    tar = build_tar(members, format)
    return Layer(compress(tar, compression, chunks=chunks), tar, compression, media_type,
                 dict(annotations or {}), members=members)


def tar_layer(tar: bytes, compression: str = "gzip", *, media_type: str | None = None,
              annotations: Mapping[str, str] | None = None, chunks: int = 1) -> Layer:
    """Compress arbitrary bytes as a layer (e.g. a truncated or hostile tar)."""
    return Layer(compress(tar, compression, chunks=chunks), tar, compression, media_type,
                 dict(annotations or {}))


def raw_layer(blob: bytes, *, media_type: str | None = None, diff_id: str | None = None,
              annotations: Mapping[str, str] | None = None) -> Layer:
    """A layer whose blob is exactly ``blob`` (corrupt gzip, eStargz built elsewhere...).
    Without ``media_type`` it is labelled as gzip."""
    return Layer(blob, None, "raw", media_type, dict(annotations or {}), diff_id_override=diff_id)


def foreign_layer(base: Layer, urls: Sequence[str], *, media_type: str | None = None) -> Layer:
    """A foreign / non-distributable layer: descriptor with ``urls``, blob not pushed."""
    return Layer(base.blob, base.tar, base.compression, media_type, dict(base.annotations),
                 urls=list(urls), members=base.members, diff_id_override=base.diff_id_override, push=False)


# -- history ----------------------------------------------------------------------------
def empty(created_by: str, **kw: Any) -> dict[str, Any]:
    """A history step that produced no layer (ENV, CMD, ARG...)."""
    return {"created_by": created_by, "empty_layer": True, **kw}


def step(created_by: str, **kw: Any) -> dict[str, Any]:
    """A history step that produced the next layer."""
    return {"created_by": created_by, **kw}


def _history(history: Sequence[str | Mapping[str, Any]] | None, n_layers: int, created: str) -> list[dict]:
    if history is None:
        history = [f"/bin/sh -c #(nop) ADD file:layer{i} in / " for i in range(n_layers)]
        history = [*history, empty('/bin/sh -c #(nop)  CMD ["/bin/sh"]')]
    out = []
    for h in history:
        entry = {"created_by": h} if isinstance(h, str) else dict(h)
        entry.setdefault("created", created)
        out.append(entry)
    return out


# -- platforms ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str | Platform) -> Platform:
        if isinstance(text, Platform):
            return text
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"platform must be os/arch[/variant]: {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def descriptor(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        return d

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# -- images ---------------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode()


@dataclass
class BuiltImage:
    """An image manifest + config + layers, built but not necessarily pushed."""

    media: str                       # "oci" | "docker"
    platform: Platform
    manifest: dict[str, Any]
    manifest_bytes: bytes
    media_type: str
    config: dict[str, Any]
    config_bytes: bytes
    layers: list[Layer]
    extra_blobs: list[bytes] = field(default_factory=list)  # e.g. in-toto statements

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    def __repr__(self) -> str:
        return f"<BuiltImage {self.media} {self.platform} {self.digest[:19]}… layers={self.layers}>"

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.manifest_bytes)}


def build_image(layers: Sequence[Layer], *, history: Sequence[str | Mapping[str, Any]] | None = None,
                media: str = "oci", platform: str | Platform = "linux/amd64",
                created: str = DEFAULT_CREATED, config: Mapping[str, Any] | None = None,
                container_config: Mapping[str, Any] | None = None,
                annotations: Mapping[str, str] | None = None,
                config_media_type: str | None = None, manifest_media_type: str | None = None,
                include_media_type_field: bool = True) -> BuiltImage:
    """Build config + manifest. ``config`` is merged over the generated image
    config (top level; its "config" key merges into the runtime config);
    ``container_config`` replaces the runtime config block entirely."""
    if media not in ("oci", "docker"):
        raise ValueError(f"media must be 'oci' or 'docker', not {media!r}")
    plat = Platform.parse(platform)
    cfg: dict[str, Any] = {"created": created, "architecture": plat.architecture, "os": plat.os}
    if plat.variant:
        cfg["variant"] = plat.variant
    if plat.os_version:
        cfg["os.version"] = plat.os_version
    cfg["config"] = dict(container_config) if container_config is not None else {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
    }
    cfg["rootfs"] = {"type": "layers", "diff_ids": [lay.diff_id for lay in layers]}
    cfg["history"] = _history(history, len(layers), created)
    for k, v in (config or {}).items():
        if k == "config" and isinstance(v, Mapping):
            cfg["config"].update(v)
        else:
            cfg[k] = copy.deepcopy(v)
    config_bytes = _dumps(cfg)
    cfg_type = config_media_type or (OCI_CONFIG if media == "oci" else DOCKER_CONFIG)
    mtype = manifest_media_type or (OCI_MANIFEST if media == "oci" else DOCKER_MANIFEST)
    manifest: dict[str, Any] = {"schemaVersion": 2}
    if include_media_type_field:
        manifest["mediaType"] = mtype
    manifest["config"] = {"mediaType": cfg_type, "digest": sha256_digest(config_bytes), "size": len(config_bytes)}
    manifest["layers"] = [lay.descriptor(media) for lay in layers]
    if annotations:
        manifest["annotations"] = dict(annotations)
    return BuiltImage(media, plat, manifest, _dumps(manifest), mtype, cfg, config_bytes, list(layers))


def platform_image(platform: str | Platform, media: str = "oci", compression: str = "gzip") -> BuiltImage:
    """A small image whose single layer says which platform it is (etc/platform)."""
    plat = Platform.parse(platform)
    lay = layer([dir_("etc"), file("etc/platform", f"{plat}\n")], compression)
    return build_image([lay], history=[step("COPY platform /etc/platform")], media=media, platform=plat)


def attestation_image(subject: BuiltImage, predicate_type: str = "https://slsa.dev/provenance/v0.2") -> BuiltImage:
    """A BuildKit-style attestation manifest (always OCI) for ``subject``."""
    statement = _dumps({
        "_type": "https://in-toto.io/Statement/v0.1", "predicateType": predicate_type,
        "subject": [{"name": "pkg:docker/harness", "digest": {"sha256": subject.digest.split(":", 1)[1]}}],
        "predicate": {"builder": {"id": "harness"}},
    })
    cfg = {"architecture": "unknown", "os": "unknown", "config": {},
           "rootfs": {"type": "layers", "diff_ids": [sha256_digest(statement)]}}
    cfg_bytes = _dumps(cfg)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(cfg_bytes), "size": len(cfg_bytes)},
        "layers": [{"mediaType": IN_TOTO, "digest": sha256_digest(statement), "size": len(statement),
                    "annotations": {"in-toto.io/predicate-type": predicate_type}}],
    }
    att_layer = raw_layer(statement, media_type=IN_TOTO)
    return BuiltImage("oci", Platform("unknown", "unknown"), manifest, _dumps(manifest), OCI_MANIFEST,
                      cfg, cfg_bytes, [att_layer])


@dataclass
class BuiltIndex:
    media: str
    index: dict[str, Any]
    index_bytes: bytes
    media_type: str
    images: list[BuiltImage]
    attestations: list[BuiltImage]

    @property
    def digest(self) -> str:
        return sha256_digest(self.index_bytes)

    def __repr__(self) -> str:
        return f"<BuiltIndex {self.media} {self.digest[:19]}… images={self.images} attestations={len(self.attestations)}>"


ImageSpec = BuiltImage | str | Platform | Mapping[str, Any]


def build_index(images: Sequence[ImageSpec], *, media: str = "oci", attestation: bool = False,
                annotations: Mapping[str, str] | None = None) -> BuiltIndex:
    """OCI index / Docker manifest list. ``images`` items: a BuiltImage, a platform
    string (→ :func:`platform_image`), or build_image keyword arguments."""
    built: list[BuiltImage] = []
    for spec in images:
        if isinstance(spec, BuiltImage):
            built.append(spec)
        elif isinstance(spec, (str, Platform)):
            built.append(platform_image(spec, media))
        else:
            built.append(build_image(**{"media": media, **spec}))
    entries: list[dict[str, Any]] = []
    for img in built:
        entries.append({**img.descriptor(), "platform": img.platform.descriptor()})
    atts = [attestation_image(img) for img in built] if attestation else []
    for att, img in zip(atts, built):
        entries.append({**att.descriptor(), "annotations": {
            ATTESTATION_DIGEST_ANNOTATION: img.digest, ATTESTATION_ANNOTATION: "attestation-manifest"},
            "platform": {"architecture": "unknown", "os": "unknown"}})
    mtype = OCI_INDEX if media == "oci" else DOCKER_MANIFEST_LIST
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": mtype, "manifests": entries}
    if annotations:
        index["annotations"] = dict(annotations)
    return BuiltIndex(media, index, _dumps(index), mtype, built, atts)


# -- pushing ----------------------------------------------------------------------------------
class RegistryLike(Protocol):
    url: str
    host: str

    def auth_headers(self, repository: str | None = None, actions: str = ...) -> dict[str, str]: ...


def split_target(target: str) -> tuple[str, str | None]:
    """"team/app:v1" → ("team/app", "v1"); "team/app" → ("team/app", None)."""
    name, sep, tag = target.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return target, None


def _session(reg: RegistryLike, repository: str) -> requests.Session:
    s = requests.Session()
    s.headers.update(reg.auth_headers(repository))
    return s


def _check(resp: requests.Response, *expected: int) -> requests.Response:
    if resp.status_code not in expected:
        raise RuntimeError(f"{resp.request.method} {resp.url} -> {resp.status_code}: {resp.text[:500]}")
    return resp


def push_blob(reg: RegistryLike, repository: str, data: bytes, session: requests.Session | None = None) -> str:
    """Monolithic upload (POST then PUT ?digest=), skipped when HEAD finds the blob."""
    s = session or _session(reg, repository)
    digest = sha256_digest(data)
    if s.head(f"{reg.url}/v2/{repository}/blobs/{digest}", timeout=30).status_code == 200:
        return digest
    r = _check(s.post(f"{reg.url}/v2/{repository}/blobs/uploads/", timeout=30), 202)
    location = urllib.parse.urljoin(reg.url + "/", r.headers["Location"])
    sep = "&" if urllib.parse.urlsplit(location).query else "?"
    _check(s.put(f"{location}{sep}digest={urllib.parse.quote(digest)}", data=data,
                 headers={"Content-Type": "application/octet-stream"}, timeout=60), 201)
    return digest


def push_manifest(reg: RegistryLike, repository: str, reference: str, body: bytes, media_type: str,
                  session: requests.Session | None = None) -> str:
    """PUT a manifest by tag or digest; returns the registry's Docker-Content-Digest."""
    s = session or _session(reg, repository)
    r = _check(s.put(f"{reg.url}/v2/{repository}/manifests/{reference}", data=body,
                     headers={"Content-Type": media_type}, timeout=30), 201)
    digest = r.headers.get("Docker-Content-Digest", sha256_digest(body))
    assert digest == sha256_digest(body), (digest, sha256_digest(body))
    return digest


def _push_image_parts(reg: RegistryLike, repository: str, img: BuiltImage, s: requests.Session) -> None:
    for lay in img.layers:
        if lay.push:
            push_blob(reg, repository, lay.blob, s)
    for extra in img.extra_blobs:
        push_blob(reg, repository, extra, s)
    push_blob(reg, repository, img.config_bytes, s)


class _Pushed:
    """Where a pushed image or index lives (``host``, ``repository``, ``tag``, ``digest``)."""

    @property
    def ref(self) -> str:
        """"127.0.0.1:PORT/team/app:v1" (digest form when pushed without a tag)."""
        return f"{self.host}/{self.repository}:{self.tag}" if self.tag else self.digest_ref

    @property
    def digest_ref(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"


@dataclass
class PushedImage(_Pushed):
    """A BuiltImage as pushed: where it lives plus everything needed for assertions."""

    host: str
    repository: str
    tag: str | None
    image: BuiltImage

    # Delegates, so tests read pushed.digest, pushed.layers[0].blob, ...
    digest = property(lambda self: self.image.digest)
    manifest = property(lambda self: self.image.manifest)
    manifest_bytes = property(lambda self: self.image.manifest_bytes)
    media_type = property(lambda self: self.image.media_type)
    config = property(lambda self: self.image.config)
    config_bytes = property(lambda self: self.image.config_bytes)
    config_digest = property(lambda self: self.image.config_digest)
    layers = property(lambda self: self.image.layers)
    platform = property(lambda self: self.image.platform)


@dataclass
class PushedIndex(_Pushed):
    host: str
    repository: str
    tag: str | None
    built: BuiltIndex
    images: list[PushedImage]
    attestations: list[PushedImage]

    digest = property(lambda self: self.built.digest)
    index = property(lambda self: self.built.index)
    index_bytes = property(lambda self: self.built.index_bytes)
    media_type = property(lambda self: self.built.media_type)


def push_built(reg: RegistryLike, target: str, img: BuiltImage, *, tags: Sequence[str] = ()) -> PushedImage:
    """Push blobs, then the manifest under the tag in ``target`` (and ``tags``),
    or by digest when ``target`` has no tag."""
    repository, tag = split_target(target)
    s = _session(reg, repository)
    _push_image_parts(reg, repository, img, s)
    refs = [t for t in (tag, *tags) if t] or [img.digest]
    for ref in refs:
        push_manifest(reg, repository, ref, img.manifest_bytes, img.media_type, s)
    return PushedImage(reg.host, repository, tag or (tags[0] if tags else None), img)


def push_image(reg: RegistryLike, target: str, layers: Sequence[Layer] | None = None, *,
               tags: Sequence[str] = (), **build_kw: Any) -> PushedImage:
    """Build (see :func:`build_image`) and push. ``layers=None`` → one small layer."""
    if layers is None:
        layers = [layer({"hello.txt": f"hello from {target}\n"})]
    return push_built(reg, target, build_image(layers, **build_kw), tags=tags)


def push_index(reg: RegistryLike, target: str, images: Sequence[ImageSpec] = ("linux/amd64", "linux/arm64/v8"),
               *, media: str = "oci", attestation: bool = False, tags: Sequence[str] = (),
               annotations: Mapping[str, str] | None = None) -> PushedIndex:
    """Push every platform image (by digest), attestations, then the index."""
    built = build_index(images, media=media, attestation=attestation, annotations=annotations)
    repository, tag = split_target(target)
    s = _session(reg, repository)
    pushed: list[PushedImage] = []
    for img in [*built.images, *built.attestations]:
        _push_image_parts(reg, repository, img, s)
        push_manifest(reg, repository, img.digest, img.manifest_bytes, img.media_type, s)
        pushed.append(PushedImage(reg.host, repository, None, img))
    refs = [t for t in (tag, *tags) if t] or [built.digest]
    for ref in refs:
        push_manifest(reg, repository, ref, built.index_bytes, built.media_type, s)
    n = len(built.images)
    return PushedIndex(reg.host, repository, tag or (tags[0] if tags else None), built, pushed[:n], pushed[n:])


# -- reading back (for assertions; plain requests, harness credentials) ----------------------
def get_manifest(reg: RegistryLike, repository: str, reference: str, accept: str = ACCEPT_ALL,
                 method: str = "GET") -> requests.Response:
    return requests.request(method, f"{reg.url}/v2/{repository}/manifests/{reference}",
                            headers={"Accept": accept, **reg.auth_headers(repository, "pull")}, timeout=30)


def get_blob(reg: RegistryLike, repository: str, digest: str, headers: Mapping[str, str] | None = None) -> requests.Response:
    return requests.get(f"{reg.url}/v2/{repository}/blobs/{digest}",
                        headers={**reg.auth_headers(repository, "pull"), **(headers or {})}, timeout=30)


def delete_manifest(reg: RegistryLike, repository: str, digest: str) -> None:
    _check(requests.delete(f"{reg.url}/v2/{repository}/manifests/{digest}",
                           headers=reg.auth_headers(repository, "pull,push,delete"), timeout=30), 202)


def delete_blob(reg: RegistryLike, repository: str, digest: str) -> None:
    _check(requests.delete(f"{reg.url}/v2/{repository}/blobs/{digest}",
                           headers=reg.auth_headers(repository, "pull,push,delete"), timeout=30), 202)
