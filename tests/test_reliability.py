"""Reliability: network faults for every command that talks to a registry,
crash safety of `index` under SIGKILL, concurrent writers and a reader.

Faults come from the harness proxy in front of the real registry (never
from mocks of our client). Each command either succeeds after retrying,
within a bounded total time, or fails with one clear line; the index never
holds part of a layer; a saved or extracted file never holds unverified or
partial bytes.

test_registry.py covers the client's retry rules request by request; here
the same faults hit whole commands, end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness.builder import layer, push_image
from harness.dbrows import rows
from harness.wait import wait_until

from layerslayer.cli import cli

# A command under faults must end (success or failure) within this many seconds.
COMMAND_BOUND = 20


def run(*args):
    started = time.monotonic()
    result = CliRunner().invoke(cli, [str(a) for a in args])
    result.seconds = time.monotonic() - started
    return result



def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


# -- the image every network test reads ------------------------------------------------

BIG_FILES = {f"data/f{i:02d}.bin": noise(8000, i) for i in range(50)}  # ~400 KB of gzip that does not shrink
SMALL_FILES = {"etc/os-release": b"ID=reliability\n", "app/.env": b"TOKEN=not-a-secret\n"}


class Served:
    "The test image as pushed (one per module) and what each command must produce."

    def __init__(self, registry):
        self.repository = f"t/reliability-{uuid.uuid4().hex[:8]}"
        self.big = layer(BIG_FILES, compression="gzip")
        self.small = layer(SMALL_FILES, compression="zstd")
        self.pushed = push_image(registry, f"{self.repository}:v1", layers=[self.big, self.small])

    def ref(self, proxy) -> str:
        return f"{proxy.host}/{self.repository}:v1"


@pytest.fixture(scope="module")
def served(registry):
    return Served(registry)


# -- one function per command: run it, check its guarantees ------------------------------


def do_inspect(served, proxy, tmp_path, *opts, ok=True):
    result = run("inspect", served.ref(proxy), "--json", *opts)
    no_traceback(result)
    if ok:
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)  # stderr: the -p warning
        assert data["digest"] == served.pushed.digest
        assert [layer["digest"] for layer in data["layers"]] == [served.big.digest, served.small.digest]
    else:
        assert result.exit_code == 3, result.output
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return result


def do_index(served, proxy, tmp_path, *opts, ok=True):
    db = tmp_path / "index.db"
    result = run("index", db, served.ref(proxy), "--quiet", *opts)
    no_traceback(result)
    layer_rows = {d: (s, n, e) for d, s, n, e in rows(db, "SELECT digest, status, entries, error FROM layers")}
    files = {(d, p) for d, p in rows(db, "SELECT layer_digest, path FROM files")}
    small_expected = {(served.small.digest, p) for p in SMALL_FILES}
    big_expected = {(served.big.digest, p) for p in BIG_FILES}
    assert layer_rows[served.small.digest][:2] == ("indexed", len(small_expected))
    if ok:
        assert result.exit_code == 0, result.output
        assert layer_rows[served.big.digest] == ("indexed", len(big_expected), None)
        assert files == small_expected | big_expected
    else:
        assert result.exit_code == 1, result.output
        state, entries, error = layer_rows[served.big.digest]
        assert state == "failed" and error and "\n" not in error, layer_rows
        # The index never holds part of a layer.
        assert files == small_expected
        errors = [line for line in result.output.splitlines() if line.startswith("failed")]
        assert errors == [f"failed   {served.big.digest}: {error}"], result.output
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    return result


def saved_files(out: Path) -> dict[str, Path]:
    return {p.name: p for p in out.rglob("*") if p.is_file()}


def do_save(served, proxy, tmp_path, *opts, ok=True):
    out = tmp_path / "saved"
    result = run("save", served.ref(proxy), "--all", "-o", out, *opts)
    no_traceback(result)
    files = saved_files(out)
    # Whatever is there under its final name holds exactly the verified bytes.
    for name, path in files.items():
        if not name.endswith(".part"):
            assert sha256_hex(path.read_bytes()) == name.split(".")[0], name
    big_name = served.big.digest.split(":")[1] + ".tar.gz"
    small_name = served.small.digest.split(":")[1] + ".tar.zst"
    assert small_name in files
    if ok:
        assert result.exit_code == 0, result.output
        assert big_name in files and not any(n.endswith(".part") for n in files)
    else:
        assert result.exit_code == 3, result.output
        assert big_name not in files
        errors = [line for line in result.output.splitlines() if line.startswith("failed")]
        assert len(errors) == 1 and errors[0].startswith(f"failed   {served.big.digest}: "), result.output
    return result


def do_extract(served, proxy, tmp_path, *opts, ok=True):
    out = tmp_path / "extracted"
    result = run("extract", served.ref(proxy), "*.bin", "etc/os-release", "-o", out, *opts)
    no_traceback(result)
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else {}
    expected = {**BIG_FILES, "etc/os-release": SMALL_FILES["etc/os-release"]}
    # Never half a file: everything written is complete and right.
    for path, data in written.items():
        assert expected.get(path) == data, path
    if ok:
        assert result.exit_code == 0, result.output
        assert written == expected
    else:
        assert result.exit_code == 3, result.output
        assert set(written) < set(expected)
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.output
    return result


COMMANDS = {"inspect": do_inspect, "index": do_index, "save": do_save, "extract": do_extract}


def fault_path(served, command: str) -> str:
    "inspect needs manifests; the others spend their time on the big layer's blob."
    return "/manifests/" if command == "inspect" else f"/blobs/{served.big.digest}"


def body_cut(command: str) -> int:
    return 100 if command == "inspect" else 100_000


# Transient faults, each firing once, in the order the requests meet them.
# Status storms carry Retry-After: 0 (backoff itself is timed in test_registry.py);
# `index` also meets a 429 with Retry-After: 1, which it must honour.
STATUS_STORM = [(429, 0), (500, 0), (502, 0), (503, 0), (504, 0)]


def status_storm(proxy, path, cut, command):
    storm = STATUS_STORM[:1] + [(429, 1)] + STATUS_STORM[1:] if command == "index" else STATUS_STORM
    return [proxy.fail(status, path, times=1, retry_after=after) for status, after in storm]


def connection_storm(proxy, path, cut, command):
    return [
        proxy.drop(path, times=1),
        proxy.reset_mid_body(path, after=cut, times=1),
        proxy.truncate(path, times=1),
        proxy.stall(path, seconds=5, after=cut, times=1),  # silent past --timeout 1
    ]


TRANSIENT = {"status storm": status_storm, "connection storm": connection_storm}

PERSISTENT = {
    "503": (lambda p, path, cut: p.fail(503, path, times=None), "HTTP 503"),
    "reset mid-body": (lambda p, path, cut: p.reset_mid_body(path, after=cut, times=None), "broke"),
    "stall past read timeout": (lambda p, path, cut: p.stall(path, seconds=5, after=cut, times=None), "timed out"),
}


@pytest.mark.parametrize("storm", list(TRANSIENT))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_transient_faults_are_survived(served, fault_proxy, tmp_path, command, storm):
    faults = TRANSIENT[storm](fault_proxy, fault_path(served, command), body_cut(command), command)
    result = COMMANDS[command](served, fault_proxy, tmp_path, "--retries", "8", "--timeout", "1", ok=True)
    assert [f.hits for f in faults] == [1] * len(faults), "every fault must have fired"
    assert result.seconds < COMMAND_BOUND
    if storm == "status storm" and command == "index":
        assert result.seconds >= 0.95  # Retry-After: 1 was honoured


@pytest.mark.parametrize("fault", list(PERSISTENT))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_persistent_fault_fails_with_one_clear_line(served, fault_proxy, tmp_path, command, fault):
    apply, reason = PERSISTENT[fault]
    apply(fault_proxy, fault_path(served, command), body_cut(command))
    result = COMMANDS[command](served, fault_proxy, tmp_path, "--retries", "2", "--timeout", "0.5", ok=False)
    assert result.seconds < COMMAND_BOUND
    if command == "extract" and fault != "503":
        # RegistryClient.iter_blob_ranges names the exception class, not the reason (noted for its owner).
        reason = "broke"
    assert reason in result.output, result.output


@pytest.mark.parametrize("command", ["index", "save", "extract"])
def test_break_then_a_server_that_ignores_range(fault_proxy, unique_repo, tmp_path, command):
    """The connection breaks mid-blob and the next Range request is answered
    200 with the whole blob (some proxies and CDNs do that): every command
    still gets every byte right. index and save, cut 1.5 MiB into a 3 MiB blob
    (past their 1 MiB reads), resume and skip what they had; extract, whose
    first 1 MiB window is cut, falls back to reading the blob from the start."""
    noise = random.Random(5).randbytes(3 << 20)
    big = layer({"opt/noise.bin": noise, "etc/app.conf": b"key=1\n"}, compression="gzip")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[big])
    path = f"/blobs/{big.digest}"
    cut = fault_proxy.truncate(path, after=(1 << 19) if command == "extract" else (3 << 19), times=1)
    ignored = fault_proxy.ignore_range(path, times=1)
    out = tmp_path / "out"
    args = {
        "index": ("index", tmp_path / "i.db", pushed.ref, "--quiet"),
        "save": ("save", pushed.ref, "--all", "-o", out),
        "extract": ("extract", pushed.ref, "opt/noise.bin", "-o", out),
    }[command]
    result = run(*args, "--retries", "4", "--timeout", "5")
    assert result.exit_code == 0, result.output
    assert cut.hits == 1 and ignored.hits == 1
    assert [r.status for r in fault_proxy.find(path) if r.fault == "ignore_range"] == [200]
    if command == "index":
        assert rows(tmp_path / "i.db", "SELECT path, size FROM files ORDER BY path") == [
            ("etc/app.conf", 6), ("opt/noise.bin", 3 << 20)]
    elif command == "save":
        assert saved_files(out)[big.digest.split(":")[1] + ".tar.gz"].read_bytes() == big.blob
    else:
        assert (out / "opt/noise.bin").read_bytes() == noise


def test_iter_blob_skips_what_it_had_when_range_is_ignored(served, fault_proxy):
    from layerslayer.registry import RegistryClient

    fault_proxy.truncate(f"/blobs/{served.big.digest}", after=150_000, times=1)
    fault_proxy.ignore_range(f"/blobs/{served.big.digest}", times=1)
    client = RegistryClient(fault_proxy.host, retries=2)
    data = b"".join(client.iter_blob(served.repository, served.big.digest, chunk_size=16384))
    assert data == served.big.blob
    assert len(data) < client.bytes_downloaded <= len(data) + 150_000  # what it had came again, and was skipped


def test_long_download_survives_more_breaks_than_retries(served, fault_proxy):
    """--retries bounds attempts without progress, not breaks per blob: a big
    layer over a flaky link goes on as long as every resume brings bytes."""
    from layerslayer.registry import RegistryClient

    breaks = fault_proxy.reset_mid_body(f"/blobs/{served.big.digest}", after=40_000, times=6)
    client = RegistryClient(fault_proxy.host, retries=2)
    data = b"".join(client.iter_blob(served.repository, served.big.digest, chunk_size=16384))
    assert data == served.big.blob and breaks.hits == 6


def test_break_after_a_long_transfer_is_still_resumed(served, fault_proxy):
    """max_retry_seconds counts from the break, not from the start: a download
    that broke after streaming longer than that is resumed, not abandoned."""
    from layerslayer.registry import RegistryClient

    fault_proxy.stall(f"/blobs/{served.big.digest}", seconds=1.5, after=100_000, then="close", times=1)
    client = RegistryClient(fault_proxy.host, retries=2, max_retry_seconds=0.5)
    data = b"".join(client.iter_blob(served.repository, served.big.digest, chunk_size=16384))
    assert data == served.big.blob


@pytest.mark.integration
@pytest.mark.parametrize("command,flavour", [("inspect", "token"), ("index", "basic"), ("save", "token"), ("extract", "basic")])
def test_redirect_to_another_host_never_carries_authorization(
    request, make_fault_proxy, unique_repo, tmp_path, command, flavour,
):
    """Blob requests answered with a 307 to a CDN on another host name: the
    command succeeds and the CDN never sees our Authorization header."""
    upstream = request.getfixturevalue("basic_registry" if flavour == "basic" else "token_registry")
    proxy = make_fault_proxy(upstream, cdn_host="localhost")
    served = _credentialed_image(proxy, unique_repo)
    proxy.redirect("/blobs/", times=None)
    opts = ("--username", "alice", "--password", "s3cret-pa55")
    COMMANDS[command](served, proxy, tmp_path, *opts, ok=True)
    assert proxy.cdn.records, "blobs must have come from the CDN"
    assert proxy.cdn.authorization_headers == [None] * len(proxy.cdn.records)
    # ...while the registry itself was asked with credentials.
    sent = [r.headers.get("Authorization") for r in proxy.find("/blobs/", method="GET")]
    assert any(sent)


def _credentialed_image(proxy, unique_repo) -> Served:
    served = Served.__new__(Served)
    served.repository = unique_repo()
    served.big = layer(BIG_FILES, compression="gzip")
    served.small = layer(SMALL_FILES, compression="zstd")
    served.pushed = push_image(proxy, f"{served.repository}:v1", layers=[served.big, served.small])
    proxy.clear_records()
    return served


# -- crash safety: SIGKILL at random moments -------------------------------------------

KILLS = 12  # SIGKILLs that must land while `index` is running
CRASH_BUDGET = 90  # seconds: a hard stop for the kill loop on a very slow machine


def content(db) -> dict:
    "Everything an index says, without row ids or timestamps: two runs that did the same agree."
    q = lambda sql: sorted(rows(db, sql))  # noqa: E731
    return {
        "images": q("SELECT registry, repository, tag, reference, digest, media_type FROM images"),
        "platforms": q(
            "SELECT i.digest, p.manifest_digest, p.media_type, p.platform, p.config_digest, p.created, p.attestation "
            "FROM platforms p JOIN images i ON i.id = p.image_id"
        ),
        "history": q(
            "SELECT p.manifest_digest, h.position, h.created_by, h.empty_layer, h.layer_position "
            "FROM history h JOIN platforms p ON p.id = h.platform_id"
        ),
        "stacks": q(
            "SELECT p.manifest_digest, pl.position, l.digest FROM platform_layers pl "
            "JOIN platforms p ON p.id = pl.platform_id JOIN layers l ON l.id = pl.layer_id"
        ),
        "layers": q("SELECT digest, media_type, size, status, listed_via, entries, bytes_read, error FROM layers"),
        "files": q(
            "SELECT layer_digest, position, path, type, size, mode, uid, gid, uname, gname, mtime, linkname, "
            "whiteout, opaque, offset, data_offset FROM files"
        ),
        "ghost_files": rows(db, "SELECT count(*) FROM ghost_files"),
        "visible_files": rows(db, "SELECT count(*) FROM visible_files"),
    }


def assert_consistent(db) -> int:
    "What any interrupted run must leave: a sound file, whole layers or none, a usable search index."
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    tables = {name for (name,) in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "layers" not in tables:
        # Killed before the schema's one transaction committed: nothing of it is there.
        assert tables <= {"_sqlite_migrations"}, tables
        return 0
    conn = sqlite3.connect(db)
    try:
        conn.execute("INSERT INTO paths_fts(paths_fts) VALUES ('integrity-check')")
    finally:
        conn.close()
    for digest, status, entries, stored in rows(
        db, "SELECT digest, status, entries, (SELECT count(*) FROM entries e WHERE e.layer_id = l.id) FROM layers l"
    ):
        if status == "indexed":
            assert stored == entries, (digest, entries, stored)
        else:
            assert stored == 0 and status == "pending", (digest, status, stored)
    return rows(db, "SELECT count(*) FROM layers WHERE status = 'indexed'")[0][0]


@pytest.fixture(scope="module")
def crash_images(registry):
    "Four images (one a two-platform index) sharing a base layer, with whiteouts: ~1 s to index."
    from harness.builder import build_image, opaque, whiteout

    prefix = f"t/crash-{uuid.uuid4().hex[:8]}"
    rng = random.Random(8)
    base = layer({f"usr/lib/base/{i:04d}.so": rng.randbytes(200) for i in range(2500)})
    refs = []
    for n in range(3):
        app = layer({f"srv/app{n}/{i:04d}.py": f"print({i})\n" for i in range(1200)}, compression="zstd")
        cleanup = layer([whiteout("usr/lib/base/0001.so"), opaque(f"srv/app{n}"), f"srv/app{n}/main.py"])
        refs.append(push_image(registry, f"{prefix}/app{n}:v1", layers=[base, app, cleanup]).ref)
    multi = [
        build_image([base, layer({f"opt/{arch}/{i:04d}": arch for i in range(800)})], platform=f"linux/{arch}")
        for arch in ("amd64", "arm64")
    ]
    from harness.builder import push_index

    refs.append(push_index(registry, f"{prefix}/multi:v1", images=multi).ref)
    return refs


def index_cmd(db, refs):
    return [sys.executable, "-m", "layerslayer", "index", str(db), *refs, "--all-platforms", "--jobs", "2", "--quiet"]


# Runs `layerslayer index` in forked children of one interpreter that has
# imported layerslayer already: each child is a whole process (its own
# SQLite connections, threads and sockets) that SIGKILL ends like any other,
# without the second of interpreter start-up that would make most random
# moments land before the command has even begun. A child's exit is only
# reaped when the test says so, so its pid cannot be reused before the kill.
_ZYGOTE = r"""
import json, os, sys, traceback
import layerslayer.cli, layerslayer.indexer, layerslayer.store, layerslayer.image, layerslayer.tarstream
from layerslayer.cli import cli
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_RDWR), 0)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 2)
        code = 0
        try:
            cli.main(request["args"], prog_name="layerslayer")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 70
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    sys.stdin.readline()  # "reap"
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"killed": os.WIFSIGNALED(status), "code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Zygote:
    def __init__(self, stderr: Path):
        self.stderr = stderr
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def start(self, args: list[str]) -> int:
        self.proc.stdin.write(json.dumps({"args": [str(a) for a in args], "stderr": str(self.stderr)}) + "\n")
        return json.loads(self.proc.stdout.readline())["pid"]

    def reap(self) -> dict:
        self.proc.stdin.write("reap\n")
        return json.loads(self.proc.stdout.readline())

    def run(self, args: list[str]) -> tuple[dict, float]:
        started = time.monotonic()
        self.start(args)
        wait_until(self._finished, 120, 0.002)
        seconds = time.monotonic() - started
        return self.reap(), seconds

    def _finished(self) -> bool:
        # The child is ours to watch but the zygote's to reap: a zombie has finished.
        pid = self._pid_of_child()
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    def _pid_of_child(self) -> int:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return int(f.read().split()[0])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(crash_images, tmp_path, record_property, rng):
    clean_db = tmp_path / "clean.db"
    clean = subprocess.run(index_cmd(clean_db, crash_images), capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    expected = content(clean_db)
    assert len(expected["images"]) == 4 and len(expected["layers"]) == 9 and expected["ghost_files"] != [(0,)]

    zygote = Zygote(tmp_path / "stderr.txt")
    try:
        args = lambda db: index_cmd(db, crash_images)[3:]  # noqa: E731  (without "python -m layerslayer")
        # A warm-up (the registry's and the OS's caches), then the span to aim at.
        for name in ("warm-up", "timing"):
            outcome, span = zygote.run(args(tmp_path / f"{name}.db"))
            assert outcome == {"killed": False, "code": 0}, (tmp_path / "stderr.txt").read_text()
            assert content(tmp_path / f"{name}.db") == expected

        kills, rounds, runs, mid_run = 0, 0, 0, 0
        deadline = time.monotonic() + CRASH_BUDGET
        db = tmp_path / "round0.db"
        # Kills land at random moments: go on (up to 3x as many) until two landed after a commit.
        while kills < KILLS or (mid_run < 2 and kills < 3 * KILLS):
            assert time.monotonic() < deadline, f"only {kills} kills landed in {CRASH_BUDGET}s"
            # Anywhere in a clean run's span: opening and migrating the index,
            # resolving images, streaming layers, committing them.
            moment = rng.uniform(0, span)
            pid = zygote.start(args(db))
            runs += 1
            time.sleep(moment)
            os.kill(pid, signal.SIGKILL)  # running, or a zombie not yet reaped: never another process
            outcome = zygote.reap()
            if outcome["killed"]:
                kills += 1
                if db.exists() and assert_consistent(db):
                    mid_run += 1
                continue
            # The run finished first: it must have produced the clean run's index.
            assert outcome["code"] == 0, (tmp_path / "stderr.txt").read_text()
            assert_consistent(db)
            assert content(db) == expected
            rounds += 1
            db = tmp_path / f"round{rounds}.db"
        # The last round: one more run finishes the job.
        outcome, _ = zygote.run(args(db))
        assert outcome == {"killed": False, "code": 0}, (tmp_path / "stderr.txt").read_text()
    finally:
        zygote.close()
    assert_consistent(db)
    assert content(db) == expected
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
    record_property("kills", kills)
    record_property("kills_after_a_commit", mid_run)
    print(f"crash safety: {kills} SIGKILLs ({mid_run} with some layers committed), {runs + 2} runs, "
          f"{rounds + 1} databases equal to the clean run's, run span {span:.2f}s")
    assert mid_run >= 2, "some kills must land after layers were committed"


# -- concurrency: two writers and a reader ------------------------------------------------


@pytest.mark.slow
def test_two_index_runs_and_browse_on_one_database(registry, tmp_path):
    from harness.net import free_port

    prefix = f"t/concurrent-{uuid.uuid4().hex[:8]}"
    shared = layer({f"usr/share/{i:04d}": f"{i}" for i in range(1500)})
    pushed = [
        push_image(registry, f"{prefix}/img{n}:v1", layers=[shared, layer({f"app{n}/{i:04d}": f"{i}" for i in range(600)})])
        for n in range(6)
    ]
    refs = [p.ref for p in pushed]
    db = tmp_path / "shared.db"
    from layerslayer.store import open_db

    open_db(db).close()  # browse serves an existing index; the runs fill it while it serves

    port = free_port()
    browse = subprocess.Popen([sys.executable, "-m", "layerslayer", "browse", str(db), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = browse.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, browse.stderr.read() if browse.poll() is not None else "")
        url = match.group(1)
        consistency = urllib.request.quote(
            "select count(*) as bad from layers l where status = 'indexed' and entries != "
            "(select count(*) from entries e where e.layer_id = l.id)"
        )
        totals = urllib.request.quote("select (select count(*) from images) as images, (select count(*) from entries) as files")

        def ask(sql: str) -> dict:
            started = time.monotonic()
            with urllib.request.urlopen(f"{url}shared.json?sql={sql}&_shape=array", timeout=30) as response:
                assert response.status == 200
                answer = json.load(response)
            assert time.monotonic() - started < 15, "browse must not lock up while indexing"
            return answer[0]

        # Overlapping halves: images 2 and 3 are indexed by both runs at once.
        writers = [subprocess.Popen(index_cmd(db, refs[:4]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                   subprocess.Popen(index_cmd(db, refs[2:]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        polls, seen = 0, []
        deadline = time.monotonic() + 120
        while any(w.poll() is None for w in writers):
            assert time.monotonic() < deadline, "index runs locked up"
            assert ask(consistency) == {"bad": 0}, "a reader saw half a layer"
            seen.append(ask(totals)["files"])
            polls += 1
        for writer in writers:
            out, err = writer.communicate(timeout=60)
            assert writer.returncode == 0, (out, err)
            assert "Traceback" not in err and "locked" not in err, err
        assert seen == sorted(seen), "readers saw the index shrink"
        assert ask(totals) == {"images": 6, "files": 1500 + 6 * 600}
        assert browse.poll() is None, "browse must still be serving"
    finally:
        browse.send_signal(signal.SIGINT)
        try:
            browse.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            browse.kill()
            browse.communicate()
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert rows(db, "SELECT count(*) FROM layers WHERE status = 'indexed'") == [(7,)]
    assert rows(db, "SELECT count(*) FROM images") == [(6,)]
    # Both runs recorded the images they share, once each.
    assert sorted(r for (r,) in rows(db, "SELECT repository FROM images")) == sorted(p.repository for p in pushed)
    print(f"concurrency: {polls} consistent reads during two overlapping index runs")


def test_opening_the_index_keeps_the_locks_of_other_connections(tmp_path):
    """Regression: open_db() used to read the file's header with open()/close().
    Closing any descriptor of a database file drops every POSIX lock the process
    holds on it, so another process's close saw itself as the last user,
    checkpointed and deleted the WAL under our live connections, and their
    later commits were lost (two `index` runs on one file lost layers)."""
    from layerslayer.store import open_db

    db = tmp_path / "locks.db"
    open_db(db).close()
    keeper = open_db(db)  # a live connection (another indexing thread, say)
    try:
        keeper.execute("INSERT INTO images (registry, repository, reference, digest) VALUES ('r', 'x', 'x', 'd')")
        keeper.conn.commit()
        open_db(db).close()  # another thread opens and closes the index
        other = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM images').fetchone(); c.close()"
        subprocess.run([sys.executable, "-c", other, str(db)], check=True, timeout=60)
        # That process's close must have seen us: the WAL is still there, and our commits land.
        assert Path(f"{db}-wal").exists()
        keeper.execute("INSERT INTO images (registry, repository, reference, digest) VALUES ('r', 'y', 'y', 'd')")
        keeper.conn.commit()
    finally:
        keeper.close()
    assert rows(db, "SELECT repository FROM images ORDER BY repository") == [("x",), ("y",)]
