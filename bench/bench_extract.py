"""Benchmark `extract` of one small file against a full download of its layer.

    python bench/bench_extract.py [--size-mb 200] [--position 0.04] [--repeat 3]

Builds once (cached under bench/.work/) a gzip layer of at least --size-mb
compressed MB: ~1 MB files of mixed content, with the wanted small file
``app/config/secret.env`` placed after --position of the layer (default 4 %,
inside the first 5 %). Starts its own ``docker-registry`` (the tests' harness),
pushes the image, and puts the harness proxy in front of it so the bytes the
registry side actually *sent* are counted, not only what the client read.

Then it indexes the image once (``layerslayer index DB REF``: the listing
and the layer's gzip checkpoints) and, in one run, times (best of --repeat):

* ``layerslayer extract REF /app/config/secret.env --db DB -o DIR``  (one Range from the checkpoint before it)
* ``layerslayer extract REF /app/config/secret.env -o DIR``  (no index: reads the layer to its end,
  since a later copy of the same path in that layer would win, as the runtime unpacks it)
* ``layerslayer extract REF '*.env' -o DIR``                 (a glob: reads the whole layer)
* ``layerslayer save REF --layer 0 -o DIR``                  (full verified download)
* ``curl -s URL -o FILE``                                   (baseline: plain full GET, unverified)

and prints bytes served by the registry side, seconds, and the share of the
blob, next to the target: extract from the index fetches at most 5 % of the
blob + 2 MB.
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the harness package, as tests import it

from harness.builder import Layer, push_image  # noqa: E402
from harness.proxy import FaultProxy  # noqa: E402
from harness.registry import Registry  # noqa: E402

WORK = HERE / ".work"
WANTED = "app/config/secret.env"
WANTED_DATA = b"AWS_SECRET_ACCESS_KEY=not-really-but-close-enough\n"
MB = 1_000_000
MiB = 1 << 20


def _file_data(rng: random.Random, size: int) -> bytes:
    "Mostly incompressible (like binaries and compressed assets), some text."
    if rng.random() < 0.25:
        line = b"".join(rng.choice([b"lorem ", b"ipsum ", b"config ", b"value=%d " % rng.randint(0, 999), b"\n"]) for _ in range(64))
        return (line * (size // len(line) + 1))[:size]
    return rng.randbytes(size)


def build_layer(size_mb: int, position: float, seed: int = 42) -> Path:
    "A cached .tar.gz of >= size_mb MB with WANTED after ``position`` of it."
    path = WORK / f"extract-layer-{size_mb}mb-{position:.3f}-{seed}.tar.gz"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    print(f"building a {size_mb} MB gzip layer (once, cached in {WORK}) ...", file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                def add(name: str, data: bytes, mode: int = 0o644) -> None:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))

                placed = False
                index = 0
                while raw.tell() < size_mb * MB:
                    if not placed and raw.tell() >= position * size_mb * MB:
                        add(WANTED, WANTED_DATA, 0o600)
                        placed = True
                    add(f"usr/share/bench/d{index // 100:03d}/f{index:05d}.bin", _file_data(rng, rng.randint(MiB // 2, 3 * MiB // 2)))
                    index += 1
    tmp.rename(path)
    return path


def run(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="compressed size of the layer (MB)")
    parser.add_argument("--position", type=float, default=0.04, help="where the wanted file sits (fraction of the layer)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (best is shown)")
    args = parser.parse_args()

    blob_file = build_layer(args.size_mb, args.position)
    blob = blob_file.read_bytes()
    lay = Layer(blob, None, "gzip")
    size = len(blob)

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    registry = Registry(work / "registry", "anonymous").start()
    proxy = FaultProxy(registry).start()
    try:
        push_image(registry, "bench/extract:v1", layers=[lay])
        ref = f"{proxy.host}/bench/extract:v1"
        cli = [sys.executable, "-m", "layerslayer"]
        blob_route = f"/blobs/{lay.digest}"
        rows = []

        def measure(name: str, cmd_for, check=None) -> None:
            best = None
            for attempt in range(args.repeat):
                out = work / f"out-{name.split()[0]}-{attempt}"
                proxy.clear_records()
                seconds, done = run(cmd_for(out))
                time.sleep(0.2)  # let the proxy finish its accounting
                served = proxy.bytes_served(blob_route)
                if check:
                    check(out, done)
                shutil.rmtree(out, ignore_errors=True)
                if best is None or seconds < best[0]:
                    best = (seconds, served, proxy.count(blob_route, "GET"))
            rows.append((name, *best))

        def check_extract(out: Path, done) -> None:
            assert (out / WANTED).read_bytes() == WANTED_DATA, done.stderr

        def check_save(out: Path, done) -> None:
            saved = list(out.rglob("*.tar.gz"))
            assert len(saved) == 1 and saved[0].stat().st_size == size, done.stderr

        db = work / "index.db"
        run([*cli, "index", str(db), ref, "--quiet"])
        measure("layerslayer extract --db (exact path)",
                lambda out: [*cli, "extract", ref, "/" + WANTED, "--db", str(db), "-o", str(out)], check_extract)
        measure("layerslayer extract (exact path)", lambda out: [*cli, "extract", ref, "/" + WANTED, "-o", str(out)], check_extract)
        measure("layerslayer extract (glob: all of it)", lambda out: [*cli, "extract", ref, "*.env", "-o", str(out)], check_extract)
        measure("layerslayer save (full, verified)", lambda out: [*cli, "save", ref, "--layer", "0", "-o", str(out)], check_save)
        if shutil.which("curl"):
            blob_url = f"{proxy.url}/v2/bench/extract/blobs/{lay.digest}"
            measure("curl full GET to a file (baseline)", lambda out: ["curl", "-sf", "--create-dirs", blob_url, "-o", str(out / "blob")])
    finally:
        proxy.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    target = 0.05 * size + 2 * MiB
    print(f"\nlayer: {size / MB:.1f} MB gzip, {WANTED} placed after {args.position:.0%} of it; best of {args.repeat}")
    print(f"{'method':<40} {'served MB':>10} {'GETs':>5} {'% of blob':>10} {'seconds':>8}")
    for name, seconds, served, gets in rows:
        print(f"{name:<40} {served / MB:>10.2f} {gets:>5} {served / size:>10.2%} {seconds:>8.2f}")
    extract = rows[0]
    full = rows[3]
    print(f"\nextract --db fetched {extract[2] / MB:.2f} MB = {extract[2] / full[2]:.2%} of the full download "
          f"({full[2] / max(extract[2], 1):.0f}x less), {full[1] / extract[1]:.1f}x faster")
    verdict = "PASS" if extract[2] <= target else "FAIL"
    print(f"target: <= 5% of the blob + 2 MiB = {target / MB:.2f} MB -> {verdict}")
    if verdict == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    main()
