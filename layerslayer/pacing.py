"""One shared request budget per registry: when a registry says "slow down",
every request to it waits, not just the one that was told.

A ``Pacer`` is handed to ``RegistryClient`` (its ``pacer`` attribute): the
client calls ``wait(host)`` before each request and ``observe(host, status,
headers)`` after each answer. A pause starts on

* HTTP 429: for its ``Retry-After`` (seconds), else ``DEFAULT_429_PAUSE``;
* ``RateLimit-Remaining: 0`` (Docker Hub sends ``RateLimit-Remaining: 0;w=21600``
  with ``RateLimit-Limit: 100;w=21600``): until ``RateLimit-Reset`` /
  ``X-RateLimit-Reset`` when given, else for the time one request takes to
  come back into a sliding window (window / limit), at least a second.

Pauses are capped at ``MAX_PAUSE``. :class:`Pacer` is shared by the threads
of one process; ``crawl.DaskPacer`` extends it across a cluster's workers.
"""

from __future__ import annotations

import re
import threading
import time

DEFAULT_429_PAUSE = 1.0
MAX_PAUSE = 900.0
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")
_WINDOW = re.compile(r"w=(\d+)")


def _number(value) -> float | None:
    match = _NUMBER.match(value) if isinstance(value, str) else None
    return float(match.group(1)) if match else None


def pause_for(status: int, headers) -> float:
    "Seconds every request to this registry should wait after this answer (0: none)."
    if status == 429:
        retry_after = _number(headers.get("Retry-After"))
        return min(retry_after if retry_after is not None else DEFAULT_429_PAUSE, MAX_PAUSE)
    remaining = _number(headers.get("RateLimit-Remaining") or headers.get("X-RateLimit-Remaining"))
    if remaining is None or remaining > 0:
        return 0.0
    reset = _number(headers.get("RateLimit-Reset"))
    if reset is None:
        epoch = _number(headers.get("X-RateLimit-Reset"))
        reset = epoch - time.time() if epoch is not None else None
    if reset is None:
        limit_header = headers.get("RateLimit-Limit") or ""
        limit, window = _number(limit_header), _WINDOW.search(limit_header)
        reset = int(window.group(1)) / limit if window and limit else DEFAULT_429_PAUSE
    return min(max(reset, 1.0), MAX_PAUSE)


class Pacer:
    "Pauses per registry host, shared by every client given this pacer."

    def __init__(self):
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # host -> time.time() when requests may go again
        self.waited = 0.0  # seconds spent waiting, all threads together

    def paused_until(self, host: str) -> float:
        return self._until.get(host, 0.0)

    def pause(self, host: str, until: float) -> None:
        with self._lock:
            if until > self._until.get(host, 0.0):
                self._until[host] = until

    def observe(self, host: str, status: int, headers) -> None:
        seconds = pause_for(status, headers)
        if seconds > 0:
            self.pause(host, time.time() + seconds)

    def wait(self, host: str) -> float:
        "Sleep until the registry's pause (if any) is over; return the seconds slept."
        slept = 0.0
        while True:
            delay = self.paused_until(host) - time.time()
            if delay <= 0:
                break
            time.sleep(min(delay, 1.0))  # short steps: a pause may be extended or lifted meanwhile
            slept += min(delay, 1.0)
        if slept:
            with self._lock:
                self.waited += slept
        return slept
