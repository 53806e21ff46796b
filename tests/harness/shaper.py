"""A shaping proxy: the fault proxy plus a wide-area link's latency and bandwidth.

``ShapingProxy(registry, rtt=0.08, bandwidth=20e6).start()`` forwards like
:class:`harness.proxy.FaultProxy` (faults and records included) but waits
one round trip before answering each request and sends each connection's
bytes at most at ``bandwidth`` bytes/s, so many connections together get
many times one connection's rate, as from a registry's CDN. Records count
what was served: ``proxy.count(r"/blobs/sha256:...")``.
"""

from __future__ import annotations

import time
from typing import Any

from .proxy import FaultProxy


class _Throttled:
    "A write-only file that paces one connection to ``rate`` bytes/s."

    def __init__(self, raw: Any, rate: float) -> None:
        self.raw, self.rate = raw, rate
        self.start = time.monotonic()
        self.sent = 0

    def write(self, data: bytes) -> int:
        step = 16 * 1024
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            due = self.start + (self.sent + len(piece)) / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                # Idle between requests: no credit saved up for a burst.
                self.start, self.sent = time.monotonic(), 0
            self.raw.write(piece)
            self.sent += len(piece)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class ShapingProxy(FaultProxy):
    def __init__(self, upstream: Any, *, rtt: float = 0.08, bandwidth: float = 20e6, **kw: Any) -> None:
        super().__init__(upstream, **kw)
        self.rtt, self.bandwidth = rtt, bandwidth

    def handle(self, h: Any) -> None:
        if not isinstance(h.wfile, _Throttled):
            h.wfile = _Throttled(h.wfile, self.bandwidth)
        time.sleep(self.rtt)
        super().handle(h)
