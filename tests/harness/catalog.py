"""A synthetic registry catalog: many images on a few shared base layers.

``push_catalog(reg, "crawl", images=300, bases=3)`` pushes images
``crawl/app-NNN:v1`` whose stacks are one of ``bases`` shared base layers
(``base_files`` files each, ``base_bytes`` of incompressible data spread over
them), a shared middle layer for every fourth image, and one small layer of
their own; every fifth own layer deletes a base file (a whiteout, so
``ghost_files`` has rows) and one image turns a base directory into a file.
Returns the pushed references (``host/repo:tag``) and the set of distinct
layer digests. Blobs are deterministic for a given ``seed``.
"""

from __future__ import annotations

import random

from .builder import _session, dir_, file, layer, push_image, whiteout


def mount_blob(reg, repository: str, digest: str, source: str) -> bool:
    "Cross-repository mount (no upload); False when the registry wants an upload."
    s = _session(reg, repository)
    r = s.post(f"{reg.url}/v2/{repository}/blobs/uploads/", params={"mount": digest, "from": source}, timeout=30)
    return r.status_code == 201


def base_layer(n: int, files: int, nbytes: int, seed: int):
    rng = random.Random(seed * 1000 + n)
    each = max(nbytes // max(files, 1), 1)
    members = [dir_("etc"), dir_("usr"), dir_("usr/lib"), dir_(f"opt/base{n}")]
    members.append(file("etc/os-release", f"ID=base{n}\n"))
    members.append(file("etc/secret.conf", f"password=base{n}\n"))
    for i in range(files):
        members.append(file(f"usr/lib/base{n}/lib{i:04d}.so", rng.randbytes(each)))
    return layer(members)


def push_catalog(reg, prefix: str = "crawl", *, images: int = 300, bases: int = 3, base_files: int = 40,
                 base_bytes: int = 2 << 20, own_bytes: int = 4096, seed: int = 1):
    base_layers = [base_layer(n, base_files, base_bytes, seed) for n in range(bases)]
    middle = layer([dir_("srv"), file("srv/shared.txt", "shared middle layer\n")])
    refs, digests = [], set()
    rng = random.Random(seed)
    pushed_in: dict[str, str] = {}  # digest -> a repository holding it
    for i in range(images):
        base = base_layers[i % bases]
        repository = f"{prefix}/app-{i:03d}"
        for shared in (base, middle):
            if shared.digest in pushed_in:
                mount_blob(reg, repository, shared.digest, pushed_in[shared.digest])
        own = [dir_("app"), file(f"app/main-{i}.txt", f"image {i}\n"), file(f"app/blob-{i}.bin", rng.randbytes(own_bytes))]
        if i % 5 == 0:
            own.append(whiteout("etc/secret.conf"))
        if i == 7:
            own.append(file(f"opt/base{i % bases}", "now a file\n"))
        stack = [base] + ([middle] if i % 4 == 0 else []) + [layer(own)]
        pushed = push_image(reg, f"{repository}:v1", layers=stack)
        for lay in stack:
            pushed_in.setdefault(lay.digest, repository)
        refs.append(pushed.ref)
        digests.update(lay.digest for lay in stack)
    return refs, digests
