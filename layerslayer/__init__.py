"""layerslayer: daemonless container-image recon over the Registry HTTP API v2."""

__version__ = "0.1.0"
