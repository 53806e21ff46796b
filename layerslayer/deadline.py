"""An overall deadline per HTTP request, enforced on the socket.

requests' ``timeout`` bounds each socket read, not a request: a server that
sends one byte just inside every read timeout (headers or body) would keep a
request alive for ever. Here a single watchdog thread holds the deadlines of
the requests in flight and, when one passes, shuts its sockets down; the read
blocked on them returns at once and the caller, seeing ``Deadline.expired``,
reports the deadline instead of retrying.

The sockets are learnt where urllib3 starts reading a response
(:meth:`HTTPConnection.getresponse`), for the requests made inside
``with deadline.watching():`` in the same thread: :func:`mount` installs the
connection classes on a ``requests.Session``.

A socket stays watched until its Deadline is closed, even if its connection
went back to the pool in between (a 401 before the retry): should the
deadline pass then, a request of another thread that took the connection
meanwhile sees a dropped connection and retries, as for any other.
"""

from __future__ import annotations

import socket
import threading
import time

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class Deadline:
    "A point in time by which a request (with its retries, redirects and body) must be done."

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []

    def watching(self) -> _Watching:
        "Within this block, the sockets of the responses this thread starts are watched."
        return _Watching(self)

    def arm(self, sock: socket.socket | None) -> None:
        if sock is not None:
            _WATCHDOG.arm(self, sock)

    def close(self) -> None:
        "The request is over: its sockets are no longer watched (they may go back to the pool)."
        _WATCHDOG.disarm(self)

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Watching:
    def __init__(self, deadline: Deadline):
        self.deadline = deadline

    def __enter__(self) -> Deadline:
        self.previous = getattr(_current, "deadline", None)
        _current.deadline = self.deadline
        return self.deadline

    def __exit__(self, *exc: object) -> None:
        _current.deadline = self.previous


class _Watchdog:
    "One daemon thread for the process; it sleeps until the earliest deadline."

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, Deadline] = {}
        self._thread: threading.Thread | None = None

    def arm(self, deadline: Deadline, sock: socket.socket) -> None:
        with self._cond:
            deadline._sockets.append(sock)
            if deadline.expired or time.monotonic() >= deadline.at:
                self._expire(deadline)
                return
            self._armed[id(deadline)] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="layerslayer-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, deadline: Deadline) -> None:
        with self._cond:
            self._armed.pop(id(deadline), None)
            deadline._sockets.clear()

    def _expire(self, deadline: Deadline) -> None:
        deadline.expired = True
        self._armed.pop(id(deadline), None)
        for sock in deadline._sockets:
            try:
                # socket.socket's own shutdown, also for an SSLSocket: the read
                # blocked in another thread sees end-of-file and returns.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed
        deadline._sockets.clear()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for deadline in [d for d in self._armed.values() if d.at <= now]:
                    self._expire(deadline)
                earliest = min((d.at for d in self._armed.values()), default=None)
                self._cond.wait(None if earliest is None else max(earliest - now, 0.01))


_WATCHDOG = _Watchdog()


def _arm_current(connection: HTTPConnection) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.arm(connection.sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self):  # noqa: ANN201
        _arm_current(self)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self):  # noqa: ANN201
        _arm_current(self)
        return super().getresponse()


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    "requests' adapter with connections whose sockets a Deadline can watch."

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # noqa: ANN001, ANN201
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def mount(session) -> None:  # noqa: ANN001
    "Make every request of ``session`` watchable."
    adapter = WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def close_with(response, deadline: Deadline):  # noqa: ANN001, ANN201
    "Close ``deadline`` when ``response`` is closed (``with response:`` included)."
    original = response.close

    def close() -> None:
        try:
            original()
        finally:
            deadline.close()

    response.close = close
    return response
