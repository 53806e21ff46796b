"""`browse`: the "view" link of a file fetches it through the same path as
`cat --db`, with nothing written to the index."""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import time
import urllib.parse

import pytest
from click.testing import CliRunner
from harness.builder import file, layer, push_image
from test_seekable import big_members

from layerslayer.browse.server import make_datasette
from layerslayer.cli import cli


@pytest.fixture(scope="module")
def indexed(registry, tmp_path_factory):
    big = push_image(registry, "view/big:v1", layers=[layer(big_members())])
    small = push_image(registry, "view/small:v1", layers=[layer([
        file("etc/motd", "<b>hello</b> \x1b[31mred\x1b[0m & bye\n"),
        file("bin/tool", bytes(range(256)) * 8),
    ])])
    db = tmp_path_factory.mktemp("view") / "i.db"
    result = CliRunner().invoke(cli, ["index", str(db), big.ref, small.ref, "--quiet", "--span", "1M"])
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture(scope="module")
def client(indexed):
    datasette = make_datasette(indexed)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(datasette.invoke_startup())

    def get(path):
        return loop.run_until_complete(datasette.client.get(path))
    yield get
    loop.close()


def view_link(client, path: str) -> str:
    page = client("/i/files?" + urllib.parse.urlencode({"path": path}))
    assert page.status_code == 200
    links = re.findall(r'href="([^"]*/view/[^"]*)"', page.text)
    assert len(links) == 1, page.text[:3000]
    return html.unescape(links[0])


def test_view_of_a_small_file_in_a_big_layer_within_a_second(client, indexed):
    before = hashlib.sha256(indexed.read_bytes()).hexdigest()
    link = view_link(client, "usr/share/man/man1/tool.1")
    started = time.monotonic()
    page = client(link)
    seconds = time.monotonic() - started
    assert page.status_code == 200, page.text
    assert seconds <= 1.0
    assert "checkpoint" in page.text
    assert re.search(r"<pre class='ll-file'>[a-z ]{100}", page.text)
    assert hashlib.sha256(indexed.read_bytes()).hexdigest() == before  # nothing written to the index


def test_view_escapes_text_and_dumps_binary_and_downloads(client):
    page = client(view_link(client, "etc/motd"))
    assert "&lt;b&gt;hello&lt;/b&gt;" in page.text and "<b>hello" not in page.text
    assert "&amp; bye" in page.text
    page = client(view_link(client, "bin/tool"))
    assert "00000000  00 01 02 03" in page.text and "first 1,024 bytes in hex" in page.text
    download = client(view_link(client, "bin/tool") + "&download=1")
    assert download.content == bytes(range(256)) * 8
    assert download.headers["content-disposition"] == 'attachment; filename="tool"'


def test_no_view_link_for_directories_and_a_clear_error_for_a_bad_offset(client):
    page = client("/i/files?" + urllib.parse.urlencode({"type": "dir"}))
    assert "/view/" not in page.text
    link = view_link(client, "etc/motd")
    bad = client(re.sub(r"offset=\d+", "offset=7", link))
    assert bad.status_code == 404 and "no regular file at offset 7" in bad.text


def test_layers_table_says_how_each_layer_can_be_read(client):
    page = client("/i/layers")
    assert page.status_code == 200
    assert re.search(r"stream <small>\(\d+ checkpoints: files read with one Range request\)</small>", page.text), page.text[:3000]
    assert "stream <small>(stream only)</small>" in page.text
