"""Integration-test harness for layerslayer: real registries, a token server,
an image builder and a fault proxy.

Import convention
-----------------
pytest's ``pythonpath = ["tests"]`` (pyproject.toml) puts ``tests/`` on the path, so test
modules (and bench scripts that do the same) import the harness as a
top-level package::

    from harness.builder import push_image, file, dir_, symlink
    from harness.proxy import FaultProxy

Never ``from tests.harness...`` (``tests/`` is not a package).

The harness talks to registries with plain ``requests`` and never imports
``layerslayer``: it must stay an independent oracle for the client under test.

Modules
-------
``registry``     start/stop ``docker-registry`` (anonymous, htpasswd, token auth)
``tokenserver``  the Docker-Hub-style token server used by the token flavour
``builder``      tar layers, compression, configs, manifests, indexes, pushes
``proxy``        fault-injecting HTTP proxy plus a "CDN" redirect target
``wait``         ``wait_until(predicate, timeout, interval)`` instead of poll-then-sleep loops
``dbrows``       rows of a query on an index file, through plain sqlite3
``rawtar``       hand-made tar headers and pax records tarfile will not write
``lazy_layers``  eStargz and zstd:chunked layer blobs

Helpers that drive layerslayer itself (``build_index``) live in ``tests/support``.
"""
