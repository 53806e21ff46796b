"""A client for the Registry HTTP API v2 / OCI distribution API.

One ``requests.Session`` per registry; auth is challenge driven (see auth.py);
transient failures (429, 5xx, dropped connections, read timeouts) are retried
with exponential backoff within a bounded total time; blob streams resume
with ``Range`` after a broken connection. Redirects are followed by hand so
our Authorization header never travels to another origin (blob CDNs, a
downgrade to plain HTTP). Every request has an overall deadline, watched on
its socket (deadline.py); blobs are held to their declared size.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import re
import ssl
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlparse

import requests

from . import __version__
from .auth import Authenticator, Credentials
from .deadline import Deadline, close_with, mount
from .display import printable
from .errors import AuthError, NetworkError, NotFound, RangeNotSupported, RegistryError
from .oci import DIGEST_ALGORITHMS, MANIFEST_ACCEPT, digest_algorithm
from .verify import Digester, sha256_digest

log = logging.getLogger("layerslayer")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
RETRY_STATUSES = {429, 500, 502, 503, 504}
# A response body that broke off: cut short, reset, or silent past the read timeout.
_BROKEN_BODY = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)
MAX_REDIRECTS = 5
# Every request (retries, redirects and body included) ends within this many
# seconds; a blob download gets one more second per BLOB_MIN_RATE bytes.
DEFAULT_DEADLINE = 300.0
BLOB_MIN_RATE = 100_000
# A tag or catalog listing is read page by page: a page holds at most
# MAX_PAGE_BYTES, a listing at most MAX_PAGES pages.
MAX_PAGE_BYTES = 4 * 1024 * 1024
MAX_PAGES = 10_000
USER_AGENT = f"layerslayer/{__version__}"
# Ranged reads (iter_blob_ranges): the window grows with the offset (1/8 of
# what was read, between 1 MiB and 16 MiB), so stopping early wastes at most
# about an eighth of what was needed plus 1 MiB, and a full read of a 200 MB
# blob takes ~40 requests. One streaming GET would be cheaper in requests, but
# the registry then pushes megabytes into socket buffers we never read.
MIN_WINDOW = 1 << 20
MAX_WINDOW = 16 << 20
WINDOW_DIVISOR = 8


@dataclass
class Manifest:
    body: bytes
    media_type: str
    digest: str

    @property
    def json(self) -> dict:
        data = load_json(self.body, f"manifest {self.digest}")
        if not isinstance(data, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return data


def load_json(data: bytes | str, what: str):
    "JSON from the network: RegistryError (one line) when it is not JSON or nests too deep."
    try:
        return json.loads(data)
    except RecursionError:
        # Python's parser recurses per level: "[[[[…" a few MB long must not become a traceback.
        raise RegistryError(f"{what} is JSON nested too deeply to be read")
    except ValueError:
        raise RegistryError(f"{what} is not valid JSON")


def is_loopback(host: str) -> bool:
    "localhost, 127.0.0.0/8 and ::1: spoken to over plain HTTP when HTTPS fails."
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool = False,
        insecure: bool = False,
        timeout: float | tuple[float, float] = (10, 60),
        retries: int = 4,
        max_retry_seconds: float = 120,
        deadline: float = DEFAULT_DEADLINE,
        max_pages: int = MAX_PAGES,
        token_file=None,
        session: requests.Session | None = None,
        credentials_problem: str | None = None,
        registry_api: bool = True,
    ):
        self.registry = registry
        self.timeout = timeout if isinstance(timeout, tuple) else (min(timeout, 10), timeout)
        self.retries = max(1, retries)
        self.max_retry_seconds = max_retry_seconds
        self.deadline = deadline
        self.max_pages = max_pages
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        mount(self.session)
        # Given with every request: requests lets REQUESTS_CA_BUNDLE and
        # CURL_CA_BUNDLE override a session's verify=False, not a request's.
        self.verify = not insecure
        if insecure:
            # --insecure was asked for: urllib3's warning on every request says nothing new.
            from urllib3.exceptions import InsecureRequestWarning

            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        self.bytes_downloaded = 0
        self.pacer = None  # a pacing.Pacer shares 429 / RateLimit pauses with other clients
        self._scheme = "http" if plain_http else "https"
        # Loopback registries fall back to HTTP when HTTPS fails, as docker does.
        self._may_fall_back = not plain_http and is_loopback(registry)
        self._told: set[str] = set()  # warnings given once per client
        # Known for a client of another API on the same transport (the Hub's web API):
        # never probed with GET /v2/, so its 404s are its own.
        self._is_registry: bool | None = None if registry_api else True
        self.auth = Authenticator(registry, credentials, token_file, fetch=self._fetch_for_auth,
                                  may_send_credentials=self.may_send_credentials, problem=credentials_problem)

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    @property
    def base_url(self) -> str:
        return f"{self._scheme}://{self.registry}"

    # -- where credentials may go --------------------------------------

    def is_origin(self, url: str) -> bool:
        "The registry's own origin: the same scheme, host and port as the API base."
        parts = urlparse(url)
        return (parts.scheme.lower(), parts.netloc.lower()) == (self._scheme, self.registry.lower())

    def may_send_credentials(self, url: str) -> bool:
        """Credentials go to the registry's own origin, and to a token realm
        it named only over HTTPS or on a loopback host (judged by its name:
        ``localhost``, ``*.localhost``, ``127.0.0.0/8``, ``::1``, never by
        what a name resolves to)."""
        if self.is_origin(url):
            return True
        parts = urlparse(url)
        return parts.scheme.lower() == "https" or is_loopback(parts.netloc)

    def tell_once(self, key: str, message: str) -> None:
        "A warning the user sees once per client."
        if key not in self._told:
            self._told.add(key)
            log.warning("%s", message)

    # -- transport -----------------------------------------------------

    def _fetch_for_auth(self, method: str, url: str, auth_header: str | None = None, **kwargs):
        headers = {"Authorization": auth_header} if auth_header else {}
        return self._send(method, url, headers=headers, **kwargs)

    def _deadline(self, extra_bytes: int | None = None) -> Deadline:
        "The deadline of one request; a blob's grows with its size."
        return Deadline(self.deadline + (extra_bytes or 0) / BLOB_MIN_RATE)

    def _past_deadline(self, deadline: Deadline, host: str, what: str = "the request") -> NetworkError:
        return NetworkError(f"{host} did not finish {what} within the {deadline.seconds:g} s deadline (ClientOptions.deadline)")

    def _send(self, method: str, url: str, *, headers=None, stream=False, deadline: Deadline | None = None,
              **kwargs) -> requests.Response:
        """One request with retries for transient failures; no auth handling.
        Without a ``deadline``, one is made that covers this call only
        (enough for a request whose body is read here, ``stream=False``)."""
        own = deadline is None
        deadline = deadline or self._deadline()
        try:
            return self._send_within(method, url, headers, stream, deadline, kwargs)
        finally:
            if own:
                deadline.close()

    def _send_within(self, method, url, headers, stream, deadline, kwargs) -> requests.Response:
        retry_until = time.monotonic() + self.max_retry_seconds
        host = urlparse(url).netloc
        attempt = 0
        while True:
            attempt += 1
            if self.pacer is not None:
                self.pacer.wait(host)
            try:
                with deadline.watching():
                    response = self.session.request(
                        method, url, headers=headers, stream=stream, timeout=self.timeout,
                        allow_redirects=False, verify=self.verify, **kwargs,
                    )
            except requests.exceptions.SSLError as error:
                if deadline.expired:
                    raise self._past_deadline(deadline, host)
                failure = tls_failure(error)
                certificate = isinstance(failure, ssl.SSLCertVerificationError)
                if self._may_fall_back and url.startswith("https://") and not certificate:
                    url = self._fall_back(url, host, tls_reason(error, failure))
                    attempt -= 1
                    continue
                if certificate:
                    raise NetworkError(f"TLS certificate of {host} not trusted: {tls_reason(error, failure)} "
                                       f"(ClientOptions.insecure skips verification)")
                raise NetworkError(f"TLS error talking to {host}: {tls_reason(error, failure)} "
                                   f"(use ClientOptions.plain_http for an HTTP registry, ClientOptions.insecure to skip verification)")
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
                if deadline.expired:
                    raise self._past_deadline(deadline, host)
                if self._may_fall_back and url.startswith("https://"):
                    url = self._fall_back(url, host, short_reason(error))
                    attempt -= 1
                    continue
                if attempt >= self.retries or time.monotonic() >= retry_until:
                    raise NetworkError(f"cannot reach {host}: {short_reason(error)} (after {attempt} attempts)")
                self._sleep(attempt, None, retry_until)
                continue
            except requests.exceptions.RequestException as error:
                if deadline.expired:
                    raise self._past_deadline(deadline, host)
                raise NetworkError(f"request to {host} failed: {short_reason(error)}")
            if url.startswith("https://"):
                self._may_fall_back = False
            if self.pacer is not None:
                self.pacer.observe(host, response.status_code, response.headers)
            if response.status_code in RETRY_STATUSES and attempt < self.retries and time.monotonic() < retry_until:
                retry_after = response.headers.get("Retry-After")
                response.close()
                log.debug("%s %s -> %s; retrying", method, _path(url), response.status_code)
                self._sleep(attempt, retry_after, retry_until)
                continue
            return response

    def _fall_back(self, url: str, host: str, reason: str) -> str:
        "HTTPS to a loopback registry failed (not on its certificate): plain HTTP from now on, said once."
        self.tell_once("plain-http", f"{host} does not answer HTTPS ({reason}); using plain HTTP, "
                                     f"as for any loopback registry (ClientOptions.plain_http says so up front)")
        self._scheme = "http"
        self._may_fall_back = False
        return "http://" + url[len("https://"):]

    def _sleep(self, attempt: int, retry_after: str | None, deadline: float) -> None:
        delay = min(0.25 * 2 ** (attempt - 1), 8.0) * (1 + random.random() / 4)
        if retry_after:
            try:
                delay = max(float(retry_after), 0.0)
            except ValueError:
                pass  # an HTTP date: keep our own backoff
        delay = min(delay, max(deadline - time.monotonic(), 0))
        time.sleep(delay)

    def request(self, method: str, path: str, *, scope: str | None = None, headers=None, stream=False,
                deadline: Deadline | None = None, **kwargs) -> requests.Response:
        """A request to this registry: auth challenges answered, redirects followed safely.

        Our Authorization goes only to the registry's own origin (scheme, host
        and port): a redirect elsewhere (a blob CDN, or the same host over
        plain HTTP) is followed without it."""
        url = path if "://" in path else self.base_url + path
        headers = dict(headers or {})
        auth_header = self.auth.header_for(scope)
        auth_attempts = 0
        redirects = 0
        while True:
            at_origin = self.is_origin(url)
            sent_auth = auth_header if at_origin else None
            send_headers = dict(headers)
            if sent_auth:
                send_headers["Authorization"] = sent_auth
            fell_back = self._scheme
            response = self._send(method, url, headers=send_headers, stream=stream, deadline=deadline, **kwargs)
            if at_origin and fell_back != self._scheme:
                url = "http://" + url[len("https://"):]  # the loopback fall-back happened in _send
            if response.status_code == 401 and at_origin and auth_attempts < 2:
                auth_attempts += 1
                challenge = response.headers.get("WWW-Authenticate")
                response.close()
                auth_header = self.auth.handle_challenge(challenge, scope, sent_auth)
                continue
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise RegistryError(f"too many redirects from {self.registry}")
                target = urljoin(url, response.headers["Location"])
                response.close()
                if auth_header and url.startswith("https://") and target.startswith("http://"):
                    self.tell_once(f"downgrade {urlparse(target).netloc}",
                                   f"{self.registry} redirected to plain HTTP ({_origin(target)}); "
                                   f"followed without your credentials")
                url = target
                if response.status_code == 303:
                    method = "GET"
                continue
            return response

    # -- API ------------------------------------------------------------

    @staticmethod
    def scope_for(repository: str) -> str:
        return f"repository:{repository}:pull"

    def _raise_for_status(self, response: requests.Response, what: str, not_found: str | None = None) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 404:
            self.check_is_registry()
            raise NotFound(not_found or f"{what} not found on {self.registry}")
        if status == 401:
            raise AuthError(self.auth.refused_message("the registry refused access"))
        if status == 403:
            raise AuthError(f"access to {what} on {self.registry} is denied (HTTP 403)")
        if status == 429:
            raise NetworkError(f"{self.registry} is rate limiting us (HTTP 429) and kept doing so after retries")
        if status >= 500:
            raise NetworkError(f"{self.registry} failed with HTTP {status} for {what} (after retries)")
        self.check_is_registry()
        raise RegistryError(f"{self.registry} answered HTTP {status} for {what}{_error_detail(response)}")

    def check_is_registry(self) -> None:
        """Raise RegistryError "not a registry" when ``GET /v2/`` does not answer
        as the distribution API does (200 or a 401 challenge, the API version
        header, or a JSON body): asked once, after an answer that made us wonder."""
        if self._is_registry is None:
            response = self.request("GET", "/v2/") if self.auth.challenge is None else None
            if response is None:
                self._is_registry = True  # it sent an auth challenge: registries do
            else:
                with response:
                    version = response.headers.get("Docker-Distribution-API-Version", "")
                    json_body = response.headers.get("Content-Type", "").split(";")[0].strip() == "application/json"
                    self._is_registry = (
                        version.startswith("registry/2")
                        or (response.status_code == 401 and "WWW-Authenticate" in response.headers)
                        or (response.status_code == 200 and json_body)
                    )
                    self._not_registry_status = response.status_code
        if not self._is_registry:
            raise RegistryError(f"{self.registry} is not a registry: GET /v2/ answered HTTP "
                                f"{self._not_registry_status} without the registry API's signs")

    def _read_capped(self, response: requests.Response, limit: int, what: str) -> bytes:
        "A whole body of at most ``limit`` bytes (the declared length checked first)."
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RegistryError(f"{what} is {int(declared)} bytes, over the {limit // (1024 * 1024)} MiB limit")
        body = bytearray()
        for chunk in response.iter_content(65536):
            body += chunk
            if len(body) > limit:
                raise RegistryError(f"{what} is over the {limit // (1024 * 1024)} MiB limit")
        self.bytes_downloaded += len(body)
        return bytes(body)

    def _get_capped(self, url: str, what: str, limit: int, *, scope: str | None, not_found: str,
                    headers=None, params=None) -> tuple[requests.Response, bytes]:
        """GET a small document whole (at most ``limit`` bytes) within one
        deadline; a body cut short or stalled is asked for again, as for a
        dropped connection."""
        retry_until = time.monotonic() + self.max_retry_seconds
        attempt = 0
        with self._deadline() as deadline:
            while True:
                attempt += 1
                response = self.request("GET", url, scope=scope, headers=headers, params=params, stream=True, deadline=deadline)
                with response:
                    self._raise_for_status(response, what, not_found=not_found)
                    try:
                        body = self._read_capped(response, limit, what)
                    except _BROKEN_BODY as error:
                        if deadline.expired:
                            raise self._past_deadline(deadline, self.registry, f"sending {what}")
                        if attempt < self.retries and time.monotonic() < retry_until:
                            log.debug("%s broke (%s); retrying", what, type(error).__name__)
                            self._sleep(attempt, None, retry_until)
                            continue
                        raise NetworkError(f"reading {what} from {self.registry} failed: {short_reason(error)} (after {attempt} attempts)")
                    except requests.exceptions.RequestException as error:
                        raise NetworkError(f"reading {what} from {self.registry} failed: {short_reason(error)}")
                    if deadline.expired:  # a body without a length ends where the deadline cut it
                        raise self._past_deadline(deadline, self.registry, f"sending {what}")
                return response, body

    def get_manifest(self, repository: str, reference: str, *, display: str | None = None) -> Manifest:
        "Fetch a manifest or index; verified against its digest when asked by digest."
        response, body = self._get_capped(
            f"/v2/{repository}/manifests/{reference}", f"manifest {reference}", MAX_MANIFEST_BYTES,
            scope=self.scope_for(repository), headers={"Accept": MANIFEST_ACCEPT},
            not_found=f"image not found: {display or f'{self.registry}/{repository}:{reference}'}",
        )
        if response.headers.get("Content-Type", "").startswith("text/html"):
            self.check_is_registry()
        if reference.startswith("sha") and ":" in reference:
            digester = Digester(reference)
            digester.update(body)
            digester.check(f"manifest {reference} from {self.registry}")
            digest = reference
        else:
            digest = sha256_digest(body)
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            data = json.loads(body)
            declared_type, schema_version = data.get("mediaType"), data.get("schemaVersion")
        except (ValueError, AttributeError, RecursionError):
            declared_type = schema_version = None  # Manifest.json says what is wrong when it is read
        if isinstance(declared_type, str) and declared_type:
            media_type = declared_type
        by_registry = response.headers.get("Docker-Content-Digest", "").strip()
        by_tag = not (reference.startswith("sha") and ":" in reference)
        if by_tag and digest_algorithm(by_registry) in DIGEST_ALGORITHMS and schema_version != 1:
            # Asked by tag: the registry's own digest header is all there is to check
            # (schema 1 is skipped: its header digest excludes the signatures).
            digester = Digester(by_registry)
            digester.update(body)
            digester.check(f"manifest {reference} from {self.registry} (Docker-Content-Digest {by_registry[:80]})")
        return Manifest(body=body, media_type=media_type, digest=digest)

    def open_blob(self, repository: str, digest: str, start: int = 0, end: int | None = None, *,
                  whole_ok: bool = False, deadline: Deadline | None = None) -> requests.Response:
        """A streaming response for a blob; ranged when start/end given (206
        checked: a server that ignores the Range is an error, unless
        ``whole_ok`` accepts its 200 with the whole blob). Without a
        ``deadline``, the response gets its own (the range's length counted),
        ended when it is closed."""
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        own = deadline is None
        if own:
            deadline = self._deadline(None if end is None else end + 1 - start)
        try:
            response = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=self.scope_for(repository),
                                    headers=headers, stream=True, deadline=deadline)
            if response.status_code >= 300:
                response.close()
                if response.status_code == 416:
                    raise RangeNotSupported(f"{self.registry} refused the byte range {headers.get('Range')} of blob {digest}")
                self._raise_for_status(response, f"blob {digest}", not_found=f"blob not found: {self.registry}/{repository}@{digest}")
            if headers and response.status_code != 206 and not (whole_ok and response.status_code == 200):
                response.close()
                raise RangeNotSupported(f"{self.registry} ignored our Range request for blob {digest} (HTTP {response.status_code})")
        except BaseException:
            if own:
                deadline.close()
            raise
        return close_with(response, deadline) if own else response

    def iter_blob(self, repository: str, digest: str, *, start: int = 0, chunk_size: int = 1 << 20,
                  size: int | None = None) -> Iterator[bytes]:
        """Stream a blob from ``start``, resuming with Range after a broken connection.

        ``retries`` and ``max_retry_seconds`` bound the attempts *without
        progress*: a break after new bytes arrived starts the count afresh, so
        a long download over a flaky link goes on as long as it advances.
        With the descriptor's ``size``, a blob longer than that is an error
        as soon as the extra bytes arrive; the whole download, resumptions
        included, has one deadline (``deadline`` plus a second per
        ``BLOB_MIN_RATE`` bytes).
        """
        offset = start
        # The caller hashes; here only the length is held to the descriptor's size.
        length = Digester(None, size)
        length.count = start
        failures = 0
        failed_at = None  # offset of the last break
        retry_until = time.monotonic() + self.max_retry_seconds
        with self._deadline(None if size is None else size - start) as deadline:
            while True:
                # Resuming after a break: a server (or proxy) that ignores Range
                # sends the whole blob again; what we already passed on is skipped
                # (the caller's digest check still covers every byte).
                response = self.open_blob(repository, digest, start=offset, whole_ok=offset > start, deadline=deadline)
                skip = offset if offset > start and response.status_code == 200 else 0
                if skip:
                    log.debug("blob %s: the server ignored Range; skipping %d bytes of the whole blob", digest, skip)
                body = _Counted(response.iter_content(chunk_size), self)
                try:
                    for chunk in skip_bytes(body, skip):
                        offset += len(chunk)
                        length.update(chunk)
                        length.check_not_longer(f"blob {digest}")
                        yield chunk
                    if deadline.expired:  # a body without a length ends where the deadline cut it
                        raise self._past_deadline(deadline, self.registry, f"sending blob {digest}")
                    if body.received < skip:
                        raise RegistryError(f"{self.registry} sent blob {digest} shorter than before ({body.received} bytes)")
                    return
                except _BROKEN_BODY as error:
                    if deadline.expired:
                        raise self._past_deadline(deadline, self.registry, f"sending blob {digest}")
                    if failed_at is None or offset > failed_at:
                        # First break, or bytes came in since the last one.
                        failures = 0
                        retry_until = time.monotonic() + self.max_retry_seconds
                    failed_at = offset
                    failures += 1
                    if failures >= self.retries or time.monotonic() >= retry_until:
                        raise NetworkError(f"download of blob {digest} from {self.registry} broke at byte {offset}: "
                                           f"{short_reason(error)} (after {failures} attempts)")
                    log.debug("blob %s broke at %d (%s); resuming", digest, offset, type(error).__name__)
                    self._sleep(failures, None, retry_until)
                finally:
                    response.close()

    def iter_blob_ranges(self, repository: str, digest: str, size: int, *, chunk_size: int = 1 << 20, start: int = 0,
                         window: int | None = None, blob_size: int | None = None,
                         on_whole: Callable[[str], None] | None = None) -> Iterator[bytes]:
        """A blob of known ``size`` read in growing ``Range`` windows (206 checked).

        A broken connection re-requests the rest of its window (up to
        ``retries`` times in a row); a registry that refuses ranges
        (:class:`RangeNotSupported`) is read in one streaming GET instead
        (``on_whole`` hears why). With ``start``, bytes ``start`` to
        ``size - 1`` only; with ``window``, in windows of that size (one
        request when it covers them all). ``size`` is where reading stops;
        ``blob_size`` (default ``size``) is the blob's declared size, which a
        registry sending the whole blob must not pass.
        """
        offset = start
        failures = 0
        while offset < size:
            step = window or max(MIN_WINDOW, min(MAX_WINDOW, (offset - start) // WINDOW_DIVISOR))
            end = min(size, offset + step) - 1
            try:
                response = self.open_blob(repository, digest, start=offset, end=end)
            except RangeNotSupported as error:
                log.debug("%s: %s; reading it in one request", digest, error)
                if on_whole:
                    on_whole(str(error))
                whole = size if blob_size is None else blob_size
                for chunk in skip_bytes(self.iter_blob(repository, digest, chunk_size=chunk_size, size=whole), offset):
                    if offset + len(chunk) > size:
                        chunk = chunk[: size - offset]
                    offset += len(chunk)
                    if chunk:
                        yield chunk
                    if offset >= size and size < whole:  # a part was asked for: the rest is not read
                        return
                return
            try:
                for chunk in _Counted(response.iter_content(chunk_size), self):
                    if not chunk:
                        continue
                    if len(chunk) > end + 1 - offset:
                        chunk = chunk[: end + 1 - offset]
                    offset += len(chunk)
                    failures = 0
                    yield chunk
                    if offset > end:
                        break
            except _BROKEN_BODY as error:
                failures += 1
                if failures >= self.retries:
                    raise NetworkError(f"download of blob {digest} from {self.registry} broke at byte {offset}: "
                                       f"{short_reason(error)} (after {failures} attempts)")
                continue
            finally:
                response.close()
            if offset <= end:
                failures += 1
                if failures >= self.retries:
                    raise NetworkError(f"{self.registry} sent a short range for blob {digest} at byte {offset}")

    def get_blob_range(self, repository: str, digest: str, start: int, end: int) -> bytes:
        "Bytes start..end (inclusive) of a blob."
        retry_until = time.monotonic() + self.max_retry_seconds
        attempt = 0
        with self._deadline(end + 1 - start) as deadline:
            while True:
                attempt += 1
                response = self.open_blob(repository, digest, start=start, end=end, deadline=deadline)
                with response:
                    try:
                        data = response.content
                    except _BROKEN_BODY as error:
                        if deadline.expired:
                            raise self._past_deadline(deadline, self.registry, f"sending a range of blob {digest}")
                        if attempt < self.retries and time.monotonic() < retry_until:
                            self._sleep(attempt, None, retry_until)
                            continue
                        raise NetworkError(f"range read of blob {digest} from {self.registry} failed: "
                                           f"{short_reason(error)} (after {attempt} attempts)")
                    except requests.exceptions.RequestException as error:
                        raise NetworkError(f"range read of blob {digest} from {self.registry} failed: {short_reason(error)}")
                break
        self.bytes_downloaded += len(data)
        if len(data) != end - start + 1:
            raise RegistryError(f"{self.registry} sent {len(data)} bytes for range {start}-{end} of blob {digest}")
        return data

    def get_blob(self, repository: str, digest: str, max_size: int = MAX_MANIFEST_BYTES, size: int | None = None) -> bytes:
        "A small blob (a config), read whole and verified against its digest (and its descriptor's size)."
        digester = Digester(digest, size)
        data = bytearray()
        for chunk in self.iter_blob(repository, digest, chunk_size=65536, size=size):
            data += chunk
            if len(data) > max_size:
                raise RegistryError(f"blob {digest} is over the {max_size // (1024 * 1024)} MiB limit for this kind of blob")
        digester.update(data)
        digester.check()
        return bytes(data)

    def _paginate(self, path: str, key: str, repository: str | None, page_size: int | None) -> Iterator[str]:
        """A listing, page by page (never more than one page in memory), for at
        most ``max_pages`` pages; a ``Link`` to another origin is not followed
        (our credentials would go with it), and the user is told."""
        params = {"n": page_size} if page_size else None
        scope = self.scope_for(repository) if repository else "registry:catalog:*"
        what = f"{'tag' if repository else 'catalog'} listing of {self.registry}/{repository or '_catalog'}"
        not_found = f"{'repository' if repository else 'catalog'} not found: {self.registry}/{repository or '_catalog'}"
        url: str | None = self.base_url + path
        seen_urls = set()
        pages = 0
        while url:
            pages += 1
            if pages > self.max_pages:
                raise RegistryError(f"the {what} goes on past {self.max_pages} pages; stopped")
            response, body = self._get_capped(url, f"a page of the {what}", MAX_PAGE_BYTES, scope=scope, params=params, not_found=not_found)
            link = response.headers.get("Link")
            try:
                items = load_json(body, f"the {what}").get(key) or []
            except (RegistryError, AttributeError):
                items = None
            if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                raise RegistryError(f"{self.registry} returned an invalid {key} listing")
            yield from items
            following = _next_link(link)
            url = urljoin(response.url, following) if following else None
            params = None  # the Link URL carries the paging parameters
            if url and not self.is_origin(url):
                self.tell_once(f"link {_origin(url)}", f"the {what} links its next page to another origin "
                                                      f"({_origin(url)}); not followed, the listing stops here")
                break
            if url in seen_urls:
                break  # a registry that links back to itself must not loop forever
            seen_urls.add(url)

    def list_tags(self, repository: str, page_size: int | None = None) -> Iterator[str]:
        return self._paginate(f"/v2/{repository}/tags/list", "tags", repository, page_size)

    def catalog(self, page_size: int | None = None) -> Iterator[str]:
        return self._paginate("/v2/_catalog", "repositories", None, page_size)


class _Counted:
    "A response body's chunks, counted into ``client.bytes_downloaded`` and ``received`` as they arrive."

    def __init__(self, chunks: Iterable[bytes], client: RegistryClient):
        self.chunks, self.client, self.received = chunks, client, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.client.bytes_downloaded += len(chunk)
            self.received += len(chunk)
            yield chunk


def skip_bytes(chunks: Iterable[bytes], n: int) -> Iterator[bytes]:
    "``chunks`` without their first ``n`` bytes (what a resumed read already had, output before an entry)."
    for chunk in chunks:
        if n:
            if len(chunk) <= n:
                n -= len(chunk)
                continue
            chunk = chunk[n:]
            n = 0
        yield chunk


def _next_link(header: str | None) -> str | None:
    if not header:
        return None
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header)
    return match.group(1) if match else None


def _error_detail(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        messages = [e.get("message") or e.get("code") for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError, TypeError, RecursionError):
        return ""
    messages = [" ".join(m.split()) for m in messages if m and isinstance(m, str)]
    return f": {'; '.join(messages)[:200]}" if messages else ""


def tls_failure(error: BaseException) -> ssl.SSLError | None:
    "The ssl module's error behind a requests/urllib3 one, if any."
    stack, seen = [error], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
        for attribute in ("reason", "__cause__", "__context__"):
            inner = getattr(current, attribute, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
    return None


def tls_reason(error: BaseException, failure: ssl.SSLError | None = None) -> str:
    "The whole TLS reason, e.g. 'certificate verify failed: self-signed certificate', never cut short."
    failure = failure or tls_failure(error)
    if isinstance(failure, ssl.SSLCertVerificationError) and failure.verify_message:
        text = f"certificate verify failed: {failure.verify_message}"
    elif failure is not None:
        text = re.sub(r"^\[SSL: [A-Z0-9_]+\] ", "", failure.strerror or str(failure))
    else:
        text = str(error)
    return printable(" ".join(re.sub(r"\s*\(_ssl\.c:\d+\)", "", text).split()))


def short_reason(error: Exception) -> str:
    "A one-line reason without URLs' query strings or nested reprs."
    text = str(error)
    for pattern, replacement in (
        (r"HTTPConnectionPool\(host='([^']+)', port=(\d+)\)", r"\1:\2"),
        (r"HTTPSConnectionPool\(host='([^']+)', port=(\d+)\)", r"\1:\2"),
        (r"<urllib3\.connection\.\w+ object at 0x[0-9a-f]+>: ", ""),
        (r"\(Caused by \w+\(", "("),
    ):
        text = re.sub(pattern, replacement, text)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text or "Failed to resolve" in text:
        return "host name not found"
    if "Read timed out" in text:
        return "read timed out"
    if "timed out" in text:
        return "timed out"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "connection broken"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection closed by the server"
    return text.splitlines()[0][:200] if text else type(error).__name__


def _path(url: str) -> str:
    return urlparse(url).path


def _origin(url: str) -> str:
    parts = urlparse(url)
    return printable(f"{parts.scheme}://{parts.netloc}")

