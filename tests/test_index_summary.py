"""What `index` and `find` say about what is missing:
the summary counts failed images, `find` tells how many layers of the images
searched are not in its answer, and Ctrl-C during `index` leaves a clean
terminal line ("Interrupted." on its own) and a summary of what was kept."""

from __future__ import annotations

import os
import sqlite3
import sys

import pexpect
import pytest
from click.testing import CliRunner
from harness.builder import file, layer, push_image

from layerslayer.cli import cli


def noise(n: int, seed: int) -> bytes:
    "Incompressible bytes: the layer's size on the wire is what it holds."
    import random

    return random.Random(seed).randbytes(n)


@pytest.fixture(scope="module")
def images(registry):
    small = layer([file("etc/small.conf", "x=1\n"), file("root/.ssh/id_rsa", "KEY")])
    big = layer([file("opt/big.bin", noise(3 << 20, 1)), file("opt/app/id_rsa", "KEY2")])
    two = push_image(registry, "t/index-summary:two", layers=[small, big])
    other = push_image(registry, "t/index-summary:other", layers=[layer([file("srv/other.txt", "o")])])
    return {"two": two, "other": other, "small": small, "big": big}


def proxied(proxy, pushed) -> str:
    return f"{proxy.host}/{pushed.repository}:{pushed.tag}"


def test_summary_counts_failed_images(images, fault_proxy, tmp_path):
    db = tmp_path / "index.db"
    fault_proxy.corrupt(rf"/blobs/{images['big'].digest}", times=None)
    missing = f"{fault_proxy.host}/t/index-summary:no-such-tag"
    result = CliRunner().invoke(cli, ["index", str(db), proxied(fault_proxy, images["two"]),
                                      proxied(fault_proxy, images["other"]), missing, "-q"])
    assert result.exit_code == 1
    # "two" lost a layer, the missing tag never resolved, "other" is whole.
    assert "Indexed 3 images (2 failed), 2 platforms, layers: 2 indexed, 0 reused, 1 failed" in result.output


def test_find_says_how_many_layers_are_missing_from_the_answer(images, fault_proxy, tmp_path):
    db = tmp_path / "index.db"
    fault_proxy.corrupt(rf"/blobs/{images['big'].digest}", times=None)
    result = CliRunner().invoke(cli, ["index", str(db), proxied(fault_proxy, images["two"]),
                                      proxied(fault_proxy, images["other"]), "-q"])
    assert result.exit_code == 1
    # A layer left pending, as an interrupted run leaves it (recorded, nothing of it stored).
    conn = sqlite3.connect(db)
    with conn:
        (layer_id,) = conn.execute("SELECT id FROM layers WHERE digest = ?", [images["small"].digest]).fetchone()
        conn.execute("DELETE FROM deletions WHERE layer_id = ?", [layer_id])
        conn.execute("DELETE FROM entries WHERE layer_id = ?", [layer_id])
        conn.execute("UPDATE layers SET status = 'pending', entries = NULL WHERE id = ?", [layer_id])
    conn.close()
    runner = CliRunner()
    found = runner.invoke(cli, ["find", str(db), "id_rsa"])
    assert found.exit_code == 1 and found.stdout == ""
    assert found.stderr == (
        "Note: 2 layers of these images are missing from the answer (1 failed, 1 not indexed yet or "
        "interrupted); `layerslayer index` on the same images retries them\n"
    )
    # Scoped to an image whose layers are all indexed: nothing to say.
    other = runner.invoke(cli, ["find", str(db), "other.txt", "--image", proxied(fault_proxy, images["other"])])
    assert other.exit_code == 0 and other.stderr == ""


def screen_lines(raw: str) -> list[str]:
    "What a terminal shows for ``raw``: carriage returns and erase-to-end-of-line applied."
    lines = []
    for text in raw.replace("\r\n", "\n").split("\n"):
        line: list[str] = []
        cursor = 0
        i = 0
        while i < len(text):
            if text.startswith("\033[K", i):
                del line[cursor:]
                i += 3
                continue
            c = text[i]
            if c == "\r":
                cursor = 0
            else:
                if cursor < len(line):
                    line[cursor] = c
                else:
                    line.append(c)
                cursor += 1
            i += 1
        lines.append("".join(line))
    return lines


def test_ctrl_c_leaves_a_clean_line_and_says_what_was_kept(images, fault_proxy, tmp_path):
    db = tmp_path / "index.db"
    # The big layer's body stalls: the small one is indexed, then Ctrl-C.
    fault_proxy.stall(rf"/blobs/{images['big'].digest}", seconds=50, after=100_000, times=None)
    child = pexpect.spawn(sys.executable, ["-m", "layerslayer", "index", str(db), proxied(fault_proxy, images["two"])],
                          env=dict(os.environ, COLUMNS="200"), encoding="utf-8", timeout=60, dimensions=(40, 200))
    try:
        child.expect(rf"indexed  {images['small'].digest}")
        child.expect(r"\[[#-]+\] 1 layer\(s\)")  # the live status line is drawn again for the big layer
        child.sendintr()
        child.expect(pexpect.EOF)
        raw = child.before
    finally:
        child.close()
    assert child.exitstatus == 130
    transcript = screen_lines(raw)
    assert "Interrupted." in transcript, transcript
    kept = [line for line in transcript if line.startswith("Kept: ")]
    assert kept == ["Kept: 1 image, 1 platform, layers: 1 indexed, 0 reused, 0 failed, 2 files, "
                    + kept[0].split(", 2 files, ")[1]], transcript
    assert kept[0].endswith("; 1 layer not indexed (run the same command again to resume)")
    assert "Traceback" not in raw
    # What was kept is there: the next run fetches only the other layer.
    fault_proxy.faults.clear()
    result = CliRunner().invoke(cli, ["index", str(db), proxied(fault_proxy, images["two"]), "-q"])
    assert result.exit_code == 0, result.output
    assert "layers: 1 indexed, 1 reused, 0 failed" in result.output
