"""layerslayer: daemonless container-image recon over the Registry HTTP API v2.

The Python API (see docs/api.md)::

    import layerslayer

    with layerslayer.Index("images.db") as index:
        index.add("alpine:3.20")
        hits = index.find("*.pem")

The names below are imported on first use (module ``__getattr__``), so that
``import layerslayer`` stays cheap and reading an index never loads the HTTP
stack.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    # The version is defined once, in pyproject.toml; a plain checkout without
    # an install has no metadata.
    __version__ = version("layerslayer")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0+unknown"

#: Public name -> the module defining it.
_EXPORTS = {
    "Index": "api",
    "inspect": "api",
    "save": "api",
    "extract": "api",
    "cat": "api",
    "ClientOptions": "options",
    "Hit": "query",
    "LayerslayerError": "errors",
    "UsageError": "errors",
    "InvalidReference": "errors",
    "NotFound": "errors",
    "AuthError": "errors",
    "NetworkError": "errors",
    "RegistryError": "errors",
    "VerificationError": "errors",
    "NotAnIndex": "store",
    "SchemaMismatch": "store",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
