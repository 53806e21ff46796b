"""The Python API (layerslayer.Index, inspect, save, extract, cat) against a
real registry: the examples of docs/api.md run as written, reading an index
never loads `requests` while indexing does, the API and the commands give the
same answers, and argument errors name arguments, not command-line flags."""

from __future__ import annotations

import doctest
import importlib
import io
import json
import pkgutil
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness.builder import dir_, file, layer, push_image, whiteout

import layerslayer
from layerslayer import api
from layerslayer.cli import cli
from layerslayer.errors import cli_words

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 1700 + "\n-----END OPENSSH PRIVATE KEY-----\n"

#: The image docs/api.md describes, pushed as localhost:5000/demo/app:1.0 is named there.
DEMO_BASE = [
    dir_("etc"), file("etc/os-release", "NAME=Demo\n"), dir_("app"), file("app/.env", "SECRET=1\n"),
    dir_("root", mode=0o700), dir_("root/.ssh", mode=0o700), file("root/.ssh/id_rsa", KEY, mode=0o600),
]
DEMO_TOP = [whiteout("app/.env"), file("app/server.pem", "cert\n")]


@pytest.fixture(scope="module")
def demo(registry):
    "docs/api.md's image in the test registry; ``ref`` is its reference."
    return push_image(registry, "demo/app:1.0", layers=[layer(DEMO_BASE), layer(DEMO_TOP)])


@pytest.fixture(scope="module")
def indexed(demo, tmp_path_factory) -> Path:
    "An index of the demo image, built through the API."
    path = tmp_path_factory.mktemp("api") / "images.db"
    with layerslayer.Index(path) as index:
        summary = index.add(demo.ref)
    assert summary.ok and summary.layers_indexed == 2, summary
    return path


def pycon_blocks(text: str) -> str:
    "The ```pycon blocks of a Markdown page, as one doctest text (a block's end ends its last output)."
    return "\n\n".join(re.findall(r"```pycon\n(.*?)```", text, re.DOTALL))


def test_docs_examples_run(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = pycon_blocks(DOCS.read_text()).replace("localhost:5000", demo.ref.partition("/")[0])
    test = doctest.DocTestParser().get_doctest(text, {}, "docs/api.md", str(DOCS), 0)
    assert len(test.examples) > 30
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_reading_an_index_never_loads_requests_but_indexing_does(indexed, demo):
    code = (
        "import sys\nimport layerslayer\n"
        f"index = layerslayer.Index({str(indexed)!r})\n"
        "assert index.find('*.pem') and index.count('*') and index.images() and index.secrets()\n"
        f"assert index.ls({demo.ref!r}, '/app') and index.query('*', deleted=True).hits()\n"
        "print('READ', sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
        f"assert index.add({demo.ref!r}).layers_reused == 2\n"
        "print('ADD', sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["READ []", "ADD ['requests', 'urllib3']"]


def _cli_json(*args) -> list:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_the_api_answers_as_the_commands_do(indexed, demo):
    with layerslayer.Index(indexed) as index:
        for patterns, kw, flags in [
            (["*"], {}, []),
            (["*.pem", "id_rsa"], {"images": ["demo/app"]}, ["--image", "demo/app"]),
            (["*"], {"deleted": True}, ["--deleted"]),
            (["*"], {"types": ["d"], "limit": 2}, ["--type", "d", "--limit", "2"]),
        ]:
            expected = _cli_json("find", indexed, *patterns, *flags, "--json")
            assert [h.as_dict() for h in index.find(*patterns, **kw)] == expected
            assert index.count(*patterns, **kw) == len(expected)
        for path, kw, flags in [(None, {}, []), ("/app", {"layer": -1}, ["--layer", "-1"]), ("/", {"depth": 1}, ["-d", "1"])]:
            expected = _cli_json("ls", indexed, demo.ref, *([path] if path else []), *flags, "--json")
            assert [h.as_dict() for h in index.ls(demo.ref, path, **kw)] == expected
        assert [s.as_dict() for s in index.images()] == _cli_json("images", indexed, "--json")
        assert [s.fingerprint for s in index.secrets()] == [s["fingerprint"] for s in _cli_json("secrets", indexed, "--json")]
        assert index.db["layers"].count == 2


def test_reading_opens_read_only_and_creates_nothing(tmp_path, indexed):
    missing = tmp_path / "missing.db"
    with pytest.raises(layerslayer.NotAnIndex):
        layerslayer.Index(missing).find("*")
    assert not missing.exists()
    index = layerslayer.Index(indexed)
    with pytest.raises(Exception, match="readonly|read-only|query_only"):
        index.db.execute("DELETE FROM images")
    index.close()
    index.close()  # twice is fine


def test_add_creates_the_index_and_reads_see_it(demo, tmp_path):
    with layerslayer.Index(tmp_path / "new.db") as index:
        with pytest.raises(layerslayer.NotAnIndex):
            index.images()
        summary = index.add(demo.ref)
        assert summary.ok and summary.images == 1
        assert [image.reference for image in index.images()] == [demo.ref]
        assert index.upgrade() == []  # already this version's schema


def test_fetching_functions_take_client_options(demo, indexed, tmp_path):
    options = layerslayer.ClientOptions(timeout=20, retries=1)
    report = layerslayer.inspect(demo.ref, options=options)
    assert [lay["digest"] for lay in report.as_dict()["layers"]] == [lay.digest for lay in demo.layers]
    assert report.raw("manifest") == demo.manifest_bytes
    assert layerslayer.cat(demo.ref, "/etc/os-release", options=options) == b"NAME=Demo\n"
    out = io.BytesIO()
    assert layerslayer.cat(demo.ref, "app/server.pem", out=out, index=layerslayer.Index(indexed)) == b""
    assert out.getvalue() == b"cert\n"
    # One layer's own files, deleted ones included.
    assert layerslayer.cat(demo.ref, "/app/.env", layer=0, index=indexed) == b"SECRET=1\n"
    extracted = layerslayer.extract(demo.ref, "*.pem", "id_rsa", out_dir=tmp_path / "x", index=indexed, options=options)
    assert sorted(w.written_as for w in extracted.written) == ["app/server.pem", "root/.ssh/id_rsa"]
    saved = layerslayer.save(demo.ref, layers=[0, demo.layers[1].digest[7:19]], out_dir=tmp_path / "blobs")
    assert [r.digest for r in saved.results] == [lay.digest for lay in demo.layers] and not saved.errors
    with layerslayer.Index(indexed, options=options) as index:
        exported = index.export(layers=[demo.layers[1].digest], out_dir=tmp_path / "export")
    assert [item.download.digest for item in exported.items] == [demo.layers[1].digest]


@pytest.mark.parametrize("call,message", [
    (lambda i: i.find("*", deleted=True, visible=True), "deleted and visible exclude each other"),
    (lambda i: i.find("*", limit=-1), "limit must be 0 or more"),
    (lambda i: i.find(), "give at least one pattern or preset"),
    (lambda i: i.ls("demo/app:1.0", depth=-1), "depth must be 0 or more"),
    (lambda i: i.secrets(detectors=["nope"]), "unknown detector 'nope'"),
    (lambda i: i.secrets(state="gone"), "state must be one of"),
    (lambda i: i.add(), "give at least one image reference"),
    (lambda i: i.add("demo/app:1.0", platform="linux/amd64", all_platforms=True), "platform and all_platforms exclude"),
    (lambda i: i.add("demo/app:1.0", scan=False, keep_values=True), "keep_values and scan=False exclude"),
    (lambda i: i.export(files=True, layers=["abcd"]), "files needs patterns"),
])
def test_argument_errors_name_arguments_not_flags(indexed, call, message):
    with layerslayer.Index(indexed) as index, pytest.raises(layerslayer.UsageError) as raised:
        call(index)
    assert message in str(raised.value) and "--" not in str(raised.value)


def test_fetching_errors_name_arguments_not_flags(demo):
    with pytest.raises(layerslayer.UsageError) as raised:
        layerslayer.inspect(demo.ref).raw("index")
    assert "single-platform" in str(raised.value) and "--" not in str(raised.value)
    with pytest.raises(layerslayer.NotFound, match="no file /etc/shadow in"):
        layerslayer.cat(demo.ref, "/etc/shadow")


def test_advice_in_errors_and_reports_names_arguments_not_flags(demo, tmp_path):
    "What a call reports or raises says which argument changes it (force, max_output, the deadline, Index.add)."
    out = tmp_path / "out"
    assert layerslayer.extract(demo.ref, "/etc/os-release", out_dir=out).written
    again = layerslayer.extract(demo.ref, "/etc/os-release", out_dir=out)
    capped = layerslayer.extract(demo.ref, "/root/.ssh/id_rsa", out_dir=tmp_path / "capped", max_output=100)
    (replaced,), (over_cap,) = [r.reason for r in again.refused], [r.reason for r in capped.refused]
    assert "(force=True replaces it)" in replaced and "max_output raises it" in over_cap
    with pytest.raises(layerslayer.NotAnIndex) as missing:
        layerslayer.Index(tmp_path / "none.db").images()
    assert "(create one with Index.add)" in str(missing.value)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    with silent, pytest.raises(layerslayer.NetworkError) as late:
        options = layerslayer.ClientOptions(plain_http=True, deadline=0.5, retries=1)
        layerslayer.inspect(f"127.0.0.1:{silent.getsockname()[1]}/quiet:1", options=options)
    assert "(ClientOptions.deadline)" in str(late.value)
    for error in (replaced, over_cap, missing.value, late.value):
        assert "--" not in str(error), error


@pytest.mark.parametrize("library,command", [
    ("a is already in the output directory (force=True replaces it)", "a is already in the output directory (--force replaces it)"),
    ("the output cap (10 written; max_output raises it)", "the output cap (10 written; --max-output raises it)"),
    ("the layer digest cannot be (verify=True reads whole layers)", "the layer digest cannot be (--verify reads whole layers)"),
    ("within the 2 s deadline (ClientOptions.deadline)", "within the 2 s deadline (--deadline)"),
    ("using plain HTTP (ClientOptions.plain_http says so up front)", "using plain HTTP (--plain-http says so up front)"),
    ("(use ClientOptions.plain_http for an HTTP registry, ClientOptions.insecure to skip verification)",
     "(use --plain-http for an HTTP registry, --insecure to skip verification)"),
    ("platform and all_platforms exclude each other", "--platform and --all-platforms are mutually exclusive"),
    ("keep_values and scan=False exclude each other", "--keep-values and --no-scan exclude each other"),
    ("No layerslayer index at a.db (create one with Index.add)", "No layerslayer index at a.db (create one with `layerslayer index`)"),
    ("upgrade it with Index('my index.db').upgrade()", "upgrade it with `layerslayer index my index.db --upgrade`"),
    ("no indexed image matches 'x' (Index.images() lists them)", "no indexed image matches 'x' (`layerslayer images DB` lists them)"),
    ("layer(s) 1 of that image are not indexed: run Index.add again", "layer(s) 1 of that image are not indexed: run `layerslayer index` again"),
    ("the index comes first: Index('DB.db').add(IMAGE, ...); to create", "the index comes first: `layerslayer index DB.db IMAGE...`; to create"),
    ("no platform linux/arm64 (force it? no)", "no platform linux/arm64 (force it? no)"),   # other words stay
])
def test_the_commands_say_the_advice_with_their_flags(library, command):
    assert cli_words(library) == command


def test_the_commands_still_name_their_flags(indexed):
    result = CliRunner().invoke(cli, ["secrets", str(indexed), "--detector", "nope"])
    assert result.exit_code == 2 and "unknown detector 'nope'" in result.output
    both = CliRunner().invoke(cli, ["index", str(indexed), "demo/app:1.0", "--platform", "linux/amd64", "--all-platforms"])
    assert both.exit_code == 2 and "--platform and --all-platforms are mutually exclusive" in both.output
    missing = CliRunner().invoke(cli, ["images", str(indexed.parent / "none.db")])
    assert missing.exit_code == 2 and "(create one with `layerslayer index`)" in missing.output


def test_public_names():
    assert set(layerslayer.__all__) <= set(dir(layerslayer))
    assert layerslayer.Index is api.Index and layerslayer.ClientOptions.__module__ == "layerslayer.options"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        layerslayer.nope  # noqa: B018
    # A submodule named like a public function (layerslayer/save.py) would
    # replace it on the package once imported: import them all, then check.
    for module in pkgutil.iter_modules(layerslayer.__path__):
        importlib.import_module(f"layerslayer.{module.name}")
    for name in layerslayer.__all__:
        value = getattr(layerslayer, name)
        assert not isinstance(value, type(sys)), f"layerslayer.{name} is the module {value.__name__}, not the API"
    assert layerslayer.save is api.save and layerslayer.inspect is api.inspect
