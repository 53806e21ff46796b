"""Shared fixtures: real registries, token server, fault proxy, docker config.

The harness lives in ``tests/harness``; pyproject's ``pythonpath = ["tests"]``
lets every test import it as ``from harness.builder import ...``. Registries are session-scoped and started
lazily on first use; each starts in well under a second.

Fixtures
--------
registry          session  anonymous docker-registry
basic_registry    session  htpasswd Basic auth (alice / s3cret-pa55)
token_registry    session  Bearer token auth; ``.token_server`` is the token server
token_server      function token_registry.token_server, reset (policy + records) before and after
fault_proxy       function fresh FaultProxy in front of ``registry`` (own port, no faults, empty records)
make_fault_proxy  function factory: make_fault_proxy(upstream, cdn_host=None) -> started FaultProxy,
                           stopped at teardown
registry_factory  function factory: registry_factory("anonymous"|"basic"|"token", catalog_max_entries=..)
docker_config     function DockerConfig in a tmp dir with auths for basic_registry; DOCKER_CONFIG set,
                           its bin/ (fake credential helpers) first on PATH
unique_repo       function factory: unique_repo("app") -> "t/<test-name>-app-<n>" never reused in the session
rng               function random.Random for a randomised test: seeded from $LAYERSLAYER_TEST_SEED
                           if set, else afresh; a failing test's report shows its seed
(autouse)                  DOCKER_CONFIG points at an empty dir so the developer's real
                           ~/.docker/config.json never leaks into a test

Markers
-------
integration  added here to every test that uses a real docker-registry (the registry fixtures,
             and so fault_proxy, token_server, docker_config) or Chromium (``chrome``)
slow         a test that takes more than 5 s on its own: set by hand, and here on every test
             that drives Chromium
``pytest -m "not integration and not slow"`` is the fast loop.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness.dockerconfig import DockerConfig
from harness.proxy import FaultProxy
from harness.registry import Registry
from harness.tokenserver import TokenServer

SEED_VARIABLE = "LAYERSLAYER_TEST_SEED"
_SEED = pytest.StashKey[int]()

# Fixtures that start a real program: a test using them (directly or through another fixture) is
# an integration test. A real browser also makes it slow (10 s and more a test).
INTEGRATION_FIXTURES = frozenset({"registry", "basic_registry", "token_registry", "registry_factory", "chrome"})
SLOW_FIXTURES = frozenset({"chrome"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if INTEGRATION_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.integration)
        if SLOW_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _integration_is_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    "A test that reaches a registry through request.getfixturevalue, unseen at collection, must say so."
    yield
    used = INTEGRATION_FIXTURES.intersection(request.fixturenames)
    if used and request.node.get_closest_marker("integration") is None:
        pytest.fail(f"uses {', '.join(sorted(used))} through getfixturevalue: mark it @pytest.mark.integration")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SEED in item.stash:
        report.sections.append(("random seed", f"rerun with {SEED_VARIABLE}={item.stash[_SEED]} to reproduce"))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    seed = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**32))
    request.node.stash[_SEED] = seed
    return random.Random(seed)


def _start(tmp_path_factory: pytest.TempPathFactory, flavour: str, **kw: object) -> Registry:
    return Registry(tmp_path_factory.mktemp(f"registry-{flavour}"), flavour, **kw).start()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = _start(tmp_path_factory, "anonymous")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = _start(tmp_path_factory, "basic")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = _start(tmp_path_factory, "token")
    yield reg
    reg.stop()


@pytest.fixture
def token_server(token_registry: Registry) -> Iterator[TokenServer]:
    ts = token_registry.token_server
    assert ts is not None
    ts.reset()
    yield ts
    ts.reset()


@pytest.fixture
def make_fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(upstream: object, **kw: object) -> FaultProxy:
        proxy = FaultProxy(upstream, **kw).start()  # type: ignore[arg-type]
        proxies.append(proxy)
        return proxy

    yield make
    for p in proxies:
        p.stop()


@pytest.fixture
def fault_proxy(registry: Registry, make_fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return make_fault_proxy(registry)


@pytest.fixture
def registry_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Registry]]:
    """For the rare test needing its own registry config (e.g. catalog_max_entries=2)."""
    started: list[Registry] = []

    def make(flavour: str = "anonymous", **kw: object) -> Registry:
        reg = _start(tmp_path_factory, flavour, **kw)
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture(autouse=True)
def _hermetic_docker_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = _empty_docker_config_dir(tmp_path_factory)
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))


_EMPTY_DIR: list[Path] = []


def _empty_docker_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _EMPTY_DIR:
        _EMPTY_DIR.append(tmp_path_factory.mktemp("empty-docker-config"))
    return _EMPTY_DIR[0]


@pytest.fixture
def docker_config(tmp_path: Path, basic_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> DockerConfig:
    cfg = DockerConfig(tmp_path / "docker-config")
    assert basic_registry.username and basic_registry.password
    cfg.add_auth(basic_registry.host, basic_registry.username, basic_registry.password)
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg.dir))
    monkeypatch.setenv("PATH", cfg.path_with_bin())
    return cfg


_REPO_COUNTER = itertools.count(1)


@pytest.fixture
def unique_repo(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Repository names valid for distribution ([a-z0-9]+([._-][a-z0-9]+)*), unique per session."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-") or "test"

    def make(suffix: str = "") -> str:
        suffix = re.sub(r"[^a-z0-9]+", "-", suffix.lower()).strip("-")
        parts = [base, suffix, str(next(_REPO_COUNTER))]
        return "t/" + "-".join(p for p in parts if p)

    return make
