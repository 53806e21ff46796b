"""A fault-injecting HTTP proxy in front of a real registry, plus a fake CDN.

Everything is forwarded to the upstream registry (bodies streamed, headers
kept, ``Location`` pointing at upstream rewritten to the proxy, ``Range``
passed through) and recorded. Faults are programmed per method + path regex
and fire for the next ``times`` matching requests (``times=None``: forever)::

    proxy.fail(429, r"/manifests/", times=2)          # Retry-After: 1 by default
    proxy.fail(503, r"/blobs/sha256:")
    proxy.drop(r"/blobs/")                            # close, no response at all
    proxy.reset_mid_body(r"/blobs/", after=1000)     # headers + 1000 bytes, then TCP RST
    proxy.truncate(r"/blobs/")                       # full Content-Length, half the bytes, FIN
    proxy.stall(r"/blobs/", seconds=3)                # headers, then silence (bounded)
    proxy.corrupt(r"/blobs/")                         # flip one byte (same length)
    proxy.redirect(r"/blobs/", times=None)            # 307 to proxy.cdn, which records Authorization

Paths are matched with ``re.search`` against the request path without its
query string. ``method=None`` (default) matches any method, except that the
body faults (reset_mid_body, truncate, corrupt, redirect, stall after headers)
never match HEAD, which has no body to break.

Recorded traffic: ``proxy.records`` (list of :class:`Record`), helpers
``proxy.find(path, method)``, ``proxy.count(...)``, ``proxy.bytes_served(...)``;
the CDN keeps its own ``proxy.cdn.records`` / ``proxy.cdn.authorization_headers``.
``FaultProxy(upstream, cdn_host="localhost")`` puts a different *hostname* in
redirect URLs (still loopback); ``proxy.cdn.reject_authorization = True`` makes
the CDN answer 400 to requests carrying Authorization, as S3 does.

Faults also hit the harness's own calls when they go through the proxy
(``push_image(proxy, ...)``): push to the registry directly, then point the
client under test at ``proxy.host``.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from requests.structures import CaseInsensitiveDict

from .net import BackgroundServer, QuietHandler

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade"}
BODY_FAULTS = {"reset_mid_body", "truncate", "corrupt", "redirect"}
FAULT_KINDS = {"status", "drop", "stall", "ignore_range"} | BODY_FAULTS
MAX_STALL = 60.0
CHUNK = 64 * 1024
ERROR_CODES = {429: "TOOMANYREQUESTS", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND"}


@dataclass
class Record:
    """One request as seen by the proxy or the CDN."""

    method: str
    path: str                        # full request target incl. query
    headers: CaseInsensitiveDict     # request headers
    status: int | None = None        # status sent (None: no response, e.g. drop)
    bytes_sent: int = 0              # response body bytes actually written
    fault: str | None = None         # fault kind applied, if any
    response_headers: dict[str, str] = field(default_factory=dict)
    request_body: int = 0            # request body size
    time: float = field(default_factory=time.time)

    @property
    def route(self) -> str:
        return urllib.parse.urlsplit(self.path).path


@dataclass
class Fault:
    kind: str
    path: re.Pattern[str]
    method: str | None
    times: int | None                # remaining; None = unlimited
    params: dict[str, Any]
    hits: int = 0

    def matches(self, method: str, route: str, ranged: bool = False) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.kind == "ignore_range" and not ranged:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if method == "HEAD" and (self.kind in BODY_FAULTS
                                 or (self.kind == "stall" and not self.params.get("before_headers"))):
            return False
        return self.path.search(route) is not None


def parse_range(header: str | None, length: int) -> tuple[int, int] | None | str:
    """(start, end inclusive), None for no/ignored Range, or "unsatisfiable"."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(0, length - n), length - 1
        else:
            start = int(first)
            end = min(int(last), length - 1) if last else length - 1
    except ValueError:
        return None
    if start >= length or start > end:
        return "unsatisfiable"
    return start, end


def _close(handler: QuietHandler, *, reset: bool) -> None:
    """Close the client connection now; ``reset`` sends a TCP RST instead of FIN."""
    sock = handler.connection
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    # The rfile/wfile makefile() objects hold references: close them so the fd goes.
    for f in (handler.rfile, handler.wfile):
        try:
            f.close()
        except (OSError, ValueError):
            pass
    try:
        sock.close()
    except OSError:
        pass
    # BaseHTTPRequestHandler flushes/reads these after we return: give it dummies.
    handler.rfile, handler.wfile = io.BytesIO(), io.BytesIO()
    handler.close_connection = True


class CdnServer(BackgroundServer):
    """Serves blobs the proxy redirected to, with Range support; records every
    request, Authorization header included (a client must not forward it)."""

    def __init__(self, public_host: str | None = None) -> None:
        super().__init__(_CdnHandler)
        # Hostname put in redirect URLs; "localhost" makes it a different
        # *hostname* from 127.0.0.1 while still reaching this loopback server.
        self.public_url = f"http://{public_host}:{self.port}" if public_host else self.url
        self.blobs: dict[str, bytes] = {}
        self.records: list[Record] = []
        self.reject_authorization = False  # S3-like: 400 when an Authorization header arrives
        self._lock = threading.Lock()

    def put(self, data: bytes, name: str = "blob") -> str:
        """Store ``data``; returns a signed-looking URL for it."""
        key = uuid.uuid4().hex
        with self._lock:
            self.blobs[key] = data
        return f"{self.public_url}/cdn/{key}/{urllib.parse.quote(name, safe='')}?X-Harness-Signature={key[:12]}"

    def clear(self) -> None:
        with self._lock:
            self.records.clear()
            self.blobs.clear()
        self.reject_authorization = False

    @property
    def authorization_headers(self) -> list[str | None]:
        return [r.headers.get("Authorization") for r in self.records]

    def handle(self, h: _CdnHandler) -> None:
        rec = Record(h.command, h.path, CaseInsensitiveDict(dict(h.headers.items())))
        with self._lock:
            self.records.append(rec)
        head = h.command == "HEAD"
        parts = urllib.parse.urlsplit(h.path).path.split("/")
        data = self.blobs.get(parts[2]) if len(parts) >= 3 and parts[1] == "cdn" else None

        def send(status: int, body: bytes, headers: dict[str, str]) -> None:
            # Record before writing: the client may look at records as soon as it has the bytes.
            rec.status, rec.response_headers = status, headers
            rec.bytes_sent = 0 if head else len(body)
            h.send_bytes(status, body, headers, head=head)

        if self.reject_authorization and "Authorization" in h.headers:
            return send(400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                        b"allowed</Message></Error>", {"Content-Type": "application/xml"})
        if data is None or h.command not in ("GET", "HEAD"):
            return send(404, b"not found", {"Content-Type": "text/plain"})
        base = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        rng = parse_range(h.headers.get("Range"), len(data))
        if rng == "unsatisfiable":
            return send(416, b"", {**base, "Content-Range": f"bytes */{len(data)}"})
        if isinstance(rng, tuple):
            start, end = rng
            return send(206, data[start:end + 1], {**base, "Content-Range": f"bytes {start}-{end}/{len(data)}"})
        send(200, data, base)


class _CdnHandler(QuietHandler):
    def do_GET(self) -> None:
        self.server.owner.handle(self)  # type: ignore[attr-defined]

    do_HEAD = do_GET


class FaultProxy(BackgroundServer):
    """Proxy on a free loopback port in front of ``upstream`` (anything with
    ``.host``/``.url``; auth attributes and ``auth_headers`` are delegated so the
    proxy can stand in for the registry in builder calls and tests)."""

    def __init__(self, upstream: Any, *, cdn_host: str | None = None) -> None:
        super().__init__(_ProxyHandler)
        self.upstream = upstream
        up = urllib.parse.urlsplit(upstream.url)
        self._up_host, self._up_port = up.hostname or "127.0.0.1", up.port or 80
        self.cdn = CdnServer(cdn_host)
        self.records: list[Record] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- registry-like surface --------------------------------------------------------
    @property
    def username(self) -> str | None:
        return getattr(self.upstream, "username", None)

    @property
    def password(self) -> str | None:
        return getattr(self.upstream, "password", None)

    @property
    def token_server(self) -> Any:
        return getattr(self.upstream, "token_server", None)

    def auth_headers(self, repository: str | None = None, actions: str = "pull,push,delete") -> dict[str, str]:
        fn = getattr(self.upstream, "auth_headers", None)
        return fn(repository, actions) if fn else {}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self.cdn.start()
        super().start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled handlers
        super().stop()
        self.cdn.stop()

    # -- faults -------------------------------------------------------------------------------
    def add_fault(self, kind: str, path: str = ".*", *, method: str | None = None,
                  times: int | None = 1, **params: Any) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        fault = Fault(kind, re.compile(path), method, times, params)
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail(self, status: int, path: str = ".*", *, method: str | None = None, times: int | None = 1,
             headers: dict[str, str] | None = None, body: bytes | None = None,
             retry_after: str | int | None = None) -> Fault:
        """Answer ``status`` without asking upstream. 429 gets ``Retry-After: 1``
        unless ``retry_after``/``headers`` say otherwise."""
        return self.add_fault("status", path, method=method, times=times, status=status,
                              headers=headers, body=body, retry_after=retry_after)

    def drop(self, path: str = ".*", **kw: Any) -> Fault:
        return self.add_fault("drop", path, **kw)

    def reset_mid_body(self, path: str = ".*", *, after: int | None = None, **kw: Any) -> Fault:
        return self.add_fault("reset_mid_body", path, after=after, **kw)

    def truncate(self, path: str = ".*", *, after: int | None = None, **kw: Any) -> Fault:
        return self.add_fault("truncate", path, after=after, **kw)

    def stall(self, path: str = ".*", *, seconds: float = 5.0, after: int = 0,
              before_headers: bool = False, then: str = "close", **kw: Any) -> Fault:
        """Send headers (+ ``after`` body bytes), go silent for ``seconds`` (≤ 60,
        cut short at shutdown), then ``close`` or ``continue`` the body.
        ``before_headers=True`` stalls before sending anything."""
        return self.add_fault("stall", path, seconds=min(seconds, MAX_STALL), after=after,
                              before_headers=before_headers, then=then, **kw)

    def corrupt(self, path: str = ".*", *, offset: int | None = None, **kw: Any) -> Fault:
        return self.add_fault("corrupt", path, offset=offset, **kw)

    def ignore_range(self, path: str = r"/blobs/", **kw: Any) -> Fault:
        """Forward the next request that has a ``Range`` header without it, so
        upstream answers 200 with the whole body (a server that ignores Range)."""
        return self.add_fault("ignore_range", path, **kw)

    def redirect(self, path: str = r"/blobs/", *, status: int = 307, **kw: Any) -> Fault:
        return self.add_fault("redirect", path, status=status, **kw)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def clear_records(self) -> None:
        with self._lock:
            self.records.clear()

    def reset(self) -> None:
        """Clear faults, records and the CDN."""
        self.clear_faults()
        self.clear_records()
        self.cdn.clear()

    def _take_fault(self, method: str, route: str, ranged: bool = False) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(method, route, ranged):
                    if f.times is not None:
                        f.times -= 1
                    f.hits += 1
                    return f
        return None

    def _refund(self, fault: Fault) -> None:
        with self._lock:
            if fault.times is not None:
                fault.times += 1
            fault.hits -= 1

    # -- assertions helpers ------------------------------------------------------------------------
    def find(self, path: str = ".*", method: str | None = None, status: int | None = None) -> list[Record]:
        rx = re.compile(path)
        with self._lock:
            return [r for r in self.records
                    if rx.search(r.route) and (method is None or r.method == method.upper())
                    and (status is None or r.status == status)]

    def count(self, path: str = ".*", method: str | None = None, status: int | None = None) -> int:
        return len(self.find(path, method, status))

    def bytes_served(self, path: str = ".*", method: str | None = "GET") -> int:
        return sum(r.bytes_sent for r in self.find(path, method))

    # -- the forwarding itself --------------------------------------------------------------------
    def handle(self, h: _ProxyHandler) -> None:
        body = h.read_request_body()
        rec = Record(h.command, h.path, CaseInsensitiveDict(dict(h.headers.items())), request_body=len(body))
        with self._lock:
            self.records.append(rec)
        route = urllib.parse.urlsplit(h.path).path
        fault = self._take_fault(h.command, route, ranged="Range" in h.headers)
        rec.fault = fault.kind if fault else None
        try:
            if fault is None:
                return self._forward(h, rec, body)
            if fault.kind == "ignore_range":
                return self._forward(h, rec, body, drop_range=True)
            p = fault.params
            if fault.kind == "status":
                return self._send_status(h, rec, p)
            if fault.kind == "drop":
                return _close(h, reset=False)
            if fault.kind == "stall" and p.get("before_headers"):
                self._stopping.wait(p["seconds"])
                if p.get("then") == "continue" and not self._stopping.is_set():
                    return self._forward(h, rec, body)
                return _close(h, reset=False)
            if fault.kind == "redirect":
                return self._redirect(h, rec, body, fault)
            return self._forward(h, rec, body, fault)
        except OSError:
            # Client went away (timeouts in stall tests): nothing left to do.
            h.close_connection = True

    def _send_status(self, h: QuietHandler, rec: Record, p: dict[str, Any]) -> None:
        status = p["status"]
        headers: dict[str, str] = {}
        retry_after = p.get("retry_after")
        if retry_after is None and status == 429:
            retry_after = 1
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        headers.update(p.get("headers") or {})
        body = p.get("body")
        if body is None:
            code = ERROR_CODES.get(status, "UNAVAILABLE" if status >= 500 else "UNKNOWN")
            body = json.dumps({"errors": [{"code": code, "message": f"injected {status}"}]}).encode()
        head = h.command == "HEAD"
        rec.status, rec.response_headers = status, headers
        rec.bytes_sent = 0 if head else len(body)
        h.send_bytes(status, body, headers, head=head)

    def _upstream(self, h: QuietHandler, body: bytes, *, drop_range: bool = False
                  ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in HOP_BY_HOP and not (drop_range and k.lower() == "range")}
        # Host is kept as the client sent it: distribution builds absolute
        # Location URLs from it, so they already point at the proxy.
        conn.request(h.command, h.path, body=body if body or h.command in ("POST", "PUT", "PATCH") else None,
                     headers=headers)
        return conn, conn.getresponse()

    def _rewrite(self, value: str) -> str:
        up = self.upstream.url
        return self.url + value[len(up):] if value.startswith(up) else value

    def _forward(self, h: QuietHandler, rec: Record, body: bytes, fault: Fault | None = None, *,
                 drop_range: bool = False) -> None:
        try:
            conn, resp = self._upstream(h, body, drop_range=drop_range)
        except OSError as e:  # upstream down: say so instead of hanging up
            return self._send_status(h, rec, {"status": 502, "body": json.dumps(
                {"errors": [{"code": "UNAVAILABLE", "message": f"proxy: upstream unreachable: {e}"}]}).encode()})
        try:
            head = h.command == "HEAD"
            headers = [(k, self._rewrite(v) if k.lower() in ("location", "link") else v)
                       for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            length = resp.getheader("Content-Length")
            no_body = head or resp.status in (204, 304) or 100 <= resp.status < 200
            buffered: bytes | None = None
            if not no_body and length is None:
                # Upstream chunked: buffer so the client always gets a Content-Length.
                buffered = resp.read()
                headers.append(("Content-Length", str(len(buffered))))
                length = str(len(buffered))
            total = int(length) if length is not None else 0
            rec.status = resp.status
            rec.response_headers = dict(headers)
            h.send_response(resp.status)
            for k, v in headers:
                h.send_header(k, v)
            h.end_headers()
            if no_body:
                return
            self._send_body(h, rec, resp, buffered, total, fault)
        finally:
            conn.close()

    def _send_body(self, h: QuietHandler, rec: Record, resp: http.client.HTTPResponse,
                   buffered: bytes | None, total: int, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        p = fault.params if fault else {}
        # Byte position at which the fault cuts in (None: never).
        cut: int | None = None
        if kind in ("truncate", "reset_mid_body"):
            cut = p.get("after") if p.get("after") is not None else total // 2
            cut = min(cut, max(total - 1, 0))
        elif kind == "stall":
            cut = min(p.get("after", 0), total)
        flip = None
        if kind == "corrupt" and total:
            flip = p.get("offset") if p.get("offset") is not None else total // 2
            flip = min(flip, total - 1)

        sent = 0
        stalled = False

        def chunks():  # noqa: ANN202
            if buffered is not None:
                for i in range(0, len(buffered), CHUNK):
                    yield buffered[i:i + CHUNK]
                return
            while True:
                c = resp.read(CHUNK)
                if not c:
                    return
                yield c

        for chunk in chunks():
            if flip is not None and sent <= flip < sent + len(chunk):
                b = bytearray(chunk)
                b[flip - sent] ^= 0xFF
                chunk = bytes(b)
            if cut is not None and not stalled and sent + len(chunk) >= cut:
                head_part = chunk[:cut - sent]
                if head_part:
                    sent += len(head_part)
                    rec.bytes_sent = sent
                    h.wfile.write(head_part)
                if kind == "truncate":
                    return _close(h, reset=False)
                if kind == "reset_mid_body":
                    return _close(h, reset=True)
                # stall
                self._stopping.wait(p["seconds"])
                if p.get("then") != "continue" or self._stopping.is_set():
                    return _close(h, reset=False)
                stalled = True
                chunk = chunk[len(head_part):]
                if not chunk:
                    continue
            # Counted before the write so a client that already has the bytes
            # sees them in the records ("bytes handed to the socket").
            sent += len(chunk)
            rec.bytes_sent = sent
            h.wfile.write(chunk)
        if cut is not None and not stalled and kind == "stall":
            # Empty body: stall right after the headers.
            self._stopping.wait(p["seconds"])
            if p.get("then") != "continue":
                _close(h, reset=False)

    def _redirect(self, h: QuietHandler, rec: Record, body: bytes, fault: Fault) -> None:
        # Fetch the whole blob now (with the client's own credentials), park it
        # on the CDN and send the client there, like a registry backed by S3.
        conn, resp = self._upstream(h, body, drop_range=True)
        try:
            if resp.status != 200:
                # Not servable (e.g. 401 challenge): pass through, keep the fault armed.
                self._refund(fault)
                rec.fault = None
                data = resp.read()
                headers = {k: v for k, v in resp.getheaders()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
                rec.status, rec.response_headers = resp.status, headers
                rec.bytes_sent = len(data)
                h.send_bytes(resp.status, data, headers)
                return
            data = resp.read()
        finally:
            conn.close()
        location = self.cdn.put(data, urllib.parse.urlsplit(h.path).path.rsplit("/", 1)[-1])
        headers = {"Location": location, "Content-Type": "text/html; charset=utf-8"}
        rec.status, rec.response_headers = fault.params.get("status", 307), headers
        h.send_bytes(rec.status, b"", headers)


class _ProxyHandler(QuietHandler):
    def _dispatch(self) -> None:
        self.server.owner.handle(self)  # type: ignore[attr-defined]

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch
