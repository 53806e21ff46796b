"""Secrets by content: `index --scan` over a planted corpus pushed to a real
registry (gzip, zstd, eStargz and zstd:chunked layers, a file a later layer
deletes, config Env/Labels, build steps), then `layerslayer secrets`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from harness import secret_corpus as corpus
from harness.builder import empty, file, layer, push_image, raw_layer, step, whiteout
from harness.dbrows import rows
from harness.lazy_layers import build_estargz, build_zstd_chunked, member

from layerslayer.cli import cli

ESTARGZ_ENV = "opt/lazy/estargz.env"
ZCHUNKED_KEY = "opt/lazy/chunked_key"
ESTARGZ_TOKEN = "ghp_" + corpus.rand(36)
ZCHUNKED_TOKEN = "xoxp-" + corpus.rand(12, "0123456789") + "-" + corpus.rand(30, "abcdef0123456789")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def corpus_layers():
    files = dict(corpus.FILES)
    half = sorted(files)[: len(files) // 2]
    gz = layer([*(file(p, files[p]) for p in half), file(corpus.GHOST_PATH, corpus.GHOST_FILE)], "gzip")
    zs = layer([*(file(p, files[p]) for p in files if p not in half), whiteout(corpus.GHOST_PATH)], "zstd")
    estargz = build_estargz([member(ESTARGZ_ENV, data=f"GITHUB_TOKEN={ESTARGZ_TOKEN}\n".encode())])
    chunked = build_zstd_chunked([member(ZCHUNKED_KEY, data=f"token: {ZCHUNKED_TOKEN}\n".encode())])
    lazy = [raw_layer(b.blob, media_type=b.media_type, annotations=b.annotations, diff_id=b.diff_id) for b in (estargz, chunked)]
    return [gz, zs, *lazy]


@pytest.fixture(scope="module")
def corpus_image(registry):
    return push_image(
        registry, "secrets/corpus:1", corpus_layers(),
        config={"config": {"Env": corpus.ENV, "Labels": corpus.LABELS, "User": "app", "WorkingDir": "/app",
                           "ExposedPorts": {"8080/tcp": {}}, "Entrypoint": ["/app/run"], "Cmd": ["serve"]}},
        history=[step(corpus.HISTORY[0]), step(corpus.HISTORY[1]), empty(corpus.HISTORY[2]),
                 step("/bin/sh -c #(nop) ADD file:estargz in /"), step("/bin/sh -c #(nop) ADD file:chunked in /")],
    )


@pytest.fixture(scope="module")
def scanned(corpus_image, tmp_path_factory):
    db = tmp_path_factory.mktemp("scan") / "index.db"
    result = run("index", db, corpus_image.ref, "--scan")
    assert result.exit_code == 0, result.output
    return db, result.output


def where(db, *args):
    result = run("secrets", db, "--where", "--json", *args)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)


def test_every_planted_secret_is_found_and_no_decoy(scanned):
    db, output = scanned
    found = where(db)
    files = {(r["location"], r["detector"]) for r in found if r["source"] == "file"}
    missing = set(corpus.PLANTED_FILES) - files
    assert not missing
    assert (ESTARGZ_ENV, "github-token") in files and (ZCHUNKED_KEY, "slack-token") in files
    decoys = [r for r in found if r["location"] in corpus.DECOY_FILES]
    assert decoys == []
    config = {(r["source"], r["location"], r["detector"]) for r in found if r["source"] != "file"}
    assert set(corpus.PLANTED_CONFIG) <= config
    # the placeholders in Env (APP_PASSWORD=changeme) and history (AKIAIOSFODNN7EXAMPLE) are decoys
    assert not [r for r in found if r["source"] != "file" and (r["source"], r["location"], r["detector"]) not in corpus.PLANTED_CONFIG]
    # nothing outside the planted list, in files either
    planted = set(corpus.PLANTED_FILES) | {(ESTARGZ_ENV, "github-token"), (ZCHUNKED_KEY, "slack-token"),
                                            (corpus.GHOST_PATH, "private-key")}
    assert files - planted == set()
    assert "secret findings" in output


def test_ghost_finding_in_a_deleted_file(scanned):
    db, _ = scanned
    ghosts = where(db, "--ghost")
    assert [(r["location"], r["state"], r["layer_position"]) for r in ghosts] == [(corpus.GHOST_PATH, "deleted", 0)]
    visible = where(db, "--visible")
    assert corpus.GHOST_PATH not in {r["location"] for r in visible}
    assert {r["state"] for r in visible} == {"visible", "config"}


def test_lazy_layers_are_streamed_when_scanning(scanned, corpus_image):
    db, _ = scanned
    listed = dict(rows(db, "SELECT digest, listed_via FROM layers"))
    assert {listed[lay.digest] for lay in corpus_image.layers} == {"stream"}
    assert {r[0] for r in rows(db, "SELECT scanned FROM layers")} == {1 << 20}


def test_scanning_is_the_default_for_streamed_layers(corpus_image, tmp_path):
    "Without --scan, streamed layers are scanned; lazy-pull ones are listed from their TOC and not scanned."
    db = tmp_path / "default.db"
    result = run("index", db, corpus_image.ref)
    assert result.exit_code == 0, result.output
    listed = dict(rows(db, "SELECT digest, listed_via || ' ' || ifnull(scanned, '-') FROM layers"))
    assert [listed[lay.digest] for lay in corpus_image.layers] == [
        "stream 1048576", "stream 1048576", "estargz-toc -", "zstd-chunked-toc -"]
    files = {(r["location"], r["detector"]) for r in where(db) if r["source"] == "file"}
    assert set(corpus.PLANTED_FILES) <= files and (ESTARGZ_ENV, "github-token") not in files
    none = tmp_path / "none.db"
    assert run("index", none, corpus_image.ref, "--no-scan").exit_code == 0
    assert rows(none, "SELECT count(*) FROM findings") == [(0,)]
    assert rows(none, "SELECT count(*) FROM layers WHERE scanned IS NOT NULL") == [(0,)]
    bad = run("index", none, corpus_image.ref, "--no-scan", "--keep-values")
    assert bad.exit_code == 2 and "exclude each other" in bad.output


def test_values_are_not_stored_unless_asked(scanned, corpus_image, tmp_path):
    db, _ = scanned
    assert rows(db, "SELECT count(*) FROM findings WHERE value IS NOT NULL") == [(0,)]
    data = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    for secret in (corpus.GITHUB, corpus.AWS_SECRET, corpus.DB_PASSWORD, corpus.STRIPE_LABEL, corpus.ARG_PASSWORD, ESTARGZ_TOKEN):
        assert secret.encode() not in data
    kept = tmp_path / "kept.db"
    assert run("index", kept, corpus_image.ref, "--scan", "--keep-values").exit_code == 0
    values = {v for (v,) in rows(kept, "SELECT value FROM findings")}
    assert {corpus.GITHUB, corpus.AWS_SECRET, corpus.STRIPE_LABEL, ESTARGZ_TOKEN} <= values
    listed = json.loads(run("secrets", kept, "--json", "--detector", "stripe-key").output)
    assert {s["value"] for s in listed} == {corpus.STRIPE, corpus.STRIPE_LABEL}


def test_one_row_per_secret_with_counts(registry, corpus_image, tmp_path):
    "A second image sharing the base layer: the base is not downloaded or scanned again; counts span both."
    db = tmp_path / "two.db"
    assert run("index", db, corpus_image.ref, "--scan").exit_code == 0
    before = rows(db, "SELECT count(*) FROM findings WHERE layer_id IS NOT NULL")
    base = corpus_image.layers[0]
    other = push_image(registry, "secrets/other:1", [base, layer({"srv/app.txt": b"nothing here\n"})])
    result = run("index", db, other.ref, "--scan")
    assert result.exit_code == 0, result.output
    assert "1 indexed, 1 reused" in result.output
    assert rows(db, "SELECT count(*) FROM findings WHERE layer_id IS NOT NULL") == before
    listed = json.loads(run("secrets", db, "--json", "--detector", "private-key").output)
    # server.key and the ghost deploy_key sit in the shared base layer; id_rsa, id_ed25519 and the PGP key do not
    assert sorted(s["images"] for s in listed) == [1, 1, 1, 2, 2]
    shared = json.loads(run("secrets", db, "--json", "--image", other.ref).output)
    in_base = rows(db, "SELECT count(DISTINCT fingerprint) FROM findings f JOIN layers l ON l.id = f.layer_id "
                       "WHERE l.digest = ?", [base.digest])[0][0]
    assert len(shared) == in_base > 10 and {s["images"] for s in shared} == {2}


def test_scanning_an_index_made_without_scan(corpus_image, tmp_path):
    "Layers indexed without --scan are streamed once more and scanned; their entries stay as they were."
    db = tmp_path / "later.db"
    assert run("index", db, corpus_image.ref, "--no-scan").exit_code == 0
    entries = rows(db, "SELECT layer_id, position, path_id FROM entries ORDER BY 1, 2")
    assert rows(db, "SELECT count(*) FROM findings") == [(0,)]
    unscanned = run("secrets", db)
    assert unscanned.exit_code == 1 and "was scanned for secrets" in unscanned.output
    default = run("index", db, corpus_image.ref)  # the default scans what it streams: here nothing
    assert "0 B of layers downloaded" in default.output
    assert {r["source"] for r in where(db)} == {"env", "label", "history"}
    result = run("index", db, corpus_image.ref, "--scan")
    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT layer_id, position, path_id FROM entries ORDER BY 1, 2") == entries
    files = {(r["location"], r["detector"]) for r in where(db) if r["source"] == "file"}
    assert set(corpus.PLANTED_FILES) <= files
    again = run("index", db, corpus_image.ref, "--scan")
    assert "0 B of layers downloaded" in again.output


def test_scan_max_size(corpus_image, tmp_path):
    db = tmp_path / "small.db"
    assert run("index", db, corpus_image.ref, "--scan", "--scan-max-size", "100").exit_code == 0
    files = {r["location"] for r in where(db) if r["source"] == "file"}
    assert "root/.npmrc" in files  # 77 bytes
    assert "root/.ssh/id_rsa" not in files  # ~900 bytes: over the cap
    bad = run("index", db, corpus_image.ref, "--scan", "--scan-max-size", "lots")
    assert bad.exit_code == 2 and "--scan-max-size" in bad.output and "Traceback" not in bad.output


def test_secrets_command_rows_and_errors(scanned):
    db, _ = scanned
    table = run("secrets", db)
    assert table.exit_code == 0
    assert table.output.splitlines()[0].split() == ["DETECTOR", "IMAGES", "LAYERS", "STATE", "PREVIEW", "FIRST", "SEEN"]
    assert corpus.GITHUB not in table.output and corpus.GITHUB[:4] + "…" in table.output
    csv = run("secrets", db, "--csv", "--detector", "jwt")
    assert csv.output.splitlines()[0].startswith("fingerprint,detector,preview,images,layers,state")
    assert len(csv.output.splitlines()) == 2
    nl = run("secrets", db, "--nl", "--where", "--detector", "docker-auth")
    assert [json.loads(line)["location"] for line in nl.output.splitlines()] == ["root/.docker/config.json"]
    bad = run("secrets", db, "--detector", "nope")
    assert bad.exit_code == 2 and "unknown detector" in bad.output
    assert run("secrets", db, "--image", "not/there:1").exit_code == 2


def test_config_tables(scanned):
    db, _ = scanned
    assert rows(db, "SELECT user, working_dir, cmd, entrypoint FROM config") == [("app", "/app", '["serve"]', '["/app/run"]')]
    assert rows(db, "SELECT name FROM config_env ORDER BY position") == [(e.partition("=")[0],) for e in corpus.ENV]
    # values found are masked (redacted preview) where the index would otherwise keep them verbatim
    assert dict(rows(db, "SELECT name, value FROM config_labels")) == {
        "org.opencontainers.image.title": "corpus", "com.example.billing": corpus.STRIPE_LABEL[:4] + "…" + corpus.STRIPE_LABEL[-4:]}
    history = rows(db, "SELECT created_by FROM history ORDER BY position")[0][0]
    assert corpus.GITHUB_ARG not in history and history.startswith("|2 GITHUB_TOKEN=ghp_…")
    assert rows(db, "SELECT port FROM config_ports") == [("8080/tcp",)]


def test_inspect_shows_the_config(corpus_image):
    text = run("inspect", corpus_image.ref)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert "User:       app" in lines and "WorkingDir: /app" in lines and 'Entrypoint: ["/app/run"]' in lines
    assert "Ports:      8080/tcp" in lines and f"  {corpus.ENV[1]}" in lines
    assert "  org.opencontainers.image.title=corpus" in lines
    data = json.loads(run("inspect", corpus_image.ref, "--json").output)
    assert data["config"]["Env"] == corpus.ENV and data["config"]["Labels"] == corpus.LABELS
    assert data["config"]["Cmd"] == ["serve"] and data["config"]["ExposedPorts"] == {"8080/tcp": {}}


def test_inspect_raw_prints_the_bytes_served(registry, corpus_image):
    from harness.builder import push_index

    config = CliRunner().invoke(cli, ["inspect", corpus_image.ref, "--raw", "config"])
    assert config.exit_code == 0 and config.stdout_bytes == corpus_image.image.config_bytes
    manifest = CliRunner().invoke(cli, ["inspect", corpus_image.ref, "--raw", "manifest"])
    assert manifest.stdout_bytes == corpus_image.image.manifest_bytes
    none = run("inspect", corpus_image.ref, "--raw", "index")
    assert none.exit_code == 2 and "single-platform" in none.output and "Traceback" not in none.output
    multi = push_index(registry, "secrets/multi:1")
    index = CliRunner().invoke(cli, ["inspect", multi.ref, "--raw", "index"])
    assert index.stdout_bytes == multi.index_bytes
    arm = CliRunner().invoke(cli, ["inspect", multi.ref, "--raw", "manifest", "--platform", "linux/arm64/v8"])
    assert arm.stdout_bytes == multi.built.images[1].manifest_bytes


def test_find_with_secrets(scanned):
    db, _ = scanned
    result = run("find", db, "--with-secrets", "--json")
    assert result.exit_code == 0, result.output
    paths = {h["path"] for h in json.loads(result.output)}
    planted = {p for p, _ in corpus.PLANTED_FILES} | {corpus.GHOST_PATH, ESTARGZ_ENV, ZCHUNKED_KEY}
    assert paths == planted
    ghosts = json.loads(run("find", db, "--with-secrets", "--deleted", "--json").output)
    assert [h["path"] for h in ghosts] == [corpus.GHOST_PATH]
    keys = json.loads(run("find", db, "*.key", "id_*", "--with-secrets", "--json").output)
    assert {h["path"] for h in keys} == {"etc/ssl/private/server.key", "root/.ssh/id_rsa", "home/app/.ssh/id_ed25519"}
    assert run("find", db, "*.ini", "--with-secrets").exit_code == 1  # defaults.ini holds only a placeholder


def test_find_exclude_and_quieter_presets(registry, tmp_path):
    noise = {
        "etc/ssl/certs/ca-certificates.crt": "-", "usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt": "-",
        "usr/lib/python3.11/test/keycert.pem": "-", "usr/lib/python3/dist-packages/certifi/cacert.pem": "-",
        "usr/local/lib/python3.12/site-packages/pip/_vendor/certifi/cacert.pem": "-",
        "usr/local/lib/node_modules/npm/node_modules/agent/test/fixtures/key.pem": "-",
        "usr/lib/go/src/crypto/tls/testdata/example-key.pem": "-",
    }
    real = {"app/certs/server.pem": "-", "root/.ssh/id_rsa": "-", "etc/shadow": "-", "etc/gshadow-": "-",
            "srv/www/.htpasswd": "-", "app/.env": "-"}
    image = push_image(registry, "secrets/presets:1", [layer({**noise, **real})])
    db = tmp_path / "presets.db"
    assert run("index", db, image.ref).exit_code == 0

    def paths(*args):
        result = run("find", db, *args, "--json")
        assert result.exit_code in (0, 1), result.output
        return {h["path"] for h in json.loads(result.output or "[]")}

    assert paths("--preset", "secrets") == set(real)
    assert paths("--preset", "keys") == {"app/certs/server.pem", "root/.ssh/id_rsa"}
    assert paths("--preset", "shadow") == {"etc/shadow", "etc/gshadow-", "srv/www/.htpasswd"}
    # a typed pattern is not subject to the preset's exclusions...
    assert paths("*.pem") == {p for p in {**noise, **real} if p.endswith(".pem")}
    # ...but --exclude applies to everything
    assert paths("*.pem", "--exclude", "/usr/*") == {"app/certs/server.pem"}
    assert paths("--preset", "secrets", "--exclude", "*.env", "--exclude", "/etc/*") == {
        "app/certs/server.pem", "root/.ssh/id_rsa", "srv/www/.htpasswd"}
    listed = run("find", "--list-presets").output
    assert "shadow: " in listed and "except */ssl/certs/*" in listed


def test_browse_canned_queries_over_findings(scanned, registry, tmp_path):
    import asyncio

    from datasette.app import Datasette

    db, _ = scanned

    async def query(name, **params):
        ds = Datasette([str(db)])
        qs = "&".join(f"{k}={v}" for k, v in {"_shape": "objects", **params}.items())
        response = await ds.client.get(f"/index/{name}.json?{qs}")
        assert response.status_code == 200, response.text
        return response.json()["rows"]

    by_image = asyncio.run(query("secrets_by_image", image=""))
    assert {r["location"] for r in by_image if r["source"] == "file"} >= {"root/.ssh/id_rsa:1", "app/.env:1"}
    assert "env AWS_SECRET_ACCESS_KEY" in {r["location"] for r in by_image}
    ghost = asyncio.run(query("secrets_only_in_deleted_files", image=""))
    assert [(r["location"], r["state"]) for r in ghost] == [(corpus.GHOST_PATH + ":1", "deleted")]
    assert asyncio.run(query("same_secret_in_several_images")) == []  # one image here
    findings = asyncio.run(query("findings"))
    assert findings and all(r["value"] is None for r in findings)


def test_secrets_never_loads_the_http_stack(scanned):
    "Like find, ls and images: reading findings needs neither requests nor the detectors."
    import subprocess
    import sys

    db, _ = scanned
    code = (
        "import sys\nfrom layerslayer.cli import cli\n"
        f"for args in (['secrets', {str(db)!r}, '--where'], ['find', {str(db)!r}, '--with-secrets']):\n"
        "    try:\n        cli.main(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
        "print('LOADED', sorted(m for m in ('requests', 'urllib3', 'detect_secrets', 'hyperscan') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[-1] == "LOADED []"


def test_hostile_content_is_bounded(registry, tmp_path):
    "A file of endless password lines costs bounded work and memory; the layer still indexes, with a message."
    from layerslayer import secretscan

    lines = b"".join(b'db_password = "Pw-%08dxyz"\n' % i for i in range(30_000))  # 0.9 MB: under the cap
    scanner = secretscan.Scanner()
    found = scanner.scan_file("app/conf.py", lines)
    assert 0 < len(found) <= secretscan.MAX_FINDINGS_PER_FILE and scanner.truncated
    anchors = secretscan.Scanner()
    assert len(anchors.scan_file("app/x.env", (b"password=" * 120_000)[: 1 << 20])) <= 1 and anchors.truncated
    image = push_image(registry, "secrets/hostile:1", [layer({"app/conf.py": lines, "app/ok.env": b"DB_PASSWORD=Pw-7seven7\n"})])
    db = tmp_path / "hostile.db"
    result = run("index", db, image.ref)
    assert result.exit_code == 0 and "secret scanning stopped short" in result.output
    assert rows(db, "SELECT count(*) FROM entries") == [(2,)]
    files = {r["location"] for r in where(db)}
    assert files == {"app/conf.py", "app/ok.env"}
