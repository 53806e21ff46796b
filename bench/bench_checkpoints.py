"""Benchmark gzip checkpoints: their cost while indexing, their gain when reading one file.

    python bench/bench_checkpoints.py [--repeat 3] [--size-mb 200] [--skip-index]

Starts its own ``docker-registry`` (the tests' harness) with the harness proxy
in front, so bytes are counted on the registry side. Two parts, each with its
baseline measured in the same run (medians of --repeat, runs interleaved):

1. Index cost, on bench/bench_index.py's layer (66,000 entries, ~320 MB gzip):
   ``layerslayer index --span 0`` (isal, no checkpoints: today's indexer) vs
   ``layerslayer index`` (zlib-ng with a checkpoint every 4 MiB). Target: at
   most 10 % more time, checkpoints at most 1 % of the blob, peak RSS <= 100 MB.
2. One ~20 KB file at the very end of a >= --size-mb MB gzip layer:
   ``extract REF PATH`` with no index and ``extract --db`` with an index
   without checkpoints (both read the whole layer: today) vs ``extract --db``
   and ``cat --db`` with checkpoints. Target: at most span + file + 64 KiB
   served, and at most 1/10 of today's time. Also printed: ``cat --db
   --plain-http`` (without the HTTPS attempt a loopback registry gets first),
   the same reads as library calls in this process, and what any command pays
   before its work (the interpreter; it plus the imports of the cat path).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from bench_extract import _file_data  # noqa: E402
from bench_tarstream import WORK  # noqa: E402
from bench_tarstream import build_layer as build_index_layer  # noqa: E402
from harness.builder import OCI_LAYER_GZIP, Layer, push_image, raw_layer  # noqa: E402
from harness.proxy import FaultProxy  # noqa: E402
from harness.registry import Registry  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
SPAN = 4 * MiB
WANTED = "usr/share/man/man1/tool.1"


def man_page(size: int = 20_000) -> bytes:
    rng = random.Random(7)
    words = [b".TH", b".SH", b"NAME", b"tool", b"option", b"\\fB--verbose\\fR", b"file", b"the", b"a", b"of", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def build_tail_layer(size_mb: int) -> Path:
    "A cached .tar.gz (level 6) of >= size_mb MB with WANTED as its last file."
    path = WORK / f"tail-layer-{size_mb}mb.tar.gz"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    rng = random.Random(16)
    print(f"building a {size_mb} MB gzip layer (once, cached in {WORK}) ...", file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                def add(name: str, data: bytes) -> None:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))

                index = 0
                while raw.tell() < size_mb * MB:
                    add(f"usr/lib/bench/d{index // 100:03d}/f{index:05d}.bin", _file_data(rng, rng.randint(MiB // 2, 3 * MiB // 2)))
                    index += 1
                add(WANTED, man_page())
    tmp.rename(path)
    return path


CPU: dict[int, float] = {}  # id(result) -> user + system CPU seconds
#: The commands' environment: with PYTHONDONTWRITEBYTECODE set (as in some
#: sandboxes) every run would compile layerslayer's modules from source,
#: about 0.09 s that an installed package never pays; so main() compiles them
#: once (into the usual, git-ignored __pycache__) before timing anything.
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    "Wall seconds, peak RSS (KB) and the result of a command (its CPU seconds in CPU[id(result)])."
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *cmd], capture_output=True, env=ENV)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]!r}{done.stderr[-2000:]!r}")
    rss, user, system = done.stderr.decode().strip().splitlines()[-1].split()
    CPU[id(done)] = float(user) + float(system)
    return seconds, int(rss), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--skip-index", action="store_true", help="only part 2")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "layerslayer"]

    work = Path(tempfile.mkdtemp(prefix="bench-checkpoints-"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "layerslayer")],
                   env=ENV, check=True)
    registry = Registry(work / "registry", "anonymous").start()
    proxy = FaultProxy(registry).start()
    try:
        # -- 1. index cost ------------------------------------------------------------
        if not args.skip_index:
            layer_file = WORK / "layer-66000.tar.gz"
            if not layer_file.exists():
                print(f"building {layer_file} ...", file=sys.stderr)
                build_index_layer(layer_file, 66000)
            lay = raw_layer(layer_file.read_bytes(), media_type=OCI_LAYER_GZIP)
            blob_size = lay.size
            pushed = push_image(registry, "bench/index:v1", layers=[lay])
            del lay
            times: dict[str, list[float]] = {"index --span 0 (isal, no checkpoints)": [], "index (checkpoints every 4 MiB)": []}
            rss: dict[str, list[int]] = {name: [] for name in times}
            cpu: dict[str, list[float]] = {name: [] for name in times}
            stored = count = 0
            for attempt in range(args.repeat):
                for name, extra in zip(times, (["--span", "0"], [])):
                    db = work / f"index-{attempt}-{len(extra)}.db"
                    seconds, peak, done = timed([*cli, "index", str(db), pushed.ref, "--quiet", *extra])
                    times[name].append(seconds)
                    rss[name].append(peak)
                    cpu[name].append(CPU[id(done)])
                    if not extra:
                        with sqlite3.connect(db) as conn:
                            count, stored = conn.execute("SELECT count(*), coalesce(sum(length(window)), 0) FROM checkpoints").fetchone()
                    db.unlink()
            base, ours = (statistics.median(v) for v in times.values())
            base_cpu, ours_cpu = (statistics.median(v) for v in cpu.values())
            print(f"\n1. index: bench_index.py's layer, {blob_size / MB:.1f} MB gzip, 66,000 entries; median of {args.repeat}")
            print(f"{'method':<44} {'seconds':>8} {'ratio':>6} {'CPU s':>7} {'ratio':>6} {'peak RSS':>9}")
            for name, values in times.items():
                wall, used = statistics.median(values), statistics.median(cpu[name])
                print(f"{name:<44} {wall:>8.2f} {wall / base:>5.2f}x {used:>7.2f} {used / base_cpu:>5.2f}x {max(rss[name]) / 1024:>6.0f} MB")
            print(f"extra index time: {ours / base - 1:+.1%} wall, {ours_cpu / base_cpu - 1:+.1%} CPU  (target <= +10%)")
            print(f"checkpoints: {count}, {stored / 1024:.0f} KiB stored = {stored / blob_size:.2%} of the blob  (target <= 1%)")

        # -- 2. one file at the end of a big layer --------------------------------------------
        blob = build_tail_layer(args.size_mb).read_bytes()
        lay = Layer(blob, None, "gzip")
        size = len(blob)
        del blob
        pushed = push_image(registry, "bench/tail:v1", layers=[lay])
        want = man_page()
        direct = pushed.ref
        ref = f"{proxy.host}/bench/tail:v1"
        db_plain, db_cp = work / "plain.db", work / "cp.db"
        timed([*cli, "index", str(db_plain), direct, "--quiet", "--span", "0"])
        timed([*cli, "index", str(db_cp), direct, "--quiet"])
        route = f"/blobs/{lay.digest}"
        methods = {
            "extract PATH (no index: today)": lambda out: [*cli, "extract", ref, "/" + WANTED, "-o", str(out)],
            "extract PATH --db (no checkpoints: today)": lambda out: [*cli, "extract", ref, "/" + WANTED, "-o", str(out), "--db", str(db_plain)],
            "extract PATH --db (checkpoints)": lambda out: [*cli, "extract", ref, "/" + WANTED, "-o", str(out), "--db", str(db_cp)],
            "cat PATH --db (checkpoints)": lambda out: [*cli, "cat", ref, "/" + WANTED, "--db", str(db_cp)],
            # the same without the HTTPS attempt a loopback registry gets first (its cost, measured here)
            "cat PATH --db --plain-http (checkpoints)": lambda out: [*cli, "cat", ref, "/" + WANTED, "--db", str(db_cp),
                                                                      "--plain-http"],
        }
        rows = {name: [] for name in methods}
        # What every command pays before any work: the interpreter, and it plus the imports of the cat path.
        fixed = {"python -c pass": [sys.executable, "-c", "pass"],
                 "python: imports of cat --db, no work": [sys.executable, "-c", "import layerslayer.cli, layerslayer.operations, "
                                                          "layerslayer.image, layerslayer.store, layerslayer.seekable"]}
        fixed_times: dict[str, list[float]] = {name: [] for name in fixed}
        for attempt in range(args.repeat):
            for name, command in fixed.items():
                fixed_times[name].append(timed(command)[0])
            for name, command in methods.items():
                out = work / f"out-{attempt}"
                proxy.clear_records()
                seconds, peak, done = timed(command(out))
                time.sleep(0.2)  # let the proxy finish its accounting
                got = done.stdout if name.startswith("cat") else (out / WANTED).read_bytes()
                assert got == want, name
                rows[name].append((seconds, proxy.bytes_served(route), proxy.count(route, "GET"), peak))
                shutil.rmtree(out, ignore_errors=True)
            # the same two library calls in this process: no interpreter start-up and imports
            from layerslayer.operations import extract_image

            for name, db in (("extract_image() --db, no checkpoints (today)", db_plain), ("extract_image() --db, checkpoints", db_cp)):
                out = work / f"lib-{attempt}"
                proxy.clear_records()
                started = time.perf_counter()
                extract_image(ref, ["/" + WANTED], out_dir=out, db_path=db)
                seconds = time.perf_counter() - started
                time.sleep(0.2)
                assert (out / WANTED).read_bytes() == want
                rows.setdefault(name, []).append((seconds, proxy.bytes_served(route), proxy.count(route, "GET"), 0))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        proxy.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n2. a {len(want) / 1000:.0f} KB file at the end of a {size / MB:.1f} MB gzip layer; median of {args.repeat}")
    print(f"{'method':<44} {'served MB':>10} {'GETs':>5} {'% of blob':>10} {'seconds':>8} {'peak RSS':>9}")
    medians = {}
    for name, values in rows.items():
        seconds = statistics.median(v[0] for v in values)
        served = max(v[1] for v in values)
        medians[name] = (seconds, served)
        print(f"{name:<44} {served / MB:>10.2f} {values[0][2]:>5} {served / size:>10.2%} {seconds:>8.2f} "
              f"{max(v[3] for v in values) / 1024:>6.0f} MB")
    for name, values in fixed_times.items():
        print(f"{name:<44} {'':>10} {'':>5} {'':>10} {statistics.median(values):>8.2f}")
    today = medians["extract PATH --db (no checkpoints: today)"]
    ours = medians["extract PATH --db (checkpoints)"]
    limit = SPAN + len(want) + 64 * 1024
    print(f"served: {ours[1] / MB:.2f} MB, target <= span + file + 64 KiB = {limit / MB:.2f} MB -> "
          f"{'PASS' if ours[1] <= limit else 'FAIL'}")
    print(f"time (command): {ours[0]:.2f}s vs {today[0]:.2f}s today = 1/{today[0] / ours[0]:.1f}  (target <= 1/10) -> "
          f"{'PASS' if ours[0] * 10 <= today[0] else 'FAIL'}")
    lib_today = medians["extract_image() --db, no checkpoints (today)"][0]
    lib_ours = medians["extract_image() --db, checkpoints"][0]
    print(f"time (library call): {lib_ours:.2f}s vs {lib_today:.2f}s today = 1/{lib_today / lib_ours:.1f}  (target <= 1/10) -> "
          f"{'PASS' if lib_ours * 10 <= lib_today else 'FAIL'}")


if __name__ == "__main__":
    main()
