"""A scripted hostile server on loopback: a registry front whose answers the test writes.

::

    server = ScriptedServer(upstream=registry).start()      # forwards what no route claims
    server.route(r"/tags/list", lambda h, m: h.send_bytes(200, b'{"tags": []}', {"Link": ...}))
    server.route(r"/blobs/", drip_route(b"...", delay=0.2))  # one byte per delay, for ever or not
    ...
    server.records                                            # [(method, path, headers, scheme)]

``tls=True`` serves HTTPS with a fresh self-signed certificate for
127.0.0.1 and localhost (``server.cert_path``); the port sniffs each
connection, so a plain-HTTP request reaches the same port too and, unless
``plain_too=True``, gets Go's "400 Client sent an HTTP request to an HTTPS
server" as docker-registry answers it. Every request is recorded with the
scheme it came over.

Like the rest of the harness it never imports layerslayer.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .net import BackgroundServer, QuietHandler, QuietThreadingServer

Route = Callable[["ScriptedHandler", "re.Match[str]"], None]


def self_signed_cert(directory: Path, name: str = "hostile") -> tuple[Path, Path]:
    "A certificate for 127.0.0.1, ::1 and localhost with its key: (cert.pem, key.pem) in ``directory``."
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def non_loopback_name() -> str:
    """A host name that is not a loopback *name* (not localhost, not a
    127.x or ::1 literal) yet resolves to a loopback address here, so the
    test's traffic stays on loopback: the machine's own host name when
    /etc/hosts maps it to 127.x, else 2130706433 (127.0.0.1 as one number,
    which the resolver accepts and no loopback-name rule does)."""
    for name in (socket.gethostname(), "2130706433"):
        try:
            address = socket.gethostbyname(name)
        except OSError:
            continue
        if ipaddress.ip_address(address).is_loopback and name != "localhost":
            return name
    raise RuntimeError("no host name here resolves to a loopback address")


class _SniffingServer(QuietThreadingServer):
    "Accepts TLS and plain HTTP on one port: a first byte 0x16 is a TLS handshake."

    context: ssl.SSLContext | None = None

    def get_request(self):  # noqa: ANN201
        sock, address = self.socket.accept()
        if self.context is None:
            return sock, address
        sock.settimeout(5)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            first = b""
        if first == b"\x16":
            try:
                sock = self.context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                sock.close()
                raise OSError("TLS handshake failed")  # socketserver drops this connection
        sock.settimeout(None)
        return sock, address


class ScriptedHandler(QuietHandler):
    server: _SniffingServer

    @property
    def scheme(self) -> str:
        return "https" if isinstance(self.connection, ssl.SSLSocket) else "http"

    def _dispatch(self) -> None:
        self.server.owner.handle(self)  # type: ignore[attr-defined]

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    # -- answers a route can give -------------------------------------------------
    def start_body(self, status: int, headers: dict[str, str] | None = None, *, chunked: bool = True) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ScriptedServer(BackgroundServer):
    def __init__(self, upstream: Any = None, *, tls: bool = False, plain_too: bool = False,
                 workdir: Path | None = None) -> None:
        self.httpd = _SniffingServer(("127.0.0.1", 0), ScriptedHandler)
        # BackgroundServer's set-up, on our own server class.
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"ScriptedServer:{self.port}")
        self._started = False
        self.upstream = upstream
        self.plain_too = plain_too or not tls
        self.cert_path: Path | None = None
        if tls:
            assert workdir is not None, "tls=True needs a workdir for the certificate"
            self.cert_path, key_path = self_signed_cert(workdir, f"hostile-{self.port}")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_path, key_path)
            self.httpd.context = context
        self.routes: list[tuple[str | None, re.Pattern[str], Route]] = []
        self.records: list[tuple[str, str, dict[str, str], str]] = []
        self._lock = threading.Lock()

    def route(self, pattern: str, answer: Route, method: str | None = None) -> ScriptedServer:
        "Requests whose path (query included) matches ``pattern`` get ``answer(handler, match)``; first match wins."
        self.routes.append((method, re.compile(pattern), answer))
        return self

    def requests_to(self, pattern: str) -> list[tuple[str, str, dict[str, str], str]]:
        with self._lock:
            return [r for r in self.records if re.search(pattern, r[1])]

    def authorizations(self, pattern: str = ".*") -> list[str | None]:
        return [r[2].get("authorization") for r in self.requests_to(pattern)]

    def handle(self, h: ScriptedHandler) -> None:
        with self._lock:
            self.records.append((h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, h.scheme))
        if h.scheme == "http" and not self.plain_too:
            h.send_bytes(400, b"Client sent an HTTP request to an HTTPS server.\n", {"Content-Type": "text/plain"})
            return
        for method, pattern, answer in self.routes:
            match = pattern.search(h.path)
            if match and method in (None, h.command):
                answer(h, match)
                return
        if self.upstream is None:
            h.send_bytes(404, b"<html><body>404 page not found</body></html>", {"Content-Type": "text/html"})
            return
        self.forward(h)

    def forward(self, h: ScriptedHandler, *, body_filter: Callable[[bytes], bytes] | None = None,
                extra_headers: dict[str, str] | None = None) -> None:
        "Pass the request to the upstream registry and its whole answer back (Location kept as is)."
        body = h.read_request_body()
        conn = http.client.HTTPConnection(self.upstream.host, timeout=30)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection", "transfer-encoding")}
            conn.request(h.command, h.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if body_filter is not None:
                data = body_filter(data)
            out = {k: v for k, v in response.getheaders()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection")}
            out.update(extra_headers or {})
            h.send_bytes(response.status, data, out, head=h.command == "HEAD")
        finally:
            conn.close()


def drip(h: ScriptedHandler, status: int, headers: dict[str, str], data: Iterable[bytes], delay: float) -> None:
    "Send ``data`` one piece per ``delay`` seconds (chunked), until it ends or the client leaves."
    h.start_body(status, headers)
    try:
        for piece in data:
            h.write_chunk(piece)
            time.sleep(delay)
        h.end_chunks()
    except OSError:
        pass  # the client gave up: what the test wants
    h.close_connection = True


def for_ever(piece: bytes) -> Iterable[bytes]:
    while True:
        yield piece


def one_byte_at_a_time(data: bytes) -> Iterable[bytes]:
    return (data[i:i + 1] for i in range(len(data)))
