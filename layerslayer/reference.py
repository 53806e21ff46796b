"""Image references: the grammar docker and the OCI distribution spec use.

``parse_reference("nginx")`` gives registry ``registry-1.docker.io``,
repository ``library/nginx``, tag ``latest``, the same normalisation docker
applies. A digest, when present, wins over the tag for fetching.
"""

from __future__ import annotations

import platform as host_platform
import re
from dataclasses import dataclass

from .errors import InvalidReference, UsageError
from .oci import is_digest

DOCKER_HUB = "registry-1.docker.io"
# What people type for Docker Hub; all of them mean DOCKER_HUB.
DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        "What to put after /manifests/: the digest when we have one, else the tag."
        return self.digest or self.tag or "latest"

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    @property
    def name(self) -> str:
        "registry/repository, with Docker Hub spelled docker.io as docker prints it."
        host = "docker.io" if self.is_docker_hub else self.registry
        return f"{host}/{self.repository}"

    def _with_suffix(self, name: str) -> str:
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    def __str__(self) -> str:
        return self._with_suffix(self.name)

    @property
    def short(self) -> str:
        "The familiar form: nginx:latest, moby/buildkit:v1, ghcr.io/o/r:t."
        if self.is_docker_hub:
            return self._with_suffix(self.repository.removeprefix("library/"))
        return self._with_suffix(self.name)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)


def looks_like_domain(component: str) -> bool:
    "Whether a reference's first component names a registry host rather than a repository."
    # docker's rule: a first component is a registry host when it has a dot
    # or a port, is "localhost", or has upper case (repositories cannot).
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.startswith("[")
        or component.lower() != component
    )


def parse_reference(text: str) -> Reference:
    "Parse and normalise an image reference; raise InvalidReference on bad input."
    original = text
    text = text.strip()

    def bad(why: str) -> InvalidReference:
        return InvalidReference(f"invalid image reference {original!r}: {why}")

    if not text:
        raise bad("it is empty")
    if any(c.isspace() for c in text):
        raise bad("it contains white space")

    digest = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if not is_digest(digest):
            raise bad(f"{digest!r} is not a valid digest (expected sha256:<64 hex digits>)")

    # A tag follows the last colon, unless that colon belongs to host:port.
    tag = None
    last_slash = text.rfind("/")
    last_colon = text.rfind(":")
    if last_colon > last_slash:
        text, tag = text[:last_colon], text[last_colon + 1 :]
        if not _TAG.match(tag):
            raise bad(f"{tag!r} is not a valid tag")

    if not text:
        raise bad("the repository name is empty")

    first, sep, rest = text.partition("/")
    if sep and looks_like_domain(first):
        registry = first
        repository = rest
        if not _DOMAIN.match(registry):
            raise bad(f"{registry!r} is not a valid registry host")
    else:
        registry = "docker.io"
        repository = text

    if not repository:
        raise bad("the repository name is empty")
    for component in repository.split("/"):
        if not component:
            raise bad("it has an empty path component")
        if component.lower() != component:
            raise bad("repository names must be lower case")
        if not _PATH_COMPONENT.match(component):
            raise bad(f"{component!r} is not a valid repository path component")

    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if len(f"{registry}/{repository}") > MAX_NAME_LENGTH:
        raise bad(f"the name is longer than {MAX_NAME_LENGTH} characters")

    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def parse_platform(text: str) -> tuple[str, str, str | None]:
    "'linux/arm64/v8' -> ('linux', 'arm64', 'v8'); raise InvalidReference-style UsageError."
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {text!r}: expected os/arch or os/arch/variant")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def host_platform_string() -> str:
    "This machine's platform as an image would name it (``linux/amd64``, ``linux/arm64``)."
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x"}.get(machine, machine)
    return f"linux/{arch}"
