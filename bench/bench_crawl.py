"""Benchmark crawls on Dask (`index --workers N`) over a simulated wide-area link.

    python bench/bench_crawl.py [--images 300] [--workers 1,2,4,8] [--rtt 0.08] [--bandwidth 20e6]

Starts the real `docker-registry` on loopback, pushes a synthetic catalog
(tests/harness/catalog.py: --images images on 3 shared base layers, a shared
middle layer for every fourth image, one small layer of their own each), and
puts a shaping proxy in front of it, in a process of its own
(tests/harness/shaper.py: --rtt seconds before each answer, --bandwidth
bytes/s per connection). Then, in one run:

* the single-process `index` (`index_images`, --jobs 2), the baseline;
* a crawl with each number of --workers (a LocalCluster of that many
  processes), each into a fresh index: wall time, images/s, and the ratio to
  one worker; the cluster's start-up is shown apart;
* every run's layer downloads counted at the proxy (each unique layer: 1);
* a crawl with the most workers during which 3 random workers are killed
  (SIGKILL): its index must equal, row for row, the one-worker index;
* a crawl through Dask's own commands (`dask scheduler` + 2 × `dask worker`,
  `layerslayer index --scheduler`): same index again.

Figures are noisy on a shared machine: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness.canon import canonical  # noqa: E402
from harness.catalog import push_catalog  # noqa: E402
from harness.daskcluster import DaskCluster, worker_pids  # noqa: E402
from harness.registry import Registry  # noqa: E402
from harness.shaper import ShapingProxyProcess  # noqa: E402

from layerslayer.crawl import crawl  # noqa: E402
from layerslayer.indexer import index_images  # noqa: E402


def layer_downloads(proxy, digests, since: int) -> list[int]:
    time.sleep(0.3)  # the proxy logs what it answered every 0.1 s
    counts = {d: 0 for d in digests}
    for method, path, status in proxy.requests()[since:]:
        if method == "GET" and status == 200 and "/blobs/" in path:
            digest = path.rsplit("/", 1)[-1]
            if digest in counts:
                counts[digest] += 1
    return sorted(counts.values())


def killer(proxy, start: int, kills: int, stop: threading.Event, killed: list) -> None:
    "Kill random workers of this process's LocalCluster once layers stream, 1-3 s apart."
    while not stop.is_set() and sum("/blobs/" in r[1] for r in proxy.requests()[start:]) < 20:
        time.sleep(0.05)
    rng = random.Random(7)
    while not stop.is_set() and len(killed) < kills:
        pids = worker_pids(os.getpid())
        if pids:
            pid = rng.choice(pids)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        stop.wait(rng.uniform(1, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--rtt", type=float, default=0.08)
    parser.add_argument("--bandwidth", type=float, default=20e6)
    parser.add_argument("--base-bytes", type=int, default=8 << 20)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    registry = Registry(work / "registry").start()
    proxy = ShapingProxyProcess(registry, rtt=args.rtt, bandwidth=args.bandwidth, log=work / "proxy.log")
    try:
        started = time.perf_counter()
        refs, digests = push_catalog(registry, "bench", images=args.images, bases=3, base_files=200,
                                     base_bytes=args.base_bytes, own_bytes=32 << 10)
        refs = [ref.replace(registry.host, proxy.host, 1) for ref in refs]
        print(f"catalog: {len(refs)} images, {len(digests)} unique layers, pushed in {time.perf_counter() - started:.0f}s; "
              f"link: {args.rtt * 1000:.0f} ms RTT, {args.bandwidth / 1e6:.0f} MB/s per connection")

        mark = len(proxy.requests())
        started = time.perf_counter()
        summary = index_images(work / "single.db", refs, jobs=2)
        single = time.perf_counter() - started
        assert summary.ok, summary.errors
        print(f"baseline  index (one process, --jobs 2): {single:6.1f}s  {len(refs) / single:5.1f} images/s  "
              f"layer downloads per unique layer: {set(layer_downloads(proxy, digests, mark))}")

        results = {}
        for n in counts:
            mark = len(proxy.requests())
            summary = crawl(work / f"crawl-{n}.db", refs, workers=n)
            assert summary.ok, summary.errors[:3]
            busy = summary.seconds - summary.startup_seconds
            results[n] = busy
            base = results[counts[0]]
            print(f"crawl --workers {n}: {summary.seconds:6.1f}s ({summary.startup_seconds:4.1f}s cluster start + {busy:6.1f}s crawl)  "
                  f"{len(refs) / busy:5.1f} images/s  x{base / busy:4.1f} vs {counts[0]} worker  "
                  f"x{single / busy:4.1f} vs one process  "
                  f"layer downloads per unique layer: {set(layer_downloads(proxy, digests, mark))}")

        reference = canonical(work / f"crawl-{counts[0]}.db")
        assert canonical(work / "single.db") == reference, "one-process and crawl indexes differ"

        n = max(counts)
        mark = len(proxy.requests())
        stop, killed = threading.Event(), []
        thread = threading.Thread(target=killer, args=(proxy, mark, 3, stop, killed), daemon=True)
        thread.start()
        summary = crawl(work / "killed.db", refs, workers=n)
        stop.set()
        thread.join()
        same = canonical(work / "killed.db") == reference
        downloads = layer_downloads(proxy, digests, mark)
        print(f"crawl --workers {n} with {len(killed)} workers killed: {summary.seconds:.1f}s, ok={summary.ok}, "
              f"index equal to the 1-worker one: {same}, layers fetched again: {sum(downloads) - len(digests)}")

        cluster = DaskCluster(workers=2, workdir=work).start()
        try:
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "layerslayer", "index", str(work / "cli.db"), *refs,
                                     "--scheduler", cluster.address, "--quiet"], capture_output=True, text=True)
            seconds = time.perf_counter() - started
        finally:
            cluster.stop()
        same = result.returncode == 0 and canonical(work / "cli.db") == reference
        print(f"crawl via `dask scheduler` + 2 `dask worker`: {seconds:.1f}s, exit {result.returncode}, "
              f"index equal to the 1-worker one: {same}")
        if result.returncode:
            print(result.stdout[-2000:], result.stderr[-2000:])
    finally:
        proxy.stop()
        registry.stop()


if __name__ == "__main__":
    main()
