"""Secrets hygiene: with Basic and Bearer credentials in use, no password or
token appears in stdout, stderr, `-l` logs, error messages, `--debug` output
or the database; token files are written 0600.

Every command that talks to a registry runs with --debug (debug logging and
tracebacks on), in one fresh process per credential flavour so the logging is
the real thing; then every byte it produced is searched for the secrets: the
password, the Basic header, and every token the token server minted.
test_interactive.py covers the prompted password of the interactive flow;
test_inspect.py a wrong password's message.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from harness.builder import layer, push_image

USERNAME, PASSWORD = "alice", "s3cret-pa55"
BASIC = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()

# Runs CLI invocations one after another in this process, the way a shell
# would run them one by one (exit statuses and tracebacks printed).
_DRIVER = """
import json, sys, traceback
from layerslayer.cli import cli
for args in json.loads(sys.argv[1]):
    sys.stdout.write(f"=== {args[0]}\\n"); sys.stdout.flush()
    sys.stderr.write(f"=== {args[0]}\\n"); sys.stderr.flush()
    try:
        cli.main(args, prog_name="layerslayer")
    except SystemExit as exit:
        sys.stdout.write(f"=== exit {exit.code}\\n")
    except BaseException:
        traceback.print_exc()
        sys.stdout.write("=== exit traceback\\n")
    sys.stdout.flush(); sys.stderr.flush()
"""


def drive(invocations: list[list[str]], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps([[str(a) for a in args] for args in invocations])],
        capture_output=True, text=True, cwd=cwd, input=stdin, timeout=180,
    )


def secrets_in_use(token_server=None) -> list[str]:
    found = [PASSWORD, BASIC]
    if token_server is not None:
        for request in token_server.requests:
            token = getattr(request, "token", None)
            if token:
                found.append(token)
                found.append(token.split(".")[2][:24])  # even a piece of the signature
    return found


def everything_written(root: Path) -> dict[str, bytes]:
    "Every file under root (databases with their -wal/-shm, logs, saved blobs)."
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_no_secret(where: str, data: bytes | str, secrets: list[str]) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for secret in secrets:
        assert secret.encode() not in blob, f"secret {secret[:6]}… found in {where}"


def commands(ref: str, host: str, creds: list[str], tmp: Path) -> list[list[str]]:
    db = tmp / "index.db"
    return [
        ["inspect", ref, *creds, "--debug"],
        ["inspect", ref, "--json", *creds, "--debug"],
        ["index", db, ref, *creds, "--debug"],
        ["save", ref, "--all", "--config", "-o", tmp / "saved", *creds, "--debug"],
        ["extract", ref, "*.conf", "-o", tmp / "extracted", *creds, "--debug"],
        ["extract", ref, "/etc/app.conf", "--stdout", *creds, "--debug"],
        ["export", db, "--match", "*.conf", "-o", tmp / "exported", *creds, "--debug"],
        ["find", db, "*.conf"],
        # The interactive flow's batch mode with its log file and index.
        ["-t", ref, *creds, "--peek-all", "--save-all", "-l", tmp / "flow.log", "--db", db, "-o", tmp / "flow"],
        # Failures while credentials are in use: an unknown image, a refused
        # password (with --debug: a traceback), an unreachable registry.
        ["inspect", f"{host}/nope/nothing:here", *creds, "--debug"],
        ["inspect", ref, "--username", USERNAME, "--password", PASSWORD + "-wrong", "--debug"],
        ["inspect", "127.0.0.1:9/x/y:z", *creds, "--retries", "1"],
    ]


@pytest.mark.integration
@pytest.mark.parametrize("flavour", ["basic", "token"])
def test_no_secret_in_any_output_log_or_database(request, unique_repo, tmp_path, flavour):
    reg = request.getfixturevalue("basic_registry" if flavour == "basic" else "token_registry")
    token_server = request.getfixturevalue("token_server") if flavour == "token" else None
    lay = layer({"etc/app.conf": "debug = false\n", "srv/index.html": "<p>hi</p>\n"})
    pushed = push_image(reg, f"{unique_repo()}:v1", layers=[lay])
    creds = ["--username", USERNAME, "--password", PASSWORD]
    work = tmp_path / "work"
    work.mkdir()
    done = drive(commands(pushed.ref, reg.host, creds, work), cwd=work)

    exits = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("=== exit")]
    # inspect ×2, index, save, extract ×2, export, find, flow: 0; the failures: 1, 1, 3.
    assert exits[:9] == ["0"] * 9, (exits, done.stdout[-3000:], done.stderr[-3000:])
    assert exits[9:11] == ["traceback", "traceback"]  # --debug re-raises for the traceback
    assert exits[11] == "3"
    assert "debug: " in done.stderr  # debug logging was on
    assert "authentication failed" in done.stderr
    if token_server is not None:
        assert any(getattr(r, "token", None) for r in token_server.requests), "tokens were in use"
        assert any(r.user == USERNAME for r in token_server.requests), "Basic credentials went to the token server"

    secrets = secrets_in_use(token_server)
    assert_no_secret("stdout", done.stdout, secrets)
    assert_no_secret("stderr", done.stderr, secrets)
    files = everything_written(work)
    assert "flow.log" in files and "index.db" in files
    for name, data in files.items():
        assert_no_secret(name, data, secrets)


def test_docker_config_credentials_stay_secret(basic_registry, docker_config, unique_repo, tmp_path):
    "Credentials from docker's config.json (not the command line) are no more visible."
    pushed = push_image(basic_registry, f"{unique_repo()}:v1", layers=[layer({"a": "1"})])
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps([
            ["inspect", pushed.ref, "--debug"], ["index", str(work / "i.db"), pushed.ref, "--debug"],
        ])],
        capture_output=True, text=True, cwd=work, timeout=120, env=dict(os.environ),
    )
    assert done.stdout.count("=== exit 0") == 2, done.stdout + done.stderr
    for where, data in {"stdout": done.stdout, "stderr": done.stderr, **everything_written(work)}.items():
        assert_no_secret(where, data, [PASSWORD, BASIC])


def test_token_file_is_refreshed_0600_and_never_shown(token_registry, token_server, unique_repo, tmp_path):
    pushed = push_image(token_registry, f"{unique_repo()}:v1", layers=[layer({"a": "1"})])
    token_file = tmp_path / "token.txt"
    token_file.write_text("stale-token-from-an-earlier-session\n")
    token_file.chmod(0o644)  # as a user may have left it
    work = tmp_path / "work"
    work.mkdir()
    done = drive([
        ["inspect", pushed.ref, "--token-file", token_file, "--debug"],
        ["index", work / "i.db", pushed.ref, "--token-file", token_file, "--debug"],
        ["-t", pushed.ref, "--token-file", token_file, "--peek-all", "-l", work / "flow.log"],
    ], cwd=work)
    assert done.stdout.count("=== exit 0") == 3, done.stdout + done.stderr
    fresh = token_file.read_text().strip()
    assert fresh and fresh != "stale-token-from-an-earlier-session"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    # No stray temporary copies of the token next to it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.txt", "work"]
    secrets = secrets_in_use(token_server) + [fresh, "stale-token-from-an-earlier-session"]
    for where, data in {"stdout": done.stdout, "stderr": done.stderr, **everything_written(work)}.items():
        assert_no_secret(where, data, secrets)
