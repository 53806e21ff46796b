"""Small helpers shared by test modules (tests/ is on pytest's pythonpath)."""

import sqlite3


def rows(db, sql, params=()):
    "Every row of a query on the database file ``db``, through a fresh connection."
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
