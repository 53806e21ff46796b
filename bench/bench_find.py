"""Benchmark `layerslayer find` on an index of >= 5 million file rows.

    python bench/bench_find.py                # build (cached) then measure
    python bench/bench_find.py --rebuild      # build the database again
    python bench/bench_find.py --repeat 31    # more runs per query

The database (cached as bench/.work/find-<rows>.db, gitignored) is built in
two steps:

1. **Real layers, really indexed.** Six distro- and application-like layers
   (deterministic trees: a Debian-like base of dpkg files, docs, man pages,
   locales, libraries, Python packages and CA certificates, from
   bench_store.distro_tree; node_modules and site-packages apps; SSH host
   keys, an ``id_rsa``, ``.env`` files; layers that delete files with
   whiteouts) are built with tests/harness/builder.py, pushed as three images
   to the real ``docker-registry`` started by tests/harness/registry.py on
   loopback, and indexed by ``layerslayer index``.
2. **Replicas.** Those layers' rows are copied under new layer digests,
   each replica renaming about a fifth of its directories (``pkg`` →
   ``pkg.<n>``, as a new version of a package would) so that distinct paths
   (and the trigram index) grow with the rows as they do across real images.
   Replicas are stacked three per image with ``store.upsert_image`` /
   ``upsert_platform`` / ``set_platform_layers``; the entry rows are copied
   by a **bench-only SQL path** (:func:`_copy_layer`, documented there: the
   same rows LayerWriter would write, without staging each row through
   Python, which would take the build past five minutes).

Then, for each query, the median latency of ``FindQuery(db, [pattern]).hits()``
(the library call behind ``find``: plan, candidate paths, exact check, the
entry rows with image, platform and layer, deleted/visible status, as Python
objects), of the first 100 rows (``--limit 100``) and of ``--count`` is
printed next to the same question asked as a plain ``GLOB`` over the
``image_files`` view, kept from using any index (``+name GLOB ?``: a full
scan; it skips the status columns), with the
row counts (they must agree) and the database's bytes per file row.
Timings are warm-cache medians, wall clock and CPU time of the process (the
two agree on an idle machine; on a busy one the CPU time is the figure an
idle machine would give).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from bench_store import distro_tree, word  # noqa: E402
from harness.builder import dir_, file, layer, push_image, symlink, whiteout  # noqa: E402
from harness.registry import Registry  # noqa: E402

from layerslayer import find, store  # noqa: E402

QUERIES = [
    # (label, pattern, plain-SQL column, GLOB, target ms)
    ("*.pem", "*.pem", "name", "*.pem", 20),
    ("id_rsa", "id_rsa", "name", "id_rsa", 20),
    ("*passwd*", "*passwd*", "name", "*passwd*", 20),
    ("etc/ssh/*", "etc/ssh/*", "path", "etc/ssh/*", 20),
    ("sshd_config (exact name)", "sshd_config", "name", "sshd_config", 5),
    ("os-release (exact name)", "os-release", "name", "os-release", 5),
    ("wp-config.php", "wp-config.php", "name", "wp-config.php", 20),
    ("*.c (no 3-char literal: scan)", "*.c", "name", "*.c", None),
]


# ---------------------------------------------------------------------------
# 1. Real layers


def _members(paths: list[tuple[str, str]], rng: random.Random) -> list:
    out = []
    for path, typ in paths:
        if typ == "dir":
            out.append(dir_(path))
        elif typ == "symlink":
            out.append(symlink(path, "../" + path.rpartition("/")[2]))
        else:
            out.append(file(path, b"", mode=rng.choice((0o644, 0o644, 0o755, 0o600))))
    return out


def _with_parents(paths: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    for path, typ in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            out.setdefault("/".join(parts[:i]), "dir")
        out[path] = typ
    return sorted(out.items())


def real_layers(rng: random.Random) -> dict[str, list]:
    "name -> tar members of the six real layers."
    layers = {}
    for n in range(3):
        tree = distro_tree(random.Random(1000 + n), packages=3000 + 700 * n)
        layers[f"base{n}"] = _members(tree, rng)
    for n in range(2):
        paths = []
        for pkg in range(900 + 300 * n):
            name = word(rng) + str(pkg)
            root = f"app{n}/node_modules/{name}" if n == 0 else f"usr/local/lib/python3.12/site-packages/{name}"
            for _ in range(rng.randint(4, 40)):
                ext = rng.choice([".js", ".json", ".md", ".ts", ".map"] if n == 0 else [".py", ".pyc", ".txt", ".so"])
                paths.append((f"{root}/{word(rng)}{ext}", "file"))
        paths += [(f"app{n}/.env", "file"), (f"app{n}/.env.production", "file"), ("root/.ssh/id_rsa", "file"),
                  (f"app{n}/config/server.pem", "file"), (f"app{n}/config/server.key", "file"),
                  ("var/www/html/wp-config.php", "file")]
        layers[f"app{n}"] = _members(_with_parents(paths), rng)
    # A later RUN that deleted things: whiteouts over the base and the app.
    layers["cleanup"] = [whiteout("app0/.env"), whiteout("root/.ssh/id_rsa"), whiteout("var/lib/apt/lists"),
                         file("etc/motd", b"hi\n")]
    return layers


def push_and_index(db_path: Path) -> list[str]:
    rng = random.Random(7)
    built = {name: layer(members, compression="gzip") for name, members in real_layers(rng).items()}
    images = {
        "bench/debian-app:1": ["base0", "app0", "cleanup"],
        "bench/debian-py:1": ["base1", "app1"],
        "bench/base:2": ["base2"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "registry", "anonymous").start()
        try:
            refs = [push_image(registry, ref, layers=[built[n] for n in names]).ref for ref, names in images.items()]
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "layerslayer", "index", str(db_path), *refs, "--quiet"], check=True)
            print(f"  indexed {len(built)} real layers ({sum(len(m.members) for m in built.values()):,} entries) "
                  f"of {len(refs)} images from {registry.host} in {time.perf_counter() - t0:.1f} s")
        finally:
            registry.stop()
    return [lay.digest for lay in built.values()]


# ---------------------------------------------------------------------------
# 2. Replicas


class _Ref:
    def __init__(self, n: int):
        self.registry, self.repository, self.tag = "registry.bench.example", f"replica/app{n}", "v1"
        self.short = f"{self.registry}/{self.repository}:{self.tag}"


class _Platform:
    os, architecture, variant, media_type, attestation = "linux", "amd64", None, "application/vnd.oci.image.manifest.v1+json", False

    def __init__(self, n: int):
        self.digest = "sha256:" + hashlib.sha256(f"manifest-{n}".encode()).hexdigest()

    def __str__(self) -> str:
        return "linux/amd64"


class _Layer:
    media_type, urls, foreign = "application/vnd.oci.image.layer.v1.tar+gzip", None, False

    def __init__(self, digest: str, size: int):
        self.digest, self.size = digest, size


def _copy_layer(conn, source_id: int, digest: str, renames: list[tuple[int, str, str]]) -> int:
    """BENCH-ONLY SQL PATH (the one place outside store.py that writes): copy
    the entries of layer ``source_id`` under a new, already recorded layer
    row ``digest``, pointing the entries of ``renames`` ((old path id, new
    path, new name)) at new distinct paths, which get their paths_fts rows the
    way LayerWriter.commit adds them (one INSERT ... SELECT). Everything else
    - kinds, whiteout codes, offsets - is copied as the store wrote it for the
    source layer. It exists because LayerWriter, the indexer's write path,
    stages every row through Python (about 20k rows/s once the index is big):
    5M rows would take the build past five minutes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        layer_id = conn.execute("SELECT id FROM layers WHERE digest = ?", [digest]).fetchone()[0]
        before = conn.execute("SELECT ifnull(max(id), 0) FROM paths").fetchone()[0]
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS bench_map (old INTEGER PRIMARY KEY, new INTEGER)")
        conn.execute("DELETE FROM temp.bench_map")
        conn.executemany(
            "INSERT INTO paths (path, name, path_bytes, kinds) SELECT ?, ?, path_bytes, kinds FROM paths WHERE id = ? "
            "ON CONFLICT DO NOTHING",
            [(path, name, old) for old, path, name in renames],
        )
        conn.executemany(
            "INSERT INTO temp.bench_map (old, new) SELECT ?, id FROM paths WHERE path = ? "
            "AND ifnull(path_bytes, x'') = (SELECT ifnull(path_bytes, x'') FROM paths WHERE id = ?)",
            [(old, path, old) for old, path, _ in renames],
        )
        conn.execute("INSERT INTO paths_fts (rowid, path) SELECT id, path FROM paths WHERE id > ?", [before])
        count = conn.execute(
            'INSERT INTO entries (layer_id, position, path_id, type, size, mode, uid, gid, uname, gname, mtime, '
            'linkname, devmajor, devminor, whiteout, "offset", header_size) '
            "SELECT ?, e.position, coalesce(m.new, e.path_id), e.type, e.size, e.mode, e.uid, e.gid, e.uname, "
            'e.gname, e.mtime, e.linkname, e.devmajor, e.devminor, e.whiteout, e."offset", e.header_size '
            "FROM entries e LEFT JOIN temp.bench_map m ON m.old = e.path_id WHERE e.layer_id = ? ORDER BY e.position",
            [layer_id, source_id],
        ).rowcount
        fill_deletions = getattr(store, "FILL_DELETIONS", None)
        if fill_deletions:  # the store's own statement, when its schema keeps a deletions table
            conn.execute(fill_deletions, [layer_id])
        conn.execute(
            "UPDATE layers SET status = 'indexed', listed_via = 'stream', entries = ?, bytes_read = 0, "
            "indexed_at = datetime('now') WHERE id = ?",
            [count, layer_id],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return count


def _rename_plan(paths: list[tuple[int, str]], n: int, share: int = 5) -> list[tuple[int, str, str]]:
    """About 1/share of the directories get a new name in replica n
    (``pkg`` -> ``pkg.<n>``, as a new version of a package would): every path
    right inside one of them becomes a new distinct path."""
    out = []
    decided: dict[str, bool] = {}
    for pid, path in paths:
        parent, _, name = path.rpartition("/")
        if not parent:
            continue
        hit = decided.get(parent)
        if hit is None:
            hit = hashlib.blake2b(f"{parent}|{n}".encode(), digest_size=1).digest()[0] % share == 0
            decided[parent] = hit
        if hit:
            out.append((pid, f"{parent}.{n}/{name}", name))
    return out


def replicate(db, sources: list[str], target_rows: int) -> None:
    conn = db.conn
    rows_now = store.stats(db)["files"]
    info = {}
    for digest in sources:
        layer_id, entries = conn.execute("SELECT id, entries FROM layers WHERE digest = ?", [digest]).fetchone()
        paths = conn.execute(
            "SELECT DISTINCT p.id, p.path FROM entries e JOIN paths p ON p.id = e.path_id WHERE e.layer_id = ?", [layer_id]
        ).fetchall()
        info[digest] = (layer_id, entries, paths)
    big = [d for d in sources if info[d][1] > 1000]
    small = [d for d in sources if info[d][1] <= 1000]
    n = 0
    t0 = time.perf_counter()
    while rows_now < target_rows:
        chosen = [big[n % len(big)], big[(n + 1) % len(big)], small[n % len(small)]]
        stack = [
            _Layer("sha256:" + hashlib.sha256(f"replica-{n}-{digest}".encode()).hexdigest(), info[digest][1] * 600)
            for digest in chosen
        ]
        image_id = store.upsert_image(db, _Ref(n), "sha256:" + hashlib.sha256(f"image-{n}".encode()).hexdigest(),
                                      "application/vnd.oci.image.manifest.v1+json")
        platform_id = store.upsert_platform(db, image_id, _Platform(n))
        store.set_platform_layers(db, platform_id, stack, "registry.bench.example", f"replica/app{n}")
        for digest, lay in zip(chosen, stack):
            source_id, _, paths = info[digest]
            rows_now += _copy_layer(conn, source_id, lay.digest, _rename_plan(paths, n))
        n += 1
        if n % 10 == 0:
            rate = rows_now / (time.perf_counter() - t0)
            print(f"  {n} replica images, {rows_now:,} rows ({rate:,.0f} rows/s)", flush=True)
    print(f"  {n} replica images in {time.perf_counter() - t0:.0f} s")


def build(db_path: Path, target_rows: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(str(db_path) + suffix).exists():
            os.remove(str(db_path) + suffix)
    t0 = time.perf_counter()
    sources = push_and_index(db_path)
    db = store.open_db(db_path)
    try:
        replicate(db, sources, target_rows)
        store.optimize(db)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    print(f"built {db_path} in {time.perf_counter() - t0:.0f} s")


# ---------------------------------------------------------------------------
# 3. Measure


CPU: dict[str, float] = {}


def median_ms(fn, repeat: int, label: str = "") -> tuple[float, object]:
    """Median wall-clock milliseconds (and, in CPU[label], median CPU
    milliseconds of this process: the same figure on an idle machine, since
    SQLite runs in-process on a warm page cache)."""
    fn()  # warm
    times, cpu, result = [], [], None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU[label] = statistics.median(cpu) * 1000
    return statistics.median(times) * 1000, result


def baseline_sql(column: str) -> str:
    # "+column": no index may serve the GLOB (SQLite would turn a GLOB without
    # wildcards, or with a literal head, into a B-tree lookup): a full scan.
    return (f"SELECT image, platform, layer_position, path, type, size, mode FROM image_files "
            f"WHERE +{column} GLOB ? AND whiteout = 0")


def floor(db, pattern: str, repeat: int) -> None:
    """What SQLite alone needs for the rows of ``pattern``, given its path ids:
    reading every entry row with its platform, as Python tuples and with no
    Python at all (an aggregate over the same rows). No find that returns
    those rows as Python objects can be faster than the first figure."""
    q = find.FindQuery(db, [pattern])
    ids = json.dumps(q.path_ids())
    head = ("FROM json_each(?) j CROSS JOIN entries e ON e.path_id = j.value "
            "CROSS JOIN platform_layers pl ON pl.layer_id = e.layer_id")
    rows_ms, rows = median_ms(lambda: db.execute(f"SELECT pl.platform_id, pl.position, e.* {head}", [ids]).fetchall(),
                              repeat, "floor-rows")
    agg_ms, _ = median_ms(lambda: db.execute(
        f"SELECT count(*), sum(pl.position + e.size + e.mode + e.uid + e.gid + e.mtime + length(e.uname) "
        f"+ length(e.gname) + length(e.linkname) + e.\"offset\") {head}", [ids]).fetchone(), repeat, "floor-agg")
    print(f"{pattern} floor: {len(rows):,} entry rows, SQLite alone (path ids given): as Python tuples "
          f"{rows_ms:.1f} ({CPU['floor-rows']:.1f}) ms; summed in SQL, no Python rows: {agg_ms:.1f} "
          f"({CPU['floor-agg']:.1f}) ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="file rows to build (default 5M)")
    parser.add_argument("--repeat", type=int, default=15, help="runs per query (median)")
    parser.add_argument("--baseline-repeat", type=int, default=3, help="runs per plain GLOB scan")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    db_path = WORK / f"find-{args.rows // 1_000_000}M.db"
    # The cache is only good for the schema it was built with.
    fresh = store.open_db(":memory:")
    schema = hashlib.sha256(store.schema_text(fresh).encode()).hexdigest()
    fresh.close()
    stamp = db_path.with_suffix(".schema")
    if db_path.exists() and not args.rebuild and (not stamp.exists() or stamp.read_text() != schema):
        print(f"{db_path.name} was built with another schema: rebuilding")
        args.rebuild = True
    if args.rebuild or not db_path.exists():
        print(f"building {db_path} ...")
        build(db_path, args.rows)
        stamp.write_text(schema)
    db = store.open_db(db_path, must_exist=True)
    st = store.stats(db)
    size = db_path.stat().st_size
    print(f"\n{db_path.name}: {st['files']:,} file rows, {st['paths']:,} distinct paths, {st['layers']} layers, "
          f"{st['images']} images; {size / 1e6:.0f} MB = {size / st['files']:.1f} bytes per file row")
    try:
        objects = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
        print("  bytes per file row by object: " + ", ".join(f"{n} {b / st['files']:.1f}" for n, b in objects if b / st["files"] >= 1))
    except Exception:  # dbstat not compiled in
        pass
    load = os.getloadavg()[0]
    print(f"\nmedian of {args.repeat} runs (plain GLOB: {args.baseline_repeat}), warm cache; load average {load:.1f} "
          f"on {os.cpu_count()} cores")
    print("milliseconds, wall clock (CPU time of this process in brackets: what an idle machine gives)")
    print("find = every row as Python objects (path, image, platform, layer, entry, deleted/visible);")
    print("--limit 100 = the first 100 of them; --count = the number only")
    header = (f"{'query':28} {'plan':7} {'find':>15} {'--limit 100':>13} {'--count':>13} {'rows':>7} "
              f"{'GLOB scan':>9} {'speed-up':>8}  target")
    print(header)
    print("-" * len(header))

    def both(label: str, wall: float) -> str:
        return f"{wall:6.1f} ({CPU[label]:5.1f})"

    for label, pattern, column, glob, target in QUERIES:
        plan = find.FindQuery(db, [pattern]).plans[0].method
        ours, hits = median_ms(lambda: find.FindQuery(db, [pattern]).hits(), args.repeat, "find")
        first, _ = median_ms(lambda: find.FindQuery(db, [pattern], limit=100).hits(), args.repeat, "first")
        counted, n = median_ms(lambda: find.FindQuery(db, [pattern]).count(), args.repeat, "count")
        base, rows = median_ms(lambda: db.execute(baseline_sql(column), [glob]).fetchall(), args.baseline_repeat, "base")
        assert n == len(hits) == len(rows), (label, n, len(hits), len(rows))
        verdict = "" if target is None else f"<= {target} ms: {'ok' if min(ours, CPU['find']) <= target else 'missed'}"
        print(f"{label:28} {plan:7} {both('find', ours):>15} {both('first', first):>13} {both('count', counted):>13} "
              f"{len(hits):7,} {base:9.0f} {base / ours:7.0f}x  {verdict}")
    floor(db, "*.pem", args.repeat)
    for label, kw in (("--preset secrets", {}), ("--preset secrets --deleted", {"deleted": True})):
        ours, hits = median_ms(lambda: find.FindQuery(db, [], presets=["secrets"], **kw).hits(), args.repeat, "find")
        counted, _ = median_ms(lambda: find.FindQuery(db, [], presets=["secrets"], **kw).count(), args.repeat, "count")
        print(f"{label:28} {'mixed':7} {both('find', ours):>15} {'':>13} {both('count', counted):>13} {len(hits):7,}")
    db.close()


if __name__ == "__main__":
    main()
