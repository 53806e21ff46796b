"""Third-party tar files the tests read from where a distribution installs them (never copied here).

* Go's ``archive/tar`` test data: Debian/Ubuntu package ``golang-src`` (or
  ``golang-1.NN-src``), under ``/usr/share/go-*/src/archive/tar/testdata`` or
  ``/usr/lib/go-*/src/archive/tar/testdata``.
* CPython's ``testtar.tar``: package ``libpython3.NN-testsuite``, under
  ``/usr/lib/python3*/test/`` (``test/archivetestdata/`` from 3.12 on).
"""

from __future__ import annotations

import glob
from pathlib import Path

GO_TESTDATA_GLOBS = (
    "/usr/share/go-*/src/archive/tar/testdata",
    "/usr/lib/go-*/src/archive/tar/testdata",
    "/usr/lib/go/src/archive/tar/testdata",
    "/usr/local/go/src/archive/tar/testdata",
)
CPYTHON_TESTTAR_GLOBS = (
    "/usr/lib/python3*/test/testtar.tar",
    "/usr/lib/python3*/test/archivetestdata/testtar.tar",
)


def _first(patterns, what: str, package: str) -> Path:
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    raise FileNotFoundError(f"{what} not found ({', '.join(patterns)}): install the {package} package")


def go_testdata() -> Path:
    "The directory of Go's archive/tar test files."
    return _first(GO_TESTDATA_GLOBS, "Go's archive/tar test data", "golang-src")


def cpython_testtar() -> Path:
    "CPython's test/testtar.tar."
    return _first(CPYTHON_TESTTAR_GLOBS, "CPython's testtar.tar", "libpython3-testsuite (e.g. libpython3.11-testsuite)")
