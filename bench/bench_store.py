"""Benchmark the index writer and the queries `find` relies on.

    python bench/bench_store.py                  # write speed + bytes/row (10 x 50k)
    python bench/bench_store.py --big 100        # + query latency on 100 x 50k = 5M rows

Layers are synthetic but shaped like distro images: a Debian-like base tree
(dpkg info, docs, man pages, locales, shared libraries, python packages,
certificates) of which each layer carries a varying, mostly shared subset, plus
some application files unique to the layer. Baseline printed alongside: plain
``executemany`` of the same rows into a table with no indexes (the floor).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from layerslayer import store  # noqa: E402
from layerslayer.tarstream import Entry  # noqa: E402

SYLLABLES = "lib py net ssl curl gnu x11 font core util data kit ml io zip sql db dev tools".split()
LANGS = "de fr es it ja ko pt_BR ru zh_CN zh_TW nl pl sv cs tr uk".split()


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) + rng.choice(["", "2", "3", "-common", "-bin", "1.0"])


def distro_tree(rng: random.Random, packages: int = 4000) -> list[tuple[str, str]]:
    "A base tree of (path, type); ~80k entries."
    out: dict[str, str] = {}

    def add(path: str, typ: str = "file") -> None:
        parts = path.split("/")
        for i in range(1, len(parts)):
            out.setdefault("/".join(parts[:i]), "dir")
        out[path] = typ

    for _ in range(packages):
        pkg = word(rng)
        add(f"var/lib/dpkg/info/{pkg}.list")
        add(f"var/lib/dpkg/info/{pkg}.md5sums")
        add(f"usr/share/doc/{pkg}/copyright")
        add(f"usr/share/doc/{pkg}/changelog.Debian.gz")
        r = rng.random()
        if r < 0.5:
            add(f"usr/bin/{pkg}")
            add(f"usr/share/man/man1/{pkg}.1.gz")
        if r < 0.4:
            so = f"usr/lib/x86_64-linux-gnu/lib{pkg}.so"
            add(f"{so}.{rng.randint(0, 9)}.{rng.randint(0, 20)}.0")
            add(f"{so}.{rng.randint(0, 9)}", "symlink")
        if r < 0.15:
            for lang in rng.sample(LANGS, 6):
                add(f"usr/share/locale/{lang}/LC_MESSAGES/{pkg}.mo")
        if 0.6 < r < 0.75:
            for _ in range(rng.randint(5, 40)):
                add(f"usr/lib/python3/dist-packages/{pkg}/{word(rng)}.py")
                if rng.random() < 0.5:
                    add(f"usr/lib/python3/dist-packages/{pkg}/__pycache__/{word(rng)}.cpython-311.pyc")
        if r > 0.9:
            add(f"etc/{pkg}/{word(rng)}.conf")
    for i in range(140):
        add(f"usr/share/ca-certificates/mozilla/{word(rng)}_Root_CA_{i}.crt")
        add(f"etc/ssl/certs/{word(rng)}_Root_CA_{i}.pem", "symlink")
    for f in ("passwd", "group", "shadow", "gshadow", "hostname", "hosts", "os-release", "ssh/sshd_config",
              "ssh/ssh_config", "ssh/ssh_host_rsa_key", "ssh/ssh_host_rsa_key.pub", "ssh/moduli"):
        add(f"etc/{f}")
    add("usr/bin/passwd")
    add("usr/share/man/man5/passwd.5.gz")
    add("root/.ssh/id_rsa")
    return sorted(out.items())


def make_layer(rng: random.Random, tree, size: int, layer_no: int, unique_share: float = 0.1):
    "``size`` entries: mostly a sample of the shared tree, plus unique app files."
    n_unique = int(size * unique_share)
    shared = rng.sample(tree, min(len(tree), size - n_unique))
    shared.sort()
    entries = []
    offset = 0
    for path, typ in shared:
        entries.append((path, typ))
    for i in range(n_unique):
        entries.append((f"app{layer_no}/node_modules/{word(rng)}/{word(rng)}/{i}.js", "file"))
    if layer_no % 3 == 1:  # some deletions, as real RUN layers do
        for path, _typ in rng.sample(shared, 20):
            d, _, n = path.rpartition("/")
            entries.append(((d + "/" if d else "") + ".wh." + n, "file"))
    out = []
    for path, typ in entries:
        size_ = rng.randint(0, 200_000) if typ == "file" else 0
        out.append(
            Entry(path, typ, size_, 0o644 if typ == "file" else 0o755, 0, 0, "root", "root",
                  1700000000.0 + rng.randint(0, 10_000_000), "../x" if typ == "symlink" else "", 0, 0,
                  offset, offset + 512)
        )
        offset += 512 + (size_ + 511) // 512 * 512
    return out


def write_layer(db, digest, entries):
    "(stage seconds, commit seconds, cpu seconds) for one layer."
    c0 = time.process_time()
    t0 = time.perf_counter()
    with store.LayerWriter(db, digest) as w:
        w.add_many(entries)
        t1 = time.perf_counter()
        w.commit(bytes_read=1)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, time.process_time() - c0


def baseline_executemany(entries) -> tuple[float, float]:
    "(wall, cpu) seconds: the same rows, plain executemany into a table with no index."
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (layer_id, position, path, type, size, mode, uid, gid, uname, gname, mtime, linkname, "
                 "devmajor, devminor, whiteout, off, hs)")
    c0 = time.process_time()
    t0 = time.perf_counter()
    rows = [(1, i, e.path, e.type, e.size, e.mode, e.uid, e.gid, e.uname, e.gname, e.mtime, e.linkname, e.devmajor, e.devminor, 0, e.offset, 512)
            for i, e in enumerate(entries)]
    with conn:
        conn.executemany("INSERT INTO t VALUES (" + ",".join("?" * 17) + ")", rows)
    return time.perf_counter() - t0, time.process_time() - c0


def file_bytes(path: str, db) -> int:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(path)


def timeit(db, sql, params=(), repeat=15):
    times = []
    rows = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = db.execute(sql, params).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, len(rows)


FIND_SQL = {
    # The shapes find would run (name/path glob → candidate paths → entries → images).
    "*.pem (fts)": (
        "SELECT i.reference, pf.platform, pl.position, p.path, e.size FROM paths_fts "
        "JOIN paths p ON p.id = paths_fts.rowid JOIN entries e ON e.path_id = p.id "
        "JOIN platform_layers pl ON pl.layer_id = e.layer_id JOIN platforms pf ON pf.id = pl.platform_id "
        "JOIN images i ON i.id = pf.image_id WHERE paths_fts.path GLOB '*.pem' AND p.name GLOB '*.pem'"
    ),
    "id_rsa (name =)": (
        "SELECT i.reference, pf.platform, pl.position, p.path, e.size FROM paths p "
        "JOIN entries e ON e.path_id = p.id JOIN platform_layers pl ON pl.layer_id = e.layer_id "
        "JOIN platforms pf ON pf.id = pl.platform_id JOIN images i ON i.id = pf.image_id "
        "WHERE p.name = 'id_rsa'"
    ),
    "ID_RSA (name nocase)": (
        "SELECT i.reference, pf.platform, pl.position, p.path, e.size FROM paths p "
        "JOIN entries e ON e.path_id = p.id JOIN platform_layers pl ON pl.layer_id = e.layer_id "
        "JOIN platforms pf ON pf.id = pl.platform_id JOIN images i ON i.id = pf.image_id "
        "WHERE p.name = 'ID_RSA' COLLATE NOCASE"
    ),
    "*passwd* (fts)": (
        "SELECT i.reference, pf.platform, pl.position, p.path, e.size FROM paths_fts "
        "JOIN paths p ON p.id = paths_fts.rowid JOIN entries e ON e.path_id = p.id "
        "JOIN platform_layers pl ON pl.layer_id = e.layer_id JOIN platforms pf ON pf.id = pl.platform_id "
        "JOIN images i ON i.id = pf.image_id WHERE paths_fts.path GLOB '*passwd*' AND p.name GLOB '*passwd*'"
    ),
    "*PEM (fts, nocase LIKE)": (
        "SELECT i.reference, pf.platform, pl.position, p.path, e.size FROM paths_fts "
        "JOIN paths p ON p.id = paths_fts.rowid JOIN entries e ON e.path_id = p.id "
        "JOIN platform_layers pl ON pl.layer_id = e.layer_id JOIN platforms pf ON pf.id = pl.platform_id "
        "JOIN images i ON i.id = pf.image_id WHERE paths_fts.path LIKE '%.PEM' AND p.name LIKE '%.PEM'"
    ),
    "etc/ssh/* (path range)": (
        "SELECT i.reference, pf.platform, pl.position, p.path, e.size FROM paths p "
        "JOIN entries e ON e.path_id = p.id JOIN platform_layers pl ON pl.layer_id = e.layer_id "
        "JOIN platforms pf ON pf.id = pl.platform_id JOIN images i ON i.id = pf.image_id "
        "WHERE p.path GLOB 'etc/ssh/*'"
    ),
    "visible id_rsa": "SELECT image, platform, path FROM visible_files WHERE name = 'id_rsa'",
    "visible *.pem": (
        "SELECT image, platform, path FROM visible_files WHERE path_id IN "
        "(SELECT rowid FROM paths_fts WHERE path GLOB '*.pem') AND name GLOB '*.pem'"
    ),
    "ghost (all)": "SELECT image, platform, path, deleted_by FROM ghost_files",
    "ghost, one image": "SELECT * FROM ghost_files WHERE image_id = 3",
    "ghost *.pem": "SELECT image, platform, path FROM ghost_files WHERE name GLOB '*.pem'",
    "visible, one platform (all rows)": "SELECT count(*) FROM visible_files WHERE platform_id = 1",
    "ghost, one platform": "SELECT count(*) FROM ghost_files WHERE platform_id = 2",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--big", type=int, default=0, help="layers of --size entries for the query benchmark")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(42)
    tree = distro_tree(rng)
    print(f"base tree: {len(tree):,} distinct paths")
    workdir = args.dir or tempfile.mkdtemp(prefix="bench_store_")

    # 1. One 67k-entry layer: all paths new, then a second layer sharing them.
    big_tree = tree + [(f"opt/extra/{word(rng)}/{i}.dat", "file") for i in range(max(0, 67_000 - len(tree)))]
    l67 = make_layer(rng, big_tree, 67_000, 0, unique_share=0.0)
    l67b = make_layer(rng, big_tree, 67_000, 3, unique_share=0.0)
    n = len(l67)
    best: dict[str, list] = {}
    for _attempt in range(args.repeat):
        path = os.path.join(workdir, "write.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        db = store.open_db(path)
        runs = {
            "baseline": baseline_executemany(l67),
            "new": write_layer(db, "sha256:" + "1" * 64, l67),
            "shared": write_layer(db, "sha256:" + "2" * 64, l67b),
        }
        db.close()
        for key, value in runs.items():
            if key not in best or sum(value[:-1]) < sum(best[key][:-1]):
                best[key] = value
    bw, bc = best["baseline"]
    print(f"best of {args.repeat}, {n:,} entries; rates by wall clock (by process CPU time)")
    print(f"  baseline executemany, no index: {n / bw:9,.0f}/s ({n / bc:,.0f}/s cpu)")
    for key, label in (("new", "all paths new"), ("shared", "paths shared")):
        s_, c_, cpu = best[key]
        print(f"  67k layer, {label:14s}: stage {s_ * 1000:4.0f} ms + commit {c_ * 1000:4.0f} ms = "
              f"{n / (s_ + c_):7,.0f}/s ({n / cpu:,.0f}/s cpu; {(n / cpu) / (n / bc):.0%} of the baseline)")

    # 2. 10 layers x 50k: bytes per entry row.
    path = os.path.join(workdir, "size.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = store.open_db(path)
    empty = file_bytes(path, db)
    total = 0
    t_all = 0.0
    for k in range(args.layers):
        entries = make_layer(rng, tree, args.size, k)
        s, c, _ = write_layer(db, f"sha256:{k:064x}", entries)
        t_all += s + c
        total += len(entries)
    size = file_bytes(path, db) - empty
    st = store.stats(db)
    print(f"{args.layers} layers, {total:,} entries, {st['paths']:,} distinct paths: {size/1e6:.1f} MB, "
          f"{size/total:.1f} bytes/entry (all tables + indexes + FTS), {total/t_all:,.0f} entries/s")
    for _name, in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table','index')").fetchall():
        pass
    try:
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
        print("  by object: " + ", ".join(f"{n} {b/total:.1f}" for n, b in rows if b / total >= 0.5))
    except sqlite3.OperationalError:
        pass
    db.close()

    if not args.big:
        return
    # 3. Query latency on args.big x size rows, stacked into images of 5 layers.
    path = os.path.join(workdir, "big.db")
    if not os.path.exists(path):
        db = store.open_db(path)
        t0 = time.perf_counter()
        rows = 0
        rates = []
        for k in range(args.big):
            entries = make_layer(rng, tree, args.size, k)
            s_, c_, cpu = write_layer(db, f"sha256:{k + 1000:064x}", entries)
            rates.append((len(entries) / (s_ + c_), len(entries) / cpu))
            rows += len(entries)
        for label, part in (("first 10", rates[:10]), ("last 10", rates[-10:])):
            print(f"  write rate, {label} layers: {statistics.mean(r[0] for r in part):,.0f}/s "
                  f"({statistics.mean(r[1] for r in part):,.0f}/s cpu)")
        for img in range(args.big // 5):
            class R:  # a Reference stand-in
                registry = "registry.example"
                repository = f"team/app{img}"
                tag = "latest"
                short = f"registry.example/team/app{img}:latest"
            class P:
                os = "linux"
                architecture = "amd64"
                variant = None
                digest = f"sha256:{img:064x}"
                media_type = "application/vnd.oci.image.manifest.v1+json"
                attestation = False

                def __str__(self):
                    return "linux/amd64"
            class L:
                def __init__(self, k):
                    self.digest = f"sha256:{k + 1000:064x}"
                    self.media_type = "x"
                    self.size = 1
                    self.urls = []
                    self.foreign = False
            image_id = store.upsert_image(db, R, f"sha256:{img:064x}", "x")
            pid = store.upsert_platform(db, image_id, P())
            store.set_platform_layers(db, pid, [L(img * 5 + j) for j in range(5)], "registry.example", f"team/app{img}")
        print(f"built {rows:,} rows in {time.perf_counter() - t0:.0f} s")
        db.close()
    db = store.open_db(path)
    print(f"{store.stats(db)}; file {os.path.getsize(path)/1e6:.0f} MB")
    for label, sql in FIND_SQL.items():
        ms, count = timeit(db, sql, repeat=5 if "all rows" in label or "one platform" in label else 15)
        print(f"  {label:36s} median {ms:7.2f} ms  ({count} rows)")


if __name__ == "__main__":
    main()
