"""Glob matching is linear in the name's length.

A crafted layer of long names such as ``service-account…service-account.json….json X``
made ``find --preset secrets`` and the same query in ``browse`` quadratic:
``*service-account*.json`` re-scanned the rest of the name for every place of
``service-account``. These tests build such a layer, push it to the real
registry, index it, and time ``find`` and ``browse`` on it; they also check
the new translation against a plain backtracking reference on many globs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import resource
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from harness.builder import file, layer, push_image

from layerslayer.browse.server import make_datasette
from layerslayer.cli import cli
from layerslayer.patterns import compile_patterns, glob_tokens, parse_pattern

# 54 KB: under any sane maximum path length, and ~0.5 s of CPU per name for the
# old quadratic matcher (pattern *service-account*.json); 40 of them: ~20 s.
CRAFTED = "service-account" * 2000 + ".json" * 6000 + "X"
N_CRAFTED = 40


def _reference_regex(glob: str) -> str:
    "The obvious backtracking translation (``*`` → ``.*``): the semantics to keep."
    out = []
    for kind, text in glob_tokens(glob):
        if kind == "any":
            out.append(".*")
        elif kind == "one":
            out.append(".")
        elif kind == "set":
            body = text[1:-1]
            neg = body[:1] in "!^" and body != ""
            body = body[1:] if neg else body
            members = "".join("\\" + c if c in "\\^[]" or (c == "-" and k in (0, len(body) - 1)) else c
                              for k, c in enumerate(body))
            out.append("[" + ("^" if neg else "") + members + "]")
        else:
            out.append(re.escape(text))
    return "".join(out) + r"\Z"


def test_translation_agrees_with_backtracking_reference():
    rnd = random.Random(13)
    alphabet = "ab/."
    atoms = ["a", "b", "/", ".", "*", "*", "?", "[ab]", "[!a]", "**"]
    names = ["".join(p) for n in range(0, 6) for p in itertools.product(alphabet, repeat=n)]
    checked = 0
    for _ in range(400):
        glob = "".join(rnd.choice(atoms) for _ in range(rnd.randint(1, 6))).strip("/") or "a"
        for ignore_case in (False, True):
            pattern = parse_pattern(glob, ignore_case)
            matcher = compile_patterns([pattern])
            ref = re.compile(_reference_regex(pattern.glob), re.DOTALL | (re.I if ignore_case else 0))
            for name in names:
                subject = name if pattern.path_mode else name.rpartition("/")[2]
                assert matcher(name) == bool(ref.match(subject)), (glob, name, ignore_case)
                checked += 1
    assert checked > 100_000
    # The form used before Python 3.11 (no atomic groups), numbered as in an alternation.
    from layerslayer.patterns import _translate
    for glob in ("*a*b*a", "b*?*[ab]*b", "**a**", "a*", "*a", "x*.*y*z?"):
        lookahead, groups = _translate(glob, 3, atomic=False)
        assert groups == max(0, len([s for s in glob.split("*")[1:-1] if s]))
        regex = re.compile("()()" + lookahead, re.DOTALL)
        ref = re.compile(_reference_regex(glob), re.DOTALL)
        for name in names:
            assert bool(regex.match(name)) == bool(ref.match(name)), (glob, name)
    # Several patterns in one matcher (the preset path): alternation keeps each its own.
    both = compile_patterns(["*a*b*a", "b*b*b"])
    assert both("xaxbxa") and both("babab") and both("bbb") and not both("ab") and not both("bab")


def test_crafted_name_costs_linear_cpu():
    "One crafted 54 KB name against the whole secrets preset: well under the 0.5 s the old matcher took."
    from layerslayer.query import preset_patterns

    matcher = compile_patterns([parse_pattern(p, True) for p in preset_patterns("secrets")])
    start = time.process_time()
    for _ in range(5):
        assert not matcher("dir/" + CRAFTED)
    per_name = (time.process_time() - start) / 5
    assert per_name < 0.05, f"{per_name:.3f} s of CPU per crafted name"
    # Linear: four times the name, about four times the work (the old matcher: 16x).
    start = time.process_time()
    assert not matcher("dir/" + CRAFTED * 4)
    assert time.process_time() - start < 0.2


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def crafted_index(registry, tmp_path_factory):
    members = [file(f"c{i:02d}/{CRAFTED}", "x") for i in range(N_CRAFTED)]
    # Incompressible padding: the layer is not a tiny blob with megabytes of names.
    members += [file("pad.bin", random.Random(7).randbytes(3 << 20)), file("app/id_rsa", "KEY"),
                file("app/my-service-account.json", "{}")]
    image = push_image(registry, "t/glob-linear:1", layers=[layer(members)])
    db = tmp_path_factory.mktemp("glob-linear") / "index.db"
    result = CliRunner().invoke(cli, ["index", str(db), image.ref])
    assert result.exit_code == 0, result.output
    return db


def test_find_preset_on_crafted_names_is_fast(crafted_index):
    "CPU seconds of the `find` process (robust to a loaded machine): ~0.5 s, the old matcher ~20 s."
    start = _children_cpu()
    proc = subprocess.run([sys.executable, "-m", "layerslayer", "find", str(crafted_index), "--preset", "secrets",
                           "--nl"], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    cpu = _children_cpu() - start
    assert proc.returncode == 0, proc.stderr
    paths = {json.loads(line)["path"] for line in proc.stdout.splitlines()}
    assert paths == {"app/id_rsa", "app/my-service-account.json"}
    assert cpu < 5, f"find took {cpu:.1f} s of CPU"


def test_browse_secrets_query_answers_within_the_time_limit(crafted_index):
    """The secrets canned query runs `find`'s matcher as an SQL function on every
    candidate; each call is now linear, so the query answers within Datasette's
    time limit (the old matcher ran into it and answered nothing)."""
    datasette = make_datasette(crafted_index, {"sql_time_limit_ms": 5_000})
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(datasette.invoke_startup())
        start = time.process_time()  # Datasette's threads included; the old matcher: ~20 s
        response = loop.run_until_complete(datasette.client.get("/index/secrets.json?_shape=array&_size=max"))
        cpu = time.process_time() - start
        assert response.status_code == 200, response.text[:500]
        paths = {row["path"] for row in response.json()}
        assert {"app/id_rsa", "app/my-service-account.json"} <= paths
        assert cpu < 3, f"{cpu:.1f} s of CPU"
        response = loop.run_until_complete(datasette.client.get(
            "/index/files_by_glob.json?_shape=array&pattern=*service-account*.json&ignore_case=1"))
        assert response.status_code == 200, response.text[:500]
        assert [row["path"] for row in response.json()] == ["app/my-service-account.json"]
    finally:
        loop.close()


def test_browse_sql_functions_respect_the_time_limit(crafted_index):
    """Datasette checks its time limit every 1,000 SQLite instructions, that is
    between calls of our SQL functions: a query calling `find`'s matcher on
    crafted names thousands of times is stopped close to the limit (the old
    matcher spent 0.5 s in each call, and ran far past it)."""
    datasette = make_datasette(crafted_index, {"sql_time_limit_ms": 1_000})
    loop = asyncio.new_event_loop()
    sql = ("SELECT count(*) FROM paths a, paths b, paths c "
           "WHERE layerslayer_preset('secrets', a.path || b.name, a.path_bytes) "
           "AND layerslayer_match('*service-account*.json', c.path || a.name)")
    try:
        loop.run_until_complete(datasette.invoke_startup())
        start = time.monotonic()
        response = loop.run_until_complete(datasette.client.get("/index.json", params={"sql": sql}))
        elapsed = time.monotonic() - start
        assert response.status_code == 400, response.text[:500]
        assert "SQL query took too long" in response.text
        assert elapsed < 6, f"stopped after {elapsed:.1f} s (limit 1 s)"  # the old matcher: 264 s
    finally:
        loop.close()
