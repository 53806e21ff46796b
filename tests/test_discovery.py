"""Discovery commands (tags, catalog, repos, search) and `index --from-file`.

tags and catalog run against the real registry; repos and search against
tests/harness/hubserver.py, a local server answering in the shapes Docker
documents for hub.docker.com, reached through $LAYERSLAYER_HUB_URL.
"""

import json
import time

import pytest
from click.testing import CliRunner
from harness.builder import layer, push_image
from harness.dbrows import rows
from harness.hubserver import HubServer

from layerslayer.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture
def hub(monkeypatch):
    server = HubServer().start()
    monkeypatch.setenv("LAYERSLAYER_HUB_URL", server.url)
    yield server
    server.stop()


def test_tags_follow_pagination(registry, unique_repo):
    repo = unique_repo()
    push_image(registry, f"{repo}:v1", tags=["v2", "v3", "latest", "1.0"])
    result = run("tags", f"{registry.host}/{repo}", "--page-size", "2")
    assert result.exit_code == 0, result.output
    assert sorted(result.output.split()) == ["1.0", "latest", "v1", "v2", "v3"]
    full = run("tags", f"{registry.host}/{repo}", "--full-ref", "--limit", "3")
    assert len(full.output.split()) == 3
    assert all(line.startswith(f"{registry.host}/{repo}:") for line in full.output.split())
    data = json.loads(run("tags", f"{registry.host}/{repo}", "--json").output)
    assert {d["tag"] for d in data} == {"1.0", "latest", "v1", "v2", "v3"}
    assert all(d["reference"] == f"{registry.host}/{repo}:{d['tag']}" for d in data)


def test_catalog_follows_link_pagination(registry_factory):
    reg = registry_factory("anonymous")
    for name in ("a/one", "a/two", "b/three", "c"):
        push_image(reg, f"{name}:v1")
    result = run("catalog", reg.host, "--page-size", "1")
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["a/one", "a/two", "b/three", "c"]
    assert run("catalog", reg.host, "--full-ref", "--limit", "2").output.split() == [f"{reg.host}/a/one", f"{reg.host}/a/two"]
    assert json.loads(run("catalog", reg.host, "--json", "--page-size", "3").output)[3] == {"reference": f"{reg.host}/c", "repository": "c"}


def test_catalog_refuses_docker_hub_and_references():
    for bad in ("docker.io", "localhost:5000/team/app"):
        result = run("catalog", bad)
        assert result.exit_code == 2
        assert result.output.startswith("Error: ") and len(result.output.splitlines()) == 1


def test_repos_lists_a_hub_namespace_across_pages(hub):
    hub.add_namespace("acme", [f"app{i:02d}" for i in range(25)])
    result = run("repos", "docker.io/acme", "--page-size", "10")
    assert result.exit_code == 0, result.output
    assert result.output.split() == [f"acme/app{i:02d}" for i in range(25)]
    assert [q.get("page") for path, q, _ in hub.requests] == [None, "2", "3"]
    data = json.loads(run("repos", "acme", "--json", "--limit", "12", "--page-size", "5").output)
    assert len(data) == 12
    assert data[11] == {
        "reference": "acme/app11", "namespace": "acme", "name": "app11", "description": "app11 image",
        "star_count": 11, "pull_count": 1011, "is_official": None, "last_updated": "2026-01-02T03:04:05.000000Z",
    }


def test_repos_unknown_namespace_and_bad_argument(hub):
    missing = run("repos", "docker.io/nobody")
    assert missing.exit_code == 1 and missing.output == "Error: namespace nobody not found on Docker Hub\n"
    bad = run("repos", "ghcr.io/acme")
    assert bad.exit_code == 2 and "Docker Hub namespace" in bad.output and len(bad.output.splitlines()) == 1


def test_search_official_images_have_no_namespace(hub):
    hub.add_namespace("library", ["redis", "postgres"], official=True)
    hub.add_namespace("bitnami", ["redis", "redis-cluster"])
    result = run("search", "redis", "--page-size", "2")
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["redis", "bitnami/redis", "bitnami/redis-cluster"]
    assert run("search", "redis", "--official").output.split() == ["redis"]
    data = json.loads(run("search", "redis", "--json").output)
    assert data[0]["reference"] == "redis" and data[0]["is_official"] is True and data[1]["namespace"] == "bitnami"


def test_hub_429_is_retried_after_retry_after(hub):
    hub.add_namespace("acme", ["one", "two"])
    hub.throttle(2, retry_after="0.3")
    started = time.monotonic()
    result = run("repos", "docker.io/acme")
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["acme/one", "acme/two"]
    assert len(hub.requests) == 3 and time.monotonic() - started >= 0.6


def test_hub_spent_budget_waits_for_the_reset(hub):
    hub.add_namespace("acme", [f"r{i}" for i in range(4)])
    hub.budget = (0, 1.0)  # the first page says: nothing left until the reset, a second from now
    result = run("repos", "docker.io/acme", "--page-size", "2")
    assert result.exit_code == 0, result.output
    first, second = hub.requests[0][2], hub.requests[1][2]
    assert second - first >= 0.9


def test_hub_next_page_on_another_host_is_refused(hub, monkeypatch):
    hub.add_namespace("acme", [f"r{i}" for i in range(4)])
    monkeypatch.setenv("LAYERSLAYER_HUB_URL", hub.url.replace("127.0.0.1", "localhost"))
    result = run("repos", "docker.io/acme", "--page-size", "2")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: localhost:") and "another host (127.0.0.1:" in result.output


def test_index_from_file_and_stdin(registry, unique_repo, tmp_path):
    repo = unique_repo()
    push_image(registry, f"{repo}:v1", layers=[layer({"a.txt": "a"})])
    push_image(registry, f"{repo}:v2", layers=[layer({"b.txt": "b"})])
    listing = run("tags", f"{registry.host}/{repo}", "--full-ref").output
    refs = tmp_path / "refs.txt"
    refs.write_text("# from `layerslayer tags`\n\n" + listing)
    db = tmp_path / "a.db"
    result = run("index", db, "--from-file", refs)
    assert result.exit_code == 0, result.output
    assert sorted(rows(db, "SELECT tag FROM images")) == [("v1",), ("v2",)]
    db2 = tmp_path / "b.db"
    result = run("index", db2, "--from-file", "-", input=listing)
    assert result.exit_code == 0, result.output
    assert sorted(rows(db2, "SELECT tag FROM images")) == [("v1",), ("v2",)]


def test_index_from_empty_file_or_nothing_is_a_usage_error(tmp_path):
    empty = tmp_path / "none.txt"
    empty.write_text("# nothing\n")
    result = run("index", tmp_path / "x.db", "--from-file", empty)
    assert result.exit_code == 2 and "holds no references" in result.output
    assert run("index", tmp_path / "x.db").exit_code == 2
