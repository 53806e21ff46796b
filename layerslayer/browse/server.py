"""``layerslayer browse``: the index in Datasette, read-only, on loopback.

The database is opened by Datasette as a *mutable* database, which means
``file:…?mode=ro`` read-only connections, rather than ``immutable=1``: an
``index`` run may be writing to the same file (WAL mode), and an immutable
connection promises SQLite the file never changes, so it would skip the WAL
and its locks, serve stale pages from cache, and could even read a torn
state. Read-only connections see every layer as soon as its transaction
commits, and cannot write (the plugin also sets ``PRAGMA query_only``).

Datasette 0.65 has no write endpoints for such a database; the plugin
(:mod:`layerslayer.browse`) defines no writable canned query.
"""

from __future__ import annotations

import errno
import inspect
import ipaddress
import os
import socket
import sqlite3
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from .. import browse as plugin
from ..display import printable
from ..errors import LayerslayerError, UsageError
from ..store import NotAnIndex, open_db
from .databases import file_is_index
from .view import set_options

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001

#: Datasette settings for browsing an index on one's own machine.
SETTINGS = {
    # Recon queries over millions of rows (largest files, broad patterns)
    # take longer than Datasette's 1 s default.
    "sql_time_limit_ms": 5_000,
    # Suggesting facets counts every row of a view first: minutes on a big
    # index. The metadata names the useful facets instead.
    "suggest_facets": False,
    # The index may be growing while we look: never serve a cached page.
    "default_cache_ttl": 0,
    # Whole-database download is for immutable databases only anyway.
    "allow_download": False,
}


class ServeError(LayerslayerError):
    "The server could not start (address in use, bad host)."


def check_index(path) -> Path:
    """The index at ``path``, checked without writing a byte: it exists, is
    SQLite and is a layerslayer index. Raises :class:`NotAnIndex` (exit 2)."""
    path = Path(path)
    name = os.fspath(path)
    if path.is_dir():
        raise NotAnIndex(f"{name} is a directory, not a layerslayer index")
    if not path.exists():
        raise NotAnIndex(f"No layerslayer index at {name} (create one with `layerslayer index`)")
    if any(c in name for c in "?#%"):
        # Datasette puts the path into a file: URI unquoted.
        raise UsageError(f"{name}: Datasette cannot open a path containing ?, # or %; rename or symlink it")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise NotAnIndex(f"Cannot read {name}: {e.strerror or e}") from None
    if head != b"SQLite format 3\x00":
        raise NotAnIndex(f"{name} is not a layerslayer index (not an SQLite database)")
    if not file_is_index(path):
        try:
            conn = sqlite3.connect("file:" + urllib.parse.quote(name) + "?mode=ro", uri=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            conn.close()
        except sqlite3.Error as e:
            if not _needs_immutable(path):
                raise NotAnIndex(f"{name} is not a usable layerslayer index: {e}") from None
        else:
            raise NotAnIndex(f"{name} is an SQLite database but not a layerslayer index")
    _needs_immutable(path)  # the schema is this version's (store.SchemaMismatch otherwise)
    return path


def _needs_immutable(path: Path) -> bool:
    """True when SQLite can open the index only as immutable (a WAL index on a
    read-only file system); raises NotAnIndex / SchemaMismatch like the other
    reading commands (``store.open_db(read_only=True)``)."""
    db = open_db(path, read_only=True)
    try:
        return db.immutable
    finally:
        db.close()


def ensure_plugin_registered() -> None:
    """Datasette loads the plugin through the ``datasette`` entry point; when
    layerslayer runs from a source tree without being installed, register it."""
    from datasette.plugins import pm

    if not pm.is_registered(plugin):
        pm.register(plugin, name="layerslayer")


def make_datasette(path, settings: dict | None = None, options=None):
    """A Datasette serving the index at ``path`` read-only, with the plugin;
    ``options`` (ClientOptions) are used when a page fetches a file's contents."""
    from datasette.app import Datasette

    path = check_index(path)
    ensure_plugin_registered()
    # An index on a read-only file system cannot be opened mode=ro when it is
    # in WAL mode (SQLite must create its -shm file): Datasette then serves it
    # immutable, which nothing can change there anyway.
    where = "immutables" if _needs_immutable(path) else "files"
    datasette = Datasette(
        **{where: [str(path.resolve())]},
        settings={**SETTINGS, **(settings or {})},
    )
    set_options(datasette, options)
    return datasette


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    "A listening socket on host:port (port 0: any free port). ServeError if it cannot."
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"Cannot listen on {host}: {e.strerror or e}") from None
    family, _type, _proto, _name, address = infos[0]
    try:
        sock = socket.create_server(address, family=family, backlog=128)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = " (choose another --port, or --port 0 for any free one)" if e.errno == errno.EADDRINUSE else ""
        raise ServeError(f"Cannot listen on {host}:{port}: {reason}{hint}") from None
    sock.set_inheritable(False)
    return sock


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The ``Host`` header values the server answers to: the names it is bound
    to, with its port (``127.0.0.1:8001``, ``localhost:8001``, ``[::1]:8001``
    on loopback; ``--host`` as given). None when bound to every interface
    (``0.0.0.0``, ``::``): then IP literals and this machine's names are
    accepted (see :func:`host_allowed`).

    A browser that a web page's DNS answer steers to us (DNS rebinding) sends
    that page's host name, which is none of these: it gets 400 and no data."""
    bare = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        return None
    names = {f"[{bare}]" if address is not None and address.version == 6 else bare}
    if _is_loopback(host):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    suffix = "" if port == 80 else f":{port}"
    return {name + suffix for name in names}


def host_allowed(header: str, allowed: set[str] | None, port: int) -> bool:
    "Is a request's ``Host`` header one of ``allowed`` (see :func:`allowed_hosts`)?"
    header = header.strip().lower()
    if allowed is not None:
        return header in allowed
    # Bound to every interface: an IP literal cannot be rebound; names must be ours.
    name, sep, given = header.rpartition(":") if not header.endswith("]") else (header, "", "")
    if not sep:
        name, given = header, "80"
    if given != str(port):
        return False
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return name in {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}


def host_guard(app, allowed: set[str] | None, port: int):
    "An ASGI app that answers 400 to HTTP requests whose Host header is not ours, else runs ``app``."

    async def guarded(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            header = headers.get(b"host", b"").decode("latin-1")
            if not host_allowed(header, allowed, port):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = (
                    "Bad Request: this server answers only to "
                    + (", ".join(sorted(allowed)) if allowed else "its own names and IP addresses")
                    + " (Host header checked against DNS rebinding)\n"
                ).encode()
                await send({"type": "http.response.start", "status": 400, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                ]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def url_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def browse(path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = False,
           echo: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
           options=None) -> None:
    """Serve the index at ``path`` with Datasette until interrupted (Ctrl-C).

    Prints the URL with ``echo`` once the socket listens, so a browser (or
    ``open_browser``) can connect straight away. Returns normally on Ctrl-C
    or SIGTERM.
    """
    import uvicorn

    echo = echo or (lambda text: print(text, flush=True))
    warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    datasette = make_datasette(path, options=options)
    sock = listen(host, port)
    url = url_for(sock)
    if not _is_loopback(host):
        warn(f"Warning: listening on {host}: anyone who can reach this machine can read the index.")
    echo(f"Serving {printable(path)} read-only at {url}  (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    options = {"log_level": "warning", "access_log": False, "lifespan": "on"}
    if "timeout_graceful_shutdown" in inspect.signature(uvicorn.Config).parameters:
        # A browser's keep-alive connections must not hold Ctrl-C up.
        options["timeout_graceful_shutdown"] = 3
    bound_port = sock.getsockname()[1]
    app = host_guard(datasette.app(), allowed_hosts(host, bound_port), bound_port)
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on SIGINT, then raises it again.
        pass
    finally:
        sock.close()
    echo("Stopped.")
