"""Extraction safety: links re-checked where they land, nothing left
from a failed stream, a fresh default output directory, output bounds, and one
line (never a traceback) when an output directory cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness.builder import dir_, file, hardlink, layer, push_image, symlink

from layerslayer.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def escapes(root: Path) -> list[str]:
    "Symbolic links under root whose target, resolved, is outside root."
    real_root = root.resolve()
    found = []
    for path in root.rglob("*"):
        if path.is_symlink():
            resolved = Path(os.path.normpath(os.path.join(path.parent, os.readlink(path))))
            if not resolved.resolve().is_relative_to(real_root):
                found.append(str(path.relative_to(root)))
    return found


# -- 1. links re-checked where they land ----------------------------------------------


def link_escape_layer():
    # x/y/link -> ../../outside stays inside where it is written; a hard link
    # to it at the top re-creates it two levels shallower, where it climbs out.
    return layer([
        dir_("x/y"),
        symlink("x/y/link", "../../outside"),
        hardlink("downloads", "x/y/link"),
        hardlink("x/also", "x/y/link"),               # one level up: still climbs out
        hardlink("x/y/z/deeper", "x/y/link"),         # deeper: stays inside, allowed
        hardlink("chain", "x/also"),                  # a hard link to a hard link to the symlink
        symlink("x/y/ok", "../../inside.txt"),
        file("inside.txt", "in\n"),
        hardlink("x/y/ok2", "x/y/ok"),                # same depth: fine
    ])


@pytest.fixture
def link_escape_image(registry, unique_repo):
    return push_image(registry, f"{unique_repo()}:v1", layers=[link_escape_layer()])


def test_hard_link_to_a_symlink_is_rechecked_where_it_lands(link_escape_image, tmp_path, monkeypatch):
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    result = run("extract", link_escape_image.ref, "*", "-o", ".")
    refused = {line.split()[1]: line for line in result.stderr.splitlines() if line.startswith("refused")}
    assert set(refused) == {"downloads", "x/also", "chain"}, result.stderr
    assert "points outside the output directory" in refused["downloads"]
    assert result.exit_code == 1
    assert escapes(work) == []
    assert os.readlink(work / "x/y/z/deeper") == "../../outside"   # inside from there: out/x/outside
    assert os.readlink(work / "x/y/ok2") == "../../inside.txt"
    assert not os.path.lexists(work / "downloads")
    # The next `save`, from the same directory, writes under ./downloads, a real directory.
    result = run("save", link_escape_image.ref, "--all")
    assert result.exit_code == 0, result.output
    assert (work / "downloads").is_dir() and not (work / "downloads").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["a"] and sorted(os.listdir(tmp_path / "a")) == ["work"]


def test_export_files_rechecks_hard_links_to_symlinks(registry, link_escape_image, tmp_path):
    db = tmp_path / "i.db"
    assert run("index", db, link_escape_image.ref, "--quiet").exit_code == 0
    out = tmp_path / "loot"
    result = run("export", db, "--match", "*", "--files", "-o", out)
    assert result.exit_code == 1, result.output
    assert escapes(out) == []
    refused = {line.split()[1] for line in result.stderr.splitlines() if line.startswith("refused")}
    assert refused == {"downloads", "x/also", "chain"}


def test_a_planted_downloads_symlink_does_not_send_save_outside(registry, link_escape_image, tmp_path, monkeypatch):
    work = tmp_path / "work"
    outside = tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    monkeypatch.chdir(work)
    (work / "downloads").symlink_to("../outside")
    result = run("save", link_escape_image.ref, "--all")
    assert result.exit_code == 2, result.output
    assert "downloads is a symbolic link" in result.stderr and "Traceback" not in result.output
    assert list(outside.iterdir()) == []
    # Below an output directory named on purpose, a planted link is not followed either.
    mine = tmp_path / "mine"
    (mine / link_escape_image.host).mkdir(parents=True)
    (mine / link_escape_image.host / link_escape_image.repository.split("/")[0]).symlink_to(outside)
    result = run("save", link_escape_image.ref, "--all", "-o", mine)
    assert result.exit_code == 2, result.output
    assert "symbolic link" in result.stderr
    assert list(outside.iterdir()) == []


# -- 13. an output directory that cannot be made or written: one line, exit 2 ----------


@pytest.fixture
def small_image(registry, unique_repo):
    return push_image(registry, f"{unique_repo()}:v1", layers=[layer({"etc/hello": "hi\n"})])


def unwritable_dirs(tmp_path: Path) -> list[tuple[Path, str]]:
    "Tests run as root: a path under a regular file, and /proc (root cannot create files there)."
    afile = tmp_path / "afile"
    afile.write_text("x")
    return [(afile / "sub", "afile/sub"), (afile, "afile"), (Path("/proc/self"), "/proc/self")]


@pytest.mark.parametrize("command", ["save", "extract", "export", "export-files", "save-all"])
def test_unwritable_output_dir_is_one_line_and_exit_2(small_image, tmp_path, command):
    db = tmp_path / "i.db"
    if command.startswith("export"):
        assert run("index", db, small_image.ref, "--quiet").exit_code == 0
    for out, shown in unwritable_dirs(tmp_path):
        args = {
            "save": ["save", small_image.ref, "--all", "-o", out],
            "extract": ["extract", small_image.ref, "*", "-o", out],
            "export": ["export", db, "--match", "hello", "-o", out],
            "export-files": ["export", db, "--match", "hello", "--files", "-o", out],
            "save-all": ["-t", small_image.ref, "--save-all", "-o", out],
        }[command]
        result = run(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (shown, result.output, result.exception)
        assert "Traceback" not in result.output and not isinstance(result.exception, OSError)
        assert lines[-1].startswith("Error: ") and shown in lines[-1], (shown, result.output)
        if command != "save-all":  # the interactive flow says which image first
            assert len(lines) == 1, result.output


# -- 3. nothing from a failed stream stays under a final name ------------------------------


def noise(n: int, seed: int = 3) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


@pytest.fixture
def cut_image(fault_proxy, unique_repo):
    "An uncompressed layer: a.txt (written first), then 2 MB the proxy cuts short."
    lay = layer([file("a.txt", "a\n"), file("big.bin", noise(2_000_000)), file("z.txt", "z\n")], compression="none")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.truncate(f"/blobs/{lay.digest}", after=300_000, times=None)
    return pushed


def test_extract_leaves_nothing_from_a_stream_that_breaks(cut_image, tmp_path):
    out = tmp_path / "out"
    result = run("extract", cut_image.ref, "*", "-o", out, "--retries", "1")
    assert result.exit_code == 3, result.output
    assert everything_under(out) == set(), everything_under(out)
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "the 1 entry written from layer" in error[0] and "were removed" in error[0]


def test_export_files_leaves_nothing_from_a_stream_that_breaks(fault_proxy, cut_image, tmp_path):
    db = tmp_path / "i.db"
    fault_proxy.clear_faults()
    assert run("index", db, cut_image.ref, "--quiet").exit_code == 0
    fault_proxy.truncate(f"/blobs/{cut_image.layers[0].digest}", after=300_000, times=None)
    out = tmp_path / "loot"
    result = run("export", db, "--match", "*.txt", "--files", "-o", out, "--retries", "1")
    assert result.exit_code == 3, result.output
    assert [p for p in out.rglob("*") if not p.is_dir()] == []
    assert "were removed" in result.stderr


def test_extract_stdout_prints_nothing_from_a_stream_that_breaks(cut_image):
    # The layer is read to its end and digest-checked before any byte is printed
    # (a later copy of the path in the same layer would win), so bytes that
    # cannot be taken back are never sent.
    result = run("extract", cut_image.ref, "/big.bin", "--stdout", "--retries", "1")
    assert result.exit_code == 3
    assert result.stdout_bytes == b""
    assert "Error:" in result.stderr


def test_extract_stdout_prints_nothing_from_a_layer_whose_digest_fails(fault_proxy, unique_repo):
    lay = layer([file("secret.txt", "the real one\n"), file("after.bin", noise(50_000))], compression="none")
    pushed = push_image(fault_proxy, f"{unique_repo()}:v1", layers=[lay])
    fault_proxy.corrupt(f"/blobs/{lay.digest}", offset=lay.size - 2000, times=None)   # in after.bin
    for extra in ((), ("--verify",)):
        result = run("extract", pushed.ref, "/secret.txt", "--stdout", *extra)
        assert result.stdout_bytes == b""
        assert result.exit_code == 3
        assert "does not match its digest" in result.stderr


# -- 9. a fresh default directory; nothing replaced without --force ---------------------


def test_extract_defaults_to_a_fresh_directory_and_never_replaces_files(registry, unique_repo, tmp_path, monkeypatch):
    lay = layer({".bashrc": "evil\n", ".ssh/authorized_keys": "ssh-ed25519 attacker\n", "etc/hello": "hi\n"})
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("mine\n")
    (home / ".ssh/authorized_keys").write_text("my key\n")
    monkeypatch.chdir(home)
    result = run("extract", pushed.ref, "*")
    assert result.exit_code == 0, result.output
    out = Path("extracted", pushed.host, *pushed.repository.split("/"), "v1")
    assert (home / out / ".bashrc").read_text() == "evil\n"
    assert f"to {out}" in result.stderr
    assert (home / ".bashrc").read_text() == "mine\n" and (home / ".ssh/authorized_keys").read_text() == "my key\n"
    # Again into the same place, or into the current directory: nothing is replaced.
    (home / out / "etc/hello").write_text("edited\n")
    for args in ([], ["-o", "."]):
        result = run("extract", pushed.ref, "*", *args)
        assert result.exit_code == 1, result.output
        assert "is already in the output directory (--force replaces it)" in result.stderr
    assert (home / out / "etc/hello").read_text() == "edited\n"
    assert (home / ".bashrc").read_text() == "mine\n" and (home / ".ssh/authorized_keys").read_text() == "my key\n"
    # --force replaces.
    result = run("extract", pushed.ref, "/etc/hello", "--force")
    assert result.exit_code == 0, result.output
    assert (home / out / "etc/hello").read_text() == "hi\n"
    # By digest: a directory named after it.
    result = run("extract", pushed.digest_ref, "/etc/hello")
    assert result.exit_code == 0, result.output
    assert (home / "extracted" / pushed.host / pushed.repository / pushed.digest.replace(":", "-") / "etc/hello").exists()


# -- 10. bounds: total bytes written, nesting depth ---------------------------------------


def test_extract_stops_at_the_output_cap_and_refuses_deep_nesting(registry, unique_repo, tmp_path):
    deep = "/".join(["d"] * 300) + "/deep.txt"
    lay = layer([file(f"f{i}.bin", noise(400_000, i)) for i in range(5)] + [file(deep, "deep\n"), file("ok.txt", "ok\n")])
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[lay])
    out = tmp_path / "out"
    result = run("extract", pushed.ref, "*", "-o", out, "--max-output", "1M")
    assert result.exit_code == 1, result.output
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert written == 800_000  # two files fit under 1 MiB; the third would pass it
    assert "refused  f2.bin (layer 0): 400000 more bytes would pass the output cap of 1000000 bytes" in result.stderr
    assert "stopped at the output cap (--max-output raises it)" in result.stderr
    assert not (out / "ok.txt").exists()  # nothing after the stop
    result = run("extract", pushed.ref, "*", "-o", tmp_path / "all")
    assert result.exit_code == 1, result.output
    refused = [line for line in result.stderr.splitlines() if line.startswith("refused")]
    assert len(refused) == 1 and "nested 301 levels deep (more than 256)" in refused[0]
    assert (tmp_path / "all/ok.txt").exists() and not (tmp_path / "all/d").exists()
    assert run("extract", pushed.ref, "*", "-o", tmp_path / "x", "--max-output", "lots").exit_code == 2
    assert "--max-output SIZE" in run("extract", "--help").output and "10G" in run("extract", "--help").output


# -- 15. honest results: a link written is said to be a link; --stdout says whose bytes ----------


@pytest.fixture
def linked_image(registry, unique_repo):
    base = layer([file("usr/lib/os-release", "ID=layerslayer\n"), file("etc/a.conf", "a\n")])
    top = layer([symlink("etc/os-release", "../usr/lib/os-release"), symlink("etc/abs", "/usr/lib/os-release"),
                 symlink("etc/nowhere", "../missing"), file("etc/b.conf", "b\n")])
    return push_image(registry, f"{unique_repo()}:v1", layers=[base, top])


def test_extract_of_a_symlink_says_it_wrote_a_link_and_follow_writes_the_bytes(linked_image, tmp_path):
    out = tmp_path / "out"
    result = run("extract", linked_image.ref, "/etc/os-release", "-o", out)
    assert result.exit_code == 0, result.output
    assert os.readlink(out / "etc/os-release") == "../usr/lib/os-release"
    assert ("link     etc/os-release -> ../usr/lib/os-release: wrote the symbolic link, not the file it points to "
            "(--follow writes that file's content)") in result.stderr
    out = tmp_path / "followed"
    result = run("extract", linked_image.ref, "/etc/os-release", "/etc/abs", "/etc/nowhere", "-o", out, "--follow")
    assert result.exit_code == 1, result.output
    for name in ("os-release", "abs"):
        assert not (out / "etc" / name).is_symlink() and (out / "etc" / name).read_text() == "ID=layerslayer\n"
    assert "followed etc/os-release -> ../usr/lib/os-release: wrote the content of usr/lib/os-release" in result.stderr
    assert "refused  etc/nowhere (layer 1): symbolic link to ../missing not followed" in result.stderr
    assert everything_under(out) == {"etc", "etc/abs", "etc/os-release"}  # no temporary file left


def test_extract_stdout_with_a_glob_says_which_file_it_wrote(linked_image):
    result = run("extract", linked_image.ref, "/etc/*.conf", "--stdout")
    assert result.exit_code == 0, result.output
    assert result.stdout == "b\n"
    assert "note: wrote etc/b.conf (layer 1), the first file matching /etc/*.conf" in result.stderr
    result = run("extract", linked_image.ref, "/etc/os-release", "--stdout")
    assert result.stdout == "ID=layerslayer\n"
    assert "note: wrote usr/lib/os-release (layer 0)" in result.stderr
    result = run("extract", linked_image.ref, "/etc/a.conf", "--stdout")
    assert result.stdout == "a\n" and result.stderr == ""   # an exact path to a file: nothing to add


def test_extract_leaves_the_modes_of_directories_that_were_there_alone(registry, unique_repo, tmp_path):
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[layer([
        dir_(".ssh", mode=0o777, mtime=1), file(".ssh/config", "Host *\n"), dir_("new", mode=0o750)])])
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh").chmod(0o700)
    result = run("extract", pushed.ref, "*", "-o", home)
    assert result.exit_code == 0, result.output
    after = (home / ".ssh").stat()
    assert after.st_mode & 0o7777 == 0o700 and after.st_mtime > 1   # not chmod 777, not dated from the image
    assert (home / "new").stat().st_mode & 0o7777 == 0o750                         # made by this run: its mode
    assert (home / ".ssh/config").read_text() == "Host *\n"


def test_the_interactive_flow_refuses_a_planted_default_downloads_link(small_image, tmp_path, monkeypatch):
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    monkeypatch.chdir(work)
    (work / "downloads").symlink_to(outside)
    for args in (["--save-all"], []):
        result = run("-t", small_image.ref, *args, input="0\ny\n")
        assert result.exit_code == 2, result.output
        assert "downloads is a symbolic link" in result.output
    assert list(outside.iterdir()) == []
