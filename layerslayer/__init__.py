"""layerslayer: daemonless container-image recon over the Registry HTTP API v2."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The version is defined once, in pyproject.toml; a plain checkout without
    # an install has no metadata.
    __version__ = version("layerslayer")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0+unknown"
