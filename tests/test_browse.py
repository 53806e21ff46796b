"""`layerslayer browse`: the index in Datasette.

Everything runs against an index built by `layerslayer index` from images
pushed to the real test registry: canned queries and rendered cells through
``datasette.client``, the CLI's errors, the plugin picked up by a plain
``datasette``, and a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driving a ``layerslayer browse`` subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness.builder import dir_, empty, file, layer, push_image, push_index, symlink, whiteout
from harness.net import free_port
from support.index import BuiltIndex, build_index

from layerslayer import find, query, store
from layerslayer.browse.queries import canned_query_definitions
from layerslayer.browse.server import make_datasette
from layerslayer.browse.sqlfunctions import plan_keys
from layerslayer.cli import cli

MTIME_ISO = "2023-11-14T22:13:20Z"  # the harness's fixed mtime, 1_700_000_000

BASE = layer([
    dir_("etc"),
    file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    file("etc/os-release", "ID=test\n"),
    dir_("usr/bin"),
    file("usr/bin/sh", b"\x7fELF" * 5000, mode=0o755),
    file("usr/bin/sudo", b"\x7fELF", mode=0o4755),
    symlink("bin", "usr/bin"),
    dir_("root/.ssh", mode=0o700),
    file("root/.ssh/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n", mode=0o600),
])
APP = layer([
    dir_("app"),
    file("app/.env", "SECRET=1\n", mode=0o600),
    file("app/server.pem", "-----BEGIN CERTIFICATE-----\n"),
    file("app/server.py", "print('hi')\n"),
    file("app/big.bin", b"\0" * 300_000),
])
CLEANUP = layer([whiteout("app/.env"), file("app/README.md", "hello\n")])
WORKER = layer([
    dir_("srv"),
    file("srv/worker.py", "x = 1\n"),
    file("home/u/.aws/credentials", "[default]\n"),
    file("srv/Deploy.PEM", "upper-case extension\n"),
    file(b"srv/\xff\xfe-raw.key", b"key"),
])


@pytest.fixture(scope="module")
def index_db(registry, tmp_path_factory) -> BuiltIndex:
    prefix = f"t/browse-{uuid.uuid4().hex[:8]}"
    web = push_image(registry, f"{prefix}/web:1.0", layers=[BASE, APP, CLEANUP],
                     history=["ADD rootfs.tar /", "COPY app /app", empty("ENV MODE=prod"), "RUN rm /app/.env"])
    worker = push_image(registry, f"{prefix}/worker:2.1", layers=[BASE, WORKER])
    multi = push_index(registry, f"{prefix}/multi:latest", images=["linux/amd64", "linux/arm64/v8"])
    path = tmp_path_factory.mktemp("browse") / "index.db"
    return build_index(path, [web.ref, worker.ref], [multi.ref, "--all-platforms"], web=web, worker=worker, multi=multi)


class Client:
    "Datasette's own client, on one event loop for the whole module."

    def __init__(self, datasette):
        self.datasette = datasette
        self.loop = asyncio.new_event_loop()
        self.run(datasette.invoke_startup())

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def get(self, path: str, **kw):
        return self.run(self.datasette.client.get(path, **kw))

    def html(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:2000])
        return response.text

    def rows(self, path: str) -> list[dict]:
        "Every row of a table, view or query page, as JSON."
        base, _, query_string = path.partition("?")
        response = self.get(f"{base}.json?{query_string}&_shape=array&_size=max")
        assert response.status_code == 200, (path, response.text[:2000])
        return response.json()

    def close(self):
        self.loop.close()


@pytest.fixture(scope="module")
def client(index_db) -> Client:
    c = Client(make_datasette(index_db.path))
    yield c
    c.close()


def q(url: str, **params) -> str:
    return url + "?" + urllib.parse.urlencode(params)


# ---------------------------------------------------------------------------
# Pages


def test_home_page_starts_the_recon(client, index_db):
    page = client.html("/")
    assert "<title>layerslayer: index</title>" in page
    [(entries,)] = index_db.rows("SELECT sum(entries) FROM layers")
    assert f"3 images, 4 platforms, 6 layers (6 indexed), {entries} file entries" in " ".join(page.split())
    assert 'action="/index/files_by_glob"' in page and 'name="pattern"' in page
    assert 'name="ignore_case"' in page
    for query_name, definition in canned_query_definitions().items():
        assert f'href="/index/{query_name}"' in page
        assert html.escape(definition["title"]) in page


def test_database_page_lists_the_queries_with_titles(client):
    page = client.html("/index")
    assert "Files matching a glob" in page and "Secrets preset" in page
    assert "Ghost files (deleted by a later layer)" in page
    assert "Layers shared by several images" in page and "Images that contain a path" in page
    assert "Custom SQL query" in page  # read-only SQL stays available
    assert ">paths_fts<" not in page  # hidden


def test_every_table_view_and_column_is_described(client, index_db):
    metadata = client.get("/-/metadata.json").json()
    assert metadata["title"] == "layerslayer"
    tables = metadata["databases"]["index"]["tables"]
    names = [name for (name,) in index_db.rows(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE 'paths_fts%' AND name != '_sqlite_migrations'")]
    for name in names:
        assert tables[name].get("description"), name
        columns = [row[1] for row in index_db.rows(f"PRAGMA table_info([{name}])")]
        described = tables[name].get("columns", {})
        missing = [c for c in columns if not described.get(c)]
        assert not missing, (name, missing)
    assert tables["images"]["label_column"] == "reference"
    assert tables["layers"]["label_column"] == "digest"
    assert tables["paths_fts"]["hidden"] is True


def test_table_pages_have_sorts_facets_and_labels(client, index_db):
    layers = client.rows("/index/layers")
    sizes = [row["size"] for row in layers]
    assert sizes == sorted(sizes, reverse=True)
    page = client.html("/index/image_files")
    for facet in ("image", "platform", "type"):
        assert f'data-column="{facet}"' in page
    assert "name (extension)" in page
    assert "?name__endswith=.pem" in page or "name__endswith=.pem" in html.unescape(page)
    # Foreign keys read as names: platforms.image_id shows the image reference.
    page = client.html("/index/platforms")
    assert index_db.web.ref in page


def test_extension_facet_filters_by_suffix(client):
    data = client.get("/index/image_files.json?_facet_extension=name&_size=0").json()
    facet = data["facet_results"]["name"]
    counts = {v["value"]: v["count"] for v in facet["results"]}
    assert counts["pem"] == 2 and counts["py"] == 2 and counts["key"] == 1  # .pem and .PEM
    pem = next(v for v in facet["results"] if v["value"] == "pem")
    assert "name__endswith=.pem" in urllib.parse.unquote(pem["toggle_url"])
    rows = client.rows("/index/image_files?name__endswith=.pem")
    assert sorted(r["path"] for r in rows) == ["app/server.pem", "srv/Deploy.PEM"]


def test_path_search_uses_the_trigram_index(client):
    rows = client.rows(q("/index/image_files", _search="passwd"))
    assert {(r["image"], r["path"]) for r in rows} == {
        (r["image"], "etc/passwd") for r in rows} and len(rows) == 2
    rows = client.rows(q("/index/paths", _search="ssh id_r"))
    assert [r["path"] for r in rows] == ["root/.ssh/id_rsa"]
    rows = client.rows(q("/index/paths", _search="ab"))  # too short for trigrams: nothing, no error
    assert rows == []


# ---------------------------------------------------------------------------
# Canned queries


def key(row: dict) -> tuple:
    return (row["image"], row["platform"], row["layer"], row["path"], row["state"])


def find_keys(index_db, patterns=(), **options) -> set:
    conn = sqlite3.connect(index_db.path)
    try:
        hits = find.find(conn, list(patterns), **options)
    finally:
        conn.close()
    out = set()
    for hit in hits:
        state = "deleted" if hit.deleted else "visible" if hit.visible else "overwritten"
        out.add((hit.image, hit.platform, hit.layer_index, store.path_text(hit.path)[0], state))
    return out


def test_glob_query_rows(client, index_db):
    web, worker = index_db.web.ref, index_db.worker.ref
    rows = client.rows(q("/index/files_by_glob", pattern="*.pem"))
    assert [key(r) for r in rows] == [(web, "linux/amd64", 1, "app/server.pem", "visible")]
    row = rows[0]
    assert row["layer_digest"] == APP.digest and row["type"] == "file" and row["size"] == 28
    rows = client.rows(q("/index/files_by_glob", pattern=".env"))
    assert [key(r) for r in rows] == [(web, "linux/amd64", 1, "app/.env", "deleted")]
    rows = client.rows(q("/index/files_by_glob", pattern="/etc/passwd"))
    assert sorted(r["image"] for r in rows) == sorted([web, worker])
    rows = client.rows(q("/index/files_by_glob", pattern="*", image="worker"))
    assert rows and {r["image"] for r in rows} == {worker}
    assert client.rows(q("/index/files_by_glob", pattern="")) == []
    assert client.rows("/index/files_by_glob") == []


@pytest.mark.parametrize("pattern", [
    "*.pem", "id_rsa", "id_rsa*", "/etc/passwd", "etc/*", "/usr/bin/s?*", "*.c", "?", "*passwd*",
    ".env*", "*[!a-z]*", "srv/??-raw.key", "*.key", "[a-z]*.py", "bin", "nothing-like-this",
])
def test_glob_query_agrees_with_find(client, index_db, pattern):
    rows = client.rows(q("/index/files_by_glob", pattern=pattern))
    assert {key(r) for r in rows} == find_keys(index_db, [pattern])
    assert len(rows) == len({key(r) for r in rows})


@pytest.mark.parametrize("pattern", [
    "*.PEM", "ID_RSA", "Id_Rsa*", "/ETC/PASSWD", "ETC/*", "*PASSWD*", ".ENV*", "SRV/??-RAW.KEY", "*.C", "BIN",
])
def test_glob_query_ignore_case_agrees_with_find_i(client, index_db, pattern):
    rows = client.rows(q("/index/files_by_glob", pattern=pattern, ignore_case="1"))
    expected = find_keys(index_db, [pattern], ignore_case=True)
    assert {key(r) for r in rows} == expected and len(rows) == len(expected)
    sensitive = find_keys(index_db, [pattern])
    for off in ({}, {"ignore_case": ""}, {"ignore_case": "0"}):
        assert {key(r) for r in client.rows(q("/index/files_by_glob", pattern=pattern, **off))} == sensitive
    if pattern not in ("*.C", "BIN"):
        assert expected > sensitive, "folding case must find more"


def test_glob_query_follows_finds_plan(client):
    plans = {p: plan_keys(p) for p in ("id_rsa", "/etc/passwd", "etc/ssh/*", "*.pem", "*.c")}
    assert plans["id_rsa"] == {"name": "id_rsa"}
    assert plans["/etc/passwd"] == {"path": "etc/passwd"}
    assert plans["etc/ssh/*"] == {"path>=": "etc/ssh/", "path<": "etc/ssh0"}
    assert set(plans["*.pem"]) == {"trigram"}
    assert plans["*.c"]["scan"] == 1


def test_secrets_query_agrees_with_find_preset(client, index_db):
    rows = client.rows("/index/secrets")
    got = {key(r) for r in rows}
    assert got == find_keys(index_db, presets=["secrets"])
    paths = {r["path"] for r in rows}
    assert {"root/.ssh/id_rsa", "app/.env", "app/server.pem", "srv/Deploy.PEM", "home/u/.aws/credentials",
            "srv/\\xff\\xfe-raw.key"} <= paths
    assert "srv/worker.py" not in paths
    web = client.rows(q("/index/secrets", image="web"))
    assert web and {r["image"] for r in web} == {index_db.web.ref}


def test_ghost_files_query(client, index_db):
    rows = client.rows("/index/deleted_files")
    assert [(r["image"], r["layer"], r["path"], r["deleted_in_layer"], r["deleted_by"], r["recreated"])
            for r in rows] == [(index_db.web.ref, 1, "app/.env", 2, "app/.wh..env", 0)]
    assert find_keys(index_db, ["*"], deleted=True) == {
        (r["image"], r["platform"], r["layer"], r["path"], "deleted") for r in rows}
    assert client.rows(q("/index/deleted_files", image="worker")) == []
    # The view of the same name stays reachable, with its filters.
    web_id = index_db.image_id(index_db.web.ref)
    assert [r["path"] for r in client.rows(f"/index/ghost_files?image_id={web_id}")] == ["app/.env"]
    assert client.rows(f"/index/ghost_files?image_id={index_db.image_id(index_db.worker.ref)}") == []


def test_largest_files_query(client, index_db):
    rows = client.rows("/index/largest_files")
    assert [(r["path"], r["size"]) for r in rows[:3]] == [
        ("app/big.bin", 300_000), ("usr/bin/sh", 20_000), ("usr/bin/sh", 20_000)]
    sizes = [r["size"] for r in rows]
    assert sizes == sorted(sizes, reverse=True)
    assert {r["type"] for r in rows} == {"file"}
    rows = client.rows(q("/index/largest_files", image="worker"))
    assert rows[0]["path"] == "usr/bin/sh" and {r["image"] for r in rows} == {index_db.worker.ref}


def test_shared_layers_query(client, index_db):
    rows = client.rows("/index/shared_layers")
    assert [(r["layer_digest"], r["image_count"]) for r in rows] == [(BASE.digest, 2)]
    assert sorted(json.loads(rows[0]["images"])) == sorted([index_db.web.ref, index_db.worker.ref])
    assert client.rows(q("/index/shared_layers", image="multi")) == []
    assert len(client.rows(q("/index/shared_layers", image="worker"))) == 1


def test_images_with_path_query(client, index_db):
    for path in ("/root/.ssh/id_rsa", "root/.ssh/id_rsa", "./root/.ssh/id_rsa/"):
        rows = client.rows(q("/index/images_with_path", path=path))
        assert sorted(r["image"] for r in rows) == sorted([index_db.web.ref, index_db.worker.ref]), path
    rows = client.rows(q("/index/images_with_path", path="/app/.env"))
    assert [key(r) for r in rows] == [(index_db.web.ref, "linux/amd64", 1, "app/.env", "deleted")]
    rows = client.rows(q("/index/images_with_path", path="/etc/platform"))
    assert sorted(r["platform"] for r in rows) == ["linux/amd64", "linux/arm64/v8"]
    assert client.rows(q("/index/images_with_path", path="/nope")) == []


def test_canned_queries_are_read_only_and_have_form_parameters(client, index_db):
    names = {name for (name,) in index_db.rows("SELECT name FROM sqlite_master")}
    assert not names & set(canned_query_definitions())  # a query would hide a table or view of its name
    queries = client.get("/index.json").json()["queries"]
    by_name = {query["name"]: query for query in queries}
    assert set(by_name) == set(canned_query_definitions())
    assert by_name["files_by_glob"]["params"] == ["pattern", "ignore_case", "image"]
    assert by_name["images_with_path"]["params"] == ["path"]
    assert not any(query.get("write") for query in queries)
    page = client.html(q("/index/files_by_glob", pattern="*.pem"))
    assert 'name="pattern"' in page and 'value="*.pem"' in page


# ---------------------------------------------------------------------------
# Rendered cells


def cells(page: str, column: str) -> list[str]:
    "The inner HTML of every <td> of a column."
    return re.findall(rf'<td class="col-{re.escape(column)}[^"]*">(.*?)</td>', page, re.S)


def test_cells_of_the_glob_query(client, index_db):
    page = client.html(q("/index/files_by_glob", pattern="*"))
    digest = APP.digest
    short = digest[:19] + "\u2026"
    assert f'title="{digest}"' in page and short in page
    assert f'href="/-/layerslayer/index/layer/{digest}"' in page
    assert "300.0 KB" in page and 'title="300,000 bytes"' in page
    modes = {m for c in cells(page, "mode") for m in re.findall(r">([-dlhcbp?][-rwxsStT]{9})<", c)}
    assert {"-rw-------", "-rwsr-xr-x", "drwx------", "lrwxrwxrwx", "-rwxr-xr-x"} <= modes
    assert f'<time datetime="{MTIME_ISO}"' in page
    reference = urllib.parse.urlencode({"reference": index_db.web.ref})
    assert f'href="/-/layerslayer/index/image?{html.escape(reference)}"' in page
    path_link = urllib.parse.urlencode({"path": "/app/server.pem"})
    assert f'href="/index/images_with_path?{html.escape(path_link)}"' in page


def test_cells_of_tables_and_views(client, index_db):
    app_id = index_db.layer_id(APP.digest)
    page = client.html(f"/index/files?layer_id={app_id}")
    assert f'href="/index/layers/{app_id}"' in page  # file -> layer, directly by id
    assert "-rw-------" in page and MTIME_ISO in page
    page = client.html(f"/index/entries?layer_id={app_id}")
    assert ">file<" in page and ">dir<" in page  # type codes as names
    assert f'<a href="/index/layers/{app_id}" title="{APP.digest}">' in page  # expanded foreign key, short digest
    page = client.html(f"/index/entries?layer_id={index_db.layer_id(CLEANUP.digest)}")
    assert ">whiteout<" in page
    page = client.html("/index/layers")
    assert f'href="/index/files?layer_id={app_id}&amp;_sort=position"' in page  # entries -> the layer's files
    page = client.html("/index/platforms")
    assert f'title="{index_db.web.digest}"' in page  # manifest digest shortened, full on hover
    page = client.html("/index/image_layers")
    web_id = index_db.image_id(index_db.web.ref)
    assert f'href="/index/images/{web_id}"' in page  # image -> its row


def test_non_index_databases_are_left_alone(index_db, tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, size INTEGER, mode INTEGER, digest TEXT)")
    conn.execute("INSERT INTO things VALUES (1, 300000, 493, ?)", [APP.digest])
    conn.commit()
    conn.close()
    from datasette.app import Datasette

    c = Client(Datasette([str(index_db.path), str(other)]))
    try:
        page = c.html("/other/things")
        assert ">300000<" in page and ">493<" in page and APP.digest in page and "300.0 KB" not in page
        assert c.get("/other.json").json()["queries"] == []
        assert "title" not in c.get("/-/metadata.json").json()  # not every database is an index
        assert c.get("/index/files_by_glob.json?pattern=*.pem&_shape=array").json()
    finally:
        c.close()


# ---------------------------------------------------------------------------
# For a recon user


def headers(page: str) -> list[str]:
    return re.findall(r'<th[^>]* class="col-([^" ]+)[^"]*" scope="col"', page)


def notice(page: str) -> str:
    found = re.findall(r'<p class="ll-notice">(.*?)</p>', page, re.S)
    return html.unescape(found[0]) if found else ""


def test_find_box_shows_one_glob_and_says_how_a_word_matches(client, index_db):
    page = client.html("/")
    [placeholder] = re.findall(r'name="pattern"[^>]*placeholder="([^"]*)"', page)
    assert placeholder == "*.pem"
    hint = " ".join(html.unescape(re.sub("<[^>]+>", "", page)).split())
    assert "A word without * ? [ is an exact file name (id_rsa finds files named exactly that)" in hint
    assert "*key* finds names containing key" in hint
    # And that is what the glob query does.
    assert {r["path"] for r in client.rows(q("/index/files_by_glob", pattern="id_rsa"))} == {"root/.ssh/id_rsa"}
    assert client.rows(q("/index/files_by_glob", pattern="rsa")) == []
    assert client.rows(q("/index/files_by_glob", pattern="id_")) == []
    assert {r["path"] for r in client.rows(q("/index/files_by_glob", pattern="*rsa*"))} == {"root/.ssh/id_rsa"}


@pytest.mark.parametrize("view", ["files", "image_files", "visible_files", "ghost_files"])
def test_file_tables_lead_with_path_type_size_mode_image(client, view):
    columns = headers(client.html(f"/index/{view}"))
    first = ["path", "type", "size", "mode"] + (["image"] if view != "files" else [])
    assert columns[:len(first)] == first
    ids = [c for c in columns if c.endswith("_id") or c == "position"]
    assert ids and columns[-len(ids):] == ids
    # Columns chosen by hand are left alone, and so are JSON and CSV.
    assert headers(client.html(f"/index/{view}?_col=name&_col=path")) == ["name", "path"]
    assert list(client.rows(f"/index/{view}")[0])[0] in ("image_id", "layer_id")


@pytest.mark.parametrize("query", ["files_by_glob?pattern=*.pem", "secrets", "deleted_files", "largest_files",
                                   "images_with_path?path=/etc/passwd"])
def test_file_queries_lead_with_path_type_size_mode_image(client, query):
    assert headers(client.html(f"/index/{query}"))[:5] == ["path", "type", "size", "mode", "image"]


def test_short_searches_and_bad_globs_say_why_they_find_nothing(client):
    for url in ("/index/paths?_search=ab", "/index/image_files?_search=id"):
        page = client.html(url)
        assert "each word needs at least 3 characters" in notice(page), url
    assert "left out 'id': words need at least 3 characters" in notice(client.html("/index/paths?_search=id+rsa"))
    assert notice(client.html("/index/paths?_search=passwd")) == ""
    page = client.get(q("/index/files_by_glob", pattern="[z-a]")).text
    assert "No file can match '[z-a]': it is not a valid glob (bad character range z-a)." in notice(page)
    assert notice(client.html(q("/index/files_by_glob", pattern=""))).startswith("Type a pattern")
    assert notice(client.html(q("/index/files_by_glob", pattern="*.pem"))) == ""
    assert notice(client.html("/index/files_by_glob")) == ""  # the empty form, before any search


def test_ghost_rows_carry_a_ready_to_copy_extract_command(client, index_db, tmp_path, monkeypatch):
    [row] = client.rows("/index/deleted_files")
    command = row["extract"]
    assert command == f"layerslayer extract {index_db.web.ref}@{index_db.web.digest} /app/.env --layer 1"
    page = client.html("/index/deleted_files")
    assert f'data-copy="{html.escape(command)}"' in page
    web_id = index_db.image_id(index_db.web.ref)
    assert f'data-copy="{html.escape(command)}"' in client.html(f"/index/ghost_files?image_id={web_id}")
    # It writes the deleted file from its layer.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    [written] = [p for p in tmp_path.rglob(".env") if p.is_file()]  # under extract's default directory
    assert written.parts[-2:] == ("app", ".env") and written.read_text() == "SECRET=1\n"


def test_ghost_commands_match_odd_names_exactly():
    from layerslayer.browse.sqlfunctions import ghost_extract_command
    from layerslayer.patterns import compile_patterns

    for path in ("a*b/[x]?.txt", "odd/\udcff-raw", "esc/\x1b]0;title\x07", "sp ace/'quote'"):
        command = ghost_extract_command("r.example", "team/app", "v1", "sha256:" + "a" * 64, None, "linux/amd64",
                                        2, path)
        assert command.isprintable(), command
        pattern = shlex.split(command)[3]
        matcher = compile_patterns([pattern])
        assert matcher(path) and not matcher(path + "x") and not matcher("x" + path), (path, pattern)
    multi = ghost_extract_command("r.example", "team/app", None, "sha256:" + "a" * 64,
                                  "application/vnd.oci.image.index.v1+json", "linux/arm64/v8", 0, "etc/shadow")
    assert multi == f"layerslayer extract r.example/team/app@sha256:{'a' * 64} /etc/shadow --platform linux/arm64/v8 --layer 0"


def test_images_overview_shows_platforms_files_and_size_like_the_cli(client, index_db):
    page = client.html("/")
    assert 'href="/index/images_overview">images</a>' in page
    rows = {r["image"]: r for r in client.rows("/index/images_overview")}
    conn = sqlite3.connect(index_db.path)
    try:
        summaries = query.list_images(conn)
    finally:
        conn.close()
    assert set(rows) == {s.reference for s in summaries}
    for s in summaries:
        row = rows[s.reference]
        layers = str(s.layers) if s.layers == s.layers_indexed else f"{s.layers_indexed}/{s.layers}"
        assert (row["platforms"], row["layers"], row["files"], row["size"], row["image_digest"]) == (
            ", ".join(p.platform for p in s.platforms), layers, s.files, s.size, s.digest)
    assert rows[index_db.multi.ref]["platforms"] == "linux/amd64, linux/arm64/v8"
    page = client.html("/index/images_overview")
    assert headers(page)[:5] == ["image", "platforms", "layers", "files", "size"]
    assert f'href="/index/images/{index_db.image_id(index_db.web.ref)}">{index_db.web.ref}</a>' in page


def test_row_pages_are_titled_by_what_they_show(client, index_db):
    page = client.html(f"/index/images/{index_db.image_id(index_db.web.ref)}")
    assert f"<title>Image {index_db.web.ref} · index</title>" in page
    assert re.search(rf"<h1[^>]*>Image {re.escape(index_db.web.ref)}</h1>", page)
    page = client.html(f"/index/layers/{index_db.layer_id(APP.digest)}")
    short = APP.digest[:19] + "\u2026"
    assert f"<title>Layer {short} · index</title>" in page
    assert re.findall(r"<h1[^>]*>(.*?)</h1>", page, re.S) == [f"Layer {short}"]  # not "layers: 2"


# ---------------------------------------------------------------------------
# Layer and image pages, and the commands they show


def commands(page: str, css: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(rf'<pre class="ll-command {css}">(.*?)</pre>', page, re.S)]


def test_layer_page_links_images_and_fetch_commands(client, index_db, registry, tmp_path, monkeypatch):
    layer_id = index_db.layer_id(BASE.digest)
    page = client.html(f"/index/layers/{layer_id}")
    assert f'<code class="ll-full">{BASE.digest}</code>' in page
    assert "Used by 2 images" in page
    for pushed in (index_db.web, index_db.worker):
        assert f'href="/index/images/{index_db.image_id(pushed.ref)}">{pushed.ref}</a>' in page
    pinned = f"{index_db.web.ref}@{index_db.web.digest}"
    [save] = commands(page, "ll-save")
    [extract] = commands(page, "ll-extract")
    hex12 = BASE.digest.split(":")[1][:12]
    assert save == f"layerslayer save {pinned} --layer {BASE.digest}"
    assert extract == f"layerslayer extract {pinned} '*' --layer 0 -o {hex12}"

    # They are the real commands: run them against the registry.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, shlex.split(save)[1:])
    assert result.exit_code == 0, result.output
    [saved] = [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]
    assert "sha256:" + hashlib.sha256(saved.read_bytes()).hexdigest() == BASE.digest
    result = CliRunner().invoke(cli, shlex.split(extract)[1:])
    assert result.exit_code == 0, result.output
    assert (tmp_path / hex12 / "root/.ssh/id_rsa").read_text().startswith("-----BEGIN OPENSSH")
    assert (tmp_path / hex12 / "etc/passwd").exists()


def test_layer_page_of_a_multi_platform_image_names_the_platform(client, index_db, tmp_path, monkeypatch):
    arm = next(img for img in index_db.multi.images if str(img.platform) == "linux/arm64/v8")
    digest = arm.layers[0].digest
    page = client.html(f"/index/layers/{index_db.layer_id(digest)}")
    pinned = f"{index_db.multi.ref}@{index_db.multi.digest}"
    [save] = commands(page, "ll-save")
    [extract] = commands(page, "ll-extract")
    assert save == f"layerslayer save {pinned} --platform linux/arm64/v8 --layer {digest}"
    assert extract == f"layerslayer extract {pinned} '*' --platform linux/arm64/v8 --layer 0 -o {digest[7:19]}"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, shlex.split(extract)[1:])
    assert result.exit_code == 0, result.output
    assert (tmp_path / digest[7:19] / "etc/platform").read_text() == "linux/arm64/v8\n"


def test_layer_page_lists_its_files_and_ghosts(client, index_db):
    app_id = index_db.layer_id(APP.digest)
    page = client.html(f"/index/layers/{app_id}")
    assert f'href="/index/files?layer_id={app_id}&amp;_sort=position">List its 5 entries</a>' in page
    ghosts = client.rows(f"/index/ghost_files?layer_id={app_id}")
    assert [g["path"] for g in ghosts] == ["app/.env"]
    files = client.rows(f"/index/files?layer_id={app_id}&_sort=position")
    assert [f["path"] for f in files] == ["app", "app/.env", "app/server.pem", "app/server.py", "app/big.bin"]


def test_image_page_lists_layers_per_platform(client, index_db):
    web_id = index_db.image_id(index_db.web.ref)
    page = client.html(f"/index/images/{web_id}")
    assert "Layers of linux/amd64" in page
    for lay in (BASE, APP, CLEANUP):
        assert f'href="/index/layers/{index_db.layer_id(lay.digest)}" title="{lay.digest}"' in page
    assert "COPY app /app" in page and "RUN rm /app/.env" in page
    [save_all] = commands(page, "ll-save-all")
    assert save_all == f"layerslayer save {index_db.web.ref}@{index_db.web.digest} --all"
    assert f'href="/index/ghost_files?image_id={web_id}"' in page
    page = client.html(f"/index/images/{index_db.image_id(index_db.multi.ref)}")
    assert "Layers of linux/amd64" in page and "Layers of linux/arm64/v8" in page
    assert "--platform linux/arm64/v8 --all" in page


def test_redirects_from_query_results(client, index_db):
    response = client.get(f"/-/layerslayer/index/layer/{APP.digest}")
    assert response.status_code == 302
    assert response.headers["location"] == f"/index/layers/{index_db.layer_id(APP.digest)}"
    assert client.get("/-/layerslayer/index/layer/sha256:" + "0" * 64).status_code == 404
    assert client.get(f"/-/layerslayer/nope/layer/{APP.digest}").status_code == 404
    response = client.get(q("/-/layerslayer/index/image", reference=index_db.worker.ref))
    assert response.status_code == 302
    assert response.headers["location"] == f"/index/images/{index_db.image_id(index_db.worker.ref)}"
    response = client.get(q("/-/layerslayer/index/image", reference="unknown:tag"))
    assert response.status_code == 302 and response.headers["location"].startswith("/index/images?")


# ---------------------------------------------------------------------------
# Read-only, and live


def test_connections_are_read_only(client, index_db):
    before = hashlib.sha256(index_db.path.read_bytes()).hexdigest()
    db = client.datasette.get_database("index")
    assert db.is_mutable  # mode=ro, not immutable=1: see test_sees_layers_indexed_while_serving

    def attempt(conn):
        assert conn.execute("PRAGMA query_only").fetchone()[0] == 1
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("DELETE FROM images")
        return True

    assert client.run(db.execute_fn(attempt))
    assert client.get("/index.json?sql=DELETE+FROM+images").status_code == 400
    response = client.get("/index/files_by_glob?pattern=*.pem", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert hashlib.sha256(index_db.path.read_bytes()).hexdigest() == before
    assert client.get("/index.db").status_code in (403, 404)  # no whole-file download


def test_sees_layers_indexed_while_serving(registry, tmp_path):
    prefix = f"t/browse-live-{uuid.uuid4().hex[:8]}"
    first = push_image(registry, f"{prefix}/a:1", layers=[layer({"a.txt": "a"})])
    second = push_image(registry, f"{prefix}/b:1", layers=[layer({"b.pem": "b"})])
    db = tmp_path / "live.db"
    assert CliRunner().invoke(cli, ["index", str(db), first.ref]).exit_code == 0
    c = Client(make_datasette(db))
    try:
        assert c.rows(q("/live/files_by_glob", pattern="*.pem")) == []
        assert "1 image," in c.html("/")
        # Another process indexes into the same file while Datasette has it open.
        result = subprocess.run([sys.executable, "-m", "layerslayer", "index", str(db), second.ref],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert [r["path"] for r in c.rows(q("/live/files_by_glob", pattern="*.pem"))] == ["b.pem"]
        assert "2 images," in c.html("/")
    finally:
        c.close()


# ---------------------------------------------------------------------------
# The command


def test_browse_refuses_what_is_not_an_index(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["browse", str(tmp_path / "missing.db")])
    assert result.exit_code == 2 and "No layerslayer index at" in result.output
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = runner.invoke(cli, ["browse", str(text)])
    assert result.exit_code == 2 and "not an SQLite database" in result.output
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    result = runner.invoke(cli, ["browse", str(other)])
    assert result.exit_code == 2 and "SQLite database but not a layerslayer index" in result.output
    assert "Traceback" not in result.output


def test_browse_reports_a_busy_port(index_db):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["browse", str(index_db.path), "--port", str(port)])
    assert result.exit_code == 1
    assert f"Error: Cannot listen on 127.0.0.1:{port}: Address already in use" in result.output
    assert "--port 0" in result.output


def test_browse_open_prints_the_url_and_opens_it(index_db, monkeypatch):
    import webbrowser

    import uvicorn

    from layerslayer.browse import server as browse

    served, opened = [], []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets[0].getsockname()))
    monkeypatch.setattr(webbrowser, "open", opened.append)
    result = CliRunner().invoke(cli, ["browse", str(index_db.path), "--port", "0", "--open"])
    assert result.exit_code == 0, result.output
    host, port = served[0][:2]
    url = f"http://127.0.0.1:{port}/"
    assert host == "127.0.0.1" and opened == [url]
    assert result.output == f"Serving {index_db.path} read-only at {url}  (Ctrl-C to stop)\nStopped.\n"
    assert browse._is_loopback("127.0.0.1") and browse._is_loopback("::1") and browse._is_loopback("localhost")
    assert not browse._is_loopback("0.0.0.0") and not browse._is_loopback("192.0.2.1")


def test_plain_datasette_picks_up_the_plugin(index_db):
    "The `datasette` entry point: a plain `datasette DB` gets the queries and cells too."
    datasette = shutil.which("datasette") or os.path.join(os.path.dirname(sys.executable), "datasette")
    result = subprocess.run(
        [datasette, str(index_db.path), "--get", "/index/files_by_glob.json?pattern=*.pem&_shape=array"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [row["path"] for row in json.loads(result.stdout)] == ["app/server.pem"]


def start_browse(db: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    "`layerslayer browse` in a subprocess on a free port; returns it and the URL it printed."
    for _attempt in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "layerslayer", "browse", str(db), "--port", str(port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = proc.stdout.readline()
        match = re.search(r"read-only at (http://127\.0\.0\.1:\d+/)", line)
        if match:
            return proc, match.group(1)
        proc.kill()
        proc.wait()
    raise AssertionError(f"browse did not start: {line!r} {proc.stderr.read()}")


def stop_browse(proc: subprocess.Popen) -> tuple[str, str]:
    "Ctrl-C: a clean exit, no traceback."
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"browse did not stop on SIGINT: {err}")
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert out.strip().endswith("Stopped."), out
    return out, err


def test_browse_serves_until_ctrl_c(index_db):
    import urllib.request

    proc, url = start_browse(index_db.path)
    try:
        with urllib.request.urlopen(url + "index/files_by_glob.json?pattern=id_rsa&_shape=array", timeout=30) as r:
            assert [row["path"] for row in json.load(r)] == ["root/.ssh/id_rsa"] * 2
        with urllib.request.urlopen(url, timeout=30) as r:
            assert b"layerslayer" in r.read()
    finally:
        stop_browse(proc)


def raw_get(url: str, host_header: str | None) -> tuple[int, bytes]:
    "A GET over a bare socket with exactly this Host header (None: none at all, HTTP/1.0)."
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        if host_header is None:
            conn.sendall(b"GET /index.json HTTP/1.0\r\n\r\n")
        else:
            conn.sendall(f"GET /index.json HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_browse_answers_only_its_own_host_names(index_db):
    "DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 gets nothing."
    proc, url = start_browse(index_db.path)
    port = urllib.parse.urlsplit(url).port
    try:
        for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
            status, body = raw_get(url, good)
            assert status == 200 and b"files_by_glob" in body, good
        for bad in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                    f"localhost:{port + 1}", "127.0.0.1", "", None):
            status, body = raw_get(url, bad)
            assert status == 400 and b"files_by_glob" not in body, bad
            assert b"DNS rebinding" in body or bad is None
    finally:
        stop_browse(proc)


def test_browse_host_names_follow_the_bound_address():
    from layerslayer.browse.server import allowed_hosts, host_allowed

    assert allowed_hosts("127.0.0.1", 8001) == {"127.0.0.1:8001", "localhost:8001", "[::1]:8001"}
    assert allowed_hosts("192.0.2.7", 8080) == {"192.0.2.7:8080"}
    assert allowed_hosts("Recon.Example", 80) == {"recon.example"}
    assert allowed_hosts("::1", 9) == {"[::1]:9", "localhost:9", "127.0.0.1:9"}
    # Every interface: IP literals (not rebindable) and this machine's names, on our port.
    assert allowed_hosts("0.0.0.0", 8001) is None
    assert host_allowed("192.0.2.7:8001", None, 8001) and host_allowed("[2001:db8::1]:8001", None, 8001)
    assert host_allowed(f"{socket.gethostname()}:8001", None, 8001)
    assert not host_allowed("evil.example:8001", None, 8001) and not host_allowed("192.0.2.7:9", None, 8001)


# ---------------------------------------------------------------------------
# A real browser


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def chrome(tmp_path, monkeypatch):
    "Headless Chromium from Debian's packages through its chromedriver; never a download."
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common import selenium_manager
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:  # the README's install command installs them: never skip, fail loudly
        pytest.fail(f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)")

    def no_download(*args, **kwargs):
        raise AssertionError("Selenium Manager must not run (it would download a browser or driver)")

    monkeypatch.setattr(selenium_manager.SeleniumManager, "binary_paths", no_download)
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def screenshot(driver, path: Path) -> Path:
    "The whole page, beyond the window (Chrome DevTools Protocol)."
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def keep_screenshots(directory: Path) -> None:
    "Copy the PNGs to $LAYERSLAYER_SCREENSHOTS, when set, to look at them."
    if os.environ.get("LAYERSLAYER_SCREENSHOTS"):
        out = Path(os.environ["LAYERSLAYER_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        for png in directory.glob("*.png"):
            shutil.copy(png, out / png.name)


def test_real_browser_home_glob_query_file_layer_image(index_db, chrome, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(chrome, 30)
    proc, url = start_browse(index_db.path)
    try:
        chrome.get(url)
        assert chrome.title == "layerslayer: index"
        assert "3 images, 4 platforms" in chrome.find_element(By.CSS_SELECTOR, ".ll-stats").text
        screenshot(chrome, tmp_path / "1-home.png")

        # The glob canned query, through its own form.
        chrome.find_element(By.LINK_TEXT, "Files matching a glob").click()
        wait.until(EC.title_contains("Files matching a glob"))
        field = chrome.find_element(By.CSS_SELECTOR, "form.sql input[name=pattern]")
        field.clear()
        field.send_keys("*.pem")
        chrome.find_element(By.CSS_SELECTOR, "form.sql input[type=submit][value='Run SQL']").click()
        wait.until(lambda d: "pattern=%2A.pem" in d.current_url or "pattern=*.pem" in d.current_url)
        rows = chrome.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
        found = [(r.find_element(By.CSS_SELECTOR, "td.col-image").text,
                  r.find_element(By.CSS_SELECTOR, "td.col-path").text,
                  r.find_element(By.CSS_SELECTOR, "td.col-mode").text,
                  r.find_element(By.CSS_SELECTOR, "td.col-state").text) for r in rows]
        assert found == [(index_db.web.ref, "app/server.pem", "-rw-r--r--", "visible")]
        digest_cell = rows[0].find_element(By.CSS_SELECTOR, "td.col-layer_digest a")
        assert digest_cell.text == APP.digest[:19] + "\u2026"
        assert digest_cell.get_attribute("title") == APP.digest
        screenshot(chrome, tmp_path / "2-glob-query.png")

        # file -> layer
        digest_cell.click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.ll-layer")))
        assert chrome.current_url.endswith(f"/index/layers/{index_db.layer_id(APP.digest)}")
        assert chrome.find_element(By.CSS_SELECTOR, "code.ll-full").text == APP.digest
        save = chrome.find_element(By.CSS_SELECTOR, "pre.ll-save").text
        assert save == f"layerslayer save {index_db.web.ref}@{index_db.web.digest} --layer {APP.digest}"
        screenshot(chrome, tmp_path / "3-layer.png")

        # layer -> image
        chrome.find_element(By.CSS_SELECTOR, "table.ll-users a").click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.ll-image")))
        assert chrome.current_url.endswith(f"/index/images/{index_db.image_id(index_db.web.ref)}")
        steps = [td.text for td in chrome.find_elements(By.CSS_SELECTOR, "table.ll-layers td.ll-step")]
        assert steps == ["ADD rootfs.tar /", "COPY app /app", "RUN rm /app/.env"]
        shot = screenshot(chrome, tmp_path / "4-image.png")
        assert shot.stat().st_size > 10_000
        keep_screenshots(tmp_path)
    finally:
        stop_browse(proc)


def test_real_browser_recon_user_pages(index_db, chrome, tmp_path):
    "The recon user's pages in a real browser: the find box, ignore case as a checkbox, ghost commands, titles."
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(chrome, 30)
    proc, url = start_browse(index_db.path)
    try:
        chrome.get(url)
        box = chrome.find_element(By.CSS_SELECTOR, "form.ll-find input[name=pattern]")
        assert box.get_attribute("placeholder") == "*.pem"
        assert "is an exact file name" in chrome.find_element(By.CSS_SELECTOR, "form.ll-find .ll-glob-hint").text
        box.send_keys("*.PEM")
        chrome.find_element(By.CSS_SELECTOR, "form.ll-find input[name=ignore_case]").click()
        chrome.find_element(By.CSS_SELECTOR, "form.ll-find input[type=submit]").click()
        wait.until(EC.title_contains("Files matching a glob"))

        def results():
            rows = chrome.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
            return sorted(r.find_element(By.CSS_SELECTOR, "td.col-path").text for r in rows)

        assert results() == ["app/server.pem", "srv/Deploy.PEM"]
        heads = [th.text for th in chrome.find_elements(By.CSS_SELECTOR, "table.rows-and-columns th")]
        assert heads[:5] == ["path", "type", "size", "mode", "image"]
        # ignore_case stays a checkbox, still ticked; untick it and search again.
        ignore = chrome.find_element(By.CSS_SELECTOR, "form.sql input[name=ignore_case]")
        assert ignore.get_attribute("type") == "checkbox" and ignore.is_selected()
        screenshot(chrome, tmp_path / "5-glob-ignore-case.png")
        ignore.click()
        chrome.find_element(By.CSS_SELECTOR, "form.sql input[type=submit]").click()
        wait.until(lambda d: "ignore_case" not in d.current_url)
        assert results() == ["srv/Deploy.PEM"]
        ignore = chrome.find_element(By.CSS_SELECTOR, "form.sql input[name=ignore_case]")
        assert ignore.get_attribute("type") == "checkbox" and not ignore.is_selected()

        # A malformed glob says why it finds nothing.
        field = chrome.find_element(By.CSS_SELECTOR, "form.sql input[name=pattern]")
        field.clear()
        field.send_keys("[z-a]")
        chrome.find_element(By.CSS_SELECTOR, "form.sql input[type=submit]").click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "p.ll-notice")))
        assert "not a valid glob" in chrome.find_element(By.CSS_SELECTOR, "p.ll-notice").text

        # Ghost files: each row's extract command, with its copy button.
        chrome.get(url + "index/deleted_files")
        command = chrome.find_element(By.CSS_SELECTOR, "td.col-extract code.ll-command").text
        assert command == f"layerslayer extract {index_db.web.ref}@{index_db.web.digest} /app/.env --layer 1"
        button = chrome.find_element(By.CSS_SELECTOR, "td.col-extract button.ll-copy")
        assert button.get_attribute("data-copy") == command
        screenshot(chrome, tmp_path / "6-ghost-files.png")
        chrome.get(url + "index/ghost_files")
        assert [th.text for th in chrome.find_elements(By.CSS_SELECTOR, "table.rows-and-columns th")][:5] == [
            "path", "type", "size", "mode", "image"]
        cell = chrome.find_element(By.CSS_SELECTOR, "td.col-path")
        assert cell.find_element(By.CSS_SELECTOR, "button.ll-copy").get_attribute("data-copy") == command
        screenshot(chrome, tmp_path / "6b-ghost-files-view.png")

        # The images overview, and an image page titled by its reference.
        chrome.get(url)
        chrome.find_element(By.LINK_TEXT, "images").click()
        wait.until(EC.title_contains("Images: platforms"))
        row = next(r for r in chrome.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
                   if r.find_element(By.CSS_SELECTOR, "td.col-image").text == index_db.multi.ref)
        assert row.find_element(By.CSS_SELECTOR, "td.col-platforms").text == "linux/amd64, linux/arm64/v8"
        screenshot(chrome, tmp_path / "7-images.png")
        row.find_element(By.CSS_SELECTOR, "td.col-image a").click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.ll-image")))
        assert chrome.title == f"Image {index_db.multi.ref} · index"
        assert chrome.find_element(By.TAG_NAME, "h1").text == f"Image {index_db.multi.ref}"
        screenshot(chrome, tmp_path / "8-image-page.png")
        keep_screenshots(tmp_path)
    finally:
        stop_browse(proc)
