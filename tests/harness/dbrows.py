"""Rows of a query on an index file, read with plain sqlite3 (not through layerslayer)."""

import sqlite3


def rows(db, sql, params=()):
    "Every row of a query on the database file ``db``, through a fresh connection."
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
