"""Run the real CNCF distribution registry (``docker-registry`` 2.8) for tests.

Three flavours, all on a free 127.0.0.1 port with filesystem storage in a
temporary directory:

* ``anonymous`` — no auth;
* ``basic``     — htpasswd (bcrypt) Basic auth, user ``alice`` / ``s3cret-pa55``;
* ``token``     — Bearer token auth against the harness :class:`TokenServer`.

Every flavour exposes ``host``, ``url``, ``username``, ``password``,
``token_server`` (None unless token flavour) and :meth:`Registry.auth_headers`
giving the ``Authorization`` header the harness itself uses to push.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from .net import LOOPBACK, free_port
from .tokenserver import TokenServer

USERNAME = "alice"
PASSWORD = "s3cret-pa55"
REGISTRY_BIN = os.environ.get("HARNESS_REGISTRY_BIN", "docker-registry")
FLAVOURS = ("anonymous", "basic", "token")


class RegistryStartError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """Linux: SIGTERM the registry when pytest dies without teardown (SIGKILL,
    pytest-timeout's os._exit), so no orphan keeps a port and a tmp dir."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def bcrypt_htpasswd_line(username: str, password: str) -> str:
    """``user:$2y$...`` — distribution only accepts bcrypt htpasswd entries."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        out = subprocess.run([htpasswd, "-Bbn", username, password], check=True,
                             capture_output=True, text=True).stdout
        return out.strip()
    try:  # optional fallback when apache2-utils is missing
        import bcrypt  # type: ignore[import-not-found]
    except ImportError:
        raise RegistryStartError(
            "need `htpasswd` (apt install apache2-utils) or the `bcrypt` package") from None
    return f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


class Registry:
    """A running ``docker-registry serve`` process (use :func:`start_registry`)."""

    def __init__(self, workdir: Path, flavour: str = "anonymous", *,
                 catalog_max_entries: int = 1000) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown flavour {flavour!r}")
        self.flavour = flavour
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.catalog_max_entries = catalog_max_entries
        self.username: str | None = USERNAME if flavour != "anonymous" else None
        self.password: str | None = PASSWORD if flavour != "anonymous" else None
        self.token_server: TokenServer | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.host = ""
        self.url = ""
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.storage = self.workdir / "storage"
        self.remove_workdir_on_stop = False

    # -- lifecycle --------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> Registry:
        if self.flavour == "token" and self.token_server is None:
            self.token_server = TokenServer(self.workdir, username=USERNAME, password=PASSWORD).start()
        last_error = ""
        for _attempt in range(3):  # the free port may be stolen between pick and bind
            self.port = free_port()
            self.host = f"{LOOPBACK}:{self.port}"
            self.url = f"http://{self.host}"
            self.config_path.write_text(self._config())
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            except FileNotFoundError:
                raise RegistryStartError(
                    f"{REGISTRY_BIN} not found (apt install docker-registry)") from None
            finally:
                log.close()
            if self._wait_ready(timeout):
                return self
            last_error = self.log()[-2000:]
            self._kill()
            if "address already in use" not in last_error:
                break
        self.stop()
        raise RegistryStartError(f"docker-registry ({self.flavour}) did not start:\n{last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                r = requests.get(f"{self.url}/v2/", timeout=1)
                if r.status_code in (200, 401):
                    return True
            except requests.ConnectionError:
                pass
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        self._kill()
        if self.token_server is not None:
            self.token_server.stop()
        if self.remove_workdir_on_stop:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        """The registry's combined stdout/stderr (log level warn)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- config --------------------------------------------------------------------
    def _config(self) -> str:
        # JSON is valid YAML: no PyYAML needed and no quoting surprises.
        cfg: dict = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                # No background upload purging / read-only toggling during tests.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"{LOOPBACK}:{self.port}",
                "secret": "harness-not-secret",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "catalog": {"maxentries": self.catalog_max_entries},
            # Foreign / non-distributable layer URLs: 2.8 refuses them all unless
            # an allow list is configured.
            "validation": {"manifests": {"urls": {"allow": ["^https?://"]}}},
        }
        if self.flavour == "basic":
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(bcrypt_htpasswd_line(USERNAME, PASSWORD) + "\n")
            cfg["auth"] = {"htpasswd": {"realm": "harness-basic", "path": str(htpasswd)}}
        elif self.flavour == "token":
            assert self.token_server is not None
            ts = self.token_server
            cfg["auth"] = {"token": {
                "realm": ts.realm, "service": ts.service, "issuer": ts.issuer,
                "rootcertbundle": str(ts.cert_path),
            }}
        return json.dumps(cfg, indent=2)

    # -- auth for the harness itself ---------------------------------------------------
    def auth_headers(self, repository: str | None = None,
                     actions: str = "pull,push,delete") -> dict[str, str]:
        """Headers that authorise the harness (as alice) on ``repository``.

        Token flavour: a token is minted in-process (no HTTP request, so
        ``token_server.requests`` only records the client under test).
        ``repository=None`` asks for the catalog scope.
        """
        if self.flavour == "anonymous":
            return {}
        if self.flavour == "basic":
            return {"Authorization": basic_auth_value(USERNAME, PASSWORD)}
        assert self.token_server is not None
        scope = f"repository:{repository}:{actions}" if repository else "registry:catalog:*"
        return {"Authorization": f"Bearer {self.token_server.mint([scope], USERNAME)}"}

    def session(self, repository: str | None = None, actions: str = "pull,push,delete") -> requests.Session:
        s = requests.Session()
        s.headers.update(self.auth_headers(repository, actions))
        return s

    def __repr__(self) -> str:
        return f"<Registry {self.flavour} {self.url}>"


def basic_auth_value(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def start_registry(flavour: str = "anonymous", workdir: Path | None = None, **kw: object) -> Registry:
    """Start a registry; the caller must ``stop()`` it (or use ``with``)."""
    owned = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"harness-{flavour}-"))
    reg = Registry(workdir, flavour, **kw)  # type: ignore[arg-type]
    reg.remove_workdir_on_stop = owned
    return reg.start()
