"""Registry authentication: credentials, challenges, bearer tokens.

Everything is challenge driven, the way docker does it: a request that gets
``401`` with ``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` sends us
to the realm for a token (with Basic credentials when we have some, else
anonymously, which is how public Docker Hub pulls work); ``Basic realm=…``
means send Basic credentials. Tokens are cached per (realm, service, scope)
until they expire. Secrets never appear in ``repr``, messages or logs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .display import printable
from .errors import AuthError
from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES

log = logging.getLogger("layerslayer")

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
# Refresh a token this many seconds before the server says it expires.
TOKEN_EXPIRY_MARGIN = 10
DEFAULT_TOKEN_LIFETIME = 60


@dataclass(repr=False)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # OAuth2 refresh token from `docker login`
    source: str = ""  # where they came from, for messages ("--username", "config.json", …)

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(username={self.username!r}, source={self.source!r})"

    @property
    def basic_header(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _config_key_host(key: str) -> str:
    "'https://index.docker.io/v1/' -> 'index.docker.io'; 'host:5000' -> 'host:5000'."
    key = re.sub(r"^[a-z]+://", "", key.strip())
    return key.split("/", 1)[0]


def _hosts_for(registry: str) -> set[str]:
    if registry == DOCKER_HUB:
        return set(DOCKER_HUB_ALIASES)
    return {registry}


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _credential_helper(helper: str, server: str, problems: list[str] | None = None) -> Credentials | None:
    "Ask ``docker-credential-HELPER get``; why it gave nothing goes into ``problems``."
    program = f"docker-credential-{helper}"
    problems = problems if problems is not None else []
    try:
        completed = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=30,
        )
    except FileNotFoundError:
        problems.append(f"docker's credential helper {printable(program)} is not on PATH")
        return None
    except OSError as error:
        problems.append(f"docker's credential helper {printable(program)} cannot run: {error.strerror or error}")
        return None
    except subprocess.TimeoutExpired:
        problems.append(f"docker's credential helper {printable(program)} did not answer within 30 s")
        return None
    if completed.returncode != 0:
        said = completed.stderr.decode(errors="replace").strip() or completed.stdout.decode(errors="replace").strip()
        if "credentials not found" not in said.lower():  # the helper's normal "nothing stored"
            problems.append(f"docker's credential helper {printable(program)} failed (exit {completed.returncode}"
                            f"{': ' + printable(said.splitlines()[0][:200]) if said else ''})")
        return None
    try:
        data = json.loads(completed.stdout)
        username, secret = data.get("Username"), data.get("Secret")
    except (ValueError, AttributeError):
        problems.append(f"docker's credential helper {printable(program)} answered something that is not its JSON")
        return None
    if not secret or not isinstance(secret, str):
        return None
    source = program
    if username == "<token>":
        return Credentials(identity_token=secret, source=source)
    return Credentials(username=username, password=secret, source=source)


def credentials_from_docker_config(registry: str, path: Path | None = None,
                                   problems: list[str] | None = None) -> Credentials | None:
    """Look the registry up in docker's config.json: credHelpers, auths, credsStore.

    Why nothing was found, when that is not simply "no entry" (a file that
    cannot be read or parsed, a helper missing or failing), is appended to
    ``problems``, naming the file or the helper."""
    path = path or docker_config_path()
    problems = problems if problems is not None else []
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as error:
        problems.append(f"docker's config {printable(str(path))} cannot be read: {error.strerror or error}")
        return None
    except (ValueError, UnicodeDecodeError) as error:
        problems.append(f"docker's config {printable(str(path))} is not valid JSON ({printable(str(error))})")
        return None
    if not isinstance(config, dict):
        problems.append(f"docker's config {printable(str(path))} is not a JSON object")
        return None
    wanted = _hosts_for(registry)

    for key, helper in (config.get("credHelpers") or {}).items():
        if _config_key_host(key) in wanted:
            found = _credential_helper(helper, key, problems)
            if found:
                return found

    for key, entry in (config.get("auths") or {}).items():
        if _config_key_host(key) not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"], source=str(path))
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"]).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            username, _, password = decoded.partition(":")
            return Credentials(username=username, password=password, source=str(path))
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"], source=str(path))

    store = config.get("credsStore")
    if store:
        server = DOCKER_HUB_CONFIG_KEY if "docker.io" in wanted else registry
        return _credential_helper(store, server, problems)
    return None


def find_credentials(
    registry: str,
    username: str | None = None,
    password: str | None = None,
    problems: list[str] | None = None,
) -> Credentials | None:
    """Flags first, then LAYERSLAYER_USERNAME/PASSWORD, then docker's config
    (what went wrong there is appended to ``problems``, and logged for --debug)."""
    if username is not None:
        return Credentials(username, password or "", source="--username")
    env_user = os.environ.get("LAYERSLAYER_USERNAME")
    if env_user:
        return Credentials(env_user, os.environ.get("LAYERSLAYER_PASSWORD", ""), source="environment")
    problems = problems if problems is not None else []
    found = credentials_from_docker_config(registry, problems=problems)
    for problem in problems:
        log.debug("credentials for %s: %s", registry, problem)
    return found


_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    "'Bearer realm=\"x\",service=\"y\"' -> ('bearer', {'realm': 'x', 'service': 'y'})."
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def write_secret_file(path: Path, text: str) -> None:
    "Write a token atomically, readable by its owner only (0600) from the first byte."
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class Authenticator:
    """Turns 401 challenges into Authorization headers, caching tokens.

    ``fetch`` is the HTTP GET/POST function of the owning registry client
    (so token requests share its session, timeouts and retries).
    """

    registry: str
    credentials: Credentials | None = None
    token_file: Path | None = None
    fetch: Callable[..., object] | None = None
    # May our credentials go to this URL (a token realm)? The registry client's rule.
    may_send_credentials: Callable[[str], bool] = lambda url: True
    problem: str | None = None  # why no credentials were found (an unreadable config.json, …)
    _tokens: dict = field(default_factory=dict)
    challenge: tuple[str, dict] | None = None  # the registry's last WWW-Authenticate, parsed
    _file_token: str | None = None
    _file_token_rejected: bool = False
    withheld: str | None = None  # set when credentials were kept from a realm

    def __post_init__(self) -> None:
        if self.token_file is not None:
            try:
                text = Path(self.token_file).read_text().strip()
            except OSError:
                text = ""
            self._file_token = text or None

    def __repr__(self) -> str:
        return f"Authenticator(registry={self.registry!r}, credentials={self.credentials!r})"

    def header_for(self, scope: str | None) -> str | None:
        "The Authorization header to send before any challenge, if we know one."
        if self._file_token and not self._file_token_rejected:
            return f"Bearer {self._file_token}"
        if self.challenge is None:
            return None
        scheme, params = self.challenge
        if scheme == "basic":
            return self.credentials.basic_header if self.credentials else None
        if scheme == "bearer":
            key = (params.get("realm"), params.get("service"), scope)
            token = self._tokens.get(key)
            if token and token.expires_at > time.time():
                return f"Bearer {token.value}"
            if scope is not None:
                # We know the realm already: get the token without another 401.
                return f"Bearer {self._fetch_token(params, scope)}"
        return None

    def handle_challenge(self, header: str | None, scope: str | None, sent: str | None) -> str:
        "A request got 401: work out the header for the retry, or raise AuthError."
        if not header:
            raise AuthError(self.refused_message("the registry sent 401 without a challenge"))
        scheme, params = parse_challenge(header)
        if sent and sent.startswith("Bearer ") and self._file_token and sent == f"Bearer {self._file_token}":
            self._file_token_rejected = True
        self.challenge = (scheme, params)
        if scheme == "basic":
            basic = self.credentials.basic_header if self.credentials else None
            if basic is None:
                raise AuthError(self.refused_message("the registry requires a login"))
            if sent == basic:
                raise AuthError(self.refused_message("the registry refused the credentials"))
            return basic
        if scheme == "bearer":
            if not params.get("realm"):
                raise AuthError(self.refused_message("the Bearer challenge has no realm"))
            wanted_scope = params.get("scope") or scope
            key = (params.get("realm"), params.get("service"), wanted_scope)
            cached = self._tokens.get(key)
            if cached and sent == f"Bearer {cached.value}":
                # The cached token was refused (expired early, revoked): refresh once.
                del self._tokens[key]
                token = self._fetch_token(params, wanted_scope)
                if f"Bearer {token}" == sent:
                    raise AuthError(self.refused_message("the registry refused the token"))
                return f"Bearer {token}"
            if cached and cached.expires_at > time.time():
                return f"Bearer {cached.value}"
            return f"Bearer {self._fetch_token(params, wanted_scope)}"
        raise AuthError(f"{self.registry} asks for unsupported authentication scheme {scheme!r}")

    def refused_message(self, why: str) -> str:
        "The message for a refused request: ``why``, and which credentials were held back, if any."
        if self.withheld:
            why = f"{why}; {self.withheld}"
        if self.credentials:
            return f"authentication failed for {self.registry}: {why} (credentials from {self.credentials.source})"
        if self.problem:
            why = f"{why}; {self.problem}"
        return f"authentication required for {self.registry}: {why}; use --username/--password or `docker login {self.registry}`"

    def _fetch_token(self, params: dict, scope: str | None) -> str:
        assert self.fetch is not None
        realm = params["realm"]
        query = {}
        if params.get("service"):
            query["service"] = params["service"]
        if scope:
            query["scope"] = scope
        creds = self.credentials
        if creds and not self.may_send_credentials(realm):
            # A realm on another host over plain HTTP would read them in clear:
            # ask for an anonymous token instead, and say why once.
            if not self.withheld:
                self.withheld = (f"your credentials were not sent to the token service at {printable(_origin_of(realm))} "
                                 f"(plain HTTP to a host that is not loopback)")
                log.warning("%s: %s", self.registry, self.withheld)
            creds = None
        if creds and creds.identity_token:
            data = dict(query, grant_type="refresh_token", refresh_token=creds.identity_token, client_id="layerslayer")
            response = self.fetch("POST", realm, data=data, auth_header=None)
        else:
            header = creds.basic_header if creds else None
            response = self.fetch("GET", realm, params=query, auth_header=header)
        if response.status_code in (401, 403):
            raise AuthError(self.refused_message(f"the token service at {_host_of(realm)} answered {response.status_code}"))
        if response.status_code != 200:
            raise AuthError(f"token service at {_host_of(realm)} answered HTTP {response.status_code}")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError, RecursionError):
            token = None
        if not token or not isinstance(token, str):
            raise AuthError(f"token service at {_host_of(realm)} returned no token")
        lifetime = body.get("expires_in") or DEFAULT_TOKEN_LIFETIME
        try:
            lifetime = max(float(lifetime) - TOKEN_EXPIRY_MARGIN, 1.0)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        self._tokens[(realm, params.get("service"), scope)] = _Token(token, time.time() + lifetime)
        if self._file_token_rejected and self.token_file is not None:
            # The original tool kept its token in token.txt: refresh it in place.
            write_secret_file(Path(self.token_file), token)
            self._file_token = token
            self._file_token_rejected = False
        return token


def _host_of(url: str) -> str:
    return re.sub(r"^[a-z]+://", "", url).split("/", 1)[0]


def _origin_of(url: str) -> str:
    scheme = url.partition("://")[0] if "://" in url else "https"
    return f"{scheme}://{_host_of(url)}"
