"""Tiny hostile layers that used to cost gigabytes: huge path names, many
long names, an eStargz table of contents far bigger than its blob. Each
`layerslayer index` runs in a fresh process whose peak RSS the kernel
reports (test_hostile.run_measured); each hostile layer fails alone with one
clear recorded error, or (a TOC over the cap) is listed by streaming instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import pytest
from harness.builder import OCI_LAYER_GZIP, layer, push_image, raw_layer, tar_layer
from harness.dbrows import rows
from harness.lazy_layers import estargz_footer
from harness.rawtar import END, pad, pax_record, raw_header
from test_hostile import MAX_RSS_MB, run_measured

from layerslayer.tarstream import MAX_PATH_LENGTH, NAME_BYTES_FLOOR
from layerslayer.toc import ESTARGZ_TOC_DIGEST, MAX_TOC_JSON


def pax_named(name: str) -> bytes:
    record = pax_record("path", name)
    return raw_header(b"././@PaxHeader", len(record), b"x") + pad(record) + raw_header(b"x", 0)


def estargz_with_toc(payload: bytes):
    "A minimal eStargz blob (no files) whose TOC JSON is ``payload``; annotated with its digest."
    header = raw_header(b"stargz.index.json", len(payload))
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    toc_gz = comp.compress(header + pad(payload) + END) + comp.flush()
    blob = gzip.compress(bytes(1024), mtime=0)
    blob += toc_gz + estargz_footer(len(blob))
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    return raw_layer(blob, media_type=OCI_LAYER_GZIP, annotations={ESTARGZ_TOC_DIGEST: digest})


def toc_of(n: int, name_length: int) -> bytes:
    "A TOC of ``n`` directory entries with names of about ``name_length`` bytes."
    pad_name = "d" * max(1, name_length - 8)
    return json.dumps({"version": 1, "entries": [{"name": f"{pad_name}{i:07d}", "type": "dir"} for i in range(n)]},
                      separators=(",", ":")).encode()


def test_long_names_are_bounded(registry, unique_repo, tmp_path):
    mib_name = tar_layer(pax_named("p" * ((1 << 20) - 100)) + END)  # one ~1 MiB path
    limit_plus_one = tar_layer(pax_named("q" * (MAX_PATH_LENGTH + 1)) + END)
    # names at the limit, 1,000 of them: 64 MiB of names in a ~100 KB blob
    many = tar_layer(b"".join(pax_named(f"{i:05d}" + "m" * (MAX_PATH_LENGTH - 5)) for i in range(1000)) + END)
    assert many.size < 1 << 20 and 1000 * MAX_PATH_LENGTH > NAME_BYTES_FLOOR
    at_limit = tar_layer(pax_named("ok/" + "k" * (MAX_PATH_LENGTH - 3)) + END)
    good = layer({"good/file": "x"})
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[good, mib_name, limit_plus_one, many, at_limit])
    db = tmp_path / "names.db"
    status, out, err, seconds, rss_mb = run_measured(["index", str(db), pushed.ref], tmp_path)
    print(f"long names: {seconds:.2f}s, peak RSS {rss_mb:.1f} MB")
    assert status == 1 and "Traceback" not in out + err
    errors = dict(rows(db, "SELECT digest, error FROM layers WHERE status = 'failed'"))
    assert f"a path longer than {MAX_PATH_LENGTH} bytes" in errors[mib_name.digest]
    assert f"a path longer than {MAX_PATH_LENGTH} bytes" in errors[limit_plus_one.digest]
    assert "long path names add up to more than the layer's budget" in errors[many.digest]
    assert len(errors) == 3
    assert rows(db, "SELECT length(path) FROM files WHERE layer_digest = ?", [at_limit.digest]) == [(MAX_PATH_LENGTH,)]
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.1f} MB"


@pytest.mark.slow
def test_a_toc_far_bigger_than_its_blob_is_bounded(registry, unique_repo, tmp_path):
    # Just under the cap: some 60,000 entries in a TOC of ~16 MiB, from a
    # blob of about 1 MB: listed from the TOC, one entry at a time.
    under = toc_of(MAX_TOC_JSON // 275 - 1000, 250)
    assert MAX_TOC_JSON - (1 << 20) < len(under) <= MAX_TOC_JSON
    # Over the cap (a 147 MB TOC took 2.3 GB before): listed by streaming the blob instead.
    over = toc_of(20_000, 2000)
    assert len(over) > 2 * MAX_TOC_JSON
    small, big = estargz_with_toc(under), estargz_with_toc(over)
    assert small.size < 2 << 20 and big.size < 2 << 20
    pushed = push_image(registry, f"{unique_repo()}:v1", layers=[small, big])
    db = tmp_path / "toc.db"
    status, out, err, seconds, rss_mb = run_measured(["index", str(db), pushed.ref], tmp_path, timeout=120)
    print(f"big TOCs: {seconds:.2f}s, peak RSS {rss_mb:.1f} MB")
    assert status == 0, (out, err)
    via = dict(rows(db, "SELECT digest, listed_via FROM layers"))
    assert via == {small.digest: "estargz-toc", big.digest: "stream"}
    assert f"layer {big.digest}: table of contents unusable" in err and "exceeds" in err
    assert rows(db, "SELECT entries FROM layers WHERE digest = ?", [small.digest]) == [(len(json.loads(under)["entries"]) + 1,)]
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.1f} MB"
