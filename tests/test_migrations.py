"""The schema migrations: shipped ones run frozen SQL, and they load from a
plain checkout (``layerslayer/migrations.py``, no install needed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import sqlite_utils

from layerslayer import store
from layerslayer.migrations import migrations

ROOT = Path(__file__).resolve().parent.parent

# sha256 of the SQL each shipped migration runs, one statement a line. A
# shipped migration never changes (an index migrated at release and one
# migrated today must get the same schema): add the next migration, and its
# hash here, instead.
SHIPPED = {
    "m001_initial": "2e7fc7b71697f90d6c8a7631832d87ac6822c0f560c6e3f99a1a5803b797cdce",
    "m002_i16_checkpoints": "22d66da6581c0ac2183e386ca493c9a7116d15bf2ff813195e395883c7beaba7",
    "m003_i12_layer_notes": "996665976040d8c062d6ba0009b512be8bd591259ab87d34af600e107d94459e",
    "m010_i15_secrets": "9af02b593b620309994554c4df351d818dc5c068ca7aaa28a9be556e1ce558b9",
}


def sql_run_by_each_migration() -> dict[str, str]:
    "Each migration's SQL, as SQLite saw it, applying them in order to an empty database."
    db = sqlite_utils.Database(memory=True)
    ran: dict[str, str] = {}
    for migration in migrations._migrations:
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        try:
            migration.fn(db)
        finally:
            db.conn.set_trace_callback(None)
        # "-- " marks SQLite's own statements inside a virtual table's creation (FTS5's shadow
        # tables): they belong to the SQLite version, not to the migration.
        ran[migration.name] = "\n".join(s for s in statements if not s.startswith("-- "))
    return ran


def test_shipped_migrations_run_the_sql_they_shipped_with():
    ran = sql_run_by_each_migration()
    assert list(ran) == list(SHIPPED), "a new migration: add its name and hash to SHIPPED"
    changed = [name for name, sql in ran.items() if hashlib.sha256(sql.encode()).hexdigest() != SHIPPED[name]]
    assert changed == [], f"{changed} changed after shipping: revert, and add a new migration instead"


def test_a_fresh_index_gets_exactly_the_migrations_schema():
    db = store.open_db(":memory:")
    fresh = sqlite_utils.Database(memory=True)
    for migration in migrations._migrations:
        migration.fn(fresh)
    assert [m.name for m in migrations.applied(db)] == list(SHIPPED)
    assert store.schema_text(db) == store.schema_text(fresh)


def test_a_plain_checkout_runs_without_installing(tmp_path):
    # -S skips site, so no .pth file runs: the editable install's import hook (which could map
    # layerslayer.migrations anywhere) is off. The dependencies come from site-packages on
    # PYTHONPATH, layerslayer only from the checkout.
    site_packages = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *site_packages]))
    python = [sys.executable, "-S"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*python, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    result = run("-m", "layerslayer", "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout, result.stderr
    db = tmp_path / "index.db"
    result = run("-c", "import sys, layerslayer.migrations as m, layerslayer.store as s;"
                       " s.open_db(sys.argv[1]).close(); print(m.__file__)", str(db))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(ROOT / "layerslayer" / "migrations.py")
    result = run("-m", "layerslayer", "images", str(db), "--json")
    assert (result.returncode, result.stdout, result.stderr) == (1, "[]\n", "")  # 1: no image in it
