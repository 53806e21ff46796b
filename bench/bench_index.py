"""Benchmark `layerslayer index` on a >= 200 MB gzip layer served by a local registry.

    python bench/bench_index.py [--entries 66000] [--repeat 3]

Starts the real `docker-registry` on loopback (tests/harness), pushes one
distro-like gzip layer (built once by bench_tarstream.build_layer, cached in
bench/.work/), then times, side by side in the same run:

* `curl -s BLOB_URL | tar -tvzf - > /dev/null`        (GNU tar listing)
* `curl -s BLOB_URL | python -m isal.igzip -d > /dev/null`  (pure inflate)
* `layerslayer index FRESH.db REF --quiet`              (search index included)

and reports the ratios the indexer is held to (<= 0.5x tar, <= 1.6x
inflate), the indexer's peak RSS (target <= 100 MB) and the layer bytes a
re-index of the same image downloads (target 0). Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from bench_tarstream import WORK, build_layer  # noqa: E402
from harness.builder import OCI_LAYER_GZIP, push_image, raw_layer  # noqa: E402
from harness.registry import Registry  # noqa: E402


def timed(command: str) -> tuple[float, int, str]:
    "Wall seconds, peak RSS in KB (of the largest process) and stdout of a shell command."
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "bash", "-c", f"set -o pipefail; {command}"],
        capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"command failed: {command}\n{result.stderr}")
    rss = int(result.stderr.strip().splitlines()[-1])
    return seconds, rss, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=66000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    layer_file = WORK / f"layer-{args.entries}.tar.gz"
    if not layer_file.exists():
        print(f"building {layer_file} ...", file=sys.stderr)
        build_layer(layer_file, args.entries)
    blob = layer_file.read_bytes()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        registry = Registry(tmp / "registry", "anonymous").start()
        try:
            lay = raw_layer(blob, media_type=OCI_LAYER_GZIP)
            pushed = push_image(registry, "bench/index:v1", layers=[lay])
            del blob
            url = f"{registry.url}/v2/bench/index/blobs/{lay.digest}"
            commands = {
                "curl | tar -tvzf -": f"curl -sf {url} | tar -tvzf - > /dev/null",
                "curl | python -m isal.igzip -d": f"curl -sf {url} | {sys.executable} -m isal.igzip -d > /dev/null",
            }
            results: dict[str, list[float]] = {name: [] for name in commands}
            results["layerslayer index"] = []
            rss = []
            reindex_line = ""
            for attempt in range(args.repeat):
                for name, command in commands.items():
                    results[name].append(timed(command)[0])
                db = tmp / f"fresh-{attempt}.db"
                seconds, peak, out = timed(f"{sys.executable} -m layerslayer index {db} {pushed.ref} --quiet")
                results["layerslayer index"].append(seconds)
                rss.append(peak)
                if attempt == 0:
                    _, _, reindex_line = timed(f"{sys.executable} -m layerslayer index {db} {pushed.ref} --quiet")
                    summary = out.strip()
        finally:
            registry.stop()

    size_mb = lay.size / 1e6
    median = {name: statistics.median(values) for name, values in results.items()}
    tar_s = median["curl | tar -tvzf -"]
    inflate_s = median["curl | python -m isal.igzip -d"]
    print(f"layer: {size_mb:.1f} MB gzip, {args.entries:,} entries; median of {args.repeat} runs each")
    print(f"{'method':<34} {'seconds':>8} {'MB/s':>7} {'vs tar':>7} {'vs inflate':>10}")
    for name, seconds in median.items():
        print(f"{name:<34} {seconds:>8.2f} {size_mb / seconds:>7.0f} {seconds / tar_s:>6.2f}x {seconds / inflate_s:>9.2f}x")
    ours = median["layerslayer index"]
    print(f"index / tar:     {ours / tar_s:.2f}x  (target <= 0.50x)")
    print(f"index / inflate: {ours / inflate_s:.2f}x  (target <= 1.60x)")
    print(f"peak RSS of layerslayer index: {max(rss) / 1024:.0f} MB  (target <= 100 MB; the layer is {size_mb:.0f} MB)")
    print(f"first run: {summary}")
    match = re.search(r"([\d.]+ \w?B) of layers downloaded", reindex_line)
    print(f"re-index:  {reindex_line.strip()}")
    print(f"re-index layer bytes downloaded: {match.group(1) if match else '?'}  (target 0)")


if __name__ == "__main__":
    main()
