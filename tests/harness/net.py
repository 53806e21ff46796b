"""Small loopback networking helpers shared by the harness servers."""

from __future__ import annotations

import http.server
import socket
import threading

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1.

    The port is released before returning, so another process could grab it;
    callers that hand it to a subprocess retry on "address in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class QuietThreadingServer(http.server.ThreadingHTTPServer):
    """Threaded HTTP server on loopback that never blocks shutdown on handlers.

    ``block_on_close = False`` matters: a handler stalled on purpose (proxy
    ``stall`` fault) must not make teardown wait for it.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        # Clients hanging up mid-response are normal in fault tests: stay silent.
        pass


class BackgroundServer:
    """Runs a QuietThreadingServer in a daemon thread on a free loopback port."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = QuietThreadingServer((LOOPBACK, 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]  # handlers reach back via self.server.owner
        self.port: int = self.httpd.server_address[1]
        self.host = f"{LOOPBACK}:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"{type(self).__name__}:{self.port}",
        )
        self._started = False

    def start(self) -> BackgroundServer:
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._started = False
        self.httpd.server_close()

    def __enter__(self):  # noqa: ANN204
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler with logging switched off."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def read_request_body(self) -> bytes:
        """Body of the current request (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers until the blank line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                   *, head: bool = False) -> None:
        self.send_response(status)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
