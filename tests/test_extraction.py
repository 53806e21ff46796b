"""`extract`, `export` and the extraction library against a real registry,
with faults (corruption, dropped connections) from the proxy."""

from __future__ import annotations

import json
import os
import stat

import pytest
from harness.builder import blockdev, chardev, dir_, fifo, file, hardlink, layer, opaque, push_image, symlink, whiteout
from test_download import blob_gets, client_for, noise, run, tree

from layerslayer.extraction import extract_files
from layerslayer.patterns import compile_patterns, parse_pattern

# -- patterns -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, path, expected",
    [
        ("*.pem", "etc/ssl/certs/ca.pem", True),   # no "/": the file name
        ("*.pem", "etc/ssl/ca.pem.bak", False),
        ("passwd", "etc/passwd", True),
        ("passwd", "etc/passwd-", False),
        ("/etc/passwd", "etc/passwd", True),        # leading "/" optional
        ("etc/passwd", "etc/passwd", True),
        ("etc/passwd", "usr/etc/passwd", False),    # with "/": the whole path
        ("/etc/*", "etc/ssl/certs/ca.pem", True),   # "*" also matches "/", like find -path
        ("/etc/?sl/*", "etc/ssl/x", True),
        ("/app/.env*", "app/.env.local", True),
        ("[!.]*", ".hidden", False),
        ("[^.]*", "visible", True),
        ("id_[rd]sa", "root/.ssh/id_rsa", True),
        ("ID_RSA", "root/.ssh/id_rsa", False),      # case-sensitive
        ("a[*]b", "x/a*b", True),                   # a literal "*"
        ("/etc/", "etc", True),                     # trailing "/" ignored
    ],
)
def test_pattern_semantics(pattern, path, expected):
    assert compile_patterns([pattern])(path) is expected


def test_pattern_ignore_case_and_helpers():
    assert compile_patterns(["ID_RSA", "/ETC/*"], ignore_case=True)("etc/x/id_rsa")
    assert parse_pattern("/etc/passwd").literal_path == "etc/passwd"
    assert parse_pattern("passwd").literal_path is None  # a name can be anywhere
    assert parse_pattern("/etc/*.conf").literal_path is None
    assert parse_pattern("/etc/[!x]*").sql_glob() == ("path", "etc/[^x]*")
    assert parse_pattern("*.pem").sql_glob() == ("name", "*.pem")
    with pytest.raises(ValueError):
        parse_pattern("/")


# -- extract ---------------------------------------------------------------------------------


@pytest.fixture
def layered_image(registry, unique_repo):
    base = layer([
        dir_("etc"), file("etc/passwd", "root:x:0:0\n"), file("etc/secret", "s3cr3t\n"),
        dir_("var/cache"), file("var/cache/old.db", "old\n"),
        file("usr/bin/sudo", b"\x7fELF", mode=0o4755),
        file("usr/lib/os-release", "ID=layerslayer\n"),
    ])
    top = layer([
        dir_("etc"), whiteout("etc/secret"), opaque("var/cache"),
        file("etc/passwd", "root:x:0:0\nbob:x:1000:1000\n"),
        symlink("etc/os-release", "../usr/lib/os-release"),
        file("var/cache/new.db", "new\n"),
    ], compression="zstd")
    return push_image(registry, f"{unique_repo()}:v1", layers=[base, top])


def test_extract_merged_view(layered_image, tmp_path):
    out = tmp_path / "out"
    result = run("extract", layered_image.ref, "/etc/*", "*.db", "sudo", "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "etc/passwd").read_text() == "root:x:0:0\nbob:x:1000:1000\n"  # the top layer wins
    assert os.readlink(out / "etc/os-release") == "../usr/lib/os-release"
    assert not (out / "etc/secret").exists()            # deleted by a whiteout
    assert not (out / "var/cache/old.db").exists()      # hidden by an opaque directory
    assert (out / "var/cache/new.db").read_text() == "new\n"
    sudo = (out / "usr/bin/sudo").stat()
    assert stat.S_IMODE(sudo.st_mode) == 0o755           # setuid dropped
    assert "deleted  etc/secret: removed by a later layer" in result.stderr
    assert "--layer 0" in result.stderr
    assert "setuid/setgid bits dropped from 1 file(s)" in result.stderr
    assert set(result.stdout.split()) == {"etc/passwd", "etc/os-release", "var/cache/new.db", "usr/bin/sudo"}


def test_extract_one_layer_gets_deleted_files_and_keep_modes(layered_image, tmp_path):
    out = tmp_path / "out"
    result = run("extract", layered_image.ref, "secret", "sudo", "--layer", "0", "--keep-modes", "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "etc/secret").read_text() == "s3cr3t\n"
    assert stat.S_IMODE((out / "usr/bin/sudo").stat().st_mode) == 0o4755


def test_extract_stdout_follows_symlinks_inside_the_image(layered_image):
    result = run("extract", layered_image.ref, "/etc/os-release", "--stdout")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"ID=layerslayer\n"
    result = run("extract", layered_image.ref, "/etc/passwd", "--stdout")
    assert result.stdout_bytes == b"root:x:0:0\nbob:x:1000:1000\n"


def test_extract_exit_statuses(layered_image, tmp_path):
    result = run("extract", layered_image.ref, "nothing-like-this", "-o", tmp_path / "o1")
    assert result.exit_code == 1 and "Nothing written" in result.stderr
    assert run("extract", layered_image.ref, "/etc/secret", "-o", tmp_path / "o2").exit_code == 1  # deleted
    assert run("extract", layered_image.ref, "x", "--layer", "9", "-o", tmp_path / "o3").exit_code == 2
    assert run("extract", layered_image.ref, "a", "b", "--stdout").exit_code == 2
    assert run("extract", layered_image.ref, "/", "-o", tmp_path / "o4").exit_code == 2
    assert run("extract", layered_image.ref, "/etc/nothing", "--stdout").exit_code == 1
    assert "Exit status" in run("extract", "--help").output


def test_extract_digest_mismatch_is_exit_3_and_removes_what_it_wrote(fault_proxy, unique_repo, tmp_path):
    lay = layer({"a.txt": "a\n", "b.bin": noise(50_000)})
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.corrupt(f"/blobs/{lay.digest}", offset=lay.size - 10)  # in the gzip trailer
    out = tmp_path / "out"
    result = run("extract", pushed.ref, "a.txt", "-o", out)
    assert result.exit_code == 3, result.output
    assert "does not match its digest" in result.stderr
    assert not (out / "a.txt").exists()


def hostile_layer():
    return layer([
        file("ok.txt", "fine\n"),
        file("../escape-dotdot", "x"),
        file("sub/../../escape-nested", "x"),
        symlink("abs-link", "/etc/passwd"),
        symlink("up-link", "../../outside"),
        symlink("deep/ok-link", "../ok.txt"),          # stays inside: allowed
        symlink("deep/tricky", "a/../../.."),          # ".." after a name: refused
        symlink("via", "deep"),
        file("via/through-symlink", "x"),              # written through a symlink made above
        hardlink("hl-out", "../../etc/passwd"),
        hardlink("hl-missing", "not/extracted"),
        hardlink("hl-ok", "ok.txt"),
        chardev("dev/null", 1, 3), blockdev("dev/sda", 8, 0), fifo("run/pipe"),
        file("bin/su", "x", mode=0o6755),
        file("long/" + "n" * 300, "long name\n"),
        file(b"odd/\xff\xfe-not-utf8", "odd\n"),
        file("pre/planted", "x"),                      # "pre" is a symlink already in DIR
    ])


def test_extract_refuses_every_hostile_entry_kind(registry, unique_repo, tmp_path):
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[hostile_layer()])
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "pre").symlink_to(outside)  # an earlier run (or anyone) left it there
    result = run("extract", pushed.ref, "*", "-o", out)
    assert result.exit_code == 1, result.output
    refused = {line.split()[1]: line for line in result.stderr.splitlines() if line.startswith("refused")}
    reasons = {
        "../escape-dotdot": "'..' component",
        "sub/../../escape-nested": "'..' component",
        "abs-link": "absolute path",
        "up-link": "points outside",
        "deep/tricky": "'..' after a name",
        "via/through-symlink": "through the symbolic link via",
        "hl-out": "hard link to ../../etc/passwd",
        "hl-missing": "not extracted",
        "dev/null": "device files are not created",
        "dev/sda": "device files are not created",
        "run/pipe": "FIFOs are not created",
        "pre/planted": "through the symbolic link pre",
    }
    for path, reason in reasons.items():
        assert path in refused, (path, result.stderr)
        assert reason in refused[path], refused[path]
    assert set(refused) == set(reasons)
    # Nothing outside DIR, nothing through the planted symlink.
    assert sorted(os.listdir(tmp_path)) == ["out", "outside"]
    assert list(outside.iterdir()) == []
    # What is allowed is there.
    assert (out / "ok.txt").read_text() == "fine\n"
    assert os.readlink(out / "deep/ok-link") == "../ok.txt"
    assert os.path.samefile(out / "hl-ok", out / "ok.txt")
    assert stat.S_IMODE((out / "bin/su").stat().st_mode) == 0o755
    assert os.path.islink(out / "via")
    assert not (out / "deep/through-symlink").exists()
    # A name too long for the file system is escaped, never dropped.
    long_files = list((out / "long").iterdir())
    assert len(long_files) == 1 and long_files[0].read_text() == "long name\n"
    assert len(os.fsencode(long_files[0].name)) <= 255
    assert f"escaped  'long/{'n' * 300}' written as 'long/{long_files[0].name}'" in result.stderr
    # A name that is not UTF-8 keeps its exact bytes (Linux file systems take any bytes).
    assert (out / os.fsdecode(b"odd/\xff\xfe-not-utf8")).read_text() == "odd\n"
    assert "Wrote" in result.stderr and f"{len(reasons)} refused" in result.stderr


def test_extract_absolute_names_never_leave_dir(registry, unique_repo, tmp_path):
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[layer([file("/abs/evil", "x\n")])])
    out = tmp_path / "out"
    result = run("extract", pushed.ref, "evil", "-o", out)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert result.exit_code == 1 and "refused  abs/evil (layer 0): absolute path" in result.stderr
    assert not (out / "abs/evil").exists()


def test_extract_and_index_take_times_beyond_the_platform(registry, unique_repo, tmp_path):
    # a pax mtime of 2**62 s (an int64, as Go wants, but beyond what a file
    # system holds): extract writes the file, leaving a time it cannot set,
    # and index records it. Beyond 64 bits Go's reader (the runtime) rejects
    # the layer: so does index, in one line.
    lay = layer([file("far.txt", "far\n", pax={"mtime": str(2**62)}), file("now.txt", "now\n")])
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    out = tmp_path / "out"
    result = run("extract", pushed.ref, "*.txt", "-o", out)
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_text() for p in out.iterdir()} == {"far.txt": "far\n", "now.txt": "now\n"}
    db = tmp_path / "i.db"
    assert run("index", db, pushed.ref, "--quiet").exit_code == 0
    found = run("find", db, "*.txt", "--nl")
    times = {r["path"]: r["mtime"] for r in map(json.loads, found.stdout.splitlines())}
    assert times == {"far.txt": 2**62, "now.txt": 1700000000}
    bad = push_image(registry, f"{unique_repo()}:v1", layers=[layer([file("farther.txt", "x\n", pax={"mtime": str(2**70)})])])
    result = run("index", db, bad.ref, "--quiet")
    assert result.exit_code != 0 and "bad time b'1180591620717411303424' (the runtime rejects the layer)" in result.stderr
    assert "Traceback" not in result.output


def test_extract_safe_tree_never_writes_half_a_file(registry, unique_repo, tmp_path):
    # A tar whose last file is cut short: the partial file must not stay.
    full = layer({"a.txt": "a\n", "b.bin": noise(20_000)}, compression="none")
    cut = full.tar[: 512 * 3 + 5000]
    from harness.builder import tar_layer

    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[tar_layer(cut, compression="gzip")])
    out = tmp_path / "out"
    result = run("extract", pushed.ref, "*", "-o", out)
    assert result.exit_code == 1, result.output
    assert "truncated" in result.stderr
    assert (out / "a.txt").exists() and not (out / "b.bin").exists()


def big_layer(position_mb: int, total_mb: int, seed: int = 7):
    "Incompressible filler files around one small wanted file."
    members = [file(f"filler/before-{i}", noise(1 << 20, seed + i)) for i in range(position_mb)]
    members.append(file("app/wanted.txt", "the one we want\n"))
    members += [file(f"filler/after-{i}", noise(1 << 20, seed + 1000 + i)) for i in range(total_mb - position_mb)]
    return layer(members)


def test_extract_exact_paths_stop_after_their_layer(fault_proxy, unique_repo, tmp_path):
    # Without the index, the layer that holds an exact path is read to its
    # end (a later copy of the path in that layer would win, as the runtime
    # unpacks it), and no layer below it is read at all.
    lower = layer([file(f"filler/lower-{i}", noise(1 << 20, 50 + i)) for i in range(8)])
    lay = big_layer(0, 8)
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lower, lay])
    fault_proxy.clear_records()
    out = tmp_path / "out"
    result = run("extract", pushed.ref, "/app/wanted.txt", "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "app/wanted.txt").read_text() == "the one we want\n"
    assert fault_proxy.bytes_served(f"/blobs/{lay.digest}") == lay.size
    assert fault_proxy.bytes_served(f"/blobs/{lower.digest}") == 0
    assert "read to the end (digest verified)" in result.stderr


def test_extract_files_library_stops_after_the_layer_and_reports(registry, unique_repo, tmp_path):
    lay = big_layer(2, 12)
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[layer({"below": "x"}), lay])
    client = client_for(registry)
    report = extract_files(client, pushed.repository, pushed.image.layers, ["/app/wanted.txt"], tmp_path / "o")
    assert [w.path for w in report.written] == ["app/wanted.txt"]
    assert report.exit_status == 0
    assert [r.digest for r in report.layers] == [lay.digest] and report.layers[0].complete


# -- with the index: export, extract --db ----------------------------------------------------


@pytest.fixture
def indexed_image(fault_proxy, unique_repo, tmp_path):
    "An image pushed through the proxy and indexed with `layerslayer index` into a fresh DB."
    pem = layer({"etc/ssl/private/server.pem": "-----BEGIN KEY-----\n", "etc/hostname": "box\n"})
    plain = layer({"usr/share/doc/readme": noise(400_000, 3)})
    env = layer([dir_("app"), file("app/.env", "TOKEN=hunter2\n"), file("app/main.py", "print()\n")], compression="zstd")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[pem, plain, env])
    db = tmp_path / "images.db"
    result = run("index", db, pushed.ref)
    assert result.exit_code == 0, result.output
    fault_proxy.clear_records()
    return pushed, db


def test_export_match_end_to_end(fault_proxy, indexed_image, tmp_path):
    pushed, db = indexed_image
    pem, plain, env = pushed.layers
    out = tmp_path / "dl"
    result = run("export", db, "--match", "*.pem", "--match", "/app/.env", "-o", out)
    assert result.exit_code == 0, result.output
    for lay, ext in ((pem, "tar.gz"), (env, "tar.zst")):
        saved = out / pushed.host / pushed.repository / f"{lay.digest[7:]}.{ext}"
        assert saved.read_bytes() == lay.blob
        assert f"saved    {saved}" in result.stdout
    assert not blob_gets(fault_proxy, plain.digest)  # no match in it: never fetched
    assert fault_proxy.bytes_served("/blobs/") == pem.size + env.size
    assert "Exported 2 layer(s)" in result.stderr
    # Again: both are there and verified, nothing is downloaded.
    fault_proxy.clear_records()
    result = run("export", db, "--match", "*.pem", "--match", "/app/.env", "-o", out)
    assert result.exit_code == 0 and result.stdout.count("already saved, verified") == 2
    assert fault_proxy.count("/blobs/") == 0
    # By digest prefix.
    result = run("export", db, "--layer", plain.digest[7:19], "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / pushed.host / pushed.repository / f"{plain.digest[7:]}.tar.gz").read_bytes() == plain.blob


def test_export_files_writes_only_the_matches(fault_proxy, indexed_image, tmp_path):
    pushed, db = indexed_image
    env = pushed.layers[2]
    out = tmp_path / "loot"
    result = run("export", db, "--match", ".env", "--files", "-o", out)
    assert result.exit_code == 0, result.output
    root = out / pushed.host / pushed.repository / env.digest[7:]
    assert (root / "app/.env").read_text() == "TOKEN=hunter2\n"
    assert tree(root) == {"app", "app/.env"}
    assert f"wrote    {root / 'app/.env'}" in result.stdout


def test_export_exit_statuses(indexed_image, tmp_path):
    _, db = indexed_image
    result = run("export", db, "--match", "no-such-file", "-o", tmp_path)
    assert result.exit_code == 1 and "No indexed layer holds a matching file" in result.stderr
    assert run("export", db, "-o", tmp_path).exit_code == 2
    assert run("export", tmp_path / "missing.db", "--match", "x").exit_code == 2
    assert run("export", db, "--layer", "sha256:" + "0" * 64).exit_code == 2
    assert "Exit status" in run("export", "--help").output


def test_extract_with_db_reads_only_what_holds_matches(fault_proxy, unique_repo, tmp_path):
    base = big_layer(0, 16)
    top = layer({"var/log/big.log": noise(2_000_000, 5)})
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[base, top])
    db = tmp_path / "images.db"
    assert run("index", db, pushed.ref).exit_code == 0
    fault_proxy.clear_records()
    out = tmp_path / "out"
    # A glob: without the index the whole base layer would be read.
    result = run("extract", pushed.ref, "*.txt", "--db", db, "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "app/wanted.txt").read_text() == "the one we want\n"
    assert not blob_gets(fault_proxy, top.digest)
    assert 0 < fault_proxy.bytes_served(f"/blobs/{base.digest}") <= 2 * 1024 * 1024


def test_extract_with_db_missing_layers_reads_them(fault_proxy, unique_repo, tmp_path):
    first = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[layer({"a.txt": "a\n"})])
    db = tmp_path / "images.db"
    assert run("index", db, first.ref).exit_code == 0
    second = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[layer({"b.txt": "b\n"})])
    result = run("extract", second.ref, "*.txt", "--db", db, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "does not index every layer" in result.stderr
    assert (tmp_path / "out/b.txt").read_text() == "b\n"


def test_save_and_extract_through_a_cdn_redirect(fault_proxy, unique_repo, tmp_path):
    lay = big_layer(0, 6)
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.redirect(f"/blobs/{lay.digest}", times=None)
    fault_proxy.cdn.reject_authorization = True  # S3-like: our Authorization must not travel there
    result = run("extract", pushed.ref, "/app/wanted.txt", "-o", tmp_path / "x")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x/app/wanted.txt").read_text() == "the one we want\n"
    ranged = [r for r in fault_proxy.cdn.records if r.status == 206]
    assert len(ranged) > 1 and sum(r.bytes_sent for r in ranged) == lay.size  # Range windows, read to the end
    result = run("save", pushed.ref, "--layer", "0", "-o", tmp_path / "dl")
    assert result.exit_code == 0, result.output
    assert next((tmp_path / "dl").rglob("*.tar.gz")).read_bytes() == lay.blob


def test_save_picks_the_platform_of_a_multi_arch_image(registry, unique_repo, tmp_path):
    from harness.builder import push_index

    pushed = push_index(registry, f"{unique_repo()}:latest", images=["linux/amd64", "linux/arm64/v8"], attestation=True)
    arm64 = pushed.images[1]
    result = run("save", pushed.ref, "--platform", "linux/arm64/v8", "--all", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    saved = list(tmp_path.rglob("*.tar.gz"))
    assert [p.read_bytes() for p in saved] == [arm64.layers[0].blob]
    result = run("extract", pushed.ref, "/etc/platform", "--platform", "linux/arm64/v8", "--stdout")
    assert result.stdout == "linux/arm64/v8\n"


def test_extract_survives_a_dropped_connection(fault_proxy, unique_repo, tmp_path):
    lay = big_layer(1, 3)
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.clear_records()
    fault_proxy.reset_mid_body(f"/blobs/{lay.digest}", after=300_000)
    result = run("extract", pushed.ref, "*.txt", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "app/wanted.txt").read_text() == "the one we want\n"
    gets = blob_gets(fault_proxy, lay.digest)
    assert gets[0].fault == "reset_mid_body" and len(gets) >= 2
    assert "read to the end (digest verified)" in result.stderr
