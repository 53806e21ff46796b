"""Glob matching on crafted names: linear (now) against backtracking (before).

    python bench/bench_glob.py
    python bench/bench_glob.py --sizes 15000,60000,240000

For names of growing length built to make ``*service-account*.json`` backtrack
(``service-account`` repeated, then ``.json`` repeated, then ``X``), and for
ordinary names of the same length, it times in the same run:

* ``patterns.compile_patterns`` over the whole ``secrets`` preset (what
  ``find --preset secrets`` and ``browse``'s secrets query call per path);
* the same preset through the plain backtracking translation (``*`` → ``.*``,
  the matcher used before the linear one), as the baseline;
* SQLite's own ``GLOB`` and ``LIKE`` on the worst pattern (``find``'s
  candidate plans use LIKE; measured to check that SQLite stays linear).

Ratios are what to read (2-core machine shared with other jobs). A linear
matcher's time grows 4x when the name does; the baseline's 16x.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerslayer.patterns import compile_patterns, glob_tokens, parse_pattern  # noqa: E402
from layerslayer.query import preset_patterns  # noqa: E402


def backtracking(patterns: list[str]):
    "The matcher before: one alternation of `.*` translations, names and paths apart."
    def regex(glob: str) -> str:
        out = []
        for kind, text in glob_tokens(glob):
            out.append({"any": ".*", "one": "."}.get(kind) or (text if kind == "set" else re.escape(text)))
        return "(?i:" + "".join(out) + r")\Z"

    parsed = [parse_pattern(p, True) for p in patterns]
    names = re.compile("|".join(regex(p.glob) for p in parsed if not p.path_mode) or "(?!)", re.DOTALL)
    paths = re.compile("|".join(regex(p.glob) for p in parsed if p.path_mode) or "(?!)", re.DOTALL)
    return lambda path: bool(paths.match(path) or names.match(path.rpartition("/")[2]))


def cpu(fn, *args, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="15000,60000,240000", help="name lengths, comma-separated")
    args = parser.parse_args()
    patterns = preset_patterns("secrets")
    linear = compile_patterns([parse_pattern(p, True) for p in patterns])
    before = backtracking(patterns)
    conn = sqlite3.connect(":memory:")
    print(f"secrets preset: {len(patterns)} patterns; CPU seconds, best of 3")
    print(f"{'name length':>11}  {'kind':<8} {'linear':>9} {'backtrack':>10} {'ratio':>7} {'GLOB':>8} {'LIKE':>8}")
    for size in [int(s) for s in args.sizes.split(",")]:
        crafted = "d/" + "service-account" * (size // 30) + ".json" * (size // 10) + "X"
        plain = "d/" + ("abcdefghij" * (size // 10 + 1))[:size]
        for kind, name in (("crafted", crafted), ("ordinary", plain)):
            assert linear(name) == before(name)
            t_linear = cpu(linear, name)
            t_before = cpu(before, name, repeat=1 if size > 100_000 and kind == "crafted" else 3)
            glob = cpu(lambda: conn.execute("SELECT ? GLOB '*service-account*.json'", (name,)).fetchone())
            like = cpu(lambda: conn.execute("SELECT ? LIKE '%service-account%.json'", (name,)).fetchone())
            print(f"{size:>11,}  {kind:<8} {t_linear:9.4f} {t_before:10.4f} {t_before / max(t_linear, 1e-6):6.0f}x "
                  f"{glob:8.4f} {like:8.4f}")
    # The everyday case: many short ordinary paths (find's exact check per candidate).
    paths = [f"usr/lib/python3/dist-packages/pkg{i}/module_{i % 997}.py" for i in range(200_000)]
    t_linear = cpu(lambda: sum(1 for p in paths if linear(p)))
    t_before = cpu(lambda: sum(1 for p in paths if before(p)))
    print(f"200,000 ordinary 50-character paths: linear {t_linear:.3f} s, backtracking {t_before:.3f} s "
          f"({t_linear / t_before:.2f}x)")


if __name__ == "__main__":
    main()
