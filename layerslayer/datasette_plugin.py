"""Datasette plugin for layerslayer indexes (see issue: browse)."""
