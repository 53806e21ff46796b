"""Benchmark `layerslayer secrets` on an index of >= 5 million file rows.

    python bench/bench_secrets.py [--rows 5000000] [--every 2500] [--repeat 15]

Takes bench_find.py's index (built and cached the same way: real layers
indexed from the real registry, then replicated to 5M rows), copies it, and
plants findings as `index --scan` would write them: one on every
``--every``-th regular file of each source layer, and on every ``id_rsa``,
``.env`` and ``*.pem``, with the fingerprint derived from the file's path, so
that the replicas of a layer hold the same secrets as their source (as a
key baked into a base image does across the images built on it). Config
findings (an Env entry) are added to every tenth platform.

Then, side by side in the same run (warm cache, medians; wall clock with the
CPU time of this process in brackets), the library calls behind:

* ``secrets DB``, ``secrets DB --ghost``, ``secrets DB --where``,
  ``secrets DB --detector private-key``, ``find DB --with-secrets --count``
* the floor: reading every ``finding_locations`` row as Python tuples
* a baseline: counting the entries of the index (``SELECT count(*) FROM entries``)

Target: ``secrets`` <= 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_find  # noqa: E402
from bench_find import CPU, median_ms  # noqa: E402

from layerslayer import find, findings, store  # noqa: E402


def plant(db, every: int) -> int:
    conn = db.conn
    conn.execute("DELETE FROM findings")
    # the source layers: the ones whose rows were indexed, not copied (lowest ids)
    rows = conn.execute(
        "SELECT e.layer_id, e.position, p.path, p.name FROM entries e JOIN paths p ON p.id = e.path_id "
        "WHERE e.type = 1 AND e.whiteout = 0"
    )
    batch = []
    for layer_id, position, path, name in rows:
        special = name in ("id_rsa", ".env") or name.endswith(".pem")
        # the same file (by path) in every replica gets the same fingerprint
        h = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16)
        if not special and h % every:
            continue
        detector = "private-key" if special and name != ".env" else "password-assignment"
        fp = hashlib.sha256(f"secret:{path}".encode()).hexdigest()[:32]
        batch.append((layer_id, None, position, "file", None, 1, detector, fp, fp[:4] + "…" + fp[-4:], None))
    platforms = [r[0] for r in conn.execute("SELECT id FROM platforms WHERE attestation = 0 AND id % 10 = 0")]
    for pid in platforms:
        fp = hashlib.sha256(f"env:{pid % 7}".encode()).hexdigest()[:32]
        batch.append((None, pid, None, "env", "DB_PASSWORD", None, "password-assignment", fp, fp[:4] + "…" + fp[-4:], None))
    conn.executemany(store._INSERT_FINDING, batch)  # bench-only SQL path: the rows LayerWriter would write
    conn.commit()
    return len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--every", type=int, default=2500, help="one finding per this many files (plus keys and .env)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    source = bench_find.WORK / f"find-{args.rows // 1_000_000}M.db"
    if not source.exists():
        print(f"building {source} (bench_find.py's index) ...")
        bench_find.build(source, args.rows)
    path = bench_find.WORK / f"secrets-{args.rows // 1_000_000}M.db"
    shutil.copyfile(source, path)
    db = store.open_db(path)  # migrates a cache built before the findings tables
    n = plant(db, args.every)
    store.optimize(db)
    st = store.stats(db)
    locations = db.execute("SELECT count(*) FROM finding_locations").fetchone()[0]
    print(f"{path.name}: {st['files']:,} file rows, {st['images']} images; {n:,} findings planted, "
          f"{locations:,} finding locations; load average {os.getloadavg()[0]:.1f}")
    print(f"median of {args.repeat} runs, ms wall clock (CPU ms of this process)")
    cases = [
        ("secrets", lambda: findings.list_secrets(db)),
        ("secrets --ghost", lambda: findings.list_secrets(db, state="ghost")),
        ("secrets --visible", lambda: findings.list_secrets(db, state="visible")),
        ("secrets --detector private-key", lambda: findings.list_secrets(db, detectors=["private-key"])),
        ("secrets --where", lambda: findings.list_secrets(db, where=True)),
        ("find --with-secrets --count", lambda: find.FindQuery(db, [], with_secrets=True).count()),
        ("floor: finding_locations rows", lambda: db.execute("SELECT * FROM finding_locations").fetchall()),
        ("baseline: count(*) FROM entries", lambda: db.execute("SELECT count(*) FROM entries").fetchone()),
    ]
    for label, fn in cases:
        wall, result = median_ms(fn, args.repeat, label)
        size = len(result) if isinstance(result, list) else result
        target = "  (target <= 50 ms)" if label == "secrets" else ""
        print(f"{label:34} {wall:8.1f} ({CPU[label]:7.1f})  -> {size if not isinstance(size, tuple) else size[0]:,}{target}")
    db.close()


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s in all)")
