"""A small stand-in for Docker Hub's web API, in the shapes Docker documents.

``GET /v2/repositories/NAMESPACE/?page=N&page_size=M`` and
``GET /v2/search/repositories/?query=Q&page=N&page_size=M`` answer::

    {"count": 123, "next": "http://host/v2/...?page=2&page_size=M", "previous": null,
     "results": [...]}

Repository listing results carry ``name``, ``namespace``, ``repository_type``,
``status``, ``description``, ``is_private``, ``star_count``, ``pull_count``,
``last_updated``; search results ``repo_name`` (no namespace for official
images), ``short_description``, ``star_count``, ``pull_count``, ``repo_owner``,
``is_automated``, ``is_official``. Every answer carries ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (epoch seconds).

Knobs: ``hub.throttle(n, retry_after=1)`` answers the next ``n`` requests
with 429; ``hub.budget = (remaining, reset_in)`` sets the rate-limit headers
of the next answer only. ``hub.requests`` records (path, query, time).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse

from .net import BackgroundServer, QuietHandler

MAX_PAGE_SIZE = 100


class HubServer(BackgroundServer):
    def __init__(self) -> None:
        super().__init__(_HubHandler)
        self.namespaces: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict, float]] = []
        self._throttle = 0
        self._retry_after = "1"
        self.budget: tuple[int, float] | None = None

    def add_namespace(self, namespace: str, names: list[str], *, official: bool = False) -> None:
        self.namespaces[namespace] = [
            {
                "name": name, "namespace": namespace, "repository_type": "image", "status": 1,
                "description": f"{name} image", "is_private": False, "star_count": i, "pull_count": 1000 + i,
                "last_updated": "2026-01-02T03:04:05.000000Z", "is_official": official,
            }
            for i, name in enumerate(names)
        ]

    def throttle(self, times: int, retry_after: str = "1") -> None:
        self._throttle, self._retry_after = times, retry_after

    def handle(self, h: _HubHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        with self.lock:
            self.requests.append((url.path, query, time.time()))
            throttled = self._throttle > 0
            self._throttle -= throttled
            budget, self.budget = self.budget, None
        remaining, reset_in = budget or (99, 3600)
        headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": str(remaining),
                   "X-RateLimit-Reset": str(int(time.time() + reset_in + 0.999))}
        if throttled:
            h.send_bytes(429, b'{"message": "Too Many Requests"}', {**headers, "Retry-After": self._retry_after})
            return
        parts = [p for p in url.path.split("/") if p]
        if parts[:2] == ["v2", "repositories"] and len(parts) == 3:
            items = self.namespaces.get(parts[2])
            if items is None:
                h.send_bytes(404, b'{"message": "object not found"}', headers)
                return
        elif parts == ["v2", "search", "repositories"]:
            words = query.get("query", "").lower()
            items = [
                {"repo_name": r["name"] if r["is_official"] else f"{r['namespace']}/{r['name']}",
                 "short_description": r["description"], "star_count": r["star_count"],
                 "pull_count": r["pull_count"], "repo_owner": "", "is_automated": False,
                 "is_official": r["is_official"]}
                for ns in self.namespaces.values() for r in ns if words and words in r["name"]
            ]
        else:
            h.send_bytes(404, b'{"message": "page not found"}', headers)
            return
        page = int(query.get("page", "1"))
        size = min(int(query.get("page_size", "10")), MAX_PAGE_SIZE)
        chunk = items[(page - 1) * size: page * size]

        def link(n: int) -> str | None:
            if n < 1 or (n - 1) * size >= len(items):
                return None
            return f"{self.url}{url.path}?{urllib.parse.urlencode({**query, 'page': n, 'page_size': size})}"

        body = {"count": len(items), "next": link(page + 1), "previous": link(page - 1), "results": chunk}
        h.send_bytes(200, json.dumps(body).encode(), headers)


class _HubHandler(QuietHandler):
    def do_GET(self) -> None:
        self.server.owner.handle(self)  # type: ignore[attr-defined]
