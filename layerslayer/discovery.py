"""Finding targets to index: tags, a registry's catalog, Docker Hub namespaces and search.

``tags`` and ``catalog`` speak the Registry API (``RegistryClient.list_tags``
and ``.catalog``, which follow ``Link`` pagination). Docker Hub has no
catalog: its own web API lists a namespace's repositories
(``GET /v2/repositories/NAMESPACE/``) and searches them
(``GET /v2/search/repositories/?query=…``); both answer pages of
``{"count", "next", "previous", "results": [...]}`` and are followed through
``next``. Those requests go through a ``RegistryClient`` made for the Hub's
host, so they get the same retries, 429 ``Retry-After`` handling and
redirect rules as registry traffic; between pages the Hub's
``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` headers are honoured.

The Hub's address comes from ``$LAYERSLAYER_HUB_URL`` (default
``https://hub.docker.com``), so tests point the real code at a local server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlparse

from .errors import RegistryError, UsageError
from .options import ClientOptions
from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES, Reference, parse_reference

HUB_URL_ENV = "LAYERSLAYER_HUB_URL"
DEFAULT_HUB_URL = "https://hub.docker.com"
HUB_MAX_PAGE_SIZE = 100
#: Longest pause for an exhausted Hub budget before giving up with an error.
MAX_RATE_LIMIT_WAIT = 300.0
_NAMESPACE_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def list_tags(options: ClientOptions, reference: str, *, page_size: int | None = None,
              limit: int | None = None) -> Iterator[Reference]:
    "Every tag of REF's repository, as references (up to ``limit``)."
    ref = parse_reference(reference)
    client = options.client(ref.registry)
    for count, tag in enumerate(client.list_tags(ref.repository, page_size)):
        if limit is not None and count >= limit:
            return
        yield ref.with_tag(tag)


def list_catalog(options: ClientOptions, registry: str, *, page_size: int | None = None,
                 limit: int | None = None) -> Iterator[Reference]:
    "Every repository of a registry's ``_catalog``, as tagless references."
    if not registry or "/" in registry or "@" in registry:
        raise UsageError(f"catalog takes a registry host such as localhost:5000, not {registry!r}")
    host = DOCKER_HUB if registry in DOCKER_HUB_ALIASES else registry
    if host == DOCKER_HUB:
        raise UsageError("Docker Hub has no catalog: use `layerslayer repos docker.io/NAMESPACE` or `layerslayer search`")
    client = options.client(host)
    for count, repository in enumerate(client.catalog(page_size)):
        if limit is not None and count >= limit:
            return
        yield Reference(host, repository)


@dataclass
class HubRepository:
    "One repository from a Hub listing or search (fields as the Hub names them)."

    namespace: str
    name: str
    description: str | None = None
    star_count: int | None = None
    pull_count: int | None = None
    is_official: bool | None = None
    last_updated: str | None = None

    @property
    def reference(self) -> Reference:
        return Reference(DOCKER_HUB, f"{self.namespace}/{self.name}")

    def as_dict(self) -> dict:
        return {"reference": self.reference.short, **self.__dict__}


def hub_url() -> str:
    return os.environ.get(HUB_URL_ENV) or DEFAULT_HUB_URL


def hub_namespace(text: str) -> str:
    "NAMESPACE from ``docker.io/NAMESPACE`` (or a bare ``NAMESPACE``)."
    host, _, rest = text.partition("/")
    if not rest:
        host, rest = "docker.io", host
    rest = rest.strip("/")
    if host not in DOCKER_HUB_ALIASES or not rest or "/" in rest or not set(rest) <= _NAMESPACE_CHARS:
        raise UsageError(f"repos takes a Docker Hub namespace such as docker.io/library, not {text!r}")
    return rest


class HubClient:
    "Docker Hub's web API (repository listings and search), over a RegistryClient's transport."

    def __init__(self, options: ClientOptions | None = None, base_url: str | None = None):
        from .registry import RegistryClient  # only the network commands load requests

        options = options or ClientOptions()
        self.base_url = (base_url or hub_url()).rstrip("/")
        parsed = urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"${HUB_URL_ENV} must be an http(s) URL, not {self.base_url!r}")
        self.host = parsed.netloc
        # No credentials: both listings are public, and the Hub's web API
        # is not where registry passwords belong.
        self.client = RegistryClient(
            self.host, plain_http=parsed.scheme == "http", insecure=options.insecure,
            timeout=options.timeout, retries=options.retries, registry_api=False,
        )
        self.waited = 0.0  # seconds spent waiting for the rate limit to reset

    def repositories(self, namespace: str, *, page_size: int | None = None, limit: int | None = None) -> Iterator[HubRepository]:
        path = f"/v2/repositories/{namespace}/"
        for item in self._pages(path, {"page_size": _page(page_size)}, limit, f"namespace {namespace}"):
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise RegistryError(f"{self.host} returned a repository without a name")
            yield HubRepository(
                namespace=_str(item.get("namespace")) or namespace, name=name,
                description=_str(item.get("description")), star_count=_int(item.get("star_count")),
                pull_count=_int(item.get("pull_count")), last_updated=_str(item.get("last_updated")),
            )

    def search(self, query: str, *, page_size: int | None = None, limit: int | None = None,
               official: bool = False) -> Iterator[HubRepository]:
        if not query.strip():
            raise UsageError("search needs a keyword")
        for item in self._pages("/v2/search/repositories/", {"query": query, "page_size": _page(page_size)}, limit, "search"):
            if official and not item.get("is_official"):
                continue
            repo_name = item.get("repo_name")
            if not isinstance(repo_name, str) or not repo_name:
                raise RegistryError(f"{self.host} returned a search result without a repo_name")
            namespace, _, name = repo_name.rpartition("/")
            yield HubRepository(
                namespace=namespace or "library", name=name,
                description=_str(item.get("short_description")), star_count=_int(item.get("star_count")),
                pull_count=_int(item.get("pull_count")), is_official=bool(item.get("is_official")),
            )

    def _pages(self, path: str, params: dict, limit: int | None, what: str) -> Iterator[dict]:
        url: str | None = f"{self.base_url}{path}?{urlencode(params)}"
        seen: set[str] = set()
        count = 0
        while url:
            seen.add(url)
            response = self.client.request("GET", url)
            with response:
                self.client._raise_for_status(response, what, not_found=f"{what} not found on Docker Hub")
                try:
                    page = response.json()
                except (ValueError, RecursionError):
                    page = None
                results = page.get("results") if isinstance(page, dict) else None
                if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                    raise RegistryError(f"{self.host} returned an invalid page for {what}")
                for item in results:
                    if limit is not None and count >= limit:
                        return
                    count += 1
                    yield item
                url = self._next(page.get("next"), url)
                self._respect_budget(response.headers)
            if url in seen:
                break  # a server that links back to a page we had must not loop forever

    def _next(self, link, current: str) -> str | None:
        if not isinstance(link, str) or not link:
            return None
        url = urljoin(current, link)
        # Only follow pages on the Hub's own origin (nothing else is asked for).
        if urlparse(url).netloc != self.host:
            raise RegistryError(f"{self.host} pointed the next page at another host ({urlparse(url).netloc[:80]})")
        return url

    def _respect_budget(self, headers) -> None:
        "Out of requests for now: wait for the reset the Hub announced (bounded)."
        remaining = _int(headers.get("X-RateLimit-Remaining"))
        reset = _int(headers.get("X-RateLimit-Reset"))
        if remaining is None or remaining > 0 or reset is None:
            return
        delay = reset - time.time()
        if delay <= 0:
            return
        if delay > MAX_RATE_LIMIT_WAIT:
            raise RegistryError(f"Docker Hub's rate limit is spent until {time.strftime('%H:%M:%S', time.localtime(reset))}; try again then")
        self.waited += delay
        time.sleep(delay)


def _page(page_size: int | None) -> int:
    return min(page_size or HUB_MAX_PAGE_SIZE, HUB_MAX_PAGE_SIZE)


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def read_references(lines) -> list[str]:
    "References from a file's lines: one a line, blank lines and ``#`` comments skipped."
    refs = []
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            refs.append(text)
    return refs
