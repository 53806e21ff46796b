"""A Docker-Hub-style token server for the token-auth registry flavour.

Flow (https://distribution.github.io/distribution/spec/auth/token/):
``GET /token?service=S&scope=repository:NAME:pull,push`` with optional Basic
credentials → ``{"token", "access_token", "expires_in", "issued_at"}``.

Tokens are JWTs signed ES256 by a key whose self-signed certificate is the
registry's ``rootcertbundle``. The certificate travels in the JWT header
``x5c``: distribution 2.8 (registry/auth/token/token.go) looks for the signing
key in ``x5c`` first (chain verified against rootcertbundle), then ``jwk``,
then ``kid`` (a libtrust fingerprint); ``x5c`` is the simplest to satisfy.
It also allows 60 s of leeway on ``exp``, which is why ``jwt_lifetime`` can be
set negative to mint tokens the registry already refuses.

Policy (mirrors Docker Hub public repositories):
  * anonymous → ``pull`` only, nothing on repositories in ``private_repos``,
    nothing on ``registry:catalog:*``;
  * valid Basic credentials → everything asked among pull/push/delete/*;
  * wrong credentials (or a non-Basic Authorization) → 401.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .net import BackgroundServer, QuietHandler

SERVICE = "harness-registry"
ISSUER = "harness-token-issuer"
USER_ACTIONS = frozenset({"pull", "push", "delete", "*"})
ANON_ACTIONS = frozenset({"pull"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt_claims(token: str) -> dict:
    """Claims of a JWT without verifying it (for test assertions)."""
    return json.loads(b64url_decode(token.split(".")[1]))


@dataclass
class Scope:
    type: str
    name: str
    actions: list[str]

    @classmethod
    def parse(cls, text: str) -> Scope:
        # "repository:team/app:pull,push" — the name never holds ':', but a
        # "registry:catalog:*" scope has the same shape, so split from both ends.
        typ, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        return cls(typ, name, [a for a in actions.split(",") if a])

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@dataclass
class TokenRequest:
    """One request seen by the token server."""

    method: str
    path: str
    query: dict[str, list[str]]
    scopes: list[str]               # raw scope strings as asked (one per scope= parameter, split on spaces)
    service: str | None
    user: str | None                # authenticated user, None for anonymous
    authorization: str | None       # raw Authorization header
    status: int
    granted: list[dict] = field(default_factory=list)  # the JWT "access" claim
    token: str | None = None
    time: float = field(default_factory=time.time)


class TokenServer(BackgroundServer):
    """Threaded token server on a free loopback port.

    Mutable knobs (call :meth:`reset` to restore them): ``expires_in``,
    ``jwt_lifetime``, ``private_repos``, ``send_token``, ``send_access_token``,
    ``send_expires_in``, ``fail_next``.
    """

    def __init__(self, workdir: Path, *, username: str, password: str,
                 service: str = SERVICE, issuer: str = ISSUER) -> None:
        super().__init__(_TokenHandler)
        self.username = username
        self.password = password
        self.service = service
        self.issuer = issuer
        self.realm = f"{self.url}/token"
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._self_signed_cert()
        self.cert_path = Path(workdir) / "token-root.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.reset()

    # -- knobs -----------------------------------------------------------------
    def reset(self) -> None:
        """Restore default policy and forget recorded requests."""
        with self._lock:
            self.requests.clear()
            self.expires_in: int = 60          # reported to the client
            self.jwt_lifetime: int | None = None  # JWT exp offset; None = expires_in (registry adds 60 s leeway)
            self.private_repos: set[str] = set()  # anonymous gets no access to these repositories
            self.send_token = True
            self.send_access_token = True
            self.send_expires_in = True
            self.fail_next: list[int] = []     # statuses to answer the next requests with, in order

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- minting ---------------------------------------------------------------
    def mint(self, scopes: list[str] | list[Scope], user: str | None = None,
             lifetime: int | None = None) -> str:
        """Sign a token granting ``scopes`` under the policy for ``user``.

        The harness uses this directly (no HTTP, nothing recorded) to get push
        tokens, so tests counting token requests only see the client's ones.
        """
        return self._mint(self.grant([s if isinstance(s, Scope) else Scope.parse(s) for s in scopes], user),
                          user, lifetime)

    def grant(self, scopes: list[Scope], user: str | None) -> list[dict]:
        access: list[dict] = []
        for sc in scopes:
            if sc.type == "repository":
                allowed = USER_ACTIONS if user else (
                    frozenset() if sc.name in self.private_repos else ANON_ACTIONS)
            elif sc.type == "registry" and sc.name == "catalog":
                allowed = USER_ACTIONS if user else frozenset()
            else:
                allowed = frozenset()
            actions = [a for a in sc.actions if a in allowed]
            if actions:
                access.append({"type": sc.type, "name": sc.name, "actions": actions})
        return access

    def _mint(self, access: list[dict], user: str | None, lifetime: int | None) -> str:
        now = int(time.time())
        if lifetime is None:
            lifetime = self.jwt_lifetime if self.jwt_lifetime is not None else self.expires_in
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        claims = {
            "iss": self.issuer, "sub": user or "", "aud": self.service,
            "exp": now + lifetime, "nbf": now - 5, "iat": now,
            "jti": secrets.token_hex(8), "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS ES256 signatures are raw r||s, 32 bytes each, not DER.
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _self_signed_cert(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = dt.datetime.now(dt.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    # -- request handling ----------------------------------------------------------
    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _pop_failure(self) -> int | None:
        with self._lock:
            return self.fail_next.pop(0) if self.fail_next else None

    def handle(self, h: _TokenHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if h.command == "POST":
            # OAuth2 form flow (grant_type=password / refresh_token): accept the
            # scope and service from the form as well.
            form = urllib.parse.parse_qs(h.read_request_body().decode(), keep_blank_values=True)
            for k, v in form.items():
                query.setdefault(k, []).extend(v)
        raw_scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        service = (query.get("service") or [None])[0]
        authz = h.headers.get("Authorization")
        req = TokenRequest(h.command, h.path, query, raw_scopes, service, None, authz, 0)

        def reply(status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            req.status = status
            self._record(req)
            h.send_bytes(status, json.dumps(body).encode(), headers)

        if url.path != "/token":
            return reply(404, {"details": "not found"})
        failure = self._pop_failure()
        if failure is not None:
            return reply(failure, {"details": "injected failure"},
                         {"Retry-After": "1"} if failure == 429 else None)
        if service is not None and service != self.service:
            return reply(400, {"details": f"invalid service {service!r}"})
        user: str | None = None
        if authz:
            scheme, _, value = authz.partition(" ")
            ok = False
            if scheme.lower() == "basic":
                try:
                    u, _, p = base64.b64decode(value.strip()).decode().partition(":")
                    ok = (u, p) == (self.username, self.password)
                    user = u
                except (ValueError, UnicodeDecodeError):
                    ok = False
            if not ok:
                return reply(401, {"details": "incorrect username or password"},
                             {"WWW-Authenticate": 'Basic realm="harness-token"'})
        req.user = user
        scopes = [Scope.parse(s) for s in raw_scopes]
        req.granted = self.grant(scopes, user)
        token = self._mint(req.granted, user, None)
        req.token = token
        body: dict = {"issued_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        if self.send_token:
            body["token"] = token
        if self.send_access_token:
            body["access_token"] = token
        if self.send_expires_in:
            body["expires_in"] = self.expires_in
        reply(200, body)

    # -- helpers for assertions ------------------------------------------------------
    def scopes_asked(self) -> list[str]:
        return [s for r in self.requests for s in r.scopes]


class _TokenHandler(QuietHandler):
    def do_GET(self) -> None:
        self.server.owner.handle(self)  # type: ignore[attr-defined]

    do_POST = do_GET
