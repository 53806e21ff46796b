"""The interactive flow (`layerslayer`, `layerslayer -t REF`) and its batch flags,
against the real test registry: through click's test runner with scripted
input, and through a real pseudo-terminal with pexpect."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from click.testing import CliRunner
from harness.builder import dir_, empty, file, foreign_layer, layer, push_image, push_index, raw_layer, symlink, whiteout
from harness.dbrows import rows
from harness.wait import wait_until

from layerslayer.cli import cli
from layerslayer.download import blob_path
from layerslayer.interactive import (
    BadAnswer,
    EndOfInput,
    Prompter,
    format_entry,
    parse_layer_selection,
    parse_platform_choice,
    parse_yes_no,
    printable,
)
from layerslayer.reference import host_platform_string
from layerslayer.tarstream import Entry

ROOT = Path(__file__).resolve().parent.parent

LAYER_PROMPT = "Layers to peek (comma-separated INDEX or ALL) [default: ALL]: "
DOWNLOAD_PROMPT = "Download this layer? (y/N) "


def flow(*args, input=None, out=None):
    "Run `layerslayer [ARGS]` with scripted input; downloads go to OUT."
    argv = [str(a) for a in args]
    if out is not None:
        argv += ["-o", str(out)]
    return CliRunner().invoke(cli, argv, input=input)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()



def app_image(reg, repo, **kw):
    "Two layers (gzip, zstd) and build steps with metadata-only steps."
    base = layer([
        dir_("etc"),
        file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        symlink("bin", "usr/bin"),
        file("usr/bin/tool", b"\x7fELF" + b"x" * 3068, mode=0o755),
        whiteout("etc/shadow"),
    ])
    app = layer({"app/": None, "app/.env": "SECRET=1\n"}, compression="zstd")
    history = [empty("ARG VERSION=1"), "RUN apk add tool \\\n    && rm -rf /var/cache", "COPY . /app", empty('CMD ["/app"]')]
    return push_image(reg, f"{repo}:v1", layers=[base, app], history=history, **kw)


def host_default(platforms: list[str]) -> int:
    host = host_platform_string()
    return next((i for i, p in enumerate(platforms) if p.startswith(host)), 0)


# -- answers and formatting (no registry) ---------------------------------------------------


def test_layer_selection():
    assert parse_layer_selection("", 3) == [0, 1, 2]
    assert parse_layer_selection("all", 3) == [0, 1, 2]
    assert parse_layer_selection(" ALL ", 3) == [0, 1, 2]
    assert parse_layer_selection("2, 0", 3) == [2, 0]
    assert parse_layer_selection("0-1,1", 3) == [0, 1]
    assert parse_layer_selection("-1", 3) == [2]


@pytest.mark.parametrize("answer,hint", [
    ("7", "there is no layer 7: layers are numbered 0 to 2"),
    ("-4", "there is no layer -4"),
    ("a", "'a' is not a layer number"),
    ("1,,2", "empty layer number in '1,,2'"),
    (",", "empty layer number"),
    ("2-1", "range '2-1' runs backwards"),
    ("1.5", "'1.5' is not a layer number"),
])
def test_layer_selection_bad_answers(answer, hint):
    with pytest.raises(BadAnswer) as error:
        parse_layer_selection(answer, 3)
    assert hint in str(error.value)
    assert "ALL" in str(error.value) or "numbered" in str(error.value)


def test_platform_choice_and_yes_no():
    class P:
        def __init__(self, os, arch, variant=None):
            self.os, self.architecture, self.variant = os, arch, variant

        def __str__(self):
            return "/".join(x for x in (self.os, self.architecture, self.variant) if x)

    platforms = [P("linux", "amd64"), P("linux", "arm64", "v8")]
    assert parse_platform_choice("", platforms, 1) == 1
    assert parse_platform_choice("0", platforms, 1) == 0
    assert parse_platform_choice("linux/arm64", platforms, 0) == 1
    for bad, hint in [("2", "there is no platform 2"), ("x", "'x' is not a platform number"),
                      ("-1", "is not a platform number"), ("linux/s390x", "this image has no platform linux/s390x")]:
        with pytest.raises(BadAnswer, match=re.escape(hint)):
            parse_platform_choice(bad, platforms, 0)
    assert parse_yes_no("") is False and parse_yes_no("N") is False and parse_yes_no(" no ") is False
    assert parse_yes_no("y") is True and parse_yes_no("YES") is True
    with pytest.raises(BadAnswer, match="answer y"):
        parse_yes_no("maybe")


def entry(path, type="file", size=0, mode=0o644, linkname="", **kw):
    values = dict(path=path, type=type, size=size, mode=mode, uid=0, gid=0, uname="root", gname="root", mtime=0.0,
                  linkname=linkname, devmajor=0, devminor=0, offset=0, data_offset=512)
    values.update(kw)
    return Entry(**values)


def test_entry_lines():
    assert format_entry(entry("etc", "dir", mode=0o755)).split() == ["drwxr-xr-x", "root/root", "etc/"]
    assert format_entry(entry("etc/passwd", size=3000)).split() == ["-rw-r--r--", "root/root", "3.0", "KB", "etc/passwd"]
    assert format_entry(entry("empty")).split()[-3:] == ["0.0", "B", "empty"]
    assert format_entry(entry("bin", "symlink", mode=0o777, linkname="usr/bin")).endswith("bin -> usr/bin")
    assert format_entry(entry("a/b", "hardlink", linkname="a/c")).endswith("a/b link to a/c")
    assert "1,3" in format_entry(entry("dev/null", "char", devmajor=1, devminor=3))
    assert format_entry(entry("usr/bin/sudo", mode=0o4755)).split()[0] == "-rwsr-xr-x"
    assert format_entry(entry("etc/.wh.shadow")).endswith("[whiteout: deletes etc/shadow]")
    assert "[opaque: hides what lower layers have in var/cache/]" in format_entry(entry("var/cache/.wh..wh..opq"))
    assert format_entry(entry("x", uname="", gname="", uid=1000, gid=50)).split()[1] == "1000/50"
    # One line per entry, whatever the name holds.
    line = format_entry(entry("odd/new\nline\udcff"))
    assert "\n" not in line and line.endswith("odd/new\\nline\\xff")
    assert printable("plain/ünïcödé") == "plain/ünïcödé"


def test_prompter_logs_answers_never_secrets(tmp_path):
    answers = iter(["alice", "hunter2-secret", "1"])

    def read(prompt):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    shown = []
    log = open(tmp_path / "log.txt", "w")
    ui = Prompter(read, lambda text, err: shown.append(text), read_secret=read, log=log, secrets=["tok-abc-123"])
    assert ui.ask("User: ") == "alice"
    assert ui.ask_secret("Password: ") == "hunter2-secret"
    ui.say("the token tok-abc-123 and hunter2-secret are masked in the log")
    assert ui.ask("Pick [0]: ") == "1"
    with pytest.raises(EndOfInput):
        ui.ask("More? ")
    ui.close()
    text = (tmp_path / "log.txt").read_text()
    assert "User: alice\nPassword: \n" in text and "Pick [0]: 1\n" in text and "More? \n" in text
    assert "hunter2" not in text and "tok-abc-123" not in text
    assert "the token ******** and ******** are masked" in text


# -- the flow through click's runner ------------------------------------------------------------


def test_multi_arch_with_attestation(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"], attestation=True)
    default = host_default(["linux/amd64", "linux/arm64/v8"])
    out = tmp_path / "downloads"
    result = flow("-t", pushed.ref, input="1\n\nn\n", out=out)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Available platforms:\n [0] linux/amd64\n [1] linux/arm64/v8\n" in text
    assert f"Select a platform [{default}]: 1\n" in text
    # Attestation manifests are never offered, nor shown as unknown platforms.
    assert "[2]" not in text.split("Select a platform")[0]
    listing = text.split("Available platforms:")[1].split("Select a platform")[0]
    assert "unknown" not in listing and "attestation" not in listing
    arm = pushed.images[1]
    assert f" [0] {arm.layers[0].digest}  " in text
    assert f"Layer [0] {arm.layers[0].digest}" in text and "etc/platform" in text
    assert pushed.images[0].layers[0].digest not in text
    assert DOWNLOAD_PROMPT + "n\n" in text
    assert "Done: 1 layer(s) peeked, 0 saved" in text
    assert not out.exists()  # a "no" leaves nothing behind, not even empty directories


def test_single_arch_skips_platform_question(registry, unique_repo, tmp_path):
    pushed = app_image(registry, unique_repo())
    result = flow("-t", pushed.ref, input="\nn\nn\n", out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    assert "Select a platform" not in result.output
    assert "Platform: linux/amd64 (single-platform image)" in result.output
    # An index with one real platform (plus its attestation) does not ask either.
    index = push_index(registry, f"{unique_repo('one')}:v1", images=["linux/arm64/v8"], attestation=True)
    result = flow("-t", index.ref, input="\nn\n", out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    assert "Select a platform" not in result.output
    assert "Platform: linux/arm64/v8 (the only one)" in result.output


def test_build_steps_layers_and_listing(registry, unique_repo, tmp_path):
    pushed = app_image(registry, unique_repo())
    base, app = pushed.layers
    result = flow("-t", pushed.ref, input="ALL\nn\nn\n", out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    text = result.output
    assert (
        "Build steps:\n"
        " [0] ARG VERSION=1 (metadata only)\n"
        " [1] RUN apk add tool \\ && rm -rf /var/cache\n"
        " [2] COPY . /app\n"
        ' [3] CMD ["/app"] (metadata only)\n'
    ) in text
    assert f" [0] {base.digest}  {human(base.size)}\n [1] {app.digest}  {human(app.size)}\n" in text
    assert LAYER_PROMPT + "ALL\n" in text
    lines = text.splitlines()
    assert any(line.split() == ["drwxr-xr-x", "root/root", "etc/"] for line in lines)
    assert any(line.split() == ["-rw-r--r--", "root/root", "26.0", "B", "etc/passwd"] for line in lines)
    assert any(line.split() == ["-rwxr-xr-x", "root/root", "3.1", "KB", "usr/bin/tool"] for line in lines)
    assert any(line.endswith("bin -> usr/bin") for line in lines)
    assert any(line.endswith("etc/.wh.shadow  [whiteout: deletes etc/shadow]") for line in lines)
    assert any(line.split()[-1:] == ["app/.env"] for line in lines)  # the zstd layer
    assert text.count(DOWNLOAD_PROMPT) == 2


def human(size):
    from layerslayer.display import human_size

    return human_size(size)


def test_peek_then_download_fetches_the_blob_once(fault_proxy, unique_repo, tmp_path):
    big = layer({f"data/{i}": os.urandom(2048) for i in range(200)})
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[layer({"small": "1"}), big])
    out = tmp_path / "downloads"
    fault_proxy.clear_records()
    result = flow("-t", pushed.ref, input="1\ny\n", out=out)
    assert result.exit_code == 0, result.output
    assert "data/199" in result.output
    saved = blob_path(out, fault_proxy.host, pushed.repository, big.digest, big.media_type_for("oci"))
    assert f"Saved layer [1] to {saved} ({human(big.size)})" in result.output
    assert files_under(out) == [saved] and sha256(saved) == big.digest
    assert fault_proxy.count(f"/blobs/{big.digest}", method="GET") == 1
    assert fault_proxy.bytes_served(f"/blobs/{big.digest}") == big.size
    assert fault_proxy.count(f"/blobs/{pushed.layers[0].digest}", method="GET") == 0
    # Peeking again reads the saved file: no download at all.
    fault_proxy.clear_records()
    again = flow("-t", pushed.ref, input="1\ny\n", out=out)
    assert again.exit_code == 0, again.output
    assert "data/199" in again.output and f"Already saved: layer [1] is {saved} (verified)" in again.output
    assert fault_proxy.count(f"/blobs/{big.digest}") == 0


def test_default_download_folder(registry, unique_repo, tmp_path, monkeypatch):
    pushed = app_image(registry, unique_repo())
    monkeypatch.chdir(tmp_path)
    result = flow("-t", pushed.ref, input="0\ny\n")
    assert result.exit_code == 0, result.output
    base = pushed.layers[0]
    expected = Path("downloads", registry.host, pushed.repository, base.digest.split(":")[1] + ".tar.gz")
    assert files_under(tmp_path / "downloads") == [tmp_path / expected]


def test_every_bad_answer_is_asked_again(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"])
    missing = f"{registry.host}/{unique_repo('missing')}:v1"
    answers = [
        "Not A/Valid Ref!", missing, pushed.ref,   # image: malformed, not found, good
        "9", "x", "-1", "linux/s390x", "1",         # platform: out of range, not a number, negative, unknown, good
        "5", "zero", "0,,0", ",", "1-0", "0",       # layers: out of range, not a number, empty items, backwards, good
        "maybe", "2", "y",                          # download: neither yes nor no, twice, then yes
    ]
    out = tmp_path / "dl"
    result = flow(input="\n".join(answers) + "\n", out=out)
    assert result.exit_code == 0, result.output
    text = result.output
    for hint in [
        "invalid image reference", "try again, e.g. alpine:3.20",
        "image not found", "try another image",
        "there is no platform 9: answer a number from 0 to 1, or a platform such as linux/amd64.",
        "'x' is not a platform number", "'-1' is not a platform number", "this image has no platform linux/s390x",
        "there is no layer 5: layers are numbered 0 to 0.",
        "'zero' is not a layer number: answer 0 (the only layer) or ALL.",
        "empty layer number in '0,,0'", "empty layer number in ','", "range '1-0' runs backwards",
        "Please answer y (download it) or n (the default: skip it).",
    ]:
        assert hint in text, hint
    assert text.count("Enter image (registry/repository:tag) [default: moby/buildkit:latest]: ") == 3
    assert text.count("Select a platform [") == 5
    assert text.count(LAYER_PROMPT) == 6
    assert text.count(DOWNLOAD_PROMPT) == 3
    assert "Traceback" not in text
    arm_layer = pushed.images[1].layers[0]
    assert [p.name for p in files_under(out)] == [arm_layer.digest.split(":")[1] + ".tar.gz"]


def test_empty_answers_take_the_defaults(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"])
    default = host_default(["linux/amd64", "linux/arm64/v8"])
    result = flow("-t", pushed.ref, input="\n\n\n", out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    chosen = pushed.images[default].layers[0].digest
    assert f"Layer [0] {chosen}" in result.output
    assert not (tmp_path / "dl").exists()


@pytest.mark.parametrize("answers,where", [("", "image"), ("1\n", "layers"), ("1\n0\n", "download")])
def test_end_of_input_stops_cleanly(registry, unique_repo, tmp_path, answers, where):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"])
    args = [] if where == "image" else ["-t", pushed.ref]
    out = tmp_path / "dl"
    result = flow(*args, input=answers, out=out)
    assert result.exit_code == 1
    assert "Error: no more input (end of file) while waiting for an answer: stopped" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error
    assert files_under(out) == []  # the spooled peek was deleted


def test_peek_all(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"], attestation=True)
    out = tmp_path / "dl"
    result = flow("-t", pushed.ref, "--peek-all", input="", out=out)  # no input: no question may be asked
    assert result.exit_code == 0, result.output
    default = host_default(["linux/amd64", "linux/arm64/v8"])
    plat = ["linux/amd64", "linux/arm64/v8"][default]
    assert f"Platform: {plat} (of linux/amd64, linux/arm64/v8; --platform chooses)" in result.output
    assert "Select a platform" not in result.output and LAYER_PROMPT not in result.output
    assert "Peeking into all layers:" in result.output and "etc/platform" in result.output
    assert "Done: 1 layer(s) peeked, 0 saved" in result.output
    assert not out.exists()
    # --platform answers the platform question.
    arm = flow("-t", pushed.ref, "--peek-all", "--platform", "linux/arm64", out=out)
    assert arm.exit_code == 0, arm.output
    assert "Platform: linux/arm64/v8\n" in arm.output
    assert f"Layer [0] {pushed.images[1].layers[0].digest}" in arm.output
    wrong = flow("-t", pushed.ref, "--peek-all", "--platform", "linux/s390x", out=out)
    assert wrong.exit_code == 1
    assert "has no platform linux/s390x (available: linux/amd64, linux/arm64/v8)" in wrong.output


def test_save_all(fault_proxy, unique_repo, tmp_path):
    pushed = app_image(fault_proxy, unique_repo())
    out = tmp_path / "dl"
    fault_proxy.clear_records()
    result = flow("-t", pushed.ref, "--save-all", input="", out=out)
    assert result.exit_code == 0, result.output
    assert "etc/passwd" not in result.output and "Download this layer" not in result.output
    saved = files_under(out)
    assert sorted(sha256(p) for p in saved) == sorted(layer.digest for layer in pushed.layers)
    assert sorted(p.name.split(".", 1)[1] for p in saved) == ["tar.gz", "tar.zst"]
    for lay in pushed.layers:
        assert fault_proxy.count(f"/blobs/{lay.digest}", method="GET") == 1
    assert "Done: 0 layer(s) peeked, 2 saved in" in result.output
    again = flow("-t", pushed.ref, "--save-all", out=out)
    assert again.exit_code == 0 and again.output.count("Already saved: layer") == 2
    assert "2 saved (2 already there)" in again.output
    # Saved layers are peeked from their files (checked against the digest), not downloaded again.
    fault_proxy.clear_records()
    peek = flow("-t", pushed.ref, "--peek-all", out=out)
    assert peek.exit_code == 0 and "etc/passwd" in peek.output and "app/.env" in peek.output
    assert sum(fault_proxy.count(f"/blobs/{lay.digest}") for lay in pushed.layers) == 0
    assert sorted(sha256(p) for p in files_under(out)) == sorted(layer.digest for layer in pushed.layers)


def test_peek_all_and_save_all_download_each_blob_once(fault_proxy, unique_repo, tmp_path):
    pushed = app_image(fault_proxy, unique_repo())
    out = tmp_path / "dl"
    fault_proxy.clear_records()
    result = flow("-t", pushed.ref, "--peek-all", "--save-all", input="", out=out)
    assert result.exit_code == 0, result.output
    assert "etc/passwd" in result.output and "app/.env" in result.output
    assert result.output.count("Saved layer [") == 2
    assert sorted(sha256(p) for p in files_under(out)) == sorted(layer.digest for layer in pushed.layers)
    for lay in pushed.layers:
        assert fault_proxy.count(f"/blobs/{lay.digest}", method="GET") == 1
        assert fault_proxy.bytes_served(f"/blobs/{lay.digest}") == lay.size


def test_log_file_has_everything_but_the_password(basic_registry, unique_repo, tmp_path):
    pushed = push_index(basic_registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"])
    log = tmp_path / "session.log"
    password = basic_registry.password
    result = flow("-t", pushed.ref, "-u", basic_registry.username, "-p", password, "-l", log,
                  input="1\nbogus\n0\ny\n", out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    text = log.read_text()
    assert password not in text and password not in result.output
    default = host_default(["linux/amd64", "linux/arm64/v8"])
    for expected in [
        f"Image: {pushed.ref.split('/', 1)[0]}/",
        "Available platforms:\n [0] linux/amd64\n [1] linux/arm64/v8\n",
        f"Select a platform [{default}]: 1\n",
        "Build steps:\n",
        LAYER_PROMPT + "bogus\n",
        "'bogus' is not a layer number",
        LAYER_PROMPT + "0\n",
        "etc/platform",
        DOWNLOAD_PROMPT + "y\n",
        "Saved layer [0] to ",
        "Done: 1 layer(s) peeked, 1 saved",
    ]:
        assert expected in text, expected
    # The log is the session as shown, line for line.
    shown = [line for line in result.output.splitlines() if line.strip()]
    logged = [line for line in text.splitlines() if line.strip()]
    assert shown == logged


def test_log_file_records_errors(registry, unique_repo, tmp_path):
    log = tmp_path / "err.log"
    result = flow("-t", f"{registry.host}/{unique_repo()}:nothere", "-l", log, out=tmp_path / "dl")
    assert result.exit_code == 1
    assert "Error: image not found" in result.output
    assert "Error: image not found" in log.read_text()


def test_typed_password_never_shown_nor_logged(basic_registry, unique_repo, tmp_path):
    pushed = push_image(basic_registry, f"{unique_repo()}:v1")
    log = tmp_path / "login.log"
    password = basic_registry.password
    answers = f"alice\nwrong-password\n{basic_registry.username}\n{password}\n\nn\n"
    result = flow("-t", pushed.ref, "-l", log, input=answers, out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    assert "authentication required for" in result.output
    assert "authentication failed for" in result.output  # the wrong password, asked again
    assert f"Username for {basic_registry.host} (empty to stop): alice" in result.output
    assert f"Password for alice@{basic_registry.host}: \n" in result.output
    assert "hello.txt" in result.output
    for text in (result.output, log.read_text()):
        assert password not in text and "wrong-password" not in text
    # Giving up on the login ends with the registry's error.
    declined = flow("-t", pushed.ref, input="\n", out=tmp_path / "dl")
    assert declined.exit_code == 1 and "Error: authentication required" in declined.output


def test_db_records_what_was_peeked(registry, unique_repo, tmp_path):
    pushed = app_image(registry, unique_repo())
    db = tmp_path / "index.db"
    result = flow("-t", pushed.ref, "--db", db, input="1\nn\n", out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    base, app = pushed.layers
    status = dict(rows(db, "SELECT digest, status FROM layers"))
    assert status == {base.digest: "pending", app.digest: "indexed"}
    assert sorted(p for (p,) in rows(db, "SELECT path FROM files WHERE layer_digest = ?", [app.digest])) == ["app", "app/.env"]
    assert rows(db, "SELECT platform FROM platforms") == [("linux/amd64",)]
    assert rows(db, "SELECT count(*) FROM history") == [(4,)]
    # Same tables as `index`: indexing the image now only fetches the other layer.
    indexed = CliRunner().invoke(cli, ["index", str(db), pushed.ref])
    assert indexed.exit_code == 0 and "1 indexed, 1 reused" in indexed.output
    # --peek-all with --db records every layer.
    db2 = tmp_path / "all.db"
    assert flow("-t", pushed.ref, "--peek-all", "--db", db2).exit_code == 0
    assert rows(db2, "SELECT count(*) FROM layers WHERE status = 'indexed'") == [(2,)]


def test_corrupt_blob_is_an_error_and_leaves_nothing(fault_proxy, unique_repo, tmp_path):
    lay = layer({"x": os.urandom(5000)}, compression="none")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.corrupt("/blobs/" + lay.digest, times=None, offset=700)
    out = tmp_path / "dl"
    db = tmp_path / "i.db"
    result = flow("-t", pushed.ref, "--peek-all", "--save-all", "--db", db, out=out)
    assert result.exit_code == 3
    assert f"Error: layer [0] {lay.digest}: " in result.output and "does not match its digest" in result.output
    assert "Done: 0 layer(s) peeked, 0 saved, 1 failed" in result.output
    assert files_under(out) == []
    assert rows(db, "SELECT status FROM layers") == [("failed",)]
    interactive = flow("-t", pushed.ref, input="0\n", out=out)
    assert interactive.exit_code == 3 and DOWNLOAD_PROMPT not in interactive.output
    assert files_under(out) == []


def test_not_a_tar_can_still_be_saved(registry, unique_repo, tmp_path):
    blob = os.urandom(3000)
    odd = raw_layer(blob, media_type="application/vnd.oci.image.layer.v1.tar")
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[odd])
    out = tmp_path / "dl"
    result = flow("-t", pushed.ref, input="0\ny\n", out=out)
    assert result.exit_code == 1
    assert f"Error: layer [0] {odd.digest}: " in result.output
    assert "Saved layer [0]" in result.output
    assert [sha256(p) for p in files_under(out)] == [odd.digest]


def test_foreign_layers_are_skipped(registry, unique_repo, tmp_path):
    foreign = foreign_layer(layer({"Windows/x.dll": "x"}), urls=["https://example.invalid/base"])
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[foreign, layer({"app": "1"})], media="docker")
    result = flow("-t", pushed.ref, "--peek-all", "--save-all", out=tmp_path / "dl")
    assert result.exit_code == 0, result.output
    assert "(foreign: not distributed by this registry)" in result.output
    assert "foreign layer: not distributed by this registry, skipped" in result.output
    assert len(files_under(tmp_path / "dl")) == 1


def test_answers_piped_in_are_shown(registry, unique_repo, tmp_path):
    pushed = app_image(registry, unique_repo())
    done = subprocess.run(
        [sys.executable, "-m", "layerslayer", "-t", pushed.ref, "-o", str(tmp_path / "dl")],
        input="1\nnope\nn\n", capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert LAYER_PROMPT + "1\n" in done.stdout
    assert DOWNLOAD_PROMPT + "nope\nPlease answer y" in done.stdout and DOWNLOAD_PROMPT + "n\n" in done.stdout


def test_unwritable_log_file(tmp_path):
    result = flow("-t", "alpine", "-l", tmp_path / "no" / "such" / "dir" / "x.log", out=tmp_path)
    assert result.exit_code == 2 and result.output.startswith("Error: cannot write the log file")


def test_bad_target_and_misplaced_options(tmp_path):
    bad = flow("-t", "Not/A Valid:ref", out=tmp_path)
    assert bad.exit_code == 2 and bad.output.startswith("Error: invalid image reference")
    misplaced = CliRunner().invoke(cli, ["--platform", "linux/arm64", "inspect", "alpine"])
    assert misplaced.exit_code == 2
    assert "--platform before a command is an option of the interactive flow" in misplaced.output


# -- a real terminal ------------------------------------------------------------------------


def spawn(tmp_path, *args, timeout=30):
    child = pexpect.spawn(
        sys.executable, ["-m", "layerslayer", *[str(a) for a in args]],
        cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200"),
        encoding="utf-8", timeout=timeout, dimensions=(40, 200),
    )
    child.logfile_read = transcript = _Transcript()
    return child, transcript


class _Transcript:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def __str__(self):
        return "".join(self.parts)


def finish(child) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus


def test_terminal_session(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"], attestation=True)
    default = host_default(["linux/amd64", "linux/arm64/v8"])
    log = tmp_path / "tty.log"
    child, transcript = spawn(tmp_path, "-t", pushed.ref, "-l", log)
    child.expect_exact(f"Select a platform [{default}]: ")
    assert "attestation" not in child.before and "unknown" not in child.before
    child.sendline("7")
    child.expect_exact("there is no platform 7")
    child.expect_exact(f"Select a platform [{default}]: ")
    child.sendline("1")
    child.expect_exact(LAYER_PROMPT)
    child.sendline("0")
    child.expect_exact("etc/platform")
    child.expect_exact(DOWNLOAD_PROMPT)
    child.sendline("y")
    child.expect(r"Saved layer \[0\] to (\S+)")
    saved = tmp_path / child.match.group(1)
    assert finish(child) == 0, str(transcript)
    assert sha256(saved) == pushed.images[1].layers[0].digest
    text = log.read_text()
    assert "Select a platform [" in text and "]: 7\n" in text and DOWNLOAD_PROMPT + "y\n" in text


def test_terminal_save_all_shows_progress_bars(registry, unique_repo, tmp_path):
    pushed = app_image(registry, unique_repo())
    log = tmp_path / "tty.log"
    child, transcript = spawn(tmp_path, "-t", pushed.ref, "--save-all", "-l", log)
    assert finish(child) == 0, str(transcript)
    text = str(transcript)
    assert "layer [0]" in text and "100%" in text and text.count("Saved layer [") == 2
    assert "etc/passwd" not in text  # no listings
    logged = log.read_text()
    assert "Saved layer [1]" in logged and "%" not in logged and "\r" not in logged  # bars stay out of the log
    assert len(files_under(tmp_path / "downloads")) == 2


def test_terminal_password_prompt_does_not_echo(basic_registry, unique_repo, tmp_path):
    pushed = push_image(basic_registry, f"{unique_repo()}:v1")
    log = tmp_path / "tty.log"
    child, transcript = spawn(tmp_path, "-t", pushed.ref, "-l", log)
    child.expect_exact(f"Username for {basic_registry.host} (empty to stop): ")
    child.sendline(basic_registry.username)
    child.expect_exact(f"Password for {basic_registry.username}@{basic_registry.host}: ")
    child.sendline(basic_registry.password)
    child.expect_exact(LAYER_PROMPT)
    child.sendline("")
    child.expect_exact(DOWNLOAD_PROMPT)
    child.sendline("n")
    assert finish(child) == 0, str(transcript)
    assert "hello.txt" in str(transcript)
    assert basic_registry.password not in str(transcript)
    assert basic_registry.password not in log.read_text()


def test_ctrl_c_at_a_prompt(registry, unique_repo, tmp_path):
    pushed = push_index(registry, f"{unique_repo()}:v1", images=["linux/amd64", "linux/arm64/v8"])
    child, transcript = spawn(tmp_path, "-t", pushed.ref)
    child.expect_exact("Select a platform [")
    child.expect_exact("]: ")
    child.sendintr()
    child.expect_exact("Interrupted.")
    assert finish(child) == 130
    assert "Traceback" not in str(transcript)


@pytest.mark.parametrize("mode", ["peek", "save-all", "peek-all+save-all"])
def test_ctrl_c_mid_download_leaves_no_partial_file(fault_proxy, unique_repo, tmp_path, mode):
    big = layer({f"data/{i}": os.urandom(4096) for i in range(400)})
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[big])
    blob = "/blobs/" + big.digest
    fault_proxy.stall(blob, seconds=30, after=big.size // 2)
    out = tmp_path / "downloads"
    flags = {"peek": [], "save-all": ["--save-all"], "peek-all+save-all": ["--peek-all", "--save-all"]}[mode]
    child, transcript = spawn(tmp_path, "-t", pushed.ref, *flags)
    if mode == "peek":
        child.expect_exact(LAYER_PROMPT)
        child.sendline("0")
    wait_until(lambda: fault_proxy.bytes_served(blob) >= big.size // 2, 20, what="half the layer served")
    wait_until(lambda: any(p.name.endswith(".part") for p in files_under(out)), 20,
               what=f"the download under way, in a .part file: {transcript}")
    child.sendintr()
    child.expect_exact("Interrupted.")
    assert finish(child) == 130, str(transcript)
    assert "Traceback" not in str(transcript)
    assert files_under(out) == []
