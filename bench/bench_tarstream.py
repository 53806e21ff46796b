"""Benchmark the streaming tar engine against the usual baselines.

    python bench/bench_tarstream.py [--entries 66000] [--repeat 3] [--no-zstd]

Builds once (cached under bench/.work/) a gzip layer of >= 200 MB with ~66k
entries shaped like a distro layer: directories, symlinks, hard links, many
small text files, shared-library-like binaries, some already-compressed
(incompressible) files and a few big ones. Then, in one run, it times:

* the inflate floor: ``python -m isal.igzip -dc FILE > /dev/null``
* GNU tar: ``tar -tvzf FILE > /dev/null``
* layerslayer's ``decompress()`` alone (the in-process inflate floor)
* ``tarfile.open(FILE, "r|gz")`` iterating members
* layerslayer: ``iter_entries`` over the file read in 1 MiB chunks
* the same for a zstd copy of the layer (zstandard decompress only vs ours)
* the header parser alone over an in-memory uncompressed copy (µs/entry)

and prints seconds, compressed MB/s and the ratio to the inflate floor.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from layerslayer.decompress import decompress  # noqa: E402
from layerslayer.tarstream import TarReader, iter_entries  # noqa: E402

WORK = HERE / ".work"
CHUNK = 1 << 20

WORDS = (
    b"the of and to in is for on that with as by this are be from or it an at not which have "
    b"config include define return static const void int char struct if else while error value "
    b"usr lib share bin etc local python3 package module version license copyright free software "
    b"function object string number buffer stream header archive layer image registry container "
).split()


def _text_corpus(rng: random.Random, size: int) -> bytes:
    "Text-like bytes: words, identifiers, numbers and line structure (compresses ~3-4x)."
    out = io.BytesIO()
    vocab = WORDS + [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(3, 12))) for _ in range(3000)]
    while out.tell() < size:
        line = b" ".join(rng.choice(vocab) for _ in range(rng.randint(2, 14)))
        if rng.random() < 0.2:
            line += b" = %d;" % rng.randint(0, 1 << 30)
        out.write(b"    " * rng.randint(0, 3) + line + b"\n")
    return out.getvalue()[:size]


def _binary_corpus(rng: random.Random, size: int) -> bytes:
    "Machine-code-like bytes: random with repeated short patterns (compresses ~1.5-2x)."
    out = bytearray()
    patterns = [os.urandom(rng.randint(2, 16)) for _ in range(512)]
    while len(out) < size:
        if rng.random() < 0.55:
            out += rng.choice(patterns) * rng.randint(1, 3)
        else:
            out += rng.randbytes(rng.randint(4, 48))
    return bytes(out[:size])


def build_layer(path: Path, entries: int, seed: int = 20240607) -> None:
    rng = random.Random(seed)
    print(f"building {path.name} ({entries} entries, once) ...", file=sys.stderr)
    text = _text_corpus(rng, 24 << 20)
    binary = _binary_corpus(rng, 24 << 20)
    noise = rng.randbytes(24 << 20)
    tmp = path.with_suffix(".tmp")
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(tmp, "wb") as raw:

        class GzipOut(io.RawIOBase):
            def writable(self):
                return True

            def write(self, b):
                raw.write(comp.compress(b))
                return len(b)

        out = GzipOut()
        tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        dirs = ["usr", "usr/lib", "usr/share", "usr/bin", "etc", "var/lib", "opt/app"]
        files: list[str] = []
        mtime = 1700000000
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = mtime
            tf.addfile(ti)
        made = len(dirs)
        while made < entries:
            r = rng.random()
            if r < 0.07:  # a new directory (some with long, node_modules-like paths)
                parent = rng.choice(dirs)
                depth_name = "-".join(rng.choice(WORDS).decode() for _ in range(rng.randint(1, 3)))
                d = f"{parent}/{depth_name}{rng.randint(0, 999)}"
                if len(d) > 220:
                    d = rng.choice(dirs[:7]) + f"/d{made}"
                dirs.append(d)
                ti = tarfile.TarInfo(d)
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
            elif r < 0.16 and files:  # symlink
                ti = tarfile.TarInfo(f"{rng.choice(dirs)}/lnk{made}.so")
                ti.type = tarfile.SYMTYPE
                ti.linkname = rng.choice(files).rsplit("/", 1)[-1]
                ti.mode = 0o777
            elif r < 0.17 and files:  # hard link
                ti = tarfile.TarInfo(f"{rng.choice(dirs)}/hard{made}")
                ti.type = tarfile.LNKTYPE
                ti.linkname = rng.choice(files)
                ti.mode = 0o755
            else:  # regular file, log-normal size
                name = f"{rng.choice(dirs)}/{rng.choice(WORDS).decode()}_{made}.{rng.choice(['py', 'h', 'so', 'gz', 'txt', 'json', 'pyc'])}"
                size = int(min(rng.lognormvariate(7.3, 1.9), 24 << 20))
                kind = rng.random()
                corpus = text if kind < 0.5 else binary if kind < 0.85 else noise
                start = rng.randrange(0, len(corpus) - size) if size < len(corpus) else 0
                data = corpus[start : start + size]
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mode = rng.choice([0o644, 0o644, 0o644, 0o755])
                files.append(name)
                ti.mtime = mtime + rng.randint(0, 1000)
                ti.uname = ti.gname = "root"
                tf.addfile(ti, io.BytesIO(data))
                made += 1
                continue
            ti.mtime = mtime
            ti.uname = ti.gname = "root"
            tf.addfile(ti)
            made += 1
        tf.close()
        raw.write(comp.flush())
    os.replace(tmp, path)


def make_zstd(src: Path, dst: Path) -> None:
    import zstandard

    print(f"building {dst.name} (once) ...", file=sys.stderr)
    cctx = zstandard.ZstdCompressor(level=3)
    tmp = dst.with_suffix(".tmp")
    with open(src, "rb") as f, open(tmp, "wb") as out:
        import isal.igzip

        with isal.igzip.open(f) as g, cctx.stream_writer(out, closefd=False) as w:
            shutil.copyfileobj(g, w, CHUNK)
    os.replace(tmp, dst)


def read_chunks(path: Path):
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk


def _cpu() -> float:
    "CPU seconds of this process and its waited-for children (tar's gzip included)."
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best_of(fn, repeat: int):
    "Best wall-clock time and best CPU time over ``repeat`` runs, and fn's result."
    walls, cpus = [], []
    result = None
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return (min(walls), min(cpus)), result


def run_cmd(cmd: str):
    return lambda: subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=66000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-zstd", action="store_true")
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    layer = WORK / f"layer-{args.entries}.tar.gz"
    if not layer.exists():
        build_layer(layer, args.entries)
    size = layer.stat().st_size
    mb = size / 1e6

    rows = []

    def row(name, seconds, entries=None):
        rows.append((name, seconds, entries))

    t, _ = best_of(run_cmd(f"{sys.executable} -m isal.igzip -dc {layer} > /dev/null"), args.repeat)
    floor, floor_cpu = t
    row("python -m isal.igzip -dc (inflate floor)", t)

    def inflate_only():
        n = 0
        for chunk in decompress(read_chunks(layer), "gzip"):
            n += len(chunk)
        return n

    t, _ = best_of(inflate_only, args.repeat)
    row("layerslayer decompress() only (in-process floor)", t)

    if shutil.which("tar"):
        t, _ = best_of(run_cmd(f"tar -tvzf {layer} > /dev/null"), args.repeat)
        row("tar -tvzf (GNU tar + gzip)", t)

    def tarfile_iter():
        n = 0
        with tarfile.open(layer, "r|gz") as tf:
            for _ in tf:
                n += 1
        return n

    t, n = best_of(tarfile_iter, args.repeat)
    row('tarfile.open(mode="r|gz") iteration', t, n)

    def ours():
        n = 0
        for _ in iter_entries(read_chunks(layer), "gzip"):
            n += 1
        return n

    t, n_ours = best_of(ours, args.repeat)
    row("layerslayer iter_entries (isal + hand parser)", t, n_ours)

    zrows = []
    if not args.no_zstd:
        import zstandard

        zlayer = WORK / f"layer-{args.entries}.tar.zst"
        if not zlayer.exists():
            make_zstd(layer, zlayer)

        def zstd_floor():
            with open(zlayer, "rb") as f:
                r = zstandard.ZstdDecompressor().stream_reader(f, read_size=CHUNK, read_across_frames=True)
                while r.read(CHUNK):
                    pass

        t, _ = best_of(zstd_floor, args.repeat)
        zrows.append(("zstandard decompress only (floor)", t, None))

        def ours_zstd():
            n = 0
            for _ in iter_entries(read_chunks(zlayer), "zstd"):
                n += 1
            return n

        t, n = best_of(ours_zstd, args.repeat)
        zrows.append(("layerslayer iter_entries (zstandard + parser)", t, n))
        zsize = zlayer.stat().st_size

    # parser alone, on the uncompressed tar held in memory as 1 MiB chunks
    import isal.igzip

    with isal.igzip.open(layer) as g:
        plain = g.read()
    chunks = [plain[i : i + CHUNK] for i in range(0, len(plain), CHUNK)]

    def parse_only():
        n = 0
        for _ in TarReader(chunks):
            n += 1
        return n

    t_parse, n_parse = best_of(parse_only, args.repeat)

    print()
    print(f"layer: {layer}  {mb:.1f} MB gzip, {len(plain) / 1e6:.1f} MB tar, {n_ours} entries")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, best of {args.repeat}")
    print()
    print("seconds = best wall clock; cpu = best CPU seconds (all processes); MB/s = compressed MB per wall second")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (wall clock is only meaningful near 0 on 2 cores)")
    print()
    header = f"{'method':50s} {'seconds':>8s} {'cpu':>7s} {'MB/s':>7s} {'x floor':>8s} {'x floor cpu':>11s}"
    print(header)
    for name, (wall, cpu), _ in rows:
        print(f"{name:50s} {wall:8.2f} {cpu:7.2f} {mb / wall:7.0f} {wall / floor:8.2f} {cpu / floor_cpu:11.2f}")
    if zrows:
        zfloor, zfloor_cpu = zrows[0][1]
        print()
        print(f"zstd copy of the same tar: {zsize / 1e6:.1f} MB (level 3)")
        print(header)
        for name, (wall, cpu), _ in zrows:
            print(
                f"{name:50s} {wall:8.2f} {cpu:7.2f} {zsize / 1e6 / wall:7.0f} {wall / zfloor:8.2f} "
                f"{cpu / zfloor_cpu:11.2f}"
            )
    print()
    wall, cpu = t_parse
    print(
        f"header parser alone (in-memory tar, {n_parse} entries): {wall:.3f} s wall, {cpu:.3f} s cpu, "
        f"{cpu / n_parse * 1e6:.2f} µs/entry, {len(plain) / 1e6 / wall:.0f} MB/s of tar"
    )
    loop = time.process_time()
    for _ in range(10_000_000):
        pass
    loop = time.process_time() - loop
    print(f"machine speed: an empty Python loop iteration takes {loop * 100:.0f} ns")


if __name__ == "__main__":
    main()
