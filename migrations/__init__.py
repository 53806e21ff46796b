"""Schema migrations for layerslayer indexes (sqlite-utils Migrations)."""
