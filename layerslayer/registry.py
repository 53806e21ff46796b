"""A client for the Registry HTTP API v2 / OCI distribution API.

One ``requests.Session`` per registry; auth is challenge driven (see auth.py);
transient failures (429, 5xx, dropped connections, read timeouts) are retried
with exponential backoff within a bounded total time; blob streams resume
with ``Range`` after a broken connection. Redirects are followed by hand so
our Authorization header never travels to another host (blob CDNs).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urljoin, urlparse

import requests

from . import __version__
from .auth import Authenticator, Credentials
from .errors import AuthError, NetworkError, NotFound, RegistryError, VerificationError

log = logging.getLogger("layerslayer")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = {OCI_INDEX, DOCKER_MANIFEST_LIST}
MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
# Registries answer 404 for an OCI manifest when the client does not accept it.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
RETRY_STATUSES = {429, 500, 502, 503, 504}
# A response body that broke off: cut short, reset, or silent past the read timeout.
_BROKEN_BODY = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)
MAX_REDIRECTS = 5
USER_AGENT = f"layerslayer/{__version__}"


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


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


DIGEST_ALGORITHMS = ("sha256", "sha384", "sha512")


def hasher_for(digest: str):
    "A hashlib object for a digest's algorithm (sha256, sha384, sha512; nothing weaker)."
    algorithm = digest.partition(":")[0]
    if algorithm not in DIGEST_ALGORITHMS:
        raise VerificationError(f"unsupported digest algorithm {algorithm[:20]!r} in {digest[:100]!r}")
    return hashlib.new(algorithm)


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
        token_file=None,
        session: requests.Session | None = None,
    ):
        self.registry = registry
        self.timeout = timeout if isinstance(timeout, tuple) else (min(timeout, 10), timeout)
        self.retries = max(1, retries)
        self.max_retry_seconds = max_retry_seconds
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = not insecure
        self.bytes_downloaded = 0
        self.pacer = None  # a pacing.Pacer shares 429 / RateLimit pauses with other clients
        self._scheme = "http" if plain_http else "https"
        # Loopback registries fall back to HTTP when HTTPS fails, as docker does.
        self._may_fall_back = not plain_http and is_loopback(registry)
        self.auth = Authenticator(registry, credentials, token_file, fetch=self._fetch_for_auth)

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    @property
    def base_url(self) -> str:
        return f"{self._scheme}://{self.registry}"

    # -- transport -----------------------------------------------------

    def _fetch_for_auth(self, method: str, url: str, auth_header: str | None = None, **kwargs):
        headers = {"Authorization": auth_header} if auth_header else {}
        return self._send(method, url, headers=headers, **kwargs)

    def _send(self, method: str, url: str, *, headers=None, stream=False, **kwargs) -> requests.Response:
        "One request with retries for transient failures; no auth handling."
        deadline = time.monotonic() + self.max_retry_seconds
        host = urlparse(url).netloc
        attempt = 0
        while True:
            attempt += 1
            if self.pacer is not None:
                self.pacer.wait(host)
            try:
                response = self.session.request(
                    method, url, headers=headers, stream=stream, timeout=self.timeout,
                    allow_redirects=False, **kwargs,
                )
            except requests.exceptions.SSLError as error:
                if self._may_fall_back and url.startswith("https://"):
                    log.debug("HTTPS to %s failed (%s); falling back to plain HTTP", host, type(error).__name__)
                    self._scheme = "http"
                    self._may_fall_back = False
                    url = "http://" + url[len("https://"):]
                    attempt -= 1
                    continue
                raise NetworkError(f"TLS error talking to {host}: {short_reason(error)} (use --plain-http for an HTTP registry, --insecure to skip verification)")
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
                if self._may_fall_back and url.startswith("https://"):
                    self._scheme = "http"
                    self._may_fall_back = False
                    url = "http://" + url[len("https://"):]
                    attempt -= 1
                    continue
                if attempt >= self.retries or time.monotonic() >= deadline:
                    raise NetworkError(f"cannot reach {host}: {short_reason(error)} (after {attempt} attempts)")
                self._sleep(attempt, None, deadline)
                continue
            except requests.exceptions.RequestException as error:
                raise NetworkError(f"request to {host} failed: {short_reason(error)}")
            if url.startswith("https://"):
                self._may_fall_back = False
            if self.pacer is not None:
                self.pacer.observe(host, response.status_code, response.headers)
            if response.status_code in RETRY_STATUSES and attempt < self.retries and time.monotonic() < deadline:
                retry_after = response.headers.get("Retry-After")
                response.close()
                log.debug("%s %s -> %s; retrying", method, _path(url), response.status_code)
                self._sleep(attempt, retry_after, deadline)
                continue
            return response

    def _sleep(self, attempt: int, retry_after: str | None, deadline: float) -> None:
        delay = min(0.25 * 2 ** (attempt - 1), 8.0) * (1 + random.random() / 4)
        if retry_after:
            try:
                delay = max(float(retry_after), 0.0)
            except ValueError:
                pass  # an HTTP date: keep our own backoff
        delay = min(delay, max(deadline - time.monotonic(), 0))
        time.sleep(delay)

    def request(self, method: str, path: str, *, scope: str | None = None, headers=None, stream=False, **kwargs) -> requests.Response:
        "A request to this registry: auth challenges answered, redirects followed safely."
        url = path if "://" in path else self.base_url + path
        headers = dict(headers or {})
        auth_header = self.auth.header_for(scope)
        auth_attempts = 0
        redirects = 0
        origin = urlparse(url).netloc
        while True:
            sent_auth = auth_header if urlparse(url).netloc == origin else None
            send_headers = dict(headers)
            if sent_auth:
                send_headers["Authorization"] = sent_auth
            response = self._send(method, url, headers=send_headers, stream=stream, **kwargs)
            if self._scheme == "http" and url.startswith("https://") and urlparse(url).netloc == origin:
                url = "http://" + url[len("https://"):]
            if response.status_code == 401 and urlparse(url).netloc == origin and auth_attempts < 2:
                auth_attempts += 1
                challenge = response.headers.get("WWW-Authenticate")
                response.close()
                auth_header = self.auth.handle_challenge(challenge, scope, sent_auth)
                continue
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise RegistryError(f"too many redirects from {origin}")
                url = urljoin(url, response.headers["Location"])
                response.close()
                if response.status_code == 303:
                    method = "GET"
                continue
            return response

    # -- API ------------------------------------------------------------

    @staticmethod
    def scope_for(repository: str) -> str:
        return f"repository:{repository}:pull"

    def ping(self) -> None:
        response = self.request("GET", "/v2/")
        response.close()
        self._raise_for_status(response, "the registry API")

    def _raise_for_status(self, response: requests.Response, what: str, not_found: str | None = None) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 404:
            raise NotFound(not_found or f"{what} not found on {self.registry}")
        if status == 401:
            raise AuthError(self.auth._refused_message("the registry refused access"))
        if status == 403:
            raise AuthError(f"access to {what} on {self.registry} is denied (HTTP 403)")
        if status == 429:
            raise NetworkError(f"{self.registry} is rate limiting us (HTTP 429) and kept doing so after retries")
        if status >= 500:
            raise NetworkError(f"{self.registry} failed with HTTP {status} for {what} (after retries)")
        raise RegistryError(f"{self.registry} answered HTTP {status} for {what}{_error_detail(response)}")

    def get_manifest(self, repository: str, reference: str, *, display: str | None = None) -> Manifest:
        "Fetch a manifest or index; verified against its digest when asked by digest."
        path = f"/v2/{repository}/manifests/{reference}"
        deadline = time.monotonic() + self.max_retry_seconds
        attempt = 0
        while True:
            attempt += 1
            response = self.request("GET", path, scope=self.scope_for(repository), headers={"Accept": MANIFEST_ACCEPT}, stream=True)
            with response:
                self._raise_for_status(response, f"manifest {reference}", not_found=f"image not found: {display or f'{self.registry}/{repository}:{reference}'}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"manifest {reference} is {int(declared)} bytes, over the {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB limit")
                body = bytearray()
                try:
                    for chunk in response.iter_content(65536):
                        body += chunk
                        if len(body) > MAX_MANIFEST_BYTES:
                            raise RegistryError(f"manifest {reference} is over the {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB limit")
                except _BROKEN_BODY as error:
                    # A body cut short or stalled: ask again, as for a dropped connection.
                    if attempt < self.retries and time.monotonic() < deadline:
                        log.debug("manifest %s broke (%s); retrying", reference, type(error).__name__)
                        self._sleep(attempt, None, deadline)
                        continue
                    raise NetworkError(f"reading manifest {reference} from {self.registry} failed: {short_reason(error)} (after {attempt} attempts)")
                except requests.exceptions.RequestException as error:
                    raise NetworkError(f"reading manifest {reference} from {self.registry} failed: {short_reason(error)}")
                body = bytes(body)
                self.bytes_downloaded += len(body)
            break
        if reference.startswith("sha") and ":" in reference:
            hasher = hasher_for(reference)
            hasher.update(body)
            actual = f"{reference.partition(':')[0]}:{hasher.hexdigest()}"
            if actual != reference:
                raise VerificationError(f"manifest {reference} from {self.registry} does not match its digest (got {actual})")
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
        if by_tag and by_registry.partition(":")[0] in DIGEST_ALGORITHMS and schema_version != 1:
            # Asked by tag: the registry's own digest header is all there is to check
            # (schema 1 is skipped: its header digest excludes the signatures).
            hasher = hasher_for(by_registry)
            hasher.update(body)
            actual = f"{by_registry.partition(':')[0]}:{hasher.hexdigest()}"
            if actual != by_registry:
                raise VerificationError(
                    f"manifest {reference} from {self.registry} does not match the digest the registry gives for it "
                    f"({by_registry[:80]}, got {actual})"
                )
        return Manifest(body=body, media_type=media_type, digest=digest)

    def open_blob(self, repository: str, digest: str, start: int = 0, end: int | None = None, *,
                  whole_ok: bool = False) -> requests.Response:
        """A streaming response for a blob; ranged when start/end given (206
        checked: a server that ignores the Range is an error, unless
        ``whole_ok`` accepts its 200 with the whole blob)."""
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=self.scope_for(repository), headers=headers, stream=True)
        if response.status_code >= 300:
            response.close()
            if response.status_code == 416:
                raise RegistryError(f"{self.registry} refused the byte range {headers.get('Range')} of blob {digest}")
            self._raise_for_status(response, f"blob {digest}", not_found=f"blob not found: {self.registry}/{repository}@{digest}")
        if headers and response.status_code != 206 and not (whole_ok and response.status_code == 200):
            response.close()
            raise RegistryError(f"{self.registry} ignored our Range request for blob {digest} (HTTP {response.status_code})")
        return response

    def iter_blob(self, repository: str, digest: str, *, start: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream a blob from ``start``, resuming with Range after a broken connection.

        ``retries`` and ``max_retry_seconds`` bound the attempts *without
        progress*: a break after new bytes arrived starts the count afresh, so
        a long download over a flaky link goes on as long as it advances.
        """
        offset = start
        failures = 0
        failed_at = None  # offset of the last break
        deadline = time.monotonic() + self.max_retry_seconds
        while True:
            # Resuming after a break: a server (or proxy) that ignores Range
            # sends the whole blob again; what we already passed on is skipped
            # (the caller's digest check still covers every byte).
            response = self.open_blob(repository, digest, start=offset, whole_ok=offset > start)
            skip = offset if offset > start and response.status_code == 200 else 0
            if skip:
                log.debug("blob %s: the server ignored Range; skipping %d bytes of the whole blob", digest, skip)
            try:
                for chunk in response.iter_content(chunk_size):
                    self.bytes_downloaded += len(chunk)
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk = chunk[skip:]
                        skip = 0
                    offset += len(chunk)
                    yield chunk
                if skip:
                    raise RegistryError(f"{self.registry} sent blob {digest} shorter than before ({offset - skip} bytes)")
                return
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
                if failed_at is None or offset > failed_at:
                    # First break, or bytes came in since the last one.
                    failures = 0
                    deadline = time.monotonic() + self.max_retry_seconds
                failed_at = offset
                failures += 1
                if failures >= self.retries or time.monotonic() >= deadline:
                    raise NetworkError(f"download of blob {digest} from {self.registry} broke at byte {offset}: {short_reason(error)} (after {failures} attempts)")
                log.debug("blob %s broke at %d (%s); resuming", digest, offset, type(error).__name__)
                self._sleep(failures, None, deadline)
            finally:
                response.close()

    def get_blob_range(self, repository: str, digest: str, start: int, end: int) -> bytes:
        "Bytes start..end (inclusive) of a blob."
        deadline = time.monotonic() + self.max_retry_seconds
        attempt = 0
        while True:
            attempt += 1
            response = self.open_blob(repository, digest, start=start, end=end)
            with response:
                try:
                    data = response.content
                except _BROKEN_BODY as error:
                    if attempt < self.retries and time.monotonic() < deadline:
                        self._sleep(attempt, None, deadline)
                        continue
                    raise NetworkError(f"range read of blob {digest} from {self.registry} failed: {short_reason(error)} (after {attempt} attempts)")
                except requests.exceptions.RequestException as error:
                    raise NetworkError(f"range read of blob {digest} from {self.registry} failed: {short_reason(error)}")
            break
        self.bytes_downloaded += len(data)
        if len(data) != end - start + 1:
            raise RegistryError(f"{self.registry} sent {len(data)} bytes for range {start}-{end} of blob {digest}")
        return data

    def get_blob(self, repository: str, digest: str, max_size: int = MAX_MANIFEST_BYTES) -> bytes:
        "A small blob (a config), read whole and verified against its digest."
        hasher = hasher_for(digest)
        data = bytearray()
        for chunk in self.iter_blob(repository, digest, chunk_size=65536):
            data += chunk
            if len(data) > max_size:
                raise RegistryError(f"blob {digest} is over the {max_size // (1024 * 1024)} MiB limit for this kind of blob")
        hasher.update(data)
        if f"{digest.partition(':')[0]}:{hasher.hexdigest()}" != digest:
            raise VerificationError(f"blob {digest} from {self.registry} does not match its digest")
        return bytes(data)

    def _paginate(self, path: str, key: str, repository: str | None, page_size: int | None) -> Iterator[str]:
        params = {"n": page_size} if page_size else None
        scope = self.scope_for(repository) if repository else "registry:catalog:*"
        url: str | None = path
        seen_urls = set()
        while url:
            response = self.request("GET", url, scope=scope, params=params)
            with response:
                self._raise_for_status(response, key, not_found=f"{'repository' if repository else 'catalog'} not found: {self.registry}/{repository or '_catalog'}")
                try:
                    items = response.json().get(key) or []
                except (ValueError, AttributeError, RecursionError):
                    items = None
                if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                    raise RegistryError(f"{self.registry} returned an invalid {key} listing")
                yield from items
                url = _next_link(response.headers.get("Link"))
            params = None  # the Link URL carries the paging parameters
            if url in seen_urls:
                break  # a registry that links back to itself must not loop forever
            seen_urls.add(url)

    def list_tags(self, repository: str, page_size: int | None = None) -> Iterator[str]:
        return self._paginate(f"/v2/{repository}/tags/list", "tags", repository, page_size)

    def catalog(self, page_size: int | None = None) -> Iterator[str]:
        return self._paginate("/v2/_catalog", "repositories", None, page_size)


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

