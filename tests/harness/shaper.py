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


class ShapingProxyProcess:
    """A ShapingProxy in a process of its own (so a benchmark's own threads do
    not compete with it for the GIL). ``.host``/``.url`` as for the proxy;
    ``requests()`` lists (method, path, status) of the requests answered so far."""

    def __init__(self, upstream: Any, *, rtt: float = 0.08, bandwidth: float = 20e6, log: Any) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.log = Path(log)
        self.log.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.shaper", upstream.url, str(rtt), str(bandwidth), str(self.log)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
        )
        self.host = self.process.stdout.readline().strip()
        self.url = f"http://{self.host}"

    def requests(self) -> list[tuple[str, str, int]]:
        rows = []
        for line in self.log.read_text().splitlines():
            method, path, status = line.split(" ")
            rows.append((method, path, int(status)))
        return rows

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _serve(upstream_url: str, rtt: str, bandwidth: str, log_path: str) -> None:
    import threading
    import types
    import urllib.parse

    upstream = types.SimpleNamespace(url=upstream_url, host=urllib.parse.urlsplit(upstream_url).netloc)
    log = open(log_path, "a", buffering=1)

    proxy = ShapingProxy(upstream, rtt=float(rtt), bandwidth=float(bandwidth)).start()

    def write_log() -> None:
        # Answered requests go to the log (and leave the list, which would only grow).
        while True:
            time.sleep(0.1)
            with proxy._lock:
                done = [r for r in proxy.records if r.status is not None]
                proxy.records[:] = [r for r in proxy.records if r.status is None]
            for rec in done:
                log.write(f"{rec.method} {rec.path} {rec.status}\n")

    threading.Thread(target=write_log, daemon=True).start()
    print(proxy.host, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    import sys

    _serve(*sys.argv[1:5])
