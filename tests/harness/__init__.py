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
"""
