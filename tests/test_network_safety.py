"""Where credentials go, how long a hostile server can hold us, TLS, and what
the network and credential errors say.

Every test runs ``layerslayer`` as a real process (its stderr is what a user
sees, warnings included) against the real docker-registry, fronted where
needed by the tests' scripted hostile server (``harness/hostile.py``) on
loopback. "Not loopback" is judged by name, as layerslayer judges it: a host
name that resolves to 127.x but is not ``localhost`` or a loopback literal
(``hostile.non_loopback_name``).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
import time

import pytest
from harness.builder import layer, push_image
from harness.hostile import ScriptedServer, drip, for_ever, non_loopback_name, one_byte_at_a_time

from layerslayer.errors import RegistryError
from layerslayer.registry import RegistryClient

USER, PASSWORD = "alice", "s3cret-pa55"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CREDS = ("--username", USER, "--password", PASSWORD)
# Hostile servers below drip for ever: a run that is not stopped by its own
# deadline is stopped here, and fails the test.
HARD_STOP = 60


def run(*args, env: dict | None = None, timeout: float = HARD_STOP) -> subprocess.CompletedProcess:
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "layerslayer", *map(str, args)], capture_output=True,
                                text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        pytest.fail(f"layerslayer {' '.join(map(str, args))} still running after {timeout} s")
    result.seconds = time.monotonic() - started
    assert "--debug" in args or "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
def servers():
    started: list[ScriptedServer] = []

    def make(*args, **kw) -> ScriptedServer:
        server = ScriptedServer(*args, **kw).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def basic_gate(answer):
    "A route that asks for Basic credentials first, then gives ``answer``."
    def route(h, match):
        if h.headers.get("Authorization") != BASIC:
            h.send_bytes(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": 'Basic realm="hostile"'})
        else:
            answer(h, match)
    return route


# -- credentials stay with the registry's origin --------------------------------------------

def test_tag_page_linked_to_another_host_gets_no_credentials(basic_registry, servers, unique_repo, tmp_path):
    "index --all-tags behind Basic auth; the tag listing's Link points at another host."
    repo = unique_repo()
    push_image(basic_registry, f"{repo}:v1")
    elsewhere = servers()
    elsewhere.route(r"/tags/list", lambda h, m: h.send_bytes(200, json.dumps({"name": repo, "tags": ["v2"]}).encode()))
    front = servers(upstream=basic_registry)
    front.route(r"/tags/list", lambda h, m: front.forward(
        h, extra_headers={"Link": f'<http://{elsewhere.host}/v2/{repo}/tags/list?last=v1&n=1>; rel="next"'}))
    result = run("index", tmp_path / "i.db", f"{front.host}/{repo}", "--all-tags", *CREDS)
    assert result.returncode == 0, result.stderr
    assert elsewhere.records == [], "the page on another host was fetched"
    assert f"links its next page to another origin (http://{elsewhere.host}); not followed" in result.stderr
    assert result.stderr.count("another origin") == 1
    assert BASIC in front.authorizations("/tags/list")  # the registry itself got them


def test_catalog_link_to_another_host_gets_no_credentials(basic_registry, servers, unique_repo, tmp_path):
    repo = unique_repo()
    push_image(basic_registry, f"{repo}:v1")
    elsewhere = servers()
    front = servers(upstream=basic_registry)
    front.route(r"/_catalog", basic_gate(lambda h, m: h.send_bytes(
        200, json.dumps({"repositories": [repo]}).encode(),
        {"Link": f'<http://{elsewhere.host}/v2/_catalog?last={repo}>; rel="next"'})))
    result = run("index", tmp_path / "i.db", front.host, "--catalog", *CREDS)
    assert result.returncode == 0, result.stderr
    assert elsewhere.records == []
    assert "not followed" in result.stderr


def _token_realm_front(servers, realm_host: str):
    "A registry front whose Bearer realm is ``http://realm_host:PORT/token``; returns (front, token service)."
    token_service = servers()
    token_service.route(r"^/token", lambda h, m: h.send_bytes(200, b'{"token": "anonymous-token"}'))
    realm = f"http://{realm_host}:{token_service.port}/token"

    def challenge(h, m):
        h.send_bytes(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                     {"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile",scope="repository:r/app:pull"'})

    front = servers()
    front.route(r"^/v2/", challenge)
    return front, token_service


def test_token_realm_over_plain_http_on_another_host_gets_no_credentials(servers):
    name = non_loopback_name()
    front, token_service = _token_realm_front(servers, name)
    result = run("inspect", f"{front.host}/r/app:v1", *CREDS)
    assert result.returncode != 0
    assert token_service.records, "the token service was not asked at all"
    assert token_service.authorizations() == [None] * len(token_service.records)
    assert f"credentials were not sent to the token service at http://{name}:{token_service.port}" in result.stderr
    assert result.stderr.count("were not sent") == 2  # the warning, once, and the reason in the error line
    # The control: the same realm on "localhost" (loopback by name) gets Basic credentials.
    front, token_service = _token_realm_front(servers, "localhost")
    run("inspect", f"{front.host}/r/app:v1", *CREDS)
    assert BASIC in token_service.authorizations()


def test_redirect_from_https_to_http_on_the_same_host_gets_no_credentials(registry, servers, unique_repo, tmp_path):
    repo = unique_repo()
    pushed = push_image(registry, f"{repo}:v1")
    front = servers(upstream=registry, tls=True, plain_too=True, workdir=tmp_path)

    def downgrade(h, m):
        if h.scheme == "http":
            front.forward(h)  # answers whoever comes: what matters is what they sent
        else:
            basic_gate(lambda h, m: h.send_bytes(307, b"", {"Location": f"http://{front.host}{h.path}"}))(h, m)

    front.route(r"/v2/.+/manifests/", downgrade)
    front.route(r"^/v2/", basic_gate(lambda h, m: front.forward(h)))
    result = run("inspect", f"{front.host}/{repo}:v1", "--json", *CREDS, env={"REQUESTS_CA_BUNDLE": str(front.cert_path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digest"] == pushed.digest
    plain = [r for r in front.requests_to("/manifests/") if r[3] == "http"]
    assert plain and all(r[2].get("authorization") is None for r in plain)
    assert "redirected to plain HTTP" in result.stderr and "followed without your credentials" in result.stderr


# -- no end to endless or dripping servers? There is one now --------------------------------

def _image(registry, unique_repo, size=3000):
    repo = unique_repo()
    big = layer({"data.bin": os.urandom(size)}, compression="none")
    return repo, big, push_image(registry, f"{repo}:v1", layers=[big])


def test_endless_blob_is_an_error_at_its_declared_size(registry, servers, unique_repo, tmp_path):
    "index and --peek-all: a layer that goes on after its descriptor's size fails as soon as it does."
    repo, big, _ = _image(registry, unique_repo)
    front = servers(upstream=registry)
    front.route(big.digest, lambda h, m: drip(h, 200, {}, itertools.chain([big.blob], for_ever(b"\0" * 65536)), 0))
    index = run("index", tmp_path / "i.db", f"{front.host}/{repo}:v1")
    assert f"blob {big.digest} is longer than the {len(big.blob)} bytes it should be" in index.stderr + index.stdout
    peek = run("--peek-all", "-t", f"{front.host}/{repo}:v1", "-o", tmp_path / "dl")
    assert f"is longer than the {len(big.blob)} bytes" in peek.stdout + peek.stderr
    assert peek.seconds < 20 and index.seconds < 20


def test_endless_blob_ignoring_range_is_an_error_for_extract(registry, servers, unique_repo, tmp_path):
    repo, big, _ = _image(registry, unique_repo)
    front = servers(upstream=registry)
    front.route(big.digest, lambda h, m: drip(h, 200, {}, itertools.chain([big.blob], for_ever(b"\0" * 65536)), 0))
    result = run("extract", f"{front.host}/{repo}:v1", "*", "-o", tmp_path / "out")
    assert result.returncode != 0
    assert f"is longer than the {len(big.blob)} bytes" in result.stderr


DEADLINE = {"LAYERSLAYER_DEADLINE": "2"}


@pytest.mark.parametrize("command", ["inspect", "save", "index", "extract", "peek-all"])
def test_a_dripping_server_is_cut_off_at_the_deadline(registry, servers, unique_repo, tmp_path, command):
    """One byte every 0.2 s never trips the 1 s read timeout; the 2 s deadline
    ($LAYERSLAYER_DEADLINE) ends the request, whatever the command."""
    repo, big, pushed = _image(registry, unique_repo)
    front = servers(upstream=registry)
    if command == "inspect":  # whitespace before the JSON, for ever
        front.route(r"/manifests/", lambda h, m: drip(h, 200, {"Content-Type": pushed.media_type}, for_ever(b" "), 0.2))
    else:
        front.route(big.digest, lambda h, m: drip(h, 200, {}, one_byte_at_a_time(big.blob), 0.2))
    ref = f"{front.host}/{repo}:v1"
    args = {
        "inspect": ["inspect", ref],
        "save": ["save", ref, "--all", "-o", tmp_path / "out"],
        "index": ["index", tmp_path / "i.db", ref],
        "extract": ["extract", ref, "*", "-o", tmp_path / "out"],
        "peek-all": ["--peek-all", "-t", ref, "-o", tmp_path / "out"],
    }[command]
    result = run(*args, "--timeout", "1", env=DEADLINE)
    assert "s deadline (--deadline)" in result.stdout + result.stderr
    assert f"did not finish sending {'manifest v1' if command == 'inspect' else 'blob'}" in result.stdout + result.stderr
    assert result.seconds < 15


def test_dripping_headers_are_cut_off_at_the_deadline(servers):
    def headers_for_ever(h, m):
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        try:
            for _ in range(100_000):
                h.wfile.write(b"X-Drip: a\r\n")
                h.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass
        h.close_connection = True

    front = servers()
    front.route(r"^/v2/", headers_for_ever)
    result = run("inspect", f"{front.host}/r/app:v1", "--timeout", "1", env=DEADLINE)
    assert result.returncode != 0
    assert f"Error: {front.host} did not finish" in result.stderr and "within the 2 s deadline" in result.stderr
    assert result.seconds < 15


def _endless_tags(front, repo, pages: int):
    "A tag listing of ``pages`` pages, one tag each, every page linking to the next."
    def page(h, m):
        n = int(m.group(1) or 0)
        link = {"Link": f'</v2/{repo}/tags/list?last=t{n + 1}&n=1>; rel="next"'} if n + 1 < pages else {}
        h.send_bytes(200, json.dumps({"name": repo, "tags": [f"t{n}"]}).encode(), link)
    front.route(r"/tags/list(?:\?last=t(\d+))?", page)


def test_tag_listing_is_read_page_by_page_with_a_cap_on_pages(servers):
    front = servers()
    _endless_tags(front, "r/app", pages=200)
    client = RegistryClient(front.host, plain_http=True, max_pages=50)
    tags = client.list_tags("r/app")
    assert next(tags) == "t0"
    assert len(front.requests_to("/tags/list")) == 1  # one page read, not the whole listing
    with pytest.raises(RegistryError) as info:
        list(tags)
    assert "goes on past 50 pages; stopped" in str(info.value)
    assert len(front.requests_to("/tags/list")) == 50


def test_a_listing_page_has_a_size_limit(servers):
    front = servers()
    huge = json.dumps({"name": "r/app", "tags": [f"t{i:07d}" for i in range(500_000)]}).encode()
    front.route(r"/tags/list", lambda h, m: drip(h, 200, {}, [huge[i:i + 1 << 20] for i in range(0, len(huge), 1 << 20)], 0))
    with pytest.raises(RegistryError) as info:
        list(RegistryClient(front.host, plain_http=True).list_tags("r/app"))
    assert "over the 4 MiB limit" in str(info.value)


# -- TLS ------------------------------------------------------------------------------------

def _tls_registry(registry, servers, unique_repo, tmp_path):
    repo = unique_repo()
    pushed = push_image(registry, f"{repo}:v1")
    front = servers(upstream=registry, tls=True, workdir=tmp_path / "tls")
    return front, f"{front.host}/{repo}:v1", pushed


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_insecure_wins_over_a_ca_bundle_and_stays_quiet(registry, servers, unique_repo, tmp_path, variable):
    front, ref, pushed = _tls_registry(registry, servers, unique_repo, tmp_path)
    other = ScriptedServer(tls=True, workdir=tmp_path / "other")  # a CA that did not sign front's certificate
    other.httpd.server_close()
    result = run("inspect", ref, "--json", "--insecure", env={variable: str(other.cert_path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digest"] == pushed.digest
    assert result.stderr == ""  # no InsecureRequestWarning, no fall-back notice
    assert all(r[3] == "https" for r in front.records)


def test_certificate_failure_is_reported_whole_with_no_fall_back(registry, servers, unique_repo, tmp_path):
    front, ref, pushed = _tls_registry(registry, servers, unique_repo, tmp_path)
    result = run("inspect", ref)
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (f"Error: TLS certificate of {front.host} not trusted: certificate verify failed: "
                        f"self-signed certificate (--insecure skips verification)")
    assert all(r[3] == "https" for r in front.records), "fell back to plain HTTP after a certificate failure"
    # The control: with its certificate trusted, the same registry answers.
    result = run("inspect", ref, "--json", env={"REQUESTS_CA_BUNDLE": str(front.cert_path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digest"] == pushed.digest and result.stderr == ""


def test_plain_http_fall_back_for_loopback_is_announced_once(registry, unique_repo, tmp_path):
    repo = unique_repo()
    push_image(registry, f"{repo}:v1")
    result = run("index", tmp_path / "i.db", f"{registry.host}/{repo}:v1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(f"{registry.host} does not answer HTTPS") == 1, result.stderr
    assert "using plain HTTP" in result.stderr
    quiet = run("index", tmp_path / "i.db", f"{registry.host}/{repo}:v1", "--quiet", "--plain-http")
    assert "plain HTTP" not in quiet.stderr


# -- messages that name the cause -----------------------------------------------------------

def _private_image_with_docker_config(basic_registry, unique_repo, tmp_path, monkeypatch, config: str):
    "A private image, and $DOCKER_CONFIG holding ``config``: (reference, config directory)."
    repo = unique_repo()
    push_image(basic_registry, f"{repo}:v1")
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(config)
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    return f"{basic_registry.host}/{repo}:v1", config_dir


def test_unreadable_docker_config_is_named(basic_registry, unique_repo, tmp_path, monkeypatch):
    ref, config_dir = _private_image_with_docker_config(basic_registry, unique_repo, tmp_path, monkeypatch, '{"auths": {')
    result = run("inspect", ref)
    assert result.returncode != 0
    assert f"docker's config {config_dir / 'config.json'} is not valid JSON" in result.stderr
    debug = run("inspect", ref, "--debug")
    assert f"credentials for {basic_registry.host}: docker's config {config_dir / 'config.json'} is not valid JSON" in debug.stderr


def test_missing_creds_store_helper_is_named(basic_registry, unique_repo, tmp_path, monkeypatch):
    ref, _ = _private_image_with_docker_config(basic_registry, unique_repo, tmp_path, monkeypatch, '{"credsStore": "nosuchstore"}')
    result = run("inspect", ref)
    assert result.returncode != 0
    assert "docker's credential helper docker-credential-nosuchstore is not on PATH" in result.stderr


def test_a_web_server_is_not_a_registry(servers):
    web = servers()  # answers 404 with an HTML page to everything
    result = run("inspect", f"{web.host}/r/app:v1")
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        f"Error: {web.host} is not a registry: GET /v2/ answered HTTP 404 without the registry API's signs")


def test_index_refuses_a_platform_the_image_lacks(registry, unique_repo, tmp_path):
    repo = unique_repo()
    push_image(registry, f"{repo}:v1")  # linux/amd64 only
    ref = f"{registry.host}/{repo}:v1"
    expected = "has no platform linux/s390x (available: linux/amd64)"
    inspect = run("inspect", ref, "--platform", "linux/s390x")
    assert expected in inspect.stderr
    index = run("index", tmp_path / "i.db", ref, "--platform", "linux/s390x")
    assert index.returncode != 0
    assert expected in index.stdout + index.stderr
    assert "indexing it anyway" not in index.stdout + index.stderr
