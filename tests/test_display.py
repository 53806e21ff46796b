"""Untrusted text never reaches a terminal raw.

An image is built with escape sequences, CR, C1 codes and a bidi override in
its file names, link targets, build steps, platform and labels, and a
registry answers with an escape sequence in its error message. Every command
that shows them (inspect, index, images, find, ls, extract, export --files,
the interactive flow and its -l log, `Error:` lines) must print them escaped
by ``display.printable``: visible as ``\\x1b``, never acted on.
"""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
from click.testing import CliRunner
from harness.builder import file, layer, push_image, symlink
from harness.terminal import BIDI, CLEAR, CSI_C1, OSC_TITLE, RED, escaped, raw_controls

import layerslayer
from layerslayer import display, interactive
from layerslayer.cli import cli

EVIL_NAME = f"etc/evil{OSC_TITLE}.conf"
# click.echo drops CSI sequences (ESC [ ... letter) when not on a terminal, as
# under the test runner, but not OSC, BEL, C1 or bidi: each string has some.
EVIL_LINK = f"lnk{OSC_TITLE}{CLEAR}"
EVIL_TARGET = f"target\x07{RED}"
EVIL_BIDI = f"bidi{BIDI}txt.exe"
EVIL_C1 = f"c1-{CSI_C1}"
EVIL_STEP = f"RUN echo {OSC_TITLE}{CLEAR}done"
EVIL_VARIANT = f"v8{OSC_TITLE}"


def invoke(*args: str, input: str | None = None):
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    return result, result.stdout + result.stderr


@pytest.fixture(scope="module")
def hostile(registry):
    evil = layer([
        file(EVIL_NAME, "x\n"),
        symlink(EVIL_LINK, EVIL_TARGET),
        file(EVIL_BIDI, "y\n"),
        file(EVIL_C1, "z\n"),
        file("cr\rname", "w\n"),
    ])
    return push_image(
        registry, "t/display-hostile:v1", layers=[evil], history=[EVIL_STEP],
        config={"variant": EVIL_VARIANT, "config": {"Labels": {"evil": f"{RED}label{OSC_TITLE}"}}},
    )


@pytest.fixture(scope="module")
def hostile_db(hostile, tmp_path_factory):
    db = tmp_path_factory.mktemp("display") / "hostile.db"
    result, output = invoke("index", db, hostile.ref)
    assert result.exit_code == 0, output
    assert not raw_controls(output), output
    return db


def test_printable_escapes_every_control_and_nothing_else():
    for text in (EVIL_NAME, EVIL_LINK, EVIL_BIDI, EVIL_C1, EVIL_STEP, "a\nb\udcff\U000e0001"):
        assert display.printable(text) == escaped(text)
    assert display.printable("plain/ünïcödé name.txt") == "plain/ünïcödé name.txt"
    assert display.printable(OSC_TITLE) == "\\x1b]0;pwned\\x07"
    assert display.printable("a\nb\tc\rd\x7f") == "a\\nb\\tc\\rd\\x7f"
    assert display.printable(CSI_C1 + BIDI + "\u200b") == "\\x9b31m\\u202e\\u200b"
    assert display.printable("bad-\udcff-byte") == "bad-\\xff-byte"  # surrogateescape'd
    assert display.printable(None) == "" and display.printable(12) == "12"
    once = display.printable(OSC_TITLE + "\udcfe")
    assert display.printable(once) == once and not raw_controls(once)
    # One helper: no module of the package has an escaper of its own.
    for info in pkgutil.walk_packages(layerslayer.__path__, "layerslayer."):
        module = importlib.import_module(info.name)
        assert getattr(module, "printable", display.printable) is display.printable, info.name
    assert interactive.printable is display.printable


def test_inspect_escapes_build_steps_platform_and_labels(hostile):
    result, output = invoke("inspect", hostile.ref)
    assert result.exit_code == 0, output
    assert not raw_controls(output), output
    assert escaped(EVIL_STEP) in output and escaped(f"linux/amd64/{EVIL_VARIANT}") in output
    result, output = invoke("inspect", hostile.ref, "--json")
    assert result.exit_code == 0, output
    assert not raw_controls(output)  # JSON escapes them itself
    assert json.loads(result.stdout)["history"][0]["created_by"] == EVIL_STEP


def test_images_find_and_ls_escape_names_and_platforms(hostile, hostile_db):
    result, output = invoke("images", hostile_db)
    assert result.exit_code == 0, output
    assert not raw_controls(output), output
    assert escaped(EVIL_VARIANT) in output
    result, output = invoke("find", hostile_db, "*")
    assert result.exit_code == 0, output
    assert not raw_controls(output), output
    for text in (EVIL_NAME, EVIL_BIDI, EVIL_C1, EVIL_TARGET, "cr\rname", EVIL_VARIANT):
        assert escaped(text) in output, text
    result, output = invoke("ls", hostile_db, hostile.ref)
    assert result.exit_code == 0 and not raw_controls(output), output
    result, output = invoke("ls", hostile_db, hostile.ref, f"/no{OSC_TITLE}")
    assert result.exit_code == 1 and not raw_controls(output), output


def test_extract_and_export_files_escape_what_they_wrote(hostile, hostile_db, tmp_path):
    result, output = invoke("extract", hostile.ref, "*", "-o", tmp_path / "x")
    assert not raw_controls(output), output
    assert escaped(EVIL_NAME) in result.stdout and escaped(EVIL_BIDI) in result.stdout
    assert (tmp_path / "x" / EVIL_NAME).read_text() == "x\n"  # the real name on disk
    result, output = invoke("export", hostile_db, "--match", "*", "--files", "-o", tmp_path / "e")
    assert result.exit_code == 0, output
    assert not raw_controls(output), output
    assert escaped(EVIL_NAME) in result.stdout and escaped(EVIL_C1) in result.stdout
    result, output = invoke("extract", hostile.ref, f"nothing{OSC_TITLE}", "--stdout")
    assert result.exit_code == 1 and not raw_controls(output), output


def test_interactive_flow_and_its_log_escape(hostile, tmp_path):
    log = tmp_path / "flow.log"
    result, output = invoke("-t", hostile.ref, "--peek-all", "-l", log)
    assert result.exit_code == 0, output
    assert not raw_controls(output), output
    assert f"Platform: {escaped('linux/amd64/' + EVIL_VARIANT)}" in output
    assert escaped(EVIL_STEP) in output and escaped(EVIL_NAME) in output
    text = log.read_text()
    assert not raw_controls(text) and escaped(EVIL_STEP) in text and escaped(EVIL_NAME) in text


def test_registry_error_messages_are_escaped(hostile, fault_proxy, tmp_path):
    message = f"no such thing {OSC_TITLE}{CLEAR}"
    body = json.dumps({"errors": [{"code": "MANIFEST_INVALID", "message": message}]}).encode()
    ref = f"{fault_proxy.host}/{hostile.repository}:v1"
    fault_proxy.fail(400, "/manifests/", body=body, times=None)
    result, output = invoke("inspect", ref)
    assert result.exit_code != 0
    assert not raw_controls(output), output
    assert output.startswith("Error: ") and escaped(OSC_TITLE) in output
    log = tmp_path / "flow.log"
    result, output = invoke("-t", ref, "--peek-all", "-l", log)
    assert result.exit_code != 0 and not raw_controls(output), output
    assert escaped(OSC_TITLE) in output
    text = log.read_text()
    assert "Error: " in text and escaped(OSC_TITLE) in text and not raw_controls(text)


# -- find --csv, -p, the -l log -----------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"evil.example\",\"x\")", "+1+cmd", "-2+3", "@SUM(1+1)", "\tpadded", "\rreturn"]


def test_find_csv_neutralises_spreadsheet_formulas(registry, tmp_path):
    import csv
    import io

    members = [file(name, "x") for name in FORMULAS] + [symlink("link", "=cmd|' /C calc'!A0")]
    pushed = push_image(registry, "t/display-csv:v1", layers=[layer(members)])
    db = tmp_path / "csv.db"
    assert invoke("index", db, pushed.ref)[0].exit_code == 0
    result, output = invoke("find", db, "*", "--csv")
    assert result.exit_code == 0, output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    cells = [value for row in rows for value in row.values() if value]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert sorted(r["path"] for r in rows if r["type"] == "file") == sorted("'" + name for name in FORMULAS)
    assert [r["linkname"] for r in rows if r["type"] == "symlink"] == ["'=cmd|' /C calc'!A0"]
    assert {r["permissions"] for r in rows if r["type"] == "file"} == {"'-rw-r--r--"}
    # JSON is for programs: the names as they are.
    result, _ = invoke("find", db, "*", "--json")
    assert sorted(r["path"] for r in json.loads(result.stdout) if r["type"] == "file") == sorted(FORMULAS)


def test_password_on_the_command_line_warns(basic_registry):
    pushed = push_image(basic_registry, "t/display-pw:v1")
    user, password = basic_registry.username, basic_registry.password
    result = CliRunner().invoke(cli, ["inspect", pushed.ref, "-u", user, "-p", password])
    assert result.exit_code == 0, result.output
    assert "shows in `ps`" in result.stderr and "--password-stdin" in result.stderr
    assert password not in result.output
    result = CliRunner().invoke(cli, ["inspect", pushed.ref, "-u", user, "--password-stdin"], input=password + "\n")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.stderr


def test_log_masks_a_password_only_as_a_whole_token(registry, tmp_path):
    "A password `root` must not turn the log's root/root owners and /root paths into stars."
    log = open(tmp_path / "unit.log", "w")
    ui = interactive.Prompter(lambda p: "", lambda text, err: None, log=log, secrets=["root", "s3cr3t+/="])
    ui.say("drwx------  root/root  root/.ssh/  /root  rooted")
    ui.say("login root refused; user=root, 'root' (root) password:s3cr3t+/= token s3cr3t+/=x")
    ui.close()
    text = (tmp_path / "unit.log").read_text()
    assert "drwx------  root/root  root/.ssh/  /root  rooted\n" in text
    assert "login ******** refused; user=********, '********' (********) password:******** token s3cr3t+/=x" in text

    pushed = push_image(registry, "t/display-log:v1", layers=[layer([file("root/.profile", "x")])])
    result, output = invoke("-t", pushed.ref, "--peek-all", "-u", "root", "-p", "root", "-l", tmp_path / "flow.log")
    assert result.exit_code == 0, output
    text = (tmp_path / "flow.log").read_text()
    assert "root/root" in text and "root/.profile" in text and "****" not in text


# -- messages -----------------------------------------------------------------------------------


def test_a_login_typed_at_the_prompt_is_not_called_username(basic_registry, tmp_path):
    pushed = push_image(basic_registry, "t/display-login:v1")
    answers = f"alice\nwrong-password\n{basic_registry.username}\n{basic_registry.password}\n\nn\n"
    result = CliRunner().invoke(cli, ["-t", pushed.ref, "-o", str(tmp_path / "dl")], input=answers)
    assert result.exit_code == 0, result.output
    refused = [line for line in result.output.splitlines() if line.startswith("authentication failed")]
    assert refused and all("(credentials from the login typed at the prompt)" in line for line in refused)
    assert "--username" not in result.output.split("Username for", 1)[1]
    # Given as flags, they are --username's.
    result = CliRunner().invoke(cli, ["inspect", pushed.ref, "-u", "alice", "--password-stdin"], input="nope\n")
    assert result.exit_code != 0 and "(credentials from --username)" in result.output


def test_save_help_lists_only_its_own_exit_causes():
    text = CliRunner().invoke(cli, ["save", "--help"]).output
    status = text.split("Exit status:", 1)[1].split("Options:", 1)[0]
    assert "digest or size mismatch" in status and "not found" in status
    for other in ("matched", "matches", "pattern", "index", "summary"):
        assert other not in status, other
    extract = CliRunner().invoke(cli, ["extract", "--help"]).output.split("Exit status:", 1)[1]
    assert "nothing matched" in extract

