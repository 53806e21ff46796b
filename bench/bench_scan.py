"""Benchmark content scanning: cost, recall and precision of `index --scan`.

    python bench/bench_scan.py [--entries 66000] [--repeat 3] [--clean-dirs /usr/lib/python3.11 /etc]

In one run, against the real `docker-registry` on loopback (tests/harness):

* **cost**: `layerslayer index --no-scan`, `index` (scanning by default)
  and `index --scan` on bench_index.py's layer (~300 MB gzip, 66k entries),
  alternated, medians of --repeat runs, wall clock and CPU time (user +
  system: what counts on a machine shared with other work): the ratios
  (target <= 1.3x) and peak RSS (<= 100 MB);
  then a second image sharing that layer, indexed with --scan: layer bytes
  downloaded (target: only its own small layer).
* **recall**: the planted corpus (tests/harness/secret_corpus.py) pushed as
  an image, `index --scan`, against the detect-secrets CLI (and trufflehog3
  when installed) run over the same files written to disk: every (file,
  line) they report must be ours too, except the decoys (by our rule).
* **precision**: a clean layer made of local files (the --clean-dirs, e.g. a
  CPython installation and /etc of this machine: no planted secrets); every
  finding is printed for the README to explain.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from bench_index import timed  # noqa: E402
from bench_tarstream import WORK, build_layer  # noqa: E402
from harness import secret_corpus as corpus  # noqa: E402
from harness.builder import OCI_LAYER_GZIP, file, layer, push_image, raw_layer  # noqa: E402
from harness.registry import Registry  # noqa: E402

LS = f"{sys.executable} -m layerslayer"


def secrets_where(db: Path) -> list[dict]:
    out = subprocess.run(f"{LS} secrets {db} --where --json", shell=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def timed_cpu(command: str) -> tuple[float, float, int, str]:
    "Wall seconds, CPU seconds (user + system), peak RSS in KB and stdout of a command."
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "bash", "-c", command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"command failed: {command}\n{result.stderr}")
    rss, user, system = result.stderr.strip().splitlines()[-1].split()
    return seconds, float(user) + float(system), int(rss), result.stdout


def cost(registry, entries: int, repeat: int, tmp: Path) -> None:
    layer_file = WORK / f"layer-{entries}.tar.gz"
    if not layer_file.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        build_layer(layer_file, entries)
    lay = raw_layer(layer_file.read_bytes(), media_type=OCI_LAYER_GZIP)
    pushed = push_image(registry, "bench/scan:v1", layers=[lay])
    variants = {"index --no-scan": "--no-scan", "index (default)": "", "index --scan": "--scan"}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    rss: dict[str, list[int]] = {name: [] for name in variants}
    for attempt in range(repeat):
        for name, flags in variants.items():  # alternated: the machine's load hits each alike
            db = tmp / f"cost-{attempt}-{len(flags)}.db"
            seconds, cpu_s, peak, out = timed_cpu(f"{LS} index {db} {pushed.ref} --quiet {flags}")
            wall[name].append(seconds)
            cpu[name].append(cpu_s)
            rss[name].append(peak)
            if flags == "--scan" and attempt == 0:
                summary, scan_db = out.strip(), db
    med = lambda d, n: statistics.median(d[n])  # noqa: E731
    print(f"== cost: {lay.size / 1e6:.1f} MB gzip layer, {entries:,} entries, median of {repeat} "
          f"runs (alternated); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':18} {'wall s':>7} {'CPU s':>7} {'peak RSS':>9}")
    for name in variants:
        print(f"{name:18} {med(wall, name):7.2f} {med(cpu, name):7.2f} {max(rss[name]) / 1024:6.0f} MB")
    base = "index --no-scan"
    for name in ("index (default)", "index --scan"):
        print(f"{name} / {base}: wall {med(wall, name) / med(wall, base):.2f}x, CPU {med(cpu, name) / med(cpu, base):.2f}x"
              f"  (target <= 1.30x; peak RSS <= 100 MB)")
    print(f"  {summary}")
    other = push_image(registry, "bench/scan-other:v1", layers=[lay, layer({"app/x.txt": b"hello\n"})])
    _, _, _, out = timed_cpu(f"{LS} index {scan_db} {other.ref} --quiet --scan")
    print(f"second image sharing the layer: {out.strip()}")


def recall(registry, tmp: Path) -> None:
    files = {**corpus.FILES, corpus.GHOST_PATH: corpus.GHOST_FILE}
    pushed = push_image(registry, "bench/corpus:v1", [layer([file(p, d) for p, d in files.items()])])
    db = tmp / "corpus.db"
    timed(f"{LS} index {db} {pushed.ref} --quiet --scan")
    ours = [r for r in secrets_where(db) if r["source"] == "file"]
    our_lines = {(r["location"], r["line"]) for r in ours}
    our_files = {r["location"] for r in ours}
    root = tmp / "corpus"
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    print("== recall on the planted corpus (files; config and history are invisible to file scanners)")
    print(f"layerslayer: {len(ours)} findings in {len(our_files)} files; planted: {len(corpus.PLANTED_FILES) + 1}")
    missing = set(corpus.PLANTED_FILES) - {(r["location"], r["detector"]) for r in ours}
    print(f"  planted (file, detector) pairs missed: {len(missing)} {sorted(missing) if missing else ''}")
    ds = shutil.which("detect-secrets") or str(Path(sys.executable).parent / "detect-secrets")
    result = subprocess.run([ds, "scan", "--all-files", "."], cwd=root, capture_output=True, text=True)
    theirs = [(f, item["line_number"], item["type"]) for f, items in json.loads(result.stdout)["results"].items() for item in items]
    _compare("detect-secrets", theirs, our_lines, lambda f, line: (f, line) in our_lines)
    th3 = shutil.which("trufflehog3") or ("/tmp/i15-th3/bin/trufflehog3" if os.path.exists("/tmp/i15-th3/bin/trufflehog3") else None)
    if th3:
        result = subprocess.run([th3, "--no-history", "-f", "json", "."], cwd=root, capture_output=True, text=True)
        theirs = [(i["path"], i.get("line"), i["rule"]["message"]) for i in json.loads(result.stdout or "[]")]
        # trufflehog3 flags every line of a key block: compared by file
        _compare("trufflehog3", theirs, our_lines, lambda f, line: f in our_files)
    else:
        print("trufflehog3: not installed (pip install trufflehog3 in a separate venv: it pins old attrs)")


def _compare(name, theirs, our_lines, covered) -> None:
    decoys = set(corpus.DECOY_FILES)
    real = [t for t in theirs if t[0] not in decoys]
    missed = [t for t in real if not covered(t[0], t[1])]
    print(f"{name}: {len(theirs)} findings, {len(theirs) - len(real)} of them in decoy files (not secrets by our rule); "
          f"of the other {len(real)}, layerslayer misses {len(missed)} {missed if missed else ''}")


def precision(registry, dirs: list[str], tmp: Path) -> None:
    buf = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        for top in dirs:
            for base, _subdirs, names in os.walk(top):
                for name in names:
                    path = os.path.join(base, name)
                    if not os.path.isfile(path) or os.path.islink(path):
                        continue
                    try:
                        tf.add(path, arcname=path.lstrip("/"), recursive=False)
                        count += 1
                    except OSError:
                        pass
    blob = buf.getvalue()
    pushed = push_image(registry, "bench/clean:v1", [raw_layer(blob, media_type=OCI_LAYER_GZIP)])
    db = tmp / "clean.db"
    timed(f"{LS} index {db} {pushed.ref} --quiet --scan")
    found = secrets_where(db)
    print(f"== precision on a clean layer of local files ({', '.join(dirs)}: {count:,} files, {len(blob) / 1e6:.1f} MB gzip)")
    print(f"findings: {len(found)}  (target <= 5, each explained in the README)")
    for r in found:
        print(f"  {r['detector']:<22} {r['location']}:{r['line']}  {r['preview']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=66000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clean-dirs", nargs="+", default=["/usr/lib/python3.11", "/etc"])
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        registry = Registry(tmp / "registry", "anonymous").start()
        try:
            recall(registry, tmp)
            precision(registry, args.clean_dirs, tmp)
            if not args.skip_cost:
                cost(registry, args.entries, args.repeat, tmp)
        finally:
            registry.stop()


if __name__ == "__main__":
    main()
